//! The worker of orders' own task queue, `orders.tasks.v1`: the handlers of the tasks its
//! schedules fire at it, [`CancelUnpaidOrder`] and [`PurgeExpiredRecords`].

use kafka::KafkaConfig;
use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler, TaskOptions, TaskQueue, Worker};

use crate::order::Cancellation;
use crate::retention::{PurgeExpiredRecords, PurgeRecords};
use crate::store;
use crate::tasks::CancelUnpaidOrder;

/// The worker of orders' task queue `topic`, in the consumer group `<group_prefix>.tasks`.
/// `notifications` is where the cancellation notice goes; `purge` runs the retention.
pub fn worker(
    pool: PgPool,
    kafka: &KafkaConfig,
    group_prefix: &str,
    topic: &str,
    notifications: TaskQueue,
    purge: PurgeRecords,
) -> Worker {
    Worker::new(pool, kafka, format!("{group_prefix}.tasks"), topic)
        .register::<CancelUnpaidOrder, _>(
            CancelUnpaidOrders { notifications },
            TaskOptions::default(),
        )
        .register::<PurgeExpiredRecords, _>(purge, TaskOptions::default())
}

/// The handler of [`CancelUnpaidOrder`].
#[derive(Debug, Clone)]
struct CancelUnpaidOrders {
    notifications: TaskQueue,
}

impl TaskHandler<CancelUnpaidOrder> for CancelUnpaidOrders {
    /// Everything happens in `ctx.conn`, the transaction that marks the task done: the status,
    /// the `OrderCancelled` event and the `SendOrderCancelled` task commit together with it, or
    /// not at all (and the task runs again).
    async fn handle(
        &self,
        task: CancelUnpaidOrder,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let order_id = task.order_id;
        match store::cancel_unpaid(ctx.conn, &self.notifications, order_id).await? {
            Cancellation::Cancelled => {
                tracing::info!(%order_id, "unpaid order cancelled");
                Ok(())
            }
            Cancellation::NotPending(status) => {
                tracing::info!(%order_id, ?status, "order not cancelled: it is no longer pending");
                Ok(())
            }
            // Only this service schedules the task, for orders it stored: an unknown order is a
            // task from elsewhere (another environment's database on the same topic). Trying
            // again cannot help; the dead-letter list shows it.
            Cancellation::NotFound => Err(TaskError::permanent(anyhow::anyhow!(
                "order {order_id} does not exist"
            ))),
        }
    }
}

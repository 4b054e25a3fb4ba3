//! Retention: the `purge-expired-records` recurring schedule fires [`PurgeExpiredRecords`] on
//! orders' own queue (`RETENTION_CRON`); its handler deletes what the service no longer needs:
//!
//! - idempotency keys of `POST /orders` older than `IDEMPOTENCY_KEY_TTL` (already ignored by
//!   then; deleting them keeps the table small);
//! - the task queue's execution records (`task_executions`), and the dead letters an operator
//!   replayed or dropped (the task queue's and the consumers' set-aside messages), older than `RETENTION_PERIOD`;
//! - fired and cancelled schedules (`scheduled_tasks`: the orders' payment deadlines and
//!   reminders), older than `RETENTION_PERIOD`, as `task_scheduler::purge_schedules` allows.
//!
//! Orders themselves are business records and stay. Each purge deletes in chunks and counts in
//! `retention_deleted_rows_total{what}`.

use std::time::Duration;

use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler};
use task_scheduler::TaskRecordsPurged;
pub use task_scheduler::{PurgeExpiredRecords, RETENTION_SCHEDULE};

/// The handler of [`PurgeExpiredRecords`].
#[derive(Debug, Clone)]
pub struct PurgeRecords {
    pub pool: PgPool,
    /// `RETENTION_PERIOD`.
    pub period: Duration,
    /// `IDEMPOTENCY_KEY_TTL`.
    pub idempotency_ttl: Duration,
}

impl TaskHandler<PurgeExpiredRecords> for PurgeRecords {
    /// The deletes run on the pool, a chunk per transaction, not in the task's transaction
    /// (`ctx.conn`), which would hold every deleted row's lock until the end. A purge that
    /// fails halfway keeps what it deleted, and its retry (or the next fire) deletes the rest.
    async fn handle(
        &self,
        _task: PurgeExpiredRecords,
        _ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        self.purge().await.map_err(TaskError::retryable)
    }
}

impl PurgeRecords {
    /// Runs every purge of the service once.
    pub async fn purge(&self) -> anyhow::Result<()> {
        let chunk = u32::try_from(platform::retention::DELETE_CHUNK).unwrap_or(u32::MAX);
        let idempotency_keys =
            idempotency::purge_expired(&self.pool, self.idempotency_ttl, chunk).await?;
        platform::retention::count_deleted("idempotency_keys", idempotency_keys);
        let TaskRecordsPurged {
            executions,
            dead_letters,
            set_aside,
            schedules,
        } = task_scheduler::purge_task_records(&self.pool, self.period).await?;
        tracing::info!(
            idempotency_keys,
            executions,
            dead_letters,
            set_aside,
            schedules,
            "expired records purged"
        );
        Ok(())
    }
}

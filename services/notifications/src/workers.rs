//! The task-queue worker of `notifications.tasks.v1` and its handlers: every notification task
//! becomes a notification, is handed to the provider and recorded; the daily digest is counted,
//! then delivered the same way; retention's handler is [`crate::retention`]'s.

use chrono::Utc;
use chrono_tz::Tz;
use kafka::KafkaConfig;
use sqlx::PgPool;
use task_queue::{RetryLevels, TaskContext, TaskError, TaskHandler, TaskOptions, Worker};
use task_scheduler::calendar::{day_bounds, yesterday};

use crate::config::Config;
use crate::digest::digest_message;
use crate::notification::{Notification, Provider};
use crate::retention::{self, PurgeExpiredRecords, PurgeRecords};
use crate::store;
use crate::tasks::{
    Notify, SendDailyDigest, SendExportReady, SendOrderCancelled, SendOrderConfirmation,
    SendPaymentReminder,
};

/// A worker for the tasks of `config.tasks_topic`, with a handler for each task type: the
/// notifications, the daily digest and the service's own retention.
///
/// What it does not know ends up in the dead-letter topic, at once: a payload that is not the
/// JSON of its type, or a type without a handler.
pub fn worker(pool: PgPool, kafka: &KafkaConfig, config: &Config, provider: Provider) -> Worker {
    let deliver = Deliver {
        provider: provider.clone(),
    };
    let purge = PurgeRecords {
        pool: pool.clone(),
        period: config.retention.period,
        notifications_age: retention::notifications_age(config),
    };
    Worker::new(
        pool,
        kafka,
        config.consumer_group_prefix.clone(),
        config.tasks_topic.clone(),
    )
    .retry(RetryLevels {
        delays: config.retry_delays.clone(),
        // Every retry goes through a retry topic: a failing notification never holds up the
        // ones behind it on its partition.
        blocking_attempts: 1,
    })
    .register::<SendOrderConfirmation, _>(deliver.clone(), TaskOptions::default())
    .register::<SendOrderCancelled, _>(deliver.clone(), TaskOptions::default())
    .register::<SendPaymentReminder, _>(deliver.clone(), TaskOptions::default())
    .register::<SendExportReady, _>(deliver, TaskOptions::default())
    .register::<SendDailyDigest, _>(SendDigests { provider }, TaskOptions::default())
    .register::<PurgeExpiredRecords, _>(purge, TaskOptions::default())
}

/// The handler of every task type: deliver, then record the delivery.
#[derive(Debug, Clone)]
struct Deliver {
    provider: Provider,
}

impl<T: Notify> TaskHandler<T> for Deliver {
    /// The record goes through `ctx.conn`, the transaction in which the worker marks the task
    /// done: the row exists if and only if the task counts as done.
    ///
    /// Between the provider's answer and that commit the process can die, or the commit fail;
    /// Kafka then delivers the task again and the provider is called a second time. That is
    /// what the `Idempotency-Key` header (the task id, the same on every attempt) is for: the
    /// provider recognises the notification and does not send it twice.
    async fn handle(&self, task: T, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        let notification = Notification::new(ctx.task_id, task.message());
        self.provider.deliver(&notification).await?;
        store::record(ctx.conn, &notification, ctx.attempt)
            .await
            .map_err(TaskError::retryable)?;
        tracing::info!(
            task_id = %notification.task_id,
            kind = ?notification.kind,
            attempt = ctx.attempt,
            "notification delivered"
        );
        Ok(())
    }
}

/// The handler of [`SendDailyDigest`]: count, deliver, record.
#[derive(Debug, Clone)]
pub struct SendDigests {
    pub provider: Provider,
}

impl TaskHandler<SendDailyDigest> for SendDigests {
    /// Like every other notification: delivered with the task id as the provider's
    /// idempotency key, recorded in `ctx.conn`. The scheduler derives the task id from the
    /// occurrence, so a firing repeated by a crash is delivered once.
    async fn handle(
        &self,
        task: SendDailyDigest,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let timezone: Tz = task.timezone.parse().map_err(|error| {
            TaskError::permanent(anyhow::anyhow!(
                "SendDailyDigest names an unknown time zone `{}`: {error}",
                task.timezone
            ))
        })?;
        // The day before the one the schedule was due on, however late this runs; a digest
        // enqueued by hand (no schedule) covers the day before today.
        let day = yesterday(ctx.scheduled_for.unwrap_or_else(Utc::now), timezone);
        let (from, to) = day_bounds(day, timezone)?;
        let counts = store::deliveries_per_kind(ctx.conn, from, to).await?;
        let message = digest_message(&task.recipient, day, timezone, &counts);
        let notification = Notification::new(ctx.task_id, message);
        self.provider.deliver(&notification).await?;
        store::record(ctx.conn, &notification, ctx.attempt)
            .await
            .map_err(TaskError::retryable)?;
        tracing::info!(task_id = %ctx.task_id, %day, "daily digest delivered");
        Ok(())
    }
}

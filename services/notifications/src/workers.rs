//! The task-queue worker of `notifications.tasks.v1` and its handlers: every notification task
//! becomes a notification, is handed to the provider and recorded; the daily digest is counted,
//! then delivered the same way; retention's handler is [`crate::retention`]'s.
//!
//! Deliveries are call-out handlers ([`CallOutHandler`]): the provider is called with no
//! database connection held, and the delivery is recorded in the transaction that marks the
//! task done. A slow provider then keeps futures waiting, not connections, and cannot starve
//! `GET /notifications` and readiness of the pool.

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use kafka::KafkaConfig;
use sqlx::PgPool;
use task_queue::{
    CallContext, CallOutHandler, RetryLevels, Task, TaskContext, TaskError, TaskOptions, Worker,
};
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

/// The task types that call the provider. They share `NOTIFY_CONCURRENCY` and
/// `NOTIFY_RATE_LIMIT`: the limits are the provider's, whichever task a delivery comes from.
const DELIVERIES: [&str; 5] = [
    SendOrderConfirmation::NAME,
    SendOrderCancelled::NAME,
    SendPaymentReminder::NAME,
    SendExportReady::NAME,
    SendDailyDigest::NAME,
];

/// A worker for the tasks of `config.tasks_topic`, with a handler for each task type: the
/// notifications, the daily digest and the service's own retention.
///
/// What it does not know ends up in the dead-letter topic, at once: a payload that is not the
/// JSON of its type, or a type without a handler.
///
/// Up to `NOTIFY_CONCURRENCY` deliveries run at once. The consumer runtime lets them: it hands
/// out up to 4,096 messages per partition (`max_in_flight_per_partition`) and runs messages of
/// different keys in parallel; only the tasks of one key (one order's notifications) run one
/// after the other.
pub fn worker(pool: PgPool, kafka: &KafkaConfig, config: &Config, provider: Provider) -> Worker {
    let deliver = Deliver {
        provider: provider.clone(),
    };
    let digests = SendDigests {
        provider,
        pool: pool.clone(),
    };
    let purge = PurgeRecords {
        pool: pool.clone(),
        period: config.retention.period,
        notifications_age: retention::notifications_age(config),
    };
    let deliveries = TaskOptions {
        concurrency: Some(config.concurrency as usize),
        rate_limit_per_sec: config.rate_limit.map(f64::from),
        batch: None,
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
    .register_call_out::<SendOrderConfirmation, _>(deliver.clone(), TaskOptions::default())
    .register_call_out::<SendOrderCancelled, _>(deliver.clone(), TaskOptions::default())
    .register_call_out::<SendPaymentReminder, _>(deliver.clone(), TaskOptions::default())
    .register_call_out::<SendExportReady, _>(deliver, TaskOptions::default())
    .register_call_out::<SendDailyDigest, _>(digests, TaskOptions::default())
    .shared_limits(&DELIVERIES, deliveries)
    .register::<PurgeExpiredRecords, _>(purge, TaskOptions::default())
}

/// The handler of every notification task type: deliver, then record the delivery.
#[derive(Debug, Clone)]
struct Deliver {
    provider: Provider,
}

impl<T: Notify> CallOutHandler<T> for Deliver {
    type Outcome = Notification;

    /// Hands the notification to the provider, with no connection held. The provider gets the
    /// task id as its `Idempotency-Key`, the same on every attempt: the call is made at least
    /// once (again after a crash, or a failed record or commit, below), and the key is how the
    /// provider recognises a repeat and does not send it twice.
    async fn call(&self, task: T, ctx: &CallContext) -> Result<Notification, TaskError> {
        let notification = Notification::new(ctx.task_id, task.message());
        self.provider.deliver(&notification).await?;
        Ok(notification)
    }

    /// The record goes through `ctx.conn`, the transaction in which the worker marks the task
    /// done: the row exists if and only if the task counts as done.
    async fn record(
        &self,
        notification: Notification,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
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
    /// For the count, a short read before the call.
    pub pool: PgPool,
}

impl CallOutHandler<SendDailyDigest> for SendDigests {
    /// The digest and the day it covers, for the log.
    type Outcome = (Notification, NaiveDate);

    /// Counts the day's deliveries, then delivers the digest like every other notification,
    /// with the task id as the provider's idempotency key. The scheduler derives the task id
    /// from the occurrence, so a firing repeated by a crash is delivered once.
    ///
    /// The count is in the message, so it comes before the call: one statement on a connection
    /// of the pool, given back before the provider is called. It need not be in the recording
    /// transaction: it counts a day that is over, whose deliveries no longer change (a delivery
    /// is recorded with the time it was recorded at), so a retry counts the same.
    async fn call(
        &self,
        task: SendDailyDigest,
        ctx: &CallContext,
    ) -> Result<(Notification, NaiveDate), TaskError> {
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
        let counts = {
            let mut conn = self
                .pool
                .acquire()
                .await
                .context("Failed to get a connection to count the day's deliveries")?;
            store::deliveries_per_kind(&mut conn, from, to).await?
        };
        let message = digest_message(&task.recipient, day, timezone, &counts);
        let notification = Notification::new(ctx.task_id, message);
        self.provider.deliver(&notification).await?;
        Ok((notification, day))
    }

    /// Recorded like every other notification, in `ctx.conn`.
    async fn record(
        &self,
        (notification, day): (Notification, NaiveDate),
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        store::record(ctx.conn, &notification, ctx.attempt)
            .await
            .map_err(TaskError::retryable)?;
        tracing::info!(task_id = %ctx.task_id, %day, "daily digest delivered");
        Ok(())
    }
}

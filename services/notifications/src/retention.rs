//! Retention: the `purge-expired-records` recurring schedule fires [`PurgeExpiredRecords`] on
//! the service's own queue (`RETENTION_CRON`); its handler deletes what the service no longer
//! needs, older than `RETENTION_PERIOD`:
//!
//! - delivered notifications (`notifications`), but never younger than the daily digest may
//!   still read (see [`notifications_age`]);
//! - the task queue's execution records (`task_executions`), and the dead letters an operator
//!   replayed or dropped (the task queue's and the consumers' set-aside messages);
//! - fired and cancelled schedules (`scheduled_tasks`), as `task_scheduler::purge_schedules`
//!   allows.
//!
//! Each is deleted in chunks and counted in `retention_deleted_rows_total{what}`.

use std::time::Duration;

use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler};
use task_scheduler::TaskRecordsPurged;
pub use task_scheduler::{PurgeExpiredRecords, RETENTION_SCHEDULE};

use crate::config::Config;

/// How long delivered notifications are kept: `RETENTION_PERIOD`, but at least
/// `DIGEST_CATCH_UP` + 2 days. A digest that runs late after a downtime (up to
/// `DIGEST_CATCH_UP` days) counts the deliveries of the day before the one it was due on;
/// deleting them first would make it count too few.
pub fn notifications_age(config: &Config) -> Duration {
    let digest_reads = Duration::from_hours(24 * (u64::from(config.digest.catch_up) + 2));
    config.retention.period.max(digest_reads)
}

/// The handler of [`PurgeExpiredRecords`].
#[derive(Debug, Clone)]
pub struct PurgeRecords {
    pub pool: PgPool,
    /// `RETENTION_PERIOD`.
    pub period: Duration,
    /// [`notifications_age`].
    pub notifications_age: Duration,
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
        let notifications = platform::retention::delete_in_chunks(
            &self.pool,
            "notifications",
            "DELETE FROM notifications WHERE task_id IN (
                 SELECT task_id FROM notifications
                 WHERE delivered_at < clock_timestamp() - make_interval(secs => $1)
                 LIMIT $2)",
            self.notifications_age,
        )
        .await?;
        let TaskRecordsPurged {
            executions,
            dead_letters,
            set_aside,
            schedules,
        } = task_scheduler::purge_task_records(&self.pool, self.period).await?;
        tracing::info!(
            notifications,
            executions,
            dead_letters,
            set_aside,
            schedules,
            "expired records purged"
        );
        Ok(())
    }
}

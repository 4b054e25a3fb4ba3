#![doc = include_str!("../README.md")]

pub mod admin;
pub mod calendar;
mod listener;
mod recurrence;
mod retention;
mod scheduler;
mod schedules;
mod template;

use anyhow::Context as _;
use sqlx::PgPool;

pub use retention::{
    PurgeExpiredRecords, RETENTION_SCHEDULE, TaskRecordsPurged, purge_schedules,
    purge_task_records, upsert_retention_schedule,
};
pub use scheduler::{Scheduler, SchedulerSettings, TASK_ID_NAMESPACE, derive_task_id};
pub use schedules::{
    MisfirePolicy, NOTIFY_CHANNEL, OverlapPolicy, Schedule, ScheduleState, Schedules,
};
pub use template::TaskTemplate;

/// The table that records which of this crate's migrations ran, apart from the service's own
/// `_sqlx_migrations` (each migrator would refuse the other's versions).
pub const MIGRATIONS_TABLE: &str = "_task_scheduler_migrations";

/// Creates `scheduled_tasks` and `recurring_schedules` with this crate's embedded migrations.
///
/// Call it at start, after the service's own migrations and `outbox::migrate` (the scheduler
/// fires into the outbox); idempotent and safe when several replicas start at once.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .context("Failed to run the task scheduler migrations")
}

#![doc = include_str!("../README.md")]

mod dead_letters;
mod queue;
mod task;
mod wire;
mod worker;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub use dead_letters::{DeadLetter, DeadLetters};
pub use queue::{RetryLevels, TaskQueue, dlq_topic, queue_topics, retry_topic};
pub use task::{Batching, Task, TaskContext, TaskError, TaskHandler, TaskOptions};
pub use wire::header;
pub use worker::{RunningWorker, Worker};

/// The table that records which of this crate's migrations ran. Not sqlx's default
/// `_sqlx_migrations`, which holds the service's own: sharing it, each migrator would see the
/// other's versions as unknown and refuse to run.
pub const MIGRATIONS_TABLE: &str = "_task_queue_migrations";

/// Creates `task_executions` and `dead_letters` with this crate's embedded migrations.
///
/// Call it at start, after the service's own migrations; it is idempotent and safe when several
/// replicas start at once (sqlx serialises migrators with an advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .context("Failed to run the task queue migrations")
}

/// Deletes the execution records of tasks completed before `completed_before`, and returns how
/// many. Nothing does it on its own: run it periodically (daily, say) with a cut-off well beyond
/// the longest time a duplicate of a task can still arrive: the retry delays, an outbox relay's
/// backlog, a replay from the dead-letter topic. A duplicate that arrives after its record is
/// gone runs again.
pub async fn purge_executions(
    pool: &PgPool,
    completed_before: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let deleted = sqlx::query("DELETE FROM task_executions WHERE completed_at < $1")
        .bind(completed_before)
        .execute(pool)
        .await
        .context("Failed to purge task executions")?;
    Ok(deleted.rows_affected())
}

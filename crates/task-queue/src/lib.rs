#![doc = include_str!("../README.md")]

mod dead_letters;
mod queue;
mod task;
mod wire;
mod worker;

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;

pub use dead_letters::{DeadLetter, DeadLetters};
pub use queue::{RetryLevels, TaskQueue, dlq_topic, queue_topics, retry_topic};
pub use task::{
    Batching, CallContext, CallOutHandler, Task, TaskContext, TaskError, TaskHandler, TaskOptions,
};
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

/// Deletes the execution records of tasks completed longer than `age` ago (on the database's
/// clock), in chunks, and returns how many; counted in
/// `retention_deleted_rows_total{what="task_executions"}`.
///
/// Nothing does it on its own: a service runs it periodically. The record is what makes a
/// duplicate of the task a no-op, so `age` must be well beyond the longest time a duplicate can
/// still arrive: the retry delays, an outbox relay's backlog, a replay from the dead-letter
/// topic, and above all the topics' Kafka retention (a consumer group reset to the earliest
/// offset redelivers everything the broker still holds). A duplicate that arrives after its
/// record is gone runs again.
pub async fn purge_executions(pool: &PgPool, age: Duration) -> anyhow::Result<u64> {
    platform::retention::delete_in_chunks(
        pool,
        "task_executions",
        "DELETE FROM task_executions WHERE task_id IN (
             SELECT task_id FROM task_executions
             WHERE completed_at < clock_timestamp() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await
}

/// Deletes the dead letters an operator replayed or dropped longer than `age` ago, in chunks,
/// and returns how many; counted in `retention_deleted_rows_total{what="task_dead_letters"}`.
/// Dead letters still waiting for a decision (`state = 'dead'`) are never deleted, however old.
///
/// A replayed task carries its original id, and its execution record (not this row) is what
/// keeps it from running twice; the row only serves investigation.
pub async fn purge_dead_letters(pool: &PgPool, age: Duration) -> anyhow::Result<u64> {
    platform::retention::delete_in_chunks(
        pool,
        "task_dead_letters",
        "DELETE FROM dead_letters WHERE (queue, task_id) IN (
             SELECT queue, task_id FROM dead_letters
             WHERE state <> 'dead'
               AND state_changed_at < clock_timestamp() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await
}

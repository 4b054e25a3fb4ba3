#![doc = include_str!("../README.md")]

mod erased;
mod job;
mod jobs;
mod retention;
mod runner;

use anyhow::Context as _;
use sqlx::PgPool;

pub use job::{Chunk, CompletedJob, Job, Shard};
pub use jobs::{Control, JobOptions, JobState, JobStatus, Jobs, STEP_MESSAGE_TYPE};
pub use retention::{DeletedJob, delete_finished_in, purge_steps};
pub use runner::{JobRunner, iterations_topic, iterations_topic_named};

/// The table that records which of this crate's migrations ran, apart from the service's own.
pub const MIGRATIONS_TABLE: &str = "_iterator_migrations";

/// Creates `jobs`, `job_shards` and `job_steps` with this crate's embedded migrations.
///
/// Call it at start, after `outbox::migrate` (steps travel through the outbox); idempotent.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .context("Failed to run the iterator migrations")
}

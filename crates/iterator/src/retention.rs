//! Retention: the step records of finished jobs, and finished jobs themselves.
//!
//! A job is *finished* when it is completed, cancelled or failed; since `finished_at` for the
//! first two, since its last change (`updated_at`) for a failed one, which has no `finished_at`
//! because `resume` may still take it up.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgConnection;
use sqlx::PgPool;
use uuid::Uuid;

/// Deletes the `job_steps` rows of jobs finished longer than `age` ago (on the database's
/// clock), in chunks, and returns how many; counted in
/// `retention_deleted_rows_total{what="job_steps"}`. The jobs themselves, their shards and
/// their status stay.
///
/// Steps are the record of what ran where, and what the rate is computed from while a job
/// runs; a finished job's rate comes from its start and end. What keeps a step from running
/// twice is the shard's `next_step`, not this record, so deleting it changes nothing for a
/// failed job that is resumed later.
pub async fn purge_steps(pool: &PgPool, age: Duration) -> anyhow::Result<u64> {
    platform::retention::delete_in_chunks(
        pool,
        "job_steps",
        "DELETE FROM job_steps WHERE (job_id, shard, step) IN (
             SELECT s.job_id, s.shard, s.step FROM job_steps s JOIN jobs j USING (job_id)
             WHERE j.state IN ('completed', 'failed', 'cancelled')
               AND coalesce(j.finished_at, j.updated_at)
                   < clock_timestamp() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await
}

/// A job [`delete_finished_in`] deleted: enough for the caller to delete what the job wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedJob {
    pub job_id: Uuid,
    pub shards: u32,
}

/// Deletes up to `limit` jobs of `kind` finished longer than `age` ago, with their shards and
/// steps (cascade), in the caller's transaction, and returns them.
///
/// For a service whose jobs have data of their own (an export's row and files): it deletes
/// that in the same transaction, so that either both go or neither. A failed job can no longer
/// be resumed once deleted. A step message of a deleted job that still arrives (a redelivery)
/// is skipped as a step of an unknown job. Rows locked by another transaction (a resume at
/// this moment) are skipped, and taken by a later run if they still qualify.
///
/// Not counted in a metric here: the caller counts after its commit.
pub async fn delete_finished_in(
    conn: &mut PgConnection,
    kind: &str,
    age: Duration,
    limit: i64,
) -> anyhow::Result<Vec<DeletedJob>> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "DELETE FROM jobs WHERE job_id IN (
             SELECT job_id FROM jobs
             WHERE kind = $1 AND state IN ('completed', 'failed', 'cancelled')
               AND coalesce(finished_at, updated_at)
                   < clock_timestamp() - make_interval(secs => $2)
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         RETURNING job_id, shards",
    )
    .bind(kind)
    .bind(age.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await
    .with_context(|| format!("Failed to delete finished {kind} jobs"))?;
    Ok(rows
        .into_iter()
        .map(|(job_id, shards)| DeletedJob {
            job_id,
            shards: shards.unsigned_abs(),
        })
        .collect())
}

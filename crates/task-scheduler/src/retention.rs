//! Retention of `scheduled_tasks`: fired and cancelled rows are kept for investigation
//! (`GET /admin/schedules?state=fired`) and deleted by [`purge_schedules`] once old.
//!
//! Also the pieces every service's retention shares: the `purge-expired-records` schedule
//! ([`upsert_retention_schedule`]), the task it fires ([`PurgeExpiredRecords`]), and the purge
//! of the records the task queue and the scheduler leave behind ([`purge_task_records`]). The
//! service's handler adds what is its own (its idempotency keys, its delivered notifications).

use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use task_queue::Task;

use crate::{MisfirePolicy, OverlapPolicy, Schedules, TaskTemplate};

/// The recurring schedule's name.
pub const RETENTION_SCHEDULE: &str = "purge-expired-records";

/// Deletes expired records. Only the service's own schedule fires it, onto the service's own
/// queue; it carries nothing, so that the running replica's settings (`RETENTION_PERIOD`, …)
/// apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeExpiredRecords {}

impl Task for PurgeExpiredRecords {
    const NAME: &'static str = "PurgeExpiredRecords";
}

/// Creates or updates the [`RETENTION_SCHEDULE`] firing [`PurgeExpiredRecords`] into
/// `tasks_topic` at `cron` (`RETENTION_CRON`, read in UTC); idempotent, called at every start.
/// A purge covers every period missed in a downtime, so one fire for all of them (`FireOnce`),
/// and none while the previous fire still waits in the outbox (`Skip`).
///
/// # Errors
/// When `cron` does not parse, or the schedule cannot be stored.
pub async fn upsert_retention_schedule(
    schedules: &Schedules,
    tasks_topic: &str,
    cron: &str,
) -> anyhow::Result<()> {
    schedules
        .upsert_recurring(
            RETENTION_SCHEDULE,
            cron,
            "UTC",
            TaskTemplate::new(tasks_topic, &PurgeExpiredRecords {})?,
            MisfirePolicy::FireOnce,
            OverlapPolicy::Skip,
        )
        .await
        .with_context(|| {
            format!("Failed to store the {RETENTION_SCHEDULE} schedule (RETENTION_CRON `{cron}`)")
        })
}

/// What [`purge_task_records`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRecordsPurged {
    /// The task queue's execution records (`task_executions`).
    pub executions: u64,
    /// The task queue's dead letters an operator replayed or dropped.
    pub dead_letters: u64,
    /// The consumers' set-aside messages an operator replayed or dropped.
    pub set_aside: u64,
    /// Fired and cancelled schedules ([`purge_schedules`]).
    pub schedules: u64,
}

/// Deletes, older than `age`, what the task queue, the consumers' dead letters and the
/// scheduler keep of work that is done: every service with a task queue and schedules runs it
/// from its [`PurgeExpiredRecords`] handler. Each purge deletes on the pool in chunks (see
/// `platform::retention::delete_in_chunks`); one that fails halfway keeps what it deleted.
///
/// # Errors
/// When a delete fails.
pub async fn purge_task_records(pool: &PgPool, age: Duration) -> anyhow::Result<TaskRecordsPurged> {
    Ok(TaskRecordsPurged {
        executions: task_queue::purge_executions(pool, age).await?,
        dead_letters: task_queue::purge_dead_letters(pool, age).await?,
        set_aside: dead_letters::purge_decided(pool, age).await?,
        schedules: purge_schedules(pool, age).await?,
    })
}

/// Deletes fired and cancelled rows due, and fired, longer than `age` ago (on the database's
/// clock), in chunks, and returns how many; counted in
/// `retention_deleted_rows_total{what="scheduled_tasks"}`. Pending rows are never deleted.
///
/// Of a recurring schedule, only rows older than its latest *fired* occurrence go; that one
/// stays, with everything after it, however old:
///
/// - the overlap policy `skip` reads the task of the latest fire to see whether it is still in
///   the outbox. Deleting it would make an older fire (long published) answer, and let an
///   occurrence fire while the previous one is stuck in the outbox;
/// - the scheduler derives each next occurrence from the one that fires, and passes over keys
///   that have a row (`<name>@<due time>`). It only ever walks forward from the schedule's
///   pending row, so rows behind the latest fire are never looked at again.
///
/// One-off rows keep their `dedup_key` only as long as they exist: scheduling the same key
/// again after its row was deleted schedules anew. `age` must therefore exceed the longest time
/// a caller may retry a scheduling (orders schedules its deadline once, in the order's
/// transaction).
pub async fn purge_schedules(pool: &PgPool, age: Duration) -> anyhow::Result<u64> {
    platform::retention::delete_in_chunks(
        pool,
        "scheduled_tasks",
        "DELETE FROM scheduled_tasks WHERE id IN (
             SELECT s.id FROM scheduled_tasks s
             WHERE s.state IN ('fired', 'cancelled')
               AND s.due_at < clock_timestamp() - make_interval(secs => $1)
               AND (s.fired_at IS NULL
                    OR s.fired_at < clock_timestamp() - make_interval(secs => $1))
               AND (s.recurring IS NULL OR EXISTS (
                   SELECT 1 FROM scheduled_tasks later
                   WHERE later.recurring = s.recurring AND later.state = 'fired'
                     AND later.due_at > s.due_at))
             LIMIT $2)",
        age,
    )
    .await
}

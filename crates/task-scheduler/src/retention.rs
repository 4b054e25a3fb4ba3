//! Retention of `scheduled_tasks`: fired and cancelled rows are kept for investigation
//! (`GET /admin/schedules?state=fired`) and deleted by [`purge_schedules`] once old.

use std::time::Duration;

use sqlx::PgPool;

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

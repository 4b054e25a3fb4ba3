//! Retention: the `purge-expired-records` schedule fires `PurgeExpiredRecords` on orders' own
//! queue, whose handler deletes expired idempotency keys, task records and schedules.

use sqlx::PgPool;
use test_support::eventually;
use uuid::Uuid;

use crate::helpers::{DEADLINE, spawn_app_with_env};

/// Inserts an idempotency key created `minutes_ago`; returns the key.
async fn idempotency_key(pool: &PgPool, minutes_ago: i32) -> String {
    let key = Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id, created_at)
         VALUES ('POST /orders', $1, md5('{}'), $2, now() - make_interval(mins => $3))",
    )
    .bind(&key)
    .bind(Uuid::now_v7())
    .bind(minutes_ago)
    .execute(pool)
    .await
    .unwrap();
    key
}

/// Inserts an execution record completed `minutes_ago`; returns its task id.
async fn execution(pool: &PgPool, minutes_ago: i32) -> Uuid {
    let task_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO task_executions (task_id, task_name, attempts, completed_at)
         VALUES ($1, 'CancelUnpaidOrder', 1, now() - make_interval(mins => $2))",
    )
    .bind(task_id)
    .bind(minutes_ago)
    .execute(pool)
    .await
    .unwrap();
    task_id
}

/// Inserts a one-off schedule in `state`, due `minutes_ago` (negative: ahead) and fired then
/// if fired; returns its dedup key.
async fn schedule(pool: &PgPool, state: &str, minutes_ago: i32) -> String {
    let key = format!("order:{}:cancel-unpaid", Uuid::now_v7());
    sqlx::query(
        "INSERT INTO scheduled_tasks (id, dedup_key, task, due_at, state, fired_at, created_at)
         VALUES ($1, $2,
                 '{\"topic\": \"elsewhere\", \"task_name\": \"CancelUnpaidOrder\",
                   \"payload\": {}, \"ordering_key\": null}',
                 now() - make_interval(mins => $3), $4,
                 CASE WHEN $4 = 'fired' THEN now() - make_interval(mins => $3) END,
                 now() - interval '1 day')",
    )
    .bind(Uuid::now_v7())
    .bind(&key)
    .bind(minutes_ago)
    .bind(state)
    .execute(pool)
    .await
    .unwrap();
    key
}

async fn count(pool: &PgPool, query: &'static str, value: &str) -> i64 {
    sqlx::query_scalar(query)
        .bind(value)
        .fetch_one(pool)
        .await
        .unwrap()
}

const KEY: &str = "SELECT count(*) FROM idempotency_keys WHERE key = $1";
const EXECUTION: &str = "SELECT count(*) FROM task_executions WHERE task_id::text = $1";
const SCHEDULE: &str = "SELECT count(*) FROM scheduled_tasks WHERE dedup_key = $1";

#[tokio::test]
async fn the_schedule_purges_expired_keys_task_records_and_schedules_and_keeps_recent_ones() {
    let app = spawn_app_with_env(
        &[
            ("RETENTION_CRON", "* * * * * *"),
            ("RETENTION_PERIOD", "1h"),
            ("IDEMPOTENCY_KEY_TTL", "2h"),
        ],
        |_| {},
    )
    .await;
    let pool = &app.database.pool;
    // Keys by IDEMPOTENCY_KEY_TTL (2 h), the rest by RETENTION_PERIOD (1 h).
    let old_key = idempotency_key(pool, 150).await;
    let live_key = idempotency_key(pool, 90).await;
    let old_execution = execution(pool, 90).await.to_string();
    let recent_execution = execution(pool, 10).await.to_string();
    let old_fired = schedule(pool, "fired", 90).await;
    let old_cancelled = schedule(pool, "cancelled", 90).await;
    let recent_fired = schedule(pool, "fired", 10).await;
    // Pending, created a day ago and due in a day: never deleted.
    let pending = schedule(pool, "pending", -24 * 60).await;

    eventually(DEADLINE, "the expired records to be purged", || async {
        (count(pool, KEY, &old_key).await == 0
            && count(pool, EXECUTION, &old_execution).await == 0
            && count(pool, SCHEDULE, &old_fired).await == 0
            && count(pool, SCHEDULE, &old_cancelled).await == 0)
            .then_some(())
    })
    .await;

    assert_eq!(count(pool, KEY, &live_key).await, 1);
    assert_eq!(count(pool, EXECUTION, &recent_execution).await, 1);
    assert_eq!(count(pool, SCHEDULE, &recent_fired).await, 1);
    assert_eq!(count(pool, SCHEDULE, &pending).await, 1);
    // The purge schedule itself goes on: its next occurrence is pending.
    let purges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduled_tasks
         WHERE recurring = 'purge-expired-records' AND state = 'pending'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(purges, 1);
    // What was deleted is counted by kind (one process per test under nextest: these are this
    // service's deletions only, at least the rows inserted above).
    let metrics = app.http.get("/metrics").await.text().await.unwrap();
    for (what, at_least) in [
        ("idempotency_keys", 1),
        ("task_executions", 1),
        ("scheduled_tasks", 2),
    ] {
        let counted: u64 = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!("retention_deleted_rows_total{{what=\"{what}\"}} "))
            })
            .unwrap_or_else(|| panic!("no retention_deleted_rows_total for {what} in {metrics}"))
            .parse()
            .unwrap();
        assert!(counted >= at_least, "{what}: {counted} deleted");
    }
    app.stop().await.unwrap();
}

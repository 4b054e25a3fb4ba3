//! Retention: the `purge-expired-records` schedule fires `PurgeExpiredRecords` on the service's
//! own queue, whose handler deletes delivered notifications and task records past their age.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{DEADLINE, TestApp, TestTask, contract_example, spawn_app_with};

/// A delivered notification and an execution record, each `age` old; returns their ids.
async fn records_aged(pool: &PgPool, age: chrono::Duration) -> (Uuid, Uuid) {
    let at: DateTime<Utc> = Utc::now() - age;
    let notification = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO notifications (task_id, kind, order_id, recipient, attempts, delivered_at)
         VALUES ($1, 'order_confirmation', $2, 'ada@example.com', 1, $3)",
    )
    .bind(notification)
    .bind(Uuid::now_v7())
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
    let execution = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO task_executions (task_id, task_name, attempts, completed_at)
         VALUES ($1, 'SendOrderConfirmation', 1, $2)",
    )
    .bind(execution)
    .bind(at)
    .execute(pool)
    .await
    .unwrap();
    (notification, execution)
}

async fn exists(pool: &PgPool, table: &str, task_id: Uuid) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE task_id = $1)"
    )))
    .bind(task_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until the notification and the execution record `old` are gone.
async fn wait_until_purged(pool: &PgPool, old: (Uuid, Uuid)) {
    test_support::eventually(DEADLINE, "the expired records to be purged", || async {
        (!exists(pool, "notifications", old.0).await
            && !exists(pool, "task_executions", old.1).await)
            .then_some(())
    })
    .await;
}

async fn spawn_with_retention(cron: &str) -> (TestApp, PgPool) {
    let app = spawn_app_with(&[
        ("RETENTION_CRON", cron.to_owned()),
        ("RETENTION_PERIOD", "1h".to_owned()),
        // Notifications are kept for DIGEST_CATCH_UP + 2 days at least: 3 days here.
        ("DIGEST_CATCH_UP", "1".to_owned()),
    ])
    .await;
    let pool = PgPool::connect(app.database_url()).await.unwrap();
    (app, pool)
}

#[tokio::test]
async fn the_schedule_purges_expired_records_and_keeps_recent_ones() {
    let (app, pool) = spawn_with_retention("* * * * * *").await;
    let old = records_aged(&pool, chrono::Duration::days(10)).await;
    // Past RETENTION_PERIOD, but within the days a late digest may still count: only the
    // execution record goes.
    let (digest_may_read, expired_execution) = records_aged(&pool, chrono::Duration::days(2)).await;
    let fresh = records_aged(&pool, chrono::Duration::minutes(10)).await;

    let pending = app.schedules("state=pending").await;
    let purge = pending
        .iter()
        .find(|schedule| schedule["recurring"] == "purge-expired-records")
        .unwrap_or_else(|| panic!("no pending purge-expired-records in {pending:#?}"));
    assert_eq!(purge["task"]["task_name"], "PurgeExpiredRecords");
    wait_until_purged(&pool, old).await;

    assert!(!exists(&pool, "task_executions", expired_execution).await);
    assert!(exists(&pool, "notifications", digest_may_read).await);
    assert!(exists(&pool, "notifications", fresh.0).await);
    assert!(exists(&pool, "task_executions", fresh.1).await);
    // The purges' own records are recent: they stay.
    let purges: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_executions WHERE task_name = 'PurgeExpiredRecords'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(purges >= 1);
    app.stop().await.unwrap();
}

/// The task of the contract's example, enqueued by hand, purges as the schedule's does.
#[tokio::test]
async fn the_contract_example_purges_expired_records() {
    // Once a year, on 1 January: only the task enqueued here purges during the test.
    let (app, pool) = spawn_with_retention("0 0 0 1 1 *").await;
    let old = records_aged(&pool, chrono::Duration::days(10)).await;
    let fresh = records_aged(&pool, chrono::Duration::minutes(10)).await;

    app.tasks
        .publish(&TestTask {
            name: "PurgeExpiredRecords",
            id: Uuid::now_v7(),
            payload: contract_example("purge-expired-records.json"),
        })
        .await;

    wait_until_purged(&pool, old).await;
    assert!(exists(&pool, "notifications", fresh.0).await);
    assert!(exists(&pool, "task_executions", fresh.1).await);
    app.stop().await.unwrap();
}

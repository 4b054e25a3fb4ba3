//! The daily digest: the `daily-digest` recurring schedule, stored at start, fires a
//! `SendDailyDigest` task on the service's own queue, which becomes one `daily_digest`
//! notification counting the day before's deliveries by kind.

use chrono::{DateTime, Days, Timelike as _, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::{eventually, unique_name};
use uuid::Uuid;

use crate::helpers::{
    ADMIN_TOKEN, DEADLINE, FakeProvider, TestTask, contract_example, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn the_daily_digest_is_scheduled_at_start() {
    let app = spawn_app(None).await;

    let pending = app.schedules("state=pending").await;

    let digest = pending
        .iter()
        .find(|schedule| schedule["recurring"] == "daily-digest")
        .unwrap_or_else(|| panic!("no pending daily-digest in {pending:#?}"));
    assert_eq!(digest["task"]["task_name"], "SendDailyDigest");
    assert_eq!(
        digest["task"]["payload"],
        json!({ "recipient": "ops@example.com", "timezone": "UTC" })
    );
    assert!(
        digest["task"]["topic"]
            .as_str()
            .unwrap()
            .starts_with("notifications.tasks-test"),
        "on the service's own queue: {digest}"
    );
    // The next 06:00:00 UTC (DIGEST_CRON's default `0 0 6 * * *`).
    let due_at: DateTime<Utc> = serde_json::from_value(digest["due_at"].clone()).unwrap();
    assert_eq!((due_at.hour(), due_at.minute(), due_at.second()), (6, 0, 0));
    assert!(due_at > Utc::now() && due_at <= Utc::now() + chrono::Duration::days(1));
    assert!(
        digest["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("daily-digest@"),
        "{digest}"
    );
}

/// The task alone, published as the scheduler would fire it, against deliveries recorded
/// yesterday and today.
#[tokio::test]
async fn a_daily_digest_counts_yesterdays_deliveries_by_kind() {
    let provider = FakeProvider::start().await;
    let app = spawn_app(Some(&provider)).await;
    let yesterday_noon = (Utc::now().date_naive() - Days::new(1))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    let pool = PgPool::connect(app.database_url()).await.unwrap();
    for (kind, delivered_at) in [
        ("order_confirmation", yesterday_noon),
        ("order_confirmation", yesterday_noon),
        ("payment_reminder", yesterday_noon),
        // Today's: not yet in the digest.
        ("order_cancelled", Utc::now()),
    ] {
        sqlx::query(
            "INSERT INTO notifications (task_id, kind, order_id, recipient, attempts, delivered_at)
             VALUES ($1, $2, $3, 'ada@example.com', 1, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(kind)
        .bind(Uuid::now_v7())
        .bind(delivered_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let recipient = format!("{}@example.com", unique_name("ops"));
    let mut payload = contract_example("send-daily-digest.json");
    payload["recipient"] = json!(recipient);
    let task = TestTask {
        name: "SendDailyDigest",
        id: Uuid::now_v7(),
        payload,
    };

    app.tasks.publish(&task).await;

    let digests = app.delivered("kind=daily_digest", 1).await;
    assert_eq!(digests[0]["task_id"], task.id.to_string());
    assert_eq!(digests[0]["recipient"], recipient);
    assert!(digests[0].get("order_id").is_none(), "{}", digests[0]);
    let calls = provider.calls_for(&recipient);
    assert_eq!(calls.len(), 1);
    let day = yesterday_noon.date_naive();
    assert_eq!(
        calls[0].body["body"],
        format!(
            "Notifications delivered on {day} (UTC): 3.\n\
             - order_confirmation: 2\n\
             - payment_reminder: 1"
        )
    );
    assert_eq!(
        calls[0].idempotency_key.as_deref(),
        Some(task.id.to_string().as_str())
    );
}

/// A digest that runs days after its occurrence was due (a downtime, a catch-up, a replay)
/// covers the day before the one it was due on, not the day before today.
#[tokio::test]
async fn a_late_digest_counts_the_day_before_its_due_day() {
    let provider = FakeProvider::start().await;
    let app = spawn_app(Some(&provider)).await;
    let due = (Utc::now().date_naive() - Days::new(3))
        .and_hms_opt(6, 0, 0)
        .unwrap()
        .and_utc();
    let covered = due.date_naive() - Days::new(1);
    let pool = PgPool::connect(app.database_url()).await.unwrap();
    for delivered_at in [
        covered.and_hms_opt(10, 0, 0).unwrap().and_utc(),
        // Yesterday's: what a digest counted from the run time would have counted.
        (Utc::now().date_naive() - Days::new(1))
            .and_hms_opt(10, 0, 0)
            .unwrap()
            .and_utc(),
    ] {
        sqlx::query(
            "INSERT INTO notifications (task_id, kind, order_id, recipient, attempts, delivered_at)
             VALUES ($1, 'order_confirmation', $2, 'ada@example.com', 1, $3)",
        )
        .bind(Uuid::now_v7())
        .bind(Uuid::now_v7())
        .bind(delivered_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let recipient = format!("{}@example.com", unique_name("ops"));
    let mut payload = contract_example("send-daily-digest.json");
    payload["recipient"] = json!(recipient);
    let task = TestTask {
        name: "SendDailyDigest",
        id: Uuid::now_v7(),
        payload,
    };

    app.tasks.publish_scheduled(&task, due).await;

    app.delivered("kind=daily_digest", 1).await;
    let calls = provider.calls_for(&recipient);
    assert_eq!(
        calls[0].body["body"],
        format!("Notifications delivered on {covered} (UTC): 1.\n- order_confirmation: 1")
    );
}

/// The whole way: schedule, scheduler, outbox, relay, queue, worker. A cron of every two
/// seconds stands in for the daily one.
#[tokio::test]
async fn the_scheduler_fires_the_daily_digest_at_its_cron_times() {
    let app = spawn_app_with(&[
        ("DIGEST_CRON", "*/2 * * * * *".to_owned()),
        ("DIGEST_RECIPIENT", "night-shift@example.com".to_owned()),
    ])
    .await;

    let digest: Value = eventually(DEADLINE, "a daily digest delivered", || async {
        let listed: Vec<Value> = app
            .notifications("kind=daily_digest")
            .await
            .json()
            .await
            .ok()?;
        listed.into_iter().next()
    })
    .await;

    assert_eq!(digest["recipient"], "night-shift@example.com");
    let fired = app.schedules("state=fired").await;
    assert!(
        fired
            .iter()
            .any(|schedule| schedule["recurring"] == "daily-digest"),
        "{fired:#?}"
    );
}

/// An operator can cancel the pending digest (`DELETE /admin/schedules/{id}`), once.
#[tokio::test]
async fn the_pending_digest_can_be_cancelled_by_an_admin() {
    let app = spawn_app(None).await;
    let pending = app.schedules("state=pending").await;
    let digest = pending
        .iter()
        .find(|schedule| schedule["recurring"] == "daily-digest")
        .unwrap_or_else(|| panic!("no pending daily-digest in {pending:#?}"));
    let id = digest["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/schedules/{id}");

    let response = app
        .admin(reqwest::Method::DELETE, &path, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    let response = app
        .admin(reqwest::Method::DELETE, &path, Some(ADMIN_TOKEN))
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);

    // Only the retention schedule is still pending.
    let pending = app.schedules("state=pending").await;
    assert!(
        pending
            .iter()
            .all(|schedule| schedule["recurring"] == "purge-expired-records"),
        "{pending:#?}"
    );
    let cancelled = app.schedules("state=cancelled").await;
    assert_eq!(cancelled.len(), 1, "{cancelled:#?}");
    assert_eq!(cancelled[0]["id"], id.as_str());
}

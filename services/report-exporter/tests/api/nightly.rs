//! The `nightly-orders-export` recurring schedule and the admin endpoints that show it.

use chrono::{Days, TimeDelta, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use test_support::eventually;
use uuid::Uuid;

use crate::exports_helpers::{EXPORT_DEADLINE, seed_orders};
use crate::helpers::{ADMIN_TOKEN, spawn_app, spawn_app_with_env};

#[tokio::test]
async fn the_nightly_export_exports_yesterday_once() {
    // Every second, so that the test sees it fire; every fire asks for the same day.
    let app = spawn_app_with_env(&[("NIGHTLY_EXPORT_CRON", "* * * * * *")], |_| {}).await;
    let yesterday = Utc::now().date_naive() - Days::new(1);
    let midnight = yesterday.and_hms_opt(0, 0, 0).unwrap().and_utc();
    // 500 orders from 00:00 yesterday, a second apart, and some today that stay out.
    seed_orders(&app.pool, midnight, 500).await;
    seed_orders(&app.pool, midnight + TimeDelta::days(1), 10).await;

    let export_id: Uuid = eventually(EXPORT_DEADLINE, "a nightly export", || async {
        sqlx::query_scalar(
            "SELECT export_id FROM exports WHERE requested_by = 'nightly-orders-export'",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    })
    .await;
    let export = app.exports.wait_for(export_id, "completed").await;
    assert_eq!(export["processed_rows"], 500);
    assert_eq!(
        export["from"],
        Value::from(midnight.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );

    // Later fires of the schedule ask for the same day: still one export.
    eventually(EXPORT_DEADLINE, "two more fires", || async {
        let fired: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM scheduled_tasks
             WHERE recurring = 'nightly-orders-export' AND state = 'fired'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let executed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM task_executions WHERE task_name = 'StartNightlyExport'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (fired >= 3 && executed >= 3).then_some(())
    })
    .await;
    let exports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports WHERE requested_by = 'nightly-orders-export'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(exports, 1);
    app.stop().await.unwrap();
}

/// After a downtime, each missed night is exported once, for its own day (the day before the
/// schedule was due, not before the day the task ran), and the oldest beyond
/// `NIGHTLY_EXPORT_CATCH_UP` are skipped.
#[tokio::test]
async fn missed_nights_are_each_exported_once_up_to_the_catch_up_limit() {
    let app = spawn_app_with_env(&[("NIGHTLY_EXPORT_CATCH_UP", "3")], |_| {}).await;
    let now = Utc::now();
    let today = now.date_naive();
    let at_two = |days_ago: u64| {
        (today - Days::new(days_ago))
            .and_hms_opt(2, 0, 0)
            .unwrap()
            .and_utc()
    };
    // The service "was down" for five nights: its pending occurrence was due five days ago
    // (with the key the scheduler gives that occurrence).
    let updated = sqlx::query(
        "UPDATE scheduled_tasks SET due_at = $1, dedup_key = $2
         WHERE recurring = 'nightly-orders-export' AND state = 'pending'",
    )
    .bind(at_two(5))
    .bind(format!(
        "nightly-orders-export@{}",
        at_two(5).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);

    // Occurrences missed since: 5 to 1 days ago, and today's if it is past 02:00.
    let missed: Vec<u64> = (0..=5).rev().filter(|days| at_two(*days) <= now).collect();
    let kept = &missed[missed.len() - 3..];
    let nights: Vec<chrono::DateTime<Utc>> =
        eventually(EXPORT_DEADLINE, "three nightly exports", || async {
            let nights: Vec<chrono::DateTime<Utc>> = sqlx::query_scalar(
                "SELECT range_from FROM exports WHERE requested_by = 'nightly-orders-export'
             ORDER BY range_from",
            )
            .fetch_all(&app.pool)
            .await
            .unwrap();
            (nights.len() >= 3).then_some(nights)
        })
        .await;
    // Each kept occurrence exported the day before the one it was due on.
    let expected: Vec<chrono::DateTime<Utc>> = kept
        .iter()
        .map(|days| {
            (today - Days::new(days + 1))
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        })
        .collect();
    assert_eq!(nights, expected);

    // The older missed nights were skipped with a note, and the schedule goes on in the future.
    eventually(EXPORT_DEADLINE, "the next occurrence", || async {
        let pending: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
            "SELECT due_at FROM scheduled_tasks
             WHERE recurring = 'nightly-orders-export' AND state = 'pending'",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap();
        pending.filter(|due| *due > now)
    })
    .await;
    let skipped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduled_tasks
         WHERE recurring = 'nightly-orders-export' AND state = 'cancelled'
           AND note LIKE '%catch-up limit%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        skipped, 1,
        "the oldest missed nights are skipped in one step"
    );
    let exports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exports WHERE requested_by = 'nightly-orders-export'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(exports, 3);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_schedule_admin_lists_the_nightly_export_behind_the_token() {
    let app = spawn_app().await;
    let path = "/admin/schedules?state=pending";
    assert_eq!(app.http.get(path).await.status(), StatusCode::UNAUTHORIZED);
    let wrong = app
        .http
        .client
        .get(app.http.url(path))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let listed = app
        .http
        .client
        .get(app.http.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let schedules: Vec<Value> = listed.json().await.unwrap();
    assert!(
        schedules
            .iter()
            .any(|schedule| schedule["recurring"] == "nightly-orders-export"),
        "{schedules:?}"
    );
    app.stop().await.unwrap();
}

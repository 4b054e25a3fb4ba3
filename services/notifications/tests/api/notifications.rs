//! `GET /notifications`: what was delivered, filtered by order and kind. The tasks are the
//! contract's examples, one of each type, so this also proves that notifications handles every
//! documented task.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestTask, problem, spawn_app};

fn task_ids(notifications: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = notifications
        .iter()
        .map(|notification| notification["task_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn ids_of(tasks: &[&TestTask]) -> Vec<String> {
    let mut ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn notifications_are_listed_by_order_and_kind() {
    let app = spawn_app(None).await;
    let confirmed = TestTask::order_confirmation("ada@example.com");
    let order_id = confirmed.order_id();
    let cancelled = TestTask::order_cancelled(order_id, "ada@example.com");
    let reminded = TestTask::payment_reminder(Uuid::now_v7(), "grace@example.com");
    let other_order = TestTask::order_confirmation("grace@example.com");
    let export = TestTask::export_ready("grace@example.com");
    let all = [&confirmed, &cancelled, &reminded, &other_order, &export];
    for task in all {
        app.tasks.publish(task).await;
    }

    // Everything, newest first.
    let listed = app.delivered("", all.len()).await;
    assert_eq!(task_ids(&listed), ids_of(&all));
    let delivered_at: Vec<DateTime<Utc>> = listed
        .iter()
        .map(|notification| serde_json::from_value(notification["delivered_at"].clone()).unwrap())
        .collect();
    assert!(delivered_at.is_sorted_by(|a, b| a >= b), "{delivered_at:?}");

    let of_order = app.delivered(&format!("order_id={order_id}"), 2).await;
    assert_eq!(task_ids(&of_order), ids_of(&[&confirmed, &cancelled]));

    let cancellations = app
        .delivered(&format!("order_id={order_id}&kind=order_cancelled"), 1)
        .await;
    assert_eq!(cancellations[0]["task_id"], cancelled.id.to_string());

    let confirmations = app.delivered("kind=order_confirmation", 2).await;
    assert_eq!(
        task_ids(&confirmations),
        ids_of(&[&confirmed, &other_order])
    );

    let reminders = app.delivered("kind=payment_reminder", 1).await;
    assert_eq!(reminders[0]["order_id"], reminded.payload["order_id"]);

    // An export has an export_id and no order_id; an order notification the reverse.
    let exports = app.delivered("kind=export_ready", 1).await;
    assert_eq!(exports[0]["export_id"], export.payload["export_id"]);
    assert_eq!(exports[0]["recipient"], "grace@example.com");
    assert!(exports[0].get("order_id").is_none(), "{:#}", exports[0]);
    assert!(of_order[0].get("export_id").is_none(), "{:#}", of_order[0]);

    assert_eq!(
        app.delivered("kind=daily_digest", 0).await,
        Vec::<Value>::new()
    );
    assert_eq!(app.delivered("limit=2", 2).await, listed[..2]);
}

#[tokio::test]
async fn bad_filters_are_problems() {
    let app = spawn_app(None).await;

    // A value that does not parse is a 400 from the extractor ...
    for query in ["kind=order_shipped", "order_id=42"] {
        let body = problem(app.notifications(query).await, StatusCode::BAD_REQUEST).await;
        assert!(body["detail"].is_string(), "{query}: {body}");
    }
    // ... one that parses but is out of range a 422 naming it.
    for query in ["limit=0", "limit=1001"] {
        let body = problem(
            app.notifications(query).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(
            body["errors"]["limit"], "must be between 1 and 1000",
            "{query}"
        );
    }
}

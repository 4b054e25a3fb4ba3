//! Tasks become notifications: delivered to the webhook, retried on the retry topics while the
//! provider fails, recorded once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Answer, FakeProvider, TestTask, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_task_is_posted_to_the_webhook_and_recorded() {
    let provider = FakeProvider::start().await;
    let app = spawn_app(Some(&provider)).await;
    let task = TestTask::order_confirmation("ada@example.com");
    let order_id = task.order_id();

    app.tasks.publish(&task).await;

    let mut notification = app.delivered_task(&task).await;
    assert!(notification["delivered_at"].take().is_string());
    assert_eq!(
        notification,
        json!({
            "task_id": task.id,
            "kind": "order_confirmation",
            "order_id": order_id,
            "recipient": "ada@example.com",
            "attempts": 1,
            "delivered_at": null,
        })
    );
    let calls = provider.calls_for("ada@example.com");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].idempotency_key, Some(task.id.to_string()));
    let mut body = calls[0].body.clone();
    assert_eq!(body["subject"].take(), "Your order is confirmed");
    // The example's total, 4780 in EUR's minor unit.
    let text: String = serde_json::from_value(body["body"].take()).unwrap();
    assert!(
        text.contains(&order_id.to_string()) && text.contains("47.80 EUR"),
        "{text}"
    );
    assert_eq!(
        body,
        json!({
            "task_id": task.id,
            "kind": "order_confirmation",
            "recipient": "ada@example.com",
            "subject": null,
            "body": null,
            "order_id": order_id,
        })
    );
}

#[tokio::test]
async fn a_provider_that_fails_twice_delivers_on_the_third_attempt_once() {
    let provider = FakeProvider::start().await;
    provider.answer(
        "ada@example.com",
        &[Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    );
    let app = spawn_app(Some(&provider)).await;
    let task = TestTask::order_confirmation("ada@example.com");

    app.tasks.publish(&task).await;

    let notification = app.delivered_task(&task).await;
    assert_eq!(notification["attempts"], 3);
    let calls = provider.calls_for("ada@example.com");
    assert_eq!(
        calls.iter().map(|call| call.answer).collect::<Vec<_>>(),
        [
            Answer::Status(500),
            Answer::Status(500),
            Answer::Status(200)
        ]
    );
    // The same key every time, so that the provider can tell a repeat from a new notification.
    for call in &calls {
        assert_eq!(call.idempotency_key, Some(task.id.to_string()));
    }
    app.delivered(&format!("order_id={}", task.order_id()), 1)
        .await;
    assert!(app.dead_letters().await.is_empty());
}

/// No answer within `NOTIFY_WEBHOOK_TIMEOUT` is a failure like a 5xx: retried.
#[tokio::test]
async fn a_provider_that_does_not_answer_in_time_is_tried_again() {
    let provider = FakeProvider::start().await;
    provider.answer(
        "ada@example.com",
        &[Answer::Late(Duration::from_secs(3))],
        Answer::Status(200),
    );
    let app = spawn_app_with(&[
        ("NOTIFY_PROVIDER", "webhook".to_owned()),
        ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ("NOTIFY_WEBHOOK_TIMEOUT", "300ms".to_owned()),
    ])
    .await;
    let task = TestTask::order_confirmation("ada@example.com");

    app.tasks.publish(&task).await;

    let notification = app.delivered_task(&task).await;
    assert_eq!(notification["attempts"], 2);
    assert_eq!(provider.calls_for("ada@example.com").len(), 2);
}

/// A failed task waits on a retry topic, not in its partition: the task behind it (same key,
/// so same partition and same lane) is delivered long before the failed one's next attempt.
#[tokio::test]
async fn a_task_that_is_retrying_does_not_hold_up_the_tasks_behind_it() {
    let provider = FakeProvider::start().await;
    provider.answer("failing@example.com", &[], Answer::Status(503));
    let app = spawn_app_with(&[
        ("NOTIFY_PROVIDER", "webhook".to_owned()),
        ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ("NOTIFY_RETRY_DELAYS", "20s,20s,20s".to_owned()),
    ])
    .await;
    let failing = TestTask::order_confirmation("failing@example.com");
    let behind = TestTask::order_confirmation("ada@example.com");

    let started = Instant::now();
    app.tasks.publish_keyed(&failing, "one-key").await;
    app.tasks.publish_keyed(&behind, "one-key").await;

    app.delivered_task(&behind).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // The failing task has had its first attempt and waits for its second.
    assert_eq!(provider.calls_for("failing@example.com").len(), 1);
    app.delivered(&format!("order_id={}", failing.order_id()), 0)
        .await;
}

/// `NOTIFY_PROVIDER=log` (the default) only logs, and records the delivery like any other.
#[tokio::test]
async fn the_log_provider_records_notifications_without_sending_them() {
    let app = spawn_app(None).await;
    let task = TestTask::export_ready("grace@example.com");

    app.tasks.publish(&task).await;

    let notification: Value = app.delivered_task(&task).await;
    assert_eq!(notification["kind"], "export_ready");
    assert_eq!(notification["attempts"], 1);
}

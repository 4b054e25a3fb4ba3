//! What cannot be delivered ends in the dead-letter topic, shows in `GET /admin/dlq` with its
//! errors, and can be replayed or dropped.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Answer, FakeProvider, TestTask, problem, spawn_app};

#[tokio::test]
async fn a_task_that_keeps_failing_is_dead_lettered_and_replayed_once_the_provider_recovers() {
    let provider = FakeProvider::start().await;
    provider.answer("ada@example.com", &[], Answer::Status(503));
    let app = spawn_app(Some(&provider)).await;
    let task = TestTask::order_confirmation("ada@example.com");

    app.tasks.publish(&task).await;

    // The first attempt and one per retry level (200ms, 400ms, 800ms), then the DLQ.
    let letter = app.dead_letter(task.id).await;
    assert_eq!(letter["task_name"], "SendOrderConfirmation");
    assert_eq!(letter["attempts"], 4);
    for error in ["first_error", "last_error"] {
        let text = letter[error].as_str().unwrap();
        assert!(text.contains("503"), "{error}: {text}");
    }
    assert_eq!(letter["payload"], task.payload);
    assert_eq!(provider.calls_for("ada@example.com").len(), 4);
    app.delivered(&format!("order_id={}", task.order_id()), 0)
        .await;

    provider.answer("ada@example.com", &[], Answer::Status(200));
    let response = app.replay(task.id).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({ "replayed": 1 })
    );

    // A replay starts a new round of attempts.
    let notification = app.delivered_task(&task).await;
    assert_eq!(notification["attempts"], 1);
    let calls = provider.calls_for("ada@example.com");
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[4].answer, Answer::Status(200));
    assert!(app.dead_letters().await.is_empty());
    // Replayed already: there is nothing left to replay.
    problem(app.replay(task.id).await, StatusCode::NOT_FOUND).await;
}

/// The provider refusing a notification (4xx) will refuse it again: no retries.
#[tokio::test]
async fn a_client_error_from_the_provider_is_dead_lettered_at_once() {
    let provider = FakeProvider::start().await;
    provider.answer("nobody@example.com", &[], Answer::Status(422));
    let app = spawn_app(Some(&provider)).await;
    let task = TestTask::order_confirmation("nobody@example.com");

    app.tasks.publish(&task).await;

    let letter = app.dead_letter(task.id).await;
    assert_eq!(letter["attempts"], 1);
    let error = letter["last_error"].as_str().unwrap();
    assert!(error.contains("422"), "{error}");
    assert_eq!(provider.calls_for("nobody@example.com").len(), 1);
}

/// Bytes that are not a task, and a task type nobody handles, cannot succeed: they go to the
/// DLQ at once (the garbage after its one failed attempt, the unknown type without running),
/// and the task published behind them on the same partition (same key) is delivered.
#[tokio::test]
async fn garbage_and_unknown_task_types_are_dead_lettered_and_the_tasks_behind_them_flow() {
    let provider = FakeProvider::start().await;
    let app = spawn_app(Some(&provider)).await;
    let garbage = Uuid::now_v7();
    let unknown = Uuid::now_v7();
    let task = TestTask::order_confirmation("ada@example.com");

    app.tasks
        .publish_raw(
            "SendOrderConfirmation",
            garbage,
            "one-key",
            b"\xff\x00 not JSON",
        )
        .await;
    app.tasks
        .publish_raw(
            "SendCarrierPigeon",
            unknown,
            "one-key",
            br#"{"order_id": "01a2177f-52b4-7a9c-8f21-0d6e4a9b1c01"}"#,
        )
        .await;
    app.tasks.publish_keyed(&task, "one-key").await;

    app.delivered_task(&task).await;
    for (task_id, name, attempts) in [
        (garbage, "SendOrderConfirmation", 1),
        (unknown, "SendCarrierPigeon", 0),
    ] {
        let letter = app.dead_letter(task_id).await;
        assert_eq!(letter["task_name"], name);
        assert_eq!(letter["attempts"], attempts, "{letter:#}");
    }
    // Only the real task reached the provider.
    assert_eq!(provider.calls_for("ada@example.com").len(), 1);
}

#[tokio::test]
async fn a_dropped_dead_letter_is_gone_and_replay_all_replays_the_rest() {
    let provider = FakeProvider::start().await;
    provider.answer("ada@example.com", &[], Answer::Status(400));
    provider.answer("grace@example.com", &[], Answer::Status(400));
    let app = spawn_app(Some(&provider)).await;
    let dropped = TestTask::order_confirmation("ada@example.com");
    let replayed = TestTask::order_confirmation("grace@example.com");
    app.tasks.publish(&dropped).await;
    app.tasks.publish(&replayed).await;
    app.dead_letter(dropped.id).await;
    app.dead_letter(replayed.id).await;

    let path = format!("/admin/dlq/{}", dropped.id);
    let response = app.admin(Method::DELETE, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.admin(Method::DELETE, &path, Some(ADMIN_TOKEN)).await;
    problem(response, StatusCode::NOT_FOUND).await;

    provider.answer("ada@example.com", &[], Answer::Status(200));
    provider.answer("grace@example.com", &[], Answer::Status(200));
    let response = app
        .admin(Method::POST, "/admin/dlq/replay-all", Some(ADMIN_TOKEN))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap(),
        json!({ "replayed": 1 })
    );

    let notification = app.delivered_task(&replayed).await;
    assert_eq!(notification["recipient"], "grace@example.com");
    assert!(app.dead_letters().await.is_empty());
    // The dropped task was given up: never tried again.
    assert_eq!(provider.calls_for("ada@example.com").len(), 1);
}

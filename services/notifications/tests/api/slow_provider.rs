//! The provider is called with no database connection held: a slow provider keeps deliveries
//! waiting, not the pool, so the API stays responsive; and a delivery whose record fails after
//! the provider answered is delivered again with the same `Idempotency-Key` and recorded once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sqlx::PgPool;
use test_support::eventually;

use crate::helpers::{Answer, DEADLINE, FakeProvider, TestApp, TestTask, spawn_app_with};

/// The service delivering to `provider`, with a webhook timeout well above the provider's
/// slowest answer here.
async fn spawn_with_slow_provider(provider: &FakeProvider) -> TestApp {
    spawn_app_with(&[
        ("NOTIFY_PROVIDER", "webhook".to_owned()),
        ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ("NOTIFY_WEBHOOK_TIMEOUT", "20s".to_owned()),
    ])
    .await
}

/// How long `path` takes to answer 200.
async fn time_get(app: &TestApp, path: &str) -> Duration {
    let started = Instant::now();
    let response = app.http.get(path).await;
    let took = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    took
}

/// 500 deliveries against a provider that answers after 5 s. With the call inside the task's
/// transaction, the pool's 10 connections would be held by 10 waiting deliveries, the rest and
/// every request queued behind them; here `NOTIFY_CONCURRENCY` (256) of them wait on the
/// provider at once and the API answers meanwhile.
#[tokio::test]
async fn a_slow_provider_does_not_hold_up_the_api() {
    let provider = FakeProvider::start().await;
    let recipient = "slow@example.com";
    provider.answer(recipient, &[], Answer::Late(Duration::from_secs(5)));
    let app = spawn_with_slow_provider(&provider).await;
    let tasks: Vec<TestTask> = (0..500)
        .map(|_| TestTask::order_confirmation(recipient))
        .collect();

    for task in &tasks {
        app.tasks.publish(task).await;
    }

    // Far more calls waiting on the provider than the pool has connections.
    eventually(
        DEADLINE,
        "256 deliveries waiting on the provider",
        || async { (provider.calls_for(recipient).len() >= 256).then_some(()) },
    )
    .await;
    for path in ["/notifications?kind=order_confirmation", "/health/ready"] {
        let took = time_get(&app, path).await;
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
    }

    app.delivered("kind=order_confirmation&limit=1000", 500)
        .await;
    let calls = provider.calls_for(recipient);
    assert_eq!(calls.len(), 500, "each delivered once");
    let mut keys: Vec<String> = calls
        .iter()
        .map(|call| call.idempotency_key.clone().expect("an Idempotency-Key"))
        .collect();
    keys.sort_unstable();
    let mut task_ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    task_ids.sort_unstable();
    assert_eq!(keys, task_ids, "each call's key is its task id");
}

/// `NOTIFY_CONCURRENCY` bounds the deliveries waiting on the provider: 6 deliveries of 2 s
/// each, 3 at a time, take two rounds (6 at a time would take one).
#[tokio::test]
async fn notify_concurrency_bounds_the_calls_in_flight() {
    let provider = FakeProvider::start().await;
    let recipient = "bounded@example.com";
    provider.answer(recipient, &[], Answer::Late(Duration::from_secs(2)));
    let app = spawn_app_with(&[
        ("NOTIFY_PROVIDER", "webhook".to_owned()),
        ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ("NOTIFY_WEBHOOK_TIMEOUT", "20s".to_owned()),
        ("NOTIFY_CONCURRENCY", "3".to_owned()),
    ])
    .await;
    let tasks: Vec<TestTask> = (0..6)
        .map(|_| TestTask::order_confirmation(recipient))
        .collect();

    for task in &tasks {
        app.tasks.publish(task).await;
    }
    eventually(
        DEADLINE,
        "the first delivery waiting on the provider",
        || async { (!provider.calls_for(recipient).is_empty()).then_some(()) },
    )
    .await;
    let first_call = Instant::now();
    app.delivered("kind=order_confirmation", 6).await;

    let took = first_call.elapsed();
    // One round would take 2 s; two take 4 s, less the poll's delay in noticing the first call.
    assert!(took > Duration::from_secs(3), "two rounds of 2 s: {took:?}");
}

/// What a test-only fault in the database makes fail once, right after the provider answered.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The insert into `notifications` raises: the record step fails.
    Record,
    /// The transaction cannot commit (a deferred trigger raises at `COMMIT`).
    Commit,
}

/// Installs `fault` on `notifications` inserts, failing the first one only. The count is a
/// sequence, because `nextval` is not undone by the rollback that the raised error causes.
async fn inject(pool: &PgPool, fault: Fault) {
    let timing = match fault {
        Fault::Record => "BEFORE INSERT ON notifications FOR EACH ROW",
        Fault::Commit => "AFTER INSERT ON notifications DEFERRABLE INITIALLY DEFERRED FOR EACH ROW",
    };
    let kind = match fault {
        Fault::Record => "TRIGGER",
        Fault::Commit => "CONSTRAINT TRIGGER",
    };
    for statement in [
        "CREATE SEQUENCE test_fault_count".to_owned(),
        "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('test_fault_count') = 1 THEN
                 RAISE EXCEPTION 'injected by the test: the database fails once';
             END IF;
             RETURN NEW;
         END $$"
            .to_owned(),
        format!("CREATE {kind} test_fault {timing} EXECUTE FUNCTION test_fault()"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(pool)
            .await
            .expect("install the fault");
    }
}

/// Delivers one task against `fault` and returns the provider's calls and the notification.
async fn deliver_through(fault: Fault) -> (TestTask, Vec<crate::helpers::Call>, serde_json::Value) {
    let provider = FakeProvider::start().await;
    let app = spawn_with_slow_provider(&provider).await;
    let pool = PgPool::connect(app.database_url()).await.unwrap();
    inject(&pool, fault).await;
    let task = TestTask::order_confirmation("ada@example.com");

    app.tasks.publish(&task).await;

    let notification = app.delivered_task(&task).await;
    app.delivered(&format!("order_id={}", task.order_id()), 1)
        .await;
    let calls = provider.calls_for("ada@example.com");
    let faults: i64 = sqlx::query_scalar("SELECT last_value FROM test_fault_count")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        faults, 2,
        "the fault fired on the first record, not the second"
    );
    (task, calls, notification)
}

/// The record fails after the provider was called: the task goes to the retry level, the
/// provider is called again with the same key, and the delivery is recorded once.
#[tokio::test]
async fn a_record_that_fails_after_the_call_delivers_again_with_the_same_key() {
    let (task, calls, notification) = deliver_through(Fault::Record).await;

    assert_eq!(calls.len(), 2, "{calls:#?}");
    for call in &calls {
        assert_eq!(call.idempotency_key, Some(task.id.to_string()));
    }
    assert_eq!(
        notification["attempts"], 2,
        "recorded by the second attempt"
    );
}

/// The commit fails after the provider was called, as when the process dies there: the
/// outcome is undecided, the task runs again in place, the provider is called again with the
/// same key, and the delivery is recorded once.
#[tokio::test]
async fn a_commit_that_fails_after_the_call_delivers_again_with_the_same_key() {
    let (task, calls, _notification) = deliver_through(Fault::Commit).await;

    assert_eq!(calls.len(), 2, "{calls:#?}");
    for call in &calls {
        assert_eq!(call.idempotency_key, Some(task.id.to_string()));
    }
}

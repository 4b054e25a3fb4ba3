//! A message the broker refuses for good: too large ones are refused when recorded; one that
//! is refused at publish time anyway is parked, holds back only the later messages of its own
//! key, and waits for an operator to retry or drop it through the admin routes.

mod common;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Setup, settings};
use http_body_util::BodyExt as _;
use kafka::Producer;
use outbox::{MAX_MESSAGE_BYTES, Outbox, OutboxMessage, OutboxRelay, PayloadTooLarge};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

/// The producer refuses messages above this many bytes (librdkafka's own `message.max.bytes`):
/// a refusal as permanent as the broker's, and one that every broker produces alike.
const SMALL_LIMIT: &str = "1000";

/// A payload the small-limit producer refuses and a normal one accepts.
fn too_big() -> Value {
    json!("x".repeat(5_000))
}

/// A relay whose producer refuses messages above [`SMALL_LIMIT`] bytes: the broker "refusing"
/// a message until an operator fixes the cause (here: the relay with the normal producer).
fn strict_relay(setup: &Setup) -> OutboxRelay {
    let strict = setup.config.clone().set("message.max.bytes", SMALL_LIMIT);
    OutboxRelay::new(setup.db.pool.clone(), Producer::new(&strict).unwrap())
        .with_settings(settings())
}

/// Sends `request` to the admin routes; returns the status and the JSON body (`Null` if none).
async fn admin(setup: &Setup, request: Request<Body>) -> (StatusCode, Value) {
    let response = outbox::admin::router(setup.db.pool.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    (status, json)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str) -> Request<Body> {
    Request::post(uri).body(Body::empty()).unwrap()
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri).body(Body::empty()).unwrap()
}

/// How often each message id reached the topic, and the ids per key in the order received.
async fn received(setup: &Setup) -> (HashMap<Uuid, usize>, HashMap<String, Vec<Uuid>>) {
    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for message in setup.read_all().await {
        *copies.entry(message.message_id()).or_default() += 1;
        by_key
            .entry(message.key.clone().expect("a key"))
            .or_default()
            .push(message.message_id());
    }
    (copies, by_key)
}

#[tokio::test]
async fn a_message_above_the_limit_is_refused_when_recorded_and_nothing_is_written() {
    let setup = Setup::new(1).await;
    let mut tx = setup.db.pool.begin().await.unwrap();

    let huge = setup.message("order-1", &json!("x".repeat(MAX_MESSAGE_BYTES)));
    let size = huge.estimated_size();
    let error = Outbox::record(&mut tx, huge.clone()).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<PayloadTooLarge>(),
        Some(&PayloadTooLarge {
            size,
            limit: MAX_MESSAGE_BYTES
        })
    );
    assert!(size > MAX_MESSAGE_BYTES);
    // record_many refuses it before writing any of the batch.
    let small = setup.message("order-1", &json!("small"));
    let error = Outbox::record_many(&mut tx, &[small.clone(), huge])
        .await
        .unwrap_err();
    assert!(
        error.downcast_ref::<PayloadTooLarge>().is_some(),
        "{error:#}"
    );
    // A caller's own, lower limit.
    let error = Outbox::record_with_limit(&mut tx, setup.message("order-1", &too_big()), 2_000)
        .await
        .unwrap_err();
    assert_eq!(
        error.downcast_ref::<PayloadTooLarge>().map(|e| e.limit),
        Some(2_000)
    );

    // Nothing was inserted, and the transaction is still usable: the refusal came before any
    // statement.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    Outbox::record(&mut tx, small).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(setup.pending().await, 1);
}

#[tokio::test]
async fn a_refused_row_is_parked_and_holds_back_only_the_later_rows_of_its_key() {
    // One partition: every key shares it, so nothing but the relay keeps the keys apart.
    let setup = Setup::new(1).await;
    let a0 = setup.record(setup.message("a", &json!("a0"))).await;
    let refused = setup.record(setup.message("a", &too_big())).await;
    let b0 = setup.record(setup.message("b", &json!("b0"))).await;
    let a1 = setup.record(setup.message("a", &json!("a1"))).await;
    let b1 = setup.record(setup.message("b", &json!("b1"))).await;

    let strict = strict_relay(&setup);
    assert_eq!(strict.publish_pending().await.unwrap(), 3, "a0, b0, b1");

    assert!(setup.row_state(a0).await.2);
    assert!(setup.row_state(b0).await.2 && setup.row_state(b1).await.2);
    let (attempts, last_error, published) = setup.row_state(refused).await;
    assert_eq!((attempts, published), (1, false));
    let last_error = last_error.expect("the refusal is recorded");
    assert!(last_error.contains("too large"), "{last_error}");
    assert_eq!(setup.parked_or_dropped(refused).await, (true, false));
    // a1 waits behind the parked row of its key, never sent and never charged.
    assert_eq!(setup.row_state(a1).await, (0, None, false));
    assert_eq!(strict.publish_pending().await.unwrap(), 0, "a1 still waits");
    assert_eq!(setup.row_state(a1).await, (0, None, false));
    let backlog = Outbox::backlog(&setup.db.pool).await.unwrap();
    assert_eq!((backlog.pending, backlog.parked), (1, 1));

    let (status, page) = admin(&setup, get("/admin/outbox/parked")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let refused_id = setup.row_id(refused).await;
    assert_eq!(page["next_cursor"], Value::Null);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], refused_id);
    assert_eq!(items[0]["message_id"], refused.to_string());
    assert_eq!(items[0]["topic"], setup.topic);
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["waiting"], 1);
    assert_eq!(items[0]["attempts"], 1);
    assert!(
        items[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("too large")
    );

    // The cause is fixed (a relay whose producer takes large messages); the operator retries.
    let (status, body) = admin(
        &setup,
        post(&format!("/admin/outbox/parked/{refused_id}/retry")),
    )
    .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(setup.parked_or_dropped(refused).await, (false, false));
    let relay = common::RunningRelay::start(setup.relay(settings()));
    setup.all_published().await;
    relay.stop().await;

    let (copies, by_key) = received(&setup).await;
    assert_eq!(by_key["a"], [a0, refused, a1], "the key's order holds");
    assert_eq!(by_key["b"], [b0, b1]);
    assert!(
        copies.values().all(|&n| n == 1),
        "no acknowledged row is sent again: {copies:?}"
    );
    let (status, page) = admin(&setup, get("/admin/outbox/parked")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn dropping_a_parked_row_lets_the_later_rows_of_its_key_go() {
    let setup = Setup::new(1).await;
    let a0 = setup.record(setup.message("a", &json!("a0"))).await;
    let refused = setup.record(setup.message("a", &too_big())).await;
    let a1 = setup.record(setup.message("a", &json!("a1"))).await;
    let strict = strict_relay(&setup);
    assert_eq!(strict.publish_pending().await.unwrap(), 1);
    let refused_id = setup.row_id(refused).await;

    let (status, body) = admin(
        &setup,
        delete(&format!("/admin/outbox/parked/{refused_id}")),
    )
    .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));

    // Even the strict relay publishes a1 now: nothing of its key is in front of it any more.
    assert_eq!(strict.publish_pending().await.unwrap(), 1);
    assert!(setup.row_state(a1).await.2);
    // The dropped row stays for the record, neither pending nor parked nor published.
    assert_eq!(setup.parked_or_dropped(refused).await, (false, true));
    assert!(!setup.row_state(refused).await.2);
    assert_eq!(setup.pending().await, 0);

    // Gone from the parked rows: retrying or dropping it again is a 404.
    for request in [
        post(&format!("/admin/outbox/parked/{refused_id}/retry")),
        delete(&format!("/admin/outbox/parked/{refused_id}")),
    ] {
        let (status, problem) = admin(&setup, request).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(&refused_id.to_string()),
            "{problem}"
        );
    }

    let (_, by_key) = received(&setup).await;
    assert_eq!(by_key["a"], [a0, a1]);
}

#[tokio::test]
async fn parked_rows_are_listed_in_pages_and_bad_parameters_are_a_422() {
    let setup = Setup::new(1).await;
    let mut refused = Vec::new();
    for key in ["a", "b", "c"] {
        refused.push(setup.record(setup.message(key, &too_big())).await);
    }
    assert_eq!(strict_relay(&setup).publish_pending().await.unwrap(), 0);

    let (status, first) = admin(&setup, get("/admin/outbox/parked?limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["message_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&first),
        [refused[0].to_string(), refused[1].to_string()]
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = admin(
        &setup,
        get(&format!("/admin/outbox/parked?limit=2&after={cursor}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(ids(&second), [refused[2].to_string()]);
    assert_eq!(second["next_cursor"], Value::Null);

    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
    ] {
        let (status, problem) = admin(&setup, get(&format!("/admin/outbox/parked?{query}"))).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert!(
            problem["errors"][parameter].is_string(),
            "{query}: {problem}"
        );
    }
    let (status, _) = admin(&setup, post("/admin/outbox/parked/999999/retry")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rows_without_a_key_are_not_held_back_by_a_parked_row() {
    let setup = Setup::new(1).await;
    let keyless = |payload: Value| {
        let mut message =
            OutboxMessage::json(&setup.topic, "unused", "TestEvent", &payload).unwrap();
        message.key = None;
        message
    };
    let refused = setup.record(keyless(too_big())).await;
    let after = setup.record(keyless(json!("after"))).await;

    assert_eq!(strict_relay(&setup).publish_pending().await.unwrap(), 1);

    assert_eq!(setup.parked_or_dropped(refused).await, (true, false));
    assert!(setup.row_state(after).await.2);
}

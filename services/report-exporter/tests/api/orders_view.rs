//! The `orders_view` read model, fed from `orders.orders.v1`.
//!
//! The orders service never runs in these tests: orders reach report-exporter only as events,
//! built from the contract's examples.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;
use test_support::eventually;

use crate::helpers::{ADMIN_TOKEN, DEADLINE, Order, OrdersService, spawn_app};

#[tokio::test]
async fn a_placed_then_paid_order_is_paid_at_revision_2_and_a_stale_event_leaves_it() {
    let app = spawn_app().await;
    let orders = OrdersService::new().await;
    let order = Order::example();
    let placed = order.placed(1);

    orders.publish(&placed).await;
    orders.publish(&order.paid(2)).await;

    let paid = app.order_view_at(order.id, 2).await;
    assert_eq!(paid, order.expected_row("paid", 2, &paid));
    assert_eq!(paid.item_count, 3);
    assert!(paid.synced_at <= Utc::now());

    // The OrderPlaced event again, as a redelivery or a replay would bring it.
    let stale = orders.publish(&placed).await;
    app.projection_handled(stale).await;

    // Not even rewritten with the same values: `synced_at` is unchanged too.
    assert_eq!(app.order_view(order.id).await, Some(paid));
}

#[tokio::test]
async fn a_cancelled_order_is_cancelled() {
    let app = spawn_app().await;
    let orders = OrdersService::new().await;
    let mut order = Order::example();
    order.items = vec![(5, 100)];
    let placed = orders.seed(&app, &order).await;
    assert_eq!(placed, order.expected_row("pending_payment", 1, &placed));

    orders.publish(&order.cancelled(2)).await;

    let cancelled = app.order_view_at(order.id, 2).await;
    assert_eq!(cancelled, order.expected_row("cancelled", 2, &cancelled));
    assert_eq!((cancelled.item_count, cancelled.total_cents), (5, 500));
    assert!(cancelled.synced_at >= placed.synced_at);
}

#[tokio::test]
async fn events_that_cannot_be_applied_are_set_aside_and_the_order_after_them_is_applied() {
    let app = spawn_app().await;
    let orders = OrdersService::new().await;
    let mut order = Order::example();
    // Quantities that add up past 32 bits: once a reason for the projection to stop for good.
    order.items = vec![(i32::MAX, 1), (1, 1)];
    let key = order.id.to_string();
    // Garbage, `{}` and a tombstone on the order's key: the same partition, before its event.
    orders.publish_raw(&key, Some(b"\xff not json")).await;
    orders.publish_raw(&key, Some(b"{}")).await;
    orders.publish_raw(&key, None).await;

    let placed = orders.seed(&app, &order).await;
    assert_eq!(placed.item_count, i64::from(i32::MAX) + 1);

    let path = format!(
        "/admin/dead-letters?consumer={}.orders_view",
        app.consumer_group_prefix
    );
    assert_eq!(app.http.get(&path).await.status(), StatusCode::UNAUTHORIZED);
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_TOKEN).send();
    // Other tests publish to the same topic: only this order's key counts.
    let listed = eventually(DEADLINE, "two dead letters of this order", || async {
        let page: Value = admin(app.http.client.get(app.http.url(&path)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mine: Vec<Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item["key"] == key.as_str())
            .cloned()
            .collect();
        (mine.len() == 2).then_some(mine)
    })
    .await;
    assert_eq!(listed[0]["payload"], "\u{fffd} not json");
    assert_eq!(listed[1]["payload"], serde_json::json!({}));
    assert!(
        listed.iter().all(|item| item["topic"] == "orders.orders.v1"
            && item["error"].as_str().unwrap().contains("decode")),
        "{listed:#?}"
    );

    // Replaying garbage fails again (409, still listed); dropping it takes it off the list.
    let garbage = listed[0]["id"].as_str().unwrap();
    let replay = admin(
        app.http.client.post(
            app.http
                .url(&format!("/admin/dead-letters/{garbage}/replay")),
        ),
    )
    .await
    .unwrap();
    assert_eq!(replay.status(), StatusCode::CONFLICT);
    let dropped = admin(
        app.http
            .client
            .delete(app.http.url(&format!("/admin/dead-letters/{garbage}"))),
    )
    .await
    .unwrap();
    assert_eq!(dropped.status(), StatusCode::NO_CONTENT);
    let shown: Value = admin(
        app.http
            .client
            .get(app.http.url(&format!("/admin/dead-letters/{garbage}"))),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["replays"].as_i64()),
        (Some("dropped"), Some(1))
    );
    let bad_limit = admin(
        app.http
            .client
            .get(app.http.url("/admin/dead-letters?limit=0")),
    )
    .await
    .unwrap();
    assert_eq!(bad_limit.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

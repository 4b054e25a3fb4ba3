//! The `orders_view` read model, fed from `orders.orders.v1`.
//!
//! The orders service never runs in these tests: orders reach report-exporter only as events,
//! built from the contract's examples.

use chrono::Utc;

use crate::helpers::{Order, OrdersService, spawn_app};

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

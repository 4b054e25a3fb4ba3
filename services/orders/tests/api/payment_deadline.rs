//! The payment deadline: every order is cancelled at `payment_due_at` unless it was paid, and
//! its customer is reminded half-way there. Both are schedules of the task scheduler, stored
//! with the order; `PAYMENT_TIMEOUT` is seconds here, so that they fire within the test.
//!
//! notifications does not run: the tests read its tasks from `notifications.tasks.v1` as its
//! worker would.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    CatalogCache, Product, TestApp, contract_example, notification_task_for, order_event_of_type,
    shape, spawn_app_with_env,
};

async fn spawn_with_payment_timeout(timeout: &str) -> TestApp {
    spawn_app_with_env(&[("PAYMENT_TIMEOUT", timeout)], |_| {}).await
}

/// Places an order of one product and returns it, as the API answered.
async fn placed_order(app: &TestApp) -> Value {
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(app, &cup).await;
    let order = json!({
        "customer_id": "c-1042",
        "customer_email": "ada@example.com",
        "items": [{ "product_id": cup.id, "quantity": 2 }],
    });
    let response = app.post_order(&order).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

fn time(value: &Value) -> DateTime<Utc> {
    serde_json::from_value(value.clone()).unwrap_or_else(|_| panic!("not a time: {value}"))
}

/// `value` without `correlation_id`, which an event has only when a request made the change.
fn without_correlation_id(mut value: Value) -> Value {
    value
        .as_object_mut()
        .expect("an envelope")
        .remove("correlation_id");
    value
}

#[tokio::test]
async fn an_unpaid_order_is_cancelled_at_its_deadline() {
    let app = spawn_with_payment_timeout("1s").await;
    let placed = placed_order(&app).await;
    let order_id = placed["order_id"].as_str().unwrap();

    let cancelled = app.order_in_status(order_id, "cancelled").await;

    let mut expected = placed.clone();
    expected["status"] = json!("cancelled");
    assert_eq!(cancelled, expected);

    let message = order_event_of_type(order_id, "OrderCancelled").await;
    let event: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(event["kind"], "updated");
    assert_eq!(event["revision"], 2);
    assert_eq!(event["payload"]["modified_fields"], json!(["status"]));
    assert_eq!(event["payload"]["entity"]["status"], "cancelled");
    // Not before the deadline.
    assert!(time(&event["occurred_at"]) >= time(&placed["payment_due_at"]));
    assert_eq!(
        shape(&without_correlation_id(event)),
        shape(&without_correlation_id(contract_example(
            "orders.orders.v1/order-cancelled.json"
        )))
    );

    // The notice for the customer, enqueued with the cancellation, with the contract's task id.
    let order_uuid: Uuid = order_id.parse().unwrap();
    let message = notification_task_for("SendOrderCancelled", order_id).await;
    assert_eq!(
        message.message_id(),
        Some(
            Uuid::new_v5(&order_uuid, b"SendOrderCancelled")
                .to_string()
                .as_str()
        )
    );
    let task: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        task,
        json!({ "order_id": order_id, "customer_email": "ada@example.com" })
    );
    assert_eq!(
        shape(&task),
        shape(&contract_example(
            "notifications.tasks.v1/send-order-cancelled.json"
        ))
    );
}

#[tokio::test]
async fn the_customer_is_reminded_half_way_to_the_deadline() {
    let app = spawn_with_payment_timeout("4s").await;
    let placed = placed_order(&app).await;
    let order_id = placed["order_id"].as_str().unwrap();

    let message = notification_task_for("SendPaymentReminder", order_id).await;

    let task: Value = serde_json::from_slice(message.payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        task,
        json!({
            "order_id": order_id,
            "customer_email": "ada@example.com",
            "payment_due_at": placed["payment_due_at"],
        })
    );
    assert_eq!(
        shape(&task),
        shape(&contract_example(
            "notifications.tasks.v1/send-payment-reminder.json"
        ))
    );
    // Fired at created_at + 2 s: not before, and well before the deadline.
    let reminder = app
        .schedule("fired", &format!("order:{order_id}:payment-reminder"))
        .await
        .expect("the reminder's schedule has fired");
    let half_way = time(&placed["created_at"]) + chrono::Duration::seconds(2);
    assert_eq!(time(&reminder["due_at"]), half_way);
    let fired_at = time(&reminder["fired_at"]);
    assert!(fired_at >= half_way, "fired at {fired_at}, due {half_way}");
    assert!(fired_at < time(&placed["payment_due_at"]), "{fired_at}");
}

/// Paying cancels both schedules in the payment's transaction: neither the reminder nor the
/// cancellation ever fires.
#[tokio::test]
async fn a_paid_order_is_neither_reminded_nor_cancelled() {
    let app = spawn_with_payment_timeout("4s").await;
    let placed = placed_order(&app).await;
    let order_id = placed["order_id"].as_str().unwrap();

    assert_eq!(app.pay_order(order_id).await.status(), StatusCode::OK);
    // Past the deadline, with a margin for a scheduler that would (wrongly) fire late.
    let wait = time(&placed["payment_due_at"]) - Utc::now() + chrono::Duration::seconds(2);
    tokio::time::sleep(wait.to_std().unwrap_or(Duration::ZERO)).await;

    let order: Value = app.get_order(order_id).await.json().await.unwrap();
    assert_eq!(order["status"], "paid");
    for key in ["cancel-unpaid", "payment-reminder"] {
        let key = format!("order:{order_id}:{key}");
        assert!(
            app.schedule("cancelled", &key).await.is_some(),
            "{key} is not cancelled"
        );
        assert!(app.schedule("fired", &key).await.is_none(), "{key} fired");
    }
}

#[tokio::test]
async fn a_cancelled_order_cannot_be_paid() {
    let app = spawn_with_payment_timeout("1s").await;
    let placed = placed_order(&app).await;
    let order_id = placed["order_id"].as_str().unwrap();
    app.order_in_status(order_id, "cancelled").await;

    let response = app.pay_order(order_id).await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["title"], "Order cancelled");
    let order: Value = app.get_order(order_id).await.json().await.unwrap();
    assert_eq!(order["status"], "cancelled");
}

/// The deadline holds where payment is decided: with the cancellation not fired (here: its
/// schedule cancelled by an operator, as a scheduler that is behind or down would leave it), a
/// payment after `payment_due_at` is refused all the same.
#[tokio::test]
async fn a_payment_after_the_deadline_is_refused_even_before_the_cancellation_fires() {
    let app = spawn_with_payment_timeout("2s").await;
    let placed = placed_order(&app).await;
    let order_id = placed["order_id"].as_str().unwrap();
    let cancellation = app
        .schedule("pending", &format!("order:{order_id}:cancel-unpaid"))
        .await
        .expect("the cancellation is scheduled");
    let id = cancellation["id"].as_str().unwrap();
    let cancelled = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/admin/schedules/{id}"),
            Some(crate::helpers::ADMIN_TOKEN),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    // Past the deadline: a sleep is the point here, not a synchronisation.
    let wait = time(&placed["payment_due_at"]) - Utc::now() + chrono::Duration::milliseconds(100);
    tokio::time::sleep(wait.to_std().unwrap_or(Duration::ZERO)).await;

    let response = app.pay_order(order_id).await;

    assert_eq!(response.status(), StatusCode::CONFLICT);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["title"], "Payment overdue");
    let order: Value = app.get_order(order_id).await.json().await.unwrap();
    assert_eq!(order["status"], "pending_payment", "nothing changed");
}

//! The schedule admin endpoints: `GET /admin/schedules` and `DELETE /admin/schedules/{id}`,
//! behind `ADMIN_TOKEN`.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    ADMIN_TOKEN, CatalogCache, Product, TestApp, contract_example, shape, spawn_app,
    spawn_app_with_env,
};

async fn placed_order_id(app: &TestApp) -> String {
    let catalog = CatalogCache::new().await;
    let cup = Product::new(1250);
    catalog.seed(app, &cup).await;
    let order = json!({
        "customer_id": "c-1042",
        "customer_email": "ada@example.com",
        "items": [{ "product_id": cup.id, "quantity": 1 }],
    });
    let placed: Value = app.post_order(&order).await.json().await.unwrap();
    placed["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let app = spawn_app().await;

    for token in [None, Some("wrong-token")] {
        let response = app.admin(Method::GET, "/admin/schedules", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let path = format!("/admin/schedules/{}", Uuid::now_v7());
        let response = app.admin(Method::DELETE, &path, token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
    }
}

/// A new order's two schedules are listed as pending; cancelling one moves it to cancelled, and
/// it cannot be cancelled twice.
#[tokio::test]
async fn schedules_are_listed_by_state_and_can_be_cancelled() {
    let app = spawn_app().await;
    let order_id = placed_order_id(&app).await;
    let cancel_key = format!("order:{order_id}:cancel-unpaid");
    let reminder_key = format!("order:{order_id}:payment-reminder");

    let cancel = app
        .schedule("pending", &cancel_key)
        .await
        .expect("the cancellation is pending");
    assert_eq!(cancel["task"]["task_name"], "CancelUnpaidOrder");
    assert_eq!(cancel["task"]["payload"], json!({ "order_id": order_id }));
    assert_eq!(
        shape(&cancel["task"]["payload"]),
        shape(&contract_example(
            "orders.tasks.v1/cancel-unpaid-order.json"
        ))
    );
    let reminder = app
        .schedule("pending", &reminder_key)
        .await
        .expect("the reminder is pending");
    assert_eq!(reminder["task"]["task_name"], "SendPaymentReminder");
    assert_eq!(reminder["task"]["topic"], "notifications.tasks.v1");

    let path = format!("/admin/schedules/{}", reminder["id"].as_str().unwrap());
    let response = app.admin(Method::DELETE, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.admin(Method::DELETE, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    assert!(app.schedule("pending", &reminder_key).await.is_none());
    let cancelled = app.schedule("cancelled", &reminder_key).await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert!(app.schedule("pending", &cancel_key).await.is_some());
}

#[tokio::test]
async fn unknown_schedules_and_states_are_refused() {
    let app = spawn_app().await;

    let path = format!("/admin/schedules/{}", Uuid::now_v7());
    let response = app.admin(Method::DELETE, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A state that does not parse is a 400, a limit that parses but is out of range a 422.
    for (query, status) in [
        ("state=sleeping", StatusCode::BAD_REQUEST),
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let path = format!("/admin/schedules?{query}");
        let response = app.admin(Method::GET, &path, Some(ADMIN_TOKEN)).await;
        assert_eq!(response.status(), status, "{query}");
    }
}

#[tokio::test]
async fn admin_routes_can_be_turned_off() {
    let app = spawn_app_with_env(&[("ADMIN_ROUTES", "false"), ("ADMIN_TOKEN", "")], |_| {}).await;

    let response = app
        .admin(Method::GET, "/admin/schedules", Some(ADMIN_TOKEN))
        .await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

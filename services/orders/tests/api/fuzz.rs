//! Hostile input on every route: never a 5xx, every 4xx a problem (see `test_support::fuzz`),
//! and each text field of an order refuses NUL, control characters and over-long values by
//! name.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::fuzz::{self, Fuzzer, Route};

use crate::helpers::{ADMIN_TOKEN, spawn_app};

fn valid_order() -> Value {
    json!({
        "customer_id": "c-1",
        "customer_email": "ada@example.com",
        "items": [{ "product_id": "p-1", "quantity": 2 }, { "product_id": "p-2", "quantity": 1 }],
    })
}

#[tokio::test]
async fn no_input_gets_a_server_error_or_a_bare_client_error() {
    let app = spawn_app().await;
    let order_id = uuid::Uuid::now_v7().to_string();
    let mut routes = vec![
        Route::new(Method::POST, "/orders").body(valid_order()),
        Route::new(Method::GET, "/orders/{order_id}").param("order_id", &order_id),
        Route::new(Method::POST, "/orders/{order_id}/pay").param("order_id", &order_id),
        Route::new(Method::GET, "/catalog/products/{product_id}").param("product_id", "p-1"),
    ];
    routes.extend(fuzz::crate_admin_routes(ADMIN_TOKEN));

    Fuzzer::new().run(&app.http, &routes, 1000).await;
}

#[tokio::test]
async fn nul_control_characters_and_over_long_text_are_refused_by_field() {
    let app = spawn_app().await;
    let long = "x".repeat(10_000);
    // Each field by its name in `errors`, and where it is in the body.
    let fields = [
        ("customer_id", "/customer_id"),
        ("customer_email", "/customer_email"),
        ("items[0].product_id", "/items/0/product_id"),
    ];
    for (field, pointer) in fields {
        for text in [
            "a\0b@example.com",
            "a\u{1b}b@example.com",
            "a\nb@example.com",
            &long,
        ] {
            let mut order = valid_order();
            *order.pointer_mut(pointer).expect("the field") = json!(text);
            fuzz::assert_invalid_field(app.post_order(&order).await, field).await;
        }
    }

    let response = app.get_catalog_product("p%00").await;
    fuzz::assert_invalid_field(response, "product_id").await;
    let response = app.get_catalog_product(&"p".repeat(1000)).await;
    fuzz::assert_invalid_field(response, "product_id").await;
}

#[tokio::test]
async fn wrong_types_are_a_problem_that_names_the_field() {
    let app = spawn_app().await;
    let mut order = valid_order();
    order["items"][1]["quantity"] = json!("two");

    fuzz::assert_invalid_field(app.post_order(&order).await, "items[1].quantity").await;

    let mut order = valid_order();
    order["items"][0]["quantity"] = json!(i64::MAX);
    fuzz::assert_invalid_field(app.post_order(&order).await, "items[0].quantity").await;

    let mut order = valid_order();
    order
        .as_object_mut()
        .expect("an object")
        .remove("customer_email");
    fuzz::assert_invalid_field(app.post_order(&order).await, "customer_email").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let mut order = valid_order();
    order["customer_id"] = json!("x".repeat(300 * 1024));

    let response = app.post_order(&order).await;

    let status = response.status();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body = response.bytes().await.expect("a body");
    fuzz::assert_problem(status, &content_type, &body).expect("a problem");
}

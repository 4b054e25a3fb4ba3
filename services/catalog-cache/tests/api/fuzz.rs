//! Hostile input on every route: never a 5xx, every 4xx a problem (see `test_support::fuzz`),
//! and each text of a product refuses NUL, control characters and over-long values by name.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::fuzz::{self, Fuzzer, Route};

use crate::helpers::{ADMIN_TOKEN, spawn_app};

fn valid_product() -> Value {
    json!({
        "sku": "CUP-ESP-01",
        "name": "Espresso cup",
        "price_cents": 1250,
        "currency": "EUR",
        "stock": 40,
        "active": true,
    })
}

#[tokio::test]
async fn no_input_gets_a_server_error_or_a_bare_client_error() {
    let app = spawn_app().await;
    let mut routes = vec![
        Route::new(Method::PUT, "/products/{product_id}")
            .param("product_id", "fuzz-cup")
            .body(valid_product()),
        Route::new(Method::GET, "/products/{product_id}").param("product_id", "fuzz-cup"),
        Route::new(Method::DELETE, "/products/{product_id}").param("product_id", "fuzz-cup"),
        Route::new(Method::GET, "/products").query(&["limit", "cursor"]),
    ];
    // catalog-cache mounts only the outbox's admin routes; the others answer 404 problems.
    routes.extend(fuzz::crate_admin_routes(ADMIN_TOKEN));

    Fuzzer::new().run(app.http(), &routes, 1000).await;
}

#[tokio::test]
async fn nul_control_characters_and_over_long_text_are_refused_by_field() {
    let app = spawn_app().await;
    let long = "x".repeat(10_000);
    for field in ["sku", "name", "currency"] {
        for text in ["a\0b", "a\u{1b}b", "a\nb", &long] {
            let mut product = valid_product();
            product[field] = json!(text);
            fuzz::assert_invalid_field(app.put_product("cup", &product).await, field).await;
        }
    }
    for field in ["price_cents", "stock"] {
        let mut product = valid_product();
        product[field] = json!(i64::MAX);
        fuzz::assert_invalid_field(app.put_product("cup", &product).await, field).await;
    }
    for id in ["p%00", "p%1B", &"p".repeat(1000)] {
        fuzz::assert_invalid_field(app.get_product(id).await, "product_id").await;
        fuzz::assert_invalid_field(app.delete_product(id).await, "product_id").await;
    }

    let response = app.list_products(None, Some("a\0b")).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = response.json().await.expect("a problem");
    assert!(problem["errors"]["cursor"].is_string(), "{problem}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let mut product = valid_product();
    product["name"] = json!("x".repeat(32 * 1024));

    let response = app.put_product("cup", &product).await;

    let status = response.status();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body = response.bytes().await.expect("a body");
    fuzz::assert_problem(status, &content_type, &body).expect("a problem");
}

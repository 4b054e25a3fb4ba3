//! Hostile input on every route: never a 5xx, every 4xx a problem (see `test_support::fuzz`).
//! No route of notifications reads a body; the query of `GET /notifications` is the input that
//! reaches the database, and none of it does unless it parses.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use test_support::fuzz::{self, Fuzzer, Route};

use crate::helpers::{ADMIN_TOKEN, spawn_app};

#[tokio::test]
async fn no_input_gets_a_server_error_or_a_bare_client_error() {
    let app = spawn_app(None).await;
    let task_id = uuid::Uuid::now_v7().to_string();
    let mut routes = vec![
        Route::new(Method::GET, "/notifications").query(&["order_id", "kind", "limit"]),
        Route::new(Method::GET, "/admin/dlq").bearer(ADMIN_TOKEN),
        Route::new(Method::POST, "/admin/dlq/replay-all").bearer(ADMIN_TOKEN),
        Route::new(Method::POST, "/admin/dlq/{task_id}/replay")
            .param("task_id", &task_id)
            .bearer(ADMIN_TOKEN),
        Route::new(Method::DELETE, "/admin/dlq/{task_id}")
            .param("task_id", &task_id)
            .bearer(ADMIN_TOKEN),
    ];
    routes.extend(fuzz::crate_admin_routes(ADMIN_TOKEN));

    Fuzzer::new().run(&app.http, &routes, 1000).await;
}

#[tokio::test]
async fn nul_control_characters_and_over_long_filters_are_problems_that_name_them() {
    let app = spawn_app(None).await;
    let long = "x".repeat(10_000);
    for (parameter, value) in [
        ("kind", "%00"),
        ("kind", "order_confirmation%00"),
        ("kind", "%1B"),
        ("kind", long.as_str()),
        ("order_id", "%00"),
        ("order_id", long.as_str()),
        ("limit", "%00"),
        ("limit", "99999999999999999999"),
    ] {
        let response = app
            .http
            .get(&format!("/notifications?{parameter}={value}"))
            .await;

        let status = response.status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{parameter}={value:.40}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        let body = response.bytes().await.expect("a body");
        fuzz::assert_problem(status, &content_type, &body).expect("a problem");
        let problem: Value = serde_json::from_slice(&body).expect("JSON");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(parameter) || problem["errors"][parameter].is_string(),
            "{parameter}: {problem}"
        );
    }
}

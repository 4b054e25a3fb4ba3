//! Hostile input on every route: never a 5xx, every 4xx a problem (see `test_support::fuzz`),
//! and the text of an export request refuses NUL, control characters and over-long values by
//! name.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::fuzz::{self, Fuzzer, Route};

use crate::exports_helpers::ExportsClient;
use crate::helpers::{ADMIN_TOKEN, EXPORTS_TOKEN, spawn_app};

fn valid_export() -> Value {
    json!({
        "from": "2026-01-01T00:00:00Z",
        "to": "2026-01-02T00:00:00Z",
        "status": "paid",
        "chunk_size": 100,
        "max_rows_per_sec": 1000,
        "shards": 2,
        "recipient": "grace@example.com",
    })
}

#[tokio::test]
async fn no_input_gets_a_server_error_or_a_bare_client_error() {
    let app = spawn_app().await;
    let export_id = uuid::Uuid::now_v7().to_string();
    let mut routes = vec![Route::new(Method::POST, "/exports").body(valid_export())];
    for path in [
        "/exports/{export_id}",
        "/exports/{export_id}/pause",
        "/exports/{export_id}/resume",
        "/exports/{export_id}/cancel",
        "/exports/{export_id}/download",
    ] {
        let method = if path.ends_with('}') || path.ends_with("download") {
            Method::GET
        } else {
            Method::POST
        };
        routes.push(Route::new(method, path).param("export_id", &export_id));
    }
    for route in &mut routes {
        *route = route.clone().bearer(EXPORTS_TOKEN);
    }
    routes.extend(fuzz::crate_admin_routes(ADMIN_TOKEN));

    Fuzzer::new().run(&app.http, &routes, 1000).await;
}

#[tokio::test]
async fn nul_control_characters_over_long_text_and_far_dates_are_refused_by_field() {
    let app = spawn_app().await;
    let exports = ExportsClient::new(&app.http.url(""));
    let long = format!("{}@example.com", "x".repeat(10_000));
    for field in ["recipient", "status"] {
        for text in [
            "a\0b@example.com",
            "a\u{1b}b@example.com",
            "a\nb@example.com",
            &long,
        ] {
            let mut export = valid_export();
            export[field] = json!(text);
            fuzz::assert_invalid_field(exports.create(&export).await, field).await;
        }
    }
    for field in ["from", "to"] {
        let mut export = valid_export();
        export[field] = json!("0000-01-01T00:00:00Z");
        fuzz::assert_invalid_field(exports.create(&export).await, field).await;
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app().await;
    let exports = ExportsClient::new(&app.http.url(""));
    let mut export = valid_export();
    export["recipient"] = json!("x".repeat(32 * 1024));

    let response = exports.create(&export).await;

    let status = response.status();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let body = response.bytes().await.expect("a body");
    fuzz::assert_problem(status, &content_type, &body).expect("a problem");
}

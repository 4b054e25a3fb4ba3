//! The shared router, exercised in memory with `Router::oneshot`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::header::{ALLOW, CONTENT_TYPE};
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use platform::health::{Health, ReadinessCheck};
use platform::http::{self, HttpSettings, Json, Path, Problem, Query};
use platform::telemetry::{self, TraceContext, current_correlation_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, Deserialize, Serialize)]
struct NewOrder {
    item: String,
    quantity: u32,
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: u32,
}

async fn create_order(Json(order): Json<NewOrder>) -> (StatusCode, Json<NewOrder>) {
    (StatusCode::CREATED, Json(order))
}

async fn get_order(Path(id): Path<u64>) -> String {
    format!("order {id}")
}

async fn list_orders(Query(page): Query<Page>) -> String {
    format!("limit {}", page.limit)
}

async fn failing() -> Result<(), Problem> {
    Err(
        anyhow::anyhow!("connection refused: db.internal:5432").context("Failed to load the order")
    )?;
    Ok(())
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(5)).await;
    "done"
}

/// Reports the trace context the request's span gave the handler.
async fn trace() -> Json<Value> {
    Json(json!({
        "traceparent": TraceContext::current().map(|context| context.to_traceparent()),
        "correlation_id": current_correlation_id(),
    }))
}

fn routes() -> Router {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/failing", get(failing))
        .route("/slow", get(slow))
        .route("/trace", get(trace))
}

fn app_with(health: Health) -> Router {
    http::app(
        routes(),
        health,
        &HttpSettings {
            request_timeout: Duration::from_millis(200),
            body_limit: 64,
        },
    )
}

fn app() -> Router {
    app_with(Health::new())
}

struct Check {
    name: &'static str,
    outcome: Result<(), &'static str>,
    delay: Duration,
}

impl ReadinessCheck for Check {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.outcome.map_err(str::to_owned)
        })
    }
}

fn passing(name: &'static str) -> Check {
    Check {
        name,
        outcome: Ok(()),
        delay: Duration::ZERO,
    }
}

async fn send(app: Router, request: Request<Body>) -> Response<Body> {
    app.oneshot(request)
        .await
        .expect("the router is infallible")
}

async fn get_uri(app: Router, uri: &str) -> Response<Body> {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Asserts the response is a problem with `status` and returns its body.
async fn problem(response: Response<Body>, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["title"], status.canonical_reason().unwrap());
    assert_eq!(body["type"], "about:blank");
    body
}

#[tokio::test]
async fn a_valid_json_body_is_accepted_and_echoed() {
    let response = send(
        app(),
        post_json("/orders", r#"{"item":"book","quantity":2}"#),
    )
    .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body, json!({ "item": "book", "quantity": 2 }));
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let body = problem(get_uri(app(), "/nowhere").await, StatusCode::NOT_FOUND).await;

    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let response = send(app(), post_json("/orders", r#"{"item": "#)).await;

    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"), "{body}");
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_a_422_problem_naming_the_field() {
    let response = send(
        app(),
        post_json("/orders", r#"{"item":"book","quantity":"two"}"#),
    )
    .await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["detail"].as_str().unwrap().contains("quantity"),
        "{body}"
    );

    let response = send(app(), post_json("/orders", r#"{"item":"book"}"#)).await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `quantity`"),
        "{body}"
    );
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415_problem() {
    let request = Request::post("/orders")
        .body(Body::from(r#"{"item":"book","quantity":2}"#))
        .unwrap();

    problem(
        send(app(), request).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let item = "x".repeat(100);
    let response = send(
        app(),
        post_json("/orders", &format!(r#"{{"item":"{item}","quantity":1}}"#)),
    )
    .await;

    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn an_unsupported_method_is_a_405_problem_with_allow() {
    let response = send(
        app(),
        Request::delete("/orders").body(Body::empty()).unwrap(),
    )
    .await;

    let allow = response.headers()[ALLOW].to_str().unwrap().to_owned();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;

    let response = send(
        app(),
        Request::post("/health/live").body(Body::empty()).unwrap(),
    )
    .await;
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_400_problems() {
    let response = get_uri(app(), "/orders/42").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "order 42");

    let body = problem(get_uri(app(), "/orders/abc").await, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("abc"), "{body}");

    let response = get_uri(app(), "/orders?limit=10").await;
    assert_eq!(body_text(response).await, "limit 10");

    let body = problem(
        get_uri(app(), "/orders?limit=ten").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
}

#[tokio::test]
async fn an_internal_error_is_a_500_problem_that_hides_the_cause() {
    let response = get_uri(app(), "/failing").await;

    let body = problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    let text = body.to_string();
    assert!(!text.contains("connection refused"), "{text}");
    assert!(!text.contains("db.internal"), "{text}");
    assert!(!text.contains("Failed to load"), "{text}");
}

#[tokio::test]
async fn a_slow_request_is_a_408_problem() {
    let response = get_uri(app(), "/slow").await;

    let body = problem(response, StatusCode::REQUEST_TIMEOUT).await;
    assert!(
        body["detail"].as_str().unwrap().contains("200 ms"),
        "{body}"
    );
}

#[tokio::test]
async fn the_request_id_is_echoed_or_generated() {
    let request = Request::get("/orders/1")
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    let response = send(app(), request).await;
    assert_eq!(response.headers()["x-request-id"], "req-123");

    let response = get_uri(app(), "/nowhere").await;
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    let uuid = uuid::Uuid::parse_str(generated).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
}

#[tokio::test]
async fn liveness_is_ok() {
    let response = get_uri(app(), "/health/live").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body, json!({ "status": "ok" }));
}

#[tokio::test]
async fn readiness_reports_every_passing_check() {
    let health = Health::new()
        .with(passing("postgres"))
        .with(passing("kafka"));

    let response = get_uri(app_with(health), "/health/ready").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(
        body,
        json!({ "status": "ready", "checks": { "postgres": "ok", "kafka": "ok" } })
    );
}

#[tokio::test]
async fn readiness_is_a_503_problem_naming_each_failing_check() {
    let health = Health::new().with(passing("postgres")).with(Check {
        name: "kafka",
        outcome: Err("Meta data fetch error: BrokerTransportFailure"),
        delay: Duration::ZERO,
    });

    let response = get_uri(app_with(health), "/health/ready").await;

    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(
        body["detail"],
        "kafka: Meta data fetch error: BrokerTransportFailure"
    );
    assert_eq!(
        body["checks"],
        json!({ "postgres": "ok", "kafka": "Meta data fetch error: BrokerTransportFailure" })
    );
}

/// A check that declares itself non-critical, as the broker check does.
struct NotCritical(Check);

impl ReadinessCheck for NotCritical {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.0.check()
    }

    fn critical(&self) -> bool {
        false
    }
}

fn broker_down() -> Check {
    Check {
        name: "kafka",
        outcome: Err("Meta data fetch error: BrokerTransportFailure"),
        delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_failing_non_critical_check_degrades_readiness_but_keeps_it_200() {
    let declared = Health::new()
        .with(passing("postgres"))
        .with(NotCritical(broker_down()));
    // A check that is critical by itself, made degradable where it is added.
    let added = Health::new()
        .with(passing("postgres"))
        .with_degradable(broker_down());

    for health in [declared, added] {
        let response = get_uri(app_with(health), "/health/ready").await;

        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            body,
            json!({
                "status": "degraded",
                "checks": {
                    "postgres": "ok",
                    "kafka": {
                        "status": "degraded",
                        "reason": "Meta data fetch error: BrokerTransportFailure",
                    },
                },
            })
        );
    }
}

#[tokio::test]
async fn a_failing_critical_check_is_a_503_even_next_to_a_degraded_one() {
    let health = Health::new()
        .with(Check {
            name: "postgres",
            outcome: Err("connection refused"),
            delay: Duration::ZERO,
        })
        .with(NotCritical(broker_down()));

    let response = get_uri(app_with(health), "/health/ready").await;

    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["detail"], "postgres: connection refused");
    assert_eq!(
        body["checks"],
        json!({
            "postgres": "connection refused",
            "kafka": {
                "status": "degraded",
                "reason": "Meta data fetch error: BrokerTransportFailure",
            },
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_fails_after_two_seconds() {
    let health = Health::new().with(Check {
        name: "kafka",
        outcome: Ok(()),
        delay: Duration::from_mins(1),
    });

    let response = get_uri(app_with(health), "/health/ready").await;

    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["detail"], "kafka: timed out after 2s");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = app();
    assert_eq!(
        get_uri(app.clone(), "/orders/7").await.status(),
        StatusCode::OK
    );
    get_uri(app.clone(), "/metrics-test-unknown").await;

    let response = get_uri(app, "/metrics").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let text = body_text(response).await;
    let counted = text.lines().any(|line| {
        line.starts_with("http_requests_total{")
            && line.contains(r#"method="GET""#)
            && line.contains(r#"route="/orders/{id}""#)
            && line.contains(r#"status="200""#)
    });
    assert!(counted, "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    // Scrapes themselves are not counted.
    assert!(!text.contains(r#"route="/metrics""#), "{text}");
}

#[tokio::test]
async fn the_request_span_continues_an_incoming_trace() {
    telemetry::init_for_tests();
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get("/trace")
        .header("traceparent", incoming)
        .header("x-request-id", "req-9")
        .body(Body::empty())
        .unwrap();

    let body: Value = serde_json::from_str(&body_text(send(app(), request).await).await).unwrap();

    let context = TraceContext::parse_traceparent(body["traceparent"].as_str().unwrap()).unwrap();
    let remote = TraceContext::parse_traceparent(incoming).unwrap();
    assert_eq!(context.trace_id, remote.trace_id);
    assert_ne!(context.span_id, remote.span_id);
    assert_eq!(body["correlation_id"], "req-9");
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_trace() {
    telemetry::init_for_tests();

    let body: Value =
        serde_json::from_str(&body_text(get_uri(app(), "/trace").await).await).unwrap();

    assert!(TraceContext::parse_traceparent(body["traceparent"].as_str().unwrap()).is_some());
    assert!(body["correlation_id"].is_string());
}

#[tokio::test]
async fn serve_answers_until_cancelled() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, app(), shutdown.clone()));

    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}

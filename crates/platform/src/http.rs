//! The HTTP side of a service: error bodies, extractors, the shared router and the server, and
//! the bearer-token check of admin routes ([`admin`]).

pub mod admin;
mod extract;
mod page;
pub(crate) mod problem;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};
use uuid::Uuid;

use crate::config::CommonConfig;
use crate::health::{self, Health};

pub use extract::{Json, Path, Query};
pub use page::Page;
pub use problem::Problem;

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT_HEADER: &str = "traceparent";
/// The Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Limits applied to every request of the service's own routes.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Longest a request may take before it is answered with a 408 problem.
    pub request_timeout: Duration,
    /// Largest request body the extractors accept, in bytes; larger bodies get a 413 problem.
    pub body_limit: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
        }
    }
}

impl From<&CommonConfig> for HttpSettings {
    fn from(config: &CommonConfig) -> Self {
        Self {
            request_timeout: config.request_timeout,
            ..Self::default()
        }
    }
}

/// Completes a service's router.
///
/// The service's `routes` get request ids (`x-request-id`, generated as a UUID v7 when absent
/// and echoed in the response), an `http.request` span per request that continues an incoming
/// `traceparent`, request metrics, the timeout and the body limit, plus problem responses for
/// unknown routes (404) and unsupported methods (405). The operational endpoints
/// `GET /health/live`, `GET /health/ready` and `GET /metrics` are added outside those layers so
/// that probes and scrapes neither flood the logs nor skew the request metrics.
pub fn app(routes: Router, health: Health, settings: &HttpSettings) -> Router {
    // The middleware records into the global recorder, which must exist before the first
    // request, not only once something scrapes `/metrics`.
    crate::metrics::install();

    let request_layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuidV7))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                ),
        )
        .layer(middleware::from_fn(record_metrics))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            enforce_timeout,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit));

    let operations = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .with_state(health)
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed);

    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(request_layers)
        .merge(operations)
}

/// Serves `app` until `shutdown` is cancelled, then stops accepting connections and waits for
/// in-flight requests (which the request timeout bounds) to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("Failed to read the listener's address")?;
    tracing::info!(%address, "HTTP server listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("Failed to serve HTTP")?;
    tracing::info!("HTTP server stopped");
    Ok(())
}

/// Request ids as UUID v7: unique without coordination, and they sort by time in logs.
#[derive(Debug, Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// The span every log line of a request is written in. The request id doubles as the
/// correlation id, so messages published while handling the request carry it onwards.
fn request_span(request: &axum::http::Request<Body>) -> Span {
    let request_id = header_str(request, REQUEST_ID_HEADER.as_str()).unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    tracing::info_span!(
        "http.request",
        method = %request.method(),
        // The path only: query strings can carry tokens.
        path = request.uri().path(),
        route,
        request_id,
        correlation_id = request_id,
        traceparent = header_str(request, TRACEPARENT_HEADER),
    )
}

fn header_str<'request, B>(
    request: &'request axum::http::Request<B>,
    name: &str,
) -> Option<&'request str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// Counts requests and times them, labelled by route template rather than raw path so that ids
/// in paths do not explode the number of series.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());

    let response = next.run(request).await;

    let status = response.status().as_u16().to_string();
    ::metrics::counter!(
        "http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status,
    )
    .increment(1);
    ::metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method,
        "route" => route,
    )
    .record(started.elapsed());
    response
}

/// Extension methods are folded into one label value: clients can send arbitrary ones.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

async fn enforce_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    tokio::time::timeout(limit, next.run(request))
        .await
        .unwrap_or_else(|_elapsed| {
            tracing::warn!(timeout_ms = limit.as_millis(), "request timed out");
            Problem::new(StatusCode::REQUEST_TIMEOUT)
                .with_detail(format!(
                    "The request did not complete within {} ms.",
                    limit.as_millis()
                ))
                .into_response()
        })
}

async fn not_found() -> Problem {
    Problem::not_found("No resource exists at this path.")
}

async fn method_not_allowed() -> Problem {
    // axum adds the `Allow` header listing the supported methods.
    Problem::new(StatusCode::METHOD_NOT_ALLOWED)
        .with_detail("This resource does not support the request method; see the Allow header.")
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        crate::metrics::render(),
    )
}

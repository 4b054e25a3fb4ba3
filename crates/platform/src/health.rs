//! Liveness and readiness.
//!
//! Liveness says the process is up; readiness says it can do its job right now, by running the
//! service's [`ReadinessCheck`]s (database, Kafka, ...). An orchestrator restarts a service that
//! is not live but only stops routing traffic to one that is not ready.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sqlx::PgPool;

use crate::http::Problem;

/// How long one check may take. A probe that hangs is as bad as one that fails, and the
/// orchestrator's own probe timeout is usually not much longer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency a service needs in order to serve traffic.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name, used as the key in the readiness report.
    fn name(&self) -> &'static str;

    /// Succeeds when the dependency is usable, or says why not.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// The service's readiness checks, served by [`crate::http::app`] at `/health/ready`.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

impl Health {
    /// No checks: the service is ready as soon as it is live.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check.
    #[must_use]
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`].
    async fn run_checks(&self) -> Vec<(&'static str, Result<(), String>)> {
        futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = tokio::time::timeout(CHECK_TIMEOUT, check.check())
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())));
            (check.name(), outcome)
        }))
        .await
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|check| check.name()).collect();
        f.debug_struct("Health").field("checks", &names).finish()
    }
}

/// `GET /health/live`
pub(crate) async fn live() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /health/ready`: 200 with every check's result, or a 503 problem naming the failures.
pub(crate) async fn ready(State(health): State<Health>) -> Response {
    let outcomes = health.run_checks().await;

    let mut checks = Map::new();
    let mut failures = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                checks.insert(name.to_owned(), Value::from("ok"));
            }
            Err(reason) => {
                failures.push(format!("{name}: {reason}"));
                checks.insert(name.to_owned(), Value::from(reason));
            }
        }
    }

    if failures.is_empty() {
        return axum::Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    tracing::warn!(failures = %failures.join("; "), "not ready");
    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
        .with_detail(failures.join("; "))
        .with_extension("checks", checks)
        .into_response()
}

/// Checks that a query round-trips to PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresCheck(pub PgPool);

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(drop)
                .map_err(|err| err.to_string())
        })
    }
}

//! Liveness and readiness.
//!
//! Liveness says the process is up; readiness says it can serve requests right now, by running
//! the service's [`ReadinessCheck`]s (database, Kafka, ...). An orchestrator restarts a service
//! that is not live but only stops routing traffic to one that is not ready.
//!
//! A check is *critical* unless it says otherwise ([`ReadinessCheck::critical`]) or is added
//! with [`Health::with_degradable`]. A failing critical check makes the service not ready
//! (503). A failing non-critical one only makes it *degraded* (200, `"status": "degraded"`):
//! the service still serves requests, and taking it out of rotation would turn a partial
//! outage into a full one. The broker is the example: every write goes through the outbox, so
//! requests keep working while the broker is down and the messages follow when it is back.

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

use crate::http::problem::Problem;

/// How long one check may take. A probe that hangs is as bad as one that fails, and the
/// orchestrator's own probe timeout is usually not much longer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency a service needs in order to serve traffic.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name, used as the key in the readiness report.
    fn name(&self) -> &'static str;

    /// Succeeds when the dependency is usable, or says why not.
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;

    /// Whether the service cannot serve requests while this check fails: `true` (the default)
    /// makes a failure a 503, `false` only a degraded 200. Return `false` for a dependency the
    /// requests do not wait for, such as a broker behind an outbox.
    fn critical(&self) -> bool {
        true
    }
}

/// The service's readiness checks, served by [`crate::http::app`] at `/health/ready`.
#[derive(Clone, Default)]
pub struct Health {
    checks: Vec<Registered>,
}

/// A check and whether its failure makes the service not ready.
#[derive(Clone)]
struct Registered {
    check: Arc<dyn ReadinessCheck>,
    critical: bool,
}

/// One check's result.
struct Outcome {
    name: &'static str,
    critical: bool,
    result: Result<(), String>,
}

impl Health {
    /// No checks: the service is ready as soon as it is live.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check, critical or not as the check itself says ([`ReadinessCheck::critical`]).
    #[must_use]
    pub fn with(mut self, check: impl ReadinessCheck) -> Self {
        let critical = check.critical();
        self.checks.push(Registered {
            check: Arc::new(check),
            critical,
        });
        self
    }

    /// Adds a check whose failure only degrades the service (a 200 with `"status":
    /// "degraded"`), whatever the check itself says.
    #[must_use]
    pub fn with_degradable(mut self, check: impl ReadinessCheck) -> Self {
        self.checks.push(Registered {
            check: Arc::new(check),
            critical: false,
        });
        self
    }

    /// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`].
    async fn run_checks(&self) -> Vec<Outcome> {
        futures::future::join_all(self.checks.iter().map(|registered| async move {
            let result = tokio::time::timeout(CHECK_TIMEOUT, registered.check.check())
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())));
            Outcome {
                name: registered.check.name(),
                critical: registered.critical,
                result,
            }
        }))
        .await
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks: Vec<String> = self
            .checks
            .iter()
            .map(|registered| {
                let name = registered.check.name();
                if registered.critical {
                    name.to_owned()
                } else {
                    format!("{name} (degradable)")
                }
            })
            .collect();
        f.debug_struct("Health").field("checks", &checks).finish()
    }
}

/// `GET /health/live`
pub(crate) async fn live() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /health/ready`: 200 with every check's result, `"status": "ready"` when all pass and
/// `"degraded"` when only non-critical ones fail (each such check reported as `{"status":
/// "degraded", "reason": …}`); a 503 problem naming the failures when a critical one fails.
pub(crate) async fn ready(State(health): State<Health>) -> Response {
    let outcomes = health.run_checks().await;

    let mut checks = Map::new();
    let mut failures = Vec::new();
    let mut degraded = Vec::new();
    for outcome in outcomes {
        let name = outcome.name;
        match outcome.result {
            Ok(()) => {
                checks.insert(name.to_owned(), Value::from("ok"));
            }
            Err(reason) if outcome.critical => {
                failures.push(format!("{name}: {reason}"));
                checks.insert(name.to_owned(), Value::from(reason));
            }
            Err(reason) => {
                degraded.push(format!("{name}: {reason}"));
                checks.insert(
                    name.to_owned(),
                    json!({ "status": "degraded", "reason": reason }),
                );
            }
        }
    }

    if !failures.is_empty() {
        tracing::warn!(failures = %failures.join("; "), "not ready");
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_detail(failures.join("; "))
            .with_extension("checks", checks)
            .into_response();
    }
    if !degraded.is_empty() {
        tracing::warn!(degraded = %degraded.join("; "), "ready, but degraded");
        return axum::Json(json!({ "status": "degraded", "checks": checks })).into_response();
    }
    axum::Json(json!({ "status": "ready", "checks": checks })).into_response()
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

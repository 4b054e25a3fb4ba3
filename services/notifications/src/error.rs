//! [`ApiError`]: everything a request can fail with, and the problem response for each.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use platform::http::Problem;
use uuid::Uuid;

/// Why a request failed. Malformed requests (a query parameter or path segment that does not
/// parse, an unknown `kind`) do not get this far: the extractors answer them with a 400 problem
/// themselves. `?` turns any other error (`anyhow`) into [`ApiError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a query parameter is out of range; what is wrong, keyed by parameter.
    #[error("invalid query parameters: {0:?}")]
    InvalidQuery(BTreeMap<String, String>),

    /// 404: no dead letter with this task id waits in the dead-letter list (never
    /// dead-lettered, or already replayed or dropped).
    #[error("task {0} is not in the dead-letter list")]
    DeadLetterNotFound(Uuid),

    /// 500: a bug, or an outage of the database or the broker. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            // 422 like a body field out of range: the request parsed, a value breaks a rule.
            Self::InvalidQuery(errors) => Problem::unprocessable(
                "A query parameter is invalid; `errors` says what is wrong with each.",
                serde_json::json!(errors),
            ),
            Self::DeadLetterNotFound(task_id) => Problem::not_found(format!(
                "Task {task_id} is not in the dead-letter list: it was never dead-lettered, or \
                 it was replayed or dropped already."
            )),
            Self::Internal(error) => Problem::internal(&error),
        };
        problem.into_response()
    }
}

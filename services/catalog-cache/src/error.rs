//! [`ApiError`]: everything a request can fail with, and the problem+json response for each.

use axum::response::{IntoResponse, Response};
use platform::http::Problem;

use crate::product::FieldErrors;

/// Why a request failed. Malformed requests do not get this far: the extractors answer them
/// with a 400, 415 or 422 problem themselves.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or the path breaks a rule: 422, naming each bad field.
    #[error("invalid fields: {0:?}")]
    InvalidFields(FieldErrors),
    /// A query parameter is out of range, or a cursor no page gave: 400, naming each bad
    /// parameter.
    #[error("invalid query parameters: {0:?}")]
    InvalidQuery(FieldErrors),
    #[error("no such product")]
    ProductNotFound,
    /// Anything unexpected, such as a database failure: logged, and a bare 500 for the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::InvalidFields(errors) => Problem::unprocessable(
                "The product is invalid; `errors` says what is wrong with each field.",
                serde_json::json!(errors),
            ),
            // 422 like a body field out of range: the request parsed, a value breaks a rule.
            Self::InvalidQuery(errors) => Problem::unprocessable(
                "A query parameter is invalid; `errors` says what is wrong with each.",
                serde_json::json!(errors),
            ),
            Self::ProductNotFound => Problem::not_found("No product exists with this id."),
            Self::Internal(error) => outbox::PayloadTooLarge::problem_in(&error)
                .unwrap_or_else(|| Problem::internal(&error)),
        };
        problem.into_response()
    }
}

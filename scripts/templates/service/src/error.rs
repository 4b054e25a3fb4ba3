//! [`ApiError`]: everything a request can fail with, and the problem+json response for each.

use axum::response::{IntoResponse, Response};
use platform::http::Problem;

use crate::item::FieldErrors;

/// Why a request failed. Malformed requests do not get this far: the extractors answer them
/// with a 400, 415 or 422 problem themselves.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or the path breaks a rule: 422, naming each bad field.
    #[error("invalid fields: {0:?}")]
    InvalidFields(FieldErrors),
    #[error("no such item")]
    ItemNotFound,
    /// Anything unexpected, such as a database failure: logged, and a bare 500 for the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::InvalidFields(errors) => Problem::unprocessable(
                "The item is invalid; `errors` says what is wrong with each field.",
                serde_json::json!(errors),
            ),
            Self::ItemNotFound => Problem::not_found("No item exists with this id."),
            Self::Internal(error) => Problem::internal(&error),
        };
        problem.into_response()
    }
}

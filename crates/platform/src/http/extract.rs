//! Drop-in replacements for axum's `Json`, `Path` and `Query` whose rejections are
//! [`Problem`]s, so a bad request gets the same `application/problem+json` body as every other
//! error instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Problem;

/// A JSON request body or response.
///
/// Rejections: malformed JSON is 400, JSON of the wrong shape 422, a missing or wrong
/// `content-type` 415 and a body over the limit 413. The detail repeats serde's message, which
/// describes the client's own input.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a parameter that does not deserialize is a 400 problem.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// The query string; one that does not deserialize is a 400 problem.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        client_problem(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        client_problem(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        client_problem(rejection.status(), rejection.body_text())
    }
}

/// axum's rejection texts describe the client's input, except for its 500s (a route whose path
/// has no parameters to extract, say), which are bugs in the service and must not be echoed.
fn client_problem(status: axum::http::StatusCode, text: String) -> Problem {
    if status.is_server_error() {
        Problem::internal(&anyhow::anyhow!(text).context("Failed to extract the request"))
    } else {
        Problem::new(status).with_detail(text)
    }
}

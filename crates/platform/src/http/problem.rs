//! RFC 9457 problem details: the one error body every asyncron endpoint returns.

use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// The type of a problem that means nothing beyond its status code.
const ABOUT_BLANK: &str = "about:blank";
/// The members RFC 9457 defines; extensions must not shadow them.
const STANDARD_MEMBERS: &[&str] = &["type", "title", "status", "detail", "instance"];

/// An RFC 9457 `application/problem+json` response.
///
/// `detail` is shown to the client: put in it what the client can act on, never internal error
/// text. Unexpected failures go through [`Problem::internal`], which logs the cause and keeps it
/// out of the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    title: String,
    detail: Option<String>,
    type_uri: Option<String>,
    extensions: Map<String, Value>,
    /// `Retry-After`, in seconds, for a 503.
    retry_after_secs: Option<u64>,
}

/// What a 503 for an unavailable database asks the client to wait before retrying: about the
/// pool's acquire timeout, so a retry does not queue behind the requests still waiting.
const DATABASE_RETRY_AFTER_SECS: u64 = 5;

impl Problem {
    /// A problem whose title is the status code's canonical reason ("Not Found").
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            title: status
                .canonical_reason()
                .unwrap_or("Unknown Status")
                .to_owned(),
            detail: None,
            type_uri: None,
            extensions: Map::new(),
            retry_after_secs: None,
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND).with_detail(detail)
    }

    /// 400 for a request that cannot be understood.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST).with_detail(detail)
    }

    /// 409 for a request that conflicts with the resource's current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT).with_detail(detail)
    }

    /// 422 for a well-formed request with invalid content; `errors` says which fields are wrong
    /// and why, typically an object keyed by field name.
    pub fn unprocessable(detail: impl Into<String>, errors: Value) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY)
            .with_detail(detail)
            .with_extension("errors", errors)
    }

    /// 500 for an unexpected failure. The error chain is logged here, in the request's span, and
    /// stays out of the response: it can name tables, hosts or queries.
    ///
    /// A database that cannot be reached or serve a connection for now (see
    /// [`crate::db::classify`]) is not the server failing to handle the request but a
    /// dependency away: 503 with `Retry-After`, which clients and load balancers retry.
    pub fn internal(err: &anyhow::Error) -> Self {
        if crate::db::classify(err) == crate::db::ErrorClass::Unavailable {
            tracing::warn!(
                error = format!("{err:#}"),
                "request failed: the database is unavailable"
            );
            let mut problem = Self::new(StatusCode::SERVICE_UNAVAILABLE).with_detail(
                "The service's database is unavailable for now; retry after the Retry-After seconds.",
            );
            problem.retry_after_secs = Some(DATABASE_RETRY_AFTER_SECS);
            return problem;
        }
        tracing::error!(error = format!("{err:#}"), "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail(
            "The server failed to handle the request; \
             its logs have the details under the x-request-id of this response.",
        )
    }

    #[must_use]
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the problem type URI; without one the type is `about:blank`, meaning "nothing beyond
    /// the status code".
    #[must_use]
    pub fn with_type(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = Some(type_uri.into());
        self
    }

    /// Adds an extension member such as `errors`.
    ///
    /// # Panics
    ///
    /// When `key` is one of the members RFC 9457 defines (`type`, `title`, `status`, `detail`,
    /// `instance`): that is a programming error.
    #[must_use]
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        assert!(
            !STANDARD_MEMBERS.contains(&key.as_str()),
            "\"{key}\" is a standard problem member, not an extension"
        );
        self.extensions.insert(key, value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub fn type_uri(&self) -> &str {
        self.type_uri.as_deref().unwrap_or(ABOUT_BLANK)
    }

    pub fn extension(&self, key: &str) -> Option<&Value> {
        self.extensions.get(key)
    }

    fn into_body(self) -> Map<String, Value> {
        let mut body = self.extensions;
        body.insert(
            "type".to_owned(),
            self.type_uri.as_deref().unwrap_or(ABOUT_BLANK).into(),
        );
        body.insert("title".to_owned(), self.title.into());
        body.insert("status".to_owned(), self.status.as_u16().into());
        if let Some(detail) = self.detail {
            body.insert("detail".to_owned(), detail.into());
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after_secs;
        let mut response = (
            status,
            // Replaces the `application/json` that `Json` sets.
            [(CONTENT_TYPE, "application/problem+json")],
            axum::Json(self.into_body()),
        )
            .into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Lets handlers returning `Result<_, Problem>` use `?` on `anyhow` results: anything not
/// already mapped to a client error is the server's fault.
impl From<anyhow::Error> for Problem {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(&err)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unavailable_database_is_a_503_with_retry_after_not_a_500() {
        let error = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("Failed to list things");
        let response = Problem::internal(&error).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "5");

        let bug = anyhow::anyhow!("a bug");
        assert_eq!(
            Problem::internal(&bug).into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn the_body_has_the_standard_members_and_extensions() {
        let problem = Problem::unprocessable(
            "The order is invalid.",
            json!({ "quantity": "must be positive" }),
        )
        .with_type("https://asyncron.example/problems/invalid-order");

        assert_eq!(
            Value::Object(problem.into_body()),
            json!({
                "type": "https://asyncron.example/problems/invalid-order",
                "title": "Unprocessable Entity",
                "status": 422,
                "detail": "The order is invalid.",
                "errors": { "quantity": "must be positive" },
            })
        );
    }

    #[test]
    fn defaults_are_about_blank_and_the_canonical_reason() {
        let problem = Problem::new(StatusCode::CONFLICT);

        assert_eq!(problem.type_uri(), "about:blank");
        assert_eq!(problem.title(), "Conflict");
        assert_eq!(problem.detail(), None);
        assert_eq!(
            Value::Object(problem.into_body()),
            json!({ "type": "about:blank", "title": "Conflict", "status": 409 })
        );
    }

    #[test]
    fn shortcuts_set_status_and_detail() {
        assert_eq!(Problem::not_found("x").status(), StatusCode::NOT_FOUND);
        assert_eq!(Problem::bad_request("x").status(), StatusCode::BAD_REQUEST);
        assert_eq!(Problem::conflict("gone").detail(), Some("gone"));
        assert_eq!(
            Problem::new(StatusCode::IM_A_TEAPOT)
                .with_title("Short and stout")
                .title(),
            "Short and stout"
        );
    }

    #[test]
    #[should_panic(expected = "standard problem member")]
    fn extensions_cannot_shadow_standard_members() {
        let _ = Problem::bad_request("x").with_extension("status", 200);
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_body() {
        let err = anyhow::anyhow!("password authentication failed for user \"orders\"")
            .context("Failed to load order");
        let problem = Problem::from(err);

        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = Value::Object(problem.into_body()).to_string();
        assert!(!body.contains("password"), "{body}");
        assert!(!body.contains("Failed to load order"), "{body}");
    }
}

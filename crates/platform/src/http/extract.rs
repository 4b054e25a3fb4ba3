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
/// describes the client's own input; the 422 also names the field in `errors`, as a service's
/// own validation does (`{"items[1].quantity": "invalid type: string \"two\", expected i32 …"}`).
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
        let field_error = field_error(&rejection);
        let problem = client_problem(rejection.status(), rejection.body_text());
        match field_error {
            Some((field, reason)) => {
                problem.with_extension("errors", serde_json::json!({ field: reason }))
            }
            None => problem,
        }
    }
}

/// The field a body of the wrong shape gets wrong, and why: from the `serde_path_to_error`
/// error that axum's rejection wraps. A missing field is named by its own path, not its
/// parent's.
fn field_error(rejection: &JsonRejection) -> Option<(String, String)> {
    let JsonRejection::JsonDataError(_) = rejection else {
        return None;
    };
    let mut source = std::error::Error::source(rejection);
    while let Some(error) = source {
        if let Some(error) = error.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            let path = error.path().to_string();
            let reason = error.inner().to_string();
            let missing = reason
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name);
            let field = match missing {
                Some(name) if path == "." => name.to_owned(),
                Some(name) => format!("{path}.{name}"),
                None => path,
            };
            return Some((field, reason));
        }
        source = error.source();
    }
    None
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::FromRequest as _;
    use axum::http::{Request, StatusCode, header};
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Order {
        customer_id: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Item {
        product_id: String,
        quantity: i32,
    }

    async fn problem(body: &str) -> Problem {
        let request = Request::post("/")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("a request");
        Json::<Order>::from_request(request, &())
            .await
            .expect_err("a rejection")
    }

    fn fields(problem: &Problem) -> Vec<String> {
        problem
            .extension("errors")
            .and_then(serde_json::Value::as_object)
            .map(|errors| errors.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_shape_is_a_422_naming_the_field() {
        let wrong_type = problem(
            r#"{"customer_id": "c", "items": [{"product_id": "p", "quantity": 1},
                {"product_id": "p", "quantity": "two"}]}"#,
        )
        .await;
        assert_eq!(wrong_type.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(fields(&wrong_type), ["items[1].quantity"]);

        let missing = problem(r#"{"items": []}"#).await;
        assert_eq!(fields(&missing), ["customer_id"]);
        let nested = problem(r#"{"customer_id": "c", "items": [{"quantity": 1}]}"#).await;
        assert_eq!(fields(&nested), ["items[0].product_id"]);
        let too_big = problem(
            &json!({"customer_id": "c", "items": [{"product_id": "p", "quantity": i64::MAX}]})
                .to_string(),
        )
        .await;
        assert_eq!(fields(&too_big), ["items[0].quantity"]);
    }

    #[tokio::test]
    async fn malformed_json_is_a_400_without_fields() {
        let malformed = problem(r#"{"customer_id": "#).await;
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        assert!(fields(&malformed).is_empty());
    }
}

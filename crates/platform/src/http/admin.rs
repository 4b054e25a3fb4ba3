//! The bearer-token check of a service's `/admin/...` routes: [`protect`] lets a request through
//! only with `Authorization: Bearer <ADMIN_TOKEN>` and answers anything else with a 401 problem
//! and an RFC 6750 challenge. What the routes do is the caller's business (the task scheduler's
//! `task_scheduler::admin::router`, a service's own dead-letter routes).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use subtle::ConstantTimeEq as _;

use super::Problem;
use crate::config::{AdminConfig, AdminToken};

/// Merges the admin routes `routes()` builds into `api`, behind the token ([`protect`]), when
/// `ADMIN_ROUTES` enables them; with `ADMIN_ROUTES=false` they do not exist (404) and are not
/// even built.
pub fn mount<S>(
    api: Router<S>,
    admin: &AdminConfig,
    realm: &str,
    routes: impl FnOnce() -> Router<S>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    match admin {
        AdminConfig::Enabled { token } => {
            api.merge(protect(routes(), token.clone(), realm, "ADMIN_TOKEN"))
        }
        AdminConfig::Disabled => {
            tracing::info!(realm, "ADMIN_ROUTES=false: the admin endpoints are off");
            api
        }
    }
}

/// Puts every route of `routes` behind `token`: a request without `Authorization: Bearer
/// <token>` gets a 401 `application/problem+json` with `WWW-Authenticate: Bearer
/// realm="<realm>"` (plus `error="invalid_token"` when it carried another token). Tokens are
/// compared in constant time. `variable` is the setting the token comes from (`ADMIN_TOKEN`,
/// report-exporter's `EXPORTS_TOKEN`): the 401 names it, so a client knows which token to send.
///
/// The check is a route layer: it runs for the routes `routes` has now and only for them, so an
/// unknown path under `/admin` is still a 404, and it runs before the handlers' extractors (a
/// malformed path or query gets a 401, not a 400, without the token). Call it after adding every
/// admin route, and merge the result into the service's router.
///
/// # Panics
///
/// When `realm` cannot stand in a quoted header parameter (it contains `"`, `\` or a control
/// character): a programming error. Services use `"<service>-admin"`.
pub fn protect<S>(
    routes: Router<S>,
    token: AdminToken,
    realm: &str,
    variable: &'static str,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    assert!(
        !realm.contains(['"', '\\']),
        "the admin realm must not contain quotes or backslashes: {realm}"
    );
    let guard = Guard {
        token,
        missing: challenge(format!(r#"Bearer realm="{realm}""#)),
        wrong: challenge(format!(r#"Bearer realm="{realm}", error="invalid_token""#)),
        missing_detail: format!(
            "These endpoints need an `Authorization: Bearer <{variable}>` header."
        ),
        wrong_detail: format!("The bearer token is not the `{variable}`."),
    };
    routes.route_layer(middleware::from_fn_with_state(
        Arc::new(guard),
        require_token,
    ))
}

/// The token and the two challenges, built once rather than per refused request.
#[derive(Debug)]
struct Guard {
    token: AdminToken,
    missing: HeaderValue,
    wrong: HeaderValue,
    missing_detail: String,
    wrong_detail: String,
}

fn challenge(value: String) -> HeaderValue {
    HeaderValue::try_from(value)
        .unwrap_or_else(|error| panic!("the admin realm must be printable ASCII: {error}"))
}

/// Lets the request through only with `Authorization: Bearer <token>`.
async fn require_token(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match bearer_token(request.headers()) {
        Some(given) if constant_time_eq(given.as_bytes(), guard.token.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            tracing::warn!("admin request with a wrong bearer token");
            unauthorized(guard.wrong.clone(), &guard.wrong_detail)
        }
        None => unauthorized(guard.missing.clone(), &guard.missing_detail),
    }
}

fn unauthorized(challenge: HeaderValue, detail: &str) -> Response {
    (
        [(WWW_AUTHENTICATE, challenge)],
        Problem::new(StatusCode::UNAUTHORIZED).with_detail(detail),
    )
        .into_response()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `a` equals `b`, taking the same time wherever they differ, so that response times
/// do not reveal how much of a guessed token was right. (Only the length can be told apart,
/// which does not help guessing a random token.) `subtle` rather than a hand-written loop: it
/// is written to keep the optimiser from turning the comparison into an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt as _;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use super::*;

    const TOKEN: &str = "s3cret";

    fn with_authorization(value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(AUTHORIZATION, HeaderValue::from_static(value))])
    }

    fn app() -> Router {
        let admin = protect(
            Router::new().route("/admin/things", get(|| async { "things" })),
            AdminToken::new(TOKEN),
            "test-admin",
            "ADMIN_TOKEN",
        );
        Router::new()
            .route("/public", get(|| async { "public" }))
            .merge(admin)
    }

    async fn get_with(path: &str, authorization: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body(response: Response) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&with_authorization("Bearer abc")), Some("abc"));
        assert_eq!(
            bearer_token(&with_authorization("bearer abc ")),
            Some("abc")
        );
        assert_eq!(bearer_token(&with_authorization("Basic abc")), None);
        assert_eq!(bearer_token(&with_authorization("Bearer ")), None);
        assert_eq!(bearer_token(&with_authorization("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[tokio::test]
    async fn the_admin_token_lets_the_request_through() {
        let response = get_with("/admin/things", Some("Bearer s3cret")).await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, b"things");
    }

    #[tokio::test]
    async fn requests_without_the_admin_token_get_a_401_problem_with_a_challenge() {
        for (authorization, challenge, detail) in [
            (
                None,
                r#"Bearer realm="test-admin""#,
                "These endpoints need an `Authorization: Bearer <ADMIN_TOKEN>` header.",
            ),
            (
                Some("Basic czNjcmV0"),
                r#"Bearer realm="test-admin""#,
                "These endpoints need an `Authorization: Bearer <ADMIN_TOKEN>` header.",
            ),
            (
                Some("Bearer s3cre"),
                r#"Bearer realm="test-admin", error="invalid_token""#,
                "The bearer token is not the `ADMIN_TOKEN`.",
            ),
        ] {
            let response = get_with("/admin/things", authorization).await;

            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?}"
            );
            assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem: Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(problem["status"], 401);
            assert_eq!(problem["title"], "Unauthorized");
            assert_eq!(problem["detail"], detail);
        }
    }

    #[tokio::test]
    async fn only_the_protected_routes_are_checked() {
        assert_eq!(get_with("/public", None).await.status(), StatusCode::OK);
        // A route layer: no route, no check, so an unknown admin path stays a 404.
        assert_eq!(
            get_with("/admin/unknown", None).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    #[should_panic(expected = "quotes")]
    fn a_realm_with_a_quote_is_refused() {
        let _ = protect(
            Router::<()>::new(),
            AdminToken::new(TOKEN),
            r#"evil", error="x"#,
            "ADMIN_TOKEN",
        );
    }
}

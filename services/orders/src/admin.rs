//! The schedule admin endpoints, behind `ADMIN_TOKEN` (the same scheme as notifications'):
//! `GET /admin/schedules?state=&limit=` and `DELETE /admin/schedules/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use platform::http::{Json, Path, Query};
use serde::Deserialize;
use task_scheduler::{Schedule, ScheduleState, Schedules};
use uuid::Uuid;

use crate::config::AdminToken;
use crate::error::{ApiError, Credentials};

/// How many schedules `GET /admin/schedules` returns when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` a client may ask for.
const MAX_LIMIT: u32 = 1000;

/// The admin routes, each of which answers 401 unless the request carries
/// `Authorization: Bearer <token>`.
pub fn router(schedules: Schedules, token: AdminToken) -> Router {
    Router::new()
        .route("/admin/schedules", get(list))
        .route("/admin/schedules/{id}", delete(cancel))
        // `route_layer`: the check runs for these routes only, so an unknown path under
        // /admin is still a 404, and it runs before the path is parsed.
        .route_layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(Arc::new(schedules))
}

/// The query of `GET /admin/schedules`. A `state` other than `pending`, `fired` or
/// `cancelled` is a 400 problem from the extractor.
#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<ScheduleState>,
    limit: Option<u32>,
}

/// `GET /admin/schedules?state=&limit=`: the schedules (each order's cancellation and reminder),
/// soonest due first.
#[tracing::instrument(name = "schedules.list", skip(schedules))]
async fn list(
    State(schedules): State<Arc<Schedules>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Schedule>>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(BTreeMap::from([(
            "limit".to_owned(),
            format!("must be between 1 and {MAX_LIMIT}"),
        )])));
    }
    Ok(Json(schedules.list(params.state, i64::from(limit)).await?))
}

/// `DELETE /admin/schedules/{id}`: cancels a pending schedule, so that it never fires; 204, or
/// 404 when no pending schedule has this id (unknown, fired or cancelled already). Cancelling
/// an order's `cancel-unpaid` schedule leaves the order waiting for its payment for good.
#[tracing::instrument(name = "schedules.cancel", skip(schedules))]
async fn cancel(
    State(schedules): State<Arc<Schedules>>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if schedules.cancel(id).await? {
        tracing::info!("schedule cancelled");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ScheduleNotFound(id))
    }
}

/// Lets the request through only with `Authorization: Bearer <ADMIN_TOKEN>`.
async fn require_token(
    State(token): State<Arc<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    match bearer_token(request.headers()) {
        Some(given) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            tracing::warn!("admin request with a wrong bearer token");
            ApiError::Unauthorized(Credentials::Wrong).into_response()
        }
        None => ApiError::Unauthorized(Credentials::Missing).into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `a` equals `b`, taking the same time wherever they differ, so that response times
/// do not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_authorization(value: &'static str) -> HeaderMap {
        HeaderMap::from_iter([(AUTHORIZATION, HeaderValue::from_static(value))])
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&with_authorization("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with_authorization("Basic abc")), None);
        assert_eq!(bearer_token(&with_authorization("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret!"));
    }
}

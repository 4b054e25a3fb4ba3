//! The admin endpoints, behind `ADMIN_TOKEN`: for the dead letters `GET /admin/dlq`,
//! `POST /admin/dlq/{task_id}/replay`, `POST /admin/dlq/replay-all` and
//! `DELETE /admin/dlq/{task_id}`; for the schedules `GET /admin/schedules` and
//! `DELETE /admin/schedules/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use platform::http::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use task_queue::{DeadLetter, DeadLetters};
use task_scheduler::{Schedule, ScheduleState, Schedules};
use uuid::Uuid;

use crate::config::AdminToken;
use crate::error::{ApiError, Credentials};

/// How many schedules `GET /admin/schedules` returns when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` a client may ask for.
const MAX_LIMIT: u32 = 1000;

/// What the admin handlers share.
#[derive(Debug, Clone)]
struct AdminState {
    dead_letters: Arc<DeadLetters>,
    schedules: Arc<Schedules>,
}

impl FromRef<AdminState> for Arc<DeadLetters> {
    fn from_ref(state: &AdminState) -> Self {
        state.dead_letters.clone()
    }
}

impl FromRef<AdminState> for Arc<Schedules> {
    fn from_ref(state: &AdminState) -> Self {
        state.schedules.clone()
    }
}

/// The admin routes, each of which answers 401 unless the request carries
/// `Authorization: Bearer <token>`.
pub fn router(dead_letters: DeadLetters, schedules: Schedules, token: AdminToken) -> Router {
    Router::new()
        .route("/admin/dlq", get(list))
        .route("/admin/dlq/replay-all", post(replay_all))
        .route("/admin/dlq/{task_id}/replay", post(replay))
        .route("/admin/dlq/{task_id}", delete(drop_one))
        .route("/admin/schedules", get(list_schedules))
        .route("/admin/schedules/{id}", delete(cancel_schedule))
        // `route_layer`: the check runs for these routes only, so an unknown path under
        // /admin is still a 404, and it runs before the path is parsed.
        .route_layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(AdminState {
            dead_letters: Arc::new(dead_letters),
            schedules: Arc::new(schedules),
        })
}

/// The answer of both replay endpoints: how many dead letters went back to the queue.
#[derive(Debug, Serialize)]
struct Replayed {
    replayed: usize,
}

/// `GET /admin/dlq`: the dead letters that were neither replayed nor dropped, with their
/// errors, attempts and payload.
#[tracing::instrument(name = "dlq.list", skip_all)]
async fn list(
    State(dead_letters): State<Arc<DeadLetters>>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    Ok(Json(dead_letters.list().await?))
}

/// `POST /admin/dlq/{task_id}/replay`: puts the task back on the queue's main topic for a new
/// round of attempts. 200 `{"replayed": 1}`, or 404.
#[tracing::instrument(name = "dlq.replay", skip(dead_letters))]
async fn replay(
    State(dead_letters): State<Arc<DeadLetters>>,
    Path(task_id): Path<Uuid>,
) -> Result<Json<Replayed>, ApiError> {
    if dead_letters.replay(task_id).await? {
        tracing::info!("dead letter replayed");
        Ok(Json(Replayed { replayed: 1 }))
    } else {
        Err(ApiError::DeadLetterNotFound(task_id))
    }
}

/// `POST /admin/dlq/replay-all`: replays every dead letter in the list; 200
/// `{"replayed": n}`.
#[tracing::instrument(name = "dlq.replay_all", skip_all)]
async fn replay_all(
    State(dead_letters): State<Arc<DeadLetters>>,
) -> Result<Json<Replayed>, ApiError> {
    let replayed = dead_letters.replay_all().await?;
    tracing::info!(replayed, "dead letters replayed");
    Ok(Json(Replayed { replayed }))
}

/// `DELETE /admin/dlq/{task_id}`: gives the task up for good; 204, or 404.
#[tracing::instrument(name = "dlq.drop", skip(dead_letters))]
async fn drop_one(
    State(dead_letters): State<Arc<DeadLetters>>,
    Path(task_id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    if dead_letters.drop_one(task_id).await? {
        tracing::info!("dead letter dropped");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::DeadLetterNotFound(task_id))
    }
}

/// The query of `GET /admin/schedules`. A `state` other than `pending`, `fired` or
/// `cancelled` is a 400 problem from the extractor.
#[derive(Debug, Deserialize)]
struct ScheduleParams {
    state: Option<ScheduleState>,
    limit: Option<u32>,
}

/// `GET /admin/schedules?state=&limit=`: the occurrences of the recurring schedules (the
/// `daily-digest`), soonest due first.
#[tracing::instrument(name = "schedules.list", skip(schedules))]
async fn list_schedules(
    State(schedules): State<Arc<Schedules>>,
    Query(params): Query<ScheduleParams>,
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
/// 404 when no pending schedule has this id. Cancelling the pending occurrence of the
/// `daily-digest` stops the recurrence until the next start upserts it again.
#[tracing::instrument(name = "schedules.cancel", skip(schedules))]
async fn cancel_schedule(
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
/// do not reveal how much of a guessed token was right. (Only the length can be told apart,
/// which does not help guessing a random token.)
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
}

//! The dead-letter admin endpoints, behind `ADMIN_TOKEN`:
//! `GET /admin/dlq`, `POST /admin/dlq/{task_id}/replay`, `POST /admin/dlq/replay-all` and
//! `DELETE /admin/dlq/{task_id}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use platform::http::{Json, Path};
use serde::Serialize;
use task_queue::{DeadLetter, DeadLetters};
use uuid::Uuid;

use crate::config::AdminToken;
use crate::error::{ApiError, Credentials};

/// The admin routes, each of which answers 401 unless the request carries
/// `Authorization: Bearer <token>`.
pub fn router(dead_letters: DeadLetters, token: AdminToken) -> Router {
    Router::new()
        .route("/admin/dlq", get(list))
        .route("/admin/dlq/replay-all", post(replay_all))
        .route("/admin/dlq/{task_id}/replay", post(replay))
        .route("/admin/dlq/{task_id}", delete(drop_one))
        // `route_layer`: the check runs for these routes only, so an unknown path under
        // /admin is still a 404, and it runs before the path is parsed.
        .route_layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .with_state(Arc::new(dead_letters))
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

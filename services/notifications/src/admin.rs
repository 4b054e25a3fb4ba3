//! notifications' own admin endpoints, behind `ADMIN_TOKEN`: the task queue's dead letters,
//! `GET /admin/dlq`, `POST /admin/dlq/{task_id}/replay`, `POST /admin/dlq/replay-all` and
//! `DELETE /admin/dlq/{task_id}`. The service host mounts them with the shared ones (the
//! schedules, `GET /admin/schedules` and `DELETE /admin/schedules/{id}`: the occurrences of the
//! `daily-digest`; the set-aside messages; the parked outbox rows), behind one bearer check.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use platform::http::{Json, Path};
use serde::Serialize;
use task_queue::{DeadLetter, DeadLetters};
use uuid::Uuid;

use crate::error::ApiError;

/// The dead-letter routes; the service host mounts them behind `ADMIN_TOKEN`.
pub fn router(dead_letters: DeadLetters) -> Router {
    Router::new()
        .route("/admin/dlq", get(list))
        .route("/admin/dlq/replay-all", post(replay_all))
        .route("/admin/dlq/{task_id}/replay", post(replay))
        .route("/admin/dlq/{task_id}", delete(drop_one))
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

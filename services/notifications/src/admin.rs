//! The admin endpoints, behind `ADMIN_TOKEN`: for the dead letters `GET /admin/dlq`,
//! `POST /admin/dlq/{task_id}/replay`, `POST /admin/dlq/replay-all` and
//! `DELETE /admin/dlq/{task_id}`, here; for the schedules `GET /admin/schedules` and
//! `DELETE /admin/schedules/{id}`, the task scheduler's (`task_scheduler::admin`). One bearer
//! check, platform's, guards them all.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use platform::http::{Json, Path};
use serde::Serialize;
use task_queue::{DeadLetter, DeadLetters};
use task_scheduler::Schedules;
use uuid::Uuid;

use crate::error::ApiError;

/// The realm of the admin endpoints' `WWW-Authenticate: Bearer` challenge.
pub const ADMIN_REALM: &str = "notifications-admin";

/// The admin routes; the service mounts them behind `ADMIN_TOKEN`
/// (`platform::http::admin::mount`). The schedules are the occurrences of the `daily-digest`;
/// cancelling the pending one stops the recurrence until the next start upserts it again.
pub fn router(dead_letters: DeadLetters, schedules: Schedules) -> Router {
    let dead_letters = Router::new()
        .route("/admin/dlq", get(list))
        .route("/admin/dlq/replay-all", post(replay_all))
        .route("/admin/dlq/{task_id}/replay", post(replay))
        .route("/admin/dlq/{task_id}", delete(drop_one))
        .with_state(Arc::new(dead_letters));
    dead_letters.merge(task_scheduler::admin::router(schedules))
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

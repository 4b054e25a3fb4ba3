//! The dead-letter admin endpoints a consuming service mounts for its operators:
//!
//! | route | answer |
//! |---|---|
//! | `GET /admin/dead-letters?consumer=&after=&limit=` | 200 `{items, next_cursor}`: listed dead letters, oldest first; `limit` 1–500, default 100 |
//! | `GET /admin/dead-letters/{id}` | 200 one dead letter (in any state), or 404 |
//! | `POST /admin/dead-letters/{id}/replay` | 200 `{"replayed": 1, "failed": 0}`; 404 unknown or not listed; 409 when the handler fails again (the problem's `error` says why; it stays listed) or its consumer does not run in this process |
//! | `POST /admin/dead-letters/replay-all?consumer=` | 200 `{"replayed": n, "failed": m}` |
//! | `DELETE /admin/dead-letters/{id}` | 204, or 404 |
//!
//! [`router`] adds no authentication: the service mounts it with its other admin routes behind
//! `ADMIN_TOKEN` (`platform::http::admin::mount`). Errors are `application/problem+json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platform::http::{Json, Page, Path, Problem, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::{DeadLetter, DeadLetterStore, MAX_PAGE, ReplayOutcome, Replayed};

/// How many dead letters a page holds when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The longest consumer name accepted in a query; real ones are a few dozen characters.
const MAX_CONSUMER_LEN: usize = 200;

/// The routes in the table above, over `store`.
pub fn router(store: DeadLetterStore) -> Router {
    Router::new()
        .route("/admin/dead-letters", get(list))
        .route("/admin/dead-letters/replay-all", post(replay_all))
        .route("/admin/dead-letters/{id}", get(show).delete(drop_one))
        .route("/admin/dead-letters/{id}/replay", post(replay))
        .with_state(Arc::new(store))
}

/// What a dead-letter admin request can fail with; each variant is one problem response.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// 422: a query parameter is out of range.
    #[error("invalid query parameter `{0}`: {1}")]
    InvalidQuery(&'static str, String),

    /// 404: no dead letter (listed, for replay and drop) has this id.
    #[error("no dead letter {0}")]
    NotFound(Uuid),

    /// 409: the handler failed again; the dead letter stays listed.
    #[error("the replay of {0} failed: {1}")]
    ReplayFailed(Uuid, String),

    /// 409: the dead letter's consumer does not run in this process.
    #[error("consumer {1} of dead letter {0} does not run here")]
    NoHandler(Uuid, String),

    /// 500: the database failed. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::InvalidQuery(parameter, reason) => Problem::unprocessable(
                format!("The query parameter `{parameter}` is invalid: {reason}."),
                serde_json::json!({ parameter: reason }),
            ),
            Self::NotFound(id) => Problem::not_found(format!(
                "No dead letter {id} is listed: it does not exist, or it was replayed or \
                 dropped already."
            )),
            Self::ReplayFailed(id, error) => Problem::conflict(format!(
                "The handler failed again on dead letter {id}; it stays listed."
            ))
            .with_extension("error", error),
            Self::NoHandler(id, consumer) => Problem::conflict(format!(
                "Dead letter {id} belongs to consumer `{consumer}`, which does not run in this \
                 process."
            )),
            Self::Internal(error) => Problem::internal(&error),
        };
        problem.into_response()
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    consumer: Option<String>,
    after: Option<Uuid>,
    limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ConsumerParam {
    consumer: Option<String>,
}

fn checked_consumer(consumer: Option<&str>) -> Result<Option<&str>, AdminError> {
    match consumer {
        Some(name) if name.is_empty() || name.len() > MAX_CONSUMER_LEN => Err(
            AdminError::InvalidQuery("consumer", format!("must be 1 to {MAX_CONSUMER_LEN} bytes")),
        ),
        Some(name) if name.chars().any(char::is_control) => Err(AdminError::InvalidQuery(
            "consumer",
            "must not contain control characters".to_owned(),
        )),
        other => Ok(other),
    }
}

/// `GET /admin/dead-letters`
#[tracing::instrument(name = "dead_letters.list", skip(store))]
async fn list(
    State(store): State<Arc<DeadLetterStore>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<DeadLetter>>, AdminError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::InvalidQuery(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let consumer = checked_consumer(params.consumer.as_deref())?;
    Ok(Json(store.list(consumer, params.after, limit).await?))
}

/// `GET /admin/dead-letters/{id}`
#[tracing::instrument(name = "dead_letters.show", skip(store))]
async fn show(
    State(store): State<Arc<DeadLetterStore>>,
    Path(id): Path<Uuid>,
) -> Result<Json<DeadLetter>, AdminError> {
    store
        .get(id)
        .await?
        .map(Json)
        .ok_or(AdminError::NotFound(id))
}

/// `POST /admin/dead-letters/{id}/replay`
#[tracing::instrument(name = "dead_letters.replay", skip(store))]
async fn replay(
    State(store): State<Arc<DeadLetterStore>>,
    Path(id): Path<Uuid>,
) -> Result<Json<Replayed>, AdminError> {
    match store.replay(id).await? {
        ReplayOutcome::Replayed => Ok(Json(Replayed {
            replayed: 1,
            failed: 0,
        })),
        ReplayOutcome::NotFound => Err(AdminError::NotFound(id)),
        ReplayOutcome::NoHandler(consumer) => Err(AdminError::NoHandler(id, consumer)),
        ReplayOutcome::Failed(error) => Err(AdminError::ReplayFailed(id, error)),
    }
}

/// `POST /admin/dead-letters/replay-all`
#[tracing::instrument(name = "dead_letters.replay_all", skip(store))]
async fn replay_all(
    State(store): State<Arc<DeadLetterStore>>,
    Query(params): Query<ConsumerParam>,
) -> Result<Json<Replayed>, AdminError> {
    let consumer = checked_consumer(params.consumer.as_deref())?;
    let done = store.replay_all(consumer).await?;
    tracing::info!(
        replayed = done.replayed,
        failed = done.failed,
        "dead letters replayed"
    );
    Ok(Json(done))
}

/// `DELETE /admin/dead-letters/{id}`
#[tracing::instrument(name = "dead_letters.drop", skip(store))]
async fn drop_one(
    State(store): State<Arc<DeadLetterStore>>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AdminError> {
    if store.drop_one(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::NotFound(id))
    }
}

//! The schedule admin endpoints a service mounts for its operators: `GET
//! /admin/schedules?state=&limit=` and `DELETE /admin/schedules/{id}`, over [`Schedules`].
//!
//! [`router`] adds no authentication: the caller wraps it, with the rest of its admin routes,
//! in `platform::http::admin::protect`, so that every admin route of a service shares one
//! token and one check.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use platform::http::{Json, Path, Problem, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::schedules::{Schedule, ScheduleState, Schedules};

/// How many schedules `GET /admin/schedules` returns when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` a client may ask for.
const MAX_LIMIT: u32 = 1000;

/// `GET /admin/schedules?state=&limit=`, the schedules soonest due first (`state`: `pending`,
/// `fired` or `cancelled`, default all; `limit` 1–1000, default 100), and `DELETE
/// /admin/schedules/{id}`, which cancels a pending schedule (204; 404 when no pending schedule
/// has this id). Errors are `application/problem+json`.
pub fn router(schedules: Schedules) -> Router {
    Router::new()
        .route("/admin/schedules", get(list))
        .route("/admin/schedules/{id}", delete(cancel))
        .with_state(Arc::new(schedules))
}

/// What a schedule admin request can fail with; each variant is one problem response.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// 400: a query parameter is out of range; what is wrong, keyed by parameter.
    #[error("invalid query parameters: {0:?}")]
    InvalidQuery(BTreeMap<String, String>),

    /// 404: no pending schedule has this id (unknown, fired or cancelled already).
    #[error("no pending schedule {0}")]
    ScheduleNotFound(Uuid),

    /// 500: the database failed. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let problem = match self {
            // 422 like a body field out of range: the request parsed, a value breaks a rule.
            Self::InvalidQuery(errors) => Problem::unprocessable(
                "A query parameter is invalid; `errors` says what is wrong with each.",
                serde_json::json!(errors),
            ),
            Self::ScheduleNotFound(id) => Problem::not_found(format!(
                "No pending schedule {id}: it does not exist, or it fired or was cancelled \
                 already."
            )),
            Self::Internal(error) => Problem::internal(&error),
        };
        problem.into_response()
    }
}

/// The query of `GET /admin/schedules`. A `state` other than `pending`, `fired` or
/// `cancelled` is a 400 problem from the extractor.
#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<ScheduleState>,
    limit: Option<u32>,
}

/// `GET /admin/schedules?state=&limit=`: the schedules, soonest due first.
#[tracing::instrument(name = "schedules.list", skip(schedules))]
async fn list(
    State(schedules): State<Arc<Schedules>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Schedule>>, AdminError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::InvalidQuery(BTreeMap::from([(
            "limit".to_owned(),
            format!("must be between 1 and {MAX_LIMIT}"),
        )])));
    }
    Ok(Json(schedules.list(params.state, i64::from(limit)).await?))
}

/// `DELETE /admin/schedules/{id}`: cancels a pending schedule, so that it never fires; 204, or
/// 404 when no pending schedule has this id (unknown, fired or cancelled already). Cancelling
/// the pending occurrence of a recurring schedule stops the recurrence until its next
/// `upsert_recurring`.
#[tracing::instrument(name = "schedules.cancel", skip(schedules))]
async fn cancel(
    State(schedules): State<Arc<Schedules>>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, AdminError> {
    if schedules.cancel(id).await? {
        tracing::info!("schedule cancelled");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::ScheduleNotFound(id))
    }
}

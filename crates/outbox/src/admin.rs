//! Parked rows: messages the broker refused for good, which the relay set aside so that they
//! hold back only the later messages of their own key. An operator lists them, fixes the
//! cause and retries them, or drops them.
//!
//! [`router`] serves the HTTP endpoints; it adds no authentication: a service mounts it with
//! its other admin routes behind `ADMIN_TOKEN` (`platform::http::admin::mount`). The same
//! operations are [`Outbox::parked`], [`Outbox::retry_parked`] and [`Outbox::drop_parked`].

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use platform::http::{Json, Page, Path, Problem, Query};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::record::{NOTIFY_CHANNEL, Outbox};

/// How many parked rows `GET /admin/outbox/parked` returns when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest `limit` a client may ask for.
pub const MAX_LIMIT: i64 = 500;

/// A parked row as an operator sees it: what it is, where it was going and why it was refused.
/// The payload is left out (up to ~1 MB); its size is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ParkedRow {
    /// The row's id: what the retry and drop endpoints take, and the cursor of the listing.
    pub id: i64,
    pub message_id: Uuid,
    pub topic: String,
    pub key: Option<String>,
    pub message_type: String,
    /// The payload's size in bytes; `None` for a tombstone.
    pub payload_bytes: Option<i32>,
    pub attempts: i32,
    /// Why the broker refused it.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
    /// Later rows of the same topic and key, waiting behind this one.
    pub waiting: i64,
}

impl Outbox {
    /// Up to `limit` parked rows with an id above `after`, in id order.
    pub async fn parked(
        executor: impl PgExecutor<'_>,
        after: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<ParkedRow>> {
        // `waiting` reads the pending rows after the parked one (the pending index has no key):
        // fine for a listing an operator asks for now and then, not for a hot path.
        sqlx::query_as(
            "SELECT id, message_id, topic, key, message_type,
                    octet_length(payload) AS payload_bytes, attempts, last_error, created_at,
                    parked_at,
                    (SELECT count(*) FROM outbox later
                     WHERE p.key IS NOT NULL AND later.topic = p.topic AND later.key = p.key
                       AND later.id > p.id AND later.published_at IS NULL
                       AND later.parked_at IS NULL AND later.dropped_at IS NULL) AS waiting
             FROM outbox p
             WHERE parked_at IS NOT NULL AND id > $1
             ORDER BY id
             LIMIT $2",
        )
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(executor)
        .await
        .context("Failed to list parked outbox rows")
    }

    /// Puts the parked row `id` back to pending; returns `false` if no parked row has this id.
    ///
    /// The relay publishes it at its next pass (woken at once), and the rows of its key that
    /// waited behind it once it is published, in order. If the broker still refuses it, it is
    /// parked again.
    pub async fn retry_parked(pool: &PgPool, id: i64) -> anyhow::Result<bool> {
        // `attempts` stays above 0, so the row keeps holding back its key's later rows until it
        // is published.
        let retried: Option<i64> = sqlx::query_scalar(
            "WITH retried AS (
                 UPDATE outbox SET parked_at = NULL
                 WHERE id = $1 AND parked_at IS NOT NULL
                 RETURNING id
             )
             SELECT id FROM retried, pg_notify($2, '')",
        )
        .bind(id)
        .bind(NOTIFY_CHANNEL)
        .fetch_optional(pool)
        .await
        .with_context(|| format!("Failed to retry parked outbox row {id}"))?;
        Ok(retried.is_some())
    }

    /// Gives up the parked row `id`: it is never published, stays (marked `dropped_at`) for the
    /// record until retention deletes it, and the later rows of its key go on. Returns `false`
    /// if no parked row has this id.
    pub async fn drop_parked(pool: &PgPool, id: i64) -> anyhow::Result<bool> {
        let dropped: Option<i64> = sqlx::query_scalar(
            "WITH dropped AS (
                 UPDATE outbox SET parked_at = NULL, dropped_at = clock_timestamp()
                 WHERE id = $1 AND parked_at IS NOT NULL
                 RETURNING id
             )
             SELECT id FROM dropped, pg_notify($2, '')",
        )
        .bind(id)
        .bind(NOTIFY_CHANNEL)
        .fetch_optional(pool)
        .await
        .with_context(|| format!("Failed to drop parked outbox row {id}"))?;
        Ok(dropped.is_some())
    }
}

/// The parked-row endpoints, over the service's outbox in `pool`:
///
/// - `GET /admin/outbox/parked?limit=&after=`: `{"items": [ParkedRow…], "next_cursor": …}` in
///   id order; `limit` 1–500 (default 100); `after` is the `next_cursor` of the previous page,
///   `next_cursor` is `null` on the last page.
/// - `POST /admin/outbox/parked/{id}/retry`: back to pending (204); the relay publishes it, then
///   the rows of its key that waited, in order.
/// - `DELETE /admin/outbox/parked/{id}`: dropped (204): never published, kept for the record
///   until retention; the key's later rows go on.
///
/// Errors are `application/problem+json`: 404 for an id that is not a parked row, 422 for a bad
/// `limit` or `after`, 400 for an id that is not a number.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/admin/outbox/parked", get(list))
        .route("/admin/outbox/parked/{id}/retry", post(retry))
        .route("/admin/outbox/parked/{id}", delete(drop_one))
        .with_state(Arc::new(pool))
}

/// What a parked-row request can fail with; each variant is one problem response.
#[derive(Debug, thiserror::Error)]
enum AdminError {
    /// 422: a query parameter is out of range or not a number; what is wrong, keyed by
    /// parameter.
    #[error("invalid query parameters: {0:?}")]
    InvalidQuery(BTreeMap<&'static str, String>),

    /// 404: no parked row has this id (unknown, published, retried or dropped already).
    #[error("no parked outbox row {0}")]
    NotParked(i64),

    /// 500: the database failed. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::InvalidQuery(errors) => Problem::unprocessable(
                "A query parameter is invalid; `errors` says what is wrong with each.",
                serde_json::json!(errors),
            ),
            Self::NotParked(id) => Problem::not_found(format!(
                "No parked outbox row {id}: it does not exist, or it was published, retried or \
                 dropped already."
            )),
            Self::Internal(error) => Problem::internal(&error),
        };
        problem.into_response()
    }
}

/// The query of `GET /admin/outbox/parked`, as text: a value that is not a number is a 422
/// like one out of range, not the extractor's 400.
#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /admin/outbox/parked?limit=&after=`
#[tracing::instrument(name = "outbox.parked.list", skip(pool))]
async fn list(
    State(pool): State<Arc<PgPool>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<ParkedRow>>, AdminError> {
    let mut errors = BTreeMap::new();
    let limit = match params.limit.as_deref().map(str::parse::<i64>) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            errors.insert("limit", format!("must be a number from 1 to {MAX_LIMIT}"));
            DEFAULT_LIMIT
        }
    };
    let after = match params.after.as_deref().map(str::parse::<i64>) {
        None => None,
        Some(Ok(after)) if after >= 0 => Some(after),
        Some(_) => {
            errors.insert(
                "after",
                "must be the next_cursor of a previous page".to_owned(),
            );
            None
        }
    };
    if !errors.is_empty() {
        return Err(AdminError::InvalidQuery(errors));
    }
    // One more than asked tells whether another page follows.
    let items = Outbox::parked(&*pool, after, limit + 1).await?;
    Ok(Json(Page::from_overfetched(items, limit as usize, |row| {
        row.id.to_string()
    })))
}

/// `POST /admin/outbox/parked/{id}/retry`: 204, or 404.
#[tracing::instrument(name = "outbox.parked.retry", skip(pool))]
async fn retry(
    State(pool): State<Arc<PgPool>>,
    Path(id): Path<i64>,
) -> Result<StatusCode, AdminError> {
    if Outbox::retry_parked(&pool, id).await? {
        tracing::info!("parked outbox row retried");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::NotParked(id))
    }
}

/// `DELETE /admin/outbox/parked/{id}`: 204, or 404.
#[tracing::instrument(name = "outbox.parked.drop", skip(pool))]
async fn drop_one(
    State(pool): State<Arc<PgPool>>,
    Path(id): Path<i64>,
) -> Result<StatusCode, AdminError> {
    if Outbox::drop_parked(&pool, id).await? {
        tracing::warn!("parked outbox row dropped; it will never be published");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AdminError::NotParked(id))
    }
}

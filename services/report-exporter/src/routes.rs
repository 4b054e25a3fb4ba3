//! The HTTP API: `POST /exports`, `GET /exports/{export_id}`, `POST
//! /exports/{export_id}/pause|resume|cancel` and `GET /exports/{export_id}/download`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use idempotency::{IdempotencyKey, IdempotencyKeys, KeyError, Seen};
use iterator::{Control, Job as _, JobOptions, Jobs};
use platform::http::{Json, Path};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use crate::error::ApiError;
use crate::export_job::{ExportOrders, ExportParams};
use crate::store::{self, ExportView, NewExport};

/// Statuses an export can be restricted to: those of `orders.orders.v1`.
const ORDER_STATUSES: [&str; 3] = ["pending_payment", "paid", "cancelled"];
const DEFAULT_CHUNK_SIZE: u32 = 5_000;
const MAX_CHUNK_SIZE: u32 = 100_000;
const MAX_SHARDS: u32 = 16;
/// The longest a throttled chunk may take (see `CreateExport::validate`).
const MAX_SECONDS_PER_CHUNK: f64 = 5.0;
/// The largest request body, in bytes. The largest valid `POST /exports` is under 3 KiB even
/// with every character of its strings written as a `\uXXXX` escape (the recipient is most of
/// it); the rest is room for indentation. A larger body is refused with a 413 before it is read.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The earliest and latest `from` and `to`: four-digit years, which every reader of the CSV and
/// PostgreSQL's `timestamptz` can hold.
fn time_range() -> std::ops::RangeInclusive<DateTime<Utc>> {
    let first = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").expect("a valid time");
    let last =
        DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z").expect("a valid time");
    first.to_utc()..=last.to_utc()
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub jobs: Jobs,
    /// The job, for its size estimate at start.
    pub export: ExportOrders,
    pub export_dir: PathBuf,
    /// Who is told about an export whose request names nobody.
    pub default_recipient: String,
    /// The `Idempotency-Key`s of `POST /exports`.
    pub idempotency: IdempotencyKeys,
}

/// The service's own routes; `platform::http::app` adds health, metrics and the middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/exports", post(create_export))
        .route("/exports/{export_id}", get(get_export))
        .route("/exports/{export_id}/pause", post(pause_export))
        .route("/exports/{export_id}/resume", post(resume_export))
        .route("/exports/{export_id}/cancel", post(cancel_export))
        .route("/exports/{export_id}/download", get(download_export))
        .with_state(state)
}

/// The body of `POST /exports`. Serialised again (as parsed) for its `Idempotency-Key`
/// fingerprint.
#[derive(Debug, Deserialize, Serialize)]
pub struct CreateExport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only orders in this status (`pending_payment`, `paid`, `cancelled`).
    pub status: Option<String>,
    /// Orders per chunk (default 5,000, at most 100,000).
    pub chunk_size: Option<u32>,
    /// The throttle; none by default.
    pub max_rows_per_sec: Option<u32>,
    /// Slices of the range exported in parallel (default 1, at most 16).
    pub shards: Option<u32>,
    /// Who is told when it is ready; `EXPORT_RECIPIENT` by default.
    pub recipient: Option<String>,
}

impl CreateExport {
    fn validate(self, default_recipient: &str) -> Result<NewExport, ApiError> {
        let mut errors = BTreeMap::new();
        let times = time_range();
        for (field, time) in [("from", self.from), ("to", self.to)] {
            if !times.contains(&time) {
                errors.insert(field, "must be in the years 0001 to 9999".to_owned());
            }
        }
        if self.to <= self.from {
            errors.insert("to", "must be later than `from`".to_owned());
        }
        if let Some(status) = &self.status
            && !ORDER_STATUSES.contains(&status.as_str())
        {
            errors.insert(
                "status",
                format!("must be one of {}", ORDER_STATUSES.join(", ")),
            );
        }
        let chunk_size = self.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        if !(1..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            errors.insert(
                "chunk_size",
                format!("must be between 1 and {MAX_CHUNK_SIZE}"),
            );
        }
        if self
            .max_rows_per_sec
            .is_some_and(|rate| rate == 0 || i32::try_from(rate).is_err())
        {
            errors.insert(
                "max_rows_per_sec",
                format!("must be between 1 and {}", i32::MAX),
            );
        }
        let shards = self.shards.unwrap_or(1);
        if !(1..=MAX_SHARDS).contains(&shards) {
            errors.insert("shards", format!("must be between 1 and {MAX_SHARDS}"));
        }
        // A step waits for the throttle while it holds its partition's lane; a rebalance waits
        // for it up to the consumer's drain timeout (10 s). Keep a chunk's share well under it.
        if let Some(rate) = self.max_rows_per_sec.filter(|rate| *rate > 0) {
            let seconds_per_chunk = f64::from(chunk_size) * f64::from(shards) / f64::from(rate);
            if seconds_per_chunk > MAX_SECONDS_PER_CHUNK {
                errors.insert(
                    "chunk_size",
                    format!(
                        "a chunk would take {seconds_per_chunk:.1} s at max_rows_per_sec; \
                         choose at most {MAX_SECONDS_PER_CHUNK} s worth of rows"
                    ),
                );
            }
        }
        let recipient = self
            .recipient
            .unwrap_or_else(|| default_recipient.to_owned());
        if let Err(reason) = platform::validate::email(&recipient) {
            errors.insert("recipient", reason);
        }
        if !errors.is_empty() {
            return Err(ApiError::InvalidExport(errors));
        }
        Ok(NewExport {
            export_id: Uuid::now_v7(),
            params: ExportParams {
                from: self.from,
                to: self.to,
                status: self.status,
            },
            recipient,
            requested_by: "api".to_owned(),
            options: JobOptions {
                job_id: None,
                chunk_size,
                max_rows_per_sec: self.max_rows_per_sec,
                shards,
            },
        })
    }
}

/// The body of `202 Accepted`.
#[derive(Debug, Serialize)]
struct Accepted {
    export_id: Uuid,
    status: iterator::JobState,
}

/// 202: the export is recorded and its first chunk is on its way; `GET` the `Location` for
/// its progress. With an `Idempotency-Key`, a repeated request answers the same 202 with the
/// export the first one started (see the `idempotency` crate).
#[tracing::instrument(name = "exports.create", skip_all, fields(export_id))]
async fn create_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<CreateExport>,
) -> Result<impl IntoResponse, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    // The request as parsed, not as sent: whitespace or field order do not make another one.
    let fingerprint = serde_json::to_vec(&request).context("Failed to encode the request")?;
    let export = request.validate(&state.default_recipient)?;
    if let Some(key) = &key
        && let Some(started) = started_before(&state, key, &fingerprint).await?
    {
        return Ok(accepted(started));
    }
    tracing::Span::current().record("export_id", tracing::field::display(export.export_id));
    let total = state.export.total(&export.params).await?;
    let mut tx = state
        .pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    // First, so that a concurrent request with the same key waits here for this transaction.
    if let Some(key) = &key
        && !state
            .idempotency
            .claim(&mut tx, key, &fingerprint, export.export_id)
            .await?
    {
        tx.rollback()
            .await
            .context("Failed to end the export transaction")?;
        // A concurrent request with the key committed first: answer with its export.
        let started = started_before(&state, key, &fingerprint)
            .await?
            .context("The idempotency key was lost after a conflict")?;
        return Ok(accepted(started));
    }
    store::start_in(&mut tx, &state.jobs, &export, total).await?;
    tx.commit().await.context("Failed to commit the export")?;
    tracing::info!(total, "export started");
    Ok(accepted(Accepted {
        export_id: export.export_id,
        status: iterator::JobState::Pending,
    }))
}

/// The export an earlier request with `key` started, as `202` shows it; a 422 when the key was
/// used with another request.
async fn started_before(
    state: &AppState,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Option<Accepted>, ApiError> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .context("Failed to get a database connection")?;
    let export_id = match state
        .idempotency
        .lookup(&mut conn, key, fingerprint)
        .await?
    {
        Seen::New => return Ok(None),
        Seen::OtherRequest => return Err(KeyError::Reused.into()),
        Seen::Created(export_id) => export_id,
    };
    drop(conn);
    let export = find(state, export_id).await?;
    Ok(Some(Accepted {
        export_id,
        status: export.status,
    }))
}

fn accepted(body: Accepted) -> impl IntoResponse {
    let location = format!("/exports/{}", body.export_id);
    (StatusCode::ACCEPTED, [(LOCATION, location)], Json(body))
}

#[tracing::instrument(name = "exports.get", skip(state))]
async fn get_export(
    State(state): State<AppState>,
    Path(export_id): Path<Uuid>,
) -> Result<Json<ExportView>, ApiError> {
    find(&state, export_id).await.map(Json)
}

#[tracing::instrument(name = "exports.pause", skip(state))]
async fn pause_export(
    State(state): State<AppState>,
    Path(export_id): Path<Uuid>,
) -> Result<Json<ExportView>, ApiError> {
    let control = state.jobs.pause(export_id).await?;
    controlled(&state, export_id, control, "be paused").await
}

#[tracing::instrument(name = "exports.resume", skip(state))]
async fn resume_export(
    State(state): State<AppState>,
    Path(export_id): Path<Uuid>,
) -> Result<Json<ExportView>, ApiError> {
    let control = state.jobs.resume(export_id).await?;
    controlled(&state, export_id, control, "be resumed").await
}

#[tracing::instrument(name = "exports.cancel", skip(state))]
async fn cancel_export(
    State(state): State<AppState>,
    Path(export_id): Path<Uuid>,
) -> Result<Json<ExportView>, ApiError> {
    let control = state.jobs.cancel(export_id).await?;
    controlled(&state, export_id, control, "be cancelled").await
}

/// 200 with the export after a pause, resume or cancel that applied (or had nothing to do).
async fn controlled(
    state: &AppState,
    export_id: Uuid,
    control: Control,
    action: &'static str,
) -> Result<Json<ExportView>, ApiError> {
    match control {
        Control::Applied | Control::Unchanged => {
            tracing::info!(?control, "export {action}");
            find(state, export_id).await.map(Json)
        }
        Control::NotAllowed(current) => Err(ApiError::NotAllowed {
            export_id,
            state: current,
            action,
        }),
        Control::NotFound => Err(ApiError::ExportNotFound(export_id)),
    }
}

/// 200 with the CSV, streamed from disk; 409 until the export completed.
#[tracing::instrument(name = "exports.download", skip(state))]
async fn download_export(
    State(state): State<AppState>,
    Path(export_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let export = find(&state, export_id).await?;
    if export.status != iterator::JobState::Completed {
        return Err(ApiError::NotCompleted(export_id, export.status));
    }
    // A sharded export is its parts, in shard order; the first starts with the header.
    let mut reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(tokio::io::empty());
    for path in store::files(&state.export_dir, &export) {
        let file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("Failed to open {}", path.display()))?;
        reader = Box::pin(reader.chain(file));
    }
    let disposition = format!("attachment; filename=\"orders-{export_id}.csv\"");
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(ReaderStream::new(reader)),
    ))
}

async fn find(state: &AppState, export_id: Uuid) -> Result<ExportView, ApiError> {
    store::find(&state.pool, &state.jobs, export_id)
        .await?
        .ok_or(ApiError::ExportNotFound(export_id))
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use platform::validate::MAX_EMAIL_LEN;

    use super::*;

    fn request(body: &str) -> CreateExport {
        serde_json::from_str(body).expect("a CreateExport")
    }

    fn invalid_fields(request: CreateExport) -> Vec<&'static str> {
        match request.validate("ops@example.com") {
            Ok(_) => Vec::new(),
            Err(ApiError::InvalidExport(errors)) => errors.into_keys().collect(),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn the_largest_valid_request_fits_the_body_limit() {
        // Every character of every string as a six-byte `\uXXXX` escape, pretty-printed.
        let escaped = |text: &str| {
            text.chars().fold(String::new(), |mut escaped, c| {
                let _ = write!(escaped, "\\u{:04x}", u32::from(c));
                escaped
            })
        };
        let recipient = format!("{}@{}", "a".repeat(64), "b".repeat(MAX_EMAIL_LEN - 65));
        let body = format!(
            "{{\n  \"from\": \"{}\",\n  \"to\": \"{}\",\n  \"status\": \"{}\",\n  \
             \"chunk_size\": {MAX_CHUNK_SIZE},\n  \"max_rows_per_sec\": {},\n  \
             \"shards\": {MAX_SHARDS},\n  \"recipient\": \"{}\"\n}}",
            escaped("0001-01-01T00:00:00.000000000+00:00"),
            escaped("9999-12-31T23:59:59.999999999+00:00"),
            escaped("pending_payment"),
            i32::MAX,
            escaped(&recipient),
        );

        assert!(invalid_fields(request(&body)).is_empty(), "{body}");
        // What BODY_LIMIT's documentation says.
        assert!(body.len() < 3 * 1024, "{} bytes", body.len());
        assert!(
            body.len() * 4 < BODY_LIMIT,
            "{} bytes leave too little room under {BODY_LIMIT}",
            body.len()
        );
    }

    #[test]
    fn times_text_and_numbers_are_bounded() {
        let body = serde_json::json!({
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-02T00:00:00Z",
            "chunk_size": 0,
            "shards": 17,
            "max_rows_per_sec": u32::MAX,
            "recipient": "ops\u{0}@example.com",
        });
        assert_eq!(
            invalid_fields(serde_json::from_value(body).expect("a CreateExport")),
            ["chunk_size", "max_rows_per_sec", "recipient", "shards"]
        );

        // chrono's extremes, far outside PostgreSQL's `timestamptz`.
        let request = CreateExport {
            from: DateTime::<Utc>::MIN_UTC,
            to: DateTime::<Utc>::MAX_UTC,
            status: None,
            chunk_size: None,
            max_rows_per_sec: None,
            shards: None,
            recipient: Some(format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN))),
        };
        assert_eq!(invalid_fields(request), ["from", "recipient", "to"]);
    }
}

//! Exports: starting one (an `exports` row and an iterator job with the same id, in one
//! transaction) and reading it back with the job's progress.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use iterator::{JobOptions, JobState, JobStatus, Jobs};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::export_job::{ExportOrders, ExportParams, file_path};

/// What to export, checked.
#[derive(Debug, Clone)]
pub struct NewExport {
    pub export_id: Uuid,
    pub params: ExportParams,
    pub recipient: String,
    /// `api`, or the schedule that asked for it.
    pub requested_by: String,
    pub options: JobOptions,
}

/// Records the export and starts its job in `conn`'s transaction. `false` when the export
/// exists already: its id, or, for a nightly export, its night (a fire repeated), which is left
/// as it is.
pub async fn start_in(
    conn: &mut PgConnection,
    jobs: &Jobs,
    export: &NewExport,
    total: Option<u64>,
) -> anyhow::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO exports (export_id, range_from, range_to, status_filter, recipient, requested_by)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(export.export_id)
    .bind(export.params.from)
    .bind(export.params.to)
    .bind(export.params.status.as_deref())
    .bind(&export.recipient)
    .bind(&export.requested_by)
    .execute(&mut *conn)
    .await
    .context("Failed to record the export")?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO export_files (export_id, shard) SELECT $1, generate_series(0, $2 - 1)",
    )
    .bind(export.export_id)
    .bind(export.options.shards.cast_signed())
    .execute(&mut *conn)
    .await
    .context("Failed to record the export's files")?;
    let options = JobOptions {
        job_id: Some(export.export_id),
        ..export.options
    };
    jobs.start_in::<ExportOrders>(conn, &export.params, options, total)
        .await?;
    Ok(true)
}

/// An export as the API shows it: its filter and its job's progress.
#[derive(Debug, Clone, Serialize)]
pub struct ExportView {
    pub export_id: Uuid,
    pub status: JobState,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The order status the export is restricted to, if any.
    pub order_status: Option<String>,
    pub chunk_size: i32,
    pub max_rows_per_sec: Option<i32>,
    pub shards: i32,
    pub processed_rows: i64,
    /// Counted when the export started.
    pub total_rows: Option<i64>,
    pub progress: Option<f64>,
    pub rate_rows_per_sec: Option<f64>,
    pub eta: Option<DateTime<Utc>>,
    pub recipient: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the export failed, or why its current chunk is being retried.
    pub error: Option<String>,
    /// Where to get the CSV, once completed.
    pub download_url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ExportRow {
    range_from: DateTime<Utc>,
    range_to: DateTime<Utc>,
    status_filter: Option<String>,
    recipient: String,
    requested_by: String,
}

/// The export and its job's status; `None` for an unknown id.
pub async fn find(
    pool: &PgPool,
    jobs: &Jobs,
    export_id: Uuid,
) -> anyhow::Result<Option<ExportView>> {
    let row: Option<ExportRow> = sqlx::query_as(
        "SELECT range_from, range_to, status_filter, recipient, requested_by
         FROM exports WHERE export_id = $1",
    )
    .bind(export_id)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("Failed to read export {export_id}"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let job = jobs
        .status(export_id)
        .await?
        .with_context(|| format!("Export {export_id} has no job"))?;
    Ok(Some(view(export_id, row, job)))
}

fn view(export_id: Uuid, row: ExportRow, job: JobStatus) -> ExportView {
    ExportView {
        export_id,
        status: job.state,
        from: row.range_from,
        to: row.range_to,
        order_status: row.status_filter,
        chunk_size: job.chunk_size,
        max_rows_per_sec: job.max_rows_per_sec,
        shards: job.shards,
        processed_rows: job.processed,
        total_rows: job.total_estimate,
        progress: job.progress,
        rate_rows_per_sec: job.rate_per_sec,
        eta: job.eta,
        recipient: row.recipient,
        requested_by: row.requested_by,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        error: job.last_error,
        download_url: (job.state == JobState::Completed)
            .then(|| format!("/exports/{export_id}/download")),
    }
}

/// The files of a completed export, in download order.
pub fn files(dir: &Path, export: &ExportView) -> Vec<PathBuf> {
    let shards = export.shards.unsigned_abs();
    (0..shards)
        .map(|shard| file_path(dir, export.export_id, shard, shards))
        .collect()
}

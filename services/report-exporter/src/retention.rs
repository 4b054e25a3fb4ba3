//! Retention: the `purge-expired-records` recurring schedule fires [`PurgeExpiredRecords`] on
//! the service's own queue (`RETENTION_CRON`); its handler deletes what the service no longer
//! needs:
//!
//! - exports finished (completed, failed or cancelled) longer than `RETENTION_PERIOD` ago: the
//!   CSV files, the `exports` and `export_files` rows and the iterator job with its shards and
//!   steps. Their `GET` and download answer 404 afterwards;
//! - idempotency keys of `POST /exports` older than `IDEMPOTENCY_KEY_TTL`;
//! - the task queue's execution records, the dead letters an operator replayed or dropped (the
//!   task queue's and the consumers' set-aside messages), and fired or cancelled schedules, older
//!   than `RETENTION_PERIOD`.
//!
//! Each is counted in `retention_deleted_rows_total{what}`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use iterator::Job as _;
use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler};
use task_scheduler::TaskRecordsPurged;
pub use task_scheduler::{PurgeExpiredRecords, RETENTION_SCHEDULE};
use uuid::Uuid;

use crate::export_job::{ExportOrders, file_path};

/// Exports deleted per transaction: each one removes files inside it, so far fewer than the
/// 10,000 rows of a plain chunk.
const EXPORTS_CHUNK: i64 = 100;

/// The handler of [`PurgeExpiredRecords`].
#[derive(Debug, Clone)]
pub struct PurgeRecords {
    pub pool: PgPool,
    /// `EXPORT_DIR`.
    pub export_dir: PathBuf,
    /// `RETENTION_PERIOD`.
    pub period: Duration,
    /// `IDEMPOTENCY_KEY_TTL`.
    pub idempotency_ttl: Duration,
}

impl TaskHandler<PurgeExpiredRecords> for PurgeRecords {
    /// The deletes run on the pool, a chunk per transaction, not in the task's transaction
    /// (`ctx.conn`), which would hold every deleted row's lock until the end. A purge that
    /// fails halfway keeps what it deleted, and its retry (or the next fire) deletes the rest.
    async fn handle(
        &self,
        _task: PurgeExpiredRecords,
        _ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        self.purge().await.map_err(TaskError::retryable)
    }
}

impl PurgeRecords {
    /// Runs every purge of the service once.
    pub async fn purge(&self) -> anyhow::Result<()> {
        let exports = self.purge_exports().await?;
        let chunk = u32::try_from(platform::retention::DELETE_CHUNK).unwrap_or(u32::MAX);
        let idempotency_keys =
            idempotency::purge_expired(&self.pool, self.idempotency_ttl, chunk).await?;
        platform::retention::count_deleted("idempotency_keys", idempotency_keys);
        let TaskRecordsPurged {
            executions,
            dead_letters,
            set_aside,
            schedules,
        } = task_scheduler::purge_task_records(&self.pool, self.period).await?;
        tracing::info!(
            exports,
            idempotency_keys,
            executions,
            dead_letters,
            set_aside,
            schedules,
            "expired records purged"
        );
        Ok(())
    }

    /// Deletes the exports finished longer than `RETENTION_PERIOD` ago, [`EXPORTS_CHUNK`] per
    /// transaction, and returns how many.
    ///
    /// The files are removed inside the transaction that deletes the rows, before its commit:
    /// if removing one fails, the rows stay and the next purge tries again. Had the commit come
    /// first, a crash before the removal would leave files that no row points at, never to be
    /// removed. The window the other way round (files gone, the commit then fails) lasts until
    /// the next purge, and a download in it fails with a 500 rather than serve a partial file.
    ///
    /// A nightly export's row is what makes a repeated fire for its night start nothing (the
    /// unique index `exports_one_per_night`). Deleting it lets no night be exported again: the
    /// scheduler fires each occurrence once and catches up only on occurrences after the
    /// schedule's pending one, and a redelivered `StartNightlyExport` is skipped by its
    /// execution record, which is kept as long (see the README).
    async fn purge_exports(&self) -> anyhow::Result<u64> {
        let mut deleted = 0;
        loop {
            let mut tx = self
                .pool
                .begin()
                .await
                .context("Failed to begin a purge transaction")?;
            let jobs = iterator::delete_finished_in(
                &mut tx,
                ExportOrders::KIND,
                self.period,
                EXPORTS_CHUNK,
            )
            .await?;
            let ids: Vec<Uuid> = jobs.iter().map(|job| job.job_id).collect();
            sqlx::query("DELETE FROM exports WHERE export_id = ANY($1)")
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .context("Failed to delete expired exports")?;
            for job in &jobs {
                for shard in 0..job.shards {
                    remove_file(&file_path(&self.export_dir, job.job_id, shard, job.shards))
                        .await?;
                }
            }
            tx.commit()
                .await
                .context("Failed to commit the deletion of expired exports")?;
            let chunk = u64::try_from(jobs.len()).unwrap_or(u64::MAX);
            platform::retention::count_deleted("exports", chunk);
            deleted += chunk;
            if chunk < EXPORTS_CHUNK.unsigned_abs() {
                return Ok(deleted);
            }
        }
    }
}

/// Removes `path`; one that is not there (a failed export that never wrote a chunk, a removal
/// whose commit failed before) is fine.
async fn remove_file(path: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(error).with_context(|| format!("Failed to remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

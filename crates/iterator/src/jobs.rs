//! Starting and steering jobs: [`Jobs`], and what it reports: [`JobStatus`].

use std::fmt;
use std::str::FromStr;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use outbox::{Outbox, OutboxMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::job::Job;

/// The `message_type` of a step message.
pub const STEP_MESSAGE_TYPE: &str = "IterationStep";

/// How far back the reported rate looks.
const RATE_WINDOW_SECS: f64 = 30.0;

/// A step message: "process the next chunk of this shard". The runner trusts the cursor and
/// step stored in `job_shards`, not the copy in the message; the message only says which
/// shard to look at, and a step number that must match the stored one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepMessage {
    pub job_id: Uuid,
    /// Absent (0) for an unsharded job.
    #[serde(default)]
    pub shard: i32,
    pub step: i64,
    pub cursor: Option<Value>,
}

impl StepMessage {
    /// Records the message in the caller's transaction. Keyed by job id, so a job's steps keep
    /// their order on one partition; the shards of a sharded job get keys of their own, so
    /// that they spread over partitions and replicas and run in parallel.
    pub(crate) async fn record(
        &self,
        conn: &mut PgConnection,
        topic: &str,
        shards: i32,
    ) -> anyhow::Result<()> {
        let key = if shards > 1 {
            format!("{}/{}", self.job_id, self.shard)
        } else {
            self.job_id.to_string()
        };
        Outbox::record(
            conn,
            OutboxMessage::json(topic, key, STEP_MESSAGE_TYPE, self)?,
        )
        .await
        .with_context(|| format!("Failed to record step {} of job {}", self.step, self.job_id))?;
        Ok(())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Started; no chunk processed yet.
    Pending,
    Running,
    /// Stopped after its current chunk; `resume` goes on from the cursor.
    Paused,
    Completed,
    /// A chunk failed on every attempt; `last_error` says why. `resume` retries it.
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// A job in this state takes its next step when one arrives.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => anyhow::bail!("unknown job state {other:?}"),
        })
    }
}

/// How to run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOptions {
    /// The job's id; a new UUID v7 unless set (set it to the id of what the job produces, an
    /// export say). Starting a job whose id exists fails.
    pub job_id: Option<Uuid>,
    /// Items per chunk, i.e. per step and transaction (default 1,000). Larger chunks cost
    /// fewer round trips; smaller ones lose less on a crash and react faster to a pause.
    pub chunk_size: u32,
    /// At most this many items per second over the whole job (`None`: no limit).
    pub max_rows_per_sec: Option<u32>,
    /// Independent chains the key range is split into (default 1); see [`crate::Shard`].
    pub shards: u32,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            job_id: None,
            chunk_size: 1_000,
            max_rows_per_sec: None,
            shards: 1,
        }
    }
}

/// What an attempt to pause, resume or cancel a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The job moved to the requested state.
    Applied,
    /// It was in that state already (pausing a paused job): nothing to do.
    Unchanged,
    /// Not possible from the job's state (resuming a completed job).
    NotAllowed(JobState),
    NotFound,
}

/// A job as `GET`-style APIs show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job_id: Uuid,
    pub kind: String,
    pub state: JobState,
    pub params: Value,
    pub chunk_size: i32,
    pub max_rows_per_sec: Option<i32>,
    pub shards: i32,
    pub processed: i64,
    pub total_estimate: Option<i64>,
    /// `processed / total_estimate` capped at 1, and 1 once completed; `None` without an
    /// estimate.
    pub progress: Option<f64>,
    /// Items per second: over the last 30 s while running, over the whole run once completed.
    pub rate_per_sec: Option<f64>,
    /// When the job should complete at the current rate; only while running.
    pub eta: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    job_id: Uuid,
    kind: String,
    state: String,
    params: Value,
    chunk_size: i32,
    max_rows_per_sec: Option<i32>,
    shards: i32,
    processed: i64,
    total_estimate: Option<i64>,
    attempts: i32,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    now: DateTime<Utc>,
    recent_rows: Option<i64>,
}

impl TryFrom<StatusRow> for JobStatus {
    type Error = anyhow::Error;

    fn try_from(row: StatusRow) -> anyhow::Result<Self> {
        let state: JobState = row.state.parse()?;
        let progress = match (state, row.total_estimate) {
            (JobState::Completed, _) => Some(1.0),
            (_, Some(total)) if total > 0 => Some((row.processed as f64 / total as f64).min(1.0)),
            (_, Some(_)) => Some(0.0),
            (_, None) => None,
        };
        let seconds = |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).as_seconds_f64();
        let rate_per_sec = match (state, row.started_at, row.finished_at) {
            (JobState::Running, Some(started), _) => {
                let window = seconds(started, row.now).min(RATE_WINDOW_SECS);
                (window > 0.0).then(|| row.recent_rows.unwrap_or(0) as f64 / window)
            }
            (JobState::Completed, Some(started), Some(finished)) => {
                let elapsed = seconds(started, finished);
                (elapsed > 0.0).then(|| row.processed as f64 / elapsed)
            }
            _ => None,
        };
        let eta = match (state, rate_per_sec, row.total_estimate) {
            (JobState::Running, Some(rate), Some(total)) if rate > 0.0 => {
                let left = (total - row.processed).max(0) as f64 / rate;
                TimeDelta::try_milliseconds((left * 1000.0) as i64).map(|left| row.now + left)
            }
            _ => None,
        };
        Ok(Self {
            job_id: row.job_id,
            kind: row.kind,
            state,
            params: row.params,
            chunk_size: row.chunk_size,
            max_rows_per_sec: row.max_rows_per_sec,
            shards: row.shards,
            processed: row.processed,
            total_estimate: row.total_estimate,
            progress,
            rate_per_sec,
            eta,
            attempts: row.attempts,
            last_error: row.last_error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        })
    }
}

/// Starts, pauses, resumes and cancels jobs, and reports on them. Any replica can do it: the
/// state lives in the database and the steps travel through the outbox to `topic`, where a
/// [`crate::JobRunner`] picks them up.
#[derive(Debug, Clone)]
pub struct Jobs {
    pool: PgPool,
    topic: String,
}

impl Jobs {
    /// `topic` is the iterations topic the service's [`crate::JobRunner`] consumes.
    pub fn new(pool: PgPool, topic: impl Into<String>) -> Self {
        Self {
            pool,
            topic: topic.into(),
        }
    }

    /// Starts a job: asks it for its total, then records it and its first steps.
    pub async fn start<J: Job>(
        &self,
        job: &J,
        params: &J::Params,
        options: JobOptions,
    ) -> anyhow::Result<Uuid> {
        let total = job
            .total(params)
            .await
            .with_context(|| format!("Failed to estimate the size of a {} job", J::KIND))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a transaction")?;
        let job_id = self.start_in::<J>(&mut tx, params, options, total).await?;
        tx.commit().await.context("Failed to commit the new job")?;
        Ok(job_id)
    }

    /// Starts a job in the caller's transaction (through the outbox): it exists, and runs, if
    /// and only if that transaction commits. `total` as [`Job::total`] would say.
    pub async fn start_in<J: Job>(
        &self,
        conn: &mut PgConnection,
        params: &J::Params,
        options: JobOptions,
        total: Option<u64>,
    ) -> anyhow::Result<Uuid> {
        let positive = |value: u32, what: &str| {
            i32::try_from(value)
                .ok()
                .filter(|value| *value > 0)
                .with_context(|| format!("{what} must be between 1 and {}", i32::MAX))
        };
        let chunk_size = positive(options.chunk_size, "chunk_size")?;
        let shards = positive(options.shards, "shards")?;
        let max_rows_per_sec = options
            .max_rows_per_sec
            .map(|rate| positive(rate, "max_rows_per_sec"))
            .transpose()?;
        let total = total.map(|total| i64::try_from(total).unwrap_or(i64::MAX));
        let job_id = options.job_id.unwrap_or_else(Uuid::now_v7);
        let params = serde_json::to_value(params)
            .with_context(|| format!("Failed to encode the parameters of a {} job", J::KIND))?;
        sqlx::query(
            "INSERT INTO jobs (job_id, kind, params, chunk_size, max_rows_per_sec, shards, total_estimate)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job_id)
        .bind(J::KIND)
        .bind(&params)
        .bind(chunk_size)
        .bind(max_rows_per_sec)
        .bind(shards)
        .bind(total)
        .execute(&mut *conn)
        .await
        .with_context(|| format!("Failed to record {} job {job_id}", J::KIND))?;
        sqlx::query("INSERT INTO job_shards (job_id, shard) SELECT $1, generate_series(0, $2 - 1)")
            .bind(job_id)
            .bind(shards)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("Failed to record the shards of job {job_id}"))?;
        for shard in 0..shards {
            let step = StepMessage {
                job_id,
                shard,
                step: 0,
                cursor: None,
            };
            step.record(conn, &self.topic, shards).await?;
        }
        tracing::info!(%job_id, kind = J::KIND, shards = options.shards, "job started");
        Ok(job_id)
    }

    /// Stops the job after the chunk in progress; [`Self::resume`] goes on from its cursor.
    pub async fn pause(&self, job_id: Uuid) -> anyhow::Result<Control> {
        self.move_to(
            job_id,
            JobState::Paused,
            &[JobState::Pending, JobState::Running],
        )
        .await
    }

    /// Goes on with a paused job from its cursor, or retries a failed job's chunk.
    pub async fn resume(&self, job_id: Uuid) -> anyhow::Result<Control> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a transaction")?;
        // Shards before the job, in the order a step locks them: a step still running from
        // before the pause holds its shard and then updates the job; taking the job first here
        // would deadlock with it.
        sqlx::query("SELECT shard FROM job_shards WHERE job_id = $1 ORDER BY shard FOR UPDATE")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("Failed to lock the shards of job {job_id}"))?;
        let control = transition(
            &mut tx,
            job_id,
            JobState::Running,
            &[JobState::Paused, JobState::Failed],
        )
        .await?;
        if control == Control::Applied {
            // The throttle's budget restarts now, as if the processed rows had taken exactly
            // their share of time: a long pause does not turn into a burst.
            let shards: Vec<(i32, i64, Option<Value>, i32)> = sqlx::query_as(
                "UPDATE job_shards s SET throttle_origin = now() - make_interval(
                         secs => CASE WHEN j.max_rows_per_sec IS NULL THEN 0
                                 ELSE s.processed::float8 * j.shards / j.max_rows_per_sec END)
                 FROM jobs j
                 WHERE s.job_id = $1 AND j.job_id = s.job_id AND NOT s.done
                 RETURNING s.shard, s.next_step, s.cursor, j.shards",
            )
            .bind(job_id)
            .fetch_all(&mut *tx)
            .await
            .with_context(|| format!("Failed to restart the shards of job {job_id}"))?;
            // A step message from before the pause may still be on its way; it carries the
            // same step number as the one recorded here, so whichever comes second is ignored.
            for (shard, step, cursor, shards) in shards {
                StepMessage {
                    job_id,
                    shard,
                    step,
                    cursor,
                }
                .record(&mut tx, &self.topic, shards)
                .await?;
            }
        }
        tx.commit().await.context("Failed to commit the resume")?;
        Ok(control)
    }

    /// Ends the job: no further chunk starts. What earlier chunks wrote stays.
    pub async fn cancel(&self, job_id: Uuid) -> anyhow::Result<Control> {
        self.move_to(
            job_id,
            JobState::Cancelled,
            &[
                JobState::Pending,
                JobState::Running,
                JobState::Paused,
                JobState::Failed,
            ],
        )
        .await
    }

    /// A [`transition`] in a transaction of its own.
    async fn move_to(
        &self,
        job_id: Uuid,
        to: JobState,
        from: &[JobState],
    ) -> anyhow::Result<Control> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a transaction")?;
        let control = transition(&mut tx, job_id, to, from).await?;
        tx.commit()
            .await
            .with_context(|| format!("Failed to commit the move of job {job_id} to {to}"))?;
        Ok(control)
    }

    pub async fn status(&self, job_id: Uuid) -> anyhow::Result<Option<JobStatus>> {
        let row: Option<StatusRow> = sqlx::query_as(
            "SELECT j.job_id, j.kind, j.state, j.params, j.chunk_size, j.max_rows_per_sec,
                    j.shards, j.processed, j.total_estimate, j.attempts, j.last_error,
                    j.created_at, j.started_at, j.finished_at, j.updated_at, now() AS now,
                    (SELECT sum(s.rows)::bigint FROM job_steps s
                      WHERE s.job_id = j.job_id
                        AND s.processed_at > now() - make_interval(secs => $2)) AS recent_rows
             FROM jobs j WHERE j.job_id = $1",
        )
        .bind(job_id)
        .bind(RATE_WINDOW_SECS)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("Failed to read job {job_id}"))?;
        row.map(JobStatus::try_from).transpose()
    }
}

/// Moves a job to `to` if it is in one of `from`, under its row lock.
async fn transition(
    conn: &mut PgConnection,
    job_id: Uuid,
    to: JobState,
    from: &[JobState],
) -> anyhow::Result<Control> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT state, kind FROM jobs WHERE job_id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await
            .with_context(|| format!("Failed to lock job {job_id}"))?;
    let Some((state, kind)) = row else {
        return Ok(Control::NotFound);
    };
    let state: JobState = state.parse()?;
    if state == to {
        return Ok(Control::Unchanged);
    }
    if !from.contains(&state) {
        return Ok(Control::NotAllowed(state));
    }
    sqlx::query(
        "UPDATE jobs SET state = $2, updated_at = now(),
             attempts = CASE WHEN $2 = 'running' THEN 0 ELSE attempts END,
             finished_at = CASE WHEN $2 = 'cancelled' THEN now() ELSE finished_at END
         WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(to.as_str())
    .execute(&mut *conn)
    .await
    .with_context(|| format!("Failed to move job {job_id} to {to}"))?;
    tracing::info!(%job_id, from = %state, to = %to, "job state changed");
    if to == JobState::Cancelled {
        metrics::counter!("iterator_jobs_finished_total", "kind" => kind, "state" => "cancelled")
            .increment(1);
    }
    Ok(Control::Applied)
}

//! Running a task in its execution transaction: record the execution in `task_executions`, run
//! the handler, commit both or neither. One task per transaction here; [`super::batch`] runs
//! several in one.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use kafka::HandlerError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::ErasedHandler;
use super::batch::Batcher;
use super::limits::Limits;
use crate::{TaskContext, TaskError};

/// A task type as the worker runs it: its handler, its limits (shared by all levels), its
/// batcher if it opted into batching, and its metric handles, registered once rather than per
/// message.
pub(super) struct Registered {
    pub(super) name: &'static str,
    pub(super) handler: Box<dyn ErasedHandler>,
    pub(super) limits: Limits,
    pub(super) batcher: Option<Batcher>,
    pub(super) metrics: TaskMetrics,
}

impl Registered {
    pub(super) fn new(
        name: &'static str,
        handler: Box<dyn ErasedHandler>,
        limits: Limits,
        batcher: Option<Batcher>,
        retry_levels: usize,
    ) -> Self {
        Self {
            name,
            handler,
            limits,
            batcher,
            metrics: TaskMetrics::new(name, retry_levels),
        }
    }

    /// Counts and logs a run that ended, in the current span: what a task run alone and a task
    /// run in a batch both report.
    pub(super) fn report(&self, run: &Run) {
        match run {
            Run::Succeeded => {
                self.metrics.succeeded.increment(1);
                tracing::debug!("task succeeded");
            }
            Run::AlreadyDone => {
                self.metrics.deduplicated.increment(1);
                tracing::info!("task was done before; not running it again");
            }
            // The level handler reports failures: it decides where the task goes next.
            Run::Failed(_) => {}
        }
    }

    /// Runs the handler on `conn`, timing it. A panicking handler is a failed run like any
    /// other: caught here, its transaction rolls back and the task moves on, instead of leaving
    /// its partition stuck behind it.
    pub(super) async fn call(
        &self,
        payload: &[u8],
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let started = Instant::now();
        let result = AssertUnwindSafe(self.handler.handle(payload, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))));
        self.metrics
            .handler_duration
            .record(started.elapsed().as_secs_f64());
        result
    }
}

pub(super) struct TaskMetrics {
    succeeded: metrics::Counter,
    deduplicated: metrics::Counter,
    pub(super) dead_lettered: metrics::Counter,
    /// Indexed by retry level − 1.
    pub(super) retried: Vec<metrics::Counter>,
    pub(super) in_flight: metrics::Gauge,
    pub(super) age_at_start: metrics::Histogram,
    handler_duration: metrics::Histogram,
    /// Tasks per transaction of a batching task type.
    pub(super) batch_size: metrics::Histogram,
}

impl TaskMetrics {
    fn new(task: &'static str, retry_levels: usize) -> Self {
        let labels = [("task", task)];
        Self {
            succeeded: metrics::counter!("tasks_succeeded_total", &labels),
            deduplicated: metrics::counter!("tasks_deduplicated_total", &labels),
            dead_lettered: metrics::counter!("tasks_dead_lettered_total", &labels),
            retried: (1..=retry_levels)
                .map(|level| {
                    metrics::counter!("tasks_retried_total", "task" => task, "level" => level.to_string())
                })
                .collect(),
            in_flight: metrics::gauge!("tasks_in_flight", &labels),
            age_at_start: metrics::histogram!("task_age_at_start_seconds", &labels),
            handler_duration: metrics::histogram!("task_handler_duration_seconds", &labels),
            batch_size: metrics::histogram!("task_batch_size", &labels),
        }
    }
}

/// How one run of a task ended.
#[derive(Debug)]
pub(super) enum Run {
    Succeeded,
    /// The execution was recorded before: the effect exists, the handler did not run.
    AlreadyDone,
    /// The handler failed; everything it wrote was rolled back.
    Failed(TaskError),
}

/// One run in a transaction of its own: record the execution and run the handler. Success
/// commits both; failure rolls back both. `Err` means the outcome is not decided (the database
/// failed): nothing was committed.
pub(super) async fn run_alone(
    pool: &PgPool,
    task: &Registered,
    task_id: Uuid,
    attempt: u32,
    scheduled_for: Option<DateTime<Utc>>,
    payload: &[u8],
) -> Result<Run, HandlerError> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the task transaction")?;
    let claims = claim(&mut tx, task.name, &[(task_id, attempt)]).await?;
    match claims.into_iter().next().expect("one claim per task") {
        Claim::Claimed => {}
        Claim::AlreadyDone => {
            // Nothing was written: the transaction ends with `tx`.
            task.report(&Run::AlreadyDone);
            return Ok(Run::AlreadyDone);
        }
        Claim::TakenBy(other) => return Ok(Run::Failed(taken_by(task_id, &other))),
    }

    let mut ctx = TaskContext {
        task_id,
        attempt,
        scheduled_for,
        conn: &mut tx,
    };
    match task.call(payload, &mut ctx).await {
        Ok(()) => {
            complete(&mut tx, &[task_id]).await?;
            tx.commit()
                .await
                .context("Failed to commit the task transaction")?;
            task.report(&Run::Succeeded);
            Ok(Run::Succeeded)
        }
        Err(error) => {
            // Undo what the handler wrote, the execution record included, so that the next
            // attempt runs. A rollback that fails is no worse: the transaction ends with its
            // connection either way.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "failed to roll back a failed task");
            }
            Ok(Run::Failed(error))
        }
    }
}

pub(super) fn taken_by(task_id: Uuid, other: &str) -> TaskError {
    TaskError::permanent(anyhow::anyhow!(
        "task id {task_id} was already used by a `{other}` task"
    ))
}

pub(super) fn panicked(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    anyhow::anyhow!("the task handler panicked: {text}")
}

pub(super) enum Claim {
    /// This run owns the execution; it commits or rolls back with the handler's writes.
    Claimed,
    AlreadyDone,
    /// The id belongs to an execution of another task type.
    TakenBy(String),
}

/// Records the executions of tasks of one type, or finds them recorded before, in two
/// statements at most. A concurrent run of the same task id (a duplicate on another partition)
/// blocks on the primary key until its transaction ends, then the id is found, or claimed if
/// that run rolled back. `tasks` must be sorted by id and hold each id once: concurrent batches
/// then lock the ids they share in the same order and cannot deadlock on them.
pub(super) async fn claim(
    conn: &mut PgConnection,
    task_name: &str,
    tasks: &[(Uuid, u32)],
) -> Result<Vec<Claim>, HandlerError> {
    debug_assert!(tasks.windows(2).all(|pair| pair[0].0 < pair[1].0));
    let ids: Vec<Uuid> = tasks.iter().map(|(id, _)| *id).collect();
    let attempts: Vec<i32> = tasks
        .iter()
        .map(|(_, attempt)| attempts_column(*attempt))
        .collect();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO task_executions (task_id, task_name, attempts)
         SELECT task_id, $2, attempts FROM unnest($1::uuid[], $3::int[]) AS t (task_id, attempts)
         ON CONFLICT (task_id) DO NOTHING
         RETURNING task_id",
    )
    .bind(&ids)
    .bind(task_name)
    .bind(&attempts)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to record the task executions")?;
    if claimed.len() == ids.len() {
        return Ok(tasks.iter().map(|_| Claim::Claimed).collect());
    }
    let claimed: std::collections::HashSet<Uuid> = claimed.into_iter().collect();
    let others: Vec<Uuid> = ids
        .iter()
        .filter(|id| !claimed.contains(id))
        .copied()
        .collect();
    // A second statement sees rows committed after the insert's snapshot, such as the ones the
    // insert waited for.
    let recorded: std::collections::HashMap<Uuid, String> =
        sqlx::query_as("SELECT task_id, task_name FROM task_executions WHERE task_id = ANY($1)")
            .bind(&others)
            .fetch_all(&mut *conn)
            .await
            .context("Failed to read the recorded task executions")?
            .into_iter()
            .collect();
    ids.iter()
        .map(|id| {
            if claimed.contains(id) {
                return Ok(Claim::Claimed);
            }
            match recorded.get(id) {
                Some(name) if name == task_name => Ok(Claim::AlreadyDone),
                Some(name) => Ok(Claim::TakenBy(name.clone())),
                None => Err(HandlerError::retryable(anyhow::anyhow!(
                    "the execution of task {id} was neither recorded nor found"
                ))),
            }
        })
        .collect()
}

pub(super) async fn complete(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
) -> Result<(), HandlerError> {
    sqlx::query(
        "UPDATE task_executions SET completed_at = clock_timestamp() WHERE task_id = ANY($1)",
    )
    .bind(task_ids)
    .execute(conn)
    .await
    .context("Failed to mark the task execution completed")?;
    Ok(())
}

fn attempts_column(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_errors() {
        assert_eq!(
            panicked(&"boom").to_string(),
            "the task handler panicked: boom"
        );
        assert_eq!(
            panicked(&String::from("bang")).to_string(),
            "the task handler panicked: bang"
        );
        assert_eq!(
            panicked(&42).to_string(),
            "the task handler panicked: a non-text panic payload"
        );
    }
}

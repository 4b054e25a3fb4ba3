//! What happens to one task message on one level (the main topic or a retry topic): wait for its
//! due time, run it in its execution transaction, and pass a failure on to the next level or the
//! dead-letter topic.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use kafka::{Handler, HandlerError, Message, MessageHeaders, Producer};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::ErasedHandler;
use super::limits::{Limits, Stopping};
use crate::queue::{dlq_topic, retry_topic};
use crate::wire::{Envelope, FailedTask, id_for_coordinates};
use crate::{RetryLevels, TaskContext, TaskError};

/// The `task` label of messages whose type no handler is registered for. Not their
/// `message_type`: whatever arrives on the topic must not create metric series at will.
const UNREGISTERED: &str = "unregistered";

/// Blocking retries wait 100 ms, then 200 ms, 400 ms … at most 5 s.
const BLOCKING_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BLOCKING_BACKOFF: Duration = Duration::from_secs(5);

/// What the consumers of all levels share.
pub(super) struct Shared {
    pub(super) pool: PgPool,
    pub(super) producer: Producer,
    /// The queue's main topic.
    pub(super) topic: String,
    pub(super) retry: RetryLevels,
    pub(super) tasks: HashMap<&'static str, Registered>,
    /// Cancelled when the worker stops: waits end and their messages stay uncommitted.
    pub(super) stop: CancellationToken,
}

/// A task type as the worker runs it: its handler, its limits (shared by all levels) and its
/// metric handles, registered once rather than per message.
pub(super) struct Registered {
    name: &'static str,
    handler: Box<dyn ErasedHandler>,
    limits: Limits,
    metrics: TaskMetrics,
}

impl Registered {
    pub(super) fn new(
        name: &'static str,
        handler: Box<dyn ErasedHandler>,
        limits: Limits,
        retry_levels: usize,
    ) -> Self {
        Self {
            name,
            handler,
            limits,
            metrics: TaskMetrics::new(name, retry_levels),
        }
    }
}

struct TaskMetrics {
    succeeded: metrics::Counter,
    deduplicated: metrics::Counter,
    dead_lettered: metrics::Counter,
    /// Indexed by retry level − 1.
    retried: Vec<metrics::Counter>,
    in_flight: metrics::Gauge,
    age_at_start: metrics::Histogram,
    handler_duration: metrics::Histogram,
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
        }
    }
}

/// Counts a running task in the `tasks_in_flight` gauge until dropped, however the run ends.
struct InFlight<'a>(&'a metrics::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How one run of a task ended.
enum Run {
    Succeeded,
    /// The execution was recorded before: the effect exists, the handler did not run.
    AlreadyDone,
    /// The handler failed; everything it wrote was rolled back.
    Failed(TaskError),
}

/// The consumer handler of one level: 0 is the main topic, `n` is `<topic>.retry.<n>`.
pub(super) struct LevelHandler {
    shared: Arc<Shared>,
    level: usize,
}

impl Handler for LevelHandler {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let envelope = Envelope::read(message);
        // A child of the runtime's `kafka.consume` span, which continues the enqueuer's trace.
        let span = tracing::info_span!(
            "task",
            task_id = envelope.task_id.map(tracing::field::display),
            task = envelope.task_name.as_deref(),
            attempt = envelope.attempts + 1,
            level = self.level,
        );
        self.process(message, envelope).instrument(span).await
    }
}

impl LevelHandler {
    pub(super) fn new(shared: Arc<Shared>, level: usize) -> Self {
        Self { shared, level }
    }

    /// `Ok` acknowledges the message: the task succeeded, was done before, or moved on to a
    /// retry topic or the dead-letter topic. `Err` leaves it uncommitted, to be tried again in
    /// place (see `UNDECIDED_RETRY`).
    async fn process(&self, message: &Message, mut envelope: Envelope) -> Result<(), HandlerError> {
        let registered = envelope
            .task_name
            .as_deref()
            .and_then(|name| self.shared.tasks.get(name));
        let Some(task) = registered else {
            let error = match &envelope.task_name {
                Some(name) => format!("no handler is registered for task type `{name}`"),
                None => "the message has no `message_type` header".to_owned(),
            };
            return self
                .dead_letter(message, &envelope, None, envelope.attempts, error)
                .await;
        };
        let Some(task_id) = envelope.task_id else {
            let error = "the message has no valid task id (`message_id` header)".to_owned();
            return self
                .dead_letter(message, &envelope, Some(task), envelope.attempts, error)
                .await;
        };
        if let Some(due_at) = envelope.due_at {
            self.wait_until(due_at).await?;
        }

        let payload = message.payload.as_deref().unwrap_or_default();
        let enqueued_at = envelope.enqueued_at;
        let blocking_attempts = self.shared.retry.blocking_attempts;
        let mut attempts = envelope.attempts;
        let mut blocking_attempt = 0;
        loop {
            blocking_attempt += 1;
            attempts += 1;
            tracing::Span::current().record("attempt", attempts);
            let error = match self
                .run(task, task_id, attempts, enqueued_at, payload)
                .await?
            {
                Run::Succeeded | Run::AlreadyDone => return Ok(()),
                Run::Failed(error) => error,
            };
            envelope.record_failure(&error.to_string(), Utc::now());
            if error.is_retryable() && blocking_attempt < blocking_attempts {
                let backoff = blocking_backoff(blocking_attempt);
                tracing::warn!(attempt = attempts, ?backoff, error = %error, "task failed; retrying in place");
                self.sleep(backoff).await?;
                continue;
            }
            return self
                .pass_on(message, &envelope, task, task_id, attempts, &error)
                .await;
        }
    }

    /// One run: wait for the limits, then in one transaction record the execution and run the
    /// handler. Success commits both; failure rolls back both.
    async fn run(
        &self,
        task: &Registered,
        task_id: Uuid,
        attempt: u32,
        enqueued_at: Option<DateTime<Utc>>,
        payload: &[u8],
    ) -> Result<Run, HandlerError> {
        let _permit = task
            .limits
            .acquire(&self.shared.stop)
            .await
            .map_err(stopping)?;
        let _in_flight = InFlight::enter(&task.metrics.in_flight);
        if let Some(enqueued_at) = enqueued_at {
            let age = (Utc::now() - enqueued_at).to_std().unwrap_or_default();
            task.metrics.age_at_start.record(age.as_secs_f64());
        }

        let mut tx = self
            .shared
            .pool
            .begin()
            .await
            .context("Failed to begin the task transaction")?;
        match claim(&mut tx, task_id, task.name, attempt).await? {
            Claim::Claimed => {}
            Claim::AlreadyDone => {
                // Nothing was written: the transaction ends with `tx`.
                tracing::info!("task was done before; not running it again");
                task.metrics.deduplicated.increment(1);
                return Ok(Run::AlreadyDone);
            }
            Claim::TakenBy(other) => {
                return Ok(Run::Failed(TaskError::permanent(anyhow::anyhow!(
                    "task id {task_id} was already used by a `{other}` task"
                ))));
            }
        }

        let started = Instant::now();
        let mut ctx = TaskContext {
            task_id,
            attempt,
            conn: &mut tx,
        };
        // A panicking handler is a failed run like any other: caught here, its transaction rolls
        // back and the task moves on, instead of leaving its partition stuck behind it.
        let result = AssertUnwindSafe(task.handler.handle(payload, &mut ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))));
        task.metrics
            .handler_duration
            .record(started.elapsed().as_secs_f64());

        match result {
            Ok(()) => {
                complete(&mut tx, task_id).await?;
                tx.commit()
                    .await
                    .context("Failed to commit the task transaction")?;
                task.metrics.succeeded.increment(1);
                tracing::debug!("task succeeded");
                Ok(Run::Succeeded)
            }
            Err(error) => {
                // Undo what the handler wrote, the execution record included, so that the next
                // attempt runs. A rollback that fails is no worse: the transaction ends with
                // its connection either way.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "failed to roll back a failed task");
                }
                Ok(Run::Failed(error))
            }
        }
    }

    /// After the attempts on this level: a retryable failure goes to the next retry level while
    /// there is one, anything else to the dead-letter topic.
    async fn pass_on(
        &self,
        message: &Message,
        envelope: &Envelope,
        task: &Registered,
        task_id: Uuid,
        attempts: u32,
        error: &TaskError,
    ) -> Result<(), HandlerError> {
        let next_level = self.level + 1;
        let delays = &self.shared.retry.delays;
        if !error.is_retryable() || next_level > delays.len() {
            return self
                .dead_letter(message, envelope, Some(task), attempts, error.to_string())
                .await;
        }
        let now = Utc::now();
        let delay = delays[next_level - 1];
        let due_at = now + delay;
        let failed = FailedTask {
            task_id,
            task_name: task.name,
            envelope,
            attempts,
            error: error.to_string(),
            failed_at: now,
        };
        self.publish(
            &retry_topic(&self.shared.topic, next_level),
            message,
            failed.retry_headers(due_at),
        )
        .await?;
        task.metrics.retried[next_level - 1].increment(1);
        tracing::warn!(attempt = attempts, level = next_level, ?delay, error = %error, "task failed; retrying later");
        Ok(())
    }

    /// Publishes the message as it arrived, with its history in the headers, to the dead-letter
    /// topic, where the worker's index picks it up.
    async fn dead_letter(
        &self,
        message: &Message,
        envelope: &Envelope,
        task: Option<&Registered>,
        attempts: u32,
        error: String,
    ) -> Result<(), HandlerError> {
        let task_id = envelope.task_id.unwrap_or_else(|| {
            id_for_coordinates(&message.topic, message.partition, message.offset)
        });
        let task_name = envelope.task_name.as_deref().unwrap_or_default();
        let failed = FailedTask {
            task_id,
            task_name,
            envelope,
            attempts,
            error,
            failed_at: Utc::now(),
        };
        let headers = failed.dead_letter_headers(message);
        self.publish(&dlq_topic(&self.shared.topic), message, headers)
            .await?;
        match task {
            Some(task) => task.metrics.dead_lettered.increment(1),
            None => {
                metrics::counter!("tasks_dead_lettered_total", "task" => UNREGISTERED).increment(1);
            }
        }
        tracing::error!(%task_id, task = task_name, attempts, error = %failed.error, "task dead-lettered");
        Ok(())
    }

    /// Key and payload go on unchanged, so the task keeps its partition key and exact bytes.
    async fn publish(
        &self,
        topic: &str,
        message: &Message,
        headers: MessageHeaders,
    ) -> Result<(), HandlerError> {
        self.shared
            .producer
            .publish_bytes(
                topic,
                message.key.as_deref(),
                message.payload.as_deref(),
                headers,
            )
            .await
            .map_err(HandlerError::retryable)?;
        Ok(())
    }

    /// Holds the message until its due time. The consumer keeps polling on its own thread
    /// meanwhile, so the member stays in its group; messages behind this one wait in memory,
    /// and when a partition has too many of them the runtime pauses it until they drain. That
    /// is how a retry level pauses and resumes its partitions.
    async fn wait_until(&self, due_at: DateTime<Utc>) -> Result<(), HandlerError> {
        match (due_at - Utc::now()).to_std() {
            Ok(wait) => self.sleep(wait).await,
            // Due already (a negative difference does not convert).
            Err(_) => Ok(()),
        }
    }

    async fn sleep(&self, duration: Duration) -> Result<(), HandlerError> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.shared.stop.cancelled() => Err(stopping(Stopping)),
        }
    }
}

/// The message stays uncommitted and comes again after the restart. The runtime sees a
/// retryable error, and as it is stopping too it abandons the message instead of retrying.
fn stopping(_: Stopping) -> HandlerError {
    HandlerError::retryable(anyhow::anyhow!(
        "the worker is stopping; the task is left uncommitted and comes again"
    ))
}

fn blocking_backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    BLOCKING_BACKOFF
        .saturating_mul(factor)
        .min(MAX_BLOCKING_BACKOFF)
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    anyhow::anyhow!("the task handler panicked: {text}")
}

enum Claim {
    /// This run owns the execution; it commits or rolls back with the handler's writes.
    Claimed,
    AlreadyDone,
    /// The id belongs to an execution of another task type.
    TakenBy(String),
}

/// Records the execution, or finds it recorded before. A concurrent run of the same task id
/// (a duplicate on another partition) blocks on the primary key until this transaction ends,
/// then finds the row, or claims it if this one rolled back.
async fn claim(
    conn: &mut PgConnection,
    task_id: Uuid,
    task_name: &str,
    attempt: u32,
) -> Result<Claim, HandlerError> {
    let claimed = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO task_executions (task_id, task_name, attempts) VALUES ($1, $2, $3)
         ON CONFLICT (task_id) DO NOTHING
         RETURNING task_id",
    )
    .bind(task_id)
    .bind(task_name)
    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
    .fetch_optional(&mut *conn)
    .await
    .context("Failed to record the task execution")?;
    if claimed.is_some() {
        return Ok(Claim::Claimed);
    }
    // A second statement sees rows committed after the insert's snapshot, such as the one the
    // insert waited for.
    let recorded: String =
        sqlx::query_scalar("SELECT task_name FROM task_executions WHERE task_id = $1")
            .bind(task_id)
            .fetch_one(&mut *conn)
            .await
            .context("Failed to read the recorded task execution")?;
    Ok(if recorded == task_name {
        Claim::AlreadyDone
    } else {
        Claim::TakenBy(recorded)
    })
}

async fn complete(conn: &mut PgConnection, task_id: Uuid) -> Result<(), HandlerError> {
    sqlx::query("UPDATE task_executions SET completed_at = clock_timestamp() WHERE task_id = $1")
        .bind(task_id)
        .execute(conn)
        .await
        .context("Failed to mark the task execution completed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_backoff_doubles_up_to_the_cap() {
        assert_eq!(blocking_backoff(1), Duration::from_millis(100));
        assert_eq!(blocking_backoff(2), Duration::from_millis(200));
        assert_eq!(blocking_backoff(6), Duration::from_millis(3200));
        assert_eq!(blocking_backoff(7), Duration::from_secs(5));
        assert_eq!(blocking_backoff(u32::MAX), Duration::from_secs(5));
    }

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

//! What happens to one task message on one level (the main topic or a retry topic): wait for its
//! due time, run it in its execution transaction, and pass a failure on to the next level or the
//! dead-letter topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kafka::{Handler, HandlerError, Message, MessageHeaders, Producer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use super::batch::Batcher;
use super::execution::{run_alone, run_call_out};
use super::limits::Stopping;
use super::registered::{HandlerKind, Registered, Run};
use crate::queue::{dlq_topic, retry_topic};
use crate::wire::{Envelope, FailedTask, id_for_coordinates};
use crate::{RetryLevels, TaskError};

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
    pub(super) tasks: HashMap<&'static str, TaskType>,
    /// Cancelled when the worker stops: waits end and their messages stay uncommitted.
    pub(super) stop: CancellationToken,
}

/// A registered task type and, if it opted into batching, the batcher that runs its tasks in
/// shared transactions.
pub(super) struct TaskType {
    pub(super) task: Registered,
    pub(super) batcher: Option<Batcher>,
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
        let Some(task_type) = registered else {
            let error = match &envelope.task_name {
                Some(name) => format!("no handler is registered for task type `{name}`"),
                None => "the message has no `message_type` header".to_owned(),
            };
            return self
                .dead_letter(message, &envelope, None, envelope.attempts, error)
                .await;
        };
        let task = &task_type.task;
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
        let blocking_attempts = self.shared.retry.blocking_attempts;
        let mut attempts = envelope.attempts;
        let mut blocking_attempt = 0;
        loop {
            blocking_attempt += 1;
            attempts += 1;
            tracing::Span::current().record("attempt", attempts);
            let error = match self
                .run(task_type, task_id, attempts, &envelope, payload)
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

    /// One run: wait for the limits, then record the execution and run the handler in one
    /// transaction, the task's own or its batch's. Success commits both; failure rolls back both.
    /// A call-out task makes its call first, before its transaction, within the same limits.
    async fn run(
        &self,
        task_type: &TaskType,
        task_id: Uuid,
        attempt: u32,
        envelope: &Envelope,
        payload: &[u8],
    ) -> Result<Run, HandlerError> {
        let task = &task_type.task;
        let _permit = task
            .limits
            .acquire(&self.shared.stop)
            .await
            .map_err(stopping)?;
        let _in_flight = InFlight::enter(&task.metrics.in_flight);
        if let Some(enqueued_at) = envelope.enqueued_at {
            let age = (Utc::now() - enqueued_at).to_std().unwrap_or_default();
            task.metrics.age_at_start.record(age.as_secs_f64());
        }
        let pool = &self.shared.pool;
        if let HandlerKind::CallOut(handler) = &task.handler {
            return run_call_out(
                pool,
                task,
                handler.as_ref(),
                task_id,
                attempt,
                envelope.scheduled_for,
                payload,
            )
            .await;
        }
        match &task_type.batcher {
            Some(batcher) => {
                batcher
                    .run(
                        pool,
                        task,
                        task_id,
                        attempt,
                        envelope.scheduled_for,
                        payload,
                    )
                    .await
            }
            None => {
                run_alone(
                    pool,
                    task,
                    task_id,
                    attempt,
                    envelope.scheduled_for,
                    payload,
                )
                .await
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
}

//! The enqueuing side: [`TaskQueue`], and the topics of a queue.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use kafka::{Producer, TopicSpec};
use outbox::{Outbox, OutboxMessage};
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

use crate::Task;
use crate::wire;

/// Non-blocking retry levels: a task that failed on the main topic goes to `<topic>.retry.1`
/// and runs again `delays[0]` later; one that failed there goes to `<topic>.retry.2` after
/// `delays[1]`, and so on. After the last level it goes to `<topic>.dlq`.
///
/// `blocking_attempts` is how often a task is tried *in place* on each level before it moves
/// on (with a short backoff between: 100 ms, doubling, at most 5 s). Those retries keep the
/// order of the task's key but hold up the tasks of that key behind it; 1 means none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryLevels {
    pub delays: Vec<Duration>,
    pub blocking_attempts: u32,
}

impl Default for RetryLevels {
    /// 1 s, 10 s, 60 s; no blocking retries.
    fn default() -> Self {
        Self {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_mins(1),
            ],
            blocking_attempts: 1,
        }
    }
}

impl RetryLevels {
    /// How often a task runs at most before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        let levels = u32::try_from(self.delays.len()).unwrap_or(u32::MAX);
        levels
            .saturating_add(1)
            .saturating_mul(self.blocking_attempts)
    }
}

/// `<topic>.retry.<level>`, level 1-based.
pub fn retry_topic(topic: &str, level: usize) -> String {
    format!("{topic}.retry.{level}")
}

/// `<topic>.dlq`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// The topics a queue needs (main, each retry level, dlq), for `Producer::ensure_topics`.
/// [`crate::Worker::start`] provisions them itself.
pub fn queue_topics(topic: &str, retry: &RetryLevels) -> Vec<TopicSpec> {
    std::iter::once(topic.to_owned())
        .chain((1..=retry.delays.len()).map(|level| retry_topic(topic, level)))
        .chain(std::iter::once(dlq_topic(topic)))
        .map(TopicSpec::new)
        .collect()
}

/// Where tasks of one queue go: the main topic plus `<topic>.retry.<n>` and `<topic>.dlq`.
///
/// Cheap to clone. A service that only enqueues needs nothing else: the service that owns the
/// queue runs the [`crate::Worker`].
#[derive(Debug, Clone)]
pub struct TaskQueue {
    topic: String,
    producer: Producer,
}

impl TaskQueue {
    pub fn new(topic: impl Into<String>, producer: Producer) -> Self {
        Self {
            topic: topic.into(),
            producer,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes now and returns the task id once the broker acknowledged the task.
    ///
    /// Use it where losing the task on a crash right after the caller's own commit is
    /// acceptable, or where there is no transaction; otherwise use [`Self::enqueue_in`].
    pub async fn enqueue<T: Task>(&self, task: &T) -> anyhow::Result<Uuid> {
        let task_id = task.task_id().unwrap_or_else(Uuid::now_v7);
        let payload = serde_json::to_vec(task)
            .with_context(|| format!("Failed to serialise a {} task", T::NAME))?;
        self.publish(
            task_id,
            T::NAME,
            Some(&key(task, task_id)),
            Some(&payload),
            None,
        )
        .await?;
        enqueued(T::NAME);
        Ok(task_id)
    }

    /// Records the task in the caller's transaction through the outbox (`crates/outbox`): it is
    /// queued if and only if that transaction commits. The service must run an
    /// `outbox::OutboxRelay`, which publishes it after the commit.
    ///
    /// A task id the outbox holds already (the task was enqueued before, and its row is still
    /// within the outbox's retention) is not recorded again: the call returns the id and the
    /// caller's transaction stays usable. That costs a savepoint around the insert.
    pub async fn enqueue_in<T: Task>(
        &self,
        conn: &mut PgConnection,
        task: &T,
    ) -> anyhow::Result<Uuid> {
        let task_id = task.task_id().unwrap_or_else(Uuid::now_v7);
        let message = OutboxMessage::json(&self.topic, key(task, task_id), T::NAME, task)?;
        record_in(conn, message, task_id, T::NAME, None).await?;
        Ok(task_id)
    }

    /// [`Self::enqueue_in`] for a task known only by its parts: for callers that store tasks of
    /// any type and enqueue them later, such as the task scheduler (`crates/task-scheduler`).
    /// An associated function, because recording needs no producer: `topic` is the queue's main
    /// topic, `task_name` its `message_type`, `payload` the task's JSON.
    ///
    /// The message is the one `enqueue_in` records for a typed task with the same parts: key
    /// `ordering_key` or else the task id, the same headers, and the same handling of a task id
    /// the outbox holds already (not recorded again, the caller's transaction stays usable).
    ///
    /// `scheduled_for`: the time the schedule that fires the task was due, which the handler
    /// reads as [`crate::TaskContext::scheduled_for`] (header `task_scheduled_for`).
    pub async fn enqueue_raw_in(
        conn: &mut PgConnection,
        topic: &str,
        task_name: &str,
        task_id: Uuid,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Uuid> {
        let key = ordering_key.map_or_else(|| task_id.to_string(), str::to_owned);
        let message = OutboxMessage::json(topic, key, task_name, payload)?;
        record_in(conn, message, task_id, task_name, scheduled_for).await?;
        Ok(task_id)
    }

    /// The outbox message [`Self::enqueue_raw_in`] records for these parts, built but not
    /// recorded: for a caller that records many tasks in one statement with
    /// [`Self::enqueue_raw_many_in`], such as the task scheduler firing a batch of schedules.
    ///
    /// The same message as `enqueue_raw_in`'s: key `ordering_key` or else the task id,
    /// `message_type` the task name, `message_id` the task id, the task headers.
    pub fn raw_message(
        topic: &str,
        task_name: &str,
        task_id: Uuid,
        ordering_key: Option<&str>,
        payload: &serde_json::Value,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> anyhow::Result<OutboxMessage> {
        let key = ordering_key.map_or_else(|| task_id.to_string(), str::to_owned);
        let mut message = OutboxMessage::json(topic, key, task_name, payload)?.message_id(task_id);
        for (name, value) in
            wire::enqueue_headers(task_id, task_name, Utc::now(), scheduled_for).extra
        {
            message = message.header(name, value);
        }
        Ok(message)
    }

    /// Records tasks made by [`Self::raw_message`] in the caller's transaction, in one statement
    /// (`outbox::Outbox::record_many`), and returns the ids of those it recorded.
    ///
    /// A task id the outbox holds already is skipped, as [`Self::enqueue_raw_in`] skips it, but
    /// without a savepoint per task: the batch costs one round trip however many tasks it holds.
    ///
    /// # Errors
    /// An invalid message (`outbox::InvalidMessage`, e.g. an empty topic) fails the whole call
    /// before anything is written; a database error leaves the transaction for the caller to
    /// roll back, or to roll back to a savepoint taken before the call and record the tasks one
    /// by one, to find the one that fails.
    pub async fn enqueue_raw_many_in(
        conn: &mut PgConnection,
        messages: &[OutboxMessage],
    ) -> anyhow::Result<Vec<Uuid>> {
        let recorded = Outbox::record_many(conn, messages).await?;
        if recorded.len() < messages.len() {
            tracing::debug!(
                skipped = messages.len() - recorded.len(),
                "tasks already in the outbox; not enqueued again"
            );
        }
        // Counted per task name rather than per task: a batch usually holds one or two names.
        let mut recorded_ids: std::collections::HashSet<Uuid> = recorded.iter().copied().collect();
        let mut counts: Vec<(&str, u64)> = Vec::new();
        // `remove`: an id given twice was recorded, and is counted, once.
        for message in messages
            .iter()
            .filter(|message| recorded_ids.remove(&message.message_id))
        {
            match counts
                .iter_mut()
                .find(|(name, _)| *name == message.message_type)
            {
                Some((_, count)) => *count += 1,
                None => counts.push((&message.message_type, 1)),
            }
        }
        for (task_name, count) in counts {
            metrics::counter!("tasks_enqueued_total", "task" => task_name.to_owned())
                .increment(count);
        }
        Ok(recorded)
    }

    /// Publishes a task to the main topic as a new enqueue (attempts start at zero); also used
    /// to replay a dead letter.
    pub(crate) async fn publish(
        &self,
        task_id: Uuid,
        task_name: &str,
        key: Option<&str>,
        payload: Option<&[u8]>,
        scheduled_for: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        self.producer
            .publish_bytes(
                &self.topic,
                key.map(str::as_bytes),
                payload,
                wire::enqueue_headers(task_id, task_name, Utc::now(), scheduled_for),
            )
            .await
            .with_context(|| format!("Failed to enqueue {task_name} task {task_id}"))?;
        Ok(())
    }
}

/// Records a task message in the outbox with the task headers, unless its id is there already.
async fn record_in(
    conn: &mut PgConnection,
    message: OutboxMessage,
    task_id: Uuid,
    task_name: &str,
    scheduled_for: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let mut message = message.message_id(task_id);
    // The relay adds `message_id` and `message_type`; the task headers are ours to add.
    for (name, value) in wire::enqueue_headers(task_id, task_name, Utc::now(), scheduled_for).extra
    {
        message = message.header(name, value);
    }
    // Inside a transaction `begin` is a savepoint: a duplicate id rolls back only the insert,
    // where it would otherwise abort the caller's whole transaction.
    let mut savepoint = conn
        .begin()
        .await
        .context("Failed to open a savepoint to enqueue a task")?;
    match Outbox::record(&mut savepoint, message).await {
        Ok(_) => {
            savepoint
                .commit()
                .await
                .context("Failed to release the savepoint of an enqueued task")?;
            enqueued(task_name);
        }
        Err(error) if is_unique_violation(&error) => {
            savepoint
                .rollback()
                .await
                .context("Failed to roll back to the savepoint of a duplicate task")?;
            tracing::debug!(%task_id, task = task_name, "task already in the outbox; not enqueued again");
        }
        Err(error) => return Err(error),
    }
    Ok(())
}

/// The Kafka key: the ordering key if the task has one, else the task id, which spreads tasks
/// over the partitions and keeps the copies of a duplicated task together.
fn key<T: Task>(task: &T, task_id: Uuid) -> String {
    task.ordering_key().unwrap_or_else(|| task_id.to_string())
}

fn enqueued(task_name: &str) {
    metrics::counter!("tasks_enqueued_total", "task" => task_name.to_owned()).increment(1);
}

/// Whether the outbox refused the row because its message id (the task id) exists: the only
/// unique constraint an insert into the outbox can violate.
fn is_unique_violation(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<sqlx::Error>()
        .and_then(sqlx::Error::as_database_error)
        .is_some_and(sqlx::error::DatabaseError::is_unique_violation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_has_a_topic_per_level_and_a_dead_letter_topic() {
        let names: Vec<String> = queue_topics("notifications.tasks", &RetryLevels::default())
            .into_iter()
            .map(|spec| spec.name)
            .collect();

        assert_eq!(
            names,
            [
                "notifications.tasks",
                "notifications.tasks.retry.1",
                "notifications.tasks.retry.2",
                "notifications.tasks.retry.3",
                "notifications.tasks.dlq",
            ]
        );
    }

    #[test]
    fn max_attempts_counts_blocking_attempts_on_every_level() {
        assert_eq!(RetryLevels::default().max_attempts(), 4);
        let levels = RetryLevels {
            delays: vec![Duration::from_secs(1); 2],
            blocking_attempts: 3,
        };
        assert_eq!(levels.max_attempts(), 9);
    }
}

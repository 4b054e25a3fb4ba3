//! The dead-letter topic, indexed in the `dead_letters` table by the worker so that it can be
//! listed, replayed and dropped.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use kafka::{Handler, HandlerError, Message};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::TaskQueue;
use crate::wire::{Envelope, header, id_for_coordinates, parse_time};

/// A task that failed for good, as listed by [`DeadLetters::list`].
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub task_id: Uuid,
    /// The `message_type`; empty if the message had none.
    pub task_name: String,
    /// Runs of the handler: 0 for a task that never ran (unknown type, no task id).
    pub attempts: u32,
    pub first_error: String,
    pub last_error: String,
    /// Where the message that failed for good was consumed: the main topic, or the last retry
    /// topic it reached.
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    pub first_failed_at: DateTime<Utc>,
    pub dead_lettered_at: DateTime<Utc>,
    /// The task as JSON; a payload that is not JSON shows as a string (lossy UTF-8), a missing
    /// one as `null`. A replay publishes the exact original bytes either way.
    pub payload: serde_json::Value,
}

/// A dead letter's task name, key, payload and `task_scheduled_for` header.
type ToReplay = (String, Option<String>, Option<Vec<u8>>, Option<String>);

/// The dead letters of one queue: list them, replay them after a fix, or drop them.
///
/// The worker's dead-letter consumer fills the table; this only reads and updates it, so it
/// works in any process with the database, such as an admin endpoint.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    pool: PgPool,
    queue: TaskQueue,
}

impl DeadLetters {
    pub fn new(pool: PgPool, queue: TaskQueue) -> Self {
        Self { pool, queue }
    }

    /// Dead letters not yet replayed or dropped, oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT task_id, task_name, attempts, first_error, last_error, original_topic,
                    original_partition, original_offset, first_failed_at, dead_lettered_at,
                    payload, raw_payload
             FROM dead_letters
             WHERE queue = $1 AND state = 'dead'
             ORDER BY dead_lettered_at, task_id",
        )
        .bind(self.queue.topic())
        .fetch_all(&self.pool)
        .await
        .context("Failed to list dead letters")?;
        Ok(rows.into_iter().map(Row::into_dead_letter).collect())
    }

    /// Enqueues the dead letter again on the main topic, as it arrived (same task id, key and
    /// payload bytes) with its attempts reset, and marks it replayed. `false`: there is no such
    /// dead letter, or it was replayed or dropped already.
    ///
    /// The row stays locked until the task is published, so concurrent replays of one task
    /// publish it once. Should the process die after publishing and before marking, the dead
    /// letter stays listed; replaying it again is harmless, because a task that succeeded
    /// meanwhile is recognised by its execution record and not run twice.
    pub async fn replay(&self, task_id: Uuid) -> anyhow::Result<bool> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a dead-letter replay")?;
        // The replay starts the task over, but a scheduled task keeps the time it was due for.
        let letter: Option<ToReplay> = sqlx::query_as(
            "SELECT task_name, key, raw_payload,
                        (SELECT h->>1 FROM jsonb_array_elements(headers) h
                         WHERE h->>0 = $3 LIMIT 1)
                 FROM dead_letters
                 WHERE queue = $1 AND task_id = $2 AND state = 'dead'
                 FOR UPDATE",
        )
        .bind(self.queue.topic())
        .bind(task_id)
        .bind(crate::header::TASK_SCHEDULED_FOR)
        .fetch_optional(&mut *tx)
        .await
        .context("Failed to read the dead letter to replay")?;
        let Some((task_name, key, payload, scheduled_for)) = letter else {
            return Ok(false);
        };
        let scheduled_for = scheduled_for.as_deref().and_then(crate::wire::parse_time);
        self.queue
            .publish(
                task_id,
                &task_name,
                key.as_deref(),
                payload.as_deref(),
                scheduled_for,
            )
            .await?;
        set_state(&mut tx, self.queue.topic(), task_id, "replayed").await?;
        tx.commit()
            .await
            .context("Failed to mark the dead letter replayed")?;
        metrics::counter!("tasks_replayed_total", "task" => task_name.clone()).increment(1);
        tracing::info!(%task_id, task = task_name, queue = self.queue.topic(), "dead letter replayed");
        Ok(true)
    }

    /// Replays every dead letter listed now, oldest first, and returns how many. Dead letters
    /// that arrive meanwhile (a replayed task that fails again, say) wait for the next call.
    pub async fn replay_all(&self) -> anyhow::Result<usize> {
        let task_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT task_id FROM dead_letters
             WHERE queue = $1 AND state = 'dead'
             ORDER BY dead_lettered_at, task_id",
        )
        .bind(self.queue.topic())
        .fetch_all(&self.pool)
        .await
        .context("Failed to list the dead letters to replay")?;
        let mut replayed = 0;
        for task_id in task_ids {
            let done = self.replay(task_id).await.with_context(|| {
                format!("Replayed {replayed} dead letters, then failed on {task_id}")
            })?;
            if done {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    /// Marks the dead letter dropped: it stays in the table for the record but is no longer
    /// listed or replayed. `false`: there is no such dead letter, or it was replayed or dropped
    /// already.
    pub async fn drop_one(&self, task_id: Uuid) -> anyhow::Result<bool> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to get a connection to drop a dead letter")?;
        let dropped = set_state(&mut conn, self.queue.topic(), task_id, "dropped").await?;
        if dropped {
            tracing::info!(%task_id, queue = self.queue.topic(), "dead letter dropped");
        }
        Ok(dropped)
    }
}

/// Moves a listed dead letter to `state`; `false` if there was none.
async fn set_state(
    conn: &mut sqlx::PgConnection,
    queue: &str,
    task_id: Uuid,
    state: &str,
) -> anyhow::Result<bool> {
    let updated = sqlx::query(
        "UPDATE dead_letters SET state = $3, state_changed_at = now()
         WHERE queue = $1 AND task_id = $2 AND state = 'dead'",
    )
    .bind(queue)
    .bind(task_id)
    .bind(state)
    .execute(conn)
    .await
    .with_context(|| format!("Failed to mark dead letter {task_id} {state}"))?;
    Ok(updated.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct Row {
    task_id: Uuid,
    task_name: String,
    attempts: i32,
    first_error: String,
    last_error: String,
    original_topic: String,
    original_partition: i32,
    original_offset: i64,
    first_failed_at: DateTime<Utc>,
    dead_lettered_at: DateTime<Utc>,
    payload: Option<serde_json::Value>,
    raw_payload: Option<Vec<u8>>,
}

impl Row {
    fn into_dead_letter(self) -> DeadLetter {
        let payload = match (self.payload, self.raw_payload) {
            (Some(json), _) => json,
            (None, Some(bytes)) => {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            (None, None) => serde_json::Value::Null,
        };
        DeadLetter {
            task_id: self.task_id,
            task_name: self.task_name,
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            first_error: self.first_error,
            last_error: self.last_error,
            original_topic: self.original_topic,
            original_partition: self.original_partition,
            original_offset: self.original_offset,
            first_failed_at: self.first_failed_at,
            dead_lettered_at: self.dead_lettered_at,
            payload,
        }
    }
}

/// The worker's consumer of `<topic>.dlq`: stores every dead letter in `dead_letters`.
///
/// Every message gets a row, also one that lacks the task queue's headers (published by hand,
/// say): what is missing is taken from the message itself. A database error leaves the message
/// uncommitted and the runtime tries again, so nothing on the topic goes unlisted.
pub(crate) struct DeadLetterIndex {
    pool: PgPool,
    queue: String,
}

impl DeadLetterIndex {
    pub(crate) fn new(pool: PgPool, queue: &str) -> Self {
        Self {
            pool,
            queue: queue.to_owned(),
        }
    }
}

impl Handler for DeadLetterIndex {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let envelope = Envelope::read(message);
        let dead_lettered_at = message
            .header_str(header::DLQ_DEAD_LETTERED_AT)
            .and_then(parse_time)
            .or(message.timestamp)
            .unwrap_or_else(Utc::now);
        let task_id = envelope.task_id.unwrap_or_else(|| {
            id_for_coordinates(&message.topic, message.partition, message.offset)
        });
        let attempts: u32 = parsed(message, header::DLQ_ATTEMPTS).unwrap_or(envelope.attempts);
        let headers: Vec<(String, String)> = message
            .headers
            .iter()
            .map(|(name, value)| (text(name.as_bytes()), text(value)))
            .collect();
        // `jsonb` cannot hold a NUL character either: such a payload is kept as raw bytes only.
        let payload = message
            .payload
            .as_deref()
            .filter(|bytes| !bytes.windows(6).any(|w| w == br"\u0000"))
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(bytes).ok());

        // A row that is listed already stays as it is (this is the same dead letter delivered
        // again). One that was replayed or dropped is replaced: the task failed again. A replay
        // holds the row locked until it marks it, so this waits for that and then sees it.
        sqlx::query(
            "INSERT INTO dead_letters (queue, task_id, task_name, key, payload, raw_payload,
                 headers, attempts, first_error, last_error, original_topic, original_partition,
                 original_offset, first_failed_at, dead_lettered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (queue, task_id) DO UPDATE SET
                 task_name = EXCLUDED.task_name, key = EXCLUDED.key, payload = EXCLUDED.payload,
                 raw_payload = EXCLUDED.raw_payload, headers = EXCLUDED.headers,
                 attempts = EXCLUDED.attempts, first_error = EXCLUDED.first_error,
                 last_error = EXCLUDED.last_error, original_topic = EXCLUDED.original_topic,
                 original_partition = EXCLUDED.original_partition,
                 original_offset = EXCLUDED.original_offset,
                 first_failed_at = EXCLUDED.first_failed_at,
                 dead_lettered_at = EXCLUDED.dead_lettered_at,
                 state = 'dead', state_changed_at = NULL, indexed_at = now()
             WHERE dead_letters.state <> 'dead'",
        )
        .bind(&self.queue)
        .bind(task_id)
        .bind(text(envelope.task_name.unwrap_or_default().as_bytes()))
        .bind(message.key.as_deref().map(text))
        .bind(payload)
        .bind(message.payload.as_deref())
        .bind(Json(headers))
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(text(envelope.first_error.unwrap_or_default().as_bytes()))
        .bind(text(envelope.last_error.unwrap_or_default().as_bytes()))
        .bind(
            message
                .header_str(header::DLQ_ORIGINAL_TOPIC)
                .unwrap_or(&message.topic),
        )
        .bind(parsed(message, header::DLQ_ORIGINAL_PARTITION).unwrap_or(message.partition))
        .bind(parsed(message, header::DLQ_ORIGINAL_OFFSET).unwrap_or(message.offset))
        .bind(envelope.first_failed_at.unwrap_or(dead_lettered_at))
        .bind(dead_lettered_at)
        .execute(&self.pool)
        .await
        .context("Failed to index a dead letter")?;
        Ok(())
    }
}

/// Bytes from a message as text PostgreSQL accepts: invalid UTF-8 and NUL (which `text` and
/// `jsonb` cannot hold) replaced, so that a dead letter with a hostile key or header is indexed
/// rather than refused for good.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\0', "\u{fffd}")
}

/// A header that holds a number, if it is there and parses.
fn parsed<T: std::str::FromStr>(message: &Message, name: &str) -> Option<T> {
    message
        .header_str(name)
        .and_then(|value| value.parse().ok())
}

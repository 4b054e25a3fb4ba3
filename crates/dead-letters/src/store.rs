//! The `consumer_dead_letters` table: the [`SetAside`] failure policy writes it, the
//! [`DeadLetterStore`] lists, replays and drops what is in it.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use kafka::{Failure, FailurePolicy, Handler, HandlerError, Message};
use platform::http::Page;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The longest error text stored: enough for any error chain, while a handler that puts a whole
/// payload into its error cannot bloat every row.
const MAX_ERROR_CHARS: usize = 4096;
/// Payloads up to this size are shown in listings; larger ones only by their size, so a page of
/// dead letters stays small whatever the broker's message size.
const MAX_SHOWN_PAYLOAD: usize = 16 * 1024;

/// The columns a [`Row`] reads, as a macro so that the queries stay static strings.
macro_rules! columns {
    () => {
        "id, consumer, topic, kafka_partition, kafka_offset, key, payload, header_names,
         header_values, message_timestamp, error, attempts, replays, state, set_aside_at,
         state_changed_at"
    };
}

type ReplayFuture<'a> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

/// A consumer's handler, with its type erased so that one store can hold many.
trait Replay: Send + Sync {
    fn replay<'a>(&'a self, message: &'a Message) -> ReplayFuture<'a>;
}

impl<H: Handler> Replay for H {
    fn replay<'a>(&'a self, message: &'a Message) -> ReplayFuture<'a> {
        Box::pin(self.handle(message))
    }
}

/// The messages that this service's consumers set aside: list them, replay them after a fix,
/// or drop them. Cheap to clone; one per service.
///
/// A replay runs the consumer's own handler again on the stored message, in this process, so
/// it needs that consumer to have been registered here through [`Self::set_aside`] (every
/// replica of the service does so at start). Replaying does not publish anything: the message
/// may come from another service's topic, whose other readers must not see it again.
#[derive(Clone)]
pub struct DeadLetterStore {
    pool: PgPool,
    handlers: Arc<RwLock<HashMap<String, Arc<dyn Replay>>>>,
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore")
            .field("consumers", &self.consumers())
            .finish_non_exhaustive()
    }
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Set aside and listed: waiting for a replay or a drop.
    Dead,
    /// Replayed successfully; kept for the record.
    Replayed,
    /// Given up by an operator; kept for the record.
    Dropped,
}

/// A message set aside, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: Uuid,
    pub consumer: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The key as text (invalid UTF-8 replaced), `null` for none.
    pub key: Option<String>,
    /// The `message_type` header, if any.
    pub message_type: Option<String>,
    /// The headers as text (invalid UTF-8 replaced; of a repeated name, the last).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The payload as JSON; a payload that is not JSON shows as a string (lossy UTF-8), a
    /// tombstone and a payload over 16 KiB as `null` (see `payload_size`). A replay uses the
    /// exact original bytes either way.
    pub payload: serde_json::Value,
    /// The payload's size in bytes; `null` for a tombstone.
    pub payload_size: Option<usize>,
    pub message_timestamp: Option<DateTime<Utc>>,
    /// Why it was set aside, or why its last replay failed.
    pub error: String,
    /// Runs of the handler before it was set aside.
    pub attempts: i32,
    /// Replays tried.
    pub replays: i32,
    pub state: State,
    pub set_aside_at: DateTime<Utc>,
    pub state_changed_at: Option<DateTime<Utc>>,
}

/// What a replay came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The handler succeeded; the dead letter is marked replayed.
    Replayed,
    /// No listed dead letter has this id (unknown, or replayed or dropped already).
    NotFound,
    /// Its consumer does not run in this process, so there is no handler to run.
    NoHandler(String),
    /// The handler failed again; the dead letter stays listed with this error.
    Failed(String),
}

/// What [`DeadLetterStore::replay_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Replayed {
    pub replayed: usize,
    /// Dead letters whose handler failed again; they stay listed.
    pub failed: usize,
}

impl DeadLetterStore {
    /// A store over the service's pool; [`crate::migrate`] must have run.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            handlers: Arc::default(),
        }
    }

    /// The failure policy of `consumer` (a name unique in the service, e.g.
    /// `orders.catalog_products`), whose messages `handler` handles. The handler is kept for
    /// replays.
    pub fn set_aside<H: Handler>(&self, consumer: impl Into<String>, handler: Arc<H>) -> SetAside {
        let consumer = consumer.into();
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(consumer.clone(), handler);
        SetAside {
            pool: self.pool.clone(),
            consumer,
        }
    }

    /// The consumers registered in this process.
    pub fn consumers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Listed dead letters (neither replayed nor dropped), oldest first: those of `consumer`,
    /// or all; after the cursor `after`; at most `limit` (capped at [`crate::MAX_PAGE`]).
    pub async fn list(
        &self,
        consumer: Option<&str>,
        after: Option<Uuid>,
        limit: u32,
    ) -> anyhow::Result<Page<DeadLetter>> {
        let limit = limit.clamp(1, crate::MAX_PAGE);
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM consumer_dead_letters
             WHERE state = 'dead' AND ($1::text IS NULL OR consumer = $1)
               AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id
             LIMIT $3"
        ))
        .bind(consumer)
        .bind(after)
        // One more than asked tells whether another page follows.
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .context("Failed to list dead letters")?;
        let items = rows.into_iter().map(Row::into_dead_letter).collect();
        Ok(Page::from_overfetched(items, limit as usize, |letter| {
            letter.id.to_string()
        }))
    }

    /// One dead letter, in whatever state.
    pub async fn get(&self, id: Uuid) -> anyhow::Result<Option<DeadLetter>> {
        let row: Option<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM consumer_dead_letters WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .context("Failed to read a dead letter")?;
        Ok(row.map(Row::into_dead_letter))
    }

    /// Runs the consumer's handler once more on the message as it arrived (same key, headers
    /// and bytes). On success the dead letter is marked replayed; on failure it stays listed
    /// with the new error. Handlers are idempotent, so a message that was meanwhile handled
    /// some other way is harmless to replay.
    ///
    /// The row stays locked while the handler runs, so concurrent replays of one dead letter
    /// run it once.
    pub async fn replay(&self, id: Uuid) -> anyhow::Result<ReplayOutcome> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a dead-letter replay")?;
        let row: Option<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM consumer_dead_letters WHERE id = $1 AND state = 'dead' FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .context("Failed to read the dead letter to replay")?;
        let Some(row) = row else {
            return Ok(ReplayOutcome::NotFound);
        };
        let handler = self
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&row.consumer)
            .cloned();
        let Some(handler) = handler else {
            return Ok(ReplayOutcome::NoHandler(row.consumer));
        };
        let consumer = row.consumer.clone();
        let message = row.into_message();
        let outcome = AssertUnwindSafe(handler.replay(&message))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(HandlerError::permanent(anyhow::anyhow!(
                    "the handler panicked"
                )))
            });
        let labels = [("consumer", consumer.clone())];
        match outcome {
            Ok(()) => {
                sqlx::query(
                    "UPDATE consumer_dead_letters
                     SET state = 'replayed', state_changed_at = now(), replays = replays + 1
                     WHERE id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .context("Failed to mark the dead letter replayed")?;
                tx.commit()
                    .await
                    .context("Failed to commit a dead-letter replay")?;
                metrics::counter!("consumer_dead_letters_replayed_total", &labels).increment(1);
                tracing::info!(%id, consumer, "dead letter replayed");
                Ok(ReplayOutcome::Replayed)
            }
            Err(error) => {
                let error = stored_error(&error.to_string());
                sqlx::query(
                    "UPDATE consumer_dead_letters SET error = $2, replays = replays + 1
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&error)
                .execute(&mut *tx)
                .await
                .context("Failed to record a failed replay")?;
                tx.commit()
                    .await
                    .context("Failed to commit a failed dead-letter replay")?;
                metrics::counter!("consumer_dead_letters_replay_failures_total", &labels)
                    .increment(1);
                tracing::warn!(%id, consumer, error, "dead letter replay failed");
                Ok(ReplayOutcome::Failed(error))
            }
        }
    }

    /// Replays every listed dead letter of the consumers registered in this process (of
    /// `consumer` only, if given), oldest first. Dead letters set aside meanwhile wait for the
    /// next call.
    pub async fn replay_all(&self, consumer: Option<&str>) -> anyhow::Result<Replayed> {
        let consumers: Vec<String> = self
            .consumers()
            .into_iter()
            .filter(|name| consumer.is_none_or(|wanted| wanted == name))
            .collect();
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM consumer_dead_letters
             WHERE state = 'dead' AND consumer = ANY($1)
             ORDER BY id",
        )
        .bind(&consumers)
        .fetch_all(&self.pool)
        .await
        .context("Failed to list the dead letters to replay")?;
        let mut done = Replayed::default();
        for id in ids {
            match self.replay(id).await.with_context(|| {
                format!(
                    "Replayed {} dead letters ({} failed again), then failed on {id}",
                    done.replayed, done.failed
                )
            })? {
                ReplayOutcome::Replayed => done.replayed += 1,
                ReplayOutcome::Failed(_) => done.failed += 1,
                // Dropped or replayed by someone else meanwhile.
                ReplayOutcome::NotFound | ReplayOutcome::NoHandler(_) => {}
            }
        }
        Ok(done)
    }

    /// Marks the dead letter dropped: kept for the record, no longer listed or replayed.
    /// `false`: no listed dead letter has this id.
    pub async fn drop_one(&self, id: Uuid) -> anyhow::Result<bool> {
        let consumer: Option<String> = sqlx::query_scalar(
            "UPDATE consumer_dead_letters SET state = 'dropped', state_changed_at = now()
             WHERE id = $1 AND state = 'dead'
             RETURNING consumer",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("Failed to drop dead letter {id}"))?;
        if let Some(consumer) = &consumer {
            metrics::counter!("consumer_dead_letters_dropped_total", "consumer" => consumer.clone())
                .increment(1);
            tracing::info!(%id, consumer, "dead letter dropped");
        }
        Ok(consumer.is_some())
    }
}

/// The failure policy that sets a message aside in `consumer_dead_letters`, so that its
/// partition moves on. Made by [`DeadLetterStore::set_aside`].
///
/// A redelivery of a message set aside already (the process died before committing its offset)
/// is recognised and not listed twice. When the database is down the insert fails, and the
/// consumer runtime tries the message again later: nothing is committed before it is stored.
#[derive(Debug, Clone)]
pub struct SetAside {
    pool: PgPool,
    consumer: String,
}

impl FailurePolicy for SetAside {
    fn on_failure<'a>(
        &'a self,
        failure: Failure<'a>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(self.store(failure))
    }
}

impl SetAside {
    async fn store(&self, failure: Failure<'_>) -> anyhow::Result<()> {
        let message = failure.message;
        let error = stored_error(&failure.error.to_string());
        let (names, values): (Vec<String>, Vec<Vec<u8>>) = message
            .headers
            .iter()
            .map(|(name, value)| (name.replace('\0', "\u{fffd}"), value.clone()))
            .unzip();
        let id = Uuid::now_v7();
        let inserted = sqlx::query(
            "INSERT INTO consumer_dead_letters (id, consumer, topic, kafka_partition,
                 kafka_offset, key, payload, header_names, header_values, message_timestamp,
                 fingerprint, error, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 md5(coalesce($6, ''::bytea)) || md5(coalesce($7, ''::bytea)), $11, $12)
             ON CONFLICT (consumer, topic, kafka_partition, kafka_offset, fingerprint)
             DO NOTHING",
        )
        .bind(id)
        .bind(&self.consumer)
        .bind(&message.topic)
        .bind(message.partition)
        .bind(message.offset)
        .bind(message.key.as_deref())
        .bind(message.payload.as_deref())
        .bind(&names)
        .bind(&values)
        .bind(message.timestamp)
        .bind(&error)
        .bind(i32::try_from(failure.attempts).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await
        .context("Failed to set a message aside")?
        .rows_affected();
        if inserted == 1 {
            metrics::counter!("consumer_dead_letters_total", "consumer" => self.consumer.clone())
                .increment(1);
            tracing::error!(
                %id,
                consumer = %self.consumer,
                topic = %message.topic,
                partition = message.partition,
                offset = message.offset,
                error,
                "message set aside"
            );
        }
        Ok(())
    }
}

/// An error as stored: no NUL (PostgreSQL text cannot hold it), at most [`MAX_ERROR_CHARS`].
fn stored_error(error: &str) -> String {
    error
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| if c == '\0' { '\u{fffd}' } else { c })
        .collect()
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    consumer: String,
    topic: String,
    kafka_partition: i32,
    kafka_offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    header_names: Vec<String>,
    header_values: Vec<Vec<u8>>,
    message_timestamp: Option<DateTime<Utc>>,
    error: String,
    attempts: i32,
    replays: i32,
    state: String,
    set_aside_at: DateTime<Utc>,
    state_changed_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_message(self) -> Message {
        Message {
            topic: self.topic,
            partition: self.kafka_partition,
            offset: self.kafka_offset,
            key: self.key,
            payload: self.payload,
            headers: self
                .header_names
                .into_iter()
                .zip(self.header_values)
                .collect(),
            timestamp: self.message_timestamp,
        }
    }

    fn into_dead_letter(self) -> DeadLetter {
        let state = match self.state.as_str() {
            "replayed" => State::Replayed,
            "dropped" => State::Dropped,
            _ => State::Dead,
        };
        let headers: serde_json::Map<String, serde_json::Value> = self
            .header_names
            .iter()
            .zip(&self.header_values)
            .map(|(name, value)| {
                (
                    name.clone(),
                    String::from_utf8_lossy(value).into_owned().into(),
                )
            })
            .collect();
        let message_type = headers
            .get(kafka::header::MESSAGE_TYPE)
            .and_then(|value| value.as_str().map(str::to_owned));
        let payload_size = self.payload.as_ref().map(Vec::len);
        let payload = match &self.payload {
            Some(bytes) if bytes.len() <= MAX_SHOWN_PAYLOAD => serde_json::from_slice(bytes)
                .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned().into()),
            _ => serde_json::Value::Null,
        };
        DeadLetter {
            id: self.id,
            consumer: self.consumer,
            topic: self.topic,
            partition: self.kafka_partition,
            offset: self.kafka_offset,
            key: self
                .key
                .as_deref()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            message_type,
            headers,
            payload,
            payload_size,
            message_timestamp: self.message_timestamp,
            error: self.error,
            attempts: self.attempts,
            replays: self.replays,
            state,
            set_aside_at: self.set_aside_at,
            state_changed_at: self.state_changed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_errors_hold_no_nul_and_are_bounded() {
        assert_eq!(stored_error("a\0b"), "a\u{fffd}b");
        assert_eq!(
            stored_error(&"x".repeat(10_000)).chars().count(),
            MAX_ERROR_CHARS
        );
    }
}

//! The writing side: [`Outbox::record`], inside the caller's transaction.

use std::time::Duration;

use anyhow::Context as _;
use platform::telemetry::{TraceContext, current_correlation_id};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::message::{OutboxMessage, StoredHeaders};

/// The channel on which [`Outbox::record`] announces new rows and the relay listens.
pub const NOTIFY_CHANNEL: &str = "asyncron_outbox";

/// The largest message [`Outbox::record`] accepts, as estimated by
/// [`OutboxMessage::estimated_size`]: 900 KiB, below the 1 MB (1,048,588 bytes) Kafka brokers
/// and topics accept by default (`message.max.bytes`, `max.message.bytes`) and librdkafka's own
/// `message.max.bytes` of 1,000,000. A larger message would be recorded, then refused by the
/// broker and parked; refusing it here fails the request that made it instead, where the caller
/// can still answer 413. Services whose topics allow more (or less) use
/// [`Outbox::record_with_limit`].
pub const MAX_MESSAGE_BYTES: usize = 900 * 1024;

/// Why [`Outbox::record`] refused a message: larger than the limit. Reachable from the returned
/// `anyhow::Error` with `error.downcast_ref::<PayloadTooLarge>()`; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the outbox message is about {size} bytes (payload, key and headers), more than the {limit} \
     bytes the outbox accepts"
)]
pub struct PayloadTooLarge {
    /// The message's estimated size in bytes ([`OutboxMessage::estimated_size`]).
    pub size: usize,
    /// The limit it exceeded.
    pub limit: usize,
}

impl PayloadTooLarge {
    /// The 413 problem for a request whose message was too large, if `error` is that refusal:
    /// a service's error type calls it before it answers 500, so that the client learns it sent
    /// too much rather than that the server failed.
    pub fn problem_in(error: &anyhow::Error) -> Option<platform::http::Problem> {
        let too_large = error.downcast_ref::<Self>()?;
        Some(
            platform::http::Problem::new(axum::http::StatusCode::PAYLOAD_TOO_LARGE).with_detail(
                format!(
                    "The change would publish a message of about {} bytes; at most {} can be \
                     published. Send less.",
                    too_large.size, too_large.limit
                ),
            ),
        )
    }
}

/// The outbox table's operations. A namespace: the table lives in the service's own database,
/// so there is no state to hold.
#[derive(Debug, Clone, Copy)]
pub struct Outbox;

impl Outbox {
    /// Records `message` in the transaction `conn` is in, and returns its message id.
    ///
    /// The row commits or rolls back with everything else in the transaction, so the message is
    /// published if and only if the entity change it announces happened. The trace context and
    /// the correlation id of the current span are stored with it: consumers see the trace of the
    /// request that caused the message, not that of the relay that happened to publish it.
    ///
    /// It also issues `NOTIFY asyncron_outbox`, which PostgreSQL delivers only when (and if) the
    /// transaction commits, so a listening relay publishes the message at once instead of at its
    /// next poll.
    ///
    /// ```no_run
    /// use outbox::{Outbox, OutboxMessage};
    ///
    /// # async fn place(pool: &sqlx::PgPool, order_id: uuid::Uuid) -> anyhow::Result<()> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO orders (id, status) VALUES ($1, 'placed')")
    ///     .bind(order_id)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// let event = OutboxMessage::json(
    ///     "orders.orders.v1",
    ///     order_id.to_string(),
    ///     "OrderPlaced",
    ///     &serde_json::json!({ "order_id": order_id }),
    /// )?;
    /// Outbox::record(&mut tx, event).await?; // `&mut *tx` works as well
    /// tx.commit().await?; // the order and its event, or neither
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Called outside a transaction (on a plain connection) the row commits on its own, which
    /// gives up exactly the guarantee the outbox exists for.
    ///
    /// # Errors
    /// [`crate::InvalidMessage`] (reachable with `downcast_ref`) for a message that would be
    /// published wrongly, and [`PayloadTooLarge`] for one above [`MAX_MESSAGE_BYTES`], both
    /// before anything is written; a database error otherwise, e.g. a unique violation when a
    /// message with the same id was recorded before. Either leaves the transaction for the
    /// caller to roll back.
    pub async fn record(conn: &mut PgConnection, message: OutboxMessage) -> anyhow::Result<Uuid> {
        Self::record_with_limit(conn, message, MAX_MESSAGE_BYTES).await
    }

    /// [`Self::record`] with another size limit than [`MAX_MESSAGE_BYTES`]: for topics whose
    /// `max.message.bytes` (and the producer's `message.max.bytes`) differ from Kafka's default.
    ///
    /// # Errors
    /// As [`Self::record`]; [`PayloadTooLarge`] names `max_bytes`.
    pub async fn record_with_limit(
        conn: &mut PgConnection,
        message: OutboxMessage,
        max_bytes: usize,
    ) -> anyhow::Result<Uuid> {
        message.validate()?;
        check_size(&message, max_bytes)?;
        let headers = StoredHeaders {
            traceparent: TraceContext::current().map(|cx| cx.to_traceparent()),
            correlation_id: current_correlation_id(),
            extra: message.headers,
        };
        // One round trip for both statements: this runs inside the caller's request. A
        // data-modifying CTE runs exactly once whatever the outer query reads. PostgreSQL folds
        // identical notifications of one transaction into one, so a transaction that records
        // many messages wakes the relay once.
        sqlx::query_scalar::<_, Uuid>(
            "WITH recorded AS (
                 INSERT INTO outbox (message_id, topic, key, message_type, payload, headers)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING message_id
             )
             SELECT message_id FROM recorded, pg_notify($7, '')",
        )
        .bind(message.message_id)
        .bind(&message.topic)
        .bind(&message.key)
        .bind(&message.message_type)
        .bind(&message.payload)
        .bind(Json(&headers))
        .bind(NOTIFY_CHANNEL)
        .fetch_one(conn)
        .await
        .with_context(|| {
            format!(
                "Failed to record outbox message {} ({}) for {}",
                message.message_id, message.message_type, message.topic
            )
        })
    }

    /// Records `messages` in the transaction `conn` is in, in one statement, except those whose
    /// message id the outbox holds already; returns the ids it recorded, in the order given.
    ///
    /// Unlike [`Self::record`], a message id recorded before is not an error: that message is
    /// skipped and the transaction stays usable. This is what a batch of messages with derived
    /// ids needs (a repeated fire of the task scheduler, a retried command): one duplicate
    /// neither fails the batch nor costs a savepoint per message. A duplicate within `messages`
    /// is recorded once, the first time it appears.
    ///
    /// The rows get their `id` (the relay's publishing order) in the order of `messages`, and
    /// each stores the same headers as [`Self::record`] would: the current span's trace context
    /// and correlation id, and the message's own headers. One `NOTIFY asyncron_outbox`, delivered
    /// on commit, wakes the relay for all of them.
    ///
    /// # Errors
    /// [`crate::InvalidMessage`] for the first message that would be published wrongly, and
    /// [`PayloadTooLarge`] for the first above [`MAX_MESSAGE_BYTES`], before anything is
    /// written; a database error otherwise, which leaves the transaction for the caller to roll
    /// back (or to roll back to a savepoint taken before the call).
    pub async fn record_many(
        conn: &mut PgConnection,
        messages: &[OutboxMessage],
    ) -> anyhow::Result<Vec<Uuid>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let traceparent = TraceContext::current().map(|cx| cx.to_traceparent());
        let correlation_id = current_correlation_id();
        let mut ids = Vec::with_capacity(messages.len());
        let mut topics = Vec::with_capacity(messages.len());
        let mut keys = Vec::with_capacity(messages.len());
        let mut types = Vec::with_capacity(messages.len());
        let mut payloads = Vec::with_capacity(messages.len());
        let mut headers = Vec::with_capacity(messages.len());
        for message in messages {
            message.validate()?;
            check_size(message, MAX_MESSAGE_BYTES)?;
            ids.push(message.message_id);
            topics.push(message.topic.as_str());
            keys.push(message.key.as_deref());
            types.push(message.message_type.as_str());
            payloads.push(message.payload.as_deref());
            headers.push(Json(StoredHeaders {
                traceparent: traceparent.clone(),
                correlation_id: correlation_id.clone(),
                extra: message.headers.clone(),
            }));
        }
        // `ORDER BY ord` makes the BIGSERIAL follow the order of `messages`, which is the order
        // the relay publishes in. `pg_notify` in FROM runs at most once per statement; when
        // every message was a duplicate it may not run at all, and there is nothing to publish.
        let mut recorded: Vec<(Uuid, i64)> = sqlx::query_as(
            "WITH recorded AS (
                 INSERT INTO outbox (message_id, topic, key, message_type, payload, headers)
                 SELECT message_id, topic, key, message_type, payload, headers
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                             $6::jsonb[])
                     WITH ORDINALITY AS m(message_id, topic, key, message_type, payload,
                                          headers, ord)
                 ORDER BY ord
                 ON CONFLICT (message_id) DO NOTHING
                 RETURNING message_id, id
             )
             SELECT message_id, id FROM recorded, pg_notify($7, '')",
        )
        .bind(&ids)
        .bind(&topics)
        .bind(&keys)
        .bind(&types)
        .bind(&payloads)
        .bind(&headers)
        .bind(NOTIFY_CHANNEL)
        .fetch_all(conn)
        .await
        .with_context(|| format!("Failed to record {} outbox messages", messages.len()))?;
        recorded.sort_unstable_by_key(|&(_, id)| id);
        Ok(recorded
            .into_iter()
            .map(|(message_id, _)| message_id)
            .collect())
    }

    /// How far the relay is behind: the number of pending rows and the age of the oldest, and
    /// the number of parked rows.
    ///
    /// Counting reads the partial indexes of pending and parked rows, cheap while the relay
    /// keeps up; the relay publishes the same values as the `outbox_pending_rows`,
    /// `outbox_oldest_pending_age_seconds` and `outbox_parked_rows` gauges. Useful for a
    /// readiness or alerting check. Pending rows include those waiting behind a parked row of
    /// their key, so their age grows until the parked row is retried or dropped.
    pub async fn backlog(executor: impl PgExecutor<'_>) -> anyhow::Result<Backlog> {
        // Both ages are measured on the database's clock, against which `created_at` was set.
        let (pending, oldest_age_seconds, parked): (i64, Option<f64>, i64) = sqlx::query_as(
            "SELECT
                 (SELECT count(*) FROM outbox
                    WHERE published_at IS NULL AND parked_at IS NULL AND dropped_at IS NULL),
                 (SELECT EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8
                    FROM outbox
                    WHERE published_at IS NULL AND parked_at IS NULL AND dropped_at IS NULL
                    ORDER BY id LIMIT 1),
                 (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL)",
        )
        .fetch_one(executor)
        .await
        .context("Failed to measure the outbox backlog")?;
        Ok(Backlog {
            pending: pending as u64,
            oldest_pending_age: oldest_age_seconds
                .and_then(|seconds| Duration::try_from_secs_f64(seconds.max(0.0)).ok()),
            parked: parked as u64,
        })
    }
}

/// Rows not yet published, as measured by [`Outbox::backlog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: u64,
    /// Since the oldest pending row was recorded (its transaction began); `None` when nothing is
    /// pending.
    pub oldest_pending_age: Option<Duration>,
    /// Rows the broker refused for good, waiting for an operator (`outbox::admin`).
    pub parked: u64,
}

/// Refuses `message` when its estimated size exceeds `limit`.
fn check_size(message: &OutboxMessage, limit: usize) -> Result<(), PayloadTooLarge> {
    let size = message.estimated_size();
    if size > limit {
        return Err(PayloadTooLarge { size, limit });
    }
    Ok(())
}

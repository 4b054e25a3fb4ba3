//! The reading side: [`OutboxRelay`] publishes committed rows to Kafka.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::join_all;
use kafka::{Delivery, InFlight, MessageHeaders, Producer};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::listener;
use crate::message::StoredHeaders;
use crate::record::Outbox;

/// The key of the transaction-level advisory lock that makes one relay replica publish at a
/// time: `"outbox"` in ASCII. Advisory locks are per database, and the one-key (`bigint`) form
/// used here never collides with the two-key (`int, int`) form.
pub const RELAY_LOCK_KEY: i64 = 0x6f75_7462_6f78;

/// PostgreSQL ends the session of a relay that holds the lock but sends nothing for this long
/// (its host died, the network split, the process froze), which releases the lock for another
/// replica. Without it a dead peer's session, and the lock, can linger until TCP keepalive gives
/// up, which takes hours by default. It must exceed the longest publish wait of a batch,
/// i.e. the producer's `message.timeout.ms` (30 s by default) and then some.
pub const LOCK_HOLDER_IDLE_TIMEOUT: Duration = Duration::from_mins(2);

/// Expired rows are deleted in chunks of this many, so that one statement never holds many
/// row locks or writes a burst of WAL after a long stop of the relay.
const DELETE_CHUNK: i64 = 10_000;

/// While batches come back full one after another, the backlog gauges are refreshed at most this
/// often: counting a large backlog costs more than publishing a batch.
const BACKLOG_MEASURE_INTERVAL: Duration = Duration::from_secs(1);

/// A batch still waiting for acknowledgements after this long checks whether the broker lost
/// the topics it publishes to (see `restore_topics_while_waiting`). Far above a healthy
/// broker's answer time (milliseconds), far below `message.timeout.ms`.
const RESTORE_TOPICS_AFTER: Duration = Duration::from_secs(2);

/// How often a batch that keeps waiting checks its topics again.
const RESTORE_TOPICS_INTERVAL: Duration = Duration::from_secs(1);

/// How the relay works; [`RelaySettings::default`] suits most services.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows read, published and marked per transaction.
    pub batch_size: i64,
    /// How often the relay looks for rows without being notified: the fallback for a
    /// notification missed while the listener reconnects, or not sent (rows inserted by hand).
    pub poll_interval: Duration,
    /// The first wait after a failed pass; doubles with each failure in a row.
    pub min_backoff: Duration,
    /// The longest wait between failing passes. It bounds how long after a broker outage the
    /// relay notices that the broker is back: keep it well below the 15 s the outbox promises
    /// for catching up after an outage.
    pub max_backoff: Duration,
    /// Published rows are deleted this long after publication. They serve only for
    /// investigation ("was it published, when, after how many attempts?").
    pub retention: Duration,
    /// How often expired rows are deleted.
    pub cleanup_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retention: Duration::from_hours(24),
            cleanup_interval: Duration::from_mins(1),
        }
    }
}

impl RelaySettings {
    /// Refuses settings that would make the relay spin or never run.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.batch_size >= 1,
            "outbox relay batch_size must be at least 1, not {}",
            self.batch_size
        );
        for (name, value) in [
            ("poll_interval", self.poll_interval),
            ("min_backoff", self.min_backoff),
            ("cleanup_interval", self.cleanup_interval),
        ] {
            anyhow::ensure!(!value.is_zero(), "outbox relay {name} must not be zero");
        }
        anyhow::ensure!(
            self.min_backoff <= self.max_backoff,
            "outbox relay min_backoff ({:?}) exceeds max_backoff ({:?})",
            self.min_backoff,
            self.max_backoff
        );
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.min_backoff, self.max_backoff)
    }
}

/// Publishes the outbox's committed rows to Kafka, in id order, at least once.
///
/// Run one per service replica, next to the HTTP server; replicas take turns through an
/// advisory lock, so adding replicas adds availability, not throughput.
///
/// ```no_run
/// use outbox::{OutboxRelay, RelaySettings};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn start(pool: sqlx::PgPool, producer: kafka::Producer) -> anyhow::Result<()> {
/// let shutdown = CancellationToken::new();
/// let relay = OutboxRelay::new(pool, producer).with_settings(RelaySettings {
///     batch_size: 1_000,
///     ..RelaySettings::default()
/// });
/// let relay = tokio::spawn(relay.run(shutdown.clone()));
/// // ... serve requests; on SIGTERM:
/// shutdown.cancel();
/// relay.await??; // returns once the batch in flight is published and marked
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pool: PgPool,
    producer: Producer,
    settings: RelaySettings,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default)]
struct Pass {
    /// Rows published and marked.
    published: usize,
    /// The batch was full, so more rows are probably pending: the next pass follows at once.
    batch_full: bool,
}

/// A pending row as the relay reads it.
#[derive(Debug, sqlx::FromRow)]
struct PendingRow {
    id: i64,
    message_id: Uuid,
    topic: String,
    key: Option<String>,
    message_type: String,
    payload: Option<Vec<u8>>,
    headers: Json<StoredHeaders>,
}

impl OutboxRelay {
    /// A relay with [`RelaySettings::default`]. `pool` is the service's pool: a pass holds one
    /// of its connections for the length of a batch. The `LISTEN` session uses a connection of
    /// its own with the same options.
    pub fn new(pool: PgPool, producer: Producer) -> Self {
        Self {
            pool,
            producer,
            settings: RelaySettings::default(),
        }
    }

    /// Replaces the settings; they are checked when [`Self::run`] starts.
    #[must_use]
    pub fn with_settings(mut self, settings: RelaySettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn settings(&self) -> &RelaySettings {
        &self.settings
    }

    /// Publishes pending rows until `shutdown` is cancelled, then returns after the batch in
    /// flight is published and marked.
    ///
    /// A pass runs at start (rows a crash left behind), whenever a recording transaction
    /// commits (`LISTEN`), every `poll_interval` as a fallback, and at once again while batches
    /// come back full. A failed pass is logged and retried with exponential backoff; database
    /// and broker outages are waited out, never returned. Expired published rows are deleted
    /// every `cleanup_interval`.
    ///
    /// # Errors
    /// Only for invalid [`RelaySettings`].
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.settings.validate()?;
        tracing::info!(
            batch_size = self.settings.batch_size,
            poll_interval = ?self.settings.poll_interval,
            "outbox relay started"
        );

        let wake = Arc::new(Notify::new());
        let listener_shutdown = shutdown.child_token();
        let listener = tokio::spawn(listener::wake_on_notify(
            (*self.pool.connect_options()).clone(),
            Arc::clone(&wake),
            self.settings.backoff(),
            listener_shutdown.clone(),
        ));
        // Stops the listener also if this future is dropped instead of run to the end.
        let stop_listener = listener_shutdown.drop_guard();

        tokio::join!(
            self.publish_until(&shutdown, &wake),
            self.clean_up_until(&shutdown),
        );

        drop(stop_listener);
        if let Err(error) = listener.await {
            tracing::error!(%error, "the outbox listener task failed");
        }
        tracing::info!("outbox relay stopped");
        Ok(())
    }

    /// One pass: publishes up to `batch_size` pending rows in id order, marks those the broker
    /// acknowledged, and returns how many it published. Returns `Ok(0)` at once if another
    /// replica is publishing.
    ///
    /// A row the broker refuses for good ([`kafka::is_permanent`], confirmed by sending it
    /// alone) is parked. A row that fails otherwise records the failure (`attempts`,
    /// `last_error`) and stays pending. Either way the later rows of its key wait behind it;
    /// rows of other keys do not.
    ///
    /// # Errors
    /// When the database fails, or when rows failed transiently and none was published or
    /// parked (the broker is probably down). The failures are recorded on their rows either way.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        self.pass().await.map(|pass| pass.published)
    }

    /// Deletes rows published, or dropped by an operator, longer than `retention` ago and
    /// returns how many. Pending and parked rows are never deleted, however old.
    pub async fn delete_expired(&self) -> anyhow::Result<u64> {
        // Each statement reads one partial index; `OR` of the two would read the table.
        Ok(self.delete_expired_by("published_at").await?
            + self.delete_expired_by("dropped_at").await?)
    }

    /// Deletes the rows whose `column` (a timestamp column of the outbox) is older than the
    /// retention, in chunks.
    async fn delete_expired_by(&self, column: &'static str) -> anyhow::Result<u64> {
        let mut deleted = 0;
        loop {
            // `make_interval` takes the seconds as a double: binding a `Duration` as an
            // interval would fail for sub-microsecond values. `column` is one of ours, never
            // input.
            let chunk = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox
                     WHERE {column} < clock_timestamp() - make_interval(secs => $1)
                     LIMIT $2
                 )"
            )))
            .bind(self.settings.retention.as_secs_f64())
            .bind(DELETE_CHUNK)
            .execute(&self.pool)
            .await
            .context("Failed to delete expired outbox rows")?
            .rows_affected();
            deleted += chunk;
            metrics::counter!("outbox_deleted_total").increment(chunk);
            if chunk < DELETE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }

    /// The publishing loop of [`Self::run`].
    async fn publish_until(&self, shutdown: &CancellationToken, wake: &Notify) {
        let mut backoff = self.settings.backoff();
        let mut failed_passes = 0_u32;
        let mut measured_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            let outcome = self.pass().await;
            let more_pending = outcome.as_ref().is_ok_and(|pass| pass.batch_full);
            if !more_pending
                || measured_at.is_none_or(|at| at.elapsed() >= BACKLOG_MEASURE_INTERVAL)
            {
                self.measure_backlog().await;
                measured_at = Some(Instant::now());
            }
            match outcome {
                Ok(_) => {
                    if failed_passes > 0 {
                        tracing::info!(failed_passes, "outbox relay publishing again");
                        failed_passes = 0;
                    }
                    backoff.reset();
                    if more_pending {
                        continue;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
                Err(error) => {
                    failed_passes = failed_passes.saturating_add(1);
                    let delay = backoff.next_delay();
                    tracing::error!(
                        error = format!("{error:#}"),
                        failed_passes,
                        retry_in = ?delay,
                        "outbox relay pass failed"
                    );
                    // Notifications do not cut the wait short: while the broker is down each
                    // commit would otherwise trigger another failing pass. Their wake-up is
                    // kept and runs the pass after the wait.
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The retention loop of [`Self::run`]: deletes expired rows at start and then every
    /// `cleanup_interval`. Every replica runs it; concurrent deletes of the same rows are
    /// harmless.
    async fn clean_up_until(&self, shutdown: &CancellationToken) {
        let mut interval = tokio::time::interval(self.settings.cleanup_interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            match self.delete_expired().await {
                Ok(0) => {}
                Ok(deleted) => tracing::debug!(deleted, "deleted expired outbox rows"),
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "outbox cleanup failed; retrying at the next interval"
                ),
            }
        }
    }

    async fn pass(&self) -> anyhow::Result<Pass> {
        let span = tracing::info_span!(
            "outbox.relay_pass",
            rows = tracing::field::Empty,
            published = tracing::field::Empty,
        );
        self.locked_pass().instrument(span).await
    }

    async fn locked_pass(&self) -> anyhow::Result<Pass> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin the outbox relay transaction")?;
        if !take_relay_lock(&mut tx).await? {
            // Another replica is publishing, and will pass over what this one would have.
            tracing::debug!("another outbox relay holds the lock; skipping this pass");
            tx.rollback()
                .await
                .context("Failed to end the outbox relay transaction")?;
            return Ok(Pass::default());
        }

        // The pending rows in id order, except those an earlier row of their key holds back: a
        // parked row, or a pending one whose last publish failed. The scan follows the pending
        // index; the check is one probe of the small blocking index per row. A NULL key has no
        // order, so nothing holds it back.
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, message_id, topic, key, message_type, payload, headers
             FROM outbox o
             WHERE published_at IS NULL AND parked_at IS NULL AND dropped_at IS NULL
               AND NOT EXISTS (
                   SELECT 1 FROM outbox earlier
                   WHERE earlier.topic = o.topic AND earlier.key = o.key AND earlier.id < o.id
                     AND earlier.key IS NOT NULL
                     AND earlier.published_at IS NULL AND earlier.dropped_at IS NULL
                     AND (earlier.parked_at IS NOT NULL OR earlier.attempts > 0)
               )
             ORDER BY id
             LIMIT $1",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await
        .context("Failed to read pending outbox rows")?;
        tracing::Span::current().record("rows", rows.len());
        if rows.is_empty() {
            tx.commit()
                .await
                .context("Failed to end the outbox relay transaction")?;
            return Ok(Pass::default());
        }

        let outcomes = self.publish_rows(&rows).await;
        let decided = self.decide(&rows, outcomes).await;

        let delays = mark_published(&mut tx, &decided.published).await?;
        record_failures(&mut tx, &decided.parked, true).await?;
        record_failures(&mut tx, &decided.failed, false).await?;
        tx.commit()
            .await
            .context("Failed to commit the outbox relay transaction")?;

        for (topic, delay_seconds) in delays {
            let labels = [("topic", topic)];
            metrics::counter!("outbox_published_total", &labels).increment(1);
            metrics::histogram!("outbox_publish_delay_seconds", &labels).record(delay_seconds);
        }
        for (row, _) in &decided.parked {
            metrics::counter!("outbox_parked_total", "topic" => row.topic.clone()).increment(1);
        }
        let published = decided.published.len();
        tracing::Span::current().record("published", published);

        let batch_full = i64::try_from(rows.len()).is_ok_and(|n| n >= self.settings.batch_size);
        let Some((row, error)) = decided.failed.first() else {
            return Ok(Pass {
                published,
                batch_full,
            });
        };
        let summary = format!(
            "Failed to publish outbox message {} (row {}) to {}; {} rows of the batch failed \
             and stay pending with the later rows of their keys, {published} were published, \
             {} parked",
            row.message_id,
            row.id,
            row.topic,
            decided.failed.len(),
            decided.parked.len(),
        );
        if published == 0 && decided.parked.is_empty() {
            // Nothing moved: the broker is probably down. The caller backs off.
            return Err(anyhow::anyhow!("{error:#}").context(summary));
        }
        // Other keys moved on, so this is no outage: the failed keys are retried by the next
        // pass, which comes without backing off.
        tracing::warn!(error = format!("{error:#}"), "{summary}");
        Ok(Pass {
            published,
            batch_full,
        })
    }

    /// Sorts the rows of a pass by their outcome: published, parked, failed (and charged), or
    /// left pending without charge behind an earlier failure of their key.
    async fn decide<'r>(&self, rows: &'r [PendingRow], outcomes: Vec<Outcome>) -> Decided<'r> {
        let mut decided = Decided::default();
        // Keys with a failed row in this pass: the first failure of a key is charged to its row,
        // the later rows of the key only wait behind it.
        let mut failed_keys = HashSet::new();
        let mut to_confirm = Vec::new();
        for (row, outcome) in rows.iter().zip(outcomes) {
            let error = match outcome {
                Outcome::Acknowledged => {
                    // Acknowledged means published, whatever happened to the rows around it:
                    // a row the broker has is never sent again.
                    decided.published.push(row);
                    continue;
                }
                Outcome::Held => continue,
                Outcome::Failed(error) => error,
            };
            metrics::counter!("outbox_publish_failures_total", "topic" => row.topic.clone())
                .increment(1);
            if row
                .ordering_key()
                .is_some_and(|key| !failed_keys.insert(key))
            {
                continue;
            }
            if kafka::is_permanent(&error) {
                to_confirm.push((row, error));
            } else {
                decided.failed.push((row, error));
            }
        }
        // A broker refuses a whole produce request, so a message can fail "too large" for the
        // company it was batched with. Only a row that fails permanently when sent alone is
        // parked. A refusal by librdkafka itself (its own `message.max.bytes`) fails again at
        // once.
        for (row, error) in to_confirm {
            match self.publish(row).await {
                Ok(_) => decided.published.push(row),
                Err(again) if kafka::is_permanent(&again) => {
                    tracing::warn!(
                        outbox_id = row.id,
                        message_id = %row.message_id,
                        topic = %row.topic,
                        error = format!("{again:#}"),
                        "the broker refuses an outbox message for good; parked it, and the \
                         later messages of its key wait until it is retried or dropped"
                    );
                    decided.parked.push((row, again));
                }
                Err(again) => {
                    tracing::debug!(
                        first = format!("{error:#}"),
                        "a permanent-looking failure did not repeat"
                    );
                    decided.failed.push((row, again));
                }
            }
        }

        decided
    }

    /// Hands `rows` to the producer in id order and waits for the broker's answers.
    ///
    /// A row librdkafka refuses at once holds back the later rows of its key, which are then
    /// not sent at all: sent, they would reach the broker before it. (A failure the broker
    /// reports later cannot hold back what was already sent: such rows are acknowledged before
    /// the failed one, and marked, since what the broker has must not be sent again.)
    async fn publish_rows<'r>(&'r self, rows: &'r [PendingRow]) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(rows.len());
        let mut in_flight = Vec::with_capacity(rows.len());
        let mut refused_keys = HashSet::new();
        for (index, row) in rows.iter().enumerate() {
            if row
                .ordering_key()
                .is_some_and(|key| refused_keys.contains(&key))
            {
                outcomes.push(Outcome::Held);
                continue;
            }
            match self.enqueue(row) {
                Ok(publishing) => {
                    // Replaced by the broker's answer below.
                    outcomes.push(Outcome::Held);
                    in_flight.push(async move { (index, publishing.acknowledged().await) });
                }
                Err(error) => {
                    if let Some(key) = row.ordering_key() {
                        refused_keys.insert(key);
                    }
                    outcomes.push(Outcome::Failed(error));
                }
            }
        }
        if in_flight.is_empty() {
            return outcomes;
        }

        let mut topics: Vec<&str> = rows.iter().map(|row| row.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let answers = tokio::select! {
            answers = join_all(in_flight) => answers,
            never = self.restore_topics_while_waiting(&topics) => match never {},
        };
        for (index, answer) in answers {
            outcomes[index] = match answer {
                Ok(_) => Outcome::Acknowledged,
                Err(error) => Outcome::Failed(error),
            };
        }
        outcomes
    }

    /// Runs while a batch waits for acknowledgements longer than usual: a broker that restarted
    /// without its topics (memory storage, a rebuilt cluster) answers publishes to them with
    /// errors that librdkafka retries until `message.timeout.ms`. Creating the topics again
    /// lets librdkafka's next retry succeed, instead of failing the batch after 30 s and
    /// publishing it again only after that.
    async fn restore_topics_while_waiting(&self, topics: &[&str]) -> Infallible {
        tokio::time::sleep(RESTORE_TOPICS_AFTER).await;
        loop {
            if let Err(error) = self.producer.restore_topics(topics).await {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "cannot check the topics of a slow batch yet"
                );
            }
            tokio::time::sleep(RESTORE_TOPICS_INTERVAL).await;
        }
    }

    /// Hands one row to the producer (see [`Self::publish_rows`]), as it would have been
    /// published from the span that recorded it.
    fn enqueue<'r>(&'r self, row: &'r PendingRow) -> anyhow::Result<InFlight<'r>> {
        let (headers, span) = row.headers_and_span();
        span.in_scope(|| {
            self.producer.enqueue_bytes(
                &row.topic,
                row.key.as_deref().map(str::as_bytes),
                row.payload.as_deref(),
                headers,
            )
        })
    }

    /// Publishes one row alone and waits for the answer.
    async fn publish(&self, row: &PendingRow) -> anyhow::Result<Delivery> {
        let (headers, span) = row.headers_and_span();
        self.producer
            .publish_bytes(
                &row.topic,
                row.key.as_deref().map(str::as_bytes),
                row.payload.as_deref(),
                headers,
            )
            .instrument(span)
            .await
    }

    /// Sets the backlog gauges. A failure only leaves them stale, so it is logged, not raised.
    async fn measure_backlog(&self) {
        match Outbox::backlog(&self.pool).await {
            Ok(backlog) => {
                metrics::gauge!("outbox_pending_rows").set(backlog.pending as f64);
                metrics::gauge!("outbox_parked_rows").set(backlog.parked as f64);
                metrics::gauge!("outbox_oldest_pending_age_seconds").set(
                    backlog
                        .oldest_pending_age
                        .map_or(0.0, |age| age.as_secs_f64()),
                );
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot measure the outbox backlog"
                );
            }
        }
    }
}

/// Takes the relay lock for the rest of the transaction, if no other replica holds it.
///
/// Transaction-level, so it is released by commit, rollback, or the end of the session: a
/// crashed replica cannot keep it.
async fn take_relay_lock(tx: &mut PgConnection) -> anyhow::Result<bool> {
    sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
        .bind(format!("{}ms", LOCK_HOLDER_IDLE_TIMEOUT.as_millis()))
        .execute(&mut *tx)
        .await
        .context("Failed to bound the outbox relay transaction")?;
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await
        .context("Failed to take the outbox relay lock")
}

/// Marks `rows` published and returns, per row, its topic and its delay from `created_at` to
/// publication in seconds.
async fn mark_published(
    tx: &mut PgConnection,
    rows: &[&PendingRow],
) -> anyhow::Result<Vec<(String, f64)>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    // `clock_timestamp()`, not `now()`: `now()` is when this transaction began, before the
    // batch was read, let alone acknowledged.
    sqlx::query_as(
        "UPDATE outbox
         SET published_at = clock_timestamp(), attempts = attempts + 1
         WHERE id = ANY($1)
         RETURNING topic, EXTRACT(EPOCH FROM published_at - created_at)::float8",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .context("Failed to mark outbox rows published")
}

/// Records failed publishes on their rows, for the next pass and for whoever investigates. A
/// pending row with `attempts > 0` holds back the later rows of its key until it is published.
/// With `park`, the rows are parked as well: the relay passes over them, and over the later rows
/// of their keys, until an operator retries or drops them (`outbox::admin`).
async fn record_failures(
    tx: &mut PgConnection,
    rows: &[(&PendingRow, anyhow::Error)],
    park: bool,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, errors): (Vec<i64>, Vec<String>) = rows
        .iter()
        .map(|(row, error)| (row.id, format!("{error:#}")))
        .unzip();
    sqlx::query(
        "UPDATE outbox
         SET attempts = attempts + 1, last_error = failed.error,
             parked_at = CASE WHEN $3 THEN clock_timestamp() ELSE parked_at END
         FROM unnest($1::bigint[], $2::text[]) AS failed(id, error)
         WHERE outbox.id = failed.id",
    )
    .bind(&ids)
    .bind(&errors)
    .bind(park)
    .execute(&mut *tx)
    .await
    .with_context(|| {
        if park {
            "Failed to park outbox rows"
        } else {
            "Failed to record outbox publish failures"
        }
    })?;
    Ok(())
}

/// What happened to one row of a pass.
#[derive(Debug)]
enum Outcome {
    /// Not sent: an earlier row of its key was refused in this pass.
    Held,
    Acknowledged,
    Failed(anyhow::Error),
}

/// What a pass writes back.
#[derive(Debug, Default)]
struct Decided<'r> {
    published: Vec<&'r PendingRow>,
    parked: Vec<(&'r PendingRow, anyhow::Error)>,
    /// Transient failures, one per key at most (its first failed row).
    failed: Vec<(&'r PendingRow, anyhow::Error)>,
}

impl PendingRow {
    /// What orders this row among others: its topic and key. `None` (no key) orders nothing.
    fn ordering_key(&self) -> Option<(&str, &str)> {
        self.key.as_deref().map(|key| (self.topic.as_str(), key))
    }

    /// The headers to publish the row with, and the span to publish it in: the span continues
    /// the recording request's trace, so what the relay logs about this message can be found
    /// next to that request's logs.
    fn headers_and_span(&self) -> (MessageHeaders, tracing::Span) {
        let Json(stored) = &self.headers;
        let mut headers = MessageHeaders::new(&self.message_type).message_id(self.message_id);
        headers.traceparent.clone_from(&stored.traceparent);
        headers.correlation_id.clone_from(&stored.correlation_id);
        headers.extra.clone_from(&stored.extra);
        let span = tracing::info_span!(
            "outbox.publish",
            outbox_id = self.id,
            message_id = %self.message_id,
            traceparent = stored.traceparent.as_deref(),
            correlation_id = stored.correlation_id.as_deref(),
        );
        (headers, span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_are_valid() {
        RelaySettings::default().validate().unwrap();
    }

    #[test]
    fn settings_that_would_spin_or_stall_are_refused() {
        let cases = [
            (
                RelaySettings {
                    batch_size: 0,
                    ..RelaySettings::default()
                },
                "batch_size must be at least 1",
            ),
            (
                RelaySettings {
                    poll_interval: Duration::ZERO,
                    ..RelaySettings::default()
                },
                "poll_interval must not be zero",
            ),
            (
                RelaySettings {
                    min_backoff: Duration::ZERO,
                    ..RelaySettings::default()
                },
                "min_backoff must not be zero",
            ),
            (
                RelaySettings {
                    min_backoff: Duration::from_secs(2),
                    max_backoff: Duration::from_secs(1),
                    ..RelaySettings::default()
                },
                "exceeds max_backoff",
            ),
        ];
        for (settings, expected) in cases {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_lock_key_spells_outbox() {
        assert_eq!(&RELAY_LOCK_KEY.to_be_bytes()[2..], b"outbox");
    }
}

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;
use dead_letters::DeadLetterStore;
use kafka::{
    ConsumerBuilder, Handler, HandlerError, KafkaConfig, Message, RunningConsumer, TopicSpec,
};
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{EventEnvelope, EventKind};

/// A local copy of another service's entities. Implementations hold plain SQL: the projector
/// decides *whether* an event applies (revision checks, duplicates, deletes) and calls these
/// inside the transaction that records the applied revision.
///
/// `Entity` declares only the fields this service reads (tolerant reader): fields the owner
/// adds later are ignored.
pub trait ReadModel: Send + Sync + 'static {
    type Entity: DeserializeOwned + Send + Sync;

    /// Unique within the service; names the consumer group and the revision records.
    fn name(&self) -> &'static str;

    /// Inserts or replaces the row.
    fn upsert(
        &self,
        conn: &mut PgConnection,
        id: &str,
        revision: i64,
        entity: &Self::Entity,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    fn delete(
        &self,
        conn: &mut PgConnection,
        id: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Removes every row, before a rebuild.
    fn clear(&self, conn: &mut PgConnection) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Consumes an entity topic into a [`ReadModel`].
#[derive(Debug)]
pub struct Projector<R> {
    pool: PgPool,
    kafka: KafkaConfig,
    service: String,
    topic: TopicSpec,
    read_model: Arc<R>,
    concurrency: usize,
    dead_letters: Option<DeadLetterStore>,
}

/// Events a projector applies at once unless told otherwise: enough to keep up across keys,
/// few enough to leave most of a default pool (10 connections) to the service's requests.
pub const DEFAULT_PROJECTION_CONCURRENCY: usize = 4;

impl<R: ReadModel> Projector<R> {
    /// `service` prefixes the consumer group: `<service>.<projection>.g<generation>`.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaConfig,
        service: &str,
        topic: TopicSpec,
        read_model: R,
    ) -> Self {
        Self {
            pool,
            kafka: kafka.clone(),
            service: service.to_owned(),
            topic,
            read_model: Arc::new(read_model),
            concurrency: DEFAULT_PROJECTION_CONCURRENCY,
            dead_letters: None,
        }
    }

    /// Sets aside, in `store`, the events that cannot be applied (they do not decode, or the
    /// read model refuses them for good, or its code panics on every attempt), so that the
    /// projection moves on; listed, replayed and dropped through `dead_letters::admin`. The
    /// consumer's name there is `<service>.<projection>`. Without a store such an event is
    /// retried for as long as it fails and holds up the events of its entity (see
    /// `kafka::KeepRetrying`).
    #[must_use]
    pub fn dead_letters(mut self, store: &DeadLetterStore) -> Self {
        self.dead_letters = Some(store.clone());
        self
    }

    /// At most `events` are applied at once, each in its own transaction (default
    /// [`DEFAULT_PROJECTION_CONCURRENCY`]). Events of one key are applied in order whatever
    /// the limit.
    #[must_use]
    pub fn concurrency(mut self, events: usize) -> Self {
        self.concurrency = events.max(1);
        self
    }

    /// Joins the projection's consumer group and applies events until `shutdown`. A new
    /// projection, or one just rebuilt, has a group without committed offsets and so starts
    /// from the beginning of the topic.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<RunningConsumer> {
        let generation = generation(&self.pool, self.read_model.name()).await?;
        let group = format!("{}.{}.g{generation}", self.service, self.read_model.name());
        tracing::info!(%group, topic = %self.topic.name, "starting projection");
        let apply = Arc::new(Apply {
            pool: self.pool,
            read_model: self.read_model.clone(),
            concurrency: Arc::new(Semaphore::new(self.concurrency)),
        });
        // Provisioning here too means the reader may start before the owner ever ran.
        let mut consumer = ConsumerBuilder::new(&self.kafka, group).provisioned_topic(self.topic);
        if let Some(store) = &self.dead_letters {
            let name = format!("{}.{}", self.service, self.read_model.name());
            consumer = consumer.on_failure(store.set_aside(name, apply.clone()));
        }
        consumer.start(apply, shutdown).await
    }
}

/// Empties the read model and moves the projection to a new consumer group generation; the
/// next [`Projector::start`] replays the topic from the beginning into the empty table. Stop
/// the running projector first and start it again afterwards.
pub async fn rebuild<R: ReadModel>(pool: &PgPool, read_model: &R) -> anyhow::Result<i32> {
    let projection = read_model.name();
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the rebuild transaction")?;
    read_model
        .clear(&mut tx)
        .await
        .context("Failed to clear the read model")?;
    sqlx::query("DELETE FROM projection_revisions WHERE projection = $1")
        .bind(projection)
        .execute(&mut *tx)
        .await
        .context("Failed to forget applied revisions")?;
    let generation: i32 = sqlx::query_scalar(
        "INSERT INTO projections (projection, generation) VALUES ($1, 2)
         ON CONFLICT (projection) DO UPDATE SET generation = projections.generation + 1
         RETURNING generation",
    )
    .bind(projection)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to start a new projection generation")?;
    tx.commit().await.context("Failed to commit the rebuild")?;
    tracing::info!(projection, generation, "read model cleared for a rebuild");
    Ok(generation)
}

async fn generation(pool: &PgPool, projection: &str) -> anyhow::Result<i32> {
    sqlx::query_scalar(
        "INSERT INTO projections (projection) VALUES ($1)
         ON CONFLICT (projection) DO UPDATE SET generation = projections.generation
         RETURNING generation",
    )
    .bind(projection)
    .fetch_one(pool)
    .await
    .context("Failed to read the projection generation")
}

struct Apply<R> {
    pool: PgPool,
    read_model: Arc<R>,
    /// Events applied at once. The consumer runs the events of different keys in parallel, as
    /// many as it holds; each needs a connection, and a projection catching up on a long topic
    /// would otherwise take the whole pool from the service's requests.
    concurrency: Arc<Semaphore>,
}

impl<R: ReadModel> Handler for Apply<R> {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        if message.payload.is_none() {
            // A tombstone: the `deleted` event before it already removed the row.
            return Ok(());
        }
        let event: EventEnvelope<R::Entity> = message.json()?;
        let projection = self.read_model.name();
        let _permit = self
            .concurrency
            .acquire()
            .await
            .context("The projection's concurrency limit was closed")?;
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin the projection transaction")?;
        let applies = claim_revision(&mut tx, projection, &event).await?;
        if applies {
            match event.kind {
                EventKind::Created | EventKind::Updated => {
                    let entity = event.payload.entity.as_ref().ok_or_else(|| {
                        HandlerError::permanent(anyhow::anyhow!(
                            "{:?} event {} has no entity",
                            event.kind,
                            event.event_id
                        ))
                    })?;
                    self.read_model
                        .upsert(&mut tx, &event.entity_id, event.revision, entity)
                        .await?;
                }
                EventKind::Deleted => self.read_model.delete(&mut tx, &event.entity_id).await?,
            }
        }
        tx.commit()
            .await
            .context("Failed to commit the projection transaction")?;

        let labels = [("projection", projection)];
        if applies {
            let delay = (Utc::now() - event.occurred_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!("integration_events_propagation_delay_seconds", &labels)
                .record(delay.as_secs_f64());
            metrics::gauge!("integration_events_last_applied_timestamp_seconds", &labels)
                .set(Utc::now().timestamp() as f64);
            metrics::counter!("integration_events_applied_total", &labels).increment(1);
        } else {
            // A duplicate or an event that arrived after a newer one: harmless by design.
            tracing::debug!(event_id = %event.event_id, revision = event.revision, "stale event skipped");
            metrics::counter!("integration_events_skipped_total", &labels).increment(1);
        }
        Ok(())
    }
}

/// Records the event's revision if it is newer than the last one applied for the entity, in the
/// same transaction as the change it makes; `false` means skip it.
async fn claim_revision<T>(
    conn: &mut PgConnection,
    projection: &str,
    event: &EventEnvelope<T>,
) -> anyhow::Result<bool> {
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO projection_revisions (projection, entity_id, revision, deleted)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection, entity_id) DO UPDATE
             SET revision = EXCLUDED.revision, deleted = EXCLUDED.deleted, applied_at = now()
             WHERE projection_revisions.revision < EXCLUDED.revision
         RETURNING revision",
    )
    .bind(projection)
    .bind(&event.entity_id)
    .bind(event.revision)
    .bind(event.kind == EventKind::Deleted)
    .fetch_optional(conn)
    .await
    .context("Failed to record the applied revision")?;
    Ok(claimed.is_some())
}

use kafka::TopicSpec;
use outbox::{Outbox, OutboxMessage};
use serde::Serialize;
use sqlx::PgConnection;

use crate::{EventEnvelope, EventKind};

/// The topic on which an owner publishes every change of one entity type:
/// `<service>.<entities>.v1`, keyed by entity id, compacted so that the latest event of each
/// entity is kept for new readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTopic {
    /// The owning service, e.g. `catalog-cache`.
    pub service: &'static str,
    /// The plural used in the topic name, e.g. `products`.
    pub entities: &'static str,
    /// The `entity_type` in the envelope, e.g. `product`.
    pub entity_type: &'static str,
}

impl EntityTopic {
    pub const fn new(
        service: &'static str,
        entities: &'static str,
        entity_type: &'static str,
    ) -> Self {
        Self {
            service,
            entities,
            entity_type,
        }
    }

    pub fn name(&self) -> String {
        format!("{}.{}.v1", self.service, self.entities)
    }

    /// Compacted: Kafka may drop all but the newest event per key, and the tombstone after a
    /// delete lets it drop the key altogether. Readers therefore never depend on history.
    pub fn spec(&self) -> TopicSpec {
        TopicSpec::new(self.name()).config("cleanup.policy", "compact")
    }

    /// Records the event in the caller's transaction, through the outbox: it is published if,
    /// and only if, the change it describes commits. A delete is followed by a tombstone.
    pub async fn record<T: Serialize>(
        &self,
        conn: &mut PgConnection,
        event: &EventEnvelope<T>,
        message_type: &str,
    ) -> anyhow::Result<()> {
        let topic = self.name();
        let message = OutboxMessage::json(&topic, &event.entity_id, message_type, event)?
            .message_id(event.event_id);
        Outbox::record(&mut *conn, message).await?;
        if event.kind == EventKind::Deleted {
            Outbox::record(
                &mut *conn,
                OutboxMessage::tombstone(&topic, &event.entity_id),
            )
            .await?;
        }
        Ok(())
    }
}

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version of the envelope format below; bump it on an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// An entity change as it travels on `<service>.<entity>.v1`. The full current entity rides
/// along (not a diff), so a consumer never has to call the owner to complete its copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope<T> {
    /// UUID v7; also the Kafka `message_id` header.
    pub event_id: Uuid,
    /// E.g. `product`.
    pub entity_type: String,
    /// Also the Kafka key, so every event of an entity lands on one partition, in order.
    pub entity_id: String,
    pub kind: EventKind,
    /// Per entity, +1 on each change. Consumers apply an event only over a lower revision.
    pub revision: i64,
    pub occurred_at: DateTime<Utc>,
    /// The service that owns the entity.
    pub originated_from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub schema_version: u32,
    pub payload: Payload<T>,
}

/// The entity for `created` and `updated` (with the fields that changed, on updates); only the
/// id for `deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_fields: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl<T> EventEnvelope<T> {
    fn new(
        entity_type: &str,
        entity_id: &str,
        kind: EventKind,
        revision: i64,
        originated_from: &str,
        payload: Payload<T>,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            kind,
            revision,
            occurred_at: Utc::now(),
            originated_from: originated_from.to_owned(),
            correlation_id: platform::telemetry::current_correlation_id(),
            schema_version: SCHEMA_VERSION,
            payload,
        }
    }

    pub fn created(
        entity_type: &str,
        entity_id: &str,
        revision: i64,
        originated_from: &str,
        entity: T,
    ) -> Self {
        let payload = Payload {
            entity: Some(entity),
            modified_fields: None,
            id: None,
        };
        Self::new(
            entity_type,
            entity_id,
            EventKind::Created,
            revision,
            originated_from,
            payload,
        )
    }

    pub fn updated(
        entity_type: &str,
        entity_id: &str,
        revision: i64,
        originated_from: &str,
        entity: T,
        modified_fields: Vec<String>,
    ) -> Self {
        let payload = Payload {
            entity: Some(entity),
            modified_fields: Some(modified_fields),
            id: None,
        };
        Self::new(
            entity_type,
            entity_id,
            EventKind::Updated,
            revision,
            originated_from,
            payload,
        )
    }

    pub fn deleted(
        entity_type: &str,
        entity_id: &str,
        revision: i64,
        originated_from: &str,
    ) -> Self {
        let payload = Payload {
            entity: None,
            modified_fields: None,
            id: Some(entity_id.to_owned()),
        };
        Self::new(
            entity_type,
            entity_id,
            EventKind::Deleted,
            revision,
            originated_from,
            payload,
        )
    }
}

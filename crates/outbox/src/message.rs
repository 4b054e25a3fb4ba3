//! What a service records: [`OutboxMessage`], and how its headers are stored.

use anyhow::Context as _;
use kafka::header;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What [`OutboxMessage::estimated_size`] adds for the standard headers (message id, content
/// type, trace context, correlation id: about 200 bytes with names) and the record and batch
/// framing (about 100 bytes), rounded up generously: a correlation id is the caller's string.
pub const STANDARD_OVERHEAD: usize = 1024;

/// The `message_type` of a tombstone made by [`OutboxMessage::tombstone`].
pub const TOMBSTONE_MESSAGE_TYPE: &str = "Tombstone";

/// A Kafka message to publish once the transaction that records it commits.
///
/// Build it with [`OutboxMessage::json`] or [`OutboxMessage::tombstone`] and record it with
/// [`crate::Outbox::record`].
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub topic: String,
    /// The Kafka key. Messages with the same key are published in the order they were recorded;
    /// use the id of the entity whose change the message announces.
    pub key: Option<String>,
    /// The `message_type` header: what the payload is, e.g. `OrderPlaced`.
    pub message_type: String,
    /// The `message_id` header, by which consumers deduplicate. A new UUID v7 unless set.
    pub message_id: Uuid,
    /// The encoded payload; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Headers besides the standard ones, published in this order.
    pub headers: Vec<(String, String)>,
}

impl OutboxMessage {
    /// A message whose payload is `payload` serialised as JSON, with a new UUID v7 id.
    pub fn json(
        topic: impl Into<String>,
        key: impl Into<String>,
        message_type: impl Into<String>,
        payload: &impl Serialize,
    ) -> anyhow::Result<Self> {
        let payload = serde_json::to_vec(payload).context("Failed to serialise the payload")?;
        Ok(Self {
            topic: topic.into(),
            key: Some(key.into()),
            message_type: message_type.into(),
            message_id: Uuid::now_v7(),
            payload: Some(payload),
            headers: Vec::new(),
        })
    }

    /// A tombstone (no payload) for `key`: on a compacted topic it deletes the key's value.
    pub fn tombstone(topic: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            key: Some(key.into()),
            message_type: TOMBSTONE_MESSAGE_TYPE.to_owned(),
            message_id: Uuid::now_v7(),
            payload: None,
            headers: Vec::new(),
        }
    }

    /// Sets the message id, e.g. one derived from the command being handled, so that a retried
    /// command cannot record its message twice (the `message_id` column is unique).
    #[must_use]
    pub fn message_id(mut self, id: Uuid) -> Self {
        self.message_id = id;
        self
    }

    /// Adds a header. The standard headers (`message_id`, `message_type`, `content_type`,
    /// `traceparent`, `correlation_id`) are set by the relay and cannot be added here.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// The size of the message as the broker will count it, estimated from above: payload,
    /// key, topic and the caller's headers, plus [`STANDARD_OVERHEAD`] for the headers the relay
    /// adds and the record's framing. Compression only makes the real size smaller.
    pub fn estimated_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        self.payload.as_ref().map_or(0, Vec::len)
            + self.key.as_ref().map_or(0, String::len)
            + self.topic.len()
            + self.message_type.len()
            + headers
            + STANDARD_OVERHEAD
    }

    /// Refuses what would be published wrongly. Checked when recording, inside the caller's
    /// transaction, so a mistake fails the request instead of surfacing later in the relay.
    pub(crate) fn validate(&self) -> Result<(), InvalidMessage> {
        if self.topic.is_empty() {
            return Err(InvalidMessage::EmptyTopic);
        }
        if self.message_type.is_empty() {
            return Err(InvalidMessage::EmptyMessageType);
        }
        if let Some((name, _)) = self.headers.iter().find(|(name, _)| is_reserved(name)) {
            return Err(InvalidMessage::ReservedHeader(name.clone()));
        }
        Ok(())
    }
}

/// Why [`crate::Outbox::record`] refused a message. Programming errors, never transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("the outbox message has an empty topic")]
    EmptyTopic,
    #[error("the outbox message has an empty message type")]
    EmptyMessageType,
    /// A second header of that name would contradict the one the relay sets. The correlation id
    /// and trace context come from the current span (open one with a `correlation_id` field).
    #[error("the outbox message sets the standard header `{0}`, which the relay sets itself")]
    ReservedHeader(String),
}

fn is_reserved(name: &str) -> bool {
    [
        header::MESSAGE_ID,
        header::MESSAGE_TYPE,
        header::CONTENT_TYPE,
        header::TRACEPARENT,
        header::CORRELATION_ID,
    ]
    .contains(&name)
}

/// The `headers` column: what the relay needs besides the other columns to publish the message
/// as it would have been published from inside the recording span.
///
/// An object rather than a list of pairs so that the two captured values cannot be confused
/// with the caller's headers, and `extra` is a list of pairs because Kafka headers are ordered
/// and may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredHeaders {
    /// W3C trace context of the span that recorded the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
    /// Correlation id of the span that recorded the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) extra: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_serialises_the_payload_and_gets_a_fresh_v7_id() {
        let first = OutboxMessage::json("orders.v1", "order-1", "OrderPlaced", &[1, 2]).unwrap();
        let second = OutboxMessage::json("orders.v1", "order-1", "OrderPlaced", &[1, 2]).unwrap();

        assert_eq!(first.topic, "orders.v1");
        assert_eq!(first.key.as_deref(), Some("order-1"));
        assert_eq!(first.message_type, "OrderPlaced");
        assert_eq!(first.payload.as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(first.message_id.get_version_num(), 7);
        assert_ne!(first.message_id, second.message_id);
        assert!(first.headers.is_empty());
    }

    #[test]
    fn a_tombstone_has_no_payload() {
        let message = OutboxMessage::tombstone("orders.v1", "order-1");

        assert_eq!(message.payload, None);
        assert_eq!(message.key.as_deref(), Some("order-1"));
        assert_eq!(message.message_type, TOMBSTONE_MESSAGE_TYPE);
    }

    #[test]
    fn builder_methods_set_the_id_and_append_headers_in_order() {
        let id = Uuid::now_v7();
        let message = OutboxMessage::tombstone("orders.v1", "order-1")
            .message_id(id)
            .header("tenant", "acme")
            .header("tenant", "globex");

        assert_eq!(message.message_id, id);
        assert_eq!(
            message.headers,
            [
                ("tenant".to_owned(), "acme".to_owned()),
                ("tenant".to_owned(), "globex".to_owned())
            ]
        );
        assert_eq!(message.validate(), Ok(()));
    }

    #[test]
    fn standard_headers_and_empty_names_are_refused() {
        let message = OutboxMessage::tombstone("orders.v1", "order-1");
        for name in [
            "message_id",
            "message_type",
            "content_type",
            "traceparent",
            "correlation_id",
        ] {
            assert_eq!(
                message.clone().header(name, "x").validate(),
                Err(InvalidMessage::ReservedHeader(name.to_owned()))
            );
        }
        assert_eq!(
            OutboxMessage::tombstone("", "order-1").validate(),
            Err(InvalidMessage::EmptyTopic)
        );
        let mut untyped = message;
        untyped.message_type.clear();
        assert_eq!(untyped.validate(), Err(InvalidMessage::EmptyMessageType));
    }

    #[test]
    fn stored_headers_are_a_readable_object_that_round_trips() {
        let stored = StoredHeaders {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
            correlation_id: Some("req-1".to_owned()),
            extra: vec![("tenant".to_owned(), "acme".to_owned())],
        };

        let json = serde_json::to_value(&stored).unwrap();

        assert_eq!(
            json,
            serde_json::json!({
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "correlation_id": "req-1",
                "extra": [["tenant", "acme"]],
            })
        );
        assert_eq!(
            serde_json::from_value::<StoredHeaders>(json).unwrap(),
            stored
        );
        // Rows written without any of them (the column default) read as empty.
        assert_eq!(
            serde_json::from_value::<StoredHeaders>(serde_json::json!({})).unwrap(),
            StoredHeaders::default()
        );
    }
}

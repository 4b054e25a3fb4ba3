use chrono::{DateTime, Utc};
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Headers as _};
use serde::de::DeserializeOwned;

use crate::handler_error::HandlerError;

/// Names of the headers that [`crate::Producer`] sets on every message.
pub mod header {
    /// Unique id of this message (UUID v7); consumers deduplicate by it.
    pub const MESSAGE_ID: &str = "message_id";
    /// What the payload is, e.g. `OrderPlaced` or `SendOrderConfirmation`.
    pub const MESSAGE_TYPE: &str = "message_type";
    pub const CONTENT_TYPE: &str = "content_type";
    /// W3C trace context of the span that published the message.
    pub const TRACEPARENT: &str = "traceparent";
    /// Id that ties together everything caused by one request.
    pub const CORRELATION_ID: &str = "correlation_id";
}

/// A consumed message, owned so that it can move into the handler's task.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// When the producer created the message (or the broker appended it).
    pub timestamp: Option<DateTime<Utc>>,
}

impl Message {
    pub(crate) fn from_borrowed(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
        }
    }

    /// The last value of a header, as Kafka allows repeated keys.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    pub fn message_id(&self) -> Option<&str> {
        self.header_str(header::MESSAGE_ID)
    }

    pub fn message_type(&self) -> Option<&str> {
        self.header_str(header::MESSAGE_TYPE)
    }

    /// Decodes the JSON payload. A payload that does not decode will never decode, so the
    /// error is not retryable.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let payload = self
            .payload
            .as_deref()
            .ok_or_else(|| HandlerError::permanent(anyhow::anyhow!("message has no payload")))?;
        serde_json::from_slice(payload).map_err(|e| {
            HandlerError::permanent(anyhow::Error::new(e).context("Failed to decode JSON payload"))
        })
    }
}

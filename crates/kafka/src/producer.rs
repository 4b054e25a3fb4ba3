use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use platform::telemetry::{TraceContext, current_correlation_id};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::KafkaConfig;
use crate::message::header;
use crate::topics::{TopicSpec, ensure_topics};

/// What describes a message besides its payload. The producer adds the standard headers
/// (message id, type, content type, trace context, correlation id) from these and from the
/// current tracing span.
#[derive(Debug, Clone)]
pub struct MessageHeaders {
    pub message_type: String,
    pub message_id: Uuid,
    pub content_type: String,
    /// Overrides the correlation id of the current span (e.g. when relaying a stored message).
    pub correlation_id: Option<String>,
    /// Overrides the trace context of the current span (e.g. when relaying a stored message).
    pub traceparent: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl MessageHeaders {
    pub fn new(message_type: impl Into<String>) -> Self {
        Self {
            message_type: message_type.into(),
            message_id: Uuid::now_v7(),
            content_type: "application/json".to_owned(),
            correlation_id: None,
            traceparent: None,
            extra: Vec::new(),
        }
    }

    #[must_use]
    pub fn message_id(mut self, id: Uuid) -> Self {
        self.message_id = id;
        self
    }

    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn to_kafka(&self) -> OwnedHeaders {
        let message_id = self.message_id.to_string();
        let traceparent = self
            .traceparent
            .clone()
            .or_else(|| TraceContext::current().map(|cx| cx.to_traceparent()));
        let correlation_id = self
            .correlation_id
            .clone()
            .or_else(current_correlation_id)
            .unwrap_or_else(|| message_id.clone());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: header::MESSAGE_ID,
                value: Some(&message_id),
            })
            .insert(Header {
                key: header::MESSAGE_TYPE,
                value: Some(&self.message_type),
            })
            .insert(Header {
                key: header::CONTENT_TYPE,
                value: Some(&self.content_type),
            })
            .insert(Header {
                key: header::CORRELATION_ID,
                value: Some(&correlation_id),
            });
        if let Some(traceparent) = &traceparent {
            headers = headers.insert(Header {
                key: header::TRACEPARENT,
                value: Some(traceparent),
            });
        }
        for (key, value) in &self.extra {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        headers
    }
}

/// Where the broker stored a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// A Kafka producer whose `publish` returns once the broker acknowledged the message
/// (acks=all, idempotent). Cheap to clone; share one per service.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    config: KafkaConfig,
    /// Topics this service provisioned: re-created if the broker reports them unknown (a broker
    /// that lost its state, such as the in-memory local broker after a restart).
    provisioned: Arc<Mutex<HashMap<String, TopicSpec>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(config: &KafkaConfig) -> anyhow::Result<Self> {
        let inner = config
            .producer()
            .create()
            .context("Failed to create the Kafka producer")?;
        Ok(Self {
            inner,
            config: config.clone(),
            provisioned: Arc::default(),
        })
    }

    /// Creates the topics that are missing and remembers them for re-creation.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> anyhow::Result<()> {
        ensure_topics(&self.config, specs).await?;
        let mut provisioned = self.provisioned.lock().expect("topic registry poisoned");
        for spec in specs {
            provisioned.insert(spec.name.clone(), spec.clone());
        }
        Ok(())
    }

    /// Serialises `payload` as JSON and publishes it; returns after the broker acknowledged.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: &str,
        payload: &T,
        headers: MessageHeaders,
    ) -> anyhow::Result<Delivery> {
        let bytes = serde_json::to_vec(payload).context("Failed to serialise the payload")?;
        self.publish_bytes(topic, Some(key.as_bytes()), Some(&bytes), headers)
            .await
    }

    /// Publishes an already encoded payload (`None` is a tombstone).
    pub async fn publish_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: MessageHeaders,
    ) -> anyhow::Result<Delivery> {
        let span = tracing::info_span!(
            "kafka.publish",
            topic,
            message_type = %headers.message_type,
            message_id = %headers.message_id,
        );
        async {
            let started = Instant::now();
            let mut result = self.send(topic, key, payload, &headers).await;
            if let Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) = &result
            {
                let spec = self
                    .provisioned
                    .lock()
                    .expect("topic registry poisoned")
                    .get(topic)
                    .cloned();
                if let Some(spec) = spec {
                    tracing::warn!(
                        topic,
                        "broker does not know the topic; provisioning it again"
                    );
                    ensure_topics(&self.config, &[spec]).await?;
                    result = self.send(topic, key, payload, &headers).await;
                }
            }
            let labels = [("topic", topic.to_owned())];
            match result {
                Ok(delivery) => {
                    metrics::counter!("kafka_messages_published_total", &labels).increment(1);
                    metrics::histogram!("kafka_publish_duration_seconds", &labels)
                        .record(started.elapsed().as_secs_f64());
                    Ok(delivery)
                }
                Err(error) => {
                    metrics::counter!("kafka_publish_errors_total", &labels).increment(1);
                    Err(anyhow::Error::new(error).context(format!("Failed to publish to {topic}")))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &MessageHeaders,
    ) -> Result<Delivery, KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(headers.to_kafka());
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        // The queue timeout only bounds waiting for room in librdkafka's local queue; the
        // delivery itself is bounded by `message.timeout.ms`.
        self.inner
            .send(record, Duration::from_secs(5))
            .await
            .map(|delivery| Delivery {
                partition: delivery.partition,
                offset: delivery.offset,
            })
            .map_err(|(error, _)| error)
    }

    /// Waits until every queued message is delivered. Blocking in librdkafka, so it runs on
    /// the blocking pool; call it last on shutdown.
    pub async fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush(timeout))
            .await
            .context("Failed to join the producer flush")?
            .context("Failed to flush the Kafka producer")
    }

    /// Blocking metadata request, used by the readiness check.
    pub(crate) fn fetch_metadata(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner
            .client()
            .fetch_metadata(None, timeout)
            .map(|_| ())
    }
}

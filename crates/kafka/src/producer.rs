use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use platform::telemetry::{TraceContext, current_correlation_id};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::KafkaConfig;
use crate::message::header;
use crate::topics::{TopicSpec, create_missing, ensure_topics};

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
///
/// It heals itself after a broker lost its state (the in-memory local broker after a restart,
/// a cluster rebuilt from scratch): topics it provisioned with [`Producer::ensure_topics`] are
/// created again when a publish to them fails, and the librdkafka producer is replaced when it
/// raised a fatal error (an idempotent producer whose producer id the broker forgot), which
/// would otherwise fail every later publish until the process restarts.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<RwLock<Inner>>,
    config: KafkaConfig,
    /// Topics this service provisioned: re-created if the broker reports them unknown (a broker
    /// that lost its state, such as the in-memory local broker after a restart).
    provisioned: Arc<Mutex<HashMap<String, TopicSpec>>>,
    /// When each topic was last provisioned again, so that a batch of failed publishes to one
    /// topic costs one `CreateTopics` request, not one per message.
    reprovisioned: Arc<tokio::sync::Mutex<HashMap<String, Instant>>>,
}

/// The librdkafka producer in use, and how many times it was replaced.
struct Inner {
    generation: u64,
    producer: FutureProducer,
}

/// A topic is provisioned again at most this often: enough for a broker that restarted to get
/// its topics back within a pass of the outbox relay, without a `CreateTopics` storm while a
/// broker keeps failing.
const REPROVISION_INTERVAL: Duration = Duration::from_secs(1);

/// How long provisioning a lost topic may take: a broker that answers creates a topic in
/// milliseconds, and a publish waiting for it must not wait librdkafka's default 60 s.
const REPROVISION_TIMEOUT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(config: &KafkaConfig) -> anyhow::Result<Self> {
        let producer = config
            .producer()
            .create()
            .context("Failed to create the Kafka producer")?;
        Ok(Self {
            inner: Arc::new(RwLock::new(Inner {
                generation: 0,
                producer,
            })),
            config: config.clone(),
            provisioned: Arc::default(),
            reprovisioned: Arc::default(),
        })
    }

    /// Creates the topics that are missing and remembers them for re-creation.
    ///
    /// Provision every topic the service writes to, also another service's (a task queue's
    /// topic): after a broker lost its state, a topic nobody provisioned again does not exist,
    /// and publishes to it fail until its owner starts.
    pub async fn ensure_topics(&self, specs: &[TopicSpec]) -> anyhow::Result<()> {
        ensure_topics(&self.config, specs).await?;
        let mut provisioned = self.provisioned.lock().expect("topic registry poisoned");
        for spec in specs {
            provisioned.insert(spec.name.clone(), spec.clone());
        }
        Ok(())
    }

    /// Creates again those of `topics` that this producer provisioned and the broker says do
    /// not exist; topics it did not provision are left alone.
    ///
    /// A broker that lost its state answers produce requests for a lost topic with
    /// unknown-topic errors, which librdkafka retries until `message.timeout.ms`: a caller
    /// waiting for acknowledgements calls this meanwhile. When it created a topic, the broker
    /// lost this producer's id as well, so the librdkafka producer is replaced: the waiting
    /// messages fail at once (purged) and their callers send them again.
    ///
    /// # Errors
    /// When the broker does not answer the metadata request, or the topics cannot be created.
    pub async fn restore_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let specs: Vec<TopicSpec> = {
            let provisioned = self.provisioned.lock().expect("topic registry poisoned");
            topics
                .iter()
                .filter_map(|topic| provisioned.get(*topic).cloned())
                .collect()
        };
        if specs.is_empty() {
            return Ok(());
        }
        let (generation, producer) = self.current();
        let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
        // One metadata request per topic: asking for all topics is expensive on a large
        // cluster. Blocking in librdkafka, so on the blocking pool.
        let missing = tokio::task::spawn_blocking(move || -> Result<Vec<String>, KafkaError> {
            let mut missing = Vec::new();
            for name in names {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&name), Duration::from_secs(1))?;
                let exists = metadata
                    .topics()
                    .iter()
                    .any(|topic| topic.name() == name && topic.error().is_none());
                if !exists {
                    missing.push(name);
                }
            }
            Ok(missing)
        })
        .await
        .context("Failed to join the topic metadata request")?
        .context("Failed to read topic metadata")?;
        if missing.is_empty() {
            return Ok(());
        }
        let specs: Vec<TopicSpec> = specs
            .into_iter()
            .filter(|spec| missing.contains(&spec.name))
            .collect();
        tracing::warn!(
            topics = ?missing,
            "the broker lost topics this service provisioned; provisioning them again"
        );
        create_missing(&self.config, &specs, Some(REPROVISION_TIMEOUT)).await?;
        // A broker that lost its topics lost this producer's id too; librdkafka would retry
        // the waiting messages against it until they time out.
        self.replace(generation, "the broker lost its state");
        Ok(())
    }

    /// The librdkafka producer in use and its generation.
    fn current(&self) -> (u64, FutureProducer) {
        let inner = self.inner.read().expect("producer lock poisoned");
        (inner.generation, inner.producer.clone())
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
        let span = publish_span(topic, &headers);
        async {
            let started = Instant::now();
            let (generation, producer) = self.current();
            let result = send(&producer, topic, key, payload, &headers).await;
            let message = Outgoing {
                topic,
                key,
                payload,
                headers: &headers,
            };
            self.settle(generation, &message, started, result).await
        }
        .instrument(span)
        .await
    }

    /// Hands a message to librdkafka at once, in the caller's order, without waiting for the
    /// broker; [`InFlight::acknowledged`] then waits for the broker's answer.
    ///
    /// Messages enqueued one after the other keep their order per partition (idempotent
    /// producer). A message librdkafka refuses before sending anything (too large for
    /// `message.max.bytes`, a full local queue, a producer that failed fatally) fails here,
    /// synchronously, so that a caller who must keep an order can hold back what follows it.
    ///
    /// # Errors
    /// The refusal, whose root is an `rdkafka::error::KafkaError` (see [`is_permanent`]).
    pub fn enqueue_bytes<'a>(
        &'a self,
        topic: &'a str,
        key: Option<&'a [u8]>,
        payload: Option<&'a [u8]>,
        headers: MessageHeaders,
    ) -> anyhow::Result<InFlight<'a>> {
        let span = publish_span(topic, &headers);
        let started = Instant::now();
        let (generation, producer) = self.current();
        let enqueued = span.in_scope(|| {
            producer
                .send_result(record(topic, key, payload, &headers))
                .map_err(|(error, _)| error)
        });
        match enqueued {
            Ok(delivery) => Ok(InFlight {
                producer: self,
                generation,
                topic,
                key,
                payload,
                headers,
                delivery,
                started,
                span,
            }),
            Err(error) => {
                if is_fatal(&error) {
                    self.replace_after_fatal(generation);
                }
                count_error(topic);
                Err(anyhow::Error::new(error).context(format!("Failed to publish to {topic}")))
            }
        }
    }

    /// What every publish does with librdkafka's answer: provisions a topic the broker forgot
    /// and sends once more, replaces a producer that failed fatally, and counts the outcome.
    async fn settle(
        &self,
        generation: u64,
        message: &Outgoing<'_>,
        started: Instant,
        mut result: Result<Delivery, KafkaError>,
    ) -> anyhow::Result<Delivery> {
        let topic = message.topic;
        if let Err(error) = &result {
            if is_fatal(error) {
                self.replace_after_fatal(generation);
            }
            // A broker that lost its state (the in-memory local broker after a restart)
            // answers produce requests for a lost topic with unknown-topic errors, and for this
            // producer's id with unknown-producer-id errors, both of which librdkafka retries
            // until `message.timeout.ms`: the caller sees a timeout. `recover` finds out whether
            // the broker answers, provisions a lost topic again and replaces a stuck producer;
            // then the message is sent once more. A producer replaced after a fatal error
            // sends it once more too.
            let fatal = is_fatal(error);
            let resend = if !fatal && might_be_missing_topic(error) {
                match self.recover(topic, generation).await {
                    Ok(resend) => resend,
                    Err(recover_error) => {
                        tracing::debug!(
                            topic,
                            error = format!("{recover_error:#}"),
                            "the broker does not answer; nothing to recover yet"
                        );
                        false
                    }
                }
            } else {
                false
            };
            if fatal || resend {
                let (_, producer) = self.current();
                result = send(
                    &producer,
                    topic,
                    message.key,
                    message.payload,
                    message.headers,
                )
                .await;
            }
        }
        match result {
            Ok(delivery) => {
                let labels = [("topic", topic.to_owned())];
                metrics::counter!("kafka_messages_published_total", &labels).increment(1);
                metrics::histogram!("kafka_publish_duration_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                Ok(delivery)
            }
            Err(error) => {
                count_error(topic);
                Err(anyhow::Error::new(error).context(format!("Failed to publish to {topic}")))
            }
        }
    }

    /// After a publish to `topic` failed as unknown or timed out: if the broker answers, a
    /// lost topic this producer provisioned is created again, and the librdkafka producer of
    /// `generation` is replaced, since a broker that answers but let a publish time out (or lost
    /// the topic) has most likely lost this producer's id too, which librdkafka keeps retrying
    /// against. Returns whether the message should be sent again. Runs at most once per
    /// [`REPROVISION_INTERVAL`]; the other failures of a batch then only learn whether the
    /// producer was replaced meanwhile.
    ///
    /// # Errors
    /// When the broker does not answer (it is down: nothing to recover yet) or a lost topic
    /// cannot be created.
    async fn recover(&self, topic: &str, generation: u64) -> anyhow::Result<bool> {
        // Held across the requests: the other failures of one batch wait for it.
        let mut last = self.reprovisioned.lock().await;
        if last
            .get(topic)
            .is_some_and(|at| at.elapsed() < REPROVISION_INTERVAL)
        {
            return Ok(self.current().0 != generation);
        }
        let outcome = self.recover_now(topic, generation).await;
        // Counted from the end of the attempt, failed or not: while the broker is down, each
        // failed publish of a batch would otherwise wait for requests of its own, one after
        // the other.
        last.insert(topic.to_owned(), Instant::now());
        outcome
    }

    /// The work of [`Self::recover`], without its rate limit.
    async fn recover_now(&self, topic: &str, generation: u64) -> anyhow::Result<bool> {
        if self.topic_exists(topic).await? {
            self.replace(generation, "a publish timed out while the broker answers");
            return Ok(true);
        }
        let spec = self
            .provisioned
            .lock()
            .expect("topic registry poisoned")
            .get(topic)
            .cloned();
        let Some(spec) = spec else {
            // Another service's topic, which only it can provision.
            return Ok(false);
        };
        create_missing(&self.config, &[spec], Some(REPROVISION_TIMEOUT)).await?;
        tracing::warn!(topic, "the broker had lost the topic; provisioned it again");
        self.replace(generation, "the broker lost its state");
        Ok(true)
    }

    /// Whether the broker has `topic`, by a metadata request bounded by 1 s.
    async fn topic_exists(&self, topic: &str) -> anyhow::Result<bool> {
        let (_, producer) = self.current();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(1))?;
            Ok::<_, KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .any(|topic| topic.name() == name && topic.error().is_none()),
            )
        })
        .await
        .context("Failed to join the topic metadata request")?
        .context("Failed to read topic metadata")
    }

    /// Replaces the librdkafka producer of `generation`, if it is still the one in use, by a
    /// new one with a new producer id. The old one's queued and in-flight messages are purged
    /// (their publishes fail, and are retried by their callers) on a thread of its own, since
    /// dropping a librdkafka producer blocks.
    fn replace(&self, generation: u64, why: &str) {
        let mut inner = self.inner.write().expect("producer lock poisoned");
        if inner.generation != generation {
            return; // replaced already
        }
        match self.config.producer().create::<FutureProducer>() {
            Ok(producer) => {
                let old = std::mem::replace(&mut inner.producer, producer);
                inner.generation += 1;
                drop(inner);
                tracing::warn!(why, "replaced the Kafka producer by a new one");
                std::thread::spawn(move || {
                    old.purge(PurgeConfig::default().queue().inflight());
                    drop(old);
                });
            }
            Err(error) => tracing::error!(
                why,
                %error,
                "cannot create a new Kafka producer; trying again at the next failure"
            ),
        }
    }

    /// Replaces the librdkafka producer of `generation` if it raised a fatal error: a fatally
    /// failed producer fails every publish until it is replaced.
    fn replace_after_fatal(&self, generation: u64) {
        let fatal = {
            let inner = self.inner.read().expect("producer lock poisoned");
            (inner.generation == generation)
                .then(|| inner.producer.client().fatal_error())
                .flatten()
        };
        if let Some((code, reason)) = fatal {
            tracing::warn!(%code, reason, "the Kafka producer failed fatally");
            self.replace(generation, "the producer failed fatally");
        }
    }

    /// Waits until every queued message is delivered. Blocking in librdkafka, so it runs on
    /// the blocking pool; call it last on shutdown.
    pub async fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        let (_, inner) = self.current();
        tokio::task::spawn_blocking(move || inner.flush(timeout))
            .await
            .context("Failed to join the producer flush")?
            .context("Failed to flush the Kafka producer")
    }

    /// Blocking metadata request, used by the readiness check.
    pub(crate) fn fetch_metadata(&self, timeout: Duration) -> Result<(), KafkaError> {
        let (_, inner) = self.current();
        inner.client().fetch_metadata(None, timeout).map(|_| ())
    }
}

/// One message's pieces, borrowed from the caller, for a second send.
struct Outgoing<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: &'a MessageHeaders,
}

/// A message librdkafka accepted ([`Producer::enqueue_bytes`]) and the broker has yet to
/// acknowledge.
#[must_use = "a message in flight is only known to be published once acknowledged"]
pub struct InFlight<'a> {
    producer: &'a Producer,
    generation: u64,
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: MessageHeaders,
    delivery: DeliveryFuture,
    started: Instant,
    span: tracing::Span,
}

impl std::fmt::Debug for InFlight<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("topic", &self.topic)
            .field("message_id", &self.headers.message_id)
            .finish_non_exhaustive()
    }
}

impl InFlight<'_> {
    /// Waits for the broker's acknowledgement, at most `message.timeout.ms`; like
    /// [`Producer::publish_bytes`], a topic the broker forgot is provisioned again and the
    /// message sent once more.
    pub async fn acknowledged(self) -> anyhow::Result<Delivery> {
        let Self {
            producer,
            generation,
            topic,
            key,
            payload,
            headers,
            delivery,
            started,
            span,
        } = self;
        async move {
            let result = delivery_result(delivery.await);
            let message = Outgoing {
                topic,
                key,
                payload,
                headers: &headers,
            };
            producer.settle(generation, &message, started, result).await
        }
        .instrument(span)
        .await
    }
}

/// Whether a publish failed for a reason that sending the same message again cannot fix: the
/// message itself is wrong for the broker (too large, an invalid record), or its topic is (an
/// invalid name, not authorised, refused by a policy). Anything else is transient: a broker
/// that is down or slow, a timeout, an unknown topic (its owner may create it, or the producer
/// provisions it again), a producer that failed fatally (it is replaced).
///
/// `error` is an error of [`Producer`]'s publishing methods; one without a Kafka error in its
/// chain is not permanent.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    // Not `root_cause`: a `KafkaError`'s own source is its bare error code.
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<KafkaError>())
        .is_some_and(|kafka| {
            matches!(kafka, KafkaError::MessageProduction(code) if is_permanent_code(*code))
        })
}

fn is_permanent_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        // The message, or a batch of it alone, exceeds `message.max.bytes` of the client, the
        // broker or the topic.
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            // The topic name is not valid for Kafka (`TOPIC_EXCEPTION`).
            | RDKafkaErrorCode::InvalidTopic
            // The broker refuses the record itself, e.g. one without a key on a compacted topic.
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::PolicyViolation
            // Authorisation is an operator's decision; a retry cannot change it.
            | RDKafkaErrorCode::TopicAuthorizationFailed
    )
}

fn is_fatal(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(RDKafkaErrorCode::Fatal)
    )
}

/// The errors of a publish to a topic the broker does not have: unknown when its metadata says
/// so, a timeout when the broker answered produce requests with unknown-topic errors until
/// `message.timeout.ms` ran out.
fn might_be_missing_topic(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                // The metadata lists the topic without partitions (recreated moments ago).
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::MessageTimedOut
        )
    )
}

fn publish_span(topic: &str, headers: &MessageHeaders) -> tracing::Span {
    tracing::info_span!(
        "kafka.publish",
        topic,
        message_type = %headers.message_type,
        message_id = %headers.message_id,
    )
}

fn count_error(topic: &str) {
    metrics::counter!("kafka_publish_errors_total", "topic" => topic.to_owned()).increment(1);
}

fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    headers: &MessageHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).headers(headers.to_kafka());
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    record
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: &MessageHeaders,
) -> Result<Delivery, KafkaError> {
    // The queue timeout only bounds waiting for room in librdkafka's local queue; the
    // delivery itself is bounded by `message.timeout.ms`.
    let answer = producer
        .send(record(topic, key, payload, headers), Duration::from_secs(5))
        .await;
    delivery_result(Ok(answer))
}

fn delivery_result(
    answer: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Result<Delivery, KafkaError> {
    match answer {
        Ok(Ok(delivery)) => Ok(Delivery {
            partition: delivery.partition,
            offset: delivery.offset,
        }),
        Ok(Err((error, _))) => Err(error),
        // librdkafka dropped the message without an answer: only when the producer is
        // destroyed with the message still queued.
        Err(_) => Err(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_no_retry_can_fix_is_permanent_and_the_rest_transient() {
        let failed = |code| {
            anyhow::Error::new(KafkaError::MessageProduction(code))
                .context("Failed to publish to t")
        };
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidTopic,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidRecord,
        ] {
            assert!(is_permanent(&failed(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::Fatal,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotEnoughReplicas,
        ] {
            assert!(!is_permanent(&failed(code)), "{code:?}");
        }
        assert!(!is_permanent(&anyhow::anyhow!("not a Kafka error")));
    }
}

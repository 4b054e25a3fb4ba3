//! What the outbox integration tests share: a database with the outbox table and a fresh topic,
//! relays that stop cleanly, and a reader that returns everything published to the topic.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kafka::{KafkaConfig, Producer, TopicSpec, ensure_topics};
use outbox::{Outbox, OutboxMessage, OutboxRelay, RelaySettings};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a test waits for anything that involves the broker.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Key of the markers [`Setup::read_all`] writes after everything else; never an outbox key.
const END_MARKER_KEY: &[u8] = b"__end-of-test__";

/// One test's database (with the outbox table) and topic.
pub struct Setup {
    pub db: TestDatabase,
    pub config: KafkaConfig,
    pub topic: String,
    pub partitions: i32,
}

impl Setup {
    pub async fn new(partitions: i32) -> Self {
        Self::on_broker(kafka_bootstrap_servers().await, partitions).await
    }

    /// Like [`Setup::new`], on the broker at `bootstrap_servers` (a private one).
    pub async fn on_broker(bootstrap_servers: String, partitions: i32) -> Self {
        platform::telemetry::init_for_tests();
        let config = KafkaConfig::new(bootstrap_servers, "asyncron-outbox-tests");
        let db = TestDatabase::create().await;
        outbox::migrate(&db.pool).await.expect("outbox migrations");
        let topic = unique_name("outbox-test");
        ensure_topics(&config, &[TopicSpec::new(&topic).partitions(partitions)])
            .await
            .expect("create the topic");
        Self {
            db,
            config,
            topic,
            partitions,
        }
    }

    /// A relay on the test database with a producer for the test broker.
    pub fn relay(&self, settings: RelaySettings) -> OutboxRelay {
        let producer = Producer::new(&self.config).expect("producer");
        OutboxRelay::new(self.db.pool.clone(), producer).with_settings(settings)
    }

    /// A JSON message `payload` for the test topic.
    pub fn message(&self, key: &str, payload: &serde_json::Value) -> OutboxMessage {
        OutboxMessage::json(&self.topic, key, "TestEvent", payload).expect("message")
    }

    /// Records `message` in a transaction of its own and commits it.
    pub async fn record(&self, message: OutboxMessage) -> Uuid {
        let mut tx = self.db.pool.begin().await.expect("begin");
        let id = Outbox::record(&mut tx, message).await.expect("record");
        tx.commit().await.expect("commit");
        id
    }

    /// Rows neither published, parked nor dropped.
    pub async fn pending(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM outbox
             WHERE published_at IS NULL AND parked_at IS NULL AND dropped_at IS NULL",
        )
        .fetch_one(&self.db.pool)
        .await
        .expect("count pending rows")
    }

    /// Waits until `message_id`'s row is marked published.
    pub async fn published(&self, deadline: Duration, message_id: Uuid) {
        eventually(
            deadline,
            &format!("message {message_id} to be published"),
            || async {
                sqlx::query_scalar::<_, bool>(
                    "SELECT published_at IS NOT NULL FROM outbox WHERE message_id = $1",
                )
                .bind(message_id)
                .fetch_one(&self.db.pool)
                .await
                .expect("read the row")
                .then_some(())
            },
        )
        .await;
    }

    pub async fn all_published(&self) {
        eventually(DEADLINE, "every row to be published", || async {
            (self.pending().await == 0).then_some(())
        })
        .await;
    }

    /// `(parked, dropped)` of `message_id`'s row.
    pub async fn parked_or_dropped(&self, message_id: Uuid) -> (bool, bool) {
        sqlx::query_as(
            "SELECT parked_at IS NOT NULL, dropped_at IS NOT NULL
             FROM outbox WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_one(&self.db.pool)
        .await
        .expect("read the row")
    }

    /// The row id of `message_id`.
    pub async fn row_id(&self, message_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT id FROM outbox WHERE message_id = $1")
            .bind(message_id)
            .fetch_one(&self.db.pool)
            .await
            .expect("read the row")
    }

    /// `(attempts, last_error, published)` of `message_id`'s row.
    pub async fn row_state(&self, message_id: Uuid) -> (i32, Option<String>, bool) {
        sqlx::query_as(
            "SELECT attempts, last_error, published_at IS NOT NULL
             FROM outbox WHERE message_id = $1",
        )
        .bind(message_id)
        .fetch_one(&self.db.pool)
        .await
        .expect("read the row")
    }

    /// Everything published to the topic so far, in partition and offset order.
    ///
    /// Call it once no more publishes are coming (relays stopped, or everything marked
    /// published: a row is marked only after its acknowledgement). It writes an end marker to
    /// every partition and reads from offset 0 up to the markers, so nothing written before is
    /// missed and the result is complete without guessing how long to wait. Watermarks would be
    /// simpler but the local broker reports them wrongly.
    pub async fn read_all(&self) -> Vec<Received> {
        self.write_end_markers().await;
        let (bootstrap, topic, partitions) = (
            self.config.bootstrap_servers.clone(),
            self.topic.clone(),
            self.partitions,
        );
        let (answer, read) = tokio::sync::oneshot::channel();
        // A thread of its own, never joined: closing a consumer can hang against the local
        // broker, and that must not hang the test.
        std::thread::spawn(move || {
            let consumer: BaseConsumer = match ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", unique_name("outbox-test-reader"))
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .create()
            {
                Ok(consumer) => consumer,
                Err(error) => {
                    let _ = answer.send(Err(format!("cannot create the consumer: {error}")));
                    return;
                }
            };
            let _ = answer.send(read_to_markers(&consumer, &topic, partitions));
            drop(consumer);
        });
        read.await
            .expect("the reader thread answers")
            .unwrap_or_else(|error| panic!("cannot read the topic: {error}"))
    }

    async fn write_end_markers(&self) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .create()
            .expect("marker producer");
        for partition in 0..self.partitions {
            producer
                .send(
                    FutureRecord::<[u8], [u8]>::to(&self.topic)
                        .partition(partition)
                        .key(END_MARKER_KEY)
                        .payload(b""),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(error, _)| error)
                .expect("write an end marker");
        }
    }
}

fn read_to_markers(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Received>, String> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(0))
            .map_err(|error| error.to_string())?;
    }
    consumer
        .assign(&assignment)
        .map_err(|error| error.to_string())?;
    let mut received = Vec::new();
    let mut ended = HashSet::new();
    let give_up_at = Instant::now() + DEADLINE;
    let mut last_error = None;
    while ended.len() < partitions as usize {
        if Instant::now() > give_up_at {
            return Err(format!(
                "end markers of only {ended:?} of {partitions} partitions within {DEADLINE:?} \
                 (last consumer error: {last_error:?})"
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) if message.key() == Some(END_MARKER_KEY) => {
                ended.insert(message.partition());
            }
            Some(Ok(message)) => received.push(Received {
                partition: message.partition(),
                offset: message.offset(),
                key: message
                    .key()
                    .map(|key| String::from_utf8_lossy(key).into_owned()),
                payload: message.payload().map(<[u8]>::to_vec),
                headers: message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| {
                                let value = header.value.unwrap_or_default();
                                (
                                    header.key.to_owned(),
                                    String::from_utf8_lossy(value).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            // librdkafka reports passing connection trouble (AllBrokersDown on a busy machine)
            // through poll and reconnects by itself; the deadline above catches a real failure.
            Some(Err(error)) => last_error = Some(error.to_string()),
            None => {}
        }
    }
    received.sort_by_key(|message| (message.partition, message.offset));
    Ok(received)
}

/// A message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The last value of a header, as Kafka allows repeated keys.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn message_id(&self) -> Uuid {
        self.header("message_id")
            .expect("a message_id header")
            .parse()
            .expect("a UUID message id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.payload.as_deref().expect("a payload")).expect("JSON")
    }
}

/// A relay running in the background until [`RunningRelay::stop`].
pub struct RunningRelay {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningRelay {
    pub fn start(relay: OutboxRelay) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(relay.run(shutdown.clone()));
        Self { shutdown, task }
    }

    /// Cancels the relay and checks that it returns, without error, within the deadline.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the relay stops after shutdown")
            .expect("the relay task does not panic")
            .expect("the relay returns Ok");
    }
}

/// Settings for tests: a short backoff keeps retries quick.
pub fn settings() -> RelaySettings {
    RelaySettings {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..RelaySettings::default()
    }
}

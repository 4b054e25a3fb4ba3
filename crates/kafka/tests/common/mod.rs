//! What the Kafka integration tests share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncron_kafka::{
    Handler, HandlerError, KafkaConfig, Message, MessageHeaders, Producer, TopicSpec, ensure_topics,
};

/// Client settings for tests: a short session timeout makes group joins and takeovers fast. 2 s
/// as in the local stack (`KAFKA_SESSION_TIMEOUT`): the local broker's join then takes 1 s (see
/// `docs/local-kafka.md`).
pub async fn config() -> KafkaConfig {
    platform::telemetry::init_for_tests();
    KafkaConfig::new(
        test_support::kafka_bootstrap_servers().await,
        "asyncron-kafka-tests",
    )
    .set("session.timeout.ms", "2000")
    .set("heartbeat.interval.ms", "300")
}

/// A fresh topic with `partitions` partitions.
pub async fn topic(config: &KafkaConfig, partitions: i32) -> String {
    let name = test_support::unique_name("kafka-test");
    ensure_topics(config, &[TopicSpec::new(&name).partitions(partitions)])
        .await
        .expect("create topic");
    name
}

/// Publishes `(key, seq)` for every key and every seq in `seqs`, keyed by key.
pub async fn publish_n(
    producer: &Producer,
    topic: &str,
    keys: usize,
    seqs: std::ops::Range<usize>,
) {
    for seq in seqs {
        for key in 0..keys {
            producer
                .publish(
                    topic,
                    &format!("key-{key}"),
                    &(key, seq),
                    MessageHeaders::new("TestEvent"),
                )
                .await
                .expect("publish");
        }
    }
}

/// Records what it handled: `(key, seq)` payloads by partition and offset.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub key: usize,
    pub seq: usize,
}

impl Recorder {
    pub fn record(&self, message: &Message) -> Result<(), HandlerError> {
        let (key, seq): (usize, usize) = message.json()?;
        self.seen.lock().unwrap().push(Seen {
            partition: message.partition,
            offset: message.offset,
            key,
            seq,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many times each `(key, seq)` was handled.
    pub fn counts(&self) -> HashMap<(usize, usize), usize> {
        let mut counts = HashMap::new();
        for seen in self.seen.lock().unwrap().iter() {
            *counts.entry((seen.key, seen.seq)).or_default() += 1;
        }
        counts
    }
}

impl Handler for Recorder {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        self.record(message)
    }
}

pub const DEADLINE: Duration = Duration::from_secs(30);

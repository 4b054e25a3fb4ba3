//! Where a new consumer's first message waits: publishes one message to a fresh topic, starts a
//! plain rdkafka consumer in a fresh group with asyncron's consumer settings and librdkafka's
//! `debug=cgrp,consumer,fetch,protocol`, and prints each log line with the milliseconds since
//! the consumer was created, then the time to the first message.
//!
//! ```text
//! cargo run -p asyncron-kafka --example join_timeline [-- key=value ...]
//! ```
//!
//! Each `key=value` overrides a librdkafka property (`session.timeout.ms=6000` to see the old
//! default). `KAFKA_BOOTSTRAP_SERVERS` picks the broker (default 127.0.0.1:9092).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use asyncron_kafka::{KafkaConfig, MessageHeaders, Producer, TopicSpec, ensure_topics};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::{ClientConfig, Message as _};

/// Prints librdkafka's log lines with the time since the consumer was created.
struct Timeline {
    started: Instant,
}

impl ClientContext for Timeline {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!(
            "{:>7.1} ms  {fac:<12} {log_message}",
            self.started.elapsed().as_secs_f64() * 1_000.0
        );
    }
}

impl ConsumerContext for Timeline {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let config = KafkaConfig::new(&bootstrap, "join-timeline");
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("join-timeline-{suffix}");
    ensure_topics(&config, &[TopicSpec::new(&topic).partitions(6)]).await?;
    let producer = Producer::new(&config)?;
    producer
        .publish(&topic, "key", &"waiting", MessageHeaders::new("Probe"))
        .await?;

    // The consumer defaults of `KafkaConfig::consumer` that matter for a join, then the
    // overrides from the command line.
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &bootstrap)
        .set("client.id", "join-timeline")
        .set("group.id", format!("join-timeline-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "20")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("allow.auto.create.topics", "false")
        .set("debug", "cgrp,consumer,fetch,protocol")
        .set_log_level(RDKafkaLogLevel::Debug);
    for argument in std::env::args().skip(1) {
        let (key, value) = argument
            .split_once('=')
            .with_context(|| format!("{argument:?} is not key=value"))?;
        client.set(key, value);
    }

    let started = Instant::now();
    let consumer: BaseConsumer<Timeline> = client
        .create_with_context(Timeline { started })
        .context("Failed to create the consumer")?;
    consumer.subscribe(&[&topic])?;
    let deadline = Duration::from_mins(1);
    loop {
        anyhow::ensure!(
            started.elapsed() < deadline,
            "no message within {deadline:?}"
        );
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(message)) => {
                eprintln!(
                    "first message (partition {}, offset {}) after {:.1} ms",
                    message.partition(),
                    message.offset(),
                    started.elapsed().as_secs_f64() * 1_000.0
                );
                break;
            }
            Some(Err(error)) => eprintln!("poll: {error}"),
            None => {}
        }
    }
    // Closing a consumer has hung on the local broker (docs/local-kafka.md): leave it behind.
    std::mem::forget(consumer);
    Ok(())
}

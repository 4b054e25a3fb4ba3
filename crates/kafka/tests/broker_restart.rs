//! A consumer when the broker restarts without its state (the local broker's memory storage):
//! against a private broker of this test's own, since the shared one must never go down.
//!
//! Known: when the broker was killed and started again at once, librdkafka 2.12 crashed the
//! test process in about one run of five (SIGSEGV in `rd_kafka_metadata_update_op`, its metadata
//! cache, while handling a reply of the new broker); see docs/local-kafka.md. The outage here
//! lasts a few seconds, as a real restart does.

#[allow(
    dead_code,
    reason = "the helpers are shared by the test binaries; this one uses only some"
)]
mod common;

use std::time::Duration;

use asyncron_kafka::{ConsumerBuilder, KafkaConfig, MessageHeaders, Producer, TopicSpec};
use common::{DEADLINE, Recorder, publish_n};
use test_support::{PrivateBroker, eventually, eventually_ok, unique_name};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_consumer_provisions_its_lost_topic_and_goes_on_after_the_broker_returns_empty() {
    platform::telemetry::init_for_tests();
    let mut broker = PrivateBroker::start().await;
    let config = KafkaConfig::new(broker.bootstrap_servers(), "restart-test")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300");
    let topic = unique_name("restart");
    let recorder = Recorder::default();
    let shutdown = CancellationToken::new();
    // Only the consumer provisions the topic: as a reader whose owner is down would.
    let consumer = ConsumerBuilder::new(&config, unique_name("group"))
        .provisioned_topic(TopicSpec::new(&topic).partitions(2))
        .start(recorder.clone(), shutdown.clone())
        .await
        .unwrap();
    let producer = Producer::new(&config).unwrap();
    publish_n(&producer, &topic, 2, 0..1).await;
    eventually(DEADLINE, "the messages before the restart", || async {
        (recorder.len() == 2).then_some(())
    })
    .await;

    // An outage of a few seconds, as a restart takes. (A broker killed and started again at
    // once is where librdkafka has crashed, see above.)
    broker.stop().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.restart().await;

    // Publishing fails until the consumer has provisioned the topic again. A producer of its
    // own, with a short timeout, so that each attempt ends soon: what a producer does after a
    // broker restart is the outbox's test.
    let producer = Producer::new(&config.clone().set("message.timeout.ms", "3000")).unwrap();
    for key in 0..2 {
        eventually_ok(DEADLINE, "a publish after the restart", || {
            let producer = producer.clone();
            let topic = topic.clone();
            async move {
                producer
                    .publish(
                        &topic,
                        &format!("key-{key}"),
                        &(key, 1_usize),
                        MessageHeaders::new("TestEvent"),
                    )
                    .await
            }
        })
        .await;
    }
    eventually(DEADLINE, "the messages after the restart", || async {
        let counts = recorder.counts();
        (counts.contains_key(&(0, 1)) && counts.contains_key(&(1, 1))).then_some(())
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), consumer.wait())
        .await
        .expect("the consumer stops")
        .expect("cleanly");
}

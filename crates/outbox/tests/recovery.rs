//! The relay after a broker outage, against a private broker of this test's own (the shared one
//! must never go down): rows recorded while the broker is down are published within 15 s of it
//! answering again, also when it came back without its topics (memory storage), and the
//! topics are provisioned again.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{RunningRelay, Setup};
use kafka::{Producer, TopicSpec};
use outbox::{OutboxRelay, RelaySettings};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer as _};
use test_support::{PrivateBroker, eventually};
use uuid::Uuid;

/// What the outbox promises after a broker outage, with the default settings.
const RECOVERY: Duration = Duration::from_secs(15);

/// A producer's `message.timeout.ms` (30 s by default) plus a pass: by then the relay has
/// failed at least one pass and is backing off or retrying, the state the promise is about.
const OUTAGE_DEADLINE: Duration = Duration::from_mins(1);

#[tokio::test]
async fn rows_recorded_during_an_outage_are_published_within_15_s_of_the_broker_returning_empty() {
    let mut broker = PrivateBroker::start().await;
    let setup = Setup::on_broker(broker.bootstrap_servers(), 3).await;
    let spec = TopicSpec::new(&setup.topic).partitions(3);
    // As a service does at start: the producer provisions (and remembers) its topics.
    let producer = Producer::new(&setup.config).unwrap();
    producer
        .ensure_topics(std::slice::from_ref(&spec))
        .await
        .unwrap();
    let relay = RunningRelay::start(
        OutboxRelay::new(setup.db.pool.clone(), producer).with_settings(RelaySettings::default()),
    );
    // The producer has talked to this broker (and got a producer id from it) before it goes.
    let before = setup
        .record(setup.message("order-0", &"before".into()))
        .await;
    setup.published(common::DEADLINE, before).await;

    broker.stop().await;
    let mut recorded: HashMap<String, Vec<Uuid>> = HashMap::new();
    for seq in 0..10 {
        for key in 0..4 {
            let key = format!("order-{key}");
            let id = setup
                .record(setup.message(&key, &serde_json::json!({ "seq": seq })))
                .await;
            recorded.entry(key).or_default().push(id);
        }
    }
    // The outage lasts until the relay has given up on a pass (a failure recorded), so that
    // recovery starts from failure and backoff, not from a first attempt.
    eventually(
        OUTAGE_DEADLINE,
        "a failed pass during the outage",
        || async {
            let failed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND attempts > 0",
            )
            .fetch_one(&setup.db.pool)
            .await
            .unwrap();
            (failed > 0).then_some(())
        },
    )
    .await;
    assert_eq!(setup.pending().await, 40);

    broker.restart().await; // empty: no topics, no producer ids
    let back = Instant::now();
    eventually(
        RECOVERY,
        "every row recorded during the outage to be published",
        || async { (setup.pending().await == 0).then_some(()) },
    )
    .await;
    let recovered_in = back.elapsed();
    relay.stop().await;
    println!("published everything {recovered_in:?} after the broker came back");

    assert_eq!(
        partitions(&setup.config.bootstrap_servers, &setup.topic),
        Some(3)
    );
    // The topic's history before the restart is gone with the broker; what was recorded
    // during the outage is there, in order per key.
    let received = setup.read_all().await;
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for message in &received {
        by_key
            .entry(message.key.clone().expect("a key"))
            .or_default()
            .push(message.message_id());
    }
    for ids in by_key.values_mut() {
        ids.dedup(); // a row in flight when a pass failed may have arrived twice, in a row
    }
    assert_eq!(by_key, recorded, "{received:?}");
    drop(broker);
}

/// The number of partitions the broker reports for `topic`, `None` if it has no such topic.
fn partitions(bootstrap_servers: &str, topic: &str) -> Option<usize> {
    let client: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .create()
        .unwrap();
    let metadata = client
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

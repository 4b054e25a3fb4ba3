//! The consumer runtime against a real broker: delivery, crash recovery, ordering, group
//! membership and shutdown.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncron_kafka::{
    ConsumerBuilder, Handler, HandlerError, Message, MessageHeaders, Producer, RetryPolicy, header,
};
use common::{DEADLINE, Recorder, config, publish_n, topic};
use platform::telemetry::TraceContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use test_support::{eventually, unique_name};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Each message with the trace context its handler ran in.
type CapturedMessages = Arc<Mutex<Vec<(Message, Option<TraceContext>)>>>;

#[derive(Clone, Default)]
struct Captured {
    messages: CapturedMessages,
}

impl Handler for Captured {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        self.messages
            .lock()
            .unwrap()
            .push((message.clone(), TraceContext::current()));
        Ok(())
    }
}

#[tokio::test]
async fn publish_then_consume_keeps_payload_headers_and_trace_context() {
    let config = config().await;
    let topic = topic(&config, 1).await;
    let producer = Producer::new(&config).unwrap();

    let origin = tracing::info_span!("origin", correlation_id = "req-42");
    let published_trace = async {
        producer
            .publish(
                &topic,
                "order-1",
                &serde_json::json!({"total": 10}),
                MessageHeaders::new("OrderPlaced").header("tenant", "acme"),
            )
            .await
            .unwrap();
        TraceContext::current().expect("the test subscriber tracks trace context")
    }
    .instrument(origin)
    .await;

    let captured = Captured::default();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, unique_name("group"))
        .topic(&topic)
        .start(captured.clone(), shutdown.clone())
        .await
        .unwrap();
    let (message, handler_trace) = eventually(DEADLINE, "the message", || async {
        captured.messages.lock().unwrap().first().cloned()
    })
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();

    assert_eq!(message.key_str(), Some("order-1"));
    assert_eq!(
        message.json::<serde_json::Value>().unwrap(),
        serde_json::json!({"total": 10})
    );
    assert_eq!(message.message_type(), Some("OrderPlaced"));
    assert_eq!(
        message.header_str(header::CONTENT_TYPE),
        Some("application/json")
    );
    assert_eq!(message.header_str(header::CORRELATION_ID), Some("req-42"));
    assert_eq!(message.header_str("tenant"), Some("acme"));
    assert!(uuid::Uuid::parse_str(message.message_id().unwrap()).is_ok());
    let sent =
        TraceContext::parse_traceparent(message.header_str(header::TRACEPARENT).unwrap()).unwrap();
    assert_eq!(
        sent.trace_id, published_trace.trace_id,
        "traceparent carries the publisher's trace"
    );
    let handler_trace = handler_trace.expect("the handler runs inside a span");
    assert_eq!(
        handler_trace.trace_id, published_trace.trace_id,
        "the handler continues the trace"
    );
}

/// Handles `budget` messages, then hangs in every handler: a kill then lands mid-stream, with
/// handlers in flight, however fast the machine is.
#[derive(Clone)]
struct StallsAfter {
    recorder: Recorder,
    budget: Arc<AtomicUsize>,
}

impl Handler for StallsAfter {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        if self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            std::future::pending::<()>().await;
        }
        self.recorder.record(message)
    }
}

fn committed_offsets(
    config: &asyncron_kafka::KafkaConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    0
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn a_killed_consumer_loses_nothing_and_only_uncommitted_messages_come_again() {
    let config = config().await;
    let topic = topic(&config, 3).await;
    let group = unique_name("group");
    let producer = Producer::new(&config).unwrap();
    publish_n(&producer, &topic, 30, 0..20).await; // 600 messages

    let first = StallsAfter {
        recorder: Recorder::default(),
        budget: Arc::new(AtomicUsize::new(200)),
    };
    let consumer = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .start(first.clone(), CancellationToken::new())
        .await
        .unwrap();
    eventually(DEADLINE, "some progress", || async {
        (first.recorder.len() >= 200).then_some(())
    })
    .await;
    consumer.kill().await;
    let handled_before_kill = first.recorder.snapshot();
    let committed = committed_offsets(&config, &group, &topic, 3);

    let second = Recorder::default();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .start(second.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually(DEADLINE, "every message handled", || async {
        let mut all = first.recorder.counts();
        for (k, n) in second.counts() {
            *all.entry(k).or_default() += n;
        }
        (all.len() == 600).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();

    assert!(
        handled_before_kill.len() < 600,
        "the kill landed mid-stream"
    );
    for seen in second.snapshot() {
        let from = committed.get(&seen.partition).copied().unwrap_or(0);
        assert!(
            seen.offset >= from,
            "{seen:?} was committed at {from} yet delivered again"
        );
    }
    let redelivered: Vec<_> = second
        .snapshot()
        .into_iter()
        .filter(|s| {
            handled_before_kill
                .iter()
                .any(|b| b.key == s.key && b.seq == s.seq)
        })
        .collect();
    println!(
        "handled before kill: {}, redelivered after restart: {}",
        handled_before_kill.len(),
        redelivered.len()
    );
}

/// Records the order per key and the highest number of handlers running at once.
#[derive(Clone, Default)]
struct OrderProbe {
    recorder: Recorder,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Handler for OrderProbe {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        // Uneven handling times would reorder a key if the runtime let it.
        let (key, seq): (usize, usize) = message.json()?;
        tokio::time::sleep(Duration::from_micros(
            ((key * 7 + seq * 13) % 5) as u64 * 300,
        ))
        .await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.recorder.record(message)
    }
}

#[tokio::test]
async fn order_holds_per_key_while_keys_run_in_parallel() {
    let config = config().await;
    let topic = topic(&config, 1).await;
    let producer = Producer::new(&config).unwrap();
    publish_n(&producer, &topic, 8, 0..40).await;

    let probe = OrderProbe::default();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, unique_name("group"))
        .topic(&topic)
        .max_in_flight_per_partition(16) // small, so back-pressure pauses and resumes the partition
        .start(probe.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually(DEADLINE, "all 320 messages", || async {
        (probe.recorder.len() >= 320).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();

    let seen = probe.recorder.snapshot();
    assert_eq!(seen.len(), 320, "each message exactly once");
    let mut last: HashMap<usize, usize> = HashMap::new();
    for s in &seen {
        if let Some(previous) = last.insert(s.key, s.seq) {
            assert!(
                s.seq == previous + 1,
                "key {} went from {previous} to {}",
                s.key,
                s.seq
            );
        }
    }
    assert!(
        probe.max_running.load(Ordering::SeqCst) > 1,
        "different keys of one partition ran in parallel"
    );
}

/// `(member, key, seq)` of every message handled.
type MemberLog = Arc<Mutex<Vec<(&'static str, usize, usize)>>>;

/// Tags what each member handled.
#[derive(Clone)]
struct Member {
    name: &'static str,
    log: MemberLog,
}

impl Handler for Member {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let (key, seq): (usize, usize) = message.json()?;
        self.log.lock().unwrap().push((self.name, key, seq));
        Ok(())
    }
}

#[tokio::test]
async fn two_members_share_partitions_and_the_survivor_takes_over() {
    let config = config().await;
    let topic = topic(&config, 4).await;
    let group = unique_name("group");
    let producer = Producer::new(&config).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let a_stop = CancellationToken::new();
    let b_stop = CancellationToken::new();
    let a = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .start(
            Member {
                name: "a",
                log: log.clone(),
            },
            a_stop.clone(),
        )
        .await
        .unwrap();
    let b = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .start(
            Member {
                name: "b",
                log: log.clone(),
            },
            b_stop.clone(),
        )
        .await
        .unwrap();

    // Publish in rounds until both members handled something: then the group has split.
    let mut round = 0;
    let started = Instant::now();
    loop {
        publish_n(&producer, &topic, 8, round..round + 1).await;
        round += 1;
        let members: HashSet<_> = log.lock().unwrap().iter().map(|(m, _, _)| *m).collect();
        if members.len() == 2 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the two members never shared the partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // pacing the rounds, not synchronising
    }

    a_stop.cancel();
    a.wait().await.unwrap();
    publish_n(&producer, &topic, 8, round..round + 5).await;
    let expected = 8 * (round + 5);
    eventually(DEADLINE, "every message after a left", || async {
        let handled: HashSet<_> = log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, k, s)| (*k, *s))
            .collect();
        (handled.len() >= expected).then_some(())
    })
    .await;
    b_stop.cancel();
    b.wait().await.unwrap();
    let handled: HashSet<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, k, s)| (*k, *s))
        .collect();
    assert_eq!(handled.len(), expected, "nothing lost");
}

/// Counts handlers started and finished; each takes a while.
#[derive(Clone, Default)]
struct Slow {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl Handler for Slow {
    async fn handle(&self, _: &Message) -> Result<(), HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_work_and_commits_it() {
    let config = config().await;
    let topic = topic(&config, 1).await;
    let group = unique_name("group");
    let producer = Producer::new(&config).unwrap();
    publish_n(&producer, &topic, 5, 0..1).await;

    let slow = Slow::default();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .drain_timeout(Duration::from_secs(5))
        .start(slow.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually(DEADLINE, "5 handlers running", || async {
        (slow.started.load(Ordering::SeqCst) == 5).then_some(())
    })
    .await;
    let stopping = Instant::now();
    shutdown.cancel();
    consumer.wait().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped within the drain deadline"
    );
    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        5,
        "in-flight handlers finished"
    );

    // The same group continues after the committed offsets: only the new message arrives.
    producer
        .publish(&topic, "marker", &(99, 0), MessageHeaders::new("TestEvent"))
        .await
        .unwrap();
    let after = Recorder::default();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .start(after.clone(), shutdown.clone())
        .await
        .unwrap();
    eventually(DEADLINE, "the marker", || async {
        (after.len() >= 1).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();
    assert_eq!(
        after.snapshot().iter().map(|s| s.key).collect::<Vec<_>>(),
        vec![99]
    );
}

/// Fails on every message of key 1, in the way `mode` says; records the others.
#[derive(Clone)]
struct Poisoned {
    recorder: Recorder,
    mode: Poison,
    /// Runs of the handler on key 1.
    runs: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
enum Poison {
    /// A retryable error every time.
    Fails,
    /// A panic every time.
    Panics,
    /// `Unavailable` for the first `n` runs, then success.
    UnavailableFor(usize),
}

impl Poisoned {
    fn new(mode: Poison) -> Self {
        Self {
            recorder: Recorder::default(),
            mode,
            runs: Arc::default(),
        }
    }
}

impl Handler for Poisoned {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let (key, _): (usize, usize) = message.json()?;
        if key == 1 {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            match self.mode {
                Poison::Fails => {
                    return Err(HandlerError::retryable(anyhow::anyhow!("provider down")));
                }
                Poison::Panics => panic!("poisoned message"),
                Poison::UnavailableFor(n) if run <= n => {
                    return Err(HandlerError::unavailable(anyhow::anyhow!("database down")));
                }
                Poison::UnavailableFor(_) => {}
            }
        }
        self.recorder.record(message)
    }
}

/// Remembers the failures it was given; refuses the first `refuse` of them.
#[derive(Clone, Default)]
struct Recording {
    failures: Arc<Mutex<Vec<(i64, u32, String)>>>,
    refuse: Arc<AtomicUsize>,
}

impl asyncron_kafka::FailurePolicy for Recording {
    fn on_failure<'a>(
        &'a self,
        failure: asyncron_kafka::Failure<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        let refused = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        self.failures.lock().unwrap().push((
            failure.message.offset,
            failure.attempts,
            failure.error.to_string(),
        ));
        Box::pin(async move {
            anyhow::ensure!(!refused, "the store is down");
            Ok(())
        })
    }
}

const FAST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(10),
    max_backoff: Duration::from_millis(20),
};

/// Publishes keys 0, 1, 2 at offsets 0, 1, 2 of a one-partition topic, then key 0 again at
/// offset 3, and starts `handler` on it with `policy` (the default one if `None`).
async fn run_poisoned(
    handler: Poisoned,
    policy: Option<Recording>,
) -> (
    asyncron_kafka::RunningConsumer,
    CancellationToken,
    String,
    String,
) {
    let config = config().await;
    let topic = topic(&config, 1).await;
    let group = unique_name("group");
    let producer = Producer::new(&config).unwrap();
    publish_n(&producer, &topic, 3, 0..1).await;
    publish_n(&producer, &topic, 1, 1..2).await;
    let shutdown = CancellationToken::new();
    let mut builder = ConsumerBuilder::new(&config, &group)
        .topic(&topic)
        .retry(FAST_RETRY);
    if let Some(policy) = policy {
        builder = builder.on_failure(policy);
    }
    let consumer = builder.start(handler, shutdown.clone()).await.unwrap();
    (consumer, shutdown, group, topic)
}

#[tokio::test]
async fn a_message_that_keeps_failing_holds_only_its_key_and_never_stops_the_consumer() {
    let poisoned = Poisoned::new(Poison::Fails);
    let (consumer, shutdown, group, topic) = run_poisoned(poisoned.clone(), None).await;

    // Keys 0 and 2 go on, twice for key 0, while key 1 keeps failing.
    eventually(DEADLINE, "the other keys' messages are handled", || async {
        (poisoned.recorder.len() == 3).then_some(())
    })
    .await;
    eventually(
        DEADLINE,
        "the failing message is tried again and again",
        || async {
            (poisoned.runs.load(Ordering::SeqCst) > 2 * FAST_RETRY.max_attempts as usize)
                .then_some(())
        },
    )
    .await;

    shutdown.cancel();
    consumer
        .wait()
        .await
        .expect("a failing message does not stop the consumer");
    let committed = committed_offsets(&config().await, &group, &topic, 1);
    assert!(
        committed.get(&0).copied().unwrap_or(0) <= 1,
        "never committed past the failing message: {committed:?}"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_and_the_partition_moves_on() {
    let poisoned = Poisoned::new(Poison::Panics);
    let policy = Recording::default();
    let (consumer, shutdown, group, topic) =
        run_poisoned(poisoned.clone(), Some(policy.clone())).await;

    eventually(DEADLINE, "every other message is handled", || async {
        (poisoned.recorder.len() == 3).then_some(())
    })
    .await;
    eventually(
        DEADLINE,
        "the panicking message reaches the policy",
        || async { (!policy.failures.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();

    let failures = policy.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (offset, attempts, error) = &failures[0];
    assert_eq!((*offset, *attempts), (1, FAST_RETRY.max_attempts));
    assert!(
        error.contains("the handler panicked: poisoned message"),
        "{error}"
    );
    assert_eq!(poisoned.runs.load(Ordering::SeqCst), 3);
    let committed = committed_offsets(&config().await, &group, &topic, 1);
    assert_eq!(
        committed.get(&0),
        Some(&4),
        "committed past the set-aside message"
    );
}

#[tokio::test]
async fn an_unavailable_dependency_is_waited_out_without_spending_attempts() {
    // More runs than the retry policy allows attempts: none of them counts.
    let poisoned = Poisoned::new(Poison::UnavailableFor(6));
    let policy = Recording::default();
    let (consumer, shutdown, _, _) = run_poisoned(poisoned.clone(), Some(policy.clone())).await;

    eventually(
        DEADLINE,
        "the message is handled once the dependency is back",
        || async { (poisoned.recorder.len() == 4).then_some(()) },
    )
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();
    assert_eq!(poisoned.runs.load(Ordering::SeqCst), 7);
    assert!(
        policy.failures.lock().unwrap().is_empty(),
        "nothing was set aside"
    );
}

#[tokio::test]
async fn a_failure_policy_that_fails_runs_the_message_again_until_it_is_dealt_with() {
    let poisoned = Poisoned::new(Poison::Fails);
    let policy = Recording::default();
    policy.refuse.store(2, Ordering::SeqCst);
    let (consumer, shutdown, group, topic) =
        run_poisoned(poisoned.clone(), Some(policy.clone())).await;

    eventually(
        DEADLINE,
        "the policy takes the message on its third try",
        || async { (policy.failures.lock().unwrap().len() == 3).then_some(()) },
    )
    .await;
    eventually(DEADLINE, "every other message is handled", || async {
        (poisoned.recorder.len() == 3).then_some(())
    })
    .await;
    shutdown.cancel();
    consumer.wait().await.unwrap();
    // Each round ran the handler through all its attempts again.
    assert_eq!(
        poisoned.runs.load(Ordering::SeqCst),
        3 * FAST_RETRY.max_attempts as usize
    );
    let committed = committed_offsets(&config().await, &group, &topic, 1);
    assert_eq!(committed.get(&0), Some(&4));
}

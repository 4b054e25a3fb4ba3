//! The `kafka` scenario: asyncron's `Producer` and consumer runtime against raw rdkafka
//! (`FutureProducer`, `BaseConsumer`), on the same broker in the same run.
//!
//! Both sides go through the same procedure: the code that publishes, waits and measures is
//! shared, and only [`Publisher::send`] and [`Bench::start_consumer`] differ per side. Every run
//! uses fresh topics and fresh consumer groups. The crate README says what each row measures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{self, FuturesUnordered, StreamExt as _, TryStreamExt as _};
use kafka::{
    ConsumerBuilder, Handler, HandlerError, KafkaConfig, Message, MessageHeaders, Producer,
    RunningConsumer, TopicSpec, ensure_topics,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::broker;
use crate::progress::Progress;
use crate::report::{
    self,
    Better::{Higher, Lower},
    Sides, Unit,
};
use crate::stats::{self, LatencyHistogram, LatencySummary};

/// Messages for the throughput rows unless `--messages` says otherwise.
pub const DEFAULT_MESSAGES: usize = 100_000;
const CLIENT_ID: &str = "asyncron-bench";

const PARTITIONS: i32 = 6;
const PAYLOAD_BYTES: usize = 200;
/// Keys the throughput messages are spread over (and the latency probes).
const KEYS: usize = 1_000;
/// Payloads are prepared once and reused round-robin, so no allocation happens while measuring.
const DISTINCT_PAYLOADS: usize = 4_096;
/// Publishes awaiting their acknowledgement at once, on both sides.
const PRODUCE_IN_FLIGHT: usize = 1_024;
/// Unmeasured messages each producer sends first: connections, metadata, broker allocations.
const WARM_UP_MESSAGES: usize = 2_000;
/// One latency probe every this often.
const PROBE_INTERVAL: Duration = Duration::from_millis(2);

/// How long a consumer may take to join its group and receive its first message.
const JOIN_TIMEOUT: Duration = Duration::from_mins(1);
/// How long the last latency probe may take to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `RunningConsumer::wait` may take after shutdown before the bench moves on.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The raw consumer's poll timeout; it returns as soon as a message is there.
const RAW_POLL_TIMEOUT: Duration = Duration::from_millis(20);
const MESSAGE_TYPE: &str = "BenchMessage";

/// `KAFKA_SESSION_TIMEOUT` as the services read it (default 6 s): the consumers' session timeout,
/// which on the local broker sets how long a group join takes (`scripts/test.sh` and
/// `scripts/up.sh` set 2 s for it, see `docs/local-kafka.md`).
pub fn session_timeout_from_env() -> anyhow::Result<Duration> {
    Ok(platform::config::kafka_session_timeout(
        &platform::config::Env::from_process(),
    )?)
}

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let bootstrap = broker::bootstrap_from_env();
    broker::check_broker(&bootstrap)?;
    let bench = Bench::new(bootstrap, session_timeout_from_env()?);
    eprintln!(
        "kafka scenario: broker {}, run {}",
        bench.bootstrap, bench.run_id
    );
    bench.provision().await?;

    let messages = options.messages_or(DEFAULT_MESSAGES);
    let workload = Workload::new();
    let asyncron = Publisher::Asyncron(Producer::new(&bench.config)?);
    let raw = Publisher::Raw(bench.raw_producer()?);

    // 1. Produce throughput. Both consumers then read the topic asyncron produced, so that
    //    they get exactly the same messages (headers included).
    let warm_up = bench.topic("warm-up");
    let warm_ups = WARM_UP_MESSAGES.min(messages);
    produce(
        &asyncron,
        &warm_up,
        &workload,
        warm_ups,
        "warm-up (asyncron)",
    )
    .await?;
    produce(&raw, &warm_up, &workload, warm_ups, "warm-up (rdkafka)").await?;
    let consumed_topic = bench.topic("throughput-asyncron");
    let produced_asyncron = produce(
        &asyncron,
        &consumed_topic,
        &workload,
        messages,
        "produce (asyncron)",
    )
    .await?;
    let produced_raw = produce(
        &raw,
        &bench.topic("throughput-rdkafka"),
        &workload,
        messages,
        "produce (rdkafka)",
    )
    .await?;

    // 2. Consume throughput, each side in its own fresh group.
    let consumed = Measured {
        asyncron: bench
            .consume(Side::Asyncron, &consumed_topic, messages, options)
            .await?,
        raw: bench
            .consume(Side::Raw, &consumed_topic, messages, options)
            .await?,
    };

    // 3. End-to-end latency: each side's producer feeds its own consumer.
    let latency = Measured {
        asyncron: bench.latency(Side::Asyncron, &asyncron, options).await?,
        raw: bench.latency(Side::Raw, &raw, options).await?,
    };

    let produced = Measured {
        asyncron: produced_asyncron,
        raw: produced_raw,
    };
    let rows = comparisons(messages, &produced, &consumed, &latency);
    report::print(
        "kafka: asyncron vs raw rdkafka",
        &notes(&bench, options, &latency),
        &rows,
    );
    Ok(())
}

/// The same measurement taken on both sides.
#[derive(Debug, Clone, Copy)]
struct Measured<T> {
    asyncron: T,
    raw: T,
}

impl<T> Measured<T> {
    fn map<U>(&self, f: impl Fn(&T) -> U) -> Measured<U> {
        Measured {
            asyncron: f(&self.asyncron),
            raw: f(&self.raw),
        }
    }
}

fn comparisons(
    messages: usize,
    produced: &Measured<Duration>,
    consumed: &Measured<Consumed>,
    latency: &Measured<LatencySummary>,
) -> Vec<Comparison> {
    let rate = |elapsed: Duration| stats::per_second(messages, elapsed);
    let millis = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let row = |better, measurement: &str, unit, values: Measured<f64>| {
        Comparison::new(
            measurement,
            unit,
            better,
            [values.asyncron],
            Some(values.raw),
        )
    };
    let per_second = Unit::PerSecond("msg/s");
    vec![
        row(Higher, "produce", per_second, produced.map(|d| rate(*d))),
        row(
            Higher,
            "consume, first to last message",
            per_second,
            consumed.map(|c| rate(c.first_to_last)),
        ),
        row(
            Higher,
            "consume, incl. group join",
            per_second,
            consumed.map(|c| rate(c.total)),
        ),
        row(
            Lower,
            "consume, start to first message",
            Unit::Seconds,
            consumed.map(|c| c.join.as_secs_f64()),
        ),
        row(
            Lower,
            "end-to-end latency p50",
            Unit::Millis,
            latency.map(|l| millis(l.p50)),
        ),
        row(
            Lower,
            "end-to-end latency p99",
            Unit::Millis,
            latency.map(|l| millis(l.p99)),
        ),
        row(
            Lower,
            "end-to-end latency max",
            Unit::Millis,
            latency.map(|l| millis(l.max)),
        ),
    ]
}

fn notes(bench: &Bench, options: &Options, latency: &Measured<LatencySummary>) -> Vec<String> {
    let in_flight = options
        .max_in_flight
        .map_or_else(|| "the runtime's default".to_owned(), |n| n.to_string());
    vec![
        format!(
            "broker {}, run {}, session.timeout.ms {} (KAFKA_SESSION_TIMEOUT)",
            bench.bootstrap, bench.run_id, bench.session_timeout_ms
        ),
        format!(
            "throughput: {} messages of {PAYLOAD_BYTES} B over {} keys, {PARTITIONS} partitions, \
             {} publishes in flight; both consumers read the same topic (asyncron's)",
            report::count(options.messages_or(DEFAULT_MESSAGES) as f64),
            report::count(KEYS as f64),
            report::count(PRODUCE_IN_FLIGHT as f64),
        ),
        format!(
            "latency: {} probes per side, one every {} ms, receive time - send time; each \
             side's producer feeds its own consumer",
            report::count(latency.asyncron.samples as f64),
            PROBE_INTERVAL.as_millis(),
        ),
        format!("asyncron consumer: max_in_flight_per_partition = {in_flight}, no-op handler"),
        "ratio = asyncron / rdkafka; `better` says which direction is an improvement".to_owned(),
    ]
}

/// One run: its broker, and the unique suffix of its topics and groups.
struct Bench {
    bootstrap: String,
    config: KafkaConfig,
    /// `session.timeout.ms` of both sides' consumers.
    session_timeout_ms: String,
    run_id: String,
}

impl Bench {
    fn new(bootstrap: String, session_timeout: Duration) -> Self {
        let run_id = crate::services::run_id();
        let session_timeout_ms = session_timeout.as_millis().to_string();
        Self {
            config: KafkaConfig::new(&bootstrap, CLIENT_ID)
                .set("session.timeout.ms", &session_timeout_ms),
            bootstrap,
            session_timeout_ms,
            run_id,
        }
    }

    fn topic(&self, name: &str) -> String {
        format!("asyncron-bench.{}.{name}", self.run_id)
    }

    fn group(&self, name: &str) -> String {
        format!("asyncron-bench-{}-{name}", self.run_id)
    }

    /// Creates every topic of the run up front, so that no phase measures a topic creation.
    async fn provision(&self) -> anyhow::Result<()> {
        let topics: Vec<TopicSpec> = [
            "warm-up",
            "throughput-asyncron",
            "throughput-rdkafka",
            "latency-asyncron",
            "latency-rdkafka",
        ]
        .iter()
        .map(|name| TopicSpec::new(self.topic(name)).partitions(PARTITIONS))
        .collect();
        tokio::time::timeout(
            Duration::from_secs(30),
            ensure_topics(&self.config, &topics),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the broker at {} did not create topics within 30 s",
                self.bootstrap
            )
        })?
        .context("Failed to create the benchmark topics")
    }

    /// The same producer settings as asyncron's `Producer` (see `KafkaConfig`'s defaults).
    fn raw_producer(&self) -> anyhow::Result<FutureProducer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", CLIENT_ID)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000")
            .create()
            .context("Failed to create the rdkafka producer")
    }

    /// asyncron's consumer defaults, set explicitly; offsets stored by hand per message.
    fn raw_consumer(&self, group: &str) -> anyhow::Result<BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", CLIENT_ID)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("fetch.wait.max.ms", "20")
            .set("session.timeout.ms", &self.session_timeout_ms)
            .set("heartbeat.interval.ms", "500")
            .set("enable.partition.eof", "false")
            .create()
            .context("Failed to create the rdkafka consumer")
    }

    async fn start_consumer(
        &self,
        side: Side,
        group: &str,
        topic: &str,
        sink: Arc<Sink>,
        options: &Options,
    ) -> anyhow::Result<RunningSide> {
        match side {
            Side::Asyncron => {
                let shutdown = CancellationToken::new();
                let mut builder = ConsumerBuilder::new(&self.config, group).topic(topic);
                if let Some(max) = options.max_in_flight {
                    builder = builder.max_in_flight_per_partition(max);
                }
                let consumer = builder.start(Counting(sink), shutdown.clone()).await?;
                Ok(RunningSide::Asyncron { shutdown, consumer })
            }
            Side::Raw => {
                let consumer = self.raw_consumer(group)?;
                consumer
                    .subscribe(&[topic])
                    .with_context(|| format!("Failed to subscribe to {topic}"))?;
                let stop = Arc::new(AtomicBool::new(false));
                let stopped = stop.clone();
                // Never joined: closing the consumer (leaving the group) has hung on the local
                // broker, and the benchmark must not wait for it.
                std::thread::Builder::new()
                    .name("rdkafka-consumer".to_owned())
                    .spawn(move || {
                        raw_poll_loop(&consumer, &sink, &stopped);
                        drop(consumer);
                    })
                    .context("Failed to start the rdkafka consumer thread")?;
                Ok(RunningSide::Raw { stop })
            }
        }
    }

    /// Reads `count` messages from the beginning of `topic` in a fresh group.
    async fn consume(
        &self,
        side: Side,
        topic: &str,
        count: usize,
        options: &Options,
    ) -> anyhow::Result<Consumed> {
        let progress = Progress::start(&format!("consume ({})", side.name()), count);
        progress.waiting_for("joining the group");
        let sink = Arc::new(Sink::new(count, Mode::Count, progress.counter()));
        let group = self.group(&format!("consume-{}", side.name()));
        let started = Instant::now();
        let consumer = self
            .start_consumer(side, &group, topic, sink.clone(), options)
            .await?;
        // Generous: a group join takes seconds, reading 5,000 messages a second is very slow.
        let deadline = JOIN_TIMEOUT + Duration::from_secs_f64(count as f64 / 5_000.0);
        let finished = tokio::time::timeout(deadline, sink.done.notified()).await;
        consumer.stop().await;
        if finished.is_err() {
            anyhow::bail!(
                "the {} consumer received {} of {count} messages within {deadline:?} \
                 (RUST_LOG=warn shows client errors)",
                side.name(),
                sink.count.load(Ordering::Relaxed),
            );
        }
        progress.finish();
        let first = *sink.first.get().context("no first message recorded")?;
        let last = *sink.last.get().context("no last message recorded")?;
        Ok(Consumed {
            join: first - started,
            first_to_last: last - first,
            total: last - started,
        })
    }

    /// Publishes `samples` probes one every [`PROBE_INTERVAL`] with `publisher` and measures
    /// when `side`'s consumer, already in its group, receives them.
    async fn latency(
        &self,
        side: Side,
        publisher: &Publisher,
        options: &Options,
    ) -> anyhow::Result<LatencySummary> {
        let samples = options.samples;
        let topic = self.topic(&format!("latency-{}", side.name()));
        let group = self.group(&format!("latency-{}", side.name()));
        let progress = Progress::start(&format!("latency ({})", side.name()), samples);
        progress.waiting_for("joining the group");
        let sink = Arc::new(Sink::new(samples, Mode::Latency, progress.counter()));
        let consumer = self
            .start_consumer(side, &group, &topic, sink.clone(), options)
            .await?;
        let measured = async {
            // Read from the beginning once the group is joined: its arrival means the
            // consumer is ready.
            publisher.send(&topic, b"warm-up", &Probe::WarmUp.encode()).await?;
            tokio::time::timeout(JOIN_TIMEOUT, sink.warmed_up.notified())
                .await
                .map_err(|_| anyhow::anyhow!("the {} consumer did not receive the warm-up message within {JOIN_TIMEOUT:?}", side.name()))?;
            publish_probes(publisher, &topic, samples).await?;
            tokio::time::timeout(DRAIN_TIMEOUT, sink.done.notified())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the {} consumer received {} of {samples} probes",
                        side.name(),
                        sink.count.load(Ordering::Relaxed)
                    )
                })
        }
        .await;
        consumer.stop().await;
        measured?;
        progress.finish();
        Ok(lock(&sink.latencies).summary())
    }
}

async fn produce(
    publisher: &Publisher,
    topic: &str,
    workload: &Workload,
    count: usize,
    label: &str,
) -> anyhow::Result<Duration> {
    let progress = Progress::start(label, count);
    let acknowledged = progress.counter();
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let (key, payload) = workload.message(i);
            publisher.send(topic, key, payload)
        })
        .buffer_unordered(PRODUCE_IN_FLIGHT)
        .try_for_each(|()| {
            acknowledged.fetch_add(1, Ordering::Relaxed);
            futures::future::ready(Ok(()))
        })
        .await?;
    let elapsed = started.elapsed();
    progress.finish();
    Ok(elapsed)
}

/// Starts one publish every [`PROBE_INTERVAL`], each stamped with its send time, without
/// waiting for the previous acknowledgement (that would make the pace depend on the ack).
async fn publish_probes(publisher: &Publisher, topic: &str, samples: usize) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    // A late tick shifts the schedule instead of firing a burst to catch up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    while sent < samples || !pending.is_empty() {
        tokio::select! {
            _ = ticks.tick(), if sent < samples => {
                let key = format!("key-{:04}", sent % KEYS);
                let payload = Probe::Sample { sent_micros: stats::unix_micros() }.encode();
                pending.push(async move { publisher.send(topic, key.as_bytes(), &payload).await });
                sent += 1;
            }
            Some(result) = pending.next(), if !pending.is_empty() => result?,
        }
    }
    Ok(())
}

/// The producer under test.
enum Publisher {
    /// asyncron's `Producer`: standard headers, tracing span, metrics, unknown-topic recovery.
    Asyncron(Producer),
    /// `FutureProducer` with the same settings, sending key and payload only.
    Raw(FutureProducer),
}

impl Publisher {
    /// Publishes one message and waits for the broker's acknowledgement.
    async fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Asyncron(producer) => producer
                .publish_bytes(
                    topic,
                    Some(key),
                    Some(payload),
                    MessageHeaders::new(MESSAGE_TYPE),
                )
                .await
                .map(drop),
            Self::Raw(producer) => producer
                .send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(5),
                )
                .await
                .map(drop)
                .map_err(|(error, _)| {
                    anyhow::Error::new(error).context(format!("Failed to publish to {topic}"))
                }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Asyncron,
    Raw,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Asyncron => "asyncron",
            Self::Raw => "rdkafka",
        }
    }
}

/// A started consumer of either side.
enum RunningSide {
    Asyncron {
        shutdown: CancellationToken,
        consumer: RunningConsumer,
    },
    Raw {
        stop: Arc<AtomicBool>,
    },
}

impl RunningSide {
    /// Stops consuming. Does not wait for the client to close.
    async fn stop(self) {
        match self {
            Self::Asyncron { shutdown, consumer } => {
                shutdown.cancel();
                match tokio::time::timeout(STOP_TIMEOUT, consumer.wait()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(
                        error = format!("{error:#}"),
                        "the asyncron consumer stopped with an error"
                    ),
                    Err(_) => tracing::error!(
                        "the asyncron consumer did not stop within {STOP_TIMEOUT:?}; left behind"
                    ),
                }
            }
            Self::Raw { stop } => stop.store(true, Ordering::Relaxed),
        }
    }
}

fn raw_poll_loop(consumer: &BaseConsumer, sink: &Sink, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(RAW_POLL_TIMEOUT) {
            None => {}
            Some(Ok(message)) => {
                sink.receive(message.payload());
                // Committed by auto commit, like asyncron's stored offsets.
                if let Err(error) = consumer.store_offset_from_message(&message) {
                    tracing::warn!(%error, "rdkafka consumer: failed to store an offset");
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "rdkafka consumer error"),
        }
    }
}

/// asyncron's no-op handler: it only reports the message to the sink.
struct Counting(Arc<Sink>);

impl Handler for Counting {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        self.0.receive(message.payload.as_deref());
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Count every message, nothing else.
    Count,
    /// Decode probes and record their latency; the warm-up message is not counted.
    Latency,
}

/// Where either side's consumer reports received messages. Cheap in [`Mode::Count`]: one
/// atomic increment per message.
#[derive(Debug)]
struct Sink {
    target: usize,
    mode: Mode,
    count: Arc<AtomicUsize>,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    warmed_up: Notify,
    done: Notify,
    latencies: Mutex<LatencyHistogram>,
}

impl Sink {
    fn new(target: usize, mode: Mode, count: Arc<AtomicUsize>) -> Self {
        Self {
            target,
            mode,
            count,
            first: OnceLock::new(),
            last: OnceLock::new(),
            warmed_up: Notify::new(),
            done: Notify::new(),
            latencies: Mutex::new(LatencyHistogram::default()),
        }
    }

    fn receive(&self, payload: Option<&[u8]>) {
        if self.mode == Mode::Latency {
            let received_micros = stats::unix_micros();
            match payload.and_then(Probe::decode) {
                Some(Probe::Sample { sent_micros }) => {
                    lock(&self.latencies).record_between(sent_micros, received_micros);
                }
                Some(Probe::WarmUp) => {
                    // `notify_one` keeps a permit if nobody waits yet.
                    self.warmed_up.notify_one();
                    return;
                }
                None => return,
            }
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            let _ = self.first.set(Instant::now());
        }
        if n == self.target {
            let _ = self.last.set(Instant::now());
            self.done.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy)]
struct Consumed {
    /// From starting the consumer to its first message: mostly the group join.
    join: Duration,
    first_to_last: Duration,
    /// From starting the consumer to its last message.
    total: Duration,
}

/// A latency-phase payload, padded to [`PAYLOAD_BYTES`]: `probe:<send time µs>:xxxx…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    WarmUp,
    Sample { sent_micros: u64 },
}

impl Probe {
    fn encode(self) -> Vec<u8> {
        let mut payload = match self {
            Self::WarmUp => "warm-up:".to_owned(),
            Self::Sample { sent_micros } => format!("probe:{sent_micros}:"),
        }
        .into_bytes();
        payload.resize(PAYLOAD_BYTES.max(payload.len()), b'x');
        payload
    }

    fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let mut fields = text.split(':');
        match fields.next()? {
            "warm-up" => Some(Self::WarmUp),
            "probe" => Some(Self::Sample {
                sent_micros: fields.next()?.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The throughput messages: [`KEYS`] keys and [`DISTINCT_PAYLOADS`] JSON-like payloads of
/// [`PAYLOAD_BYTES`] each, combined round-robin.
struct Workload {
    keys: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
}

impl Workload {
    fn new() -> Self {
        let keys = (0..KEYS)
            .map(|i| format!("key-{i:04}").into_bytes())
            .collect();
        let payloads = (0..DISTINCT_PAYLOADS).map(Self::payload).collect();
        Self { keys, payloads }
    }

    /// `{"id":17,"note":"…"}` with pseudo-random letters and digits as the note, which lz4
    /// cannot shrink much, like real payloads rather than a run of one byte.
    fn payload(id: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut payload = format!("{{\"id\":{id},\"note\":\"").into_bytes();
        let mut state = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        while payload.len() < PAYLOAD_BYTES - 2 {
            // xorshift64: deterministic, good enough for filler.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            payload.push(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
        }
        payload.extend_from_slice(b"\"}");
        payload
    }

    fn message(&self, i: usize) -> (&[u8], &[u8]) {
        (&self.keys[i % KEYS], &self.payloads[i % DISTINCT_PAYLOADS])
    }
}

/// asyncron's side against raw rdkafka.
#[derive(Debug)]
struct VsRdkafka;

impl Sides for VsRdkafka {
    const OURS: &'static [&'static str] = &["asyncron"];
    const BASELINE: &'static str = "rdkafka";
    const RATIOS: &'static [&'static str] = &["ratio"];
}

type Comparison = report::Comparison<VsRdkafka>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_round_trip_at_the_payload_size() {
        for probe in [
            Probe::WarmUp,
            Probe::Sample {
                sent_micros: 1_767_225_600_123_456,
            },
        ] {
            let payload = probe.encode();
            assert_eq!(payload.len(), PAYLOAD_BYTES);
            assert_eq!(Probe::decode(&payload), Some(probe));
        }
        assert_eq!(Probe::decode(b"{\"id\":1}"), None);
    }

    #[test]
    fn workload_payloads_are_json_of_the_payload_size() {
        let workload = Workload::new();
        for i in [0, 1, 4_095, 4_096, 99_999] {
            let (key, payload) = workload.message(i);
            assert_eq!(payload.len(), PAYLOAD_BYTES, "payload {i}");
            assert!(payload.starts_with(b"{\"id\":") && payload.ends_with(b"\"}"));
            assert_eq!(key, format!("key-{:04}", i % KEYS).as_bytes());
        }
        assert_ne!(workload.message(0).1, workload.message(1).1);
    }

    #[test]
    fn sink_counts_to_the_target_and_ignores_the_warm_up() {
        let sink = Sink::new(2, Mode::Latency, Arc::default());
        sink.receive(Some(&Probe::WarmUp.encode()));
        sink.receive(Some(
            &Probe::Sample {
                sent_micros: stats::unix_micros(),
            }
            .encode(),
        ));
        assert!(sink.last.get().is_none());
        sink.receive(Some(
            &Probe::Sample {
                sent_micros: stats::unix_micros(),
            }
            .encode(),
        ));
        assert_eq!(sink.count.load(Ordering::Relaxed), 2);
        assert!(sink.first.get().is_some() && sink.last.get().is_some());
        assert_eq!(lock(&sink.latencies).summary().samples, 2);
    }
}

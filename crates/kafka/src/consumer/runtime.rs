//! The poll thread and the handler tasks behind [`super::ConsumerBuilder::start`].
//!
//! One OS thread owns the librdkafka consumer: it polls, dispatches messages to Tokio tasks,
//! stores offsets, pauses and resumes partitions, and runs the rebalance callbacks. Owning the
//! consumer on a plain thread is what lets a revocation *wait* for the revoked partitions'
//! handlers before their offsets are committed (librdkafka calls the rebalance callback from
//! `poll`, and the callback must finish before the partitions go to another member), and it
//! keeps librdkafka's blocking calls, closing included, off the async runtime.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use futures::FutureExt as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::tracker::PartitionTracker;
use super::{ConsumerBuilder, Failure, FailurePolicy, Handler, HandlerError, RetryPolicy};
use crate::message::header;
use crate::topics::{TopicSpec, ensure_topics};
use crate::{KafkaConfig, Message};

/// How long the poll thread waits for a message before it looks after its partitions again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Messages taken from librdkafka's queue in one go before upkeep runs again.
const POLL_BATCH: usize = 1024;
/// How often the poll thread stores offsets, resumes partitions and reports its gauge.
const TEND_INTERVAL: Duration = Duration::from_millis(10);
/// How long a stopping consumer serves its own revocation after leaving the group.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the final commit, on top of the drain timeout, before `wait` gives up on the thread.
const COMMIT_GRACE: Duration = Duration::from_secs(10);
/// Re-provisioning after an unknown-topic error happens at most this often, and the provisioned
/// topics are looked up this often, so that a topic the broker lost is created again.
const REPROVISION_INTERVAL: Duration = Duration::from_secs(5);
/// How long a member that lost its assignment waits to be given partitions again before it
/// joins its group anew (see `rejoin_if_left_out`).
const REJOIN_AFTER: Duration = Duration::from_secs(10);
/// How long that look-up may hold the poll thread while the broker does not answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

type PartitionKey = (String, i32);

/// A started consumer. Dropping it does not stop it: cancel the shutdown token, then `wait`.
#[derive(Debug)]
pub struct RunningConsumer {
    done: oneshot::Receiver<anyhow::Result<()>>,
    killed: Arc<AtomicBool>,
    shutdown: CancellationToken,
    grace: Duration,
}

impl RunningConsumer {
    /// Resolves when the consumer stopped: `Ok` after a graceful shutdown, `Err` when it was
    /// killed or could not stop within its deadline. No message stops it. Never hangs
    /// on librdkafka: once shutdown is requested it waits at most the drain timeout plus a
    /// grace period, then abandons the consumer thread.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut done = self.done;
        tokio::select! {
            result = &mut done => return flatten(result),
            () = self.shutdown.cancelled() => {}
        }
        match tokio::time::timeout(self.grace, done).await {
            Ok(result) => flatten(result),
            Err(_) => Err(anyhow::anyhow!(
                "the consumer did not stop within {:?}; abandoned it",
                self.grace
            )),
        }
    }

    /// Stops like a crash would: running handlers are aborted and nothing more is stored or
    /// committed. Messages not committed before are delivered again to the next member. Unlike
    /// a crashed process, which its group evicts after the session timeout, the member leaves
    /// its group at once. For tests and demonstrations.
    pub async fn kill(self) {
        self.killed.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(self.grace, self.done).await;
    }
}

fn flatten(result: Result<anyhow::Result<()>, oneshot::error::RecvError>) -> anyhow::Result<()> {
    result.unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "the consumer thread ended without a result"
        ))
    })
}

pub(super) fn start<H: Handler>(
    builder: ConsumerBuilder,
    handler: H,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningConsumer> {
    let lanes = Arc::new(Lanes {
        handler,
        failure_policy: builder.failure_policy,
        retry: builder.retry,
        group: builder.group_id.clone(),
        stopping: CancellationToken::new(),
        metrics: Mutex::default(),
    });
    let killed = Arc::new(AtomicBool::new(false));
    let context = Context {
        lanes,
        killed: killed.clone(),
        runtime: Handle::try_current().context("a consumer must start inside a Tokio runtime")?,
        partitions: Mutex::new(HashMap::new()),
        max_in_flight: builder.max_in_flight_per_partition,
        drain_timeout: builder.drain_timeout,
        lost_at: Mutex::new(None),
    };
    let consumer: BaseConsumer<Context<H>> = builder
        .config
        .consumer(&builder.group_id)
        .create_with_context(context)
        .context("Failed to create the Kafka consumer")?;
    let topics: Vec<&str> = builder.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .with_context(|| format!("Failed to subscribe to {topics:?}"))?;

    let (done_tx, done) = oneshot::channel();
    let poll = PollLoop {
        consumer,
        shutdown: shutdown.clone(),
        killed: killed.clone(),
        config: builder.config,
        provision: builder.provision,
        topics: builder.topics,
    };
    std::thread::Builder::new()
        .name(format!("kafka-{}", builder.group_id))
        .spawn(move || {
            let result = poll.run();
            let _ = done_tx.send(result);
            // Dropping closes the consumer: it leaves the group and may block in librdkafka
            // for a while. Nobody waits for this thread, so that cannot hang a shutdown.
            drop(poll);
        })
        .context("Failed to start the consumer thread")?;
    Ok(RunningConsumer {
        done,
        killed,
        shutdown,
        grace: builder.drain_timeout + COMMIT_GRACE,
    })
}

/// What the handler tasks share.
struct Lanes<H> {
    handler: H,
    failure_policy: Arc<dyn FailurePolicy>,
    retry: RetryPolicy,
    group: String,
    /// Cancelled when the whole consumer stops; each partition has a child token.
    stopping: CancellationToken,
    metrics: Mutex<HashMap<String, Arc<TopicMetrics>>>,
}

struct TopicMetrics {
    handled: metrics::Counter,
    failed: metrics::Counter,
    duration: metrics::Histogram,
    event_age: metrics::Histogram,
    unavailable: metrics::Counter,
    policy_failed: metrics::Counter,
}

enum Outcome {
    /// Handled, or failed for good and dealt with by the failure policy: commit it.
    Done,
    /// Stopped while waiting to retry: leave it uncommitted.
    Abandoned,
}

impl<H: Handler> Lanes<H> {
    /// Runs a message and then, in the same task, the messages of its key that queued up
    /// behind it, so a busy key costs no extra scheduling.
    fn spawn(
        self: &Arc<Self>,
        runtime: &Handle,
        tracker: Arc<Mutex<PartitionTracker>>,
        stop: CancellationToken,
        first: Message,
    ) -> AbortHandle {
        let lanes = self.clone();
        runtime
            .spawn(async move {
                let mut next = Some(first);
                while let Some(message) = next.take() {
                    match lanes.process(&message, &stop).await {
                        Outcome::Done => {
                            next = lock(&tracker).complete(message.offset, message.key.as_deref());
                            if stop.is_cancelled() {
                                // The rest waits uncommitted for the partition's next owner.
                                break;
                            }
                        }
                        Outcome::Abandoned => break,
                    }
                }
            })
            .abort_handle()
    }

    /// The topic's metric handles, registered once: building labels per message would cost
    /// more allocations than the message itself.
    fn metrics(&self, topic: &str) -> Arc<TopicMetrics> {
        let mut by_topic = lock(&self.metrics);
        if let Some(metrics) = by_topic.get(topic) {
            return metrics.clone();
        }
        let labels = [("topic", topic.to_owned()), ("group", self.group.clone())];
        let metrics = Arc::new(TopicMetrics {
            handled: metrics::counter!("kafka_messages_handled_total", &labels),
            failed: metrics::counter!("kafka_messages_failed_total", &labels),
            duration: metrics::histogram!("kafka_handler_duration_seconds", &labels),
            event_age: metrics::histogram!("kafka_event_age_seconds", &labels),
            unavailable: metrics::counter!("kafka_handler_unavailable_total", &labels),
            policy_failed: metrics::counter!("kafka_failure_policy_errors_total", &labels),
        });
        by_topic.insert(topic.to_owned(), metrics.clone());
        metrics
    }

    async fn process(&self, message: &Message, stop: &CancellationToken) -> Outcome {
        let span = tracing::info_span!(
            "kafka.consume",
            group = %self.group,
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            message_type = message.message_type(),
            message_id = message.message_id(),
            traceparent = message.header_str(header::TRACEPARENT),
            correlation_id = message.header_str(header::CORRELATION_ID),
        );
        let metrics = self.metrics(&message.topic);
        if let Some(timestamp) = message.timestamp {
            // Lag as the age of what is being handled now: it needs no watermarks, which some
            // brokers report wrongly, and it is what a user of a read model feels.
            let age = (Utc::now() - timestamp).to_std().unwrap_or_default();
            metrics.event_age.record(age.as_secs_f64());
        }
        let mut attempt = 0;
        // Backoff while a dependency is unavailable; it grows on its own, apart from attempts.
        let mut waits = 0;
        loop {
            let started = Instant::now();
            let result = AssertUnwindSafe(self.handler.handle(message).instrument(span.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(panicked(&*panic)));
            metrics.duration.record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => {
                    metrics.handled.increment(1);
                    return Outcome::Done;
                }
                Err(error) => error,
            };
            // A handler that gave up because the consumer is stopping (one that was waiting,
            // say) has not failed: its message is delivered again after the restart or the
            // rebalance, like any message that did not finish.
            if stop.is_cancelled() {
                tracing::info!(parent: &span, attempt, error = %error, "handler stopped with the consumer; abandoned");
                return Outcome::Abandoned;
            }
            if error.is_unavailable() {
                // Not the message's fault: wait it out, however long, without spending attempts.
                metrics.unavailable.increment(1);
                waits += 1;
                let backoff = self.retry.backoff(waits);
                tracing::warn!(parent: &span, ?backoff, error = %error, "a dependency is unavailable; waiting");
                if !wait(backoff, stop).await {
                    return Outcome::Abandoned;
                }
                continue;
            }
            waits = 0;
            attempt += 1;
            metrics.failed.increment(1);
            if error.is_retryable() && attempt < self.retry.max_attempts {
                let backoff = self.retry.backoff(attempt);
                tracing::warn!(parent: &span, attempt, ?backoff, error = %error, "handler failed; retrying");
                if !wait(backoff, stop).await {
                    return Outcome::Abandoned;
                }
                continue;
            }
            tracing::error!(parent: &span, attempt, error = %error, "handler failed for good");
            let failure = Failure {
                message,
                error: &error,
                attempts: attempt,
            };
            let dealt_with = AssertUnwindSafe(
                self.failure_policy
                    .on_failure(failure)
                    .instrument(span.clone()),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(panicked(&*panic).into()));
            match dealt_with {
                Ok(()) => return Outcome::Done,
                Err(policy_error) => {
                    // The message stays in flight (uncommitted) and its key waits; the
                    // partition's other keys go on. It runs again, handler first: whatever
                    // kept the policy from dealing with it (a store that was down) may be
                    // gone, and so may the handler's own trouble.
                    metrics.policy_failed.increment(1);
                    let backoff = self.retry.max_backoff;
                    tracing::error!(parent: &span, ?backoff, error = format!("{policy_error:#}"), "the failure policy did not deal with the message; trying it again later");
                    if !wait(backoff, stop).await {
                        return Outcome::Abandoned;
                    }
                    attempt = 0;
                }
            }
        }
    }
}

/// Sleeps `backoff` unless the consumer stops first; `false` if it did.
async fn wait(backoff: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(backoff) => true,
        () = stop.cancelled() => false,
    }
}

/// A panicking handler is a failed attempt like any other, not a task that silently vanishes
/// with its message in flight (which would stall its key, and its partition's commits, for good).
fn panicked(panic: &(dyn std::any::Any + Send)) -> HandlerError {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    HandlerError::retryable(anyhow::anyhow!("the handler panicked: {text}"))
}

struct PartitionState {
    tracker: Arc<Mutex<PartitionTracker>>,
    stop: CancellationToken,
    tasks: Vec<AbortHandle>,
    paused: bool,
}

impl PartitionState {
    fn running(&self) -> usize {
        self.tasks.iter().filter(|task| !task.is_finished()).count()
    }
}

/// The librdkafka client context: runs on the poll thread, rebalance callbacks included.
struct Context<H> {
    lanes: Arc<Lanes<H>>,
    /// Set by [`RunningConsumer::kill`]: a revocation then stores and commits nothing.
    killed: Arc<AtomicBool>,
    runtime: Handle,
    partitions: Mutex<HashMap<PartitionKey, PartitionState>>,
    max_in_flight: usize,
    drain_timeout: Duration,
    /// When the member lost its assignment (its coordinator went away) and has not been given
    /// partitions since.
    lost_at: Mutex<Option<Instant>>,
}

impl<H: Handler> ClientContext for Context<H> {}

impl<H: Handler> ConsumerContext for Context<H> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                if assigned.count() > 0 {
                    *lock(&self.lost_at) = None;
                }
                let mut partitions = lock(&self.partitions);
                for element in assigned.elements() {
                    tracing::info!(group = %self.lanes.group, topic = element.topic(), partition = element.partition(), "partition assigned");
                    partitions
                        .entry((element.topic().to_owned(), element.partition()))
                        .or_insert_with(|| PartitionState {
                            tracker: Arc::default(),
                            stop: self.lanes.stopping.child_token(),
                            tasks: Vec::new(),
                            paused: false,
                        });
                }
            }
            Rebalance::Revoke(revoked) => {
                let keys: Vec<PartitionKey> = revoked
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                if self.killed.load(Ordering::SeqCst) {
                    // A simulated crash leaving its group: like a dead process, it neither
                    // waits for its handlers (they were aborted) nor commits what they did.
                    let mut partitions = lock(&self.partitions);
                    for key in &keys {
                        partitions.remove(key);
                    }
                    return;
                }
                if consumer.assignment_lost() {
                    lock(&self.lost_at).get_or_insert_with(Instant::now);
                }
                tracing::info!(group = %self.lanes.group, partitions = ?keys, "partitions revoked; draining");
                self.drain(&keys);
                self.store_offsets(consumer);
                commit(consumer);
                let mut partitions = lock(&self.partitions);
                for key in &keys {
                    partitions.remove(key);
                }
            }
            Rebalance::Error(error) => {
                tracing::error!(group = %self.lanes.group, %error, "rebalance failed");
            }
        }
    }
}

impl<H: Handler> Context<H> {
    fn dispatch(&self, consumer: &BaseConsumer<Self>, message: Message) {
        let key = (message.topic.clone(), message.partition);
        let mut partitions = lock(&self.partitions);
        let Some(state) = partitions.get_mut(&key) else {
            // A late message of a partition revoked in the meantime; its next owner reads it.
            tracing::debug!(topic = %key.0, partition = key.1, "message for an unassigned partition ignored");
            return;
        };
        let (start, in_flight) = {
            let mut tracker = lock(&state.tracker);
            (tracker.accept(message), tracker.in_flight())
        };
        if let Some(message) = start {
            let task = self.lanes.spawn(
                &self.runtime,
                state.tracker.clone(),
                state.stop.clone(),
                message,
            );
            state.tasks.push(task);
        }
        if !state.paused && in_flight >= self.max_in_flight {
            // Back-pressure: stop fetching this partition until half of its queue is done.
            match consumer.pause(&partition_list(&key)) {
                Ok(()) => state.paused = true,
                Err(error) => {
                    tracing::warn!(%error, topic = %key.0, partition = key.1, "failed to pause partition");
                }
            }
        }
    }

    /// Regular upkeep on the poll thread: stores offsets that moved, resumes partitions that
    /// drained, forgets finished tasks, reports the in-flight gauge.
    fn tend(&self, consumer: &BaseConsumer<Self>) {
        self.store_offsets(consumer);
        let mut partitions = lock(&self.partitions);
        let mut total_in_flight = 0;
        for (key, state) in partitions.iter_mut() {
            state.tasks.retain(|task| !task.is_finished());
            let in_flight = lock(&state.tracker).in_flight();
            total_in_flight += in_flight;
            if state.paused && in_flight <= self.max_in_flight / 2 {
                match consumer.resume(&partition_list(key)) {
                    Ok(()) => state.paused = false,
                    Err(error) => {
                        tracing::warn!(%error, topic = %key.0, partition = key.1, "failed to resume partition");
                    }
                }
            }
        }
        metrics::gauge!("kafka_consumer_in_flight", "group" => self.lanes.group.clone())
            .set(total_in_flight as f64);
    }

    /// Hands every partition's committable offset to librdkafka, which commits it (in the
    /// background, or at once in [`commit`]).
    fn store_offsets(&self, consumer: &BaseConsumer<Self>) {
        let partitions = lock(&self.partitions);
        let mut list = TopicPartitionList::new();
        for ((topic, partition), state) in partitions.iter() {
            if let Some(offset) = lock(&state.tracker).take_new_commit()
                && let Err(error) =
                    list.add_partition_offset(topic, *partition, Offset::Offset(offset))
            {
                tracing::warn!(%error, "failed to list an offset to store");
            }
        }
        if list.count() > 0
            && let Err(error) = consumer.store_offsets(&list)
        {
            tracing::warn!(%error, "failed to store offsets");
        }
    }

    /// Lets the running handlers of these partitions finish their current message, up to the
    /// drain timeout, then aborts what is left. Waiting messages are not started.
    fn drain(&self, keys: &[PartitionKey]) {
        for key in keys {
            if let Some(state) = lock(&self.partitions).get(key) {
                state.stop.cancel();
            }
        }
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            let running: usize = {
                let partitions = lock(&self.partitions);
                keys.iter()
                    .filter_map(|k| partitions.get(k))
                    .map(PartitionState::running)
                    .sum()
            };
            if running == 0 {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!(group = %self.lanes.group, running, "handlers still running after the drain timeout; abandoning them");
                self.abort(keys);
                return;
            }
            // A short sleep on this dedicated thread; the handlers run on the Tokio runtime.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn abort(&self, keys: &[PartitionKey]) {
        let partitions = lock(&self.partitions);
        for state in keys.iter().filter_map(|k| partitions.get(k)) {
            state.stop.cancel();
            for task in &state.tasks {
                task.abort();
            }
        }
    }

    fn assigned(&self) -> Vec<PartitionKey> {
        lock(&self.partitions).keys().cloned().collect()
    }
}

struct PollLoop<H: Handler> {
    consumer: BaseConsumer<Context<H>>,
    shutdown: CancellationToken,
    killed: Arc<AtomicBool>,
    config: KafkaConfig,
    provision: Vec<TopicSpec>,
    topics: Vec<String>,
}

impl<H: Handler> PollLoop<H> {
    fn run(&self) -> anyhow::Result<()> {
        let context = self.consumer.context();
        let mut last_provision: Option<Instant> = None;
        let mut last_lookup = Instant::now();
        let mut last_tend = Instant::now();
        loop {
            if self.killed.load(Ordering::SeqCst) {
                context.abort(&context.assigned());
                // A crashed process is evicted from its group after the session timeout. This
                // one lives on, and closing it can block while librdkafka keeps heartbeating
                // (see `leave_group`), which would keep its partitions from the next member for
                // good. So it leaves explicitly, committing nothing.
                self.leave_group(context);
                return Err(anyhow::anyhow!("consumer killed"));
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            // Upkeep on a clock, not per message: storing offsets and checking partitions
            // for every message would cost more than the messages themselves.
            if last_tend.elapsed() >= TEND_INTERVAL {
                context.tend(&self.consumer);
                last_tend = Instant::now();
            }
            if last_lookup.elapsed() >= REPROVISION_INTERVAL {
                self.provision_lost_topics(&mut last_provision);
                self.rejoin_if_left_out(context);
                last_lookup = Instant::now();
            }
            // Wait for one message, then take what is already fetched without waiting.
            let mut timeout = POLL_INTERVAL;
            for _ in 0..POLL_BATCH {
                match self.consumer.poll(timeout) {
                    None => break,
                    Some(Ok(message)) => {
                        context.dispatch(&self.consumer, Message::from_borrowed(&message));
                    }
                    Some(Err(error)) => {
                        self.on_error(&error, &mut last_provision);
                        break;
                    }
                }
                timeout = Duration::ZERO;
            }
        }
        self.stop(context);
        Ok(())
    }

    /// Provisions again the topics this consumer provisions that the broker no longer knows: a
    /// broker that lost its state (a restart without durable storage) does not report them as
    /// an error to a member that was already subscribed, it only stops assigning them, and the
    /// owner that would create them again may be down. Once created, the next metadata refresh
    /// (`topic.metadata.refresh.interval.ms`) brings the partitions back into the group.
    fn provision_lost_topics(&self, last_provision: &mut Option<Instant>) {
        let lost: Vec<TopicSpec> = self
            .provision
            .iter()
            .filter(|spec| {
                match self
                    .consumer
                    .fetch_metadata(Some(&spec.name), LOOKUP_TIMEOUT)
                {
                    Ok(metadata) => metadata.topics().iter().all(|topic| {
                        topic.name() != spec.name
                            || topic.error().is_some()
                            || topic.partitions().is_empty()
                    }),
                    // The broker does not answer: nothing to learn now.
                    Err(_) => false,
                }
            })
            .cloned()
            .collect();
        if lost.is_empty() {
            return;
        }
        *last_provision = Some(Instant::now());
        let names: Vec<&str> = lost.iter().map(|spec| spec.name.as_str()).collect();
        tracing::warn!(topics = ?names, "the broker lost subscribed topics; provisioning them again");
        let provisioned = self
            .consumer
            .context()
            .runtime
            .block_on(ensure_topics(&self.config, &lost));
        if let Err(error) = provisioned {
            tracing::warn!(error = format!("{error:#}"), "failed to provision topics");
        }
    }

    /// Joins the group again when the member lost its assignment and was not given partitions
    /// back within [`REJOIN_AFTER`]. A coordinator that lost its state (a broker restarted
    /// without durable storage) may go on accepting the old member's heartbeats without telling
    /// it to rejoin, which would leave it out of its group for good; subscribing again makes it
    /// join. Only after a loss: a member that merely has no partitions (more members than
    /// partitions) is left alone.
    fn rejoin_if_left_out(&self, context: &Context<H>) {
        let left_out = lock(&context.lost_at).is_some_and(|at| at.elapsed() >= REJOIN_AFTER)
            && context.assigned().is_empty();
        if !left_out {
            return;
        }
        tracing::warn!(group = %context.lanes.group, "the assignment was lost and not given back; joining the group again");
        *lock(&context.lost_at) = Some(Instant::now());
        self.consumer.unsubscribe();
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(error) = self.consumer.subscribe(&topics) {
            tracing::warn!(%error, "failed to subscribe again");
        }
    }

    fn on_error(&self, error: &KafkaError, last_provision: &mut Option<Instant>) {
        let unknown_topic = matches!(
            error,
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
            )
        );
        if !unknown_topic || self.provision.is_empty() {
            tracing::warn!(%error, "consumer error");
            return;
        }
        if last_provision.is_some_and(|at| at.elapsed() < REPROVISION_INTERVAL) {
            return;
        }
        *last_provision = Some(Instant::now());
        tracing::warn!(%error, "broker does not know a subscribed topic; provisioning again");
        let provisioned = self
            .consumer
            .context()
            .runtime
            .block_on(ensure_topics(&self.config, &self.provision));
        if let Err(error) = provisioned {
            tracing::warn!(error = format!("{error:#}"), "failed to provision topics");
        }
    }

    /// Graceful stop: no new messages, running handlers finish, offsets are committed.
    fn stop(&self, context: &Context<H>) {
        tracing::info!(group = %context.lanes.group, "consumer stopping");
        context.lanes.stopping.cancel();
        if let Ok(assignment) = self.consumer.assignment()
            && let Err(error) = self.consumer.pause(&assignment)
        {
            tracing::warn!(%error, "failed to pause partitions for shutdown");
        }
        context.drain(&context.assigned());
        context.store_offsets(&self.consumer);
        commit(&self.consumer);
        self.leave_group(context);
        tracing::info!(group = %context.lanes.group, "consumer stopped; offsets committed");
    }

    /// Leaves the group explicitly before the consumer is closed. Closing can block in
    /// librdkafka on some brokers while its background thread keeps heartbeating; a member that
    /// had only been closed would then keep its partitions from the group's other members for as
    /// long as the process lives (a service restarted in-process, a test).
    fn leave_group(&self, context: &Context<H>) {
        // Messages polled from here on are not dispatched, nor committed: the next member reads
        // them. A member still joining the group finishes the join first: one that leaves in the
        // middle of it has been seen to stall the group's next join on the local broker.
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        while context.assigned().is_empty() && Instant::now() < deadline {
            let _ = self.consumer.poll(POLL_INTERVAL);
        }
        self.consumer.unsubscribe();
        // The revocation is served from `poll`.
        while !context.assigned().is_empty() && Instant::now() < deadline + LEAVE_TIMEOUT {
            let _ = self.consumer.poll(POLL_INTERVAL);
        }
    }
}

fn commit<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit.
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(%error, "failed to commit offsets"),
    }
}

fn partition_list((topic, partition): &PartitionKey) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, *partition);
    list
}

/// The locks here guard plain bookkeeping; a panic while holding one is a bug that the next
/// user should see rather than silently continue past.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().expect("consumer bookkeeping lock poisoned")
}

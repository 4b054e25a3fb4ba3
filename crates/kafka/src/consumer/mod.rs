//! The consumer runtime: a consumer group member that runs a [`Handler`] for every message,
//! at least once, in order per key and in parallel across keys.

mod runtime;
mod tracker;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::topics::{TopicSpec, ensure_topics};
use crate::{KafkaConfig, Message};

pub use crate::handler_error::HandlerError;

pub use runtime::RunningConsumer;

/// What a service does with a message. Must be idempotent: delivery is at least once.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, message: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A shared handler: the consumer runs it, and a dead-letter store can run it again on a
/// message it set aside (a replay).
impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, message: &Message) -> impl Future<Output = Result<(), HandlerError>> + Send {
        H::handle(self, message)
    }
}

/// Blocking retries inside the handler's key lane: later messages of the same key wait, other
/// keys go on. Non-blocking retries (retry topics) are the task queue's job.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included. 1 means no retry.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Exponential backoff before attempt `attempt + 1`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// A message whose handler failed for good: not retryable, or out of attempts.
#[derive(Debug)]
pub struct Failure<'a> {
    pub message: &'a Message,
    pub error: &'a HandlerError,
    pub attempts: u32,
}

/// Decides what happens to a message whose handler failed for good. `Ok` means the message is
/// dealt with (e.g. set aside in a dead-letter store, or moved to a retry or dead-letter topic)
/// and its offset may be committed. `Err` means it could not be dealt with now (the store is
/// down, say): the runtime waits its retry policy's longest backoff and runs the message again,
/// handler first. No message stops the consumer; only its key waits meanwhile.
pub trait FailurePolicy: Send + Sync + 'static {
    fn on_failure<'a>(
        &'a self,
        failure: Failure<'a>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;
}

/// The default: never skip a message silently. A message that failed for good is logged and
/// tried again after the longest backoff, for as long as it fails; later messages of its key
/// wait behind it, other keys go on. Services set a policy that sets such messages aside
/// instead (the `dead-letters` crate's `SetAside`), so that the key moves on too.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepRetrying;

impl FailurePolicy for KeepRetrying {
    fn on_failure<'a>(
        &'a self,
        failure: Failure<'a>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        let message = failure.message;
        let error = anyhow::anyhow!(
            "handler failed for good on {}/{}@{} after {} attempt(s), and no failure policy \
             sets messages aside: {}",
            message.topic,
            message.partition,
            message.offset,
            failure.attempts,
            failure.error
        );
        Box::pin(async move { Err(error) })
    }
}

/// Builds a consumer group member; see the crate README for the guarantees.
#[must_use]
pub struct ConsumerBuilder {
    pub(crate) config: KafkaConfig,
    pub(crate) group_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) provision: Vec<TopicSpec>,
    /// Whether `start` creates the provisioned topics before it subscribes.
    pub(crate) provision_at_start: bool,
    pub(crate) max_in_flight_per_partition: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) failure_policy: Arc<dyn FailurePolicy>,
    pub(crate) drain_timeout: Duration,
}

impl std::fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field(
                "max_in_flight_per_partition",
                &self.max_in_flight_per_partition,
            )
            .field("retry", &self.retry)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    pub fn new(config: &KafkaConfig, group_id: impl Into<String>) -> Self {
        Self {
            config: config.clone(),
            group_id: group_id.into(),
            topics: Vec::new(),
            provision: Vec::new(),
            provision_at_start: true,
            // Large enough that a busy consumer rarely pauses: librdkafka drops what it had
            // prefetched for a paused partition, and does not wake its broker thread on resume,
            // so a consumer whose partitions were all paused stalls for up to a second (the
            // README, "Back-pressure").
            max_in_flight_per_partition: 4096,
            retry: RetryPolicy::default(),
            failure_policy: Arc::new(KeepRetrying),
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// Subscribes to a topic that something else provisions.
    pub fn topic(mut self, name: impl Into<String>) -> Self {
        self.topics.push(name.into());
        self
    }

    /// Subscribes to a topic and provisions it: at start, and again if the broker reports it
    /// unknown later.
    pub fn provisioned_topic(mut self, spec: TopicSpec) -> Self {
        self.topics.push(spec.name.clone());
        self.provision.push(spec);
        self
    }

    /// The caller has just created the provisioned topics: `start` subscribes at once instead
    /// of creating them again first. They are still provisioned again when the broker loses
    /// them. Each creation costs an admin client and a round trip to the broker (0.2 s with a
    /// debug build on the local broker), before the group join can even begin; the task
    /// queue's worker creates all its topics in one request and then starts a consumer per
    /// topic with this.
    pub fn topics_already_provisioned(mut self) -> Self {
        self.provision_at_start = false;
        self
    }

    /// Messages received from one partition and not yet handled, running or waiting behind
    /// their key. When reached, the partition is paused until half of them are done.
    pub fn max_in_flight_per_partition(mut self, max: usize) -> Self {
        self.max_in_flight_per_partition = max.max(1);
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn on_failure(mut self, policy: impl FailurePolicy) -> Self {
        self.failure_policy = Arc::new(policy);
        self
    }

    /// How long shutdown and partition revocation wait for running handlers before they are
    /// abandoned (their messages are delivered again later).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Provisions topics, joins the group and starts handling messages until `shutdown` is
    /// cancelled. Must be called inside a Tokio runtime.
    pub async fn start<H: Handler>(
        self,
        handler: H,
        shutdown: CancellationToken,
    ) -> anyhow::Result<RunningConsumer> {
        anyhow::ensure!(
            !self.topics.is_empty(),
            "a consumer needs at least one topic"
        );
        if self.provision_at_start {
            ensure_topics(&self.config, &self.provision)
                .await
                .context("Failed to provision the consumer's topics")?;
        }
        runtime::start(self, handler, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(400));
        assert_eq!(policy.backoff(4), Duration::from_millis(500));
        assert_eq!(policy.backoff(40), Duration::from_millis(500));
    }
}

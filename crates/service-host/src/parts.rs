//! The consumers a service runs in the background: read-model projections, task workers and
//! iterator job runners. One trait lets the host start them all the same way, each with the
//! service's dead-letter store, so that no message can stop one.

use dead_letters::DeadLetterStore;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use integration_events::{Projector, ReadModel};
use iterator::JobRunner;
use kafka::Producer;
use task_queue::Worker;
use tokio_util::sync::CancellationToken;

/// What a part's start resolves to: the part running until its stop token is cancelled.
pub type Running = BoxFuture<'static, anyhow::Result<()>>;

/// A consumer the [`ServiceHost`](crate::ServiceHost) starts before it serves HTTP and stops
/// after it stopped serving. Implemented for the pattern crates' consumers; a service does not
/// implement it.
pub trait Part: Send + 'static {
    /// Gives the part the service's shared pieces: `store`, where it sets aside the messages it
    /// cannot handle (undecodable, unknown, failing for good) instead of stopping on them, and
    /// the service's one `producer`, for a part that publishes.
    #[must_use]
    fn attach(self, store: &DeadLetterStore, producer: &Producer) -> Self
    where
        Self: Sized;

    /// Starts consuming (provisioning the topics the part owns and joining its consumer group);
    /// resolves, once started, to the part running until `stop` is cancelled.
    fn start(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Running>>;
}

impl<R: ReadModel> Part for Projector<R> {
    fn attach(self, store: &DeadLetterStore, _producer: &Producer) -> Self {
        self.dead_letters(store)
    }

    fn start(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Running>> {
        async move {
            let running = Projector::start(*self, stop).await?;
            Ok(running.wait().boxed())
        }
        .boxed()
    }
}

impl Part for Worker {
    fn attach(self, store: &DeadLetterStore, producer: &Producer) -> Self {
        self.dead_letters(store).producer(producer)
    }

    fn start(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Running>> {
        async move {
            let running = Worker::start(*self, stop).await?;
            Ok(running.wait().boxed())
        }
        .boxed()
    }
}

impl Part for JobRunner {
    fn attach(self, store: &DeadLetterStore, _producer: &Producer) -> Self {
        self.dead_letters(store)
    }

    fn start(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<Running>> {
        async move {
            let running = JobRunner::start(*self, stop).await?;
            Ok(running.wait().boxed())
        }
        .boxed()
    }
}

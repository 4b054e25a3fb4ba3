//! The consuming side: [`Worker`] runs the registered handlers on the main topic and the retry
//! topics, and indexes the dead-letter topic.

mod batch;
mod execution;
mod level;
mod limits;
mod registered;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use dead_letters::DeadLetterStore;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use kafka::{ConsumerBuilder, KafkaConfig, Producer, RetryPolicy, RunningConsumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dead_letters::DeadLetterIndex;
use crate::queue::queue_topics;
use crate::{CallOutHandler, RetryLevels, Task, TaskHandler, TaskOptions};
use batch::Batcher;
use level::{LevelHandler, Shared, TaskType};
use limits::Limits;
use registered::{HandlerKind, Registered, Typed, TypedCallOut};

/// How the consumer runtime treats a message whose handling failed for a reason *other* than the
/// task: the database refused the execution transaction, a retry or dead-letter publish failed,
/// or the worker is stopping. The task's outcome is not decided, so the message is retried in
/// place, with backoff, for as long as it takes; it is never acknowledged before. Only messages
/// of the same key wait, and a partition that fills up is paused by the runtime.
const UNDECIDED_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(10),
};

/// A worker for one queue: consumes the main topic and the retry topics, and indexes the
/// dead-letter topic into the `dead_letters` table.
///
/// ```no_run
/// # use task_queue::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail;
/// # impl Task for SendEmail { const NAME: &'static str = "SendEmail"; }
/// # struct Mailer;
/// # impl TaskHandler<SendEmail> for Mailer {
/// #     async fn handle(&self, _: SendEmail, _: &mut TaskContext<'_>) -> Result<(), TaskError> { Ok(()) }
/// # }
/// # async fn f(pool: sqlx::PgPool, kafka: kafka::KafkaConfig, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
/// task_queue::migrate(&pool).await?;
/// let worker = Worker::new(pool, &kafka, "notifications", "notifications.tasks")
///     .retry(RetryLevels::default())
///     .register(Mailer, TaskOptions { concurrency: Some(8), rate_limit_per_sec: Some(50.0), ..TaskOptions::default() })
///     .start(shutdown)
///     .await?;
/// worker.wait().await?; // after shutdown, or with the error that stopped it
/// # Ok(()) }
/// ```
#[must_use]
pub struct Worker {
    pool: PgPool,
    kafka: KafkaConfig,
    group_id: String,
    topic: String,
    retry: RetryLevels,
    tasks: HashMap<&'static str, Registration>,
    /// Task types whose limits count their tasks together ([`Worker::shared_limits`]).
    shared_limits: Vec<(Vec<&'static str>, TaskOptions)>,
    dead_letters: Option<DeadLetterStore>,
    /// The service's producer, when it gave one ([`Worker::producer`]).
    producer: Option<Producer>,
    /// Registration errors, reported by `start` because the builder methods cannot fail.
    problems: Vec<String>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("group_id", &self.group_id)
            .field("topic", &self.topic)
            .field("retry", &self.retry)
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// `group_id` names the consumer groups: `<group_id>` reads the main topic,
    /// `<group_id>.retry.<n>` each retry topic and `<group_id>.dlq` the dead-letter topic.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaConfig,
        group_id: impl Into<String>,
        queue_topic: impl Into<String>,
    ) -> Self {
        Self {
            pool,
            kafka: kafka.clone(),
            group_id: group_id.into(),
            topic: queue_topic.into(),
            retry: RetryLevels::default(),
            tasks: HashMap::new(),
            shared_limits: Vec::new(),
            dead_letters: None,
            producer: None,
            problems: Vec::new(),
        }
    }

    /// A backstop for messages the worker's consumers cannot deal with at all. Tasks that fail
    /// go to the queue's retry and dead-letter topics, not here; but should recording a task's
    /// fate be refused for good (data the database rejects), the message is set aside in
    /// `store` instead of being retried for as long as it fails, which would hold up its key.
    /// Consumer names there: `<group_id>`, `<group_id>.retry.<n>`, `<group_id>.dlq`.
    pub fn dead_letters(mut self, store: &DeadLetterStore) -> Self {
        self.dead_letters = Some(store.clone());
        self
    }

    /// Publishes retries and dead letters with the service's `producer` (one per service, as
    /// the producer's docs advise: each has its own connections, buffers and I/O thread)
    /// rather than a producer of the worker's own, which it makes otherwise.
    pub fn producer(mut self, producer: &Producer) -> Self {
        self.producer = Some(producer.clone());
        self
    }

    pub fn retry(mut self, levels: RetryLevels) -> Self {
        self.retry = levels;
        self
    }

    /// Runs tasks of type `T` with `handler`, within `options`' limits. One handler per type.
    pub fn register<T: Task, H: TaskHandler<T>>(self, handler: H, options: TaskOptions) -> Self {
        let handler = HandlerKind::InTransaction(Box::new(Typed {
            handler,
            task: PhantomData::<fn() -> T>,
        }));
        self.add(T::NAME, Registration { handler, options })
    }

    /// Runs tasks of type `T` with a [`CallOutHandler`]: its call with no database connection
    /// held, its record in the transaction that marks the task done. For tasks whose work is a
    /// slow call out of the service: any number of them can wait on the call at once (up to
    /// `options.concurrency`), whatever the size of the pool. One handler per type.
    ///
    /// Always one transaction per task: `options.batch` must be `None` (`start` fails
    /// otherwise), because the calls must not wait for each other in a batch and the records
    /// are short.
    pub fn register_call_out<T: Task, H: CallOutHandler<T>>(
        mut self,
        handler: H,
        options: TaskOptions,
    ) -> Self {
        if options.batch.is_some() {
            self.problems.push(format!(
                "task type `{}` has a call-out handler, which runs one task per transaction: \
                 leave `batch` at None",
                T::NAME
            ));
        }
        let handler = HandlerKind::CallOut(Box::new(TypedCallOut {
            handler,
            task: PhantomData::<fn() -> T>,
        }));
        self.add(T::NAME, Registration { handler, options })
    }

    /// The task types `names` share one set of limits: at most `options.concurrency` of their
    /// tasks run at once and `options.rate_limit_per_sec` start per second, counted together
    /// (e.g. every task type that calls the same provider). Each must be registered, with no
    /// limits of its own; `options.batch` is not used here (it belongs to each type's own
    /// options). `start` fails otherwise.
    pub fn shared_limits(mut self, names: &[&'static str], options: TaskOptions) -> Self {
        if options.batch.is_some() {
            self.problems.push(format!(
                "the shared limits of {names:?} set `batch`, which is a task type's own option"
            ));
        }
        self.shared_limits.push((names.to_vec(), options));
        self
    }

    fn add(mut self, name: &'static str, registration: Registration) -> Self {
        if self.tasks.insert(name, registration).is_some() {
            self.problems
                .push(format!("task type `{name}` is registered twice"));
        }
        self
    }

    /// Provisions the topics, joins the consumer groups and runs until `shutdown` is cancelled.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<RunningWorker> {
        anyhow::ensure!(
            self.problems.is_empty(),
            "invalid task queue worker for {}: {}",
            self.topic,
            self.problems.join("; ")
        );
        anyhow::ensure!(
            !self.tasks.is_empty(),
            "the task queue worker for {} has no task types registered",
            self.topic
        );
        anyhow::ensure!(
            self.retry.blocking_attempts >= 1,
            "blocking_attempts must be at least 1 (1 means no blocking retry)"
        );
        let tasks = task_types(self.tasks, &self.shared_limits, self.retry.delays.len())?;

        let producer = match self.producer {
            Some(producer) => producer,
            None => Producer::new(&self.kafka)?,
        };
        let mut topics = queue_topics(&self.topic, &self.retry);
        // The producer remembers the topics and provisions them again should the broker lose
        // them; each consumer does the same for the topic it reads. Created here, in one
        // request, and not again by each consumer at its start (`topics_already_provisioned`):
        // that cost a round trip per consumer before the main topic's consumer began to join
        // its group, about 0.2 s of a worker's start to its first task with a debug build.
        producer
            .ensure_topics(&topics)
            .await
            .with_context(|| format!("Failed to provision the topics of {}", self.topic))?;

        // The worker's own token: cancelled by `shutdown`, and also when one of its consumers
        // fails, so that the worker stops as a whole.
        let stop = shutdown.child_token();
        let shared = Arc::new(Shared {
            pool: self.pool.clone(),
            producer,
            topic: self.topic.clone(),
            retry: self.retry,
            tasks,
            stop: stop.clone(),
        });
        let mut running = RunningWorker {
            consumers: Vec::new(),
            stop: stop.clone(),
        };
        // One consumer group member per topic: main, each retry level, dead letters.
        let dlq = topics
            .pop()
            .expect("a queue's topics end with the dead-letter topic");
        for (level, spec) in topics.into_iter().enumerate() {
            let group = if level == 0 {
                self.group_id.clone()
            } else {
                format!("{}.retry.{level}", self.group_id)
            };
            let handler = Arc::new(LevelHandler::new(shared.clone(), level));
            let mut consumer = ConsumerBuilder::new(&self.kafka, &group)
                .provisioned_topic(spec)
                .topics_already_provisioned()
                .retry(UNDECIDED_RETRY);
            if let Some(store) = &self.dead_letters {
                consumer = consumer.on_failure(store.set_aside(&group, handler.clone()));
            }
            let consumer = consumer.start(handler, stop.clone()).await;
            running = running.add(group, consumer).await?;
        }
        let group = format!("{}.dlq", self.group_id);
        let index = Arc::new(DeadLetterIndex::new(self.pool, &self.topic));
        let mut consumer = ConsumerBuilder::new(&self.kafka, &group)
            .provisioned_topic(dlq)
            .topics_already_provisioned()
            .retry(UNDECIDED_RETRY);
        if let Some(store) = &self.dead_letters {
            consumer = consumer.on_failure(store.set_aside(&group, index.clone()));
        }
        let consumer = consumer.start(index, stop).await;
        running.add(group, consumer).await
    }
}

/// A started worker: one consumer per topic level plus the dead-letter index.
#[derive(Debug)]
#[must_use = "a worker runs until shutdown; call `wait` to learn how it ended"]
pub struct RunningWorker {
    consumers: Vec<(String, RunningConsumer)>,
    stop: CancellationToken,
}

impl RunningWorker {
    /// Keeps a consumer that started; if it did not, stops the ones before it and fails.
    async fn add(
        mut self,
        group: String,
        consumer: anyhow::Result<RunningConsumer>,
    ) -> anyhow::Result<Self> {
        match consumer {
            Ok(consumer) => {
                self.consumers.push((group, consumer));
                Ok(self)
            }
            Err(error) => {
                self.stop.cancel();
                let _ = self.wait().await;
                Err(error.context(format!("Failed to start the consumer {group}")))
            }
        }
    }

    /// Resolves when every consumer stopped: `Ok` after a graceful shutdown, `Err` with the
    /// first error if one of them failed, which also stops the others.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut waits: FuturesUnordered<_> = self
            .consumers
            .into_iter()
            .map(|(group, consumer)| async move { (group, consumer.wait().await) })
            .collect();
        let mut first_error = None;
        while let Some((group, result)) = waits.next().await {
            if let Err(error) = result {
                tracing::error!(%group, error = format!("{error:#}"), "task queue consumer failed; stopping the worker");
                self.stop.cancel();
                first_error.get_or_insert(error.context(format!("the consumer {group} failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops like a crash would: running tasks are aborted (their transactions roll back) and
    /// nothing more is committed, so uncommitted tasks come again. For tests and demonstrations.
    pub async fn kill(self) {
        futures::future::join_all(
            self.consumers
                .into_iter()
                .map(|(_, consumer)| consumer.kill()),
        )
        .await;
    }
}

/// A registered handler and its options, before `start` turns them into running limits.
struct Registration {
    handler: HandlerKind,
    options: TaskOptions,
}

/// The registered task types as the worker runs them: each with its limits (its own, or a
/// group's from [`Worker::shared_limits`]) and its batcher.
fn task_types(
    registrations: HashMap<&'static str, Registration>,
    groups: &[(Vec<&'static str>, TaskOptions)],
    retry_levels: usize,
) -> anyhow::Result<HashMap<&'static str, TaskType>> {
    let mut shared_limits = HashMap::new();
    for (names, options) in groups {
        let limits = Arc::new(
            Limits::new(*options).with_context(|| format!("invalid shared limits of {names:?}"))?,
        );
        for name in names {
            let registration = registrations.get(name).with_context(|| {
                format!("task type `{name}` has shared limits but no handler registered")
            })?;
            anyhow::ensure!(
                registration.options.concurrency.is_none()
                    && registration.options.rate_limit_per_sec.is_none(),
                "task type `{name}` has shared limits and limits of its own: give it one or the \
                 other"
            );
            anyhow::ensure!(
                shared_limits.insert(*name, limits.clone()).is_none(),
                "task type `{name}` is in two groups of shared limits"
            );
        }
    }
    let mut tasks = HashMap::new();
    for (name, registration) in registrations {
        let options = registration.options;
        let invalid = || format!("invalid options for task type `{name}`");
        let limits = match shared_limits.get(name) {
            Some(limits) => limits.clone(),
            None => Arc::new(Limits::new(options).with_context(invalid)?),
        };
        let batcher = options
            .batch
            .map(Batcher::new)
            .transpose()
            .with_context(invalid)?;
        let task = Registered::new(name, registration.handler, limits, retry_levels);
        tasks.insert(name, TaskType { task, batcher });
    }
    Ok(tasks)
}

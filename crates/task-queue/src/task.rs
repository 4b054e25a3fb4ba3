//! What a service writes: a [`Task`], its [`TaskHandler`] (or, for a task whose work is a slow
//! call out of the service, its [`CallOutHandler`]), and the [`TaskError`] that says whether
//! trying again can help.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use uuid::Uuid;

/// A unit of work. The serde form is the message payload (JSON); `NAME` is the Kafka
/// `message_type` header and the name the worker dispatches by.
///
/// ```
/// use task_queue::Task;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SendOrderConfirmation {
///     order_id: uuid::Uuid,
///     email: String,
/// }
///
/// impl Task for SendOrderConfirmation {
///     // Imperative: a task asks for something to be done.
///     const NAME: &'static str = "SendOrderConfirmation";
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + Sync + 'static {
    const NAME: &'static str;

    /// Tasks with the same key go to the same partition and run one after the other, but only
    /// while they stay on the main topic: once a task moves to a retry topic, later tasks of its
    /// key overtake it. Tasks that must never be reordered use blocking retries
    /// ([`crate::RetryLevels::blocking_attempts`]). Default: none (the task id is the key, so
    /// tasks spread over all partitions).
    fn ordering_key(&self) -> Option<String> {
        None
    }

    /// Set it to deduplicate: tasks with the same id run once. Derive it from what makes the
    /// task unique *and* from the task type (e.g. the order id and `NAME`), because ids are
    /// unique across every task type in the database. Default: a new UUID v7 per enqueue.
    fn task_id(&self) -> Option<Uuid> {
        None
    }
}

/// Why a task failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A passing failure (a timeout, a provider that is down): the task moves through the retry
    /// levels and ends in the dead-letter topic if it keeps failing.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// The task can never succeed (it breaks a rule, its data is invalid): straight to the
    /// dead-letter topic, where it can be replayed after a fix.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl TaskError {
    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(error.into())
    }

    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// Unless a handler says otherwise, an error is worth retrying, so `?` on an `anyhow::Result`
/// (e.g. after `.context(..)`) gives a retryable failure.
impl From<anyhow::Error> for TaskError {
    fn from(error: anyhow::Error) -> Self {
        Self::Retryable(error)
    }
}

/// What a handler gets besides the task.
///
/// `conn` is the open transaction in which the worker records the execution in
/// `task_executions`: write the task's effect through it, so that the effect and "task done"
/// commit together. Delivery is at least once; effects written here happen effectively once.
#[derive(Debug)]
pub struct TaskContext<'a> {
    pub task_id: Uuid,
    /// 1-based, counted across blocking attempts and retry levels.
    pub attempt: u32,
    /// For a task a schedule fired (`task-scheduler`): the time the schedule was due, however
    /// late the task runs. Work about a period ("yesterday's orders") takes the period from
    /// here, so that a late run, a retry or a replay does the period it was meant for.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub conn: &'a mut PgConnection,
}

/// Runs tasks of one type. Register it with [`crate::Worker::register`].
///
/// ```
/// use task_queue::{Task, TaskContext, TaskError, TaskHandler};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SendOrderConfirmation { order_id: uuid::Uuid }
/// impl Task for SendOrderConfirmation { const NAME: &'static str = "SendOrderConfirmation"; }
///
/// struct SendConfirmations;
///
/// impl TaskHandler<SendOrderConfirmation> for SendConfirmations {
///     async fn handle(&self, task: SendOrderConfirmation, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
///         // An external call would go here, with `ctx.task_id` as the provider's idempotency key.
///         sqlx::query("INSERT INTO sent_confirmations (order_id) VALUES ($1)")
///             .bind(task.order_id)
///             .execute(&mut *ctx.conn)
///             .await
///             .map_err(anyhow::Error::from)?; // retryable
///         Ok(())
///     }
/// }
/// ```
pub trait TaskHandler<T: Task>: Send + Sync + 'static {
    fn handle(
        &self,
        task: T,
        ctx: &mut TaskContext<'_>,
    ) -> impl Future<Output = Result<(), TaskError>> + Send;
}

/// What the call step of a [`CallOutHandler`] gets besides the task: the same as
/// [`TaskContext`], without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallContext {
    /// The same on every attempt, every redelivery and every replay of the task: give it to the
    /// service you call as its idempotency key.
    pub task_id: Uuid,
    /// 1-based, counted across blocking attempts and retry levels.
    pub attempt: u32,
    /// As [`TaskContext::scheduled_for`].
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// Runs tasks of one type whose work is a call out of the service (an HTTP provider, say),
/// in two steps, so that no database connection is held while the call waits. Register it
/// with [`crate::Worker::register_call_out`].
///
/// 1. The worker checks, in one short statement, that the task was not done before (a
///    redelivered task that was is skipped: no second call).
/// 2. [`call`](Self::call) runs **with no connection held**, and returns what the call
///    achieved: the outcome. A slow provider then ties up no more than a future; it cannot
///    exhaust the pool that the service's requests and other tasks need.
/// 3. [`record`](Self::record) writes the outcome through `ctx.conn`, in the transaction in which
///    the worker records the execution and marks it completed, as [`TaskHandler::handle`] does:
///    the record and "task done" commit together, once.
///
/// The call is made **at least once**: if the process dies, or `record` or the commit fails,
/// after the call, the task runs again and `call` is made again, with the same
/// [`CallContext::task_id`]. Send that id as the called service's idempotency key, so that it
/// recognises the repeat. Two copies of one task running at the same moment (a duplicate on
/// another partition) may both call; one of them records.
///
/// Errors of either step are task failures like a [`TaskHandler`]'s: a retryable one goes
/// through the retry levels, a permanent one (or a panic) to the dead-letter topic, and what
/// `record` wrote rolls back.
///
/// ```
/// use task_queue::{CallContext, CallOutHandler, Task, TaskContext, TaskError};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SendOrderConfirmation { order_id: uuid::Uuid }
/// impl Task for SendOrderConfirmation { const NAME: &'static str = "SendOrderConfirmation"; }
///
/// struct SendConfirmations;
///
/// impl CallOutHandler<SendOrderConfirmation> for SendConfirmations {
///     /// What `record` needs of the call.
///     type Outcome = uuid::Uuid;
///
///     async fn call(&self, task: SendOrderConfirmation, ctx: &CallContext) -> Result<uuid::Uuid, TaskError> {
///         // The provider's call would go here, with `ctx.task_id` as its idempotency key.
///         Ok(task.order_id)
///     }
///
///     async fn record(&self, order_id: uuid::Uuid, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
///         sqlx::query("INSERT INTO sent_confirmations (order_id) VALUES ($1)")
///             .bind(order_id)
///             .execute(&mut *ctx.conn)
///             .await
///             .map_err(anyhow::Error::from)?; // retryable: the call is made again
///         Ok(())
///     }
/// }
/// ```
pub trait CallOutHandler<T: Task>: Send + Sync + 'static {
    /// What the call achieved, handed to [`record`](Self::record).
    type Outcome: Send + 'static;

    /// The outside call. No database connection is held while it runs; one that it needs (a
    /// short read to prepare the call) it takes from a pool of its own and gives back before
    /// it calls out.
    fn call(
        &self,
        task: T,
        ctx: &CallContext,
    ) -> impl Future<Output = Result<Self::Outcome, TaskError>> + Send;

    /// Records the outcome through `ctx.conn`, the transaction that marks the task done.
    fn record(
        &self,
        outcome: Self::Outcome,
        ctx: &mut TaskContext<'_>,
    ) -> impl Future<Output = Result<(), TaskError>> + Send;
}

/// Limits for one task type, per worker (i.e. per process: with three replicas the queue as a
/// whole runs up to three times as much).
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskOptions {
    /// At most this many tasks of the type run at once. `None`: as many as the consumer hands
    /// out (a [`TaskHandler`]'s task holds a database connection, so the pool size bounds it in
    /// practice; a [`CallOutHandler`]'s holds one only briefly, before and after its call).
    pub concurrency: Option<usize>,
    /// At most this many tasks of the type start per second, with bursts of up to one
    /// second's worth. `None`: no limit.
    pub rate_limit_per_sec: Option<f64>,
    /// Run tasks of the type that are ready at the same time in one transaction (see
    /// [`Batching`]). `None`: one transaction per task.
    pub batch: Option<Batching>,
}

/// Group commit for one task type: tasks that are ready at the same time run one after the
/// other in one database transaction, which records all their executions and commits once.
/// The cost of a transaction (its round trips, its commit's WAL flush) is then paid per batch
/// instead of per task. A batch does not wait to fill up: it takes what queued up while the
/// previous batches ran, so under light load a batch is a single task.
///
/// Opt in for handlers whose work is in the database, or quick and idempotent:
/// - the handlers of a batch run one after the other on one connection: a handler that waits
///   on the network holds up the batch (at most `transactions` of them run at once);
/// - a failing handler rolls back the whole transaction: its task fails as it would alone, and
///   the others run again in new transactions, so a handler may run more than once for one
///   delivery of its task (which at-least-once delivery asks of it anyway). A failure is never
///   blamed on another task: see *Batching* in the crate README;
/// - what a handler locks stays locked until the batch commits.
///
/// `concurrency` and `rate_limit_per_sec` still count tasks: with `concurrency: Some(8)`, a
/// batch holds at most 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// At most this many tasks in one transaction.
    pub max_tasks: usize,
    /// At most this many batch transactions at once, each on a connection of its own.
    pub transactions: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_tasks: 100,
            transactions: 4,
        }
    }
}

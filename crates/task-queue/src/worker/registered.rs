//! A task type as the worker runs it: its handler without its type ([`ErasedHandler`]), its
//! limits and metrics ([`Registered`]), and how one run of it ended ([`Run`]). Execution, batches
//! and levels all use these; this module uses none of them, so imports point one way:
//! `level` → `batch` → `execution` → `registered`.

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt as _;

use super::limits::Limits;
use crate::{CallContext, CallOutHandler, Task, TaskContext, TaskError, TaskHandler};

/// A task type as the worker runs it: its handler, its limits (shared by all levels) and its
/// metric handles, registered once rather than per message. Its batcher, if it opted into
/// batching, sits beside it in [`super::level::TaskType`]: the batcher runs `Registered`s.
pub(super) struct Registered {
    pub(super) name: &'static str,
    pub(super) handler: HandlerKind,
    /// Its own, or shared with other task types ([`super::Worker::shared_limits`]).
    pub(super) limits: Arc<Limits>,
    pub(super) metrics: TaskMetrics,
}

impl Registered {
    pub(super) fn new(
        name: &'static str,
        handler: HandlerKind,
        limits: Arc<Limits>,
        retry_levels: usize,
    ) -> Self {
        Self {
            name,
            handler,
            limits,
            metrics: TaskMetrics::new(name, retry_levels),
        }
    }

    /// Counts and logs a run that ended, in the current span: what a task run alone and a task
    /// run in a batch both report.
    pub(super) fn report(&self, run: &Run) {
        match run {
            Run::Succeeded => {
                self.metrics.succeeded.increment(1);
                tracing::debug!("task succeeded");
            }
            Run::AlreadyDone => {
                self.metrics.deduplicated.increment(1);
                tracing::info!("task was done before; not running it again");
            }
            // The level handler reports failures: it decides where the task goes next.
            Run::Failed(_) => {}
        }
    }

    /// Runs the handler on `conn`, timing it. A panicking handler is a failed run like any
    /// other: caught here, its transaction rolls back and the task moves on, instead of leaving
    /// its partition stuck behind it.
    pub(super) async fn call(
        &self,
        payload: &[u8],
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let HandlerKind::InTransaction(handler) = &self.handler else {
            // `Worker::start` refuses batching for call-out types and the level handler runs
            // them with `run_call_out`, so this is a bug in the worker, not in the task.
            return Err(TaskError::permanent(anyhow::anyhow!(
                "the call-out task type `{}` was run as a transactional one",
                self.name
            )));
        };
        let started = Instant::now();
        let result = AssertUnwindSafe(handler.handle(payload, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))));
        self.record_duration(started);
        result
    }

    /// The call step of a call-out handler, with a panic caught as in [`Self::call`].
    pub(super) async fn call_out(
        handler: &dyn ErasedCallOut,
        payload: &[u8],
        ctx: &CallContext,
    ) -> Result<Outcome, TaskError> {
        AssertUnwindSafe(handler.call(payload, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))))
    }

    /// The record step of a call-out handler, with a panic caught as in [`Self::call`].
    pub(super) async fn record_outcome(
        handler: &dyn ErasedCallOut,
        outcome: Outcome,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        AssertUnwindSafe(handler.record(outcome, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))))
    }

    /// `task_handler_duration_seconds`: the handler's time, for a call-out handler both steps.
    pub(super) fn record_duration(&self, started: Instant) {
        self.metrics
            .handler_duration
            .record(started.elapsed().as_secs_f64());
    }
}

/// How a task type's handler runs.
pub(super) enum HandlerKind {
    /// A [`TaskHandler`]: all of it in the execution transaction (alone or in a batch).
    InTransaction(Box<dyn ErasedHandler>),
    /// A [`CallOutHandler`]: the call with no connection, then the record in the execution
    /// transaction (always alone).
    CallOut(Box<dyn ErasedCallOut>),
}

pub(super) struct TaskMetrics {
    succeeded: metrics::Counter,
    deduplicated: metrics::Counter,
    pub(super) dead_lettered: metrics::Counter,
    /// Indexed by retry level − 1.
    pub(super) retried: Vec<metrics::Counter>,
    pub(super) in_flight: metrics::Gauge,
    pub(super) age_at_start: metrics::Histogram,
    handler_duration: metrics::Histogram,
    /// Tasks per transaction of a batching task type.
    pub(super) batch_size: metrics::Histogram,
}

impl TaskMetrics {
    fn new(task: &'static str, retry_levels: usize) -> Self {
        let labels = [("task", task)];
        Self {
            succeeded: metrics::counter!("tasks_succeeded_total", &labels),
            deduplicated: metrics::counter!("tasks_deduplicated_total", &labels),
            dead_lettered: metrics::counter!("tasks_dead_lettered_total", &labels),
            retried: (1..=retry_levels)
                .map(|level| {
                    metrics::counter!("tasks_retried_total", "task" => task, "level" => level.to_string())
                })
                .collect(),
            in_flight: metrics::gauge!("tasks_in_flight", &labels),
            age_at_start: metrics::histogram!("task_age_at_start_seconds", &labels),
            handler_duration: metrics::histogram!("task_handler_duration_seconds", &labels),
            batch_size: metrics::histogram!("task_batch_size", &labels),
        }
    }
}

/// How one run of a task ended.
#[derive(Debug)]
pub(super) enum Run {
    Succeeded,
    /// The execution was recorded before: the effect exists, the handler did not run.
    AlreadyDone,
    /// The handler failed; everything it wrote was rolled back.
    Failed(TaskError),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A [`TaskHandler`] without its task type, so that handlers of all types fit in one map. It
/// decodes the payload into the type it knows.
pub(super) trait ErasedHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        payload: &'a [u8],
        ctx: &'a mut TaskContext<'_>,
    ) -> BoxFuture<'a, Result<(), TaskError>>;
}

pub(super) struct Typed<T, H> {
    pub(super) handler: H,
    /// `fn() -> T`: the handler makes `T`s, it does not hold one, so `Typed` is `Send` and
    /// `Sync` whatever `T` is.
    pub(super) task: PhantomData<fn() -> T>,
}

impl<T: Task, H: TaskHandler<T>> ErasedHandler for Typed<T, H> {
    fn handle<'a>(
        &'a self,
        payload: &'a [u8],
        ctx: &'a mut TaskContext<'_>,
    ) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            let task = decode::<T>(payload)?;
            self.handler.handle(task, ctx).await
        })
    }
}

/// What a call-out handler's call achieved, without its type; [`ErasedCallOut::record`] gives
/// it its type back.
pub(super) struct Outcome(Box<dyn Any + Send>);

/// A [`CallOutHandler`] without its task type, as [`ErasedHandler`] is a [`TaskHandler`].
pub(super) trait ErasedCallOut: Send + Sync + 'static {
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>>;

    fn record<'a>(
        &'a self,
        outcome: Outcome,
        ctx: &'a mut TaskContext<'_>,
    ) -> BoxFuture<'a, Result<(), TaskError>>;
}

pub(super) struct TypedCallOut<T, H> {
    pub(super) handler: H,
    /// As in [`Typed`].
    pub(super) task: PhantomData<fn() -> T>,
}

impl<T: Task, H: CallOutHandler<T>> ErasedCallOut for TypedCallOut<T, H> {
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Outcome, TaskError>> {
        Box::pin(async move {
            let task = decode::<T>(payload)?;
            let outcome = self.handler.call(task, ctx).await?;
            Ok(Outcome(Box::new(outcome)))
        })
    }

    fn record<'a>(
        &'a self,
        outcome: Outcome,
        ctx: &'a mut TaskContext<'_>,
    ) -> BoxFuture<'a, Result<(), TaskError>> {
        Box::pin(async move {
            // The outcome comes from this handler's own `call`, so it is always its type; a
            // mismatch would be a bug in the worker, reported rather than a panic.
            let outcome = outcome.0.downcast::<H::Outcome>().map_err(|_| {
                TaskError::permanent(anyhow::anyhow!(
                    "the outcome of a {} call is not the handler's outcome type",
                    T::NAME
                ))
            })?;
            self.handler.record(*outcome, ctx).await
        })
    }
}

/// A payload that does not decode never will: no retry can help.
fn decode<T: Task>(payload: &[u8]) -> Result<T, TaskError> {
    serde_json::from_slice(payload).map_err(|error| {
        TaskError::permanent(
            anyhow::Error::new(error)
                .context(format!("the payload is not a valid {} task", T::NAME)),
        )
    })
}

pub(super) fn panicked(panic: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let text = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    anyhow::anyhow!("the task handler panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_errors() {
        assert_eq!(
            panicked(&"boom").to_string(),
            "the task handler panicked: boom"
        );
        assert_eq!(
            panicked(&String::from("bang")).to_string(),
            "the task handler panicked: bang"
        );
        assert_eq!(
            panicked(&42).to_string(),
            "the task handler panicked: a non-text panic payload"
        );
    }
}

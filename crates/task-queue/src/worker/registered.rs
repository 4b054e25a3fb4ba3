//! A task type as the worker runs it: its handler without its type ([`ErasedHandler`]), its
//! limits and metrics ([`Registered`]), and how one run of it ended ([`Run`]). Execution, batches
//! and levels all use these; this module uses none of them, so imports point one way:
//! `level` → `batch` → `execution` → `registered`.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Instant;

use futures::FutureExt as _;

use super::limits::Limits;
use crate::{Task, TaskContext, TaskError, TaskHandler};

/// A task type as the worker runs it: its handler, its limits (shared by all levels) and its
/// metric handles, registered once rather than per message. Its batcher, if it opted into
/// batching, sits beside it in [`super::level::TaskType`]: the batcher runs `Registered`s.
pub(super) struct Registered {
    pub(super) name: &'static str,
    pub(super) handler: Box<dyn ErasedHandler>,
    pub(super) limits: Limits,
    pub(super) metrics: TaskMetrics,
}

impl Registered {
    pub(super) fn new(
        name: &'static str,
        handler: Box<dyn ErasedHandler>,
        limits: Limits,
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
        let started = Instant::now();
        let result = AssertUnwindSafe(self.handler.handle(payload, ctx))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(TaskError::permanent(panicked(&*panic))));
        self.metrics
            .handler_duration
            .record(started.elapsed().as_secs_f64());
        result
    }
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
            // A payload that does not decode never will: no retry can help.
            let task: T = serde_json::from_slice(payload).map_err(|error| {
                TaskError::permanent(
                    anyhow::Error::new(error)
                        .context(format!("the payload is not a valid {} task", T::NAME)),
                )
            })?;
            self.handler.handle(task, ctx).await
        })
    }
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

//! Group commit for a task type that opted into [`crate::Batching`]: tasks that are ready at
//! the same time run one after the other in one transaction, with one commit.
//!
//! There is no thread or task of its own. Every task that is ready joins the type's queue and
//! then either finds its outcome already decided, or takes one of the type's transaction slots
//! and runs what queued up, its own task included unless another slot took it first. So a
//! batch never waits to fill up: under light load it is one task, and under load it is what
//! arrived while the previous batches ran.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use kafka::HandlerError;
use sqlx::PgPool;
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use super::execution::{Claim, claim, complete, run_alone, taken_by};
use super::registered::{Registered, Run};
use crate::{Batching, TaskContext, TaskError};

pub(super) struct Batcher {
    max_tasks: usize,
    queue: Mutex<VecDeque<Pending>>,
    /// One permit per transaction that may run at once.
    slots: Semaphore,
}

/// A task waiting for a batch, and where its outcome goes.
struct Pending {
    task_id: Uuid,
    attempt: u32,
    scheduled_for: Option<DateTime<Utc>>,
    payload: Vec<u8>,
    /// The task's own span: its handler runs in it whichever caller runs the batch.
    span: tracing::Span,
    outcome: oneshot::Sender<Result<Run, HandlerError>>,
}

impl Pending {
    fn decide(self, outcome: Result<Run, HandlerError>) {
        // The receiver is gone when the task's caller was aborted (a crash, a revoked
        // partition after its drain timeout): its message was not acknowledged and comes
        // again, and finds the execution recorded if this batch committed it.
        let _ = self.outcome.send(outcome);
    }
}

/// How one transaction of a batch ended.
enum Attempt {
    Committed(Vec<Run>),
    /// The handler of `batch[index]` failed: the transaction rolled back.
    HandlerFailed {
        index: usize,
        error: TaskError,
    },
}

impl Batcher {
    pub(super) fn new(settings: Batching) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.max_tasks >= 1,
            "batch.max_tasks must be at least 1"
        );
        anyhow::ensure!(
            settings.transactions >= 1,
            "batch.transactions must be at least 1"
        );
        Ok(Self {
            max_tasks: settings.max_tasks,
            queue: Mutex::default(),
            slots: Semaphore::new(settings.transactions),
        })
    }

    /// Runs one task in a batch and returns how its run ended, as [`run_alone`] would.
    pub(super) async fn run(
        &self,
        pool: &PgPool,
        task: &Registered,
        task_id: Uuid,
        attempt: u32,
        scheduled_for: Option<DateTime<Utc>>,
        payload: &[u8],
    ) -> Result<Run, HandlerError> {
        let (outcome, mut decided) = oneshot::channel();
        self.lock().push_back(Pending {
            task_id,
            attempt,
            scheduled_for,
            payload: payload.to_vec(),
            span: tracing::Span::current(),
            outcome,
        });
        loop {
            let slot = tokio::select! {
                biased;
                outcome = &mut decided => return received(outcome),
                slot = self.slots.acquire() => slot.expect("the semaphore is never closed"),
            };
            let batch = self.take();
            if batch.is_empty() {
                // Another caller took this task into its batch, which is running now.
                drop(slot);
                return received(decided.await);
            }
            execute(pool, task, batch).await;
        }
    }

    /// Up to `max_tasks` from the front of the queue. A task id that is in the batch already
    /// (the same task delivered twice) stays queued for a later batch: there it finds the
    /// execution this one records, or runs if this one rolls back.
    fn take(&self) -> Vec<Pending> {
        let mut queue = self.lock();
        let mut batch = Vec::with_capacity(self.max_tasks.min(queue.len()));
        let mut ids = HashSet::new();
        let mut later = Vec::new();
        while batch.len() < self.max_tasks {
            let Some(pending) = queue.pop_front() else {
                break;
            };
            if ids.insert(pending.task_id) {
                batch.push(pending);
            } else {
                later.push(pending);
            }
        }
        for pending in later.into_iter().rev() {
            queue.push_front(pending);
        }
        batch
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // The queue is consistent between statements: a panic elsewhere cannot leave it torn.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn received(
    outcome: Result<Result<Run, HandlerError>, oneshot::error::RecvError>,
) -> Result<Run, HandlerError> {
    outcome.unwrap_or_else(|_| {
        // The caller that ran the batch was aborted before it decided: nothing of the batch
        // is known to be committed, so the message is tried again in place.
        Err(HandlerError::retryable(anyhow::anyhow!(
            "the batch that held this task was abandoned"
        )))
    })
}

/// Runs a batch to its end and decides every task in it.
///
/// A handler that fails first in its transaction has certainly failed on its own: it is
/// decided as failed, and the others run again in a new transaction without it. One that fails
/// after others may have failed because of them (a handler that swallowed a database error
/// leaves the transaction aborted and returns `Ok`), so the batch is cut in two before it: the
/// tasks before it run again as one batch, and it runs first in a batch with the tasks after
/// it. A batch that fails for another reason (the database, a transaction that cannot commit)
/// is split: each task runs alone, as without batching. So a failure never blames another task,
/// and one bad task cannot hold up the others.
async fn execute(pool: &PgPool, task: &Registered, mut batch: Vec<Pending>) {
    // Sorted, so that concurrent batches lock the execution rows they share in one order.
    batch.sort_unstable_by_key(|pending| pending.task_id);
    // Batches still to run, the next one last.
    let mut work = vec![batch];
    while let Some(mut batch) = work.pop() {
        if batch.is_empty() {
            continue;
        }
        task.metrics.batch_size.record(batch.len() as f64);
        match attempt(pool, task, &batch).await {
            Ok(Attempt::Committed(runs)) => {
                for (pending, run) in batch.into_iter().zip(runs) {
                    pending.span.in_scope(|| task.report(&run));
                    pending.decide(Ok(run));
                }
            }
            Ok(Attempt::HandlerFailed { index: 0, error }) => {
                let failed = batch.remove(0);
                tracing::debug!(
                    parent: &failed.span,
                    others = batch.len(),
                    "task failed in a batch; the others run again without it"
                );
                failed.decide(Ok(Run::Failed(error)));
                work.push(batch);
            }
            Ok(Attempt::HandlerFailed { index, error }) => {
                let rest = batch.split_off(index);
                tracing::debug!(
                    parent: &rest[0].span,
                    error = %error,
                    before = batch.len(),
                    "task failed after others in a batch; it runs again first in a new batch"
                );
                work.push(rest);
                work.push(batch);
            }
            Err(error) => {
                tracing::warn!(
                    task = task.name,
                    tasks = batch.len(),
                    error = %error,
                    "a batch of tasks failed; running them one by one"
                );
                for pending in batch {
                    let outcome = run_alone(
                        pool,
                        task,
                        pending.task_id,
                        pending.attempt,
                        pending.scheduled_for,
                        &pending.payload,
                    )
                    .instrument(pending.span.clone())
                    .await;
                    pending.decide(outcome);
                }
            }
        }
    }
}

/// One transaction: record the executions, run the claimed tasks' handlers one after the
/// other, mark them completed, commit.
async fn attempt(
    pool: &PgPool,
    task: &Registered,
    batch: &[Pending],
) -> Result<Attempt, HandlerError> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the batch transaction")?;
    let tasks: Vec<(Uuid, u32)> = batch
        .iter()
        .map(|pending| (pending.task_id, pending.attempt))
        .collect();
    let claims = claim(&mut tx, task.name, &tasks).await?;
    let mut runs = Vec::with_capacity(batch.len());
    let mut completed = Vec::with_capacity(batch.len());
    for (index, (pending, claimed)) in batch.iter().zip(claims).enumerate() {
        let run = match claimed {
            Claim::AlreadyDone => Run::AlreadyDone,
            Claim::TakenBy(other) => Run::Failed(taken_by(pending.task_id, &other)),
            Claim::Claimed => {
                let mut ctx = TaskContext {
                    task_id: pending.task_id,
                    attempt: pending.attempt,
                    scheduled_for: pending.scheduled_for,
                    conn: &mut tx,
                };
                if let Err(error) = task
                    .call(&pending.payload, &mut ctx)
                    .instrument(pending.span.clone())
                    .await
                {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::warn!(error = %rollback, "failed to roll back a failed batch");
                    }
                    return Ok(Attempt::HandlerFailed { index, error });
                }
                completed.push(pending.task_id);
                Run::Succeeded
            }
        };
        runs.push(run);
    }
    if !completed.is_empty() {
        complete(&mut tx, &completed).await?;
    }
    tx.commit()
        .await
        .context("Failed to commit the batch transaction")?;
    Ok(Attempt::Committed(runs))
}

//! Running a task in its execution transaction: record the execution in `task_executions`, run
//! the handler, commit both or neither. One task per transaction here; [`super::batch`] runs
//! several in one. A call-out task ([`run_call_out`]) makes its call before that transaction,
//! with no connection held, and records the outcome in it.

use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use kafka::HandlerError;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::registered::{ErasedCallOut, Registered, Run};
use crate::{CallContext, TaskContext, TaskError};

/// One run in a transaction of its own: record the execution and run the handler. Success
/// commits both; failure rolls back both. `Err` means the outcome is not decided (the database
/// failed): nothing was committed.
pub(super) async fn run_alone(
    pool: &PgPool,
    task: &Registered,
    task_id: Uuid,
    attempt: u32,
    scheduled_for: Option<DateTime<Utc>>,
    payload: &[u8],
) -> Result<Run, HandlerError> {
    let mut tx = match begin_claimed(pool, task, task_id, attempt).await? {
        Ok(tx) => tx,
        Err(run) => return Ok(run),
    };
    let mut ctx = TaskContext {
        task_id,
        attempt,
        scheduled_for,
        conn: &mut tx,
    };
    let handled = task.call(payload, &mut ctx).await;
    finish(tx, task, task_id, handled).await
}

/// Begins a task's own transaction and claims its execution in it. `Err` holds what the run
/// ends with instead: the task was done before (reported; nothing was written, and the
/// transaction ends with it), or its id belongs to a task of another type.
async fn begin_claimed(
    pool: &PgPool,
    task: &Registered,
    task_id: Uuid,
    attempt: u32,
) -> Result<Result<Transaction<'static, Postgres>, Run>, HandlerError> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the task transaction")?;
    let claims = claim(&mut tx, task.name, &[(task_id, attempt)]).await?;
    match claims.into_iter().next().expect("one claim per task") {
        Claim::Claimed => Ok(Ok(tx)),
        Claim::AlreadyDone => {
            task.report(&Run::AlreadyDone);
            Ok(Err(Run::AlreadyDone))
        }
        Claim::TakenBy(other) => Ok(Err(Run::Failed(taken_by(task_id, &other)))),
    }
}

/// Ends a task's own transaction by the handler's result: on success the execution is marked
/// completed and everything commits; on failure everything the handler wrote rolls back, the
/// execution record included, so that the next attempt runs.
async fn finish(
    mut tx: Transaction<'static, Postgres>,
    task: &Registered,
    task_id: Uuid,
    handled: Result<(), TaskError>,
) -> Result<Run, HandlerError> {
    match handled {
        Ok(()) => {
            complete(&mut tx, &[task_id]).await?;
            tx.commit()
                .await
                .context("Failed to commit the task transaction")?;
            task.report(&Run::Succeeded);
            Ok(Run::Succeeded)
        }
        Err(error) => {
            // A rollback that fails is no worse: the transaction ends with its connection
            // either way.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, "failed to roll back a failed task");
            }
            Ok(Run::Failed(error))
        }
    }
}

/// One run of a call-out task: a check that it was not done before, its call with no
/// connection held, then, in a transaction of its own, the execution record, the handler's
/// record of the outcome and the completion, committed together. `Err` means the outcome is not
/// decided (the database failed): nothing was committed, and the task runs again, call
/// included, with the same task id.
pub(super) async fn run_call_out(
    pool: &PgPool,
    task: &Registered,
    handler: &dyn ErasedCallOut,
    task_id: Uuid,
    attempt: u32,
    scheduled_for: Option<DateTime<Utc>>,
    payload: &[u8],
) -> Result<Run, HandlerError> {
    // A task done before is not called again. One statement on a connection that goes back to
    // the pool before the call; the claim below settles the race with a concurrent copy.
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT task_name FROM task_executions WHERE task_id = $1")
            .bind(task_id)
            .fetch_optional(pool)
            .await
            .context("Failed to look up the task's execution")?;
    match recorded {
        None => {}
        Some(name) if name == task.name => {
            task.report(&Run::AlreadyDone);
            return Ok(Run::AlreadyDone);
        }
        Some(other) => return Ok(Run::Failed(taken_by(task_id, &other))),
    }

    let started = Instant::now();
    let call = CallContext {
        task_id,
        attempt,
        scheduled_for,
    };
    let outcome = match Registered::call_out(handler, payload, &call).await {
        Ok(outcome) => outcome,
        Err(error) => {
            task.record_duration(started);
            return Ok(Run::Failed(error));
        }
    };

    let mut tx = match begin_claimed(pool, task, task_id, attempt).await? {
        Ok(tx) => tx,
        Err(run) => {
            // The call went out either way: its time counts. Done before means a copy of the
            // task that ran at the same time recorded it first, and the provider recognises
            // this run's call by the same task id.
            task.record_duration(started);
            return Ok(run);
        }
    };
    let mut ctx = TaskContext {
        task_id,
        attempt,
        scheduled_for,
        conn: &mut tx,
    };
    let recorded = Registered::record_outcome(handler, outcome, &mut ctx).await;
    task.record_duration(started);
    // On failure nothing of this run stays, so the next attempt calls again.
    finish(tx, task, task_id, recorded).await
}

pub(super) fn taken_by(task_id: Uuid, other: &str) -> TaskError {
    TaskError::permanent(anyhow::anyhow!(
        "task id {task_id} was already used by a `{other}` task"
    ))
}

pub(super) enum Claim {
    /// This run owns the execution; it commits or rolls back with the handler's writes.
    Claimed,
    AlreadyDone,
    /// The id belongs to an execution of another task type.
    TakenBy(String),
}

/// Records the executions of tasks of one type, or finds them recorded before, in two
/// statements at most. A concurrent run of the same task id (a duplicate on another partition)
/// blocks on the primary key until its transaction ends, then the id is found, or claimed if
/// that run rolled back. `tasks` must be sorted by id and hold each id once: concurrent batches
/// then lock the ids they share in the same order and cannot deadlock on them.
pub(super) async fn claim(
    conn: &mut PgConnection,
    task_name: &str,
    tasks: &[(Uuid, u32)],
) -> Result<Vec<Claim>, HandlerError> {
    debug_assert!(tasks.windows(2).all(|pair| pair[0].0 < pair[1].0));
    let ids: Vec<Uuid> = tasks.iter().map(|(id, _)| *id).collect();
    let attempts: Vec<i32> = tasks
        .iter()
        .map(|(_, attempt)| attempts_column(*attempt))
        .collect();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO task_executions (task_id, task_name, attempts)
         SELECT task_id, $2, attempts FROM unnest($1::uuid[], $3::int[]) AS t (task_id, attempts)
         ON CONFLICT (task_id) DO NOTHING
         RETURNING task_id",
    )
    .bind(&ids)
    .bind(task_name)
    .bind(&attempts)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to record the task executions")?;
    if claimed.len() == ids.len() {
        return Ok(tasks.iter().map(|_| Claim::Claimed).collect());
    }
    let claimed: std::collections::HashSet<Uuid> = claimed.into_iter().collect();
    let others: Vec<Uuid> = ids
        .iter()
        .filter(|id| !claimed.contains(id))
        .copied()
        .collect();
    // A second statement sees rows committed after the insert's snapshot, such as the ones the
    // insert waited for.
    let recorded: std::collections::HashMap<Uuid, String> =
        sqlx::query_as("SELECT task_id, task_name FROM task_executions WHERE task_id = ANY($1)")
            .bind(&others)
            .fetch_all(&mut *conn)
            .await
            .context("Failed to read the recorded task executions")?
            .into_iter()
            .collect();
    ids.iter()
        .map(|id| {
            if claimed.contains(id) {
                return Ok(Claim::Claimed);
            }
            match recorded.get(id) {
                Some(name) if name == task_name => Ok(Claim::AlreadyDone),
                Some(name) => Ok(Claim::TakenBy(name.clone())),
                None => Err(HandlerError::retryable(anyhow::anyhow!(
                    "the execution of task {id} was neither recorded nor found"
                ))),
            }
        })
        .collect()
}

pub(super) async fn complete(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
) -> Result<(), HandlerError> {
    sqlx::query(
        "UPDATE task_executions SET completed_at = clock_timestamp() WHERE task_id = ANY($1)",
    )
    .bind(task_ids)
    .execute(conn)
    .await
    .context("Failed to mark the task execution completed")?;
    Ok(())
}

fn attempts_column(attempt: u32) -> i32 {
    i32::try_from(attempt).unwrap_or(i32::MAX)
}

//! Call-out handlers (`Worker::register_call_out`): the call runs with no database connection
//! held, the record commits with the execution, a task done before is not called again, and a
//! record or commit that fails after the call, or a crash there, leads to a second call with the
//! same task id and one record in the end.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{DEADLINE, Job, Scripted, Setup};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use task_queue::{
    Batching, CallContext, CallOutHandler, Task, TaskContext, TaskError, TaskOptions, Worker,
};
use test_support::eventually;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One call the handler made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    value: String,
    task_id: Uuid,
    attempt: u32,
}

/// What the record step does wrong, once per value.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Returns a retryable error: the task goes to the first retry level.
    FailRecord,
    /// Swallows a database error and reports success, so the transaction cannot commit: the
    /// outcome is undecided and the message is retried in place.
    BreakCommit,
    /// Never finishes: for killing the worker between the call and the commit.
    Hang,
}

/// A call-out handler for `Job`: its call is recorded (and waits for `gate`, when there is
/// one), its record writes the job's effect to `effects`.
#[derive(Clone, Default)]
struct Caller {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls waiting for the gate right now.
    waiting: Arc<AtomicUsize>,
    /// Most calls in progress at once.
    max_calling: Arc<AtomicUsize>,
    calling: Arc<AtomicUsize>,
    gate: Option<CancellationToken>,
    /// Values whose call fails with a retryable error, once per entry.
    failing_calls: Arc<Mutex<Vec<String>>>,
    /// Values whose record goes wrong once, and how.
    faults: Arc<Mutex<Vec<(String, Fault)>>>,
    /// Simulated time of a call.
    work: Duration,
    /// Records that hang right now (`Fault::Hang`).
    hanging: Arc<AtomicUsize>,
}

impl Caller {
    fn calls_of(&self, value: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.value == value)
            .cloned()
            .collect()
    }

    fn fault_once(self, value: &str, fault: Fault) -> Self {
        self.faults.lock().unwrap().push((value.to_owned(), fault));
        self
    }

    /// Removes and returns the fault scripted for `value`, if any.
    fn take_fault(&self, value: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let index = faults.iter().position(|(of, _)| of == value)?;
        Some(faults.remove(index).1)
    }
}

impl CallOutHandler<Job> for Caller {
    type Outcome = String;

    async fn call(&self, job: Job, ctx: &CallContext) -> Result<String, TaskError> {
        self.calls.lock().unwrap().push(Call {
            value: job.value.clone(),
            task_id: ctx.task_id,
            attempt: ctx.attempt,
        });
        let calling = self.calling.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_calling.fetch_max(calling, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            gate.cancelled().await;
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        tokio::time::sleep(self.work).await;
        self.calling.fetch_sub(1, Ordering::SeqCst);
        let mut failing = self.failing_calls.lock().unwrap();
        if let Some(index) = failing.iter().position(|value| *value == job.value) {
            failing.remove(index);
            return Err(TaskError::retryable(anyhow::anyhow!(
                "the provider is down (attempt {})",
                ctx.attempt
            )));
        }
        Ok(job.value)
    }

    async fn record(&self, value: String, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        sqlx::query("INSERT INTO effects (task_id, value) VALUES ($1, $2)")
            .bind(ctx.task_id)
            .bind(&value)
            .execute(&mut *ctx.conn)
            .await
            .map_err(anyhow::Error::from)?;
        match self.take_fault(&value) {
            None => Ok(()),
            Some(Fault::FailRecord) => Err(TaskError::retryable(anyhow::anyhow!(
                "the record failed after the call"
            ))),
            Some(Fault::BreakCommit) => {
                let failed = sqlx::query("SELECT * FROM no_such_table")
                    .execute(&mut *ctx.conn)
                    .await;
                assert!(failed.is_err(), "the statement is meant to fail");
                Ok(())
            }
            Some(Fault::Hang) => {
                self.hanging.fetch_add(1, Ordering::SeqCst);
                std::future::pending().await
            }
        }
    }
}

impl Setup {
    /// A worker for the test queue with fast retries and `handler` as `Job`'s call-out handler,
    /// on `pool`.
    fn call_out_worker(&self, pool: sqlx::PgPool, handler: Caller, options: TaskOptions) -> Worker {
        Worker::new(pool, &self.kafka, &self.group, self.queue.topic())
            .retry(common::fast_retries())
            .register_call_out::<Job, _>(handler, options)
    }
}

/// With the call in the execution transaction, a pool of 2 connections would let 2 calls wait
/// at once and starve everything else; here 50 wait and the pool still answers.
#[tokio::test]
async fn calls_wait_without_holding_a_connection() {
    let setup = Setup::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&setup.db.url)
        .await
        .expect("a pool of 2");
    let gate = CancellationToken::new();
    let handler = Caller {
        gate: Some(gate.clone()),
        ..Caller::default()
    };
    let worker = setup
        .start_worker(setup.call_out_worker(pool.clone(), handler.clone(), TaskOptions::default()))
        .await;

    let count = 50;
    for index in 0..count {
        setup.enqueue(&Job::new(format!("waiting-{index}"))).await;
    }
    eventually(
        DEADLINE,
        &format!("{count} calls waiting at once"),
        || async { (handler.waiting.load(Ordering::SeqCst) == count).then_some(()) },
    )
    .await;
    let answer: i32 = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query_scalar("SELECT 1").fetch_one(&pool),
    )
    .await
    .expect("the pool answers while the calls wait")
    .expect("SELECT 1");
    assert_eq!(answer, 1);
    assert_eq!(
        setup.effects_like("waiting-%").await,
        0,
        "nothing is recorded before the calls return"
    );

    gate.cancel();
    eventually(DEADLINE, "every call recorded", || async {
        (setup.effects_like("waiting-%").await == 50).then_some(())
    })
    .await;
    worker.stop().await;

    for index in 0..count {
        let value = format!("waiting-{index}");
        assert_eq!(setup.effects(&value).await, 1, "{value}");
        assert_eq!(handler.calls_of(&value).len(), 1, "{value}");
    }
}

#[tokio::test]
async fn a_task_done_before_is_not_called_again() {
    let setup = Setup::new().await;
    let handler = Caller::default();
    let worker = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;

    let job = Job {
        id: Some(Uuid::now_v7()),
        ..Job::keyed("once", "k")
    };
    let task_id = setup.enqueue(&job).await;
    assert_eq!(setup.wait_for_effect("once").await, 1);
    // Delivered again after it was done, then a marker behind it on the same key: once the
    // marker is recorded, the copy was handled.
    setup.enqueue(&job).await;
    setup.enqueue(&Job::keyed("marker", "k")).await;
    setup.wait_for_effect("marker").await;
    worker.stop().await;

    assert_eq!(setup.effects("once").await, 1);
    assert_eq!(
        handler.calls_of("once"),
        [Call {
            value: "once".to_owned(),
            task_id,
            attempt: 1
        }],
        "the copy was not called"
    );
    assert_eq!(
        setup.execution(task_id).await,
        Some(("TestJob".to_owned(), 1))
    );
}

#[tokio::test]
async fn a_failed_record_calls_again_with_the_same_task_id_and_records_once() {
    let setup = Setup::new().await;
    let handler = Caller::default().fault_once("flaky-record", Fault::FailRecord);
    let worker = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;

    let task_id = setup.enqueue(&Job::new("flaky-record")).await;
    assert_eq!(setup.wait_for_effect("flaky-record").await, 1);
    worker.stop().await;

    let calls = handler.calls_of("flaky-record");
    assert_eq!(
        calls
            .iter()
            .map(|call| (call.task_id, call.attempt))
            .collect::<Vec<_>>(),
        [(task_id, 1), (task_id, 2)],
        "called again on the retry level, with the same task id"
    );
    assert_eq!(setup.effects("flaky-record").await, 1);
    assert_eq!(
        setup.execution(task_id).await,
        Some(("TestJob".to_owned(), 2))
    );
}

#[tokio::test]
async fn a_failed_commit_calls_again_with_the_same_task_id_and_records_once() {
    let setup = Setup::new().await;
    let handler = Caller::default().fault_once("flaky-commit", Fault::BreakCommit);
    let worker = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;

    let task_id = setup.enqueue(&Job::new("flaky-commit")).await;
    assert_eq!(setup.wait_for_effect("flaky-commit").await, 1);
    worker.stop().await;

    let calls = handler.calls_of("flaky-commit");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|call| call.task_id == task_id),
        "{calls:?}"
    );
    assert_eq!(setup.effects("flaky-commit").await, 1);
    assert!(setup.execution(task_id).await.is_some());
}

/// A crash between the call and the commit, as the process dying there would: the task comes
/// again after the restart and is called again, with the same task id, and recorded once.
#[tokio::test]
async fn a_worker_killed_between_call_and_commit_calls_again_with_the_same_task_id() {
    let setup = Setup::new().await;
    let handler = Caller::default().fault_once("interrupted", Fault::Hang);
    let first = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;

    let task_id = setup.enqueue(&Job::new("interrupted")).await;
    eventually(DEADLINE, "the record to hang after the call", || async {
        (handler.hanging.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // The call was made and the effect written, not committed.
    first.worker.kill().await;
    let second = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;
    assert_eq!(setup.wait_for_effect("interrupted").await, 1);
    second.stop().await;

    let calls = handler.calls_of("interrupted");
    assert_eq!(
        calls
            .iter()
            .map(|call| (call.task_id, call.attempt))
            .collect::<Vec<_>>(),
        [(task_id, 1), (task_id, 1)],
        "called again after the restart, with the same task id; a crash is not a failed attempt"
    );
    assert_eq!(setup.effects("interrupted").await, 1);
}

#[tokio::test]
async fn a_failing_call_goes_through_the_retry_levels_and_a_permanent_one_to_the_dead_letters() {
    let setup = Setup::new().await;
    let handler = Caller::default();
    handler
        .failing_calls
        .lock()
        .unwrap()
        .extend(["flaky-call".to_owned(), "flaky-call".to_owned()]);
    let worker = setup
        .start_worker(setup.call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        ))
        .await;

    let flaky = setup.enqueue(&Job::new("flaky-call")).await;
    // Not a valid `Job`: a permanent failure of the call step, before any call is made.
    let broken = Uuid::now_v7();
    setup
        .producer
        .publish_bytes(
            setup.queue.topic(),
            Some(broken.to_string().as_bytes()),
            Some(br#"{"value": 42}"#),
            kafka::MessageHeaders::new(Job::NAME).message_id(broken),
        )
        .await
        .expect("published");

    assert_eq!(setup.wait_for_effect("flaky-call").await, 1);
    let dead = setup.wait_for_dead_letters(1).await;
    worker.stop().await;

    assert_eq!(
        handler
            .calls_of("flaky-call")
            .iter()
            .map(|call| call.attempt)
            .collect::<Vec<_>>(),
        [1, 2, 3],
        "main topic, retry.1, retry.2"
    );
    assert_eq!(
        setup.execution(flaky).await,
        Some(("TestJob".to_owned(), 3))
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].task_id, broken);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].last_error.contains("not a valid TestJob task"),
        "{}",
        dead[0].last_error
    );
}

#[tokio::test]
async fn a_call_out_handler_cannot_be_batched() {
    let setup = Setup::new().await;
    let options = TaskOptions {
        batch: Some(Batching::default()),
        ..TaskOptions::default()
    };
    let error = setup
        .call_out_worker(setup.db.pool.clone(), Caller::default(), options)
        .start(CancellationToken::new())
        .await
        .expect_err("batching is refused");

    let error = format!("{error:#}");
    assert!(
        error.contains("TestJob") && error.contains("batch"),
        "{error}"
    );
}

/// A second task type, to share limits with `Job`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OtherJob {
    value: String,
}

impl Task for OtherJob {
    const NAME: &'static str = "TestOtherJob";
}

impl CallOutHandler<OtherJob> for Caller {
    type Outcome = String;

    async fn call(&self, job: OtherJob, ctx: &CallContext) -> Result<String, TaskError> {
        CallOutHandler::<Job>::call(self, Job::new(job.value), ctx).await
    }

    async fn record(&self, value: String, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        CallOutHandler::<Job>::record(self, value, ctx).await
    }
}

/// Two task types that call the same provider share one concurrency limit: at most 2 of their
/// calls at once, counted together.
#[tokio::test]
async fn task_types_with_shared_limits_count_their_tasks_together() {
    let setup = Setup::new().await;
    let handler = Caller {
        work: Duration::from_millis(100),
        ..Caller::default()
    };
    let worker = setup
        .call_out_worker(
            setup.db.pool.clone(),
            handler.clone(),
            TaskOptions::default(),
        )
        .register_call_out::<OtherJob, _>(handler.clone(), TaskOptions::default())
        .shared_limits(
            &[Job::NAME, OtherJob::NAME],
            TaskOptions {
                concurrency: Some(2),
                ..TaskOptions::default()
            },
        );
    let worker = setup.start_worker(worker).await;

    for index in 0..6 {
        setup.enqueue(&Job::new(format!("shared-{index}"))).await;
        setup
            .queue
            .enqueue(&OtherJob {
                value: format!("shared-{index}"),
            })
            .await
            .expect("enqueue");
    }
    eventually(DEADLINE, "12 effects", || async {
        (setup.effects_like("shared-%").await == 12).then_some(())
    })
    .await;
    worker.stop().await;

    assert_eq!(handler.max_calling.load(Ordering::SeqCst), 2);
}

/// The transactional path is unchanged beside a call-out one: a worker runs both kinds.
#[tokio::test]
async fn transactional_and_call_out_handlers_run_side_by_side() {
    let setup = Setup::new().await;
    let caller = Caller::default();
    let worker = Worker::new(
        setup.db.pool.clone(),
        &setup.kafka,
        &setup.group,
        setup.queue.topic(),
    )
    .retry(common::fast_retries())
    .register_call_out::<OtherJob, _>(caller.clone(), TaskOptions::default())
    .register::<Job, _>(Scripted::succeeding(), TaskOptions::default());
    let worker = setup.start_worker(worker).await;

    setup.enqueue(&Job::new("in-transaction")).await;
    setup
        .queue
        .enqueue(&OtherJob {
            value: "called-out".to_owned(),
        })
        .await
        .expect("enqueue");
    setup.wait_for_effect("in-transaction").await;
    setup.wait_for_effect("called-out").await;
    worker.stop().await;

    assert_eq!(caller.calls_of("called-out").len(), 1);
    assert!(caller.calls_of("in-transaction").is_empty());
}

//! Batching (`TaskOptions::batch`): tasks that are ready together share a transaction, each
//! effect is still recorded once, and a failure stays with the task that failed.
//!
//! Every test enqueues a backlog before its worker starts, so that the tasks arrive together
//! and make batches.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{DEADLINE, Job, Scripted, Setup, Then};
use task_queue::{Batching, TaskError, TaskOptions};
use test_support::eventually;
use uuid::Uuid;

fn batched(max_tasks: usize) -> TaskOptions {
    TaskOptions {
        batch: Some(Batching {
            max_tasks,
            transactions: 2,
        }),
        ..TaskOptions::default()
    }
}

fn values(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

async fn enqueue_all(setup: &Setup, jobs: &[Job]) {
    futures::future::join_all(jobs.iter().map(|job| setup.enqueue(job))).await;
}

/// Waits until `count` effects are recorded.
async fn wait_for_effects(setup: &Setup, count: i64) {
    eventually(DEADLINE, &format!("{count} effects"), || async {
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM effects")
            .fetch_one(&setup.db.pool)
            .await
            .expect("count effects");
        (recorded >= count).then_some(())
    })
    .await;
}

/// How many effects each transaction wrote, largest first: `xmin` is the id of the transaction
/// that inserted a row.
async fn effects_per_transaction(setup: &Setup) -> Vec<i64> {
    sqlx::query_scalar("SELECT count(*) FROM effects GROUP BY xmin::text ORDER BY count(*) DESC")
        .fetch_all(&setup.db.pool)
        .await
        .expect("group effects by transaction")
}

/// Values whose effect is not recorded exactly once.
async fn not_recorded_once(setup: &Setup, values: &[String]) -> Vec<(String, i64)> {
    let mut wrong = Vec::new();
    for value in values {
        let count = setup.effects(value).await;
        if count != 1 {
            wrong.push((value.clone(), count));
        }
    }
    wrong
}

#[tokio::test]
async fn tasks_ready_together_share_a_transaction_and_each_effect_is_recorded_once() {
    let setup = Setup::new().await;
    let values = values("batched", 300);
    let jobs: Vec<Job> = values.iter().map(Job::new).collect();
    enqueue_all(&setup, &jobs).await;

    let handler = Scripted::succeeding();
    let worker = setup
        .start_worker(setup.worker(handler.clone(), batched(50)))
        .await;
    wait_for_effects(&setup, 300).await;
    worker.stop().await;

    assert_eq!(not_recorded_once(&setup, &values).await, []);
    let per_transaction = effects_per_transaction(&setup).await;
    assert!(
        per_transaction[0] > 1,
        "no two tasks shared a transaction: {per_transaction:?}"
    );
    assert!(
        per_transaction[0] <= 50,
        "a transaction held more than max_tasks: {per_transaction:?}"
    );
    let (completed, first_attempts): (i64, i64) = sqlx::query_as(
        "SELECT count(completed_at), count(*) FILTER (WHERE attempts = 1) FROM task_executions",
    )
    .fetch_one(&setup.db.pool)
    .await
    .unwrap();
    assert_eq!((completed, first_attempts), (300, 300));
    assert_eq!(
        handler.runs().len(),
        300,
        "nothing failed, so nothing ran twice"
    );
}

#[tokio::test]
async fn a_task_failing_in_a_batch_fails_alone_and_the_others_commit() {
    let setup = Setup::new().await;
    let good = values("good", 100);
    let mut jobs: Vec<Job> = good.iter().map(Job::new).collect();
    // In the middle of the backlog, so that they fail after other tasks of their batch.
    jobs.insert(30, Job::new("bad-1"));
    jobs.insert(60, Job::new("bad-2"));
    enqueue_all(&setup, &jobs).await;

    let handler = Scripted::new(|job, _| {
        if job.value.starts_with("bad") {
            Then::Fail(TaskError::permanent(anyhow::anyhow!(
                "{} is invalid",
                job.value
            )))
        } else {
            Then::Succeed
        }
    });
    let worker = setup
        .start_worker(setup.worker(handler.clone(), batched(50)))
        .await;
    wait_for_effects(&setup, 100).await;
    let dead_letters = setup.wait_for_dead_letters(2).await;
    worker.stop().await;

    assert_eq!(not_recorded_once(&setup, &good).await, []);
    assert_eq!(setup.effects("bad-1").await, 0, "rolled back");
    assert_eq!(setup.effects("bad-2").await, 0, "rolled back");
    let mut dead: Vec<(String, u32)> = dead_letters
        .iter()
        .map(|letter| (letter.last_error.clone(), letter.attempts))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            ("bad-1 is invalid".to_owned(), 1),
            ("bad-2 is invalid".to_owned(), 1)
        ]
    );
    let retried: Vec<_> = handler
        .runs()
        .into_iter()
        .filter(|run| run.attempt > 1)
        .collect();
    assert!(retried.is_empty(), "no task was retried: {retried:?}");
}

#[tokio::test]
async fn a_handler_that_breaks_the_batch_transaction_fails_no_other_task() {
    let setup = Setup::new().await;
    let values = values("bystander", 100);
    let mut jobs: Vec<Job> = values.iter().map(Job::new).collect();
    jobs.insert(50, Job::new("breaker"));
    enqueue_all(&setup, &jobs).await;

    // The first run of `breaker` leaves its transaction aborted: the handlers after it in its
    // batch fail, and so would the commit. Its later runs succeed.
    let broke = Arc::new(AtomicBool::new(false));
    let handler = Scripted::new({
        let broke = broke.clone();
        move |job, _| {
            if job.value == "breaker" && !broke.swap(true, Ordering::SeqCst) {
                Then::BreakTransaction
            } else {
                Then::Succeed
            }
        }
    });
    let worker = setup
        .start_worker(setup.worker(handler.clone(), batched(50)))
        .await;
    wait_for_effects(&setup, 101).await;
    worker.stop().await;

    assert!(broke.load(Ordering::SeqCst));
    assert_eq!(not_recorded_once(&setup, &values).await, []);
    assert_eq!(setup.effects("breaker").await, 1);
    let retried: Vec<_> = handler
        .runs()
        .into_iter()
        .filter(|run| run.attempt > 1)
        .collect();
    assert!(
        retried.is_empty(),
        "no task was blamed and sent to a retry level: {retried:?}"
    );
    assert!(setup.dead_letters().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_same_task_delivered_twice_to_a_batching_worker_runs_once() {
    let setup = Setup::new().await;
    let id = Uuid::now_v7();
    let others = values("other", 50);
    let mut jobs: Vec<Job> = others.iter().map(Job::new).collect();
    // Different keys: the copies can arrive on different partitions, at the same time. Each
    // has a marker behind it on its key: once the markers ran, every copy was handled.
    let markers = values("marker", 3);
    for (key, marker) in ["a", "b", "c"].into_iter().zip(&markers) {
        jobs.push(Job {
            id: Some(id),
            ..Job::keyed("twice", key)
        });
        jobs.push(Job::keyed(marker, key));
    }
    // One at a time: a copy must reach its partition before its marker.
    for job in &jobs {
        setup.enqueue(job).await;
    }

    let handler = Scripted::succeeding();
    let worker = setup
        .start_worker(setup.worker(handler.clone(), batched(100)))
        .await;
    wait_for_effects(&setup, 54).await;
    worker.stop().await;

    assert_eq!(not_recorded_once(&setup, &markers).await, []);
    assert_eq!(not_recorded_once(&setup, &others).await, []);
    assert_eq!(setup.effects("twice").await, 1);
    assert_eq!(handler.runs_of("twice").len(), 1);
}

#[tokio::test]
async fn invalid_batching_options_are_refused() {
    let setup = Setup::new().await;
    for batch in [
        Batching {
            max_tasks: 0,
            transactions: 1,
        },
        Batching {
            max_tasks: 10,
            transactions: 0,
        },
    ] {
        let options = TaskOptions {
            batch: Some(batch),
            ..TaskOptions::default()
        };
        let error = setup
            .worker(Scripted::succeeding(), options)
            .start(tokio_util::sync::CancellationToken::new())
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("batch."), "{error:#}");
    }
}

//! Running tasks: effectively-once effects across crashes and duplicates, the outbox path, and
//! the per task type limits.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{DEADLINE, Job, Scripted, Setup, Then};
use outbox::{OutboxRelay, RelaySettings};
use task_queue::TaskOptions;
use test_support::eventually;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn a_worker_killed_mid_task_runs_the_task_again_and_records_its_effect_once() {
    let setup = Setup::new().await;
    let hang = Arc::new(AtomicBool::new(true));
    let handler = Scripted::new({
        let hang = hang.clone();
        move |_, _| {
            if hang.load(Ordering::SeqCst) {
                Then::Hang
            } else {
                Then::Succeed
            }
        }
    });
    let first = setup.start(handler.clone()).await;

    let task_id = setup.enqueue(&Job::new("interrupted")).await;
    eventually(DEADLINE, "the first run to start", || async {
        (!handler.runs().is_empty()).then_some(())
    })
    .await;
    // The handler wrote its effect and hangs before the commit.
    first.worker.kill().await;
    hang.store(false, Ordering::SeqCst);

    let second = setup.start(handler.clone()).await;
    assert_eq!(setup.wait_for_effect("interrupted").await, 1);
    second.stop().await;

    assert_eq!(setup.effects("interrupted").await, 1);
    let runs = handler.runs_of("interrupted");
    assert_eq!(runs.len(), 2, "run again after the restart");
    assert_eq!(
        setup.execution(task_id).await,
        Some(("TestJob".to_owned(), 1)),
        "a crash is not a failed attempt"
    );
}

#[tokio::test]
async fn the_same_task_id_enqueued_twice_runs_once() {
    let setup = Setup::new().await;
    let handler = Scripted::succeeding();
    let worker = setup.start(handler.clone()).await;

    let job = Job {
        id: Some(Uuid::now_v7()),
        ..Job::keyed("once", "k")
    };
    let first = setup.enqueue(&job).await;
    let second = setup.enqueue(&job).await;
    assert_eq!(first, second);
    // Behind both copies on the same key: once it ran, both copies were handled.
    setup.enqueue(&Job::keyed("marker", "k")).await;
    setup.wait_for_effect("marker").await;
    worker.stop().await;

    assert_eq!(setup.effects("once").await, 1);
    assert_eq!(handler.runs_of("once").len(), 1);
}

#[tokio::test]
async fn enqueue_in_delivers_a_task_if_and_only_if_the_transaction_commits() {
    let setup = Setup::new().await;
    outbox::migrate(&setup.db.pool).await.unwrap();
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(setup.db.pool.clone(), setup.producer.clone())
        .with_settings(RelaySettings::default());
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let handler = Scripted::succeeding();
    let worker = setup.start(handler.clone()).await;

    let mut tx = setup.db.pool.begin().await.unwrap();
    let rolled_back = setup
        .queue
        .enqueue_in(&mut tx, &Job::new("rolled-back"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let committed = Job {
        id: Some(Uuid::now_v7()),
        ..Job::new("committed")
    };
    let mut tx = setup.db.pool.begin().await.unwrap();
    let task_id = setup.queue.enqueue_in(&mut tx, &committed).await.unwrap();
    tx.commit().await.unwrap();
    // Enqueued again: the outbox holds the id already, and the caller's transaction goes on.
    let mut tx = setup.db.pool.begin().await.unwrap();
    let again = setup.queue.enqueue_in(&mut tx, &committed).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, task_id);

    assert_eq!(setup.wait_for_effect("committed").await, 1);
    shutdown.cancel();
    relay.await.unwrap().unwrap();
    worker.stop().await;

    let outbox_rows = |id: Uuid| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE message_id = $1")
            .bind(id)
            .fetch_one(&setup.db.pool)
    };
    assert_eq!(outbox_rows(task_id).await.unwrap(), 1);
    assert_eq!(
        outbox_rows(rolled_back).await.unwrap(),
        0,
        "nothing to publish"
    );
    assert_eq!(setup.effects("rolled-back").await, 0);
    assert_eq!(handler.runs().len(), 1);
}

#[tokio::test]
async fn the_rate_limit_spaces_task_starts() {
    let setup = Setup::new().await;
    let rate = 10.0;
    let handler = Scripted::succeeding();
    let options = TaskOptions {
        rate_limit_per_sec: Some(rate),
        ..TaskOptions::default()
    };
    let worker = setup
        .start_worker(setup.worker(handler.clone(), options))
        .await;

    let count = 25;
    for i in 0..count {
        setup.enqueue(&Job::new(format!("rated-{i}"))).await;
    }
    eventually(DEADLINE, "every task to run", || async {
        (handler.runs().len() >= count).then_some(())
    })
    .await;
    worker.stop().await;

    let mut starts: Vec<_> = handler.runs().iter().map(|run| run.started).collect();
    starts.sort();
    // A token bucket of one second's worth: in any stretch of t seconds at most
    // rate + rate × t tasks start (plus one for timer rounding).
    for (i, first) in starts.iter().enumerate() {
        for (j, last) in starts.iter().enumerate().skip(i) {
            let started = (j - i + 1) as f64;
            let allowed = rate + rate * last.duration_since(*first).as_secs_f64() + 1.0;
            assert!(
                started <= allowed,
                "{started} tasks started within {:?}",
                last.duration_since(*first)
            );
        }
    }
}

#[tokio::test]
async fn the_concurrency_limit_bounds_tasks_running_at_once() {
    let setup = Setup::new().await;
    let handler = Scripted::succeeding().working_for(Duration::from_millis(150));
    let options = TaskOptions {
        concurrency: Some(2),
        ..TaskOptions::default()
    };
    let worker = setup
        .start_worker(setup.worker(handler.clone(), options))
        .await;

    // Different keys: the consumer runtime would run them all at once.
    let count = 8;
    for i in 0..count {
        setup.enqueue(&Job::new(format!("limited-{i}"))).await;
    }
    eventually(DEADLINE, "every task to run", || async {
        (handler.runs().len() >= count).then_some(())
    })
    .await;
    worker.stop().await;

    assert_eq!(handler.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_worker_without_tasks_or_with_invalid_options_does_not_start() {
    let setup = Setup::new().await;
    let empty = task_queue::Worker::new(
        setup.db.pool.clone(),
        &setup.kafka,
        &setup.group,
        setup.queue.topic(),
    );
    let error = empty.start(CancellationToken::new()).await.unwrap_err();
    assert!(error.to_string().contains("no task types"), "{error:#}");

    let twice = setup
        .worker(Scripted::succeeding(), TaskOptions::default())
        .register(Scripted::succeeding(), TaskOptions::default());
    let error = twice.start(CancellationToken::new()).await.unwrap_err();
    assert!(error.to_string().contains("registered twice"), "{error:#}");

    let options = TaskOptions {
        concurrency: Some(0),
        ..TaskOptions::default()
    };
    let error = setup
        .worker(Scripted::succeeding(), options)
        .start(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("concurrency"), "{error:#}");
}

#[tokio::test]
async fn the_execution_record_names_the_task_and_its_effect_commits_with_it() {
    let setup = Setup::new().await;
    let worker = setup.start(Scripted::succeeding()).await;

    let task_id = setup.enqueue(&Job::new("plain")).await;
    setup.wait_for_effect("plain").await;
    worker.stop().await;

    let (name, attempts, completed): (String, i32, bool) = sqlx::query_as(
        "SELECT task_name, attempts, completed_at IS NOT NULL FROM task_executions WHERE task_id = $1",
    )
    .bind(task_id)
    .fetch_one(&setup.db.pool)
    .await
    .unwrap();
    assert_eq!((name.as_str(), attempts, completed), ("TestJob", 1, true));
}

#[tokio::test]
async fn retention_deletes_execution_records_and_decided_dead_letters_past_their_age() {
    let setup = Setup::new().await;
    let pool = &setup.db.pool;
    let age = Duration::from_hours(1);
    // Execution records: one completed two hours ago, one just now.
    sqlx::query(
        "INSERT INTO task_executions (task_id, task_name, attempts, completed_at)
         VALUES ($1, 'TestJob', 1, now() - interval '2 hours'), ($2, 'TestJob', 1, now())",
    )
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .execute(pool)
    .await
    .unwrap();
    // Dead letters: replayed and dropped long ago (go), replayed just now (stays), and one
    // still waiting for a decision, however old (stays).
    for (state, changed_hours_ago) in [
        ("replayed", Some(2)),
        ("dropped", Some(2)),
        ("replayed", Some(0)),
        ("dead", None),
    ] {
        sqlx::query(
            "INSERT INTO dead_letters (queue, task_id, task_name, headers, attempts, first_error,
                 last_error, original_topic, original_partition, original_offset,
                 first_failed_at, dead_lettered_at, state, state_changed_at)
             VALUES ('q', $1, 'TestJob', '[]', 1, 'e', 'e', 'q', 0, 0,
                 now() - interval '30 days', now() - interval '30 days', $2,
                 now() - make_interval(hours => $3))",
        )
        .bind(Uuid::now_v7())
        .bind(state)
        .bind(changed_hours_ago)
        .execute(pool)
        .await
        .unwrap();
    }

    assert_eq!(task_queue::purge_executions(pool, age).await.unwrap(), 1);
    assert_eq!(task_queue::purge_dead_letters(pool, age).await.unwrap(), 2);

    let executions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_executions WHERE completed_at > now() - interval '1 minute'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(executions, 1, "the recent record stays");
    let left: Vec<String> = sqlx::query_scalar("SELECT state FROM dead_letters ORDER BY state")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["dead", "replayed"]);
    // Nothing more is old enough: a second run deletes nothing.
    assert_eq!(task_queue::purge_executions(pool, age).await.unwrap(), 0);
    assert_eq!(task_queue::purge_dead_letters(pool, age).await.unwrap(), 0);
}

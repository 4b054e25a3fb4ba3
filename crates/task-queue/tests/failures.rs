//! What happens to tasks that fail: retry levels, the dead-letter topic and its index, replay,
//! and messages the worker cannot run at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{DEADLINE, Job, Scripted, Setup, Then, fast_retries};
use kafka::MessageHeaders;
use task_queue::{RetryLevels, TaskError, TaskOptions, retry_topic};
use test_support::eventually;

#[tokio::test]
async fn a_task_that_fails_twice_then_succeeds_has_its_effect_recorded_once() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|_, attempt| {
        if attempt < 3 {
            Then::Fail(TaskError::retryable(anyhow::anyhow!(
                "attempt {attempt} failed"
            )))
        } else {
            Then::Succeed
        }
    });
    let worker = setup.start(handler.clone()).await;

    let task_id = setup.enqueue(&Job::new("flaky")).await;
    setup.wait_for_effect("flaky").await;
    worker.stop().await;

    assert_eq!(
        setup.effects("flaky").await,
        1,
        "the failed runs' effects were rolled back"
    );
    assert_eq!(
        setup.execution(task_id).await,
        Some(("TestJob".to_owned(), 3))
    );
    let attempts: Vec<u32> = handler.runs().iter().map(|run| run.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "main topic, retry.1, retry.2");
}

#[tokio::test]
async fn a_task_that_keeps_failing_is_dead_lettered_and_replays_after_recovery() {
    let setup = Setup::new().await;
    let recovered = Arc::new(AtomicBool::new(false));
    let handler = Scripted::new({
        let recovered = recovered.clone();
        move |_, attempt| {
            if recovered.load(Ordering::SeqCst) {
                Then::Succeed
            } else {
                Then::Fail(TaskError::retryable(anyhow::anyhow!(
                    "provider down (attempt {attempt})"
                )))
            }
        }
    });
    let worker = setup.start(handler.clone()).await;

    let job = Job::new("doomed");
    let task_id = setup.enqueue(&job).await;
    let listed = setup.wait_for_dead_letters(1).await;

    let dead = &listed[0];
    assert_eq!(dead.task_id, task_id);
    assert_eq!(dead.task_name, "TestJob");
    assert_eq!(dead.attempts, 3, "one run per level");
    assert_eq!(dead.first_error, "provider down (attempt 1)");
    assert_eq!(dead.last_error, "provider down (attempt 3)");
    assert_eq!(dead.original_topic, retry_topic(setup.queue.topic(), 2));
    assert!(dead.first_failed_at <= dead.dead_lettered_at);
    assert_eq!(dead.payload, serde_json::to_value(&job).unwrap());
    assert_eq!(setup.effects("doomed").await, 0);
    assert_eq!(setup.execution(task_id).await, None);

    recovered.store(true, Ordering::SeqCst);
    let dead_letters = setup.dead_letters();
    assert!(dead_letters.replay(task_id).await.unwrap());
    assert_eq!(setup.wait_for_effect("doomed").await, 1);
    assert!(dead_letters.list().await.unwrap().is_empty());
    assert!(
        !dead_letters.replay(task_id).await.unwrap(),
        "replayed already"
    );
    assert_eq!(
        setup.execution(task_id).await,
        Some(("TestJob".to_owned(), 1)),
        "a replay starts the attempts over"
    );
    worker.stop().await;
    assert_eq!(handler.runs_of("doomed").len(), 4);
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_at_once_and_can_be_dropped() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|_, _| {
        Then::Fail(TaskError::permanent(anyhow::anyhow!(
            "no such email address"
        )))
    });
    let worker = setup.start(handler.clone()).await;

    let task_id = setup.enqueue(&Job::new("invalid")).await;
    let listed = setup.wait_for_dead_letters(1).await;

    let dead = &listed[0];
    assert_eq!(dead.task_id, task_id);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.original_topic, setup.queue.topic());
    assert_eq!(dead.first_error, "no such email address");
    assert_eq!(dead.last_error, "no such email address");
    assert_eq!(handler.runs().len(), 1);

    let dead_letters = setup.dead_letters();
    assert!(dead_letters.drop_one(task_id).await.unwrap());
    assert!(dead_letters.list().await.unwrap().is_empty());
    assert!(!dead_letters.drop_one(task_id).await.unwrap());
    assert!(
        !dead_letters.replay(task_id).await.unwrap(),
        "a dropped dead letter is not replayed"
    );
    worker.stop().await;
}

#[tokio::test]
async fn undecodable_and_unknown_tasks_are_dead_lettered_and_the_tasks_behind_them_flow() {
    let setup = Setup::new().await;
    let handler = Scripted::succeeding();
    let worker = setup.start(handler.clone()).await;

    // All on one key, so on one partition, in this order: nothing may hold up what follows.
    let topic = setup.queue.topic();
    setup
        .producer
        .publish_bytes(
            topic,
            Some(b"k"),
            Some(b"\xff not json"),
            MessageHeaders::new("TestJob"),
        )
        .await
        .unwrap();
    setup
        .producer
        .publish(
            topic,
            "k",
            &serde_json::json!({"to": "someone"}),
            MessageHeaders::new("SendFax"),
        )
        .await
        .unwrap();
    for value in ["after-1", "after-2", "after-3"] {
        setup.enqueue(&Job::keyed(value, "k")).await;
    }

    for value in ["after-1", "after-2", "after-3"] {
        assert_eq!(setup.wait_for_effect(value).await, 1);
    }
    let listed = setup.wait_for_dead_letters(2).await;
    worker.stop().await;

    let garbage = listed.iter().find(|d| d.task_name == "TestJob").unwrap();
    assert_eq!(garbage.payload, serde_json::json!("\u{fffd} not json"));
    assert!(
        garbage
            .last_error
            .contains("the payload is not a valid TestJob task"),
        "{}",
        garbage.last_error
    );
    assert_eq!(garbage.attempts, 1);
    let unknown = listed.iter().find(|d| d.task_name == "SendFax").unwrap();
    assert_eq!(
        unknown.last_error,
        "no handler is registered for task type `SendFax`"
    );
    assert_eq!(unknown.attempts, 0, "it never ran");
    assert_eq!(unknown.payload, serde_json::json!({"to": "someone"}));
    assert_eq!(
        handler.runs().len(),
        3,
        "only the valid tasks reached the handler"
    );
}

#[tokio::test]
async fn hostile_bytes_tombstones_and_nul_characters_are_dead_lettered_and_the_key_flows() {
    let setup = Setup::new().await;
    let handler = Scripted::succeeding();
    let worker = setup.start(handler.clone()).await;

    // A key with a NUL byte (PostgreSQL text cannot hold it), all on that key: nothing may hold
    // up what follows.
    let key = "k\0";
    let topic = setup.queue.topic();
    let publish = |payload: Option<&'static [u8]>, headers: MessageHeaders| {
        let producer = setup.producer.clone();
        async move {
            producer
                .publish_bytes(topic, Some(key.as_bytes()), payload, headers)
                .await
                .unwrap();
        }
    };
    // `{}` of no type at all, with a header holding a NUL.
    publish(
        Some(b"{}"),
        MessageHeaders::new("").header("x-hostile", "a\0b"),
    )
    .await;
    // A tombstone of a known type.
    publish(None, MessageHeaders::new("TestJob")).await;
    // JSON with an escaped NUL (`jsonb` cannot hold it) of an unknown type.
    publish(Some(br#"{"to": "\u0000"}"#), MessageHeaders::new("SendFax")).await;
    for value in ["after-1", "after-2"] {
        setup.enqueue(&Job::keyed(value, key)).await;
    }

    for value in ["after-1", "after-2"] {
        assert_eq!(setup.wait_for_effect(value).await, 1);
    }
    let listed = setup.wait_for_dead_letters(3).await;
    worker.stop().await;

    assert_eq!(listed.len(), 3, "{listed:#?}");
    let tombstone = listed.iter().find(|d| d.task_name == "TestJob").unwrap();
    assert_eq!(tombstone.payload, serde_json::Value::Null);
    let fax = listed.iter().find(|d| d.task_name == "SendFax").unwrap();
    assert_eq!(
        fax.payload,
        serde_json::json!("{\"to\": \"\\u0000\"}"),
        "kept as text, not as jsonb"
    );
    assert_eq!(handler.runs().len(), 2, "only the valid tasks ran");
}

#[tokio::test]
async fn a_retrying_task_does_not_hold_up_the_tasks_behind_it() {
    let setup = Setup::new().await;
    let delay = Duration::from_secs(3);
    let handler = Scripted::new(|job, attempt| {
        if job.value == "slow" && attempt == 1 {
            Then::Fail(TaskError::retryable(anyhow::anyhow!("not yet")))
        } else {
            Then::Succeed
        }
    });
    let worker =
        setup
            .start_worker(setup.worker(handler.clone(), TaskOptions::default()).retry(
                RetryLevels {
                    delays: vec![delay],
                    blocking_attempts: 1,
                },
            ))
            .await;

    // Same key: with a blocking retry these would wait behind "slow" for the whole delay.
    setup.enqueue(&Job::keyed("slow", "k")).await;
    let others: Vec<String> = (1..=5).map(|i| format!("other-{i}")).collect();
    for value in &others {
        setup.enqueue(&Job::keyed(value, "k")).await;
    }
    setup.wait_for_effect("slow").await;
    worker.stop().await;

    let slow = handler.runs_of("slow");
    assert_eq!(slow.len(), 2);
    let (failed, retried) = (slow[0].started, slow[1].started);
    // The due time is set on the wall clock and these are monotonic instants: allow a little.
    assert!(
        retried.duration_since(failed) + Duration::from_millis(50) >= delay,
        "the retry waited its delay: {:?}",
        retried.duration_since(failed)
    );
    for value in &others {
        let runs = handler.runs_of(value);
        assert_eq!(runs.len(), 1, "{value}");
        assert!(
            runs[0].started < failed + delay,
            "{value} ran {:?} after the failure, while the retry waited",
            runs[0].started.duration_since(failed)
        );
    }
}

#[tokio::test]
async fn blocking_attempts_retry_in_place_before_moving_on() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|_, attempt| {
        Then::Fail(TaskError::retryable(anyhow::anyhow!("attempt {attempt}")))
    });
    let worker =
        setup
            .start_worker(setup.worker(handler.clone(), TaskOptions::default()).retry(
                RetryLevels {
                    blocking_attempts: 2,
                    ..fast_retries()
                },
            ))
            .await;

    setup.enqueue(&Job::new("stubborn")).await;
    let listed = setup.wait_for_dead_letters(1).await;
    worker.stop().await;

    assert_eq!(listed[0].attempts, 6, "two runs on each of three levels");
    assert_eq!(listed[0].first_error, "attempt 1");
    assert_eq!(listed[0].last_error, "attempt 6");
    let attempts: Vec<u32> = handler.runs().iter().map(|run| run.attempt).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn replay_all_replays_every_listed_dead_letter() {
    let setup = Setup::new().await;
    let recovered = Arc::new(AtomicBool::new(false));
    let handler = Scripted::new({
        let recovered = recovered.clone();
        move |_, _| {
            if recovered.load(Ordering::SeqCst) {
                Then::Succeed
            } else {
                Then::Fail(TaskError::permanent(anyhow::anyhow!("bug")))
            }
        }
    });
    let worker = setup.start(handler).await;

    for value in ["a", "b", "c"] {
        setup.enqueue(&Job::new(value)).await;
    }
    setup.wait_for_dead_letters(3).await;
    recovered.store(true, Ordering::SeqCst);
    let dead_letters = setup.dead_letters();
    assert_eq!(dead_letters.replay_all().await.unwrap(), 3);

    for value in ["a", "b", "c"] {
        assert_eq!(setup.wait_for_effect(value).await, 1);
    }
    assert!(dead_letters.list().await.unwrap().is_empty());
    assert_eq!(dead_letters.replay_all().await.unwrap(), 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_task_that_fails_again_after_a_replay_is_listed_again() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|_, _| Then::Fail(TaskError::permanent(anyhow::anyhow!("bug"))));
    let worker = setup.start(handler.clone()).await;

    let task_id = setup.enqueue(&Job::new("hopeless")).await;
    setup.wait_for_dead_letters(1).await;
    let dead_letters = setup.dead_letters();
    assert!(dead_letters.replay(task_id).await.unwrap());

    eventually(DEADLINE, "the second dead-lettering", || async {
        let listed = dead_letters.list().await.unwrap();
        (handler.runs().len() == 2 && listed.len() == 1).then_some(())
    })
    .await;
    worker.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_dead_letters_its_task_and_the_worker_goes_on() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|job, _| {
        assert!(job.value != "explosive", "boom");
        Then::Succeed
    });
    let worker = setup.start(handler).await;

    setup.enqueue(&Job::keyed("explosive", "k")).await;
    setup.enqueue(&Job::keyed("behind", "k")).await;
    assert_eq!(setup.wait_for_effect("behind").await, 1);
    let listed = setup.wait_for_dead_letters(1).await;
    worker.stop().await;

    assert_eq!(listed[0].attempts, 1, "a panic is not retried");
    assert!(
        listed[0]
            .last_error
            .starts_with("the task handler panicked: boom"),
        "{}",
        listed[0].last_error
    );
    assert_eq!(setup.effects("explosive").await, 0);
}

#[tokio::test]
async fn a_worker_stops_promptly_while_a_retry_waits_and_the_retry_comes_again() {
    let setup = Setup::new().await;
    let handler = Scripted::new(|_, attempt| {
        if attempt == 1 {
            Then::Fail(TaskError::retryable(anyhow::anyhow!("not yet")))
        } else {
            Then::Succeed
        }
    });
    let levels = RetryLevels {
        delays: vec![Duration::from_secs(4)],
        blocking_attempts: 1,
    };
    let start = || async {
        setup
            .start_worker(
                setup
                    .worker(handler.clone(), TaskOptions::default())
                    .retry(levels.clone()),
            )
            .await
    };
    let first = start().await;

    setup.enqueue(&Job::new("patient")).await;
    eventually(DEADLINE, "the first attempt", || async {
        (!handler.runs().is_empty()).then_some(())
    })
    .await;
    let stopping = std::time::Instant::now();
    first.stop().await;
    // Well under the 10 s drain timeout a waiting handler would otherwise hold it up for.
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        stopping.elapsed()
    );

    let second = start().await;
    assert_eq!(setup.wait_for_effect("patient").await, 1);
    second.stop().await;
    let runs = handler.runs();
    let attempts: Vec<u32> = runs.iter().map(|run| run.attempt).collect();
    assert_eq!(attempts, [1, 2], "the retry was not lost");
    let waited = runs[1].started.duration_since(runs[0].started);
    assert!(
        waited + Duration::from_millis(50) >= levels.delays[0],
        "the retry ran {waited:?} after the failure, before its due time"
    );
}

//! A fast start (issue #15): a worker started with a task already waiting runs it within
//! [`FIRST_TASK_BOUND`].

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Job, Scripted, Setup};
use test_support::eventually;

/// From `Worker::start` to the handler's first run. The goal is 1 s, which the local broker
/// (nisshi 0.6.0) does not allow: it alone holds a new member's `JoinGroup` for 1 s at the 2 s
/// session timeout the tests and the local stack use (half the session timeout, in whole
/// seconds), and a fresh group waits another 0.1 s in librdkafka before it looks up where to
/// start (its fixed back-off after "no committed offset"). With provisioning the queue's topics
/// first (0.3 s with a debug build) that makes about 1.4 s on an idle 2-core machine; 1.6–1.85 s
/// were seen with a load average of 5. 2 s still fails the 2.6 s of the test's previous 3 s
/// session timeout (and the 3.4 s of the 6 s default) with the per-consumer provisioning.
const FIRST_TASK_BOUND: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_worker_runs_a_waiting_task_soon_after_it_starts() {
    let setup = Setup::new().await;
    setup.enqueue(&Job::new("waiting")).await;
    let handler = Scripted::succeeding();

    let started = Instant::now();
    let worker = setup.start(handler.clone()).await;
    let run = eventually(DEADLINE, "the waiting task to run", || async {
        handler.runs_of("waiting").first().cloned()
    })
    .await;
    worker.stop().await;

    let first_task = run.started.duration_since(started);
    println!("worker start -> first task: {first_task:?}");
    assert!(
        first_task < FIRST_TASK_BOUND,
        "the first task ran {first_task:?} after the worker started, more than {FIRST_TASK_BOUND:?}"
    );
}

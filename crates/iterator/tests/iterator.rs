//! The iterator against a real PostgreSQL and broker: a job copies `numbers` into `copied`
//! chunk by chunk; the tests check that every item is processed once through completion,
//! sharding, failures, a killed runner, pause/resume/cancel and the throttle.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use dead_letters::DeadLetterStore;
use iterator::{
    Chunk, CompletedJob, Control, Job, JobOptions, JobRunner, JobState, JobStatus, Jobs, Shard,
};
use kafka::{KafkaConfig, MessageHeaders, Producer, RetryPolicy, RunningConsumer, TopicSpec};
use outbox::OutboxRelay;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_mins(1);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct CopyParams {
    /// Numbers `1..=up_to`.
    up_to: i64,
}

/// Copies the ids of `numbers` into `copied`, recording the step that copied each. A shard
/// takes the ids whose remainder by the shard count is its index. `fail_at`: a chunk starting
/// after that id fails, until the test sets it back to 0.
#[derive(Clone)]
struct CopyNumbers {
    pool: PgPool,
    fail_at: Arc<AtomicI64>,
    /// Like `fail_at`, with a panic: a bug in the job.
    panic_at: Arc<AtomicI64>,
}

impl Job for CopyNumbers {
    const KIND: &'static str = "copy_numbers";
    type Params = CopyParams;
    type Cursor = i64;
    type Item = i64;

    async fn next_chunk(
        &self,
        shard: &Shard<'_, CopyParams>,
        after: Option<&i64>,
        limit: usize,
    ) -> anyhow::Result<Chunk<i64, i64>> {
        let after = after.copied().unwrap_or(0);
        let panic_at = self.panic_at.load(Ordering::SeqCst);
        assert!(
            panic_at == 0 || after < panic_at,
            "a bug in the job after {after}"
        );
        let fail_at = self.fail_at.load(Ordering::SeqCst);
        anyhow::ensure!(
            fail_at == 0 || after < fail_at,
            "refusing ids after {after}"
        );
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM numbers WHERE id > $1 AND id <= $2 AND id % $3 = $4
             ORDER BY id LIMIT $5",
        )
        .bind(after)
        .bind(shard.params.up_to)
        .bind(i64::from(shard.count))
        .bind(i64::from(shard.index))
        .bind(i64::try_from(limit)?)
        .fetch_all(&self.pool)
        .await?;
        Ok(Chunk::after_last(ids, limit, |id| *id))
    }

    async fn process(
        &self,
        conn: &mut PgConnection,
        shard: &Shard<'_, CopyParams>,
        ids: Vec<i64>,
    ) -> anyhow::Result<()> {
        // A primary key: an item copied twice would fail the chunk, not hide.
        sqlx::query("INSERT INTO copied (id, step) SELECT id, $2 FROM unnest($1::bigint[]) AS id")
            .bind(&ids)
            .bind(shard.step)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn total(&self, params: &CopyParams) -> anyhow::Result<Option<u64>> {
        Ok(Some(params.up_to as u64))
    }

    async fn on_complete(
        &self,
        conn: &mut PgConnection,
        job: &CompletedJob<'_, CopyParams>,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO completions (job_id, processed) VALUES ($1, $2)")
            .bind(job.job_id)
            .bind(job.processed)
            .execute(conn)
            .await?;
        Ok(())
    }
}

struct Setup {
    #[allow(dead_code, reason = "kept for its Drop, which removes the database")]
    db: TestDatabase,
    pool: PgPool,
    kafka: KafkaConfig,
    topic: String,
    group: String,
    jobs: Jobs,
    job: CopyNumbers,
    relay_stop: CancellationToken,
    relay: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Setup {
    async fn new(numbers: i64) -> Self {
        platform::telemetry::init_for_tests();
        let db = TestDatabase::create().await;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(&db.url)
            .await
            .expect("connect");
        outbox::migrate(&pool).await.expect("outbox migrations");
        iterator::migrate(&pool).await.expect("iterator migrations");
        sqlx::raw_sql(
            "CREATE TABLE numbers (id BIGINT PRIMARY KEY);
             CREATE TABLE copied (id BIGINT PRIMARY KEY, step BIGINT NOT NULL);
             CREATE TABLE completions (job_id UUID NOT NULL, processed BIGINT NOT NULL);",
        )
        .execute(&pool)
        .await
        .expect("create tables");
        sqlx::query("INSERT INTO numbers SELECT generate_series(1, $1)")
            .bind(numbers)
            .execute(&pool)
            .await
            .expect("insert numbers");
        let kafka = KafkaConfig::new(kafka_bootstrap_servers().await, "iterator-test");
        let producer = Producer::new(&kafka).expect("producer");
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(OutboxRelay::new(pool.clone(), producer).run(relay_stop.clone()));
        let topic = unique_name("iterator-test");
        Self {
            jobs: Jobs::new(pool.clone(), &topic),
            job: CopyNumbers {
                pool: pool.clone(),
                fail_at: Arc::new(AtomicI64::new(0)),
                panic_at: Arc::new(AtomicI64::new(0)),
            },
            group: unique_name("iterator-test"),
            topic,
            kafka,
            relay_stop,
            relay: Some(relay),
            db,
            pool,
        }
    }

    async fn runner(&self, instance: &str) -> (CancellationToken, RunningConsumer) {
        self.runner_with(instance, None).await
    }

    async fn runner_with(
        &self,
        instance: &str,
        dead_letters: Option<&DeadLetterStore>,
    ) -> (CancellationToken, RunningConsumer) {
        let shutdown = CancellationToken::new();
        let mut runner = JobRunner::new(
            self.pool.clone(),
            &self.kafka,
            &self.group,
            TopicSpec::new(&self.topic).partitions(3),
        )
        .register(self.job.clone())
        .instance(instance)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
        });
        if let Some(store) = dead_letters {
            runner = runner.dead_letters(store);
        }
        let running = runner
            .start(shutdown.clone())
            .await
            .expect("start the runner");
        (shutdown, running)
    }

    async fn start(&self, up_to: i64, options: JobOptions) -> Uuid {
        self.jobs
            .start(&self.job, &CopyParams { up_to }, options)
            .await
            .expect("start a job")
    }

    async fn status(&self, job_id: Uuid) -> JobStatus {
        self.jobs
            .status(job_id)
            .await
            .expect("status")
            .expect("the job exists")
    }

    async fn until_state(&self, job_id: Uuid, state: JobState) -> JobStatus {
        eventually(DEADLINE, &format!("job {job_id} {state}"), || async {
            let status = self.status(job_id).await;
            (status.state == state).then_some(status)
        })
        .await
    }

    async fn scalar(&self, sql: &'static str, job_id: Option<Uuid>) -> i64 {
        let query = sqlx::query_scalar(sql);
        let query = match job_id {
            Some(job_id) => query.bind(job_id),
            None => query,
        };
        query.fetch_one(&self.pool).await.expect(sql)
    }

    async fn copied(&self) -> i64 {
        self.scalar("SELECT count(*) FROM copied", None).await
    }

    async fn stop(mut self) {
        self.relay_stop.cancel();
        if let Some(relay) = self.relay.take() {
            relay.await.expect("join").expect("the relay stops cleanly");
        }
    }
}

async fn stop(runner: (CancellationToken, RunningConsumer)) {
    runner.0.cancel();
    runner.1.wait().await.expect("the runner stops cleanly");
}

#[tokio::test]
async fn a_job_runs_in_chunks_to_completion_and_its_hook_runs_once() {
    let setup = Setup::new(10_000).await;
    let runner = setup.runner("only").await;
    let options = JobOptions {
        chunk_size: 1_000,
        ..JobOptions::default()
    };
    let job_id = setup.start(10_000, options).await;

    let status = setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(status.processed, 10_000);
    assert_eq!(status.total_estimate, Some(10_000));
    assert_eq!(status.progress, Some(1.0));
    assert!(status.rate_per_sec.is_some_and(|rate| rate > 0.0));
    assert_eq!(setup.copied().await, 10_000);
    // Ten full chunks, then an empty one that finds the end.
    let steps = setup
        .scalar(
            "SELECT count(*) FROM job_steps WHERE job_id = $1",
            Some(job_id),
        )
        .await;
    assert_eq!(steps, 11);
    let hooks = setup
        .scalar(
            "SELECT count(*) FROM completions WHERE job_id = $1 AND processed = 10000",
            Some(job_id),
        )
        .await;
    assert_eq!(hooks, 1);

    stop(runner).await;
    setup.stop().await;
}

#[tokio::test]
async fn shards_run_in_parallel_and_the_job_completes_when_all_have() {
    let setup = Setup::new(8_000).await;
    let runner = setup.runner("only").await;
    let job_id = setup
        .start(
            8_000,
            JobOptions {
                chunk_size: 500,
                shards: 4,
                ..JobOptions::default()
            },
        )
        .await;

    let status = setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(status.processed, 8_000);
    assert_eq!(setup.copied().await, 8_000);
    let shards_done = setup
        .scalar(
            "SELECT count(*) FROM job_shards WHERE job_id = $1 AND done",
            Some(job_id),
        )
        .await;
    assert_eq!(shards_done, 4);
    let hooks = setup
        .scalar(
            "SELECT count(*) FROM completions WHERE job_id = $1",
            Some(job_id),
        )
        .await;
    assert_eq!(hooks, 1);

    stop(runner).await;
    setup.stop().await;
}

#[tokio::test]
async fn a_chunk_failing_on_every_attempt_fails_the_job_and_resume_retries_it() {
    let setup = Setup::new(5_000).await;
    setup.job.fail_at.store(2_000, Ordering::SeqCst);
    let runner = setup.runner("only").await;
    let job_id = setup
        .start(
            5_000,
            JobOptions {
                chunk_size: 1_000,
                ..JobOptions::default()
            },
        )
        .await;

    let failed = setup.until_state(job_id, JobState::Failed).await;
    assert_eq!(
        failed.processed, 2_000,
        "the chunks before the failing one stay done"
    );
    // Three attempts from its step message, plus one when the step before went on with it.
    assert!(failed.attempts >= 3, "{}", failed.attempts);
    let error = failed.last_error.expect("the error is kept");
    assert!(error.contains("refusing ids after 2000"), "{error}");
    assert_eq!(setup.copied().await, 2_000);

    setup.job.fail_at.store(0, Ordering::SeqCst);
    assert_eq!(
        setup.jobs.resume(job_id).await.expect("resume"),
        Control::Applied
    );
    let completed = setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(completed.processed, 5_000);
    assert_eq!(completed.last_error, None);
    assert_eq!(setup.copied().await, 5_000);

    stop(runner).await;
    setup.stop().await;
}

#[tokio::test]
async fn a_killed_runner_loses_no_chunk_and_repeats_none() {
    let setup = Setup::new(20_000).await;
    let first = setup.runner("first").await;
    // Throttled so that the kill lands mid-job.
    let job_id = setup
        .start(
            20_000,
            JobOptions {
                chunk_size: 500,
                max_rows_per_sec: Some(10_000),
                ..JobOptions::default()
            },
        )
        .await;
    eventually(DEADLINE, "a few chunks done", || async {
        (setup.status(job_id).await.processed >= 3_000).then_some(())
    })
    .await;
    first.1.kill().await;
    let at_kill = setup.status(job_id).await.processed;
    assert!(at_kill < 20_000, "the job finished before the kill");

    let second = setup.runner("second").await;
    let status = setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(status.processed, 20_000);
    assert_eq!(setup.copied().await, 20_000);
    // Every step exactly once (a repeated one would have failed on `copied`'s key), and the
    // second runner took over.
    let by_second = setup
        .scalar(
            "SELECT count(*) FROM job_steps WHERE job_id = $1 AND processed_by = 'second'",
            Some(job_id),
        )
        .await;
    assert!(by_second > 0);

    stop(second).await;
    setup.stop().await;
}

#[tokio::test]
async fn pause_stops_progress_resume_completes_cancel_ends() {
    let setup = Setup::new(6_000).await;
    let runner = setup.runner("only").await;
    let slow = JobOptions {
        chunk_size: 200,
        max_rows_per_sec: Some(2_000),
        ..JobOptions::default()
    };
    let job_id = setup.start(6_000, slow).await;
    eventually(DEADLINE, "progress", || async {
        (setup.status(job_id).await.processed > 0).then_some(())
    })
    .await;

    assert_eq!(
        setup.jobs.pause(job_id).await.expect("pause"),
        Control::Applied
    );
    assert_eq!(
        setup.jobs.pause(job_id).await.expect("pause"),
        Control::Unchanged
    );
    // The chunk in progress may still finish; after that, nothing moves.
    let mut last = setup.status(job_id).await.processed;
    let settled = Instant::now();
    let paused_at = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = setup.status(job_id).await.processed;
        if now == last {
            break now;
        }
        assert!(settled.elapsed() < DEADLINE, "still moving after the pause");
        last = now;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = setup.status(job_id).await;
    assert_eq!(status.state, JobState::Paused);
    assert_eq!(status.processed, paused_at, "no progress while paused");
    assert!(paused_at < 6_000);

    assert_eq!(
        setup.jobs.resume(job_id).await.expect("resume"),
        Control::Applied
    );
    let completed = setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(completed.processed, 6_000);
    assert_eq!(setup.copied().await, 6_000);
    assert_eq!(
        setup.jobs.resume(job_id).await.expect("resume"),
        Control::NotAllowed(JobState::Completed)
    );

    // A second job, cancelled mid-way: no further step is taken.
    sqlx::query("TRUNCATE copied")
        .execute(&setup.pool)
        .await
        .expect("truncate");
    let cancelled = setup.start(6_000, slow).await;
    eventually(DEADLINE, "progress", || async {
        (setup.status(cancelled).await.processed > 0).then_some(())
    })
    .await;
    assert_eq!(
        setup.jobs.cancel(cancelled).await.expect("cancel"),
        Control::Applied
    );
    let status = setup.status(cancelled).await;
    assert_eq!(status.state, JobState::Cancelled);
    assert!(status.finished_at.is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = setup.status(cancelled).await;
    assert_eq!(later.state, JobState::Cancelled);
    // At most the chunk in progress at the cancel finished after it.
    assert!(later.processed <= status.processed + 200);
    assert!(later.processed < 6_000);

    stop(runner).await;
    setup.stop().await;
}

#[tokio::test]
async fn the_throttle_holds_the_rate_within_ten_percent() {
    let setup = Setup::new(3_000).await;
    let runner = setup.runner("only").await;
    let job_id = setup
        .start(
            3_000,
            JobOptions {
                chunk_size: 100,
                max_rows_per_sec: Some(1_000),
                ..JobOptions::default()
            },
        )
        .await;
    let status = setup.until_state(job_id, JobState::Completed).await;
    let elapsed = (status.finished_at.expect("finished") - status.started_at.expect("started"))
        .as_seconds_f64();
    let rate = 3_000.0 / elapsed;
    assert!(
        (900.0..=1_100.0).contains(&rate),
        "measured {rate:.0} rows/s over {elapsed:.2} s for a limit of 1000"
    );

    stop(runner).await;
    setup.stop().await;
}

#[tokio::test]
async fn stray_messages_are_set_aside_and_a_panicking_chunk_fails_only_its_job() {
    let setup = Setup::new(3_000).await;
    dead_letters::migrate(&setup.pool).await.unwrap();
    let store = DeadLetterStore::new(setup.pool.clone());
    let runner = setup.runner_with("only", Some(&store)).await;

    // Messages the runner's own outbox never writes: bytes, `{}`, a tombstone.
    let producer = Producer::new(&setup.kafka).unwrap();
    for payload in [Some(&b"\xff\x00 not json"[..]), Some(b"{}"), None] {
        producer
            .publish_bytes(
                &setup.topic,
                Some(b"stray"),
                payload,
                MessageHeaders::new("Step"),
            )
            .await
            .unwrap();
    }
    let listed = eventually(DEADLINE, "three dead letters", || async {
        let page = store.list(None, None, 10).await.unwrap();
        (page.items.len() == 3).then_some(page.items)
    })
    .await;
    assert!(listed.iter().all(|letter| letter.consumer == setup.group));
    assert_eq!(
        listed
            .iter()
            .filter(|l| l.error.contains("no payload"))
            .count(),
        1,
        "{listed:#?}"
    );

    // A bug in the job: each attempt panics. The job fails, with the panic as its error; the
    // runner goes on, and the fixed job resumes to completion.
    setup.job.panic_at.store(1_000, Ordering::SeqCst);
    let options = JobOptions {
        chunk_size: 500,
        ..JobOptions::default()
    };
    let job_id = setup.start(3_000, options).await;
    let failed = setup.until_state(job_id, JobState::Failed).await;
    let error = failed.last_error.expect("the error is kept");
    assert!(
        error.contains("the handler panicked: a bug in the job"),
        "{error}"
    );
    // Chunks before the bug stay done. The chunk after 1,000 is loaded ahead while the one
    // before it commits, so that one may fail with it.
    assert!(
        (500..=1_000).contains(&failed.processed),
        "{}",
        failed.processed
    );
    setup.job.panic_at.store(0, Ordering::SeqCst);
    assert_eq!(setup.jobs.resume(job_id).await.unwrap(), Control::Applied);
    setup.until_state(job_id, JobState::Completed).await;
    assert_eq!(setup.copied().await, 3_000);
    assert_eq!(
        store.list(None, None, 10).await.unwrap().items.len(),
        3,
        "a failing job is not a dead letter: resume retries it"
    );

    stop(runner).await;
    setup.stop().await;
}

/// Inserts a job of `kind` in `state`, last changed and (unless failed) finished `hours_ago`,
/// with one shard and two recorded steps.
async fn insert_finished_job(pool: &PgPool, kind: &str, state: &str, hours_ago: i32) -> Uuid {
    let job_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (job_id, kind, params, state, chunk_size, finished_at, updated_at)
         VALUES ($1, $2, '{}', $3, 10,
                 CASE WHEN $3 IN ('completed', 'cancelled')
                      THEN now() - make_interval(hours => $4) END,
                 now() - make_interval(hours => $4))",
    )
    .bind(job_id)
    .bind(kind)
    .bind(state)
    .bind(hours_ago)
    .execute(pool)
    .await
    .expect("insert a job");
    sqlx::query("INSERT INTO job_shards (job_id, shard, next_step, done) VALUES ($1, 0, 2, true)")
        .bind(job_id)
        .execute(pool)
        .await
        .expect("insert its shard");
    sqlx::query(
        "INSERT INTO job_steps (job_id, shard, step, rows, processed_by)
         VALUES ($1, 0, 0, 10, 'test'), ($1, 0, 1, 10, 'test')",
    )
    .bind(job_id)
    .execute(pool)
    .await
    .expect("insert its steps");
    job_id
}

#[tokio::test]
async fn retention_deletes_the_steps_and_jobs_of_jobs_finished_long_ago_only() {
    platform::telemetry::init_for_tests();
    let db = TestDatabase::create().await;
    outbox::migrate(&db.pool).await.expect("outbox migrations");
    iterator::migrate(&db.pool)
        .await
        .expect("iterator migrations");
    let age = Duration::from_hours(1);
    let mut old = Vec::new();
    for state in ["completed", "failed", "cancelled"] {
        old.push(insert_finished_job(&db.pool, "copy", state, 2).await);
    }
    let recent = insert_finished_job(&db.pool, "copy", "completed", 0).await;
    // Active, paused or pending however long ago they last changed: never deleted.
    let mut active = Vec::new();
    for state in ["running", "paused", "pending"] {
        active.push(insert_finished_job(&db.pool, "copy", state, 48).await);
    }
    let other_kind = insert_finished_job(&db.pool, "other", "completed", 2).await;
    let steps_of = |job_id: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_steps WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    // The steps of the four jobs finished two hours ago go; their jobs stay.
    assert_eq!(iterator::purge_steps(&db.pool, age).await.unwrap(), 8);
    for &job_id in old.iter().chain([&other_kind]) {
        assert_eq!(steps_of(job_id).await, 0);
    }
    for &job_id in active.iter().chain([&recent]) {
        assert_eq!(steps_of(job_id).await, 2);
    }
    assert_eq!(iterator::purge_steps(&db.pool, age).await.unwrap(), 0);

    // The jobs themselves, of one kind, in the caller's transaction, a chunk at a time.
    let mut tx = db.pool.begin().await.unwrap();
    let first = iterator::delete_finished_in(&mut tx, "copy", age, 2)
        .await
        .unwrap();
    let rest = iterator::delete_finished_in(&mut tx, "copy", age, 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((first.len(), rest.len()), (2, 1));
    let mut deleted: Vec<Uuid> = first.iter().chain(&rest).map(|job| job.job_id).collect();
    deleted.sort();
    old.sort();
    assert_eq!(deleted, old);
    assert!(first.iter().chain(&rest).all(|job| job.shards == 1));
    let mut left: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM jobs ORDER BY job_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut expected: Vec<Uuid> = active.iter().copied().chain([recent, other_kind]).collect();
    expected.sort();
    left.sort();
    assert_eq!(left, expected);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM job_shards WHERE job_id <> ALL($1))
              + (SELECT count(*) FROM job_steps WHERE job_id <> ALL($1))",
    )
    .bind(&expected)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "shards and steps go with their job");
}

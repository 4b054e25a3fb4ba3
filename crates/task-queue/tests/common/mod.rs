//! What the task queue's integration tests share: a database with the task queue's tables and an
//! `effects` table, a queue on fresh topics, and a scripted handler that records every run.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka::{KafkaConfig, Producer};
use serde::{Deserialize, Serialize};
use task_queue::{
    DeadLetter, DeadLetters, RetryLevels, RunningWorker, Task, TaskContext, TaskError, TaskHandler,
    TaskOptions, TaskQueue, Worker, queue_topics,
};
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a test waits for anything that involves the broker.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Short retry delays keep the tests fast; long enough to tell a wait from no wait.
pub fn fast_retries() -> RetryLevels {
    RetryLevels {
        delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
        blocking_attempts: 1,
    }
}

/// The test task. Its effect is a row in `effects` with the task id and `value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub value: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub id: Option<Uuid>,
}

impl Job {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            key: None,
            id: None,
        }
    }

    /// Jobs with the same key share a partition and run in order.
    pub fn keyed(value: impl Into<String>, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..Self::new(value)
        }
    }
}

impl Task for Job {
    const NAME: &'static str = "TestJob";

    fn ordering_key(&self) -> Option<String> {
        self.key.clone()
    }

    fn task_id(&self) -> Option<Uuid> {
        self.id
    }
}

/// What a scripted run does after writing its effect.
pub enum Then {
    Succeed,
    Fail(TaskError),
    /// Never finishes: for killing a worker mid-task.
    Hang,
    /// Swallows a database error, which leaves the transaction aborted, and reports success:
    /// a buggy handler whose commit fails.
    BreakTransaction,
}

/// One run of the handler.
#[derive(Debug, Clone)]
pub struct Run {
    pub value: String,
    pub task_id: Uuid,
    pub attempt: u32,
    pub started: Instant,
}

type Script = dyn Fn(&Job, u32) -> Then + Send + Sync;

/// Writes the job's effect through `ctx.conn` first (so a failure after it shows that it is
/// rolled back), then does what the script says. Records every run and how many ran at once.
#[derive(Clone)]
pub struct Scripted {
    pub runs: Arc<Mutex<Vec<Run>>>,
    script: Arc<Script>,
    /// Simulated work before the script's outcome.
    work: Duration,
    running: Arc<AtomicUsize>,
    pub max_running: Arc<AtomicUsize>,
}

impl Scripted {
    pub fn new(script: impl Fn(&Job, u32) -> Then + Send + Sync + 'static) -> Self {
        Self {
            runs: Arc::default(),
            script: Arc::new(script),
            work: Duration::ZERO,
            running: Arc::default(),
            max_running: Arc::default(),
        }
    }

    pub fn succeeding() -> Self {
        Self::new(|_, _| Then::Succeed)
    }

    pub fn working_for(mut self, work: Duration) -> Self {
        self.work = work;
        self
    }

    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }

    pub fn runs_of(&self, value: &str) -> Vec<Run> {
        self.runs()
            .into_iter()
            .filter(|run| run.value == value)
            .collect()
    }
}

impl TaskHandler<Job> for Scripted {
    async fn handle(&self, job: Job, ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.runs.lock().unwrap().push(Run {
            value: job.value.clone(),
            task_id: ctx.task_id,
            attempt: ctx.attempt,
            started: Instant::now(),
        });
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(running, Ordering::SeqCst);
        let outcome = async {
            sqlx::query("INSERT INTO effects (task_id, value) VALUES ($1, $2)")
                .bind(ctx.task_id)
                .bind(&job.value)
                .execute(&mut *ctx.conn)
                .await
                .map_err(anyhow::Error::from)?;
            tokio::time::sleep(self.work).await;
            match (self.script)(&job, ctx.attempt) {
                Then::Succeed => Ok(()),
                Then::Fail(error) => Err(error),
                Then::Hang => std::future::pending().await,
                Then::BreakTransaction => {
                    let failed = sqlx::query("SELECT * FROM no_such_table")
                        .execute(&mut *ctx.conn)
                        .await;
                    assert!(failed.is_err(), "the statement is meant to fail");
                    Ok(())
                }
            }
        }
        .await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

/// One test's database, queue and consumer group.
pub struct Setup {
    pub db: TestDatabase,
    pub kafka: KafkaConfig,
    pub producer: Producer,
    pub queue: TaskQueue,
    pub group: String,
}

impl Setup {
    pub async fn new() -> Self {
        platform::telemetry::init_for_tests();
        // A short session timeout makes group joins and takeovers after a kill fast: the local
        // stack's 2 s (`KAFKA_SESSION_TIMEOUT`), with which the local broker's join takes 1 s
        // (see `docs/local-kafka.md`).
        let kafka = KafkaConfig::new(kafka_bootstrap_servers().await, "asyncron-task-queue-tests")
            .set("session.timeout.ms", "2000")
            .set("heartbeat.interval.ms", "300");
        let db = TestDatabase::create().await;
        task_queue::migrate(&db.pool)
            .await
            .expect("task queue migrations");
        sqlx::query("CREATE TABLE effects (task_id UUID NOT NULL, value TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .expect("create the effects table");
        let producer = Producer::new(&kafka).expect("producer");
        let topic = unique_name("tasks");
        // Provisioned here too, so that tasks can be enqueued before a worker starts.
        producer
            .ensure_topics(&queue_topics(&topic, &fast_retries()))
            .await
            .expect("create the queue's topics");
        Self {
            queue: TaskQueue::new(&topic, producer.clone()),
            db,
            kafka,
            producer,
            group: unique_name("task-queue-test"),
        }
    }

    /// A worker for the test queue with fast retries and `handler` for `Job`.
    pub fn worker(&self, handler: Scripted, options: TaskOptions) -> Worker {
        Worker::new(
            self.db.pool.clone(),
            &self.kafka,
            &self.group,
            self.queue.topic(),
        )
        .retry(fast_retries())
        .register(handler, options)
    }

    pub async fn start(&self, handler: Scripted) -> Running {
        self.start_worker(self.worker(handler, TaskOptions::default()))
            .await
    }

    pub async fn start_worker(&self, worker: Worker) -> Running {
        let shutdown = CancellationToken::new();
        let worker = worker.start(shutdown.clone()).await.expect("start worker");
        Running { worker, shutdown }
    }

    pub async fn enqueue(&self, job: &Job) -> Uuid {
        self.queue.enqueue(job).await.expect("enqueue")
    }

    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.db.pool.clone(), self.queue.clone())
    }

    /// The effects recorded for `value`.
    pub async fn effects(&self, value: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE value = $1")
            .bind(value)
            .fetch_one(&self.db.pool)
            .await
            .expect("count effects")
    }

    /// The effects recorded for values `LIKE pattern`.
    pub async fn effects_like(&self, pattern: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM effects WHERE value LIKE $1")
            .bind(pattern)
            .fetch_one(&self.db.pool)
            .await
            .expect("count effects")
    }

    /// Waits until `value` has an effect, then returns how many it has.
    pub async fn wait_for_effect(&self, value: &str) -> i64 {
        eventually(DEADLINE, &format!("the effect of {value}"), || async {
            Some(self.effects(value).await).filter(|&count| count > 0)
        })
        .await
    }

    /// `(task_name, attempts)` of the task's execution record.
    pub async fn execution(&self, task_id: Uuid) -> Option<(String, i32)> {
        sqlx::query_as("SELECT task_name, attempts FROM task_executions WHERE task_id = $1")
            .bind(task_id)
            .fetch_optional(&self.db.pool)
            .await
            .expect("read the execution record")
    }

    /// Waits until `count` dead letters are listed.
    pub async fn wait_for_dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        let dead_letters = self.dead_letters();
        eventually(DEADLINE, &format!("{count} dead letter(s)"), || async {
            Some(dead_letters.list().await.expect("list dead letters"))
                .filter(|listed| listed.len() >= count)
        })
        .await
    }
}

pub struct Running {
    pub worker: RunningWorker,
    pub shutdown: CancellationToken,
}

impl Running {
    /// Graceful shutdown; fails the test if the worker ended with an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.worker.wait().await.expect("the worker stops cleanly");
    }
}

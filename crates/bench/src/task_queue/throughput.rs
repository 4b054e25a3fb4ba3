//! Part 1: no-op tasks per second, asyncron's task queue (with and without batching) against
//! apalis with its PostgreSQL storage.
//!
//! Every side goes through the same procedure ([`live`], then [`backlog`]); only [`Engine`]'s
//! methods differ per side. Each side has a fresh database of its own on the same server and a
//! pool of the same size. The handlers do nothing but count, so the rows measure what each queue
//! costs per task: for asyncron a Kafka publish and consume plus recording the execution in
//! `task_executions` (its idempotency, kept on purpose: it is the design), in a transaction per
//! batch or per task; for apalis the `INSERT`, the fetch that locks a batch of jobs and the update
//! that marks them done.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apalis::prelude::{BoxDynError, Data, TaskSink as _, WorkerBuilder, WorkerBuilderExt as _};
use apalis_postgres::PostgresStorage;
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use kafka::{KafkaConfig, Producer};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use task_queue::{
    Batching, RetryLevels, RunningWorker, Task, TaskContext, TaskError, TaskHandler, TaskOptions,
    TaskQueue, Worker,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Setup;
use crate::database;
use crate::progress::Progress;
use crate::report::{
    self,
    Better::{Higher, Lower},
    Unit,
};
use crate::stats;

/// Connections in each side's pool: asyncron's worker holds one per running task, apalis uses
/// them to push, fetch, acknowledge and send heartbeats. Of 8, 16, 32 and 64, asyncron did best
/// with 16 to 32 on a 2-core machine; apalis hardly depends on it.
const POOL_CONNECTIONS: u32 = 16;
/// Unmeasured tasks each side runs first, through the worker that is then measured: connections,
/// the consumer group join, prepared statements.
const WARM_UP_TASKS: usize = 1_000;
/// asyncron: `TaskQueue::enqueue` calls awaiting the broker's acknowledgement at once (as the
/// `kafka` scenario's producers).
const ENQUEUE_IN_FLIGHT: usize = 1_024;
/// apalis: tasks per `push_bulk` (one multi-row `INSERT`) …
const APALIS_PUSH_CHUNK: usize = 1_000;
/// … and bulk pushes at once.
const APALIS_PUSH_IN_FLIGHT: usize = 4;
/// apalis: jobs one fetch locks and hands to the worker. apalis' default is 10, which on a
/// 2-core machine handled about a seventh as many tasks per second; 100 did about as well as 500
/// and 1,000 (within the noise of that machine).
const APALIS_BATCH_SIZE: usize = 100;
/// apalis: jobs each worker runs at once (`WorkerBuilderExt::concurrency`).
const APALIS_CONCURRENCY: usize = 100;
/// apalis: workers on the queue, each with its own fetch loop and LISTEN connection. One, as in
/// apalis' examples: four drained a backlog about twice as fast on a 2-core machine, but with
/// the workers running while tasks were enqueued the last jobs waited about 30 s (apalis'
/// heartbeat interval) before they ran, in each of three runs.
const APALIS_WORKERS: usize = 1;
/// How often the bench looks whether the last tasks are recorded as done.
const DONE_POLL: Duration = Duration::from_millis(5);
/// A phase fails when no task was handled for this long.
const STALL_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a worker may take to stop before the bench moves on.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The goals: asyncron at least this many times apalis' end-to-end rate …
const RATIO_GOAL: f64 = 2.0;
/// … and at least this many tasks per second.
const RATE_GOAL: f64 = 20_000.0;

/// The task both sides run: a sequence number, so that payloads are not all identical.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOp {
    seq: usize,
}

impl Task for NoOp {
    const NAME: &'static str = "BenchNoOp";
}

/// What the handlers record: how many tasks ran, and when the first one did.
#[derive(Debug, Default)]
struct Handled {
    count: AtomicUsize,
    first: OnceLock<Instant>,
}

impl Handled {
    fn record(&self) {
        self.first.get_or_init(Instant::now);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// asyncron's handler: counts, and writes nothing of its own. The worker still records the
/// execution in `task_executions`, in the transaction it hands to the handler.
#[derive(Debug, Clone)]
struct CountingHandler(Arc<Handled>);

impl TaskHandler<NoOp> for CountingHandler {
    async fn handle(&self, _task: NoOp, _ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        self.0.record();
        Ok(())
    }
}

/// apalis' job function: counts.
#[allow(
    clippy::unused_async,
    reason = "apalis runs async job functions; this one has nothing to await"
)]
async fn counting_job(_task: NoOp, handled: Data<Arc<Handled>>) -> Result<(), BoxDynError> {
    handled.record();
    Ok(())
}

/// The measurements of one side.
#[derive(Debug, Clone, Copy)]
struct Measured {
    live: Live,
    backlog: Backlog,
}

/// Tasks enqueued while the worker runs.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// From the first enqueue until the last one returned.
    enqueue: Duration,
    /// From the first enqueue until the last task is recorded as done.
    total: Duration,
    /// From the handlers having run every task until the last is recorded as done.
    settle: Duration,
}

/// Tasks enqueued before the worker starts.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    /// Enqueueing them, with no worker running.
    enqueue: Duration,
    /// From starting the worker until the first task ran (asyncron: mostly the group join).
    start_to_first: Duration,
    /// From the first task handled until the last is recorded as done.
    first_to_last: Duration,
    /// From the handlers having run every task until the last is recorded as done.
    settle: Duration,
}

pub(super) async fn run(setup: &Setup, tasks: usize) -> anyhow::Result<()> {
    let batched = Engine::asyncron(setup, Mode::Batched).await?;
    let batched = measure_side(&batched, tasks).await?;
    let unbatched = Engine::asyncron(setup, Mode::Unbatched).await?;
    let unbatched = measure_side(&unbatched, tasks).await?;
    let apalis = measure_side(&Engine::apalis(setup).await?, tasks).await?;
    let measured = Sides {
        batched,
        unbatched,
        apalis,
    };
    let rows = comparisons(tasks, &measured);
    report::print(
        "task-queue (1/2): no-op tasks, asyncron (Kafka + PostgreSQL) vs apalis (PostgreSQL)",
        &notes(setup, tasks, &measured),
        &rows,
    );
    Ok(())
}

async fn measure_side(engine: &Engine, tasks: usize) -> anyhow::Result<Measured> {
    let live = live(engine, tasks).await?;
    let backlog = backlog(engine, tasks).await?;
    Ok(Measured { live, backlog })
}

/// Starts a worker, runs [`WARM_UP_TASKS`] through it, then enqueues `tasks` with the worker
/// running: the time from the first enqueue until the last task is done.
async fn live(engine: &Engine, tasks: usize) -> anyhow::Result<Live> {
    let queue = engine.queue_name("live");
    engine.prepare(&queue).await?;
    let handled = Arc::new(Handled::default());
    let worker = engine.start_worker(&queue, "live", handled.clone()).await?;
    let outcome = async {
        let warm_up = Progress::start(&format!("warm-up ({})", engine.label()), WARM_UP_TASKS);
        warm_up.waiting_for("worker starting");
        let base = engine.done_count(&queue).await?;
        engine.enqueue(&queue, 0..WARM_UP_TASKS, None).await?;
        wait_done(
            engine,
            &queue,
            &handled,
            WARM_UP_TASKS,
            base + WARM_UP_TASKS,
            &warm_up.counter(),
        )
        .await?;
        warm_up.finish();

        let progress = Progress::start(&format!("end to end ({})", engine.label()), tasks);
        let measured_from = handled.count();
        let base = engine.done_count(&queue).await?;
        let shown = progress.counter();
        let shown = CountFrom {
            shown: &shown,
            from: measured_from,
        };
        let started = Instant::now();
        let (enqueue, done) = tokio::try_join!(
            async {
                engine
                    .enqueue(&queue, WARM_UP_TASKS..WARM_UP_TASKS + tasks, None)
                    .await?;
                Ok::<_, anyhow::Error>(started.elapsed())
            },
            wait_done(
                engine,
                &queue,
                &handled,
                measured_from + tasks,
                base + tasks,
                &shown,
            ),
        )?;
        progress.finish();
        Ok(Live {
            enqueue,
            total: done.done_at.duration_since(started),
            settle: done.settle(),
        })
    }
    .await;
    engine.stop_worker(worker).await;
    outcome
}

/// Enqueues `tasks` with no worker running, then starts one: the time from its first task to
/// its last.
async fn backlog(engine: &Engine, tasks: usize) -> anyhow::Result<Backlog> {
    let queue = engine.queue_name("backlog");
    engine.prepare(&queue).await?;
    let progress = Progress::start(&format!("backlog: enqueue ({})", engine.label()), tasks);
    let started = Instant::now();
    engine
        .enqueue(&queue, 0..tasks, Some(&progress.counter()))
        .await?;
    let enqueue = started.elapsed();
    progress.finish();

    let base = engine.done_count(&queue).await?;
    let handled = Arc::new(Handled::default());
    let progress = Progress::start(&format!("backlog: drain ({})", engine.label()), tasks);
    progress.waiting_for("worker starting");
    let started = Instant::now();
    let worker = engine
        .start_worker(&queue, "backlog", handled.clone())
        .await?;
    let done = wait_done(
        engine,
        &queue,
        &handled,
        tasks,
        base + tasks,
        &progress.counter(),
    )
    .await;
    engine.stop_worker(worker).await;
    let done = done?;
    progress.finish();
    let first = *handled
        .first
        .get()
        .context("the worker finished without running a task")?;
    Ok(Backlog {
        enqueue,
        start_to_first: first.duration_since(started),
        first_to_last: done.done_at.duration_since(first),
        settle: done.settle(),
    })
}

/// Where [`wait_done`] shows its progress.
trait Shown {
    fn show(&self, handled: usize);
}

impl Shown for Arc<AtomicUsize> {
    fn show(&self, handled: usize) {
        self.store(handled, Ordering::Relaxed);
    }
}

/// A bar that counts from `from` handled tasks on.
struct CountFrom<'a> {
    shown: &'a Arc<AtomicUsize>,
    from: usize,
}

impl Shown for CountFrom<'_> {
    fn show(&self, handled: usize) {
        self.shown
            .store(handled.saturating_sub(self.from), Ordering::Relaxed);
    }
}

/// When a phase's last task was handled and when it was recorded as done.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// When the bench saw that the handlers had run every task.
    handled_at: Instant,
    /// When it saw the last one recorded as done.
    done_at: Instant,
}

impl Done {
    fn settle(self) -> Duration {
        self.done_at.duration_since(self.handled_at)
    }
}

/// Waits until the handlers ran `handled_target` tasks and then until the queue's database
/// records `done_target` as done (asyncron: committed executions; apalis: jobs marked `Done`).
/// Returns when it saw the last one done; fails when nothing moves for [`STALL_TIMEOUT`].
async fn wait_done(
    engine: &Engine,
    queue: &str,
    handled: &Handled,
    handled_target: usize,
    done_target: usize,
    shown: &impl Shown,
) -> anyhow::Result<Done> {
    let mut last = (usize::MAX, 0);
    let mut moved_at = Instant::now();
    let mut handled_at = None;
    loop {
        let count = handled.count();
        shown.show(count);
        let mut done = 0;
        if count >= handled_target {
            let handled_at = *handled_at.get_or_insert_with(Instant::now);
            done = engine.done_count(queue).await?;
            if done >= done_target {
                return Ok(Done {
                    handled_at,
                    done_at: Instant::now(),
                });
            }
        }
        if (count, done) != last {
            last = (count, done);
            moved_at = Instant::now();
        }
        anyhow::ensure!(
            moved_at.elapsed() < STALL_TIMEOUT,
            "{}: {count} of {handled_target} tasks handled and {done} of {done_target} recorded \
             as done, and nothing moved for {STALL_TIMEOUT:?}",
            engine.label()
        );
        tokio::time::sleep(DONE_POLL).await;
    }
}

/// One side of the comparison.
enum Engine {
    Asyncron(Asyncron),
    Apalis(Apalis),
}

struct Asyncron {
    mode: Mode,
    config: KafkaConfig,
    producer: Producer,
    pool: PgPool,
    run_id: String,
}

/// How asyncron's worker runs the no-op tasks.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `TaskOptions::batch`: the tasks that are ready together share a transaction.
    Batched,
    /// `TaskOptions::default()`: one transaction per task.
    Unbatched,
}

impl Mode {
    fn options(self) -> TaskOptions {
        match self {
            Self::Batched => TaskOptions {
                batch: Some(Batching::default()),
                ..TaskOptions::default()
            },
            Self::Unbatched => TaskOptions::default(),
        }
    }

    /// Names the side's database, topics and groups.
    fn name(self) -> &'static str {
        match self {
            Self::Batched => "batched",
            Self::Unbatched => "unbatched",
        }
    }
}

struct Apalis {
    pool: PgPool,
    run_id: String,
}

/// A started worker of either side.
enum StartedWorker {
    Asyncron {
        worker: RunningWorker,
        stop: CancellationToken,
    },
    Apalis {
        runs: Vec<JoinHandle<Result<(), String>>>,
        stop: CancellationToken,
    },
}

impl Engine {
    /// A fresh database with `task_executions`, and a producer.
    async fn asyncron(setup: &Setup, mode: Mode) -> anyhow::Result<Self> {
        let database = match mode {
            Mode::Batched => &setup.databases.asyncron_batched,
            Mode::Unbatched => &setup.databases.asyncron_unbatched,
        };
        let pool = database::create(&setup.run.database_server, database, POOL_CONNECTIONS).await?;
        task_queue::migrate(&pool).await?;
        // The services' session timeout (`KAFKA_SESSION_TIMEOUT`): on the local broker it sets
        // how long the worker's group join takes, part of "worker start → first task".
        let config = KafkaConfig::new(setup.run.bootstrap.clone(), "asyncron-bench").set(
            "session.timeout.ms",
            crate::kafka::session_timeout_from_env()?
                .as_millis()
                .to_string(),
        );
        let producer = Producer::new(&config)?;
        Ok(Self::Asyncron(Asyncron {
            mode,
            config,
            producer,
            pool,
            run_id: setup.run.id.clone(),
        }))
    }

    /// A fresh database with apalis' schema.
    async fn apalis(setup: &Setup) -> anyhow::Result<Self> {
        let pool = database::create(
            &setup.run.database_server,
            &setup.databases.apalis,
            POOL_CONNECTIONS,
        )
        .await?;
        PostgresStorage::setup(&pool)
            .await
            .context("Failed to run apalis' migrations")?;
        Ok(Self::Apalis(Apalis {
            pool,
            run_id: setup.run.id.clone(),
        }))
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Asyncron(Asyncron {
                mode: Mode::Batched,
                ..
            }) => "asyncron, batched",
            Self::Asyncron(Asyncron {
                mode: Mode::Unbatched,
                ..
            }) => "asyncron, unbatched",
            Self::Apalis(_) => "apalis",
        }
    }

    /// asyncron: a topic (with its retry and dead-letter topics); apalis: a queue, i.e. a
    /// `job_type`.
    fn queue_name(&self, phase: &str) -> String {
        match self {
            Self::Asyncron(side) => format!(
                "asyncron-bench.{}.{}.tasks-{phase}",
                side.run_id,
                side.mode.name()
            ),
            Self::Apalis(side) => format!("asyncron-bench-{}-{phase}", side.run_id),
        }
    }

    /// asyncron provisions the queue's topics before anything is enqueued; apalis needs nothing.
    async fn prepare(&self, queue: &str) -> anyhow::Result<()> {
        match self {
            Self::Asyncron(side) => side
                .producer
                .ensure_topics(&task_queue::queue_topics(queue, &RetryLevels::default()))
                .await
                .with_context(|| format!("Failed to provision the topics of {queue}")),
            Self::Apalis(_) => Ok(()),
        }
    }

    /// Enqueues the tasks `seqs`, many at once; `shown` counts them.
    async fn enqueue(
        &self,
        queue: &str,
        seqs: Range<usize>,
        shown: Option<&Arc<AtomicUsize>>,
    ) -> anyhow::Result<()> {
        let count = |n: usize| {
            if let Some(shown) = shown {
                shown.fetch_add(n, Ordering::Relaxed);
            }
        };
        match self {
            Self::Asyncron(side) => {
                let queue = TaskQueue::new(queue, side.producer.clone());
                stream::iter(seqs)
                    .map(|seq| {
                        let queue = &queue;
                        async move { queue.enqueue(&NoOp { seq }).await }
                    })
                    .buffer_unordered(ENQUEUE_IN_FLIGHT)
                    .try_for_each(|_| {
                        count(1);
                        futures::future::ok(())
                    })
                    .await
            }
            Self::Apalis(side) => {
                let storage = side.storage(queue);
                let seqs: Vec<usize> = seqs.collect();
                stream::iter(seqs.chunks(APALIS_PUSH_CHUNK))
                    .map(|chunk| {
                        let mut storage = storage.clone();
                        let tasks: Vec<NoOp> = chunk.iter().map(|&seq| NoOp { seq }).collect();
                        let n = tasks.len();
                        async move {
                            storage
                                .push_bulk(tasks)
                                .await
                                .map_err(|error| anyhow::anyhow!("apalis push_bulk: {error}"))?;
                            Ok::<_, anyhow::Error>(n)
                        }
                    })
                    .buffer_unordered(APALIS_PUSH_IN_FLIGHT)
                    .try_for_each(|n| {
                        count(n);
                        futures::future::ok(())
                    })
                    .await
            }
        }
    }

    async fn start_worker(
        &self,
        queue: &str,
        phase: &str,
        handled: Arc<Handled>,
    ) -> anyhow::Result<StartedWorker> {
        let stop = CancellationToken::new();
        match self {
            Self::Asyncron(side) => {
                let worker = Worker::new(
                    side.pool.clone(),
                    &side.config,
                    format!(
                        "asyncron-bench.{}.{}.{phase}",
                        side.run_id,
                        side.mode.name()
                    ),
                    queue,
                )
                .register::<NoOp, _>(CountingHandler(handled), side.mode.options())
                .start(stop.clone())
                .await
                .context("Failed to start the asyncron worker")?;
                Ok(StartedWorker::Asyncron { worker, stop })
            }
            Self::Apalis(side) => {
                let runs = (0..APALIS_WORKERS)
                    .map(|i| {
                        // LISTEN/NOTIFY wakes the worker when jobs are inserted; without it an
                        // idle worker only looks again on its next heartbeat.
                        let backend = side.storage(queue).with_pubsub();
                        let name = format!("asyncron-bench-{}-{phase}-{i}", side.run_id);
                        let worker = WorkerBuilder::new(name)
                            .backend(backend)
                            .concurrency(APALIS_CONCURRENCY)
                            .data(handled.clone())
                            .build(counting_job);
                        let stopped = stop.clone();
                        tokio::spawn(async move {
                            worker
                                .run_until(async move {
                                    stopped.cancelled().await;
                                    Ok::<_, std::io::Error>(())
                                })
                                .await
                                .map_err(|error| error.to_string())
                        })
                    })
                    .collect();
                Ok(StartedWorker::Apalis { runs, stop })
            }
        }
    }

    /// Stops the worker; one that does not stop within [`STOP_TIMEOUT`] is left behind (it ends
    /// with the process).
    async fn stop_worker(&self, worker: StartedWorker) {
        let label = self.label();
        let stopped = match worker {
            StartedWorker::Asyncron { worker, stop } => {
                stop.cancel();
                tokio::time::timeout(STOP_TIMEOUT, worker.wait())
                    .await
                    .map(|result| result.map_err(|error| format!("{error:#}")))
            }
            StartedWorker::Apalis { runs, stop } => {
                stop.cancel();
                tokio::time::timeout(STOP_TIMEOUT, futures::future::join_all(runs))
                    .await
                    .map(|joined| {
                        joined
                            .into_iter()
                            .map(|run| run.map_err(|error| error.to_string()).and_then(|r| r))
                            .collect::<Result<Vec<()>, String>>()
                            .map(|_| ())
                    })
            }
        };
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(worker = label, %error, "the worker stopped with an error");
            }
            Err(_) => {
                eprintln!("the {label} worker did not stop within {STOP_TIMEOUT:?}; moving on");
            }
        }
    }

    /// Tasks recorded as done. asyncron: committed executions in `task_executions` (one table
    /// for all of the side's queues); apalis: the queue's jobs with status `Done`.
    async fn done_count(&self, queue: &str) -> anyhow::Result<usize> {
        let count: i64 = match self {
            Self::Asyncron(side) => sqlx::query_scalar(
                "SELECT count(*) FROM task_executions WHERE completed_at IS NOT NULL",
            )
            .fetch_one(&side.pool)
            .await
            .context("Failed to count asyncron's executions")?,
            Self::Apalis(side) => sqlx::query_scalar(
                "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
            )
            .bind(queue)
            .fetch_one(&side.pool)
            .await
            .context("Failed to count apalis' done jobs")?,
        };
        Ok(usize::try_from(count).unwrap_or(0))
    }
}

impl Apalis {
    fn storage(&self, queue: &str) -> PostgresStorage<NoOp> {
        let config = apalis_postgres::Config::default()
            .queue(queue)
            .batch_size(APALIS_BATCH_SIZE);
        PostgresStorage::new(&self.pool).with_config(config)
    }
}

/// The same measurement on every side: asyncron batched and unbatched, and apalis.
#[derive(Debug, Clone, Copy)]
struct Sides<T> {
    batched: T,
    unbatched: T,
    apalis: T,
}

impl<T> Sides<T> {
    fn map<U>(&self, f: impl Fn(&T) -> U) -> Sides<U> {
        Sides {
            batched: f(&self.batched),
            unbatched: f(&self.unbatched),
            apalis: f(&self.apalis),
        }
    }
}

fn comparisons(tasks: usize, measured: &Sides<Measured>) -> Vec<Comparison> {
    let rate = |elapsed: Duration| stats::per_second(tasks, elapsed);
    let row = |better, measurement: &str, unit, values: Sides<f64>| {
        Comparison::new(
            measurement,
            unit,
            better,
            [values.batched, values.unbatched],
            Some(values.apalis),
        )
    };
    let per_second = Unit::PerSecond("tasks/s");
    vec![
        row(
            Higher,
            "end to end: first enqueue → last done",
            per_second,
            measured.map(|m| rate(m.live.total)),
        ),
        row(
            Lower,
            "end to end: time for all tasks",
            Unit::Seconds,
            measured.map(|m| m.live.total.as_secs_f64()),
        ),
        row(
            Higher,
            "enqueue, worker running",
            per_second,
            measured.map(|m| rate(m.live.enqueue)),
        ),
        row(
            Higher,
            "enqueue, no worker",
            per_second,
            measured.map(|m| rate(m.backlog.enqueue)),
        ),
        row(
            Higher,
            "handling a backlog: first → last done",
            per_second,
            measured.map(|m| rate(m.backlog.first_to_last)),
        ),
        row(
            Lower,
            "handling a backlog: worker start → first task",
            Unit::Seconds,
            measured.map(|m| m.backlog.start_to_first.as_secs_f64()),
        ),
        row(
            Lower,
            "end to end: last handled → last recorded done",
            Unit::Millis,
            measured.map(|m| m.live.settle.as_secs_f64() * 1_000.0),
        ),
        row(
            Lower,
            "handling a backlog: last handled → last recorded done",
            Unit::Millis,
            measured.map(|m| m.backlog.settle.as_secs_f64() * 1_000.0),
        ),
    ]
}

fn notes(setup: &Setup, tasks: usize, measured: &Sides<Measured>) -> Vec<String> {
    let n = |count: usize| report::count(count as f64);
    let end_to_end = measured.map(|m| stats::per_second(tasks, m.live.total));
    let ratio = end_to_end.batched / end_to_end.apalis;
    let batching = Batching::default();
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    vec![
        format!(
            "broker {}, PostgreSQL {}, run {}; each side has a fresh database ({}, {}, {}) and \
             a pool of {POOL_CONNECTIONS} connections",
            setup.run.bootstrap,
            database::redact(&setup.run.database_server),
            setup.run.id,
            setup.databases.asyncron_batched,
            setup.databases.asyncron_unbatched,
            setup.databases.apalis,
        ),
        format!(
            "{} no-op tasks per side and phase ({{\"seq\": n}}, handlers only count), after {} \
             unmeasured through the same worker; `done` = recorded as done in PostgreSQL, which \
             the bench polls every {} ms once the handlers have run them all",
            n(tasks),
            n(WARM_UP_TASKS),
            DONE_POLL.as_millis(),
        ),
        format!(
            "asyncron: TaskQueue::enqueue (Kafka, acks=all), {} in flight, to a fresh 6-partition \
             topic; one Worker. Every task's execution is recorded in task_executions (INSERT … \
             ON CONFLICT, UPDATE, COMMIT): that is asyncron's idempotency, kept on purpose. \
             `batched`: TaskOptions::batch = Batching::default() ({} tasks at most per \
             transaction, {} transactions at once); `unbatched`: TaskOptions::default(), one \
             transaction per task",
            n(ENQUEUE_IN_FLIGHT),
            batching.max_tasks,
            batching.transactions,
        ),
        format!(
            "apalis 1.0 + apalis-postgres 1.0: push_bulk of {} tasks (one INSERT each), {} at \
             once; {APALIS_WORKERS} worker(s) with LISTEN/NOTIFY (with_pubsub), batch_size \
             {APALIS_BATCH_SIZE} (default 10), concurrency {APALIS_CONCURRENCY}, lock_tasks and \
             persist_results at their defaults (on)",
            n(APALIS_PUSH_CHUNK),
            APALIS_PUSH_IN_FLIGHT,
        ),
        format!(
            "goals, for asyncron batched: end to end >= {RATIO_GOAL:.0} x apalis: {} \
             ({ratio:.2} x); >= {} tasks/s: {} ({} tasks/s). Unbatched: {:.2} x apalis, {} tasks/s",
            verdict(ratio >= RATIO_GOAL),
            n(RATE_GOAL as usize),
            verdict(end_to_end.batched >= RATE_GOAL),
            report::count(end_to_end.batched),
            end_to_end.unbatched / end_to_end.apalis,
            report::count(end_to_end.unbatched),
        ),
        "ratios are asyncron / apalis; `better` says which direction is an improvement".to_owned(),
    ]
}

/// asyncron's worker, batched and unbatched, against apalis.
#[derive(Debug)]
struct VsApalis;

impl report::Sides for VsApalis {
    const OURS: &'static [&'static str] = &["asyncron, batched", "asyncron, unbatched"];
    const BASELINE: &'static str = "apalis";
    const RATIOS: &'static [&'static str] = &["ratio, batched", "ratio, unbatched"];
}

type Comparison = report::Comparison<VsApalis>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handled_count_remembers_the_first_task() {
        let handled = Handled::default();
        assert!(handled.first.get().is_none());
        handled.record();
        let first = *handled.first.get().unwrap();
        handled.record();
        assert_eq!(handled.count(), 2);
        assert_eq!(*handled.first.get().unwrap(), first);
    }
}

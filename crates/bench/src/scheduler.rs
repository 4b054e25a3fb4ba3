//! The `scheduler` scenario: how late the task scheduler fires, and how many fires per second it
//! sustains with a p99 delay under 100 ms.
//!
//! Self-contained: a fresh database `bench_scheduler_<run>` (dropped at the end, also by a
//! guard when the run fails or is interrupted), the scheduler's and the outbox's migrations, and
//! one [`Scheduler`] with default settings. A producer inserts one-off schedules at a steady
//! rate, each due [`LEAD`] after it is inserted, due times `1 / rate` apart; afterwards
//! `fired_at − due_at` is read for every row. No relay and no broker run: the firing writes the
//! outbox rows, and publishing them is the integration-events scenario's business.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use task_scheduler::{NOTIFY_CHANNEL, Scheduler, SchedulerSettings, TaskTemplate};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::database;
use crate::progress::Progress;
use crate::report::{self, Column, Row};
use crate::stats::{LatencyHistogram, LatencySummary};

/// The sustained phase's length when `--seconds` is not given.
pub const DEFAULT_SECONDS: usize = 30;
/// The sustained phase's rate, fires per second.
const SUSTAINED_RATE: u64 = 1_000;
/// The stepped phase: these rates in turn, until one misses the bound.
const STEP_RATES: &[u64] = &[1_000, 2_000, 5_000, 10_000, 20_000];
/// Each step's length; `--seconds` shortens it when it is shorter.
const STEP_SECONDS: usize = 10;
/// How long before its due time a schedule is inserted: scheduled ahead, as in real use.
const LEAD: Duration = Duration::from_secs(1);
/// The producer's pace: every tick it inserts the rows whose insert time has come.
const TICK: Duration = Duration::from_millis(10);
/// Rows per multi-row INSERT.
const MAX_BATCH: usize = 500;
/// Connections inserting concurrently (one pool); the scheduler has a pool of its own.
const INSERT_CONNECTIONS: u32 = 4;
/// The stepped phase's bound on the p99 firing delay.
const STEP_BOUND: Duration = Duration::from_millis(100);
/// The goals: p99 at 1,000 fires/s, and the sustained rate.
const P99_GOAL: Duration = Duration::from_millis(50);
const RATE_GOAL: u64 = 5_000;
/// A step stops producing when its oldest unfired row is this overdue: it has missed the
/// bound already, and the backlog would only make the run longer.
const BEHIND_LIMIT: Duration = Duration::from_secs(1);
/// How often the step's monitor looks at the oldest unfired row.
const MONITOR_INTERVAL: Duration = Duration::from_millis(250);
/// How long the rows left after the producer stopped may take to fire.
const DRAIN_TIMEOUT: Duration = Duration::from_mins(2);
/// The topic and task name in the fired tasks' templates (nothing consumes them).
const TOPIC: &str = "bench.scheduler.tasks";
const TASK_NAME: &str = "BenchTick";

/// A multi-row version of `Schedules::schedule_at`: the same row, and one `NOTIFY` per batch
/// with its earliest due time, which is what the scheduler's listener compares with its timer.
const INSERT_SQL: &str = "WITH inserted AS (
         INSERT INTO scheduled_tasks (id, dedup_key, task, due_at)
         SELECT id, dedup_key, task::jsonb, due_at
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
             AS t(id, dedup_key, task, due_at)
         RETURNING due_at
     )
     SELECT pg_notify($5, (EXTRACT(EPOCH FROM min(due_at)) * 1000000)::bigint::text)
     FROM inserted";

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let seconds = options.seconds.unwrap_or(DEFAULT_SECONDS);
    let step_seconds = seconds.min(STEP_SECONDS);
    let server = database::server_from_env();
    database::check_postgres(&server).await?;
    let run_id = crate::services::run_id();
    let name = format!("bench_scheduler_{run_id}");
    eprintln!(
        "scheduler scenario: PostgreSQL {}, database {name}",
        database::redact(&server)
    );

    // Declared first, dropped last: after the scheduler has been told to stop.
    let load_before = load_average();
    let guard = DatabaseGuard {
        server: server.clone(),
        name: name.clone(),
        armed: true,
    };
    let outcome = tokio::select! {
        outcome = measure(&server, &name, seconds, step_seconds) => outcome,
        signal = tokio::signal::ctrl_c() => {
            signal.context("Failed to wait for Ctrl-C")?;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    let dropped = guard.drop_now().await;
    let results = outcome?;

    let mut notes = notes(&name, &server, seconds, step_seconds);
    notes.push(format!(
        "Load average (1 min) before the run {load_before}, after it {}: anything else running on \
         the machine competes for the same cores and shows up as delay.",
        load_average()
    ));
    report::print(
        "scheduler: firing delay (due → fired and committed) and sustained fires per second",
        &notes,
        &results.phases,
    );
    report::print("scheduler: the issue's goals", &[], &goals(&results));
    dropped
}

/// Drops the run's database when the run ends, however it ends.
#[derive(Debug)]
struct DatabaseGuard {
    server: String,
    name: String,
    armed: bool,
}

impl DatabaseGuard {
    async fn drop_now(mut self) -> anyhow::Result<()> {
        self.armed = false;
        database::drop_all(&self.server, &[&self.name]).await
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // `Drop` cannot await: a runtime of its own, on a thread of its own (this one may be a
        // runtime's worker, which must not block on another runtime).
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("Failed to start a runtime to drop the bench database")?
                .block_on(database::drop_all(&server, &[&name]))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: {error:#}"),
            Err(_) => eprintln!("warning: dropping database {} panicked", self.name),
        }
    }
}

#[derive(Debug)]
struct Results {
    phases: Vec<Phase>,
}

impl Results {
    fn sustained(&self) -> Option<&Phase> {
        self.phases.iter().find(|p| p.kind == Kind::Sustained)
    }

    /// The highest step rate whose p99 met the bound with every row fired, inserted in time.
    fn best_rate(&self) -> Option<u64> {
        self.phases
            .iter()
            .filter(|p| p.kind == Kind::Step && p.met_bound())
            .map(|p| p.rate)
            .max()
    }
}

async fn measure(
    server: &str,
    name: &str,
    seconds: usize,
    step_seconds: usize,
) -> anyhow::Result<Results> {
    let bench = database::create(server, name, 2).await?;
    outbox::migrate(&bench).await?;
    task_scheduler::migrate(&bench).await?;
    let inserts = database::pool(server, name, INSERT_CONNECTIONS).await?;
    let scheduler_pool = database::pool(server, name, 2).await?;

    let shutdown = CancellationToken::new();
    // Stops the scheduler however `measure` ends, before the guard drops the database.
    let _stop = shutdown.clone().drop_guard();
    let scheduler = tokio::spawn(
        Scheduler::new(scheduler_pool.clone())
            .with_settings(SchedulerSettings::default())
            .run(shutdown.clone()),
    );

    let pools = Pools {
        bench: bench.clone(),
        inserts: inserts.clone(),
    };
    let mut phases = Vec::new();
    phases.push(
        phase(
            &pools,
            Kind::Sustained,
            SUSTAINED_RATE,
            Duration::from_secs(seconds as u64),
        )
        .await?,
    );
    for &rate in STEP_RATES {
        let step = phase(
            &pools,
            Kind::Step,
            rate,
            Duration::from_secs(step_seconds as u64),
        )
        .await?;
        let met = step.met_bound();
        phases.push(step);
        if !met {
            break;
        }
    }

    shutdown.cancel();
    scheduler
        .await
        .context("the scheduler task panicked")?
        .context("the scheduler failed")?;
    for pool in [inserts, scheduler_pool, bench] {
        pool.close().await;
    }
    Ok(Results { phases })
}

#[derive(Debug, Clone)]
struct Pools {
    /// Setup, monitoring and reading the results.
    bench: PgPool,
    inserts: PgPool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sustained,
    Step,
}

/// One phase's measurements.
#[derive(Debug)]
struct Phase {
    kind: Kind,
    rate: u64,
    planned: usize,
    /// Rows inserted (fewer than planned when the step stopped because firing fell behind).
    scheduled: usize,
    insert_rate: f64,
    /// The smallest time left until a batch's first row was due, when its INSERT committed;
    /// negative when rows were inserted after their due time (the insert side saturated).
    min_lead_micros: i64,
    /// The step stopped producing: its oldest unfired row was over [`BEHIND_LIMIT`] overdue.
    fell_behind: bool,
    fired: usize,
    /// Every scheduled row fired, and wrote exactly one outbox row with a distinct task id.
    once: bool,
    /// Fired rows per second, from the first due time to the last fire.
    fire_rate: f64,
    delays: LatencySummary,
}

impl Phase {
    fn insert_saturated(&self) -> bool {
        self.min_lead_micros < 0 || self.insert_rate < self.rate as f64 * 0.95
    }

    fn met_bound(&self) -> bool {
        !self.fell_behind
            && !self.insert_saturated()
            && self.once
            && self.scheduled == self.planned
            && self.delays.p99 < STEP_BOUND
    }

    fn verdict(&self) -> String {
        let mut notes = Vec::new();
        if self.fell_behind {
            notes.push(format!(
                "firing fell > {} s behind; stopped after {} rows",
                BEHIND_LIMIT.as_secs(),
                report::count(self.scheduled as f64)
            ));
        }
        if self.delays.p99 >= STEP_BOUND {
            notes.push(format!("p99 ≥ {} ms", STEP_BOUND.as_millis()));
        }
        if self.insert_saturated() {
            notes.push(format!(
                "insert side saturated ({}/s, min lead {})",
                report::count(self.insert_rate),
                signed_ms(self.min_lead_micros)
            ));
        }
        if !self.once {
            notes.push(format!(
                "NOT all fired once ({} of {})",
                report::count(self.fired as f64),
                report::count(self.scheduled as f64)
            ));
        }
        let bound = if self.met_bound() { "yes" } else { "no" };
        if notes.is_empty() {
            bound.to_owned()
        } else {
            format!("{bound}: {}", notes.join("; "))
        }
    }
}

impl Row for Phase {
    fn columns() -> Vec<Column> {
        vec![
            Column::left("phase"),
            Column::right("target/s"),
            Column::right("inserted/s"),
            Column::right("fired/s"),
            Column::right("fired"),
            Column::right("p50"),
            Column::right("p99"),
            Column::right("max"),
            Column::left("p99 < 100 ms, all fired once"),
        ]
    }

    fn cells(&self) -> Vec<String> {
        let phase = match self.kind {
            Kind::Sustained => "sustained",
            Kind::Step => "step",
        };
        vec![
            phase.to_owned(),
            report::count(self.rate as f64),
            report::count(self.insert_rate),
            report::count(self.fire_rate),
            format!(
                "{}/{}",
                report::count(self.fired as f64),
                report::count(self.scheduled as f64)
            ),
            ms(self.delays.p50),
            ms(self.delays.p99),
            ms(self.delays.max),
            self.verdict(),
        ]
    }
}

/// A line of the goals table.
#[derive(Debug)]
struct Goal {
    measure: String,
    value: String,
    target: String,
    met: bool,
}

impl Row for Goal {
    fn columns() -> Vec<Column> {
        vec![
            Column::left("measure"),
            Column::right("value"),
            Column::left("goal"),
            Column::left("met"),
        ]
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.measure.clone(),
            self.value.clone(),
            self.target.clone(),
            if self.met { "yes" } else { "NO" }.to_owned(),
        ]
    }
}

fn goals(results: &Results) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(sustained) = results.sustained() {
        goals.push(Goal {
            measure: format!(
                "p99 firing delay at {}/s",
                report::count(sustained.rate as f64)
            ),
            value: ms(sustained.delays.p99),
            target: format!("≤ {} ms", P99_GOAL.as_millis()),
            met: sustained.delays.p99 <= P99_GOAL && sustained.once,
        });
        goals.push(Goal {
            measure: format!(
                "fired exactly once at {}/s",
                report::count(sustained.rate as f64)
            ),
            value: format!(
                "{}/{}",
                report::count(sustained.fired as f64),
                report::count(sustained.scheduled as f64)
            ),
            target: "all, once".to_owned(),
            met: sustained.once,
        });
    }
    let best = results.best_rate();
    goals.push(Goal {
        measure: format!("highest step rate with p99 < {} ms", STEP_BOUND.as_millis()),
        value: best.map_or_else(
            || "none".to_owned(),
            |rate| format!("{}/s", report::count(rate as f64)),
        ),
        target: format!("≥ {}/s", report::count(RATE_GOAL as f64)),
        met: best.is_some_and(|rate| rate >= RATE_GOAL),
    });
    goals
}

fn notes(name: &str, server: &str, seconds: usize, step_seconds: usize) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    vec![
        format!(
            "One Scheduler (default settings: batch {}, max_sleep {} s) on database {name} at {}; \
             the bench, the scheduler and PostgreSQL share this machine's {cores} cores.",
            SchedulerSettings::default().batch_size,
            SchedulerSettings::default().max_sleep.as_secs(),
            database::redact(server),
        ),
        "Delay = fired_at − due_at, read from scheduled_tasks for every row: due → fired and \
         committed (fired_at = clock_timestamp() in the firing transaction, just before its \
         commit). The fire writes the task into the outbox; no relay or broker runs here. The \
         relay's publish adds a few ms on top, measured in the integration-events scenario."
            .to_owned(),
        format!(
            "Schedules are inserted {} s before they are due, due times 1/rate apart, by a \
             producer ticking every {} ms: multi-row INSERTs of ≤ {MAX_BATCH} rows on up to \
             {INSERT_CONNECTIONS} connections, writing the row Schedules::schedule_at writes and \
             one NOTIFY per batch. inserted/s is what the producer achieved; below 95 % of the \
             target, or a row inserted after its due time, means the insert side saturated.",
            LEAD.as_secs(),
            TICK.as_millis()
        ),
        format!(
            "sustained: {} fires/s for {seconds} s. steps: {} fires/s, {step_seconds} s each, \
             until one has p99 ≥ {} ms, or the firing falls {} s behind (the step then stops \
             producing), or the insert side saturates. fired/s = rows fired ÷ (last fire − \
             first due time). The tables are emptied between phases.",
            report::count(SUSTAINED_RATE as f64),
            STEP_RATES
                .iter()
                .map(|rate| report::count(*rate as f64))
                .collect::<Vec<_>>()
                .join(", "),
            STEP_BOUND.as_millis(),
            BEHIND_LIMIT.as_secs(),
        ),
    ]
}

/// The 1-minute load average from `/proc/loadavg`, or `n/a` where there is none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned())
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

fn signed_ms(micros: i64) -> String {
    format!("{:.1} ms", micros as f64 / 1_000.0)
}

/// One phase: empty tables, produce at `rate` for `duration`, wait for the fires, read them.
async fn phase(pools: &Pools, kind: Kind, rate: u64, duration: Duration) -> anyhow::Result<Phase> {
    sqlx::query("TRUNCATE scheduled_tasks, outbox")
        .execute(&pools.bench)
        .await
        .context("Failed to empty the tables between phases")?;
    let planned = (rate as usize).saturating_mul(duration.as_secs() as usize);
    let tag = match kind {
        Kind::Sustained => format!("sustained-{rate}"),
        Kind::Step => format!("step-{rate}"),
    };
    let label = match kind {
        Kind::Sustained => format!("sustained {}/s", report::count(rate as f64)),
        Kind::Step => format!("step {}/s", report::count(rate as f64)),
    };
    let progress = Progress::start(&label, planned);

    // Both clocks at (nearly) the same moment: due times are on the database's clock, which the
    // scheduler compares with; the producer paces itself on the monotonic one.
    let origin_db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pools.bench)
        .await?;
    let origin = Instant::now();
    let plan = Arc::new(Plan {
        tag,
        rate,
        origin_db,
        origin,
    });

    let behind = Arc::new(AtomicBool::new(false));
    let stop_monitor = CancellationToken::new();
    let monitor = (kind == Kind::Step).then(|| {
        tokio::spawn(watch_backlog(
            pools.bench.clone(),
            Arc::clone(&behind),
            stop_monitor.clone(),
        ))
    });

    let produced = produce(pools, plan, planned, &behind, &progress.counter()).await;
    stop_monitor.cancel();
    if let Some(monitor) = monitor {
        monitor.await.context("the backlog monitor panicked")??;
    }
    let (scheduled, insert_elapsed, min_lead_micros) = produced?;

    drain(&pools.bench).await?;
    progress.finish();
    let mut phase = read_results(&pools.bench).await?;
    phase.kind = kind;
    phase.rate = rate;
    phase.planned = planned;
    phase.insert_rate = crate::stats::per_second(scheduled, insert_elapsed);
    phase.min_lead_micros = min_lead_micros;
    phase.fell_behind = behind.load(Ordering::SeqCst);
    phase.once = phase.once && phase.scheduled == scheduled;
    Ok(phase)
}

#[derive(Debug)]
struct Plan {
    tag: String,
    rate: u64,
    origin_db: DateTime<Utc>,
    origin: Instant,
}

impl Plan {
    /// Row `i` is inserted `i / rate` after the origin and due [`LEAD`] later.
    fn offset(&self, i: usize) -> Duration {
        Duration::from_micros(i as u64 * 1_000_000 / self.rate)
    }

    fn due_at(&self, i: usize) -> DateTime<Utc> {
        let micros = (LEAD + self.offset(i)).as_micros() as i64;
        self.origin_db + chrono::TimeDelta::microseconds(micros)
    }

    fn due_instant(&self, i: usize) -> Instant {
        self.origin + LEAD + self.offset(i)
    }
}

/// Inserts the planned rows at the plan's pace. Returns the rows inserted, the time from the
/// origin to the last commit, and the smallest lead at commit (µs, negative when late).
async fn produce(
    pools: &Pools,
    plan: Arc<Plan>,
    planned: usize,
    behind: &AtomicBool,
    inserted: &Arc<AtomicUsize>,
) -> anyhow::Result<(usize, Duration, i64)> {
    let permits = Arc::new(Semaphore::new(INSERT_CONNECTIONS as usize));
    let min_lead = Arc::new(AtomicI64::new(i64::MAX));
    let mut inserts = JoinSet::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0;
    while sent < planned && !behind.load(Ordering::SeqCst) {
        ticks.tick().await;
        let due_now = (plan.origin.elapsed().as_secs_f64() * plan.rate as f64) as usize + 1;
        let target = due_now.min(planned);
        while sent < target {
            let end = (sent + MAX_BATCH).min(target);
            // All connections busy: the producer waits, and falls behind its pace (measured).
            let permit = Arc::clone(&permits).acquire_owned().await?;
            inserts.spawn(insert_batch(
                pools.inserts.clone(),
                Arc::clone(&plan),
                sent..end,
                permit,
                Arc::clone(&min_lead),
                Arc::clone(inserted),
            ));
            sent = end;
        }
        while let Some(done) = inserts.try_join_next() {
            done.context("an insert task panicked")??;
        }
    }
    while let Some(done) = inserts.join_next().await {
        done.context("an insert task panicked")??;
    }
    Ok((sent, plan.origin.elapsed(), min_lead.load(Ordering::SeqCst)))
}

async fn insert_batch(
    pool: PgPool,
    plan: Arc<Plan>,
    rows: Range<usize>,
    _permit: OwnedSemaphorePermit,
    min_lead: Arc<AtomicI64>,
    inserted: Arc<AtomicUsize>,
) -> anyhow::Result<()> {
    let len = rows.len();
    let mut ids = Vec::with_capacity(len);
    let mut keys = Vec::with_capacity(len);
    let mut tasks = Vec::with_capacity(len);
    let mut dues = Vec::with_capacity(len);
    for i in rows.clone() {
        ids.push(uuid::Uuid::now_v7());
        keys.push(format!("{}:{i}", plan.tag));
        let template = TaskTemplate {
            topic: TOPIC.to_owned(),
            task_name: TASK_NAME.to_owned(),
            payload: serde_json::json!({ "n": i }),
            ordering_key: None,
        };
        tasks.push(serde_json::to_string(&template)?);
        dues.push(plan.due_at(i));
    }
    sqlx::query(INSERT_SQL)
        .bind(ids)
        .bind(keys)
        .bind(tasks)
        .bind(dues)
        .bind(NOTIFY_CHANNEL)
        .execute(&pool)
        .await
        .context("Failed to insert a batch of schedules")?;
    let now = Instant::now();
    let due = plan.due_instant(rows.start);
    let lead = if due >= now {
        (due - now).as_micros() as i64
    } else {
        -((now - due).as_micros() as i64)
    };
    min_lead.fetch_min(lead, Ordering::SeqCst);
    inserted.fetch_add(len, Ordering::Relaxed);
    Ok(())
}

/// Sets `behind` when the oldest unfired row is over [`BEHIND_LIMIT`] overdue.
async fn watch_backlog(
    pool: PgPool,
    behind: Arc<AtomicBool>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(MONITOR_INTERVAL) => {}
        }
        // The pending index answers this at once however many rows there are.
        let overdue: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(due_at))::float8
             FROM scheduled_tasks WHERE state = 'pending'",
        )
        .fetch_one(&pool)
        .await
        .context("Failed to look at the scheduler's backlog")?;
        if overdue.is_some_and(|seconds| seconds > BEHIND_LIMIT.as_secs_f64()) {
            behind.store(true, Ordering::SeqCst);
            return Ok(());
        }
    }
}

/// Waits until no row is pending, at most [`DRAIN_TIMEOUT`] (the remaining rows then count as
/// not fired).
async fn drain(pool: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < DRAIN_TIMEOUT {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM scheduled_tasks WHERE state = 'pending'")
                .fetch_one(pool)
                .await
                .context("Failed to count the pending schedules")?;
        if pending == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Reads every row's delay and checks that each fired exactly once.
async fn read_results(pool: &PgPool) -> anyhow::Result<Phase> {
    let delays: Vec<i64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM fired_at - due_at) * 1000000)::bigint
         FROM scheduled_tasks WHERE state = 'fired'",
    )
    .fetch_all(pool)
    .await
    .context("Failed to read the firing delays")?;
    let mut histogram = LatencyHistogram::default();
    let mut early = 0;
    for &micros in &delays {
        if micros < 0 {
            early += 1;
        }
        histogram.record(Duration::from_micros(micros.max(0) as u64));
    }
    anyhow::ensure!(early == 0, "{early} schedules fired before their due time");
    let (rows, fired, outbox_rows, task_ids, span): (i64, i64, i64, i64, Option<f64>) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM scheduled_tasks),
                    (SELECT count(*) FROM scheduled_tasks WHERE state = 'fired'),
                    (SELECT count(*) FROM outbox),
                    (SELECT count(DISTINCT message_id) FROM outbox),
                    (SELECT EXTRACT(EPOCH FROM max(fired_at) - min(due_at))::float8
                     FROM scheduled_tasks WHERE state = 'fired')",
        )
        .fetch_one(pool)
        .await
        .context("Failed to count the fires")?;
    let fired = fired as usize;
    Ok(Phase {
        kind: Kind::Step,
        rate: 0,
        planned: 0,
        scheduled: rows as usize,
        insert_rate: 0.0,
        min_lead_micros: 0,
        fell_behind: false,
        fired,
        once: rows as usize == fired && outbox_rows == rows && task_ids == rows,
        fire_rate: span.map_or(0.0, |seconds| {
            crate::stats::per_second(fired, Duration::from_secs_f64(seconds.max(0.0)))
        }),
        delays: histogram.summary(),
    })
}

//! The scheduler against a real PostgreSQL and broker: precision, exactly-once firing across
//! replicas and restarts, cancellation, recurring schedules and their misfire policies.
//!
//! Precision is measured on a real clock (rows due a second from now); everything else puts due
//! times where it needs them with SQL, which makes those tests exact and fast.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kafka::{KafkaConfig, Producer};
use outbox::{OutboxRelay, RelaySettings};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use task_queue::{Task, TaskContext, TaskError, TaskHandler, TaskOptions, Worker};
use task_scheduler::{
    MisfirePolicy, OverlapPolicy, ScheduleState, Scheduler, SchedulerSettings, Schedules,
    TaskTemplate, derive_task_id,
};
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

/// The firing delay a test accepts on this shared machine (the goal is a p99 of 50 ms).
const TOLERANCE: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize, Deserialize)]
struct Remind {
    n: u32,
}

impl Task for Remind {
    const NAME: &'static str = "Remind";
}

/// Runs every task: the worker's execution record is what the tests count.
struct Succeed;

impl TaskHandler<Remind> for Succeed {
    async fn handle(&self, _task: Remind, _ctx: &mut TaskContext<'_>) -> Result<(), TaskError> {
        Ok(())
    }
}

struct Setup {
    #[allow(dead_code, reason = "kept for its Drop, which removes the database")]
    db: TestDatabase,
    /// Larger than the test database's own pool: two schedulers, a relay and a worker share it.
    pool: PgPool,
    topic: String,
    schedules: Schedules,
}

/// A scheduler running in the background, stopped by [`Running::stop`].
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("join")
            .expect("the scheduler stops cleanly");
    }
}

impl Setup {
    async fn new() -> Self {
        platform::telemetry::init_for_tests();
        let db = TestDatabase::create().await;
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .connect(&db.url)
            .await
            .expect("connect");
        outbox::migrate(&pool).await.expect("outbox migrations");
        task_queue::migrate(&pool)
            .await
            .expect("task queue migrations");
        task_scheduler::migrate(&pool)
            .await
            .expect("scheduler migrations");
        Self {
            schedules: Schedules::new(pool.clone()),
            topic: unique_name("scheduler-test"),
            db,
            pool,
        }
    }

    fn template(&self, n: u32) -> TaskTemplate {
        TaskTemplate::new(&self.topic, &Remind { n }).expect("template")
    }

    fn scheduler(&self, settings: SchedulerSettings) -> Running {
        let shutdown = CancellationToken::new();
        let scheduler = Scheduler::new(self.pool.clone()).with_settings(settings);
        Running {
            task: tokio::spawn(scheduler.run(shutdown.clone())),
            shutdown,
        }
    }

    /// Rows in the outbox, i.e. tasks the scheduler enqueued.
    async fn outbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .expect("count outbox rows")
    }

    async fn count(&self, state: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM scheduled_tasks WHERE state = $1")
            .bind(state)
            .fetch_one(&self.pool)
            .await
            .expect("count schedules")
    }

    async fn wait_for_fired(&self, count: i64) {
        eventually(DEADLINE, &format!("{count} fired schedule(s)"), || async {
            (self.count("fired").await >= count).then_some(())
        })
        .await;
    }

    /// Moves every pending row (of `recurring`, or all) `ago` into the past, as if it had come
    /// due while no scheduler ran.
    async fn make_overdue(&self, recurring: Option<&str>, ago: Duration) {
        sqlx::query(
            "UPDATE scheduled_tasks SET due_at = clock_timestamp() - make_interval(secs => $2)
             WHERE state = 'pending' AND ($1::text IS NULL OR recurring = $1)",
        )
        .bind(recurring)
        .bind(ago.as_secs_f64())
        .execute(&self.pool)
        .await
        .expect("move due times");
    }
}

fn fast() -> SchedulerSettings {
    SchedulerSettings {
        max_sleep: Duration::from_millis(500),
        ..SchedulerSettings::default()
    }
}

#[tokio::test]
async fn one_offs_fire_once_on_time_through_the_outbox_to_the_worker_with_derived_ids() {
    let setup = Setup::new().await;
    let kafka = KafkaConfig::new(kafka_bootstrap_servers().await, "asyncron-scheduler-tests")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300");
    let stop = CancellationToken::new();
    let worker = Worker::new(
        setup.pool.clone(),
        &kafka,
        unique_name("scheduler-test"),
        &setup.topic,
    )
    .register(Succeed, TaskOptions::default())
    .start(stop.clone())
    .await
    .expect("start the worker");
    let relay = OutboxRelay::new(setup.pool.clone(), Producer::new(&kafka).expect("producer"))
        .with_settings(RelaySettings::default());
    let relay = tokio::spawn(relay.run(stop.clone()));
    let scheduler = setup.scheduler(SchedulerSettings::default());

    // Due on a real clock, a little apart, each waking the scheduler's timer on its own.
    let mut ids = Vec::new();
    for n in 0..20 {
        let delay = Duration::from_millis(1_000 + u64::from(n) * 37);
        ids.push(
            setup
                .schedules
                .schedule_after(&format!("remind-{n}"), setup.template(n), delay)
                .await
                .expect("schedule"),
        );
    }
    setup.wait_for_fired(20).await;

    let mut delays: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM fired_at - due_at)::float8 FROM scheduled_tasks ORDER BY 1",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    delays.sort_by(f64::total_cmp);
    let ms = |seconds: f64| (seconds * 1000.0).round();
    println!(
        "firing delay (fired_at − due_at) of 20 one-offs: min {} ms, median {} ms, max {} ms",
        ms(delays[0]),
        ms(delays[10]),
        ms(delays[19])
    );
    assert!(delays[0] >= 0.0, "fired early: {delays:?}");
    assert!(
        delays[19] <= TOLERANCE.as_secs_f64(),
        "fired late: {delays:?}"
    );

    // Each task ran once, with the id derived from its schedule.
    for id in ids {
        let schedule = setup.schedules.get(id).await.unwrap().expect("schedule");
        assert_eq!(schedule.state, ScheduleState::Fired);
        let task_id = derive_task_id(id, schedule.due_at);
        let ran: String = eventually(DEADLINE, "the worker to run the task", || async {
            sqlx::query_scalar("SELECT task_name FROM task_executions WHERE task_id = $1")
                .bind(task_id)
                .fetch_optional(&setup.pool)
                .await
                .unwrap()
        })
        .await;
        assert_eq!(ran, "Remind");
    }
    assert_eq!(setup.outbox_rows().await, 20);

    scheduler.stop().await;
    stop.cancel();
    relay.await.unwrap().unwrap();
    worker.wait().await.expect("the worker stops cleanly");
}

#[tokio::test]
async fn cancelled_never_fires_rescheduled_moves_and_a_dedup_key_schedules_once() {
    let setup = Setup::new().await;
    let far = Utc::now() + chrono::Duration::hours(1);
    let cancelled = setup
        .schedules
        .schedule_at("cancel-me", setup.template(1), far)
        .await
        .unwrap();
    let moved = setup
        .schedules
        .schedule_at("move-me", setup.template(2), far)
        .await
        .unwrap();
    let first = setup
        .schedules
        .schedule_at("once", setup.template(3), far)
        .await
        .unwrap();
    let second = setup
        .schedules
        .schedule_after("once", setup.template(4), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first, second, "the same dedup key is the same schedule");

    assert!(setup.schedules.cancel(cancelled).await.unwrap());
    assert!(
        !setup.schedules.cancel(cancelled).await.unwrap(),
        "not pending any more"
    );
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&setup.pool)
        .await
        .unwrap();
    assert!(setup.schedules.reschedule(moved, now).await.unwrap());
    assert!(!setup.schedules.reschedule(cancelled, now).await.unwrap());
    // Cancelled, then due: it must still not fire.
    sqlx::query("UPDATE scheduled_tasks SET due_at = $2 WHERE id = $1")
        .bind(cancelled)
        .bind(now)
        .execute(&setup.pool)
        .await
        .unwrap();

    let scheduler = setup.scheduler(fast());
    setup.wait_for_fired(1).await;
    let moved = setup.schedules.get(moved).await.unwrap().unwrap();
    assert_eq!(moved.state, ScheduleState::Fired);
    assert_eq!(moved.due_at, now);
    assert_eq!(
        setup.schedules.get(cancelled).await.unwrap().unwrap().state,
        ScheduleState::Cancelled
    );
    assert_eq!(
        setup.schedules.get(first).await.unwrap().unwrap().state,
        ScheduleState::Pending,
        "the second scheduling of `once` changed nothing"
    );
    assert_eq!(setup.outbox_rows().await, 1);
    let listed = setup
        .schedules
        .list(Some(ScheduleState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [first]);
    scheduler.stop().await;
}

#[tokio::test]
async fn two_schedulers_fire_a_thousand_schedules_exactly_once_between_them() {
    let setup = Setup::new().await;
    let settings = SchedulerSettings {
        batch_size: 50,
        ..fast()
    };
    let (a, b) = (setup.scheduler(settings.clone()), setup.scheduler(settings));
    let far = Utc::now() + chrono::Duration::hours(1);
    let mut tx = setup.pool.begin().await.unwrap();
    for n in 0..1_000 {
        Schedules::schedule_at_in(&mut tx, &format!("many-{n}"), setup.template(n), far)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // All due at the same moment: both replicas wake and compete for the rows.
    setup.make_overdue(None, Duration::ZERO).await;
    sqlx::query("SELECT pg_notify('asyncron_scheduler', '0')")
        .execute(&setup.pool)
        .await
        .unwrap();

    setup.wait_for_fired(1_000).await;
    a.stop().await;
    b.stop().await;

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM outbox")
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    assert_eq!((rows, distinct), (1_000, 1_000));
    assert_eq!(setup.count("pending").await, 0);
}

#[tokio::test]
async fn rows_that_came_due_while_no_scheduler_ran_fire_at_start_once() {
    let setup = Setup::new().await;
    let first = setup.scheduler(fast());
    let far = Utc::now() + chrono::Duration::hours(1);
    for n in 0..10 {
        setup
            .schedules
            .schedule_at(&format!("r-{n}"), setup.template(n), far)
            .await
            .unwrap();
    }
    setup.make_overdue(None, Duration::ZERO).await;
    setup.wait_for_fired(10).await;
    first.stop().await;

    // Down: these come due, some long ago (well past the misfire grace).
    for n in 10..30 {
        setup
            .schedules
            .schedule_at(&format!("r-{n}"), setup.template(n), far)
            .await
            .unwrap();
    }
    setup.make_overdue(None, Duration::from_hours(2)).await;
    let restarted = setup.scheduler(fast());
    setup.wait_for_fired(30).await;
    restarted.stop().await;

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT message_id) FROM outbox")
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (30, 30),
        "each fired once, the missed ones too"
    );
}

#[tokio::test]
async fn a_recurring_schedule_fires_every_period() {
    let setup = Setup::new().await;
    setup
        .schedules
        .upsert_recurring(
            "tick",
            "* * * * * *",
            "Europe/Berlin",
            setup.template(0),
            MisfirePolicy::FireOnce,
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    let scheduler = setup.scheduler(SchedulerSettings::default());
    setup.wait_for_fired(3).await;
    scheduler.stop().await;

    let fires: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT due_at, EXTRACT(EPOCH FROM fired_at - due_at)::float8
         FROM scheduled_tasks WHERE state = 'fired' ORDER BY due_at",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    println!("recurring fires (due, delay s): {fires:?}");
    for pair in fires.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::Duration::seconds(1),
            "one per period"
        );
    }
    for (due, delay) in &fires {
        assert_eq!(due.timestamp_subsec_micros(), 0, "on the second");
        assert!(*delay <= TOLERANCE.as_secs_f64(), "late: {fires:?}");
    }
    // Always exactly one next occurrence waiting.
    assert_eq!(setup.count("pending").await, 1);
}

/// Stores a minutely schedule, fires nothing, then moves its pending occurrence an hour into
/// the past: an hour of downtime with 60 missed occurrences.
async fn after_downtime(setup: &Setup, misfire: MisfirePolicy) -> Running {
    setup
        .schedules
        .upsert_recurring(
            "nightly",
            "0 * * * * *",
            "UTC",
            setup.template(0),
            misfire,
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    setup
        .make_overdue(Some("nightly"), Duration::from_hours(1))
        .await;
    // A restart calls `upsert_recurring` again: the overdue occurrence must survive it.
    setup
        .schedules
        .upsert_recurring(
            "nightly",
            "0 * * * * *",
            "UTC",
            setup.template(0),
            misfire,
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    setup.scheduler(fast())
}

/// Seconds until the pending occurrence. Within two minutes, not one: the moved row keeps the key
/// of its original due time, the next minute, so the scheduler passes over that key (see
/// `schedule_next`) and schedules the minute after it. A real downtime has no such collision.
async fn next_pending_due(setup: &Setup) -> f64 {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM due_at - clock_timestamp())::float8
         FROM scheduled_tasks WHERE state = 'pending'",
    )
    .fetch_one(&setup.pool)
    .await
    .expect("exactly one pending occurrence")
}

#[tokio::test]
async fn after_downtime_fire_once_fires_one_for_all_missed_and_skip_fires_none() {
    let once = Setup::new().await;
    let scheduler = after_downtime(&once, MisfirePolicy::FireOnce).await;
    once.wait_for_fired(1).await;
    eventually(DEADLINE, "the next occurrence", || async {
        (once.count("pending").await == 1).then_some(())
    })
    .await;
    scheduler.stop().await;
    assert_eq!(
        once.outbox_rows().await,
        1,
        "one fire for 60 missed occurrences"
    );
    let ahead = next_pending_due(&once).await;
    assert!(
        (0.0..=120.0).contains(&ahead),
        "next occurrence in the future: {ahead}"
    );

    let skip = Setup::new().await;
    let scheduler = after_downtime(&skip, MisfirePolicy::Skip).await;
    eventually(DEADLINE, "the missed occurrence to be skipped", || async {
        (skip.count("cancelled").await == 1 && skip.count("pending").await == 1).then_some(())
    })
    .await;
    scheduler.stop().await;
    assert_eq!(
        skip.outbox_rows().await,
        0,
        "nothing fired for missed occurrences"
    );
    let ahead = next_pending_due(&skip).await;
    assert!(
        (0.0..=120.0).contains(&ahead),
        "next occurrence in the future: {ahead}"
    );
}

#[tokio::test]
async fn overlap_skip_holds_back_while_the_previous_fire_is_still_in_the_outbox() {
    let setup = Setup::new().await;
    setup
        .schedules
        .upsert_recurring(
            "export",
            "0 0 * * * *",
            "UTC",
            setup.template(0),
            MisfirePolicy::FireOnce,
            OverlapPolicy::Skip,
        )
        .await
        .unwrap();
    let scheduler = setup.scheduler(fast());
    // No relay runs: the first fire stays unpublished in the outbox.
    setup.make_overdue(Some("export"), Duration::ZERO).await;
    setup.wait_for_fired(1).await;
    eventually(DEADLINE, "the next occurrence", || async {
        (setup.count("pending").await == 1).then_some(())
    })
    .await;
    setup.make_overdue(Some("export"), Duration::ZERO).await;
    eventually(DEADLINE, "the second occurrence to be skipped", || async {
        (setup.count("cancelled").await == 1).then_some(())
    })
    .await;
    assert_eq!(setup.outbox_rows().await, 1);

    // Published now: the next occurrence fires again.
    sqlx::query("UPDATE outbox SET published_at = now()")
        .execute(&setup.pool)
        .await
        .unwrap();
    eventually(DEADLINE, "a pending third occurrence", || async {
        (setup.count("pending").await == 1).then_some(())
    })
    .await;
    setup.make_overdue(Some("export"), Duration::ZERO).await;
    setup.wait_for_fired(2).await;
    scheduler.stop().await;
    assert_eq!(setup.outbox_rows().await, 2);
}

#[tokio::test]
async fn a_repeated_fire_enqueues_the_same_task_id_and_is_recorded_once() {
    let setup = Setup::new().await;
    let id = setup
        .schedules
        .schedule_after("twice", setup.template(1), Duration::ZERO)
        .await
        .unwrap();
    let scheduler = Scheduler::new(setup.pool.clone());
    assert_eq!(scheduler.fire_due().await.unwrap(), 1);
    // As if the fire had been lost after the task reached the outbox: the row is pending again,
    // with the same due time.
    sqlx::query("UPDATE scheduled_tasks SET state = 'pending' WHERE id = $1")
        .bind(id)
        .execute(&setup.pool)
        .await
        .unwrap();
    assert_eq!(scheduler.fire_due().await.unwrap(), 1);

    let schedule = setup.schedules.get(id).await.unwrap().unwrap();
    let message_ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_all(&setup.pool)
        .await
        .unwrap();
    assert_eq!(message_ids, [derive_task_id(id, schedule.due_at)]);
}

/// An outbox row as the relay would publish it, but for what differs between two enqueues of
/// one task: `task_enqueued_at`'s value, and the trace context and correlation id of the span
/// that recorded it.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct OutboxRow {
    message_id: uuid::Uuid,
    topic: String,
    key: Option<String>,
    message_type: String,
    payload: Option<Vec<u8>>,
    headers: sqlx::types::Json<serde_json::Value>,
}

async fn outbox_in_order(pool: &PgPool) -> Vec<OutboxRow> {
    sqlx::query_as(
        "SELECT message_id, topic, key, message_type, payload,
                jsonb_set(headers - 'traceparent' - 'correlation_id',
                          '{extra,1,1}', '\"t\"') AS headers
         FROM outbox ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .expect("outbox rows")
}

/// Sets each schedule's due time `seconds` before now: the order in which they fire.
async fn due_ago(setup: &Setup, ids: &[(uuid::Uuid, f64)]) {
    for (id, seconds) in ids {
        sqlx::query(
            "UPDATE scheduled_tasks SET due_at = clock_timestamp() - make_interval(secs => $2)
             WHERE id = $1",
        )
        .bind(id)
        .bind(seconds)
        .execute(&setup.pool)
        .await
        .expect("move a due time");
    }
}

#[tokio::test]
async fn a_batch_records_the_messages_enqueue_raw_in_records_in_due_order() {
    let setup = Setup::new().await;
    let far = Utc::now() + chrono::Duration::hours(1);
    let keyed = TaskTemplate {
        ordering_key: Some("order-7".to_owned()),
        payload: serde_json::json!({ "n": 2, "text": "grüße ✓", "nested": [null, 1.5] }),
        ..setup.template(2)
    };
    let mut due = Vec::new();
    for (n, template) in [setup.template(1), keyed, setup.template(3)]
        .into_iter()
        .enumerate()
    {
        let id = setup
            .schedules
            .schedule_at(&format!("same-{n}"), template, far)
            .await
            .unwrap();
        due.push((id, 10.0 - n as f64));
    }
    due_ago(&setup, &due).await;

    assert_eq!(
        Scheduler::new(setup.pool.clone()).fire_due().await.unwrap(),
        3
    );
    let batch = outbox_in_order(&setup.pool).await;

    // The same tasks, recorded one by one with `enqueue_raw_in` as the row-by-row path does.
    sqlx::query("DELETE FROM outbox")
        .execute(&setup.pool)
        .await
        .unwrap();
    let mut tx = setup.pool.begin().await.unwrap();
    for (id, _) in &due {
        let schedule = setup.schedules.get(*id).await.unwrap().unwrap();
        let task = schedule_template(&setup.pool, *id).await;
        task_queue::TaskQueue::enqueue_raw_in(
            &mut tx,
            &task.topic,
            &task.task_name,
            derive_task_id(*id, schedule.due_at),
            task.ordering_key.as_deref(),
            &task.payload,
            Some(schedule.due_at),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let one_by_one = outbox_in_order(&setup.pool).await;

    assert_eq!(batch.len(), 3);
    assert_eq!(batch, one_by_one);
    assert_eq!(batch[1].key.as_deref(), Some("order-7"));
    assert_eq!(
        batch[0].key.as_deref(),
        Some(batch[0].message_id.to_string().as_str()),
        "without an ordering key, the task id"
    );
}

async fn schedule_template(pool: &PgPool, id: uuid::Uuid) -> TaskTemplate {
    let task: sqlx::types::Json<TaskTemplate> =
        sqlx::query_scalar("SELECT task FROM scheduled_tasks WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("template");
    task.0
}

#[tokio::test]
async fn one_offs_and_recurring_occurrences_are_recorded_in_due_order() {
    let setup = Setup::new().await;
    setup
        .schedules
        .upsert_recurring(
            "hourly",
            "0 0 * * * *",
            "UTC",
            setup.template(100),
            MisfirePolicy::FireOnce,
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    let occurrence: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM scheduled_tasks WHERE recurring = 'hourly'")
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    let far = Utc::now() + chrono::Duration::hours(1);
    let mut due = vec![(occurrence, 3.0)];
    for (n, seconds) in [(1, 4.0), (2, 2.0), (3, 1.0)] {
        let id = setup
            .schedules
            .schedule_at(&format!("one-off-{n}"), setup.template(n), far)
            .await
            .unwrap();
        due.push((id, seconds));
    }
    due_ago(&setup, &due).await;

    assert_eq!(
        Scheduler::new(setup.pool.clone()).fire_due().await.unwrap(),
        4
    );

    let recorded: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT message_id FROM outbox ORDER BY id")
        .fetch_all(&setup.pool)
        .await
        .unwrap();
    let in_due_order: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT task_id FROM scheduled_tasks WHERE state = 'fired' ORDER BY due_at",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    assert_eq!(in_due_order.len(), 4);
    assert_eq!(recorded, in_due_order);
    assert_eq!(
        setup.count("pending").await,
        1,
        "the next hourly occurrence"
    );
}

/// State, attempts and error of a schedule, and whether it is due again in the future.
async fn put_back(setup: &Setup, id: uuid::Uuid) -> (String, i32, Option<String>, bool) {
    sqlx::query_as(
        "SELECT state, attempts, last_error, due_at > clock_timestamp()
         FROM scheduled_tasks WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&setup.pool)
    .await
    .expect("schedule")
}

#[tokio::test]
async fn a_batch_the_database_refuses_fires_row_by_row_and_puts_back_only_the_bad_row() {
    let setup = Setup::new().await;
    // Stands in for any database error of one row: the batch insert fails as a whole.
    sqlx::query("ALTER TABLE outbox ADD CONSTRAINT no_poison CHECK (key <> 'poison')")
        .execute(&setup.pool)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut template = setup.template(n);
        if n == 2 {
            template.ordering_key = Some("poison".to_owned());
        }
        ids.push(
            setup
                .schedules
                .schedule_after(&format!("row-{n}"), template, Duration::ZERO)
                .await
                .unwrap(),
        );
    }

    assert_eq!(
        Scheduler::new(setup.pool.clone()).fire_due().await.unwrap(),
        5
    );

    assert_eq!(setup.count("fired").await, 4);
    assert_eq!(setup.outbox_rows().await, 4);
    let (state, attempts, error, later) = put_back(&setup, ids[2]).await;
    assert_eq!((state.as_str(), attempts, later), ("pending", 1, true));
    assert!(error.unwrap().contains("no_poison"), "the error is kept");
}

#[tokio::test]
async fn a_template_the_outbox_refuses_is_put_back_and_the_others_fire() {
    let setup = Setup::new().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut template = setup.template(n);
        if n == 1 {
            template.topic = String::new();
        }
        ids.push(
            setup
                .schedules
                .schedule_after(&format!("row-{n}"), template, Duration::ZERO)
                .await
                .unwrap(),
        );
    }

    assert_eq!(
        Scheduler::new(setup.pool.clone()).fire_due().await.unwrap(),
        3
    );

    assert_eq!(setup.count("fired").await, 2);
    assert_eq!(setup.outbox_rows().await, 2);
    let (state, attempts, error, later) = put_back(&setup, ids[1]).await;
    assert_eq!((state.as_str(), attempts, later), ("pending", 1, true));
    assert!(error.unwrap().contains("empty topic"));
}

/// Moves every fire (but `except`'s) two hours into the past, and every creation a day.
async fn age_fires_but(setup: &Setup, except: &str) {
    sqlx::query(
        "UPDATE scheduled_tasks
         SET due_at = due_at - interval '2 hours', fired_at = fired_at - interval '2 hours'
         WHERE state <> 'pending' AND dedup_key <> $1",
    )
    .bind(except)
    .execute(&setup.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE scheduled_tasks SET created_at = now() - interval '1 day'")
        .execute(&setup.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_purge_deletes_old_rows_but_a_recurring_schedule_keeps_firing_once_per_occurrence() {
    let setup = Setup::new().await;
    setup
        .schedules
        .upsert_recurring(
            "tick",
            "* * * * * *",
            "UTC",
            setup.template(0),
            MisfirePolicy::FireOnce,
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    // One-offs: fired long ago (goes), fired just now (stays), and pending, created long ago
    // and due in an hour (stays: pending rows are never deleted).
    for key in ["old-one-off", "new-one-off"] {
        setup
            .schedules
            .schedule_after(key, setup.template(1), Duration::ZERO)
            .await
            .unwrap();
    }
    setup
        .schedules
        .schedule_after(
            "pending-one-off",
            setup.template(2),
            Duration::from_hours(1),
        )
        .await
        .unwrap();
    let scheduler = setup.scheduler(SchedulerSettings::default());
    setup.wait_for_fired(5).await;
    scheduler.stop().await;

    age_fires_but(&setup, "new-one-off").await;
    let tick_fires: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM scheduled_tasks WHERE recurring = 'tick' AND state = 'fired'",
    )
    .fetch_one(&setup.pool)
    .await
    .unwrap();
    assert!(tick_fires >= 3, "{tick_fires}");

    let purged = task_scheduler::purge_schedules(&setup.pool, Duration::from_hours(1))
        .await
        .unwrap();

    // Every aged tick fire but the latest, and the aged one-off.
    assert_eq!(purged, u64::try_from(tick_fires).unwrap());
    let left: Vec<(String, String)> = sqlx::query_as(
        "SELECT coalesce(recurring, dedup_key), state::text FROM scheduled_tasks
         ORDER BY 1, 2",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [
            ("new-one-off".to_owned(), "fired".to_owned()),
            ("pending-one-off".to_owned(), "pending".to_owned()),
            ("tick".to_owned(), "fired".to_owned()),
            ("tick".to_owned(), "pending".to_owned()),
        ]
    );
    let fires_before = setup.outbox_rows().await;

    // The recurrence goes on from its pending occurrence: one fire per second, none repeated.
    let scheduler = setup.scheduler(SchedulerSettings::default());
    eventually(DEADLINE, "three more tick fires", || async {
        (setup.count("fired").await >= 5).then_some(())
    })
    .await;
    scheduler.stop().await;
    let fired_after: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT due_at FROM scheduled_tasks
         WHERE recurring = 'tick' AND state = 'fired' AND due_at > now() - interval '1 hour'
         ORDER BY due_at",
    )
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    assert!(fired_after.len() >= 3, "{fired_after:?}");
    for pair in fired_after.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "one per period"
        );
    }
    assert_eq!(
        setup.outbox_rows().await,
        fires_before + i64::try_from(fired_after.len()).unwrap(),
        "one task per fire"
    );
    let distinct_tasks: i64 = sqlx::query_scalar("SELECT count(DISTINCT message_id) FROM outbox")
        .fetch_one(&setup.pool)
        .await
        .unwrap();
    assert_eq!(distinct_tasks, setup.outbox_rows().await);
    assert_eq!(setup.count("pending").await, 2);
}

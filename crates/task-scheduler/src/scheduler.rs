//! The firing side: [`Scheduler`] claims due rows and enqueues their tasks through the outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Connection as _, PgConnection, PgPool};
use task_queue::TaskQueue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::listener;
use crate::recurrence::Recurrence;
use crate::schedules::{Due, MisfirePolicy, OverlapPolicy, insert_new, occurrence_key};
use crate::template::TaskTemplate;

/// The namespace of the task ids the scheduler derives (a UUID v5 of the schedule's id and due
/// time): fixed, so that every replica and every version derives the same id for one fire.
pub const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6173_796e_6372_6f6e_2d73_6368_6564_756c);

/// The gauges are refreshed at most this often: counting pending rows costs more than a pass.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the loop waits when the due rows it sees are all locked by another replica's firing
/// transaction, which takes milliseconds: short, since the rows may be rolled back and need it.
const LOCKED_ROWS_PAUSE: Duration = Duration::from_millis(10);

/// How the scheduler works; [`SchedulerSettings::default`] suits most services.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Due rows claimed, fired and marked per transaction.
    pub batch_size: i64,
    /// The longest the loop sleeps without looking: the fallback for a notification missed while
    /// the listener reconnects, or never sent (rows inserted with plain SQL), and the bound on
    /// how late a fire can be when another replica, which would have fired it, died.
    pub max_sleep: Duration,
    /// A row fired more than this late is a *misfire*: it came due while no scheduler ran (or
    /// all were stuck). Recurring schedules then apply their [`MisfirePolicy`].
    pub misfire_grace: Duration,
    /// The wait after a pass failed (the database is down).
    pub error_backoff: Duration,
    /// A row whose firing failed (its task could not be recorded) stays pending and is tried
    /// again this much later, doubled with every failure up to 64 times as long.
    pub row_retry_delay: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_sleep: Duration::from_secs(5),
            misfire_grace: Duration::from_mins(1),
            error_backoff: Duration::from_secs(1),
            row_retry_delay: Duration::from_secs(1),
        }
    }
}

impl SchedulerSettings {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.batch_size >= 1,
            "scheduler batch_size must be at least 1, not {}",
            self.batch_size
        );
        for (name, value) in [
            ("max_sleep", self.max_sleep),
            ("error_backoff", self.error_backoff),
            ("row_retry_delay", self.row_retry_delay),
        ] {
            anyhow::ensure!(!value.is_zero(), "scheduler {name} must not be zero");
        }
        Ok(())
    }
}

/// The firing loop. Run one per service replica; several replicas over one table fire every
/// row once between them (`FOR UPDATE SKIP LOCKED`), and each one alone fires everything.
///
/// Fires through the outbox: the service runs an `outbox::OutboxRelay`, which publishes the
/// recorded tasks to their topics.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pool: PgPool,
    settings: SchedulerSettings,
}

/// A due row, claimed, with its recurring schedule if it has one.
#[derive(Debug, sqlx::FromRow)]
struct DueRow {
    id: Uuid,
    task: Json<TaskTemplate>,
    due_at: DateTime<Utc>,
    attempts: i32,
    recurring: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    misfire_policy: Option<String>,
    catch_up_limit: Option<i32>,
    overlap_policy: Option<String>,
    /// The database's clock when the row was claimed.
    now: DateTime<Utc>,
}

impl DueRow {
    /// An occurrence of a recurring schedule that still exists: it has policies to apply and
    /// a next occurrence to schedule. A row whose schedule was deleted fires as a one-off.
    fn is_recurring(&self) -> bool {
        self.recurring.is_some() && self.cron.is_some() && self.timezone.is_some()
    }
}

/// What a pass of the loop found.
#[derive(Debug)]
struct Pass {
    /// Rows claimed: fired, skipped or failed.
    claimed: usize,
    /// The nearest pending row; `None` when nothing is pending, or when the batch was full
    /// (then the loop goes on at once, without asking).
    next: Option<NextDue>,
}

/// When the nearest pending row is due.
#[derive(Debug, Clone, Copy)]
struct NextDue {
    /// Its due time, µs since the epoch on the database's clock, for the listener to compare.
    micros: i64,
    /// How far ahead it was, on the database's clock, at `measured` (zero when overdue).
    due_in: Duration,
    /// When the answer arrived; the loop sleeps until `measured + due_in`.
    measured: Instant,
}

/// What became of a claimed row, for the metrics counted after the commit.
#[derive(Debug)]
enum Outcome {
    Fired {
        task_name: String,
        delay_seconds: f64,
    },
    Skipped {
        reason: &'static str,
    },
    Failed,
}

impl Scheduler {
    /// A scheduler with [`SchedulerSettings::default`]. `pool` is the service's pool: a pass
    /// holds one connection; the `LISTEN` session opens one of its own.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            settings: SchedulerSettings::default(),
        }
    }

    /// Replaces the settings; they are checked when [`Self::run`] starts.
    #[must_use]
    pub fn with_settings(mut self, settings: SchedulerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Fires due rows until `shutdown` is cancelled, then returns after the pass in flight.
    ///
    /// Between passes it sleeps until the nearest pending row is due (an in-memory timer, the
    /// source of its precision), at most `max_sleep`, and wakes early when a notification
    /// announces a row due before that. Database failures are logged and waited out, never
    /// returned.
    ///
    /// # Errors
    /// Only for invalid [`SchedulerSettings`].
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.settings.validate()?;
        tracing::info!(
            batch_size = self.settings.batch_size,
            "task scheduler started"
        );

        // The due time (µs since the epoch, database clock) the timer waits for; a notification
        // of an earlier row wakes the loop. `i64::MAX` during a pass: every notification then
        // counts, because the pass may have read the table before the notifying commit.
        let waiting_for = Arc::new(AtomicI64::new(i64::MAX));
        let wake = Arc::new(Notify::new());
        let background_shutdown = shutdown.child_token();
        let listener = tokio::spawn(listener::wake_on_notify(
            (*self.pool.connect_options()).clone(),
            Arc::clone(&wake),
            Arc::clone(&waiting_for),
            self.settings.error_backoff,
            background_shutdown.clone(),
        ));
        // Counting pending rows can take longer than a pass when many are scheduled ahead: a
        // task of its own, so the firing loop never waits for it.
        let gauges = tokio::spawn(measure_gauges(
            self.pool.clone(),
            self.settings.error_backoff,
            background_shutdown.clone(),
        ));
        let stop_listener = background_shutdown.drop_guard();

        while !shutdown.is_cancelled() {
            waiting_for.store(i64::MAX, Ordering::SeqCst);
            let wake_at = match self.pass().await {
                // A full batch: more rows are probably due. Go on at once.
                Ok(pass)
                    if i64::try_from(pass.claimed).unwrap_or(i64::MAX)
                        >= self.settings.batch_size =>
                {
                    continue;
                }
                // Due, yet nothing claimed: another replica holds those rows in its firing
                // transaction (or, rarely, a row came due between the two queries). Look again
                // shortly rather than spin on them until that transaction commits.
                Ok(Pass {
                    claimed: 0,
                    next: Some(next),
                }) if next.due_in.is_zero() => Instant::now() + LOCKED_ROWS_PAUSE,
                Ok(Pass {
                    next: Some(next), ..
                }) => {
                    waiting_for.store(next.micros, Ordering::SeqCst);
                    next.measured + next.due_in.min(self.settings.max_sleep)
                }
                Ok(Pass { next: None, .. }) => Instant::now() + self.settings.max_sleep,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "scheduler pass failed; retrying"
                    );
                    Instant::now() + self.settings.error_backoff
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = wake.notified() => {}
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }

        drop(stop_listener);
        if let Err(error) = listener.await {
            tracing::error!(%error, "the scheduler listener task failed");
        }
        if let Err(error) = gauges.await {
            tracing::error!(%error, "the scheduler gauge task failed");
        }
        tracing::info!("task scheduler stopped");
        Ok(())
    }

    /// One transaction: claims up to `batch_size` due rows and fires them. Returns how many
    /// rows it claimed (fired, skipped or failed). For tests and tools; [`Self::run`] calls it.
    pub async fn fire_due(&self) -> anyhow::Result<usize> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to acquire a connection to fire schedules")?;
        Ok(self.fire_batch(&mut conn).await?.len())
    }

    /// A pass: fire, and find when the next row is due, on the same connection (one pool
    /// acquisition per pass). A full batch skips the second: the loop goes on at once anyway.
    async fn pass(&self) -> anyhow::Result<Pass> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to acquire a connection to fire schedules")?;
        let claimed = self.fire_batch(&mut conn).await?.len();
        let next = if i64::try_from(claimed).unwrap_or(i64::MAX) >= self.settings.batch_size {
            None
        } else {
            next_due(&mut conn).await?
        };
        Ok(Pass { claimed, next })
    }

    async fn fire_batch(&self, conn: &mut PgConnection) -> anyhow::Result<Vec<Outcome>> {
        let mut tx = conn
            .begin()
            .await
            .context("Failed to begin a firing transaction")?;
        // Rows another replica is firing are locked: skipped here, not waited for. A row is
        // therefore fired by exactly one transaction, and whichever replica wakes first takes it.
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT s.id, s.task, s.due_at, s.attempts, s.recurring,
                    r.cron, r.timezone, r.misfire_policy, r.catch_up_limit, r.overlap_policy,
                    clock_timestamp() AS now
             FROM scheduled_tasks s
             LEFT JOIN recurring_schedules r ON r.name = s.recurring
             WHERE s.state = 'pending' AND s.due_at <= clock_timestamp()
             ORDER BY s.due_at
             LIMIT $1
             FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await
        .context("Failed to claim due schedules")?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }

        let span = tracing::info_span!("scheduler.fire", rows = rows.len());
        let mut outcomes = Vec::with_capacity(rows.len());
        async {
            // In due order: each run of one-offs in one batch, each recurring row on its own.
            // Tasks are therefore recorded in the outbox, and published, in due order, as when
            // every row went on its own.
            let mut rest = rows.as_slice();
            while let Some(first) = rest.first() {
                if first.is_recurring() {
                    outcomes.push(self.fire_row(&mut tx, first).await?);
                    rest = &rest[1..];
                } else {
                    let run = rest
                        .iter()
                        .position(DueRow::is_recurring)
                        .unwrap_or(rest.len());
                    outcomes.extend(self.fire_one_offs(&mut tx, &rest[..run]).await?);
                    rest = &rest[run..];
                }
            }
            anyhow::Ok(())
        }
        .instrument(span.clone())
        .await?;
        tx.commit()
            .instrument(span)
            .await
            .context("Failed to commit a firing transaction")?;

        for outcome in &outcomes {
            match outcome {
                Outcome::Fired {
                    task_name,
                    delay_seconds,
                } => {
                    metrics::counter!("scheduler_fired_total", "task" => task_name.clone())
                        .increment(1);
                    metrics::histogram!("scheduler_firing_delay_seconds").record(*delay_seconds);
                }
                Outcome::Skipped { reason } => {
                    metrics::counter!("scheduler_skipped_total", "reason" => *reason).increment(1);
                }
                Outcome::Failed => metrics::counter!("scheduler_failures_total").increment(1),
            }
        }
        Ok(outcomes)
    }

    /// Fires claimed one-off rows together: their tasks in one outbox insert, the rows marked
    /// fired in one update. Two statements however many rows, where firing row by row takes
    /// about six per row.
    ///
    /// One-offs have no policy to apply and no next occurrence, so nothing else differs from
    /// [`Self::fire_row`] but failure isolation: if the batch fails (a template the outbox
    /// refuses, a database error), it is rolled back to a savepoint and its rows go row by row,
    /// where the row that fails is put back and the others fire.
    async fn fire_one_offs(
        &self,
        tx: &mut PgConnection,
        rows: &[DueRow],
    ) -> anyhow::Result<Vec<Outcome>> {
        // A plain savepoint, not a nested sqlx transaction: it needs no RELEASE (the commit
        // releases it), which saves a round trip per batch on the hot path.
        sqlx::query("SAVEPOINT fire_one_offs")
            .execute(&mut *tx)
            .await
            .context("Failed to open a savepoint to fire one-off schedules")?;
        match fire_one_offs_in(tx, rows).await {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT fire_one_offs")
                    .execute(&mut *tx)
                    .await
                    .context("Failed to roll back a batch of one-off schedules")?;
                tracing::warn!(
                    rows = rows.len(),
                    error = format!("{error:#}"),
                    "cannot fire a batch of schedules at once; firing them one by one"
                );
                let mut outcomes = Vec::with_capacity(rows.len());
                for row in rows {
                    outcomes.push(self.fire_row(tx, row).await?);
                }
                Ok(outcomes)
            }
        }
    }

    /// Fires (or skips) one claimed row, and schedules a recurring schedule's next occurrence.
    /// In a savepoint: a row whose task cannot be recorded is put back with a delay instead of
    /// failing the whole batch again and again.
    async fn fire_row(&self, tx: &mut PgConnection, row: &DueRow) -> anyhow::Result<Outcome> {
        let mut savepoint = tx.begin().await?;
        match self.fire_row_in(&mut savepoint, row).await {
            Ok(outcome) => {
                savepoint.commit().await?;
                Ok(outcome)
            }
            Err(error) => {
                savepoint.rollback().await?;
                let retry_in =
                    self.settings.row_retry_delay * 2u32.pow(row.attempts.clamp(0, 6) as u32);
                tracing::error!(
                    schedule_id = %row.id,
                    error = format!("{error:#}"),
                    ?retry_in,
                    "cannot fire a schedule; it stays pending and is tried again"
                );
                sqlx::query(
                    "UPDATE scheduled_tasks
                     SET attempts = attempts + 1, last_error = $2,
                         due_at = clock_timestamp() + make_interval(secs => $3)
                     WHERE id = $1",
                )
                .bind(row.id)
                .bind(format!("{error:#}"))
                .bind(retry_in.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                Ok(Outcome::Failed)
            }
        }
    }

    async fn fire_row_in(&self, conn: &mut PgConnection, row: &DueRow) -> anyhow::Result<Outcome> {
        let late = (row.now - row.due_at)
            .to_std()
            .is_ok_and(|late| late > self.settings.misfire_grace);
        let recurring = match (&row.recurring, &row.cron, &row.timezone) {
            (Some(name), Some(cron), Some(timezone)) => {
                Some((name.as_str(), Recurrence::parse(cron, timezone)?))
            }
            _ => None,
        };
        let misfire = row
            .misfire_policy
            .as_deref()
            .map(|policy| MisfirePolicy::parse(policy, row.catch_up_limit));
        // Catching up: `Some(None)` fires this occurrence; `Some(Some(anchor))` skips it and
        // the older ones up to `anchor`, because the limit keeps only the latest missed ones.
        let catch_up = match (&recurring, misfire) {
            (Some((_, recurrence)), Some(MisfirePolicy::CatchUp { max })) if late => {
                Some(catch_up_skip_to(recurrence, row.due_at, row.now, max)?)
            }
            _ => None,
        };
        let overlap = row.overlap_policy.as_deref().map(OverlapPolicy::parse);

        let skip = match &recurring {
            Some(_) if late && misfire == Some(MisfirePolicy::Skip) => Some((
                "misfire",
                "skipped: came due while no scheduler ran (misfire policy skip)",
            )),
            // More missed occurrences after this one than the limit allows.
            Some(_) if matches!(catch_up, Some(Some(_))) => Some((
                "catch_up_limit",
                "skipped: older than the latest missed occurrences the catch-up limit allows",
            )),
            Some((name, _))
                if overlap == Some(OverlapPolicy::Skip)
                    && previous_fire_unpublished(conn, name).await? =>
            {
                Some((
                    "overlap",
                    "skipped: the previous fire is still in the outbox (overlap policy skip)",
                ))
            }
            _ => None,
        };

        let outcome = if let Some((reason, note)) = skip {
            sqlx::query("UPDATE scheduled_tasks SET state = 'cancelled', note = $2 WHERE id = $1")
                .bind(row.id)
                .bind(note)
                .execute(&mut *conn)
                .await?;
            tracing::info!(schedule_id = %row.id, due_at = %row.due_at, reason, "occurrence skipped");
            Outcome::Skipped { reason }
        } else {
            let task = &row.task.0;
            let task_id = derive_task_id(row.id, row.due_at);
            TaskQueue::enqueue_raw_in(
                conn,
                &task.topic,
                &task.task_name,
                task_id,
                task.ordering_key.as_deref(),
                &task.payload,
                Some(row.due_at),
            )
            .await?;
            let delay_seconds: f64 = sqlx::query_scalar(
                "UPDATE scheduled_tasks
                 SET state = 'fired', task_id = $2, fired_at = clock_timestamp()
                 WHERE id = $1
                 RETURNING EXTRACT(EPOCH FROM fired_at - due_at)::float8",
            )
            .bind(row.id)
            .bind(task_id)
            .fetch_one(&mut *conn)
            .await?;
            tracing::debug!(schedule_id = %row.id, %task_id, task = task.task_name, delay_seconds, "fired");
            Outcome::Fired {
                task_name: task.task_name.clone(),
                delay_seconds,
            }
        };

        if let Some((name, recurrence)) = recurring {
            // On time, or catching up: the occurrence after this one. Late under another
            // policy: the first one after now, so that the missed ones are not fired one by one.
            let after = match catch_up {
                Some(Some(anchor)) => anchor,
                None if late => row.now,
                Some(None) | None => row.due_at,
            };
            schedule_next(conn, name, &recurrence, after, &row.task.0).await?;
        }
        Ok(outcome)
    }
}

/// The batch of [`Scheduler::fire_one_offs`], inside its savepoint.
async fn fire_one_offs_in(
    conn: &mut PgConnection,
    rows: &[DueRow],
) -> anyhow::Result<Vec<Outcome>> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut task_ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let task = &row.task.0;
        let task_id = derive_task_id(row.id, row.due_at);
        messages.push(TaskQueue::raw_message(
            &task.topic,
            &task.task_name,
            task_id,
            task.ordering_key.as_deref(),
            &task.payload,
            Some(row.due_at),
        )?);
        ids.push(row.id);
        task_ids.push(task_id);
    }
    // A task id the outbox holds already (a repeated fire) is skipped, and its row is marked
    // fired all the same: its task was recorded by the earlier fire.
    TaskQueue::enqueue_raw_many_in(conn, &messages).await?;
    let fired: Vec<(Uuid, f64)> = sqlx::query_as(
        "UPDATE scheduled_tasks s
         SET state = 'fired', task_id = f.task_id, fired_at = clock_timestamp()
         FROM unnest($1::uuid[], $2::uuid[]) AS f(id, task_id)
         WHERE s.id = f.id
         RETURNING s.id, EXTRACT(EPOCH FROM s.fired_at - s.due_at)::float8",
    )
    .bind(&ids)
    .bind(&task_ids)
    .fetch_all(&mut *conn)
    .await
    .context("Failed to mark schedules fired")?;
    // Every row is locked by this transaction, so each is updated exactly once.
    anyhow::ensure!(
        fired.len() == rows.len(),
        "marked {} of {} schedules fired",
        fired.len(),
        rows.len()
    );
    let delays: HashMap<Uuid, f64> = fired.into_iter().collect();
    Ok(rows
        .iter()
        .map(|row| {
            let delay_seconds = delays.get(&row.id).copied().unwrap_or_default();
            tracing::debug!(schedule_id = %row.id, task = row.task.0.task_name, delay_seconds, "fired");
            Outcome::Fired {
                task_name: row.task.0.task_name.clone(),
                delay_seconds,
            }
        })
        .collect())
}

/// The nearest pending due time, on the database's clock (the one due times are compared
/// with), so the application host's clock does not matter. `None` when nothing is pending.
async fn next_due(conn: &mut PgConnection) -> anyhow::Result<Option<NextDue>> {
    let next: Option<(i64, f64)> = sqlx::query_as(
        "SELECT (EXTRACT(EPOCH FROM due_at) * 1000000)::bigint,
                EXTRACT(EPOCH FROM due_at - clock_timestamp())::float8
         FROM scheduled_tasks WHERE state = 'pending' ORDER BY due_at LIMIT 1",
    )
    .fetch_optional(conn)
    .await
    .context("Failed to find the next due schedule")?;
    let measured = Instant::now();
    Ok(next.map(|(micros, seconds)| NextDue {
        micros,
        due_in: Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or_default(),
        measured,
    }))
}

/// Refreshes the gauges every [`GAUGE_INTERVAL`] until `shutdown` is cancelled.
async fn measure_gauges(pool: PgPool, retry_delay: Duration, shutdown: CancellationToken) {
    loop {
        let wait = match count_pending(&pool).await {
            Ok(()) => GAUGE_INTERVAL,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot measure the scheduler gauges; retrying"
                );
                retry_delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn count_pending(pool: &PgPool) -> anyhow::Result<()> {
    let (pending, due): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE due_at <= clock_timestamp())
         FROM scheduled_tasks WHERE state = 'pending'",
    )
    .fetch_one(pool)
    .await
    .context("Failed to count pending schedules")?;
    metrics::gauge!("scheduler_pending").set(pending as f64);
    metrics::gauge!("scheduler_due_unfired").set(due as f64);
    Ok(())
}

/// The id of the task a fire enqueues: a UUID v5 of the schedule's id and its due time (µs).
/// A fire repeated after a crash, by this or another replica, enqueues the same id, which the
/// outbox refuses to record twice and the task queue's worker runs once.
pub fn derive_task_id(schedule_id: Uuid, due_at: DateTime<Utc>) -> Uuid {
    let mut name = [0u8; 24];
    name[..16].copy_from_slice(schedule_id.as_bytes());
    name[16..].copy_from_slice(&due_at.timestamp_micros().to_be_bytes());
    Uuid::new_v5(&TASK_ID_NAMESPACE, &name)
}

/// Catch-up with a limit of `max`: `None` when the missed occurrence `due_at` is among the
/// latest `max` missed ones (not after `now`) and fires; otherwise the occurrence right before
/// the first one that fires, for the scheduler to go on after it, skipping all older ones in one
/// step rather than one row each.
///
/// The walk through the missed occurrences is bounded: after a very long outage of a very
/// frequent schedule, the anchor is the furthest it got, and the next row walks on from there.
fn catch_up_skip_to(
    recurrence: &Recurrence,
    due_at: DateTime<Utc>,
    now: DateTime<Utc>,
    max: u32,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    const MAX_STEPS: usize = 100_000;
    let keep = max as usize + 1;
    let mut latest = std::collections::VecDeque::with_capacity(keep);
    latest.push_back(due_at);
    for _ in 0..MAX_STEPS {
        let next = recurrence.next_after(*latest.back().expect("never empty"))?;
        if next > now {
            break;
        }
        if latest.len() == keep {
            latest.pop_front();
        }
        latest.push_back(next);
    }
    Ok((latest.len() == keep).then(|| latest[0]))
}

/// Inserts the first occurrence after `after` that has no row yet.
///
/// An occurrence's row can exist already, and not as a pending row: a row that was rescheduled
/// (or put back after a failed fire) keeps the key of its original due time, which the next
/// occurrence may then share. Such a key is passed over for the occurrence after it; a pending
/// row of the schedule means another transaction scheduled the next occurrence, and this one has
/// nothing to do.
async fn schedule_next(
    conn: &mut PgConnection,
    name: &str,
    recurrence: &Recurrence,
    mut after: DateTime<Utc>,
    task: &TaskTemplate,
) -> anyhow::Result<()> {
    // Bounded, so that a bug cannot spin inside a firing transaction.
    for _ in 0..100 {
        let next = recurrence.next_after(after)?;
        if insert_new(
            conn,
            &occurrence_key(name, next),
            task,
            Due::At(next),
            Some(name),
        )
        .await?
        .is_some()
        {
            return Ok(());
        }
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM scheduled_tasks WHERE recurring = $1 AND state = 'pending')",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
        if pending {
            return Ok(());
        }
        after = next;
    }
    anyhow::bail!("Found no free occurrence of the recurring schedule {name} to schedule next")
}

/// Whether the task of the schedule's latest fire is still waiting in the outbox. A row gone
/// from the outbox (retention) was published long ago; one an operator dropped after the broker
/// refused it will never be, and must not hold the recurrence back.
async fn previous_fire_unpublished(conn: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM outbox
             WHERE published_at IS NULL AND dropped_at IS NULL AND message_id = (
                 SELECT task_id FROM scheduled_tasks
                 WHERE recurring = $1 AND state = 'fired'
                 ORDER BY due_at DESC LIMIT 1))",
    )
    .bind(name)
    .fetch_one(conn)
    .await
    .context("Failed to look for the previous fire in the outbox")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_depends_on_the_schedule_and_its_due_time_only() {
        let schedule = Uuid::now_v7();
        let due = DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap();
        let later = DateTime::from_timestamp_micros(1_800_000_000_123_457).unwrap();

        assert_eq!(derive_task_id(schedule, due), derive_task_id(schedule, due));
        assert_eq!(derive_task_id(schedule, due).get_version_num(), 5);
        assert_ne!(
            derive_task_id(schedule, due),
            derive_task_id(schedule, later)
        );
        assert_ne!(
            derive_task_id(schedule, due),
            derive_task_id(Uuid::now_v7(), due)
        );
    }
}

#[cfg(test)]
mod catch_up_tests {
    use super::*;

    fn day(n: u32) -> DateTime<Utc> {
        format!("2026-03-{n:02}T02:00:00Z").parse().unwrap()
    }

    #[test]
    fn within_the_limit_every_missed_occurrence_fires() {
        let nightly = Recurrence::parse("0 2 * * *", "UTC").unwrap();
        let now = day(5) + chrono::TimeDelta::hours(1);
        // Missed: the 1st to the 5th (five); a limit of 5 fires each of them.
        for missed in 1..=5 {
            assert_eq!(
                catch_up_skip_to(&nightly, day(missed), now, 5).unwrap(),
                None
            );
        }
    }

    #[test]
    fn beyond_the_limit_the_oldest_are_skipped_in_one_step() {
        let nightly = Recurrence::parse("0 2 * * *", "UTC").unwrap();
        let now = day(10) + chrono::TimeDelta::hours(1);
        // Missed: the 1st to the 10th; a limit of 3 keeps the 8th, 9th and 10th, so the
        // scheduler goes on after the 7th.
        assert_eq!(
            catch_up_skip_to(&nightly, day(1), now, 3).unwrap(),
            Some(day(7))
        );
        assert_eq!(catch_up_skip_to(&nightly, day(8), now, 3).unwrap(), None);
        assert_eq!(
            catch_up_skip_to(&nightly, day(7), now, 3).unwrap(),
            Some(day(7))
        );
    }
}

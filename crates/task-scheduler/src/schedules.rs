//! The client side: [`Schedules`], what a service calls to schedule, cancel and look.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::recurrence::Recurrence;
use crate::template::TaskTemplate;

/// The channel on which scheduling announces a due time, and every [`crate::Scheduler`] listens.
/// The payload is the due time in microseconds since the Unix epoch, so a scheduler wakes only
/// when the new row is due before the one its timer waits for.
pub const NOTIFY_CHANNEL: &str = "asyncron_scheduler";

/// Where a scheduled row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ScheduleState {
    /// Waiting for its due time (or due, and about to fire).
    Pending,
    /// Its task was recorded in the outbox, in the transaction that set this state.
    Fired,
    /// It will never fire: cancelled by a caller, or skipped by the scheduler under a misfire or
    /// overlap policy (the row's `note` says which).
    Cancelled,
}

/// What a recurring schedule does about occurrences that came due while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// The policy of every one-off: a late row fires as soon as a scheduler sees it. For a
    /// recurring schedule it behaves as [`MisfirePolicy::FireOnce`].
    FireNow,
    /// One fire for all missed occurrences, then on with the next future occurrence.
    FireOnce,
    /// No fire for missed occurrences; on with the next future occurrence.
    Skip,
    /// One fire for each missed occurrence, in due order, but for at most the latest `max` of
    /// them (older ones are skipped, with a note), then on with the next future occurrence.
    /// For a task about the period it was due for (it reads `TaskContext::scheduled_for`):
    /// after a downtime each missed night is exported once, and a long outage does not
    /// become an unbounded backlog. Usually paired with [`OverlapPolicy::Allow`], since the
    /// catch-up fires follow each other before the relay has published the previous one.
    CatchUp { max: u32 },
}

/// What a recurring schedule does when its next occurrence comes due while the previous fire
/// has not left yet.
///
/// "Running" is what the scheduler cannot see: once fired, the task belongs to the task queue,
/// whose worker may run it for minutes or retry it for hours. What the scheduler knows is its
/// own rows and the outbox in the same database, so "the previous fire is still pending" means
/// precisely: **the task of the previous fire is still in the outbox, not yet published to
/// Kafka** (the broker is down, the relay is behind or not running). Skipping then keeps an
/// outage from piling up one copy of the task per missed period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Fire every occurrence.
    Allow,
    /// Do not fire while the previous fire's task is still unpublished in the outbox.
    Skip,
}

impl MisfirePolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::FireNow => "fire_now",
            Self::FireOnce => "fire_once",
            Self::Skip => "skip",
            Self::CatchUp { .. } => "catch_up",
        }
    }

    /// The limit stored with `catch_up` (`catch_up_limit`), `None` for the others.
    pub(crate) fn catch_up_limit(self) -> Option<i32> {
        match self {
            Self::CatchUp { max } => Some(i32::try_from(max.max(1)).unwrap_or(i32::MAX)),
            _ => None,
        }
    }

    pub(crate) fn parse(text: &str, catch_up_limit: Option<i32>) -> Self {
        match (text, catch_up_limit) {
            ("skip", _) => Self::Skip,
            ("fire_now", _) => Self::FireNow,
            ("catch_up", Some(max)) => Self::CatchUp {
                max: max.unsigned_abs().max(1),
            },
            // The table's CHECK constraints allow nothing else.
            _ => Self::FireOnce,
        }
    }
}

impl OverlapPolicy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
        }
    }

    pub(crate) fn parse(text: &str) -> Self {
        if text == "skip" {
            Self::Skip
        } else {
            Self::Allow
        }
    }
}

/// One row of `scheduled_tasks`: a one-off, or one occurrence of a recurring schedule.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Schedule {
    pub id: Uuid,
    pub dedup_key: String,
    #[sqlx(json)]
    pub task: TaskTemplate,
    pub due_at: DateTime<Utc>,
    pub state: ScheduleState,
    /// The name of the recurring schedule this row is an occurrence of.
    pub recurring: Option<String>,
    /// Firing transactions that failed on this row.
    pub attempts: i32,
    pub fired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const SCHEDULE_COLUMNS: &str =
    "id, dedup_key, task, due_at, state, recurring, attempts, fired_at, created_at";

/// The client side of the scheduler: schedules, cancels, reschedules and reads.
///
/// Any process with the database can use it; the [`crate::Scheduler`] that fires may run
/// elsewhere. The `_in` forms work in the caller's transaction, so that "order placed" and
/// "cancel it in 15 minutes unless paid" commit together.
#[derive(Debug, Clone)]
pub struct Schedules {
    pool: PgPool,
}

impl Schedules {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Schedules `task` to fire at `at` (a time in the past fires at once) and returns the
    /// schedule's id. Scheduling a `dedup_key` that exists returns the existing schedule's id
    /// and changes nothing, whatever its state.
    pub async fn schedule_at(
        &self,
        dedup_key: &str,
        task: TaskTemplate,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Uuid> {
        let mut conn = self.pool.acquire().await?;
        Self::schedule_at_in(&mut conn, dedup_key, task, at).await
    }

    /// [`Self::schedule_at`] `delay` from now, measured on the database's clock (the clock every
    /// scheduler replica compares due times with).
    pub async fn schedule_after(
        &self,
        dedup_key: &str,
        task: TaskTemplate,
        delay: Duration,
    ) -> anyhow::Result<Uuid> {
        let mut conn = self.pool.acquire().await?;
        Self::schedule_after_in(&mut conn, dedup_key, task, delay).await
    }

    /// [`Self::schedule_at`] in the caller's transaction: the schedule exists if and only if it
    /// commits, and schedulers are notified on commit.
    pub async fn schedule_at_in(
        conn: &mut PgConnection,
        dedup_key: &str,
        task: TaskTemplate,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Uuid> {
        insert(conn, dedup_key, &task, Due::At(at), None).await
    }

    /// [`Self::schedule_after`] in the caller's transaction.
    pub async fn schedule_after_in(
        conn: &mut PgConnection,
        dedup_key: &str,
        task: TaskTemplate,
        delay: Duration,
    ) -> anyhow::Result<Uuid> {
        insert(conn, dedup_key, &task, Due::After(delay), None).await
    }

    /// Cancels a pending schedule; `false` if it is not pending (fired, cancelled, unknown).
    /// A schedule being fired at this moment is waited for, then reported as not pending.
    pub async fn cancel(&self, id: Uuid) -> anyhow::Result<bool> {
        let mut conn = self.pool.acquire().await?;
        Self::cancel_in(&mut conn, id).await
    }

    pub async fn cancel_in(conn: &mut PgConnection, id: Uuid) -> anyhow::Result<bool> {
        cancel_where(conn, "id = $1", id).await
    }

    /// Cancels the pending schedule with `dedup_key`; `false` if there is none.
    pub async fn cancel_by_key_in(
        conn: &mut PgConnection,
        dedup_key: &str,
    ) -> anyhow::Result<bool> {
        cancel_where(conn, "dedup_key = $1", dedup_key).await
    }

    /// Moves a pending schedule to `at`; `false` if it is not pending. The fired task's id is
    /// derived from the new due time.
    pub async fn reschedule(&self, id: Uuid, at: DateTime<Utc>) -> anyhow::Result<bool> {
        let moved = sqlx::query(
            "WITH moved AS (
                 UPDATE scheduled_tasks SET due_at = $2 WHERE id = $1 AND state = 'pending'
                 RETURNING due_at
             )
             SELECT 1 FROM moved, pg_notify($3, (EXTRACT(EPOCH FROM moved.due_at) * 1000000)::bigint::text)",
        )
        .bind(id)
        .bind(at)
        .bind(NOTIFY_CHANNEL)
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("Failed to reschedule {id}"))?;
        Ok(moved.is_some())
    }

    /// Creates or replaces the recurring schedule `name`: `task` fires at every occurrence of
    /// `cron` read in `timezone` (an IANA name such as `Europe/Berlin`; both are checked here).
    ///
    /// Idempotent, so a service can call it at every start. While the cron expression and the
    /// time zone stay the same, the pending occurrence is kept, even one that is overdue after a
    /// downtime: the misfire policy decides about it. When either changes, the pending
    /// occurrence is cancelled and the next occurrence of the new definition is scheduled.
    pub async fn upsert_recurring(
        &self,
        name: &str,
        cron: &str,
        timezone: &str,
        task: TaskTemplate,
        misfire: MisfirePolicy,
        overlap: OverlapPolicy,
    ) -> anyhow::Result<()> {
        let recurrence = Recurrence::parse(cron, timezone)?;
        let mut tx = self.pool.begin().await?;
        // Serialises concurrent upserts of the same name (two replicas starting at once).
        let previous: Option<(String, String)> = sqlx::query_as(
            "SELECT cron, timezone FROM recurring_schedules WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO recurring_schedules
                 (name, cron, timezone, task, misfire_policy, overlap_policy, catch_up_limit)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET cron = $2, timezone = $3, task = $4,
                 misfire_policy = $5, overlap_policy = $6, catch_up_limit = $7,
                 updated_at = now()",
        )
        .bind(name)
        .bind(cron)
        .bind(timezone)
        .bind(Json(&task))
        .bind(misfire.as_str())
        .bind(overlap.as_str())
        .bind(misfire.catch_up_limit())
        .execute(&mut *tx)
        .await
        .with_context(|| format!("Failed to store the recurring schedule {name}"))?;

        let unchanged =
            previous.is_some_and(|(old_cron, old_zone)| old_cron == cron && old_zone == timezone);
        if !unchanged {
            sqlx::query(
                "UPDATE scheduled_tasks SET state = 'cancelled', note = 'the recurring schedule changed'
                 WHERE recurring = $1 AND state = 'pending'",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        // Occurrences fire the template stored with the schedule, so a changed task takes effect
        // at the pending occurrence too.
        sqlx::query(
            "UPDATE scheduled_tasks SET task = $2 WHERE recurring = $1 AND state = 'pending'",
        )
        .bind(name)
        .bind(Json(&task))
        .execute(&mut *tx)
        .await?;
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM scheduled_tasks WHERE recurring = $1 AND state = 'pending')",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
        if !pending {
            let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(&mut *tx)
                .await?;
            let next = recurrence.next_after(now)?;
            insert(
                &mut tx,
                &occurrence_key(name, next),
                &task,
                Due::At(next),
                Some(name),
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(name, cron, timezone, "recurring schedule stored");
        Ok(())
    }

    pub async fn get(&self, id: Uuid) -> anyhow::Result<Option<Schedule>> {
        let query = format!("SELECT {SCHEDULE_COLUMNS} FROM scheduled_tasks WHERE id = $1");
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(query))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Up to `limit` schedules, in `state` if given, soonest due first.
    pub async fn list(
        &self,
        state: Option<ScheduleState>,
        limit: i64,
    ) -> anyhow::Result<Vec<Schedule>> {
        let query = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM scheduled_tasks
             WHERE $1::text IS NULL OR state = $1 ORDER BY due_at, id LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(query))
            .bind(state)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// The dedup key of an occurrence of a recurring schedule: inserting the next occurrence twice
/// (two replicas, a repeated fire) leaves one row.
pub(crate) fn occurrence_key(name: &str, due_at: DateTime<Utc>) -> String {
    format!(
        "{name}@{}",
        due_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

pub(crate) enum Due {
    At(DateTime<Utc>),
    After(Duration),
}

/// Inserts a pending row unless its key exists, notifies the schedulers (on commit), and returns
/// the id of the row with that key.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    dedup_key: &str,
    task: &TaskTemplate,
    due: Due,
    recurring: Option<&str>,
) -> anyhow::Result<Uuid> {
    // A savepoint keeps a failed insert from aborting the caller's transaction.
    let mut savepoint = conn.begin().await?;
    let id = match insert_new(&mut savepoint, dedup_key, task, due, recurring).await? {
        Some(id) => id,
        None => sqlx::query_scalar("SELECT id FROM scheduled_tasks WHERE dedup_key = $1")
            .bind(dedup_key)
            .fetch_one(&mut *savepoint)
            .await
            .with_context(|| format!("Failed to read the existing schedule {dedup_key}"))?,
    };
    savepoint.commit().await?;
    Ok(id)
}

/// Inserts a pending row and notifies the schedulers (on commit); `None` if the key exists.
pub(crate) async fn insert_new(
    conn: &mut PgConnection,
    dedup_key: &str,
    task: &TaskTemplate,
    due: Due,
    recurring: Option<&str>,
) -> anyhow::Result<Option<Uuid>> {
    let (at, delay_secs) = match due {
        Due::At(at) => (Some(at), None),
        Due::After(delay) => (None, Some(delay.as_secs_f64())),
    };
    sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO scheduled_tasks (id, dedup_key, task, due_at, recurring)
             VALUES ($1, $2, $3,
                     COALESCE($4, clock_timestamp() + make_interval(secs => $5)), $6)
             ON CONFLICT (dedup_key) DO NOTHING
             RETURNING id, due_at
         )
         SELECT inserted.id FROM inserted,
             pg_notify($7, (EXTRACT(EPOCH FROM inserted.due_at) * 1000000)::bigint::text)",
    )
    .bind(Uuid::now_v7())
    .bind(dedup_key)
    .bind(Json(task))
    .bind(at)
    .bind(delay_secs)
    .bind(recurring)
    .bind(NOTIFY_CHANNEL)
    .fetch_optional(conn)
    .await
    .with_context(|| format!("Failed to schedule {dedup_key}"))
}

async fn cancel_where<T>(conn: &mut PgConnection, condition: &str, value: T) -> anyhow::Result<bool>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    let query = format!(
        "UPDATE scheduled_tasks SET state = 'cancelled' WHERE {condition} AND state = 'pending'"
    );
    let cancelled = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(value)
        .execute(conn)
        .await
        .context("Failed to cancel a schedule")?
        .rows_affected();
    if cancelled > 0 {
        metrics::counter!("scheduler_cancelled_total").increment(cancelled);
    }
    Ok(cancelled > 0)
}

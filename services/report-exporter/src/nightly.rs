//! The `nightly-orders-export`: a recurring schedule (through the task scheduler) fires
//! [`StartNightlyExport`] on the service's own task queue; its handler starts an export of the
//! calendar day before the one the schedule was due on.

use anyhow::Context as _;
use chrono::Utc;
use chrono_tz::Tz;
use iterator::{JobOptions, Jobs};
use kafka::KafkaConfig;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use task_queue::{Task, TaskContext, TaskError, TaskHandler, TaskOptions, Worker};
use task_scheduler::calendar::{day_bounds, yesterday};
use task_scheduler::{MisfirePolicy, OverlapPolicy, Schedules, TaskTemplate};
use uuid::Uuid;

use crate::config::NightlyConfig;
use crate::export_job::{ExportParams, count};
use crate::exports::{self, NewExport};

/// The recurring schedule's name.
pub const NIGHTLY_SCHEDULE: &str = "nightly-orders-export";

/// Starts the export of the previous calendar day in `timezone`. Only this service's own
/// schedule fires it, with the payload it was given at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartNightlyExport {
    /// The IANA time zone whose calendar day "yesterday" means.
    pub timezone: String,
    pub recipient: String,
}

impl Task for StartNightlyExport {
    const NAME: &'static str = "StartNightlyExport";
}

/// Creates or updates the schedule; idempotent, called at every start. After a downtime each
/// missed night is exported once, up to the latest `NIGHTLY_EXPORT_CATCH_UP` of them
/// (`CatchUp`); their fires follow each other before the relay publishes them, so overlap is
/// allowed: each fire exports its own night.
pub async fn upsert_schedule(
    schedules: &Schedules,
    tasks_topic: &str,
    config: &NightlyConfig,
) -> anyhow::Result<()> {
    let task = StartNightlyExport {
        timezone: config.timezone.clone(),
        recipient: config.recipient.clone(),
    };
    schedules
        .upsert_recurring(
            NIGHTLY_SCHEDULE,
            &config.cron,
            &config.timezone,
            TaskTemplate::new(tasks_topic, &task)?,
            MisfirePolicy::CatchUp {
                max: config.catch_up,
            },
            OverlapPolicy::Allow,
        )
        .await
        .with_context(|| {
            format!(
                "Failed to store the {NIGHTLY_SCHEDULE} schedule (NIGHTLY_EXPORT_CRON `{}`, \
                 NIGHTLY_EXPORT_TIMEZONE `{}`)",
                config.cron, config.timezone
            )
        })
}

/// The worker of the service's task queue `topic`, in the consumer group `<group_prefix>.tasks`.
pub fn worker(
    pool: PgPool,
    kafka: &KafkaConfig,
    group_prefix: &str,
    topic: &str,
    jobs: Jobs,
) -> Worker {
    Worker::new(pool, kafka, format!("{group_prefix}.tasks"), topic)
        .register::<StartNightlyExport, _>(StartNightlyExports { jobs }, TaskOptions::default())
}

struct StartNightlyExports {
    jobs: Jobs,
}

impl TaskHandler<StartNightlyExport> for StartNightlyExports {
    /// The night is the day before the one the schedule was due on (`scheduled_for`), however
    /// late the task runs. The export gets a random id, and it is recorded in the task's
    /// transaction; a fire repeated for the same night finds the night's export (a unique
    /// index on the nightly range) and starts no second one.
    async fn handle(
        &self,
        task: StartNightlyExport,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let timezone: Tz = task.timezone.parse().map_err(|error| {
            TaskError::permanent(anyhow::anyhow!(
                "StartNightlyExport names an unknown time zone `{}`: {error}",
                task.timezone
            ))
        })?;
        // A task enqueued by hand (no schedule) exports the day before today.
        let day = yesterday(ctx.scheduled_for.unwrap_or_else(Utc::now), timezone);
        let (from, to) = day_bounds(day, timezone)?;
        let export = NewExport {
            // Not derived from the day: an export holds every customer's e-mail address, and a
            // guessable id is one check away from a leak. A v7 id, as for every other export:
            // time-ordered, with 74 random bits.
            export_id: Uuid::now_v7(),
            params: ExportParams {
                from,
                to,
                status: None,
            },
            recipient: task.recipient,
            requested_by: NIGHTLY_SCHEDULE.to_owned(),
            options: JobOptions::default(),
        };
        let total = count(ctx.conn, &export.params).await?;
        let started = exports::start_in(ctx.conn, &self.jobs, &export, Some(total)).await?;
        tracing::info!(export_id = %export.export_id, %day, started, "nightly export");
        Ok(())
    }
}

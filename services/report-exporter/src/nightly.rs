//! The `nightly-orders-export`: a recurring schedule (through the task scheduler) fires
//! [`StartNightlyExport`] on the service's own task queue; its handler starts an export of the
//! previous calendar day.

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

/// Creates or updates the schedule; idempotent, called at every start. A missed night is
/// caught up once (`fire_once`), and a night whose export has not even been started yet does
/// not get a second one (`skip`).
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
            MisfirePolicy::FireOnce,
            OverlapPolicy::Skip,
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
    /// The export's id is derived from the day, and it is recorded in the task's transaction:
    /// a fire repeated for the same night starts no second export.
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
        let day = yesterday(Utc::now(), timezone);
        let (from, to) = day_bounds(day, timezone)?;
        let export = NewExport {
            export_id: Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("asyncron:{NIGHTLY_SCHEDULE}:{day}:{timezone}").as_bytes(),
            ),
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

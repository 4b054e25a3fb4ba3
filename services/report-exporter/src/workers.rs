//! The worker of the service's own task queue and its handlers: [`StartNightlyExport`] starts
//! the nightly export; `lib.rs` adds retention's handler ([`crate::retention`]).

use chrono::Utc;
use chrono_tz::Tz;
use iterator::{JobOptions, Jobs};
use kafka::KafkaConfig;
use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler, TaskOptions, Worker};
use task_scheduler::calendar::{day_bounds, yesterday};
use uuid::Uuid;

use crate::export_job::{ExportParams, count};
use crate::nightly::NIGHTLY_SCHEDULE;
use crate::store::{self, NewExport};
use crate::tasks::StartNightlyExport;

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
        let started = store::start_in(ctx.conn, &self.jobs, &export, Some(total)).await?;
        tracing::info!(export_id = %export.export_id, %day, started, "nightly export");
        Ok(())
    }
}

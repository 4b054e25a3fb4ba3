//! The `nightly-orders-export`: a recurring schedule (through the task scheduler) fires
//! [`StartNightlyExport`] on the service's own task queue; its handler (in [`crate::workers`])
//! starts an export of the calendar day before the one the schedule was due on.

use anyhow::Context as _;
use task_scheduler::{MisfirePolicy, OverlapPolicy, Schedules, TaskTemplate};

use crate::config::NightlyConfig;
use crate::tasks::StartNightlyExport;

/// The recurring schedule's name.
pub const NIGHTLY_SCHEDULE: &str = "nightly-orders-export";

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

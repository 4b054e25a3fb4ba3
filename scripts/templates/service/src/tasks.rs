//! The task types of `{{service}}.tasks.v1`, the service's own queue. Write their contract in
//! `docs/contracts/{{service}}.tasks.v1.md`.

use serde::{Deserialize, Serialize};
use task_queue::Task;

/// The name of the recurring schedule that fires [`SummarizeItems`] (`{{ENV}}_SUMMARY_CRON`).
pub const SUMMARY_SCHEDULE: &str = "summarize-items";

/// Counts the items and records the count in `item_summaries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SummarizeItems {}

impl Task for SummarizeItems {
    const NAME: &'static str = "SummarizeItems";
}

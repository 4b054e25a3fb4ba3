//! The task types report-exporter defines: [`SendExportReady`], which it enqueues on
//! notifications' task queue, `notifications.tasks.v1` (contract:
//! `docs/contracts/notifications.tasks.v1.md`), and [`StartNightlyExport`], which its own
//! schedule fires on its own queue ([`crate::workers`] runs it). `SendExportReady` is declared
//! here, not shared with notifications: services share the contract and its example files,
//! which both sides' tests read, never code.

use serde::{Deserialize, Serialize};
use task_queue::Task;
use uuid::Uuid;

/// The queue's main topic, fixed by the contract.
pub const NOTIFICATIONS_TASKS_TOPIC: &str = "notifications.tasks.v1";

/// Tells the requester that an export completed and where to download it. Enqueued in the
/// transaction that completes the export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendExportReady {
    pub export_id: Uuid,
    pub download_url: String,
    pub recipient: String,
}

impl Task for SendExportReady {
    const NAME: &'static str = "SendExportReady";

    /// One notice per export, however often the completion is retried: UUID v5 of the export
    /// id and the task type (the contract's rule).
    fn task_id(&self) -> Option<Uuid> {
        Some(Uuid::new_v5(&self.export_id, Self::NAME.as_bytes()))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn contract_example() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/contracts/notifications.tasks.v1/send-export-ready.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("the contract example"))
            .expect("JSON")
    }

    #[test]
    fn the_task_has_exactly_the_fields_of_the_contract_example() {
        let example = contract_example();
        let task: SendExportReady = serde_json::from_value(example.clone()).expect("decodes");
        assert_eq!(serde_json::to_value(&task).unwrap(), example);
    }

    #[test]
    fn the_task_id_follows_the_contract() {
        let task: SendExportReady = serde_json::from_value(contract_example()).unwrap();
        assert_eq!(
            task.task_id(),
            Some("8edd8516-2a3f-5d36-8af6-3598888da862".parse().unwrap())
        );
    }
}

//! [`TaskTemplate`]: what a schedule fires, stored as JSON until it is due.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// A task for a task-queue topic, type-erased so that schedules of every task type fit one
/// table. When the schedule fires, the scheduler enqueues it with
/// `task_queue::TaskQueue::enqueue_raw_in`, or in a batch with `raw_message` and
/// `enqueue_raw_many_in`, which record the same message: the worker of `topic` sees exactly the
/// message a typed `enqueue_in` would have produced.
///
/// The task's own `Task::task_id` is not kept: a fired task's id is derived from the schedule
/// (see the crate documentation), which is what deduplicates a repeated fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTemplate {
    /// The task queue's main topic, e.g. `orders.tasks`.
    pub topic: String,
    /// `Task::NAME`, the `message_type` the worker dispatches by.
    pub task_name: String,
    /// The task as JSON.
    pub payload: serde_json::Value,
    /// `Task::ordering_key`; the task id is the Kafka key without one.
    pub ordering_key: Option<String>,
}

impl TaskTemplate {
    pub fn new<T: task_queue::Task>(topic: impl Into<String>, task: &T) -> anyhow::Result<Self> {
        Ok(Self {
            topic: topic.into(),
            task_name: T::NAME.to_owned(),
            payload: serde_json::to_value(task)
                .with_context(|| format!("Failed to serialise a {} task", T::NAME))?,
            ordering_key: task.ordering_key(),
        })
    }
}

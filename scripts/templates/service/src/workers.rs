//! The task-queue worker of `{{service}}.tasks.v1` and the handlers of its tasks.

use kafka::KafkaConfig;
use sqlx::PgPool;
use task_queue::{TaskContext, TaskError, TaskHandler, TaskOptions, Worker};

use crate::config::Config;
use crate::store;
use crate::tasks::SummarizeItems;

/// A worker for `config.tasks_topic` with a handler per task type. A failing task is retried on
/// the queue's retry topics (1 s, 10 s, 60 s), then kept in its dead-letter topic.
pub fn worker(pool: PgPool, kafka: &KafkaConfig, config: &Config) -> Worker {
    Worker::new(
        pool,
        kafka,
        config.consumer_group_prefix.clone(),
        config.tasks_topic.clone(),
    )
    .register::<SummarizeItems, _>(Summarize, TaskOptions::default())
}

/// The handler of [`SummarizeItems`].
#[derive(Debug, Clone)]
struct Summarize;

impl TaskHandler<SummarizeItems> for Summarize {
    /// Writes through `ctx.conn`, the transaction in which the worker marks the task done: the
    /// summary exists if and only if the task counts as done.
    async fn handle(
        &self,
        _task: SummarizeItems,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let count = store::count(ctx.conn).await.map_err(TaskError::retryable)?;
        store::record_summary(ctx.conn, ctx.task_id, count)
            .await
            .map_err(TaskError::retryable)?;
        tracing::info!(task_id = %ctx.task_id, count, "items summarized");
        Ok(())
    }
}

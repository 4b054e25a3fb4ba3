//! The runner handles jobs of many types from one topic, so it holds them behind a
//! type-erased trait that speaks JSON for parameters and cursors.

use std::any::Any;

use anyhow::Context as _;
use futures::future::BoxFuture;
use serde::Deserialize as _;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::job::{CompletedJob, Job, Shard};

/// A loaded chunk, its items still typed (behind `Any`) for the job's `process`.
pub(crate) struct Loaded {
    items: Box<dyn Any + Send>,
    pub rows: i32,
    /// `None`: the shard is exhausted with this chunk; its stored cursor stays where it was.
    pub next: Option<Value>,
}

/// The coordinates of one step, as the runner read them from the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepAt<'a> {
    pub job_id: Uuid,
    pub shard: i32,
    pub shards: i32,
    pub step: i64,
    pub params: &'a Value,
    pub cursor: Option<&'a Value>,
    pub limit: usize,
}

pub(crate) trait ErasedJob: Send + Sync {
    /// Loads the chunk after the cursor. Outside the step's transaction (the job may read
    /// through the same pool): a read never waits for a connection its own step holds.
    fn load<'a>(&'a self, at: StepAt<'a>) -> BoxFuture<'a, anyhow::Result<Loaded>>;

    /// Processes a chunk that [`Self::load`] returned for the same step, through `conn`.
    fn process<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        at: StepAt<'a>,
        chunk: Loaded,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    fn complete<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        job_id: Uuid,
        processed: i64,
        shards: i32,
        params: &'a Value,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

fn shard<'a, P>(at: &StepAt<'_>, params: &'a P) -> Shard<'a, P> {
    Shard {
        job_id: at.job_id,
        index: at.shard as u32,
        count: at.shards as u32,
        step: at.step,
        params,
    }
}

impl<J: Job> ErasedJob for J {
    fn load<'a>(&'a self, at: StepAt<'a>) -> BoxFuture<'a, anyhow::Result<Loaded>> {
        Box::pin(async move {
            let params = decode_params::<J>(at.params)?;
            let cursor = at
                .cursor
                .map(J::Cursor::deserialize)
                .transpose()
                .with_context(|| format!("Failed to decode a stored {} cursor", J::KIND))?;
            let chunk = self
                .next_chunk(&shard(&at, &params), cursor.as_ref(), at.limit)
                .await
                .context("Failed to load the next chunk")?;
            let rows = i32::try_from(chunk.items.len())
                .context("A chunk cannot hold more than i32::MAX items")?;
            let next = chunk
                .next
                .map(|cursor| serde_json::to_value(&cursor))
                .transpose()
                .with_context(|| format!("Failed to encode a {} cursor", J::KIND))?;
            Ok(Loaded {
                items: Box::new(chunk.items),
                rows,
                next,
            })
        })
    }

    fn process<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        at: StepAt<'a>,
        chunk: Loaded,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let params = decode_params::<J>(at.params)?;
            let items = chunk
                .items
                .downcast::<Vec<J::Item>>()
                .map_err(|_| anyhow::anyhow!("a chunk of another job type"))?;
            Job::process(self, conn, &shard(&at, &params), *items)
                .await
                .context("Failed to process the chunk")
        })
    }

    fn complete<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        job_id: Uuid,
        processed: i64,
        shards: i32,
        params: &'a Value,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let params = decode_params::<J>(params)?;
            let job = CompletedJob {
                job_id,
                processed,
                shards: shards as u32,
                params: &params,
            };
            self.on_complete(conn, &job)
                .await
                .context("The completion hook failed")
        })
    }
}

fn decode_params<J: Job>(value: &Value) -> anyhow::Result<J::Params> {
    J::Params::deserialize(value).with_context(|| {
        format!(
            "Failed to decode the stored parameters of a {} job",
            J::KIND
        )
    })
}

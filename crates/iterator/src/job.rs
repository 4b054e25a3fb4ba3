//! What a service writes: a [`Job`] that loads chunks after a cursor and processes them.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use uuid::Uuid;

/// A long-running job, run as a chain of chunks.
///
/// The runner calls [`Job::next_chunk`] with the shard's durable cursor (outside any
/// transaction), then [`Job::process`] with the chunk inside the transaction that also stores
/// the new cursor and marks the step done. Whatever `process` writes through `conn` therefore happens once per
/// chunk, even when a step is delivered again or a worker dies half-way. Effects outside the
/// database (a file, say) must be made repeatable: see `services/report-exporter` for a file
/// that is truncated back to its committed length before each chunk.
///
/// ```
/// use iterator::{Chunk, Job, Shard};
/// use sqlx::PgConnection;
///
/// /// Copies `numbers` (ids 1..=n) into `squares`, in chunks.
/// struct Squares { pool: sqlx::PgPool }
///
/// impl Job for Squares {
///     const KIND: &'static str = "squares";
///     type Params = ();
///     type Cursor = i64;   // the last id processed
///     type Item = i64;
///
///     async fn next_chunk(&self, _: &Shard<'_, ()>, after: Option<&i64>, limit: usize)
///         -> anyhow::Result<Chunk<i64, i64>> {
///         let ids: Vec<i64> = sqlx::query_scalar(
///             "SELECT id FROM numbers WHERE id > $1 ORDER BY id LIMIT $2")
///             .bind(after.copied().unwrap_or(0))
///             .bind(limit as i64)
///             .fetch_all(&self.pool).await?;
///         Ok(Chunk::after_last(ids, limit, |id| *id))
///     }
///
///     async fn process(&self, conn: &mut PgConnection, _: &Shard<'_, ()>, ids: Vec<i64>)
///         -> anyhow::Result<()> {
///         sqlx::query("INSERT INTO squares SELECT id, id * id FROM unnest($1::bigint[]) AS id")
///             .bind(&ids).execute(conn).await?;
///         Ok(())
///     }
/// }
/// ```
pub trait Job: Send + Sync + 'static {
    /// Names the job type in the `jobs` table; the runner dispatches by it.
    const KIND: &'static str;
    /// What one job of this type is about (a date range, a filter), stored as JSON with it.
    type Params: Serialize + DeserializeOwned + Send + Sync;
    /// The position after the last processed item, stored as JSON after every chunk. Make it
    /// a key the source is ordered by (keyset pagination), never an offset: rows inserted or
    /// deleted before the cursor must not shift it.
    type Cursor: Serialize + DeserializeOwned + Send + Sync;
    type Item: Send + 'static;

    /// Loads up to `limit` items of `shard` after `after` (`None`: from the start of the
    /// shard), in a stable order.
    fn next_chunk(
        &self,
        shard: &Shard<'_, Self::Params>,
        after: Option<&Self::Cursor>,
        limit: usize,
    ) -> impl Future<Output = anyhow::Result<Chunk<Self::Item, Self::Cursor>>> + Send;

    /// Processes one chunk, writing its output through `conn`: the open transaction that also
    /// records the step and the new cursor.
    fn process(
        &self,
        conn: &mut PgConnection,
        shard: &Shard<'_, Self::Params>,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// How many items the whole job will process, if it can tell cheaply; asked once, when the
    /// job starts, for progress and ETA.
    fn total(
        &self,
        params: &Self::Params,
    ) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send {
        let _ = params;
        async { Ok(None) }
    }

    /// The completion hook: runs once, in the transaction that marks the job `completed`
    /// (after the last chunk of the last shard). Enqueue a notification here through the
    /// outbox, and it is sent if and only if the job completed.
    fn on_complete(
        &self,
        conn: &mut PgConnection,
        job: &CompletedJob<'_, Self::Params>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = (conn, job);
        async { Ok(()) }
    }
}

/// Which part of a job a chunk belongs to. A job started with `shards: n` is iterated as `n`
/// independent chains, shard `0..n`, each with its own cursor: the job splits its key range
/// by `index` and `count` (e.g. a date range into `count` equal parts).
#[derive(Debug, Clone, Copy)]
pub struct Shard<'a, P> {
    pub job_id: Uuid,
    pub index: u32,
    pub count: u32,
    /// The step within this shard's chain, from 0.
    pub step: i64,
    pub params: &'a P,
}

/// A loaded chunk and where the shard goes on after it.
#[derive(Debug, Clone)]
pub struct Chunk<I, C> {
    pub items: Vec<I>,
    /// The cursor after the last item; `None` when the shard is exhausted with this chunk.
    pub next: Option<C>,
}

impl<I, C> Chunk<I, C> {
    /// The usual keyset case: a chunk shorter than `limit` was the last one; otherwise the
    /// cursor is the key of its last item.
    pub fn after_last(items: Vec<I>, limit: usize, key: impl FnOnce(&I) -> C) -> Self {
        let next = if items.len() < limit {
            None
        } else {
            items.last().map(key)
        };
        Self { items, next }
    }
}

/// What the completion hook learns about the job.
#[derive(Debug, Clone, Copy)]
pub struct CompletedJob<'a, P> {
    pub job_id: Uuid,
    /// Items processed over all shards.
    pub processed: i64,
    pub shards: u32,
    pub params: &'a P,
}

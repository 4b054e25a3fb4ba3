//! The driver: a consumer of the iterations topic that runs one chunk per step message.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use dead_letters::{DeadLetterStore, SetAside};
use kafka::{
    ConsumerBuilder, Failure, FailurePolicy, Handler, HandlerError, KafkaConfig, Message,
    RetryPolicy, RunningConsumer, TopicSpec,
};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::erased::{ErasedJob, Loaded, StepAt};
use crate::job::Job;
use crate::jobs::{JobState, StepMessage};

/// The iterations topic of `service`: `<service>.iterations.v1`, with
/// [`iterations_topic_named`]'s settings.
pub fn iterations_topic(service: &str) -> TopicSpec {
    iterations_topic_named(format!("{service}.iterations.v1"))
}

/// An iterations topic: six partitions, keyed by job id. Internal to the service (its own
/// replicas produce and consume it); kept for a day, which only matters for steps that wait
/// longer than that for a stopped service.
pub fn iterations_topic_named(name: impl Into<String>) -> TopicSpec {
    TopicSpec::new(name)
        .partitions(6)
        .config("retention.ms", "86400000")
}

/// Runs the steps of the registered job types. Start one per replica, in the same consumer
/// group: the jobs' steps spread over the replicas by partition.
#[must_use]
pub struct JobRunner {
    pool: PgPool,
    kafka: KafkaConfig,
    group_id: String,
    topic: TopicSpec,
    jobs: HashMap<&'static str, Arc<dyn ErasedJob>>,
    retry: RetryPolicy,
    instance: String,
    continue_for: Duration,
    dead_letters: Option<DeadLetterStore>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("group_id", &self.group_id)
            .field("topic", &self.topic.name)
            .field("kinds", &self.jobs.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .field("instance", &self.instance)
            .field("continue_for", &self.continue_for)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    /// A runner in consumer group `group_id`, consuming (and provisioning) `topic`, usually
    /// [`iterations_topic`].
    pub fn new(
        pool: PgPool,
        kafka: &KafkaConfig,
        group_id: impl Into<String>,
        topic: TopicSpec,
    ) -> Self {
        Self {
            pool,
            kafka: kafka.clone(),
            group_id: group_id.into(),
            topic,
            jobs: HashMap::new(),
            // A chunk that fails is retried in place (its job's later steps wait, other jobs
            // go on), then the job is marked failed.
            // Eight attempts over about 20 s: a database or broker restart is survived; a
            // chunk that cannot succeed fails its job in reasonable time.
            retry: RetryPolicy {
                max_attempts: 8,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
            },
            instance: format!("{}-{}", std::process::id(), Uuid::new_v4().simple()),
            continue_for: Duration::from_secs(1),
            dead_letters: None,
        }
    }

    /// Sets aside, in `store`, the step messages that belong to no job: they do not decode (the
    /// topic is the runner's own, so only a bug or a stray producer writes those). A step of a
    /// job that fails for good fails its job, as before; `resume` retries it. Without a store
    /// such a message is logged and skipped. The consumer's name there is the group id.
    pub fn dead_letters(mut self, store: &DeadLetterStore) -> Self {
        self.dead_letters = Some(store.clone());
        self
    }

    /// Handles jobs of type `J`. Every replica must register the same types: a step of an
    /// unregistered type fails its job.
    pub fn register<J: Job>(mut self, job: J) -> Self {
        self.jobs.insert(J::KIND, Arc::new(job));
        self
    }

    /// Attempts per chunk before the job is marked `failed` (default: 8, backoff from 200 ms
    /// doubling up to 10 s: about 20 s in all).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long a runner that took a step goes on with the steps after it, before it leaves
    /// the chain to the step message on the topic (default 1 s; zero: every step through
    /// Kafka). Each step still records the next one in the outbox, in its transaction, so a
    /// crash at any point loses nothing; going on only saves the hop through the outbox relay
    /// and the broker (a few ms per step). Throttled jobs always go through Kafka.
    pub fn continue_for(mut self, duration: Duration) -> Self {
        self.continue_for = duration;
        self
    }

    /// The name recorded in `job_steps.processed_by` (default: process id and a random
    /// suffix, distinct for every runner).
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = name.into();
        self
    }

    /// Joins the group and runs steps until `shutdown`.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<RunningConsumer> {
        let topic = self.topic.name.clone();
        tracing::info!(group = %self.group_id, %topic, instance = %self.instance, "starting the job runner");
        let handler = Arc::new(StepHandler {
            pool: self.pool.clone(),
            jobs: self.jobs,
            topic,
            instance: self.instance,
            shutdown: shutdown.clone(),
            continue_for: self.continue_for,
        });
        let set_aside = self
            .dead_letters
            .map(|store| store.set_aside(&self.group_id, handler.clone()));
        ConsumerBuilder::new(&self.kafka, self.group_id)
            .provisioned_topic(self.topic)
            .retry(self.retry)
            .on_failure(FailJob {
                pool: self.pool,
                set_aside,
            })
            .start(handler, shutdown)
            .await
    }
}

/// What a taken step did.
struct Taken {
    rows: i32,
    /// The shard has more to do and the job is still running.
    chain_goes_on: bool,
    /// The next step's chunk, loaded while this step committed.
    next: Option<Prefetched>,
}

/// A chunk loaded ahead for `step`, after the cursor `after`.
struct Prefetched {
    step: i64,
    after: Value,
    chunk: Loaded,
}

struct StepHandler {
    pool: PgPool,
    jobs: HashMap<&'static str, Arc<dyn ErasedJob>>,
    topic: String,
    instance: String,
    shutdown: CancellationToken,
    continue_for: Duration,
}

/// A shard as the runner reads it before a step.
#[derive(sqlx::FromRow)]
struct ShardRow {
    kind: String,
    state: String,
    params: Value,
    chunk_size: i32,
    max_rows_per_sec: Option<i32>,
    shards: i32,
    cursor: Option<Value>,
    next_step: i64,
    done: bool,
    shard_processed: i64,
    throttle_origin: DateTime<Utc>,
}

impl ShardRow {
    /// Why this step is not to be taken, if it is not.
    fn skip_reason(&self, step: i64) -> anyhow::Result<Option<&'static str>> {
        let state: JobState = self.state.parse()?;
        Ok(if !state.is_active() {
            Some("inactive")
        } else if self.done {
            Some("shard_done")
        } else if self.next_step != step {
            // A redelivery of a step already taken, or a step from before a pause that the
            // resume recorded again.
            Some("stale")
        } else {
            None
        })
    }

    /// When the throttle lets the next chunk start: once the shard's processed rows plus a
    /// whole chunk fit into its share of the rate since `throttle_origin` (the start, or the
    /// last resume). Reserving the chunk before it runs keeps the rows processed by any moment
    /// within the limit counted from the origin.
    fn throttled_until(&self) -> Option<DateTime<Utc>> {
        let rate = f64::from(self.max_rows_per_sec?) / f64::from(self.shards);
        let budget = (self.shard_processed as f64 + f64::from(self.chunk_size)) / rate;
        let until = self.throttle_origin + Duration::from_secs_f64(budget);
        (until > Utc::now()).then_some(until)
    }
}

/// The shard and its job, as [`ShardRow`]; `$suffix` may add a locking clause.
macro_rules! shard_query {
    ($suffix:literal) => {
        concat!(
            "SELECT j.kind, j.state, j.params, j.chunk_size, j.max_rows_per_sec, j.shards,
                    s.cursor, s.next_step, s.done, s.processed AS shard_processed, s.throttle_origin
             FROM job_shards s JOIN jobs j ON j.job_id = s.job_id
             WHERE s.job_id = $1 AND s.shard = $2",
            $suffix
        )
    };
}

impl Handler for StepHandler {
    /// Takes the step, then, while the chain may go on (see [`JobRunner::continue_for`]), the
    /// steps after it.
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let first: StepMessage = message.json()?;
        let began = Instant::now();
        let mut step = first.clone();
        let mut prefetched = None;
        loop {
            let span = tracing::info_span!(
                "iterator.step",
                job_id = %step.job_id,
                shard = step.shard,
                step = step.step,
                continued = step.step != first.step,
                kind = tracing::field::Empty,
            );
            let go_on = match self
                .handle_step(&step, prefetched.take())
                .instrument(span)
                .await
            {
                Ok(Some(next)) => {
                    prefetched = next;
                    true
                }
                Ok(None) => false,
                // A continued step failed: its own step message, recorded by the step before
                // it, is on the topic and takes it from here, with the usual retries.
                Err(error) if step.step != first.step => {
                    tracing::warn!(job_id = %step.job_id, step = step.step, error = %error, "a continued step failed; its step message will retry it");
                    false
                }
                Err(error) => return Err(error),
            };
            if !go_on || began.elapsed() >= self.continue_for || self.shutdown.is_cancelled() {
                return Ok(());
            }
            step = StepMessage {
                step: step.step + 1,
                // The runner reads the cursor from the database; the message's copy is for
                // people reading the topic.
                cursor: None,
                ..step
            };
        }
    }
}

impl StepHandler {
    /// Takes one step. `Some` when the next step of the chain may follow at once, with its
    /// chunk if it could be loaded while this step committed.
    async fn handle_step(
        &self,
        step: &StepMessage,
        prefetched: Option<Prefetched>,
    ) -> Result<Option<Option<Prefetched>>, HandlerError> {
        // A first look without locks: most skips and the throttle wait need no transaction.
        let shard: Option<ShardRow> = sqlx::query_as(shard_query!(""))
            .bind(step.job_id)
            .bind(step.shard)
            .fetch_optional(&self.pool)
            .await
            .context("Failed to read the job")?;
        let Some(shard) = shard else {
            tracing::warn!("step of a job that does not exist (deleted?); ignored");
            skipped("unknown_job");
            return Ok(None);
        };
        tracing::Span::current().record("kind", shard.kind.as_str());
        if let Some(reason) = shard.skip_reason(step.step)? {
            tracing::debug!(reason, "step not taken");
            skipped(reason);
            return Ok(None);
        }
        let job = self.jobs.get(shard.kind.as_str()).cloned().ok_or_else(|| {
            HandlerError::permanent(anyhow::anyhow!(
                "no job of kind {} is registered with this runner",
                shard.kind
            ))
        })?;
        if let Some(until) = shard.throttled_until() {
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            metrics::histogram!("iterator_throttle_wait_seconds", "kind" => shard.kind.clone())
                .record(wait.as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // The step is delivered again after the restart; the consumer runtime treats
                // an error while stopping as abandoned, not failed.
                () = self.shutdown.cancelled() => {
                    return Err(HandlerError::retryable(anyhow::anyhow!("stopped while throttled")));
                }
            }
        }
        let started = Instant::now();
        match self.take_step(step, &shard, job.as_ref(), prefetched).await {
            Ok(Some(taken)) => {
                let labels = [("kind", shard.kind.clone())];
                metrics::counter!("iterator_steps_total", &labels).increment(1);
                metrics::counter!("iterator_rows_total", &labels)
                    .increment(u64::from(taken.rows.unsigned_abs()));
                metrics::histogram!("iterator_step_duration_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                // A throttled job hands every step to Kafka: its waits must not pile up in
                // one handler (a rebalance waits for a running handler).
                Ok((taken.chain_goes_on && shard.max_rows_per_sec.is_none()).then_some(taken.next))
            }
            Ok(None) => Ok(None),
            Err(error) => {
                metrics::counter!("iterator_step_failures_total", "kind" => shard.kind.clone())
                    .increment(1);
                // Visible in the job's status while the runtime retries.
                if let Err(recording) = record_attempt(&self.pool, step.job_id, &error).await {
                    tracing::error!(
                        error = format!("{recording:#}"),
                        "could not record a failed attempt"
                    );
                }
                // Classified by what it carries: a database that cannot be reached is waited out
                // without spending the chunk's attempts, data it refuses fails the job at once.
                Err(HandlerError::from(error))
            }
        }
    }

    /// Loads the step's chunk (or takes the one loaded ahead for it), then in one transaction
    /// processes it, records it, moves the cursor and records the next step. `None` when, under
    /// the lock, the step turned out not to be due any more (another member took it meanwhile).
    ///
    /// When the chain may go on in this handler (an unthrottled job, more to do), the next
    /// chunk is loaded while this step's transaction runs: reading and writing overlap. Loading
    /// it early is safe for the same reason loading before the transaction is: it is used only
    /// if, under the lock, the next step is still due after exactly the cursor it was loaded
    /// after.
    async fn take_step(
        &self,
        step: &StepMessage,
        peeked: &ShardRow,
        job: &dyn ErasedJob,
        prefetched: Option<Prefetched>,
    ) -> anyhow::Result<Option<Taken>> {
        let at = StepAt {
            job_id: step.job_id,
            shard: step.shard,
            shards: peeked.shards,
            step: step.step,
            params: &peeked.params,
            cursor: peeked.cursor.as_ref(),
            limit: peeked.chunk_size as usize,
        };
        let outcome = match prefetched {
            Some(chunk)
                if chunk.step == step.step && Some(&chunk.after) == peeked.cursor.as_ref() =>
            {
                chunk.chunk
            }
            _ => job.load(at).await?,
        };
        let Some(after) = outcome
            .next
            .clone()
            .filter(|_| peeked.max_rows_per_sec.is_none() && !self.continue_for.is_zero())
        else {
            return self.commit_step(step, at, job, outcome).await;
        };
        let ahead = StepAt {
            step: step.step + 1,
            cursor: Some(&after),
            ..at
        };
        let (taken, next) = tokio::join!(self.commit_step(step, at, job, outcome), job.load(ahead));
        let next = match next {
            Ok(chunk) => Some(Prefetched {
                step: step.step + 1,
                after: after.clone(),
                chunk,
            }),
            // The next step loads it again and meets the error itself, with its retries.
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "loading ahead failed");
                None
            }
        };
        Ok(taken?.map(|taken| Taken { next, ..taken }))
    }

    /// The transaction of a step, for a chunk loaded after `at`'s cursor.
    async fn commit_step(
        &self,
        step: &StepMessage,
        at: StepAt<'_>,
        job: &dyn ErasedJob,
        outcome: Loaded,
    ) -> anyhow::Result<Option<Taken>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("Failed to begin a transaction")?;
        // The shard's lock makes a step run at most once at a time; the job's row is only
        // locked by the updates below, so the shards of one job run in parallel. The chunk was
        // loaded after the cursor peeked before; the cursor only moves with `next_step`, so a
        // step that is still due under the lock still has that cursor.
        let shard: ShardRow = sqlx::query_as(shard_query!(" FOR UPDATE OF s"))
            .bind(step.job_id)
            .bind(step.shard)
            .fetch_one(&mut *tx)
            .await
            .context("Failed to lock the shard")?;
        if let Some(reason) = shard.skip_reason(step.step)? {
            skipped(reason);
            return Ok(None);
        }
        mark_running(&mut tx, step.job_id).await?;
        let rows = outcome.rows;
        let next = outcome.next.clone();
        job.process(&mut tx, at, outcome).await?;
        let done = next.is_none();
        let recorded = sqlx::query(
            "INSERT INTO job_steps (job_id, shard, step, rows, cursor, processed_by)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(step.job_id)
        .bind(step.shard)
        .bind(step.step)
        .bind(rows)
        .bind(&next)
        .bind(&self.instance)
        .execute(&mut *tx)
        .await
        .context("Failed to record the step")?;
        // Cannot happen under the shard's lock; if it did, this transaction must not commit.
        anyhow::ensure!(
            recorded.rows_affected() == 1,
            "step {} was taken twice",
            step.step
        );
        // A shard that ran slower than its throttle (or waited for a runner) must not bank the
        // difference and then burst: its origin moves up so that this chunk ends exactly on
        // budget, and the next one waits its full share.
        sqlx::query(
            "UPDATE job_shards s SET cursor = coalesce($3, s.cursor), next_step = $4,
                 processed = s.processed + $5, done = $6,
                 throttle_origin = CASE WHEN j.max_rows_per_sec IS NULL THEN s.throttle_origin
                     ELSE greatest(s.throttle_origin, now() - make_interval(
                         secs => (s.processed + j.chunk_size)::float8 * j.shards / j.max_rows_per_sec))
                     END
             FROM jobs j
             WHERE s.job_id = $1 AND s.shard = $2 AND j.job_id = s.job_id",
        )
        .bind(step.job_id)
        .bind(step.shard)
        .bind(&next)
        .bind(step.step + 1)
        .bind(i64::from(rows))
        .bind(done)
        .execute(&mut *tx)
        .await
        .context("Failed to move the cursor")?;
        // Waits for a concurrent pause or cancel to commit, and then sees it.
        let (state, processed): (String, i64) = sqlx::query_as(
            "UPDATE jobs SET processed = processed + $2, attempts = 0, last_error = NULL, updated_at = now()
             WHERE job_id = $1 RETURNING state, processed",
        )
        .bind(step.job_id)
        .bind(i64::from(rows))
        .fetch_one(&mut *tx)
        .await
        .context("Failed to count the processed rows")?;
        let state: JobState = state.parse()?;

        let chain_goes_on = !done && state == JobState::Running;
        if done {
            complete_if_last(&mut tx, step.job_id, &shard, job, state, processed).await?;
        } else if state == JobState::Running {
            StepMessage {
                job_id: step.job_id,
                shard: step.shard,
                step: step.step + 1,
                cursor: next.clone(),
            }
            .record(&mut tx, &self.topic, shard.shards)
            .await?;
        } else {
            tracing::info!(%state, "job stopped after this chunk");
        }
        tx.commit().await.context("Failed to commit the step")?;
        Ok(Some(Taken {
            rows,
            chain_goes_on,
            next: None,
        }))
    }
}

/// The first step of a job starts it; so does the first step after resuming a job that was
/// paused before it started.
async fn mark_running(conn: &mut PgConnection, job_id: Uuid) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'running', started_at = coalesce(started_at, now()), updated_at = now()
         WHERE job_id = $1 AND (state = 'pending' OR (state = 'running' AND started_at IS NULL))",
    )
    .bind(job_id)
    .execute(conn)
    .await
    .context("Failed to mark the job running")?;
    Ok(())
}

/// After a shard's last chunk: if no other shard is left, marks the job completed and runs its
/// completion hook, in the step's transaction.
async fn complete_if_last(
    tx: &mut PgConnection,
    job_id: Uuid,
    shard: &ShardRow,
    job: &dyn ErasedJob,
    state: JobState,
    processed: i64,
) -> anyhow::Result<()> {
    // Runs after the step's update of the job row, which waited for any other shard finishing
    // at the same time: the last shard to finish sees all the others done.
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_shards WHERE job_id = $1 AND NOT done")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await
            .context("Failed to count the unfinished shards")?;
    // A job paused during its last chunk has nothing left to pause: it completes.
    if unfinished > 0 || !matches!(state, JobState::Running | JobState::Paused) {
        return Ok(());
    }
    sqlx::query(
        "UPDATE jobs SET state = 'completed', finished_at = now(), updated_at = now()
         WHERE job_id = $1",
    )
    .bind(job_id)
    .execute(&mut *tx)
    .await
    .context("Failed to mark the job completed")?;
    job.complete(tx, job_id, processed, shard.shards, &shard.params)
        .await?;
    metrics::counter!("iterator_jobs_finished_total", "kind" => shard.kind.clone(), "state" => "completed")
        .increment(1);
    tracing::info!(processed, "job completed");
    Ok(())
}

fn skipped(reason: &'static str) {
    metrics::counter!("iterator_steps_skipped_total", "reason" => reason).increment(1);
}

async fn record_attempt(pool: &PgPool, job_id: Uuid, error: &anyhow::Error) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE jobs SET attempts = attempts + 1, last_error = $2, updated_at = now() WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(format!("{error:#}"))
    .execute(pool)
    .await
    .context("Failed to record the failed attempt")?;
    Ok(())
}

/// A step that failed on every attempt fails its job; the step's offset is then committed
/// (`resume` records the step again).
struct FailJob {
    pool: PgPool,
    set_aside: Option<SetAside>,
}

impl FailurePolicy for FailJob {
    fn on_failure<'a>(
        &'a self,
        failure: Failure<'a>,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let Ok(step) = failure.message.json::<StepMessage>() else {
                // Only the runner's own outbox writes this topic, so this is a bug somewhere;
                // there is no job to fail, and holding up the partition's jobs for it would
                // help nobody.
                if let Some(set_aside) = &self.set_aside {
                    return set_aside.on_failure(failure).await;
                }
                tracing::error!(
                    topic = %failure.message.topic,
                    partition = failure.message.partition,
                    offset = failure.message.offset,
                    error = %failure.error,
                    "undecodable step message skipped"
                );
                skipped("undecodable");
                return Ok(());
            };
            let failed = sqlx::query_scalar::<_, String>(
                "UPDATE jobs SET state = 'failed', last_error = $2, updated_at = now()
                 WHERE job_id = $1 AND state IN ('pending', 'running') RETURNING kind",
            )
            .bind(step.job_id)
            .bind(failure.error.to_string())
            .fetch_optional(&self.pool)
            .await
            .with_context(|| format!("Failed to mark job {} failed", step.job_id))?;
            if let Some(kind) = failed {
                metrics::counter!("iterator_jobs_finished_total", "kind" => kind, "state" => "failed")
                    .increment(1);
                tracing::error!(job_id = %step.job_id, attempts = failure.attempts, error = %failure.error, "job failed");
            }
            Ok(())
        })
    }
}

//! The `task-queue` scenario, in two parts:
//!
//! 1. [`throughput`]: no-op tasks per second end to end, asyncron's task queue (Kafka, and
//!    PostgreSQL transactions that record each execution: batched, and one per task) against
//!    apalis with its PostgreSQL storage, each in a fresh database on the same server.
//! 2. [`offload`]: `POST /orders` latency with the order confirmation offloaded to
//!    notifications' task queue (the real orders service) against sending it inline to a
//!    provider that takes 100 ms (a handler in the bench that does the same work synchronously).
//!
//! Each part prints its table as soon as it is measured. The crate README says what each row
//! measures.

mod offload;
mod throughput;

use crate::Options;
use crate::services::{Binary, Run, Services};

/// Tasks per side for the throughput rows unless `--messages` says otherwise.
pub const DEFAULT_TASKS: usize = 50_000;

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    setup
        .run
        .measure(
            &offload::PORTS,
            &setup.databases.all(),
            async |services: &mut Services| measure(&setup, options, services).await,
        )
        .await
}

/// Both parts, one after the other; each prints its table when it is done. The caller stops the
/// services and drops the databases, whatever this returns.
async fn measure(setup: &Setup, options: &Options, services: &mut Services) -> anyhow::Result<()> {
    throughput::run(setup, options.messages_or(DEFAULT_TASKS)).await?;
    offload::run(setup, options.samples, services).await
}

/// Where everything is: the broker, the database server, the binaries, and this run's names.
#[derive(Debug)]
struct Setup {
    run: Run,
    databases: Databases,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let run = Run::new(
            "task-queue",
            &[Binary::CatalogCache, Binary::Orders, Binary::Notifications],
        )?;
        Ok(Self {
            databases: Databases::new(&run.id),
            run,
        })
    }

    fn database_url(&self, database: &str) -> anyhow::Result<String> {
        self.run.database_url(database)
    }
}

/// The run's databases: one per side and per service, so that no measurement includes another's
/// work, all dropped at the end.
#[derive(Debug)]
struct Databases {
    /// asyncron's worker with batching: `task_executions`.
    asyncron_batched: String,
    /// asyncron's worker with one transaction per task.
    asyncron_unbatched: String,
    /// apalis' storage: the `apalis` schema.
    apalis: String,
    catalog: String,
    orders: String,
    notifications: String,
    /// The inline baseline's orders table.
    inline: String,
}

impl Databases {
    fn new(run_id: &str) -> Self {
        Self {
            asyncron_batched: format!("bench_tq_batched_{run_id}"),
            asyncron_unbatched: format!("bench_tq_unbatched_{run_id}"),
            apalis: format!("bench_tq_apalis_{run_id}"),
            catalog: format!("bench_tq_catalog_{run_id}"),
            orders: format!("bench_tq_orders_{run_id}"),
            notifications: format!("bench_tq_notifications_{run_id}"),
            inline: format!("bench_tq_inline_{run_id}"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.asyncron_batched,
            &self.asyncron_unbatched,
            &self.apalis,
            &self.catalog,
            &self.orders,
            &self.notifications,
            &self.inline,
        ]
    }
}

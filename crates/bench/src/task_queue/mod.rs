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

use std::path::PathBuf;

use anyhow::Context as _;

use crate::Options;
use crate::database;
use crate::kafka;
use crate::services::{self, Binary, Services};

/// Tasks per side for the throughput rows unless `--messages` says otherwise.
pub const DEFAULT_TASKS: usize = 50_000;

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    kafka::check_broker(&setup.bootstrap)?;
    database::check_postgres(&setup.database_server).await?;
    services::check_ports_free(&offload::PORTS)?;
    eprintln!(
        "task-queue scenario: broker {}, PostgreSQL {}, run {}",
        setup.bootstrap,
        database::redact(&setup.database_server),
        setup.run_id
    );
    std::fs::create_dir_all(&setup.log_dir)
        .with_context(|| format!("Failed to create {}", setup.log_dir.display()))?;

    let mut services = Services::new(setup.binaries.clone(), setup.log_dir.clone());
    let outcome = tokio::select! {
        outcome = measure(&setup, options, &mut services) => outcome,
        signal = services::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    services.stop_all();
    let dropped = database::drop_all(&setup.database_server, &setup.databases.all()).await;

    outcome.map_err(|error| {
        anyhow::anyhow!(
            "{error:#}\nThe services' logs (RUST_LOG=warn), if any were started, are kept in {}",
            setup.log_dir.display()
        )
    })?;
    dropped?;
    // Kept when the run failed, to read; a finished run has nothing to look at in them.
    if let Err(error) = std::fs::remove_dir_all(&setup.log_dir) {
        tracing::warn!(%error, dir = %setup.log_dir.display(), "could not remove the logs");
    }
    Ok(())
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
    bootstrap: String,
    /// `DATABASE_URL`; its database name is replaced by each of the run's own.
    database_server: String,
    /// `target/release/` (or `target/debug/`), with the services' binaries.
    binaries: PathBuf,
    log_dir: PathBuf,
    run_id: String,
    /// The services' `ADMIN_TOKEN`, made up for the run.
    admin_token: String,
    databases: Databases,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let run_id = services::run_id();
        let binaries =
            services::binaries(&[Binary::CatalogCache, Binary::Orders, Binary::Notifications])?;
        let log_dir = services::target_dir()?
            .join("bench")
            .join(format!("task-queue-{run_id}"));
        Ok(Self {
            bootstrap: kafka::bootstrap_from_env(),
            database_server: database::server_from_env(),
            binaries,
            log_dir,
            databases: Databases::new(&run_id),
            run_id,
            admin_token: services::token(),
        })
    }

    fn database_url(&self, database: &str) -> anyhow::Result<String> {
        database::database_url(&self.database_server, database)
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

//! The `integration-events` scenario: `orders` pricing an order from its `catalog_products` read
//! model (the pattern) against asking `catalog-cache` over HTTP for every item (the baseline),
//! in one run.
//!
//! The scenario starts its own services from the build: catalog-cache and orders, on ports and
//! databases of their own, so that it can freeze catalog-cache (SIGSTOP) without disturbing
//! anything a developer runs with `scripts/up.sh`. The baseline is the bench's own `POST /orders`
//! ([`baseline`]), which places orders as orders does but prices them with a `GET` to
//! catalog-cache per product. A [`Services`] guard stops the services however the run ends (and
//! resumes a frozen one first); the run's databases are dropped afterwards. The crate README
//! says what each row measures.
//!
//! Split by concern: this file sets up and measures, [`baseline`] is the synchronous design,
//! [`client`] is the load (seeding, lookups, orders, changes), [`results`] the table and notes.

mod baseline;
mod client;
mod results;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;

use crate::Options;
use crate::database;
use crate::progress::Progress;
use crate::report;
use crate::services::{self, Binary, Run, ServiceId, Services, wait_ready};

use baseline::Baseline;
use client::{Bench, Calls, timed};
use results::{Pair, Results, comparisons, notes};

const CATALOG_PORT: u16 = 18_081;
const ORDERS_PORT: u16 = 18_082;
/// The baseline's bound on each call to catalog-cache: short, so that the frozen phase stays
/// short.
const SYNC_CATALOG_TIMEOUT: Duration = Duration::from_secs(1);

/// Products created at catalog-cache before measuring.
const PRODUCTS: usize = 50;
/// Items per order, and products per price lookup.
const ITEMS: usize = 3;
/// Unmeasured requests per side before each nominal phase: connections, caches, prepared
/// statements (at most `--samples`).
const WARM_UP: usize = 50;
/// At most this many orders to the baseline while catalog-cache is frozen: each one waits
/// for `SYNC_CATALOG_TIMEOUT`.
const FROZEN_SYNC_ORDERS: usize = 20;
/// Orders to the baseline after catalog-cache is resumed, to see that it recovers.
const AFTER_THAW_ORDERS: usize = 5;
/// The goal for a catalog change to reach orders' read model, at p99.
const PROPAGATION_GOAL: Duration = Duration::from_millis(100);
/// Pause between two reads of orders' read model while waiting for a change.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// How long orders may take to join its consumer group and project the seeded products (it
/// first replays whatever else is on the shared topic).
const SEED_TIMEOUT: Duration = Duration::from_mins(2);
/// How long one catalog change may take to reach orders' read model before the run fails.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The bench's own HTTP timeout; far above anything measured (the baseline gives up after
/// `SYNC_CATALOG_TIMEOUT`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    let plan = Plan::new(options.samples);
    let results = setup
        .run
        .measure(
            &[CATALOG_PORT, ORDERS_PORT],
            &setup.databases.all(),
            async |services: &mut Services| measure(&setup, &plan, services).await,
        )
        .await?;
    report::print(
        "integration-events: orders' read model vs a synchronous call to catalog-cache",
        &notes(&setup, &plan, &results),
        &comparisons(&results),
    );
    Ok(())
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
            "integration-events",
            &[Binary::CatalogCache, Binary::Orders],
        )?;
        Ok(Self {
            databases: Databases::new(&run.id),
            run,
        })
    }

    fn database_url(&self, database: &str) -> anyhow::Result<String> {
        self.run.database_url(database)
    }

    fn product_id(&self, index: usize) -> String {
        format!("bench-{}-p{index:03}", self.run.id)
    }

    /// orders gets consumer groups of its own: sharing `orders.*` with a running
    /// `scripts/up.sh` would take partitions, and their events, away from its read model.
    fn consumer_group_prefix(&self) -> String {
        format!("asyncron-bench-{}-orders", self.run.id)
    }
}

/// One database per service and one for the baseline, all named after the run: neither side's
/// measurements include the other's database work.
#[derive(Debug)]
struct Databases {
    catalog: String,
    orders: String,
    /// The baseline's orders, outbox and schedules.
    baseline: String,
}

impl Databases {
    fn new(run_id: &str) -> Self {
        Self {
            catalog: format!("bench_catalog_{run_id}"),
            orders: format!("bench_orders_{run_id}"),
            baseline: format!("bench_orders_sync_{run_id}"),
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.catalog, &self.orders, &self.baseline]
    }
}

/// How many of each measurement, from `--samples` (default 1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    warm_up: usize,
    lookups: usize,
    orders: usize,
    frozen_local: usize,
    frozen_sync: usize,
    changes: usize,
}

impl Plan {
    fn new(samples: usize) -> Self {
        Self {
            warm_up: samples.min(WARM_UP),
            lookups: samples.saturating_mul(2),
            orders: samples,
            frozen_local: samples,
            frozen_sync: samples.min(FROZEN_SYNC_ORDERS),
            changes: (samples.saturating_mul(3) / 10).max(1),
        }
    }
}

/// Starts the services, seeds, measures. The caller stops the services and drops the
/// databases, whatever this returns.
async fn measure(setup: &Setup, plan: &Plan, services: &mut Services) -> anyhow::Result<Results> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("Failed to build the HTTP client")?;
    let ids = start_services(setup, services, &http).await?;
    let pool = database::create(&setup.run.database_server, &setup.databases.baseline, 4).await?;
    let catalog_url = services.get(ids.catalog).url();
    let baseline = Baseline::start(pool, catalog_url, SYNC_CATALOG_TIMEOUT).await?;
    let bench = Bench::connect(setup, http, services, &ids, &baseline).await?;
    bench.seed().await?;
    let warm_up = plan.warm_up;

    // 1. The price lookup alone.
    let lookup_local = timed("lookup (read model)", warm_up, plan.lookups, |i| {
        bench.lookup_local(i)
    })
    .await?;
    let lookup_concurrent = timed("lookup (3 GETs, conc.)", warm_up, plan.lookups, |i| {
        bench.lookup_sync(i, Calls::Concurrent)
    })
    .await?;
    let lookup_sequential = timed("lookup (3 GETs, seq.)", warm_up, plan.lookups, |i| {
        bench.lookup_sync(i, Calls::Sequential)
    })
    .await?;

    // 2. POST /orders with catalog-cache up.
    let orders = Pair {
        local: bench
            .orders_client
            .place_orders("orders (read model)", &bench.orders, warm_up, plan.orders)
            .await?,
        sync: bench
            .orders_client
            .place_orders("baseline (sync)", &bench.baseline, warm_up, plan.orders)
            .await?,
    };

    // 4. Before freezing: catalog-cache's connections and relay are undisturbed.
    let (visible, put) = bench.propagation(plan.changes).await?;

    // 3. POST /orders with catalog-cache frozen.
    services.freeze(ids.catalog)?;
    let frozen = async {
        Ok::<_, anyhow::Error>(Pair {
            local: bench
                .orders_client
                .place_orders("frozen: orders", &bench.orders, 0, plan.frozen_local)
                .await?,
            sync: bench
                .orders_client
                .place_orders("frozen: baseline", &bench.baseline, 0, plan.frozen_sync)
                .await?,
        })
    }
    .await;
    services.thaw(ids.catalog)?;
    let frozen = frozen?;
    let thawed_ready = wait_ready(services, ids.catalog, &bench.http).await?;
    let after_thaw = bench
        .orders_client
        .place_orders(
            "after SIGCONT: baseline",
            &bench.baseline,
            0,
            AFTER_THAW_ORDERS,
        )
        .await?;

    Ok(Results {
        lookup_local,
        lookup_concurrent,
        lookup_sequential,
        orders,
        frozen,
        visible,
        put,
        thawed_ready,
        after_thaw,
    })
}

/// The started instances.
#[derive(Debug, Clone, Copy)]
struct Instances {
    catalog: ServiceId,
    orders: ServiceId,
}

async fn start_services(
    setup: &Setup,
    services: &mut Services,
    http: &reqwest::Client,
) -> anyhow::Result<Instances> {
    let env = |port: u16, database: &str| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(services::service_env(
            port,
            setup.database_url(database)?,
            &setup.run.bootstrap,
            &setup.run.admin_token,
        ))
    };
    let databases = &setup.databases;
    let catalog = services.spawn(
        Binary::CatalogCache,
        "catalog-cache",
        CATALOG_PORT,
        env(CATALOG_PORT, &databases.catalog)?,
    )?;
    let mut orders_env = env(ORDERS_PORT, &databases.orders)?;
    orders_env.push(("KAFKA_CONSUMER_GROUP_PREFIX", setup.consumer_group_prefix()));
    let orders = services.spawn(Binary::Orders, "orders", ORDERS_PORT, orders_env)?;

    let progress = Progress::start("start services", 2);
    let ready = progress.counter();
    for id in [catalog, orders] {
        wait_ready(services, id, http).await?;
        ready.fetch_add(1, Ordering::Relaxed);
    }
    progress.finish();
    Ok(Instances { catalog, orders })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_samples() {
        assert_eq!(
            Plan::new(1_000),
            Plan {
                warm_up: 50,
                lookups: 2_000,
                orders: 1_000,
                frozen_local: 1_000,
                frozen_sync: 20,
                changes: 300,
            }
        );
        let small = Plan::new(3);
        assert_eq!((small.warm_up, small.frozen_sync, small.changes), (3, 3, 1));
    }
}

//! The `integration-events` scenario: `orders` pricing an order from its `catalog_products` read
//! model (the pattern) against asking `catalog-cache` over HTTP for every item (the baseline),
//! in one run.
//!
//! The scenario starts its own services from the release build: catalog-cache, orders with
//! `CATALOG_LOOKUP=local` and orders with `CATALOG_LOOKUP=sync`, on ports and databases of their
//! own, so that it can freeze catalog-cache (SIGSTOP) without disturbing anything a developer
//! runs with `scripts/up.sh`. A [`Services`] guard stops them however the run ends (and resumes
//! a frozen one first); the run's databases are dropped afterwards. The crate README says what
//! each row measures.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::try_join_all;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::Options;
use crate::database;
use crate::kafka;
use crate::progress::Progress;
use crate::report::{self, Column, Row};
use crate::services::{self, Binary, ServiceId, Services, wait_ready};
use crate::stats::{LatencyHistogram, LatencySummary};

const CATALOG_PORT: u16 = 18_081;
const ORDERS_LOCAL_PORT: u16 = 18_082;
const ORDERS_SYNC_PORT: u16 = 18_083;
/// The sync instance's bound on each call to catalog-cache: short, so that the frozen phase
/// stays short (orders' default is 2 s).
const SYNC_CATALOG_TIMEOUT: &str = "1s";

/// Products created at catalog-cache before measuring.
const PRODUCTS: usize = 50;
/// Items per order, and products per price lookup.
const ITEMS: usize = 3;
/// Unmeasured requests per side before each nominal phase: connections, caches, prepared
/// statements.
const WARM_UP: usize = 50;
/// At most this many orders to the sync instance while catalog-cache is frozen: each one waits
/// for `SYNC_CATALOG_TIMEOUT`.
const FROZEN_SYNC_ORDERS: usize = 20;
/// Orders to the sync instance after catalog-cache is resumed, to see that it recovers.
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
/// The bench's own HTTP timeout; far above anything measured (the sync instance gives up
/// after `SYNC_CATALOG_TIMEOUT`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = Setup::new()?;
    kafka::check_broker(&setup.bootstrap)?;
    database::check_postgres(&setup.database_server).await?;
    services::check_ports_free(&[CATALOG_PORT, ORDERS_LOCAL_PORT, ORDERS_SYNC_PORT])?;
    let plan = Plan::new(options.samples);
    eprintln!(
        "integration-events scenario: broker {}, PostgreSQL {}, run {}",
        setup.bootstrap,
        database::redact(&setup.database_server),
        setup.run_id
    );
    std::fs::create_dir_all(&setup.log_dir)
        .with_context(|| format!("Failed to create {}", setup.log_dir.display()))?;

    let mut services = Services::new(setup.binaries.clone(), setup.log_dir.clone());
    let outcome = tokio::select! {
        outcome = measure(&setup, &plan, &mut services) => outcome,
        signal = services::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    services.stop_all();
    let dropped = database::drop_all(&setup.database_server, &setup.databases.all()).await;

    let results = outcome.map_err(|error| {
        anyhow::anyhow!(
            "{error:#}\nThe services' logs (RUST_LOG=warn) are kept in {}",
            setup.log_dir.display()
        )
    })?;
    report::print(
        "integration-events: orders' read model vs a synchronous call to catalog-cache",
        &notes(&setup, &plan, &results),
        &comparisons(&results),
    );
    dropped?;
    // Kept when the run failed, to read; a finished run has nothing to look at in them.
    if let Err(error) = std::fs::remove_dir_all(&setup.log_dir) {
        tracing::warn!(%error, dir = %setup.log_dir.display(), "could not remove the logs");
    }
    Ok(())
}

/// Where everything is: the broker, the database server, the binaries, and this run's names.
#[derive(Debug)]
struct Setup {
    bootstrap: String,
    /// `DATABASE_URL`; its database name is replaced by each service's own.
    database_server: String,
    /// The directory of the release binaries of catalog-cache and orders.
    binaries: PathBuf,
    log_dir: PathBuf,
    run_id: String,
    databases: Databases,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let from_env = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let mut run_id = uuid::Uuid::new_v4().simple().to_string();
        run_id.truncate(8);
        let binaries = services::release_binaries(&[Binary::CatalogCache, Binary::Orders])?;
        let target = services::target_dir()?;
        Ok(Self {
            bootstrap: from_env("KAFKA_BOOTSTRAP_SERVERS", kafka::DEFAULT_BOOTSTRAP),
            database_server: database::server_from_env(),
            binaries,
            log_dir: target
                .join("bench")
                .join(format!("integration-events-{run_id}")),
            databases: Databases::new(&run_id),
            run_id,
        })
    }

    fn database_url(&self, database: &str) -> anyhow::Result<String> {
        database::database_url(&self.database_server, database)
    }

    fn product_id(&self, index: usize) -> String {
        format!("bench-{}-p{index:03}", self.run_id)
    }

    /// Each orders instance gets consumer groups of its own: sharing `orders.*` with a running
    /// `scripts/up.sh` would take partitions, and their events, away from its read model.
    fn consumer_group_prefix(&self, instance: &str) -> String {
        format!("asyncron-bench-{}-orders-{instance}", self.run_id)
    }
}

/// One database per service instance, all named after the run.
///
/// The two orders instances do not share a database: each is a deployment of its own, as in
/// production, with its own read model, consumer groups and orders tables. Sharing one would
/// have both projectors write every event into the same rows (or split the topic's partitions
/// between them, if they shared the groups too) and both instances insert orders into the same
/// tables, so that each side's measurements would include the other's work.
#[derive(Debug)]
struct Databases {
    catalog: String,
    orders_local: String,
    orders_sync: String,
}

impl Databases {
    fn new(run_id: &str) -> Self {
        Self {
            catalog: format!("bench_catalog_{run_id}"),
            orders_local: format!("bench_orders_{run_id}"),
            orders_sync: format!("bench_orders_sync_{run_id}"),
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.catalog, &self.orders_local, &self.orders_sync]
    }
}

/// How many of each measurement, from `--samples` (default 1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    lookups: usize,
    orders: usize,
    frozen_local: usize,
    frozen_sync: usize,
    changes: usize,
}

impl Plan {
    fn new(samples: usize) -> Self {
        Self {
            lookups: samples.saturating_mul(2),
            orders: samples,
            frozen_local: samples,
            frozen_sync: samples.min(FROZEN_SYNC_ORDERS),
            changes: (samples.saturating_mul(3) / 10).max(1),
        }
    }
}

/// Everything the table and the notes show.
#[derive(Debug)]
struct Results {
    lookup_local: LatencySummary,
    lookup_concurrent: LatencySummary,
    lookup_sequential: LatencySummary,
    orders: Pair<Requests>,
    frozen: Pair<Requests>,
    /// From sending the PUT until orders' read model holds the new revision.
    visible: LatencySummary,
    /// The PUT alone, for comparison.
    put: LatencySummary,
    /// From SIGCONT until catalog-cache answered `/health/ready` again.
    thawed_ready: Duration,
    after_thaw: Requests,
}

/// A measurement of both orders instances.
#[derive(Debug)]
struct Pair<T> {
    local: T,
    sync: T,
}

/// A batch of `POST /orders`: latency of every request (failed ones too) and what they answered.
#[derive(Debug, Default)]
struct Requests {
    latency: LatencySummary,
    total: usize,
    succeeded: usize,
    /// `201`, `503`, `transport error`, … and how often.
    outcomes: BTreeMap<String, usize>,
}

impl Requests {
    fn success_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.succeeded as f64 * 100.0 / self.total as f64
        }
    }

    fn outcomes(&self) -> String {
        self.outcomes
            .iter()
            .map(|(outcome, n)| format!("{} × {outcome}", report::count(*n as f64)))
            .collect::<Vec<_>>()
            .join(", ")
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
    let bench = Bench::connect(setup, http, services, &ids).await?;
    bench.seed().await?;

    // 1. The price lookup alone.
    let lookup_local = timed("lookup (read model)", WARM_UP, plan.lookups, |i| {
        bench.lookup_local(i)
    })
    .await?;
    let lookup_concurrent = timed("lookup (3 GETs, conc.)", WARM_UP, plan.lookups, |i| {
        bench.lookup_sync(i, Calls::Concurrent)
    })
    .await?;
    let lookup_sequential = timed("lookup (3 GETs, seq.)", WARM_UP, plan.lookups, |i| {
        bench.lookup_sync(i, Calls::Sequential)
    })
    .await?;

    // 2. POST /orders with catalog-cache up.
    let orders = Pair {
        local: bench
            .place_orders("orders (local)", &bench.orders_local, WARM_UP, plan.orders)
            .await?,
        sync: bench
            .place_orders("orders (sync)", &bench.orders_sync, WARM_UP, plan.orders)
            .await?,
    };

    // 4. Before freezing: catalog-cache's connections and relay are undisturbed.
    let (visible, put) = bench.propagation(plan.changes).await?;

    // 3. POST /orders with catalog-cache frozen.
    services.freeze(ids.catalog)?;
    let frozen = async {
        Ok::<_, anyhow::Error>(Pair {
            local: bench
                .place_orders(
                    "frozen: orders (local)",
                    &bench.orders_local,
                    0,
                    plan.frozen_local,
                )
                .await?,
            sync: bench
                .place_orders(
                    "frozen: orders (sync)",
                    &bench.orders_sync,
                    0,
                    plan.frozen_sync,
                )
                .await?,
        })
    }
    .await;
    services.thaw(ids.catalog)?;
    let frozen = frozen?;
    let thawed_ready = wait_ready(services, ids.catalog, &bench.http).await?;
    let after_thaw = bench
        .place_orders(
            "after SIGCONT (sync)",
            &bench.orders_sync,
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
    orders_local: ServiceId,
    orders_sync: ServiceId,
}

async fn start_services(
    setup: &Setup,
    services: &mut Services,
    http: &reqwest::Client,
) -> anyhow::Result<Instances> {
    let common = |port: u16, database: &str| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("DATABASE_URL", setup.database_url(database)?),
            ("KAFKA_BOOTSTRAP_SERVERS", setup.bootstrap.clone()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
            // No admin endpoints, so no `ADMIN_TOKEN` to make up (services without them
            // ignore it).
            ("ADMIN_ROUTES", "false".to_owned()),
        ])
    };
    let databases = &setup.databases;
    let catalog = services.spawn(
        Binary::CatalogCache,
        "catalog-cache",
        CATALOG_PORT,
        common(CATALOG_PORT, &databases.catalog)?,
    )?;
    let mut local = common(ORDERS_LOCAL_PORT, &databases.orders_local)?;
    local.extend([
        ("CATALOG_LOOKUP", "local".to_owned()),
        (
            "KAFKA_CONSUMER_GROUP_PREFIX",
            setup.consumer_group_prefix("local"),
        ),
    ]);
    let orders_local = services.spawn(Binary::Orders, "orders-local", ORDERS_LOCAL_PORT, local)?;
    let mut sync = common(ORDERS_SYNC_PORT, &databases.orders_sync)?;
    sync.extend([
        ("CATALOG_LOOKUP", "sync".to_owned()),
        ("CATALOG_URL", format!("http://127.0.0.1:{CATALOG_PORT}")),
        ("CATALOG_TIMEOUT", SYNC_CATALOG_TIMEOUT.to_owned()),
        (
            "KAFKA_CONSUMER_GROUP_PREFIX",
            setup.consumer_group_prefix("sync"),
        ),
    ]);
    let orders_sync = services.spawn(Binary::Orders, "orders-sync", ORDERS_SYNC_PORT, sync)?;

    let instances = Instances {
        catalog,
        orders_local,
        orders_sync,
    };
    let progress = Progress::start("start services", 3);
    let ready = progress.counter();
    for id in [catalog, orders_local, orders_sync] {
        wait_ready(services, id, http).await?;
        ready.fetch_add(1, Ordering::Relaxed);
    }
    progress.finish();
    Ok(instances)
}

/// What one price lookup step of the baseline does: calls one after another, or all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calls {
    Sequential,
    /// As orders' sync mode does (`try_join_all`).
    Concurrent,
}

/// The fields of catalog-cache's product that pricing reads.
#[derive(Debug, Deserialize)]
struct CatalogPrice {
    price_cents: i64,
    currency: String,
    active: bool,
}

/// The field of catalog-cache's answer to a PUT that the bench needs.
#[derive(Debug, Deserialize)]
struct PutAnswer {
    revision: i64,
}

/// The running services and what the bench talks to them with.
struct Bench {
    http: reqwest::Client,
    catalog: String,
    orders_local: String,
    orders_sync: String,
    /// orders' (local instance) database: the read model.
    local_db: PgPool,
    /// The sync instance's database, only to see that its projection has caught up before
    /// measuring.
    sync_db: PgPool,
    customer_id: String,
    product_ids: Vec<String>,
    /// [`ITEMS`] distinct products per entry; sample `i` uses entry `i % PRODUCTS`.
    baskets: Vec<Vec<String>>,
}

impl Bench {
    async fn connect(
        setup: &Setup,
        http: reqwest::Client,
        services: &Services,
        instances: &Instances,
    ) -> anyhow::Result<Self> {
        let pool = |database: String| async move {
            let url = setup.database_url(&database)?;
            PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(5))
                .connect(&url)
                .await
                .with_context(|| format!("Failed to connect to database {database}"))
        };
        let product_ids: Vec<String> = (0..PRODUCTS).map(|i| setup.product_id(i)).collect();
        let baskets = (0..PRODUCTS)
            .map(|i| {
                (0..ITEMS)
                    .map(|k| product_ids[(i * ITEMS + k) % PRODUCTS].clone())
                    .collect()
            })
            .collect();
        Ok(Self {
            http,
            catalog: services.get(instances.catalog).url(),
            orders_local: services.get(instances.orders_local).url(),
            orders_sync: services.get(instances.orders_sync).url(),
            local_db: pool(setup.databases.orders_local.clone()).await?,
            sync_db: pool(setup.databases.orders_sync.clone()).await?,
            customer_id: format!("asyncron-bench-{}", setup.run_id),
            product_ids,
            baskets,
        })
    }

    fn basket(&self, sample: usize) -> &[String] {
        &self.baskets[sample % PRODUCTS]
    }

    /// Creates or changes a product at catalog-cache; its new revision.
    async fn put_product(&self, product_id: &str, price_cents: usize) -> anyhow::Result<i64> {
        let response = self
            .http
            .put(format!("{}/products/{product_id}", self.catalog))
            .json(&json!({
                "sku": format!("SKU-{product_id}"),
                "name": format!("Bench product {product_id}"),
                "price_cents": price_cents,
                "currency": "EUR",
                "stock": 1_000_000,
                "active": true,
            }))
            .send()
            .await
            .with_context(|| format!("PUT /products/{product_id} failed"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("PUT /products/{product_id} answered {status}: {body}");
        }
        let answer: PutAnswer = response
            .json()
            .await
            .with_context(|| format!("PUT /products/{product_id}: unexpected answer"))?;
        Ok(answer.revision)
    }

    /// Creates the products and waits until both orders instances have them in their read
    /// models (each first joins its consumer group and replays the topic).
    async fn seed(&self) -> anyhow::Result<()> {
        let progress = Progress::start("seed: create products", PRODUCTS);
        let created = progress.counter();
        for (i, product_id) in self.product_ids.iter().enumerate() {
            self.put_product(product_id, 100 + 10 * i).await?;
            created.fetch_add(1, Ordering::Relaxed);
        }
        progress.finish();

        let progress = Progress::start("seed: read models", 2 * PRODUCTS);
        progress.waiting_for("orders joining their consumer groups");
        let projected = progress.counter();
        let started = Instant::now();
        loop {
            let mut count = 0;
            for pool in [&self.local_db, &self.sync_db] {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM catalog_products WHERE product_id = ANY($1)",
                )
                .bind(&self.product_ids)
                .fetch_one(pool)
                .await
                .context("Failed to count the products in orders' read model")?;
                count += usize::try_from(n).unwrap_or(0);
            }
            projected.store(count, Ordering::Relaxed);
            if count == 2 * PRODUCTS {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < SEED_TIMEOUT,
                "orders' read models hold {count} of {} seeded products after {SEED_TIMEOUT:?}",
                2 * PRODUCTS
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        progress.finish();
        Ok(())
    }

    /// What `CATALOG_LOOKUP=local` does: one query on orders' own database.
    async fn lookup_local(&self, sample: usize) -> anyhow::Result<()> {
        let basket = self.basket(sample);
        let rows: Vec<(i64, String, bool)> = sqlx::query_as(
            "SELECT price_cents, currency, active FROM catalog_products WHERE product_id = ANY($1)",
        )
        .bind(basket)
        .fetch_all(&self.local_db)
        .await
        .context("The read-model lookup failed")?;
        anyhow::ensure!(
            rows.len() == basket.len()
                && rows.iter().all(|(price, _, active)| *price >= 0 && *active),
            "the read model returned {} of {} products",
            rows.len(),
            basket.len()
        );
        Ok(())
    }

    /// What `CATALOG_LOOKUP=sync` does: a `GET /products/{id}` to catalog-cache per item.
    async fn lookup_sync(&self, sample: usize, calls: Calls) -> anyhow::Result<()> {
        let basket = self.basket(sample);
        let prices = match calls {
            Calls::Concurrent => {
                try_join_all(basket.iter().map(|id| self.catalog_price(id))).await?
            }
            Calls::Sequential => {
                let mut prices = Vec::with_capacity(basket.len());
                for product_id in basket {
                    prices.push(self.catalog_price(product_id).await?);
                }
                prices
            }
        };
        anyhow::ensure!(
            prices
                .iter()
                .all(|p| p.price_cents >= 0 && p.active && !p.currency.is_empty()),
            "catalog-cache returned an unexpected product"
        );
        Ok(())
    }

    async fn catalog_price(&self, product_id: &str) -> anyhow::Result<CatalogPrice> {
        self.http
            .get(format!("{}/products/{product_id}", self.catalog))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET /products/{product_id} failed"))?
            .json()
            .await
            .with_context(|| format!("GET /products/{product_id}: unexpected answer"))
    }

    /// `samples` orders of [`ITEMS`] items to `base_url`, one at a time, after `warm_up`
    /// unmeasured ones (which must succeed). Failures are counted, not errors.
    async fn place_orders(
        &self,
        label: &str,
        base_url: &str,
        warm_up: usize,
        samples: usize,
    ) -> anyhow::Result<Requests> {
        let url = format!("{base_url}/orders");
        for i in 0..warm_up {
            let (status, body) = self.place_order(&url, i).await;
            anyhow::ensure!(
                status == "201",
                "{label}: a warm-up POST /orders answered {status}: {body}"
            );
        }
        let progress = Progress::start(label, samples);
        let done = progress.counter();
        let mut latency = LatencyHistogram::default();
        let mut requests = Requests {
            total: samples,
            ..Requests::default()
        };
        for i in 0..samples {
            let started = Instant::now();
            let (status, _) = self.place_order(&url, i).await;
            latency.record(started.elapsed());
            if status == "201" {
                requests.succeeded += 1;
            }
            *requests.outcomes.entry(status).or_default() += 1;
            done.fetch_add(1, Ordering::Relaxed);
        }
        progress.finish();
        requests.latency = latency.summary();
        Ok(requests)
    }

    /// One `POST /orders`: its status (or `transport error`) and body, read to the end.
    async fn place_order(&self, url: &str, sample: usize) -> (String, String) {
        let items: Vec<serde_json::Value> = self
            .basket(sample)
            .iter()
            .enumerate()
            .map(|(k, product_id)| json!({"product_id": product_id, "quantity": k % 2 + 1}))
            .collect();
        let body = json!({
            "customer_id": self.customer_id,
            "customer_email": "bench@example.com",
            "items": items,
        });
        match self.http.post(url).json(&body).send().await {
            Ok(response) => {
                let status = response.status().as_u16().to_string();
                let body = response.text().await.unwrap_or_default();
                (status, body)
            }
            Err(error) if error.is_timeout() => ("bench timeout".to_owned(), error.to_string()),
            Err(error) => ("transport error".to_owned(), error.to_string()),
        }
    }

    /// `changes` price changes at catalog-cache, one at a time over the products; each timed
    /// from sending the PUT until orders' read model holds the new revision.
    async fn propagation(
        &self,
        changes: usize,
    ) -> anyhow::Result<(LatencySummary, LatencySummary)> {
        let progress = Progress::start("catalog change → orders", changes);
        let done = progress.counter();
        let mut visible = LatencyHistogram::default();
        let mut put = LatencyHistogram::default();
        for i in 0..changes {
            let product_id = &self.product_ids[i % PRODUCTS];
            let started = Instant::now();
            // Above every seeded price and different from the previous change.
            let revision = self.put_product(product_id, 1_000 + i).await?;
            put.record(started.elapsed());
            loop {
                let applied: Option<i64> = sqlx::query_scalar(
                    "SELECT revision FROM catalog_products WHERE product_id = $1",
                )
                .bind(product_id)
                .fetch_optional(&self.local_db)
                .await
                .context("Failed to read orders' read model")?;
                if applied.is_some_and(|applied| applied >= revision) {
                    break;
                }
                anyhow::ensure!(
                    started.elapsed() < VISIBLE_TIMEOUT,
                    "revision {revision} of {product_id} did not reach orders' read model within \
                     {VISIBLE_TIMEOUT:?} (it holds {applied:?})"
                );
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            visible.record(started.elapsed());
            done.fetch_add(1, Ordering::Relaxed);
        }
        progress.finish();
        Ok((visible.summary(), put.summary()))
    }
}

/// Runs `op` `warm_up` times unmeasured, then `samples` times one after another, timing each.
async fn timed<F, Fut>(
    label: &str,
    warm_up: usize,
    samples: usize,
    mut op: F,
) -> anyhow::Result<LatencySummary>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for i in 0..warm_up {
        op(i).await?;
    }
    let progress = Progress::start(label, samples);
    let done = progress.counter();
    let mut latency = LatencyHistogram::default();
    for i in 0..samples {
        let started = Instant::now();
        op(i).await?;
        latency.record(started.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
    }
    progress.finish();
    Ok(latency.summary())
}

fn comparisons(results: &Results) -> Vec<Comparison> {
    let millis = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let latency_rows = |name: &str, local: &LatencySummary, sync: Option<&LatencySummary>| {
        [
            ("p50", local.p50, sync.map(|s| s.p50)),
            ("p99", local.p99, sync.map(|s| s.p99)),
        ]
        .map(|(quantile, local, sync)| Comparison {
            measurement: format!("{name} {quantile}"),
            unit: Unit::Millis,
            read_model: millis(local),
            sync_call: sync.map(millis),
            higher_is_better: false,
        })
    };
    let success = |name: &str, requests: &Pair<Requests>| Comparison {
        measurement: format!("{name} success"),
        unit: Unit::Percent,
        read_model: requests.local.success_percent(),
        sync_call: Some(requests.sync.success_percent()),
        higher_is_better: true,
    };
    let mut rows = Vec::new();
    rows.extend(latency_rows(
        "price lookup, 3 items (sync: concurrent GETs)",
        &results.lookup_local,
        Some(&results.lookup_concurrent),
    ));
    rows.extend(latency_rows(
        "price lookup, 3 items (sync: sequential GETs)",
        &results.lookup_local,
        Some(&results.lookup_sequential),
    ));
    let orders = "POST /orders, catalog-cache up,";
    rows.extend(latency_rows(
        orders,
        &results.orders.local.latency,
        Some(&results.orders.sync.latency),
    ));
    rows.push(success(orders, &results.orders));
    let frozen = "POST /orders, catalog-cache frozen,";
    rows.extend(latency_rows(
        frozen,
        &results.frozen.local.latency,
        Some(&results.frozen.sync.latency),
    ));
    rows.push(success(frozen, &results.frozen));
    rows.extend(latency_rows(
        "catalog change visible in orders",
        &results.visible,
        None,
    ));
    rows
}

fn notes(setup: &Setup, plan: &Plan, results: &Results) -> Vec<String> {
    let millis = |duration: Duration| format!("{:.2} ms", duration.as_secs_f64() * 1_000.0);
    let n = |count: usize| report::count(count as f64);
    let databases = &setup.databases;
    let goal = if results.visible.p99 <= PROPAGATION_GOAL {
        "met"
    } else {
        "NOT met"
    };
    vec![
        format!(
            "broker {}, PostgreSQL {}, run {}",
            setup.bootstrap,
            database::redact(&setup.database_server),
            setup.run_id
        ),
        format!(
            "services started by the bench (RUST_LOG=warn): catalog-cache :{CATALOG_PORT} \
             (db {}); orders CATALOG_LOOKUP=local :{ORDERS_LOCAL_PORT} (db {}); orders \
             CATALOG_LOOKUP=sync :{ORDERS_SYNC_PORT} (db {}, CATALOG_TIMEOUT={SYNC_CATALOG_TIMEOUT})",
            databases.catalog, databases.orders_local, databases.orders_sync
        ),
        format!(
            "price lookup: {} per side, 3 of {PRODUCTS} products each, one at a time after {WARM_UP} \
             unmeasured; read model = one `product_id = ANY($1)` query on orders' database; sync \
             = 3 GET /products/{{id}} to catalog-cache with one HTTP client, concurrently as \
             orders' sync mode does them, or one after the other",
            n(plan.lookups)
        ),
        format!(
            "POST /orders (3 items): one client, one request at a time (concurrency 1); catalog-cache \
             up: {} per side after {WARM_UP} unmeasured; latencies include failed requests",
            n(plan.orders)
        ),
        format!(
            "catalog-cache frozen (SIGSTOP): {} orders to local ({}), {} to sync ({}); after \
             SIGCONT catalog-cache was ready again in {} and sync orders answered {}",
            n(plan.frozen_local),
            results.frozen.local.outcomes(),
            n(plan.frozen_sync),
            results.frozen.sync.outcomes(),
            millis(results.thawed_ready),
            results.after_thaw.outcomes(),
        ),
        format!(
            "catalog change visible: {} price changes (PUT /products/{{id}}, one at a time), from \
             sending the PUT until orders' read model holds the new revision, read every \
             ~{} ms; the PUT alone: p50 {}, p99 {}; goal p99 <= {} ms: {goal}",
            n(plan.changes),
            POLL_INTERVAL.as_millis(),
            millis(results.put.p50),
            millis(results.put.p99),
            PROPAGATION_GOAL.as_millis(),
        ),
        "ratio = read model / sync call; `better` says which direction is an improvement"
            .to_owned(),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Millis,
    Percent,
}

impl Unit {
    fn label(self) -> &'static str {
        match self {
            Self::Millis => "ms",
            Self::Percent => "%",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Self::Millis => format!("{value:.2}"),
            Self::Percent => format!("{value:.1}"),
        }
    }
}

/// One row: the same measurement with the read model and with the synchronous call, when the
/// baseline has one.
#[derive(Debug)]
struct Comparison {
    measurement: String,
    unit: Unit,
    read_model: f64,
    sync_call: Option<f64>,
    higher_is_better: bool,
}

impl Row for Comparison {
    const COLUMNS: &'static [Column] = &[
        Column::left("measurement"),
        Column::left("unit"),
        Column::right("read model"),
        Column::right("sync call"),
        Column::right("ratio"),
        Column::left("better"),
    ];

    fn cells(&self) -> Vec<String> {
        let (sync, ratio) = match self.sync_call {
            Some(sync) => (self.unit.format(sync), report::ratio(self.read_model, sync)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        vec![
            self.measurement.clone(),
            self.unit.label().to_owned(),
            self.unit.format(self.read_model),
            sync,
            ratio,
            if self.higher_is_better {
                "higher"
            } else {
                "lower"
            }
            .to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_samples() {
        assert_eq!(
            Plan::new(1_000),
            Plan {
                lookups: 2_000,
                orders: 1_000,
                frozen_local: 1_000,
                frozen_sync: 20,
                changes: 300,
            }
        );
        let small = Plan::new(3);
        assert_eq!((small.frozen_sync, small.changes), (3, 1));
    }

    #[test]
    fn rows_without_a_baseline_have_no_ratio() {
        let row = Comparison {
            measurement: "catalog change visible in orders p99".to_owned(),
            unit: Unit::Millis,
            read_model: 12.345,
            sync_call: None,
            higher_is_better: false,
        };
        assert_eq!(
            row.cells(),
            [
                "catalog change visible in orders p99",
                "ms",
                "12.35",
                "-",
                "-",
                "lower"
            ]
        );
        let row = Comparison {
            measurement: "success".to_owned(),
            unit: Unit::Percent,
            read_model: 100.0,
            sync_call: Some(0.0),
            higher_is_better: true,
        };
        assert_eq!(
            row.cells(),
            ["success", "%", "100.0", "0.0", "n/a", "higher"]
        );
    }

    #[test]
    fn outcomes_are_listed_by_status() {
        let requests = Requests {
            total: 3,
            succeeded: 1,
            outcomes: BTreeMap::from([("201".to_owned(), 1), ("503".to_owned(), 2_000)]),
            ..Requests::default()
        };
        assert_eq!(requests.outcomes(), "1 × 201, 2,000 × 503");
        assert!((requests.success_percent() - 100.0 / 3.0).abs() < 1e-9);
    }
}

//! The load of the `integration-events` scenario: seeding the catalog, the price lookups alone,
//! `POST /orders` to either side, and catalog changes timed until orders' read model has them.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::try_join_all;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::baseline::{Baseline, CatalogPrice};
use super::{ITEMS, Instances, POLL_INTERVAL, PRODUCTS, SEED_TIMEOUT, Setup, VISIBLE_TIMEOUT};
use crate::order_client::OrderClient;
use crate::progress::Progress;
use crate::services::{self, Services};
use crate::stats::{LatencyHistogram, LatencySummary};

/// What one price lookup step of the baseline does: calls one after another, or all at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Calls {
    Sequential,
    /// As the baseline's `POST /orders` does (`try_join_all`).
    Concurrent,
}

/// The running services and the baseline, and what the bench talks to them with.
pub(super) struct Bench {
    pub(super) http: reqwest::Client,
    catalog: String,
    /// orders' base URL.
    pub(super) orders: String,
    /// The baseline's base URL.
    pub(super) baseline: String,
    /// orders' database: the read model.
    local_db: PgPool,
    /// `POST /orders` to either side.
    pub(super) orders_client: OrderClient,
    product_ids: Vec<String>,
    /// [`ITEMS`] distinct products per entry; sample `i` uses entry `i % PRODUCTS`.
    baskets: Vec<Vec<String>>,
}

impl Bench {
    pub(super) async fn connect(
        setup: &Setup,
        http: reqwest::Client,
        services: &Services,
        instances: &Instances,
        baseline: &Baseline,
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
        let orders_client = OrderClient::new(
            http.clone(),
            format!("asyncron-bench-{}", setup.run.id),
            "bench@example.com".to_owned(),
            product_ids.clone(),
            ITEMS,
        );
        Ok(Self {
            http,
            catalog: services.get(instances.catalog).url(),
            orders: services.get(instances.orders).url(),
            baseline: baseline.url.clone(),
            local_db: pool(setup.databases.orders.clone()).await?,
            orders_client,
            product_ids,
            baskets,
        })
    }

    fn basket(&self, sample: usize) -> &[String] {
        &self.baskets[sample % PRODUCTS]
    }

    /// Creates or changes a product at catalog-cache; its new revision.
    async fn put_product(&self, product_id: &str, price_cents: usize) -> anyhow::Result<i64> {
        services::put_product(&self.http, &self.catalog, product_id, price_cents).await
    }

    /// Creates the products and waits until orders has them in its read model. The baseline
    /// asks catalog-cache each time.
    pub(super) async fn seed(&self) -> anyhow::Result<()> {
        services::seed_products(
            &self.http,
            &self.catalog,
            &self.product_ids,
            &self.local_db,
            SEED_TIMEOUT,
        )
        .await
    }

    /// What orders does: one query on its own database.
    pub(super) async fn lookup_local(&self, sample: usize) -> anyhow::Result<()> {
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

    /// What the baseline does: a `GET /products/{id}` to catalog-cache per item.
    pub(super) async fn lookup_sync(&self, sample: usize, calls: Calls) -> anyhow::Result<()> {
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

    /// `changes` price changes at catalog-cache, one at a time over the products; each timed
    /// from sending the PUT until orders' read model holds the new revision.
    pub(super) async fn propagation(
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
pub(super) async fn timed<F, Fut>(
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

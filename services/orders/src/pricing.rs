//! [`PriceLookup`]: where `POST /orders` finds the products it prices.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::try_join_all;
use reqwest::{StatusCode, Url};
use sqlx::PgPool;

use crate::catalog::{self, CatalogProduct};
use crate::config::CatalogLookup;
use crate::error::ApiError;

/// The source of products and prices, chosen by `CATALOG_LOOKUP`.
#[derive(Debug, Clone)]
pub enum PriceLookup {
    /// The design: the `catalog_products` read model. One local query, whatever state
    /// catalog-cache is in.
    Local(PgPool),
    /// **Benchmark baseline only**: a call to catalog-cache per product, which is as slow as
    /// catalog-cache and fails while it is down. It exists so that the benchmark can measure
    /// what the read model saves; never configure it otherwise.
    Sync(CatalogClient),
}

impl PriceLookup {
    pub fn new(lookup: &CatalogLookup, pool: PgPool) -> anyhow::Result<Self> {
        Ok(match lookup {
            CatalogLookup::Local => Self::Local(pool),
            CatalogLookup::Sync { url, timeout } => {
                tracing::warn!(
                    %url,
                    "CATALOG_LOOKUP=sync: the benchmark baseline; every order calls catalog-cache"
                );
                Self::Sync(CatalogClient::new(url.clone(), *timeout)?)
            }
        })
    }

    /// The products among `product_ids` that exist, by id; an id missing from the map is a
    /// product orders does not know.
    pub async fn products(
        &self,
        product_ids: &[String],
    ) -> Result<HashMap<String, CatalogProduct>, ApiError> {
        let products = match self {
            Self::Local(pool) => catalog::find_many(pool, product_ids).await?,
            Self::Sync(catalog) => catalog
                .products(product_ids)
                .await
                .map_err(ApiError::CatalogUnavailable)?,
        };
        Ok(products
            .into_iter()
            .map(|product| (product.product_id.clone(), product))
            .collect())
    }
}

/// **Benchmark baseline only**: catalog-cache's HTTP API, `GET /products/{product_id}`.
#[derive(Debug, Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    base_url: Url,
}

impl CatalogClient {
    /// `timeout` bounds each call from connecting to reading the whole body.
    pub fn new(base_url: Url, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("Failed to build the catalog-cache HTTP client")?;
        Ok(Self { http, base_url })
    }

    /// Asks for all products at once; fails if any call fails.
    async fn products(
        &self,
        product_ids: &[String],
    ) -> Result<Vec<CatalogProduct>, reqwest::Error> {
        let found = try_join_all(product_ids.iter().map(|id| self.product(id))).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// `None` when catalog-cache answers 404: it has no such product.
    async fn product(&self, product_id: &str) -> Result<Option<CatalogProduct>, reqwest::Error> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("an http:// URL has a path")
            .pop_if_empty()
            .extend(["products", product_id]);
        let response = self.http.get(url).send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // Deserialised with the tolerant `CatalogProduct`: `stock`, `revision` and `updated_at`
        // of catalog-cache's answer are ignored.
        response.error_for_status()?.json().await.map(Some)
    }
}

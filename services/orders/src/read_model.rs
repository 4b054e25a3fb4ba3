//! The `catalog_products` read model: catalog-cache's products as orders needs them, kept up to
//! date from `catalog-cache.products.v1` so that pricing an order is a local query.

use std::collections::HashMap;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use integration_events::{EntityTopic, ReadModel};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

/// Where catalog-cache announces every change of a product; see
/// `docs/contracts/catalog-cache.products.v1.md`.
pub const PRODUCTS_TOPIC: EntityTopic = EntityTopic::new("catalog-cache", "products", "product");

/// A product as orders reads it: from a `catalog-cache.products.v1` event or from the read
/// model.
///
/// Only the fields orders uses (tolerant reader): the rest of catalog-cache's product, such as
/// `stock`, and whatever fields it adds later are ignored, so they can change without breaking
/// orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CatalogProduct {
    pub product_id: String,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    /// An inactive product cannot be ordered.
    pub active: bool,
}

/// A row of the read model: the product, the revision of the event it came from and when that
/// event was applied, which together say how fresh the copy is. The body of
/// `GET /catalog/products/{product_id}`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SyncedProduct {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub product: CatalogProduct,
    pub revision: i64,
    pub synced_at: DateTime<Utc>,
}

/// The projection's SQL. The [`integration_events::Projector`] decides whether an event applies
/// (newer revision, not a duplicate) and calls these in the transaction that records it.
#[derive(Debug, Clone, Copy)]
pub struct CatalogProducts;

impl ReadModel for CatalogProducts {
    type Entity = CatalogProduct;

    fn name(&self) -> &'static str {
        "catalog_products"
    }

    async fn upsert(
        &self,
        conn: &mut PgConnection,
        id: &str,
        revision: i64,
        product: &CatalogProduct,
    ) -> anyhow::Result<()> {
        // `id` is the event's entity id, which is also its Kafka key: the one the projector
        // checked the revision for.
        sqlx::query(
            "INSERT INTO catalog_products
                 (product_id, sku, name, price_cents, currency, active, revision, synced_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now())
             ON CONFLICT (product_id) DO UPDATE SET
                 sku = EXCLUDED.sku,
                 name = EXCLUDED.name,
                 price_cents = EXCLUDED.price_cents,
                 currency = EXCLUDED.currency,
                 active = EXCLUDED.active,
                 revision = EXCLUDED.revision,
                 synced_at = EXCLUDED.synced_at",
        )
        .bind(id)
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_cents)
        .bind(&product.currency)
        .bind(product.active)
        .bind(revision)
        .execute(conn)
        .await
        .with_context(|| format!("Failed to upsert catalog product {id}"))?;
        Ok(())
    }

    async fn delete(&self, conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM catalog_products WHERE product_id = $1")
            .bind(id)
            .execute(conn)
            .await
            .with_context(|| format!("Failed to delete catalog product {id}"))?;
        Ok(())
    }

    async fn clear(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM catalog_products")
            .execute(conn)
            .await
            .context("Failed to clear catalog_products")?;
        Ok(())
    }
}

/// The read model's row for `product_id`, if catalog-cache announced the product and did not
/// delete it since.
pub async fn find(pool: &PgPool, product_id: &str) -> anyhow::Result<Option<SyncedProduct>> {
    sqlx::query_as(
        "SELECT product_id, sku, name, price_cents, currency, active, revision, synced_at
         FROM catalog_products WHERE product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await
    .with_context(|| format!("Failed to read catalog product {product_id}"))
}

/// Those of `product_ids` that the read model holds, by id; an id missing from the map is a
/// product orders does not know.
pub async fn find_many(
    pool: &PgPool,
    product_ids: &[String],
) -> anyhow::Result<HashMap<String, CatalogProduct>> {
    let products: Vec<CatalogProduct> = sqlx::query_as(
        "SELECT product_id, sku, name, price_cents, currency, active
         FROM catalog_products WHERE product_id = ANY($1)",
    )
    .bind(product_ids)
    .fetch_all(pool)
    .await
    .context("Failed to read catalog products")?;
    Ok(products
        .into_iter()
        .map(|product| (product.product_id.clone(), product))
        .collect())
}

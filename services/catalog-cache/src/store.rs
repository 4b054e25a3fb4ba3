//! The `products` table, and the event that every change records in its transaction.
//!
//! A change and its event commit together or not at all: the event is a row of the outbox, which
//! the relay publishes once the transaction has committed.

use anyhow::Context as _;
use integration_events::EventEnvelope;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::config::SERVICE_NAME;
use crate::events::{PRODUCT_CREATED, PRODUCT_DELETED, PRODUCT_UPDATED, PRODUCTS, ProductEntity};
use crate::product::{Product, ProductFields, ProductId, PutProduct};

/// What a PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// The product did not exist; it does now, and a `created` event is recorded.
    Created(Product),
    /// Some fields differed; they are stored under the next revision, and an `updated` event
    /// is recorded.
    Updated(Product),
    /// The product already had exactly these fields: nothing changed, no event.
    Unchanged(Product),
}

/// One page of products in `product_id` order, as `GET /products` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    pub items: Vec<Product>,
    /// Where the next page starts, `None` on the last page. To clients an opaque `cursor`
    /// value; here the last id of this page.
    pub next_cursor: Option<String>,
}

/// Creates or updates the product, and records its event, in one transaction.
pub async fn put(pool: &PgPool, command: &PutProduct) -> anyhow::Result<Put> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    let put = loop {
        if let Some(current) = lock(&mut tx, &command.product_id).await? {
            break update(&mut tx, current, &command.fields).await?;
        }
        if let Some(created) = create(&mut tx, &command.product_id, &command.fields).await? {
            break Put::Created(created);
        }
        // A concurrent request created the product after `lock` found nothing; `create` waited
        // for it to commit. Its row exists now, so the next `lock` finds and locks it.
    };
    tx.commit()
        .await
        .context("Failed to commit the product change")?;
    Ok(put)
}

/// The product, row-locked until the transaction ends, so that concurrent writers of one
/// product take turns and each change gets its own revision.
async fn lock(conn: &mut PgConnection, product_id: &ProductId) -> anyhow::Result<Option<Product>> {
    sqlx::query_as(
        "SELECT product_id, sku, name, price_cents, currency, stock, active, revision, updated_at
         FROM products WHERE product_id = $1
         FOR UPDATE",
    )
    .bind(product_id.as_str())
    .fetch_optional(conn)
    .await
    .context("Failed to lock the product")
}

/// Inserts the product and records its `created` event. `None` when a concurrent request
/// inserted it first.
async fn create(
    conn: &mut PgConnection,
    product_id: &ProductId,
    fields: &ProductFields,
) -> anyhow::Result<Option<Product>> {
    // A product created again after a delete continues its revisions (see `deleted_products`).
    let created: Option<Product> = sqlx::query_as(
        "INSERT INTO products
             (product_id, sku, name, price_cents, currency, stock, active, revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7,
                 COALESCE((SELECT revision FROM deleted_products WHERE product_id = $1), 0) + 1)
         ON CONFLICT (product_id) DO NOTHING
         RETURNING product_id, sku, name, price_cents, currency, stock, active, revision, updated_at",
    )
    .bind(product_id.as_str())
    .bind(&fields.sku)
    .bind(&fields.name)
    .bind(fields.price_cents)
    .bind(&fields.currency)
    .bind(fields.stock)
    .bind(fields.active)
    .fetch_optional(&mut *conn)
    .await
    .context("Failed to insert the product")?;
    let Some(product) = created else {
        return Ok(None);
    };

    sqlx::query("DELETE FROM deleted_products WHERE product_id = $1")
        .bind(&product.product_id)
        .execute(&mut *conn)
        .await
        .context("Failed to forget the product's deletion")?;
    let event = EventEnvelope::created(
        PRODUCTS.entity_type,
        &product.product_id,
        product.revision,
        SERVICE_NAME,
        ProductEntity::from(&product),
    );
    PRODUCTS.record(conn, &event, PRODUCT_CREATED).await?;
    Ok(Some(product))
}

/// Stores `fields` over the locked `current` product under the next revision and records the
/// `updated` event; leaves an unchanged product alone.
async fn update(
    conn: &mut PgConnection,
    current: Product,
    fields: &ProductFields,
) -> anyhow::Result<Put> {
    let modified_fields = current.fields.modified_fields(fields);
    if modified_fields.is_empty() {
        return Ok(Put::Unchanged(current));
    }

    let product: Product = sqlx::query_as(
        "UPDATE products
         SET sku = $2, name = $3, price_cents = $4, currency = $5, stock = $6, active = $7,
             revision = revision + 1, updated_at = now()
         WHERE product_id = $1
         RETURNING product_id, sku, name, price_cents, currency, stock, active, revision, updated_at",
    )
    .bind(&current.product_id)
    .bind(&fields.sku)
    .bind(&fields.name)
    .bind(fields.price_cents)
    .bind(&fields.currency)
    .bind(fields.stock)
    .bind(fields.active)
    .fetch_one(&mut *conn)
    .await
    .context("Failed to update the product")?;

    let event = EventEnvelope::updated(
        PRODUCTS.entity_type,
        &product.product_id,
        product.revision,
        SERVICE_NAME,
        ProductEntity::from(&product),
        modified_fields,
    );
    PRODUCTS.record(conn, &event, PRODUCT_UPDATED).await?;
    Ok(Put::Updated(product))
}

pub async fn get(pool: &PgPool, product_id: &str) -> anyhow::Result<Option<Product>> {
    sqlx::query_as(
        "SELECT product_id, sku, name, price_cents, currency, stock, active, revision, updated_at
         FROM products WHERE product_id = $1",
    )
    .bind(product_id)
    .fetch_optional(pool)
    .await
    .context("Failed to read the product")
}

/// Up to `limit` products with ids after `after` (keyset pagination: each page costs one index
/// range scan however deep it is, and products created meanwhile neither repeat nor shift
/// later pages).
pub async fn list(pool: &PgPool, after: Option<&str>, limit: u32) -> anyhow::Result<Page> {
    // One row more than asked for tells whether another page follows. Without a cursor the
    // list starts after the empty string, before every id: one query, which reads the primary
    // key index from the cursor on.
    let mut items: Vec<Product> = sqlx::query_as(
        "SELECT product_id, sku, name, price_cents, currency, stock, active, revision, updated_at
         FROM products
         WHERE product_id > $1
         ORDER BY product_id
         LIMIT $2",
    )
    .bind(after.unwrap_or_default())
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await
    .context("Failed to list products")?;

    let limit = limit as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| last.product_id.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Deletes the product and records its `deleted` event (and, after it, the tombstone) in one
/// transaction. `false` when there was no such product.
pub async fn delete(pool: &PgPool, product_id: &str) -> anyhow::Result<bool> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    let revision: Option<i64> =
        sqlx::query_scalar("DELETE FROM products WHERE product_id = $1 RETURNING revision")
            .bind(product_id)
            .fetch_optional(&mut *tx)
            .await
            .context("Failed to delete the product")?;
    let Some(revision) = revision else {
        return Ok(false);
    };

    // The delete is a change of its own, with the next revision.
    let revision = revision + 1;
    sqlx::query("INSERT INTO deleted_products (product_id, revision) VALUES ($1, $2)")
        .bind(product_id)
        .bind(revision)
        .execute(&mut *tx)
        .await
        .context("Failed to remember the product's deletion")?;
    let event = EventEnvelope::<ProductEntity>::deleted(
        PRODUCTS.entity_type,
        product_id,
        revision,
        SERVICE_NAME,
    );
    PRODUCTS.record(&mut tx, &event, PRODUCT_DELETED).await?;
    tx.commit()
        .await
        .context("Failed to commit the product's deletion")?;
    Ok(true)
}

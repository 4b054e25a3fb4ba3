//! What this service publishes: every change of a product on `catalog-cache.products.v1`.
//!
//! The contract, with example messages, is `docs/contracts/catalog-cache.products.v1.md`.

use integration_events::EntityTopic;
use serde::Serialize;

use crate::config::SERVICE_NAME;
use crate::product::Product;

/// `catalog-cache.products.v1`: keyed by product id, compacted.
pub const PRODUCTS: EntityTopic = EntityTopic::new(SERVICE_NAME, "products", "product");

/// The `message_type` header of each kind of event.
pub const PRODUCT_CREATED: &str = "ProductCreated";
pub const PRODUCT_UPDATED: &str = "ProductUpdated";
pub const PRODUCT_DELETED: &str = "ProductDeleted";

/// The entity in `created` and `updated` events. The revision travels in the envelope.
///
/// A type of its own rather than [`Product`] itself: the HTTP response may change with the API,
/// while this shape is a contract that other services depend on and that only ever gains fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductEntity<'a> {
    pub product_id: &'a str,
    pub sku: &'a str,
    pub name: &'a str,
    pub price_cents: i64,
    pub currency: &'a str,
    pub stock: i64,
    pub active: bool,
}

impl<'a> From<&'a Product> for ProductEntity<'a> {
    fn from(product: &'a Product) -> Self {
        Self {
            product_id: &product.product_id,
            sku: &product.fields.sku,
            name: &product.fields.name,
            price_cents: product.fields.price_cents,
            currency: &product.fields.currency,
            stock: product.fields.stock,
            active: product.fields.active,
        }
    }
}

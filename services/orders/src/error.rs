//! [`ApiError`]: everything a request can fail with, and the problem response for each.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::http::Problem;
use uuid::Uuid;

/// Why a request failed. Each variant is one kind of `application/problem+json` response (see
/// the `From` below); handlers and the functions they call return it, and `?` turns any other
/// error (`anyhow`) into [`ApiError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: fields of the request break a rule; what is wrong, keyed by field
    /// (`customer_email`, `items[0].quantity`).
    #[error("invalid order: {0:?}")]
    InvalidOrder(BTreeMap<String, String>),

    /// 422: products that are unknown (to orders' copy of the catalog) or not for sale.
    #[error("products cannot be ordered: {0:?}")]
    UnavailableProducts(Vec<String>),

    /// 422: the products are priced in more than one currency, and an order has one.
    #[error("products priced in several currencies: {0:?}")]
    MixedCurrencies(Vec<String>),

    /// 404.
    #[error("order {0} not found")]
    OrderNotFound(Uuid),

    /// 409: the order was cancelled (not paid in time) and cannot be paid any more.
    #[error("order {0} was cancelled")]
    OrderCancelled(Uuid),

    /// 409: the order's `payment_due_at` has passed; its cancellation follows.
    #[error("order {0} was due by {1}")]
    PaymentOverdue(Uuid, chrono::DateTime<chrono::Utc>),

    /// 422: the `Idempotency-Key` header is invalid, or was used with another request.
    #[error(transparent)]
    IdempotencyKey(#[from] idempotency::KeyError),

    /// 422: the product id in the path is not one that an order could name (empty, too long,
    /// control characters): what is wrong with it.
    #[error("invalid product id: {0}")]
    InvalidProductId(String),

    /// 404: not in orders' copy of the catalog.
    #[error("catalog product {0} not found")]
    CatalogProductNotFound(String),

    /// 503, in the benchmark baseline only (`CATALOG_LOOKUP=sync`): catalog-cache failed or did
    /// not answer in time. With the read model there is nothing to wait for.
    #[error("catalog-cache is unavailable")]
    CatalogUnavailable(#[source] reqwest::Error),

    /// 500: a bug or an outage of the service's own database. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidOrder(errors) => Problem::unprocessable(
                "The order is invalid; `errors` says what is wrong with which field.",
                serde_json::to_value(errors).expect("a map of strings is JSON"),
            ),
            ApiError::UnavailableProducts(product_ids) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                    .with_title("Products unavailable")
                    .with_detail(format!(
                        "These products are unknown or not for sale: {}.",
                        product_ids.join(", ")
                    ))
                    .with_extension("unavailable_products", product_ids)
            }
            ApiError::MixedCurrencies(currencies) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                .with_title("Mixed currencies")
                .with_detail(format!(
                    "The products are priced in {}; an order is paid in one currency, so order \
                     them separately.",
                    currencies.join(" and ")
                ))
                .with_extension("currencies", currencies),
            ApiError::OrderNotFound(order_id) => {
                Problem::not_found(format!("No order {order_id} exists."))
            }
            ApiError::OrderCancelled(order_id) => Problem::conflict(format!(
                "Order {order_id} was cancelled because it was not paid by its payment_due_at; \
                 it cannot be paid any more. Place a new order."
            ))
            .with_title("Order cancelled"),
            ApiError::PaymentOverdue(order_id, due) => Problem::conflict(format!(
                "Order {order_id} had to be paid by {}; it cannot be paid any more and will be \
                 cancelled. Place a new order.",
                due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .with_title("Payment overdue"),
            ApiError::IdempotencyKey(error) => error.problem(),
            ApiError::InvalidProductId(reason) => Problem::unprocessable(
                "The product id is invalid; `errors` says why.",
                serde_json::json!({ "product_id": reason }),
            ),
            ApiError::CatalogProductNotFound(product_id) => Problem::not_found(format!(
                "Product {product_id} is not in orders' copy of the catalog: catalog-cache never \
                 announced it, deleted it, or its event has not arrived yet."
            )),
            ApiError::CatalogUnavailable(source) => {
                let error = anyhow::Error::new(source);
                tracing::warn!(error = format!("{error:#}"), "catalog-cache did not answer");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_title("Catalog unavailable")
                    .with_detail("catalog-cache did not answer in time; try again later.")
            }
            ApiError::Internal(error) => outbox::PayloadTooLarge::problem_in(&error)
                .unwrap_or_else(|| Problem::internal(&error)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

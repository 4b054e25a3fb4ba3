//! [`ApiError`]: everything a request can fail with, and the problem response for each.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::http::Problem;

use crate::order::OrderError;

/// Why a request failed. Each variant is one kind of `application/problem+json` response (see
/// the `From`s below): the domain's [`OrderError`]s, and what only the HTTP layer knows about.
/// Handlers return it; `?` turns an [`OrderError`] into [`ApiError::Order`] and any other error
/// (`anyhow`) into [`ApiError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What placing, paying for or reading an order failed with: 422 for an invalid order
    /// (`errors` keyed by field, `customer_email`, `items[0].quantity`), unavailable products or
    /// mixed currencies; 404 for an unknown order; 409 for a cancelled or overdue one.
    #[error(transparent)]
    Order(#[from] OrderError),

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

    /// 500: a bug or an outage of the service's own database. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Order(error) => error.into(),
            ApiError::IdempotencyKey(error) => error.problem(),
            ApiError::InvalidProductId(reason) => Problem::unprocessable(
                "The product id is invalid; `errors` says why.",
                serde_json::json!({ "product_id": reason }),
            ),
            ApiError::CatalogProductNotFound(product_id) => Problem::not_found(format!(
                "Product {product_id} is not in orders' copy of the catalog: catalog-cache never \
                 announced it, deleted it, or its event has not arrived yet."
            )),
            ApiError::Internal(error) => internal(&error),
        }
    }
}

impl From<OrderError> for Problem {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::Invalid(errors) => Problem::unprocessable(
                "The order is invalid; `errors` says what is wrong with which field.",
                serde_json::to_value(errors).expect("a map of strings is JSON"),
            ),
            OrderError::UnavailableProducts(product_ids) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                    .with_title("Products unavailable")
                    .with_detail(format!(
                        "These products are unknown or not for sale: {}.",
                        product_ids.join(", ")
                    ))
                    .with_extension("unavailable_products", product_ids)
            }
            OrderError::MixedCurrencies(currencies) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                    .with_title("Mixed currencies")
                    .with_detail(format!(
                        "The products are priced in {}; an order is paid in one currency, so order \
                     them separately.",
                        currencies.join(" and ")
                    ))
                    .with_extension("currencies", currencies)
            }
            OrderError::NotFound(order_id) => {
                Problem::not_found(format!("No order {order_id} exists."))
            }
            OrderError::Cancelled(order_id) => Problem::conflict(format!(
                "Order {order_id} was cancelled because it was not paid by its payment_due_at; \
                 it cannot be paid any more. Place a new order."
            ))
            .with_title("Order cancelled"),
            OrderError::PaymentOverdue(order_id, due) => Problem::conflict(format!(
                "Order {order_id} had to be paid by {}; it cannot be paid any more and will be \
                 cancelled. Place a new order.",
                due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))
            .with_title("Payment overdue"),
            OrderError::IdempotencyKey(error) => error.problem(),
            OrderError::Internal(error) => internal(&error),
        }
    }
}

/// A 500, logged; an event too large for the broker gets its own problem.
fn internal(error: &anyhow::Error) -> Problem {
    outbox::PayloadTooLarge::problem_in(error).unwrap_or_else(|| Problem::internal(error))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

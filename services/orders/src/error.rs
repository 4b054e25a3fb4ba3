//! [`ApiError`]: everything a request can fail with, and the problem response for each.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
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

    /// 404: not in orders' copy of the catalog.
    #[error("catalog product {0} not found")]
    CatalogProductNotFound(String),

    /// 400: a query parameter is out of range; what is wrong, keyed by parameter.
    #[error("invalid query parameters: {0:?}")]
    InvalidQuery(BTreeMap<String, String>),

    /// 404: no pending schedule has this id (unknown, fired or cancelled already).
    #[error("no pending schedule {0}")]
    ScheduleNotFound(Uuid),

    /// 401 on the admin endpoints, with `WWW-Authenticate: Bearer`.
    #[error("unauthorized: {0:?}")]
    Unauthorized(Credentials),

    /// 503, in the benchmark baseline only (`CATALOG_LOOKUP=sync`): catalog-cache failed or did
    /// not answer in time. With the read model there is nothing to wait for.
    #[error("catalog-cache is unavailable")]
    CatalogUnavailable(#[source] reqwest::Error),

    /// 500: a bug or an outage of the service's own database. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What was wrong with the credentials of an admin request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that is not `ADMIN_TOKEN`.
    Wrong,
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
            ApiError::CatalogProductNotFound(product_id) => Problem::not_found(format!(
                "Product {product_id} is not in orders' copy of the catalog: catalog-cache never \
                 announced it, deleted it, or its event has not arrived yet."
            )),
            ApiError::InvalidQuery(errors) => Problem::bad_request(
                "A query parameter is invalid; `errors` says what is wrong with each.",
            )
            .with_extension("errors", serde_json::json!(errors)),
            ApiError::ScheduleNotFound(id) => Problem::not_found(format!(
                "No pending schedule {id}: it does not exist, or it fired or was cancelled \
                 already."
            )),
            ApiError::Unauthorized(credentials) => unauthorized_problem(credentials),
            ApiError::CatalogUnavailable(source) => {
                let error = anyhow::Error::new(source);
                tracing::warn!(error = format!("{error:#}"), "catalog-cache did not answer");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                    .with_title("Catalog unavailable")
                    .with_detail("catalog-cache did not answer in time; try again later.")
            }
            ApiError::Internal(error) => Problem::internal(&error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            // The challenge of RFC 6750, with `error="invalid_token"` when a token was given.
            Self::Unauthorized(credentials) => {
                let challenge = match credentials {
                    Credentials::Missing => r#"Bearer realm="orders-admin""#,
                    Credentials::Wrong => r#"Bearer realm="orders-admin", error="invalid_token""#,
                };
                (
                    [(WWW_AUTHENTICATE, challenge)],
                    unauthorized_problem(credentials),
                )
                    .into_response()
            }
            other => Problem::from(other).into_response(),
        }
    }
}

fn unauthorized_problem(credentials: Credentials) -> Problem {
    let detail = match credentials {
        Credentials::Missing => {
            "The admin endpoints need an `Authorization: Bearer <ADMIN_TOKEN>` header."
        }
        Credentials::Wrong => "The bearer token is not the admin token.",
    };
    Problem::new(StatusCode::UNAUTHORIZED).with_detail(detail)
}

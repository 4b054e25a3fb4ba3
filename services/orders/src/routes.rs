//! The HTTP API: `POST /orders`, `GET /orders/{order_id}`, `POST /orders/{order_id}/pay` and
//! `GET /catalog/products/{product_id}`. The admin endpoints come from the pattern crates (see
//! `lib.rs`).

use axum::Router;
use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use platform::http::{Json, Path};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::order::{self, Order, OrderError, PlaceOrder};
use crate::read_model::{self, SyncedProduct};
use crate::store::{self, FollowUps};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The tasks and schedules a new order comes with.
    pub follow_ups: FollowUps,
}

/// The service's own routes; `platform::http::app` adds health, metrics and the middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{order_id}", get(get_order))
        .route("/orders/{order_id}/pay", post(pay_order))
        .route("/catalog/products/{product_id}", get(get_catalog_product))
        .with_state(state)
}

/// 201 with the order, priced from the read model, and a `Location` header with its URL. The
/// confirmation is only enqueued: the answer does not wait for it to be sent.
#[tracing::instrument(
    name = "orders.place",
    skip_all,
    fields(customer_id = %request.customer_id, items = request.items.len(), order_id)
)]
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(request): Json<PlaceOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let key = idempotency::IdempotencyKey::from_headers(&headers)?;
    let order = store::place(&state.pool, &state.follow_ups, request, key.as_ref()).await?;
    tracing::Span::current().record("order_id", tracing::field::display(order.order_id));
    tracing::info!(total_cents = order.total_cents, "order placed");
    let location = format!("/orders/{}", order.order_id);
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(order)))
}

#[tracing::instrument(name = "orders.get", skip(state))]
async fn get_order(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> Result<Json<Order>, ApiError> {
    store::find(&state.pool, order_id)
        .await?
        .map(Json)
        .ok_or(ApiError::Order(OrderError::NotFound(order_id)))
}

/// 200 with the paid order. Paying again answers the same (paid) order; a cancelled order is a
/// 409, an unknown one a 404. There is no payment provider in this reference: the call stands
/// for its confirmation.
#[tracing::instrument(name = "orders.pay", skip(state))]
async fn pay_order(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> Result<Json<Order>, ApiError> {
    let order = store::pay(&state.pool, order_id).await?;
    tracing::info!("order paid");
    Ok(Json(order))
}

/// orders' copy of a product, with the revision and time of the event it came from: how
/// stale the copy is, for operators and tests.
///
/// An id no order could name (see [`order::MAX_ID_LEN`]) is a 422 rather than a 404: it never
/// reaches the database, which refuses NUL in text.
#[tracing::instrument(name = "catalog_products.get", skip(state))]
async fn get_catalog_product(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Json<SyncedProduct>, ApiError> {
    platform::validate::text(&product_id, order::MAX_ID_LEN).map_err(ApiError::InvalidProductId)?;
    read_model::find(&state.pool, &product_id)
        .await?
        .map(Json)
        .ok_or(ApiError::CatalogProductNotFound(product_id))
}

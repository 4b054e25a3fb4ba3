//! The HTTP API: `/products`, and [`router`], which serves it. Its errors are
//! [`crate::error::ApiError`]'s.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use platform::http::{Json, Path, Query};
use serde::Deserialize;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::product::{FieldErrors, Product, ProductFields, ProductId, PutProduct};
use crate::store::{self, Page, Put};

/// Page size when `limit` is not given.
const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest `limit` a client may ask for.
const MAX_PAGE_SIZE: u32 = 500;

/// The service's routes, for `platform::http::app`.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/products", get(list_products))
        .route(
            "/products/{product_id}",
            get(get_product).put(put_product).delete(delete_product),
        )
        .with_state(pool)
}

/// `PUT /products/{product_id}`: 201 with the product when it is new, 200 when it existed
/// (whether or not anything changed).
#[tracing::instrument(skip(pool, fields))]
async fn put_product(
    State(pool): State<PgPool>,
    Path(product_id): Path<String>,
    Json(fields): Json<ProductFields>,
) -> Result<(StatusCode, Json<Product>), ApiError> {
    let command = PutProduct::parse(product_id, fields).map_err(ApiError::InvalidFields)?;
    let response = match store::put(&pool, &command).await? {
        Put::Created(product) => (StatusCode::CREATED, Json(product)),
        Put::Updated(product) | Put::Unchanged(product) => (StatusCode::OK, Json(product)),
    };
    Ok(response)
}

/// The product id of a `GET` or `DELETE`: one that no product can have (a NUL, 1,000
/// characters) is a 422 naming it, as in a `PUT`, and never reaches the database.
fn product_id(product_id: String) -> Result<ProductId, ApiError> {
    ProductId::parse(product_id)
        .map_err(|reason| ApiError::InvalidFields(FieldErrors::from([("product_id", reason)])))
}

/// `GET /products/{product_id}`.
#[tracing::instrument(skip(pool))]
async fn get_product(
    State(pool): State<PgPool>,
    Path(product_id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let product_id = self::product_id(product_id)?;
    store::get(&pool, product_id.as_str())
        .await?
        .map(Json)
        .ok_or(ApiError::ProductNotFound)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /products?limit=&cursor=`: products in id order, a page at a time.
#[tracing::instrument(skip(pool))]
async fn list_products(
    State(pool): State<PgPool>,
    Query(params): Query<ListParams>,
) -> Result<Json<Page>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        let errors =
            FieldErrors::from([("limit", format!("must be between 1 and {MAX_PAGE_SIZE}"))]);
        return Err(ApiError::InvalidQuery(errors));
    }
    // A cursor is a product id (the last of the previous page): anything else, a NUL say,
    // never reaches the database.
    let cursor = params
        .cursor
        .map(ProductId::parse)
        .transpose()
        .map_err(|_| {
            ApiError::InvalidQuery(FieldErrors::from([(
                "cursor",
                "must be the next_cursor of a previous page".to_owned(),
            )]))
        })?;
    let page = store::list(&pool, cursor.as_ref().map(ProductId::as_str), limit).await?;
    Ok(Json(page))
}

/// `DELETE /products/{product_id}`: 204, or 404 when there is no such product.
#[tracing::instrument(skip(pool))]
async fn delete_product(
    State(pool): State<PgPool>,
    Path(product_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let product_id = self::product_id(product_id)?;
    if store::delete(&pool, product_id.as_str()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ProductNotFound)
    }
}

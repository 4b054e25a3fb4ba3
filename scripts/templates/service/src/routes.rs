//! The HTTP API: `/items/{item_id}`, and [`router`], which serves it. Its errors are
//! [`crate::error::ApiError`]'s.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use platform::http::{Json, Path};
use sqlx::PgPool;

use crate::error::ApiError;
use crate::item::{FieldErrors, Item, ItemFields, ItemId, PutItem};
use crate::store::{self, Put};

/// The service's routes, for `service_host::Routes::api`.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route(
            "/items/{item_id}",
            get(get_item).put(put_item).delete(delete_item),
        )
        .with_state(pool)
}

/// `PUT /items/{item_id}`: 201 with the item when it is new, 200 when it existed.
#[tracing::instrument(skip(pool, fields))]
async fn put_item(
    State(pool): State<PgPool>,
    Path(item_id): Path<String>,
    Json(fields): Json<ItemFields>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let command = PutItem::parse(item_id, fields).map_err(ApiError::InvalidFields)?;
    let response = match store::put(&pool, &command).await? {
        Put::Created(item) => (StatusCode::CREATED, Json(item)),
        Put::Updated(item) | Put::Unchanged(item) => (StatusCode::OK, Json(item)),
    };
    Ok(response)
}

/// The id of a `GET` or `DELETE`: one no item can have is a 422 naming it, as in a `PUT`.
fn item_id(item_id: String) -> Result<ItemId, ApiError> {
    ItemId::parse(item_id)
        .map_err(|reason| ApiError::InvalidFields(FieldErrors::from([("item_id", reason)])))
}

/// `GET /items/{item_id}`: 200 with the item, 404.
#[tracing::instrument(skip(pool))]
async fn get_item(
    State(pool): State<PgPool>,
    Path(item_id): Path<String>,
) -> Result<Json<Item>, ApiError> {
    let item_id = self::item_id(item_id)?;
    store::get(&pool, item_id.as_str())
        .await?
        .map(Json)
        .ok_or(ApiError::ItemNotFound)
}

/// `DELETE /items/{item_id}`: 204, or 404 when there is no such item.
#[tracing::instrument(skip(pool))]
async fn delete_item(
    State(pool): State<PgPool>,
    Path(item_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let item_id = self::item_id(item_id)?;
    if store::delete(&pool, item_id.as_str()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::ItemNotFound)
    }
}

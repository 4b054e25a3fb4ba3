//! The HTTP API: `GET /notifications`. The DLQ admin endpoints are in [`crate::admin`].

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use platform::http::{Json, Query};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;
use crate::notification::Kind;
use crate::store::{self, DeliveryRecord, Filter};

/// How many notifications `GET /notifications` returns when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` a client may ask for.
const MAX_LIMIT: u32 = 1000;
/// The largest request body, in bytes. No route of notifications reads a body (the admin
/// `POST`s take none): a client's body is never buffered, and 1 KiB stays far from anything a
/// request could need should a route ever read one.
pub const BODY_LIMIT: usize = 1024;

/// The service's own routes; `platform::http::app` adds health, metrics and the middleware.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/notifications", get(list_notifications))
        .with_state(pool)
}

/// The query of `GET /notifications`. A value that does not parse (an `order_id` that is not a
/// UUID, a `kind` this service does not know) is a 400 problem from the extractor.
#[derive(Debug, Deserialize)]
struct ListParams {
    order_id: Option<Uuid>,
    kind: Option<Kind>,
    limit: Option<u32>,
}

/// `GET /notifications?order_id=&kind=&limit=`: the delivered notifications, newest first.
#[tracing::instrument(name = "notifications.list", skip(pool))]
async fn list_notifications(
    State(pool): State<PgPool>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<DeliveryRecord>>, ApiError> {
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(BTreeMap::from([(
            "limit".to_owned(),
            format!("must be between 1 and {MAX_LIMIT}"),
        )])));
    }
    let filter = Filter {
        order_id: params.order_id,
        kind: params.kind,
        limit,
    };
    Ok(Json(store::list(&pool, filter).await?))
}

//! The baseline: `POST /orders` served by the bench itself, placing an order the way orders does
//! but pricing it with a synchronous `GET /products/{id}` to catalog-cache per product, instead
//! of orders' read model.
//!
//! orders has only its read model, so the synchronous design it replaces lives here, in an axum
//! handler of the bench with a database of its own. It does what orders' `POST /orders` does,
//! in the same order:
//!
//! 1. parse and check the body (at least one item, quantities ≥ 1);
//! 2. ask catalog-cache for every distinct product at once (`try_join_all`, each call bounded by
//!    [`super::SYNC_CATALOG_TIMEOUT`]); 404 is an unknown product, anything else failing answers
//!    503, as a service whose dependency is down;
//! 3. price the items (every product known and active, one currency, the total);
//! 4. in one transaction: the order, its items (one `UNNEST` insert), its `OrderPlaced` event and
//!    its `SendOrderConfirmation` task in the outbox, and its two schedules (the cancellation at
//!    the payment deadline, the reminder half-way there) in `scheduled_tasks`, with the outbox
//!    and task-scheduler crates orders uses; then 201 with the order.
//!
//! No relay or scheduler runs on this database: what orders does after the response (publish,
//! fire) is not part of a request on either side. Idempotency keys are left out (the bench sends
//! none, so orders skips them too).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use task_queue::Task;
use task_scheduler::{Schedules, TaskTemplate};
use uuid::Uuid;

use crate::services::Server;

/// As orders' `PAYMENT_TIMEOUT` default.
const PAYMENT_TIMEOUT: Duration = Duration::from_mins(15);
/// Topics of the outbox rows and schedules; nothing publishes or fires them.
const ORDERS_TOPIC: &str = "asyncron-bench.baseline.orders";
const TASKS_TOPIC: &str = "asyncron-bench.baseline.tasks";

const SCHEMA: &str = "
CREATE TABLE baseline_orders (
    order_id       UUID        PRIMARY KEY,
    customer_id    TEXT        NOT NULL,
    customer_email TEXT        NOT NULL,
    status         TEXT        NOT NULL,
    total_cents    BIGINT      NOT NULL CHECK (total_cents >= 0),
    currency       TEXT        NOT NULL,
    revision       BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    payment_due_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE baseline_order_items (
    order_id         UUID   NOT NULL REFERENCES baseline_orders (order_id) ON DELETE CASCADE,
    line             INT    NOT NULL CHECK (line >= 1),
    product_id       TEXT   NOT NULL,
    quantity         INT    NOT NULL CHECK (quantity >= 1),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line)
);";

/// The running baseline; stopped when dropped.
#[derive(Debug)]
pub struct Baseline {
    pub url: String,
    _server: Server,
}

#[derive(Debug, Clone)]
struct BaselineState {
    pool: PgPool,
    http: reqwest::Client,
    catalog_url: String,
}

impl Baseline {
    /// Creates the tables in `pool`'s database (with the outbox's and the scheduler's) and
    /// serves `POST /orders` on a free port.
    pub async fn start(
        pool: PgPool,
        catalog_url: String,
        catalog_timeout: Duration,
    ) -> anyhow::Result<Self> {
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .context("Failed to create the baseline's tables")?;
        outbox::migrate(&pool).await?;
        task_scheduler::migrate(&pool).await?;
        let http = reqwest::Client::builder()
            .timeout(catalog_timeout)
            .build()
            .context("Failed to build the baseline's HTTP client")?;
        let state = BaselineState {
            pool,
            http,
            catalog_url,
        };
        let router = Router::new()
            .route("/orders", post(place_order))
            .with_state(state);
        let server = Server::start(router, "").await?;
        Ok(Self {
            url: server.url.clone(),
            _server: server,
        })
    }
}

/// The body of `POST /orders`, as orders reads it.
#[derive(Debug, Deserialize)]
struct PlaceOrder {
    customer_id: String,
    customer_email: String,
    items: Vec<RequestedItem>,
}

#[derive(Debug, Deserialize)]
struct RequestedItem {
    product_id: String,
    quantity: i32,
}

/// The fields of catalog-cache's product that pricing reads.
#[derive(Debug, Deserialize)]
pub(super) struct CatalogPrice {
    pub(super) price_cents: i64,
    pub(super) currency: String,
    pub(super) active: bool,
}

/// The tasks the baseline schedules and enqueues, as orders' (their payloads are not read).
#[derive(Debug, Serialize, Deserialize)]
struct SendOrderConfirmation {
    order_id: Uuid,
    customer_email: String,
    total_cents: i64,
    currency: String,
}

impl Task for SendOrderConfirmation {
    const NAME: &'static str = "SendOrderConfirmation";
}

#[derive(Debug, Serialize, Deserialize)]
struct CancelUnpaidOrder {
    order_id: Uuid,
}

impl Task for CancelUnpaidOrder {
    const NAME: &'static str = "CancelUnpaidOrder";
}

#[derive(Debug, Serialize, Deserialize)]
struct SendPaymentReminder {
    order_id: Uuid,
    customer_email: String,
    payment_due_at: DateTime<Utc>,
}

impl Task for SendPaymentReminder {
    const NAME: &'static str = "SendPaymentReminder";
}

type Answer = (StatusCode, Json<serde_json::Value>);

fn problem(status: StatusCode, detail: impl Into<String>) -> Answer {
    (status, Json(json!({ "detail": detail.into() })))
}

async fn place_order(State(state): State<BaselineState>, Json(order): Json<PlaceOrder>) -> Answer {
    if order.items.is_empty() || order.items.iter().any(|item| item.quantity < 1) {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least one item, quantities of at least 1",
        );
    }
    let product_ids: BTreeSet<&str> = order
        .items
        .iter()
        .map(|item| item.product_id.as_str())
        .collect();
    let found = try_join_all(
        product_ids
            .iter()
            .map(|product_id| catalog_price(&state, product_id)),
    )
    .await;
    let catalog: HashMap<&str, CatalogPrice> = match found {
        Ok(found) => product_ids
            .iter()
            .copied()
            .zip(found)
            .filter_map(|(id, price)| price.map(|price| (id, price)))
            .collect(),
        Err(error) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("catalog-cache: {error}"),
            );
        }
    };
    let Some(priced) = price(&order.items, &catalog) else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown or inactive products, or mixed currencies",
        );
    };
    match insert(&state.pool, &order, &priced).await {
        Ok(answer) => (StatusCode::CREATED, Json(answer)),
        Err(error) => problem(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}")),
    }
}

/// `GET /products/{id}` at catalog-cache; `None` for a 404.
async fn catalog_price(
    state: &BaselineState,
    product_id: &str,
) -> Result<Option<CatalogPrice>, reqwest::Error> {
    let response = state
        .http
        .get(format!("{}/products/{product_id}", state.catalog_url))
        .send()
        .await?;
    if response.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    response.error_for_status()?.json().await.map(Some)
}

/// The items with their unit prices, the total and the currency.
#[derive(Debug)]
struct Priced {
    /// `(product_id, quantity, unit_price_cents)` in the client's order.
    lines: Vec<(String, i32, i64)>,
    total_cents: i64,
    currency: String,
}

/// `None` unless every product is known and active and all share one currency.
fn price(items: &[RequestedItem], catalog: &HashMap<&str, CatalogPrice>) -> Option<Priced> {
    let mut currencies = BTreeSet::new();
    let mut total_cents: i64 = 0;
    let mut lines = Vec::with_capacity(items.len());
    for item in items {
        let product = catalog.get(item.product_id.as_str()).filter(|p| p.active)?;
        currencies.insert(product.currency.as_str());
        total_cents =
            total_cents.checked_add(product.price_cents.checked_mul(i64::from(item.quantity))?)?;
        lines.push((item.product_id.clone(), item.quantity, product.price_cents));
    }
    if currencies.len() != 1 {
        return None;
    }
    let currency = currencies.first()?.to_string();
    Some(Priced {
        lines,
        total_cents,
        currency,
    })
}

/// The order, its items, its event, its task and its schedules, in one transaction.
async fn insert(
    pool: &PgPool,
    order: &PlaceOrder,
    priced: &Priced,
) -> anyhow::Result<serde_json::Value> {
    let order_id = Uuid::now_v7();
    let mut tx = pool.begin().await.context("Failed to begin")?;
    let (created_at, payment_due_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO baseline_orders
             (order_id, customer_id, customer_email, status, total_cents, currency, revision,
              payment_due_at)
         VALUES ($1, $2, $3, 'pending_payment', $4, $5, 1, now() + $6)
         RETURNING created_at, payment_due_at",
    )
    .bind(order_id)
    .bind(&order.customer_id)
    .bind(&order.customer_email)
    .bind(priced.total_cents)
    .bind(&priced.currency)
    .bind(PAYMENT_TIMEOUT)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to insert the order")?;
    let product_ids: Vec<&str> = priced.lines.iter().map(|l| l.0.as_str()).collect();
    let quantities: Vec<i32> = priced.lines.iter().map(|l| l.1).collect();
    let unit_prices: Vec<i64> = priced.lines.iter().map(|l| l.2).collect();
    sqlx::query(
        "INSERT INTO baseline_order_items (order_id, line, product_id, quantity, unit_price_cents)
         SELECT $1, item.line, item.product_id, item.quantity, item.unit_price_cents
         FROM UNNEST($2::text[], $3::int[], $4::bigint[])
             WITH ORDINALITY AS item (product_id, quantity, unit_price_cents, line)",
    )
    .bind(order_id)
    .bind(product_ids)
    .bind(quantities)
    .bind(unit_prices)
    .execute(&mut *tx)
    .await
    .context("Failed to insert the items")?;

    let answer = json!({
        "order_id": order_id,
        "status": "pending_payment",
        "items": priced.lines.iter().map(|(product_id, quantity, unit_price_cents)| json!({
            "product_id": product_id,
            "quantity": quantity,
            "unit_price_cents": unit_price_cents,
        })).collect::<Vec<_>>(),
        "total_cents": priced.total_cents,
        "currency": priced.currency,
        "created_at": created_at,
        "payment_due_at": payment_due_at,
    });
    follow_ups(
        &mut tx,
        order,
        priced,
        &answer,
        order_id,
        (created_at, payment_due_at),
    )
    .await?;
    tx.commit().await.context("Failed to commit")?;
    Ok(answer)
}

/// In the order's transaction: its `OrderPlaced` event and `SendOrderConfirmation` task in the
/// outbox, and its two schedules.
async fn follow_ups(
    tx: &mut PgConnection,
    order: &PlaceOrder,
    priced: &Priced,
    answer: &serde_json::Value,
    order_id: Uuid,
    (created_at, payment_due_at): (DateTime<Utc>, DateTime<Utc>),
) -> anyhow::Result<()> {
    let event = json!({
        "entity": {
            "order": answer,
            "customer_id": order.customer_id,
            "customer_email": order.customer_email,
        },
        "revision": 1,
    });
    let key = order_id.to_string();
    outbox::Outbox::record(
        &mut *tx,
        outbox::OutboxMessage::json(ORDERS_TOPIC, &key, "OrderPlaced", &event)?,
    )
    .await?;
    let confirmation = SendOrderConfirmation {
        order_id,
        customer_email: order.customer_email.clone(),
        total_cents: priced.total_cents,
        currency: priced.currency.clone(),
    };
    outbox::Outbox::record(
        &mut *tx,
        outbox::OutboxMessage::json(
            TASKS_TOPIC,
            &key,
            SendOrderConfirmation::NAME,
            &confirmation,
        )?,
    )
    .await?;
    Schedules::schedule_at_in(
        &mut *tx,
        &format!("order:{order_id}:cancel-unpaid"),
        TaskTemplate::new(TASKS_TOPIC, &CancelUnpaidOrder { order_id })?,
        payment_due_at,
    )
    .await?;
    let half_way = chrono::Duration::from_std(PAYMENT_TIMEOUT / 2)?;
    Schedules::schedule_at_in(
        &mut *tx,
        &format!("order:{order_id}:payment-reminder"),
        TaskTemplate::new(
            TASKS_TOPIC,
            &SendPaymentReminder {
                order_id,
                customer_email: order.customer_email.clone(),
                payment_due_at,
            },
        )?,
        created_at + half_way,
    )
    .await?;
    Ok(())
}

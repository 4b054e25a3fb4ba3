//! Orders: placing one (validate it, price it from the catalog, store it together with its
//! `OrderPlaced` event, its `SendOrderConfirmation` task and its payment deadline), paying for
//! one, cancelling an unpaid one, and reading one back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use integration_events::{EntityTopic, EventEnvelope};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use task_queue::TaskQueue;
use task_scheduler::{Schedules, TaskTemplate};
use uuid::Uuid;

use crate::SERVICE_NAME;
use crate::catalog::CatalogProduct;
use crate::error::ApiError;
use crate::notification_tasks::{SendOrderCancelled, SendOrderConfirmation, SendPaymentReminder};
use crate::order_tasks::CancelUnpaidOrder;
use crate::pricing::PriceLookup;
use idempotency::{IdempotencyKey, IdempotencyKeys, KeyError, Seen};
use platform::validate;

/// Where orders announces every change of an order; see `docs/contracts/orders.orders.v1.md`.
pub const ORDERS_TOPIC: EntityTopic = EntityTopic::new("orders", "orders", "order");
/// The `message_type` of the event for a new order.
pub const ORDER_PLACED: &str = "OrderPlaced";
/// The `message_type` of the event for an order that was paid.
pub const ORDER_PAID: &str = "OrderPaid";
/// The `message_type` of the event for an order cancelled because it was not paid in time.
pub const ORDER_CANCELLED: &str = "OrderCancelled";
/// An order's revision when it is placed; every later change (paid, cancelled) adds one.
const FIRST_REVISION: i64 = 1;

/// The dedup key of the order's schedule that cancels it at `payment_due_at` if unpaid.
pub fn cancel_unpaid_key(order_id: Uuid) -> String {
    format!("order:{order_id}:cancel-unpaid")
}

/// The dedup key of the order's schedule that reminds the customer to pay, half-way to
/// `payment_due_at`.
pub fn payment_reminder_key(order_id: Uuid) -> String {
    format!("order:{order_id}:payment-reminder")
}

/// The body of `POST /orders`. Serialised again only to fingerprint it for `Idempotency-Key`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub customer_email: String,
    pub items: Vec<RequestedItem>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RequestedItem {
    pub product_id: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, waiting for its payment until `payment_due_at`.
    PendingPayment,
    /// Paid (`POST /orders/{order_id}/pay`) before its deadline. Final.
    Paid,
    /// Not paid by `payment_due_at`: cancelled by its `CancelUnpaidOrder` schedule. Final.
    Cancelled,
}

/// An order as the API returns it, from `POST /orders` and `GET /orders/{order_id}`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[allow(
    clippy::struct_field_names,
    reason = "the field names are the JSON contract's, and `order_id` says what `id` would not"
)]
pub struct Order {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// In the order the client listed them.
    #[sqlx(skip)]
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    /// Of the total and of every unit price.
    pub currency: String,
    pub created_at: DateTime<Utc>,
    /// `created_at` + `PAYMENT_TIMEOUT`: an order still unpaid then is cancelled.
    pub payment_due_at: DateTime<Utc>,
}

/// A line of an order, priced when the order was placed: later price changes do not touch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// The entity of the events on `orders.orders.v1`: the order, and who placed it, which the API
/// response leaves out but consumers (a confirmation e-mail, a report) need.
#[derive(Debug, Serialize)]
struct OrderEntity<'a> {
    #[serde(flatten)]
    order: &'a Order,
    customer_id: &'a str,
    customer_email: &'a str,
}

/// An order as the database holds it: with its customer, which the API leaves out, and its
/// revision.
#[derive(Debug, sqlx::FromRow)]
struct StoredOrder {
    #[sqlx(flatten)]
    order: Order,
    customer_id: String,
    customer_email: String,
    revision: i64,
}

/// What placing an order sets in motion besides storing it.
#[derive(Debug, Clone)]
pub struct FollowUps {
    /// The `Idempotency-Key`s of `POST /orders`, remembered for `IDEMPOTENCY_KEY_TTL`.
    pub idempotency: IdempotencyKeys,
    /// notifications' task queue, `notifications.tasks.v1`: the confirmation, the payment
    /// reminder and the cancellation notice go there.
    pub notifications: TaskQueue,
    /// orders' own task queue (`ORDERS_TASKS_TOPIC`), where `CancelUnpaidOrder` fires.
    pub orders_tasks_topic: String,
    /// `PAYMENT_TIMEOUT`.
    pub payment_timeout: Duration,
}

/// What [`cancel_unpaid`] found, and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The order was still waiting for its payment: it is cancelled now.
    Cancelled,
    /// The order was paid or cancelled already: nothing changed.
    NotPending(OrderStatus),
    /// No such order.
    NotFound,
}

/// The items of an order with their prices, before the order is stored.
#[derive(Debug, PartialEq, Eq)]
struct PricedItems {
    items: Vec<OrderItem>,
    total_cents: i64,
    currency: String,
}

/// Places an order: validates it, prices it with `prices` and stores it, its `OrderPlaced`
/// event, its `SendOrderConfirmation` task (for notifications) and its two schedules (the
/// payment reminder and the cancellation if unpaid) in one transaction. With the default
/// [`PriceLookup::Local`] nothing here leaves the service's own database: the event and the
/// task wait in the outbox, the schedules in `scheduled_tasks`, and the confirmation is sent
/// later, without the client waiting.
pub async fn place(
    pool: &PgPool,
    prices: &PriceLookup,
    follow_ups: &FollowUps,
    request: PlaceOrder,
    key: Option<&IdempotencyKey>,
) -> Result<Order, ApiError> {
    validate(&request)?;
    // The request as parsed, not as sent: whitespace or field order do not make it another one.
    let fingerprint = serde_json::to_vec(&request).context("Failed to encode the request")?;
    let keys = &follow_ups.idempotency;
    if let Some(key) = key
        && let Some(order) = placed_before(pool, keys, key, &fingerprint).await?
    {
        return Ok(order);
    }
    let mut product_ids: Vec<String> = request
        .items
        .iter()
        .map(|item| item.product_id.clone())
        .collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let catalog = prices.products(&product_ids).await?;
    let priced_items = price(&request.items, &catalog)?;
    let claim = key.map(|key| (key, fingerprint.as_slice()));
    if let Some(order) = insert(pool, follow_ups, &request, priced_items, claim).await? {
        return Ok(order);
    }
    // A concurrent request with the key committed first: answer with its order.
    let key = key.expect("only a claimed key loses a race");
    placed_before(pool, keys, key, &fingerprint)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the idempotency key was lost after a conflict"))
        .map_err(ApiError::from)
}

/// The order placed with `key` before, if the key is remembered; a 422 when it was used with
/// another request.
async fn placed_before(
    pool: &PgPool,
    keys: &IdempotencyKeys,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Option<Order>, ApiError> {
    let mut conn = pool
        .acquire()
        .await
        .context("Failed to get a database connection")?;
    match keys.lookup(&mut conn, key, fingerprint).await? {
        Seen::New => Ok(None),
        Seen::OtherRequest => Err(KeyError::Reused.into()),
        Seen::Created(order_id) => Ok(load(&mut conn, order_id, Lock::None)
            .await?
            .map(|stored| stored.order)),
    }
}

/// The order with its items, if it exists.
pub async fn find(pool: &PgPool, order_id: Uuid) -> anyhow::Result<Option<Order>> {
    let mut conn = pool
        .acquire()
        .await
        .context("Failed to get a database connection")?;
    Ok(load(&mut conn, order_id, Lock::None)
        .await?
        .map(|stored| stored.order))
}

/// Pays for an order: `pending_payment` becomes `paid`, with its `OrderPaid` event, and the
/// order's schedules (the cancellation, the reminder) are cancelled, all in one transaction.
///
/// Paying a paid order again changes nothing and answers the order, so that a client may retry
/// a payment whose answer it did not get. A cancelled order cannot be paid any more: 409. Nor
/// can an order past its `payment_due_at`, even while its cancellation has not fired yet (the
/// scheduler may be behind, or down): the deadline is enforced where payment is decided, and the
/// cancellation follows.
pub async fn pay(pool: &PgPool, order_id: Uuid) -> Result<Order, ApiError> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the payment transaction")?;
    // The row lock orders this payment and a concurrent cancellation: whichever comes second
    // sees the other's status.
    let Some(mut stored) = load(&mut tx, order_id, Lock::ForUpdate).await? else {
        return Err(ApiError::OrderNotFound(order_id));
    };
    match stored.order.status {
        OrderStatus::Paid => return Ok(stored.order),
        OrderStatus::Cancelled => return Err(ApiError::OrderCancelled(order_id)),
        OrderStatus::PendingPayment if stored.order.payment_due_at <= Utc::now() => {
            return Err(ApiError::PaymentOverdue(
                order_id,
                stored.order.payment_due_at,
            ));
        }
        OrderStatus::PendingPayment => {}
    }
    change_status(&mut tx, &mut stored, OrderStatus::Paid, ORDER_PAID).await?;
    // Neither may fire any more. (The reminder may have fired already: then there is nothing
    // to cancel, and `false` is fine.)
    for key in [cancel_unpaid_key(order_id), payment_reminder_key(order_id)] {
        Schedules::cancel_by_key_in(&mut tx, &key)
            .await
            .with_context(|| format!("Failed to cancel the schedule {key}"))?;
    }
    tx.commit()
        .await
        .context("Failed to commit the payment transaction")?;
    Ok(stored.order)
}

/// Cancels the order if it still waits for its payment, in the caller's transaction `conn` (the
/// task worker's): `cancelled`, its `OrderCancelled` event and a `SendOrderCancelled` task for
/// `notifications`. A paid or cancelled order is left as it is.
pub async fn cancel_unpaid(
    conn: &mut PgConnection,
    notifications: &TaskQueue,
    order_id: Uuid,
) -> anyhow::Result<Cancellation> {
    let Some(mut stored) = load(conn, order_id, Lock::ForUpdate).await? else {
        return Ok(Cancellation::NotFound);
    };
    if stored.order.status != OrderStatus::PendingPayment {
        return Ok(Cancellation::NotPending(stored.order.status));
    }
    change_status(conn, &mut stored, OrderStatus::Cancelled, ORDER_CANCELLED).await?;
    // A reminder that has not fired yet (the scheduler was down, say) would now be wrong.
    Schedules::cancel_by_key_in(conn, &payment_reminder_key(order_id))
        .await
        .context("Failed to cancel the payment reminder")?;
    let notice = SendOrderCancelled {
        order_id,
        customer_email: stored.customer_email.clone(),
    };
    notifications
        .enqueue_in(conn, &notice)
        .await
        .context("Failed to enqueue the SendOrderCancelled task")?;
    Ok(Cancellation::Cancelled)
}

/// Whether [`load`] locks the order's row until the end of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lock {
    None,
    ForUpdate,
}

/// The order with its items, customer and revision, if it exists.
async fn load(
    conn: &mut PgConnection,
    order_id: Uuid,
    lock: Lock,
) -> anyhow::Result<Option<StoredOrder>> {
    let query = match lock {
        Lock::None => {
            "SELECT order_id, status, total_cents, currency, created_at, payment_due_at,
                    customer_id, customer_email, revision
             FROM orders WHERE order_id = $1"
        }
        Lock::ForUpdate => {
            "SELECT order_id, status, total_cents, currency, created_at, payment_due_at,
                    customer_id, customer_email, revision
             FROM orders WHERE order_id = $1
             FOR UPDATE"
        }
    };
    let stored: Option<StoredOrder> = sqlx::query_as(query)
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await
        .with_context(|| format!("Failed to read order {order_id}"))?;
    let Some(mut stored) = stored else {
        return Ok(None);
    };
    // The items were inserted with the order, in its transaction, and never change: reading
    // them separately cannot see a half-written order.
    stored.order.items = sqlx::query_as(
        "SELECT product_id, quantity, unit_price_cents
         FROM order_items WHERE order_id = $1 ORDER BY line",
    )
    .bind(order_id)
    .fetch_all(&mut *conn)
    .await
    .with_context(|| format!("Failed to read the items of order {order_id}"))?;
    Ok(Some(stored))
}

/// Moves the (locked) order to `status` at the next revision and records the `updated` event
/// `message_type` for it, in the caller's transaction.
async fn change_status(
    conn: &mut PgConnection,
    stored: &mut StoredOrder,
    status: OrderStatus,
    message_type: &str,
) -> anyhow::Result<()> {
    let order_id = stored.order.order_id;
    stored.revision = sqlx::query_scalar(
        "UPDATE orders SET status = $2, revision = revision + 1
         WHERE order_id = $1
         RETURNING revision",
    )
    .bind(order_id)
    .bind(status)
    .fetch_one(&mut *conn)
    .await
    .with_context(|| format!("Failed to update the status of order {order_id}"))?;
    stored.order.status = status;
    let event = EventEnvelope::updated(
        ORDERS_TOPIC.entity_type,
        &order_id.to_string(),
        stored.revision,
        SERVICE_NAME,
        OrderEntity {
            order: &stored.order,
            customer_id: &stored.customer_id,
            customer_email: &stored.customer_email,
        },
        vec!["status".to_owned()],
    );
    ORDERS_TOPIC
        .record(conn, &event, message_type)
        .await
        .with_context(|| format!("Failed to record the {message_type} event"))
}

/// The most lines an order may have.
pub const MAX_ITEMS: usize = 100;
/// The most units of one line. With [`MAX_ITEMS`] lines the units of an order add up to at most
/// 1,000,000: far inside the 32-bit integers that readers of `orders.orders.v1` may store.
pub const MAX_QUANTITY: i32 = 10_000;
/// The longest customer or product id, in bytes (catalog-cache's product ids are at most 64).
pub const MAX_ID_LEN: usize = 128;
/// The largest request body orders reads, in bytes. The largest valid `POST /orders` is under
/// 90 KiB even with every character of its ids and address written as a `\uXXXX` escape
/// ([`MAX_ITEMS`] lines of a [`MAX_ID_LEN`]-byte id and a quantity; the test
/// `the_largest_valid_order_fits_the_body_limit` builds it); the rest is room for indentation.
/// A larger body is refused with a 413 before it is read.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Every rule the request breaks, keyed by field, so that a client can fix them all at once.
///
/// The bounds keep every order's `OrderPlaced` event small (a few KiB with the largest values)
/// and its numbers inside what every reader stores, so that an accepted order can always be
/// published and projected: an event the broker refuses or a reader cannot store must never
/// come from an order that was accepted.
fn validate(request: &PlaceOrder) -> Result<(), ApiError> {
    let mut errors = BTreeMap::new();
    if let Err(reason) = validate::text(&request.customer_id, MAX_ID_LEN) {
        errors.insert("customer_id".to_owned(), reason);
    }
    if let Err(reason) = validate::email(&request.customer_email) {
        errors.insert("customer_email".to_owned(), reason);
    }
    if request.items.is_empty() {
        errors.insert("items".to_owned(), "must list at least one item".to_owned());
    }
    if request.items.len() > MAX_ITEMS {
        errors.insert(
            "items".to_owned(),
            format!("must list at most {MAX_ITEMS} items"),
        );
    }
    for (index, item) in request.items.iter().enumerate().take(MAX_ITEMS) {
        if let Err(reason) = validate::text(&item.product_id, MAX_ID_LEN) {
            errors.insert(format!("items[{index}].product_id"), reason);
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            errors.insert(
                format!("items[{index}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::InvalidOrder(errors))
    }
}

/// Prices every item with its product from `catalog`: all products must be known and active,
/// and priced in one currency.
fn price(
    items: &[RequestedItem],
    catalog: &HashMap<String, CatalogProduct>,
) -> Result<PricedItems, ApiError> {
    let orderable = |item: &RequestedItem| {
        catalog
            .get(&item.product_id)
            .filter(|product| product.active)
    };

    let mut unavailable: Vec<String> = Vec::new();
    for item in items.iter().filter(|item| orderable(item).is_none()) {
        if !unavailable.contains(&item.product_id) {
            unavailable.push(item.product_id.clone());
        }
    }
    if !unavailable.is_empty() {
        return Err(ApiError::UnavailableProducts(unavailable));
    }

    let products: Vec<&CatalogProduct> = items.iter().filter_map(orderable).collect();
    let currencies: BTreeSet<&str> = products.iter().map(|p| p.currency.as_str()).collect();
    if currencies.len() > 1 {
        let currencies = currencies.into_iter().map(str::to_owned).collect();
        return Err(ApiError::MixedCurrencies(currencies));
    }
    let currency = currencies
        .first()
        .map(|&currency| currency.to_owned())
        .expect("validate() requires at least one item");

    let mut total_cents: i64 = 0;
    let mut priced = Vec::with_capacity(items.len());
    for (item, product) in items.iter().zip(products) {
        total_cents = product
            .price_cents
            .checked_mul(i64::from(item.quantity))
            .and_then(|line_total| total_cents.checked_add(line_total))
            .ok_or_else(|| {
                ApiError::InvalidOrder(BTreeMap::from([(
                    "items".to_owned(),
                    "the order's total is too large".to_owned(),
                )]))
            })?;
        priced.push(OrderItem {
            product_id: item.product_id.clone(),
            quantity: item.quantity,
            unit_price_cents: product.price_cents,
        });
    }
    Ok(PricedItems {
        items: priced,
        total_cents,
        currency,
    })
}

/// Stores the order, its items, its `OrderPlaced` event, its `SendOrderConfirmation` task and
/// its two schedules (the cancellation at `payment_due_at`, the reminder half-way there) in one
/// transaction: the event is published, the task enqueued and the schedules fire if, and only
/// if, the order exists.
async fn insert(
    pool: &PgPool,
    follow_ups: &FollowUps,
    request: &PlaceOrder,
    priced: PricedItems,
    claim: Option<(&IdempotencyKey, &[u8])>,
) -> anyhow::Result<Option<Order>> {
    let order_id = Uuid::now_v7();
    let status = OrderStatus::PendingPayment;
    let keys = &follow_ups.idempotency;
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the order transaction")?;
    // First, so that a concurrent request with the same key waits here for this transaction.
    if let Some((key, fingerprint)) = claim
        && !keys.claim(&mut tx, key, fingerprint, order_id).await?
    {
        tx.rollback()
            .await
            .context("Failed to end the order transaction")?;
        return Ok(None);
    }

    // The database's clock sets `created_at` and the deadline, so the response shows what a
    // later read returns.
    let (created_at, payment_due_at): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO orders
             (order_id, customer_id, customer_email, status, total_cents, currency, revision,
              payment_due_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8)
         RETURNING created_at, payment_due_at",
    )
    .bind(order_id)
    .bind(&request.customer_id)
    .bind(&request.customer_email)
    .bind(status)
    .bind(priced.total_cents)
    .bind(&priced.currency)
    .bind(FIRST_REVISION)
    .bind(follow_ups.payment_timeout)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to insert the order")?;

    // One statement for all items; the ordinality numbers the lines in the client's order.
    let (product_ids, quantities, unit_prices): (Vec<&str>, Vec<i32>, Vec<i64>) = priced
        .items
        .iter()
        .map(|item| {
            (
                item.product_id.as_str(),
                item.quantity,
                item.unit_price_cents,
            )
        })
        .collect();
    sqlx::query(
        "INSERT INTO order_items (order_id, line, product_id, quantity, unit_price_cents)
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
    .context("Failed to insert the order's items")?;

    let order = Order {
        order_id,
        status,
        items: priced.items,
        total_cents: priced.total_cents,
        currency: priced.currency,
        created_at,
        payment_due_at,
    };
    let event = EventEnvelope::created(
        ORDERS_TOPIC.entity_type,
        &order_id.to_string(),
        FIRST_REVISION,
        SERVICE_NAME,
        OrderEntity {
            order: &order,
            customer_id: &request.customer_id,
            customer_email: &request.customer_email,
        },
    );
    ORDERS_TOPIC
        .record(&mut tx, &event, ORDER_PLACED)
        .await
        .context("Failed to record the OrderPlaced event")?;
    let confirmation = SendOrderConfirmation {
        order_id,
        customer_email: request.customer_email.clone(),
        total_cents: order.total_cents,
        currency: order.currency.clone(),
    };
    follow_ups
        .notifications
        .enqueue_in(&mut tx, &confirmation)
        .await
        .context("Failed to enqueue the SendOrderConfirmation task")?;
    schedule_payment_deadline(&mut tx, follow_ups, &order, &request.customer_email).await?;

    tx.commit()
        .await
        .context("Failed to commit the order transaction")?;
    Ok(Some(order))
}

/// Schedules, in the order's transaction, `CancelUnpaidOrder` on orders' own queue at
/// `payment_due_at` and `SendPaymentReminder` on notifications' queue half-way there.
async fn schedule_payment_deadline(
    conn: &mut PgConnection,
    follow_ups: &FollowUps,
    order: &Order,
    customer_email: &str,
) -> anyhow::Result<()> {
    let order_id = order.order_id;
    let cancel = TaskTemplate::new(
        follow_ups.orders_tasks_topic.clone(),
        &CancelUnpaidOrder { order_id },
    )?;
    Schedules::schedule_at_in(
        conn,
        &cancel_unpaid_key(order_id),
        cancel,
        order.payment_due_at,
    )
    .await
    .context("Failed to schedule the CancelUnpaidOrder task")?;

    let half_way = chrono::Duration::from_std(follow_ups.payment_timeout / 2)
        .context("PAYMENT_TIMEOUT is too long")?;
    let reminder = TaskTemplate::new(
        follow_ups.notifications.topic(),
        &SendPaymentReminder {
            order_id,
            customer_email: customer_email.to_owned(),
            payment_due_at: order.payment_due_at,
        },
    )?;
    Schedules::schedule_at_in(
        conn,
        &payment_reminder_key(order_id),
        reminder,
        order.created_at + half_way,
    )
    .await
    .context("Failed to schedule the SendPaymentReminder task")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use platform::validate::{MAX_EMAIL_LEN, MAX_EMAIL_LOCAL_LEN};

    use super::*;

    fn request(items: &[(&str, i32)]) -> PlaceOrder {
        PlaceOrder {
            customer_id: "c-1".to_owned(),
            customer_email: "ada@example.com".to_owned(),
            items: items
                .iter()
                .map(|&(product_id, quantity)| RequestedItem {
                    product_id: product_id.to_owned(),
                    quantity,
                })
                .collect(),
        }
    }

    fn catalog(products: &[(&str, i64, &str, bool)]) -> HashMap<String, CatalogProduct> {
        products
            .iter()
            .map(|&(id, price_cents, currency, active)| {
                let product = CatalogProduct {
                    product_id: id.to_owned(),
                    sku: format!("SKU-{id}"),
                    name: format!("Product {id}"),
                    price_cents,
                    currency: currency.to_owned(),
                    active,
                };
                (id.to_owned(), product)
            })
            .collect()
    }

    fn invalid_fields(request: &PlaceOrder) -> Vec<String> {
        match validate(request) {
            Ok(()) => Vec::new(),
            Err(ApiError::InvalidOrder(errors)) => errors.into_keys().collect(),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn a_complete_order_is_valid() {
        assert!(invalid_fields(&request(&[("p-1", 1)])).is_empty());
    }

    #[test]
    fn every_broken_rule_is_reported_by_field() {
        let mut order = request(&[("p-1", 0), ("", 2), ("p-3", -1)]);
        order.customer_id = " ".to_owned();
        order.customer_email = "ada.example.com".to_owned();

        assert_eq!(
            invalid_fields(&order),
            [
                "customer_email",
                "customer_id",
                "items[0].quantity",
                "items[1].product_id",
                "items[2].quantity"
            ]
        );
        assert_eq!(invalid_fields(&request(&[])), ["items"]);
    }

    #[test]
    fn numbers_and_strings_are_bounded_so_that_every_reader_can_store_the_order() {
        // The 32-bit overflow that stopped report-exporter: i32::MAX units plus one.
        let order = request(&[("p-1", i32::MAX), ("p-2", 1)]);
        assert_eq!(invalid_fields(&order), ["items[0].quantity"]);
        assert!(invalid_fields(&request(&[("p-1", MAX_QUANTITY)])).is_empty());

        let many: Vec<(&str, i32)> = vec![("p-1", 1); MAX_ITEMS + 1];
        assert_eq!(invalid_fields(&request(&many)), ["items"]);

        let mut order = request(&[("p-1", 1)]);
        order.customer_email = format!("{}@example.com", "a".repeat(1_000_000));
        order.customer_id = "c\u{0}1".to_owned();
        order.items[0].product_id = "p".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            invalid_fields(&order),
            ["customer_email", "customer_id", "items[0].product_id"]
        );
        let mut order = request(&[("p-1", 1)]);
        order.customer_email = format!("{}@example.com", "a".repeat(MAX_EMAIL_LOCAL_LEN + 1));
        assert_eq!(invalid_fields(&order), ["customer_email"]);
    }

    #[test]
    fn the_largest_valid_order_fits_the_body_limit() {
        // Every byte of every string as a six-byte `\uXXXX` escape, pretty-printed: the most
        // bytes a valid order can take short of padding it with whitespace.
        let escaped = |len: usize| "\\u0061".repeat(len);
        let email = format!(
            "{}@{}",
            escaped(MAX_EMAIL_LOCAL_LEN),
            escaped(MAX_EMAIL_LEN - MAX_EMAIL_LOCAL_LEN - 1)
        );
        let item = format!(
            "    {{\n      \"product_id\": \"{}\",\n      \"quantity\": {MAX_QUANTITY}\n    }}",
            escaped(MAX_ID_LEN)
        );
        let body = format!(
            "{{\n  \"customer_id\": \"{}\",\n  \"customer_email\": \"{email}\",\n  \"items\": [\n{}\n  ]\n}}",
            escaped(MAX_ID_LEN),
            vec![item; MAX_ITEMS].join(",\n")
        );
        let order: PlaceOrder = serde_json::from_str(&body).expect("the body is a PlaceOrder");

        assert!(invalid_fields(&order).is_empty());
        // What BODY_LIMIT's documentation says.
        assert!(body.len() < 90 * 1024, "{} bytes", body.len());
        assert!(
            body.len() * 2 < BODY_LIMIT,
            "{} bytes leave too little room under {BODY_LIMIT}",
            body.len()
        );
    }

    #[test]
    fn items_are_priced_from_the_catalog_in_the_clients_order() {
        let catalog = catalog(&[("p-1", 250, "EUR", true), ("p-2", 1000, "EUR", true)]);

        let priced = price(&request(&[("p-2", 1), ("p-1", 3)]).items, &catalog).unwrap();

        assert_eq!(
            priced,
            PricedItems {
                items: vec![
                    OrderItem {
                        product_id: "p-2".to_owned(),
                        quantity: 1,
                        unit_price_cents: 1000
                    },
                    OrderItem {
                        product_id: "p-1".to_owned(),
                        quantity: 3,
                        unit_price_cents: 250
                    },
                ],
                total_cents: 1750,
                currency: "EUR".to_owned(),
            }
        );
    }

    #[test]
    fn unknown_and_inactive_products_are_listed_once_each() {
        let catalog = catalog(&[("p-1", 250, "EUR", true), ("p-off", 100, "EUR", false)]);
        let items = request(&[("p-off", 1), ("p-1", 1), ("p-missing", 1), ("p-off", 2)]).items;

        match price(&items, &catalog) {
            Err(ApiError::UnavailableProducts(ids)) => assert_eq!(ids, ["p-off", "p-missing"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn one_order_has_one_currency() {
        let catalog = catalog(&[("p-1", 250, "USD", true), ("p-2", 100, "EUR", true)]);

        match price(&request(&[("p-1", 1), ("p-2", 1)]).items, &catalog) {
            Err(ApiError::MixedCurrencies(currencies)) => assert_eq!(currencies, ["EUR", "USD"]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_total_beyond_i64_is_refused_rather_than_wrapped() {
        let catalog = catalog(&[("p-1", i64::MAX / 2, "EUR", true)]);

        assert!(matches!(
            price(&request(&[("p-1", 3)]).items, &catalog),
            Err(ApiError::InvalidOrder(_))
        ));
    }

    #[test]
    fn the_event_entity_is_the_order_and_its_customer() {
        let order = Order {
            order_id: Uuid::nil(),
            status: OrderStatus::PendingPayment,
            items: vec![OrderItem {
                product_id: "p-1".to_owned(),
                quantity: 2,
                unit_price_cents: 250,
            }],
            total_cents: 500,
            currency: "EUR".to_owned(),
            created_at: DateTime::UNIX_EPOCH,
            payment_due_at: DateTime::UNIX_EPOCH + chrono::Duration::minutes(15),
        };
        let entity = OrderEntity {
            order: &order,
            customer_id: "c-1",
            customer_email: "ada@example.com",
        };

        assert_eq!(
            serde_json::to_value(entity).unwrap(),
            json!({
                "order_id": "00000000-0000-0000-0000-000000000000",
                "status": "pending_payment",
                "items": [{ "product_id": "p-1", "quantity": 2, "unit_price_cents": 250 }],
                "total_cents": 500,
                "currency": "EUR",
                "created_at": "1970-01-01T00:00:00Z",
                "payment_due_at": "1970-01-01T00:15:00Z",
                "customer_id": "c-1",
                "customer_email": "ada@example.com",
            })
        );
    }
}

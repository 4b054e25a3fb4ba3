//! The order's transactions in the service's database: placing one (with its event, its
//! confirmation task and its payment deadline's schedules), paying for one, cancelling an
//! unpaid one, and reading one back. The rules are [`crate::order`]'s and
//! [`crate::pricing`]'s; this module reads and writes.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use idempotency::{IdempotencyKey, IdempotencyKeys, KeyError, Seen};
use integration_events::EventEnvelope;
use sqlx::{PgConnection, PgPool};
use task_queue::TaskQueue;
use task_scheduler::{Schedules, TaskTemplate};
use uuid::Uuid;

use crate::config::SERVICE_NAME;
use crate::events::{
    FIRST_REVISION, ORDER_CANCELLED, ORDER_PAID, ORDER_PLACED, ORDERS_TOPIC, OrderEntity,
};
use crate::order::{self, Cancellation, Order, OrderError, OrderStatus, PlaceOrder};
use crate::pricing::{self, PricedItems};
use crate::read_model;
use crate::tasks::{
    CancelUnpaidOrder, SendOrderCancelled, SendOrderConfirmation, SendPaymentReminder,
    cancel_unpaid_key, payment_reminder_key,
};

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

/// Places an order: validates it, prices it from orders' copy of the catalog and stores it, its
/// `OrderPlaced` event, its `SendOrderConfirmation` task (for notifications) and its two schedules
/// (the payment reminder and the cancellation if unpaid) in one transaction. Nothing here leaves
/// the service's own database: the products come from the `catalog_products` read model, the event
/// and the task wait in the outbox, the schedules in `scheduled_tasks`, and the confirmation is
/// sent later, without the client waiting.
pub async fn place(
    pool: &PgPool,
    follow_ups: &FollowUps,
    request: PlaceOrder,
    key: Option<&IdempotencyKey>,
) -> Result<Order, OrderError> {
    order::validate(&request)?;
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
    let catalog = read_model::find_many(pool, &product_ids).await?;
    let priced_items = pricing::price(&request.items, &catalog)?;
    let claim = key.map(|key| (key, fingerprint.as_slice()));
    if let Some(order) = insert(pool, follow_ups, &request, priced_items, claim).await? {
        return Ok(order);
    }
    // A concurrent request with the key committed first: answer with its order.
    let key = key.expect("only a claimed key loses a race");
    placed_before(pool, keys, key, &fingerprint)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the idempotency key was lost after a conflict"))
        .map_err(OrderError::from)
}

/// The order placed with `key` before, if the key is remembered; [`KeyError::Reused`] when it
/// was used with another request.
async fn placed_before(
    pool: &PgPool,
    keys: &IdempotencyKeys,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Option<Order>, OrderError> {
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
/// [`Order::check_payable`] decides: paying a paid order again changes nothing and answers the
/// order; a cancelled or overdue order cannot be paid any more.
pub async fn pay(pool: &PgPool, order_id: Uuid) -> Result<Order, OrderError> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin the payment transaction")?;
    // The row lock orders this payment and a concurrent cancellation: whichever comes second
    // sees the other's status.
    let Some(mut stored) = load(&mut tx, order_id, Lock::ForUpdate).await? else {
        return Err(OrderError::NotFound(order_id));
    };
    if !stored.order.check_payable(Utc::now())? {
        return Ok(stored.order);
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

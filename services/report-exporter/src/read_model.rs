//! The `orders_view` read model: the orders service's orders as report-exporter exports them,
//! kept up to date from `orders.orders.v1` so that an export is a local query and never a call to
//! orders.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use integration_events::{EntityTopic, ReadModel};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Where orders announces every change of an order; see `docs/contracts/orders.orders.v1.md`.
pub const ORDERS_TOPIC: EntityTopic = EntityTopic::new("orders", "orders", "order");

/// An order as report-exporter reads it from an `orders.orders.v1` event.
///
/// Only the fields the exports use (tolerant reader): the items' products and prices, and
/// whatever fields orders adds later, are ignored, so they can change without breaking the
/// projection. The order id is the event's entity id, so it is not read twice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderView {
    /// `pending_payment`, `paid` or `cancelled` today. Text, not an enum: a status orders adds
    /// later is stored as it comes, rather than stopping the projection at the first such event.
    pub status: String,
    pub customer_id: String,
    pub customer_email: String,
    pub total_cents: i64,
    pub currency: String,
    /// Read only to count the units: see [`OrderView::item_count`].
    pub items: Vec<OrderItem>,
    pub created_at: DateTime<Utc>,
    /// Added to the contract after the first events were published: an older event has none.
    #[serde(default)]
    pub payment_due_at: Option<DateTime<Utc>>,
}

/// A line of an order, as far as report-exporter reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct OrderItem {
    /// 64 bits: whatever orders accepts fits, now and if it ever widens its own bound.
    pub quantity: i64,
}

impl OrderView {
    /// How many units the order has: the sum of its items' quantities, in 64 bits (the
    /// `BIGINT` column). Fails (rather than wraps) past `i64::MAX`, which no order that orders
    /// accepts can reach.
    pub fn item_count(&self) -> anyhow::Result<i64> {
        self.items
            .iter()
            .try_fold(0_i64, |count, item| count.checked_add(item.quantity))
            .context("The order's item quantities add up to more than a BIGINT holds")
    }
}

/// The projection's SQL. The [`integration_events::Projector`] decides whether an event applies
/// (newer revision, not a duplicate) and calls these in the transaction that records it.
#[derive(Debug, Clone, Copy)]
pub struct OrdersView;

impl ReadModel for OrdersView {
    type Entity = OrderView;

    fn name(&self) -> &'static str {
        "orders_view"
    }

    async fn upsert(
        &self,
        conn: &mut PgConnection,
        id: &str,
        revision: i64,
        order: &OrderView,
    ) -> anyhow::Result<()> {
        // `id` is the event's entity id, which is also its Kafka key: the one the projector
        // checked the revision for.
        let order_id = order_id(id)?;
        let item_count = order
            .item_count()
            .with_context(|| format!("Failed to count the items of order {id}"))?;
        sqlx::query(
            "INSERT INTO orders_view
                 (order_id, status, customer_id, customer_email, total_cents, currency,
                  item_count, created_at, payment_due_at, revision, synced_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
             ON CONFLICT (order_id) DO UPDATE SET
                 status = EXCLUDED.status,
                 customer_id = EXCLUDED.customer_id,
                 customer_email = EXCLUDED.customer_email,
                 total_cents = EXCLUDED.total_cents,
                 currency = EXCLUDED.currency,
                 item_count = EXCLUDED.item_count,
                 created_at = EXCLUDED.created_at,
                 payment_due_at = EXCLUDED.payment_due_at,
                 revision = EXCLUDED.revision,
                 synced_at = EXCLUDED.synced_at",
        )
        .bind(order_id)
        .bind(&order.status)
        .bind(&order.customer_id)
        .bind(&order.customer_email)
        .bind(order.total_cents)
        .bind(&order.currency)
        .bind(item_count)
        .bind(order.created_at)
        .bind(order.payment_due_at)
        .bind(revision)
        .execute(conn)
        .await
        .with_context(|| format!("Failed to upsert order {id} into orders_view"))?;
        Ok(())
    }

    /// orders never deletes an order (the contract has no `deleted` events); this only keeps
    /// the read model correct should that change.
    async fn delete(&self, conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM orders_view WHERE order_id = $1")
            .bind(order_id(id)?)
            .execute(conn)
            .await
            .with_context(|| format!("Failed to delete order {id} from orders_view"))?;
        Ok(())
    }

    async fn clear(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM orders_view")
            .execute(conn)
            .await
            .context("Failed to clear orders_view")?;
        Ok(())
    }
}

/// The contract makes the entity id a UUID; anything else is a broken event, refused rather
/// than stored under a key no export could look up.
fn order_id(id: &str) -> anyhow::Result<Uuid> {
    id.parse()
        .with_context(|| format!("Order id {id:?} is not a UUID"))
}

#[cfg(test)]
mod tests {
    use integration_events::{EventEnvelope, EventKind};
    use kafka::TopicSpec;

    use super::*;

    /// The contract's example messages: the contract says consumers' tests decode them with
    /// their own types, which proves that report-exporter reads what orders documents.
    const EXAMPLES: [(&str, &str); 3] = [
        (
            "order-placed.json",
            include_str!("../../../docs/contracts/orders.orders.v1/order-placed.json"),
        ),
        (
            "order-paid.json",
            include_str!("../../../docs/contracts/orders.orders.v1/order-paid.json"),
        ),
        (
            "order-cancelled.json",
            include_str!("../../../docs/contracts/orders.orders.v1/order-cancelled.json"),
        ),
    ];

    fn example(file: &str) -> EventEnvelope<OrderView> {
        let (_, text) = EXAMPLES
            .iter()
            .find(|(name, _)| *name == file)
            .expect("a contract example");
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{file}: {error}"))
    }

    #[test]
    fn the_contract_examples_decode_into_the_order_view() {
        for (file, status, kind) in [
            ("order-placed.json", "pending_payment", EventKind::Created),
            ("order-paid.json", "paid", EventKind::Updated),
            ("order-cancelled.json", "cancelled", EventKind::Updated),
        ] {
            let event = example(file);
            assert_eq!(event.entity_type, ORDERS_TOPIC.entity_type, "{file}");
            assert_eq!(event.kind, kind, "{file}");
            assert!(event.entity_id.parse::<Uuid>().is_ok(), "{file}");
            let order = event.payload.entity.expect("an entity");
            assert_eq!(
                order,
                OrderView {
                    status: status.to_owned(),
                    customer_id: "c-1042".to_owned(),
                    customer_email: "ada@example.com".to_owned(),
                    total_cents: 4780,
                    currency: "EUR".to_owned(),
                    items: vec![OrderItem { quantity: 2 }, OrderItem { quantity: 1 }],
                    created_at: "2026-11-26T10:55:48.118204Z".parse().unwrap(),
                    payment_due_at: Some("2026-11-26T11:10:48.118204Z".parse().unwrap()),
                },
                "{file}"
            );
            assert_eq!(order.item_count().unwrap(), 3, "{file}");
        }
    }

    #[test]
    fn the_topic_is_the_contracts() {
        // Provisioned by the projector too, when report-exporter starts before orders ever ran:
        // with the contract's settings, as orders provisions it.
        assert_eq!(
            ORDERS_TOPIC.spec(),
            TopicSpec::new("orders.orders.v1")
                .partitions(6)
                .config("cleanup.policy", "compact")
        );
    }

    #[test]
    fn an_order_without_payment_due_at_still_decodes() {
        let mut event: serde_json::Value = serde_json::from_str(EXAMPLES[0].1).unwrap();
        event["payload"]["entity"]
            .as_object_mut()
            .unwrap()
            .remove("payment_due_at");

        let event: EventEnvelope<OrderView> = serde_json::from_value(event).unwrap();

        assert_eq!(event.payload.entity.unwrap().payment_due_at, None);
    }

    #[test]
    fn quantities_beyond_32_bits_add_up_in_64() {
        let mut order = example("order-placed.json").payload.entity.unwrap();
        order.items = vec![
            OrderItem {
                quantity: i32::MAX.into(),
            },
            OrderItem { quantity: 1 },
        ];

        assert_eq!(order.item_count().unwrap(), i64::from(i32::MAX) + 1);
    }

    #[test]
    fn an_item_count_that_overflows_64_bits_is_an_error() {
        let mut order = example("order-placed.json").payload.entity.unwrap();
        order.items = vec![OrderItem { quantity: i64::MAX }, OrderItem { quantity: 1 }];

        assert!(order.item_count().is_err());
    }
}

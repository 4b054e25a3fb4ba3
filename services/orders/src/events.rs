//! The integration events orders publishes: every change of an order, on [`ORDERS_TOPIC`],
//! with the order and its customer as the entity ([`OrderEntity`]). Recorded in the outbox by
//! [`crate::store`], in the transaction of the change.

use integration_events::EntityTopic;
use serde::Serialize;

use crate::order::Order;

/// Where orders announces every change of an order; see `docs/contracts/orders.orders.v1.md`.
pub const ORDERS_TOPIC: EntityTopic = EntityTopic::new("orders", "orders", "order");
/// The `message_type` of the event for a new order.
pub const ORDER_PLACED: &str = "OrderPlaced";
/// The `message_type` of the event for an order that was paid.
pub const ORDER_PAID: &str = "OrderPaid";
/// The `message_type` of the event for an order cancelled because it was not paid in time.
pub const ORDER_CANCELLED: &str = "OrderCancelled";
/// An order's revision when it is placed; every later change (paid, cancelled) adds one.
pub const FIRST_REVISION: i64 = 1;

/// The entity of the events on `orders.orders.v1`: the order, and who placed it, which the API
/// response leaves out but consumers (a confirmation e-mail, a report) need.
#[derive(Debug, Serialize)]
pub struct OrderEntity<'a> {
    #[serde(flatten)]
    pub order: &'a Order,
    pub customer_id: &'a str,
    pub customer_email: &'a str,
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::order::{OrderItem, OrderStatus};

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

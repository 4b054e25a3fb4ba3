//! The order as the domain sees it: what a client asks for ([`PlaceOrder`]), what is stored and
//! answered ([`Order`]), the rules a request must follow ([`validate`]) and a payment must meet
//! ([`Order::check_payable`]), and [`OrderError`], what the order operations fail with. No SQL
//! here: [`crate::store`] runs the transactions, [`crate::pricing`] prices the items.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use platform::validate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an order operation failed, in the domain's terms. [`crate::error::ApiError`] turns each
/// into its problem response; the task worker turns them into task failures.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Fields of the request break a rule; what is wrong, keyed by field (`customer_email`,
    /// `items[0].quantity`).
    #[error("invalid order: {0:?}")]
    Invalid(BTreeMap<String, String>),

    /// Products that are unknown (to orders' copy of the catalog) or not for sale.
    #[error("products cannot be ordered: {0:?}")]
    UnavailableProducts(Vec<String>),

    /// The products are priced in more than one currency, and an order has one.
    #[error("products priced in several currencies: {0:?}")]
    MixedCurrencies(Vec<String>),

    /// No such order.
    #[error("order {0} not found")]
    NotFound(Uuid),

    /// The order was cancelled (not paid in time) and cannot be paid any more.
    #[error("order {0} was cancelled")]
    Cancelled(Uuid),

    /// The order's `payment_due_at` has passed; its cancellation follows.
    #[error("order {0} was due by {1}")]
    PaymentOverdue(Uuid, DateTime<Utc>),

    /// The `Idempotency-Key` was used before with another request.
    #[error(transparent)]
    IdempotencyKey(#[from] idempotency::KeyError),

    /// The database failed, or a bug.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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

impl Order {
    /// Whether the order may be paid at `now`: `Ok(true)` while it waits for its payment,
    /// `Ok(false)` when it is paid already (paying again changes nothing, so that a client may
    /// retry a payment whose answer it did not get). A cancelled order cannot be paid any more,
    /// nor one past its `payment_due_at`, even while its cancellation has not fired yet (the
    /// scheduler may be behind, or down): the deadline is enforced where payment is decided.
    pub fn check_payable(&self, now: DateTime<Utc>) -> Result<bool, OrderError> {
        match self.status {
            OrderStatus::Paid => Ok(false),
            OrderStatus::Cancelled => Err(OrderError::Cancelled(self.order_id)),
            OrderStatus::PendingPayment if self.payment_due_at <= now => Err(
                OrderError::PaymentOverdue(self.order_id, self.payment_due_at),
            ),
            OrderStatus::PendingPayment => Ok(true),
        }
    }
}

/// What [`crate::store::cancel_unpaid`] found, and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The order was still waiting for its payment: it is cancelled now.
    Cancelled,
    /// The order was paid or cancelled already: nothing changed.
    NotPending(OrderStatus),
    /// No such order.
    NotFound,
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
pub fn validate(request: &PlaceOrder) -> Result<(), OrderError> {
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
        Err(OrderError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
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

    fn invalid_fields(request: &PlaceOrder) -> Vec<String> {
        match validate(request) {
            Ok(()) => Vec::new(),
            Err(OrderError::Invalid(errors)) => errors.into_keys().collect(),
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
    fn an_order_is_paid_once_and_only_before_its_deadline() {
        let now = Utc::now();
        let order = |status, payment_due_at| Order {
            order_id: Uuid::nil(),
            status,
            items: Vec::new(),
            total_cents: 0,
            currency: "EUR".to_owned(),
            created_at: now,
            payment_due_at,
        };
        let later = now + chrono::Duration::minutes(1);

        assert!(matches!(
            order(OrderStatus::PendingPayment, later).check_payable(now),
            Ok(true)
        ));
        assert!(matches!(
            order(OrderStatus::Paid, now).check_payable(later),
            Ok(false)
        ));
        assert!(matches!(
            order(OrderStatus::Cancelled, later).check_payable(now),
            Err(OrderError::Cancelled(_))
        ));
        assert!(matches!(
            order(OrderStatus::PendingPayment, now).check_payable(now),
            Err(OrderError::PaymentOverdue(..))
        ));
    }
}

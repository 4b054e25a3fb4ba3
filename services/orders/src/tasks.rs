//! The task types orders defines: [`CancelUnpaidOrder`] on its own queue, `orders.tasks.v1`
//! (contract: `docs/contracts/orders.tasks.v1.md`; [`crate::workers`] runs it), and those it
//! enqueues or schedules on notifications' queue, [`NOTIFICATIONS_TASKS_TOPIC`] (contract:
//! `docs/contracts/notifications.tasks.v1.md`), with the dedup keys of an order's schedules.
//!
//! orders declares its own copies of notifications' task types: services share topics and
//! message contracts, never code. The contract's example files keep these structs and
//! notifications' in step (both services' tests read them).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use task_queue::Task;
use uuid::Uuid;

/// The queue's main topic, fixed by the contract.
pub const NOTIFICATIONS_TASKS_TOPIC: &str = "notifications.tasks.v1";

/// Asks notifications to confirm a placed order to its customer. Enqueued in the transaction
/// that stores the order, so it exists if and only if the order does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendOrderConfirmation {
    pub order_id: Uuid,
    pub customer_email: String,
    /// In the currency's minor unit.
    pub total_cents: i64,
    pub currency: String,
}

impl Task for SendOrderConfirmation {
    const NAME: &'static str = "SendOrderConfirmation";

    /// One confirmation per order, however often it is enqueued: a UUID v5 of the order id and
    /// the task type, which notifications deduplicates by. Not the order id itself, which the
    /// order's other tasks (a cancellation notice, payment reminders) would then share: the
    /// first of them delivered would make the others look done.
    fn task_id(&self) -> Option<Uuid> {
        Some(confirmation_task_id(self.order_id))
    }
}

/// The task id of the confirmation of `order_id`.
pub fn confirmation_task_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&order_id, SendOrderConfirmation::NAME.as_bytes())
}

/// Tells the customer that an order was cancelled because it was not paid in time. Enqueued in
/// the transaction that cancels the order (the `CancelUnpaidOrder` task's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendOrderCancelled {
    pub order_id: Uuid,
    pub customer_email: String,
}

impl Task for SendOrderCancelled {
    const NAME: &'static str = "SendOrderCancelled";

    /// One notice per order: UUID v5 of the order id and the task type, like the confirmation.
    fn task_id(&self) -> Option<Uuid> {
        Some(Uuid::new_v5(&self.order_id, Self::NAME.as_bytes()))
    }
}

/// Reminds the customer to pay before `payment_due_at`. Not enqueued directly: the order's
/// `order:<id>:payment-reminder` schedule fires it half-way to the deadline, and the scheduler
/// gives each firing its task id (so a repeated firing is delivered once).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendPaymentReminder {
    pub order_id: Uuid,
    pub customer_email: String,
    /// When the order is cancelled if it is still unpaid.
    pub payment_due_at: DateTime<Utc>,
}

impl Task for SendPaymentReminder {
    const NAME: &'static str = "SendPaymentReminder";
}

/// Cancels the order if it is still unpaid. Fired by the order's `order:<id>:cancel-unpaid`
/// schedule at its `payment_due_at`; paying the order cancels that schedule, so normally it
/// only ever runs for unpaid orders. It checks anyway: a payment may commit between the firing
/// and the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelUnpaidOrder {
    pub order_id: Uuid,
}

impl Task for CancelUnpaidOrder {
    const NAME: &'static str = "CancelUnpaidOrder";
}

/// The dedup key of the order's schedule that cancels it at `payment_due_at` if unpaid.
pub fn cancel_unpaid_key(order_id: Uuid) -> String {
    format!("order:{order_id}:cancel-unpaid")
}

/// The dedup key of the order's schedule that reminds the customer to pay, half-way to
/// `payment_due_at`.
pub fn payment_reminder_key(order_id: Uuid) -> String {
    format!("order:{order_id}:payment-reminder")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_task_id_is_derived_from_the_order_id_and_the_task_type() {
        let order_id: Uuid = "01a2177f-52b4-7a9c-8f21-0d6e4a9b1c01".parse().unwrap();
        let task = SendOrderConfirmation {
            order_id,
            customer_email: "ada@example.com".to_owned(),
            total_cents: 4780,
            currency: "EUR".to_owned(),
        };

        // The id the contract gives for its example order.
        assert_eq!(
            task.task_id(),
            Some("ecb71d3b-b2a6-5801-9205-694bf8977eee".parse().unwrap())
        );
        assert_eq!(task.task_id(), task.task_id());
        assert_ne!(
            confirmation_task_id(Uuid::now_v7()),
            confirmation_task_id(order_id)
        );
    }
}

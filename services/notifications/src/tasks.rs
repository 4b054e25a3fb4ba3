//! The tasks of `notifications.tasks.v1`, as this service reads them, and the notification each
//! one becomes. Contract: `docs/contracts/notifications.tasks.v1.md`.
//!
//! Only the fields this service uses are declared (tolerant reader): a producer may add fields
//! without breaking it. Producers define their own structs for the tasks they enqueue; no
//! service imports another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use task_queue::Task;
use uuid::Uuid;

use crate::notification::{Kind, Message, Reference};

/// A task that becomes one notification.
pub trait Notify: Task {
    /// What to send, and to whom.
    fn message(&self) -> Message;
}

/// Sent by orders when an order was placed (`POST /orders`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct SendOrderConfirmation {
    pub order_id: Uuid,
    pub customer_email: String,
    /// In the currency's minor unit.
    pub total_cents: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
}

impl Task for SendOrderConfirmation {
    const NAME: &'static str = "SendOrderConfirmation";
}

impl Notify for SendOrderConfirmation {
    fn message(&self) -> Message {
        Message {
            kind: Kind::OrderConfirmation,
            recipient: self.customer_email.clone(),
            subject: "Your order is confirmed".to_owned(),
            body: format!(
                "Thank you for your order {}. Total: {}.",
                self.order_id,
                format_amount(self.total_cents, &self.currency)
            ),
            reference: Some(Reference::Order(self.order_id)),
        }
    }
}

/// Sent when an order was cancelled (by the task scheduler's unpaid-order cancellation).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct SendOrderCancelled {
    pub order_id: Uuid,
    pub customer_email: String,
}

impl Task for SendOrderCancelled {
    const NAME: &'static str = "SendOrderCancelled";
}

impl Notify for SendOrderCancelled {
    fn message(&self) -> Message {
        Message {
            kind: Kind::OrderCancelled,
            recipient: self.customer_email.clone(),
            subject: "Your order was cancelled".to_owned(),
            body: format!("Your order {} has been cancelled.", self.order_id),
            reference: Some(Reference::Order(self.order_id)),
        }
    }
}

/// Sent while an order waits for its payment (by the task scheduler).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct SendPaymentReminder {
    pub order_id: Uuid,
    pub customer_email: String,
    /// When the order is cancelled if it is still unpaid.
    pub payment_due_at: DateTime<Utc>,
}

impl Task for SendPaymentReminder {
    const NAME: &'static str = "SendPaymentReminder";
}

impl Notify for SendPaymentReminder {
    fn message(&self) -> Message {
        Message {
            kind: Kind::PaymentReminder,
            recipient: self.customer_email.clone(),
            subject: "Your order is waiting for payment".to_owned(),
            body: format!(
                "Order {} is not paid yet. Please pay by {}, or it will be cancelled.",
                self.order_id,
                self.payment_due_at.format("%Y-%m-%d %H:%M UTC")
            ),
            reference: Some(Reference::Order(self.order_id)),
        }
    }
}

/// Sent by report-exporter when an export finished.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct SendExportReady {
    pub export_id: Uuid,
    pub download_url: String,
    pub recipient: String,
}

impl Task for SendExportReady {
    const NAME: &'static str = "SendExportReady";
}

impl Notify for SendExportReady {
    fn message(&self) -> Message {
        Message {
            kind: Kind::ExportReady,
            recipient: self.recipient.clone(),
            subject: "Your export is ready".to_owned(),
            body: format!(
                "Your export is ready. Download it from {}.",
                self.download_url
            ),
            reference: Some(Reference::Export(self.export_id)),
        }
    }
}

/// Sends the operators the digest of the day before, as a day of `timezone`.
///
/// Not part of what other services enqueue: only this service's own schedule fires it, with the
/// payload it was given at start (`DIGEST_RECIPIENT`, `DIGEST_TIMEZONE`). It is in the contract
/// anyway, because it travels on `notifications.tasks.v1` like every other task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendDailyDigest {
    /// An e-mail address.
    pub recipient: String,
    /// The IANA time zone whose calendar day "yesterday" means, e.g. `UTC` or `Europe/Berlin`.
    pub timezone: String,
}

impl Task for SendDailyDigest {
    const NAME: &'static str = "SendDailyDigest";
}

/// `4780` `EUR` as `47.80 EUR`: an amount in minor units, with as many decimals as the
/// currency has (ISO 4217: two for most, none for `JPY`, three for `KWD`).
fn format_amount(minor_units: i64, currency: &str) -> String {
    /// The currencies in circulation without minor units, and with three decimals.
    const NO_DECIMALS: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE_DECIMALS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

    let decimals: u32 = if NO_DECIMALS.contains(&currency) {
        0
    } else if THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    };
    if decimals == 0 {
        return format!("{minor_units} {currency}");
    }
    let factor = 10_i64.pow(decimals);
    let sign = if minor_units < 0 { "-" } else { "" };
    let (major, minor) = (
        (minor_units / factor).unsigned_abs(),
        (minor_units % factor).unsigned_abs(),
    );
    format!(
        "{sign}{major}.{minor:0width$} {currency}",
        width = decimals as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_the_decimals_of_their_currency() {
        assert_eq!(format_amount(4780, "EUR"), "47.80 EUR");
        assert_eq!(format_amount(5, "USD"), "0.05 USD");
        assert_eq!(format_amount(4780, "JPY"), "4780 JPY");
        assert_eq!(format_amount(12_345, "KWD"), "12.345 KWD");
        assert_eq!(format_amount(-250, "EUR"), "-2.50 EUR");
    }

    #[test]
    fn an_order_confirmation_names_the_order_and_its_total() {
        let task = SendOrderConfirmation {
            order_id: Uuid::nil(),
            customer_email: "ada@example.com".to_owned(),
            total_cents: 4780,
            currency: "EUR".to_owned(),
        };

        let message = task.message();

        assert_eq!(message.kind, Kind::OrderConfirmation);
        assert_eq!(message.recipient, "ada@example.com");
        assert_eq!(message.reference, Some(Reference::Order(Uuid::nil())));
        assert_eq!(
            message.body,
            "Thank you for your order 00000000-0000-0000-0000-000000000000. Total: 47.80 EUR."
        );
    }

    #[test]
    fn a_payment_reminder_gives_the_deadline_in_utc() {
        let task = SendPaymentReminder {
            order_id: Uuid::nil(),
            customer_email: "ada@example.com".to_owned(),
            payment_due_at: "2026-11-26T11:10:48Z".parse().unwrap(),
        };

        assert!(
            task.message().body.contains("pay by 2026-11-26 11:10 UTC"),
            "{}",
            task.message().body
        );
    }
}

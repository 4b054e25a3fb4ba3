//! The daily digest: a recurring schedule (`daily-digest`, [`DIGEST_SCHEDULE`]) fires a
//! [`SendDailyDigest`](crate::tasks::SendDailyDigest) task on the service's own queue, which
//! becomes one notification to the operators ([`digest_message`]): how many notifications of
//! each kind went out the day before. Its handler is in [`crate::workers`], its query in
//! [`crate::store`].

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::notification::{Kind, Message};

/// The name of the recurring schedule; `GET /admin/schedules` lists its occurrences with the
/// dedup key `daily-digest@<due time>`.
pub const DIGEST_SCHEDULE: &str = "daily-digest";

/// The digest of `day`: one line per kind that was delivered.
pub fn digest_message(
    recipient: &str,
    day: NaiveDate,
    timezone: Tz,
    counts: &[(Kind, i64)],
) -> Message {
    let total: i64 = counts.iter().map(|(_, count)| count).sum();
    let lines = counts.iter().map(|(kind, count)| {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{kind:?}"));
        format!("\n- {kind}: {count}")
    });
    let body = std::iter::once(format!(
        "Notifications delivered on {day} ({timezone}): {total}."
    ))
    .chain(lines)
    .collect();
    Message {
        kind: Kind::DailyDigest,
        recipient: recipient.to_owned(),
        subject: format!("Notifications digest for {day}"),
        body,
        reference: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_counts_each_kind() {
        let message = digest_message(
            "ops@example.com",
            "2026-11-25".parse().unwrap(),
            Tz::UTC,
            &[(Kind::OrderConfirmation, 12), (Kind::PaymentReminder, 3)],
        );

        assert_eq!(message.kind, Kind::DailyDigest);
        assert_eq!(message.recipient, "ops@example.com");
        assert_eq!(message.reference, None);
        assert_eq!(
            message.body,
            "Notifications delivered on 2026-11-25 (UTC): 15.\n\
             - order_confirmation: 12\n\
             - payment_reminder: 3"
        );
    }
}

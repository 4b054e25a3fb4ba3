//! The daily digest: a recurring schedule (`daily-digest`, [`DIGEST_SCHEDULE`]) fires a
//! [`SendDailyDigest`] task on the service's own queue, which becomes one notification to the
//! operators: how many notifications of each kind went out the day before.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use task_queue::{Task, TaskContext, TaskError, TaskHandler};
use task_scheduler::calendar::{day_bounds, yesterday};

use crate::notification::{Kind, Message, Notification, Provider};
use crate::store;

/// The name of the recurring schedule; `GET /admin/schedules` lists its occurrences with the
/// dedup key `daily-digest@<due time>`.
pub const DIGEST_SCHEDULE: &str = "daily-digest";

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

/// The handler of [`SendDailyDigest`]: count, deliver, record.
#[derive(Debug, Clone)]
pub struct SendDigests {
    pub provider: Provider,
}

impl TaskHandler<SendDailyDigest> for SendDigests {
    /// Like every other notification: delivered with the task id as the provider's
    /// idempotency key, recorded in `ctx.conn`. The scheduler derives the task id from the
    /// occurrence, so a firing repeated by a crash is delivered once.
    async fn handle(
        &self,
        task: SendDailyDigest,
        ctx: &mut TaskContext<'_>,
    ) -> Result<(), TaskError> {
        let timezone: Tz = task.timezone.parse().map_err(|error| {
            TaskError::permanent(anyhow::anyhow!(
                "SendDailyDigest names an unknown time zone `{}`: {error}",
                task.timezone
            ))
        })?;
        // The day before the one the schedule was due on, however late this runs; a digest
        // enqueued by hand (no schedule) covers the day before today.
        let day = yesterday(ctx.scheduled_for.unwrap_or_else(Utc::now), timezone);
        let (from, to) = day_bounds(day, timezone)?;
        let counts = deliveries_per_kind(ctx.conn, from, to).await?;
        let message = digest_message(&task.recipient, day, timezone, &counts);
        let notification = Notification::new(ctx.task_id, message);
        self.provider.deliver(&notification).await?;
        store::record(ctx.conn, &notification, ctx.attempt)
            .await
            .map_err(TaskError::retryable)?;
        tracing::info!(task_id = %ctx.task_id, %day, "daily digest delivered");
        Ok(())
    }
}

/// How many notifications of each kind were delivered in `[from, to)`, digests left out, by
/// kind.
async fn deliveries_per_kind(
    conn: &mut PgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<(Kind, i64)>> {
    sqlx::query_as(
        "SELECT kind, count(*) FROM notifications
         WHERE delivered_at >= $1 AND delivered_at < $2 AND kind <> 'daily_digest'
         GROUP BY kind
         ORDER BY kind",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
    .context("Failed to count the day's deliveries")
}

/// The digest of `day`: one line per kind that was delivered.
fn digest_message(
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

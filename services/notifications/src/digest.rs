//! The daily digest: a recurring schedule (`daily-digest`, [`DIGEST_SCHEDULE`]) fires a
//! [`SendDailyDigest`] task on the service's own queue, which becomes one notification to the
//! operators: how many notifications of each kind went out the day before.

use anyhow::Context as _;
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use task_queue::{Task, TaskContext, TaskError, TaskHandler};

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
        let day = yesterday(Utc::now(), timezone);
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

/// The calendar day before `now`'s, in `timezone`.
fn yesterday(now: DateTime<Utc>, timezone: Tz) -> NaiveDate {
    let today = now.with_timezone(&timezone).date_naive();
    today - Days::new(1)
}

/// The instants `day` starts and ends in `timezone` (a day is 23 or 25 hours long when the
/// clocks change).
fn day_bounds(day: NaiveDate, timezone: Tz) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start_of = |date: NaiveDate| {
        date.and_hms_opt(0, 0, 0)
            .and_then(|midnight| midnight.and_local_timezone(timezone).earliest())
            // Midnight may not exist where the clocks jump at 00:00; the day then starts at the
            // first instant after the gap, which one hour later always is.
            .or_else(|| {
                date.and_hms_opt(1, 0, 0)
                    .and_then(|one| one.and_local_timezone(timezone).earliest())
            })
            .map(|local| local.with_timezone(&Utc))
            .with_context(|| format!("{date} has no start in {timezone}"))
    };
    Ok((start_of(day)?, start_of(day + Days::new(1))?))
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
    fn yesterday_is_a_day_of_the_digest_time_zone() {
        let now: DateTime<Utc> = "2026-11-26T06:00:00Z".parse().unwrap();
        assert_eq!(yesterday(now, Tz::UTC), "2026-11-25".parse().unwrap());
        // 23:30 UTC is already the next day in Tokyo.
        let late: DateTime<Utc> = "2026-11-26T23:30:00Z".parse().unwrap();
        assert_eq!(
            yesterday(late, Tz::Asia__Tokyo),
            "2026-11-26".parse().unwrap()
        );
    }

    #[test]
    fn a_day_spans_its_local_midnights() {
        let (from, to) = day_bounds("2026-03-29".parse().unwrap(), Tz::Europe__Berlin).unwrap();
        assert_eq!(
            from,
            "2026-03-28T23:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        // The day the clocks go forward has 23 hours.
        assert_eq!(to, "2026-03-29T22:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

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

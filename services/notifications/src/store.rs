//! The `notifications` table: what was delivered, recorded by the worker and read by
//! `GET /notifications`.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::notification::{Kind, Notification};

/// A delivered notification, as `GET /notifications` lists it: `order_id` or `export_id`,
/// whichever applies; the other is left out.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub task_id: Uuid,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_id: Option<Uuid>,
    pub recipient: String,
    /// The attempt that delivered it, 1 for the first.
    pub attempts: i32,
    pub delivered_at: DateTime<Utc>,
}

/// Which notifications to list; `None` matches all.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub order_id: Option<Uuid>,
    pub kind: Option<Kind>,
    pub limit: u32,
}

/// Records that `notification` was delivered on `attempt`, through the worker's transaction.
///
/// The worker never runs a task again once its execution committed, so the row cannot exist
/// yet. Should it anyway, the first delivery's record stays: `DO NOTHING` rather than an error
/// that would retry, and finally dead-letter, a notification that was delivered.
pub async fn record(
    conn: &mut PgConnection,
    notification: &Notification,
    attempt: u32,
) -> anyhow::Result<()> {
    let attempts = i32::try_from(attempt).context("The attempt number does not fit an INT")?;
    sqlx::query(
        "INSERT INTO notifications (task_id, kind, order_id, export_id, recipient, attempts)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(notification.task_id)
    .bind(notification.kind)
    .bind(notification.order_id)
    .bind(notification.export_id)
    .bind(&notification.recipient)
    .bind(attempts)
    .execute(conn)
    .await
    .with_context(|| format!("Failed to record notification {}", notification.task_id))?;
    Ok(())
}

/// The delivered notifications that match `filter`, newest first, at most `filter.limit`.
pub async fn list(pool: &PgPool, filter: Filter) -> anyhow::Result<Vec<DeliveryRecord>> {
    sqlx::query_as(
        "SELECT task_id, kind, order_id, export_id, recipient, attempts, delivered_at
         FROM notifications
         WHERE ($1::uuid IS NULL OR order_id = $1)
           AND ($2::text IS NULL OR kind = $2)
         ORDER BY delivered_at DESC, task_id
         LIMIT $3",
    )
    .bind(filter.order_id)
    .bind(filter.kind)
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await
    .context("Failed to list notifications")
}

/// For the daily digest: how many notifications of each kind were delivered in `[from, to)`,
/// digests left out, by kind.
pub async fn deliveries_per_kind(
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

//! The `items` table, and the event every change records in its transaction through the
//! outbox: a change and its event commit together or not at all.

use anyhow::Context as _;
use integration_events::EventEnvelope;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::SERVICE_NAME;
use crate::events::{ITEM_CREATED, ITEM_DELETED, ITEM_UPDATED, ITEMS, ItemEntity};
use crate::item::{Item, PutItem};

/// What a PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// New (or deleted before): an `ItemCreated` event is recorded.
    Created(Item),
    /// Some fields differed: an `ItemUpdated` event is recorded.
    Updated(Item),
    /// The item already had exactly these fields: nothing changed, no event.
    Unchanged(Item),
}

/// A row of `items` as a PUT finds it.
#[derive(sqlx::FromRow)]
struct Current {
    #[sqlx(flatten)]
    item: Item,
    deleted: bool,
}

/// Creates or updates the item, and records its event, in one transaction.
pub async fn put(pool: &PgPool, command: &PutItem) -> anyhow::Result<Put> {
    // A first PUT of a new id that loses the race to a concurrent one tries again; the second
    // try finds the row and takes its turn behind the winner, so two tries always suffice.
    for _ in 0..2 {
        if let Some(put) = try_put(pool, command).await? {
            return Ok(put);
        }
    }
    anyhow::bail!(
        "Failed to store item {}: it kept changing",
        command.item_id.as_str()
    )
}

/// One try of [`put`]; `None` when a concurrent first PUT of the same id inserted it first.
async fn try_put(pool: &PgPool, command: &PutItem) -> anyhow::Result<Option<Put>> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    // The current row, deleted or not, locked until the commit so that writers of one item take
    // turns.
    let current: Option<Current> = sqlx::query_as(
        "SELECT item_id, name, quantity, revision, updated_at, deleted
         FROM items WHERE item_id = $1 FOR UPDATE",
    )
    .bind(command.item_id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to lock the item")?;

    let put = match current {
        Some(Current {
            item,
            deleted: false,
        }) if item.fields == command.fields => return Ok(Some(Put::Unchanged(item))),
        // Nothing to lock: insert, unless a concurrent first PUT committed the row meanwhile.
        None => {
            let inserted: Option<Item> = sqlx::query_as(
                "INSERT INTO items (item_id, name, quantity, revision) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (item_id) DO NOTHING
                 RETURNING item_id, name, quantity, revision, updated_at",
            )
            .bind(command.item_id.as_str())
            .bind(&command.fields.name)
            .bind(command.fields.quantity)
            .fetch_optional(&mut *tx)
            .await
            .context("Failed to insert the item")?;
            let Some(item) = inserted else {
                return Ok(None);
            };
            record_created(&mut tx, &item).await?;
            Put::Created(item)
        }
        Some(Current { item: before, deleted }) => {
            let item: Item = sqlx::query_as(
                "UPDATE items
                 SET name = $2, quantity = $3, deleted = false, revision = revision + 1,
                     updated_at = now()
                 WHERE item_id = $1
                 RETURNING item_id, name, quantity, revision, updated_at",
            )
            .bind(command.item_id.as_str())
            .bind(&command.fields.name)
            .bind(command.fields.quantity)
            .fetch_one(&mut *tx)
            .await
            .context("Failed to update the item")?;
            if deleted {
                // An item deleted before is created again, continuing its revisions.
                record_created(&mut tx, &item).await?;
                Put::Created(item)
            } else {
                let modified = before.fields.modified_fields(&item.fields);
                let event = EventEnvelope::updated(
                    ITEMS.entity_type,
                    &item.item_id,
                    item.revision,
                    SERVICE_NAME,
                    ItemEntity::from(&item),
                    modified,
                );
                ITEMS.record(&mut tx, &event, ITEM_UPDATED).await?;
                Put::Updated(item)
            }
        }
    };
    tx.commit().await.context("Failed to commit the item")?;
    Ok(Some(put))
}

async fn record_created(tx: &mut PgConnection, item: &Item) -> anyhow::Result<()> {
    let event = EventEnvelope::created(
        ITEMS.entity_type,
        &item.item_id,
        item.revision,
        SERVICE_NAME,
        ItemEntity::from(item),
    );
    ITEMS.record(tx, &event, ITEM_CREATED).await
}

pub async fn get(pool: &PgPool, item_id: &str) -> anyhow::Result<Option<Item>> {
    sqlx::query_as(
        "SELECT item_id, name, quantity, revision, updated_at
         FROM items WHERE item_id = $1 AND NOT deleted",
    )
    .bind(item_id)
    .fetch_optional(pool)
    .await
    .context("Failed to read the item")
}

/// Marks the item deleted under the next revision and records its `deleted` event (and the
/// tombstone after it) in one transaction. `false` when there was no such item.
pub async fn delete(pool: &PgPool, item_id: &str) -> anyhow::Result<bool> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    let revision: Option<i64> = sqlx::query_scalar(
        "UPDATE items SET deleted = true, revision = revision + 1, updated_at = now()
         WHERE item_id = $1 AND NOT deleted
         RETURNING revision",
    )
    .bind(item_id)
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to delete the item")?;
    let Some(revision) = revision else {
        return Ok(false);
    };
    let event =
        EventEnvelope::<ItemEntity>::deleted(ITEMS.entity_type, item_id, revision, SERVICE_NAME);
    ITEMS.record(&mut tx, &event, ITEM_DELETED).await?;
    tx.commit().await.context("Failed to commit the deletion")?;
    Ok(true)
}

/// How many items exist: what [`crate::tasks::SummarizeItems`] records.
pub async fn count(conn: &mut PgConnection) -> anyhow::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM items WHERE NOT deleted")
        .fetch_one(conn)
        .await
        .context("Failed to count the items")
}

/// Records a summary once per task id: a redelivered task adds nothing.
pub async fn record_summary(
    conn: &mut PgConnection,
    task_id: Uuid,
    item_count: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO item_summaries (task_id, item_count) VALUES ($1, $2)
         ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(task_id)
    .bind(item_count)
    .execute(conn)
    .await
    .context("Failed to record the summary")?;
    Ok(())
}

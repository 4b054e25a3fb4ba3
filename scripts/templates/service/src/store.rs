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
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin a transaction")?;
    // The current row, deleted or not, locked until the commit so that writers of one item take
    // turns. (Two first PUTs of a new id can both find nothing: the second then updates.)
    let current: Option<Current> = sqlx::query_as(
        "SELECT item_id, name, quantity, revision, updated_at, deleted
         FROM items WHERE item_id = $1 FOR UPDATE",
    )
    .bind(command.item_id.as_str())
    .fetch_optional(&mut *tx)
    .await
    .context("Failed to lock the item")?;
    if let Some(Current {
        item,
        deleted: false,
    }) = &current
        && item.fields == command.fields
    {
        return Ok(Put::Unchanged(item.clone()));
    }

    let item: Item = sqlx::query_as(
        "INSERT INTO items (item_id, name, quantity, revision) VALUES ($1, $2, $3, 1)
         ON CONFLICT (item_id) DO UPDATE
         SET name = $2, quantity = $3, deleted = false, revision = items.revision + 1,
             updated_at = now()
         RETURNING item_id, name, quantity, revision, updated_at",
    )
    .bind(command.item_id.as_str())
    .bind(&command.fields.name)
    .bind(command.fields.quantity)
    .fetch_one(&mut *tx)
    .await
    .context("Failed to store the item")?;

    // An item deleted before is created again, continuing its revisions.
    let live = current.filter(|current| !current.deleted);
    let put = if let Some(Current { item: before, .. }) = live {
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
    } else {
        let event = EventEnvelope::created(
            ITEMS.entity_type,
            &item.item_id,
            item.revision,
            SERVICE_NAME,
            ItemEntity::from(&item),
        );
        ITEMS.record(&mut tx, &event, ITEM_CREATED).await?;
        Put::Created(item)
    };
    tx.commit().await.context("Failed to commit the item")?;
    Ok(put)
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

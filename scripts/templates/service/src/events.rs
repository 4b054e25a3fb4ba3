//! What this service publishes: every change of an item on `{{service}}.items.v1`.
//! Write its contract in `docs/contracts/{{service}}.items.v1.md`.

use integration_events::EntityTopic;
use serde::Serialize;

use crate::config::SERVICE_NAME;
use crate::item::Item;

/// `{{service}}.items.v1`: keyed by item id, compacted.
pub const ITEMS: EntityTopic = EntityTopic::new(SERVICE_NAME, "items", "item");

/// The `message_type` header of each kind of event.
pub const ITEM_CREATED: &str = "ItemCreated";
pub const ITEM_UPDATED: &str = "ItemUpdated";
pub const ITEM_DELETED: &str = "ItemDeleted";

/// The entity in `created` and `updated` events: a contract that only ever gains fields, so a
/// type of its own rather than the HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemEntity<'a> {
    pub item_id: &'a str,
    pub name: &'a str,
    pub quantity: i64,
}

impl<'a> From<&'a Item> for ItemEntity<'a> {
    fn from(item: &'a Item) -> Self {
        Self {
            item_id: &item.item_id,
            name: &item.fields.name,
            quantity: item.fields.quantity,
        }
    }
}

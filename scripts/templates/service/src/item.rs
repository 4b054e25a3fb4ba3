//! The item: what a client writes, the rules it must follow, and what the service stores.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest item id, in characters.
pub const MAX_ITEM_ID_LEN: usize = 64;
/// The longest item name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// The highest quantity.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// The largest request body, in bytes; a larger one is refused with a 413 before it is read.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What is wrong with a request, by the JSON name of each bad field; sorted, so responses are
/// stable.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// An item id as the client chose it: 1 to [`MAX_ITEM_ID_LEN`] characters of `[A-Za-z0-9._-]`,
/// safe in a URL path and in a Kafka key without escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemId(String);

impl ItemId {
    pub fn parse(id: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if (1..=MAX_ITEM_ID_LEN).contains(&id.len()) && id.chars().all(allowed) {
            Ok(Self(id))
        } else {
            Err(format!(
                "must be 1 to {MAX_ITEM_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fields a client sets with `PUT /items/{item_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ItemFields {
    pub name: String,
    pub quantity: i64,
}

impl ItemFields {
    /// What breaks the rules, by field; empty when nothing does.
    pub fn errors(&self) -> FieldErrors {
        let mut errors = FieldErrors::new();
        if self.name.trim().is_empty() {
            errors.insert("name", "must not be blank".to_owned());
        } else if self.name.chars().count() > MAX_NAME_LEN {
            errors.insert("name", format!("must be at most {MAX_NAME_LEN} characters"));
        } else if let Err(reason) = platform::validate::control_free(&self.name) {
            errors.insert("name", reason);
        }
        if !(0..=MAX_QUANTITY).contains(&self.quantity) {
            errors.insert("quantity", format!("must be between 0 and {MAX_QUANTITY}"));
        }
        errors
    }

    /// The JSON names of the fields whose values differ from `other`: an `updated` event's
    /// `modified_fields`.
    pub fn modified_fields(&self, other: &Self) -> Vec<String> {
        let Self { name, quantity } = self;
        [
            ("name", *name != other.name),
            ("quantity", *quantity != other.quantity),
        ]
        .into_iter()
        .filter(|&(_, modified)| modified)
        .map(|(field, _)| field.to_owned())
        .collect()
    }
}

/// A `PUT /items/{item_id}` that follows the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem {
    pub item_id: ItemId,
    pub fields: ItemFields,
}

impl PutItem {
    /// Checks the id and the fields together, so one response names everything to fix.
    pub fn parse(item_id: String, fields: ItemFields) -> Result<Self, FieldErrors> {
        let mut errors = fields.errors();
        match ItemId::parse(item_id) {
            Ok(item_id) if errors.is_empty() => Ok(Self { item_id, fields }),
            Ok(_) => Err(errors),
            Err(reason) => {
                errors.insert("item_id", reason);
                Err(errors)
            }
        }
    }
}

/// A stored item, as the HTTP API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[allow(
    clippy::struct_field_names,
    reason = "`item_id` is the name of the column and of the JSON field"
)]
pub struct Item {
    pub item_id: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub fields: ItemFields,
    /// 1 when created, +1 with every change. Continues after a delete and a new create.
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broken_rule_is_named() {
        let fields = ItemFields {
            name: " ".to_owned(),
            quantity: -1,
        };

        let errors = PutItem::parse("no spaces".to_owned(), fields).unwrap_err();

        assert_eq!(
            errors.keys().copied().collect::<Vec<_>>(),
            ["item_id", "name", "quantity"]
        );
    }
}

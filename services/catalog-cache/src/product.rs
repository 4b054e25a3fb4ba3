//! The product: what a client writes, the rules it must follow, and what the service stores.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::currency;

/// The longest product id, in characters.
pub const MAX_PRODUCT_ID_LEN: usize = 64;
/// The longest SKU, in characters.
pub const MAX_SKU_LEN: usize = 64;
/// The longest product name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// The highest price: a billion in the currency's major unit (10^11 cents). An order of
/// 1,000,000 units (orders' most) at this price stays far inside an `i64` total.
pub const MAX_PRICE_CENTS: i64 = 100_000_000_000;
/// The highest stock: a billion units, inside the 32-bit integers a reader may store it in.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// The largest request body, in bytes. The largest valid `PUT /products/{product_id}` is under
/// 4 KiB even with every character of its name and SKU written as a `\uXXXX` escape pair; the
/// rest is room for indentation. A larger body is refused with a 413 before it is read.
pub const BODY_LIMIT: usize = 16 * 1024;

/// What is wrong with a request, by the JSON name of each bad field; sorted, so responses are
/// stable.
pub type FieldErrors = BTreeMap<&'static str, String>;

/// A product id as the client chose it: 1 to [`MAX_PRODUCT_ID_LEN`] characters of
/// `[A-Za-z0-9._-]`, safe in a URL path and in a Kafka key without escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductId(String);

impl ProductId {
    pub fn parse(id: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if (1..=MAX_PRODUCT_ID_LEN).contains(&id.len()) && id.chars().all(allowed) {
            Ok(Self(id))
        } else {
            Err(format!(
                "must be 1 to {MAX_PRODUCT_ID_LEN} characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The fields a client sets with `PUT /products/{product_id}`: the request body, and the part
/// of a stored product that the client controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProductFields {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    /// An ISO 4217 code such as `EUR`.
    pub currency: String,
    pub stock: i64,
    /// Whether the product is on sale.
    pub active: bool,
}

impl ProductFields {
    /// What breaks the rules, by field; empty when nothing does.
    pub fn errors(&self) -> FieldErrors {
        let mut errors = FieldErrors::new();
        if let Err(reason) = check_text(&self.sku, MAX_SKU_LEN) {
            errors.insert("sku", reason);
        }
        if let Err(reason) = check_text(&self.name, MAX_NAME_LEN) {
            errors.insert("name", reason);
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            errors.insert(
                "price_cents",
                format!("must be between 0 and {MAX_PRICE_CENTS}"),
            );
        }
        if !currency::is_iso_4217(&self.currency) {
            errors.insert("currency", "not an ISO 4217 code".to_owned());
        }
        if !(0..=MAX_STOCK).contains(&self.stock) {
            errors.insert("stock", format!("must be between 0 and {MAX_STOCK}"));
        }
        errors
    }

    /// The JSON names of the fields whose values differ from `other`, in declaration order: the
    /// `modified_fields` of an `updated` event.
    pub fn modified_fields(&self, other: &Self) -> Vec<String> {
        // Destructured, so that a field added to the struct fails to compile here until it is
        // compared as well.
        let Self {
            sku,
            name,
            price_cents,
            currency,
            stock,
            active,
        } = self;
        [
            ("sku", *sku != other.sku),
            ("name", *name != other.name),
            ("price_cents", *price_cents != other.price_cents),
            ("currency", *currency != other.currency),
            ("stock", *stock != other.stock),
            ("active", *active != other.active),
        ]
        .into_iter()
        .filter(|&(_, modified)| modified)
        .map(|(field, _)| field.to_owned())
        .collect()
    }
}

/// Not blank, at most `max_len` characters (a name is bounded as a reader sees it, not in
/// bytes), and no control characters (`platform::validate::control_free`: PostgreSQL refuses
/// NUL, and none belongs in a name or SKU).
fn check_text(text: &str, max_len: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        Err("must not be blank".to_owned())
    } else if text.chars().count() > max_len {
        Err(format!("must be at most {max_len} characters"))
    } else {
        platform::validate::control_free(text)
    }
}

/// A `PUT /products/{product_id}` that follows the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutProduct {
    pub product_id: ProductId,
    pub fields: ProductFields,
}

impl PutProduct {
    /// Checks the id from the path and the fields from the body together, so that one response
    /// names everything the client has to fix.
    pub fn parse(product_id: String, fields: ProductFields) -> Result<Self, FieldErrors> {
        let mut errors = fields.errors();
        match ProductId::parse(product_id) {
            Ok(product_id) if errors.is_empty() => Ok(Self { product_id, fields }),
            Ok(_) => Err(errors),
            Err(reason) => {
                errors.insert("product_id", reason);
                Err(errors)
            }
        }
    }
}

/// A stored product, as the HTTP API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[allow(
    clippy::struct_field_names,
    reason = "`product_id` is the name of the column and of the JSON field"
)]
pub struct Product {
    pub product_id: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub fields: ProductFields,
    /// 1 when created, +1 with every change. Continues after a delete and a new create.
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> ProductFields {
        ProductFields {
            sku: "SKU-1".to_owned(),
            name: "Espresso cup".to_owned(),
            price_cents: 1_250,
            currency: "EUR".to_owned(),
            stock: 3,
            active: true,
        }
    }

    #[test]
    fn product_ids_are_short_and_url_safe() {
        for id in ["p", "p-1", "SKU_42.v2", &"a".repeat(MAX_PRODUCT_ID_LEN)] {
            assert!(ProductId::parse(id.to_owned()).is_ok(), "{id}");
        }
        for id in [
            "",
            "a b",
            "a/b",
            "é",
            "p%20",
            &"a".repeat(MAX_PRODUCT_ID_LEN + 1),
        ] {
            assert!(ProductId::parse(id.to_owned()).is_err(), "{id:?}");
        }
    }

    #[test]
    fn valid_fields_have_no_errors() {
        assert_eq!(fields().errors(), FieldErrors::new());
        let free_and_sold_out = ProductFields {
            price_cents: 0,
            stock: 0,
            ..fields()
        };
        assert_eq!(free_and_sold_out.errors(), FieldErrors::new());
    }

    #[test]
    fn every_broken_rule_is_named_by_its_field() {
        let broken = ProductFields {
            sku: " ".to_owned(),
            name: "n".repeat(MAX_NAME_LEN + 1),
            price_cents: -1,
            currency: "eur".to_owned(),
            stock: -5,
            active: false,
        };

        let errors = PutProduct::parse("bad id".to_owned(), broken).unwrap_err();

        assert_eq!(
            errors.keys().copied().collect::<Vec<_>>(),
            [
                "currency",
                "name",
                "price_cents",
                "product_id",
                "sku",
                "stock"
            ]
        );
        assert_eq!(errors["price_cents"], "must be between 0 and 100000000000");
        assert_eq!(errors["currency"], "not an ISO 4217 code");
        assert_eq!(errors["sku"], "must not be blank");
        assert_eq!(errors["name"], "must be at most 200 characters");
    }

    #[test]
    fn text_and_numbers_are_bounded_at_both_ends() {
        let top = ProductFields {
            sku: "s".repeat(MAX_SKU_LEN),
            name: "é".repeat(MAX_NAME_LEN),
            price_cents: MAX_PRICE_CENTS,
            stock: MAX_STOCK,
            ..fields()
        };
        assert_eq!(top.errors(), FieldErrors::new());

        let over = ProductFields {
            sku: "a\0b".to_owned(),
            name: "line\nbreak".to_owned(),
            price_cents: MAX_PRICE_CENTS + 1,
            stock: i64::MAX,
            ..fields()
        };
        assert_eq!(
            over.errors().keys().copied().collect::<Vec<_>>(),
            ["name", "price_cents", "sku", "stock"]
        );
        assert_eq!(over.errors()["sku"], "must not contain control characters");
    }

    #[test]
    fn the_largest_valid_body_fits_the_body_limit() {
        // A four-byte character in every place, each written as a twelve-byte escape pair,
        // pretty-printed.
        let escaped = |len: usize| "\\ud83c\\udf89".repeat(len);
        let body = format!(
            "{{\n  \"sku\": \"{}\",\n  \"name\": \"{}\",\n  \"price_cents\": {MAX_PRICE_CENTS},\n  \
             \"currency\": \"EUR\",\n  \"stock\": {MAX_STOCK},\n  \"active\": true\n}}",
            escaped(MAX_SKU_LEN),
            escaped(MAX_NAME_LEN),
        );
        let fields: ProductFields = serde_json::from_str(&body).expect("the body is a product");

        assert_eq!(fields.errors(), FieldErrors::new());
        // What BODY_LIMIT's documentation says.
        assert!(body.len() < 4 * 1024, "{} bytes", body.len());
        assert!(
            body.len() * 4 < BODY_LIMIT,
            "{} bytes leave too little room under {BODY_LIMIT}",
            body.len()
        );
    }

    #[test]
    fn a_bad_id_alone_is_reported() {
        let errors = PutProduct::parse("a/b".to_owned(), fields()).unwrap_err();
        assert_eq!(errors.keys().copied().collect::<Vec<_>>(), ["product_id"]);
    }

    #[test]
    fn modified_fields_lists_the_json_names_of_what_changed() {
        let before = fields();
        assert!(before.modified_fields(&before).is_empty());

        let after = ProductFields {
            price_cents: 990,
            stock: 2,
            active: false,
            ..fields()
        };
        assert_eq!(
            before.modified_fields(&after),
            ["price_cents", "stock", "active"]
        );
    }
}

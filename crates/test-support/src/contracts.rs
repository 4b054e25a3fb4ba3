//! The message contracts of `docs/contracts/`, for the tests of both sides of a topic.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

/// A file of `docs/contracts/` (e.g. `orders.orders.v1/order-placed.json`), parsed. The
/// producer's tests check that what it publishes has the example's shape; the consumers' tests
/// build their input from it: both sides read the same file.
pub fn contract_example(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/contracts")
        .join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// An example event envelope of `docs/contracts/` (e.g. `orders.orders.v1/order-paid.json`),
/// made about `entity_id` at `revision`, with a new event id and the current time: a test's own
/// event that still has exactly the contract's shape. The caller fills in the entity's fields.
pub fn contract_event(relative: &str, entity_id: &str, revision: i64) -> Value {
    let mut event = contract_example(relative);
    event["event_id"] = Value::from(uuid::Uuid::now_v7().to_string());
    event["entity_id"] = Value::from(entity_id);
    event["revision"] = Value::from(revision);
    event["occurred_at"] = serde_json::to_value(chrono::Utc::now()).expect("a time is JSON");
    event
}

/// `value` with every leaf replaced by its JSON type, and arrays by their first element's shape:
/// two messages with the same shape have the same fields with the same types. For
/// `assert_eq!(shape(&published), shape(&contract_example(…)))`.
pub fn shape(value: &Value) -> Value {
    match value {
        Value::Array(items) => json!([items.first().map(shape)]),
        Value::Object(fields) => fields
            .iter()
            .map(|(name, value)| (name.clone(), shape(value)))
            .collect(),
        leaf => json!(json_type(leaf)),
    }
}

/// Where `actual` differs in shape from `expected`, ignoring values, each as a line naming the
/// field (`$.payload.entity.stock: not published`): a field missing on either side, or a field
/// of another JSON type. Arrays are compared by their first elements. Empty when the shapes are
/// the same.
pub fn shape_differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut differences = Vec::new();
    collect_differences(expected, actual, "$", &mut differences);
    differences
}

/// The name of a value's JSON type; whole numbers are `integer`.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn collect_differences(
    expected: &Value,
    actual: &Value,
    path: &str,
    differences: &mut Vec<String>,
) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            let names: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
            for name in names {
                let field = format!("{path}.{name}");
                match (expected.get(name), actual.get(name)) {
                    (Some(expected), Some(actual)) => {
                        collect_differences(expected, actual, &field, differences);
                    }
                    (Some(_), None) => differences.push(format!("{field}: not published")),
                    (None, Some(_)) => {
                        differences.push(format!("{field}: published, but not in the example"));
                    }
                    (None, None) => unreachable!("the name comes from one of the two"),
                }
            }
        }
        (Value::Array(expected), Value::Array(actual)) => {
            if let (Some(expected), Some(actual)) = (expected.first(), actual.first()) {
                collect_differences(expected, actual, &format!("{path}[0]"), differences);
            }
        }
        _ if json_type(expected) != json_type(actual) => differences.push(format!(
            "{path}: {} in the example, {} published",
            json_type(expected),
            json_type(actual)
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_compare_fields_and_types_not_values() {
        let example = json!({"id": "a", "n": 1, "items": [{"q": 2.5}], "gone": null});
        let same = json!({"id": "b", "n": 7, "items": [{"q": 0.5}, {"q": 1.5}], "gone": null});
        assert_eq!(shape(&example), shape(&same));
        assert!(shape_differences(&example, &same).is_empty());

        let other = json!({"id": 3, "items": [{"q": 2.5, "extra": true}], "gone": null});
        assert_ne!(shape(&example), shape(&other));
        assert_eq!(
            shape_differences(&example, &other),
            [
                "$.id: string in the example, integer published",
                "$.items[0].extra: published, but not in the example",
                "$.n: not published",
            ]
        );
    }
}

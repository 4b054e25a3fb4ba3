//! The published events against the contract in `docs/contracts/catalog-cache.products.v1.md`,
//! whose example messages consumers' tests decode.

use std::collections::BTreeSet;
use std::path::PathBuf;

use integration_events::EventEnvelope;
use serde_json::Value;

use crate::helpers::{ProductEvents, json_body, product, spawn_app};

/// Each example file, with the `message_type` and `kind` of the event it shows.
const EXAMPLES: [(&str, &str, &str); 3] = [
    ("product-created.json", "ProductCreated", "created"),
    ("product-updated.json", "ProductUpdated", "updated"),
    ("product-deleted.json", "ProductDeleted", "deleted"),
];

fn example(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/contracts/catalog-cache.products.v1")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// The name of a value's JSON type.
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

/// Where `actual` differs in shape from `expected`, ignoring values: a field missing on either
/// side, or a field of another JSON type. Arrays are compared by their first elements.
fn shape_differences(expected: &Value, actual: &Value, path: &str, differences: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            let names: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
            for name in names {
                let field = format!("{path}.{name}");
                match (expected.get(name), actual.get(name)) {
                    (Some(expected), Some(actual)) => {
                        shape_differences(expected, actual, &field, differences);
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
                shape_differences(expected, actual, &format!("{path}[0]"), differences);
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

#[test]
fn the_examples_are_envelopes_of_their_kind() {
    for (file, _, kind) in EXAMPLES {
        let envelope: EventEnvelope<Value> = serde_json::from_value(example(file))
            .unwrap_or_else(|error| panic!("{file} is not an event envelope: {error}"));
        assert_eq!(serde_json::to_value(envelope.kind).unwrap(), kind, "{file}");
        assert_eq!(envelope.entity_type, "product", "{file}");
        assert_eq!(envelope.originated_from, "catalog-cache", "{file}");
        assert_eq!(envelope.event_id.get_version_num(), 7, "{file}");
    }
}

#[tokio::test]
async fn published_events_have_exactly_the_fields_of_the_examples() {
    let app = spawn_app().await;
    let events = ProductEvents::start().await;
    let id = test_support::unique_name("contract");

    json_body(app.put_product(&id, &product("CUP-1", 1250)).await, 201).await;
    // Two fields change, so that `modified_fields` has elements to compare.
    let mut changed = product("CUP-1", 1190);
    changed["stock"] = 38.into();
    json_body(app.put_product(&id, &changed).await, 200).await;
    assert_eq!(app.delete_product(&id).await.status(), 204);
    let published = events.wait_for(&id, 4).await;

    for (file, message_type, _) in EXAMPLES {
        let message = published
            .iter()
            .find(|message| message.message_type == message_type)
            .unwrap_or_else(|| panic!("no {message_type} was published"));
        let actual = message.payload.as_ref().expect("an envelope");
        let mut differences = Vec::new();
        shape_differences(&example(file), actual, "$", &mut differences);
        assert!(
            differences.is_empty(),
            "{message_type} differs from docs/contracts/catalog-cache.products.v1/{file}: \
             {differences:#?}\npublished: {actual:#}"
        );
    }

    events.stop().await;
}

//! The published events against the contract in `docs/contracts/catalog-cache.products.v1.md`,
//! whose example messages consumers' tests decode.

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
        let differences = test_support::shape_differences(&example(file), actual);
        assert!(
            differences.is_empty(),
            "{message_type} differs from docs/contracts/catalog-cache.products.v1/{file}: \
             {differences:#?}\npublished: {actual:#}"
        );
    }

    events.stop().await;
}

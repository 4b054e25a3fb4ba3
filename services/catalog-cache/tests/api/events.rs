//! What the service publishes on `catalog-cache.products.v1`.

use serde_json::json;

use crate::helpers::{ProductEvents, json_body, product, spawn_app};

#[tokio::test]
async fn a_products_life_is_published_in_revision_order() {
    let app = spawn_app().await;
    let events = ProductEvents::start().await;
    // The topic is shared by every test and run: an id of this test's own.
    let id = test_support::unique_name("cup");

    let created = app.put_product(&id, &product("CUP-1", 1250)).await;
    let request_id = created.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    json_body(created, 201).await;
    json_body(app.put_product(&id, &product("CUP-1", 1250)).await, 200).await;
    json_body(app.put_product(&id, &product("CUP-1", 990)).await, 200).await;
    assert_eq!(app.delete_product(&id).await.status(), 204);
    json_body(app.put_product(&id, &product("CUP-2", 990)).await, 201).await;

    let messages = events.wait_for(&id, 5).await;

    let types: Vec<&str> = messages.iter().map(|m| m.message_type.as_str()).collect();
    // No event for the repeated PUT: it would come before the update.
    assert_eq!(
        types,
        [
            "ProductCreated",
            "ProductUpdated",
            "ProductDeleted",
            "Tombstone",
            "ProductCreated"
        ]
    );
    let [created, updated, deleted, tombstone, recreated] = &messages[..] else {
        unreachable!("five messages were asserted");
    };

    let created = created.payload.as_ref().expect("an envelope");
    assert_eq!(created["kind"], "created");
    assert_eq!(created["revision"], 1);
    assert_eq!(created["entity_type"], "product");
    assert_eq!(created["entity_id"], id.as_str());
    assert_eq!(created["originated_from"], "catalog-cache");
    assert_eq!(created["schema_version"], 1);
    // The request that made the change, followed through the outbox and the relay.
    assert_eq!(created["correlation_id"], request_id.as_str());
    assert_eq!(
        created["payload"],
        json!({ "entity": {
            "product_id": id,
            "sku": "CUP-1",
            "name": "Espresso cup",
            "price_cents": 1250,
            "currency": "EUR",
            "stock": 40,
            "active": true,
        }})
    );

    let updated_envelope = updated.payload.as_ref().expect("an envelope");
    assert_eq!(updated_envelope["kind"], "updated");
    assert_eq!(updated_envelope["revision"], 2);
    assert_eq!(updated_envelope["payload"]["entity"]["price_cents"], 990);
    assert_eq!(
        updated_envelope["payload"]["modified_fields"],
        json!(["price_cents"])
    );
    // The message id header is the event id, by which consumers deduplicate.
    assert_eq!(updated_envelope["event_id"], updated.message_id.as_str());

    let deleted = deleted.payload.as_ref().expect("an envelope");
    assert_eq!(deleted["kind"], "deleted");
    assert_eq!(deleted["revision"], 3);
    assert_eq!(deleted["payload"], json!({ "id": id }));

    assert_eq!(tombstone.payload, None);

    let recreated = recreated.payload.as_ref().expect("an envelope");
    assert_eq!(recreated["kind"], "created");
    assert_eq!(recreated["revision"], 4);
    assert_eq!(recreated["payload"]["entity"]["sku"], "CUP-2");

    events.stop().await;
}

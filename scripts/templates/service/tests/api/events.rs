//! What the service publishes on `{{service}}.items.v1`.

use crate::helpers::{ItemEvents, item, json_body, spawn_app};

#[tokio::test]
async fn every_change_of_an_item_is_published_in_order() {
    let app = spawn_app().await;
    let events = ItemEvents::start().await;
    // The topic is shared by every test and run: an id of this test's own.
    let id = test_support::unique_name("cup");

    json_body(app.put_item(&id, &item("Cup", 1)).await, 201).await;
    json_body(app.put_item(&id, &item("Cup", 2)).await, 200).await;
    assert_eq!(app.delete_item(&id).await.status(), 204);

    let types = events.wait_for(&id, 4).await;
    assert_eq!(
        types,
        ["ItemCreated", "ItemUpdated", "ItemDeleted", "Tombstone"]
    );
    events.stop().await;
    app.stop().await;
}

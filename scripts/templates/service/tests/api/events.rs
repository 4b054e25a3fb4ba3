//! What the service publishes on `{{service}}.items.v1`.

use test_support::TopicReader;

use crate::helpers::{DEADLINE, TOPIC, item, json_body, spawn_app};

/// The message types of `item_id`'s next `count` messages on [`TOPIC`], in order.
async fn types(events: &TopicReader, item_id: &str, count: usize) -> Vec<String> {
    let messages = events.wait_for(item_id, count, DEADLINE).await;
    messages.into_iter().map(|m| m.message_type).collect()
}

#[tokio::test]
async fn every_change_of_an_item_is_published_in_order() {
    let app = spawn_app().await;
    let events = TopicReader::start(TOPIC, "{{service}}-tests").await;
    // The topic is shared by every test and run: an id of this test's own.
    let id = test_support::unique_name("cup");

    json_body(app.put_item(&id, &item("Cup", 1)).await, 201).await;
    json_body(app.put_item(&id, &item("Cup", 2)).await, 200).await;
    assert_eq!(app.delete_item(&id).await.status(), 204);

    assert_eq!(
        types(&events, &id, 4).await,
        ["ItemCreated", "ItemUpdated", "ItemDeleted", "Tombstone"]
    );
    events.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn two_first_puts_at_once_make_one_creation_and_one_update() {
    let app = spawn_app().await;
    let events = TopicReader::start(TOPIC, "{{service}}-tests").await;
    let id = test_support::unique_name("mug");

    // Different fields, so that whichever comes second is an update, not a no-op.
    let (one, two) = (item("Mug", 1), item("Mug", 2));
    let (first, second) = tokio::join!(app.put_item(&id, &one), app.put_item(&id, &two));
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201]);

    assert_eq!(
        types(&events, &id, 2).await,
        ["ItemCreated", "ItemUpdated"]
    );
    events.stop().await;
    app.stop().await;
}

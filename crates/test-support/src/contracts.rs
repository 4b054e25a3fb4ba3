//! The message contracts of `docs/contracts/`, for the tests of both sides of a topic.

use std::path::Path;

use serde_json::Value;

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

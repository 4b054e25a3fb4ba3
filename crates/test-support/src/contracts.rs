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

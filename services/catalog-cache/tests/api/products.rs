//! The HTTP API of `/products`.

use std::collections::BTreeSet;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{json_body, problem_body, product, spawn_app};

/// The fields of a product in every response.
const PRODUCT_FIELDS: [&str; 9] = [
    "product_id",
    "sku",
    "name",
    "price_cents",
    "currency",
    "stock",
    "active",
    "revision",
    "updated_at",
];

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["product_id"].as_str().expect("product_id"))
        .collect()
}

#[tokio::test]
async fn a_new_product_is_created_with_revision_1() {
    let app = spawn_app().await;

    let created = json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;

    let fields: BTreeSet<&str> = created
        .as_object()
        .expect("a product object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields, BTreeSet::from(PRODUCT_FIELDS));
    assert_eq!(created["product_id"], "cup");
    assert_eq!(created["sku"], "CUP-1");
    assert_eq!(created["name"], "Espresso cup");
    assert_eq!(created["price_cents"], 1250);
    assert_eq!(created["currency"], "EUR");
    assert_eq!(created["stock"], 40);
    assert_eq!(created["active"], true);
    assert_eq!(created["revision"], 1);
    let updated_at = created["updated_at"].as_str().expect("updated_at");
    chrono::DateTime::parse_from_rfc3339(updated_at).expect("an RFC 3339 timestamp");

    let read = json_body(app.get_product("cup").await, 200).await;
    assert_eq!(read, created);
}

#[tokio::test]
async fn the_same_put_again_changes_nothing() {
    let app = spawn_app().await;
    let created = json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;

    let again = json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 200).await;

    // Same revision and the same `updated_at`: nothing was written.
    assert_eq!(again, created);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE key = 'cup'")
        .fetch_one(&app.database().pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "only the creation records an event");
}

#[tokio::test]
async fn a_changed_put_stores_the_next_revision() {
    let app = spawn_app().await;
    let created = json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;

    let updated = json_body(app.put_product("cup", &product("CUP-1", 990)).await, 200).await;

    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["price_cents"], 990);
    assert_ne!(updated["updated_at"], created["updated_at"]);
    assert_eq!(json_body(app.get_product("cup").await, 200).await, updated);
}

#[tokio::test]
async fn concurrent_creates_of_one_product_create_it_once() {
    let app = spawn_app().await;
    let body = product("CUP-1", 1250);

    let responses = join_all((0..8).map(|_| app.put_product("cup", &body))).await;

    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201]);
    let product = json_body(app.get_product("cup").await, 200).await;
    assert_eq!(product["revision"], 1);
}

#[tokio::test]
async fn invalid_fields_are_422_naming_each_field() {
    let app = spawn_app().await;
    let body = json!({
        "sku": " ",
        "name": "Espresso cup",
        "price_cents": -1,
        "currency": "eur",
        "stock": -2,
        "active": true,
    });

    let problem = problem_body(app.put_product("cup", &body).await, 422).await;

    assert_eq!(
        problem["errors"],
        json!({
            "sku": "must not be blank",
            "price_cents": "must be between 0 and 100000000000",
            "currency": "not an ISO 4217 code",
            "stock": "must be between 0 and 1000000000",
        })
    );
    assert_eq!(app.get_product("cup").await.status(), 404);
}

#[tokio::test]
async fn an_invalid_product_id_is_422() {
    let app = spawn_app().await;
    let too_long = "p".repeat(65);

    for id in [too_long.as_str(), "cup%20of%20tea", "caf%C3%A9"] {
        let problem = problem_body(app.put_product(id, &product("CUP-1", 1)).await, 422).await;
        let errors = problem["errors"].as_object().expect("errors");
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["product_id"], "{id}");
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;

    let response = app
        .put_product_raw("cup", "application/json", r#"{"sku": "CUP-1","#)
        .await;

    problem_body(response, 400).await;
}

#[tokio::test]
async fn fields_of_the_wrong_type_or_missing_are_a_422_problem() {
    let app = spawn_app().await;
    let mut wrong_type = product("CUP-1", 1);
    wrong_type["price_cents"] = json!("12.50");
    let mut missing = product("CUP-1", 1);
    missing.as_object_mut().unwrap().remove("currency");

    for body in [wrong_type, missing] {
        problem_body(app.put_product("cup", &body).await, 422).await;
    }
}

#[tokio::test]
async fn unknown_products_are_404_problems() {
    let app = spawn_app().await;

    problem_body(app.get_product("nothing").await, 404).await;
    problem_body(app.delete_product("nothing").await, 404).await;
}

#[tokio::test]
async fn a_deleted_product_is_gone() {
    let app = spawn_app().await;
    json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;

    let response = app.delete_product("cup").await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.text().await.unwrap(), "");

    problem_body(app.get_product("cup").await, 404).await;
    problem_body(app.delete_product("cup").await, 404).await;
}

#[tokio::test]
async fn a_product_created_again_continues_its_revisions() {
    let app = spawn_app().await;
    json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;
    assert_eq!(app.delete_product("cup").await.status(), 204);

    let recreated = json_body(app.put_product("cup", &product("CUP-1", 1250)).await, 201).await;

    // 1 created, 2 deleted, 3 created again: consumers that remember the delete at revision 2
    // would ignore a new start at 1.
    assert_eq!(recreated["revision"], 3);
}

#[tokio::test]
async fn products_are_listed_a_page_at_a_time_in_id_order() {
    let app = spawn_app().await;
    for id in ["p-5", "p-3", "p-1", "p-4", "p-2"] {
        json_body(app.put_product(id, &product(id, 100)).await, 201).await;
    }

    let first = json_body(app.list_products(Some("2"), None).await, 200).await;
    assert_eq!(ids(&first), ["p-1", "p-2"]);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_owned();

    let second = json_body(app.list_products(Some("2"), Some(&cursor)).await, 200).await;
    assert_eq!(ids(&second), ["p-3", "p-4"]);
    let cursor = second["next_cursor"].as_str().expect("a cursor").to_owned();

    let last = json_body(app.list_products(Some("2"), Some(&cursor)).await, 200).await;
    assert_eq!(ids(&last), ["p-5"]);
    assert_eq!(last["next_cursor"], Value::Null);

    // The default page holds them all; the items are whole products.
    let all = json_body(app.list_products(None, None).await, 200).await;
    assert_eq!(ids(&all), ["p-1", "p-2", "p-3", "p-4", "p-5"]);
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(
        all["items"][0],
        json_body(app.get_product("p-1").await, 200).await
    );
}

#[tokio::test]
async fn a_full_last_page_has_no_cursor() {
    let app = spawn_app().await;
    for id in ["p-1", "p-2"] {
        json_body(app.put_product(id, &product(id, 100)).await, 201).await;
    }

    let page = json_body(app.list_products(Some("2"), None).await, 200).await;

    assert_eq!(ids(&page), ["p-1", "p-2"]);
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn an_empty_catalog_is_an_empty_page() {
    let app = spawn_app().await;

    let page = json_body(app.list_products(None, None).await, 200).await;

    assert_eq!(page, json!({ "items": [], "next_cursor": null }));
}

#[tokio::test]
async fn a_limit_out_of_range_is_a_422_and_one_that_does_not_parse_a_400_problem() {
    let app = spawn_app().await;

    for limit in ["0", "501"] {
        let problem = problem_body(app.list_products(Some(limit), None).await, 422).await;
        assert_eq!(
            problem["errors"]["limit"], "must be between 1 and 500",
            "{limit}"
        );
    }
    for limit in ["-1", "ten"] {
        problem_body(app.list_products(Some(limit), None).await, 400).await;
    }
    json_body(app.list_products(Some("500"), None).await, 200).await;
}

//! The `catalog_products` read model, fed from `catalog-cache.products.v1`.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::json;
use test_support::eventually;

use crate::helpers::{CatalogCache, DEADLINE, Product, contract_example, spawn_app};

#[tokio::test]
async fn a_product_event_shows_in_the_read_model_with_its_revision() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let product = Product::new(1250);

    catalog.publish(&product.created(1)).await;

    let mut copy = app.catalog_product_at(&product.id, 1).await;
    let synced_at: DateTime<Utc> =
        serde_json::from_value(copy["synced_at"].take()).expect("synced_at is a timestamp");
    assert!(synced_at <= Utc::now());
    let example =
        &contract_example("catalog-cache.products.v1/product-created.json")["payload"]["entity"];
    // What orders reads, and nothing else: `stock` is not kept.
    assert_eq!(
        copy,
        json!({
            "product_id": product.id,
            "sku": example["sku"],
            "name": example["name"],
            "price_cents": 1250,
            "currency": "EUR",
            "active": true,
            "revision": 1,
            "synced_at": null,
        })
    );
}

#[tokio::test]
async fn duplicate_and_out_of_order_events_leave_the_newest_revision() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let mut product = Product::new(300);
    let revision_3 = product.updated(3);
    product.price_cents = 200;
    let revision_2 = product.updated(2);

    catalog.publish(&revision_3).await;
    let newest = app.catalog_product_at(&product.id, 3).await;
    let skipped_before = app.skipped_events().await;
    // An older event that arrives late, then the newest again, as a redelivery would bring it.
    catalog.publish(&revision_2).await;
    catalog.publish(&revision_3).await;

    // Both are handled (in order: one key, one partition) once the projection has counted them
    // as skipped; only then does the unchanged row prove something.
    eventually(DEADLINE, "the projection to skip two events", || async {
        (app.skipped_events().await >= skipped_before + 2).then_some(())
    })
    .await;
    let copy: serde_json::Value = app
        .get_catalog_product(&product.id)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(copy["revision"], 3);
    assert_eq!(copy["price_cents"], 300);
    // Not even rewritten with the same values.
    assert_eq!(copy["synced_at"], newest["synced_at"]);
}

#[tokio::test]
async fn a_deleted_product_leaves_the_read_model() {
    let app = spawn_app().await;
    let catalog = CatalogCache::new().await;
    let product = Product::new(990);
    catalog.seed(&app, &product).await;

    catalog.publish(&product.deleted(2)).await;
    // As catalog-cache does after every delete; the projection ignores it.
    catalog.publish_tombstone(&product.id).await;

    app.catalog_product_gone(&product.id).await;
    let response = app.get_catalog_product(&product.id).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

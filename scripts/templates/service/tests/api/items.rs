//! The items API: CRUD and validation.

use crate::helpers::{item, json_body, spawn_app};

#[tokio::test]
async fn an_item_is_created_read_updated_and_deleted() {
    let app = spawn_app().await;

    let created = json_body(app.put_item("cup-1", &item("Cup", 3)).await, 201).await;
    assert_eq!(created["revision"], 1);
    let read = json_body(app.get_item("cup-1").await, 200).await;
    assert_eq!(read, created);
    let updated = json_body(app.put_item("cup-1", &item("Cup", 4)).await, 200).await;
    assert_eq!(updated["quantity"], 4);
    assert_eq!(updated["revision"], 2);
    assert_eq!(app.delete_item("cup-1").await.status(), 204);
    assert_eq!(app.get_item("cup-1").await.status(), 404);
    assert_eq!(app.delete_item("cup-1").await.status(), 404);

    app.stop().await;
}

#[tokio::test]
async fn an_invalid_item_is_a_422_problem_naming_each_field() {
    let app = spawn_app().await;
    let long_name = "x".repeat(201);

    let response = app.put_item("cup-1", &item(&long_name, -1)).await;

    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json_body(response, 422).await;
    assert!(problem["errors"]["name"].is_string(), "{problem}");
    assert!(problem["errors"]["quantity"].is_string(), "{problem}");
    assert_eq!(app.get_item("cup-1").await.status(), 404);
    app.stop().await;
}

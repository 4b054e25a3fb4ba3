use crate::helpers::spawn_app;

#[tokio::test]
async fn ready_when_database_and_broker_answer() {
    let app = spawn_app().await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn stops_cleanly_on_shutdown() {
    let app = spawn_app().await;
    app.stop().await.expect("a clean shutdown");
}

/// The outbox's parked rows are behind the admin token; with it, an empty page.
#[tokio::test]
async fn parked_outbox_rows_are_listed_behind_the_admin_token() {
    let app = spawn_app().await;
    assert_eq!(app.get("/admin/outbox/parked").await.status(), 401);

    let response = app
        .client()
        .get(app.url("/admin/outbox/parked"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let page: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        page,
        serde_json::json!({ "items": [], "next_cursor": null })
    );
}

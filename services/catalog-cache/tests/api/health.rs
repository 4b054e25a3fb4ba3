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

use crate::helpers::spawn_app;

#[tokio::test]
async fn ready_when_database_and_broker_answer() {
    let app = spawn_app().await;
    let response = app.http.get("/health/ready").await;
    assert_eq!(response.status(), 200);
}

/// Shutdown stops HTTP, then the projection, the scheduler and the outbox relay, and returns
/// without error.
#[tokio::test]
async fn stops_cleanly() {
    let app = spawn_app().await;
    assert_eq!(app.http.get("/health/live").await.status(), 200);

    app.stop().await.expect("a clean shutdown");
}

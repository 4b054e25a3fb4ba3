use test_support::TestDatabase;

async fn spawn_app() -> (test_support::TestApp, TestDatabase) {
    let database = TestDatabase::create().await;
    let env = test_support::service_env(&database).await;
    let config = report_exporter::Config::from_env(&env).expect("valid test configuration");
    let app = report_exporter::Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    (
        test_support::TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown)),
        database,
    )
}

#[tokio::test]
async fn ready_when_database_and_broker_answer() {
    let (app, _database) = spawn_app().await;
    let response = app.get("/health/ready").await;
    assert_eq!(response.status(), 200);
}

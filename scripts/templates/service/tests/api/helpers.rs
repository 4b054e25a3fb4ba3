//! The service under test with a typed client for its API.

use std::time::Duration;

use {{crate}}::{Application, Config};
use serde_json::Value;
use test_support::{TestApp, TestDatabase, unique_name};

/// The topic of the contract, spelled out: a test of what other services subscribe to.
pub const TOPIC: &str = "{{service}}.items.v1";
/// Long enough for a consumer group join plus the relay's round trip on a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The `ADMIN_TOKEN` of every test instance.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running service with a database, a task queue and a consumer group of its own.
pub struct App {
    app: TestApp,
    /// Held for the life of the test: dropping it drops the database.
    pub database: TestDatabase,
}

/// Starts the service on a free port; `summarize-items` fires every second.
pub async fn spawn_app() -> App {
    platform::telemetry::init_for_tests();
    let database = TestDatabase::create().await;
    let env = test_support::service_env(&database)
        .await
        .with("ADMIN_TOKEN", ADMIN_TOKEN)
        .with("KAFKA_CONSUMER_GROUP_PREFIX", unique_name("{{service}}-test"))
        .with("{{ENV}}_TASKS_TOPIC", unique_name("{{service}}.tasks-test"))
        .with("{{ENV}}_SUMMARY_CRON", "* * * * * *");
    let config = Config::from_env(&env).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    App {
        app: TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown)),
        database,
    }
}

impl App {
    pub async fn put_item(&self, item_id: &str, body: &Value) -> reqwest::Response {
        let url = self.app.url(&format!("/items/{item_id}"));
        let request = self.app.client.put(url).json(body);
        request.send().await.expect("PUT request failed")
    }

    pub async fn get_item(&self, item_id: &str) -> reqwest::Response {
        self.app.get(&format!("/items/{item_id}")).await
    }

    pub async fn delete_item(&self, item_id: &str) -> reqwest::Response {
        let url = self.app.url(&format!("/items/{item_id}"));
        let request = self.app.client.delete(url);
        request.send().await.expect("DELETE request failed")
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(self) {
        self.app.stop().await.expect("a clean stop");
    }
}

/// An item body that passes validation.
pub fn item(name: &str, quantity: i64) -> Value {
    serde_json::json!({ "name": name, "quantity": quantity })
}

/// The body of a response, after checking its status.
pub async fn json_body(response: reqwest::Response, expected_status: u16) -> Value {
    let status = response.status();
    let body = response.text().await.expect("response body");
    assert_eq!(status, expected_status, "body: {body}");
    serde_json::from_str(&body).expect("a JSON body")
}

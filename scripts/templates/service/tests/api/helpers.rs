//! The service under test with a typed client for its API, and a reader of the events it
//! publishes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use {{crate}}::{Application, Config};
use kafka::{ConsumerBuilder, Handler, HandlerError, KafkaConfig, Message, RunningConsumer};
use serde_json::Value;
use test_support::{TestApp, TestDatabase, unique_name};
use tokio_util::sync::CancellationToken;

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

/// Reads [`TOPIC`] in a consumer group of its own and keeps `(key, message type)` of what it
/// reads. Every test shares the topic: tests use item ids of their own.
pub struct ItemEvents {
    read: Arc<Mutex<Vec<(String, String)>>>,
    shutdown: CancellationToken,
    consumer: Option<RunningConsumer>,
}

impl ItemEvents {
    pub async fn start() -> Self {
        let config = KafkaConfig::new(
            test_support::kafka_bootstrap_servers().await,
            "{{service}}-tests",
        )
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300");
        let recorder = Recorder::default();
        let read = Arc::clone(&recorder.read);
        let shutdown = CancellationToken::new();
        let consumer = ConsumerBuilder::new(&config, unique_name("{{service}}-test"))
            // Provisioned by the service, which every test starts first.
            .topic(TOPIC)
            .start(recorder, shutdown.clone())
            .await
            .expect("the test consumer starts");
        Self {
            read,
            shutdown,
            consumer: Some(consumer),
        }
    }

    /// Waits until `count` messages with key `item_id` were read; returns their types in order.
    pub async fn wait_for(&self, item_id: &str, count: usize) -> Vec<String> {
        let what = format!("{count} messages of item {item_id}");
        test_support::eventually(DEADLINE, &what, || async {
            let types: Vec<String> = (self.read.lock().expect("recorder poisoned").iter())
                .filter(|(key, _)| key == item_id)
                .map(|(_, message_type)| message_type.clone())
                .collect();
            (types.len() >= count).then_some(types)
        })
        .await
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(consumer) = self.consumer.take() {
            consumer.wait().await.expect("the test consumer stops");
        }
    }
}

impl Drop for ItemEvents {
    // A test that fails before `stop` must not leave its consumer running.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone, Default)]
struct Recorder {
    read: Arc<Mutex<Vec<(String, String)>>>,
}

impl Handler for Recorder {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let key = message.key_str().unwrap_or_default().to_owned();
        let message_type = message.message_type().unwrap_or_default().to_owned();
        (self.read.lock().expect("recorder poisoned")).push((key, message_type));
        Ok(())
    }
}

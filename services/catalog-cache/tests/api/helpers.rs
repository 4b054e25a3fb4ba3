//! The service under test and a typed client for its API, and a reader of the events it
//! publishes.

use std::time::Duration;

use catalog_cache::{Application, Config};
use serde_json::Value;
use test_support::{Published, TestApp, TestDatabase, TopicReader};

/// The topic of the contract, spelled out: a test of what other services subscribe to.
pub const TOPIC: &str = "catalog-cache.products.v1";

/// Long enough for a consumer group join plus the relay's round trip on a busy 2-core machine.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// A running catalog-cache with a database of its own, and its API as methods.
/// The `ADMIN_TOKEN` of every test instance.
pub const ADMIN_TOKEN: &str = "test-admin-token-3b9e51";

pub struct CatalogCache {
    app: TestApp,
    /// Held for the life of the test: dropping it drops the database.
    database: TestDatabase,
}

/// Starts the service on a free port, with a new database and the test broker.
pub async fn spawn_app() -> CatalogCache {
    platform::telemetry::init_for_tests();
    let database = TestDatabase::create().await;
    let env = test_support::service_env(&database)
        .await
        .with("ADMIN_TOKEN", ADMIN_TOKEN);
    let config = Config::from_env(&env).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    CatalogCache {
        app: TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown)),
        database,
    }
}

impl CatalogCache {
    /// The untyped client, for requests the typed methods do not cover.
    pub fn http(&self) -> &TestApp {
        &self.app
    }

    pub async fn put_product(&self, product_id: &str, body: &Value) -> reqwest::Response {
        self.app
            .client
            .put(self.product_url(product_id))
            .json(body)
            .send()
            .await
            .expect("PUT request failed")
    }

    /// A PUT with any body and content type, for malformed input.
    pub async fn put_product_raw(
        &self,
        product_id: &str,
        content_type: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.app
            .client
            .put(self.product_url(product_id))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("PUT request failed")
    }

    pub async fn get_product(&self, product_id: &str) -> reqwest::Response {
        self.app.get(&format!("/products/{product_id}")).await
    }

    pub async fn delete_product(&self, product_id: &str) -> reqwest::Response {
        self.app
            .client
            .delete(self.product_url(product_id))
            .send()
            .await
            .expect("DELETE request failed")
    }

    pub async fn list_products(
        &self,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> reqwest::Response {
        let mut url = reqwest::Url::parse(&self.app.url("/products")).expect("a valid URL");
        for (name, value) in [("limit", limit), ("cursor", cursor)] {
            if let Some(value) = value {
                url.query_pairs_mut().append_pair(name, value);
            }
        }
        self.app
            .client
            .get(url)
            .send()
            .await
            .expect("GET request failed")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.app.get(path).await
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.app.client
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// The service's own database, to look behind the API.
    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    /// Graceful shutdown, as on SIGTERM; returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.app.stop().await
    }

    fn product_url(&self, product_id: &str) -> String {
        self.app.url(&format!("/products/{product_id}"))
    }
}

/// A product body that passes validation.
pub fn product(sku: &str, price_cents: i64) -> Value {
    serde_json::json!({
        "sku": sku,
        "name": "Espresso cup",
        "price_cents": price_cents,
        "currency": "EUR",
        "stock": 40,
        "active": true,
    })
}

/// The body of a successful response, after checking its status.
pub async fn json_body(response: reqwest::Response, expected_status: u16) -> Value {
    let status = response.status();
    let body = response.text().await.expect("response body");
    assert_eq!(status, expected_status, "body: {body}");
    serde_json::from_str(&body).expect("a JSON body")
}

/// The body of a problem response, after checking its status and content type.
pub async fn problem_body(response: reqwest::Response, expected_status: u16) -> Value {
    let content_type = response.headers()["content-type"].clone();
    let body = json_body(response, expected_status).await;
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], expected_status);
    body
}

/// Reads `catalog-cache.products.v1` from the beginning; see [`TopicReader`]. The topic name is
/// part of the contract, so every test shares it: tests use product ids of their own.
pub struct ProductEvents(TopicReader);

impl ProductEvents {
    pub async fn start() -> Self {
        Self(TopicReader::start(TOPIC, "catalog-cache-tests").await)
    }

    /// The `count` messages of `product_id` in topic order (the order of its revisions).
    pub async fn wait_for(&self, product_id: &str, count: usize) -> Vec<Published> {
        self.0.wait_for(product_id, count, EVENT_DEADLINE).await
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }
}

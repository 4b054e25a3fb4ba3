//! What the tests share: `spawn_app()` with a typed client for the service, products published
//! as catalog-cache would publish them, and a reader for `orders.orders.v1` and
//! `notifications.tasks.v1`.
//!
//! The topics are fixed by their contracts and the broker is shared by every test (and keeps
//! what earlier runs published), so each test uses product ids of its own and finds its order
//! events by key. Each service instance gets a consumer group prefix of its own: instances that
//! shared a group would split the partitions, and each would see only part of the products.

use std::time::Duration;

use kafka::{
    ConsumerBuilder, Delivery, Handler, HandlerError, KafkaConfig, Message, MessageHeaders,
    Producer, TopicSpec,
};
use orders::{Application, Config};
use platform::config::Env;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PRODUCTS_TOPIC: &str = "catalog-cache.products.v1";
pub const ORDERS_TOPIC: &str = "orders.orders.v1";
pub const NOTIFICATIONS_TASKS_TOPIC: &str = "notifications.tasks.v1";
/// Long enough for a consumer group join and a few event hops on a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The `ADMIN_TOKEN` of every test service.
pub const ADMIN_TOKEN: &str = "test-admin-token-8d41a2";

/// The orders service on a free port with a database of its own; catalog-cache does not run.
#[derive(Debug)]
pub struct TestApp {
    /// The untyped client, for requests the typed methods below do not cover.
    pub http: test_support::TestApp,
    /// The service's database, to look behind the API; dropped after the service: dropping it
    /// removes the database.
    pub database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with a configuration changed by `configure` first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_env(&[], configure).await
}

/// Like [`spawn_app_with`], with `variables` on top of the test environment (later pairs win).
pub async fn spawn_app_with_env(
    variables: &[(&str, &str)],
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    platform::telemetry::init_for_tests();
    let database = TestDatabase::create().await;
    let mut pairs = vec![
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers().await),
        ("KAFKA_CONSUMER_GROUP_PREFIX", unique_name("orders-test")),
        // A queue of its own: the worker of another test's service would find none of this
        // test's orders in its database.
        ("ORDERS_TASKS_TOPIC", unique_name("orders.tasks-test")),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    pairs.extend(
        variables
            .iter()
            .map(|&(name, value)| (name, value.to_owned())),
    );
    let mut config = Config::from_env(&Env::from_pairs(pairs)).expect("valid test configuration");
    configure(&mut config);
    let app = Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    TestApp {
        http: test_support::TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown)),
        database,
    }
}

impl TestApp {
    /// Shuts the service down as SIGTERM would, and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.http.stop().await
    }

    pub async fn post_order(&self, order: &Value) -> Response {
        self.http.post_json("/orders", order).await
    }

    pub async fn get_order(&self, order_id: &str) -> Response {
        self.http.get(&format!("/orders/{order_id}")).await
    }

    pub async fn pay_order(&self, order_id: &str) -> Response {
        // No body: the call stands for the payment provider's confirmation.
        self.http
            .client
            .post(self.http.url(&format!("/orders/{order_id}/pay")))
            .send()
            .await
            .expect("POST request failed")
    }

    /// A request to an admin endpoint, with `Authorization: Bearer <token>` if `token` is given.
    pub async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.client.request(method, self.http.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("admin request failed")
    }

    /// `GET /admin/schedules?state=<state>` with the admin token, as JSON.
    pub async fn schedules(&self, state: &str) -> Vec<Value> {
        let response = self
            .admin(
                Method::GET,
                &format!("/admin/schedules?state={state}&limit=1000"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a JSON list of schedules")
    }

    /// The schedule with `dedup_key` among those in `state`, if there is one.
    pub async fn schedule(&self, state: &str, dedup_key: &str) -> Option<Value> {
        self.schedules(state)
            .await
            .into_iter()
            .find(|schedule| schedule["dedup_key"] == dedup_key)
    }

    /// Waits until the order has `status`, and returns it.
    pub async fn order_in_status(&self, order_id: &str, status: &str) -> Value {
        eventually(
            DEADLINE,
            &format!("order {order_id} to be {status}"),
            || async move {
                let order: Value = self.get_order(order_id).await.json().await.ok()?;
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    pub async fn get_catalog_product(&self, product_id: &str) -> Response {
        self.http
            .get(&format!("/catalog/products/{product_id}"))
            .await
    }

    /// Waits until orders' copy of the product has `revision`, and returns it.
    pub async fn catalog_product_at(&self, product_id: &str, revision: i64) -> Value {
        eventually(
            DEADLINE,
            &format!("catalog product {product_id} at revision {revision}"),
            || async move {
                let response = self.get_catalog_product(product_id).await;
                if response.status() != StatusCode::OK {
                    return None;
                }
                let product: Value = response.json().await.expect("a JSON product");
                (product["revision"] == revision).then_some(product)
            },
        )
        .await
    }

    /// Waits until `GET /catalog/products/{product_id}` answers 404.
    pub async fn catalog_product_gone(&self, product_id: &str) {
        eventually(
            DEADLINE,
            &format!("catalog product {product_id} to be deleted"),
            || async move {
                let status = self.get_catalog_product(product_id).await.status();
                (status == StatusCode::NOT_FOUND).then_some(())
            },
        )
        .await;
    }

    /// How many events the projection skipped as duplicates or out of order, from
    /// `GET /metrics`.
    ///
    /// The metrics recorder is global to the process. nextest (`scripts/test.sh`) runs every
    /// test in a process of its own, so this counts this service's skips only. Under
    /// `cargo test` the services of all tests in the binary share the counter, and each of them
    /// also skips the events other tests publish: there a rise does not prove that this service
    /// handled them.
    pub async fn skipped_events(&self) -> u64 {
        let metrics = self
            .http
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(
                    "integration_events_skipped_total{projection=\"catalog_products\"} ",
                )
            })
            .map_or(0, |count| count.parse().expect("a counter value"))
    }
}

/// A product of catalog-cache, as the tests describe it.
#[derive(Debug, Clone)]
pub struct Product {
    pub id: String,
    pub price_cents: i64,
    pub currency: &'static str,
    pub active: bool,
}

impl Product {
    /// An active product priced in EUR, with an id no other test uses.
    pub fn new(price_cents: i64) -> Self {
        Self {
            id: unique_name("product"),
            price_cents,
            currency: "EUR",
            active: true,
        }
    }

    /// A `ProductCreated` envelope at `revision`.
    pub fn created(&self, revision: i64) -> Value {
        self.event("product-created.json", revision)
    }

    /// A `ProductUpdated` envelope at `revision`.
    pub fn updated(&self, revision: i64) -> Value {
        self.event("product-updated.json", revision)
    }

    /// A `ProductDeleted` envelope at `revision`.
    pub fn deleted(&self, revision: i64) -> Value {
        self.event("product-deleted.json", revision)
    }

    /// The contract's example message, about this product: building the events from the
    /// examples proves that orders reads what the contract documents.
    fn event(&self, example: &str, revision: i64) -> Value {
        let mut event = test_support::contract_event(
            &format!("catalog-cache.products.v1/{example}"),
            &self.id,
            revision,
        );
        let payload = &mut event["payload"];
        if let Some(entity) = payload.get_mut("entity") {
            entity["product_id"] = json!(self.id);
            entity["price_cents"] = json!(self.price_cents);
            entity["currency"] = json!(self.currency);
            entity["active"] = json!(self.active);
        }
        if let Some(id) = payload.get_mut("id") {
            *id = json!(self.id);
        }
        event
    }
}

pub use test_support::{contract_example, shape};

/// Publishes to `catalog-cache.products.v1` the way catalog-cache does: keyed by product id,
/// with the `message_type` of the event's kind and the event id as `message_id`.
#[derive(Debug)]
pub struct CatalogCache {
    producer: Producer,
}

impl CatalogCache {
    pub async fn new() -> Self {
        let config = KafkaConfig::new(kafka_bootstrap_servers().await, "orders-tests");
        let producer = Producer::new(&config).expect("a producer");
        // With the settings of the contract; the service may not have provisioned it yet.
        producer
            .ensure_topics(&[TopicSpec::new(PRODUCTS_TOPIC).config("cleanup.policy", "compact")])
            .await
            .expect("the products topic exists");
        Self { producer }
    }

    pub async fn publish(&self, event: &Value) -> Delivery {
        let message_type = match event["kind"].as_str() {
            Some("created") => "ProductCreated",
            Some("updated") => "ProductUpdated",
            Some("deleted") => "ProductDeleted",
            other => panic!("not a product event kind: {other:?}"),
        };
        let event_id: Uuid = serde_json::from_value(event["event_id"].clone()).expect("event_id");
        let key = event["entity_id"].as_str().expect("entity_id");
        self.producer
            .publish(
                PRODUCTS_TOPIC,
                key,
                event,
                MessageHeaders::new(message_type).message_id(event_id),
            )
            .await
            .expect("published")
    }

    /// The tombstone catalog-cache publishes after every delete.
    pub async fn publish_tombstone(&self, product_id: &str) {
        self.producer
            .publish_bytes(
                PRODUCTS_TOPIC,
                Some(product_id.as_bytes()),
                None,
                MessageHeaders::new("Tombstone"),
            )
            .await
            .expect("published");
    }

    /// Publishes the product's `created` event and waits until `app` has it.
    pub async fn seed(&self, app: &TestApp, product: &Product) {
        self.publish(&product.created(1)).await;
        app.catalog_product_at(&product.id, 1).await;
    }
}

/// The first message on `orders.orders.v1` keyed `key`, read from the beginning with a consumer
/// group of its own.
pub async fn order_event(key: &str) -> Message {
    let key = key.to_owned();
    first_message(ORDERS_TOPIC, &format!("keyed {key}"), move |message| {
        message.key_str() == Some(key.as_str())
    })
    .await
}

/// The first message on `orders.orders.v1` keyed `key` with `message_type`.
pub async fn order_event_of_type(key: &str, message_type: &str) -> Message {
    let key = key.to_owned();
    let message_type = message_type.to_owned();
    first_message(
        ORDERS_TOPIC,
        &format!("{message_type} keyed {key}"),
        move |message| {
            message.key_str() == Some(key.as_str())
                && message.message_type() == Some(message_type.as_str())
        },
    )
    .await
}

/// The first `task_type` task about `order_id` (its payload's `order_id`) on
/// `notifications.tasks.v1`.
pub async fn notification_task_for(task_type: &str, order_id: &str) -> Message {
    let task_type = task_type.to_owned();
    let order_id = order_id.to_owned();
    first_message(
        NOTIFICATIONS_TASKS_TOPIC,
        &format!("{task_type} for order {order_id}"),
        move |message| {
            message.message_type() == Some(task_type.as_str())
                && message
                    .payload
                    .as_deref()
                    .and_then(|payload| serde_json::from_slice::<Value>(payload).ok())
                    .is_some_and(|task| task["order_id"] == order_id.as_str())
        },
    )
    .await
}

/// The first `SendOrderConfirmation` task with id `task_id` on `notifications.tasks.v1`.
pub async fn confirmation_task(task_id: Uuid) -> Message {
    let task_id = task_id.to_string();
    first_message(
        NOTIFICATIONS_TASKS_TOPIC,
        &format!("with message_id {task_id}"),
        move |message| message.message_id() == Some(task_id.as_str()),
    )
    .await
}

/// The first message on `topic` that `matches`, read from the beginning with a consumer group
/// of its own. `what` describes the message for the timeout's panic.
async fn first_message(
    topic: &str,
    what: &str,
    matches: impl Fn(&Message) -> bool + Send + Sync + 'static,
) -> Message {
    let config = KafkaConfig::new(kafka_bootstrap_servers().await, "orders-tests");
    let (found, mut receiver) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let consumer = ConsumerBuilder::new(&config, unique_name("orders-test-reader"))
        .topic(topic)
        .start(Forward { matches, found }, shutdown.clone())
        .await
        .expect("the reader starts");
    let message = tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("no message {what} on {topic} within {DEADLINE:?}"))
        .expect("the reader is running");
    shutdown.cancel();
    consumer.wait().await.expect("the reader stops cleanly");
    message
}

/// Hands the messages that match to the test; skips every other.
struct Forward<F> {
    matches: F,
    found: mpsc::UnboundedSender<Message>,
}

impl<F: Fn(&Message) -> bool + Send + Sync + 'static> Handler for Forward<F> {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        if (self.matches)(message) {
            // The test may have stopped listening after the first one.
            let _ = self.found.send(message.clone());
        }
        Ok(())
    }
}

//! What the tests share: `spawn_app()` with a typed client for the service, orders published as
//! the orders service would publish them, and reads of the service's database.
//!
//! `orders.orders.v1` is fixed by its contract and the broker is shared by every test (and keeps
//! what earlier runs published), so each test uses order ids of its own. Each service instance
//! gets a consumer group prefix of its own: instances that shared a group would split the
//! partitions, and each would see only part of the orders.

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use kafka::{Delivery, KafkaConfig, MessageHeaders, Producer, TopicSpec};
use platform::config::Env;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use report_exporter::{Application, Config};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use uuid::Uuid;

use crate::exports_helpers::ExportsClient;

pub const ORDERS_TOPIC: &str = "orders.orders.v1";
/// The `ADMIN_TOKEN` of every test instance.
pub const ADMIN_TOKEN: &str = "test-admin-token-5c07e1";
/// The `EXPORTS_TOKEN` of every test instance.
pub const EXPORTS_TOKEN: &str = "test-exports-token-9a4f17";
/// Long enough for a consumer group join and a few event hops on a busy 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The report-exporter service on a free port with a database of its own; orders does not run.
#[derive(Debug)]
pub struct TestApp {
    /// The untyped client, for requests the typed methods below do not cover.
    pub http: test_support::TestApp,
    /// Connected to the service's database, for what the API does not show (the read model).
    pub pool: PgPool,
    /// The service's `KAFKA_CONSUMER_GROUP_PREFIX`, unique to this instance.
    pub consumer_group_prefix: String,
    /// The typed client of the exports API.
    pub exports: ExportsClient,
    /// The environment the service was configured from, to start more instances like it.
    pub env: Vec<(String, String)>,
    /// Dropped after the service: dropping it removes the database.
    database: TestDatabase,
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
    let mut pairs = service_env(&database.url).await;
    pairs.extend(
        variables
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned())),
    );
    let mut config =
        Config::from_env(&Env::from_pairs(pairs.clone())).expect("valid test configuration");
    configure(&mut config);
    let consumer_group_prefix = config.consumer_group_prefix.clone();
    let app = Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    let http = test_support::TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown));
    TestApp {
        exports: ExportsClient::new(&http.url("")),
        http,
        pool: database.pool.clone(),
        consumer_group_prefix,
        env: pairs,
        database,
    }
}

/// The environment of a test instance on `database_url`: a free port, the test broker, and a
/// consumer group prefix, an export directory and a task queue of its own.
pub async fn service_env(database_url: &str) -> Vec<(String, String)> {
    let export_dir = std::env::temp_dir().join(unique_name("report-exporter-test"));
    [
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers().await),
        (
            "KAFKA_CONSUMER_GROUP_PREFIX",
            unique_name("report-exporter-test"),
        ),
        ("EXPORT_DIR", export_dir.display().to_string()),
        (
            "EXPORT_TASKS_TOPIC",
            unique_name("report-exporter-test-tasks"),
        ),
        (
            "EXPORT_ITERATIONS_TOPIC",
            unique_name("report-exporter-test-iterations"),
        ),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("EXPORTS_TOKEN", EXPORTS_TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// A row of `orders_view`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderRow {
    pub order_id: Uuid,
    pub status: String,
    pub customer_id: String,
    pub customer_email: String,
    pub total_cents: i64,
    pub currency: String,
    pub item_count: i64,
    pub created_at: DateTime<Utc>,
    pub payment_due_at: Option<DateTime<Utc>>,
    pub revision: i64,
    pub synced_at: DateTime<Utc>,
}

impl TestApp {
    /// Shuts the service down as SIGTERM would, and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.http.stop().await
    }

    /// The running service and the database it keeps alive, apart.
    pub fn into_parts(self) -> (test_support::TestApp, TestDatabase) {
        (self.http, self.database)
    }

    /// The read model's row for `order_id`, if it has one.
    pub async fn order_view(&self, order_id: Uuid) -> Option<OrderRow> {
        sqlx::query_as(
            "SELECT order_id, status, customer_id, customer_email, total_cents, currency,
                    item_count, created_at, payment_due_at, revision, synced_at
             FROM orders_view WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await
        .expect("orders_view is readable")
    }

    /// Waits until the read model holds `order_id` at `revision`, and returns the row.
    pub async fn order_view_at(&self, order_id: Uuid, revision: i64) -> OrderRow {
        eventually(
            DEADLINE,
            &format!("order {order_id} at revision {revision} in orders_view"),
            || async move {
                self.order_view(order_id)
                    .await
                    .filter(|row| row.revision == revision)
            },
        )
        .await
    }

    /// Waits until the `orders_view` projection has handled the message at `delivery` (applied
    /// or skipped it), that is until its consumer group committed an offset past it.
    ///
    /// The offsets say it for this message alone, where a change of the row cannot (a skipped
    /// event changes nothing) and the skip counter of `/metrics` cannot either (the projection
    /// also skips the stale events that earlier tests left on the shared topic).
    pub async fn projection_handled(&self, delivery: Delivery) {
        let group = self.projection_group();
        let bootstrap_servers = kafka_bootstrap_servers().await;
        eventually(
            DEADLINE,
            &format!(
                "{group} to commit past offset {} of partition {}",
                delivery.offset, delivery.partition
            ),
            || {
                let (group, bootstrap_servers) = (group.clone(), bootstrap_servers.clone());
                async move {
                    // rdkafka's call blocks; the service runs on this test's runtime too.
                    let committed = tokio::task::spawn_blocking(move || {
                        committed_offset(&bootstrap_servers, &group, delivery.partition)
                    })
                    .await
                    .expect("the offset lookup does not panic")?;
                    (committed > delivery.offset).then_some(())
                }
            },
        )
        .await;
    }

    /// The projection's consumer group: `<prefix>.orders_view.g<generation>`, the first
    /// generation in a fresh database.
    pub fn projection_group(&self) -> String {
        format!("{}.orders_view.g1", self.consumer_group_prefix)
    }
}

/// The offset `group` committed on `partition` of `orders.orders.v1`, if it committed one.
fn committed_offset(bootstrap_servers: &str, group: &str, partition: i32) -> Option<i64> {
    // Never subscribes, so it reads the group's offsets without joining it.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group)
        .create()
        .expect("a consumer to read offsets with");
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition(ORDERS_TOPIC, partition);
    let committed = consumer
        .committed_offsets(partitions, Duration::from_secs(5))
        .ok()?;
    committed
        .elements()
        .first()
        .and_then(|element| match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        })
}

/// An order of the orders service, as the tests describe it. The fields are what the read model
/// keeps; every event of the order carries them. Change them before building the events (an
/// order placed in the past: set `created_at` and `payment_due_at`, whole microseconds).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: String,
    pub customer_email: String,
    /// `(quantity, unit_price_cents)` per line; the total is computed from them.
    pub items: Vec<(i32, i64)>,
    pub currency: &'static str,
    pub created_at: DateTime<Utc>,
    pub payment_due_at: DateTime<Utc>,
}

impl Order {
    /// The contract example's order (two lines, 3 units, 47.80 EUR) with an id no other test
    /// uses, placed now and due in 15 minutes.
    pub fn example() -> Self {
        // Microseconds, as PostgreSQL keeps them: the row then compares equal to the order.
        let created_at = Utc::now().trunc_subsecs(6);
        Self {
            id: Uuid::now_v7(),
            customer_id: "c-1042".to_owned(),
            customer_email: "ada@example.com".to_owned(),
            items: vec![(2, 1190), (1, 2400)],
            currency: "EUR",
            created_at,
            payment_due_at: created_at + Duration::from_mins(15),
        }
    }

    pub fn total_cents(&self) -> i64 {
        self.items
            .iter()
            .map(|&(quantity, unit_price)| i64::from(quantity) * unit_price)
            .sum()
    }

    pub fn item_count(&self) -> i64 {
        self.items
            .iter()
            .map(|&(quantity, _)| i64::from(quantity))
            .sum()
    }

    /// An `OrderPlaced` envelope at `revision` (1, as orders publishes it).
    pub fn placed(&self, revision: i64) -> Value {
        self.event("order-placed.json", revision)
    }

    /// An `OrderPaid` envelope at `revision` (2, as orders publishes it).
    pub fn paid(&self, revision: i64) -> Value {
        self.event("order-paid.json", revision)
    }

    /// An `OrderCancelled` envelope at `revision` (2, as orders publishes it).
    pub fn cancelled(&self, revision: i64) -> Value {
        self.event("order-cancelled.json", revision)
    }

    /// The contract's example message, about this order: building the events from the examples
    /// proves that report-exporter reads what the contract documents.
    fn event(&self, example: &str, revision: i64) -> Value {
        let mut event = test_support::contract_event(
            &format!("orders.orders.v1/{example}"),
            &self.id.to_string(),
            revision,
        );
        let entity = &mut event["payload"]["entity"];
        entity["order_id"] = json!(self.id);
        entity["customer_id"] = json!(self.customer_id);
        entity["customer_email"] = json!(self.customer_email);
        entity["items"] = self
            .items
            .iter()
            .enumerate()
            .map(|(line, &(quantity, unit_price_cents))| {
                json!({
                    "product_id": format!("product-{line}"),
                    "quantity": quantity,
                    "unit_price_cents": unit_price_cents,
                })
            })
            .collect();
        entity["total_cents"] = json!(self.total_cents());
        entity["currency"] = json!(self.currency);
        entity["created_at"] = json!(self.created_at);
        entity["payment_due_at"] = json!(self.payment_due_at);
        event
    }

    /// What `orders_view` should hold for the order in `status` at `revision`, but for
    /// `synced_at`, which only the service knows (taken from `row`).
    pub fn expected_row(&self, status: &str, revision: i64, row: &OrderRow) -> OrderRow {
        OrderRow {
            order_id: self.id,
            status: status.to_owned(),
            customer_id: self.customer_id.clone(),
            customer_email: self.customer_email.clone(),
            total_cents: self.total_cents(),
            currency: self.currency.to_owned(),
            item_count: self.item_count(),
            created_at: self.created_at,
            payment_due_at: Some(self.payment_due_at),
            revision,
            synced_at: row.synced_at,
        }
    }
}

/// Publishes to `orders.orders.v1` the way orders does: keyed by order id, with the
/// `message_type` of the order's new status, the event id as `message_id` and the event's
/// correlation id as `correlation_id`.
#[derive(Debug)]
pub struct OrdersService {
    producer: Producer,
}

impl OrdersService {
    pub async fn new() -> Self {
        let config = KafkaConfig::new(kafka_bootstrap_servers().await, "report-exporter-tests");
        let producer = Producer::new(&config).expect("a producer");
        // With the settings of the contract; the service may not have provisioned it yet.
        producer
            .ensure_topics(&[TopicSpec::new(ORDERS_TOPIC).config("cleanup.policy", "compact")])
            .await
            .expect("the orders topic exists");
        Self { producer }
    }

    /// Publishes `event` and returns where it landed.
    pub async fn publish(&self, event: &Value) -> Delivery {
        let message_type = match event["payload"]["entity"]["status"].as_str() {
            Some("pending_payment") => "OrderPlaced",
            Some("paid") => "OrderPaid",
            Some("cancelled") => "OrderCancelled",
            other => panic!("not an order status: {other:?}"),
        };
        let event_id: Uuid = serde_json::from_value(event["event_id"].clone()).expect("event_id");
        let key = event["entity_id"].as_str().expect("entity_id");
        let mut headers = MessageHeaders::new(message_type).message_id(event_id);
        headers.correlation_id = event["correlation_id"].as_str().map(ToOwned::to_owned);
        self.producer
            .publish(ORDERS_TOPIC, key, event, headers)
            .await
            .expect("published")
    }

    /// Publishes bytes (`None`: a tombstone) under `key`, as no well-behaved producer would.
    pub async fn publish_raw(&self, key: &str, payload: Option<&[u8]>) -> Delivery {
        self.producer
            .publish_bytes(
                ORDERS_TOPIC,
                Some(key.as_bytes()),
                payload,
                MessageHeaders::new("OrderPlaced"),
            )
            .await
            .expect("published")
    }

    /// Publishes the order's `OrderPlaced` event and waits until `app` has it.
    pub async fn seed(&self, app: &TestApp, order: &Order) -> OrderRow {
        self.publish(&order.placed(1)).await;
        app.order_view_at(order.id, 1).await
    }
}

//! What the tests share: `spawn_app()` with a typed client for the service, tasks published as
//! producers publish them, and a fake provider behind the webhook.
//!
//! Each test gets a task queue of its own (`NOTIFY_TASKS_TOPIC`, with its retry and dead-letter
//! topics), a consumer group of its own and a database of its own, so tests see neither each
//! other's tasks nor each other's dead letters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use kafka::{KafkaConfig, MessageHeaders, Producer};
use notifications::{Application, Config};
use platform::config::Env;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use task_queue::RetryLevels;
use test_support::{TestDatabase, eventually, kafka_bootstrap_servers, unique_name};
use uuid::Uuid;

/// Long enough for the worker's consumer group joins and a few retries on a busy 2-core
/// machine.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// The `ADMIN_TOKEN` of every test service.
pub const ADMIN_TOKEN: &str = "test-admin-token-3c1e9f";
/// Short retry delays, so a task reaches the dead-letter topic within seconds: four attempts.
pub const RETRY_DELAYS: &str = "200ms,400ms,800ms";

/// notifications on a free port with a database, a task queue and a consumer group of its own.
#[derive(Debug)]
pub struct TestApp {
    /// The untyped client, for requests the typed methods below do not cover.
    pub http: test_support::TestApp,
    /// Publishes to this service's task queue.
    pub tasks: Tasks,
    /// Dropped after the service: dropping it removes the database.
    database: TestDatabase,
}

/// The service with short retry delays, delivering to `provider` (its webhook) or, without one,
/// to the log.
pub async fn spawn_app(provider: Option<&FakeProvider>) -> TestApp {
    let webhook = provider.map(|provider| {
        vec![
            ("NOTIFY_PROVIDER", "webhook".to_owned()),
            ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ]
    });
    spawn_app_with(&webhook.unwrap_or_default()).await
}

/// Like [`spawn_app`] without a provider, with `variables` on top of the test environment.
pub async fn spawn_app_with(variables: &[(&str, String)]) -> TestApp {
    platform::telemetry::init_for_tests();
    let database = TestDatabase::create().await;
    let topic = unique_name("notifications.tasks-test");
    let mut pairs = vec![
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers().await),
        (
            "KAFKA_CONSUMER_GROUP_PREFIX",
            unique_name("notifications-test"),
        ),
        ("NOTIFY_TASKS_TOPIC", topic.clone()),
        ("NOTIFY_RETRY_DELAYS", RETRY_DELAYS.to_owned()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    // Later pairs win.
    pairs.extend(variables.iter().cloned());
    let config = Config::from_env(&Env::from_pairs(pairs)).expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("the service builds");
    let address = app.local_addr();
    TestApp {
        http: test_support::TestApp::spawn(address, |shutdown| app.run_until_stopped(shutdown)),
        tasks: Tasks::new(topic).await,
        database,
    }
}

impl TestApp {
    /// Shuts the service down as SIGTERM would, and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.http.stop().await
    }

    /// The URL of the service's database, for tests that set up rows themselves.
    pub fn database_url(&self) -> &str {
        &self.database.url
    }

    /// `GET /admin/schedules?{query}` with the admin token.
    pub async fn schedules(&self, query: &str) -> Vec<Value> {
        let response = self
            .admin(
                Method::GET,
                &format!("/admin/schedules?{query}"),
                Some(ADMIN_TOKEN),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a JSON list")
    }

    /// `GET /notifications?{query}`.
    pub async fn notifications(&self, query: &str) -> Response {
        self.http.get(&format!("/notifications?{query}")).await
    }

    /// The notifications `GET /notifications?{query}` lists, once there are `count` of them.
    /// More than `count` is a failure.
    pub async fn delivered(&self, query: &str, count: usize) -> Vec<Value> {
        let listed = eventually(
            DEADLINE,
            &format!("{count} notifications for ?{query}"),
            || async {
                let listed: Vec<Value> = self.notifications(query).await.json().await.ok()?;
                (listed.len() >= count).then_some(listed)
            },
        )
        .await;
        assert_eq!(listed.len(), count, "{listed:#?}");
        listed
    }

    /// The notification of `task`, once it is delivered.
    pub async fn delivered_task(&self, task: &TestTask) -> Value {
        let query = match task.payload.get("order_id") {
            Some(order_id) => format!("order_id={}", order_id.as_str().unwrap()),
            None => "kind=export_ready".to_owned(),
        };
        eventually(DEADLINE, &format!("task {} delivered", task.id), || async {
            let listed: Vec<Value> = self.notifications(&query).await.json().await.ok()?;
            listed
                .into_iter()
                .find(|notification| notification["task_id"] == task.id.to_string())
        })
        .await
    }

    /// A request to an admin endpoint, with `Authorization: Bearer {token}` if a token is given.
    pub async fn admin(&self, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.client.request(method, self.http.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("admin request failed")
    }

    /// `GET /admin/dlq` with the admin token.
    pub async fn dead_letters(&self) -> Vec<Value> {
        let response = self
            .admin(Method::GET, "/admin/dlq", Some(ADMIN_TOKEN))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a JSON list")
    }

    /// The dead letter of `task_id`, once it is in `GET /admin/dlq`.
    pub async fn dead_letter(&self, task_id: Uuid) -> Value {
        eventually(
            DEADLINE,
            &format!("task {task_id} dead-lettered"),
            || async {
                self.dead_letters()
                    .await
                    .into_iter()
                    .find(|letter| letter["task_id"] == task_id.to_string())
            },
        )
        .await
    }

    /// `POST /admin/dlq/{task_id}/replay` with the admin token.
    pub async fn replay(&self, task_id: Uuid) -> Response {
        self.admin(
            Method::POST,
            &format!("/admin/dlq/{task_id}/replay"),
            Some(ADMIN_TOKEN),
        )
        .await
    }
}

/// A task to publish: its type, id and JSON payload.
#[derive(Debug, Clone)]
pub struct TestTask {
    pub name: &'static str,
    pub id: Uuid,
    pub payload: Value,
}

impl TestTask {
    /// The contract's `SendOrderConfirmation` example, for a new order and `recipient`.
    pub fn order_confirmation(recipient: &str) -> Self {
        Self::about_order(
            "SendOrderConfirmation",
            "send-order-confirmation.json",
            Uuid::now_v7(),
            recipient,
        )
    }

    /// The contract's `SendOrderCancelled` example, for `order_id` and `recipient`.
    pub fn order_cancelled(order_id: Uuid, recipient: &str) -> Self {
        Self::about_order(
            "SendOrderCancelled",
            "send-order-cancelled.json",
            order_id,
            recipient,
        )
    }

    /// The contract's `SendPaymentReminder` example, for `order_id` and `recipient`.
    pub fn payment_reminder(order_id: Uuid, recipient: &str) -> Self {
        Self::about_order(
            "SendPaymentReminder",
            "send-payment-reminder.json",
            order_id,
            recipient,
        )
    }

    /// The contract's `SendExportReady` example, for a new export and `recipient`.
    pub fn export_ready(recipient: &str) -> Self {
        let mut payload = contract_example("send-export-ready.json");
        let export_id = Uuid::now_v7();
        payload["export_id"] = json!(export_id);
        payload["download_url"] = json!(format!("http://127.0.0.1:8084/exports/{export_id}"));
        payload["recipient"] = json!(recipient);
        Self {
            name: "SendExportReady",
            id: Uuid::now_v7(),
            payload,
        }
    }

    fn about_order(name: &'static str, example: &str, order_id: Uuid, recipient: &str) -> Self {
        let mut payload = contract_example(example);
        payload["order_id"] = json!(order_id);
        payload["customer_email"] = json!(recipient);
        Self {
            name,
            id: Uuid::now_v7(),
            payload,
        }
    }

    pub fn order_id(&self) -> Uuid {
        serde_json::from_value(self.payload["order_id"].clone()).expect("an order task")
    }
}

/// A payload of `docs/contracts/notifications.tasks.v1/`, parsed: building the tasks from the
/// examples proves that notifications handles what the contract documents.
pub fn contract_example(file: &str) -> Value {
    test_support::contract_example(&format!("notifications.tasks.v1/{file}"))
}

/// Publishes to one test's task queue the way producers do (see the contract): keyed by task id,
/// with the task id as `message_id` and the task type as `message_type`.
#[derive(Debug)]
pub struct Tasks {
    producer: Producer,
    topic: String,
}

impl Tasks {
    async fn new(topic: String) -> Self {
        let config = KafkaConfig::new(kafka_bootstrap_servers().await, "notifications-tests");
        let producer = Producer::new(&config).expect("a producer");
        // As producers do: the main topic, with the task queue's settings. The service may not
        // have provisioned it yet.
        let main_topic: Vec<_> = task_queue::queue_topics(&topic, &RetryLevels::default())
            .into_iter()
            .filter(|spec| spec.name == topic)
            .collect();
        producer
            .ensure_topics(&main_topic)
            .await
            .expect("the task topic exists");
        Self { producer, topic }
    }

    pub async fn publish(&self, task: &TestTask) {
        self.publish_keyed(task, &task.id.to_string()).await;
    }

    /// With a key of the test's choice: tasks with one key are on one partition, in order.
    pub async fn publish_keyed(&self, task: &TestTask, key: &str) {
        let payload = serde_json::to_vec(&task.payload).expect("JSON");
        self.publish_raw(task.name, task.id, key, &payload).await;
    }

    /// As the task scheduler fires it: with the time its occurrence was due for.
    pub async fn publish_scheduled(&self, task: &TestTask, scheduled_for: DateTime<Utc>) {
        let payload = serde_json::to_vec(&task.payload).expect("JSON");
        self.producer
            .publish_bytes(
                &self.topic,
                Some(task.id.to_string().as_bytes()),
                Some(&payload),
                MessageHeaders::new(task.name).message_id(task.id).header(
                    task_queue::header::TASK_SCHEDULED_FOR,
                    scheduled_for.to_rfc3339(),
                ),
            )
            .await
            .expect("published");
    }

    /// Any bytes as a task, for what a broken producer might send.
    pub async fn publish_raw(&self, name: &str, task_id: Uuid, key: &str, payload: &[u8]) {
        self.producer
            .publish_bytes(
                &self.topic,
                Some(key.as_bytes()),
                Some(payload),
                MessageHeaders::new(name).message_id(task_id),
            )
            .await
            .expect("published");
    }
}

/// What the fake provider answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    /// Answers 200, but only after this long: past the webhook's timeout, the call has failed.
    Late(Duration),
}

/// A call the fake provider received.
#[derive(Debug, Clone)]
pub struct Call {
    pub idempotency_key: Option<String>,
    pub body: Value,
    pub answer: Answer,
}

/// Stands in for the notification provider behind `NOTIFY_WEBHOOK_URL`: records every call and
/// answers with the statuses the test scripted for the call's recipient (200 unless told).
#[derive(Debug, Clone)]
pub struct FakeProvider {
    pub url: String,
    state: Arc<Mutex<ProviderState>>,
}

#[derive(Debug, Default)]
struct ProviderState {
    calls: Vec<Call>,
    scripts: HashMap<String, Script>,
}

#[derive(Debug)]
struct Script {
    first: VecDeque<Answer>,
    then: Answer,
}

impl FakeProvider {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ProviderState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let routes = axum::Router::new()
            .route("/notify", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, routes).await });
        Self {
            url: format!("http://{address}/notify"),
            state,
        }
    }

    /// Calls for `recipient` get `first`, one answer each, then `then` for good. Replaces what
    /// was scripted before.
    pub fn answer(&self, recipient: &str, first: &[Answer], then: Answer) {
        self.state.lock().unwrap().scripts.insert(
            recipient.to_owned(),
            Script {
                first: first.iter().copied().collect(),
                then,
            },
        );
    }

    /// Every call for `recipient` so far, in order.
    pub fn calls_for(&self, recipient: &str) -> Vec<Call> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|call| call.body["recipient"] == recipient)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ProviderState>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> (StatusCode, &'static str) {
    let answer = {
        let mut state = state.lock().unwrap();
        let recipient = body["recipient"].as_str().unwrap_or_default().to_owned();
        let answer = state
            .scripts
            .get_mut(&recipient)
            .map_or(Answer::Status(200), |script| {
                script.first.pop_front().unwrap_or(script.then)
            });
        state.calls.push(Call {
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            body,
            answer,
        });
        answer
    };
    match answer {
        Answer::Status(status) => (
            StatusCode::from_u16(status).unwrap(),
            "scripted by the test",
        ),
        Answer::Late(delay) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "too late")
        }
    }
}

/// The body of a problem response, after checking its status and content type.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.expect("a problem body")
}

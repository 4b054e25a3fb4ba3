//! What the export tests share: a typed client of the exports API (for an instance in the
//! test's runtime or a separate process), the service as a separate process that can be killed,
//! and orders seeded straight into `orders_view`.

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::eventually;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Exports of 100,000 rows take a while on a busy 2-core machine.
pub const EXPORT_DEADLINE: Duration = Duration::from_mins(3);

/// The exports API of one service instance.
#[derive(Debug, Clone)]
pub struct ExportsClient {
    base: String,
    client: reqwest::Client,
}

impl ExportsClient {
    /// `base` as `http://127.0.0.1:1234`; every request carries the test instances'
    /// `EXPORTS_TOKEN`.
    pub fn new(base: &str) -> Self {
        Self::with_token(base, Some(crate::helpers::EXPORTS_TOKEN))
    }

    /// A client that sends `token` as its bearer token, or none.
    pub fn with_token(base: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("a header value"),
            );
        }
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .expect("an HTTP client"),
        }
    }

    pub async fn create(&self, body: &Value) -> Response {
        self.client
            .post(format!("{}/exports", self.base))
            .json(body)
            .send()
            .await
            .expect("POST /exports")
    }

    /// `POST /exports` with an `Idempotency-Key`.
    pub async fn create_with_key(&self, key: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/exports", self.base))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST /exports")
    }

    /// Starts an export of `[from, to)` with `options` merged into the body; its id.
    pub async fn start(&self, from: DateTime<Utc>, to: DateTime<Utc>, options: Value) -> Uuid {
        let mut body = json!({ "from": from, "to": to });
        if let (Some(body), Some(options)) = (body.as_object_mut(), options.as_object()) {
            body.extend(options.clone());
        }
        let response = self.create(&body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted: Value = response.json().await.expect("JSON");
        assert_eq!(accepted["status"], "pending");
        accepted["export_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an export id")
    }

    pub async fn get(&self, export_id: Uuid) -> Response {
        self.client
            .get(format!("{}/exports/{export_id}", self.base))
            .send()
            .await
            .expect("GET /exports/{id}")
    }

    pub async fn status(&self, export_id: Uuid) -> Value {
        let response = self.get(export_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON")
    }

    /// Polls until the export is in `status`; its last representation.
    pub async fn wait_for(&self, export_id: Uuid, status: &str) -> Value {
        eventually(
            EXPORT_DEADLINE,
            &format!("export {export_id} {status}"),
            || async {
                let export = self.status(export_id).await;
                (export["status"] == status).then_some(export)
            },
        )
        .await
    }

    /// `POST /exports/{id}/{action}` (pause, resume, cancel).
    pub async fn control(&self, export_id: Uuid, action: &str) -> Response {
        self.client
            .post(format!("{}/exports/{export_id}/{action}", self.base))
            .send()
            .await
            .expect("POST /exports/{id}/{action}")
    }

    pub async fn download(&self, export_id: Uuid) -> Response {
        self.client
            .get(format!("{}/exports/{export_id}/download", self.base))
            .send()
            .await
            .expect("GET /exports/{id}/download")
    }

    /// The CSV of a completed export.
    pub async fn csv(&self, export_id: Uuid) -> String {
        let response = self.download(export_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        response.text().await.expect("the CSV")
    }
}

/// report-exporter's binary, started with the environment of a test instance, so that the test
/// can kill it like a crash would (SIGKILL: nothing is flushed, committed or left cleanly).
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    pub exports: ExportsClient,
}

impl ServiceProcess {
    pub async fn start(env: &[(String, String)]) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_report-exporter"));
        command
            .env_clear()
            .envs(
                env.iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().expect("report-exporter starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        eventually(
            Duration::from_mins(1),
            "the process to be ready",
            || async {
                let ready = client
                    .get(format!("{base}/health/ready"))
                    .send()
                    .await
                    .ok()?;
                (ready.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
        Self {
            child,
            exports: ExportsClient::new(&base),
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("the process is killed");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The time range the seeded orders are created in: `n` orders one second apart, starting at
/// `start`.
pub fn seeded_range(start: DateTime<Utc>, n: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    (start, start + chrono::TimeDelta::seconds(n))
}

/// Inserts `n` orders straight into `orders_view` (the projection is tested on its own), one
/// second apart from `start`, in the three statuses, some with values that need CSV quoting.
pub async fn seed_orders(pool: &PgPool, start: DateTime<Utc>, n: i64) {
    sqlx::query(
        "INSERT INTO orders_view (order_id, status, customer_id, customer_email, total_cents,
                                  currency, item_count, created_at, payment_due_at, revision)
         SELECT md5(i::text || $1::text)::uuid,
                (ARRAY['pending_payment', 'paid', 'cancelled'])[1 + i % 3],
                CASE WHEN i % 97 = 0 THEN 'Lovelace, \"Ada\"' ELSE 'c-' || i END,
                'customer' || i || '@example.com',
                100 + i % 10000,
                'EUR',
                1 + i % 5,
                $1 + make_interval(secs => i),
                CASE WHEN i % 3 = 0 THEN $1 + make_interval(secs => i + 900) END,
                1
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(start)
    .bind(n)
    .execute(pool)
    .await
    .expect("seed orders_view");
    sqlx::query("ANALYZE orders_view")
        .execute(pool)
        .await
        .expect("analyze");
}

/// The same rows as an export of `[from, to)` should hold, straight from the database, as
/// `(order_id, status, customer_id, total_cents)` per line in export order.
pub async fn expected_rows(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    status: Option<&str>,
) -> Vec<(Uuid, String, String, i64)> {
    sqlx::query_as(
        "SELECT order_id, status, customer_id, total_cents FROM orders_view
         WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR status = $3)
         ORDER BY created_at, order_id",
    )
    .bind(from)
    .bind(to)
    .bind(status)
    .fetch_all(pool)
    .await
    .expect("read orders_view")
}

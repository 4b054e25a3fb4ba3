//! `spawn_app`-style plumbing that each service's tests build on (zero2prod): run a built
//! service on a free port and talk to it over real HTTP.

use std::future::Future;
use std::net::SocketAddr;

use platform::config::Env;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{TestDatabase, kafka_bootstrap_servers};

/// The environment a service under test reads: a free port, its own database, the test broker.
pub async fn service_env(database: &TestDatabase) -> Env {
    Env::from_pairs([
        ("HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", database.url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap_servers().await),
    ])
}

/// A service running in the test's runtime, with a client for its HTTP API.
#[derive(Debug)]
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    running: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// Runs `run_until_stopped` (given the shutdown token) in the background. `address` is
    /// where the service listens.
    pub fn spawn<F, Fut>(address: SocketAddr, run_until_stopped: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(run_until_stopped(shutdown.clone()));
        Self {
            address,
            client: reqwest::Client::new(),
            shutdown,
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET request failed")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST request failed")
    }

    /// A POST with any body and content type, for malformed-input tests.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &'static str,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST request failed")
    }

    /// Graceful shutdown, as on SIGTERM; returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.running.await?
    }
}

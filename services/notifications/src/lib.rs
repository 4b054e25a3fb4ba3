#![doc = include_str!("../README.md")]

mod admin;
mod config;
mod error;
mod notification;
mod routes;
mod store;
mod tasks;
mod worker;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use kafka::{BrokerCheck, KafkaConfig, Producer};
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use sqlx::PgPool;
use task_queue::{DeadLetters, TaskQueue};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{
    AdminConfig, AdminToken, Config, DEFAULT_TASKS_TOPIC, ProviderConfig, SERVICE_NAME,
};

use crate::notification::Provider;

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: PgPool,
    kafka: KafkaConfig,
    producer: Producer,
    provider: Provider,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own and
    /// the task queue's `task_executions` and `dead_letters`) and to the broker, and binds the
    /// HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        task_queue::migrate(&pool).await?;

        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        let provider = Provider::new(&config.provider)?;

        let mut api = routes::router(pool.clone());
        match &config.admin {
            AdminConfig::Enabled { token } => {
                // Replays publish to the queue's main topic, which the worker provisions.
                let queue = TaskQueue::new(config.tasks_topic.clone(), producer.clone());
                let dead_letters = DeadLetters::new(pool.clone(), queue);
                api = api.merge(admin::router(dead_letters, token.clone()));
            }
            AdminConfig::Disabled => {
                tracing::info!("ADMIN_ROUTES=false: the dead-letter admin endpoints are off");
            }
        }
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            ..HttpSettings::default()
        };
        let router = platform::http::app(api, health, &settings);
        let listener = TcpListener::bind(config.common.http_addr)
            .await
            .with_context(|| format!("Failed to bind HTTP_ADDR {}", config.common.http_addr))?;
        Ok(Self {
            listener,
            router,
            pool,
            kafka,
            producer,
            provider,
            config,
        })
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves HTTP and works off the task queue until `shutdown` is cancelled. Then, in this
    /// order: finishes in-flight requests, stops the worker (it finishes the tasks in hand
    /// within its drain timeout and commits what is done), flushes the producer and closes the
    /// pool.
    ///
    /// The worker should only stop at shutdown. If it stops before, it failed for good; the
    /// service then shuts down the same way and returns the error, rather than go on answering
    /// while no notification goes out.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{SERVICE_NAME} starting");
        let Self {
            listener,
            router,
            pool,
            kafka,
            producer,
            provider,
            config,
        } = self;
        let stop_http = shutdown.child_token();
        let stop_worker = CancellationToken::new();

        // Provisions the queue's topics (main, retry levels, dead letters) before it consumes.
        let running = worker::worker(pool.clone(), &kafka, &config, provider)
            .start(stop_worker.clone())
            .await
            .with_context(|| format!("Failed to start the worker of {}", config.tasks_topic))?;
        let worker_task = tokio::spawn(until_stopped(
            "task worker",
            running.wait(),
            stop_http.clone(),
        ));

        let served = platform::http::serve(listener, router, stop_http).await;

        stop_worker.cancel();
        let worker_result = worker_task.await.context("The task worker panicked");
        let flushed = producer.flush(config.common.shutdown_timeout).await;
        pool.close().await;
        tracing::info!("{SERVICE_NAME} stopped");

        served?;
        worker_result??;
        flushed
    }
}

/// Runs background `work` that is meant to last until shutdown. If it ends before `stop` is
/// cancelled, it failed: `stop` is cancelled, so that the whole service shuts down.
async fn until_stopped(
    what: &'static str,
    work: impl Future<Output = anyhow::Result<()>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let result = work.await;
    if stop.is_cancelled() {
        return result.with_context(|| format!("The {what} failed"));
    }
    let error = match result {
        Err(error) => error.context(format!("The {what} failed")),
        Ok(()) => anyhow::anyhow!("The {what} stopped before shutdown"),
    };
    tracing::error!(error = format!("{error:#}"), "shutting down");
    stop.cancel();
    Err(error)
}

#![doc = include_str!("../README.md")]

mod config;

use std::net::SocketAddr;

use anyhow::Context as _;
use kafka::{BrokerCheck, KafkaConfig, Producer};
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, SERVICE_NAME};

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: PgPool,
    producer: Producer,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it and running migrations) and to the broker, and
    /// binds the HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            ..HttpSettings::default()
        };
        let router = platform::http::app(axum::Router::new(), health, &settings);
        let listener = TcpListener::bind(config.common.http_addr)
            .await
            .with_context(|| format!("Failed to bind HTTP_ADDR {}", config.common.http_addr))?;
        Ok(Self {
            listener,
            router,
            pool,
            producer,
            config,
        })
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests, flushes the
    /// producer and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{SERVICE_NAME} listening");
        platform::http::serve(self.listener, self.router, shutdown).await?;
        self.producer
            .flush(self.config.common.shutdown_timeout)
            .await?;
        self.pool.close().await;
        tracing::info!("{SERVICE_NAME} stopped");
        Ok(())
    }
}

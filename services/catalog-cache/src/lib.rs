#![doc = include_str!("../README.md")]

mod config;
mod currency;
mod error;
mod events;
mod product;
mod routes;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use kafka::{BrokerCheck, KafkaConfig, Producer};
use outbox::OutboxRelay;
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::PRODUCTS;

pub use config::{Config, SERVICE_NAME};

/// The realm of the admin endpoints' `WWW-Authenticate: Bearer` challenge.
const ADMIN_REALM: &str = "catalog-cache-admin";

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
    /// Connects to the database (creating it and running the service's and the outbox's
    /// migrations) and to the broker, provisions `catalog-cache.products.v1`, and binds the
    /// HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        outbox::migrate(&pool).await?;
        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        producer
            .ensure_topics(&[PRODUCTS.spec()])
            .await
            .with_context(|| format!("Failed to provision {}", PRODUCTS.name()))?;
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            body_limit: product::BODY_LIMIT,
        };
        // The outbox rows the broker refused for good (`/admin/outbox/parked`), behind the token.
        let api = platform::http::admin::mount(
            routes::router(pool.clone()),
            &config.admin,
            ADMIN_REALM,
            || outbox::admin::router(pool.clone()),
        );
        let router = platform::http::app(api, health, &settings);
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

    /// Serves HTTP and runs the outbox relay until `shutdown` is cancelled. Then it finishes
    /// the in-flight requests, stops the relay, flushes the producer and closes the pool.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{SERVICE_NAME} listening");
        // The relay has a token of its own: it stops only after the HTTP server, so that it
        // still publishes the events of requests that finish during the shutdown.
        let stop_relay = CancellationToken::new();
        let relay = tokio::spawn(
            OutboxRelay::new(self.pool.clone(), self.producer.clone()).run(stop_relay.clone()),
        );

        let served = platform::http::serve(self.listener, self.router, shutdown).await;
        stop_relay.cancel();
        let timeout = self.config.common.shutdown_timeout;
        let relayed = wait_for_relay(relay, timeout).await;
        let flushed = self.producer.flush(timeout).await;
        self.pool.close().await;
        tracing::info!("{SERVICE_NAME} stopped");
        served.and(relayed).and(flushed)
    }
}

/// Waits up to `timeout` for the stopping relay to finish its batch in flight. A relay that takes
/// longer (the broker is down, say) is abandoned: the rows it had not marked as published stay in
/// the outbox and are published after the next start, some perhaps a second time, which
/// consumers tolerate (they apply an event only over a lower revision).
async fn wait_for_relay(
    mut relay: JoinHandle<anyhow::Result<()>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    match tokio::time::timeout(timeout, &mut relay).await {
        Ok(finished) => finished.context("The outbox relay task failed")?,
        Err(_elapsed) => {
            relay.abort();
            tracing::warn!(
                timeout_ms = timeout.as_millis(),
                "the outbox relay did not stop in time; its pending messages stay in the outbox"
            );
            Ok(())
        }
    }
}

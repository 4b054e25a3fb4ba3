#![doc = include_str!("../README.md")]

mod config;
mod currency;
mod error;
mod events;
mod product;
mod routes;
mod store;

use std::net::SocketAddr;

use anyhow::Context as _;
use service_host::{Routes, Service, ServiceHost};
use tokio_util::sync::CancellationToken;

use crate::events::PRODUCTS;

pub use config::{Config, SERVICE_NAME};

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application(Service);

impl Application {
    /// Connects to the database (creating it and running the service's and the outbox's
    /// migrations) and to the broker, provisions `catalog-cache.products.v1`, and binds the
    /// HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let host = ServiceHost::connect(SERVICE_NAME, &config.common, &sqlx::migrate!(), &[])
            .await
            .context("Failed to start catalog-cache")?;
        host.provision(&[PRODUCTS.spec()]).await?;
        let routes = Routes {
            api: routes::router(host.pool().clone()),
            // Only the host's: the outbox rows the broker refused (`/admin/outbox/parked`).
            admin: axum::Router::new(),
            body_limit: product::BODY_LIMIT,
        };
        Ok(Self(host.bind(routes, &config.admin).await?))
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves HTTP and runs the outbox relay until `shutdown` is cancelled, then stops as every
    /// service does (`service_host::Service::run_until_stopped`): HTTP, then the relay, within
    /// `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.0.run_until_stopped(shutdown).await
    }
}

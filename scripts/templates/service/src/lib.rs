#![doc = include_str!("../README.md")]

mod config;
mod error;
mod events;
mod item;
mod routes;
mod store;
mod tasks;
mod workers;

use std::net::SocketAddr;

use anyhow::Context as _;
use service_host::{Pattern, Routes, Service, ServiceHost};
use task_scheduler::{MisfirePolicy, OverlapPolicy, TaskTemplate};
use tokio_util::sync::CancellationToken;

use crate::events::ITEMS;
use crate::tasks::{SUMMARY_SCHEDULE, SummarizeItems};

pub use config::{Config, SERVICE_NAME};

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application(Service);

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own and
    /// those of the patterns it uses) and to the broker, provisions `{{service}}.items.v1`,
    /// stores the `summarize-items` schedule, and binds the HTTP port. Fails fast, naming what
    /// is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut host = ServiceHost::connect(
            SERVICE_NAME,
            &config.common,
            &sqlx::migrate!(),
            &[
                Pattern::TaskQueue,
                Pattern::TaskScheduler,
                Pattern::DeadLetters,
            ],
        )
        .await
        .context("Failed to start {{service}}")?;
        host.provision(&[ITEMS.spec()]).await?;

        // A recurring schedule: the scheduler fires a SummarizeItems into the task queue at
        // every occurrence of the cron expression. Upserted at every start.
        host.schedules()
            .upsert_recurring(
                SUMMARY_SCHEDULE,
                &config.summary_cron,
                "UTC",
                TaskTemplate::new(config.tasks_topic.clone(), &SummarizeItems {})?,
                MisfirePolicy::FireOnce,
                OverlapPolicy::Allow,
            )
            .await
            .with_context(|| {
                format!(
                    "Failed to store the {SUMMARY_SCHEDULE} schedule ({{ENV}}_SUMMARY_CRON `{}`)",
                    config.summary_cron
                )
            })?;

        // Provisions the queue's topics (main, retry levels, dead letters) before it consumes.
        let worker = workers::worker(host.pool().clone(), host.kafka(), &config);
        host.run("task worker", worker);

        let routes = Routes {
            api: routes::router(host.pool().clone()),
            // Only the host's: parked outbox rows, dead letters, schedules.
            admin: axum::Router::new(),
            body_limit: item::BODY_LIMIT,
        };
        Ok(Self(host.bind(routes, &config.admin).await?))
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves HTTP, runs the worker, the scheduler and the outbox relay until `shutdown` is
    /// cancelled, then stops as every service does, within `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.0.run_until_stopped(shutdown).await
    }
}

#![doc = include_str!("../README.md")]

mod config;
mod error;
mod events;
mod order;
mod pricing;
mod read_model;
mod retention;
mod routes;
mod store;
mod tasks;
mod workers;

use std::net::SocketAddr;

use idempotency::IdempotencyKeys;
use integration_events::Projector;
use service_host::{Pattern, Routes, Service, ServiceHost};
use tokio_util::sync::CancellationToken;

pub use config::{
    AdminConfig, AdminToken, Config, DEFAULT_TASKS_TOPIC, RetentionConfig, SERVICE_NAME,
};
pub use retention::RETENTION_SCHEDULE;

use crate::events::ORDERS_TOPIC;
use crate::read_model::{CatalogProducts, PRODUCTS_TOPIC};
use crate::routes::AppState;
use crate::store::FollowUps;
use crate::tasks::NOTIFICATIONS_TASKS_TOPIC;

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application(Service);

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// outbox, the read models' revision records, the task queue's execution records, the task
    /// scheduler's tables, the dead letters and the idempotency keys) and to the broker,
    /// provisions `orders.orders.v1` and notifications' `notifications.tasks.v1`, stores the
    /// `purge-expired-records` recurring schedule (`RETENTION_*`), and binds the HTTP port.
    /// Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut host = ServiceHost::connect(
            SERVICE_NAME,
            &config.common,
            &sqlx::migrate!(),
            &[
                Pattern::IntegrationEvents,
                Pattern::TaskQueue,
                Pattern::TaskScheduler,
                Pattern::DeadLetters,
                Pattern::Idempotency,
            ],
        )
        .await?;
        let pool = host.pool().clone();
        task_scheduler::upsert_retention_schedule(
            &host.schedules(),
            &config.tasks_topic,
            &config.retention.cron,
        )
        .await?;
        host.provision(&[ORDERS_TOPIC.spec()]).await?;
        // notifications provisions its queue too, with the retry and dead-letter topics that
        // only it uses; orders provisions the main topic it sends to, so that placing orders
        // does not depend on notifications having started once.
        host.provision_task_queue(NOTIFICATIONS_TASKS_TOPIC).await?;

        host.run(
            "catalog_products projection",
            Projector::new(
                pool.clone(),
                host.kafka(),
                &config.consumer_group_prefix,
                PRODUCTS_TOPIC.spec(),
                CatalogProducts,
            ),
        );
        // Provisions orders' task queue (main, retry and dead-letter topics) before it consumes.
        let worker = workers::worker(
            pool.clone(),
            host.kafka(),
            &config.consumer_group_prefix,
            &config.tasks_topic,
            host.task_queue(NOTIFICATIONS_TASKS_TOPIC),
            retention::PurgeRecords {
                pool: pool.clone(),
                period: config.retention.period,
                idempotency_ttl: config.idempotency_ttl,
            },
        );
        host.run("task worker", worker);

        let state = AppState {
            pool,
            follow_ups: FollowUps {
                notifications: host.task_queue(NOTIFICATIONS_TASKS_TOPIC),
                orders_tasks_topic: config.tasks_topic.clone(),
                idempotency: IdempotencyKeys::new("POST /orders", config.idempotency_ttl),
                payment_timeout: config.payment_timeout,
            },
        };
        let routes = Routes {
            api: routes::router(state),
            // Only the host's: the schedules, the dead letters, the parked outbox rows.
            admin: axum::Router::new(),
            body_limit: order::BODY_LIMIT,
        };
        Ok(Self(host.bind(routes, &config.admin).await?))
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves HTTP, projects `catalog-cache.products.v1` into `catalog_products`, works off
    /// orders' task queue (`CancelUnpaidOrder`, `PurgeExpiredRecords`), fires the due schedules
    /// and relays the outbox to Kafka until `shutdown` is cancelled; then stops as every service
    /// does, within `SHUTDOWN_TIMEOUT` (`service_host::Service::run_until_stopped`).
    ///
    /// No message stops the background parts (one that cannot be handled is set aside in
    /// `/admin/dead-letters`, and a database outage is waited out). If one stops all the same,
    /// the service stops and returns the error, rather than go on serving orders from a read
    /// model that no longer changes, or orders whose deadlines nobody enforces.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.0.run_until_stopped(shutdown).await
    }
}

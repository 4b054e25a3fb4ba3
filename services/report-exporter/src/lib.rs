#![doc = include_str!("../README.md")]

mod config;
mod error;
mod export_job;
mod nightly;
mod read_model;
mod retention;
mod routes;
mod store;
mod tasks;
mod workers;

use std::net::SocketAddr;

use anyhow::Context as _;
use idempotency::IdempotencyKeys;
use integration_events::Projector;
use iterator::{JobRunner, Jobs};
use service_host::{Pattern, Routes, Service, ServiceHost};
use sqlx::PgPool;
use task_queue::TaskOptions;
use tokio_util::sync::CancellationToken;

pub use config::{
    AdminConfig, AdminToken, Config, DEFAULT_TASKS_TOPIC, ExportsAuth, NightlyConfig,
    RetentionConfig, SERVICE_NAME,
};
pub use export_job::CSV_HEADER;
pub use nightly::NIGHTLY_SCHEDULE;
pub use retention::RETENTION_SCHEDULE;

use crate::export_job::ExportOrders;
use crate::read_model::{ORDERS_TOPIC, OrdersView};
use crate::retention::{PurgeExpiredRecords, PurgeRecords};
use crate::routes::AppState;
use crate::tasks::NOTIFICATIONS_TASKS_TOPIC;

/// The realm of the `/exports` routes' challenge.
const EXPORTS_REALM: &str = "report-exporter-exports";

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application(Service);

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// outbox, the read models' revision records, the task queue's execution records, the task
    /// scheduler's tables, the iterator's jobs, the dead letters and the idempotency keys) and
    /// to the broker, provisions notifications' `notifications.tasks.v1`, stores the
    /// `nightly-orders-export` and `purge-expired-records` recurring schedules, and binds the
    /// HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut host = ServiceHost::connect(
            SERVICE_NAME,
            &config.common,
            &sqlx::migrate!(),
            &[
                Pattern::IntegrationEvents,
                Pattern::TaskQueue,
                Pattern::TaskScheduler,
                Pattern::Iterator,
                Pattern::DeadLetters,
                Pattern::Idempotency,
            ],
        )
        .await?;
        let pool = host.pool().clone();
        tokio::fs::create_dir_all(&config.export_dir)
            .await
            .with_context(|| {
                format!(
                    "Failed to create EXPORT_DIR {}",
                    config.export_dir.display()
                )
            })?;
        // notifications provisions its queue too, with the retry and dead-letter topics only it
        // uses; report-exporter provisions the main topic it sends to, so that exports do not
        // depend on notifications having started once.
        host.provision_task_queue(NOTIFICATIONS_TASKS_TOPIC).await?;
        let schedules = host.schedules();
        nightly::upsert_schedule(&schedules, &config.tasks_topic, &config.nightly).await?;
        task_scheduler::upsert_retention_schedule(
            &schedules,
            &config.tasks_topic,
            &config.retention.cron,
        )
        .await?;

        let jobs = Jobs::new(pool.clone(), &config.iterations_topic);
        let export = ExportOrders {
            pool: pool.clone(),
            dir: config.export_dir.clone(),
            notifications: host.task_queue(NOTIFICATIONS_TASKS_TOPIC),
            public_url: config.public_url.clone(),
        };
        // Provisions orders.orders.v1 as the contract allows, so that report-exporter may start
        // before orders ever ran.
        host.run(
            "orders_view projection",
            Projector::new(
                pool.clone(),
                host.kafka(),
                &config.consumer_group_prefix,
                ORDERS_TOPIC.spec(),
                OrdersView,
            ),
        );
        // Every replica runs steps of every export: the steps spread over them by partition.
        host.run(
            "export runner",
            JobRunner::new(
                pool.clone(),
                host.kafka(),
                format!("{}.iterations", config.consumer_group_prefix),
                iterator::iterations_topic_named(&config.iterations_topic),
            )
            .register(export.clone()),
        );
        // Provisions the service's task queue (main, retry and dead-letter topics).
        host.run(
            "task worker",
            workers::worker(
                pool.clone(),
                host.kafka(),
                &config.consumer_group_prefix,
                &config.tasks_topic,
                jobs.clone(),
            )
            .register::<PurgeExpiredRecords, _>(
                PurgeRecords {
                    pool: pool.clone(),
                    export_dir: config.export_dir.clone(),
                    period: config.retention.period,
                    idempotency_ttl: config.idempotency_ttl,
                },
                TaskOptions::default(),
            ),
        );

        let state = AppState {
            pool,
            jobs,
            export,
            export_dir: config.export_dir.clone(),
            default_recipient: config.nightly.recipient.clone(),
            idempotency: IdempotencyKeys::new("POST /exports", config.idempotency_ttl),
        };
        let routes = Routes {
            api: exports_router(state, &config.exports_auth),
            // Only the host's: the schedules, the dead letters, the parked outbox rows.
            admin: axum::Router::new(),
            body_limit: routes::BODY_LIMIT,
        };
        Ok(Self(host.bind(routes, &config.admin).await?))
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// The service's database, migrated.
    pub fn pool(&self) -> &PgPool {
        self.0.pool()
    }

    /// Serves HTTP, projects `orders.orders.v1` into `orders_view`, runs export steps and the
    /// task worker, fires the due schedules and relays the outbox to Kafka until `shutdown` is
    /// cancelled; then stops as every service does, within `SHUTDOWN_TIMEOUT`
    /// (`service_host::Service::run_until_stopped`).
    ///
    /// No message stops the background parts (one that cannot be handled is set aside in
    /// `/admin/dead-letters`, and a database outage is waited out). If one stops all the same,
    /// the service stops and returns the error, rather than go on exporting from a read model
    /// that no longer changes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.0.run_until_stopped(shutdown).await
    }
}

/// The `/exports` routes, behind `EXPORTS_TOKEN` unless `EXPORTS_AUTH=false` opened them.
fn exports_router(state: AppState, auth: &ExportsAuth) -> axum::Router {
    match auth {
        ExportsAuth::Bearer(token) => platform::http::admin::protect(
            routes::router(state),
            token.clone(),
            EXPORTS_REALM,
            "EXPORTS_TOKEN",
        ),
        ExportsAuth::Open => {
            tracing::warn!("EXPORTS_AUTH=false: /exports answers anyone who reaches the port");
            routes::router(state)
        }
    }
}

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
use dead_letters::DeadLetterStore;
use idempotency::IdempotencyKeys;
use integration_events::Projector;
use iterator::{JobRunner, Jobs};
use kafka::{BrokerCheck, KafkaConfig, Producer};
use outbox::OutboxRelay;
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use platform::shutdown::Background;
use sqlx::PgPool;
use task_queue::{RetryLevels, TaskOptions, TaskQueue};
use task_scheduler::{Scheduler, Schedules};
use tokio::net::TcpListener;
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

/// The realm of the admin endpoints' `WWW-Authenticate: Bearer` challenge.
const ADMIN_REALM: &str = "report-exporter-admin";
/// The realm of the `/exports` routes' challenge.
const EXPORTS_REALM: &str = "report-exporter-exports";

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: PgPool,
    kafka: KafkaConfig,
    producer: Producer,
    jobs: Jobs,
    export: ExportOrders,
    dead_letters: DeadLetterStore,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// read models' revision records, the outbox, the task queue's execution records and the
    /// task scheduler's tables) and to the broker, stores the `nightly-orders-export` and
    /// `purge-expired-records` recurring schedules, and binds the HTTP port. Fails fast, naming
    /// what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        integration_events::migrate(&pool).await?;
        outbox::migrate(&pool).await?;
        task_queue::migrate(&pool).await?;
        task_scheduler::migrate(&pool).await?;
        iterator::migrate(&pool).await?;
        dead_letters::migrate(&pool).await?;
        idempotency::migrate(&pool).await?;
        let dead_letters = DeadLetterStore::new(pool.clone());
        tokio::fs::create_dir_all(&config.export_dir)
            .await
            .with_context(|| {
                format!(
                    "Failed to create EXPORT_DIR {}",
                    config.export_dir.display()
                )
            })?;

        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        // notifications provisions its queue too, with the retry and dead-letter topics only it
        // uses; report-exporter provisions the main topic it publishes to, with the same
        // settings, so that exports do not depend on notifications having started once.
        let notifications_topic =
            task_queue::queue_topics(NOTIFICATIONS_TASKS_TOPIC, &RetryLevels::default())
                .into_iter()
                .filter(|spec| spec.name == NOTIFICATIONS_TASKS_TOPIC)
                .collect::<Vec<_>>();
        producer
            .ensure_topics(&notifications_topic)
            .await
            .with_context(|| format!("Failed to provision {NOTIFICATIONS_TASKS_TOPIC}"))?;
        let schedules = Schedules::new(pool.clone());
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
            notifications: TaskQueue::new(NOTIFICATIONS_TASKS_TOPIC, producer.clone()),
            public_url: config.public_url.clone(),
        };
        let state = AppState {
            pool: pool.clone(),
            jobs: jobs.clone(),
            export: export.clone(),
            export_dir: config.export_dir.clone(),
            default_recipient: config.nightly.recipient.clone(),
            idempotency: IdempotencyKeys::new("POST /exports", config.idempotency_ttl),
        };
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            body_limit: routes::BODY_LIMIT,
        };
        // The schedules (`/admin/schedules`), the messages the projection, the export runner and
        // the task worker set aside (`/admin/dead-letters`) and the outbox rows the broker
        // refused (`/admin/outbox/parked`), behind the bearer token.
        let exports = match &config.exports_auth {
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
        };
        let api = platform::http::admin::mount(exports, &config.admin, ADMIN_REALM, || {
            task_scheduler::admin::router(Schedules::new(pool.clone()))
                .merge(dead_letters::admin::router(dead_letters.clone()))
                .merge(outbox::admin::router(pool.clone()))
        });
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
            jobs,
            export,
            dead_letters,
            config,
        })
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The service's database, migrated.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves HTTP, projects `orders.orders.v1` into `orders_view`, fires the due schedules and
    /// relays the outbox to Kafka until `shutdown` is cancelled. Then, in this order: finishes
    /// in-flight requests, stops the projection, the scheduler and the relay (each finishes the
    /// work in hand), flushes the producer and closes the pool.
    ///
    /// These background tasks only stop at shutdown: no message stops them (one that cannot be
    /// handled is set aside in `/admin/dead-letters`, and a database outage is waited out). If
    /// one stops all the same, the service shuts down the same way and returns the error,
    /// rather than go on exporting from a read model that no longer changes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{SERVICE_NAME} starting");
        let Self {
            listener,
            router,
            pool,
            kafka,
            producer,
            jobs,
            export,
            dead_letters,
            config,
        } = self;
        // HTTP stops first, so that everything requests recorded in the outbox until then is
        // there before the relay's last pass; what the relay leaves is published after the next
        // start.
        let stop_http = shutdown.child_token();
        let stop_background = CancellationToken::new();
        let mut background = Background::new(stop_http.clone());

        // Provisions orders.orders.v1 as the contract allows, so that report-exporter may start
        // before orders ever ran.
        let projection = Projector::new(
            pool.clone(),
            &kafka,
            &config.consumer_group_prefix,
            ORDERS_TOPIC.spec(),
            OrdersView,
        )
        .dead_letters(&dead_letters)
        .start(stop_background.clone())
        .await
        .context("Failed to start the orders_view projection")?;
        background.spawn("orders_view projection", projection.wait());
        // Every replica runs steps of every export: the steps spread over them by partition.
        let runner = JobRunner::new(
            pool.clone(),
            &kafka,
            format!("{}.iterations", config.consumer_group_prefix),
            iterator::iterations_topic_named(&config.iterations_topic),
        )
        .register(export.clone())
        .dead_letters(&dead_letters)
        .start(stop_background.clone())
        .await
        .context("Failed to start the export runner")?;
        background.spawn("export runner", runner.wait());
        // Provisions the service's task queue (main, retry and dead-letter topics).
        let tasks_worker = workers::worker(
            pool.clone(),
            &kafka,
            &config.consumer_group_prefix,
            &config.tasks_topic,
            jobs,
        )
        .register::<PurgeExpiredRecords, _>(
            PurgeRecords {
                pool: pool.clone(),
                export_dir: config.export_dir.clone(),
                period: config.retention.period,
                idempotency_ttl: config.idempotency_ttl,
            },
            TaskOptions::default(),
        )
        .dead_letters(&dead_letters)
        .start(stop_background.clone())
        .await
        .with_context(|| format!("Failed to start the worker of {}", config.tasks_topic))?;
        background.spawn("task worker", tasks_worker.wait());
        background.spawn(
            "task scheduler",
            Scheduler::new(pool.clone()).run(stop_background.clone()),
        );
        background.spawn(
            "outbox relay",
            OutboxRelay::new(pool.clone(), producer.clone()).run(stop_background.clone()),
        );

        let served = platform::http::serve(listener, router, stop_http).await;

        stop_background.cancel();
        let stopped = background.join().await;
        let flushed = producer.flush(config.common.shutdown_timeout).await;
        pool.close().await;
        tracing::info!("{SERVICE_NAME} stopped");

        served?;
        stopped?;
        flushed
    }
}

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

use anyhow::Context as _;
use dead_letters::DeadLetterStore;
use idempotency::IdempotencyKeys;
use integration_events::Projector;
use kafka::{BrokerCheck, KafkaConfig, Producer};
use outbox::OutboxRelay;
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use platform::shutdown::Background;
use sqlx::PgPool;
use task_queue::{RetryLevels, TaskQueue};
use task_scheduler::{Scheduler, Schedules};
use tokio::net::TcpListener;
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

/// The realm of the admin endpoints' `WWW-Authenticate: Bearer` challenge.
const ADMIN_REALM: &str = "orders-admin";

/// The service, assembled by [`Application::build`] and run by
/// [`Application::run_until_stopped`].
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pool: PgPool,
    kafka: KafkaConfig,
    producer: Producer,
    dead_letters: DeadLetterStore,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// read models' revision records, the outbox, the task queue's execution records and the
    /// task scheduler's tables) and to the broker, provisions `orders.orders.v1` and
    /// notifications' `notifications.tasks.v1`, stores the `purge-expired-records` recurring
    /// schedule (`RETENTION_*`), and binds the HTTP port. Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        integration_events::migrate(&pool).await?;
        outbox::migrate(&pool).await?;
        task_queue::migrate(&pool).await?;
        task_scheduler::migrate(&pool).await?;
        dead_letters::migrate(&pool).await?;
        idempotency::migrate(&pool).await?;
        let dead_letters = DeadLetterStore::new(pool.clone());
        task_scheduler::upsert_retention_schedule(
            &Schedules::new(pool.clone()),
            &config.tasks_topic,
            &config.retention.cron,
        )
        .await?;

        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        producer
            .ensure_topics(&[ORDERS_TOPIC.spec()])
            .await
            .with_context(|| format!("Failed to provision {}", ORDERS_TOPIC.name()))?;
        // notifications provisions its queue too, with the retry and dead-letter topics that
        // only it uses. orders provisions the main topic, the one it publishes to, so that
        // placing orders does not depend on notifications having started once; the settings
        // come from the task queue, the same on both sides.
        let tasks_topic =
            task_queue::queue_topics(NOTIFICATIONS_TASKS_TOPIC, &RetryLevels::default())
                .into_iter()
                .filter(|spec| spec.name == NOTIFICATIONS_TASKS_TOPIC)
                .collect::<Vec<_>>();
        producer
            .ensure_topics(&tasks_topic)
            .await
            .with_context(|| format!("Failed to provision {NOTIFICATIONS_TASKS_TOPIC}"))?;

        let state = AppState {
            pool: pool.clone(),
            follow_ups: FollowUps {
                notifications: TaskQueue::new(NOTIFICATIONS_TASKS_TOPIC, producer.clone()),
                orders_tasks_topic: config.tasks_topic.clone(),
                idempotency: IdempotencyKeys::new("POST /orders", config.idempotency_ttl),
                payment_timeout: config.payment_timeout,
            },
        };
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            body_limit: order::BODY_LIMIT,
        };
        // The schedules (`/admin/schedules`), the events the projection set aside
        // (`/admin/dead-letters`) and the outbox rows the broker refused (`/admin/outbox/parked`),
        // behind the bearer token.
        let api =
            platform::http::admin::mount(routes::router(state), &config.admin, ADMIN_REALM, || {
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

    /// Serves HTTP, projects `catalog-cache.products.v1` into `catalog_products`, works off
    /// orders' task queue (`CancelUnpaidOrder`, `PurgeExpiredRecords`), fires the due schedules and relays the outbox to
    /// Kafka until `shutdown` is cancelled. Then, in this order: finishes in-flight requests,
    /// stops the projection, the worker, the scheduler and the relay (each finishes the work in
    /// hand), flushes the producer and closes the pool.
    ///
    /// These background tasks only stop at shutdown: no message stops them (one that cannot be
    /// handled is set aside in `/admin/dead-letters`, and a database outage is waited out). If
    /// one stops all the same (it could not be started again after losing the broker, say),
    /// the service shuts down the same way and returns the error, rather than go on serving
    /// orders from a read model that no longer changes, or orders whose deadlines nobody
    /// enforces.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "{SERVICE_NAME} starting");
        let Self {
            listener,
            router,
            pool,
            kafka,
            producer,
            dead_letters,
            config,
        } = self;
        // HTTP stops first, so that every order accepted until then is in the outbox before
        // the relay's last pass; what the relay leaves is published after the next start.
        let stop_http = shutdown.child_token();
        let stop_background = CancellationToken::new();
        let mut background = Background::new(stop_http.clone());

        let projection = Projector::new(
            pool.clone(),
            &kafka,
            &config.consumer_group_prefix,
            PRODUCTS_TOPIC.spec(),
            CatalogProducts,
        )
        .dead_letters(&dead_letters)
        .start(stop_background.clone())
        .await
        .context("Failed to start the catalog_products projection")?;
        background.spawn("catalog_products projection", projection.wait());
        // Provisions orders' task queue (main, retry and dead-letter topics) before it consumes.
        let tasks_worker = workers::worker(
            pool.clone(),
            &kafka,
            &config.consumer_group_prefix,
            &config.tasks_topic,
            TaskQueue::new(NOTIFICATIONS_TASKS_TOPIC, producer.clone()),
            retention::PurgeRecords {
                pool: pool.clone(),
                period: config.retention.period,
                idempotency_ttl: config.idempotency_ttl,
            },
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

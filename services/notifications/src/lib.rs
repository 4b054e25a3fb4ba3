#![doc = include_str!("../README.md")]

mod admin;
mod config;
mod digest;
mod error;
mod notification;
mod retention;
mod routes;
mod store;
mod tasks;
mod workers;

use std::net::SocketAddr;

use anyhow::Context as _;
use dead_letters::DeadLetterStore;
use kafka::{BrokerCheck, KafkaConfig, Producer};
use outbox::OutboxRelay;
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use platform::shutdown::Background;
use sqlx::PgPool;
use task_queue::{DeadLetters, TaskQueue};
use task_scheduler::{MisfirePolicy, OverlapPolicy, Scheduler, Schedules, TaskTemplate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{
    AdminConfig, AdminToken, Config, DEFAULT_TASKS_TOPIC, DigestConfig, ProviderConfig,
    RetentionConfig, SERVICE_NAME,
};
pub use retention::RETENTION_SCHEDULE;

use crate::digest::DIGEST_SCHEDULE;
use crate::notification::Provider;
use crate::tasks::SendDailyDigest;

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
    dead_letters: DeadLetterStore,
    config: Config,
}

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// task queue's `task_executions` and `dead_letters`, the outbox and the task scheduler's
    /// tables) and to the broker, stores the `daily-digest` (`DIGEST_*`) and
    /// `purge-expired-records` (`RETENTION_*`) recurring schedules, and binds the HTTP port.
    /// Fails fast, naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let pool =
            platform::db::connect_and_migrate(&config.common.database_url, &sqlx::migrate!())
                .await
                .context("Failed to prepare the database")?;
        task_queue::migrate(&pool).await?;
        outbox::migrate(&pool).await?;
        task_scheduler::migrate(&pool).await?;
        dead_letters::migrate(&pool).await?;
        let dead_letters = DeadLetterStore::new(pool.clone());
        let schedules = Schedules::new(pool.clone());
        upsert_daily_digest(&schedules, &config).await?;
        task_scheduler::upsert_retention_schedule(
            &schedules,
            &config.tasks_topic,
            &config.retention.cron,
        )
        .await?;

        let kafka = KafkaConfig::new(&config.common.kafka_bootstrap_servers, SERVICE_NAME);
        let producer = Producer::new(&kafka)?;
        let provider = Provider::new(&config.provider)?;

        let api = platform::http::admin::mount(
            routes::router(pool.clone()),
            &config.admin,
            admin::ADMIN_REALM,
            || {
                // Replays publish to the queue's main topic, which the worker provisions.
                let queue = TaskQueue::new(config.tasks_topic.clone(), producer.clone());
                admin::router(DeadLetters::new(pool.clone(), queue), schedules.clone())
                    .merge(dead_letters::admin::router(dead_letters.clone()))
                    .merge(outbox::admin::router(pool.clone()))
            },
        );
        let health = Health::new()
            .with(PostgresCheck(pool.clone()))
            .with(BrokerCheck::new(&producer));
        let settings = HttpSettings {
            request_timeout: config.common.request_timeout,
            body_limit: routes::BODY_LIMIT,
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

    /// Serves HTTP, works off the task queue, fires the due schedules and relays the outbox
    /// (where the scheduler records the tasks it fires) until `shutdown` is cancelled. Then, in
    /// this order: finishes in-flight requests, stops the worker (it finishes the tasks in hand
    /// within its drain timeout and commits what is done), the scheduler and the relay (each
    /// finishes its pass), flushes the producer and closes the pool.
    ///
    /// These background tasks only stop at shutdown: no message stops them (a task that fails
    /// for good goes to the dead-letter topic, `/admin/dlq`; a message the worker cannot deal
    /// with at all is set aside in `/admin/dead-letters`). If one stops all the same, the
    /// service shuts down the same way and returns the error, rather than go on answering
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
            dead_letters,
            config,
        } = self;
        let stop_http = shutdown.child_token();
        let stop_background = CancellationToken::new();
        let mut background = Background::new(stop_http.clone());

        // Provisions the queue's topics (main, retry levels, dead letters) before it consumes.
        let running = workers::worker(pool.clone(), &kafka, &config, provider)
            .dead_letters(&dead_letters)
            .start(stop_background.clone())
            .await
            .with_context(|| format!("Failed to start the worker of {}", config.tasks_topic))?;
        background.spawn("task worker", running.wait());

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

/// Stores (or updates) the `daily-digest` recurring schedule: a [`SendDailyDigest`] on the
/// service's own queue at `DIGEST_CRON` in `DIGEST_TIMEZONE`. Each digest covers the day before
/// the one its occurrence was due on, so after a downtime each missed day gets its digest, up
/// to the latest `DIGEST_CATCH_UP` of them (misfire policy `CatchUp`); the catch-up fires
/// follow each other before the relay publishes them, so overlapping fires are allowed.
async fn upsert_daily_digest(schedules: &Schedules, config: &Config) -> anyhow::Result<()> {
    let digest = SendDailyDigest {
        recipient: config.digest.recipient.clone(),
        timezone: config.digest.timezone.clone(),
    };
    schedules
        .upsert_recurring(
            DIGEST_SCHEDULE,
            &config.digest.cron,
            &config.digest.timezone,
            TaskTemplate::new(config.tasks_topic.clone(), &digest)?,
            MisfirePolicy::CatchUp {
                max: config.digest.catch_up,
            },
            OverlapPolicy::Allow,
        )
        .await
        .with_context(|| {
            format!(
                "Failed to store the {DIGEST_SCHEDULE} schedule (DIGEST_CRON `{}`, \
                 DIGEST_TIMEZONE `{}`)",
                config.digest.cron, config.digest.timezone
            )
        })
}

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
use service_host::{Pattern, Routes, Service, ServiceHost};
use task_queue::DeadLetters;
use task_scheduler::{MisfirePolicy, OverlapPolicy, Schedules, TaskTemplate};
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
pub struct Application(Service);

impl Application {
    /// Connects to the database (creating it and running the migrations: the service's own, the
    /// outbox, the task queue's `task_executions`, the task scheduler's tables and the dead
    /// letters) and to the broker, stores the `daily-digest` (`DIGEST_*`) and
    /// `purge-expired-records` (`RETENTION_*`) recurring schedules, and binds the HTTP port.
    /// Fails fast, naming what is wrong.
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
        .await?;
        let pool = host.pool().clone();
        let schedules = host.schedules();
        upsert_daily_digest(&schedules, &config).await?;
        task_scheduler::upsert_retention_schedule(
            &schedules,
            &config.tasks_topic,
            &config.retention.cron,
        )
        .await?;

        // Provisions the queue's topics (main, retry levels, dead letters) before it consumes.
        let provider = Provider::new(&config.provider)?;
        host.run(
            "task worker",
            workers::worker(pool.clone(), host.kafka(), &config, provider),
        );

        // Replays publish to the queue's main topic, which the worker provisions.
        let dead_letters =
            DeadLetters::new(pool.clone(), host.task_queue(config.tasks_topic.clone()));
        let routes = Routes {
            api: routes::router(pool),
            // The task queue's dead-letter topic (`/admin/dlq`); the host adds the schedules,
            // the set-aside messages and the parked outbox rows.
            admin: admin::router(dead_letters),
            body_limit: routes::BODY_LIMIT,
        };
        Ok(Self(
            host.bind(routes, &config.admin)
                .await
                .context("Failed to start notifications")?,
        ))
    }

    /// The bound address (the port is chosen by the OS when `HTTP_ADDR` ends in `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// Serves HTTP, works off the task queue, fires the due schedules and relays the outbox
    /// (where the scheduler records the tasks it fires) until `shutdown` is cancelled; then
    /// stops as every service does, within `SHUTDOWN_TIMEOUT`
    /// (`service_host::Service::run_until_stopped`): the worker finishes the tasks in hand and
    /// commits what is done, the relay publishes last.
    ///
    /// No message stops the worker (a task that fails for good goes to the dead-letter topic,
    /// `/admin/dlq`; a message it cannot deal with at all is set aside in
    /// `/admin/dead-letters`). If it stops all the same, the service stops and returns the
    /// error, rather than go on answering while no notification goes out.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.0.run_until_stopped(shutdown).await
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

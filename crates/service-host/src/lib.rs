#![doc = include_str!("../README.md")]

mod parts;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use dead_letters::DeadLetterStore;
use kafka::{BrokerCheck, KafkaConfig, Producer, TopicSpec};
use outbox::OutboxRelay;
use platform::config::{AdminConfig, CommonConfig};
use platform::health::{Health, PostgresCheck};
use platform::http::HttpSettings;
use platform::shutdown::{Background, by_deadline};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use task_queue::{RetryLevels, TaskQueue};
use task_scheduler::{Scheduler, Schedules};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use parts::{Part, Running};

/// The pattern crates whose tables a service needs, besides the outbox every service has. The
/// host runs their migrations after the service's own, in this order; each crate keeps its own
/// migrations table, so the order is for readability, not correctness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Read models' revision records (`integration_events`): the service projects events.
    IntegrationEvents,
    /// Task execution records (`task_queue`): the service runs a task worker.
    TaskQueue,
    /// Schedules (`task_scheduler`): the host also runs the scheduler and mounts
    /// `/admin/schedules`.
    TaskScheduler,
    /// Jobs and their steps (`iterator`): the service runs long jobs in chunks.
    Iterator,
    /// The messages its consumers set aside (`dead_letters`): needed by every service that
    /// consumes; the host mounts `/admin/dead-letters`.
    DeadLetters,
    /// Idempotency keys of POST requests (`idempotency`).
    Idempotency,
}

impl Pattern {
    async fn migrate(self, pool: &PgPool) -> anyhow::Result<()> {
        match self {
            Self::IntegrationEvents => integration_events::migrate(pool).await,
            Self::TaskQueue => task_queue::migrate(pool).await,
            Self::TaskScheduler => task_scheduler::migrate(pool).await,
            Self::Iterator => iterator::migrate(pool).await,
            Self::DeadLetters => dead_letters::migrate(pool).await,
            Self::Idempotency => idempotency::migrate(pool).await,
        }
    }
}

/// A service's HTTP surface as the service declares it; the host adds the rest (health,
/// metrics, the shared admin routes, the request layers).
#[derive(Debug)]
pub struct Routes {
    /// The service's own routes.
    pub api: Router,
    /// The service's own admin routes, if any (`Router::new()` otherwise): mounted with the
    /// host's behind `ADMIN_TOKEN`.
    pub admin: Router,
    /// The largest request body the service accepts, in bytes: what its largest valid request
    /// needs.
    pub body_limit: usize,
}

/// One service being assembled: connected, migrated, with its producer. A service's
/// `Application::build` declares what it has on it — topics, consumers, routes — and ends with
/// [`ServiceHost::bind`].
#[derive(Debug)]
pub struct ServiceHost {
    name: &'static str,
    common: CommonConfig,
    pool: PgPool,
    kafka: KafkaConfig,
    producer: Producer,
    patterns: Vec<Pattern>,
    dead_letters: DeadLetterStore,
    parts: Vec<(&'static str, PartBox)>,
}

/// A registered part, type-erased (the host runs projections, workers and runners alike).
struct PartBox(Box<dyn Part>);

impl std::fmt::Debug for PartBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Part")
    }
}

impl ServiceHost {
    /// Connects to the database in `common` (creating it if missing), runs the service's own
    /// `migrations`, then the outbox's and those of the `patterns` it uses, and creates the
    /// service's one producer (client id `name`). Fails fast, naming what is wrong.
    pub async fn connect(
        name: &'static str,
        common: &CommonConfig,
        migrations: &Migrator,
        patterns: &[Pattern],
    ) -> anyhow::Result<Self> {
        let pool = platform::db::connect_and_migrate(&common.database_url, migrations)
            .await
            .context("Failed to prepare the database")?;
        outbox::migrate(&pool).await?;
        for pattern in patterns {
            pattern.migrate(&pool).await?;
        }
        // `KAFKA_SESSION_TIMEOUT`: the default suits Apache Kafka; the local broker's group join
        // takes half of it, which is why the local scripts set 2 s (docs/local-kafka.md).
        let kafka = KafkaConfig::new(&common.kafka_bootstrap_servers, name).set(
            "session.timeout.ms",
            common.kafka_session_timeout.as_millis().to_string(),
        );
        let producer = Producer::new(&kafka)?;
        Ok(Self {
            name,
            common: common.clone(),
            dead_letters: DeadLetterStore::new(pool.clone()),
            pool,
            kafka,
            producer,
            patterns: patterns.to_vec(),
            parts: Vec::new(),
        })
    }

    /// The service's database, migrated.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the broker is, for the consumers the service builds.
    pub fn kafka(&self) -> &KafkaConfig {
        &self.kafka
    }

    /// The service's one producer (the relay's, the workers', the task queues').
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The service's schedules (needs [`Pattern::TaskScheduler`]).
    pub fn schedules(&self) -> Schedules {
        self.expect(Pattern::TaskScheduler);
        Schedules::new(self.pool.clone())
    }

    /// A task queue on `topic`, producing with the service's producer.
    pub fn task_queue(&self, topic: impl Into<String>) -> TaskQueue {
        TaskQueue::new(topic, self.producer.clone())
    }

    /// Creates the topics the service owns (the events it publishes), as their specs say.
    pub async fn provision(&self, topics: &[TopicSpec]) -> anyhow::Result<()> {
        let names = topics
            .iter()
            .map(|spec| spec.name.as_str())
            .collect::<Vec<_>>();
        self.producer
            .ensure_topics(topics)
            .await
            .with_context(|| format!("Failed to provision {}", names.join(", ")))
    }

    /// Creates the main topic of another service's task queue that this service sends tasks
    /// to, with the task queue's settings (the same on both sides), so that sending does not
    /// depend on the other service having started once. Its retry and dead-letter topics are
    /// the owner's: its worker provisions them.
    pub async fn provision_task_queue(&self, topic: &str) -> anyhow::Result<()> {
        let main = task_queue::queue_topics(topic, &RetryLevels::default())
            .into_iter()
            .filter(|spec| spec.name == topic)
            .collect::<Vec<_>>();
        self.provision(&main).await
    }

    /// Runs `part` (a projection, a task worker, a job runner) from start to shutdown, setting
    /// aside in `/admin/dead-letters` what it cannot handle (needs [`Pattern::DeadLetters`]);
    /// a task worker publishes its retries with the service's producer.
    /// Parts start in the order they are added, before HTTP serves; `what` names it in logs.
    pub fn run(&mut self, what: &'static str, part: impl Part) {
        self.expect(Pattern::DeadLetters);
        let part = part.attach(&self.dead_letters, &self.producer);
        self.parts.push((what, PartBox(Box::new(part))));
    }

    /// Builds the router (the service's `routes`, the health, metrics and shared admin routes,
    /// the request layers) and binds `HTTP_ADDR`. The shared admin routes, behind `ADMIN_TOKEN`
    /// unless `admin` disables them: `/admin/outbox/parked`, plus `/admin/dead-letters` and
    /// `/admin/schedules` where the service uses those patterns.
    pub async fn bind(self, routes: Routes, admin: &AdminConfig) -> anyhow::Result<Service> {
        let realm = format!("{}-admin", self.name);
        let api = platform::http::admin::mount(routes.api, admin, &realm, || {
            let mut shared = routes.admin.merge(outbox::admin::router(self.pool.clone()));
            if self.uses(Pattern::DeadLetters) {
                shared = shared.merge(dead_letters::admin::router(self.dead_letters.clone()));
            }
            if self.uses(Pattern::TaskScheduler) {
                shared = shared.merge(task_scheduler::admin::router(Schedules::new(
                    self.pool.clone(),
                )));
            }
            shared
        });
        let health = Health::new()
            .with(PostgresCheck(self.pool.clone()))
            .with(BrokerCheck::new(&self.producer));
        let settings = HttpSettings {
            body_limit: routes.body_limit,
            ..HttpSettings::from(&self.common)
        };
        let app = platform::http::app(api, health, &settings);
        let address = self.common.http_addr;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("Failed to bind HTTP_ADDR {address}"))?;
        Ok(Service {
            name: self.name,
            listener,
            router: app,
            scheduler: self.uses(Pattern::TaskScheduler),
            pool: self.pool,
            producer: self.producer,
            parts: self.parts,
            shutdown_timeout: self.common.shutdown_timeout,
        })
    }

    fn uses(&self, pattern: Pattern) -> bool {
        self.patterns.contains(&pattern)
    }

    /// A service that uses a pattern's tables without declaring it would fail at run time, on
    /// the first message; fail at start instead.
    fn expect(&self, pattern: Pattern) {
        assert!(
            self.uses(pattern),
            "{} uses {pattern:?} without declaring it in ServiceHost::connect",
            self.name
        );
    }
}

/// A service assembled by [`ServiceHost::bind`], bound and ready to run.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    producer: Producer,
    parts: Vec<(&'static str, PartBox)>,
    scheduler: bool,
    shutdown_timeout: Duration,
}

/// The least each late step of a shutdown gets when the deadline has already passed: flushing
/// the producer and closing the pool are quick when nothing is stuck, and the bound stays
/// `SHUTDOWN_TIMEOUT` plus these.
const LAST_STEP_GRACE: Duration = Duration::from_millis(500);

impl Service {
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

    /// Starts the parts (in the order they were added), the scheduler and the outbox relay,
    /// then serves HTTP until `shutdown` is cancelled (SIGTERM) or a part stops on its own.
    /// Then it stops, all within `SHUTDOWN_TIMEOUT`: HTTP first (in-flight requests finish), so
    /// that what requests recorded is in the outbox; then the parts and the scheduler (each
    /// finishes the work in hand); the relay last, so that it publishes what they recorded;
    /// then the producer is flushed and the pool closed. A step still running at the deadline
    /// is abandoned: what it had not committed is redone after the next start.
    ///
    /// A part that stops before shutdown (it could not be started again after losing the
    /// broker, say) stops the service the same way, and the error is returned: better than
    /// serving on with a part that no longer works.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let name = self.name;
        tracing::info!(addr = %self.local_addr(), "{name} starting");
        let stop_http = shutdown.child_token();
        let stop_parts = CancellationToken::new();
        let stop_relay = CancellationToken::new();
        let mut parts = Background::new(stop_http.clone());
        let mut relay = Background::new(stop_http.clone());

        relay.spawn(
            "outbox relay",
            OutboxRelay::new(self.pool.clone(), self.producer.clone()).run(stop_relay.clone()),
        );
        let started = start_parts(self.parts, &mut parts, &stop_parts).await;
        if started.is_ok() && self.scheduler {
            parts.spawn(
                "task scheduler",
                Scheduler::new(self.pool.clone()).run(stop_parts.clone()),
            );
        }
        let mut server = started.is_ok().then(|| {
            tokio::spawn(platform::http::serve(
                self.listener,
                self.router,
                stop_http.clone(),
            ))
        });
        let mut http_result = Ok(());
        if let Some(running) = server.as_mut() {
            tokio::select! {
                () = stop_http.cancelled() => {}
                // The server ends on its own only when it fails.
                ended = running => {
                    http_result = ended.context("The HTTP server panicked").and_then(|ended| ended);
                    server = None;
                }
            }
        }
        stop_http.cancel();

        let stopping = Instant::now();
        let deadline = stopping + self.shutdown_timeout;
        if let Some(mut running) = server {
            match by_deadline(
                deadline,
                "The HTTP server (in-flight requests)",
                &mut running,
            )
            .await
            {
                Some(ended) => {
                    http_result = ended
                        .context("The HTTP server panicked")
                        .and_then(|ended| ended);
                }
                None => running.abort(),
            }
        }
        stop_parts.cancel();
        let parts_stopped = parts.join_by(deadline).await;
        stop_relay.cancel();
        let relay_stopped = relay
            .join_by(deadline.max(Instant::now() + LAST_STEP_GRACE))
            .await;
        let flushed = self
            .producer
            .flush(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(LAST_STEP_GRACE),
            )
            .await;
        let late = Instant::now() + LAST_STEP_GRACE;
        by_deadline(
            deadline.max(late),
            "Closing the database pool",
            self.pool.close(),
        )
        .await;
        tracing::info!(took_ms = stopping.elapsed().as_millis(), "{name} stopped");

        started?;
        http_result?;
        parts_stopped?;
        relay_stopped?;
        flushed
    }
}

/// Starts each part and hands it to `parts`; on the first failure, stops there with the error
/// (the service then stops what did start).
async fn start_parts(
    registered: Vec<(&'static str, PartBox)>,
    parts: &mut Background,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    for (what, PartBox(part)) in registered {
        let running = part
            .start(stop.clone())
            .await
            .with_context(|| format!("Failed to start the {what}"))?;
        parts.spawn(what, running);
    }
    Ok(())
}

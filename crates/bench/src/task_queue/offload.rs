//! Part 2: `POST /orders` with the order confirmation offloaded to a task queue against sending
//! it inline, to a provider that takes 100 ms to answer.
//!
//! - **Offloaded**: the real `orders` service (the release build), which
//!   stores the order, its `OrderPlaced` event and its `SendOrderConfirmation` task in one
//!   transaction and answers; its outbox relay publishes the task to `notifications.tasks.v1`,
//!   where the real `notifications` service (`NOTIFY_PROVIDER=webhook`) delivers it to the
//!   bench's provider. Measured twice: with notifications delivering on the same cores while
//!   the orders are placed, and with notifications stopped (SIGSTOP) meanwhile, as when it runs
//!   on machines of its own.
//! - **Inline**: orders has no inline mode, so a small axum handler in the bench does the
//!   equivalent work synchronously: one `INSERT` of the order into a fresh database, then one
//!   call to the same provider, and answers 201 after both.
//!
//! The provider is an axum handler in the bench that waits 100 ms and answers 200. It records
//! when each order's confirmation reached it, so that the offloaded side can also show that
//! every confirmation was still delivered, and how long after the order was accepted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::Setup;
use crate::database;
use crate::order_client::{OrderClient, Requests};
use crate::progress::Progress;
use crate::report::{self, Sides, Unit};
use crate::services::{self, Binary, Server, ServiceId, Services};
use crate::stats::{self, LatencyHistogram, LatencySummary};

const CATALOG_PORT: u16 = 18_091;
const ORDERS_PORT: u16 = 18_092;
const NOTIFICATIONS_PORT: u16 = 18_093;
/// The ports of the services the part starts; the bench's own servers take free ports.
pub(super) const PORTS: [u16; 3] = [CATALOG_PORT, ORDERS_PORT, NOTIFICATIONS_PORT];

/// How long the provider takes to answer each call.
const PROVIDER_DELAY: Duration = Duration::from_millis(100);
/// Products created at catalog-cache before measuring.
const PRODUCTS: usize = 50;
/// Items per order.
const ITEMS: usize = 3;
/// Unmeasured orders per side before measuring: connections, caches, prepared statements (at
/// most `--samples`).
const WARM_UP: usize = 50;
/// The goal: the offloaded p99 this many times lower than the inline one.
const P99_GOAL: f64 = 10.0;
/// The goal for notifications: confirmations delivered per second to a provider that
/// answers in [`PROVIDER_DELAY`], measured on the backlog of the paused batch.
const DELIVERY_GOAL: f64 = 2_000.0;

/// How long orders may take to join its consumer group and project the seeded products.
const SEED_TIMEOUT: Duration = Duration::from_mins(2);
/// How long notifications may take to join its group, replay what is on the shared topic and
/// deliver the warm-up orders' confirmations.
const CATCH_UP_TIMEOUT: Duration = Duration::from_mins(3);
/// No provider call for this long: notifications has nothing left to deliver. Longer than a
/// consumer group join, as notifications' retry levels join one after the other.
const QUIET: Duration = Duration::from_secs(3);
/// How long the measured orders' confirmations may take to arrive after the last order.
const DELIVERY_TIMEOUT: Duration = Duration::from_mins(2);
/// The bench's own HTTP timeout; far above anything measured.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of notifications' webhook calls: well above [`PROVIDER_DELAY`].
const WEBHOOK_TIMEOUT: &str = "5s";

pub(super) async fn run(
    setup: &Setup,
    samples: usize,
    services: &mut Services,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("Failed to build the HTTP client")?;
    let provider = Provider::start(customer_email(setup)).await?;
    let inline = Inline::start(setup, &provider).await?;
    let (urls, ids) = start_services(setup, services, &http, &provider).await?;
    let bench = Bench::new(setup, http, urls, &provider).await?;
    bench.seed().await?;
    // Fewer for a smoke run's few samples.
    let warm_up_orders = WARM_UP.min(samples);

    // Offloaded first: its warm-up also waits until notifications is through whatever it
    // replays from the shared topic, so that the measurement does not include that work.
    let calls_before = bench.provider_calls();
    let warm_up = bench
        .orders_client
        .place_orders("warm-up (offloaded)", &bench.orders, 0, warm_up_orders)
        .await?;
    anyhow::ensure!(
        warm_up.succeeded == warm_up_orders,
        "warm-up orders to orders answered {}",
        warm_up.outcomes()
    );
    let caught_up = bench
        .wait_confirmations(&provider, &warm_up, calls_before, CATCH_UP_TIMEOUT)
        .await?;
    anyhow::ensure!(
        caught_up.delivered == caught_up.expected,
        "notifications delivered {} of the {} warm-up confirmations within {CATCH_UP_TIMEOUT:?}; \
         its log is {}/notifications.log",
        caught_up.delivered,
        caught_up.expected,
        setup.run.log_dir.display()
    );
    provider.wait_quiet().await?;

    // As deployed on one machine: notifications delivers the confirmations while orders are
    // placed, on the same cores.
    let calls_before = bench.provider_calls();
    let offloaded = bench
        .orders_client
        .place_orders("POST /orders (offloaded)", &bench.orders, 0, samples)
        .await?;
    let delivery = bench
        .wait_confirmations(&provider, &offloaded, calls_before, DELIVERY_TIMEOUT)
        .await?;
    provider.wait_quiet().await?;

    // What orders alone costs, as when notifications runs on machines of its own: notifications
    // is stopped (SIGSTOP) while the orders are placed, and delivers their confirmations after.
    services.freeze(ids.notifications)?;
    let calls_before = bench.provider_calls();
    let paused = bench
        .orders_client
        .place_orders("POST /orders (offl., paused)", &bench.orders, 0, samples)
        .await;
    services.thaw(ids.notifications)?;
    let paused = paused?;
    let paused_delivery = bench
        .wait_confirmations(&provider, &paused, calls_before, DELIVERY_TIMEOUT)
        .await?;

    let inline_requests = bench
        .orders_client
        .place_orders(
            "POST /orders (inline)",
            &inline.url,
            warm_up_orders,
            samples,
        )
        .await?;
    let results = Results {
        offloaded,
        paused,
        inline: inline_requests,
        delivery,
        paused_delivery,
        provider_calls: provider.log.calls.load(Ordering::Relaxed),
        foreign_calls: provider.log.foreign.load(Ordering::Relaxed),
    };
    report::print(
        "task-queue (2/2): POST /orders, confirmation offloaded to the task queue vs sent inline",
        &notes(setup, samples, &results),
        &comparisons(&results),
    );
    Ok(())
}

/// What was measured.
#[derive(Debug)]
struct Results {
    /// Orders placed while notifications delivers the confirmations.
    offloaded: Requests,
    /// Orders placed while notifications is stopped.
    paused: Requests,
    inline: Requests,
    /// The confirmations of `offloaded`.
    delivery: Delivery,
    /// The confirmations of `paused`, delivered after notifications resumed.
    paused_delivery: Delivery,
    /// Every call the provider got: inline confirmations, the run's offloaded ones, and what
    /// notifications replayed from the shared topic.
    provider_calls: usize,
    /// Of those, the replayed ones (another recipient).
    foreign_calls: usize,
}

/// The offloaded orders' confirmations at the provider.
#[derive(Debug, Default)]
struct Delivery {
    delivered: usize,
    expected: usize,
    /// From the order's 201 until its confirmation reached the provider.
    after_answer: LatencySummary,
    /// Confirmations per second at the provider, from the batch's first to its last.
    rate: f64,
    /// Confirmations of the batch's orders that arrived more than once.
    duplicates: usize,
    /// Provider calls from the batch's first order until its last confirmation that were not
    /// for the batch: what notifications still replayed from the shared topic.
    other_calls: usize,
}

/// The URLs of the started services.
struct Urls {
    catalog: String,
    orders: String,
}

/// The started services the part signals.
struct Ids {
    notifications: ServiceId,
}

async fn start_services(
    setup: &Setup,
    services: &mut Services,
    http: &reqwest::Client,
    provider: &Provider,
) -> anyhow::Result<(Urls, Ids)> {
    let databases = &setup.databases;
    let common = |port: u16, database: &str| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(services::service_env(
            port,
            setup.database_url(database)?,
            &setup.run.bootstrap,
            &setup.run.admin_token,
        ))
    };
    let catalog = services.spawn(
        Binary::CatalogCache,
        "catalog-cache",
        CATALOG_PORT,
        common(CATALOG_PORT, &databases.catalog)?,
    )?;
    let mut orders_env = common(ORDERS_PORT, &databases.orders)?;
    orders_env.push((
        "KAFKA_CONSUMER_GROUP_PREFIX",
        format!("asyncron-bench-{}-orders", setup.run.id),
    ));
    let orders = services.spawn(Binary::Orders, "orders", ORDERS_PORT, orders_env)?;
    let mut notifications_env = common(NOTIFICATIONS_PORT, &databases.notifications)?;
    notifications_env.extend([
        (
            "KAFKA_CONSUMER_GROUP_PREFIX",
            format!("asyncron-bench-{}-notifications", setup.run.id),
        ),
        ("NOTIFY_PROVIDER", "webhook".to_owned()),
        ("NOTIFY_WEBHOOK_URL", provider.url.clone()),
        ("NOTIFY_WEBHOOK_TIMEOUT", WEBHOOK_TIMEOUT.to_owned()),
    ]);
    let notifications = services.spawn(
        Binary::Notifications,
        "notifications",
        NOTIFICATIONS_PORT,
        notifications_env,
    )?;

    let progress = Progress::start("start services", 3);
    let ready = progress.counter();
    for id in [catalog, orders, notifications] {
        services::wait_ready(services, id, http).await?;
        ready.fetch_add(1, Ordering::Relaxed);
    }
    progress.finish();
    Ok((
        Urls {
            catalog: services.get(catalog).url(),
            orders: services.get(orders).url(),
        },
        Ids { notifications },
    ))
}

/// The notification provider: takes [`PROVIDER_DELAY`] to answer each call.
struct Provider {
    url: String,
    log: Arc<ProviderLog>,
    _server: Server,
}

#[derive(Debug)]
struct ProviderLog {
    /// The run's customer e-mail: notifications to it are the run's, and take
    /// [`PROVIDER_DELAY`].
    recipient: String,
    calls: AtomicUsize,
    /// Calls for other recipients: what notifications replays from the shared topic (earlier
    /// runs, tests). Answered at once, so that the replay does not take minutes; they are no
    /// part of any measurement.
    foreign: AtomicUsize,
    /// When each order's first confirmation arrived, and how many arrived.
    received: Mutex<HashMap<Uuid, (Instant, usize)>>,
    last_call: Mutex<Instant>,
}

/// The part of a notification the provider reads: both notifications' webhook and the inline
/// handler send the recipient and the order id.
#[derive(Debug, Deserialize)]
struct ProviderCall {
    recipient: Option<String>,
    order_id: Option<Uuid>,
}

impl Provider {
    async fn start(recipient: String) -> anyhow::Result<Self> {
        let log = Arc::new(ProviderLog {
            recipient,
            calls: AtomicUsize::new(0),
            foreign: AtomicUsize::new(0),
            received: Mutex::new(HashMap::new()),
            last_call: Mutex::new(Instant::now()),
        });
        let router = Router::new()
            .route("/notifications", post(provider_call))
            .with_state(log.clone());
        let server = Server::start(router, "/notifications").await?;
        Ok(Self {
            url: server.url.clone(),
            log,
            _server: server,
        })
    }

    /// When the provider got the confirmation of `order_id`, if it did.
    fn received(&self, order_id: &Uuid) -> Option<Instant> {
        self.log
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(order_id)
            .map(|(first, _)| *first)
    }

    /// Confirmations of these orders beyond the first of each.
    fn duplicates<'a>(&self, order_ids: impl Iterator<Item = &'a Uuid>) -> usize {
        let received = self
            .log
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        order_ids
            .filter_map(|order_id| received.get(order_id))
            .map(|(_, count)| count - 1)
            .sum()
    }

    /// Waits until no call arrived for [`QUIET`]: notifications delivered everything it had.
    async fn wait_quiet(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let last = *self
                .log
                .last_call
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() >= QUIET {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < CATCH_UP_TIMEOUT,
                "the provider kept getting calls for {CATCH_UP_TIMEOUT:?}: is something else \
                 enqueueing on notifications.tasks.v1?"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn provider_call(
    State(log): State<Arc<ProviderLog>>,
    Json(call): Json<ProviderCall>,
) -> StatusCode {
    let now = Instant::now();
    log.calls.fetch_add(1, Ordering::Relaxed);
    *log.last_call.lock().unwrap_or_else(PoisonError::into_inner) = now;
    if call.recipient.as_deref() != Some(log.recipient.as_str()) {
        log.foreign.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    }
    if let Some(order_id) = call.order_id {
        log.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(order_id)
            .or_insert((now, 0))
            .1 += 1;
    }
    tokio::time::sleep(PROVIDER_DELAY).await;
    StatusCode::OK
}

/// The inline baseline: `POST /orders` that stores the order and calls the provider before it
/// answers.
struct Inline {
    url: String,
    _server: Server,
}

#[derive(Clone)]
struct InlineState {
    pool: PgPool,
    http: reqwest::Client,
    provider_url: String,
}

/// The request body, as orders reads it.
#[derive(Debug, Deserialize)]
struct PlaceOrder {
    customer_id: String,
    customer_email: String,
    items: serde_json::Value,
}

impl Inline {
    async fn start(setup: &Setup, provider: &Provider) -> anyhow::Result<Self> {
        let pool = database::create(&setup.run.database_server, &setup.databases.inline, 4).await?;
        sqlx::query(
            "CREATE TABLE inline_orders (
                order_id       UUID        PRIMARY KEY,
                customer_id    TEXT        NOT NULL,
                customer_email TEXT        NOT NULL,
                items          JSONB       NOT NULL,
                created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .execute(&pool)
        .await
        .context("Failed to create the inline baseline's table")?;
        // As notifications' webhook client: a timeout well above the provider's delay.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("Failed to build the inline baseline's HTTP client")?;
        let state = InlineState {
            pool,
            http,
            provider_url: provider.url.clone(),
        };
        let router = Router::new()
            .route("/orders", post(inline_place_order))
            .with_state(state);
        let server = Server::start(router, "").await?;
        Ok(Self {
            url: server.url.clone(),
            _server: server,
        })
    }
}

async fn inline_place_order(
    State(state): State<InlineState>,
    Json(order): Json<PlaceOrder>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let order_id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO inline_orders (order_id, customer_id, customer_email, items)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(order_id)
    .bind(&order.customer_id)
    .bind(&order.customer_email)
    .bind(sqlx::types::Json(&order.items))
    .execute(&state.pool)
    .await;
    if let Err(error) = inserted {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": error.to_string() })),
        );
    }
    let sent = state
        .http
        .post(&state.provider_url)
        .json(&json!({
            "task_id": order_id,
            "kind": "order_confirmation",
            "recipient": order.customer_email,
            "subject": format!("Your order {order_id}"),
            "body": "Thank you for your order.",
            "order_id": order_id,
        }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    match sent {
        Ok(_) => (
            StatusCode::CREATED,
            axum::Json(json!({ "order_id": order_id })),
        ),
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({ "error": error.to_string() })),
        ),
    }
}

/// The run's customer address: the provider tells the run's notifications by it.
fn customer_email(setup: &Setup) -> String {
    format!("bench-{}@example.com", setup.run.id)
}

/// What the bench talks to.
struct Bench {
    http: reqwest::Client,
    catalog: String,
    orders: String,
    /// orders' database, to see that its read model has the seeded products.
    orders_db: PgPool,
    /// `POST /orders` to orders and to the inline baseline.
    orders_client: OrderClient,
    product_ids: Vec<String>,
    /// The provider's record, to count its calls.
    provider: Arc<ProviderLog>,
}

impl Bench {
    async fn new(
        setup: &Setup,
        http: reqwest::Client,
        urls: Urls,
        provider: &Provider,
    ) -> anyhow::Result<Self> {
        let product_ids: Vec<String> = (0..PRODUCTS)
            .map(|i| format!("bench-{}-p{i:03}", setup.run.id))
            .collect();
        let orders_client = OrderClient::new(
            http.clone(),
            format!("asyncron-bench-{}", setup.run.id),
            customer_email(setup),
            product_ids.clone(),
            ITEMS,
        );
        Ok(Self {
            provider: provider.log.clone(),
            http,
            catalog: urls.catalog,
            orders: urls.orders,
            orders_db: database::pool(&setup.run.database_server, &setup.databases.orders, 2)
                .await?,
            orders_client,
            product_ids,
        })
    }

    fn provider_calls(&self) -> usize {
        self.provider.calls.load(Ordering::Relaxed)
    }

    /// Creates the products at catalog-cache and waits until orders' read model has them.
    async fn seed(&self) -> anyhow::Result<()> {
        services::seed_products(
            &self.http,
            &self.catalog,
            &self.product_ids,
            &self.orders_db,
            SEED_TIMEOUT,
        )
        .await
    }

    /// Waits until the provider got the confirmation of every order in `requests`, for at most
    /// `timeout` (not an error: the row says how many arrived).
    async fn wait_confirmations(
        &self,
        provider: &Provider,
        requests: &Requests,
        calls_before: usize,
        timeout: Duration,
    ) -> anyhow::Result<Delivery> {
        let expected = requests.placed.len();
        let progress = Progress::start("confirmations delivered", expected);
        progress.waiting_for("notifications catching up");
        let delivered = progress.counter();
        let started = Instant::now();
        let mut pending: Vec<&(Uuid, Instant)> = requests.placed.iter().collect();
        let mut after_answer = LatencyHistogram::default();
        let mut first_last: Option<(Instant, Instant)> = None;
        while !pending.is_empty() && started.elapsed() < timeout {
            pending.retain(|(order_id, answered)| match provider.received(order_id) {
                Some(received) => {
                    after_answer.record(received.saturating_duration_since(*answered));
                    first_last = Some(match first_last {
                        Some((first, last)) => (first.min(received), last.max(received)),
                        None => (received, received),
                    });
                    false
                }
                None => true,
            });
            delivered.store(expected - pending.len(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        progress.finish();
        let delivered = expected - pending.len();
        let calls = provider.log.calls.load(Ordering::Relaxed);
        let duplicates = provider.duplicates(requests.placed.iter().map(|(order_id, _)| order_id));
        Ok(Delivery {
            delivered,
            expected,
            after_answer: after_answer.summary(),
            rate: first_last.map_or(0.0, |(first, last)| {
                stats::per_second(delivered.saturating_sub(1), last.duration_since(first))
            }),
            duplicates,
            other_calls: calls.saturating_sub(calls_before + delivered + duplicates),
        })
    }
}

fn comparisons(results: &Results) -> Vec<Comparison> {
    let millis = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let inline = &results.inline.latency;
    let latency_rows = |name: &'static [&'static str; 3], offloaded: &LatencySummary| {
        [
            (name[0], offloaded.p50, inline.p50),
            (name[1], offloaded.p99, inline.p99),
            (name[2], offloaded.max, inline.max),
        ]
        .map(|(measurement, offloaded, inline)| {
            Comparison::lower(
                measurement,
                Unit::Millis,
                [millis(offloaded)],
                Some(millis(inline)),
            )
        })
    };
    let percent = report::percent;
    let (offloaded, paused) = (&results.offloaded, &results.paused);
    let (delivered, paused_delivered) = (&results.delivery, &results.paused_delivery);
    let delivery = &results.delivery.after_answer;
    let mut rows = Vec::new();
    rows.extend(latency_rows(
        &["POST /orders p50", "POST /orders p99", "POST /orders max"],
        &results.offloaded.latency,
    ));
    rows.extend(latency_rows(
        &[
            "POST /orders p50, notifications paused",
            "POST /orders p99, notifications paused",
            "POST /orders max, notifications paused",
        ],
        &results.paused.latency,
    ));
    rows.extend([
        Comparison::higher(
            "POST /orders success",
            Unit::Percent,
            [percent(
                offloaded.succeeded + paused.succeeded,
                offloaded.total + paused.total,
            )],
            Some(results.inline.success_percent()),
        ),
        Comparison::higher(
            "confirmations at the provider",
            Unit::Percent,
            [percent(
                delivered.delivered + paused_delivered.delivered,
                delivered.expected + paused_delivered.expected,
            )],
            Some(results.inline.success_percent()),
        ),
        Comparison::lower(
            "confirmation at the provider after the 201, p50",
            Unit::Millis,
            [millis(delivery.p50)],
            None,
        ),
        Comparison::lower(
            "confirmation at the provider after the 201, p99",
            Unit::Millis,
            [millis(delivery.p99)],
            None,
        ),
    ]);
    rows
}

fn notes(setup: &Setup, samples: usize, results: &Results) -> Vec<String> {
    let warm_up = WARM_UP.min(samples);
    let n = |count: usize| report::count(count as f64);
    let databases = &setup.databases;
    let inline = &results.inline.latency;
    let factor =
        |offloaded: &LatencySummary| inline.p99.as_secs_f64() / offloaded.p99.as_secs_f64();
    let goal = |offloaded: &LatencySummary| {
        let factor = factor(offloaded);
        let verdict = if factor >= P99_GOAL { "met" } else { "NOT met" };
        format!("{verdict} ({factor:.1} x)")
    };
    vec![
        setup.run.describe(),
        format!(
            "provider: an axum handler in the bench that waits {} ms and answers 200 for the \
             run's notifications (recipient {}); it got {} calls, {} of them notifications of \
             earlier runs and tests that notifications replayed from the shared topic, which it \
             answered at once",
            PROVIDER_DELAY.as_millis(),
            customer_email(setup),
            n(results.provider_calls),
            n(results.foreign_calls),
        ),
        format!(
            "offloaded: the real orders service (:{ORDERS_PORT}, db {}, \
             {PRODUCTS} products seeded through catalog-cache :{CATALOG_PORT}): validation, \
             pricing from its read model, then the order, its items, its OrderPlaced event and \
             its SendOrderConfirmation task in one transaction (both through the outbox); it \
             answers without waiting for the confirmation. notifications (:{NOTIFICATIONS_PORT}, \
             db {}, NOTIFY_PROVIDER=webhook) delivers it to the provider afterwards, on the same \
             2 cores while the next orders are measured; in the `notifications paused` rows it \
             is stopped (SIGSTOP) while orders are placed and delivers after SIGCONT, as when it \
             runs on machines of its own",
            databases.orders, databases.notifications,
        ),
        format!(
            "inline: orders has no inline mode, so an axum handler in the bench (db {}) does the \
             equivalent work synchronously: parse the same body, one INSERT of the order, one \
             POST of the confirmation to the provider, and 201 after both. It does less database \
             work than orders (no pricing, items, event or task), which favours the inline side",
            databases.inline,
        ),
        format!(
            "{} POST /orders per side and variant ({ITEMS} items), one at a time (concurrency 1) \
             from one HTTP client; inline after {warm_up} unmeasured, offloaded after {warm_up} \
             unmeasured whose confirmations the bench waited for, and each offloaded batch once \
             the provider had been quiet for {} ms. Outcomes: offloaded {}; paused {}; inline {}",
            n(samples),
            QUIET.as_millis(),
            results.offloaded.outcomes(),
            results.paused.outcomes(),
            results.inline.outcomes(),
        ),
        format!(
            "confirmations of the measured offloaded orders at the provider, each within {} s of \
             the batch's last order: {} of {} while notifications ran ({} per second, {} \
             duplicates, {} replayed calls meanwhile), {} of {} after it resumed ({} per second, \
             {} duplicates, {} replayed calls); `after the 201` is for the first batch: from the \
             order's 201 until the provider got its confirmation (it answers {} ms later)",
            DELIVERY_TIMEOUT.as_secs(),
            n(results.delivery.delivered),
            n(results.delivery.expected),
            report::count(results.delivery.rate),
            n(results.delivery.duplicates),
            n(results.delivery.other_calls),
            n(results.paused_delivery.delivered),
            n(results.paused_delivery.expected),
            report::count(results.paused_delivery.rate),
            n(results.paused_delivery.duplicates),
            n(results.paused_delivery.other_calls),
            PROVIDER_DELAY.as_millis(),
        ),
        format!(
            "goal: offloaded p99 >= {P99_GOAL:.0} x lower than inline: with notifications \
             delivering on the same cores {}; with notifications paused {}",
            goal(&results.offloaded.latency),
            goal(&results.paused.latency),
        ),
        format!(
            "goal: notifications delivers >= {} confirmations per second to a provider that \
             answers in {} ms (the paused batch's backlog, first to last delivery): {} ({} per \
             second)",
            report::count(DELIVERY_GOAL),
            PROVIDER_DELAY.as_millis(),
            if results.paused_delivery.rate >= DELIVERY_GOAL {
                "met"
            } else {
                "NOT met"
            },
            report::count(results.paused_delivery.rate),
        ),
        "ratio = offloaded / inline; `better` says which direction is an improvement".to_owned(),
    ]
}

/// POST /orders with the confirmation offloaded to notifications, against sent inline.
#[derive(Debug)]
struct VsInline;

impl Sides for VsInline {
    const OURS: &'static [&'static str] = &["offloaded"];
    const BASELINE: &'static str = "inline";
    const RATIOS: &'static [&'static str] = &["ratio"];
}

type Comparison = report::Comparison<VsInline>;

//! What the `integration-events` scenario shows: the results, the table and its notes.

use std::time::Duration;

use super::{
    CATALOG_PORT, ORDERS_PORT, POLL_INTERVAL, PRODUCTS, PROPAGATION_GOAL, Plan,
    SYNC_CATALOG_TIMEOUT, Setup,
};
use crate::order_client::Requests;
use crate::report::{self, Sides, Unit};
use crate::stats::LatencySummary;

/// Everything the table and the notes show.
#[derive(Debug)]
pub(super) struct Results {
    pub(super) lookup_local: LatencySummary,
    pub(super) lookup_concurrent: LatencySummary,
    pub(super) lookup_sequential: LatencySummary,
    pub(super) orders: Pair<Requests>,
    pub(super) frozen: Pair<Requests>,
    /// From sending the PUT until orders' read model holds the new revision.
    pub(super) visible: LatencySummary,
    /// The PUT alone, for comparison.
    pub(super) put: LatencySummary,
    /// From SIGCONT until catalog-cache answered `/health/ready` again.
    pub(super) thawed_ready: Duration,
    pub(super) after_thaw: Requests,
}

/// A measurement of both sides: orders with its read model, and the baseline.
#[derive(Debug)]
pub(super) struct Pair<T> {
    pub(super) local: T,
    pub(super) sync: T,
}

pub(super) fn comparisons(results: &Results) -> Vec<Comparison> {
    let millis = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let latency_rows = |name: &str, local: &LatencySummary, sync: Option<&LatencySummary>| {
        [
            ("p50", local.p50, sync.map(|s| s.p50)),
            ("p99", local.p99, sync.map(|s| s.p99)),
        ]
        .map(|(quantile, local, sync)| {
            Comparison::lower(
                format!("{name} {quantile}"),
                Unit::Millis,
                [millis(local)],
                sync.map(millis),
            )
        })
    };
    let success = |name: &str, requests: &Pair<Requests>| {
        Comparison::higher(
            format!("{name} success"),
            Unit::Percent,
            [requests.local.success_percent()],
            Some(requests.sync.success_percent()),
        )
    };
    let mut rows = Vec::new();
    rows.extend(latency_rows(
        "price lookup, 3 items (sync: concurrent GETs)",
        &results.lookup_local,
        Some(&results.lookup_concurrent),
    ));
    rows.extend(latency_rows(
        "price lookup, 3 items (sync: sequential GETs)",
        &results.lookup_local,
        Some(&results.lookup_sequential),
    ));
    let orders = "POST /orders, catalog-cache up,";
    rows.extend(latency_rows(
        orders,
        &results.orders.local.latency,
        Some(&results.orders.sync.latency),
    ));
    rows.push(success(orders, &results.orders));
    let frozen = "POST /orders, catalog-cache frozen,";
    rows.extend(latency_rows(
        frozen,
        &results.frozen.local.latency,
        Some(&results.frozen.sync.latency),
    ));
    rows.push(success(frozen, &results.frozen));
    rows.extend(latency_rows(
        "catalog change visible in orders",
        &results.visible,
        None,
    ));
    rows
}

pub(super) fn notes(setup: &Setup, plan: &Plan, results: &Results) -> Vec<String> {
    let millis = |duration: Duration| format!("{:.2} ms", duration.as_secs_f64() * 1_000.0);
    let n = |count: usize| report::count(count as f64);
    let databases = &setup.databases;
    let goal = if results.visible.p99 <= PROPAGATION_GOAL {
        "met"
    } else {
        "NOT met"
    };
    vec![
        setup.run.describe(),
        format!(
            "services started by the bench (RUST_LOG=warn): catalog-cache :{CATALOG_PORT} \
             (db {}); orders :{ORDERS_PORT} (db {}, its read model). Baseline (sync call): the \
             bench's own POST /orders (db {}), which places orders as orders does (order, items, \
             OrderPlaced event and confirmation task in the outbox, two schedules, one \
             transaction) but prices them with a GET /products/{{id}} to catalog-cache per \
             product, concurrently, each bounded by {} ms",
            databases.catalog,
            databases.orders,
            databases.baseline,
            SYNC_CATALOG_TIMEOUT.as_millis()
        ),
        format!(
            "price lookup: {} per side, 3 of {PRODUCTS} products each, one at a time after {} \
             unmeasured; read model = one `product_id = ANY($1)` query on orders' database; sync \
             = 3 GET /products/{{id}} to catalog-cache with one HTTP client, concurrently as \
             the baseline does them, or one after the other",
            n(plan.lookups),
            plan.warm_up
        ),
        format!(
            "POST /orders (3 items): one client, one request at a time (concurrency 1); catalog-cache \
             up: {} per side after {} unmeasured; latencies include failed requests",
            n(plan.orders),
            plan.warm_up
        ),
        format!(
            "catalog-cache frozen (SIGSTOP): {} orders to orders ({}), {} to the baseline ({}); \
             after SIGCONT catalog-cache was ready again in {} and baseline orders answered {}",
            n(plan.frozen_local),
            results.frozen.local.outcomes(),
            n(plan.frozen_sync),
            results.frozen.sync.outcomes(),
            millis(results.thawed_ready),
            results.after_thaw.outcomes(),
        ),
        format!(
            "catalog change visible: {} price changes (PUT /products/{{id}}, one at a time), from \
             sending the PUT until orders' read model holds the new revision, read every \
             ~{} ms; the PUT alone: p50 {}, p99 {}; goal p99 <= {} ms: {goal}",
            n(plan.changes),
            POLL_INTERVAL.as_millis(),
            millis(results.put.p50),
            millis(results.put.p99),
            PROPAGATION_GOAL.as_millis(),
        ),
        "ratio = read model / sync call; `better` says which direction is an improvement"
            .to_owned(),
    ]
}

/// orders' read model against the bench's synchronous call to catalog-cache.
#[derive(Debug)]
pub(super) struct VsSyncCall;

impl Sides for VsSyncCall {
    const OURS: &'static [&'static str] = &["read model"];
    const BASELINE: &'static str = "sync call";
    const RATIOS: &'static [&'static str] = &["ratio"];
}

pub(super) type Comparison = report::Comparison<VsSyncCall>;

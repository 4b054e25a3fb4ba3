//! What the `integration-events` scenario shows: the results, the table and its notes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    CATALOG_PORT, ORDERS_PORT, POLL_INTERVAL, PRODUCTS, PROPAGATION_GOAL, Plan,
    SYNC_CATALOG_TIMEOUT, Setup,
};
use crate::database;
use crate::report::{self, Column, Row, Unit};
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

/// A batch of `POST /orders`: latency of every request (failed ones too) and what they answered.
#[derive(Debug, Default)]
pub(super) struct Requests {
    pub(super) latency: LatencySummary,
    pub(super) total: usize,
    pub(super) succeeded: usize,
    /// `201`, `503`, `transport error`, … and how often.
    pub(super) outcomes: BTreeMap<String, usize>,
}

impl Requests {
    pub(super) fn success_percent(&self) -> f64 {
        report::percent(self.succeeded, self.total)
    }

    pub(super) fn outcomes(&self) -> String {
        report::outcomes(&self.outcomes)
    }
}

pub(super) fn comparisons(results: &Results) -> Vec<Comparison> {
    let millis = |duration: Duration| duration.as_secs_f64() * 1_000.0;
    let latency_rows = |name: &str, local: &LatencySummary, sync: Option<&LatencySummary>| {
        [
            ("p50", local.p50, sync.map(|s| s.p50)),
            ("p99", local.p99, sync.map(|s| s.p99)),
        ]
        .map(|(quantile, local, sync)| Comparison {
            measurement: format!("{name} {quantile}"),
            unit: Unit::Millis,
            read_model: millis(local),
            sync_call: sync.map(millis),
            higher_is_better: false,
        })
    };
    let success = |name: &str, requests: &Pair<Requests>| Comparison {
        measurement: format!("{name} success"),
        unit: Unit::Percent,
        read_model: requests.local.success_percent(),
        sync_call: Some(requests.sync.success_percent()),
        higher_is_better: true,
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
        format!(
            "broker {}, PostgreSQL {}, run {}",
            setup.bootstrap,
            database::redact(&setup.database_server),
            setup.run_id
        ),
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

/// One row: the same measurement with the read model and with the synchronous call, when the
/// baseline has one.
#[derive(Debug)]
pub(super) struct Comparison {
    measurement: String,
    unit: Unit,
    read_model: f64,
    sync_call: Option<f64>,
    higher_is_better: bool,
}

impl Row for Comparison {
    const COLUMNS: &'static [Column] = &[
        Column::left("measurement"),
        Column::left("unit"),
        Column::right("read model"),
        Column::right("sync call"),
        Column::right("ratio"),
        Column::left("better"),
    ];

    fn cells(&self) -> Vec<String> {
        let (sync, ratio) = match self.sync_call {
            Some(sync) => (self.unit.format(sync), report::ratio(self.read_model, sync)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        vec![
            self.measurement.clone(),
            self.unit.label().to_owned(),
            self.unit.format(self.read_model),
            sync,
            ratio,
            if self.higher_is_better {
                "higher"
            } else {
                "lower"
            }
            .to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_a_baseline_have_no_ratio() {
        let row = Comparison {
            measurement: "catalog change visible in orders p99".to_owned(),
            unit: Unit::Millis,
            read_model: 12.345,
            sync_call: None,
            higher_is_better: false,
        };
        assert_eq!(
            row.cells(),
            [
                "catalog change visible in orders p99",
                "ms",
                "12.35",
                "-",
                "-",
                "lower"
            ]
        );
        let row = Comparison {
            measurement: "success".to_owned(),
            unit: Unit::Percent,
            read_model: 100.0,
            sync_call: Some(0.0),
            higher_is_better: true,
        };
        assert_eq!(
            row.cells(),
            ["success", "%", "100.0", "0.0", "n/a", "higher"]
        );
    }
}

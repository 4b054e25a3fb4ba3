//! The `iterator` scenario: rows per second of report-exporter's export (an iterator job: a
//! chain of chunks through Kafka with a durable cursor) against `COPY (SELECT …) TO STDOUT` of
//! the same orders, the fastest way PostgreSQL has to hand them out, in the same run.
//!
//! Self-contained: a fresh database `bench_iterator_<run>`, report-exporter started as a process
//! from the build (like the other scenarios' services, see [`crate::services`]; the bench talks
//! to it over HTTP only), on a port of its own with consumer groups and topics of its own, N
//! orders seeded straight into its `orders_view` (one `INSERT … SELECT generate_series`, not
//! through Kafka), then the COPY baseline and the exports. Everything is dropped at the end: the
//! service, the database, the temporary directory with the files.
//!
//! Split by concern: this file sets up and runs the scenario, [`load`] seeds and measures,
//! [`results`] holds what was measured and prints it.

#![allow(
    clippy::wildcard_imports,
    reason = "the scenario's parts share their constants and types"
)]

mod load;
mod results;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use uuid::Uuid;

use crate::Options;
use crate::database;
use crate::report;
use crate::services::{self, Binary, Run, Services};

use load::*;
use results::*;

/// Orders seeded and exported unless `--rows` says otherwise.
pub const DEFAULT_ROWS: usize = 1_000_000;
/// The export's `chunk_size` unless `--chunk-size` says otherwise.
pub const DEFAULT_CHUNK_SIZE: usize = 10_000;
/// The largest `chunk_size` the exports API accepts.
pub const MAX_CHUNK_SIZE: usize = 100_000;
/// COPY runs; the table shows their median.
const COPY_RUNS: usize = 3;
/// Reads of one chunk with the export's keyset query, alone; their median is shown.
const PROBE_RUNS: usize = 5;
/// The export variants, by `shards`.
const SHARD_VARIANTS: &[u32] = &[1, 2];
/// The goal: export rows/s ≥ this × COPY rows/s.
const GOAL: f64 = 0.50;
/// Between two `GET /exports/{id}` while an export runs.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// report-exporter's port (its default is 8084; the other scenarios use 18081-18093).
const PORT: u16 = 18_084;
/// After start, the service's projection replays `orders.orders.v1` (whatever earlier runs and
/// tests left there) into `orders_view`; measuring starts once it has written nothing for
/// [`SETTLE_QUIET`], no sooner than [`SETTLE_MIN`] (a group join) and no later than
/// [`SETTLE_MAX`].
const SETTLE_QUIET: Duration = Duration::from_secs(2);
const SETTLE_MIN: Duration = Duration::from_secs(6);
const SETTLE_MAX: Duration = Duration::from_mins(1);
/// The seeded orders' `created_at` spreads over [`RANGE_DAYS`] from here: a month in the past,
/// so that no order projected from the shared topic (placed by a test or a run, today) falls
/// into the exported range.
const RANGE_START: &str = "2025-06-01T00:00:00Z";
const RANGE_DAYS: i64 = 30;
/// The export's columns, in its order.
const COLUMNS: &str = "order_id, created_at, status, customer_id, customer_email, item_count, \
                       total_cents, currency, payment_due_at";
/// The header line both files start with.
const CSV_HEADER: &str = "order_id,created_at,status,customer_id,customer_email,item_count,\
                          total_cents,currency,payment_due_at";

/// N orders with realistic values, `created_at` rising with the row number (with jitter) over
/// the range, as a projection that applies orders as they are placed lays them out: 70 % paid,
/// 20 % `pending_payment`, 10 % cancelled; N / 20 customers; 1 in 100 without `payment_due_at`.
const SEED_SQL: &str = "INSERT INTO orders_view (order_id, status, customer_id, customer_email,
                             total_cents, currency, item_count, created_at, payment_due_at,
                             revision, synced_at)
     SELECT gen_random_uuid(), status, 'customer-' || customer,
            'customer-' || customer || '@example.com', total_cents, currency, item_count,
            created_at,
            CASE WHEN i % 100 = 0 THEN NULL ELSE created_at + interval '15 minutes' END,
            CASE status WHEN 'pending_payment' THEN 1 ELSE 2 END, now()
     FROM (
         SELECT i,
                $2::timestamptz
                    + make_interval(secs => (i - 1 + random()) * $3::float8 / $1::float8)
                    AS created_at,
                CASE WHEN r < 0.7 THEN 'paid' WHEN r < 0.9 THEN 'pending_payment'
                     ELSE 'cancelled' END AS status,
                1 + floor(random() * $4::float8)::bigint AS customer,
                (100 + floor(random() * 49900))::bigint AS total_cents,
                CASE WHEN random() < 0.8 THEN 'EUR' ELSE 'USD' END AS currency,
                (1 + floor(random() * 5))::bigint AS item_count
         FROM (SELECT i, random() AS r FROM generate_series(1, $1::bigint) AS i) AS g
     ) AS o";

/// The keyset query the spec gives for an export's chunk (see the `orders_view` migration).
const CHUNK_SQL: &str = "SELECT order_id, created_at, status, customer_id, customer_email,
            item_count, total_cents, currency, payment_due_at
     FROM orders_view
     WHERE created_at >= $1 AND created_at < $2 AND (created_at, order_id) > ($3, $4)
     ORDER BY created_at, order_id
     LIMIT $5";

type ChunkRow = (
    Uuid,
    DateTime<Utc>,
    String,
    String,
    String,
    // `item_count` is BIGINT since report-exporter's migration 0003.
    i64,
    i64,
    String,
    Option<DateTime<Utc>>,
);

pub async fn run(options: &Options) -> anyhow::Result<()> {
    let setup = Setup::new(options)?;
    let (results, load_before, load_after) = setup
        .run
        .measure(
            &[PORT],
            &[&setup.database],
            async |services: &mut Services| {
                eprintln!(
                    "database {}, files in {}",
                    setup.database,
                    setup.run.log_dir.display()
                );
                std::fs::create_dir_all(setup.export_dir()).with_context(|| {
                    format!("Failed to create {}", setup.export_dir().display())
                })?;
                let load_before = load_average();
                let results = measure(&setup, services).await?;
                Ok((results, load_before, load_average()))
            },
        )
        .await?;

    let mut notes = results.notes(&setup);
    notes.push(format!(
        "Load average (1 min) before the run {load_before}, after it {load_after}, on {} \
         cores: the bench, report-exporter, PostgreSQL and the broker share them with anything \
         else running.",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    ));
    report::print(
        "iterator: export of orders (report-exporter) against COPY … TO STDOUT, rows per second",
        &notes,
        &results.lines(),
    );
    report::print(
        "iterator: where an export's time goes, per step (chunk)",
        &step_notes(&results),
        &results.exports,
    );
    Ok(())
}

/// The baseline: the export's rows, columns and order, as CSV with a header. COPY takes no bind
/// parameters; the bounds are constants of the run.
fn copy_sql(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!(
        "COPY (SELECT {COLUMNS} FROM orders_view WHERE created_at >= '{}' AND created_at < '{}' \
         ORDER BY created_at, order_id) TO STDOUT WITH (FORMAT csv, HEADER)",
        rfc3339(from),
        rfc3339(to)
    )
}

/// Where everything is, and the run's settings.
#[derive(Debug)]
struct Setup {
    /// Its log directory holds the COPY file, `exports/` and the service's log.
    run: Run,
    database: String,
    /// `EXPORTS_TOKEN`, made up for the run: the bench's export calls send it.
    exports_token: String,
    rows: usize,
    chunk_size: usize,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Setup {
    fn new(options: &Options) -> anyhow::Result<Self> {
        let chunk_size = options.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE);
        anyhow::ensure!(
            chunk_size <= MAX_CHUNK_SIZE,
            "--chunk-size must be at most {MAX_CHUNK_SIZE} (the exports API's limit)"
        );
        let rows = options.rows.unwrap_or(DEFAULT_ROWS);
        anyhow::ensure!(
            i64::try_from(rows).is_ok(),
            "--rows {rows} is more than PostgreSQL counts"
        );
        let run = Run::new("iterator", &[Binary::ReportExporter])?;
        let from: DateTime<Utc> = RANGE_START.parse().context("RANGE_START is RFC 3339")?;
        Ok(Self {
            exports_token: services::token(),
            database: format!("bench_iterator_{}", run.id),
            run,
            rows,
            chunk_size,
            from,
            to: from + TimeDelta::days(RANGE_DAYS),
        })
    }

    fn export_dir(&self) -> PathBuf {
        self.run.log_dir.join("exports")
    }

    fn copy_file(&self) -> PathBuf {
        self.run.log_dir.join("copy.csv")
    }

    fn copy_sql(&self) -> String {
        copy_sql(self.from, self.to)
    }

    /// report-exporter's environment, on top of the bench's own (as for every service the
    /// bench starts).
    fn service_env(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut env = services::service_env(
            PORT,
            self.run.database_url(&self.database)?,
            &self.run.bootstrap,
            &self.run.admin_token,
        );
        env.extend([
            (
                "KAFKA_CONSUMER_GROUP_PREFIX",
                format!("asyncron-bench-{}-report-exporter", self.run.id),
            ),
            ("EXPORT_DIR", self.export_dir().display().to_string()),
            // `/exports` is guarded as deployed; the bench sends the token.
            ("EXPORTS_TOKEN", self.exports_token.clone()),
            // A queue of its own: with fresh consumer groups, the service's worker would
            // otherwise replay the nightly-export triggers other instances left on the shared
            // topic, and run those exports during the measurement.
            (
                "EXPORT_TASKS_TOPIC",
                format!("asyncron-bench.{}.report-exporter-tasks", self.run.id),
            ),
            // Its own steps topic too: the run's steps stay out of running services' way, and
            // theirs out of the run's.
            (
                "EXPORT_ITERATIONS_TOPIC",
                format!("asyncron-bench.{}.report-exporter-iterations", self.run.id),
            ),
        ]);
        Ok(env)
    }

    /// The bench's HTTP client for report-exporter: every request carries `EXPORTS_TOKEN`.
    fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", self.exports_token))
            .context("the exports token is not a header value")?;
        bearer.set_sensitive(true);
        reqwest::Client::builder()
            .default_headers(HeaderMap::from_iter([(AUTHORIZATION, bearer)]))
            .build()
            .context("Failed to build the HTTP client")
    }
}

/// Runs the whole measurement; the caller stops the service and drops the database, whatever
/// this returns.
async fn measure(setup: &Setup, services: &mut Services) -> anyhow::Result<Results> {
    // Created by the bench, so that the caller drops it even if the service never starts.
    let pool = database::create(&setup.run.database_server, &setup.database, 2).await?;
    let id = services.spawn(
        Binary::ReportExporter,
        "report-exporter",
        PORT,
        setup.service_env()?,
    )?;
    let base = services.get(id).url();
    let http = setup.http()?;
    // Ready means migrated: `orders_view` exists. The service's projection replays
    // `orders.orders.v1` meanwhile, into today's dates, outside the exported range.
    services::wait_ready(services, id, &http).await?;
    let seed_time = seed(&pool, setup).await?;
    let (projected, settle_time) = settle(&pool, setup).await?;

    let mut copies = Vec::with_capacity(COPY_RUNS);
    for run in 1..=COPY_RUNS {
        let copy = copy(&pool, setup).await?;
        eprintln!(
            "COPY run {run}/{COPY_RUNS}: {} rows in {:.2} s",
            report::count(copy.csv.rows() as f64),
            copy.elapsed.as_secs_f64()
        );
        anyhow::ensure!(
            copy.csv.rows() == setup.rows,
            "COPY returned {} rows in the range, not the {} seeded: is something else writing \
             orders with created_at in {} .. {}?",
            copy.csv.rows(),
            setup.rows,
            rfc3339(setup.from),
            rfc3339(setup.to)
        );
        copies.push(copy);
    }
    let probe = read_chunk(&pool, setup).await?;
    let chunk_writes = write_chunk(setup, probe.csv.as_bytes()).await?;
    let chunk_bytes = probe.csv.len();
    let (chunk_reads, chunk_formats) = (probe.reads, probe.formats);

    let (first, last) = (copies[0].csv.first_key(), copies[0].csv.last_key());
    let mut exports = Vec::new();
    for &shards in SHARD_VARIANTS {
        let mut export = export(&http, &base, &pool, setup, shards).await?;
        export.expected_first.clone_from(&first);
        export.expected_last.clone_from(&last);
        export.chunk_read = median(chunk_reads.clone());
        export.chunk_write = median(chunk_writes.clone());
        export.chunk_format = median(chunk_formats.clone());
        exports.push(export);
    }
    pool.close().await;
    Ok(Results {
        seed_time,
        projected,
        settle_time,
        copies,
        chunk_reads,
        chunk_writes,
        chunk_bytes,
        chunk_formats,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn csv_scan_counts_lines_and_keeps_both_ends_across_chunks() {
        let mut text = format!("{CSV_HEADER}\n");
        for i in 0..1_000 {
            let _ = writeln!(text, "id-{i},2025-06-01T00:00:00Z,paid,c,e@x,1,100,EUR,");
        }
        for size in [1, 7, 100, 5_000, text.len()] {
            let mut csv = CsvScan::default();
            for chunk in text.as_bytes().chunks(size) {
                csv.feed(chunk);
            }
            assert_eq!(csv.lines, 1_001, "chunks of {size}");
            assert_eq!(csv.rows(), 1_000);
            assert_eq!(csv.bytes, text.len() as u64);
            assert_eq!(csv.header().as_deref(), Some(CSV_HEADER));
            assert_eq!(csv.first_key().as_deref(), Some("id-0"));
            assert_eq!(csv.last_key().as_deref(), Some("id-999"));
        }
    }

    #[test]
    fn copy_reads_the_exports_rows_in_its_order() {
        let from: DateTime<Utc> = RANGE_START.parse().unwrap();
        let sql = copy_sql(from, from + TimeDelta::days(RANGE_DAYS));
        assert!(sql.starts_with(&format!("COPY (SELECT {COLUMNS} FROM orders_view")));
        assert!(sql.contains(
            "created_at >= '2025-06-01T00:00:00.000000Z' AND created_at < \
             '2025-07-01T00:00:00.000000Z' ORDER BY created_at, order_id) TO STDOUT"
        ));
        assert_eq!(CSV_HEADER.replace(',', ", "), COLUMNS);
    }

    #[test]
    fn quantiles_and_medians() {
        assert_eq!(ms_of(&[0.001, 0.002, 0.003], 0.5), "2.0 ms");
        assert_eq!(ms_of(&[0.001, 0.002, 0.003], 0.9), "3.0 ms");
        assert_eq!(ms_of(&[], 0.5), "n/a");
        assert_eq!(
            median(vec![
                Duration::from_secs(3),
                Duration::from_secs(1),
                Duration::from_secs(2)
            ]),
            Duration::from_secs(2)
        );
    }
}

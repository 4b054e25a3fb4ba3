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

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::TryStreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use crate::Options;
use crate::database;
use crate::kafka;
use crate::progress::Progress;
use crate::report::{self, Column, Row};
use crate::services::{self, Binary, Services};
use crate::stats;

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
    kafka::check_broker(&setup.bootstrap)?;
    database::check_postgres(&setup.server).await?;
    services::check_ports_free(&[PORT])?;
    eprintln!(
        "iterator scenario: broker {}, PostgreSQL {}, database {}, files in {}",
        setup.bootstrap,
        database::redact(&setup.server),
        setup.database,
        setup.dir.display()
    );
    std::fs::create_dir_all(setup.export_dir())
        .with_context(|| format!("Failed to create {}", setup.export_dir().display()))?;

    let load_before = load_average();
    let mut services = Services::new(setup.binaries.clone(), setup.dir.clone());
    let outcome = tokio::select! {
        outcome = measure(&setup, &mut services) => outcome,
        signal = services::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    let load_after = load_average();

    // The service first (it holds connections to the database), then the database and files.
    services.stop_all();
    let dropped = database::drop_all(&setup.server, &[&setup.database]).await;
    let results = match outcome {
        Ok(results) => results,
        Err(error) => {
            // The log is in the temporary directory: keep it to read.
            return Err(anyhow::anyhow!(
                "{error:#}\nreport-exporter's log (RUST_LOG=warn) is kept in {}",
                setup.dir.join("report-exporter.log").display()
            ));
        }
    };
    if let Err(error) = std::fs::remove_dir_all(&setup.dir) {
        tracing::warn!(%error, dir = %setup.dir.display(), "could not remove the files");
    }

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
    dropped
}

/// Where everything is, and the run's settings.
#[derive(Debug)]
struct Setup {
    bootstrap: String,
    /// `DATABASE_URL`: the server the run's database is created on.
    server: String,
    database: String,
    run_id: String,
    /// The run's temporary directory: the COPY file, `exports/` and the service's log.
    dir: PathBuf,
    /// The directory of the report-exporter binary.
    binaries: PathBuf,
    /// `ADMIN_TOKEN`, made up for the run.
    admin_token: String,
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
        let run_id = services::run_id();
        let from: DateTime<Utc> = RANGE_START.parse().context("RANGE_START is RFC 3339")?;
        Ok(Self {
            bootstrap: kafka::bootstrap_from_env(),
            binaries: services::binaries(&[Binary::ReportExporter])?,
            admin_token: services::token(),
            exports_token: services::token(),
            server: database::server_from_env(),
            database: format!("bench_iterator_{run_id}"),
            dir: std::env::temp_dir().join(format!("asyncron-bench-iterator-{run_id}")),
            run_id,
            rows,
            chunk_size,
            from,
            to: from + TimeDelta::days(RANGE_DAYS),
        })
    }

    fn export_dir(&self) -> PathBuf {
        self.dir.join("exports")
    }

    fn copy_file(&self) -> PathBuf {
        self.dir.join("copy.csv")
    }

    /// The baseline: the export's rows, columns and order, as CSV with a header. COPY takes no
    /// bind parameters; the bounds are constants of the run.
    fn copy_sql(&self) -> String {
        format!(
            "COPY (SELECT {COLUMNS} FROM orders_view WHERE created_at >= '{}' AND created_at < \
             '{}' ORDER BY created_at, order_id) TO STDOUT WITH (FORMAT csv, HEADER)",
            rfc3339(self.from),
            rfc3339(self.to)
        )
    }

    /// report-exporter's environment, on top of the bench's own (as for every service the
    /// bench starts).
    fn service_env(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut env = services::service_env(
            PORT,
            database::database_url(&self.server, &self.database)?,
            &self.bootstrap,
            &self.admin_token,
        );
        env.extend([
            (
                "KAFKA_CONSUMER_GROUP_PREFIX",
                format!("asyncron-bench-{}-report-exporter", self.run_id),
            ),
            ("EXPORT_DIR", self.export_dir().display().to_string()),
            // `/exports` is guarded as deployed; the bench sends the token.
            ("EXPORTS_TOKEN", self.exports_token.clone()),
            // A queue of its own: with fresh consumer groups, the service's worker would
            // otherwise replay the nightly-export triggers other instances left on the shared
            // topic, and run those exports during the measurement.
            (
                "EXPORT_TASKS_TOPIC",
                format!("asyncron-bench.{}.report-exporter-tasks", self.run_id),
            ),
            // Its own steps topic too: the run's steps stay out of running services' way, and
            // theirs out of the run's.
            (
                "EXPORT_ITERATIONS_TOPIC",
                format!("asyncron-bench.{}.report-exporter-iterations", self.run_id),
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

/// Everything measured.
#[derive(Debug)]
struct Results {
    seed_time: Duration,
    /// Orders projected from `orders.orders.v1` into `orders_view` by the service (outside
    /// the exported range).
    projected: i64,
    settle_time: Duration,
    copies: Vec<CopyRun>,
    /// Reading one chunk with the export's keyset query, alone.
    chunk_reads: Vec<Duration>,
    /// Appending one chunk's worth of CSV to a file and syncing it, alone.
    chunk_writes: Vec<Duration>,
    /// The bytes written per chunk by that probe: the CSV of the chunk read.
    chunk_bytes: usize,
    /// Formatting the chunk read as the export's CSV, alone.
    chunk_formats: Vec<Duration>,
    exports: Vec<ExportRun>,
}

impl Results {
    fn copy_median(&self) -> Duration {
        median(self.copies.iter().map(|copy| copy.elapsed).collect())
    }

    fn copy_rate(&self, rows: usize) -> f64 {
        stats::per_second(rows, self.copy_median())
    }

    fn lines(&self) -> Vec<Line> {
        let Some(rows) = self.copies.first().map(|copy| copy.csv.rows()) else {
            return Vec::new();
        };
        let baseline = self.copy_rate(rows);
        let mut lines = vec![Line {
            measure: format!("COPY … TO STDOUT → file, median of {}", self.copies.len()),
            rows,
            elapsed: self.copy_median(),
            rate: baseline,
            baseline,
            verdict: "baseline".to_owned(),
        }];
        for export in &self.exports {
            let name = format!(
                "export, {} shard{}, chunk {}",
                export.shards,
                if export.shards == 1 { "" } else { "s" },
                report::count(export.chunk_size as f64)
            );
            let wall_rate = stats::per_second(export.processed, export.wall);
            lines.push(Line {
                measure: format!("{name}: POST → completed"),
                rows: export.processed,
                elapsed: export.wall,
                rate: wall_rate,
                baseline,
                verdict: export.verdict(wall_rate / baseline, rows),
            });
            if let Some(service) = export.service_time() {
                let rate = stats::per_second(export.processed, service);
                lines.push(Line {
                    measure: format!("{name}: started_at → finished_at"),
                    rows: export.processed,
                    elapsed: service,
                    rate,
                    baseline,
                    verdict: export.verdict(rate / baseline, rows),
                });
            }
        }
        lines
    }

    fn notes(&self, setup: &Setup) -> Vec<String> {
        let copies: Vec<String> = self
            .copies
            .iter()
            .map(|copy| format!("{:.2} s", copy.elapsed.as_secs_f64()))
            .collect();
        let copy_bytes = self.copies.first().map_or(0, |copy| copy.csv.bytes);
        let mut notes = vec![
            format!(
                "{} orders seeded into report-exporter's orders_view (database {}) with one \
                 INSERT … SELECT generate_series in {:.1} s, then VACUUM ANALYZE; created_at \
                 over {RANGE_DAYS} days from {RANGE_START}, rising with the insert order. The \
                 service's projection added {} orders from orders.orders.v1 (outside the \
                 range) in the {:.1} s before measuring.",
                report::count(setup.rows as f64),
                setup.database,
                self.seed_time.as_secs_f64(),
                report::count(self.projected as f64),
                self.settle_time.as_secs_f64(),
            ),
            format!(
                "Baseline: COPY (SELECT the export's columns FROM orders_view WHERE created_at in \
                 the range ORDER BY created_at, order_id) TO STDOUT WITH (FORMAT csv, HEADER), \
                 read through sqlx (PgConnection::copy_out_raw) and written to a file ({} MB): \
                 {} runs ({}), the median in the table. The first run warms the cache for \
                 both sides.",
                copy_bytes / 1_000_000,
                self.copies.len(),
                copies.join(", ")
            ),
            format!(
                "Export: POST /exports with the whole range and chunk_size, then GET \
                 /exports/{{id}} every {} ms until completed. POST → completed is the wall time \
                 the client sees (within one poll); started_at → finished_at is the job's own \
                 (first chunk's transaction → last chunk's transaction; it leaves out loading \
                 the first chunk and writing the last). The file is then downloaded and checked: \
                 header, N + 1 lines, the same first and last order as COPY's file.",
                POLL_INTERVAL.as_millis()
            ),
            format!(
                "ratio = export rows/s ÷ COPY rows/s, both measured in this run; the issue's \
                 goal is ≥ {GOAL:.2}."
            ),
        ];
        for export in &self.exports {
            if let Some(problem) = export.output_problem(setup.rows) {
                notes.push(format!(
                    "export with {} shard(s): WRONG OUTPUT: {problem}",
                    export.shards
                ));
            }
        }
        notes
    }
}

/// A line of the main table.
#[derive(Debug)]
struct Line {
    measure: String,
    rows: usize,
    elapsed: Duration,
    rate: f64,
    baseline: f64,
    verdict: String,
}

impl Row for Line {
    const COLUMNS: &'static [Column] = &[
        Column::left("measure"),
        Column::right("rows"),
        Column::right("time"),
        Column::right("rows/s"),
        Column::right("ratio vs COPY"),
        Column::left("goal ≥ 0.50 × COPY"),
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.measure.clone(),
            report::count(self.rows as f64),
            format!("{:.2} s", self.elapsed.as_secs_f64()),
            report::count(self.rate),
            report::ratio(self.rate, self.baseline),
            self.verdict.clone(),
        ]
    }
}

#[derive(Debug)]
struct CopyRun {
    elapsed: Duration,
    csv: CsvScan,
}

/// One export, as the client and the service's tables saw it.
#[derive(Debug)]
struct ExportRun {
    shards: u32,
    chunk_size: usize,
    /// POST → the poll that saw `completed`.
    wall: Duration,
    /// POST → its 202.
    post: Duration,
    /// `processed_rows` at the end.
    processed: usize,
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The downloaded file.
    csv: CsvScan,
    /// The first and last order of COPY's file, to compare with.
    expected_first: Option<String>,
    expected_last: Option<String>,
    steps: StepTimes,
    /// The median read, and write + sync, of one chunk alone (copied here for the steps
    /// table).
    chunk_read: Duration,
    chunk_format: Duration,
    chunk_write: Duration,
}

impl ExportRun {
    fn service_time(&self) -> Option<Duration> {
        (self.finished_at? - self.started_at?).to_std().ok()
    }

    /// What is wrong with the downloaded file, if anything.
    fn output_problem(&self, rows: usize) -> Option<String> {
        let mut problems = Vec::new();
        if self.csv.header().as_deref() != Some(CSV_HEADER) {
            problems.push(format!("header {:?}", self.csv.header()));
        }
        if self.csv.lines != rows as u64 + 1 {
            problems.push(format!(
                "{} lines, not {}",
                report::count(self.csv.lines as f64),
                report::count(rows as f64 + 1.0)
            ));
        }
        if self.processed != rows {
            problems.push(format!(
                "processed_rows {}",
                report::count(self.processed as f64)
            ));
        }
        if self.csv.first_key() != self.expected_first || self.csv.last_key() != self.expected_last
        {
            problems.push(format!(
                "first/last order {:?}/{:?}, COPY's {:?}/{:?}",
                self.csv.first_key(),
                self.csv.last_key(),
                self.expected_first,
                self.expected_last
            ));
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    fn verdict(&self, ratio: f64, rows: usize) -> String {
        if self.output_problem(rows).is_some() {
            return "NOT met: wrong output (see the notes)".to_owned();
        }
        if ratio >= GOAL {
            "met".to_owned()
        } else {
            format!("NOT met ({:.0} % of COPY)", ratio * 100.0)
        }
    }
}

impl Row for ExportRun {
    const COLUMNS: &'static [Column] = &[
        Column::left("export"),
        Column::right("steps"),
        Column::right("rows/step"),
        Column::right("POST → 202"),
        Column::right("job created → 1st step tx"),
        Column::right("step cycle p50"),
        Column::right("p90"),
        Column::right("step tx → next step published p50"),
        Column::right("published → next step tx p50"),
        Column::right("1 chunk read alone p50"),
        Column::right("1 chunk to CSV alone p50"),
        Column::right("1 chunk write + fsync alone p50"),
        Column::right("Kafka hop per step × steps ÷ shards"),
    ];

    fn cells(&self) -> Vec<String> {
        let steps = &self.steps;
        let first = match (self.created_at, self.started_at) {
            (Some(created), Some(started)) => ms_signed((started - created).as_seconds_f64()),
            _ => "n/a".to_owned(),
        };
        // The part of each published → next step interval that is not the next chunk's read
        // (0 when the probe's read was slower than the steps' own: noise).
        let hop = ((steps.published_to_next.iter().sum::<f64>()
            - self.chunk_read.as_secs_f64() * steps.published_to_next.len() as f64)
            / f64::from(self.shards.max(1)))
        .max(0.0);
        let share = self
            .service_time()
            .map(|service| hop / service.as_secs_f64() * 100.0);
        vec![
            format!(
                "{} shard{}, chunk {}",
                self.shards,
                if self.shards == 1 { "" } else { "s" },
                report::count(self.chunk_size as f64)
            ),
            report::count(steps.steps as f64),
            report::count(steps.rows as f64 / steps.steps.max(1) as f64),
            ms_signed(self.post.as_secs_f64()),
            first,
            ms_of(&steps.cycles, 0.5),
            ms_of(&steps.cycles, 0.9),
            ms_of(&steps.to_published, 0.5),
            ms_of(&steps.published_to_next, 0.5),
            ms_signed(self.chunk_read.as_secs_f64()),
            ms_signed(self.chunk_format.as_secs_f64()),
            ms_signed(self.chunk_write.as_secs_f64()),
            match share {
                Some(share) => format!("{hop:.2} s ({share:.0} % of the job)"),
                None => format!("{hop:.2} s"),
            },
        ]
    }
}

/// The intervals between an export's steps, from `job_steps` and the outbox, in seconds.
#[derive(Debug, Default)]
struct StepTimes {
    steps: usize,
    rows: i64,
    /// Step k's transaction start → step k+1's, per shard.
    cycles: Vec<f64>,
    /// Step k's transaction start → the message of step k+1 acknowledged by the broker
    /// (`published_at`): processing the chunk, the bookkeeping, the commit and the relay.
    to_published: Vec<f64>,
    /// That acknowledgement → step k+1's transaction start: Kafka to the runner, the runner's
    /// first look at the job, and loading chunk k+1 (which happens before its transaction).
    published_to_next: Vec<f64>,
}

fn step_notes(results: &Results) -> Vec<String> {
    vec![
        "From the service's tables after each export: job_steps.processed_at is the start of \
         each step's transaction (now()), the outbox row of the next step message has the same \
         created_at and its published_at (after the broker's acknowledgement). A step loads its \
         chunk before its transaction, so the published → next step tx interval holds the Kafka \
         hop (relay ack → consumer → handler) plus the next chunk's read."
            .to_owned(),
        format!(
            "1 chunk read alone: the export's keyset query (CHUNK_SQL in crates/bench/src/\
             iterator.rs), {PROBE_RUNS} times from the middle of the range, fetched into Rust \
             rows by the bench, median ({}). Kafka hop per step × steps ÷ shards = Σ (published \
             → next step tx − 1 chunk read) per shard: the time the chain spends between steps \
             rather than reading and writing rows.",
            list_ms(&results.chunk_reads)
        ),
        format!(
            "1 chunk to CSV alone: the rows read formatted the way ExportRow::write_csv does \
             (mirrored in the bench), median ({}). 1 chunk write + fsync alone: what the step \
             does with that CSV ({} bytes): open, set_len, seek, write_all, sync_data, \
             {PROBE_RUNS} times into a file in the run's directory, median ({}). COPY writes \
             its file without syncing it. The step tx → next step published interval holds \
             the formatting, this write, the bookkeeping updates, the commit and the outbox \
             relay's publish.",
            list_ms(&results.chunk_formats),
            report::count(results.chunk_bytes as f64),
            list_ms(&results.chunk_writes)
        ),
    ]
}

/// The 1-minute load average from `/proc/loadavg`, or `n/a` where there is none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned())
}

fn list_ms(durations: &[Duration]) -> String {
    durations
        .iter()
        .map(|duration| format!("{:.1} ms", duration.as_secs_f64() * 1_000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The `quantile` of `seconds` (nearest rank) in ms, or `n/a` when there are none.
fn ms_of(seconds: &[f64], quantile: f64) -> String {
    if seconds.is_empty() {
        return "n/a".to_owned();
    }
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    ms_signed(sorted[rank - 1])
}

fn ms_signed(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1_000.0)
}

/// Runs the whole measurement; the caller stops the service and drops the database, whatever
/// this returns.
async fn measure(setup: &Setup, services: &mut Services) -> anyhow::Result<Results> {
    // Created by the bench, so that the caller drops it even if the service never starts.
    let pool = database::create(&setup.server, &setup.database, 2).await?;
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

/// Inserts the orders and vacuums the table. Returns how long the insert took.
async fn seed(pool: &PgPool, setup: &Setup) -> anyhow::Result<Duration> {
    eprintln!(
        "seeding {} orders into orders_view…",
        report::count(setup.rows as f64)
    );
    let started = Instant::now();
    let span = TimeDelta::days(RANGE_DAYS).as_seconds_f64();
    let customers = (setup.rows / 20).max(1) as f64;
    sqlx::query(SEED_SQL)
        .bind(i64::try_from(setup.rows)?)
        .bind(setup.from)
        .bind(span)
        .bind(customers)
        .execute(pool)
        .await
        .context("Failed to seed orders_view")?;
    let seeded = started.elapsed();
    sqlx::raw_sql("VACUUM ANALYZE orders_view")
        .execute(pool)
        .await
        .context("Failed to vacuum orders_view")?;
    eprintln!(
        "seeded in {:.1} s, vacuumed in {:.1} s",
        seeded.as_secs_f64(),
        started.elapsed().saturating_sub(seeded).as_secs_f64()
    );
    Ok(seeded)
}

/// Waits until the projection has stopped adding orders (see [`SETTLE_QUIET`]). Returns how
/// many it added, and how long that took.
async fn settle(pool: &PgPool, setup: &Setup) -> anyhow::Result<(i64, Duration)> {
    let started = Instant::now();
    let mut last = -1;
    let mut changed = Instant::now();
    loop {
        let projected: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders_view WHERE created_at < $1 OR created_at >= $2",
        )
        .bind(setup.from)
        .bind(setup.to)
        .fetch_one(pool)
        .await
        .context("Failed to count the projected orders")?;
        if projected != last {
            last = projected;
            changed = Instant::now();
        }
        let waited = started.elapsed();
        if (waited >= SETTLE_MIN && changed.elapsed() >= SETTLE_QUIET) || waited >= SETTLE_MAX {
            return Ok((last, waited));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One COPY into the file, timed from the statement to the file flushed; the file is read back
/// afterwards, untimed.
async fn copy(pool: &PgPool, setup: &Setup) -> anyhow::Result<CopyRun> {
    let sql = setup.copy_sql();
    let path = setup.copy_file();
    let mut connection = pool.acquire().await?;
    let started = Instant::now();
    let file = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("Failed to create {}", path.display()))?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = connection
        .copy_out_raw(&sql)
        .await
        .context("Failed to start the COPY")?;
    while let Some(bytes) = stream.try_next().await.context("The COPY failed")? {
        file.write_all(&bytes).await?;
    }
    drop(stream);
    file.flush().await?;
    let elapsed = started.elapsed();
    drop(file);
    Ok(CopyRun {
        elapsed,
        csv: scan_file(&path).await?,
    })
}

/// The chunk probes' results: reading, formatting, and one chunk's CSV.
#[derive(Debug, Default)]
struct ChunkProbe {
    reads: Vec<Duration>,
    formats: Vec<Duration>,
    csv: String,
}

/// Reads one chunk with the export's keyset query, from the middle of the range, and formats
/// it as the export does, a few times.
async fn read_chunk(pool: &PgPool, setup: &Setup) -> anyhow::Result<ChunkProbe> {
    let middle = setup.from + (setup.to - setup.from) / 2;
    let mut probe = ChunkProbe::default();
    for _ in 0..PROBE_RUNS {
        let started = Instant::now();
        let rows: Vec<ChunkRow> = sqlx::query_as(CHUNK_SQL)
            .bind(setup.from)
            .bind(setup.to)
            .bind(middle)
            .bind(Uuid::nil())
            .bind(i64::try_from(setup.chunk_size)?)
            .fetch_all(pool)
            .await
            .context("Failed to read a chunk")?;
        probe.reads.push(started.elapsed());
        anyhow::ensure!(!rows.is_empty(), "the chunk probe read no rows");
        let started = Instant::now();
        probe.csv = format_csv(&rows);
        probe.formats.push(started.elapsed());
    }
    Ok(probe)
}

/// The chunk as CSV lines the way report-exporter's `ExportRow::write_csv` writes them
/// (`services/report-exporter/src/export_job.rs`, private there, so mirrored here).
fn format_csv(rows: &[ChunkRow]) -> String {
    use std::borrow::Cow;
    use std::fmt::Write as _;
    fn field(value: &str) -> Cow<'_, str> {
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\"\"")).into()
        } else {
            value.into()
        }
    }
    let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut out = String::with_capacity(rows.len() * 160);
    for (order_id, created_at, status, customer, email, items, total, currency, due) in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            order_id,
            at(created_at),
            field(status),
            field(customer),
            field(email),
            items,
            total,
            field(currency),
            due.as_ref().map(at).unwrap_or_default(),
        );
    }
    out
}

/// Appends `bytes` to a file the way an export's step appends a chunk (open, check the length,
/// truncate to it, seek, write, `sync_data`), a few times.
async fn write_chunk(setup: &Setup, data: &[u8]) -> anyhow::Result<Vec<Duration>> {
    use tokio::io::AsyncSeekExt as _;
    let path = setup.dir.join("write-probe.csv");
    let bytes = data.len();
    let mut length = 0;
    let mut writes = Vec::with_capacity(PROBE_RUNS);
    for _ in 0..PROBE_RUNS {
        let started = Instant::now();
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .await
            .with_context(|| format!("Failed to open {}", path.display()))?;
        anyhow::ensure!(
            file.metadata().await?.len() >= length,
            "the probe file shrank"
        );
        file.set_len(length).await?;
        file.seek(std::io::SeekFrom::Start(length)).await?;
        file.write_all(data).await?;
        file.sync_data().await?;
        writes.push(started.elapsed());
        length += bytes as u64;
    }
    tokio::fs::remove_file(&path).await?;
    Ok(writes)
}

/// The parts of `GET /exports/{id}` the bench reads.
#[derive(Debug, Deserialize)]
struct ExportStatus {
    export_id: Uuid,
    status: String,
    #[serde(default)]
    processed_rows: Option<i64>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    error: Option<String>,
}

/// One export of the whole range: POST, poll until completed, download, read its steps.
async fn export(
    http: &reqwest::Client,
    base: &str,
    pool: &PgPool,
    setup: &Setup,
    shards: u32,
) -> anyhow::Result<ExportRun> {
    let label = format!(
        "export, {shards} shard{}",
        if shards == 1 { "" } else { "s" }
    );
    let progress = Progress::start(&label, setup.rows);
    // Generous: a broken export fails on its status long before.
    let deadline = Duration::from_secs(120 + setup.rows as u64 / 1_000);
    let body = serde_json::json!({
        "from": rfc3339(setup.from),
        "to": rfc3339(setup.to),
        "chunk_size": setup.chunk_size,
        "shards": shards,
    });

    let started = Instant::now();
    let response = http
        .post(format!("{base}/exports"))
        .json(&body)
        .send()
        .await
        .context("POST /exports failed")?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let post = started.elapsed();
    anyhow::ensure!(
        status == StatusCode::ACCEPTED,
        "POST /exports answered {status}: {text}"
    );
    let created: ExportStatus = serde_json::from_str(&text)
        .with_context(|| format!("POST /exports answered an unexpected body: {text}"))?;
    let id = created.export_id;
    let url = format!("{base}/exports/{id}");
    let counter = progress.counter();
    let (wall, last) = loop {
        let response = http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url} failed"))?;
        let status = response.status();
        anyhow::ensure!(
            status == StatusCode::OK,
            "GET {url} answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
        let current: ExportStatus = response
            .json()
            .await
            .with_context(|| format!("GET {url} answered an unexpected body"))?;
        let processed = current.processed_rows.unwrap_or(0).max(0) as usize;
        counter.store(processed, Ordering::Relaxed);
        match current.status.as_str() {
            "completed" => break (started.elapsed(), current),
            "failed" | "cancelled" => anyhow::bail!(
                "export {id} {}: {}",
                current.status,
                current.error.as_deref().unwrap_or("no error given")
            ),
            _ => {}
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "export {id} not completed within {deadline:?} ({} of {} rows)",
            report::count(processed as f64),
            report::count(setup.rows as f64)
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    progress.finish();
    eprintln!(
        "export {id} ({shards} shard(s)) completed in {:.2} s; downloading it…",
        wall.as_secs_f64()
    );

    let csv = download(http, &format!("{url}/download")).await?;
    let steps = step_times(pool, id).await?;
    Ok(ExportRun {
        shards,
        chunk_size: setup.chunk_size,
        wall,
        post,
        processed: last.processed_rows.unwrap_or(0).max(0) as usize,
        created_at: last.created_at,
        started_at: last.started_at,
        finished_at: last.finished_at,
        csv,
        expected_first: None,
        expected_last: None,
        steps,
        chunk_read: Duration::ZERO,
        chunk_format: Duration::ZERO,
        chunk_write: Duration::ZERO,
    })
}

async fn download(http: &reqwest::Client, url: &str) -> anyhow::Result<CsvScan> {
    let mut response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url} failed"))?;
    let status = response.status();
    anyhow::ensure!(
        status == StatusCode::OK,
        "GET {url} answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    let mut csv = CsvScan::default();
    while let Some(bytes) = response
        .chunk()
        .await
        .with_context(|| format!("Failed to read {url}"))?
    {
        csv.feed(&bytes);
    }
    Ok(csv)
}

/// The intervals between the export's steps, from its `job_steps` and its step messages in the
/// outbox (keyed by the job id, or `<job id>/<shard>` for a sharded job).
async fn step_times(pool: &PgPool, job_id: Uuid) -> anyhow::Result<StepTimes> {
    let rows: Vec<(i32, i32, f64, Option<f64>)> = sqlx::query_as(
        "SELECT s.shard, s.rows, EXTRACT(EPOCH FROM s.processed_at)::float8,
                EXTRACT(EPOCH FROM o.published_at)::float8
         FROM job_steps s
         LEFT JOIN outbox o ON o.message_type = 'IterationStep'
              AND o.created_at = s.processed_at
              AND o.key IN (s.job_id::text, s.job_id::text || '/' || s.shard)
         WHERE s.job_id = $1
         ORDER BY s.shard, s.step",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
    .context("Failed to read the export's steps")?;
    let mut times = StepTimes {
        steps: rows.len(),
        rows: rows.iter().map(|row| i64::from(row.1)).sum(),
        ..StepTimes::default()
    };
    for pair in rows.windows(2) {
        let ((shard, _, at, published), (next_shard, _, next_at, _)) = (pair[0], pair[1]);
        if shard != next_shard {
            continue;
        }
        times.cycles.push(next_at - at);
        if let Some(published) = published {
            times.to_published.push(published - at);
            times.published_to_next.push(next_at - published);
        }
    }
    Ok(times)
}

/// What the bench checks in a CSV file, read chunk by chunk: its size, its lines, its first two
/// lines and its end.
#[derive(Debug, Default)]
struct CsvScan {
    bytes: u64,
    lines: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl CsvScan {
    const KEEP: usize = 4_096;

    fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        // The compiler vectorises this well enough for files of a few hundred MB.
        #[expect(clippy::naive_bytecount, reason = "no dependency for one count")]
        let lines = chunk.iter().filter(|&&byte| byte == b'\n').count();
        self.lines += lines as u64;
        if self.head.len() < Self::KEEP {
            let room = Self::KEEP - self.head.len();
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if chunk.len() >= Self::KEEP {
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - Self::KEEP..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(Self::KEEP);
            self.tail.drain(..excess);
        }
    }

    /// Data rows: lines after the header.
    fn rows(&self) -> usize {
        self.lines.saturating_sub(1) as usize
    }

    fn header(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        text.lines().next().map(str::to_owned)
    }

    /// The first field of the first data line.
    fn first_key(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        key(text.lines().nth(1)?)
    }

    /// The first field of the last line.
    fn last_key(&self) -> Option<String> {
        if self.lines < 2 {
            return None;
        }
        let text = String::from_utf8_lossy(&self.tail);
        key(text.lines().rfind(|line| !line.is_empty())?)
    }
}

fn key(line: &str) -> Option<String> {
    line.split(',').next().map(|field| field.trim().to_owned())
}

async fn scan_file(path: &Path) -> anyhow::Result<CsvScan> {
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("Failed to open {}", path.display()))?;
    let mut csv = CsvScan::default();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Ok(csv);
        }
        csv.feed(&buffer[..read]);
    }
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
        let setup = Setup::new(&Options {
            rows: Some(10),
            ..Options::default()
        })
        .unwrap();
        let sql = setup.copy_sql();
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

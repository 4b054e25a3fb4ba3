//! What the `iterator` scenario shows: the results, both tables and their notes.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::*;
use crate::report::{self, Column, Row};
use crate::stats;

/// Everything measured.
#[derive(Debug)]
pub(super) struct Results {
    pub(super) seed_time: Duration,
    /// Orders projected from `orders.orders.v1` into `orders_view` by the service (outside
    /// the exported range).
    pub(super) projected: i64,
    pub(super) settle_time: Duration,
    pub(super) copies: Vec<CopyRun>,
    /// Reading one chunk with the export's keyset query, alone.
    pub(super) chunk_reads: Vec<Duration>,
    /// Appending one chunk's worth of CSV to a file and syncing it, alone.
    pub(super) chunk_writes: Vec<Duration>,
    /// The bytes written per chunk by that probe: the CSV of the chunk read.
    pub(super) chunk_bytes: usize,
    /// Formatting the chunk read as the export's CSV, alone.
    pub(super) chunk_formats: Vec<Duration>,
    pub(super) exports: Vec<ExportRun>,
}

impl Results {
    pub(super) fn copy_median(&self) -> Duration {
        median(self.copies.iter().map(|copy| copy.elapsed).collect())
    }

    pub(super) fn copy_rate(&self, rows: usize) -> f64 {
        stats::per_second(rows, self.copy_median())
    }

    pub(super) fn lines(&self) -> Vec<Line> {
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

    pub(super) fn notes(&self, setup: &Setup) -> Vec<String> {
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
pub(super) struct Line {
    pub(super) measure: String,
    pub(super) rows: usize,
    pub(super) elapsed: Duration,
    pub(super) rate: f64,
    pub(super) baseline: f64,
    pub(super) verdict: String,
}

impl Row for Line {
    fn columns() -> Vec<Column> {
        vec![
            Column::left("measure"),
            Column::right("rows"),
            Column::right("time"),
            Column::right("rows/s"),
            Column::right("ratio vs COPY"),
            Column::left("goal ≥ 0.50 × COPY"),
        ]
    }

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
pub(super) struct CopyRun {
    pub(super) elapsed: Duration,
    pub(super) csv: CsvScan,
}

/// One export, as the client and the service's tables saw it.
#[derive(Debug)]
pub(super) struct ExportRun {
    pub(super) shards: u32,
    pub(super) chunk_size: usize,
    /// POST → the poll that saw `completed`.
    pub(super) wall: Duration,
    /// POST → its 202.
    pub(super) post: Duration,
    /// `processed_rows` at the end.
    pub(super) processed: usize,
    pub(super) created_at: Option<DateTime<Utc>>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    /// The downloaded file.
    pub(super) csv: CsvScan,
    /// The first and last order of COPY's file, to compare with.
    pub(super) expected_first: Option<String>,
    pub(super) expected_last: Option<String>,
    pub(super) steps: StepTimes,
    /// The median read, and write + sync, of one chunk alone (copied here for the steps
    /// table).
    pub(super) chunk_read: Duration,
    pub(super) chunk_format: Duration,
    pub(super) chunk_write: Duration,
}

impl ExportRun {
    pub(super) fn service_time(&self) -> Option<Duration> {
        (self.finished_at? - self.started_at?).to_std().ok()
    }

    /// What is wrong with the downloaded file, if anything.
    pub(super) fn output_problem(&self, rows: usize) -> Option<String> {
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

    pub(super) fn verdict(&self, ratio: f64, rows: usize) -> String {
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
    fn columns() -> Vec<Column> {
        vec![
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
        ]
    }

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
pub(super) struct StepTimes {
    pub(super) steps: usize,
    pub(super) rows: i64,
    /// Step k's transaction start → step k+1's, per shard.
    pub(super) cycles: Vec<f64>,
    /// Step k's transaction start → the message of step k+1 acknowledged by the broker
    /// (`published_at`): processing the chunk, the bookkeeping, the commit and the relay.
    pub(super) to_published: Vec<f64>,
    /// That acknowledgement → step k+1's transaction start: Kafka to the runner, the runner's
    /// first look at the job, and loading chunk k+1 (which happens before its transaction).
    pub(super) published_to_next: Vec<f64>,
}

pub(super) fn step_notes(results: &Results) -> Vec<String> {
    vec![
        "From the service's tables after each export: job_steps.processed_at is the start of \
         each step's transaction (now()), the outbox row of the next step message has the same \
         created_at and its published_at (after the broker's acknowledgement). A step loads its \
         chunk before its transaction, so the published → next step tx interval holds the Kafka \
         hop (relay ack → consumer → handler) plus the next chunk's read."
            .to_owned(),
        format!(
            "1 chunk read alone: the export's keyset query (CHUNK_SQL in crates/bench/src/\
             iterator/mod.rs), {PROBE_RUNS} times from the middle of the range, fetched into Rust \
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
pub(super) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "n/a".to_owned())
}

pub(super) fn list_ms(durations: &[Duration]) -> String {
    durations
        .iter()
        .map(|duration| format!("{:.1} ms", duration.as_secs_f64() * 1_000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The `quantile` of `seconds` (nearest rank) in ms, or `n/a` when there are none.
pub(super) fn ms_of(seconds: &[f64], quantile: f64) -> String {
    if seconds.is_empty() {
        return "n/a".to_owned();
    }
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    ms_signed(sorted[rank - 1])
}

pub(super) fn ms_signed(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1_000.0)
}

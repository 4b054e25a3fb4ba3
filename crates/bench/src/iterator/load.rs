//! The load and the measurements of the `iterator` scenario: seeding `orders_view`, waiting for
//! the projection, the COPY baseline, the chunk probes, the exports and their step times.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::TryStreamExt as _;
use reqwest::StatusCode;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use super::*;
use crate::progress::Progress;
use crate::report;

/// Inserts the orders and vacuums the table. Returns how long the insert took.
pub(super) async fn seed(pool: &PgPool, setup: &Setup) -> anyhow::Result<Duration> {
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
pub(super) async fn settle(pool: &PgPool, setup: &Setup) -> anyhow::Result<(i64, Duration)> {
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
pub(super) async fn copy(pool: &PgPool, setup: &Setup) -> anyhow::Result<CopyRun> {
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
pub(super) struct ChunkProbe {
    pub(super) reads: Vec<Duration>,
    pub(super) formats: Vec<Duration>,
    pub(super) csv: String,
}

/// Reads one chunk with the export's keyset query, from the middle of the range, and formats
/// it as the export does, a few times.
pub(super) async fn read_chunk(pool: &PgPool, setup: &Setup) -> anyhow::Result<ChunkProbe> {
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
pub(super) fn format_csv(rows: &[ChunkRow]) -> String {
    use std::borrow::Cow;
    use std::fmt::Write as _;
    pub(super) fn field(value: &str) -> Cow<'_, str> {
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
pub(super) async fn write_chunk(setup: &Setup, data: &[u8]) -> anyhow::Result<Vec<Duration>> {
    use tokio::io::AsyncSeekExt as _;
    let path = setup.run.log_dir.join("write-probe.csv");
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
pub(super) struct ExportStatus {
    pub(super) export_id: Uuid,
    pub(super) status: String,
    #[serde(default)]
    pub(super) processed_rows: Option<i64>,
    #[serde(default)]
    pub(super) created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(super) started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(super) finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub(super) error: Option<String>,
}

/// One export of the whole range: POST, poll until completed, download, read its steps.
pub(super) async fn export(
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
        let response = get_ok(http, &url).await?;
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

/// `GET url`, which must answer 200; anything else is an error with the answer's body.
async fn get_ok(http: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = http
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
    Ok(response)
}

pub(super) async fn download(http: &reqwest::Client, url: &str) -> anyhow::Result<CsvScan> {
    let mut response = get_ok(http, url).await?;
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
pub(super) async fn step_times(pool: &PgPool, job_id: Uuid) -> anyhow::Result<StepTimes> {
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
pub(super) struct CsvScan {
    pub(super) bytes: u64,
    pub(super) lines: u64,
    pub(super) head: Vec<u8>,
    pub(super) tail: Vec<u8>,
}

impl CsvScan {
    const KEEP: usize = 4_096;

    pub(super) fn feed(&mut self, chunk: &[u8]) {
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
    pub(super) fn rows(&self) -> usize {
        self.lines.saturating_sub(1) as usize
    }

    pub(super) fn header(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        text.lines().next().map(str::to_owned)
    }

    /// The first field of the first data line.
    pub(super) fn first_key(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.head);
        key(text.lines().nth(1)?)
    }

    /// The first field of the last line.
    pub(super) fn last_key(&self) -> Option<String> {
        if self.lines < 2 {
            return None;
        }
        let text = String::from_utf8_lossy(&self.tail);
        key(text.lines().rfind(|line| !line.is_empty())?)
    }
}

pub(super) fn key(line: &str) -> Option<String> {
    line.split(',').next().map(|field| field.trim().to_owned())
}

pub(super) async fn scan_file(path: &Path) -> anyhow::Result<CsvScan> {
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

//! The export as an iterator job: walks `orders_view` by `(created_at, order_id)` after a
//! cursor and appends each chunk to the export's CSV file.
//!
//! The file is outside the database, so the transaction cannot roll it back. Instead each
//! shard's file has a committed length in `export_files`, moved in the chunk's transaction:
//! a chunk first truncates the file back to that length (dropping whatever a chunk that did not
//! commit had appended), then appends and syncs its rows, then records the new length. A resumed
//! or redelivered export therefore produces the same bytes as one that never stopped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, Timelike as _, Utc};
use iterator::{Chunk, CompletedJob, Job, Shard};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use task_queue::TaskQueue;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::tasks::SendExportReady;

/// The first line of every export.
pub const CSV_HEADER: &str = "order_id,created_at,status,customer_id,customer_email,item_count,total_cents,currency,payment_due_at\n";

/// What an export covers: orders with `from <= created_at < to`, of one status if set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportParams {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub status: Option<String>,
}

impl ExportParams {
    /// The created-at range of shard `index` of `count`: equal slices of the whole range.
    fn shard_range(&self, index: u32, count: u32) -> (DateTime<Utc>, DateTime<Utc>) {
        let span = self.to - self.from;
        let at = |i: u32| {
            if i >= count {
                self.to
            } else {
                self.from
                    + span * i32::try_from(i).unwrap_or(i32::MAX)
                        / i32::try_from(count).unwrap_or(i32::MAX)
            }
        };
        (at(index), at(index + 1))
    }
}

/// The position after the last exported order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCursor {
    pub created_at: DateTime<Utc>,
    pub order_id: Uuid,
}

/// One CSV line's worth of an order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    pub order_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub customer_id: String,
    pub customer_email: String,
    pub item_count: i64,
    pub total_cents: i64,
    pub currency: String,
    pub payment_due_at: Option<DateTime<Utc>>,
}

impl ExportRow {
    /// Appends the line without allocating: an export formats millions of them.
    fn write_csv(&self, out: &mut String) {
        let _ = write!(out, "{},", self.order_id.hyphenated());
        write_timestamp(out, &self.created_at);
        out.push(',');
        write_field(out, &self.status);
        out.push(',');
        write_field(out, &self.customer_id);
        out.push(',');
        write_field(out, &self.customer_email);
        let _ = write!(out, ",{},{},", self.item_count, self.total_cents);
        write_field(out, &self.currency);
        out.push(',');
        if let Some(due) = &self.payment_due_at {
            write_timestamp(out, due);
        }
        out.push('\n');
    }
}

/// RFC 3339 in UTC with microseconds, `2026-11-26T10:00:00.123456Z`: what PostgreSQL stores.
fn write_timestamp(out: &mut String, at: &DateTime<Utc>) {
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        // A leap second's nanoseconds run past 10⁹; PostgreSQL has none.
        (at.nanosecond() / 1_000).min(999_999),
    );
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV
/// Injection"): `=HYPERLINK(...)` in a customer id must stay text.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// RFC 4180: quoted (with inner quotes doubled) only when it has to be. A value that a
/// spreadsheet would run as a formula is neutralised as OWASP recommends: prefixed with `'` and
/// quoted, so that it shows as the text it is.
fn write_field(out: &mut String, value: &str) {
    let formula = value.starts_with(FORMULA_STARTS);
    if formula || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Where shard `shard` of `export_id` is written: the export's file itself when it has one
/// shard, else a part; the download concatenates the parts in shard order.
pub fn file_path(dir: &Path, export_id: Uuid, shard: u32, shards: u32) -> PathBuf {
    if shards == 1 {
        dir.join(format!("{export_id}.csv"))
    } else {
        dir.join(format!("{export_id}.part{shard}.csv"))
    }
}

/// The job; registered with the service's `iterator::JobRunner`.
#[derive(Debug, Clone)]
pub struct ExportOrders {
    pub pool: PgPool,
    pub dir: PathBuf,
    /// notifications' queue, for `SendExportReady`.
    pub notifications: TaskQueue,
    /// The service's public base URL, for the download link.
    pub public_url: String,
}

impl Job for ExportOrders {
    const KIND: &'static str = "export_orders";
    type Params = ExportParams;
    type Cursor = ExportCursor;
    type Item = ExportRow;

    async fn next_chunk(
        &self,
        shard: &Shard<'_, ExportParams>,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> anyhow::Result<Chunk<ExportRow, ExportCursor>> {
        let (from, to) = shard.params.shard_range(shard.index, shard.count);
        // Before the first chunk the cursor is "before everything": -infinity sorts first.
        let rows: Vec<ExportRow> = sqlx::query_as(
            "SELECT order_id, created_at, status, customer_id, customer_email, item_count,
                    total_cents, currency, payment_due_at
             FROM orders_view
             WHERE created_at >= $1 AND created_at < $2
               AND ($3::text IS NULL OR status = $3)
               AND (created_at, order_id) > (coalesce($4, '-infinity'::timestamptz),
                                             coalesce($5, '00000000-0000-0000-0000-000000000000'::uuid))
             ORDER BY created_at, order_id
             LIMIT $6",
        )
        .bind(from)
        .bind(to)
        .bind(shard.params.status.as_deref())
        .bind(after.map(|cursor| cursor.created_at))
        .bind(after.map(|cursor| cursor.order_id))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .context("Failed to read orders_view")?;
        Ok(Chunk::after_last(rows, limit, |row| ExportCursor {
            created_at: row.created_at,
            order_id: row.order_id,
        }))
    }

    async fn process(
        &self,
        conn: &mut PgConnection,
        shard: &Shard<'_, ExportParams>,
        rows: Vec<ExportRow>,
    ) -> anyhow::Result<()> {
        let committed: i64 = sqlx::query_scalar(
            "SELECT bytes FROM export_files WHERE export_id = $1 AND shard = $2 FOR UPDATE",
        )
        .bind(shard.job_id)
        .bind(shard.index.cast_signed())
        .fetch_one(&mut *conn)
        .await
        .context("Failed to read the committed length of the export file")?;
        let mut csv = String::with_capacity(rows.len() * 160);
        if shard.index == 0 && committed == 0 {
            csv.push_str(CSV_HEADER);
        }
        for row in &rows {
            row.write_csv(&mut csv);
        }
        let path = file_path(&self.dir, shard.job_id, shard.index, shard.count);
        let length = append_at(&path, committed, csv.as_bytes())
            .await
            .with_context(|| format!("Failed to write {}", path.display()))?;
        sqlx::query("UPDATE export_files SET bytes = $3 WHERE export_id = $1 AND shard = $2")
            .bind(shard.job_id)
            .bind(shard.index.cast_signed())
            .bind(length)
            .execute(&mut *conn)
            .await
            .context("Failed to record the committed length of the export file")?;
        Ok(())
    }

    async fn total(&self, params: &ExportParams) -> anyhow::Result<Option<u64>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("Failed to get a database connection")?;
        count(&mut conn, params).await.map(Some)
    }

    /// Tells the requester, through notifications, once: the task is recorded in the
    /// transaction that completes the export, with an id derived from the export.
    async fn on_complete(
        &self,
        conn: &mut PgConnection,
        job: &CompletedJob<'_, ExportParams>,
    ) -> anyhow::Result<()> {
        let recipient: String =
            sqlx::query_scalar("SELECT recipient FROM exports WHERE export_id = $1")
                .bind(job.job_id)
                .fetch_one(&mut *conn)
                .await
                .context("Failed to read the export's recipient")?;
        let task = SendExportReady {
            export_id: job.job_id,
            download_url: format!(
                "{}/exports/{}/download",
                self.public_url.trim_end_matches('/'),
                job.job_id
            ),
            recipient,
        };
        self.notifications.enqueue_in(conn, &task).await?;
        tracing::info!(export_id = %job.job_id, rows = job.processed, "export completed");
        Ok(())
    }
}

/// The orders an export of `params` covers, counted through `conn` (the caller's transaction,
/// if it has one).
pub async fn count(conn: &mut PgConnection, params: &ExportParams) -> anyhow::Result<u64> {
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders_view
         WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR status = $3)",
    )
    .bind(params.from)
    .bind(params.to)
    .bind(params.status.as_deref())
    .fetch_one(conn)
    .await
    .context("Failed to count the orders to export")?;
    Ok(total.unsigned_abs())
}

/// Cuts the file to `committed` bytes, appends `bytes` and syncs; returns the new length.
async fn append_at(path: &Path, committed: i64, bytes: &[u8]) -> anyhow::Result<i64> {
    let committed = u64::try_from(committed).context("a negative committed length")?;
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .await?;
    let on_disk = file.metadata().await?.len();
    anyhow::ensure!(
        on_disk >= committed,
        "the file is {on_disk} bytes long, shorter than the {committed} bytes committed: it was \
         changed or removed outside the service"
    );
    if committed == 0 && on_disk == 0 {
        // A new file: its directory entry must be on disk too before a length is committed
        // for it, or a machine crash could lose the file the database says is there.
        sync_dir(path).await?;
    }
    file.set_len(committed).await?;
    file.seek(std::io::SeekFrom::Start(committed)).await?;
    file.write_all(bytes).await?;
    // On disk before the transaction records the length: a crash after the commit must not
    // lose what the database says is there.
    file.sync_data().await?;
    Ok(i64::try_from(committed + bytes.len() as u64)?)
}

async fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path without a directory")?;
    tokio::fs::File::open(dir).await?.sync_all().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_when_they_must_be() {
        let field = |value: &str| {
            let mut out = String::new();
            write_field(&mut out, value);
            out
        };
        assert_eq!(field("ada@example.com"), "ada@example.com");
        assert_eq!(field("Lovelace, Ada"), "\"Lovelace, Ada\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn timestamps_are_rfc_3339_utc_with_microseconds() {
        let mut out = String::new();
        write_timestamp(&mut out, &"2026-01-02T03:04:05.000007Z".parse().unwrap());
        assert_eq!(out, "2026-01-02T03:04:05.000007Z");
        let at: DateTime<Utc> = "2026-11-26T10:00:00.123456Z".parse().unwrap();
        out.clear();
        write_timestamp(&mut out, &at);
        assert_eq!(out, at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }

    #[test]
    fn shards_split_the_range_into_equal_slices_that_cover_it() {
        let params = ExportParams {
            from: "2026-01-01T00:00:00Z".parse().unwrap(),
            to: "2026-01-04T00:00:00Z".parse().unwrap(),
            status: None,
        };
        assert_eq!(params.shard_range(0, 1), (params.from, params.to));
        let day = |d: u32| {
            format!("2026-01-0{d}T00:00:00Z")
                .parse::<DateTime<Utc>>()
                .unwrap()
        };
        assert_eq!(params.shard_range(0, 3), (day(1), day(2)));
        assert_eq!(params.shard_range(1, 3), (day(2), day(3)));
        assert_eq!(params.shard_range(2, 3), (day(3), day(4)));
    }

    #[test]
    fn cells_a_spreadsheet_would_run_as_formulas_are_neutralised() {
        let hostile = [
            "=HYPERLINK(\"http://evil.example\",\"x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "=1,\"2\"\n",
        ];
        let mut file = String::from(CSV_HEADER);
        for (index, value) in hostile.iter().enumerate() {
            ExportRow {
                order_id: Uuid::nil(),
                created_at: "2026-11-26T10:00:00Z".parse().unwrap(),
                status: "paid".into(),
                customer_id: (*value).to_owned(),
                customer_email: format!("{value}@example.com"),
                item_count: 1,
                total_cents: i64::try_from(index).unwrap(),
                currency: (*value).to_owned(),
                payment_due_at: None,
            }
            .write_csv(&mut file);
        }

        // Read back with a CSV parser, as a spreadsheet would import the file.
        let mut reader = csv::Reader::from_reader(file.as_bytes());
        let mut rows = 0;
        for (record, value) in reader.records().zip(hostile) {
            let record = record.unwrap();
            rows += 1;
            for cell in &record {
                assert!(!cell.starts_with(FORMULA_STARTS), "{cell:?} would run");
            }
            assert_eq!(
                &record[3],
                format!("'{value}"),
                "the text is kept after the quote"
            );
            assert_eq!(&record[7], format!("'{value}"));
            assert_eq!(&record[4], format!("'{value}@example.com"));
        }
        assert_eq!(rows, hostile.len());
    }

    #[test]
    fn a_row_is_one_csv_line_in_the_header_order() {
        let row = ExportRow {
            order_id: Uuid::nil(),
            created_at: "2026-11-26T10:00:00.123456Z".parse().unwrap(),
            status: "paid".into(),
            customer_id: "c-1".into(),
            customer_email: "ada@example.com".into(),
            item_count: 3,
            total_cents: 4780,
            currency: "EUR".into(),
            payment_due_at: None,
        };
        let mut line = String::new();
        row.write_csv(&mut line);
        assert_eq!(
            line,
            "00000000-0000-0000-0000-000000000000,2026-11-26T10:00:00.123456Z,paid,c-1,ada@example.com,3,4780,EUR,\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), line.split(',').count());
    }
}

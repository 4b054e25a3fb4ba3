//! Exports end to end: content against a direct query, a crash mid-export, pause/resume/cancel,
//! the throttle, and two instances sharing the work.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use platform::config::Env;
use report_exporter::{Application, CSV_HEADER, Config};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::exports_helpers::{
    EXPORT_DEADLINE, ExportsClient, ServiceProcess, expected_rows, seed_orders, seeded_range,
};
use crate::helpers::{TestApp, spawn_app};

/// A start time no other data in the test's own database shares.
fn start() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

/// `(order_id, status, customer_id, total_cents)` of every data line, read with a CSV parser.
fn csv_rows(csv: &str) -> Vec<(Uuid, String, String, i64)> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<&str> = reader.headers().expect("a header").iter().collect();
    assert_eq!(header.join(","), CSV_HEADER.trim_end());
    reader
        .records()
        .map(|record| {
            let record = record.expect("a CSV record");
            assert_eq!(record.len(), 9, "{record:?}");
            (
                record[0].parse().expect("an order id"),
                record[2].to_owned(),
                record[3].to_owned(),
                record[6].parse().expect("total_cents"),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_export_of_100_000_orders_equals_a_direct_query_and_notifies_once() {
    let app = spawn_app().await;
    seed_orders(&app.pool, start(), 100_000).await;
    let (from, to) = seeded_range(start(), 100_000);

    let export_id = app
        .exports
        .start(from, to, json!({ "chunk_size": 10_000 }))
        .await;
    let export = app.exports.wait_for(export_id, "completed").await;

    assert_eq!(export["processed_rows"], 100_000);
    assert_eq!(export["total_rows"], 100_000);
    assert_eq!(export["progress"], 1.0);
    assert_eq!(export["error"], json!(null));
    assert_eq!(
        export["download_url"],
        format!("/exports/{export_id}/download")
    );
    let csv = app.exports.csv(export_id).await;
    assert_eq!(
        csv_rows(&csv),
        expected_rows(&app.pool, from, to, None).await
    );

    // The notification: one task, recorded with the export's completion.
    let task_id = Uuid::new_v5(&export_id, b"SendExportReady");
    let tasks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE message_id = $1 AND message_type = 'SendExportReady'",
    )
    .bind(task_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(tasks, 1);

    // A filtered export holds exactly the orders of that status.
    let paid = app
        .exports
        .start(from, to, json!({ "status": "paid", "chunk_size": 7_000 }))
        .await;
    app.exports.wait_for(paid, "completed").await;
    let csv = app.exports.csv(paid).await;
    assert_eq!(
        csv_rows(&csv),
        expected_rows(&app.pool, from, to, Some("paid")).await
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_export_killed_midway_completes_after_a_restart_with_the_same_file() {
    let app = spawn_app().await;
    seed_orders(&app.pool, start(), 20_000).await;
    let (from, to) = seeded_range(start(), 20_000);
    // The reference: the same range, uninterrupted.
    let reference = app
        .exports
        .start(from, to, json!({ "chunk_size": 500 }))
        .await;
    app.exports.wait_for(reference, "completed").await;
    let reference = app.exports.csv(reference).await;

    // The same export in a separate process, throttled so that the kill lands mid-way.
    let env = app.env.clone();
    let pool = app.pool.clone();
    // Only the processes run steps from here on.
    let database = app.stop_keeping_database().await;
    let process = ServiceProcess::start(&env).await;
    let export_id = process
        .exports
        .start(
            from,
            to,
            json!({ "chunk_size": 500, "max_rows_per_sec": 5_000 }),
        )
        .await;
    test_support::eventually(EXPORT_DEADLINE, "a quarter of the export", || async {
        let export = process.exports.status(export_id).await;
        (export["processed_rows"].as_i64() >= Some(5_000)).then_some(())
    })
    .await;
    process.kill().await;
    let at_kill: i64 = sqlx::query_scalar("SELECT processed FROM jobs WHERE job_id = $1")
        .bind(export_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(at_kill < 20_000, "the export finished before the kill");

    let restarted = ServiceProcess::start(&env).await;
    let export = restarted.exports.wait_for(export_id, "completed").await;
    assert_eq!(export["processed_rows"], 20_000);
    assert_eq!(
        restarted.exports.csv(export_id).await,
        reference,
        "the resumed export's file is byte-identical to an uninterrupted one"
    );
    // Each step's effect exactly once: one record per step, numbered without gaps, and the
    // rows add up; both processes took steps.
    let (steps, last, rows, processes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), max(step), sum(rows)::bigint, count(DISTINCT processed_by)
         FROM job_steps WHERE job_id = $1",
    )
    .bind(export_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(steps, last + 1);
    assert_eq!(rows, 20_000);
    assert_eq!(processes, 2);
    restarted.kill().await;
    drop(database);
}

#[tokio::test]
async fn pause_stops_progress_resume_completes_and_cancel_ends_the_export() {
    let app = spawn_app().await;
    seed_orders(&app.pool, start(), 6_000).await;
    let (from, to) = seeded_range(start(), 6_000);
    let slow = json!({ "chunk_size": 200, "max_rows_per_sec": 2_000 });
    let export_id = app.exports.start(from, to, slow.clone()).await;
    test_support::eventually(EXPORT_DEADLINE, "progress", || async {
        let export = app.exports.status(export_id).await;
        (export["processed_rows"].as_i64() > Some(0)).then_some(())
    })
    .await;

    let response = app.exports.control(export_id, "pause").await;
    assert_eq!(response.status(), StatusCode::OK);
    let paused = settled(&app.exports, export_id).await;
    assert_eq!(paused["status"], "paused");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.exports.status(export_id).await["processed_rows"],
        paused["processed_rows"],
        "no progress while paused"
    );
    let response = app.exports.download(export_id).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);

    assert_eq!(
        app.exports.control(export_id, "resume").await.status(),
        StatusCode::OK
    );
    let export = app.exports.wait_for(export_id, "completed").await;
    assert_eq!(export["processed_rows"], 6_000);
    assert_eq!(csv_rows(&app.exports.csv(export_id).await).len(), 6_000);
    assert_eq!(
        app.exports.control(export_id, "pause").await.status(),
        StatusCode::CONFLICT
    );

    let cancelled = app.exports.start(from, to, slow).await;
    test_support::eventually(EXPORT_DEADLINE, "progress", || async {
        let export = app.exports.status(cancelled).await;
        (export["processed_rows"].as_i64() > Some(0)).then_some(())
    })
    .await;
    assert_eq!(
        app.exports.control(cancelled, "cancel").await.status(),
        StatusCode::OK
    );
    let at_cancel = settled(&app.exports, cancelled).await;
    assert_eq!(at_cancel["status"], "cancelled");
    assert!(at_cancel["processed_rows"].as_i64() < Some(6_000));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = app.exports.status(cancelled).await;
    assert_eq!(
        later["processed_rows"], at_cancel["processed_rows"],
        "no more steps"
    );
    assert_eq!(
        app.exports.control(cancelled, "resume").await.status(),
        StatusCode::CONFLICT
    );
    app.stop().await.unwrap();
}

/// Polls until `processed_rows` stops changing (the chunk in progress at a pause or cancel
/// may still finish).
async fn settled(exports: &ExportsClient, export_id: Uuid) -> serde_json::Value {
    let mut last = exports.status(export_id).await;
    let deadline = tokio::time::Instant::now() + EXPORT_DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = exports.status(export_id).await;
        if now["processed_rows"] == last["processed_rows"] {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "never settled");
        last = now;
    }
}

#[tokio::test]
async fn max_rows_per_sec_holds_the_measured_rate_within_ten_percent() {
    let app = spawn_app().await;
    seed_orders(&app.pool, start(), 6_000).await;
    let (from, to) = seeded_range(start(), 6_000);
    // 20 chunks of 300 ms each: a chunk's share of the rate is long next to a step's own time
    // (which a busy machine stretches), and the first chunk's wait, before `started_at`, is a
    // twentieth of the run.
    let export_id = app
        .exports
        .start(
            from,
            to,
            json!({ "chunk_size": 300, "max_rows_per_sec": 1_000 }),
        )
        .await;
    let export = app.exports.wait_for(export_id, "completed").await;
    let at = |field: &str| -> DateTime<Utc> {
        export[field]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect(field)
    };
    let elapsed = (at("finished_at") - at("started_at")).as_seconds_f64();
    let rate = 6_000.0 / elapsed;
    assert!(
        (900.0..=1_100.0).contains(&rate),
        "measured {rate:.0} rows/s over {elapsed:.2} s for a limit of 1000"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn two_instances_share_the_work_of_several_exports() {
    let app = spawn_app().await;
    seed_orders(&app.pool, start(), 12_000).await;
    // A second instance of the same deployment: same database, group, directory.
    let config =
        Config::from_env(&Env::from_pairs(app.env.clone())).expect("the same configuration");
    let second = Application::build(config).await.expect("builds");
    let second = test_support::TestApp::spawn(second.local_addr(), |shutdown| {
        second.run_until_stopped(shutdown)
    });

    // Throttled to last about five seconds each: long enough for the second instance to join
    // the group and take over some partitions, whatever the order of events.
    let mut exports = Vec::new();
    for i in 0..6 {
        let from = start() + TimeDelta::seconds(i * 2_000);
        let to = from + TimeDelta::seconds(2_000);
        exports.push(
            app.exports
                .start(
                    from,
                    to,
                    json!({ "chunk_size": 100, "max_rows_per_sec": 400 }),
                )
                .await,
        );
    }
    for &export_id in &exports {
        let export = app.exports.wait_for(export_id, "completed").await;
        assert_eq!(export["processed_rows"], 2_000);
    }
    let runners: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT processed_by FROM job_steps WHERE job_id = ANY($1)")
            .bind(&exports)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        runners.iter().collect::<HashSet<_>>().len(),
        2,
        "both instances took steps: {runners:?}"
    );
    second.stop().await.unwrap();
    app.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_requests_and_unknown_exports_are_problems() {
    let app = spawn_app().await;
    let response = app
        .exports
        .create(&json!({
            "from": "2026-01-02T00:00:00Z",
            "to": "2026-01-01T00:00:00Z",
            "status": "shipped",
            "chunk_size": 0,
        }))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = response.json().await.unwrap();
    for field in ["to", "status", "chunk_size"] {
        assert!(problem["errors"][field].is_string(), "{problem}");
    }
    let unknown = Uuid::now_v7();
    assert_eq!(
        app.exports.get(unknown).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.exports.control(unknown, "pause").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.exports.download(unknown).await.status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await.unwrap();
}

/// A client that retries `POST /exports` after a timeout, or sends it twice at once, starts one
/// export; the same key with another request is refused.
#[tokio::test]
async fn an_idempotency_key_starts_one_export_however_often_and_concurrently_it_is_sent() {
    let app = spawn_app().await;
    let (from, to) = seeded_range(start(), 10);
    let body = json!({ "from": from, "to": to, "recipient": "ops@example.com" });
    let exports_of = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM exports")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let key = Uuid::now_v7().to_string();
    let first = app.exports.create_with_key(&key, &body).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].clone();
    let first: serde_json::Value = first.json().await.unwrap();
    let again = app.exports.create_with_key(&key, &body).await;
    assert_eq!(
        again.status(),
        StatusCode::ACCEPTED,
        "the first response again"
    );
    assert_eq!(again.headers()["location"], location);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["export_id"], first["export_id"]);
    assert_eq!(exports_of(app.pool.clone()).await, 1);

    // Another request under the same key: 422 naming the header; nothing started.
    let mut other = body.clone();
    other["recipient"] = json!("someone-else@example.com");
    let refused = app.exports.create_with_key(&key, &other).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(
        problem["errors"]["Idempotency-Key"].is_string(),
        "{problem}"
    );
    assert_eq!(exports_of(app.pool.clone()).await, 1);

    // Eight at once with a new key: one export, and every answer is it.
    let key = Uuid::now_v7().to_string();
    let answers =
        futures::future::join_all((0..8).map(|_| app.exports.create_with_key(&key, &other))).await;
    let mut ids = HashSet::new();
    for answer in answers {
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let body: serde_json::Value = answer.json().await.unwrap();
        ids.insert(body["export_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(exports_of(app.pool.clone()).await, 2);

    let invalid = app.exports.create_with_key("a key", &body).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await.unwrap();
}

impl TestApp {
    /// Stops the service and keeps its database (and so its jobs) for another instance.
    pub async fn stop_keeping_database(self) -> test_support::TestDatabase {
        let (http, database) = self.into_parts();
        http.stop().await.expect("stops cleanly");
        database
    }
}

/// OWASP's CSV injection: text that a spreadsheet would run as a formula comes out as text.
#[tokio::test]
async fn a_cell_a_spreadsheet_would_run_as_a_formula_is_exported_as_text() {
    let app = spawn_app().await;
    let hostile = r#"=HYPERLINK("http://evil.example","x")"#;
    sqlx::query(
        "INSERT INTO orders_view (order_id, status, customer_id, customer_email, total_cents,
                                  currency, item_count, created_at, revision)
         VALUES ($1, 'paid', $2, '@evil.example', 1, '+EUR', 1, $3, 1)",
    )
    .bind(Uuid::now_v7())
    .bind(hostile)
    .bind(start())
    .execute(&app.pool)
    .await
    .unwrap();

    let export_id = app
        .exports
        .start(start(), start() + TimeDelta::seconds(1), json!({}))
        .await;
    app.exports.wait_for(export_id, "completed").await;
    let csv = app.exports.csv(export_id).await;

    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1);
    for cell in &records[0] {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{cell:?} would run as a formula"
        );
    }
    assert_eq!(&records[0][3], format!("'{hostile}"));
    assert_eq!(&records[0][4], "'@evil.example");
    assert_eq!(&records[0][7], "'+EUR");
}

/// Exports hold every customer's e-mail address: every `/exports` route needs `EXPORTS_TOKEN`.
#[tokio::test]
async fn every_exports_route_needs_the_exports_token() {
    let app = spawn_app().await;
    let base = app.http.url("");
    let export_id = app
        .exports
        .start(start(), start() + TimeDelta::seconds(1), json!({}))
        .await;

    for token in [
        None,
        Some("not-the-token"),
        Some(crate::helpers::ADMIN_TOKEN),
    ] {
        let stranger = ExportsClient::with_token(&base, token);
        let body = json!({ "from": start(), "to": start() + TimeDelta::seconds(1) });
        let responses = [
            stranger.create(&body).await,
            stranger.get(export_id).await,
            stranger.control(export_id, "pause").await,
            stranger.control(export_id, "resume").await,
            stranger.control(export_id, "cancel").await,
            stranger.download(export_id).await,
        ];
        for response in responses {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with(r#"Bearer realm="report-exporter-exports""#),
                "{challenge}"
            );
            // The problem says which token to send: not the admin one.
            let problem: serde_json::Value = response.json().await.unwrap();
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("EXPORTS_TOKEN"), "{detail}");
        }
    }
    assert_eq!(app.exports.get(export_id).await.status(), StatusCode::OK);
}

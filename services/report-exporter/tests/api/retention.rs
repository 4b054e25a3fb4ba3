//! Retention: the `purge-expired-records` schedule fires `PurgeExpiredRecords` on the service's
//! own queue, whose handler deletes exports finished long ago, with their files, and the
//! records the service no longer needs.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::eventually;
use uuid::Uuid;

use crate::exports_helpers::{EXPORT_DEADLINE, seed_orders, seeded_range};
use crate::helpers::{TestApp, spawn_app_with_env};

fn start() -> DateTime<Utc> {
    "2026-02-01T00:00:00Z".parse().unwrap()
}

fn export_dir(app: &TestApp) -> PathBuf {
    app.env
        .iter()
        .find(|(name, _)| name == "EXPORT_DIR")
        .map(|(_, dir)| PathBuf::from(dir))
        .expect("the test sets EXPORT_DIR")
}

/// The files `export_id` wrote, by name.
fn files_of(app: &TestApp, export_id: Uuid) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(export_dir(app))
        .expect("the export directory")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&export_id.to_string()))
        .collect();
    files.sort();
    files
}

/// Rows of the export in every table that holds some.
async fn rows_of(app: &TestApp, export_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM exports WHERE export_id = $1)
              + (SELECT count(*) FROM export_files WHERE export_id = $1)
              + (SELECT count(*) FROM jobs WHERE job_id = $1)
              + (SELECT count(*) FROM job_shards WHERE job_id = $1)
              + (SELECT count(*) FROM job_steps WHERE job_id = $1)",
    )
    .bind(export_id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn exports_finished_long_ago_are_deleted_with_their_files_and_answer_404() {
    let app = spawn_app_with_env(
        &[
            ("RETENTION_CRON", "* * * * * *"),
            ("RETENTION_PERIOD", "1h"),
            ("IDEMPOTENCY_KEY_TTL", "1h"),
        ],
        |_| {},
    )
    .await;
    seed_orders(&app.pool, start(), 300).await;
    let (from, to) = seeded_range(start(), 300);
    let options = json!({ "chunk_size": 100 });
    let old = app.exports.start(from, to, options.clone()).await;
    let old_sharded = app
        .exports
        .start(from, to, json!({ "chunk_size": 100, "shards": 2 }))
        .await;
    let recent = app.exports.start(from, to, options).await;
    for export_id in [old, old_sharded, recent] {
        app.exports.wait_for(export_id, "completed").await;
    }
    assert_eq!(files_of(&app, old), [format!("{old}.csv")]);
    assert_eq!(
        files_of(&app, old_sharded),
        [
            format!("{old_sharded}.part0.csv"),
            format!("{old_sharded}.part1.csv")
        ]
    );

    // Two of them finished two hours ago.
    sqlx::query(
        "UPDATE jobs SET finished_at = now() - interval '2 hours',
                         updated_at = now() - interval '2 hours'
         WHERE job_id = ANY($1)",
    )
    .bind([old, old_sharded])
    .execute(&app.pool)
    .await
    .unwrap();

    eventually(EXPORT_DEADLINE, "the old exports to be purged", || async {
        (rows_of(&app, old).await == 0 && rows_of(&app, old_sharded).await == 0).then_some(())
    })
    .await;

    for export_id in [old, old_sharded] {
        assert_eq!(files_of(&app, export_id), Vec::<String>::new());
        for response in [
            app.exports.download(export_id).await,
            app.exports.get(export_id).await,
        ] {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem: Value = response.json().await.unwrap();
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("RETENTION_PERIOD"),
                "{problem}"
            );
        }
    }
    // The recent one is whole, and downloads.
    assert_eq!(files_of(&app, recent), [format!("{recent}.csv")]);
    let csv = app.exports.csv(recent).await;
    assert_eq!(csv.lines().count(), 301, "a header and 300 rows");
    assert!(rows_of(&app, recent).await >= 4);
    app.stop().await.unwrap();
}

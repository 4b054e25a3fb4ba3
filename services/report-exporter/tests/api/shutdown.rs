//! Shutdown is bounded: with the database hanging and a request stuck on it, SIGTERM ends the
//! process within `SHUTDOWN_TIMEOUT` + 5 s (the service host's shutdown, the same in every
//! service).

use test_support::shutdown::{StuckRequest, assert_sigterm_ends_in_time};
use test_support::{TestDatabase, unique_name};

use crate::helpers::{ADMIN_TOKEN, EXPORTS_TOKEN};

#[tokio::test]
async fn sigterm_ends_the_process_in_time_while_the_database_hangs() {
    let database = TestDatabase::create().await;
    let group = unique_name("report-exporter-test");
    let tasks = unique_name("report-exporter-test-tasks");
    let iterations = unique_name("report-exporter-test-iterations");
    let export_dir = std::env::temp_dir().join(unique_name("report-exporter-test"));
    let export_dir = export_dir.display().to_string();
    assert_sigterm_ends_in_time(
        env!("CARGO_BIN_EXE_report-exporter"),
        &database,
        &[
            ("KAFKA_CONSUMER_GROUP_PREFIX", &group),
            ("EXPORT_TASKS_TOPIC", &tasks),
            ("EXPORT_ITERATIONS_TOPIC", &iterations),
            ("EXPORT_DIR", &export_dir),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("EXPORTS_TOKEN", EXPORTS_TOKEN),
        ],
        StuckRequest {
            path: "/exports/0190b5c2-6c1e-7d4a-9f00-000000000001",
            bearer: Some(EXPORTS_TOKEN),
        },
    )
    .await;
}

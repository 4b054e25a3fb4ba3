//! Shutdown is bounded: with the database hanging and a request stuck on it, SIGTERM ends the
//! process within `SHUTDOWN_TIMEOUT` + 5 s (the service host's shutdown, the same in every
//! service).

use test_support::shutdown::{StuckRequest, assert_sigterm_ends_in_time};
use test_support::{TestDatabase, unique_name};

use crate::helpers::ADMIN_TOKEN;

#[tokio::test]
async fn sigterm_ends_the_process_in_time_while_the_database_hangs() {
    let database = TestDatabase::create().await;
    let group = unique_name("notifications-test");
    let topic = unique_name("notifications.tasks-test");
    assert_sigterm_ends_in_time(
        env!("CARGO_BIN_EXE_notifications"),
        &database,
        &[
            ("KAFKA_CONSUMER_GROUP_PREFIX", &group),
            ("NOTIFY_TASKS_TOPIC", &topic),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        StuckRequest {
            path: "/notifications",
            bearer: None,
        },
    )
    .await;
}

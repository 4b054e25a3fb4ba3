//! Shutdown is bounded: with the database hanging and a request stuck on it, SIGTERM ends the
//! process within `SHUTDOWN_TIMEOUT` + 5 s (the service host's shutdown, the same in every
//! service).

use test_support::shutdown::{StuckRequest, assert_sigterm_ends_in_time};
use test_support::{TestDatabase, unique_name};

use crate::helpers::ADMIN_TOKEN;

#[tokio::test]
async fn sigterm_ends_the_process_in_time_while_the_database_hangs() {
    let database = TestDatabase::create().await;
    let group = unique_name("orders-test");
    let topic = unique_name("orders.tasks-test");
    assert_sigterm_ends_in_time(
        env!("CARGO_BIN_EXE_orders"),
        &database,
        &[
            ("KAFKA_CONSUMER_GROUP_PREFIX", &group),
            ("ORDERS_TASKS_TOPIC", &topic),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        StuckRequest {
            path: "/orders/0190b5c2-6c1e-7d4a-9f00-000000000001",
            bearer: None,
        },
    )
    .await;
}

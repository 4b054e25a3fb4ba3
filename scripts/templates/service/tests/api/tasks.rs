//! The `summarize-items` schedule fires `SummarizeItems`, and the worker runs it.

use crate::helpers::{DEADLINE, item, json_body, spawn_app};

#[tokio::test]
async fn the_scheduled_summary_runs_through_the_task_queue() {
    let app = spawn_app().await;
    json_body(app.put_item("cup-1", &item("Cup", 1)).await, 201).await;

    // The test schedule fires every second: scheduler → outbox → task queue → worker.
    let count: i64 = test_support::eventually(DEADLINE, "a summary counting the item", || async {
        sqlx::query_scalar("SELECT item_count FROM item_summaries WHERE item_count = 1 LIMIT 1")
            .fetch_optional(&app.database.pool)
            .await
            .expect("the query runs")
    })
    .await;

    assert_eq!(count, 1);
    app.stop().await;
}

//! `TaskQueue::enqueue_raw_in`: a task known only by its parts is recorded exactly as its typed
//! twin would be, and a repeated task id is recorded once.

use kafka::{KafkaConfig, Producer};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use task_queue::{Task, TaskQueue};
use test_support::{TestDatabase, kafka_bootstrap_servers};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
struct Remind {
    order_id: u32,
    id: Uuid,
}

impl Task for Remind {
    const NAME: &'static str = "Remind";

    fn ordering_key(&self) -> Option<String> {
        Some(format!("order-{}", self.order_id))
    }

    fn task_id(&self) -> Option<Uuid> {
        Some(self.id)
    }
}

/// An outbox row without what differs between two enqueues (`task_enqueued_at`).
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Row {
    topic: String,
    key: Option<String>,
    message_type: String,
    payload: Option<Vec<u8>>,
    headers: Json<serde_json::Value>,
}

async fn row(db: &TestDatabase, message_id: Uuid) -> Row {
    sqlx::query_as(
        "SELECT topic, key, message_type, payload,
                jsonb_set(headers, '{extra,1,1}', '\"t\"') AS headers
         FROM outbox WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_one(&db.pool)
    .await
    .expect("outbox row")
}

#[tokio::test]
async fn a_raw_task_is_recorded_as_its_typed_twin_and_once_per_id() {
    let db = TestDatabase::create().await;
    outbox::migrate(&db.pool).await.expect("outbox migrations");
    let config = KafkaConfig::new(kafka_bootstrap_servers().await, "task-queue-raw-test");
    let queue = TaskQueue::new("reminders.tasks", Producer::new(&config).expect("producer"));
    let typed = Remind {
        order_id: 7,
        id: Uuid::now_v7(),
    };
    let raw_id = Uuid::now_v7();

    let mut tx = db.pool.begin().await.unwrap();
    queue.enqueue_in(&mut tx, &typed).await.unwrap();
    let payload = serde_json::to_value(Remind {
        id: raw_id,
        ..typed
    })
    .unwrap();
    for _ in 0..2 {
        let id = TaskQueue::enqueue_raw_in(
            &mut tx,
            "reminders.tasks",
            "Remind",
            raw_id,
            Some("order-7"),
            &payload,
            None,
        )
        .await
        .expect("enqueue_raw_in");
        assert_eq!(id, raw_id);
    }
    // The duplicate rolled back only its savepoint: the transaction commits.
    tx.commit().await.unwrap();

    let copies: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE message_id = $1")
        .bind(raw_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(copies, 1);
    let (typed_row, raw_row) = (row(&db, typed.id).await, row(&db, raw_id).await);
    assert_eq!(raw_row.key.as_deref(), Some("order-7"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(raw_row.payload.as_deref().unwrap()).unwrap(),
        payload
    );
    assert_eq!(
        Row {
            payload: None,
            ..raw_row
        },
        Row {
            payload: None,
            ..typed_row
        }
    );
}

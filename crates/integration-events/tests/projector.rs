//! The projector against a real broker and database: duplicates, reordering, deletes, rebuilds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dead_letters::{DeadLetterStore, ReplayOutcome};

use integration_events::{EventEnvelope, Projector, ReadModel, rebuild};
use kafka::{KafkaConfig, MessageHeaders, Producer, TopicSpec};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use test_support::{TestDatabase, eventually, unique_name};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
    price: i64,
}

/// While set, [`Items`] panics on an item named `panic`: a bug in a read model, fixed by
/// clearing it. Only the test that sends such an item touches it.
static PANIC_ON_PANIC: AtomicBool = AtomicBool::new(true);

/// A read model of `Item`s in a plain table.
struct Items;

impl ReadModel for Items {
    type Entity = Item;

    fn name(&self) -> &'static str {
        "items"
    }

    async fn upsert(
        &self,
        conn: &mut PgConnection,
        id: &str,
        revision: i64,
        item: &Item,
    ) -> anyhow::Result<()> {
        assert!(
            !(item.name == "panic" && PANIC_ON_PANIC.load(Ordering::SeqCst)),
            "a bug in the read model"
        );
        sqlx::query(
            "INSERT INTO items (id, name, price, revision) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET name = $2, price = $3, revision = $4",
        )
        .bind(id)
        .bind(&item.name)
        .bind(item.price)
        .bind(revision)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn delete(&self, conn: &mut PgConnection, id: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM items WHERE id = $1")
            .bind(id)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn clear(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM items").execute(conn).await?;
        Ok(())
    }
}

struct Fixture {
    database: TestDatabase,
    kafka: KafkaConfig,
    producer: Producer,
    topic: TopicSpec,
    /// Names the projection's consumer group: tests running at the same time must not share one.
    service: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_partitions(6).await
    }

    async fn with_partitions(partitions: i32) -> Self {
        platform::telemetry::init_for_tests();
        let database = TestDatabase::create().await;
        integration_events::migrate(&database.pool).await.unwrap();
        sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT NOT NULL, price BIGINT NOT NULL, revision BIGINT NOT NULL)")
            .execute(&database.pool)
            .await
            .unwrap();
        let kafka = KafkaConfig::new(
            test_support::kafka_bootstrap_servers().await,
            "projector-test",
        )
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "300");
        let producer = Producer::new(&kafka).unwrap();
        let topic = TopicSpec::new(unique_name("test.items.v1"))
            .partitions(partitions)
            .config("cleanup.policy", "compact");
        producer
            .ensure_topics(std::slice::from_ref(&topic))
            .await
            .unwrap();
        Self {
            database,
            kafka,
            producer,
            topic,
            service: unique_name("test"),
        }
    }

    async fn send(&self, event: &EventEnvelope<Item>) {
        let headers = MessageHeaders::new("ItemChanged").message_id(event.event_id);
        self.producer
            .publish(&self.topic.name, &event.entity_id, event, headers)
            .await
            .unwrap();
    }

    async fn tombstone(&self, id: &str) {
        self.producer
            .publish_bytes(
                &self.topic.name,
                Some(id.as_bytes()),
                None,
                MessageHeaders::new("Tombstone"),
            )
            .await
            .unwrap();
    }

    async fn start(&self, shutdown: &CancellationToken) -> kafka::RunningConsumer {
        self.projector().start(shutdown.clone()).await.unwrap()
    }

    fn projector(&self) -> Projector<Items> {
        Projector::new(
            self.database.pool.clone(),
            &self.kafka,
            &self.service,
            self.topic.clone(),
            Items,
        )
    }

    async fn send_raw(&self, key: &str, payload: Option<&[u8]>) {
        self.producer
            .publish_bytes(
                &self.topic.name,
                Some(key.as_bytes()),
                payload,
                MessageHeaders::new("ItemChanged"),
            )
            .await
            .unwrap();
    }

    async fn rows(&self) -> Vec<(String, String, i64, i64)> {
        sqlx::query_as("SELECT id, name, price, revision FROM items ORDER BY id")
            .fetch_all(&self.database.pool)
            .await
            .unwrap()
    }

    async fn wait_for(&self, expected: &[(String, String, i64, i64)]) {
        eventually(DEADLINE, "the read model to catch up", || async {
            let rows = self.rows().await;
            (rows == expected).then_some(())
        })
        .await;
    }
}

fn item(name: &str, price: i64) -> Item {
    Item {
        name: name.to_owned(),
        price,
    }
}

fn row(id: &str, name: &str, price: i64, revision: i64) -> (String, String, i64, i64) {
    (id.to_owned(), name.to_owned(), price, revision)
}

#[tokio::test]
async fn duplicates_and_out_of_order_events_leave_the_highest_revision() {
    let fixture = Fixture::new().await;
    let v1 = EventEnvelope::created("item", "a", 1, "test", item("apple", 10));
    let v2 = EventEnvelope::updated(
        "item",
        "a",
        2,
        "test",
        item("apple", 20),
        vec!["price".into()],
    );
    let v3 = EventEnvelope::updated(
        "item",
        "a",
        3,
        "test",
        item("apple", 30),
        vec!["price".into()],
    );
    // Newest first, then older ones and duplicates, as a retrying producer and a replay can do.
    for event in [&v1, &v3, &v2, &v3, &v1] {
        fixture.send(event).await;
    }
    // A marker entity after them: once it is applied, everything before it on the partition was.
    fixture
        .send(&EventEnvelope::created(
            "item",
            "z",
            1,
            "test",
            item("marker", 0),
        ))
        .await;

    let shutdown = CancellationToken::new();
    let projector = fixture.start(&shutdown).await;
    fixture
        .wait_for(&[row("a", "apple", 30, 3), row("z", "marker", 0, 1)])
        .await;
    shutdown.cancel();
    projector.wait().await.unwrap();
}

#[tokio::test]
async fn a_delete_removes_the_row_and_an_older_event_after_it_does_not_bring_it_back() {
    let fixture = Fixture::new().await;
    fixture
        .send(&EventEnvelope::created(
            "item",
            "a",
            1,
            "test",
            item("apple", 10),
        ))
        .await;
    fixture
        .send(&EventEnvelope::created(
            "item",
            "b",
            1,
            "test",
            item("banana", 5),
        ))
        .await;
    fixture
        .send(&EventEnvelope::deleted("item", "a", 2, "test"))
        .await;
    fixture.tombstone("a").await;
    fixture
        .send(&EventEnvelope::updated(
            "item",
            "a",
            1,
            "test",
            item("apple", 99),
            vec![],
        ))
        .await;

    let shutdown = CancellationToken::new();
    let projector = fixture.start(&shutdown).await;
    fixture.wait_for(&[row("b", "banana", 5, 1)]).await;
    // The stale update sat behind the delete on a's partition; b's partition may differ, so wait
    // for the stale event to be seen before checking it changed nothing.
    eventually(DEADLINE, "the stale event to be skipped", || async {
        let revision: Option<i64> = sqlx::query_scalar(
            "SELECT revision FROM projection_revisions WHERE entity_id = 'a' AND deleted",
        )
        .fetch_optional(&fixture.database.pool)
        .await
        .unwrap();
        (revision == Some(2)).then_some(())
    })
    .await;
    shutdown.cancel();
    projector.wait().await.unwrap();
    assert_eq!(fixture.rows().await, vec![row("b", "banana", 5, 1)]);
}

#[tokio::test]
async fn a_rebuild_from_an_empty_read_model_reproduces_the_same_rows() {
    let fixture = Fixture::new().await;
    for (id, name, price) in [("a", "apple", 10), ("b", "banana", 5), ("c", "cherry", 7)] {
        fixture
            .send(&EventEnvelope::created(
                "item",
                id,
                1,
                "test",
                item(name, price),
            ))
            .await;
    }
    fixture
        .send(&EventEnvelope::updated(
            "item",
            "b",
            2,
            "test",
            item("banana", 6),
            vec!["price".into()],
        ))
        .await;
    fixture
        .send(&EventEnvelope::deleted("item", "c", 2, "test"))
        .await;
    let expected = [row("a", "apple", 10, 1), row("b", "banana", 6, 2)];

    let shutdown = CancellationToken::new();
    let projector = fixture.start(&shutdown).await;
    fixture.wait_for(&expected).await;
    shutdown.cancel();
    projector.wait().await.unwrap();

    let generation = rebuild(&fixture.database.pool, &Items).await.unwrap();
    assert_eq!(generation, 2);
    assert!(
        fixture.rows().await.is_empty(),
        "rebuild starts from an empty read model"
    );

    let shutdown = CancellationToken::new();
    let projector = fixture.start(&shutdown).await;
    fixture.wait_for(&expected).await;
    shutdown.cancel();
    projector.wait().await.unwrap();
}

/// On the fixture's one partition, in this order: undecodable bytes, `{}`, an unknown kind, a
/// tombstone, an item PostgreSQL refuses (a NUL in text), an item the read model panics on
/// (`p`), and a good item (`ok`).
async fn send_poison(fixture: &Fixture) {
    fixture
        .send_raw("garbage", Some(b"\xff\x00 not json"))
        .await;
    fixture.send_raw("empty", Some(b"{}")).await;
    let mut unknown = serde_json::to_value(EventEnvelope::created(
        "item",
        "unknown",
        1,
        "test",
        item("u", 1),
    ))
    .unwrap();
    unknown["kind"] = "exploded".into();
    fixture
        .send_raw("unknown", Some(&serde_json::to_vec(&unknown).unwrap()))
        .await;
    // A tombstone is part of an entity topic's contract: skipped, not set aside.
    fixture.tombstone("tombstone").await;
    // PostgreSQL refuses a NUL in text: the data's fault, set aside at the first attempt.
    fixture
        .send(&EventEnvelope::created(
            "item",
            "nul",
            1,
            "test",
            item("a\0b", 1),
        ))
        .await;
    fixture
        .send(&EventEnvelope::created(
            "item",
            "p",
            1,
            "test",
            item("panic", 7),
        ))
        .await;
    fixture
        .send(&EventEnvelope::created(
            "item",
            "ok",
            1,
            "test",
            item("fine", 1),
        ))
        .await;
}

#[tokio::test]
async fn events_that_cannot_be_applied_are_set_aside_and_the_partition_moves_on() {
    // One partition: every message below is on it, in this order.
    let fixture = Fixture::with_partitions(1).await;
    dead_letters::migrate(&fixture.database.pool).await.unwrap();
    let store = DeadLetterStore::new(fixture.database.pool.clone());

    send_poison(&fixture).await;

    let shutdown = CancellationToken::new();
    let projector = fixture
        .projector()
        .dead_letters(&store)
        .start(shutdown.clone())
        .await
        .unwrap();
    fixture.wait_for(&[row("ok", "fine", 1, 1)]).await;
    let listed = eventually(DEADLINE, "five dead letters", || async {
        let page = store.list(None, None, 100).await.unwrap();
        (page.items.len() == 5).then_some(page.items)
    })
    .await;

    let consumer = format!("{}.items", fixture.service);
    let by_key = |key: &str| {
        listed
            .iter()
            .find(|letter| letter.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no dead letter for {key}: {listed:#?}"))
    };
    for key in ["garbage", "empty", "unknown", "nul", "p"] {
        let letter = by_key(key);
        assert_eq!(letter.consumer, consumer);
        assert_eq!(letter.topic, fixture.topic.name);
        assert_eq!(letter.message_type.as_deref(), Some("ItemChanged"));
    }
    assert!(by_key("garbage").error.contains("decode"), "{listed:#?}");
    assert_eq!(by_key("garbage").attempts, 1, "undecodable: not retried");
    assert!(by_key("unknown").error.contains("exploded"), "{listed:#?}");
    assert_eq!(by_key("nul").attempts, 1, "refused data: not retried");
    let panicked = by_key("p");
    assert!(
        panicked.error.contains("the handler panicked"),
        "{panicked:#?}"
    );
    assert_eq!(panicked.attempts, 5, "a panic is a failed attempt, retried");
    let offsets: Vec<i64> = listed.iter().map(|letter| letter.offset).collect();
    assert_eq!(
        offsets,
        [0, 1, 2, 4, 5],
        "oldest first, the tombstone at 3 skipped"
    );

    // The bug is fixed: a replay applies the event. The garbage fails again and stays.
    PANIC_ON_PANIC.store(false, Ordering::SeqCst);
    assert_eq!(
        store.replay(panicked.id).await.unwrap(),
        ReplayOutcome::Replayed
    );
    fixture
        .wait_for(&[row("ok", "fine", 1, 1), row("p", "panic", 7, 1)])
        .await;
    let garbage = by_key("garbage").id;
    assert!(matches!(
        store.replay(garbage).await.unwrap(),
        ReplayOutcome::Failed(error) if error.contains("decode")
    ));
    assert_eq!(
        store.replay(panicked.id).await.unwrap(),
        ReplayOutcome::NotFound
    );
    assert!(store.drop_one(garbage).await.unwrap());
    let left = store.list(Some(&consumer), None, 2).await.unwrap();
    assert_eq!(left.items.len(), 2);
    let next = store
        .list(
            Some(&consumer),
            left.next_cursor.map(|cursor| cursor.parse().unwrap()),
            2,
        )
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1, "three left, in pages of two");
    assert_eq!(next.next_cursor, None);

    shutdown.cancel();
    projector
        .wait()
        .await
        .expect("the projection never stopped");
}

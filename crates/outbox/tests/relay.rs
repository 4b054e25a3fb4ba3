//! The outbox against a real PostgreSQL and a real broker: what commits is published once with
//! the identity it was recorded with, in order per key, by one relay at a time, and nothing is
//! stranded by a broker that fails or a notification that goes missing.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::{DEADLINE, RunningRelay, Setup, settings};
use kafka::{KafkaConfig, Producer};
use outbox::{Outbox, OutboxMessage, OutboxRelay, RELAY_LOCK_KEY, RelaySettings};
use platform::telemetry::TraceContext;
use sqlx::PgPool;
use test_support::eventually;
use tracing::Instrument as _;
use uuid::Uuid;

/// With notifications working, a message is published within milliseconds; this leaves room
/// for a busy machine while staying far below any poll interval the tests set.
const NOTIFY_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_committed_message_is_published_once_with_its_recorded_identity() {
    let setup = Setup::new(3).await;
    let relay = RunningRelay::start(setup.relay(settings()));

    let request = tracing::info_span!("request", correlation_id = "req-42");
    let (message_id, recorded_trace) = async {
        let mut tx = setup.db.pool.begin().await.unwrap();
        let message = setup
            .message("order-1", &serde_json::json!({ "total": 10 }))
            .header("tenant", "acme");
        let id = Outbox::record(&mut tx, message).await.unwrap();
        tx.commit().await.unwrap();
        (
            id,
            TraceContext::current().expect("the test subscriber tracks trace context"),
        )
    }
    .instrument(request)
    .await;

    setup.published(DEADLINE, message_id).await;
    relay.stop().await;

    let received = setup.read_all().await;
    assert_eq!(received.len(), 1, "{received:?}");
    let message = &received[0];
    assert_eq!(message.message_id(), message_id);
    assert_eq!(message.key.as_deref(), Some("order-1"));
    assert_eq!(message.json(), serde_json::json!({ "total": 10 }));
    assert_eq!(message.header("message_type"), Some("TestEvent"));
    assert_eq!(message.header("content_type"), Some("application/json"));
    assert_eq!(message.header("correlation_id"), Some("req-42"));
    assert_eq!(message.header("tenant"), Some("acme"));
    let published_trace = TraceContext::parse_traceparent(
        message.header("traceparent").expect("a traceparent header"),
    )
    .expect("a valid traceparent");
    assert_eq!(published_trace.trace_id, recorded_trace.trace_id);

    let (attempts, last_error, published) = setup.row_state(message_id).await;
    assert!(published);
    assert_eq!(attempts, 1);
    assert_eq!(last_error, None);
}

#[tokio::test]
async fn a_rolled_back_message_is_neither_stored_nor_published() {
    let setup = Setup::new(1).await;

    let mut tx = setup.db.pool.begin().await.unwrap();
    let rolled_back = Outbox::record(&mut tx, setup.message("order-1", &"rolled back".into()))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&setup.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // Once the relay has published a message recorded later, it has passed over the table: the
    // rolled-back one would have gone out first.
    let marker = setup
        .record(setup.message("order-1", &"marker".into()))
        .await;
    let relay = RunningRelay::start(setup.relay(settings()));
    setup.published(DEADLINE, marker).await;
    relay.stop().await;

    let received: Vec<Uuid> = setup
        .read_all()
        .await
        .iter()
        .map(common::Received::message_id)
        .collect();
    assert_eq!(received, [marker], "not {rolled_back}");
}

#[tokio::test]
async fn a_tombstone_is_published_without_a_payload() {
    let setup = Setup::new(1).await;
    let id = setup
        .record(OutboxMessage::tombstone(&setup.topic, "order-1"))
        .await;

    let published = setup.relay(settings()).publish_pending().await.unwrap();

    assert_eq!(published, 1);
    let received = setup.read_all().await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].message_id(), id);
    assert_eq!(received[0].key.as_deref(), Some("order-1"));
    assert_eq!(received[0].payload, None);
    assert_eq!(received[0].header("message_type"), Some("Tombstone"));
}

#[tokio::test]
async fn messages_of_a_key_are_published_in_the_order_they_were_recorded() {
    let setup = Setup::new(3).await;
    let mut recorded: HashMap<String, Vec<Uuid>> = HashMap::new();
    for seq in 0..40 {
        for key in 0..5 {
            let key = format!("order-{key}");
            let id = setup
                .record(setup.message(&key, &serde_json::json!({ "seq": seq })))
                .await;
            recorded.entry(key).or_default().push(id);
        }
    }

    // Small batches: many passes, each draining the next at once because the last was full.
    let relay = RunningRelay::start(setup.relay(RelaySettings {
        batch_size: 32,
        ..settings()
    }));
    setup.all_published().await;
    relay.stop().await;

    let received = setup.read_all().await;
    assert_eq!(received.len(), 200);
    assert_eq!(by_key(&received), recorded);
}

#[tokio::test]
async fn rows_an_unreachable_broker_left_pending_are_published_in_order_later() {
    let setup = Setup::new(3).await;
    let mut recorded: HashMap<String, Vec<Uuid>> = HashMap::new();
    for seq in 0..10 {
        for key in 0..3 {
            let key = format!("order-{key}");
            let id = setup
                .record(setup.message(&key, &serde_json::json!({ "seq": seq })))
                .await;
            recorded.entry(key).or_default().push(id);
        }
    }
    let first = recorded["order-0"][0];

    // Nothing listens on port 1: every publish fails once `message.timeout.ms` runs out.
    let unreachable = KafkaConfig::new("127.0.0.1:1", "asyncron-outbox-tests-unreachable")
        .set("message.timeout.ms", "1000");
    let failing = RunningRelay::start(
        OutboxRelay::new(setup.db.pool.clone(), Producer::new(&unreachable).unwrap())
            .with_settings(settings()),
    );
    eventually(
        DEADLINE,
        "the failing relay to retry the first row",
        || async { (setup.row_state(first).await.0 >= 2).then_some(()) },
    )
    .await;
    failing.stop().await;

    assert_eq!(setup.pending().await, 30);
    let (failed_attempts, last_error, _) = setup.row_state(first).await;
    let last_error = last_error.expect("the failure is recorded");
    assert!(last_error.contains("Failed to publish"), "{last_error}");
    // Only the head of each key is charged; the rows behind it were never its fault.
    let charged: Vec<Uuid> =
        sqlx::query_scalar("SELECT message_id FROM outbox WHERE attempts > 0 ORDER BY id")
            .fetch_all(&setup.db.pool)
            .await
            .unwrap();
    assert_eq!(
        charged,
        [
            recorded["order-0"][0],
            recorded["order-1"][0],
            recorded["order-2"][0]
        ]
    );

    let relay = RunningRelay::start(setup.relay(settings()));
    setup.all_published().await;
    relay.stop().await;

    let received = setup.read_all().await;
    assert_eq!(received.len(), 30, "the unreachable broker got nothing");
    assert_eq!(by_key(&received), recorded);
    let (attempts, last_error, published) = setup.row_state(first).await;
    assert!(published);
    assert_eq!(attempts, failed_attempts + 1);
    assert!(
        last_error.is_some(),
        "the last failure stays for investigation"
    );
}

#[tokio::test]
async fn two_relays_publish_every_message_exactly_once_in_key_order() {
    let setup = Setup::new(3).await;
    // Each replica has a pool of its own, as two processes would.
    let other_pool = PgPool::connect(&setup.db.url).await.unwrap();
    let small_batches = RelaySettings {
        batch_size: 20,
        ..settings()
    };
    let first = RunningRelay::start(setup.relay(small_batches.clone()));
    let second = RunningRelay::start(
        OutboxRelay::new(other_pool, Producer::new(&setup.config).unwrap())
            .with_settings(small_batches),
    );

    // Five writers, one per key, record 100 messages each while both relays run.
    let writers = (0..5).map(|key| {
        let setup = &setup;
        async move {
            let key = format!("order-{key}");
            let mut ids = Vec::new();
            for seq in 0..100 {
                let message = setup.message(&key, &serde_json::json!({ "seq": seq }));
                ids.push(setup.record(message).await);
            }
            (key, ids)
        }
    });
    let recorded: HashMap<String, Vec<Uuid>> = futures::future::join_all(writers)
        .await
        .into_iter()
        .collect();
    setup.all_published().await;
    first.stop().await;
    second.stop().await;

    let received = setup.read_all().await;
    let mut seen = HashSet::new();
    for message in &received {
        assert!(
            seen.insert(message.message_id()),
            "published twice: {message:?}"
        );
    }
    assert_eq!(received.len(), 500);
    assert_eq!(by_key(&received), recorded);
}

#[tokio::test]
async fn a_relay_skips_its_pass_while_another_holds_the_lock() {
    let setup = Setup::new(1).await;
    let id = setup
        .record(setup.message("order-1", &"waiting".into()))
        .await;
    let relay = setup.relay(settings());

    // What another replica in the middle of a batch holds.
    let mut other = setup.db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RELAY_LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert_eq!(setup.pending().await, 1);

    other.rollback().await.unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert!(setup.row_state(id).await.2);
}

#[tokio::test]
async fn retention_deletes_old_published_rows_and_keeps_pending_ones() {
    let setup = Setup::new(1).await;
    let mut ids = HashMap::new();
    for name in ["expired", "recent", "old_pending", "pending"] {
        let id = setup.record(setup.message(name, &name.into())).await;
        ids.insert(name, id);
    }
    let backdate = |sql: &'static str, id: Uuid| {
        let pool = setup.db.pool.clone();
        async move {
            sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
        }
    };
    backdate(
        "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE message_id = $1",
        ids["expired"],
    )
    .await;
    backdate(
        "UPDATE outbox SET published_at = now() - interval '1 minute' WHERE message_id = $1",
        ids["recent"],
    )
    .await;
    backdate(
        "UPDATE outbox SET created_at = now() - interval '2 days' WHERE message_id = $1",
        ids["old_pending"],
    )
    .await;
    let hour = RelaySettings {
        retention: Duration::from_hours(1),
        cleanup_interval: Duration::from_millis(100),
        ..settings()
    };
    let relay = setup.relay(hour.clone());

    assert_eq!(relay.delete_expired().await.unwrap(), 1);
    assert_eq!(
        remaining(&setup.db.pool).await,
        HashSet::from([ids["recent"], ids["old_pending"], ids["pending"]])
    );

    // A running relay deletes periodically, not only when it starts.
    let running = RunningRelay::start(setup.relay(hour));
    setup.all_published().await;
    backdate(
        "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE message_id = $1",
        ids["recent"],
    )
    .await;
    eventually(DEADLINE, "the expired row to be deleted", || async {
        (!remaining(&setup.db.pool).await.contains(&ids["recent"])).then_some(())
    })
    .await;
    running.stop().await;
    assert_eq!(
        remaining(&setup.db.pool).await,
        HashSet::from([ids["old_pending"], ids["pending"]])
    );
}

#[tokio::test]
async fn a_notification_wakes_the_relay_long_before_its_poll() {
    let setup = Setup::new(1).await;
    let relay = RunningRelay::start(setup.relay(RelaySettings {
        poll_interval: Duration::from_hours(1),
        ..settings()
    }));

    // Without notifications the relay would pass only at start and once when its listener
    // connects. Each message here is recorded after the previous one was published, so each
    // needs a pass of its own: the third cannot be published in time without a notification.
    for seq in 0..3 {
        let id = setup
            .record(setup.message("order-1", &serde_json::json!({ "seq": seq })))
            .await;
        setup.published(NOTIFY_DEADLINE, id).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn the_relay_listens_again_after_its_connection_is_killed() {
    let setup = Setup::new(1).await;
    let relay = RunningRelay::start(setup.relay(RelaySettings {
        poll_interval: Duration::from_hours(1),
        ..settings()
    }));

    let listener = listener_session(&setup, None).await;
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(listener)
        .fetch_one(&setup.db.pool)
        .await
        .unwrap();
    assert!(terminated);
    listener_session(&setup, Some(listener)).await;

    // Without notifications the relay would pass at most twice more: for the wake-up its
    // reconnection sends, and for one still queued from before. Each message here needs a pass
    // of its own, so the third proves that notifications arrive on the new session.
    for seq in 0..3 {
        let id = setup
            .record(setup.message("order-1", &serde_json::json!({ "seq": seq })))
            .await;
        setup.published(NOTIFY_DEADLINE, id).await;
    }
    relay.stop().await;
}

#[tokio::test]
async fn the_backlog_counts_pending_rows_and_the_age_of_the_oldest() {
    let setup = Setup::new(1).await;
    let empty = Outbox::backlog(&setup.db.pool).await.unwrap();
    assert_eq!((empty.pending, empty.oldest_pending_age), (0, None));

    let oldest = setup.record(setup.message("order-1", &1.into())).await;
    setup.record(setup.message("order-1", &2.into())).await;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '1 hour' WHERE message_id = $1")
        .bind(oldest)
        .execute(&setup.db.pool)
        .await
        .unwrap();

    let backlog = Outbox::backlog(&setup.db.pool).await.unwrap();
    assert_eq!(backlog.pending, 2);
    let age = backlog.oldest_pending_age.expect("an age");
    assert!(
        (Duration::from_hours(1)..Duration::from_mins(61)).contains(&age),
        "{age:?}"
    );

    assert_eq!(setup.relay(settings()).publish_pending().await.unwrap(), 2);
    let drained = Outbox::backlog(&setup.db.pool).await.unwrap();
    assert_eq!((drained.pending, drained.oldest_pending_age), (0, None));
}

#[tokio::test]
async fn the_relay_reports_its_backlog_and_its_publications_as_metrics() {
    // The recorder and the gauges are process-wide; nextest runs every test in a process of its
    // own, so only this test's relays set them.
    platform::metrics::install();
    let setup = Setup::new(1).await;
    let topic = &setup.topic;
    let oldest = setup.record(setup.message("order-1", &1.into())).await;
    setup.record(setup.message("order-1", &2.into())).await;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '1 hour' WHERE message_id = $1")
        .bind(oldest)
        .execute(&setup.db.pool)
        .await
        .unwrap();

    let unreachable = KafkaConfig::new("127.0.0.1:1", "asyncron-outbox-tests-unreachable")
        .set("message.timeout.ms", "1000");
    let failing = RunningRelay::start(
        OutboxRelay::new(setup.db.pool.clone(), Producer::new(&unreachable).unwrap())
            .with_settings(settings()),
    );
    eventually(DEADLINE, "the metrics of a failing pass", || async {
        let metrics = platform::metrics::render();
        let failures = metric(
            &metrics,
            &format!("outbox_publish_failures_total{{topic=\"{topic}\"}}"),
        );
        (failures >= Some(2.0)).then_some(())
    })
    .await;
    failing.stop().await;
    let metrics = platform::metrics::render();
    assert_eq!(
        metric(&metrics, "outbox_pending_rows"),
        Some(2.0),
        "{metrics}"
    );
    let age = metric(&metrics, "outbox_oldest_pending_age_seconds")
        .unwrap_or_else(|| panic!("no age gauge: {metrics}"));
    assert!((3600.0..3660.0).contains(&age), "{metrics}");

    let relay = RunningRelay::start(setup.relay(settings()));
    setup.all_published().await;
    eventually(DEADLINE, "the metrics of the publishing pass", || async {
        let metrics = platform::metrics::render();
        (metric(&metrics, "outbox_pending_rows") == Some(0.0)).then_some(metrics)
    })
    .await;
    relay.stop().await;
    let metrics = platform::metrics::render();
    let labels = format!("{{topic=\"{topic}\"}}");
    assert_eq!(
        metric(&metrics, &format!("outbox_published_total{labels}")),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("outbox_publish_delay_seconds_count{labels}")
        ),
        Some(2.0),
        "{metrics}"
    );
    let delays = metric(
        &metrics,
        &format!("outbox_publish_delay_seconds_sum{labels}"),
    );
    assert!(
        delays >= Some(3600.0),
        "the backdated row waited an hour: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "outbox_oldest_pending_age_seconds"),
        Some(0.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_invalid_message_is_refused_when_recorded() {
    let setup = Setup::new(1).await;
    let mut tx = setup.db.pool.begin().await.unwrap();

    let error = Outbox::record(
        &mut tx,
        setup
            .message("order-1", &1.into())
            .header("correlation_id", "mine"),
    )
    .await
    .unwrap_err();

    assert_eq!(
        error.downcast_ref::<outbox::InvalidMessage>(),
        Some(&outbox::InvalidMessage::ReservedHeader(
            "correlation_id".to_owned()
        ))
    );
}

#[tokio::test]
async fn migrations_are_idempotent_and_keep_their_own_history() {
    let setup = Setup::new(1).await; // migrated once
    outbox::migrate(&setup.db.pool).await.unwrap();

    let (outbox_history, default_history): (i64, Option<String>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM _outbox_migrations),
                to_regclass('_sqlx_migrations')::text",
    )
    .fetch_one(&setup.db.pool)
    .await
    .unwrap();
    assert_eq!(outbox_history, 2);
    assert_eq!(
        default_history, None,
        "the service's history table is left alone"
    );
}

/// Message ids per key, in the order received.
fn by_key(received: &[common::Received]) -> HashMap<String, Vec<Uuid>> {
    let mut by_key: HashMap<String, Vec<Uuid>> = HashMap::new();
    for message in received {
        by_key
            .entry(message.key.clone().expect("a key"))
            .or_default()
            .push(message.message_id());
    }
    by_key
}

async fn remaining(pool: &PgPool) -> HashSet<Uuid> {
    sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// The backend pid of the relay's `LISTEN` session, once there is one other than `previous`.
async fn listener_session(setup: &Setup, previous: Option<i32>) -> i32 {
    eventually(DEADLINE, "the relay's LISTEN session", || async {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database()
               AND query LIKE 'LISTEN %'
               AND pid IS DISTINCT FROM $1",
        )
        .bind(previous)
        .fetch_optional(&setup.db.pool)
        .await
        .unwrap()
    })
    .await
}

/// The value of the sample `series` (a name with its labels, as rendered) in Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

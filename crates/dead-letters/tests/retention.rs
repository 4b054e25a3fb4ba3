//! Retention against a real PostgreSQL: replayed and dropped dead letters go after their age,
//! those waiting for a decision stay.

use std::time::Duration;

use test_support::TestDatabase;
use uuid::Uuid;

#[tokio::test]
async fn decided_dead_letters_past_their_age_are_purged_and_the_others_stay() {
    let db = TestDatabase::create().await;
    dead_letters::migrate(&db.pool).await.unwrap();
    for (offset, (state, changed_hours_ago)) in [
        ("replayed", Some(2)),
        ("dropped", Some(2)),
        ("dropped", Some(0)),
        ("dead", None),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO consumer_dead_letters (id, consumer, topic, kafka_partition,
                 kafka_offset, fingerprint, error, attempts, state, set_aside_at,
                 state_changed_at)
             VALUES ($1, 'c', 't', 0, $2, 'f', 'e', 1, $3, now() - interval '30 days',
                 now() - make_interval(hours => $4))",
        )
        .bind(Uuid::now_v7())
        .bind(i64::try_from(offset).unwrap())
        .bind(state)
        .bind(changed_hours_ago)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    let age = Duration::from_hours(1);
    assert_eq!(dead_letters::purge_decided(&db.pool, age).await.unwrap(), 2);
    assert_eq!(dead_letters::purge_decided(&db.pool, age).await.unwrap(), 0);

    let left: Vec<String> =
        sqlx::query_scalar("SELECT state FROM consumer_dead_letters ORDER BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, ["dead", "dropped"]);
}

//! The key table against a real PostgreSQL: lookup, claim, races, expiry and purge.

use std::time::Duration;

use idempotency::{IdempotencyKey, IdempotencyKeys, Seen};
use sqlx::PgPool;
use test_support::TestDatabase;
use uuid::Uuid;

async fn database() -> TestDatabase {
    let db = TestDatabase::create().await;
    idempotency::migrate(&db.pool).await.expect("migrations");
    db
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text.as_bytes()).unwrap()
}

async fn claim(
    pool: &PgPool,
    keys: &IdempotencyKeys,
    key: &IdempotencyKey,
    request: &[u8],
) -> Option<Uuid> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await.unwrap();
    let claimed = keys.claim(&mut tx, key, request, id).await.unwrap();
    tx.commit().await.unwrap();
    claimed.then_some(id)
}

#[tokio::test]
async fn a_claimed_key_answers_its_resource_for_the_same_request_and_refuses_another() {
    let db = database().await;
    let keys = IdempotencyKeys::new("POST /things", Duration::from_hours(24));
    let mut conn = db.pool.acquire().await.unwrap();
    let k = key("k-1");

    assert_eq!(
        keys.lookup(&mut conn, &k, b"{\"a\":1}").await.unwrap(),
        Seen::New
    );
    let id = claim(&db.pool, &keys, &k, b"{\"a\":1}")
        .await
        .expect("claimed");

    assert_eq!(
        keys.lookup(&mut conn, &k, b"{\"a\":1}").await.unwrap(),
        Seen::Created(id)
    );
    assert_eq!(
        keys.lookup(&mut conn, &k, b"{\"a\":2}").await.unwrap(),
        Seen::OtherRequest
    );
    assert_eq!(
        claim(&db.pool, &keys, &k, b"{\"a\":1}").await,
        None,
        "claimed twice"
    );

    // Another operation's key of the same text is another key.
    let other = IdempotencyKeys::new("POST /others", Duration::from_hours(24));
    assert_eq!(
        other.lookup(&mut conn, &k, b"{\"a\":1}").await.unwrap(),
        Seen::New
    );
}

#[tokio::test]
async fn of_two_concurrent_claims_one_wins_and_the_other_waits_for_its_commit() {
    let db = database().await;
    let keys = IdempotencyKeys::new("POST /things", Duration::from_hours(24));
    let k = key("race");

    let mut first = db.pool.begin().await.unwrap();
    assert!(
        keys.claim(&mut first, &k, b"r", Uuid::now_v7())
            .await
            .unwrap()
    );
    // The second claim blocks on the primary key until the first transaction ends.
    let second = {
        let (pool, keys, k) = (db.pool.clone(), keys.clone(), k.clone());
        tokio::spawn(async move { claim(&pool, &keys, &k, b"r").await })
    };
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), None, "both claims won");

    // A claim that rolls back leaves the key free for the next request.
    let free = key("rolled-back");
    let mut tx = db.pool.begin().await.unwrap();
    assert!(
        keys.claim(&mut tx, &free, b"r", Uuid::now_v7())
            .await
            .unwrap()
    );
    tx.rollback().await.unwrap();
    assert!(claim(&db.pool, &keys, &free, b"r").await.is_some());
}

#[tokio::test]
async fn an_expired_key_is_forgotten_taken_over_and_purged() {
    let db = database().await;
    let ttl = Duration::from_hours(1);
    let keys = IdempotencyKeys::new("POST /things", ttl);
    let (old, young) = (key("old"), key("young"));
    claim(&db.pool, &keys, &old, b"r").await.unwrap();
    claim(&db.pool, &keys, &young, b"r").await.unwrap();
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '2 hours' WHERE key = 'old'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        keys.lookup(&mut conn, &old, b"another").await.unwrap(),
        Seen::New
    );
    drop(conn);

    assert_eq!(
        idempotency::purge_expired(&db.pool, ttl, 1).await.unwrap(),
        1
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, ["young"]);

    // Expired but not yet purged: a new request takes the key over.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '2 hours'")
        .execute(&db.pool)
        .await
        .unwrap();
    let id = claim(&db.pool, &keys, &young, b"new request")
        .await
        .expect("taken over");
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        keys.lookup(&mut conn, &young, b"new request")
            .await
            .unwrap(),
        Seen::Created(id)
    );
}

//! Runs against the PostgreSQL server at `TEST_DATABASE_SERVER` (default
//! `postgres://postgres@127.0.0.1:5432`), each test in a database of its own that is dropped
//! afterwards, whether the test passed or not.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use platform::db;
use platform::health::{PostgresCheck, ReadinessCheck};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations");

fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database name nobody else uses; the database itself is left to the code under test to
/// create.
#[derive(Clone)]
struct Scratch {
    name: String,
    url: String,
}

impl Scratch {
    async fn exists(&self) -> bool {
        let mut connection = maintenance_connection().await;
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&self.name)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    }
}

async fn with_scratch_database<F, Fut>(test: F)
where
    F: FnOnce(Scratch) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = format!("platform_test_{}", uuid::Uuid::now_v7().simple());
    let scratch = Scratch {
        url: format!("{}/{name}", server_url()),
        name: name.clone(),
    };

    let outcome = AssertUnwindSafe(test(scratch)).catch_unwind().await;

    let mut connection = maintenance_connection().await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn maintenance_connection() -> PgConnection {
    PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("PostgreSQL is not reachable; set TEST_DATABASE_SERVER")
}

#[tokio::test]
async fn connect_creates_a_missing_database() {
    with_scratch_database(|database| async move {
        assert!(!database.exists().await);

        let pool = db::connect(&database.url).await.unwrap();

        assert!(database.exists().await);
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(one, 1);
        assert_eq!(PostgresCheck(pool.clone()).check().await, Ok(()));
        pool.close().await;

        // A second start finds the database in place.
        db::connect(&database.url).await.unwrap().close().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_starts_both_succeed() {
    with_scratch_database(|database| async move {
        let (first, second) = tokio::join!(db::connect(&database.url), db::connect(&database.url));

        first.unwrap().close().await;
        second.unwrap().close().await;
    })
    .await;
}

#[tokio::test]
async fn connect_and_migrate_applies_the_migrations() {
    with_scratch_database(|database| async move {
        let pool = db::connect_and_migrate(&database.url, &MIGRATOR)
            .await
            .unwrap();

        sqlx::query("INSERT INTO widgets (id, name) VALUES (1, 'sprocket')")
            .execute(&pool)
            .await
            .unwrap();
        let name: String = sqlx::query_scalar("SELECT name FROM widgets WHERE id = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(name, "sprocket");
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn a_closed_pool_fails_its_readiness_check() {
    with_scratch_database(|database| async move {
        let pool = db::connect(&database.url).await.unwrap();
        pool.close().await;

        assert!(PostgresCheck(pool).check().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_with_context() {
    // Port 1 is reserved and nothing listens there.
    let err = db::connect("postgres://postgres@127.0.0.1:1/nothing")
        .await
        .unwrap_err();

    assert!(
        format!("{err:#}").starts_with("Failed to connect to the maintenance database"),
        "{err:#}"
    );
}

#[tokio::test]
async fn errors_are_classified_by_what_trying_again_can_do() {
    use anyhow::Context as _;
    use platform::db::{ErrorClass, classify};

    let mut connection = maintenance_connection().await;
    // Refused data: a NUL byte in a text parameter, an integer out of range.
    let nul = sqlx::query("SELECT $1::text")
        .bind("a\0b")
        .execute(&mut connection)
        .await
        .context("Failed to run the statement")
        .unwrap_err();
    assert_eq!(classify(&nul), ErrorClass::InvalidData, "{nul:#}");
    let overflow = sqlx::query("SELECT 2147483647::int4 + 1")
        .execute(&mut connection)
        .await
        .context("Failed to run the statement")
        .unwrap_err();
    assert_eq!(classify(&overflow), ErrorClass::InvalidData, "{overflow:#}");
    // A statement the server cannot parse is neither: worth no waiting, and not the data's fault.
    let error = sqlx::query("SELEC 1")
        .execute(&mut connection)
        .await
        .context("Failed to run the statement")
        .unwrap_err();
    assert_eq!(classify(&error), ErrorClass::Other);
    // A server that does not answer.
    let error = PgConnection::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .context("Failed to connect")
        .unwrap_err();
    assert_eq!(classify(&error), ErrorClass::Unavailable, "{error:#}");
    // No database error at all.
    assert_eq!(classify(&anyhow::anyhow!("plain")), ErrorClass::Other);
}

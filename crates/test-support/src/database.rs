//! A PostgreSQL database per test, dropped with the test.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{
    AssertSqlSafe, Connection as _, Executor as _, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::postgres_server_url;

/// Every PostgreSQL server has it; `CREATE` and `DROP DATABASE` must run outside the database
/// they create or drop.
const MAINTENANCE_DATABASE: &str = "postgres";

/// Tests run in parallel, each with its own database and pool. Small pools keep a whole test
/// binary under PostgreSQL's default `max_connections` of 100.
const POOL_SIZE: u32 = 5;

/// Bounds the clean-up in [`Drop`], which blocks the test: a server that stopped answering must
/// not hang the test run.
const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh, empty database for one test, dropped when this value is.
///
/// ```no_run
/// # async fn example() -> Result<(), sqlx::Error> {
/// let db = test_support::TestDatabase::create().await;
/// sqlx::query("CREATE TABLE t (id int)").execute(&db.pool).await?;
/// // A service under test can connect on its own with `db.url`.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TestDatabase {
    /// `test_<uuid>`, with a version 7 UUID, so leftovers of crashed runs sort by creation time.
    pub name: String,
    /// The connection URL of this database.
    pub url: String,
    /// A pool connected to this database.
    pub pool: PgPool,
}

impl TestDatabase {
    /// Creates a new database on the server of [`postgres_server_url`].
    ///
    /// # Panics
    /// When no server is found or the database cannot be created: a test cannot go on without.
    pub async fn create() -> Self {
        let server_url = postgres_server_url().await;
        let name = format!("test_{}", Uuid::now_v7().simple());

        let mut maintenance =
            PgConnection::connect(&with_database(&server_url, MAINTENANCE_DATABASE))
                .await
                .unwrap_or_else(|error| {
                    panic!("cannot connect to PostgreSQL at {server_url}: {error}")
                });
        // Identifiers cannot be bound as parameters. The name is ours, `test_` and hex digits
        // only, so formatting it into the statement is safe.
        maintenance
            .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        // Closing only says goodbye to the server; the database exists either way.
        let _ = maintenance.close().await;

        let url = with_database(&server_url, &name);
        // Lazy, so nothing fallible stands between `CREATE DATABASE` and the value whose `Drop`
        // removes it. The URL parses: the same server URL has just been used to connect.
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_lazy(&url)
            .expect("test database URL");
        Self { name, url, pool }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let maintenance = (*self.pool.connect_options())
            .clone()
            .database(MAINTENANCE_DATABASE);
        let name = self.name.clone();
        // `Drop` is synchronous and usually runs inside the test's runtime, where blocking on a
        // future panics. A thread with a runtime of its own may block, and joining it means the
        // database is gone when `drop` returns.
        let outcome = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                tokio::time::timeout(DROP_TIMEOUT, drop_database(&maintenance, &name))
                    .await
                    .with_context(|| format!("no answer within {DROP_TIMEOUT:?}"))?
            })
        })
        .join();
        // Panicking in `drop` during a failing test's unwinding would abort the process and hide
        // the test's own failure; a leftover database is only clutter.
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(database = %self.name, "cannot drop test database: {error:#}");
            }
            Err(_panic) => {
                tracing::warn!(database = %self.name, "dropping the test database panicked");
            }
        }
    }
}

async fn drop_database(maintenance: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect_with(maintenance).await?;
    // `FORCE` ends the sessions still open on the database: the pool's, and any a service under
    // test opened with the URL.
    connection
        .execute(AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
        )))
        .await?;
    let _ = connection.close().await;
    Ok(())
}

/// `server_url` with `database` as its path, keeping any query (`?sslmode=…`) at the end.
pub(crate) fn with_database(server_url: &str, database: &str) -> String {
    match server_url.split_once('?') {
        Some((base, query)) => format!("{base}/{database}?{query}"),
        None => format!("{server_url}/{database}"),
    }
}

/// `url` without its path, i.e. the server's URL; a query (`?sslmode=…`) is kept.
pub(crate) fn without_database(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // The path starts at the first `/` after the scheme's `://`; `/` cannot occur unescaped in
    // the user info, host or port before it.
    let authority_start = base.find("://").map_or(0, |i| i + "://".len());
    let base = match base[authority_start..].find('/') {
        Some(path_start) => &base[..authority_start + path_start],
        None => base,
    };
    match query {
        Some(query) => format!("{base}?{query}"),
        None => base.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_gain_and_lose_their_database() {
        for (url, server) in [
            (
                "postgres://postgres@127.0.0.1:5432/orders",
                "postgres://postgres@127.0.0.1:5432",
            ),
            ("postgres://u:p@db:5432/", "postgres://u:p@db:5432"),
            ("postgres://u:p@db:5432", "postgres://u:p@db:5432"),
            (
                "postgresql://u@db/orders?sslmode=disable",
                "postgresql://u@db?sslmode=disable",
            ),
        ] {
            assert_eq!(without_database(url), server, "{url}");
        }

        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "test_1"),
            "postgres://postgres@127.0.0.1:5432/test_1"
        );
        assert_eq!(
            with_database("postgresql://u@db?sslmode=disable", "test_1"),
            "postgresql://u@db/test_1?sslmode=disable"
        );
    }

    async fn database_exists(name: &str) -> bool {
        let server_url = postgres_server_url().await;
        let mut other = PgConnection::connect(&with_database(&server_url, MAINTENANCE_DATABASE))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut other)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_test_database_is_usable_and_gone_after_drop() {
        let db = TestDatabase::create().await;
        assert!(db.name.starts_with("test_"), "{}", db.name);
        assert!(db.url.ends_with(&format!("/{}", db.name)), "{}", db.url);

        sqlx::query("CREATE TABLE greeting (text text NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO greeting VALUES ('hello')")
            .execute(&db.pool)
            .await
            .unwrap();
        // The URL reaches the same database on a connection of its own, as a service would.
        let mut own = PgConnection::connect(&db.url).await.unwrap();
        let text: String = sqlx::query_scalar("SELECT text FROM greeting")
            .fetch_one(&mut own)
            .await
            .unwrap();
        assert_eq!(text, "hello");
        assert!(database_exists(&db.name).await);

        // Sessions still open on the database must not keep it alive.
        let name = db.name.clone();
        drop(db);

        assert!(!database_exists(&name).await);
        drop(own);
    }

    #[tokio::test]
    async fn test_databases_can_be_created_side_by_side() {
        let (a, b) = tokio::join!(TestDatabase::create(), TestDatabase::create());
        assert_ne!(a.name, b.name);
    }
}

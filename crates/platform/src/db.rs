//! PostgreSQL connection pools.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// How long a query waits for a free connection before failing, rather than queueing forever
/// behind a saturated pool.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The maintenance database every PostgreSQL server has, used to create the service's own.
const MAINTENANCE_DATABASE: &str = "postgres";

/// SQLSTATE `duplicate_database`.
const DUPLICATE_DATABASE: &str = "42P04";
/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// Connects to `database_url`, creating the database first if it does not exist, so a service
/// needs nothing but a running server.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("Failed to parse the database URL")?;
    if let Some(database) = options.get_database() {
        create_database_if_missing(&options, database).await?;
    }
    PgPoolOptions::new()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .context("Failed to connect to the database")
}

/// [`connect`], then applies the service's embedded migrations (`sqlx::migrate!()`).
pub async fn connect_and_migrate(
    database_url: &str,
    migrator: &Migrator,
) -> anyhow::Result<PgPool> {
    let pool = connect(database_url).await?;
    migrator
        .run(&pool)
        .await
        .context("Failed to run the database migrations")?;
    Ok(pool)
}

async fn create_database_if_missing(
    options: &PgConnectOptions,
    database: &str,
) -> anyhow::Result<()> {
    let mut connection =
        PgConnection::connect_with(&options.clone().database(MAINTENANCE_DATABASE))
            .await
            .context("Failed to connect to the maintenance database")?;

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await
            .context("Failed to look up the database")?;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(database));
        match sqlx::query(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
        {
            Ok(_) => tracing::info!(database, "created the database"),
            // Another instance of the service, starting at the same time, got there first.
            Err(sqlx::Error::Database(err)) if created_concurrently(err.as_ref()) => {}
            Err(err) => {
                return Err(err).with_context(|| format!("Failed to create database {database}"));
            }
        }
    }

    connection
        .close()
        .await
        .context("Failed to close the maintenance connection")
}

/// Whether `CREATE DATABASE` failed because the database appeared after the existence check.
/// Which error that is depends on timing: PostgreSQL reports `duplicate_database` when the
/// other creation had committed, but a unique violation on the catalog index when both were in
/// flight together.
fn created_concurrently(err: &dyn sqlx::error::DatabaseError) -> bool {
    match err.code().as_deref() {
        Some(DUPLICATE_DATABASE) => true,
        Some(UNIQUE_VIOLATION) => err.constraint() == Some("pg_database_datname_index"),
        _ => false,
    }
}

/// Quotes an identifier for PostgreSQL: `CREATE DATABASE` takes no bind parameters.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a database error says about trying again, for code that must decide between waiting,
/// retrying and giving up (a Kafka handler, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database cannot be reached or refuses work for now (connection lost, server
    /// restarting, pool exhausted): wait and try again for as long as it lasts.
    Unavailable,
    /// The data itself is refused (SQLSTATE class 22: a value out of range, a NUL byte, invalid
    /// text): the same statement with the same data will fail again.
    InvalidData,
    /// Anything else (a deadlock, a serialisation failure, a constraint race, a bug): worth a
    /// few more tries.
    Other,
}

/// Classifies the first [`sqlx::Error`] in `error`'s chain; [`ErrorClass::Other`] when there is
/// none.
pub fn classify(error: &anyhow::Error) -> ErrorClass {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<sqlx::Error>())
        .map_or(ErrorClass::Other, classify_sqlx)
}

/// Classifies one [`sqlx::Error`]; see [`ErrorClass`].
pub fn classify_sqlx(error: &sqlx::Error) -> ErrorClass {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorClass::Unavailable,
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // 08: connection exception; 53: insufficient resources (too many connections,
            // disk full); 57P01-57P03: the server is shutting down or starting up.
            Some(code) if code.starts_with("08") || code.starts_with("53") => {
                ErrorClass::Unavailable
            }
            Some("57P01" | "57P02" | "57P03") => ErrorClass::Unavailable,
            Some(code) if code.starts_with("22") => ErrorClass::InvalidData,
            _ => ErrorClass::Other,
        },
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(quote_identifier("orders"), "\"orders\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}

//! The PostgreSQL server the scenarios create their databases on: where it is, creating and
//! dropping the run's databases, and URLs that name them.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// The PostgreSQL server when `DATABASE_URL` is not set; only its server part is used.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The database every PostgreSQL server has; the run's databases are created and dropped from
/// it.
const MAINTENANCE_DATABASE: &str = "postgres";
/// How long a query of the bench's own pools waits for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`]; its database name is replaced by each of the
/// run's own.
pub fn server_from_env() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// Fails, saying what to do, when no PostgreSQL answers at `server`.
pub async fn check_postgres(server: &str) -> anyhow::Result<()> {
    let url = database_url(server, MAINTENANCE_DATABASE)?;
    let connection = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&url))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|connected| connected.map_err(anyhow::Error::from));
    match connection {
        Ok(connection) => {
            let _ = connection.close().await;
            Ok(())
        }
        Err(error) => Err(error.context(format!(
            "no PostgreSQL answers at {} (DATABASE_URL, default {DEFAULT_DATABASE_URL}); start \
             it, or point DATABASE_URL at a server where this user may create databases",
            redact(server)
        ))),
    }
}

/// Creates `database` (which must not exist) and returns a pool of at most `max_connections`
/// to it.
pub async fn create(server: &str, database: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let mut connection = PgConnection::connect(&database_url(server, MAINTENANCE_DATABASE)?)
        .await
        .context("Failed to connect to create a bench database")?;
    let statement = format!("CREATE DATABASE {}", quote_identifier(database));
    sqlx::query(AssertSqlSafe(statement))
        .execute(&mut connection)
        .await
        .with_context(|| format!("Failed to create database {database}"))?;
    let _ = connection.close().await;
    pool(server, database, max_connections).await
}

/// A pool of at most `max_connections` to an existing `database`.
pub async fn pool(server: &str, database: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(&database_url(server, database)?)
        .await
        .with_context(|| format!("Failed to connect to database {database}"))
}

/// Drops the run's databases, whether they were created or not.
pub async fn drop_all(server: &str, databases: &[&str]) -> anyhow::Result<()> {
    let url = database_url(server, MAINTENANCE_DATABASE)?;
    let mut connection = PgConnection::connect(&url)
        .await
        .context("Failed to connect to drop the bench databases")?;
    for database in databases {
        // FORCE (PostgreSQL 13+): a connection of a killed service may still be closing.
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(database)
        );
        sqlx::query(AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .with_context(|| format!("Failed to drop database {database}; drop it by hand"))?;
    }
    let _ = connection.close().await;
    Ok(())
}

/// `server` (a `postgres://` URL) with its database replaced by `database`; user, password,
/// host, port and `?parameters` are kept.
pub fn database_url(server: &str, database: &str) -> anyhow::Result<String> {
    let (main, query) = match server.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (server, None),
    };
    let (scheme, rest) = main.split_once("://").with_context(|| {
        format!(
            "cannot read DATABASE_URL `{}`: expected postgres://user[:password]@host[:port][/db]",
            redact(server)
        )
    })?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut url = format!("{scheme}://{authority}/{database}");
    if let Some(query) = query {
        let _ = write!(url, "?{query}");
    }
    Ok(url)
}

/// The URL with its password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

/// Quotes an identifier for PostgreSQL: `CREATE DATABASE` and `DROP DATABASE` take no bind
/// parameters.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_the_server_and_replace_the_database() {
        for (server, expected) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/bench_x",
            ),
            ("postgres://db.example", "postgres://db.example/bench_x"),
            (
                "postgresql://u:p@h:6543/app?sslmode=disable",
                "postgresql://u:p@h:6543/bench_x?sslmode=disable",
            ),
            (
                "postgres://h/?application_name=a",
                "postgres://h/bench_x?application_name=a",
            ),
        ] {
            assert_eq!(database_url(server, "bench_x").unwrap(), expected);
        }
        assert!(database_url("127.0.0.1:5432", "x").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@h:5432/db?x=1"),
            "postgres://user:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432"),
            "postgres://postgres@127.0.0.1:5432"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("bench_1"), "\"bench_1\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}

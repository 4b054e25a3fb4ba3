#![doc = include_str!("../README.md")]

mod envelope;
mod projector;
mod publisher;

pub use envelope::{EventEnvelope, EventKind, Payload, SCHEMA_VERSION};
pub use projector::{DEFAULT_PROJECTION_CONCURRENCY, Projector, ReadModel, rebuild};
pub use publisher::EntityTopic;

/// Creates this crate's tables (`projection_revisions`, `projections`) in a consuming service's
/// database. Its own migration history table keeps it apart from the service's migrations.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_integration_events_migrations");
    migrator.run(pool).await.map_err(|e| {
        anyhow::Error::new(e).context("Failed to run the integration-events migrations")
    })
}

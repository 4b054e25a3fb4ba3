#![doc = include_str!("../README.md")]

pub mod admin;
mod store;

pub use store::{DeadLetter, DeadLetterStore, ReplayOutcome, Replayed, SetAside, State};

/// The most items a page of [`DeadLetterStore::list`] holds.
pub const MAX_PAGE: u32 = 500;

/// Creates this crate's table (`consumer_dead_letters`) in a consuming service's database. Its
/// own migration history table keeps it apart from the service's migrations.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_dead_letters_migrations");
    migrator
        .run(pool)
        .await
        .map_err(|e| anyhow::Error::new(e).context("Failed to run the dead-letters migrations"))
}

/// Deletes the dead letters replayed or dropped longer than `age` ago (on the database's clock),
/// in chunks, and returns how many; counted in
/// `retention_deleted_rows_total{what="consumer_dead_letters"}`. Those still `dead` stay,
/// however old: they wait for a decision.
///
/// A deleted row no longer recognises its message: if Kafka delivers it again (a consumer group
/// reset) and it fails again, it is set aside anew. Keep `age` longer than the topic's retention
/// to avoid that.
pub async fn purge_decided(pool: &sqlx::PgPool, age: std::time::Duration) -> anyhow::Result<u64> {
    platform::retention::delete_in_chunks(
        pool,
        "consumer_dead_letters",
        "DELETE FROM consumer_dead_letters WHERE id IN (
             SELECT id FROM consumer_dead_letters
             WHERE state <> 'dead'
               AND state_changed_at < clock_timestamp() - make_interval(secs => $1)
             LIMIT $2)",
        age,
    )
    .await
}

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

#![doc = include_str!("../README.md")]

pub mod admin;
mod backoff;
mod listener;
mod message;
mod record;
mod relay;

use anyhow::Context as _;
use sqlx::PgPool;

pub use admin::ParkedRow;
pub use message::{InvalidMessage, OutboxMessage, STANDARD_OVERHEAD, TOMBSTONE_MESSAGE_TYPE};
pub use record::{Backlog, MAX_MESSAGE_BYTES, NOTIFY_CHANNEL, Outbox, PayloadTooLarge};
pub use relay::{LOCK_HOLDER_IDLE_TIMEOUT, OutboxRelay, RELAY_LOCK_KEY, RelaySettings};

/// The table that records which of this crate's migrations ran. Not sqlx's default
/// `_sqlx_migrations`, which holds the service's own: sharing it, each migrator would see the
/// other's versions as unknown and refuse to run.
pub const MIGRATIONS_TABLE: &str = "_outbox_migrations";

/// Creates or updates the `outbox` table with this crate's embedded migrations.
///
/// Call it at start, after the service's own migrations; it is idempotent and safe when several
/// replicas start at once (sqlx serialises migrators with an advisory lock).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .context("Failed to run the outbox migrations")
}

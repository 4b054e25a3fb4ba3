//! Retention: deleting the records a service no longer needs, in chunks, counted by kind.
//!
//! The pattern crates (task queue, task scheduler, iterator) each offer a purge of their own
//! tables built on [`delete_in_chunks`]; a service runs them, and its own, from a recurring
//! schedule with the period and the cron expression of [`RetentionConfig`].

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, PgPool};

use crate::config::{ConfigError, Env};

/// Rows one `DELETE` removes at most: one statement never holds many row locks or writes a
/// burst of WAL, however much piled up (a first run after a long stop, say).
pub const DELETE_CHUNK: i64 = 10_000;

/// The counter of deleted rows, labelled `what` (the kind of record, e.g. `task_executions`).
pub const DELETED_ROWS_METRIC: &str = "retention_deleted_rows_total";

/// `RETENTION_PERIOD`'s default: a week, the broker's default topic retention. An execution
/// record must outlive every copy of its message, so a deployment that keeps its topics longer
/// needs a longer period (see the services' READMEs).
pub const DEFAULT_PERIOD: Duration = Duration::from_hours(7 * 24);

/// `RETENTION_CRON`'s default: every hour at minute 17 (croner's syntax with a leading seconds
/// field), off the full hour that other schedules favour.
pub const DEFAULT_CRON: &str = "0 17 * * * *";

/// Adds `rows` to `retention_deleted_rows_total{what}`.
pub fn count_deleted(what: &'static str, rows: u64) {
    metrics::counter!(DELETED_ROWS_METRIC, "what" => what).increment(rows);
}

/// Runs `statement` until it deletes fewer than [`DELETE_CHUNK`] rows, counts them as `what`,
/// and returns how many it deleted.
///
/// `statement` deletes at most `$2` rows (a `LIMIT` in a sub-select) older than `$1` seconds,
/// measured on the database's clock: `... < clock_timestamp() - make_interval(secs => $1)`.
/// The seconds are a double: an interval bound from a `Duration` would fail for sub-microsecond
/// values. It is one of the caller's constants, never input.
///
/// # Errors
/// When a statement fails; the chunks deleted before it stay deleted (and counted).
pub async fn delete_in_chunks(
    pool: &PgPool,
    what: &'static str,
    statement: &'static str,
    age: Duration,
) -> anyhow::Result<u64> {
    let mut deleted = 0;
    loop {
        let chunk = sqlx::query(AssertSqlSafe(statement))
            .bind(age.as_secs_f64())
            .bind(DELETE_CHUNK)
            .execute(pool)
            .await
            .with_context(|| format!("Failed to delete expired {what}"))?
            .rows_affected();
        deleted += chunk;
        count_deleted(what, chunk);
        if chunk < DELETE_CHUNK.unsigned_abs() {
            return Ok(deleted);
        }
    }
}

/// When a service deletes what it no longer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `RETENTION_PERIOD` (default `7d`): records are deleted this long after they were done
    /// with (executed, fired, delivered, finished).
    pub period: Duration,
    /// `RETENTION_CRON` (default `0 17 * * * *`, hourly): when the `purge-expired-records`
    /// schedule fires, a cron expression in croner's syntax (five fields, or six with a leading
    /// seconds field), read in UTC. Checked when the schedule is stored, at start.
    pub cron: String,
}

impl RetentionConfig {
    /// Reads `RETENTION_PERIOD` (a positive duration) and `RETENTION_CRON`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            period: env.positive_duration_or("RETENTION_PERIOD", DEFAULT_PERIOD)?,
            cron: env.string_or("RETENTION_CRON", DEFAULT_CRON),
        })
    }

    /// Refuses a `RETENTION_PERIOD` shorter than `floor`, which the caller's `reason` explains
    /// (e.g. "records must outlive the idempotency keys that point at them").
    pub fn require_at_least(
        &self,
        floor: Duration,
        floor_name: &str,
        reason: &str,
    ) -> Result<(), ConfigError> {
        if self.period < floor {
            return Err(ConfigError::invalid(
                "RETENTION_PERIOD",
                &format!("{}s", self.period.as_secs()),
                &format!(
                    "must be at least {floor_name} ({}s): {reason}",
                    floor.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_a_week_and_hourly() {
        let config =
            RetentionConfig::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).unwrap();
        assert_eq!(config.period, Duration::from_hours(168));
        assert_eq!(config.cron, "0 17 * * * *");
    }

    #[test]
    fn a_bad_period_is_refused_naming_the_variable() {
        for bad in ["0s", "7", "a week"] {
            let error = RetentionConfig::from_env(&Env::from_pairs([("RETENTION_PERIOD", bad)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("RETENTION_PERIOD"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_period_below_its_floor_is_refused_with_the_reason() {
        let config =
            RetentionConfig::from_env(&Env::from_pairs([("RETENTION_PERIOD", "1h")])).unwrap();
        let error = config
            .require_at_least(Duration::from_hours(24), "IDEMPOTENCY_KEY_TTL", "because")
            .unwrap_err()
            .to_string();
        assert!(error.contains("RETENTION_PERIOD"), "{error}");
        assert!(error.contains("IDEMPOTENCY_KEY_TTL"), "{error}");
        assert!(
            config
                .require_at_least(Duration::from_hours(1), "X", "because")
                .is_ok()
        );
    }
}

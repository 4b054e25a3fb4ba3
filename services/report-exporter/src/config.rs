use std::path::PathBuf;
use std::time::Duration;

pub use platform::config::{AdminConfig, AdminToken};
use platform::config::{CommonConfig, ConfigError, Env};
pub use platform::retention::RetentionConfig;
use task_scheduler::calendar::timezone_from_env;

pub const SERVICE_NAME: &str = "report-exporter";

/// The service's own task queue: the nightly export's trigger.
pub const DEFAULT_TASKS_TOPIC: &str = "report-exporter.tasks.v1";
/// Where the exports' steps travel: `iterator::iterations_topic(SERVICE_NAME)`.
pub const DEFAULT_ITERATIONS_TOPIC: &str = "report-exporter.iterations.v1";
const DEFAULT_EXPORT_DIR: &str = "exports";
const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8084";
const DEFAULT_RECIPIENT: &str = "reports@example.com";
/// 02:00:00 every day: croner's syntax with a leading seconds field.
const DEFAULT_NIGHTLY_CRON: &str = "0 0 2 * * *";
const DEFAULT_NIGHTLY_TIMEZONE: &str = "UTC";

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `KAFKA_CONSUMER_GROUP_PREFIX` (default `report-exporter`): the start of the service's
    /// consumer group names, e.g. `report-exporter.orders_view.g1`. Replicas that share a
    /// database must share the groups; a deployment with a database of its own (a second
    /// environment on the same Kafka cluster, each test) needs a prefix of its own, or it would
    /// take partitions, and their events, away from the other's read model.
    pub consumer_group_prefix: String,
    /// `EXPORT_TASKS_TOPIC` (default `report-exporter.tasks.v1`): the service's own task queue,
    /// which the nightly schedule fires into. Only tests change it, to get a queue of their own.
    pub tasks_topic: String,
    /// `EXPORT_ITERATIONS_TOPIC` (default `report-exporter.iterations.v1`): where the exports'
    /// steps travel between the service's replicas. A second deployment with a database of its
    /// own on the same Kafka cluster (each test) should have its own: the steps of the other's
    /// exports would reach it too, to be skipped as unknown jobs.
    pub iterations_topic: String,
    /// `EXPORT_DIR` (default `exports`, relative to the working directory): where the CSV
    /// files are written. Created at start. Replicas must share it (a shared volume): any of
    /// them may write the next chunk of an export, or serve its download.
    pub export_dir: PathBuf,
    /// `EXPORT_PUBLIC_URL` (default `http://127.0.0.1:8084`): the service's base URL as users
    /// reach it, for the download link in the export-ready notification.
    pub public_url: String,
    pub nightly: NightlyConfig,
    /// `ADMIN_ROUTES` and `ADMIN_TOKEN`: the schedule admin endpoints and their bearer token.
    pub admin: AdminConfig,
    /// `EXPORTS_AUTH` and `EXPORTS_TOKEN`: who may use `/exports`.
    pub exports_auth: ExportsAuth,
    /// `IDEMPOTENCY_KEY_TTL` (default `24h`): how long an `Idempotency-Key` of `POST /exports`
    /// is remembered; a retry after that starts a new export.
    pub idempotency_ttl: Duration,
    /// `RETENTION_PERIOD` (default `7d`, at least `IDEMPOTENCY_KEY_TTL`) and `RETENTION_CRON`
    /// (default `0 17 * * * *`): when the `purge-expired-records` schedule deletes finished
    /// exports and the records the service no longer needs.
    pub retention: RetentionConfig,
}

/// Who may start, watch, control and download exports. An export holds every customer's e-mail
/// address, so the default is a bearer token, with the same rules as `ADMIN_TOKEN`: no default
/// token, constant-time comparison (`platform::http::admin::protect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportsAuth {
    /// `EXPORTS_AUTH=false`, for local use only: anyone who reaches the port may.
    Open,
    /// Every `/exports` route answers only requests with `Authorization: Bearer <EXPORTS_TOKEN>`.
    Bearer(AdminToken),
}

impl ExportsAuth {
    /// Reads `EXPORTS_AUTH` (default `true`) and, while it is `true`, the required
    /// `EXPORTS_TOKEN`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if !env.parse_or("EXPORTS_AUTH", true)? {
            return Ok(Self::Open);
        }
        let token = env.get("EXPORTS_TOKEN").ok_or_else(|| {
            ConfigError::invalid(
                "EXPORTS_TOKEN",
                "",
                "required while EXPORTS_AUTH is true (the default): exports hold every \
                 customer's e-mail address. Set a long random token, e.g. `openssl rand -hex 32`, \
                 or EXPORTS_AUTH=false on a machine nobody else reaches",
            )
        })?;
        Ok(Self::Bearer(AdminToken::new(token)))
    }
}

/// The `nightly-orders-export` recurring schedule, upserted at every start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NightlyConfig {
    /// `NIGHTLY_EXPORT_CRON` (default `0 0 2 * * *`, 02:00 every day): a cron expression in
    /// croner's syntax, five fields or six with a leading seconds field.
    pub cron: String,
    /// `NIGHTLY_EXPORT_TIMEZONE` (default `UTC`): the IANA time zone of the cron expression
    /// and of the calendar day exported.
    pub timezone: String,
    /// `EXPORT_RECIPIENT` (default `reports@example.com`): who is told about nightly exports,
    /// and about exports whose request names nobody.
    pub recipient: String,
    /// `NIGHTLY_EXPORT_CATCH_UP` (default `7`, 1 to 366): after a downtime, each missed night
    /// is exported once, up to this many of the latest; older missed nights are skipped.
    pub catch_up: u32,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let idempotency_ttl =
            env.positive_duration_or("IDEMPOTENCY_KEY_TTL", Duration::from_hours(24))?;
        let retention = RetentionConfig::from_env(env)?;
        retention.require_at_least(
            idempotency_ttl,
            "IDEMPOTENCY_KEY_TTL",
            "a retried POST /exports answers with the export its Idempotency-Key points at, so \
             exports must outlive the keys",
        )?;
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8084, "report_exporter")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
            tasks_topic: env.string_or("EXPORT_TASKS_TOPIC", DEFAULT_TASKS_TOPIC),
            iterations_topic: env.string_or("EXPORT_ITERATIONS_TOPIC", DEFAULT_ITERATIONS_TOPIC),
            export_dir: PathBuf::from(env.string_or("EXPORT_DIR", DEFAULT_EXPORT_DIR)),
            public_url: env.string_or("EXPORT_PUBLIC_URL", DEFAULT_PUBLIC_URL),
            nightly: NightlyConfig::from_env(env)?,
            admin: AdminConfig::from_env(env)?,
            exports_auth: ExportsAuth::from_env(env)?,
            idempotency_ttl,
            retention,
        })
    }
}

impl NightlyConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let timezone = timezone_from_env(env, "NIGHTLY_EXPORT_TIMEZONE", DEFAULT_NIGHTLY_TIMEZONE)?;
        Ok(Self {
            cron: env.string_or("NIGHTLY_EXPORT_CRON", DEFAULT_NIGHTLY_CRON),
            timezone,
            recipient: env.string_or("EXPORT_RECIPIENT", DEFAULT_RECIPIENT),
            catch_up: env.count_in_or("NIGHTLY_EXPORT_CATCH_UP", 7, 1..=366)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_group_prefix_defaults_to_the_service_name() {
        let config = Config::from_env(&Env::from_pairs([
            ("ADMIN_ROUTES", "false"),
            ("EXPORTS_AUTH", "false"),
        ]))
        .unwrap();
        assert_eq!(config.consumer_group_prefix, "report-exporter");

        let config = Config::from_env(&Env::from_pairs([
            ("KAFKA_CONSUMER_GROUP_PREFIX", "report-exporter-staging"),
            ("ADMIN_ROUTES", "false"),
            ("EXPORTS_AUTH", "false"),
        ]))
        .unwrap();
        assert_eq!(config.consumer_group_prefix, "report-exporter-staging");
    }

    #[test]
    fn exports_need_a_token_unless_they_are_opened_for_local_use() {
        let error = Config::from_env(&Env::from_pairs([("ADMIN_ROUTES", "false")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("EXPORTS_TOKEN"), "{error}");

        let open = Env::from_pairs([("ADMIN_ROUTES", "false"), ("EXPORTS_AUTH", "false")]);
        assert_eq!(
            Config::from_env(&open).unwrap().exports_auth,
            ExportsAuth::Open
        );
        let guarded = Env::from_pairs([("ADMIN_ROUTES", "false"), ("EXPORTS_TOKEN", "t0k3n")]);
        assert_eq!(
            Config::from_env(&guarded).unwrap().exports_auth,
            ExportsAuth::Bearer(AdminToken::new("t0k3n"))
        );
    }

    #[test]
    fn exports_are_kept_at_least_as_long_as_the_idempotency_keys_that_point_at_them() {
        let open = [("ADMIN_ROUTES", "false"), ("EXPORTS_AUTH", "false")];
        let config = Config::from_env(&Env::from_pairs(open)).unwrap();
        assert_eq!(config.retention.period, Duration::from_hours(7 * 24));

        let error = Config::from_env(&Env::from_pairs(open).with("RETENTION_PERIOD", "12h"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("RETENTION_PERIOD"), "{error}");
        assert!(error.contains("IDEMPOTENCY_KEY_TTL"), "{error}");
        assert!(
            Config::from_env(
                &Env::from_pairs(open)
                    .with("RETENTION_PERIOD", "12h")
                    .with("IDEMPOTENCY_KEY_TTL", "1h")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_bad_time_zone_is_refused_naming_the_variable() {
        let error = Config::from_env(&Env::from_pairs([("NIGHTLY_EXPORT_TIMEZONE", "Mars/Base")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("NIGHTLY_EXPORT_TIMEZONE"), "{error}");
    }
}

use std::time::Duration;

pub use platform::config::{AdminConfig, AdminToken};
use platform::config::{CommonConfig, ConfigError, Env, parse_duration};
pub use platform::retention::RetentionConfig;
use reqwest::Url;
use task_scheduler::calendar::timezone_from_env;

pub const SERVICE_NAME: &str = "notifications";

/// The queue this service works off; the name is part of the contract
/// (`docs/contracts/notifications.tasks.v1.md`).
pub const DEFAULT_TASKS_TOPIC: &str = "notifications.tasks.v1";

const DEFAULT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_mins(1),
];
const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries waiting on the provider at once. A waiting delivery holds no database connection
/// (see `workers`), only a future and an HTTP connection, so this can be far above the pool's
/// size: with a provider that answers in 100 ms, 256 allow about 2,500 deliveries a second.
const DEFAULT_CONCURRENCY: u32 = 256;
/// The most `NOTIFY_CONCURRENCY` allows: each delivery in flight holds a socket to the provider,
/// and a process has some thousands of file descriptors.
const MAX_CONCURRENCY: u32 = 10_000;
/// The most `NOTIFY_RATE_LIMIT` allows, in deliveries per second; 0 means no limit.
const MAX_RATE_LIMIT: u32 = 100_000;
/// 06:00:00 every day: croner's syntax with a leading seconds field.
const DEFAULT_DIGEST_CRON: &str = "0 0 6 * * *";
const DEFAULT_DIGEST_TIMEZONE: &str = "UTC";
const DEFAULT_DIGEST_RECIPIENT: &str = "ops@example.com";

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `KAFKA_CONSUMER_GROUP_PREFIX` (default `notifications`): the task worker's consumer group.
    /// Replicas share it, and so split the queue's partitions between them; a second deployment
    /// with a database of its own on the same Kafka cluster (each test, say) needs its own, or
    /// the two would take tasks away from each other.
    pub consumer_group_prefix: String,
    /// `NOTIFY_TASKS_TOPIC` (default `notifications.tasks.v1`): the queue's main topic; its retry
    /// and dead-letter topics are named after it. Only tests change it, to get a queue of their
    /// own: producers such as orders always publish to `notifications.tasks.v1`.
    pub tasks_topic: String,
    /// `NOTIFY_RETRY_DELAYS` (default `1s,10s,60s`): how long a failed task waits on each retry
    /// level before its next attempt. After the last level it goes to the dead-letter topic.
    pub retry_delays: Vec<Duration>,
    pub provider: ProviderConfig,
    /// `NOTIFY_CONCURRENCY` (default 256, 1 to 10,000): at most this many deliveries (every
    /// notification task type and the digest, counted together) wait on the provider at once,
    /// per replica.
    pub concurrency: u32,
    /// `NOTIFY_RATE_LIMIT` (default 0, no limit; at most 100,000): at most this many deliveries
    /// start per second, per replica, with bursts of up to one second's worth. `None` when 0.
    pub rate_limit: Option<u32>,
    /// `ADMIN_ROUTES` and `ADMIN_TOKEN`: the dead-letter and schedule admin endpoints and their
    /// bearer token.
    pub admin: AdminConfig,
    pub digest: DigestConfig,
    /// `RETENTION_PERIOD` (default `7d`) and `RETENTION_CRON` (default `0 17 * * * *`): when
    /// the `purge-expired-records` schedule deletes what the service no longer needs.
    pub retention: RetentionConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8083, "notifications")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
            tasks_topic: env.string_or("NOTIFY_TASKS_TOPIC", DEFAULT_TASKS_TOPIC),
            retry_delays: retry_delays(env)?,
            provider: ProviderConfig::from_env(env)?,
            concurrency: env.count_in_or(
                "NOTIFY_CONCURRENCY",
                DEFAULT_CONCURRENCY,
                1..=MAX_CONCURRENCY,
            )?,
            rate_limit: Some(env.count_in_or("NOTIFY_RATE_LIMIT", 0, 0..=MAX_RATE_LIMIT)?)
                .filter(|&rate| rate > 0),
            admin: AdminConfig::from_env(env)?,
            digest: DigestConfig::from_env(env)?,
            retention: RetentionConfig::from_env(env)?,
        })
    }
}

/// The `daily-digest` recurring schedule, upserted at every start: a later start with other
/// values changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestConfig {
    /// `DIGEST_CRON` (default `0 0 6 * * *`, 06:00 every day): a cron expression in croner's
    /// syntax, five fields (`0 6 * * *`) or six with a leading seconds field. The scheduler
    /// parses it at start; a bad expression stops the service.
    pub cron: String,
    /// `DIGEST_TIMEZONE` (default `UTC`): the IANA time zone the cron expression is read in,
    /// and whose calendar day the digest covers.
    pub timezone: String,
    /// `DIGEST_RECIPIENT` (default `ops@example.com`): who gets the digest.
    pub recipient: String,
    /// `DIGEST_CATCH_UP` (default `7`, 1 to 366): after a downtime, a digest for each missed
    /// day, up to this many of the latest; older missed days get none.
    pub catch_up: u32,
}

impl DigestConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let timezone = timezone_from_env(env, "DIGEST_TIMEZONE", DEFAULT_DIGEST_TIMEZONE)?;
        Ok(Self {
            cron: env.string_or("DIGEST_CRON", DEFAULT_DIGEST_CRON),
            timezone,
            recipient: env.string_or("DIGEST_RECIPIENT", DEFAULT_DIGEST_RECIPIENT),
            catch_up: env.count_in_or("DIGEST_CATCH_UP", 7, 1..=366)?,
        })
    }
}

/// How notifications leave the service (`NOTIFY_PROVIDER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    /// `log`, the default: each notification is written to the log and nothing is sent. For
    /// running the system locally.
    Log,
    /// `webhook`: each notification is sent as a JSON POST to `url` (`NOTIFY_WEBHOOK_URL`, required),
    /// and a call may take `timeout` (`NOTIFY_WEBHOOK_TIMEOUT`, default `5s`).
    Webhook { url: Url, timeout: Duration },
}

impl ProviderConfig {
    /// Reads `NOTIFY_PROVIDER`, and for `webhook` `NOTIFY_WEBHOOK_URL` and
    /// `NOTIFY_WEBHOOK_TIMEOUT`, which mean nothing otherwise.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string_or("NOTIFY_PROVIDER", "log").as_str() {
            "log" => Ok(Self::Log),
            "webhook" => Ok(Self::Webhook {
                url: webhook_url(env)?,
                timeout: webhook_timeout(env)?,
            }),
            other => Err(ConfigError::invalid(
                "NOTIFY_PROVIDER",
                other,
                "use log (only log notifications) or webhook (POST them to NOTIFY_WEBHOOK_URL)",
            )),
        }
    }
}

/// `NOTIFY_RETRY_DELAYS`: durations separated by commas, one per retry level, e.g. `1s,10s,60s`.
fn retry_delays(env: &Env) -> Result<Vec<Duration>, ConfigError> {
    let Some(value) = env.get("NOTIFY_RETRY_DELAYS") else {
        return Ok(DEFAULT_RETRY_DELAYS.to_vec());
    };
    value
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| {
            ConfigError::invalid(
                "NOTIFY_RETRY_DELAYS",
                &value,
                &format!("{reason}; write one duration per retry level, e.g. 1s,10s,60s"),
            )
        })
}

fn webhook_url(env: &Env) -> Result<Url, ConfigError> {
    let value = env.get("NOTIFY_WEBHOOK_URL").ok_or_else(|| {
        ConfigError::invalid(
            "NOTIFY_WEBHOOK_URL",
            "",
            "required with NOTIFY_PROVIDER=webhook: the URL notifications are POSTed to",
        )
    })?;
    let url = Url::parse(&value)
        .map_err(|error| ConfigError::invalid("NOTIFY_WEBHOOK_URL", &value, &error.to_string()))?;
    // The workspace builds reqwest without TLS (see the root Cargo.toml): the provider must be
    // reachable over plain HTTP, e.g. a mail gateway on the private network.
    if url.scheme() != "http" {
        return Err(ConfigError::invalid(
            "NOTIFY_WEBHOOK_URL",
            url.as_str(),
            "an http:// URL is required (the service is built without TLS)",
        ));
    }
    Ok(url)
}

fn webhook_timeout(env: &Env) -> Result<Duration, ConfigError> {
    env.positive_duration_or("NOTIFY_WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    /// What every test needs to get past the admin check.
    const TOKEN: (&str, &str) = ("ADMIN_TOKEN", "s3cret");

    #[test]
    fn defaults_log_notifications_and_retry_after_1_10_and_60_seconds() {
        let config = Config::from_env(&env(&[TOKEN])).unwrap();

        assert_eq!(config.consumer_group_prefix, "notifications");
        assert_eq!(config.tasks_topic, "notifications.tasks.v1");
        assert_eq!(
            config.retry_delays,
            [
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_mins(1)
            ]
        );
        assert_eq!(config.provider, ProviderConfig::Log);
        assert_eq!(config.concurrency, 256);
        assert_eq!(config.rate_limit, None);
        assert_eq!(
            config.digest,
            DigestConfig {
                cron: "0 0 6 * * *".to_owned(),
                timezone: "UTC".to_owned(),
                recipient: "ops@example.com".to_owned(),
                catch_up: 7,
            }
        );
        assert_eq!(
            config.admin,
            AdminConfig::Enabled {
                token: AdminToken::new("s3cret")
            }
        );
    }

    #[test]
    fn the_webhook_provider_reads_its_url_and_timeout() {
        let provider = |pairs: &[(&str, &str)]| ProviderConfig::from_env(&env(pairs)).unwrap();

        assert_eq!(
            provider(&[
                ("NOTIFY_PROVIDER", "webhook"),
                ("NOTIFY_WEBHOOK_URL", "http://mail-gateway:8025/send"),
            ]),
            ProviderConfig::Webhook {
                url: Url::parse("http://mail-gateway:8025/send").unwrap(),
                timeout: Duration::from_secs(5),
            }
        );
        assert_eq!(
            provider(&[
                ("NOTIFY_PROVIDER", "webhook"),
                ("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9000"),
                ("NOTIFY_WEBHOOK_TIMEOUT", "300ms"),
            ]),
            ProviderConfig::Webhook {
                url: Url::parse("http://127.0.0.1:9000").unwrap(),
                timeout: Duration::from_millis(300),
            }
        );
        // Without `webhook`, its variables are not even read.
        assert_eq!(
            provider(&[("NOTIFY_WEBHOOK_TIMEOUT", "soon")]),
            ProviderConfig::Log
        );
    }

    #[test]
    fn retry_delays_are_a_list_of_durations() {
        let config = Config::from_env(&env(&[
            TOKEN,
            ("NOTIFY_RETRY_DELAYS", "200ms, 400ms,1m"),
            ("NOTIFY_TASKS_TOPIC", "notifications.tasks-test"),
            ("KAFKA_CONSUMER_GROUP_PREFIX", "notifications-staging"),
        ]))
        .unwrap();

        assert_eq!(
            config.retry_delays,
            [
                Duration::from_millis(200),
                Duration::from_millis(400),
                Duration::from_mins(1)
            ]
        );
        assert_eq!(config.tasks_topic, "notifications.tasks-test");
        assert_eq!(config.consumer_group_prefix, "notifications-staging");
    }

    #[test]
    fn delivery_limits_are_read_and_a_rate_limit_of_0_is_none() {
        let config = Config::from_env(&env(&[
            TOKEN,
            ("NOTIFY_CONCURRENCY", "10000"),
            ("NOTIFY_RATE_LIMIT", "50"),
        ]))
        .unwrap();
        assert_eq!(config.concurrency, 10_000);
        assert_eq!(config.rate_limit, Some(50));

        let config = Config::from_env(&env(&[
            TOKEN,
            ("NOTIFY_CONCURRENCY", "1"),
            ("NOTIFY_RATE_LIMIT", "0"),
        ]))
        .unwrap();
        assert_eq!(config.concurrency, 1);
        assert_eq!(config.rate_limit, None);
    }

    #[test]
    fn admin_routes_need_a_token_unless_they_are_disabled() {
        let error = Config::from_env(&env(&[])).unwrap_err().to_string();
        assert!(error.contains("ADMIN_TOKEN"), "{error}");

        let config = Config::from_env(&env(&[("ADMIN_ROUTES", "false")])).unwrap();
        assert_eq!(config.admin, AdminConfig::Disabled);
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let config = Config::from_env(&env(&[TOKEN])).unwrap();

        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("AdminToken(***)"), "{debug}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, variable) in [
            (&[("NOTIFY_PROVIDER", "smtp")][..], "NOTIFY_PROVIDER"),
            (&[("NOTIFY_PROVIDER", "webhook")][..], "NOTIFY_WEBHOOK_URL"),
            (
                &[
                    ("NOTIFY_PROVIDER", "webhook"),
                    ("NOTIFY_WEBHOOK_URL", "mail-gateway"),
                ][..],
                "NOTIFY_WEBHOOK_URL",
            ),
            (
                &[
                    ("NOTIFY_PROVIDER", "webhook"),
                    ("NOTIFY_WEBHOOK_URL", "https://mail.example.com"),
                ][..],
                "NOTIFY_WEBHOOK_URL",
            ),
            (
                &[
                    ("NOTIFY_PROVIDER", "webhook"),
                    ("NOTIFY_WEBHOOK_URL", "http://mail"),
                    ("NOTIFY_WEBHOOK_TIMEOUT", "0s"),
                ][..],
                "NOTIFY_WEBHOOK_TIMEOUT",
            ),
            (
                &[("NOTIFY_RETRY_DELAYS", "1s,,10s")][..],
                "NOTIFY_RETRY_DELAYS",
            ),
            (&[("NOTIFY_RETRY_DELAYS", "1")][..], "NOTIFY_RETRY_DELAYS"),
            (&[("NOTIFY_CONCURRENCY", "0")][..], "NOTIFY_CONCURRENCY"),
            (&[("NOTIFY_CONCURRENCY", "10001")][..], "NOTIFY_CONCURRENCY"),
            (&[("NOTIFY_CONCURRENCY", "many")][..], "NOTIFY_CONCURRENCY"),
            (&[("NOTIFY_RATE_LIMIT", "-1")][..], "NOTIFY_RATE_LIMIT"),
            (&[("NOTIFY_RATE_LIMIT", "100001")][..], "NOTIFY_RATE_LIMIT"),
            (&[("NOTIFY_RATE_LIMIT", "2.5")][..], "NOTIFY_RATE_LIMIT"),
            (&[("ADMIN_ROUTES", "yes")][..], "ADMIN_ROUTES"),
            (
                &[("DIGEST_TIMEZONE", "Mars/Olympus")][..],
                "DIGEST_TIMEZONE",
            ),
            (&[("DIGEST_CATCH_UP", "0")][..], "DIGEST_CATCH_UP"),
            (&[("DIGEST_CATCH_UP", "many")][..], "DIGEST_CATCH_UP"),
        ] {
            let mut pairs = pairs.to_vec();
            pairs.push(TOKEN);
            let error = Config::from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(error.contains(variable), "{pairs:?}: {error}");
        }
    }
}

//! Configuration from environment variables.
//!
//! Services read their settings through an [`Env`] rather than `std::env` so that tests can
//! describe an environment as plain pairs without touching the process (whose environment is
//! shared by every test thread).

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::telemetry::LogFormat;

/// The variables every service reads through [`CommonConfig::from_env`], with a one-line
/// description that includes the default. `RUST_LOG` is read by [`crate::telemetry::init`].
pub const COMMON_VARIABLES: &[(&str, &str)] = &[
    (
        "HTTP_ADDR",
        "Address the HTTP server listens on (default 127.0.0.1:<service port>)",
    ),
    (
        "DATABASE_URL",
        "PostgreSQL connection URL; the database is created if missing \
         (default postgres://postgres@127.0.0.1:5432/<service database>)",
    ),
    (
        "KAFKA_BOOTSTRAP_SERVERS",
        "Comma-separated Kafka brokers (default 127.0.0.1:9092)",
    ),
    (
        "KAFKA_SESSION_TIMEOUT",
        "How long a silent consumer stays in its group (default 6s, the shortest a default \
         Apache Kafka accepts); the local broker's group join takes half of it, so the local \
         scripts set 2s",
    ),
    (
        "LOG_FORMAT",
        "Log output: pretty for people, json for log shippers (default pretty)",
    ),
    (
        "RUST_LOG",
        "Log filter directives (default info,sqlx=warn,rdkafka=warn)",
    ),
    (
        "SHUTDOWN_TIMEOUT",
        "How long in-flight work may take to finish after SIGTERM (default 10s)",
    ),
    (
        "HTTP_REQUEST_TIMEOUT",
        "Longest an HTTP request may run before it is answered with 408 (default 30s)",
    ),
];

const DEFAULT_KAFKA_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";
/// Apache Kafka's default `group.min.session.timeout.ms`: a default broker refuses less.
const DEFAULT_KAFKA_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// librdkafka's lower limit is 1 ms; below 1 s a consumer's 500 ms heartbeat interval would not
/// fit twice into a session, so one late heartbeat would cost its membership.
const MIN_KAFKA_SESSION_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A configuration variable that is missing or cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {variable} is not set")]
    Missing { variable: String },
    #[error("invalid value \"{value}\" for environment variable {variable}: {reason}")]
    Invalid {
        variable: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// `variable` holds `value`, which cannot be used because of `reason`.
    pub fn invalid(variable: &str, value: &str, reason: &str) -> Self {
        Self::Invalid {
            variable: variable.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// A snapshot of environment variables.
///
/// An empty value counts as unset, so `FOO=` in a `.env` file or a compose file falls back to the
/// default instead of failing to parse.
#[derive(Clone)]
pub struct Env {
    variables: HashMap<String, String>,
}

impl Env {
    /// Takes a snapshot of the process environment.
    pub fn from_process() -> Self {
        // A value that is not UTF-8 is kept (lossily) rather than dropped, so that it fails to
        // parse with a visible message instead of silently falling back to the default.
        let variables = std::env::vars_os()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Self { variables }
    }

    /// An environment made of the given pairs only, for tests.
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        let variables = pairs
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        Self { variables }
    }

    /// The same environment with `name` set to `value`, for tests.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// The variable's value, or `None` when it is unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.variables
            .get(name)
            .filter(|value| !value.is_empty())
            .cloned()
    }

    /// The variable's value, or an error naming the variable when it is unset.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::Missing {
            variable: name.to_owned(),
        })
    }

    /// The variable's value, or `default` when it is unset.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// The variable parsed with [`FromStr`], or `default` when it is unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(name, default, |value| {
            value.parse().map_err(|err: T::Err| err.to_string())
        })
    }

    /// The variable parsed with [`parse_duration`] (`250ms`, `10s`, `15m`, `2h30m`, `7d`), or
    /// `default` when it is unset.
    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_with(name, default, parse_duration)
    }

    /// [`Self::duration_or`] for a timeout or an interval: zero is refused, naming `name`.
    pub fn positive_duration_or(
        &self,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration_or(name, default)?;
        if duration.is_zero() {
            return Err(ConfigError::invalid(name, "0", "must be longer than zero"));
        }
        Ok(duration)
    }

    /// [`Self::parse_or`] for a count that must lie in `range`; outside it is refused, naming
    /// `name` and the range.
    pub fn count_in_or(
        &self,
        name: &str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        self.parse_with(name, default, |value| {
            let count: u32 = value.parse().map_err(|err| format!("{err}"))?;
            if range.contains(&count) {
                Ok(count)
            } else {
                Err(format!(
                    "must be between {} and {}",
                    range.start(),
                    range.end()
                ))
            }
        })
    }

    fn parse_with<T>(
        &self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        parse(&value).map_err(|reason| ConfigError::Invalid {
            variable: name.to_owned(),
            value,
            reason,
        })
    }
}

impl fmt::Debug for Env {
    // The process environment holds secrets (passwords in URLs, tokens), so only the names are
    // shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.variables.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

/// Parses a duration written as integers with units, such as `250ms`, `10s`, `15m`, `1h`,
/// `2h30m` or `7d` (a day is 24 hours).
///
/// A bare number is rejected: whether `30` means seconds or milliseconds is exactly the kind of
/// ambiguity that turns into a production incident.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration such as \"10s\" is required".to_owned());
    }

    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after_digits) = rest.split_at(digits_len);
        if digits.is_empty() {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let unit_len = after_digits
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after_digits.len());
        let (unit, after_unit) = after_digits.split_at(unit_len);

        let amount: u64 = digits
            .parse()
            .map_err(|_| format!("{digits} is too large"))?;
        let seconds_per_unit = match unit {
            "ms" => None,
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            "" => {
                return Err(format!(
                    "a unit is required after {digits}: use ms, s, m, h or d (for example \"{digits}s\")"
                ));
            }
            other => return Err(format!("unknown unit \"{other}\": use ms, s, m, h or d")),
        };
        let part = match seconds_per_unit {
            None => Some(Duration::from_millis(amount)),
            Some(factor) => amount.checked_mul(factor).map(Duration::from_secs),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("\"{text}\" is too long a duration"))?;
        rest = after_unit;
    }
    Ok(total)
}

/// The settings every service shares.
#[derive(Clone)]
pub struct CommonConfig {
    pub service_name: &'static str,
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub kafka_bootstrap_servers: String,
    /// librdkafka's `session.timeout.ms` for every consumer of the service.
    pub kafka_session_timeout: Duration,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    pub request_timeout: Duration,
}

impl CommonConfig {
    /// Reads the [`COMMON_VARIABLES`]. `default_port` and `default_database` make a service run
    /// locally with no configuration at all, next to the other services.
    pub fn from_env(
        env: &Env,
        service_name: &'static str,
        default_port: u16,
        default_database: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            service_name,
            http_addr: env.parse_or(
                "HTTP_ADDR",
                SocketAddr::from((Ipv4Addr::LOCALHOST, default_port)),
            )?,
            database_url: env.string_or(
                "DATABASE_URL",
                &format!("postgres://postgres@127.0.0.1:5432/{default_database}"),
            ),
            kafka_bootstrap_servers: env
                .string_or("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP_SERVERS),
            kafka_session_timeout: kafka_session_timeout(env)?,
            log_format: env.parse_or("LOG_FORMAT", LogFormat::Pretty)?,
            shutdown_timeout: env.duration_or("SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT)?,
            request_timeout: env.duration_or("HTTP_REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT)?,
        })
    }
}

/// `KAFKA_SESSION_TIMEOUT` (default 6 s), at least 1 s: what [`CommonConfig`] reads, for other
/// programs that make consumers the way the services do (the bench).
pub fn kafka_session_timeout(env: &Env) -> Result<Duration, ConfigError> {
    const NAME: &str = "KAFKA_SESSION_TIMEOUT";
    let timeout = env.duration_or(NAME, DEFAULT_KAFKA_SESSION_TIMEOUT)?;
    if timeout < MIN_KAFKA_SESSION_TIMEOUT {
        return Err(ConfigError::invalid(
            NAME,
            &format!("{timeout:?}"),
            "must be at least 1s",
        ));
    }
    Ok(timeout)
}

impl fmt::Debug for CommonConfig {
    // Services log their configuration at startup; the database password must not end up there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonConfig")
            .field("service_name", &self.service_name)
            .field("http_addr", &self.http_addr)
            .field("database_url", &redact_password(&self.database_url))
            .field("kafka_bootstrap_servers", &self.kafka_bootstrap_servers)
            .field("kafka_session_timeout", &self.kafka_session_timeout)
            .field("log_format", &self.log_format)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A service's admin endpoints (`ADMIN_ROUTES`, default `true`) and the token that guards them
/// (`ADMIN_TOKEN`). [`crate::http::admin::protect`] puts routes behind the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminConfig {
    /// `ADMIN_ROUTES=false`: `/admin/...` does not exist (404).
    Disabled,
    /// `/admin/...` answers requests with `Authorization: Bearer <token>`, and only those.
    Enabled { token: AdminToken },
}

impl AdminConfig {
    /// Reads `ADMIN_ROUTES` and, while it is `true`, the required `ADMIN_TOKEN`: there is no
    /// default token, because a default that works is a default that stays in production.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if !env.parse_or("ADMIN_ROUTES", true)? {
            return Ok(Self::Disabled);
        }
        let token = env.get("ADMIN_TOKEN").ok_or_else(|| ConfigError::Invalid {
            variable: "ADMIN_TOKEN".to_owned(),
            value: String::new(),
            reason: "required while ADMIN_ROUTES is true (the default): set a long random token, \
                     e.g. `openssl rand -hex 32`, or ADMIN_ROUTES=false"
                .to_owned(),
        })?;
        Ok(Self::Enabled {
            token: AdminToken(token),
        })
    }
}

/// The bearer token of the admin endpoints. Its `Debug` hides it: services log their
/// configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Replaces the password in `scheme://user:password@host/...` with `***`.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|index| index + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |index| scheme_end + index);
    let authority = &url[scheme_end..authority_end];
    // The last '@' ends the user info: a password may itself contain '@' when percent-encoding
    // was forgotten.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}***{}",
            &url[..=scheme_end + colon],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = CommonConfig::from_env(&env(&[]), "orders", 8081, "orders").unwrap();

        assert_eq!(config.service_name, "orders");
        assert_eq!(config.http_addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(
            config.database_url,
            "postgres://postgres@127.0.0.1:5432/orders"
        );
        assert_eq!(config.kafka_bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(config.kafka_session_timeout, Duration::from_secs(6));
        assert_eq!(config.log_format, LogFormat::Pretty);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_kafka_session_timeout_is_read_and_at_least_a_second() {
        let read = |value| {
            CommonConfig::from_env(
                &env(&[("KAFKA_SESSION_TIMEOUT", value)]),
                "orders",
                8081,
                "orders",
            )
        };
        assert_eq!(
            read("2s").unwrap().kafka_session_timeout,
            Duration::from_secs(2)
        );
        let error = read("500ms").unwrap_err().to_string();
        assert!(error.contains("KAFKA_SESSION_TIMEOUT"), "{error}");
        assert!(error.contains("at least 1s"), "{error}");
    }

    #[test]
    fn variables_override_defaults() {
        let config = CommonConfig::from_env(
            &env(&[
                ("HTTP_ADDR", "0.0.0.0:9000"),
                ("DATABASE_URL", "postgres://app@db:5432/app"),
                ("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092"),
                ("LOG_FORMAT", "json"),
                ("SHUTDOWN_TIMEOUT", "2s"),
                ("HTTP_REQUEST_TIMEOUT", "1500ms"),
            ]),
            "orders",
            8081,
            "orders",
        )
        .unwrap();

        assert_eq!(config.http_addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.database_url, "postgres://app@db:5432/app");
        assert_eq!(config.kafka_bootstrap_servers, "kafka-1:9092,kafka-2:9092");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.shutdown_timeout, Duration::from_secs(2));
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn bad_http_addr_names_the_variable_and_the_value() {
        let err = CommonConfig::from_env(&env(&[("HTTP_ADDR", "abc")]), "orders", 8081, "orders")
            .unwrap_err();

        assert!(
            matches!(err, ConfigError::Invalid { ref variable, .. } if variable == "HTTP_ADDR")
        );
        assert_eq!(
            err.to_string(),
            "invalid value \"abc\" for environment variable HTTP_ADDR: invalid socket address syntax"
        );
    }

    #[test]
    fn bad_log_format_lists_the_allowed_values() {
        let err = CommonConfig::from_env(&env(&[("LOG_FORMAT", "xml")]), "orders", 8081, "orders")
            .unwrap_err();

        let message = err.to_string();
        assert!(message.contains("LOG_FORMAT"), "{message}");
        assert!(message.contains("\"pretty\" or \"json\""), "{message}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = env(&[("HTTP_ADDR", ""), ("NAME", "")]);

        assert_eq!(env.get("NAME"), None);
        assert_eq!(env.string_or("NAME", "fallback"), "fallback");
        assert_eq!(
            env.parse_or("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 1)))
                .unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 1))
        );
    }

    #[test]
    fn required_reports_the_missing_variable() {
        let err = env(&[]).required("TOPIC").unwrap_err();

        assert!(matches!(err, ConfigError::Missing { ref variable } if variable == "TOPIC"));
        assert_eq!(err.to_string(), "environment variable TOPIC is not set");
        assert_eq!(
            env(&[("TOPIC", "orders")]).required("TOPIC").unwrap(),
            "orders"
        );
    }

    #[test]
    fn parse_or_reports_the_parser_message() {
        let err = env(&[("BATCH_SIZE", "many")])
            .parse_or("BATCH_SIZE", 10_u32)
            .unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid value \"many\" for environment variable BATCH_SIZE: invalid digit found in string"
        );
    }

    #[test]
    fn durations_accept_integer_amounts_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_mins(15)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_hours(1)));
        assert_eq!(parse_duration("2h30m"), Ok(Duration::from_mins(150)));
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_hours(168)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_hours(36)));
    }

    #[test]
    fn durations_without_a_unit_are_rejected() {
        let reason = parse_duration("30").unwrap_err();
        assert!(reason.contains("a unit is required"), "{reason}");

        let reason = parse_duration("1m30").unwrap_err();
        assert!(reason.contains("a unit is required"), "{reason}");
    }

    #[test]
    fn malformed_durations_are_rejected() {
        for text in [
            "",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "3w",
            "10sec",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
        assert!(parse_duration(&format!("{}h", u64::MAX / 60)).is_err());
    }

    #[test]
    fn duration_or_names_the_variable() {
        let err = env(&[("SHUTDOWN_TIMEOUT", "10")])
            .duration_or("SHUTDOWN_TIMEOUT", Duration::from_secs(1))
            .unwrap_err();

        let message = err.to_string();
        assert!(
            message.starts_with(
                "invalid value \"10\" for environment variable SHUTDOWN_TIMEOUT: a unit is required"
            ),
            "{message}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let env = env(&[("DATABASE_URL", "postgres://app:hunter2@db/app")]);
        assert!(!format!("{env:?}").contains("hunter2"));

        let config = CommonConfig::from_env(&env, "orders", 8081, "orders").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgres://app:***@db/app"), "{debug}");
    }

    #[test]
    fn redaction_leaves_urls_without_a_password_alone() {
        assert_eq!(
            redact_password("postgres://app@db/app"),
            "postgres://app@db/app"
        );
        assert_eq!(redact_password("postgres://db/app"), "postgres://db/app");
        assert_eq!(redact_password("not a url"), "not a url");
        assert_eq!(
            redact_password("postgres://app:p@ss@db:5432/app?sslmode=disable"),
            "postgres://app:***@db:5432/app?sslmode=disable"
        );
    }

    #[test]
    fn admin_routes_need_a_token_unless_they_are_disabled() {
        let err = AdminConfig::from_env(&env(&[])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { ref variable, .. } if variable == "ADMIN_TOKEN")
        );
        assert!(err.to_string().contains("ADMIN_ROUTES=false"), "{err}");

        for pairs in [
            &[("ADMIN_ROUTES", "false")][..],
            &[("ADMIN_ROUTES", "false"), ("ADMIN_TOKEN", "s3cret")][..],
        ] {
            assert_eq!(
                AdminConfig::from_env(&env(pairs)).unwrap(),
                AdminConfig::Disabled
            );
        }
        for pairs in [
            &[("ADMIN_TOKEN", "s3cret")][..],
            &[("ADMIN_ROUTES", "true"), ("ADMIN_TOKEN", "s3cret")][..],
        ] {
            assert_eq!(
                AdminConfig::from_env(&env(pairs)).unwrap(),
                AdminConfig::Enabled {
                    token: AdminToken::new("s3cret")
                }
            );
        }
    }

    #[test]
    fn a_bad_admin_routes_value_names_the_variable() {
        let err = AdminConfig::from_env(&env(&[("ADMIN_ROUTES", "yes"), ("ADMIN_TOKEN", "t")]))
            .unwrap_err();

        assert!(
            matches!(err, ConfigError::Invalid { ref variable, .. } if variable == "ADMIN_ROUTES")
        );
    }

    #[test]
    fn the_admin_token_stays_out_of_debug_output() {
        let config = AdminConfig::from_env(&env(&[("ADMIN_TOKEN", "s3cret")])).unwrap();

        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("AdminToken(***)"), "{debug}");
    }

    #[test]
    fn every_common_variable_is_documented_with_a_default() {
        for (name, description) in COMMON_VARIABLES {
            assert!(description.contains("default"), "{name}: {description}");
        }
    }
}

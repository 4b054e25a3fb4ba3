use std::time::Duration;

pub use platform::config::{AdminConfig, AdminToken};
use platform::config::{CommonConfig, ConfigError, Env};
pub use platform::retention::RetentionConfig;

pub const SERVICE_NAME: &str = "orders";

/// orders' own task queue, where its schedules fire `CancelUnpaidOrder`; the name is part of
/// the contract (`docs/contracts/orders.tasks.v1.md`).
pub const DEFAULT_TASKS_TOPIC: &str = "orders.tasks.v1";

const DEFAULT_PAYMENT_TIMEOUT: Duration = Duration::from_mins(15);

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `KAFKA_CONSUMER_GROUP_PREFIX` (default `orders`): the start of the service's consumer
    /// group names, e.g. `orders.catalog_products.g1`. Replicas that share a database must share
    /// the groups; a deployment with a database of its own (a second environment on the same
    /// Kafka cluster, each test) needs a prefix of its own, or it would take partitions, and
    /// their events, away from the other's read model.
    pub consumer_group_prefix: String,
    /// `PAYMENT_TIMEOUT` (default `15m`): how long a new order waits for its payment. At
    /// `created_at` + this the order is cancelled if still unpaid; at half of it notifications
    /// sends a payment reminder. Seconds (`10s`) make both visible in a demo.
    pub payment_timeout: Duration,
    /// `ORDERS_TASKS_TOPIC` (default `orders.tasks.v1`): orders' own task queue, worked off by
    /// the service's task worker; its retry and dead-letter topics are named after it. Only
    /// tests change it, to get a queue of their own.
    pub tasks_topic: String,
    /// `ADMIN_ROUTES` and `ADMIN_TOKEN`: the schedule admin endpoints and their bearer token.
    pub admin: AdminConfig,
    /// `IDEMPOTENCY_KEY_TTL` (default `24h`): how long an `Idempotency-Key` of `POST /orders`
    /// is remembered; a retry after that places a new order.
    pub idempotency_ttl: Duration,
    /// `RETENTION_PERIOD` (default `7d`) and `RETENTION_CRON` (default `0 17 * * * *`): when
    /// the `purge-expired-records` schedule deletes what the service no longer needs.
    pub retention: RetentionConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8082, "orders")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
            payment_timeout: payment_timeout(env)?,
            tasks_topic: env.string_or("ORDERS_TASKS_TOPIC", DEFAULT_TASKS_TOPIC),
            admin: AdminConfig::from_env(env)?,
            idempotency_ttl: env
                .positive_duration_or("IDEMPOTENCY_KEY_TTL", Duration::from_hours(24))?,
            retention: RetentionConfig::from_env(env)?,
        })
    }
}

fn payment_timeout(env: &Env) -> Result<Duration, ConfigError> {
    let timeout = env.duration_or("PAYMENT_TIMEOUT", DEFAULT_PAYMENT_TIMEOUT)?;
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            "PAYMENT_TIMEOUT",
            "0",
            "must be longer than zero, or every order is cancelled as it is placed",
        ));
    }
    Ok(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every test of the whole configuration needs to get past the admin check.
    const TOKEN: (&str, &str) = ("ADMIN_TOKEN", "s3cret");

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied().chain([TOKEN]))
    }

    #[test]
    fn the_consumer_group_prefix_defaults_to_the_service_name() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.consumer_group_prefix, "orders");

        let config =
            Config::from_env(&env(&[("KAFKA_CONSUMER_GROUP_PREFIX", "orders-staging")])).unwrap();
        assert_eq!(config.consumer_group_prefix, "orders-staging");
    }

    #[test]
    fn an_order_waits_15_minutes_for_its_payment_on_orders_own_queue() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.payment_timeout, Duration::from_mins(15));
        assert_eq!(config.tasks_topic, "orders.tasks.v1");

        let config = Config::from_env(&env(&[
            ("PAYMENT_TIMEOUT", "10s"),
            ("ORDERS_TASKS_TOPIC", "orders.tasks-test"),
        ]))
        .unwrap();
        assert_eq!(config.payment_timeout, Duration::from_secs(10));
        assert_eq!(config.tasks_topic, "orders.tasks-test");

        for value in ["0s", "soon"] {
            let error = Config::from_env(&env(&[("PAYMENT_TIMEOUT", value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains("PAYMENT_TIMEOUT"), "{value}: {error}");
        }
    }

    #[test]
    fn admin_routes_need_a_token_unless_they_are_disabled() {
        let error = Config::from_env(&Env::from_pairs(Vec::<(&str, &str)>::new()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("ADMIN_TOKEN"), "{error}");

        let config = Config::from_env(&Env::from_pairs([("ADMIN_ROUTES", "false")])).unwrap();
        assert_eq!(config.admin, AdminConfig::Disabled);

        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(
            config.admin,
            AdminConfig::Enabled {
                token: AdminToken::new("s3cret")
            }
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}

use std::time::Duration;

use platform::config::{CommonConfig, ConfigError, Env};
use reqwest::Url;

pub const SERVICE_NAME: &str = "orders";

const DEFAULT_CATALOG_URL: &str = "http://127.0.0.1:8081";
const DEFAULT_CATALOG_TIMEOUT: Duration = Duration::from_secs(2);

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
    pub catalog_lookup: CatalogLookup,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8082, "orders")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
            catalog_lookup: CatalogLookup::from_env(env)?,
        })
    }
}

/// Where `POST /orders` looks up products and prices (`CATALOG_LOOKUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLookup {
    /// `local`, the default and the design: the `catalog_products` read model in the service's
    /// own database. Placing an order never calls catalog-cache.
    Local,
    /// `sync`: **a baseline for the benchmark only**, the design this service exists to
    /// replace. Every order calls catalog-cache's `GET /products/{product_id}` at `url`
    /// (`CATALOG_URL`, default `http://127.0.0.1:8081`), each call bounded by `timeout`
    /// (`CATALOG_TIMEOUT`, default `2s`), and fails with 503 while catalog-cache is down.
    Sync { url: Url, timeout: Duration },
}

impl CatalogLookup {
    /// Reads `CATALOG_LOOKUP`, and in `sync` mode `CATALOG_URL` and `CATALOG_TIMEOUT`, which
    /// mean nothing otherwise.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.string_or("CATALOG_LOOKUP", "local").as_str() {
            "local" => Ok(Self::Local),
            "sync" => Ok(Self::Sync {
                url: catalog_url(env)?,
                timeout: catalog_timeout(env)?,
            }),
            other => Err(invalid(
                "CATALOG_LOOKUP",
                other,
                "use local (the read model) or sync (the benchmark baseline)",
            )),
        }
    }
}

fn catalog_url(env: &Env) -> Result<Url, ConfigError> {
    let default = Url::parse(DEFAULT_CATALOG_URL).expect("the default catalog URL is valid");
    let url: Url = env.parse_or("CATALOG_URL", default)?;
    // The workspace builds reqwest without TLS: the services talk on a private network.
    if url.scheme() != "http" {
        return Err(invalid(
            "CATALOG_URL",
            url.as_str(),
            "an http:// URL is required",
        ));
    }
    Ok(url)
}

fn catalog_timeout(env: &Env) -> Result<Duration, ConfigError> {
    let timeout = env.duration_or("CATALOG_TIMEOUT", DEFAULT_CATALOG_TIMEOUT)?;
    if timeout.is_zero() {
        return Err(invalid(
            "CATALOG_TIMEOUT",
            "0",
            "must be longer than zero, or every call fails",
        ));
    }
    Ok(timeout)
}

fn invalid(variable: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        variable: variable.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    fn lookup(pairs: &[(&str, &str)]) -> Result<CatalogLookup, ConfigError> {
        CatalogLookup::from_env(&env(pairs))
    }

    #[test]
    fn the_read_model_is_the_default() {
        assert_eq!(lookup(&[]).unwrap(), CatalogLookup::Local);
        // Without `sync`, the baseline's variables are not even read.
        assert_eq!(
            lookup(&[("CATALOG_LOOKUP", "local"), ("CATALOG_TIMEOUT", "soon")]).unwrap(),
            CatalogLookup::Local
        );
    }

    #[test]
    fn sync_mode_reads_the_catalog_url_and_timeout() {
        assert_eq!(
            lookup(&[("CATALOG_LOOKUP", "sync")]).unwrap(),
            CatalogLookup::Sync {
                url: Url::parse("http://127.0.0.1:8081").unwrap(),
                timeout: Duration::from_secs(2),
            }
        );
        assert_eq!(
            lookup(&[
                ("CATALOG_LOOKUP", "sync"),
                ("CATALOG_URL", "http://catalog-cache:8081"),
                ("CATALOG_TIMEOUT", "250ms"),
            ])
            .unwrap(),
            CatalogLookup::Sync {
                url: Url::parse("http://catalog-cache:8081").unwrap(),
                timeout: Duration::from_millis(250),
            }
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (pairs, variable) in [
            (&[("CATALOG_LOOKUP", "remote")][..], "CATALOG_LOOKUP"),
            (
                &[("CATALOG_LOOKUP", "sync"), ("CATALOG_URL", "catalog-cache")][..],
                "CATALOG_URL",
            ),
            (
                &[
                    ("CATALOG_LOOKUP", "sync"),
                    ("CATALOG_URL", "https://catalog"),
                ][..],
                "CATALOG_URL",
            ),
            (
                &[("CATALOG_LOOKUP", "sync"), ("CATALOG_TIMEOUT", "2")][..],
                "CATALOG_TIMEOUT",
            ),
            (
                &[("CATALOG_LOOKUP", "sync"), ("CATALOG_TIMEOUT", "0s")][..],
                "CATALOG_TIMEOUT",
            ),
        ] {
            let error = lookup(pairs).unwrap_err().to_string();
            assert!(error.contains(variable), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn the_consumer_group_prefix_defaults_to_the_service_name() {
        let config = Config::from_env(&env(&[])).unwrap();
        assert_eq!(config.consumer_group_prefix, "orders");

        let config =
            Config::from_env(&env(&[("KAFKA_CONSUMER_GROUP_PREFIX", "orders-staging")])).unwrap();
        assert_eq!(config.consumer_group_prefix, "orders-staging");
    }
}

use platform::config::{CommonConfig, ConfigError, Env};

pub const SERVICE_NAME: &str = "report-exporter";

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
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8084, "report_exporter")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_group_prefix_defaults_to_the_service_name() {
        let config = Config::from_env(&Env::from_pairs(Vec::<(&str, &str)>::new())).unwrap();
        assert_eq!(config.consumer_group_prefix, "report-exporter");

        let config = Config::from_env(&Env::from_pairs([(
            "KAFKA_CONSUMER_GROUP_PREFIX",
            "report-exporter-staging",
        )]))
        .unwrap();
        assert_eq!(config.consumer_group_prefix, "report-exporter-staging");
    }
}

use platform::config::{AdminConfig, CommonConfig, ConfigError, Env};

pub const SERVICE_NAME: &str = "{{service}}";

/// The service's own task queue; the name is part of its contract.
pub const DEFAULT_TASKS_TOPIC: &str = "{{service}}.tasks.v1";

/// At minute 0 of every hour: croner's syntax with a leading seconds field.
const DEFAULT_SUMMARY_CRON: &str = "0 0 * * * *";

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `KAFKA_CONSUMER_GROUP_PREFIX` (default `{{service}}`): the task worker's consumer group.
    pub consumer_group_prefix: String,
    /// `{{ENV}}_TASKS_TOPIC` (default `{{service}}.tasks.v1`): only tests change it.
    pub tasks_topic: String,
    /// `{{ENV}}_SUMMARY_CRON` (default `0 0 * * * *`, hourly): when `summarize-items` fires.
    pub summary_cron: String,
    /// `ADMIN_ROUTES` and `ADMIN_TOKEN`: the shared admin routes and their bearer token.
    pub admin: AdminConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, {{port}}, "{{crate}}")?,
            consumer_group_prefix: env.string_or("KAFKA_CONSUMER_GROUP_PREFIX", SERVICE_NAME),
            tasks_topic: env.string_or("{{ENV}}_TASKS_TOPIC", DEFAULT_TASKS_TOPIC),
            summary_cron: env.string_or("{{ENV}}_SUMMARY_CRON", DEFAULT_SUMMARY_CRON),
            admin: AdminConfig::from_env(env)?,
        })
    }
}

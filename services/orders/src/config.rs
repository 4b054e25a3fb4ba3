use platform::config::{CommonConfig, ConfigError, Env};

pub const SERVICE_NAME: &str = "orders";

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8082, "orders")?,
        })
    }
}

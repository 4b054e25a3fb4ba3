use platform::config::{AdminConfig, CommonConfig, ConfigError, Env};

pub const SERVICE_NAME: &str = "catalog-cache";

/// Everything the service reads from its environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `ADMIN_ROUTES` and `ADMIN_TOKEN`: the outbox admin endpoints and their bearer token.
    pub admin: AdminConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env, SERVICE_NAME, 8081, "catalog_cache")?,
            admin: AdminConfig::from_env(env)?,
        })
    }
}

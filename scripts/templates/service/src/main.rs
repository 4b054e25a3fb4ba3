use {{crate}}::{Application, Config};
use platform::config::Env;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env(&Env::from_process())?;
    platform::telemetry::init(config.common.log_format);
    let shutdown = CancellationToken::new();
    platform::shutdown::on_signal(shutdown.clone());
    Application::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

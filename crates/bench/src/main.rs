#![doc = include_str!("../README.md")]

mod integration_events;
mod kafka;
mod progress;
mod report;
mod stats;

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

/// What a run does. Adding one: a sibling module with an `async fn run(&Options)`, a variant
/// here, and its arms in `name`, `about` and `run` (the compiler points at each of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Kafka,
    IntegrationEvents,
}

impl Scenario {
    const ALL: &[Self] = &[Self::Kafka, Self::IntegrationEvents];

    fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::IntegrationEvents => "integration-events",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Self::Kafka => {
                "asyncron's Producer and consumer runtime against raw rdkafka: produce and \
                 consume throughput, end-to-end latency"
            }
            Self::IntegrationEvents => {
                "orders' catalog read model against a synchronous call to catalog-cache: price \
                 lookup, POST /orders with catalog-cache up and frozen, propagation delay"
            }
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    async fn run(self, options: &Options) -> anyhow::Result<()> {
        match self {
            Self::Kafka => kafka::run(options).await,
            Self::IntegrationEvents => integration_events::run(options).await,
        }
    }
}

/// Settings shared by the scenarios; each one reads those that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Messages for the throughput rows.
    pub messages: usize,
    /// Messages for the latency rows (`kafka`); requests per side for the latency rows
    /// (`integration-events`, which derives its other counts from it).
    pub samples: usize,
    /// asyncron consumer's `max_in_flight_per_partition`; `None` keeps the runtime's default.
    pub max_in_flight: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            messages: 100_000,
            samples: 1_000,
            max_in_flight: None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Run(Scenario, Options),
}

fn usage() -> String {
    let defaults = Options::default();
    let mut text = "asyncron-bench: each asyncron pattern against its baseline, in one run.\n\n\
                    usage: cargo run -p asyncron-bench --release -- <SCENARIO> [OPTIONS]\n\n\
                    scenarios:\n"
        .to_owned();
    for scenario in Scenario::ALL {
        let _ = writeln!(text, "  {:<20} {}", scenario.name(), scenario.about());
    }
    let _ = write!(
        text,
        "\noptions:\n\
         \x20 --messages N        messages for the throughput rows (default {})\n\
         \x20 --samples N         messages for the latency rows; integration-events: orders per \
         side, see its README section (default {})\n\
         \x20 --max-in-flight N   asyncron consumer's max_in_flight_per_partition \
         (default: the runtime's)\n\
         \x20 -h, --help          this text\n\n\
         environment:\n\
         \x20 KAFKA_BOOTSTRAP_SERVERS   the broker (default {})\n\
         \x20 DATABASE_URL              integration-events: the PostgreSQL server its services' \
         databases are created on (default {})\n\
         \x20 RUST_LOG                  client and runtime logs on stderr (default: errors only)\n",
        defaults.messages,
        defaults.samples,
        kafka::DEFAULT_BOOTSTRAP,
        integration_events::DEFAULT_DATABASE_URL,
    );
    text
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    let mut scenario = None;
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        // `--name=value` and `--name value` are both accepted.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<usize> {
            let raw = match inline.clone() {
                Some(raw) => raw,
                None => args
                    .next()
                    .with_context(|| format!("{name} needs a value"))?,
            };
            let parsed: usize = raw
                .replace('_', "")
                .parse()
                .with_context(|| format!("{name} expects a positive number, got `{raw}`"))?;
            anyhow::ensure!(parsed > 0, "{name} must be at least 1");
            Ok(parsed)
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--messages" => options.messages = value("--messages")?,
            "--samples" => options.samples = value("--samples")?,
            "--max-in-flight" => options.max_in_flight = Some(value("--max-in-flight")?),
            flag if flag.starts_with('-') => anyhow::bail!("unknown option `{flag}`"),
            name => {
                anyhow::ensure!(
                    scenario.is_none(),
                    "only one scenario per run (got `{name}` too)"
                );
                let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                scenario = Some(Scenario::parse(name).with_context(|| {
                    format!("unknown scenario `{name}` (known: {})", known.join(", "))
                })?);
            }
        }
    }
    let scenario = scenario.context("which scenario? (see --help)")?;
    Ok(Command::Run(scenario, options))
}

fn init_logging() {
    // Client warnings would scribble over the progress bars; errors still show. `RUST_LOG`
    // (e.g. `RUST_LOG=warn` or `RUST_LOG=asyncron_kafka=debug`) shows more.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("error: {error:#}\nRun with --help to see the scenarios and options.");
            return ExitCode::from(2);
        }
    };
    let (scenario, options) = match command {
        Command::Help => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Command::Run(scenario, options) => (scenario, options),
    };
    init_logging();
    match scenario.run(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Command> {
        parse_args(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn defaults_apply_when_only_the_scenario_is_given() {
        assert_eq!(
            parse(&["kafka"]).unwrap(),
            Command::Run(Scenario::Kafka, Options::default())
        );
    }

    #[test]
    fn integration_events_is_a_scenario() {
        assert_eq!(
            parse(&["integration-events", "--samples", "100"]).unwrap(),
            Command::Run(
                Scenario::IntegrationEvents,
                Options {
                    samples: 100,
                    ..Options::default()
                }
            )
        );
    }

    #[test]
    fn options_accept_both_spellings() {
        let Command::Run(_, options) = parse(&[
            "kafka",
            "--messages",
            "20_000",
            "--samples=50",
            "--max-in-flight",
            "8",
        ])
        .unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(
            options,
            Options {
                messages: 20_000,
                samples: 50,
                max_in_flight: Some(8)
            }
        );
    }

    #[test]
    fn help_wins_and_lists_every_scenario() {
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["kafka", "-h"]).unwrap(), Command::Help);
        for scenario in Scenario::ALL {
            assert!(usage().contains(scenario.name()));
        }
    }

    #[test]
    fn mistakes_are_errors() {
        for args in [
            &[][..],
            &["kafkaa"],
            &["kafka", "kafka"],
            &["kafka", "--messages"],
            &["kafka", "--messages", "0"],
            &["kafka", "--messages", "many"],
            &["kafka", "--verbose"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be rejected");
        }
        let error = parse(&["task-queue"]).unwrap_err().to_string();
        assert!(error.contains("unknown scenario `task-queue`"), "{error}");
    }
}

#![doc = include_str!("../README.md")]

mod broker;
mod database;
mod integration_events;
mod iterator;
mod kafka;
mod order_client;
mod progress;
mod report;
mod scheduler;
mod services;
mod stats;
mod task_queue;

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;

/// What a run does. Adding one: a sibling module with an `async fn run(&Options)`, a variant
/// here, and its arms in `name`, `about` and `run` (the compiler points at each of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Kafka,
    IntegrationEvents,
    TaskQueue,
    Scheduler,
    Iterator,
}

impl Scenario {
    const ALL: &[Self] = &[
        Self::Kafka,
        Self::IntegrationEvents,
        Self::TaskQueue,
        Self::Scheduler,
        Self::Iterator,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::IntegrationEvents => "integration-events",
            Self::TaskQueue => "task-queue",
            Self::Scheduler => "scheduler",
            Self::Iterator => "iterator",
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
            Self::TaskQueue => {
                "asyncron's task queue against apalis on PostgreSQL: no-op tasks per second; \
                 POST /orders with the confirmation offloaded against sent inline"
            }
            Self::Scheduler => {
                "the task scheduler's firing delay (due → fired) at 1,000 fires/s, and the \
                 highest rate it sustains with p99 under 100 ms"
            }
            Self::Iterator => {
                "report-exporter's export (an iterator job, chunk by chunk through Kafka) \
                 against COPY (SELECT …) TO STDOUT of the same orders: rows per second"
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
            Self::TaskQueue => task_queue::run(options).await,
            Self::Scheduler => scheduler::run(options).await,
            Self::Iterator => iterator::run(options).await,
        }
    }
}

/// Settings shared by the scenarios; each one reads those that apply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Messages (`kafka`) or tasks (`task-queue`) for the throughput rows; `None` leaves each
    /// scenario its own default.
    pub messages: Option<usize>,
    /// Messages for the latency rows (`kafka`); requests per side for the latency rows
    /// (`integration-events`, which derives its other counts from it, and `task-queue`).
    pub samples: usize,
    /// asyncron consumer's `max_in_flight_per_partition`; `None` keeps the runtime's default.
    pub max_in_flight: Option<usize>,
    /// `scheduler`: seconds of the sustained phase (and at most this per step); `None` keeps
    /// its default.
    pub seconds: Option<usize>,
    /// `iterator`: orders seeded and exported; `None` keeps its default.
    pub rows: Option<usize>,
    /// `iterator`: the export's `chunk_size`; `None` keeps its default.
    pub chunk_size: Option<usize>,
    /// `--smoke`: tiny sizes (unless given), to see in seconds that a scenario still runs; the
    /// figures mean nothing.
    pub smoke: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            messages: None,
            samples: 1_000,
            max_in_flight: None,
            seconds: None,
            rows: None,
            chunk_size: None,
            smoke: false,
        }
    }
}

/// `--smoke`'s sizes, for what was not given explicitly.
const SMOKE_SAMPLES: usize = 5;
const SMOKE_MESSAGES: usize = 1_000;
const SMOKE_SECONDS: usize = 1;
const SMOKE_ROWS: usize = 1_000;
const SMOKE_CHUNK_SIZE: usize = 250;

impl Options {
    /// `--messages`, or the scenario's `default` when it was not given.
    pub fn messages_or(&self, default: usize) -> usize {
        self.messages.unwrap_or(default)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Run(Scenario, Options),
    /// `all`: every scenario, one after the other (with `--smoke`, the test suite's check).
    RunAll(Options),
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
    let _ = writeln!(
        text,
        "  {:<20} every scenario, one after the other (e.g. `all --smoke`)",
        "all"
    );
    let _ = write!(
        text,
        "\noptions:\n\
         \x20 --messages N        messages (kafka, default {}) or tasks (task-queue, default {}) \
         for the throughput rows\n\
         \x20 --samples N         messages for the latency rows; integration-events and \
         task-queue: orders per side, see their README sections (default {})\n\
         \x20 --max-in-flight N   asyncron consumer's max_in_flight_per_partition \
         (default: the runtime's)\n\
         \x20 --seconds N         scheduler: seconds at 1,000 fires/s (default {}; each step \
         runs at most 10)\n\
         \x20 --rows N            iterator: orders seeded and exported (default {})\n\
         \x20 --chunk-size N      iterator: the export's chunk_size (default {}, at most {})\n\
         \x20 --smoke             tiny sizes for what is not given (--samples {SMOKE_SAMPLES}, \
         --messages {SMOKE_MESSAGES}, --seconds {SMOKE_SECONDS}, --rows {SMOKE_ROWS}, \
         --chunk-size {SMOKE_CHUNK_SIZE}): checks in seconds that a scenario runs; with a \
         debug bench it starts the services' debug binaries; the figures mean nothing\n\
         \x20 -h, --help          this text\n\n\
         environment:\n\
         \x20 KAFKA_BOOTSTRAP_SERVERS   the broker (default {})\n\
         \x20 KAFKA_SESSION_TIMEOUT     consumers' session timeout, as in the services (default \
         6s; the local broker's group join takes half of it, scripts/test.sh sets 2s)\n\
         \x20 DATABASE_URL              integration-events, task-queue, scheduler, iterator: \
         the PostgreSQL server their databases are created on (default {})\n\
         \x20 RUST_LOG                  client and runtime logs on stderr (default: errors only)\n",
        report::count(kafka::DEFAULT_MESSAGES as f64),
        report::count(task_queue::DEFAULT_TASKS as f64),
        defaults.samples,
        scheduler::DEFAULT_SECONDS,
        report::count(iterator::DEFAULT_ROWS as f64),
        report::count(iterator::DEFAULT_CHUNK_SIZE as f64),
        report::count(iterator::MAX_CHUNK_SIZE as f64),
        broker::DEFAULT_BOOTSTRAP,
        database::DEFAULT_DATABASE_URL,
    );
    text
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Command> {
    let mut args = args.into_iter();
    let mut scenario = None;
    let mut all = false;
    let mut samples = None;
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
            "--messages" => options.messages = Some(value("--messages")?),
            "--samples" => samples = Some(value("--samples")?),
            "--max-in-flight" => options.max_in_flight = Some(value("--max-in-flight")?),
            "--seconds" => options.seconds = Some(value("--seconds")?),
            "--rows" => options.rows = Some(value("--rows")?),
            "--chunk-size" => options.chunk_size = Some(value("--chunk-size")?),
            "--smoke" if inline.is_none() => options.smoke = true,
            flag if flag.starts_with('-') => anyhow::bail!("unknown option `{flag}`"),
            name => {
                anyhow::ensure!(
                    scenario.is_none() && !all,
                    "only one scenario per run (got `{name}` too)"
                );
                if name == "all" {
                    all = true;
                    continue;
                }
                let known: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                scenario = Some(Scenario::parse(name).with_context(|| {
                    format!("unknown scenario `{name}` (known: {})", known.join(", "))
                })?);
            }
        }
    }
    if options.smoke {
        options.messages.get_or_insert(SMOKE_MESSAGES);
        options.seconds.get_or_insert(SMOKE_SECONDS);
        options.rows.get_or_insert(SMOKE_ROWS);
        options.chunk_size.get_or_insert(SMOKE_CHUNK_SIZE);
    }
    options.samples = samples.unwrap_or(if options.smoke {
        SMOKE_SAMPLES
    } else {
        options.samples
    });
    if all {
        return Ok(Command::RunAll(options));
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
    let (scenarios, options) = match command {
        Command::Help => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Command::Run(scenario, options) => (vec![scenario], options),
        Command::RunAll(options) => (Scenario::ALL.to_vec(), options),
    };
    init_logging();
    if options.smoke {
        eprintln!(
            "smoke run: tiny sizes, to see that each scenario runs; the figures mean nothing"
        );
    } else if !services::is_release() {
        eprintln!(
            "warning: a debug build of the bench (and of the services it starts) measures the \
             compiler, not the code: run it with --release"
        );
    }
    let mut failed = Vec::new();
    for scenario in scenarios {
        let started = std::time::Instant::now();
        match scenario.run(&options).await {
            Ok(()) => eprintln!(
                "{}: done in {:.1} s",
                scenario.name(),
                started.elapsed().as_secs_f64()
            ),
            Err(error) => {
                eprintln!("error: {}: {error:#}", scenario.name());
                failed.push(scenario.name());
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
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
    fn task_queue_is_a_scenario_with_its_own_default_count() {
        let Command::Run(scenario, options) = parse(&["task-queue"]).unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(scenario, Scenario::TaskQueue);
        assert_eq!(options.messages_or(50_000), 50_000);
        let Command::Run(_, options) = parse(&["task-queue", "--messages=2000"]).unwrap() else {
            panic!("expected a run");
        };
        assert_eq!(options.messages_or(50_000), 2_000);
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
                messages: Some(20_000),
                samples: 50,
                max_in_flight: Some(8),
                seconds: None,
                rows: None,
                chunk_size: None,
                smoke: false,
            }
        );
    }

    #[test]
    fn smoke_fills_in_tiny_sizes_but_keeps_given_ones() {
        assert_eq!(
            parse(&["all", "--smoke", "--rows", "50"]).unwrap(),
            Command::RunAll(Options {
                messages: Some(SMOKE_MESSAGES),
                samples: SMOKE_SAMPLES,
                max_in_flight: None,
                seconds: Some(SMOKE_SECONDS),
                rows: Some(50),
                chunk_size: Some(SMOKE_CHUNK_SIZE),
                smoke: true,
            })
        );
        assert_eq!(
            parse(&["kafka", "--samples", "7"]).unwrap(),
            Command::Run(
                Scenario::Kafka,
                Options {
                    samples: 7,
                    ..Options::default()
                }
            )
        );
        assert!(parse(&["all", "kafka"]).is_err());
    }

    #[test]
    fn iterator_is_a_scenario_with_rows_and_chunk_size() {
        assert_eq!(
            parse(&["iterator", "--rows", "100_000", "--chunk-size=5000"]).unwrap(),
            Command::Run(
                Scenario::Iterator,
                Options {
                    rows: Some(100_000),
                    chunk_size: Some(5_000),
                    ..Options::default()
                }
            )
        );
        assert!(parse(&["iterator", "--rows", "0"]).is_err());
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
        let error = parse(&["iterators"]).unwrap_err().to_string();
        assert!(error.contains("unknown scenario `iterators`"), "{error}");
    }
}

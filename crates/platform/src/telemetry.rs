//! Logging and trace context.
//!
//! [`init`] installs one global `tracing` subscriber: an `EnvFilter`-controlled log output plus
//! the [`TraceContextLayer`], which gives every span a W3C trace context so that HTTP requests
//! and Kafka messages can carry `traceparent` across services without an OpenTelemetry
//! exporter.

pub mod trace_context;

use std::fmt;
use std::str::FromStr;

use tracing::Metadata;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use trace_context::{TraceContext, TraceContextLayer, current_correlation_id};

const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn";
const DEFAULT_TEST_FILTER: &str = "warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Multi-line, coloured output for people.
    Pretty,
    /// One JSON object per line for log shippers.
    Json,
}

/// The error for a log format other than `pretty` or `json`.
#[derive(Debug, thiserror::Error)]
#[error("unknown log format \"{0}\": expected \"pretty\" or \"json\"")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pretty => "pretty",
            Self::Json => "json",
        })
    }
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default
/// `info,sqlx=warn,rdkafka=warn`).
///
/// Only the first call in a process has an effect, so a service's `main` and its tests may both
/// call it.
pub fn init(format: LogFormat) {
    let output = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().pretty().boxed(),
        // Flattened events with the current span's fields let a log shipper index
        // `correlation_id` and `request_id` on every line.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Losing the race to another subscriber is fine: whoever installed it first wins.
    let _ = tracing_subscriber::registry()
        .with(output.with_filter(env_filter(DEFAULT_FILTER)))
        .with(trace_context_layer())
        .try_init();
}

/// Installs a subscriber that writes through the test harness (so output shows only for failing
/// tests), filtered by `RUST_LOG` (default `warn`). Idempotent like [`init`].
pub fn init_for_tests() {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(env_filter(DEFAULT_TEST_FILTER)),
        )
        .with(trace_context_layer())
        .try_init();
}

/// The log filter applies to the output layer only: spans the log level hides still exist, so
/// trace context keeps flowing from an incoming request to the messages it publishes even at
/// `RUST_LOG=warn`.
fn env_filter(default: &str) -> EnvFilter {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    // Invalid directives are reported on stderr and skipped rather than aborting startup over a
    // typo in a log setting.
    EnvFilter::builder().parse_lossy(directives)
}

/// The trace context layer only needs spans. Filtering out events keeps it from enabling every
/// `trace!` call site in every dependency just because it is present.
fn trace_context_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'lookup> tracing_subscriber::registry::LookupSpan<'lookup>,
{
    TraceContextLayer.with_filter(filter_fn(|metadata: &Metadata<'_>| metadata.is_span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_the_two_known_names() {
        assert_eq!("pretty".parse::<LogFormat>().unwrap(), LogFormat::Pretty);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn unknown_log_format_names_the_allowed_values() {
        let err = "JSON".parse::<LogFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown log format \"JSON\": expected \"pretty\" or \"json\""
        );
    }

    #[test]
    fn init_can_be_called_more_than_once() {
        init_for_tests();
        init_for_tests();
        init(LogFormat::Json);

        let span = tracing::info_span!("outer", correlation_id = "abc");
        let _entered = span.enter();
        assert_eq!(current_correlation_id().as_deref(), Some("abc"));
    }
}

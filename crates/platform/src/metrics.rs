//! The process-wide Prometheus recorder.
//!
//! `metrics::counter!` and friends write to whatever recorder is installed globally; this module
//! installs the Prometheus one and renders it for `GET /metrics` (see [`crate::http::app`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds for every `*_seconds` histogram: from sub-millisecond handlers to the 30 s
/// request timeout.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder on the first call and returns its handle; later calls
/// return the same handle.
///
/// Metric names ending in `_seconds` are rendered as Prometheus histograms (bucketed, so they
/// can be aggregated across instances) instead of the exporter's default summaries.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process")
        })
        .clone()
}

/// Renders every metric in the Prometheus text format.
pub fn render() -> String {
    let handle = install();
    // Without an exporter task nothing else drains the histograms' rolling windows, so each
    // scrape does it.
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_metrics_render_as_histograms() {
        install();
        ::metrics::histogram!("platform_test_duration_seconds").record(Duration::from_millis(3));
        ::metrics::counter!("platform_test_events_total").increment(2);

        let text = render();

        assert!(
            text.contains("# TYPE platform_test_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("platform_test_duration_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("platform_test_events_total 2"), "{text}");
    }

    #[test]
    fn install_returns_the_same_recorder_every_time() {
        install();
        ::metrics::counter!("platform_test_installs_total").increment(1);

        assert!(
            install()
                .render()
                .contains("platform_test_installs_total 1")
        );
    }
}

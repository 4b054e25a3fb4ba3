//! Measurement helpers shared by the scenarios: wall-clock send times, latency histograms,
//! throughput.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Microseconds since the Unix epoch. A send time that the receiving side (another thread, or
/// another process on the same host) can subtract from its own clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Latencies in microseconds, 1 µs to 60 s at three significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, Self::MAX_MICROS, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

impl LatencyHistogram {
    const MAX_MICROS: u64 = 60_000_000;

    /// Records `received - sent` (both from [`unix_micros`]). A receive time before the send
    /// time (clock steps) counts as the smallest latency; anything above 60 s as 60 s.
    pub fn record_between(&mut self, sent_micros: u64, received_micros: u64) {
        self.histogram
            .saturating_record(received_micros.saturating_sub(sent_micros).max(1));
    }

    /// Records a latency measured on one clock (an [`std::time::Instant`] difference), with the
    /// same bounds as [`Self::record_between`].
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    pub fn summary(&self) -> LatencySummary {
        let at = |quantile| Duration::from_micros(self.histogram.value_at_quantile(quantile));
        LatencySummary {
            samples: self.histogram.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: Duration::from_micros(self.histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Events per second; 0 for an empty interval rather than infinity.
pub fn per_second(count: usize, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reports_percentiles_and_max() {
        let mut histogram = LatencyHistogram::default();
        for micros in 1..=1_000 {
            histogram.record_between(10_000, 10_000 + micros * 10);
        }
        let summary = histogram.summary();
        assert_eq!(summary.samples, 1_000);
        // Three significant digits: within 0.1 %.
        assert!(summary.p50.as_micros().abs_diff(5_000) <= 5, "{summary:?}");
        assert!(summary.p99.as_micros().abs_diff(9_900) <= 10, "{summary:?}");
        assert!(
            summary.max.as_micros().abs_diff(10_000) <= 10,
            "{summary:?}"
        );
    }

    #[test]
    fn clock_steps_do_not_panic() {
        let mut histogram = LatencyHistogram::default();
        histogram.record_between(2_000, 1_000);
        histogram.record_between(0, u64::MAX);
        assert_eq!(histogram.summary().samples, 2);
    }

    #[test]
    fn durations_are_recorded_in_micros() {
        let mut histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(1_500));
        histogram.record(Duration::ZERO);
        histogram.record(Duration::from_hours(1));
        let summary = histogram.summary();
        assert_eq!(summary.samples, 3);
        assert!(summary.p50.as_micros().abs_diff(1_500) <= 2, "{summary:?}");
        assert!(summary.max >= Duration::from_secs(59), "{summary:?}");
    }

    #[test]
    fn throughput_of_an_empty_interval_is_zero() {
        assert!(per_second(10, Duration::ZERO).abs() < f64::EPSILON);
        assert!((per_second(500, Duration::from_millis(250)) - 2_000.0).abs() < 1e-9);
    }
}

//! Per task type limits: how many run at once (a semaphore) and how many start per second (a
//! token bucket).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::TaskOptions;

/// The worker is stopping: whatever waited is abandoned and its message left uncommitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopping;

#[derive(Debug)]
pub(crate) struct Limits {
    concurrency: Option<Semaphore>,
    rate: Option<TokenBucket>,
}

impl Limits {
    pub(crate) fn new(options: TaskOptions) -> anyhow::Result<Self> {
        if let Some(concurrency) = options.concurrency {
            anyhow::ensure!(concurrency >= 1, "concurrency must be at least 1");
        }
        if let Some(rate) = options.rate_limit_per_sec {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "rate_limit_per_sec must be a positive number, not {rate}"
            );
        }
        Ok(Self {
            concurrency: options.concurrency.map(Semaphore::new),
            rate: options.rate_limit_per_sec.map(TokenBucket::new),
        })
    }

    /// Waits until the task may start: first for a free slot, then for a token. In this order
    /// a start follows its token at once, so starts never exceed the rate. (Taking tokens first
    /// would let tasks queue up tokens while waiting for slots and then start in a burst.)
    pub(crate) async fn acquire(
        &self,
        stop: &CancellationToken,
    ) -> Result<Option<SemaphorePermit<'_>>, Stopping> {
        let permit = match &self.concurrency {
            Some(semaphore) => tokio::select! {
                permit = semaphore.acquire() => Some(permit.expect("the semaphore is never closed")),
                () = stop.cancelled() => return Err(Stopping),
            },
            None => None,
        };
        if let Some(bucket) = &self.rate {
            let wait = bucket.reserve(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return Err(Stopping),
                }
            }
        }
        Ok(permit)
    }
}

/// A token bucket that refills at `rate` tokens per second up to one second's worth (at least
/// one token), and starts full.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Negative when callers have reserved tokens that are not there yet.
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            state: Mutex::new(BucketState {
                tokens: capacity,
                refilled_at: Instant::now(),
            }),
        }
    }

    /// Takes a token and returns how long to wait before using it. A caller that finds the
    /// bucket empty reserves the next token to come (the count goes negative), so waiting
    /// callers are served one after another at the rate, without polling.
    fn reserve(&self, now: Instant) -> Duration {
        // Plain numbers behind the lock: a panic elsewhere cannot leave them inconsistent.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(state.refilled_at);
        state.tokens = (state.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
        state.refilled_at = now.max(state.refilled_at);
        state.tokens -= 1.0;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_a_burst_then_spaces_callers_at_the_rate() {
        let bucket = TokenBucket::new(4.0);
        let start = Instant::now();
        for _ in 0..4 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(start), Duration::from_millis(250));
        assert_eq!(bucket.reserve(start), Duration::from_millis(500));
        // A second later four more tokens came in, two of which were already reserved.
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            bucket.reserve(start + Duration::from_secs(1)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn an_idle_bucket_holds_at_most_one_seconds_worth() {
        let bucket = TokenBucket::new(2.0);
        let later = Instant::now() + Duration::from_mins(1);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::ZERO);
        assert_eq!(bucket.reserve(later), Duration::from_millis(500));
    }

    #[test]
    fn slow_rates_still_allow_one_task() {
        let bucket = TokenBucket::new(0.5);
        let now = Instant::now();
        assert_eq!(bucket.reserve(now), Duration::ZERO);
        assert_eq!(bucket.reserve(now), Duration::from_secs(2));
    }

    #[test]
    fn invalid_limits_are_refused() {
        for options in [
            TaskOptions {
                concurrency: Some(0),
                ..TaskOptions::default()
            },
            TaskOptions {
                rate_limit_per_sec: Some(0.0),
                ..TaskOptions::default()
            },
            TaskOptions {
                rate_limit_per_sec: Some(f64::NAN),
                ..TaskOptions::default()
            },
        ] {
            assert!(Limits::new(options).is_err(), "{options:?}");
        }
    }
}

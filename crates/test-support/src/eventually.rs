//! Waiting for asynchronous effects in tests, without fixed sleeps.
//!
//! A consumer processes a message "soon"; a test that sleeps a fixed time is slow when the effect
//! is quick and flaky when the machine is busy. These helpers poll instead: quickly at first,
//! then backing off so that a long wait does not hammer the system under test.

use std::{
    fmt::Debug,
    time::{Duration, Instant},
};

const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `probe` until it returns `Some`, and returns that value.
///
/// Between calls it waits 10 ms, doubling up to 200 ms. A probe still running at the deadline is
/// cancelled.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn example(pool: sqlx::PgPool) {
/// let status: String = test_support::eventually(Duration::from_secs(10), "order 42 to ship", || async {
///     sqlx::query_scalar("SELECT status FROM orders WHERE id = 42 AND status = 'shipped'")
///         .fetch_optional(&pool)
///         .await
///         .unwrap()
/// })
/// .await;
/// # }
/// ```
///
/// # Panics
/// With "timed out after {deadline:?} waiting for {what}" when the deadline passes first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let outcome = poll(deadline, || {
        let attempt = probe();
        async move { attempt.await.ok_or(()) }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("timed out after {deadline:?} waiting for {what}"))
}

/// Calls `probe` until it returns `Ok`, and returns that value; like [`eventually`], but the
/// panic message carries the last error, which usually says why the wait failed.
///
/// # Panics
/// With "timed out after {deadline:?} waiting for {what}; last error: {error:?}" when the
/// deadline passes first.
pub async fn eventually_ok<T, E, F, Fut>(deadline: Duration, what: &str, probe: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match poll(deadline, probe).await {
        Ok(value) => value,
        Err(Some(error)) => {
            panic!("timed out after {deadline:?} waiting for {what}; last error: {error:?}")
        }
        Err(None) => {
            panic!("timed out after {deadline:?} waiting for {what}; no attempt finished")
        }
    }
}

/// The loop behind both helpers: `Err` holds the last error, `None` if no attempt finished.
async fn poll<T, E, F, Fut>(deadline: Duration, mut probe: F) -> Result<T, Option<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let give_up_at = Instant::now() + deadline;
    let mut interval = FIRST_INTERVAL;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(give_up_at.into(), probe()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => last_error = Some(error),
            Err(_elapsed) => return Err(last_error),
        }
        let left = give_up_at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last_error);
        }
        // Never sleep past the deadline: the last attempt happens right at it.
        tokio::time::sleep(interval.min(left)).await;
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_some() {
        let calls = AtomicU32::new(0);
        let value = eventually(Duration::from_secs(5), "the third call", || {
            let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
            future::ready((call == 3).then_some(call * 10))
        })
        .await;

        assert_eq!(value, 30);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for the impossible")]
    async fn eventually_panics_at_the_deadline() {
        eventually(Duration::from_millis(50), "the impossible", || {
            future::ready(None::<()>)
        })
        .await;
    }

    #[tokio::test]
    async fn eventually_backs_off_and_tries_once_more_at_the_deadline() {
        let started = Instant::now();
        let mut calls = 0;
        let outcome = poll(Duration::from_millis(300), || {
            calls += 1;
            future::ready(Err::<(), _>(()))
        })
        .await;

        assert_eq!(outcome, Err(Some(())));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Sleeps of 10, 20, 40, 80 and the remaining ≤150 ms: about six calls, where a fixed
        // 10 ms interval would have made thirty.
        assert!((4..=8).contains(&calls), "{calls} calls");
    }

    #[tokio::test]
    async fn a_hanging_probe_is_cancelled_at_the_deadline() {
        let outcome = poll(Duration::from_millis(50), future::pending::<Result<(), ()>>).await;
        assert_eq!(outcome, Err(None));
    }

    #[tokio::test]
    async fn eventually_ok_returns_the_first_ok() {
        let mut calls = 0;
        let value = eventually_ok(Duration::from_secs(5), "the second call", || {
            calls += 1;
            future::ready(if calls < 2 { Err("not yet") } else { Ok(calls) })
        })
        .await;

        assert_eq!(value, 2);
    }

    #[tokio::test]
    #[should_panic(
        expected = "timed out after 50ms waiting for the topic; last error: \"UnknownTopicOrPartition\""
    )]
    async fn eventually_ok_panics_with_the_last_error() {
        eventually_ok(Duration::from_millis(50), "the topic", || {
            future::ready(Err::<(), _>("UnknownTopicOrPartition"))
        })
        .await;
    }
}

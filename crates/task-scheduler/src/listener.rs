//! Wakes the firing loop when a row is scheduled before the one its timer waits for.
//!
//! A task of its own holds a `LISTEN` connection. Each notification carries the new row's due
//! time; only one earlier than the time the loop sleeps until becomes a permit on the loop's
//! [`Notify`], so scheduling rows far in the future (the common case) costs no wake-up at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::schedules::NOTIFY_CHANNEL;

/// Listens until `shutdown` is cancelled, reconnecting after failures every `retry_delay`.
/// Every (re)connection wakes the loop once: notifications sent while it was down are lost.
pub(crate) async fn wake_on_notify(
    options: PgConnectOptions,
    wake: Arc<Notify>,
    waiting_for: Arc<AtomicI64>,
    retry_delay: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = listen(&options) => connected,
        };
        match connected {
            Ok(mut listener) => {
                wake.notify_one();
                let error = tokio::select! {
                    () = shutdown.cancelled() => return,
                    error = forward(&mut listener, &wake, &waiting_for) => error,
                };
                tracing::warn!(
                    error = format!("{error:#}"),
                    "scheduler listener connection failed; reconnecting (the scheduler polls meanwhile)"
                );
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot listen for scheduler notifications; retrying (the scheduler polls meanwhile)"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(retry_delay) => {}
        }
    }
}

/// A `LISTEN` session on a connection of its own, not one of the service's pool, which it
/// would hold for the life of the process.
async fn listen(options: &PgConnectOptions) -> anyhow::Result<PgListener> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await
        .context("Failed to connect the scheduler listener")?;
    let mut listener = PgListener::connect_with(&pool)
        .await
        .context("Failed to connect the scheduler listener")?;
    listener
        .listen(NOTIFY_CHANNEL)
        .await
        .with_context(|| format!("Failed to LISTEN on {NOTIFY_CHANNEL}"))?;
    Ok(listener)
}

async fn forward(
    listener: &mut PgListener,
    wake: &Notify,
    waiting_for: &AtomicI64,
) -> anyhow::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                // A payload that does not parse (someone else's NOTIFY) wakes the loop: a
                // needless pass is cheap, a missed row is not.
                let due = notification.payload().parse::<i64>().unwrap_or(i64::MIN);
                if due < waiting_for.load(Ordering::SeqCst) {
                    wake.notify_one();
                }
            }
            Ok(None) => wake.notify_one(),
            Err(error) => {
                return anyhow::Error::new(error)
                    .context("Failed to receive scheduler notifications");
            }
        }
    }
}

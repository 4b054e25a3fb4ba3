//! Wakes the relay when a transaction that recorded a message commits.
//!
//! A task of its own holds a `LISTEN` connection and turns every notification into a permit on a
//! [`Notify`]. The relay loop waits on that permit, which is cancel-safe and remembers a wake-up
//! that arrives while a batch is being published: the next pass then picks up the rows committed
//! meanwhile. Many notifications between two passes fold into one permit, so a burst of commits
//! costs one pass, not one per commit.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::record::NOTIFY_CHANNEL;

/// Listens until `shutdown` is cancelled, reconnecting after failures with `backoff`.
///
/// Notifications sent while the connection is down are lost (PostgreSQL keeps them for the
/// listening sessions only), so every (re)connection also wakes the relay once; the relay's
/// polling covers the time until the connection is back.
pub(crate) async fn wake_on_notify(
    options: PgConnectOptions,
    wake: Arc<Notify>,
    mut backoff: Backoff,
    shutdown: CancellationToken,
) {
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = listen(&options) => connected,
        };
        match connected {
            Ok(mut listener) => {
                backoff.reset();
                wake.notify_one();
                tracing::debug!(channel = NOTIFY_CHANNEL, "outbox relay listening");
                let error = tokio::select! {
                    () = shutdown.cancelled() => return,
                    error = forward(&mut listener, &wake) => error,
                };
                tracing::warn!(
                    channel = NOTIFY_CHANNEL,
                    error = format!("{error:#}"),
                    "outbox listener connection failed; reconnecting (the relay polls meanwhile)"
                );
            }
            Err(error) => tracing::warn!(
                channel = NOTIFY_CHANNEL,
                error = format!("{error:#}"),
                "cannot listen for outbox notifications; retrying (the relay polls meanwhile)"
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A `LISTEN` session on a connection of its own.
///
/// Not one of the service's pool: the listener would hold it for the life of the process, and a
/// pool closed at shutdown would wait for it.
async fn listen(options: &PgConnectOptions) -> anyhow::Result<PgListener> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // The listener keeps its connection for good; the pool must not retire it.
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await
        .context("Failed to connect the outbox listener")?;
    let mut listener = PgListener::connect_with(&pool)
        .await
        .context("Failed to connect the outbox listener")?;
    listener
        .listen(NOTIFY_CHANNEL)
        .await
        .with_context(|| format!("Failed to LISTEN on {NOTIFY_CHANNEL}"))?;
    Ok(listener)
}

/// Forwards notifications as wake-ups until the connection fails, and returns the error.
async fn forward(listener: &mut PgListener, wake: &Notify) -> anyhow::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(_notification)) => wake.notify_one(),
            // sqlx noticed the connection drop and has already reconnected and listens again;
            // what was notified in between is lost, so wake the relay to look.
            Ok(None) => {
                tracing::warn!(
                    channel = NOTIFY_CHANNEL,
                    "outbox listener connection was lost and re-established"
                );
                wake.notify_one();
            }
            Err(error) => {
                return anyhow::Error::new(error).context("Failed to receive outbox notifications");
            }
        }
    }
}

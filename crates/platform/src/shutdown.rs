//! Graceful shutdown: one [`CancellationToken`] tells every part of a service to stop,
//! [`Background`] runs and joins the parts that last until then, and [`by_deadline`] keeps each
//! step of the stop within the service's `SHUTDOWN_TIMEOUT`.

use std::future::Future;
#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;

use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGTERM (what orchestrators send) or Ctrl-C.
///
/// Must be called inside a Tokio runtime. The signal handlers are registered before this
/// returns, so a signal that arrives while the listening task is still being scheduled is not
/// lost.
pub fn on_signal(token: CancellationToken) {
    let signal = shutdown_signal();
    tokio::spawn(async move {
        tokio::select! {
            name = signal => {
                tracing::info!(signal = name, "shutdown signal received");
                token.cancel();
            }
            // Shutting down for another reason: stop listening.
            () = token.cancelled() => {}
        }
    });
}

/// A service's background work (consumers, a relay, a scheduler), meant to last until shutdown.
///
/// Each piece runs in a task of its own through `until_stopped`: if one ends before shutdown,
/// it failed, and `on_failure` is cancelled so that the whole service stops and reports it.
/// [`Background::join_by`] waits for all of them, up to a deadline, after the caller told them to stop.
#[derive(Debug)]
pub struct Background {
    on_failure: CancellationToken,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl Background {
    /// `on_failure` is cancelled when a piece ends early: the service's HTTP server, typically,
    /// after which the service stops the rest.
    pub fn new(on_failure: CancellationToken) -> Self {
        Self {
            on_failure,
            tasks: Vec::new(),
        }
    }

    /// Runs `work`, named `what` in errors and logs.
    pub fn spawn(
        &mut self,
        what: &'static str,
        work: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let task = tokio::spawn(until_stopped(what, work, self.on_failure.clone()));
        self.tasks.push((what, task));
    }

    /// Waits for every piece, in the order they were spawned, until `deadline`, and returns the
    /// first error; the others are logged. A piece still running at the deadline is aborted
    /// (see [`by_deadline`]) and counts as stopped.
    pub async fn join_by(self, deadline: Instant) -> anyhow::Result<()> {
        let mut first = None;
        for (what, mut task) in self.tasks {
            let Some(joined) = by_deadline(deadline, &format!("The {what}"), &mut task).await
            else {
                task.abort();
                continue;
            };
            let result = joined
                .with_context(|| format!("The {what} panicked"))
                .and_then(|result| result);
            if let Err(error) = result {
                if first.is_none() {
                    first = Some(error);
                } else {
                    tracing::error!(error = format!("{error:#}"), "{what} failed too");
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Runs background `work` that is meant to last until shutdown (a consumer, a relay, a
/// scheduler). If it ends before `stop` is cancelled, it failed, even with `Ok`: `stop` is
/// cancelled, so that the whole service shuts down and reports it, rather than go on serving
/// with a part that no longer works. `what` names it in the error.
async fn until_stopped(
    what: &'static str,
    work: impl Future<Output = anyhow::Result<()>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let result = work.await;
    if stop.is_cancelled() {
        return result.with_context(|| format!("The {what} failed"));
    }
    let error = match result {
        Err(error) => error.context(format!("The {what} failed")),
        Ok(()) => anyhow::anyhow!("The {what} stopped before shutdown"),
    };
    tracing::error!(error = format!("{error:#}"), "shutting down");
    stop.cancel();
    Err(error)
}

#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = &'static str> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};

    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        tokio::select! {
            () = receive(terminate, "SIGTERM") => "SIGTERM",
            () = receive(interrupt, "SIGINT") => "Ctrl-C",
        }
    }
}

#[cfg(unix)]
async fn receive(signal: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match signal {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(err) => {
            // The other signal can still stop the service.
            tracing::error!(error = %err, "cannot listen for {name}");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = &'static str> + Send + 'static {
    async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}

/// Waits for `work` until `deadline`; past it, `work` is abandoned (dropped) and `None` returned,
/// after a warning naming `what`. The bound a service's shutdown keeps (`SHUTDOWN_TIMEOUT`): a
/// stuck dependency must not keep a stopping process alive, and what the abandoned work had not
/// committed is redone after the next start (uncommitted offsets are consumed again, unpublished
/// outbox rows are published).
pub async fn by_deadline<T>(
    deadline: Instant,
    what: &str,
    work: impl Future<Output = T>,
) -> Option<T> {
    if let Ok(done) = tokio::time::timeout_at(deadline.into(), work).await {
        return Some(done);
    }
    tracing::warn!(
        "{what} did not stop before the shutdown deadline (SHUTDOWN_TIMEOUT); abandoned, its \
         uncommitted work is redone after the next start"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_ends_in_time_is_awaited() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let done = by_deadline(deadline, "the test", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        })
        .await;
        assert_eq!(done, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_deadline_is_abandoned() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let done = by_deadline(deadline, "the test", std::future::pending::<()>()).await;
        assert_eq!(done, None);
    }

    #[tokio::test(start_paused = true)]
    async fn background_pieces_past_the_deadline_are_aborted() {
        let stop = CancellationToken::new();
        let mut background = Background::new(stop.clone());
        background.spawn("stuck piece", std::future::pending());
        let deadline = Instant::now() + Duration::from_secs(1);
        assert!(background.join_by(deadline).await.is_ok());
    }
}

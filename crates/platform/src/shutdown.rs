//! Graceful shutdown: one [`CancellationToken`] tells every part of a service to stop, and a
//! [`TaskTracker`] lets `main` wait for the work in flight.

use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
/// [`Background::join`] waits for all of them after the caller told them to stop.
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

    /// Waits for every piece, in the order they were spawned, and returns the first error; the
    /// others are logged.
    pub async fn join(self) -> anyhow::Result<()> {
        let mut first = None;
        for (what, task) in self.tasks {
            let result = task
                .await
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

/// Closes `tracker` and waits for its tasks, up to `deadline`.
///
/// Returns `false`, after logging a warning, when tasks were still running at the deadline; the
/// caller then exits anyway, and whatever those tasks had not committed is redone later (Kafka
/// offsets that were not committed are consumed again).
pub async fn drain(tracker: &TaskTracker, deadline: Duration) -> bool {
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait()).await.is_ok() {
        return true;
    }
    tracing::warn!(
        still_running = tracker.len(),
        deadline_ms = deadline.as_millis(),
        "tasks did not finish before the shutdown deadline"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_that_finish_in_time() {
        let tracker = TaskTracker::new();
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
        tracker.spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            finished_tx.send(()).unwrap();
        });

        assert!(drain(&tracker, Duration::from_secs(5)).await);
        assert!(tracker.is_closed());
        finished_rx.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_at_the_deadline() {
        let tracker = TaskTracker::new();
        tracker.spawn(std::future::pending::<()>());

        assert!(!drain(&tracker, Duration::from_secs(1)).await);
        assert_eq!(tracker.len(), 1);
    }
}

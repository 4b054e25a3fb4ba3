//! A progress bar per phase, fed from a shared counter.
//!
//! The measured code only increments an atomic counter; a Tokio task copies it into the bar ten
//! times a second. So drawing costs the same (next to nothing) for asyncron and for the
//! baseline, whichever thread does the counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

const REFRESH: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    count: Arc<AtomicUsize>,
    refresher: JoinHandle<()>,
}

impl Progress {
    /// Starts a bar of `len` messages. Must be called inside a Tokio runtime.
    pub fn start(label: &str, len: usize) -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:<24} [{bar:30}] {human_pos:>9}/{human_len:<9} {per_sec:>14} {elapsed:>4} {msg}",
        )
        .expect("constant progress template is valid")
        .progress_chars("=> ");
        let bar = ProgressBar::new(len as u64)
            .with_style(style)
            .with_prefix(label.to_owned());
        let count = Arc::new(AtomicUsize::new(0));
        let refresher = tokio::spawn({
            let bar = bar.clone();
            let count = count.clone();
            async move {
                let mut ticks = tokio::time::interval(REFRESH);
                let mut started = false;
                loop {
                    ticks.tick().await;
                    let position = count.load(Ordering::Relaxed);
                    bar.set_position(position as u64);
                    if position > 0 && !started {
                        // What the phase waited for (a group join) is over.
                        started = true;
                        bar.set_message("");
                    }
                }
            }
        });
        Self {
            bar,
            count,
            refresher,
        }
    }

    /// The counter the measured code increments once per message.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.count.clone()
    }

    /// A note after the bar about what the phase waits for before counting starts; it goes
    /// away with the first counted message.
    pub fn waiting_for(&self, message: &'static str) {
        self.bar.set_message(message);
    }

    /// Leaves the bar on screen at its final count.
    pub fn finish(self) {
        self.bar
            .set_position(self.count.load(Ordering::Relaxed) as u64);
        self.bar.set_message("");
        self.bar.finish();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.refresher.abort();
        if !self.bar.is_finished() {
            // A failed phase: keep the bar where it stopped, above the error.
            self.bar.abandon();
        }
    }
}

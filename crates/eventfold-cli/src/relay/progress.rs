//! The relay's progress on stderr: a line every few seconds, or a live status line when stderr
//! is a terminal. [`describe`] is the text, apart from the timing.

use std::io::IsTerminal as _;
use std::time::Duration;

use eventfold_relay::{RelayProgress, RelayState};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// How often the live status line on a terminal is redrawn.
const TERMINAL_REFRESH: Duration = Duration::from_millis(250);
/// The window the rate shown on a terminal is measured over.
const TERMINAL_RATE_WINDOW: Duration = Duration::from_secs(2);

/// The progress as one line: events and batches published, the rate (events per second over
/// the last interval, when measured), the checkpoint, the lag and the state.
pub fn describe(p: &RelayProgress, rate: Option<f64>) -> String {
    let mut s = format!(
        "{} in {} published",
        crate::client_cmd::plural(p.published, "event"),
        batches(p.batches),
    );
    if let Some(r) = rate {
        s.push_str(&format!(" ({r:.0}/s)"));
    }
    match p.checkpoint {
        Some(c) => s.push_str(&format!(", checkpoint {}", c.0)),
        None => s.push_str(", no checkpoint yet"),
    }
    match p.lag {
        Some(l) => s.push_str(&format!(", lag {l}")),
        None => s.push_str(", lag unknown"),
    }
    s.push_str(", ");
    s.push_str(&state(&p.state));
    s
}

/// `1 batch`, `2 batches`.
pub fn batches(n: u64) -> String {
    if n == 1 {
        "1 batch".to_owned()
    } else {
        format!("{n} batches")
    }
}

fn state(s: &RelayState) -> String {
    match s {
        RelayState::Starting => "starting".to_owned(),
        RelayState::Running => "running".to_owned(),
        RelayState::Retrying { attempts, error } => {
            format!("retrying (failed {attempts} times in a row; last: {error})")
        }
        RelayState::Stopped => "stopped".to_owned(),
        RelayState::Failed(e) => format!("failed: {e}"),
    }
}

/// The task that shows the progress until [`Reporter::finish`].
pub struct Reporter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Shows `progress` on stderr: live when stderr is a terminal, else a line every
    /// `interval_secs` (none when 0).
    pub fn start(progress: watch::Receiver<RelayProgress>, interval_secs: u64) -> Reporter {
        let (stop, stopped) = oneshot::channel();
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(live(progress, stopped))
        } else {
            tokio::spawn(lines(progress, interval_secs, stopped))
        };
        Reporter { stop, task }
    }

    /// Stops showing the progress.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Events per second between two readings.
fn rate(before: (Instant, u64), now: (Instant, u64)) -> Option<f64> {
    let secs = now.0.duration_since(before.0).as_secs_f64();
    (secs > 0.0).then(|| now.1.saturating_sub(before.1) as f64 / secs)
}

async fn lines(
    progress: watch::Receiver<RelayProgress>,
    interval_secs: u64,
    mut stopped: oneshot::Receiver<()>,
) {
    if interval_secs == 0 {
        let _ = stopped.await;
        return;
    }
    let period = Duration::from_secs(interval_secs);
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    let mut last = (Instant::now(), progress.borrow().published);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            now = ticks.tick() => {
                let p = progress.borrow().clone();
                let current = (now, p.published);
                eprintln!("relay progress: {}", describe(&p, rate(last, current)));
                last = current;
            }
        }
    }
}

async fn live(progress: watch::Receiver<RelayProgress>, mut stopped: oneshot::Receiver<()>) {
    let bar = crate::client_cmd::progress_bar(None, false, "{spinner} relay: {msg}");
    let mut ticks = tokio::time::interval(TERMINAL_REFRESH);
    let mut window = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            now = ticks.tick() => {
                let p = progress.borrow().clone();
                window.push_back((now, p.published));
                while window.len() > 1
                    && window.front().is_some_and(|(t, _)| now.duration_since(*t) > TERMINAL_RATE_WINDOW)
                {
                    window.pop_front();
                }
                let r = window.front().and_then(|first| rate(*first, (now, p.published)));
                bar.set_message(describe(&p, r));
                bar.tick();
            }
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventfold_core::Position;

    #[test]
    fn the_line_says_counts_rate_checkpoint_lag_and_state() {
        let mut p = RelayProgress::default();
        assert_eq!(
            describe(&p, None),
            "0 events in 0 batches published, no checkpoint yet, lag unknown, starting"
        );
        p.published = 1200;
        p.batches = 3;
        p.checkpoint = Some(Position(1250));
        p.lag = Some(7);
        p.state = RelayState::Retrying {
            attempts: 2,
            error: "redis is unavailable".into(),
        };
        assert_eq!(
            describe(&p, Some(399.6)),
            "1200 events in 3 batches published (400/s), checkpoint 1250, lag 7, retrying (failed 2 times in a row; last: redis is unavailable)"
        );
        let t = Instant::now();
        assert_eq!(rate((t, 10), (t + Duration::from_secs(2), 110)), Some(50.0));
        assert_eq!(rate((t, 10), (t, 110)), None);
    }
}

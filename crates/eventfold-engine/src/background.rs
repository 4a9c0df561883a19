//! The engine's background threads: the housekeeper (preallocated segments, index
//! checkpoints), the indexer (key tables of sealed segments) and the merger (merged key
//! tables). No acknowledgement waits on their work while it runs, so they run at a lower CPU
//! priority than the writer, the committer and the threads answering requests: on a machine of
//! two cores a key table built for 4 ms, or zeros copied into the next segment, otherwise took a
//! core from the writer or the committer for that long, and every append arriving meanwhile
//! waited (the open-loop p99 of `eventfold-bench engine`, row (g), in `BENCHMARKS.md`). A lower
//! priority is a smaller share of a busy CPU, never none: the writer's waits on this work (a
//! segment roll before its preallocation is done, the indexer's bounded job queue) still end.

use std::thread::JoinHandle;

/// How much lower (the Unix `nice` increment) the background threads run: 10 gives them about
/// a tenth of the share of a normal thread on a busy CPU, and all of an idle one.
pub const BACKGROUND_NICE: i32 = 10;

/// Starts the background thread `name` running `work`, at [`BACKGROUND_NICE`] below the
/// process's priority.
pub fn spawn<F>(name: &str, work: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // On Linux the nice value is the calling thread's own. Lowering it needs no
            // privilege; where it fails anyway the thread runs at the usual priority.
            if let Err(e) = rustix::process::nice(BACKGROUND_NICE) {
                tracing::debug!(error = %e, "could not lower a background thread's priority");
            }
            work()
        })
}

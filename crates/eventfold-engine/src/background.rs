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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Engine, EngineOptions};

    /// The nice values of this process's threads named `name` (as `/proc` shows names: their
    /// first 15 bytes).
    fn nice_of(name: &str) -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for task in tasks.flatten() {
            let dir = task.path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            if comm.trim_end() != &name[..name.len().min(15)] {
                continue;
            }
            // After the name's closing parenthesis: the state (field 3) … nice (field 19).
            let fields = stat.rsplit_once(") ").map(|(_, f)| f).unwrap_or_default();
            if let Some(Ok(nice)) = fields.split(' ').nth(16).map(str::parse) {
                out.push(nice);
            }
        }
        out
    }

    /// An engine's housekeeper, indexer and merger run `BACKGROUND_NICE` below the process;
    /// its writer and committer do not.
    #[test]
    fn the_background_threads_run_below_the_writer_and_the_committer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path(), EngineOptions::for_tests()).expect("open");
        let base = rustix::process::getpriority_process(None).expect("own priority");
        let lowered = (base + super::BACKGROUND_NICE).min(19);
        let background = [
            "eventfold-housekeeper",
            "eventfold-indexer",
            "eventfold-merger",
        ];
        let foreground = ["eventfold-writer", "eventfold-committer"];
        // A thread takes its name, and a background one its priority, once it runs: wait for
        // that (other tests' engines may be starting theirs meanwhile, so one lowered thread
        // of each background name is what is asked).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(background.iter().all(|n| nice_of(n).contains(&lowered))
            && foreground.iter().all(|n| !nice_of(n).is_empty()))
        {
            assert!(
                Instant::now() < deadline,
                "background threads at {:?} (not {lowered}), writer and committer at {:?}",
                background.map(nice_of),
                foreground.map(nice_of)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        for name in foreground {
            let nice = nice_of(name);
            assert!(
                nice.iter().all(|&n| n == base),
                "{name} at {nice:?}, not {base}"
            );
        }
        drop(engine);
    }
}

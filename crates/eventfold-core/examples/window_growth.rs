//! How long the longest single append into the idempotency window takes while a new store
//! fills it and after (the window grows, then ids leave as new ones come): judges and records
//! `N` single-event appends into a default window (a million ids) and prints the time per
//! append, the longest one and how many took over 1 ms. `BENCHMARKS.md` records its figures.
//!
//! `cargo run --release -p eventfold-core --example window_growth [N ...]` (default 3000000
//! 12000000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventfold_core::{EventId, IdempotencyWindow, LastAppend, SeenIds};

fn main() {
    let runs: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| match a.replace('_', "").parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("error: {a:?} is not a count of appends; pass positive integers");
                std::process::exit(2);
            }
        })
        .collect();
    let runs = if runs.is_empty() {
        vec![3_000_000, 12_000_000]
    } else {
        runs
    };
    println!(
        "{:>12}  {:>9}  {:>10}  {:>12}  {:>11}",
        "appends", "total", "per append", "longest", "over 1 ms"
    );
    for n in runs {
        let mut seen = SeenIds::new(IdempotencyWindow::DEFAULT);
        let streams: Vec<Arc<str>> = (0..64).map(|i| Arc::from(format!("s-{i}"))).collect();
        let now = 1_000_000_000_000i64;
        let (mut longest, mut over_1ms) = (Duration::ZERO, 0u64);
        let start = Instant::now();
        for p in 0..n {
            let id = EventId::new_v7();
            let stream = &streams[(p % 64) as usize];
            let t = Instant::now();
            let _ = seen.judge(stream, [id].into_iter(), p, now);
            let batch = LastAppend {
                first_revision: p / 64,
                len: 1,
                first_position: p,
                last_position: p,
            };
            seen.record(stream, [id].into_iter(), batch, now, p + 1, now);
            let took = t.elapsed();
            longest = longest.max(took);
            over_1ms += u64::from(took > Duration::from_millis(1));
        }
        let total = start.elapsed();
        println!(
            "{n:>12}  {:>7.2} s  {:>7.0} ns  {:>9.2} ms  {over_1ms:>11}",
            total.as_secs_f64(),
            total.as_nanos() as f64 / n as f64,
            longest.as_secs_f64() * 1e3,
        );
    }
}

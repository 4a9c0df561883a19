//! CPU use over a row: the whole machine's (`/proc/stat`) and this process's, the load
//! generator's (`/proc/self/stat`). Servers and load generator share the machine's CPUs, so a
//! row whose CPUs were all busy measured the machine, and the share the load generator took
//! says how much of that was the benchmark itself.

use std::time::Instant;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`, 100 on Linux for every
/// architecture the project builds on).
const TICKS_PER_S: f64 = 100.0;

/// CPU counters at the start of a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    machine: Option<(u64, u64)>,
    own: Option<u64>,
    start: Instant,
}

/// Average CPUs in use over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// CPUs busy on the whole machine.
    pub machine_busy: f64,
    /// CPUs this process used.
    pub load_generator: f64,
}

impl CpuWindow {
    pub fn start() -> CpuWindow {
        CpuWindow {
            machine: machine_ticks(),
            own: own_ticks(),
            start: Instant::now(),
        }
    }

    /// Use since [`CpuWindow::start`]; `None` where `/proc` cannot be read.
    pub fn finish(&self) -> Option<CpuUse> {
        let secs = self.start.elapsed().as_secs_f64();
        let (busy0, total0) = self.machine?;
        let (busy1, total1) = machine_ticks()?;
        let own = own_ticks()?.checked_sub(self.own?)?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = total1.checked_sub(total0)?;
        if total == 0 || secs <= 0.0 {
            return None;
        }
        Some(CpuUse {
            machine_busy: busy1.saturating_sub(busy0) as f64 / total as f64 * cpus as f64,
            load_generator: own as f64 / TICKS_PER_S / secs,
        })
    }
}

/// (busy, total) ticks of all CPUs: the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .take(8) // user nice system idle iowait irq softirq steal
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// User plus system ticks of this process: fields 14 and 15 of `/proc/self/stat`.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // fields 3..=13
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        let w = CpuWindow::start();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let u = w.finish().expect("/proc is readable on Linux");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(u.machine_busy >= 0.0 && u.machine_busy <= cpus as f64 + 0.01);
        assert!(u.load_generator >= 0.0);
        assert!(load_average().is_some());
    }
}

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
    stat_ticks("/proc/self/stat")
}

/// User plus system ticks of the process whose `stat` file is at `path`.
fn stat_ticks(path: &str) -> Option<u64> {
    let (utime, stime, _) = stat_fields(path)?;
    Some(utime + stime)
}

/// (utime, stime, starttime) of a process: fields 14, 15 and 22 of its `stat` file.
fn stat_fields(path: &str) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?, field(15)?, field(22)?))
}

/// CPU time another process (a server under test) used over a window.
#[derive(Debug, Clone, Copy)]
pub struct ProcessCpu {
    pid: u32,
    ticks: u64,
}

impl ProcessCpu {
    /// Starts counting `pid`'s CPU time; `None` when its `/proc` entry cannot be read.
    pub fn start(pid: u32) -> Option<ProcessCpu> {
        Some(ProcessCpu {
            pid,
            ticks: stat_ticks(&format!("/proc/{pid}/stat"))?,
        })
    }

    /// Seconds of CPU (user + system) the process used since [`ProcessCpu::start`], at the
    /// 10-ms resolution of `/proc`.
    pub fn finish(&self) -> Option<f64> {
        let now = stat_ticks(&format!("/proc/{}/stat", self.pid))?;
        Some(now.checked_sub(self.ticks)? as f64 / TICKS_PER_S)
    }
}

/// The oldest running process whose command name is `comm` (a system service started at boot
/// rather than a copy someone started later), other than those in `exclude`.
pub fn find_process(comm: &str, exclude: &[u32]) -> Option<u32> {
    let mut best: Option<(u64, u32)> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if exclude.contains(&pid) {
            continue;
        }
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        if let Some((_, _, start)) = stat_fields(&format!("/proc/{pid}/stat"))
            && best.is_none_or(|(s, _)| start < s)
        {
            best = Some((start, pid));
        }
    }
    best.map(|(_, pid)| pid)
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
        let me = ProcessCpu::start(std::process::id()).expect("own stat");
        assert!(me.finish().expect("own stat") >= 0.0);
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        // This process, or an older one of the same name.
        assert!(find_process(comm.trim_end(), &[]).is_some());
        assert_eq!(find_process("no-such-command", &[]), None);
    }
}

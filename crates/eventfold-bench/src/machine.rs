//! Facts about the machine, printed above the table so that figures can be compared later.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// What is known about the machine and the directory the benchmark writes in.
#[derive(Debug)]
pub struct MachineFacts {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub date_utc: String,
    /// Mount point, device and file system type of the benchmark directory.
    pub filesystem: Option<Mount>,
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

impl MachineFacts {
    /// The header lines every `eventfold-bench` table opens with: title, date, machine, the
    /// command, the scratch directory (with a warning when it is in memory) and the load.
    pub fn print_header(&self, title: &str, run_dir: &Path) {
        println!("{title}");
        println!("  date:       {}", self.date_utc);
        println!(
            "  machine:    {} CPUs ({}), {} RAM, Linux {}",
            self.nproc, self.cpu, self.memory, self.kernel
        );
        println!(
            "  command:    {}",
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        match &self.filesystem {
            Some(m) => println!(
                "  scratch:    {} ({} on {}, mounted at {})",
                run_dir.display(),
                m.fs_type,
                m.device,
                m.mount_point
            ),
            None => println!("  scratch:    {}", run_dir.display()),
        }
        if let Some(m) = &self.filesystem
            && matches!(m.fs_type.as_str(), "tmpfs" | "ramfs")
        {
            println!(
                "  WARNING:    {} is a {}: the figures measure memory, not a disk; pass --dir on a real disk",
                run_dir.display(),
                m.fs_type
            );
        }
        if let Some(load) = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
        {
            println!(
                "  load:       1-min load average {load} at the start (other work on the machine \
                 skews every figure)"
            );
        }
        print_kernel_monitors();
    }

    pub fn gather(bench_dir: &Path) -> MachineFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        MachineFacts {
            nproc: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu,
            memory,
            kernel,
            date_utc: utc_now(),
            filesystem: mount_of(bench_dir),
        }
    }
}

/// A header line naming the kernel's memory monitors when any runs: they take a core for
/// milliseconds at a time, which shows in every tail latency.
pub fn print_kernel_monitors() {
    let monitors = kernel_monitors(process_names());
    if !monitors.is_empty() {
        println!(
            "  kernel:     {} running (the kernel's DAMON memory monitor: on a 2-CPU VM it held \
             a core for 1.5-3.6 ms at a time, which shows in every tail latency)",
            monitors.join(", ")
        );
    }
}

/// The names (`comm`) of every process and kernel thread, from /proc.
fn process_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .collect()
}

/// The kernel's memory monitors among `names` (DAMON's `kdamond` threads), each once.
fn kernel_monitors(names: Vec<String>) -> Vec<String> {
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with("kdamond"))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The mount holding `path` (the longest mount point that is a prefix of it), from /proc/mounts.
fn mount_of(path: &Path) -> Option<Mount> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(Mount {
                device: f.next()?.to_string(),
                mount_point: f.next()?.replace("\\040", " "),
                fs_type: f.next()?.to_string(),
            })
        })
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.len())
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, kernel_monitors};

    #[test]
    fn kernel_monitors_are_named_once_and_nothing_else() {
        let names = [
            "kdamond.0",
            "systemd",
            "kworker/0:1",
            "kdamond.0",
            "eventfold",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(kernel_monitors(names), vec!["kdamond.0".to_string()]);
        assert!(kernel_monitors(vec!["bash".into()]).is_empty());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}

//! What the kernel knows about the processes under test: CPU time, resident memory, CPU
//! affinity, and the open-file limit.

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

/// CPU seconds (user + system, all threads) of a process so far.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: fields count from
    // after its closing parenthesis. utime and stime are fields 14 and 15.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    ensure!(fields.len() > 13, "malformed {path}");
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok((utime + stime) as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in {path}"))
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// Busy and total jiffies of the whole machine (`/proc/stat`), to tell whether it was saturated.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCpu {
    pub busy: u64,
    pub total: u64,
}

impl SystemCpu {
    pub fn now() -> anyhow::Result<SystemCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        ensure!(values.len() >= 5, "malformed /proc/stat");
        let total: u64 = values.iter().take(8).sum();
        // idle + iowait
        let idle = values[3] + values[4];
        Ok(SystemCpu {
            busy: total - idle,
            total,
        })
    }

    /// Fraction of all CPUs busy between `earlier` and `self` (1.0 = every core busy).
    pub fn busy_since(&self, earlier: &SystemCpu) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }

    /// Cores busy between `earlier` and `self` with anything but `ours_cpu_secs` of CPU spent
    /// over `window_secs` (the processes measured): what disturbed the measurement.
    pub fn other_cores(&self, earlier: &SystemCpu, ours_cpu_secs: f64, window_secs: f64) -> f64 {
        (self.busy_since(earlier) * online_cpus() as f64 - ours_cpu_secs / window_secs.max(1e-9))
            .max(0.0)
    }
}

/// CPUs online on the machine. Not `available_parallelism`, which follows this process's
/// affinity (a pinned load tool would see one).
pub fn online_cpus() -> u64 {
    // SAFETY: sysconf only reads a value.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    cpus.max(1) as u64
}

/// A process whose cost is reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = anyhow::Error;

    /// `name=pid`
    fn from_str(s: &str) -> anyhow::Result<Watched> {
        let (name, pid) = s.split_once('=').context("expected NAME=PID")?;
        Ok(Watched {
            name: name.into(),
            pid: pid.parse().context("PID")?,
        })
    }
}

/// Pins every thread of `pid` to `cpus` (threads it creates later inherit it).
pub fn pin_process(pid: u32, cpus: &[usize]) -> anyhow::Result<()> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing the threads of {pid}"))?;
    for task in tasks {
        let tid: i32 = task?.file_name().to_string_lossy().parse()?;
        pin_thread(tid, cpus)?;
    }
    Ok(())
}

/// Pins one thread (0 = the calling one).
pub fn pin_thread(tid: i32, cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: as above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: passes a valid set of the right size.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        bail!(
            "sched_setaffinity({tid}, {cpus:?}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one and checks `needed` fits.
pub fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    ensure!(
        limit.rlim_cur >= needed,
        "{needed} file descriptors needed in one process, the limit is {} (hard {}): use more --workers",
        limit.rlim_cur,
        limit.rlim_max
    );
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        // Burn a little CPU so the figure moves.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_secs(pid).unwrap() > 0.0);
        assert!(rss_kib(pid).unwrap() > 100);
        let a = SystemCpu::now().unwrap();
        assert!(a.total > 0);
        assert_eq!(
            "gateway=42".parse::<Watched>().unwrap(),
            Watched {
                name: "gateway".into(),
                pid: 42
            }
        );
    }
}

//! What the benchmarks read of the machine (Linux `/proc`): a process's resident memory and
//! CPU time, the bytes a directory holds, and the whole box's CPU and context switches — so a
//! benchmark can say what each transaction cost in CPU across every process of the run.

use std::path::Path;
use std::time::{Duration, Instant};

/// A memory field of `/proc/PID/status` (`VmRSS`: resident now; `VmHWM`: the peak resident so
/// far) in MiB; `None` when the process is gone.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// The bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// CPU time a process has used (all its threads, also those that ended), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_us: u64,
    pub system_us: u64,
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The CPU time of process `pid` (`/proc/PID/stat`: utime and stime); `None` when it is gone.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let us = 1_000_000 / ticks_per_second();
    Some(CpuTimes {
        user_us: ticks(11)? * us,
        system_us: ticks(12)? * us,
    })
}

/// The whole box since boot (`/proc/stat`): CPU time by kind and context switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BoxTimes {
    pub user_us: u64,
    pub system_us: u64,
    /// Idle and waiting for I/O.
    pub idle_us: u64,
    /// Interrupts (hard and soft). Steal (time the hypervisor gave elsewhere) and guest time
    /// (already in user) are left out.
    pub other_us: u64,
    pub context_switches: u64,
}

pub fn box_times() -> Option<BoxTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let us = 1_000_000 / ticks_per_second();
    let cpu: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))?
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0) * us)
        .collect();
    let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal …
    Some(BoxTimes {
        user_us: at(0) + at(1),
        system_us: at(2),
        idle_us: at(3) + at(4),
        other_us: at(5) + at(6),
        context_switches: stat
            .lines()
            .find_map(|l| l.strip_prefix("ctxt "))?
            .trim()
            .parse()
            .ok()?,
    })
}

/// What one process of a run used.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProcessCpu {
    pub name: String,
    pub user_us: u64,
    pub system_us: u64,
}

/// What a run's transactions cost in CPU: every measured process, and the whole box.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CpuReport {
    pub seconds: f64,
    pub transactions: u64,
    pub processes: Vec<ProcessCpu>,
    /// The box's CPU over the whole run: busy (user + system + interrupts), of it the kernel's,
    /// and idle (with I/O wait).
    pub box_busy_us: u64,
    pub box_system_us: u64,
    pub box_idle_us: u64,
    pub context_switches: u64,
}

impl CpuReport {
    fn per_txn(&self, us: u64) -> f64 {
        us as f64 / self.transactions.max(1) as f64
    }

    /// CPU microseconds per transaction over every measured process.
    pub fn us_per_transaction(&self) -> f64 {
        self.per_txn(self.processes.iter().map(|p| p.user_us + p.system_us).sum())
    }

    /// A Markdown table: each process's µs per transaction (user, kernel) and share, the
    /// total, the box's, and context switches per transaction.
    pub fn table(&self) -> String {
        let total: u64 = self.processes.iter().map(|p| p.user_us + p.system_us).sum();
        let mut out = format!(
            "CPU per transaction ({} transactions in {:.1} s)\n\n\
             | process | µs/txn | user | kernel | share |\n|---|---:|---:|---:|---:|\n",
            self.transactions, self.seconds
        );
        for p in &self.processes {
            let own = p.user_us + p.system_us;
            out += &format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0}% |\n",
                p.name,
                self.per_txn(own),
                self.per_txn(p.user_us),
                self.per_txn(p.system_us),
                100.0 * own as f64 / total.max(1) as f64
            );
        }
        let user: u64 = self.processes.iter().map(|p| p.user_us).sum();
        let system: u64 = self.processes.iter().map(|p| p.system_us).sum();
        out += &format!(
            "| **all measured** | **{:.0}** | {:.0} | {:.0} | 100% |\n",
            self.us_per_transaction(),
            self.per_txn(user),
            self.per_txn(system)
        );
        let capacity = self.box_busy_us + self.box_idle_us;
        out += &format!(
            "\nthe box: {:.0}% busy ({:.0}% of it in the kernel), {:.0} µs busy per transaction, \
             {:.1} context switches per transaction ({:.0}/s)\n",
            100.0 * self.box_busy_us as f64 / capacity.max(1) as f64,
            100.0 * self.box_system_us as f64 / self.box_busy_us.max(1) as f64,
            self.per_txn(self.box_busy_us),
            self.per_txn(self.context_switches),
            self.context_switches as f64 / self.seconds.max(0.001)
        );
        out
    }
}

/// Measures the CPU of named processes and of the box from `start` to `finish`.
pub struct CpuMeter {
    started: Instant,
    processes: Vec<(String, u32, CpuTimes)>,
    box_start: BoxTimes,
}

impl CpuMeter {
    /// Starts measuring `processes` (name, pid); a process already gone counts as zero.
    pub fn start(processes: Vec<(String, u32)>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let now = cpu_times(pid).unwrap_or_default();
                    (name, pid, now)
                })
                .collect(),
            box_start: box_times().unwrap_or_default(),
        }
    }

    /// What was used since `start`, for `transactions` transactions. A process that ended
    /// meanwhile counts as zero (its `/proc` entry is gone), and a process started meanwhile
    /// is not measured: runs with processes killed or restarted are not for this figure.
    pub fn finish(&self, transactions: u64) -> CpuReport {
        let seconds = self.started.elapsed().max(Duration::from_millis(1));
        let processes = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let after = cpu_times(*pid).unwrap_or(*before);
                ProcessCpu {
                    name: name.clone(),
                    user_us: after.user_us.saturating_sub(before.user_us),
                    system_us: after.system_us.saturating_sub(before.system_us),
                }
            })
            .collect();
        let now = box_times().unwrap_or_default();
        let b = self.box_start;
        let user = now.user_us.saturating_sub(b.user_us);
        let system = now.system_us.saturating_sub(b.system_us);
        let other = now.other_us.saturating_sub(b.other_us);
        CpuReport {
            seconds: seconds.as_secs_f64(),
            transactions,
            processes,
            box_busy_us: user + system + other,
            box_system_us: system,
            box_idle_us: now.idle_us.saturating_sub(b.idle_us),
            context_switches: now.context_switches.saturating_sub(b.context_switches),
        }
    }
}

/// Ports [`free_port`] hands out: below Linux's default ephemeral range (32768–60999), where the
/// kernel picks the source port of every outgoing connection. A port found free there can be
/// taken by some connection's source port between the check and the server's bind; a port in
/// this range cannot.
const FREE_PORTS: std::ops::Range<u32> = 20_000..32_768;

/// A free port on 127.0.0.1 for a server started right after (a test's or the load tester's
/// nodes, bank simulator and exporters): checked by binding it, outside the ephemeral range, and
/// never handed out twice by one process, so servers started together never collide.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = FREE_PORTS.end - FREE_PORTS.start;
    // Each process starts at its own place, so two test binaries run at once rarely meet.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = FREE_PORTS.start + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("the range is below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port on 127.0.0.1 in {FREE_PORTS:?}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_stay_out_of_the_ephemeral_range_and_never_repeat() {
        // Many outgoing connections hold source ports in the ephemeral range meanwhile.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held: Vec<_> = (0..50)
            .map(|_| std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let port = free_port().unwrap();
            assert!((20_000..32_768).contains(&port), "port {port} is ephemeral");
            assert!(seen.insert(port), "port {port} handed out twice");
            for stream in &held {
                assert_ne!(stream.local_addr().unwrap().port(), port);
            }
        }
    }

    #[test]
    fn the_cpu_a_busy_loop_burns_is_counted_and_split_per_transaction() {
        let meter = CpuMeter::start(vec![("this test".into(), std::process::id())]);
        let until = Instant::now() + Duration::from_millis(300);
        let mut spins = 0u64;
        while Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        let report = meter.finish(1_000);
        let used = report.processes[0].user_us + report.processes[0].system_us;
        // 300 ms of spinning, measured in clock ticks (10 ms): well above 100 ms.
        assert!(used >= 100_000, "{report:?}");
        assert!(report.us_per_transaction() >= 100.0, "{report:?}");
        assert!(report.box_busy_us >= used / 2, "{report:?}");
        assert!(report.seconds >= 0.3, "{report:?}");
        let table = report.table();
        assert!(table.contains("| this test |"), "{table}");
        assert!(
            table.contains("context switches per transaction"),
            "{table}"
        );
    }

    #[test]
    fn a_process_that_is_gone_reads_as_none() {
        assert_eq!(cpu_times(u32::MAX), None);
        assert!(box_times().is_some());
    }

    #[test]
    fn reads_this_process_and_a_directory() {
        let rss = memory_mib(std::process::id(), "VmRSS").unwrap();
        let peak = memory_mib(std::process::id(), "VmHWM").unwrap();
        assert!(rss > 0.0 && peak >= rss, "rss {rss} peak {peak}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 23]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 123);
        assert_eq!(memory_mib(u32::MAX, "VmRSS"), None);
    }
}

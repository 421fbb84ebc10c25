//! What the benchmarks read of a process and a directory: resident memory from `/proc`
//! (Linux) and the bytes a directory holds.

use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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

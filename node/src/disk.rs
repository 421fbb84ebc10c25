//! The data directory's disk: its free space as gauges, and what the node does when its storage
//! fails. A write RocksDB cannot make (a full disk, above all) stops openraft's core for good
//! (`Fatal::StorageError`); a node in that state would linger, refusing everything. Instead it
//! says so once, loudly (an error naming the directory and its free space, the gauge
//! `storage_failed`, the counter `storage_write_errors_total`), stops serving so clients and
//! peers go to the others, waits until the disk has `min_free_disk_bytes` free, and then
//! starts again in place (the same process re-executes itself) to catch up from its durable
//! log. A storage failure on a disk that is not full (an I/O error) is not waited out: the node
//! exits with the error, for a person and the supervisor to see.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::error::Fatal;
use tokio::sync::watch;
use yinyi_consensus::Consensus;

/// How often the free space is published.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// How often a node waiting for space looks again, and how often it says so.
const SPACE_POLL: Duration = Duration::from_secs(1);
const SPACE_LOG_EVERY: Duration = Duration::from_secs(30);

/// Total and available bytes of the filesystem holding `path` (statvfs).
pub fn space(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs reads a NUL-terminated path and fills the struct we own; zeroed is a
    // valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = stat.f_frsize as u64;
    Ok((stat.f_blocks as u64 * unit, stat.f_bavail as u64 * unit))
}

fn publish(total: u64, free: u64, reserve: u64) {
    metrics::gauge!("disk_total_bytes").set(total as f64);
    metrics::gauge!("disk_free_bytes").set(free as f64);
    metrics::gauge!("disk_reserve_bytes").set(reserve as f64);
}

/// Waits until the disk under `data` has `reserve` bytes free, saying so while it has not.
/// Returns at once when it has.
pub async fn wait_for_space(data: &Path, reserve: u64) {
    let mut last_said: Option<tokio::time::Instant> = None;
    loop {
        match space(data) {
            Ok((total, free)) => {
                publish(total, free, reserve);
                if free >= reserve {
                    if last_said.is_some() {
                        tracing::info!(
                            data = %data.display(),
                            free_bytes = free,
                            "the data disk has space again"
                        );
                    }
                    return;
                }
                if last_said.is_none_or(|at| at.elapsed() >= SPACE_LOG_EVERY) {
                    tracing::error!(
                        data = %data.display(),
                        free_bytes = free,
                        total_bytes = total,
                        min_free_disk_bytes = reserve,
                        "the data disk is full: this node takes no writes and waits until \
                         min_free_disk_bytes are free (free space on it, or grow it); the other \
                         nodes serve meanwhile"
                    );
                    last_said = Some(tokio::time::Instant::now());
                }
            }
            Err(e) => {
                // Cannot tell: do not hold the node back on a filesystem without statvfs.
                tracing::warn!(data = %data.display(), "cannot read the data disk's free space: {e}");
                return;
            }
        }
        tokio::time::sleep(SPACE_POLL).await;
    }
}

/// Why a node's storage stopped it.
#[derive(Debug, Clone)]
pub struct StorageFailure {
    pub error: String,
    /// The disk was full (or the error said so): wait for space, then start again.
    pub disk_full: bool,
}

/// Publishes the disk's space every few seconds, and watches Raft for a storage failure: the
/// first one is logged, counted and sent on `failed`.
pub async fn watch(
    consensus: Consensus,
    data: PathBuf,
    reserve: u64,
    failed: watch::Sender<Option<StorageFailure>>,
) {
    let mut metrics = consensus.raft().metrics();
    metrics::gauge!("storage_failed").set(0.0);
    loop {
        let running = metrics.borrow_and_update().running_state.clone();
        let fatal = match running {
            Err(Fatal::StorageError(e)) => Some(e.to_string()),
            Err(Fatal::Panicked) => Some("the Raft core panicked".to_string()),
            // Stopped on purpose (shutdown), or running.
            Err(Fatal::Stopped) | Ok(()) => None,
        };
        let (total, free) = space(&data).unwrap_or((0, u64::MAX));
        publish(total, free, reserve);
        if let Some(error) = fatal {
            let disk_full = free < reserve || is_no_space(&error);
            metrics::counter!("storage_write_errors_total").increment(1);
            metrics::gauge!("storage_failed").set(1.0);
            if disk_full {
                tracing::error!(
                    data = %data.display(),
                    free_bytes = free,
                    total_bytes = total,
                    min_free_disk_bytes = reserve,
                    "storage failed, the data disk is full: {error}. This node stops serving \
                     (the others go on); it starts again by itself once min_free_disk_bytes are \
                     free, and catches up"
                );
            } else {
                tracing::error!(
                    data = %data.display(),
                    free_bytes = free,
                    "storage failed and the disk is not full: {error}. This node stops; check \
                     the disk (kernel log, SMART) before starting it again"
                );
            }
            let _ = failed.send(Some(StorageFailure { error, disk_full }));
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(GAUGE_EVERY) => {}
        }
    }
}

/// Whether an error says the disk is full (ENOSPC as RocksDB and the OS word it).
fn is_no_space(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("no space left") || error.contains("nospace") || error.contains("enospc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocksdb_and_os_words_for_a_full_disk_are_recognised() {
        assert!(is_no_space(
            "IO error: No space left on device: While appending to file: db/000012.log"
        ));
        assert!(!is_no_space("IO error: Input/output error"));
    }

    #[test]
    fn the_space_of_a_directory_is_read() {
        let (total, free) = space(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}

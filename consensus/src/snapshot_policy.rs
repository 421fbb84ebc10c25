//! When a node builds a snapshot. openraft's own policy counts entries: a snapshot every N
//! entries whatever the state's size. On a 90-day state (3.4 GiB of snapshot) that meant every
//! node exporting the whole state every 100,000 entries, a minute of a core each time, and a
//! follower still installing one snapshot (also a minute) being sent the next as the leader
//! purged the log behind it. Here a snapshot is due once the log written since the last one is
//! a share of that snapshot's size (and at least a number of entries): what building costs per
//! byte written stays the same on day 1 and day 1,000, the log on disk stays a share of the
//! state, and snapshots come further apart as the state — and so an install — grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::types::{LogId, Raft};

/// The rule, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRule {
    /// Entries applied since the last snapshot, at least.
    pub after_entries: u64,
    /// Bytes of log written since the last snapshot, at least this percent of its size
    /// (0: entries alone decide).
    pub log_percent: u64,
}

impl SnapshotRule {
    /// Whether a snapshot is due: `entries` and `log_bytes` written since the last snapshot,
    /// whose size was `snapshot_bytes` (none yet: entries alone decide).
    pub fn due(&self, entries: u64, log_bytes: u64, snapshot_bytes: Option<u64>) -> bool {
        if entries < self.after_entries.max(1) {
            return false;
        }
        match snapshot_bytes {
            None => true,
            Some(size) => {
                u128::from(log_bytes) * 100 >= u128::from(size) * u128::from(self.log_percent)
            }
        }
    }
}

/// How often the rule is checked.
const EVERY: Duration = Duration::from_secs(1);
/// A build asked for and not seen within this long is asked for again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(600);

/// Checks the rule every second and asks openraft for a snapshot when it is due. `log_bytes`
/// counts the log this process appended; `on_disk` is the log already on disk past
/// `snapshot` (the current snapshot's last entry) when the node started; `snapshot_bytes` is
/// the current snapshot's size (0: none). Ends when Raft stops.
pub(crate) async fn build_when_due(
    raft: Raft,
    rule: SnapshotRule,
    snapshot: Option<LogId>,
    on_disk: u64,
    log_bytes: Arc<AtomicU64>,
    snapshot_bytes: Arc<AtomicU64>,
) {
    let mut seen = snapshot;
    // Log written since `seen`: what the counter gained since `counted_from`, plus `carried`.
    let mut counted_from = 0u64;
    let mut carried = on_disk;
    // When a build was asked for, and the counter then: what comes after it belongs to the
    // next snapshot.
    let mut asked: Option<(Instant, u64)> = None;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (current, applied, running) = {
            let m = raft.metrics().borrow().clone();
            (m.snapshot, m.last_applied, m.running_state.is_ok())
        };
        if !running {
            return;
        }
        let written_now = log_bytes.load(Ordering::Relaxed);
        if current.is_some() && current > seen {
            // Built here (count from when it was asked for) or installed from the leader.
            seen = current;
            counted_from = asked.map_or(written_now, |(_, at)| at);
            carried = 0;
            asked = None;
        }
        if asked.is_some_and(|(at, _)| at.elapsed() < ASK_AGAIN_AFTER) {
            continue;
        }
        let entries = applied
            .map_or(0, |a| a.index + 1)
            .saturating_sub(seen.map_or(0, |s| s.index + 1));
        let written = written_now.saturating_sub(counted_from) + carried;
        let size =
            Some(snapshot_bytes.load(Ordering::Relaxed)).filter(|&b| b > 0 && seen.is_some());
        if rule.due(entries, written, size) {
            tracing::info!(entries, log_bytes = written, snapshot_bytes = ?size,
                "a snapshot is due");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            asked = Some((Instant::now(), written_now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: SnapshotRule = SnapshotRule {
        after_entries: 1_000,
        log_percent: 25,
    };

    #[test]
    fn the_first_snapshot_comes_after_enough_entries() {
        assert!(!RULE.due(999, u64::MAX, None));
        assert!(RULE.due(1_000, 0, None));
    }

    #[test]
    fn later_ones_wait_for_a_share_of_the_last_snapshots_size() {
        let gib = 1u64 << 30;
        assert!(!RULE.due(5_000_000, gib - 1, Some(4 * gib)));
        assert!(RULE.due(5_000_000, gib, Some(4 * gib)));
        // Entries are still a floor, however much the entries weigh.
        assert!(!RULE.due(999, 10 * gib, Some(gib)));
        // A state twice as big waits for twice the log.
        assert!(!RULE.due(5_000_000, 2 * gib - 1, Some(8 * gib)));
        assert!(RULE.due(5_000_000, 2 * gib, Some(8 * gib)));
    }

    #[test]
    fn zero_percent_is_the_entry_count_alone_and_nothing_overflows() {
        let entries_only = SnapshotRule {
            log_percent: 0,
            ..RULE
        };
        assert!(entries_only.due(1_000, 0, Some(u64::MAX)));
        assert!(!RULE.due(1_000, u64::MAX / 200, Some(u64::MAX)));
        assert!(RULE.due(1_000, u64::MAX, Some(u64::MAX)));
        let every_entry = SnapshotRule {
            after_entries: 0,
            log_percent: 0,
        };
        assert!(
            !every_entry.due(0, 0, None),
            "nothing new, nothing to build"
        );
    }
}

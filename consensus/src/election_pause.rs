//! A node holds its elections while it receives or installs a snapshot. In openraft 0.9 the
//! leader sends a follower no heartbeats while a snapshot to it is in flight, the chunks do not
//! reset the follower's election timer, and during the install the follower's own messages wait
//! behind it; yet its election timer runs. So a follower taking a big snapshot (minutes at 90
//! days) campaigned at every timeout, unheard, and came out with a term far above the leader's,
//! which then deposed a healthy leader (term 1 became 432 in the 90-day history; openraft 0.9
//! has no pre-vote). Such a node could not win anyway: its log is behind, and its vote replies
//! wait behind the install.
//!
//! Elections are held while an install runs, for `after_chunk` after each chunk received (the
//! leader gives a chunk that long before it gives up: a transfer abandoned by a leader that died
//! frees the node then), and for `after_install` once the install is done, so that the
//! leader's heartbeats, which resume only when it hears the install's answer, reset the
//! election timer before it is looked at again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::Raft;

#[derive(Debug)]
pub struct ElectionPause {
    after_chunk: Duration,
    after_install: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    installing: bool,
    hold_until: Option<Instant>,
}

impl ElectionPause {
    pub fn new(after_chunk: Duration, after_install: Duration) -> ElectionPause {
        ElectionPause {
            after_chunk,
            after_install,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(state: &mut State, until: Instant) {
        state.hold_until = Some(state.hold_until.map_or(until, |held| held.max(until)));
    }

    /// A snapshot chunk arrived.
    pub fn chunk(&self) {
        let until = Instant::now() + self.after_chunk;
        Self::hold(&mut self.state(), until);
    }

    /// An install starts (`true`) or ends, however it ends (`false`).
    pub fn installing(&self, on: bool) {
        let mut state = self.state();
        state.installing = on;
        if !on {
            // From now on, not from the last chunk.
            state.hold_until = Some(Instant::now() + self.after_install);
        }
    }

    /// Whether elections are held at `now`.
    pub fn held(&self, now: Instant) -> bool {
        let state = self.state();
        state.installing || state.hold_until.is_some_and(|until| now < until)
    }
}

/// Marks an install as under way until dropped (also when it fails or is abandoned).
pub struct Installing<'a>(&'a ElectionPause);

impl<'a> Installing<'a> {
    pub fn start(pause: &'a ElectionPause) -> Installing<'a> {
        pause.installing(true);
        Installing(pause)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        self.0.installing(false);
    }
}

/// Applies the pause to `raft` as it changes (checked every 20 ms); ends when Raft stops.
pub(crate) async fn apply(raft: Raft, pause: std::sync::Arc<ElectionPause>) {
    let mut held = false;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if raft.metrics().borrow().running_state.is_err() {
            return;
        }
        let now = pause.held(Instant::now());
        if now != held {
            held = now;
            raft.runtime_config().elect(!held);
            tracing::info!(held, "elections {}", if held { "held" } else { "resumed" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: Duration = Duration::from_secs(10);
    const AFTER: Duration = Duration::from_millis(400);

    #[test]
    fn held_from_a_chunk_through_the_install_and_a_timeout_after_it() {
        let pause = ElectionPause::new(CHUNK, AFTER);
        let t0 = Instant::now();
        assert!(!pause.held(t0));
        pause.chunk();
        assert!(pause.held(t0 + Duration::from_secs(9)));
        {
            let _installing = Installing::start(&pause);
            // However long the install runs.
            assert!(pause.held(t0 + Duration::from_secs(3600)));
        }
        let ended = Instant::now();
        // Not the chunk's 10 s any more: the install's end plus the election timeout.
        assert!(pause.held(ended + Duration::from_millis(399)));
        assert!(!pause.held(ended + Duration::from_millis(401)));
    }

    #[test]
    fn an_abandoned_transfer_frees_the_node_after_the_leaders_chunk_timeout() {
        let pause = ElectionPause::new(CHUNK, AFTER);
        let t0 = Instant::now();
        pause.chunk();
        assert!(pause.held(t0 + Duration::from_millis(9_900)));
        assert!(!pause.held(t0 + Duration::from_millis(10_100)));
    }
}

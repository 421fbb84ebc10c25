//! Linearizable reads share their quorum rounds. openraft's `ensure_linearizable` sends a
//! heartbeat round to the followers for every call; under load, reads outnumbered the Raft
//! messages of the writes. Here the reads waiting together take one round: a read joins the
//! next round that starts after it arrived — never one already under way, whose answer may
//! predate a write the reader saw acknowledged — so each read still sees every write
//! acknowledged before it began.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::ProposeError;

type Waiter = oneshot::Sender<Result<(), ProposeError>>;

#[derive(Default)]
struct Queue {
    /// A round is being run (by the task that takes `waiting` next).
    running: bool,
    /// Reads that arrived since the current round started.
    waiting: Vec<Waiter>,
}

/// Runs quorum rounds for the reads waiting, one round at a time.
#[derive(Clone, Default)]
pub(crate) struct SharedReads {
    queue: Arc<Mutex<Queue>>,
}

impl SharedReads {
    /// Waits for a round that starts after this call; `round` runs one (shared with the reads
    /// that arrive meanwhile).
    pub(crate) async fn read<F, Fut>(&self, round: F) -> Result<(), ProposeError>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), ProposeError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            tokio::spawn(drive(self.queue.clone(), round));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ProposeError::Unavailable(
                "the read round was dropped".into(),
            ))
        })
    }
}

/// Takes the reads waiting, runs one round for all of them, and again while more arrived.
async fn drive<F, Fut>(queue: Arc<Mutex<Queue>>, round: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), ProposeError>>,
{
    // Should this task die half way (a panic, the runtime stopping), the next read starts a
    // new one instead of queueing forever; the reads queued now are answered (dropped).
    let mut stopped = Stopped {
        queue: queue.clone(),
        armed: true,
    };
    loop {
        let readers = {
            let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.waiting.is_empty() {
                queue.running = false;
                // A read may queue (and start the next task) as soon as the lock is released.
                stopped.armed = false;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        metrics::histogram!("consensus_reads_per_round").record(readers.len() as f64);
        let result = round().await;
        for reader in readers {
            let _ = reader.send(result.clone());
        }
    }
}

/// Marks the queue as having no round running, and drops the reads waiting, when the task
/// that runs rounds ends for any reason.
struct Stopped {
    queue: Arc<Mutex<Queue>>,
    /// Off once the task ended normally, having marked the queue itself.
    armed: bool,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.running = false;
            queue.waiting.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A read never shares a round that started before it arrived, and reads arriving during a
    /// round share the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_waits_for_a_round_that_starts_after_it_and_shares_it() {
        let reads = SharedReads::default();
        let rounds = Arc::new(AtomicU64::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(0u64);
        // Each round waits until the test releases it by its number.
        let round = {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                let mut release = release_rx.clone();
                async move {
                    let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    release
                        .wait_for(|r| *r >= n)
                        .await
                        .map_err(|_| ProposeError::ShuttingDown)?;
                    Ok(())
                }
            }
        };
        let first = tokio::spawn({
            let (reads, round) = (reads.clone(), round.clone());
            async move { reads.read(round).await }
        });
        // Round 1 is under way (started for the first read) before the others arrive.
        wait_until(|| rounds.load(Ordering::SeqCst) == 1).await;
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (reads, round) = (reads.clone(), round.clone());
                tokio::spawn(async move { reads.read(round).await })
            })
            .collect();
        // Wait until all ten are queued behind round 1.
        wait_until(|| reads.queue.lock().unwrap().waiting.len() == 10).await;
        release_tx.send_replace(1);
        first.await.unwrap().unwrap();
        // Round 1 answered only the first read; the ten wait for round 2, which they share.
        wait_until(|| rounds.load(Ordering::SeqCst) == 2).await;
        assert!(later.iter().all(|h| !h.is_finished()));
        release_tx.send_replace(2);
        for h in later {
            h.await.unwrap().unwrap();
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        assert!(!reads.queue.lock().unwrap().running);
    }

    async fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met");
            tokio::task::yield_now().await;
        }
    }
}

//! The Raft log on RocksDB, with group commit at the disk: appends go to the WAL unsynced and a
//! flusher thread syncs once for every append since its last sync, then tells openraft they are
//! durable, in order. A callback is never completed before its sync.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use yinyi_storage::keys::{META_COMMITTED, META_LAST_PURGED, META_VOTE};
use yinyi_storage::{Store, codec};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Appends waiting for the flusher at most; beyond it `append` waits (backpressure, not a hang).
const MAX_PENDING_FLUSHES: usize = 4096;

/// A fault-injection switch for the failure tests only: with `YINYI_FAULT_NO_LOG_SYNC=1` the
/// flusher completes appends without syncing the WAL, so an entry counts as durable while it
/// is only in the operating system's cache (votes, truncations and purges still sync). The
/// power-cut test uses it to show that it catches a log that does not sync. Never set it in
/// production: acknowledged payments would be lost when the power fails.
pub const NO_LOG_SYNC_ENV: &str = "YINYI_FAULT_NO_LOG_SYNC";

fn log_sync_disabled() -> bool {
    static DISABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DISABLED.get_or_init(|| {
        let disabled = std::env::var(NO_LOG_SYNC_ENV).is_ok_and(|v| v == "1");
        if disabled {
            tracing::warn!(
                "{NO_LOG_SYNC_ENV}=1: the Raft log is NOT synced (a test-only fault; \
                 acknowledged writes are lost on power failure)"
            );
        }
        disabled
    })
}

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: StorageIOError::new(subject, verb, openraft::AnyError::new(&e)),
    }
}

fn read_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_logs_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// The log store handed to openraft, and its readers (clones).
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    flusher: Arc<Flusher>,
    committed: Arc<AtomicU64>,
    /// Bytes of log appended by this process (the snapshot policy's measure).
    written: Arc<AtomicU64>,
}

/// The flusher thread and its queue. When the last log store goes, the queue closes and the
/// thread is joined, so the database is never closed by a thread that outlives its owner
/// (RocksDB aborts when a process exits under a database still being closed).
struct Flusher {
    queue: Option<mpsc::SyncSender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn queue(&self) -> Option<mpsc::SyncSender<LogFlushed<TypeConfig>>> {
        self.queue.clone()
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl LogStore {
    pub fn new(store: Arc<Store>) -> LogStore {
        let (tx, rx) = mpsc::sync_channel::<LogFlushed<TypeConfig>>(MAX_PENDING_FLUSHES);
        let flush_store = store.clone();
        let thread = std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || flush_loop(flush_store, rx))
            .expect("spawn the log flusher thread");
        LogStore {
            flusher: Arc::new(Flusher {
                queue: Some(tx),
                thread: Some(thread),
            }),
            committed: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
            store,
        }
    }

    /// Bytes of log appended by this process.
    pub fn written_handle(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// The highest log index known committed (0 before any), for status.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    pub fn committed_handle(&self) -> Arc<AtomicU64> {
        self.committed.clone()
    }
}

/// Waits for a callback, takes every other one already queued, syncs the WAL once, and
/// completes them all in order.
fn flush_loop(store: Arc<Store>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        metrics::histogram!("consensus_log_sync_batch_appends").record(waiting.len() as f64);
        let result = if log_sync_disabled() {
            Ok(())
        } else {
            store.sync_wal()
        };
        for callback in waiting {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(outcome);
        }
    }
}

fn decode_entries(raw: Vec<(u64, Vec<u8>)>) -> Result<Vec<Entry>, StorageError> {
    raw.into_iter()
        .map(|(_, bytes)| codec::decode::<Entry>(&bytes).map_err(read_logs_err))
        .collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i + 1,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let store = self.store.clone();
        let raw = tokio::task::spawn_blocking(move || store.log_range(start, end))
            .await
            .map_err(read_logs_err)?
            .map_err(read_logs_err)?;
        decode_entries(raw)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = match self
            .store
            .raft_meta(META_LAST_PURGED)
            .map_err(read_logs_err)?
        {
            Some(bytes) => Some(codec::decode(&bytes).map_err(read_logs_err)?),
            None => None,
        };
        let last = match self.store.last_log().map_err(read_logs_err)? {
            Some((_, bytes)) => Some(
                codec::decode::<Entry>(&bytes)
                    .map_err(read_logs_err)?
                    .log_id,
            ),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes =
            codec::encode(vote).map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        // A vote must survive a crash before we act on it: synced.
        self.store
            .put_raft_meta(META_VOTE, bytes, true)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self
            .store
            .raft_meta(META_VOTE)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Read, e))?
        {
            Some(bytes) => {
                Ok(Some(codec::decode(&bytes).map_err(|e| {
                    io_err(ErrorSubject::Vote, ErrorVerb::Read, e)
                })?))
            }
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(log_id) = committed {
            self.committed.store(log_id.index, Ordering::Relaxed);
        }
        let bytes = codec::encode(&committed).map_err(write_logs_err)?;
        // Not synced: the committed index is a hint that speeds up restart; Raft re-learns it.
        self.store
            .put_raft_meta(META_COMMITTED, bytes, false)
            .map_err(write_logs_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        match self
            .store
            .raft_meta(META_COMMITTED)
            .map_err(read_logs_err)?
        {
            Some(bytes) => {
                let committed: Option<LogId> = codec::decode(&bytes).map_err(read_logs_err)?;
                if let Some(log_id) = committed {
                    self.committed.store(log_id.index, Ordering::Relaxed);
                }
                Ok(committed)
            }
            None => Ok(None),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            let value = codec::encode(&entry).map_err(write_logs_err)?;
            bytes += value.len() as u64;
            encoded.push((entry.log_id.index, value));
        }
        self.written.fetch_add(bytes, Ordering::Relaxed);
        // Readable when this returns (in the memtable); durable when the flusher has synced.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.append_log(encoded))
            .await
            .map_err(write_logs_err)?
            .map_err(write_logs_err)?;
        let stopped = || write_logs_err(std::io::Error::other("log flusher stopped"));
        let flusher = self.flusher.queue().ok_or_else(stopped)?;
        tokio::task::spawn_blocking(move || flusher.send(callback))
            .await
            .map_err(write_logs_err)?
            .map_err(|_| stopped())?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store
            .truncate_log(log_id.index)
            .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = codec::encode(&log_id).map_err(write_logs_err)?;
        self.store
            .purge_log(log_id.index, bytes)
            .map_err(write_logs_err)
    }
}

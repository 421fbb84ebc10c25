//! The state machine: committed entries are applied with `ledger::apply` against a RocksDB view,
//! and each `apply` call's writes land in one batch with the last applied log id and membership.
//! Snapshots are files of frames exported from a RocksDB snapshot (`yinyi_storage::snapshot`):
//! built, sent in chunks, received and installed without holding the state in memory, and
//! kept on disk so a restarted node can still serve one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use yinyi_ledger::{ApplyCtx, MAX_COMMANDS_PER_ENTRY, Rules, TxnId, apply};
use yinyi_storage::keys::{SM_CLOCK, SM_LAST_APPLIED, SM_MEMBERSHIP};
use yinyi_storage::{StagedSnapshot, Store, codec};

use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::election_pause::{ElectionPause, Installing};
use crate::types::{
    BatchOutcome, Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// A test-only fault: set to a number of milliseconds, every snapshot install on this node
/// takes that much longer, as the install of a big state does (the failure suite's cluster
/// holds a few kilobytes). Never set it in production.
pub const SLOW_INSTALL_ENV: &str = "YINYI_FAULT_SLOW_INSTALL_MS";

fn slow_install() -> Option<Duration> {
    crate::fault_delay(SLOW_INSTALL_ENV, "every snapshot install is slowed")
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_state_machine(&e),
    }
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::read_state_machine(&e),
    }
}

fn snapshot_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::IO {
        source: StorageIOError::write_snapshot(None, &e),
    }
}

/// The snapshot this node serves: its meta and the file that holds it (in `snapshots/`).
#[derive(Clone, Serialize, Deserialize)]
struct Current {
    meta: SnapshotMeta,
    file: String,
}

/// The snapshots' directory and the current one, shared by the state machine and its builders.
/// Files are written aside (`*.part`), synced, and renamed into place; `current` names the one
/// served. A reader holding an older file keeps reading it after it is replaced.
#[derive(Clone)]
struct SnapshotSlot {
    dir: PathBuf,
    current: Arc<Mutex<Option<Current>>>,
    /// The current snapshot's size in bytes (0: none).
    bytes: Arc<AtomicU64>,
}

/// A file name for a snapshot id (ids come from the leader: only safe characters are kept).
fn file_name(meta: &SnapshotMeta) -> String {
    let id: String = meta
        .snapshot_id
        .chars()
        .take(96)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("snap-{id}.bin")
}

fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A fresh name for a file being written (built or received).
fn part_path(dir: &std::path::Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    dir.join(format!("{what}-{nanos}.part"))
}

impl SnapshotSlot {
    /// Opens `dir` and reads which snapshot is current (a `current` naming a missing file
    /// counts as none: the leader sends a new one when needed).
    fn open(dir: PathBuf) -> std::io::Result<SnapshotSlot> {
        std::fs::create_dir_all(&dir)?;
        let current = std::fs::read(dir.join("current"))
            .ok()
            .and_then(|bytes| codec::decode::<Current>(&bytes).ok())
            .filter(|c| dir.join(&c.file).is_file());
        let bytes = current
            .as_ref()
            .and_then(|c| std::fs::metadata(dir.join(&c.file)).ok())
            .map_or(0, |m| m.len());
        Ok(SnapshotSlot {
            dir,
            current: Arc::new(Mutex::new(current)),
            bytes: Arc::new(AtomicU64::new(bytes)),
        })
    }

    /// Removes every file but the current snapshot (parts of builds or transfers a crash cut
    /// short, older snapshots).
    fn clean(&self) {
        let keep = self.get().map(|c| c.file);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "current" && Some(&name) != keep.as_ref() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Makes the snapshot in `file` (already in `dir`, synced) the current one, durably, and
    /// removes the one it replaces.
    fn save(&self, current: Current) -> Result<(), StorageError> {
        let bytes = codec::encode(&current).map_err(snapshot_err)?;
        let tmp = self.dir.join("current.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(snapshot_err)?;
        file.write_all(&bytes).map_err(snapshot_err)?;
        file.sync_all().map_err(snapshot_err)?;
        std::fs::rename(&tmp, self.dir.join("current")).map_err(snapshot_err)?;
        sync_dir(&self.dir).map_err(snapshot_err)?;
        let size = std::fs::metadata(self.dir.join(&current.file)).map_or(0, |m| m.len());
        self.bytes.store(size, Ordering::Relaxed);
        let old = self
            .current
            .lock()
            .expect("snapshot slot lock")
            .replace(current.clone());
        if let Some(old) = old.filter(|old| old.file != current.file) {
            let _ = std::fs::remove_file(self.dir.join(old.file));
        }
        Ok(())
    }

    fn get(&self) -> Option<Current> {
        self.current.lock().expect("snapshot slot lock").clone()
    }
}

/// Replaces the state with the snapshot file `current` names, staged already (checked and
/// written into table files: `Store::stage_snapshot_file`); atomic across a crash (see
/// `Store::install_staged`). Then makes it the current snapshot.
fn install(
    store: &Store,
    slot: &SnapshotSlot,
    current: Current,
    staged: StagedSnapshot,
    started: std::time::Instant,
) -> Result<(), StorageError> {
    let marker = codec::encode(&current).map_err(snapshot_err)?;
    let records = store
        .install_staged(staged, &marker)
        .map_err(snapshot_err)?;
    let took = started.elapsed();
    metrics::histogram!("consensus_snapshot_install_seconds").record(took.as_secs_f64());
    tracing::info!(snapshot = %current.meta.snapshot_id, last = ?current.meta.last_log_id,
        records, ?took, "installed snapshot");
    slot.save(current)
}

pub struct StateMachine {
    store: Arc<Store>,
    rules: Rules,
    snapshots: SnapshotSlot,
    /// The file a snapshot being received is written to.
    receiving: Option<PathBuf>,
    /// The latest command time applied here (shared with the proposer, which never stamps
    /// below it).
    clock: Arc<AtomicI64>,
    /// Told when an install starts and ends (the node holds its elections meanwhile).
    pause: Arc<ElectionPause>,
}

impl StateMachine {
    /// The state machine over `store`, its snapshots in `data_dir/snapshots`. A snapshot
    /// install that a crash interrupted is finished first, from the same file.
    pub fn new(
        store: Arc<Store>,
        rules: Rules,
        data_dir: &std::path::Path,
    ) -> Result<StateMachine, StorageError> {
        // The one-blob snapshot of earlier releases: not readable any more, and not needed
        // (a snapshot is built again when one is asked for).
        let _ = std::fs::remove_file(data_dir.join("snapshot.bin"));
        let snapshots = SnapshotSlot::open(data_dir.join("snapshots")).map_err(snapshot_err)?;
        if let Some(marker) = store.unfinished_install().map_err(sm_read_err)? {
            let current: Current = codec::decode(&marker).map_err(sm_read_err)?;
            tracing::warn!(snapshot = %current.meta.snapshot_id,
                "a snapshot install was cut short: finishing it before serving");
            let started = std::time::Instant::now();
            let staged = store
                .stage_snapshot_file(&snapshots.dir.join(&current.file))
                .map_err(snapshot_err)?;
            install(&store, &snapshots, current, staged, started)?;
        }
        snapshots.clean();
        let clock = match store.sm_meta(SM_CLOCK) {
            Ok(Some(bytes)) => bytes
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(0),
            _ => 0,
        };
        Ok(StateMachine {
            store,
            rules,
            snapshots,
            receiving: None,
            clock: Arc::new(AtomicI64::new(clock)),
            pause: Arc::new(ElectionPause::new(Duration::ZERO, Duration::ZERO)),
        })
    }

    /// The latest command time applied on this node.
    pub fn clock(&self) -> Arc<AtomicI64> {
        self.clock.clone()
    }

    /// The last log entry of the current snapshot, if there is one.
    pub fn snapshot_last_log_id(&self) -> Option<LogId> {
        self.snapshots.get().and_then(|c| c.meta.last_log_id)
    }

    /// The current snapshot's size in bytes (0: none), as it changes.
    pub fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshots.bytes.clone()
    }

    /// Tells `pause` when an install starts and ends.
    pub fn with_election_pause(mut self, pause: Arc<ElectionPause>) -> StateMachine {
        self.pause = pause;
        self
    }
}

fn read_applied(store: &Store) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let applied = match store.sm_meta(SM_LAST_APPLIED).map_err(sm_read_err)? {
        Some(bytes) => codec::decode(&bytes).map_err(sm_read_err)?,
        None => None,
    };
    let membership = match store.sm_meta(SM_MEMBERSHIP).map_err(sm_read_err)? {
        Some(bytes) => codec::decode(&bytes).map_err(sm_read_err)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// Applies entries in order against one view and writes the result in one batch.
fn apply_entries(
    store: &Store,
    rules: Rules,
    clock: &AtomicI64,
    entries: Vec<Entry>,
) -> Result<Vec<BatchOutcome>, StorageError> {
    let (mut last_applied, mut membership) = read_applied(store)?;
    let mut view = store.view();
    let mut responses = Vec::with_capacity(entries.len());
    let mut latest_at = clock.load(Ordering::SeqCst);
    for entry in entries {
        let index = entry.log_id.index;
        last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => responses.push(BatchOutcome::default()),
            EntryPayload::Normal(batch) => {
                assert!(
                    batch.commands.len() as u64 <= MAX_COMMANDS_PER_ENTRY,
                    "entry {index} carries {} commands, above MAX_COMMANDS_PER_ENTRY",
                    batch.commands.len()
                );
                let mut outcomes = Vec::with_capacity(batch.commands.len());
                for (position, command) in batch.commands.iter().enumerate() {
                    latest_at = latest_at.max(command.at.0);
                    let ctx = ApplyCtx {
                        txn: TxnId::new(index, position as u64),
                        rules,
                    };
                    outcomes.push(apply(command, &mut view, &ctx));
                }
                metrics::counter!("consensus_applied_commands_total")
                    .increment(outcomes.len() as u64);
                responses.push(BatchOutcome { outcomes });
            }
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m);
                responses.push(BatchOutcome::default());
            }
        }
    }
    let applied_bytes = codec::encode(&last_applied).map_err(sm_write_err)?;
    let membership_bytes = codec::encode(&membership).map_err(sm_write_err)?;
    store
        .commit_view(
            view,
            &[
                (SM_LAST_APPLIED, applied_bytes),
                (SM_MEMBERSHIP, membership_bytes),
                (SM_CLOCK, latest_at.to_be_bytes().to_vec()),
            ],
        )
        .map_err(sm_write_err)?;
    clock.fetch_max(latest_at, Ordering::SeqCst);
    Ok(responses)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        read_applied(&self.store)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let store = self.store.clone();
        let rules = self.rules;
        let clock = self.clock.clone();
        tokio::task::spawn_blocking(move || apply_entries(&store, rules, &clock, entries))
            .await
            .map_err(sm_write_err)?
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        if let Some(abandoned) = self.receiving.take() {
            let _ = tokio::fs::remove_file(abandoned).await;
        }
        let path = part_path(&self.snapshots.dir, "receiving");
        let file = SnapshotFile::create(&path).await.map_err(snapshot_err)?;
        self.receiving = Some(path);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let _installing = Installing::start(&self.pause);
        let mut data = *snapshot;
        data.flush().await.map_err(snapshot_err)?;
        data.sync_all().await.map_err(snapshot_err)?;
        // The data is the file begun by `begin_receiving_snapshot`, or (openraft's own tests)
        // another snapshot's file handed over whole: that one is copied in.
        let received = self.receiving.take();
        let ours = match &received {
            Some(path) => {
                let theirs = data.metadata().await.map_err(snapshot_err)?;
                let mine = tokio::fs::metadata(path).await.map_err(snapshot_err)?;
                use std::os::unix::fs::MetadataExt;
                (theirs.dev(), theirs.ino()) == (mine.dev(), mine.ino())
            }
            None => false,
        };
        let part = match received {
            Some(path) if ours => path,
            other => {
                if let Some(path) = other {
                    let _ = tokio::fs::remove_file(path).await;
                }
                let path = part_path(&self.snapshots.dir, "receiving");
                let mut copy = SnapshotFile::create(&path).await.map_err(snapshot_err)?;
                data.seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(snapshot_err)?;
                tokio::io::copy(&mut data, &mut copy)
                    .await
                    .map_err(snapshot_err)?;
                copy.sync_all().await.map_err(snapshot_err)?;
                path
            }
        };
        drop(data);
        let current = Current {
            meta: meta.clone(),
            file: file_name(meta),
        };
        let dir = self.snapshots.dir.clone();
        let store = self.store.clone();
        let slot = self.snapshots.clone();
        // Checking the file and writing it into table files reads and writes the whole state:
        // at a lower priority, like a build. Replacing the state with them, while readers wait,
        // at the usual one.
        let started = std::time::Instant::now();
        let staging = self.store.clone();
        let file = dir.join(&current.file);
        let staged = in_background("snapshot-stage", move || {
            if let Some(pause) = slow_install() {
                std::thread::sleep(pause);
            }
            std::fs::rename(&part, &file).map_err(snapshot_err)?;
            sync_dir(&dir).map_err(snapshot_err)?;
            staging.stage_snapshot_file(&file).map_err(snapshot_err)
        })
        .await
        .map_err(snapshot_err)??;
        tokio::task::spawn_blocking(move || install(&store, &slot, current, staged, started))
            .await
            .map_err(snapshot_err)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(current) = self.snapshots.get() else {
            return Ok(None);
        };
        let file = SnapshotFile::open(self.snapshots.dir.join(&current.file))
            .await
            .map_err(snapshot_err)?;
        Ok(Some(Snapshot {
            meta: current.meta,
            snapshot: Box::new(file),
        }))
    }
}

pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: SnapshotSlot,
}

/// How much lower than the node's other threads a snapshot build or install runs (a nice
/// value): either goes through the whole state (a minute of a core on a big one) and must not
/// starve the threads that answer requests and heartbeats (a follower that misses heartbeats
/// campaigns and, without pre-vote in openraft 0.9, deposes the leader), nor, on a shared
/// machine, the other nodes.
const BUILD_NICENESS: libc::c_int = 10;

/// Runs `work` on a thread of its own at [`BUILD_NICENESS`] and waits for it.
async fn in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: gettid and setpriority on the calling thread have no preconditions; a
            // failure leaves the thread at the usual priority. (Linux: a nice value per thread.)
            #[cfg(target_os = "linux")]
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BUILD_NICENESS);
            }
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| std::io::Error::other(format!("the {name} thread died")))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Export and the synced write run off the async runtime, on a thread of lower
        // priority: on a big state they take long enough to stall every request if they ran on
        // its threads. Memory stays at a frame.
        let store = self.store.clone();
        let slot = self.snapshots.clone();
        let started = std::time::Instant::now();
        let (current, bytes) = in_background("snapshot-build", move || {
            let part = part_path(&slot.dir, "building");
            let mut file = std::fs::File::create(&part).map_err(snapshot_err)?;
            let exported = store.export_snapshot(&mut file).map_err(snapshot_err)?;
            file.sync_all().map_err(snapshot_err)?;
            drop(file);
            let last_log_id: Option<LogId> = match &exported.last_applied {
                Some(bytes) => codec::decode(bytes).map_err(snapshot_err)?,
                None => None,
            };
            let last_membership: StoredMembership = match &exported.membership {
                Some(bytes) => codec::decode(bytes).map_err(snapshot_err)?,
                None => StoredMembership::default(),
            };
            let snapshot_id = match last_log_id {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, exported.records),
                None => format!("empty-{}", exported.records),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            };
            let current = Current {
                file: file_name(&meta),
                meta,
            };
            std::fs::rename(&part, slot.dir.join(&current.file)).map_err(snapshot_err)?;
            sync_dir(&slot.dir).map_err(snapshot_err)?;
            slot.save(current.clone())?;
            Ok::<_, StorageError>((current, exported.bytes))
        })
        .await
        .map_err(snapshot_err)??;
        let took = started.elapsed();
        metrics::histogram!("consensus_snapshot_build_seconds").record(took.as_secs_f64());
        metrics::gauge!("consensus_snapshot_bytes").set(bytes as f64);
        tracing::info!(snapshot = %current.meta.snapshot_id, bytes, ?took, "built snapshot");
        let file = SnapshotFile::open(self.snapshots.dir.join(&current.file))
            .await
            .map_err(snapshot_err)?;
        Ok(Snapshot {
            meta: current.meta,
            snapshot: Box::new(file),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// A node that crashes in the middle of installing a snapshot finishes the install from the
    /// same file when it starts again, before it serves: the old state or the new, never a mix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_install_a_crash_cut_short_is_finished_when_the_node_starts_again() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let store_a = Arc::new(Store::open(&a.path().join("db")).unwrap());
        let mut leader = StateMachine::new(store_a, Rules::default(), a.path()).unwrap();
        leader.apply((1..=5).map(blank)).await.unwrap();
        let built = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let current = Current {
            file: file_name(&built.meta),
            meta: built.meta.clone(),
        };
        {
            let store_b = Store::open(&b.path().join("db")).unwrap();
            let dir = b.path().join("snapshots");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(
                a.path().join("snapshots").join(&current.file),
                dir.join(&current.file),
            )
            .unwrap();
            let marker = codec::encode(&current).unwrap();
            store_b
                .install_snapshot_file_cut_after(&dir.join(&current.file), &marker, 0)
                .unwrap_err();
            assert!(store_b.unfinished_install().unwrap().is_some());
        }
        let store_b = Arc::new(Store::open(&b.path().join("db")).unwrap());
        let mut follower = StateMachine::new(store_b.clone(), Rules::default(), b.path()).unwrap();
        assert_eq!(store_b.unfinished_install().unwrap(), None);
        assert_eq!(
            follower.applied_state().await.unwrap().0,
            built.meta.last_log_id
        );
        let served = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(served.meta, built.meta);
    }

    /// Files a crash left behind (parts of builds and transfers) are removed at start; the
    /// current snapshot stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leftovers_of_a_crash_are_removed_and_the_current_snapshot_kept() {
        let a = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&a.path().join("db")).unwrap());
        let mut sm = StateMachine::new(store.clone(), Rules::default(), a.path()).unwrap();
        sm.apply((1..=3).map(blank)).await.unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let dir = a.path().join("snapshots");
        std::fs::write(dir.join("receiving-1.part"), b"half a transfer").unwrap();
        std::fs::write(dir.join("building-2.part"), b"half a build").unwrap();
        drop(sm);
        let mut sm = StateMachine::new(store, Rules::default(), a.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["current".to_string(), file_name(&built.meta)]);
        let served = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(served.meta, built.meta);
    }
}

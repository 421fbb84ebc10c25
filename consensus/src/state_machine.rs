//! The state machine: committed entries are applied with `ledger::apply` against a RocksDB view,
//! and each `apply` call's writes land in one batch with the last applied log id and membership.
//! Snapshots are exports of the state families from a RocksDB snapshot, kept on disk so a
//! restarted node can still serve one.

use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use yinyi_ledger::{ApplyCtx, MAX_COMMANDS_PER_ENTRY, Rules, TxnId, apply};
use yinyi_storage::keys::{SM_CLOCK, SM_LAST_APPLIED, SM_MEMBERSHIP};
use yinyi_storage::{Store, codec};

use crate::types::{
    BatchOutcome, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

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

/// A built or installed snapshot.
#[derive(Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The last snapshot, shared by the state machine and its builders.
#[derive(Clone)]
struct SnapshotSlot {
    path: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl SnapshotSlot {
    fn load(path: PathBuf) -> SnapshotSlot {
        let current = std::fs::read(&path)
            .ok()
            .and_then(|bytes| codec::decode::<StoredSnapshot>(&bytes).ok());
        SnapshotSlot {
            path,
            current: Arc::new(Mutex::new(current)),
        }
    }

    /// Keeps `snapshot` in memory and on disk (written aside and synced, then renamed into place).
    fn save(&self, snapshot: StoredSnapshot) -> Result<(), StorageError> {
        let bytes = codec::encode(&snapshot).map_err(snapshot_err)?;
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(snapshot_err)?;
        file.write_all(&bytes).map_err(snapshot_err)?;
        file.sync_all().map_err(snapshot_err)?;
        std::fs::rename(&tmp, &self.path).map_err(snapshot_err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(snapshot_err)?;
        }
        *self.current.lock().expect("snapshot slot lock") = Some(snapshot);
        Ok(())
    }

    fn get(&self) -> Option<StoredSnapshot> {
        self.current.lock().expect("snapshot slot lock").clone()
    }
}

pub struct StateMachine {
    store: Arc<Store>,
    rules: Rules,
    snapshots: SnapshotSlot,
    /// The latest command time applied here (shared with the proposer, which never stamps
    /// below it).
    clock: Arc<AtomicI64>,
}

impl StateMachine {
    pub fn new(store: Arc<Store>, rules: Rules, data_dir: &std::path::Path) -> StateMachine {
        let clock = match store.sm_meta(SM_CLOCK) {
            Ok(Some(bytes)) => bytes
                .as_slice()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(0),
            _ => 0,
        };
        StateMachine {
            store,
            rules,
            snapshots: SnapshotSlot::load(data_dir.join("snapshot.bin")),
            clock: Arc::new(AtomicI64::new(clock)),
        }
    }

    /// The latest command time applied on this node.
    pub fn clock(&self) -> Arc<AtomicI64> {
        self.clock.clone()
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let store = self.store.clone();
        let blob = data.clone();
        tokio::task::spawn_blocking(move || store.import_state(&blob))
            .await
            .map_err(snapshot_err)?
            .map_err(snapshot_err)?;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installed snapshot");
        self.snapshots.save(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshots.get().map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

pub struct SnapshotBuilder {
    store: Arc<Store>,
    snapshots: SnapshotSlot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Export, encode and the synced write all run off the async runtime: on a big state
        // they take long enough to stall every request if they ran on its threads.
        let store = self.store.clone();
        let slot = self.snapshots.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let exported = store.export_state().map_err(snapshot_err)?;
            let last_log_id: Option<LogId> = match &exported.last_applied {
                Some(bytes) => codec::decode(bytes).map_err(snapshot_err)?,
                None => None,
            };
            let last_membership: StoredMembership = match &exported.membership {
                Some(bytes) => codec::decode(bytes).map_err(snapshot_err)?,
                None => StoredMembership::default(),
            };
            let snapshot_id = match last_log_id {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, exported.blob.len()),
                None => format!("empty-{}", exported.blob.len()),
            };
            let stored = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id,
                    last_membership,
                    snapshot_id,
                },
                data: exported.blob,
            };
            slot.save(stored.clone())?;
            Ok::<_, StorageError>(stored)
        })
        .await
        .map_err(snapshot_err)??;
        tracing::info!(snapshot = %stored.meta.snapshot_id, bytes = stored.data.len(), "built snapshot");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

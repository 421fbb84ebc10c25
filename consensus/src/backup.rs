//! Backups and restores. A backup is a RocksDB checkpoint of one node's database (the Raft log
//! and meta and the whole state, consistent at one instant) plus `backup.json` saying what it
//! holds: the node, the last applied entry and the digest of the state. A restore copies a
//! backup into a new node's data directory and makes it the start of a new cluster: the log is
//! emptied (everything up to the backup's last applied entry counts as purged), the vote is
//! forgotten and the membership is the new cluster's. Restoring the same backup on every node
//! of the new cluster gives nodes with one state; they elect a leader among themselves and go
//! on from there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, Membership, StoredMembership};
use serde::{Deserialize, Serialize};
use yinyi_storage::keys::SM_LAST_APPLIED;
use yinyi_storage::{Store, codec};

use crate::types::{LogId, NodeId, Vote};

/// What `backup.json` says about a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The node the backup was taken on.
    pub node: NodeId,
    /// The index of the last entry applied to the state in the backup (0: none).
    pub applied: u64,
    /// The digest of the state in the backup (as `ctl status` shows digests).
    pub digest: String,
    /// Milliseconds since the Unix epoch when it was taken.
    pub taken_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists; a backup goes into a new directory")]
    Exists(String),
    #[error("{0} holds no backup (no db/ or backup.json)")]
    NotABackup(String),
    #[error("{0}")]
    Io(String),
}

fn io(context: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Io(format!("{context}: {e}"))
}

fn applied_of(store: &Store) -> Result<Option<LogId>, BackupError> {
    match store.sm_meta(SM_LAST_APPLIED).map_err(|e| io("read", e))? {
        Some(bytes) => codec::decode(&bytes).map_err(|e| io("decode last applied", e)),
        None => Ok(None),
    }
}

/// Takes a backup of `store` into `dir` (which must not exist): checkpoint, then the digest and
/// applied index read back from the checkpoint itself, so `backup.json` describes exactly what
/// was copied.
pub fn take(store: &Store, node: NodeId, dir: &Path) -> Result<BackupInfo, BackupError> {
    if dir.exists() {
        return Err(BackupError::Exists(dir.display().to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|e| io("create the backup directory", e))?;
    let db = dir.join("db");
    store.checkpoint(&db).map_err(|e| io("checkpoint", e))?;
    let copy = Store::open(&db).map_err(|e| io("open the checkpoint", e))?;
    let info = BackupInfo {
        node,
        applied: applied_of(&copy)?.map_or(0, |l| l.index),
        digest: copy.digest().map_err(|e| io("digest", e))?,
        taken_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    drop(copy);
    let json = serde_json::to_string_pretty(&info).map_err(|e| io("encode backup.json", e))?;
    std::fs::write(dir.join("backup.json"), json).map_err(|e| io("write backup.json", e))?;
    Ok(info)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Restores `backup` into `data` (a new node's data directory, without a database yet) as a
/// member of a new cluster of `members` (id → address, all voters).
pub fn restore(
    backup: &Path,
    data: &Path,
    members: &BTreeMap<NodeId, String>,
) -> Result<BackupInfo, BackupError> {
    let json = std::fs::read_to_string(backup.join("backup.json"))
        .map_err(|_| BackupError::NotABackup(backup.display().to_string()))?;
    let info: BackupInfo = serde_json::from_str(&json).map_err(|e| io("read backup.json", e))?;
    if !backup.join("db").is_dir() {
        return Err(BackupError::NotABackup(backup.display().to_string()));
    }
    let db = data.join("db");
    if db.exists() {
        return Err(BackupError::Exists(db.display().to_string()));
    }
    if members.is_empty() {
        return Err(io("members", "a cluster needs at least one member"));
    }
    copy_dir(&backup.join("db"), &db).map_err(|e| io("copy the backup", e))?;
    let store = Store::open(&db).map_err(|e| io("open the copy", e))?;
    let applied = applied_of(&store)?;
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let membership = StoredMembership::new(applied, Membership::new(vec![voters], nodes));
    // The vote keeps the backup's term: the new cluster's first election is at a later term,
    // so its entries sort after the restored last entry (a vote of term 0 would elect a leader
    // at term 1 whose entries sort below it, and nothing would ever commit). Every node
    // restored from the backup holds the same vote, for the lowest member, never a leader.
    let first_member = *members.keys().next().expect("members checked non-empty");
    let vote = applied.map(|log_id| Vote::new(log_id.leader_id.term, first_member));
    store
        .reset_raft(
            applied
                .map(|log_id| codec::encode(&log_id))
                .transpose()
                .map_err(|e| io("encode", e))?,
            vote.map(|vote| codec::encode(&vote))
                .transpose()
                .map_err(|e| io("encode", e))?,
            codec::encode(&membership).map_err(|e| io("encode", e))?,
        )
        .map_err(|e| io("reset the Raft state", e))?;
    // A backup of an earlier release has the digest of the families it knew.
    let matches = store
        .matches_digest(&info.digest)
        .map_err(|e| io("digest", e))?;
    if !matches {
        let digest = store.digest().map_err(|e| io("digest", e))?;
        return Err(io(
            "verify",
            format!(
                "the restored state's digest {digest} is not the backup's {}",
                info.digest
            ),
        ));
    }
    Ok(info)
}

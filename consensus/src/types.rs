//! The openraft type configuration: an entry carries a batch of ledger commands and answers with
//! one outcome per command.

use serde::{Deserialize, Serialize};
use yinyi_ledger::{Command, Outcome};

/// What one Raft entry carries: the commands the proposer gathered while earlier entries were in
/// flight (group commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub commands: Vec<Command>,
}

/// One outcome per command of the entry's batch, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
}

pub type NodeId = u64;

/// A snapshot travels as a file: read in chunks when sent, written chunk by chunk when received.
pub type SnapshotFile = tokio::fs::File;

openraft::declare_raft_types!(
    /// yinyi's Raft types.
    pub TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

//! The consensus crate's one error type for callers.

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use crate::types::NodeId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is who is, when known (id and address).
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// No quorum or no leader right now; retry with the same request id.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too much queued on this node; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request was refused before proposing (bad input, bad membership).
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("shutting down")]
    ShuttingDown,
}

impl ProposeError {
    /// Not the leader: the one openraft knows of, with its address.
    pub(crate) fn forward(
        f: &openraft::error::ForwardToLeader<NodeId, openraft::BasicNode>,
    ) -> Self {
        ProposeError::NotLeader {
            leader: f.leader_id.map(|id| {
                (
                    id,
                    f.leader_node
                        .as_ref()
                        .map(|n| n.addr.clone())
                        .unwrap_or_default(),
                )
            }),
        }
    }

    pub fn from_raft(e: &RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ProposeError::forward(f),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                ProposeError::Invalid(c.to_string())
            }
            RaftError::Fatal(f) => ProposeError::Unavailable(format!("raft stopped: {f}")),
        }
    }

    /// Whether the same request may be sent again (with the same request id).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ProposeError::Invalid(_))
    }
}

/// Why a node's consensus layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] yinyi_storage::StorageError),
    #[error("bad raft configuration: {0}")]
    Config(String),
    #[error("cannot start raft: {0}")]
    Raft(String),
}

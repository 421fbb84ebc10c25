//! What the actors need from the replicated core. The node implements it over `Consensus` and
//! the local store; unit tests implement it over the ledger's in-memory state.

use std::future::Future;

use yinyi_ledger::{
    Account, AccountId, BankOp, BankRef, Bill, BillId, Command, Outcome, Rejection, RequestId,
    RequestRecord, Terminal, TerminalId,
};

/// Why a proposal did not produce an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeFailure {
    /// This node is not the leader (any more).
    #[error("this node is not the leader")]
    NotLeader,
    /// Raft could not commit it now (no quorum, shutting down, storage error); retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too many commands queued; retryable after a pause.
    #[error("overloaded")]
    Overloaded,
    /// The command itself cannot be proposed (e.g. too large); not retryable.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The replicated core as the actors see it. Reads are of this node's applied state: on a
/// leader that has applied everything committed before its term (the node starts the actors
/// only then), they include every outcome the actors themselves were answered.
pub trait Backend: Send + Sync + 'static {
    /// Proposes one command through Raft; resolves with its outcome once applied here.
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<Outcome, ProposeFailure>> + Send;

    fn account(&self, id: AccountId) -> Option<Account>;
    fn terminal(&self, id: &TerminalId) -> Option<Terminal>;
    fn bill(&self, id: &BillId) -> Option<Bill>;
    /// The record of a request, by its terminal and id.
    fn request(&self, terminal: &TerminalId, id: &RequestId) -> Option<RequestRecord>;
    /// What `apply` would refuse `command` with on this node's state now (`ledger::refusal`
    /// with the cluster's rules); `None` when it would pass or is a recorded request.
    fn refusal(&self, command: &Command) -> Option<Rejection>;
    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp>;
    /// Every bank operation still Pending or InDoubt, and every hold still Authorized.
    fn unresolved_bank_ops(&self) -> Vec<BankOp>;
}

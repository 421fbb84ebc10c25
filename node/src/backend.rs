//! The actors' view of the replicated core on this node: proposals go to `Consensus`, reads to
//! the local store's applied state.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use yinyi_actors::{Backend, ProposeFailure};
use yinyi_consensus::{Consensus, ProposeError};
use yinyi_ledger::{
    Account, AccountId, ApplyCtx, BankOp, BankRef, Bill, BillId, Card, CardNo, Command, Outcome,
    Rejection, RequestId, RequestRecord, StateView, Terminal, TerminalId, TxnId,
};
use yinyi_storage::Store;
use yinyi_storage::keys::{CF_ACCOUNTS, CF_BANK_OPS, CF_CARDS, CF_TERMINALS, account_key};

#[derive(Clone)]
pub struct NodeBackend {
    consensus: Consensus,
}

impl NodeBackend {
    pub fn new(consensus: Consensus) -> NodeBackend {
        NodeBackend { consensus }
    }

    pub fn store(&self) -> &Arc<Store> {
        self.consensus.store()
    }

    /// A local read; a store error is logged and read as absent (the actors only use reads
    /// as a cache: `apply` decides again).
    fn read<T: DeserializeOwned>(&self, family: &str, key: &[u8]) -> Option<T> {
        match self.store().get(family, key) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(family, "local read failed: {e}");
                None
            }
        }
    }

    /// Every bank operation (a full walk; for reconciliation).
    pub fn all_bank_ops(&self) -> Result<Vec<BankOp>, yinyi_storage::StorageError> {
        self.store()
            .scan_prefix::<BankOp>(CF_BANK_OPS, b"", usize::MAX)
    }

    pub fn card(&self, no: &CardNo) -> Option<Card> {
        self.read(CF_CARDS, no.as_str().as_bytes())
    }
}

impl Backend for NodeBackend {
    async fn propose(&self, command: Command) -> Result<Outcome, ProposeFailure> {
        self.consensus.propose(command).await.map_err(|e| match e {
            ProposeError::NotLeader { .. } => ProposeFailure::NotLeader,
            ProposeError::Unavailable(m) => ProposeFailure::Unavailable(m),
            ProposeError::ShuttingDown => ProposeFailure::Unavailable("shutting down".into()),
            ProposeError::Overloaded(_) => ProposeFailure::Overloaded,
            ProposeError::Invalid(m) => ProposeFailure::Invalid(m),
        })
    }

    fn account(&self, id: AccountId) -> Option<Account> {
        self.read(CF_ACCOUNTS, &account_key(id))
    }

    fn terminal(&self, id: &TerminalId) -> Option<Terminal> {
        self.read(CF_TERMINALS, id.as_str().as_bytes())
    }

    fn bill(&self, id: &BillId) -> Option<Bill> {
        match self.store().bill(id) {
            Ok(bill) => bill,
            Err(e) => {
                tracing::error!("local read of bill {id} failed: {e}");
                None
            }
        }
    }

    fn request(&self, terminal: &TerminalId, id: &RequestId) -> Option<RequestRecord> {
        self.store().view().request(terminal, id)
    }

    fn refusal(&self, command: &Command) -> Option<Rejection> {
        // No id is allocated by a refusal; the transaction id only matters to what is written.
        let ctx = ApplyCtx {
            txn: TxnId::new(0, 0),
            rules: self.consensus.rules(),
        };
        yinyi_ledger::refusal(command, &mut self.store().view(), &ctx)
    }

    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp> {
        self.read(CF_BANK_OPS, bank_ref.as_str().as_bytes())
    }

    fn unresolved_bank_ops(&self) -> Vec<BankOp> {
        match self.store().open_bank_ops() {
            Ok(ops) => ops,
            Err(e) => {
                tracing::error!("bank operations unreadable: {e}");
                Vec::new()
            }
        }
    }
}

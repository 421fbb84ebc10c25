//! yinyi-ledger: the pure, deterministic business core of yinyi (银医通).
//!
//! Money, ids, the `Command`s every channel submits, their `Outcome`s with stable reason codes,
//! the `StateView` the rules read and write through, and [`apply`], which holds every rule of
//! `DOMAIN.md`. No I/O, no async, no clock, no randomness: every node applies the same commands
//! in the same order and reaches byte-identical state.

pub mod apply;
pub mod audit;
pub mod calendar;
pub mod command;
pub mod credential;
pub mod ids;
pub mod model;
pub mod money;
pub mod outcome;
pub mod permissions;
pub mod settlement;
pub mod view;

pub use apply::{ApplyCtx, MAX_PRUNED_PER_COMMAND, Rules, apply, refusal};
pub use audit::{Audit, AuditReport};
pub use calendar::BusinessDay;
pub use command::{AdjustDirection, Command, CommandBody, DifferenceRef, EpisodeFunds, RefundTo};
pub use credential::{Credential, Role};
pub use ids::{
    AccountId, AdmissionId, BankRef, BillId, CardNo, CardToken, IdError, InsuranceSettlementId,
    MAX_COMMANDS_PER_ENTRY, OperatorId, PersonKey, RequestId, TerminalId, TerminalKind, TxnId,
    WardId,
};
pub use model::*;
pub use money::{AmountError, Money};
pub use outcome::{Effect, Outcome, ReasonClass, ReasonCode, Rejection};
pub use permissions::{allowed_out_of_service, allowed_terminals};
pub use settlement::{
    Direction, Settlement, SettlementLine, SettlementStatus, SettlementTerms, settle,
};
pub use view::{MemState, RequestRecord, StateView};

//! `Outcome`: what a command did, or why it was refused, with a stable reason code.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::RefundTo;
use crate::ids::{AccountId, AdmissionId, BankRef, BillId, CardNo, TerminalId, TxnId};
use crate::model::{
    AccountStatus, BankOpKind, BankOpState, CardStatus, CollectionReport, EpisodeStatus,
    ShiftReport, TerminalStatus,
};
use crate::money::Money;

/// The stable reason codes of rejections. Clients switch on these strings; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    InvalidAmount,
    InvalidDenomination,
    BelowMinimumDeposit,
    RequestIdReused,
    TerminalNotRegistered,
    TerminalOutOfService,
    TerminalAlreadyRegistered,
    TerminalNotAllowed,
    OperatorRequired,
    ShiftNotOpen,
    ShiftAlreadyOpen,
    AccountNotFound,
    AccountFrozen,
    InsufficientFunds,
    NothingToWithdraw,
    OverdraftInUse,
    OverdraftAboveMaximum,
    CardNotFound,
    CardAlreadyExists,
    CardLost,
    CardReplaced,
    CardNotLost,
    IdentityMismatch,
    BillNotFound,
    BillAlreadyExists,
    BillAccountMismatch,
    BillAlreadyPaid,
    BillCancelled,
    BillNotPaid,
    BillOperationInProgress,
    RefundNotAllowed,
    AlreadyRefunded,
    RefundChannelNotAllowed,
    BankOpNotFound,
    BankOpAlreadyFinal,
    InvariantViolation,
    CredentialExists,
    CredentialNotFound,
    InvalidCredential,
    /// A holder's name, masked ID or phone not in the shape personal data must have (an
    /// unmasked ID number, say). New codes go last: outcomes are stored by position.
    InvalidHolder,
    /// An adjustment's reason or reference missing or not plain text.
    InvalidAdjustment,
    /// The reconciliation difference an adjustment names is not in that day's report.
    DifferenceNotFound,
    /// The difference is resolved already (by reconciliation, a reversal under way or an
    /// earlier adjustment).
    DifferenceAlreadyResolved,
    /// The adjustment is not the one the difference calls for (amount or account).
    AdjustmentMismatch,
    /// No inpatient episode under that admission id.
    EpisodeNotFound,
    /// An episode under that admission id exists already.
    EpisodeExists,
    /// The episode is not in a state that takes this (charges after the final amount, a
    /// deposit after discharge, a settlement before the final amount).
    EpisodeNotOpen,
    /// The deposits do not cover the final amount: collect the rest first.
    EpisodeShortfall,
    /// A deposit by card or channel is still waiting for the bank.
    EpisodeOperationInProgress,
    /// A bill under that insurance settlement id is posted already.
    InsuranceSettlementExists,
    /// An insured bill is cancelled whole (its insurance settlement is reversed with it).
    InsuredBillWholeOnly,
    /// The authorization is not held now: declined, released, captured, or a capture or
    /// release of it is under way.
    AuthorizationNotHeld,
    /// The bill is more than the authorization holds: capture refused, the hold unchanged.
    CaptureExceedsAuthorization,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 53] = [
        ReasonCode::InvalidAmount,
        ReasonCode::InvalidDenomination,
        ReasonCode::BelowMinimumDeposit,
        ReasonCode::RequestIdReused,
        ReasonCode::TerminalNotRegistered,
        ReasonCode::TerminalOutOfService,
        ReasonCode::TerminalAlreadyRegistered,
        ReasonCode::TerminalNotAllowed,
        ReasonCode::OperatorRequired,
        ReasonCode::ShiftNotOpen,
        ReasonCode::ShiftAlreadyOpen,
        ReasonCode::AccountNotFound,
        ReasonCode::AccountFrozen,
        ReasonCode::InsufficientFunds,
        ReasonCode::NothingToWithdraw,
        ReasonCode::OverdraftInUse,
        ReasonCode::OverdraftAboveMaximum,
        ReasonCode::CardNotFound,
        ReasonCode::CardAlreadyExists,
        ReasonCode::CardLost,
        ReasonCode::CardReplaced,
        ReasonCode::CardNotLost,
        ReasonCode::IdentityMismatch,
        ReasonCode::BillNotFound,
        ReasonCode::BillAlreadyExists,
        ReasonCode::BillAccountMismatch,
        ReasonCode::BillAlreadyPaid,
        ReasonCode::BillCancelled,
        ReasonCode::BillNotPaid,
        ReasonCode::BillOperationInProgress,
        ReasonCode::RefundNotAllowed,
        ReasonCode::AlreadyRefunded,
        ReasonCode::RefundChannelNotAllowed,
        ReasonCode::BankOpNotFound,
        ReasonCode::BankOpAlreadyFinal,
        ReasonCode::InvariantViolation,
        ReasonCode::CredentialExists,
        ReasonCode::CredentialNotFound,
        ReasonCode::InvalidCredential,
        ReasonCode::InvalidHolder,
        ReasonCode::InvalidAdjustment,
        ReasonCode::DifferenceNotFound,
        ReasonCode::DifferenceAlreadyResolved,
        ReasonCode::AdjustmentMismatch,
        ReasonCode::EpisodeNotFound,
        ReasonCode::EpisodeExists,
        ReasonCode::EpisodeNotOpen,
        ReasonCode::EpisodeShortfall,
        ReasonCode::EpisodeOperationInProgress,
        ReasonCode::InsuranceSettlementExists,
        ReasonCode::InsuredBillWholeOnly,
        ReasonCode::AuthorizationNotHeld,
        ReasonCode::CaptureExceedsAuthorization,
    ];

    /// The code as clients see it, e.g. `INSUFFICIENT_FUNDS`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidAmount => "INVALID_AMOUNT",
            ReasonCode::InvalidDenomination => "INVALID_DENOMINATION",
            ReasonCode::BelowMinimumDeposit => "BELOW_MINIMUM_DEPOSIT",
            ReasonCode::RequestIdReused => "REQUEST_ID_REUSED",
            ReasonCode::TerminalNotRegistered => "TERMINAL_NOT_REGISTERED",
            ReasonCode::TerminalOutOfService => "TERMINAL_OUT_OF_SERVICE",
            ReasonCode::TerminalAlreadyRegistered => "TERMINAL_ALREADY_REGISTERED",
            ReasonCode::TerminalNotAllowed => "TERMINAL_NOT_ALLOWED",
            ReasonCode::OperatorRequired => "OPERATOR_REQUIRED",
            ReasonCode::ShiftNotOpen => "SHIFT_NOT_OPEN",
            ReasonCode::ShiftAlreadyOpen => "SHIFT_ALREADY_OPEN",
            ReasonCode::AccountNotFound => "ACCOUNT_NOT_FOUND",
            ReasonCode::AccountFrozen => "ACCOUNT_FROZEN",
            ReasonCode::InsufficientFunds => "INSUFFICIENT_FUNDS",
            ReasonCode::NothingToWithdraw => "NOTHING_TO_WITHDRAW",
            ReasonCode::OverdraftInUse => "OVERDRAFT_IN_USE",
            ReasonCode::OverdraftAboveMaximum => "OVERDRAFT_ABOVE_MAXIMUM",
            ReasonCode::CardNotFound => "CARD_NOT_FOUND",
            ReasonCode::CardAlreadyExists => "CARD_ALREADY_EXISTS",
            ReasonCode::CardLost => "CARD_LOST",
            ReasonCode::CardReplaced => "CARD_REPLACED",
            ReasonCode::CardNotLost => "CARD_NOT_LOST",
            ReasonCode::IdentityMismatch => "IDENTITY_MISMATCH",
            ReasonCode::BillNotFound => "BILL_NOT_FOUND",
            ReasonCode::BillAlreadyExists => "BILL_ALREADY_EXISTS",
            ReasonCode::BillAccountMismatch => "BILL_ACCOUNT_MISMATCH",
            ReasonCode::BillAlreadyPaid => "BILL_ALREADY_PAID",
            ReasonCode::BillCancelled => "BILL_CANCELLED",
            ReasonCode::BillNotPaid => "BILL_NOT_PAID",
            ReasonCode::BillOperationInProgress => "BILL_OPERATION_IN_PROGRESS",
            ReasonCode::RefundNotAllowed => "REFUND_NOT_ALLOWED",
            ReasonCode::AlreadyRefunded => "ALREADY_REFUNDED",
            ReasonCode::RefundChannelNotAllowed => "REFUND_CHANNEL_NOT_ALLOWED",
            ReasonCode::BankOpNotFound => "BANK_OP_NOT_FOUND",
            ReasonCode::BankOpAlreadyFinal => "BANK_OP_ALREADY_FINAL",
            ReasonCode::InvariantViolation => "INVARIANT_VIOLATION",
            ReasonCode::CredentialExists => "CREDENTIAL_EXISTS",
            ReasonCode::CredentialNotFound => "CREDENTIAL_NOT_FOUND",
            ReasonCode::InvalidCredential => "INVALID_CREDENTIAL",
            ReasonCode::InvalidHolder => "INVALID_HOLDER",
            ReasonCode::InvalidAdjustment => "INVALID_ADJUSTMENT",
            ReasonCode::DifferenceNotFound => "DIFFERENCE_NOT_FOUND",
            ReasonCode::DifferenceAlreadyResolved => "DIFFERENCE_ALREADY_RESOLVED",
            ReasonCode::AdjustmentMismatch => "ADJUSTMENT_MISMATCH",
            ReasonCode::EpisodeNotFound => "EPISODE_NOT_FOUND",
            ReasonCode::EpisodeExists => "EPISODE_EXISTS",
            ReasonCode::EpisodeNotOpen => "EPISODE_NOT_OPEN",
            ReasonCode::EpisodeShortfall => "EPISODE_SHORTFALL",
            ReasonCode::EpisodeOperationInProgress => "EPISODE_OPERATION_IN_PROGRESS",
            ReasonCode::InsuranceSettlementExists => "INSURANCE_SETTLEMENT_EXISTS",
            ReasonCode::InsuredBillWholeOnly => "INSURED_BILL_WHOLE_ONLY",
            ReasonCode::AuthorizationNotHeld => "AUTHORIZATION_NOT_HELD",
            ReasonCode::CaptureExceedsAuthorization => "CAPTURE_EXCEEDS_AUTHORIZATION",
        }
    }

    /// The kind of failure, for the API edge to pick a status code.
    pub fn class(self) -> ReasonClass {
        use ReasonCode::*;
        match self {
            InvalidAmount
            | InvalidDenomination
            | BelowMinimumDeposit
            | OperatorRequired
            | InvalidCredential
            | InvalidHolder
            | InvalidAdjustment
            | OverdraftAboveMaximum => ReasonClass::InvalidInput,
            AccountNotFound
            | CardNotFound
            | BillNotFound
            | BankOpNotFound
            | TerminalNotRegistered
            | CredentialNotFound
            | DifferenceNotFound
            | EpisodeNotFound => ReasonClass::NotFound,
            CardAlreadyExists
            | BillAlreadyExists
            | TerminalAlreadyRegistered
            | RequestIdReused
            | CredentialExists
            | EpisodeExists
            | InsuranceSettlementExists => ReasonClass::AlreadyExists,
            TerminalNotAllowed | IdentityMismatch => ReasonClass::PermissionDenied,
            InvariantViolation => ReasonClass::Internal,
            _ => ReasonClass::FailedPrecondition,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coarse grouping of reason codes that maps one to one onto gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonClass {
    InvalidInput,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    Internal,
}

/// A refused command: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: ReasonCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What a successful command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    CardIssued {
        account: AccountId,
        card: CardNo,
        /// The person already had an account; the card was bound to it.
        existing_account: bool,
        balance: Money,
    },
    /// Money moved in or out of the account (deposit, payment, refund, withdrawal).
    BalanceChanged {
        account: AccountId,
        txn: TxnId,
        amount: Money,
        balance: Money,
    },
    BankOpStarted {
        bank_ref: BankRef,
        kind: BankOpKind,
        account: AccountId,
        amount: Money,
        balance: Money,
    },
    BankOpSettled {
        bank_ref: BankRef,
        state: BankOpState,
        account: AccountId,
        balance: Money,
    },
    BillPosted {
        bill: BillId,
        account: AccountId,
    },
    BillCancelled {
        bill: BillId,
        /// It had been paid, so it can now be refunded.
        refundable: bool,
    },
    CardStatusChanged {
        card: CardNo,
        status: CardStatus,
    },
    CardReplaced {
        old_card: CardNo,
        new_card: CardNo,
        account: AccountId,
    },
    AccountStatusChanged {
        account: AccountId,
        status: AccountStatus,
    },
    OverdraftSet {
        account: AccountId,
        limit: Money,
    },
    TerminalChanged {
        terminal: TerminalId,
        status: TerminalStatus,
    },
    ShiftOpened {
        terminal: TerminalId,
        seq: u64,
    },
    ShiftClosed(ShiftReport),
    CashCollected(CollectionReport),
    ReconciliationRecorded {
        date: String,
        differences: u64,
    },
    /// A credential was created or revoked.
    Credential {
        id: String,
    },
    /// A fact for the audit trail was recorded.
    Recorded,
    /// Request records let go by a prune (`PruneRequests`); fewer than its limit when no
    /// more were due.
    RequestsPruned {
        requests: u64,
    },
    /// HIS marked the bill invoiced (`MarkInvoiced`).
    BillInvoiced {
        bill: BillId,
    },
    /// HIS admitted the patient: the episode is open.
    EpisodeOpened {
        episode: AdmissionId,
        account: AccountId,
    },
    /// A deposit, charges or the final amount went into the episode: where it stands.
    /// `balance` is the payer's account balance after a deposit from it.
    EpisodeChanged {
        episode: AdmissionId,
        txn: TxnId,
        status: EpisodeStatus,
        deposited: Money,
        unused: Money,
        balance: Option<Money>,
    },
    /// 出院结算: `collected` taken from the account for a shortfall; `online` the refunds
    /// started back to cards and channels (each settles by its bank operation); `rest` into
    /// the account or in cash at the window; `balance` the patient's account after it.
    EpisodeSettled {
        episode: AdmissionId,
        txn: TxnId,
        final_amount: Money,
        collected: Money,
        online: Vec<(BankRef, Money)>,
        rest: Money,
        rest_to: RefundTo,
        balance: Money,
    },
    /// The cluster's business rules from this entry on.
    RulesSet {
        rules: crate::apply::Rules,
    },
    /// The payer asked for the hold of `bank_ref` back; its saga tells the bank.
    ReleaseAsked {
        bank_ref: BankRef,
        account: AccountId,
        amount: Money,
    },
}

/// The result of applying a command, stored under its request id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done(Effect),
    Rejected(Rejection),
}

impl Outcome {
    pub fn rejected(code: ReasonCode, message: impl Into<String>) -> Outcome {
        Outcome::Rejected(Rejection::new(code, message))
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }

    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            Outcome::Done(_) => None,
            Outcome::Rejected(r) => Some(r.code),
        }
    }
}

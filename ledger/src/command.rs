//! `Command`: every transaction the ledger applies, with its request id, terminal, operator and
//! the time the leader stamped on it.

use serde::{Deserialize, Serialize};

use crate::credential::Role;
use crate::ids::{
    AccountId, AdmissionId, BankRef, BillId, CardNo, OperatorId, PersonKey, RequestId, TerminalId,
    WardId,
};
use crate::model::{
    BankPurpose, BillKind, CardKind, External, HisReconciliationReport, Holder,
    ReconciliationReport, TerminalStatus, Timestamp,
};
use crate::money::Money;

/// One transaction as it goes through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Unique per client request (terminal id + serial, 流水号); the same id again returns the
    /// first outcome.
    pub request: RequestId,
    pub terminal: TerminalId,
    /// The staff member at a window or collecting cash; `None` at kiosks and machines.
    pub operator: Option<OperatorId>,
    /// Stamped by the leader when it proposes; never read from a clock inside `apply`.
    pub at: Timestamp,
    pub body: CommandBody,
}

/// What a command does. Patients are found by card (what they present); administration names
/// the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandBody {
    /// 发卡建档: issue a card; real name, one account per person. `first_deposit` is cash.
    IssueCard {
        card: CardNo,
        card_kind: CardKind,
        holder: Holder,
        first_deposit: Option<Money>,
    },
    /// 现金充值 at a kiosk or a window with an open shift.
    DepositCash {
        card: CardNo,
        amount: Money,
    },
    /// The first step of a bank or third-party saga (银行卡充值, 微信/支付宝, card payment,
    /// online refund, withdrawal to a card): recorded Pending before the bank is called.
    /// `amount` is required for a top-up, optional for a withdrawal (all of the balance when
    /// absent) and must be absent for bills, whose amount is the bill's.
    StartBankOp {
        card: CardNo,
        external: External,
        purpose: BankPurpose,
        amount: Option<Money>,
    },
    /// The bank (or channel) approved, or its status query says it succeeded.
    CompleteBankOp {
        bank_ref: BankRef,
        bank_note: String,
    },
    /// The bank declined.
    DeclineBankOp {
        bank_ref: BankRef,
        bank_note: String,
    },
    /// The outcome is unknown (timeout, lost response): to be reversed or confirmed.
    MarkBankOpInDoubt {
        bank_ref: BankRef,
        bank_note: String,
    },
    /// 冲正: the bank acknowledged the reversal.
    ReverseBankOp {
        bank_ref: BankRef,
        bank_note: String,
    },
    /// HIS posts what a patient owes.
    PostBill {
        bill: BillId,
        card: CardNo,
        kind: BillKind,
        amount: Money,
    },
    /// HIS cancels an order; a paid bill becomes refundable.
    CancelBill {
        bill: BillId,
    },
    /// Pay a bill from the account (balance + overdraft).
    PayBill {
        bill: BillId,
        card: CardNo,
    },
    /// 退费 to the account, for a paid bill that HIS has cancelled.
    Refund {
        bill: BillId,
    },
    /// 退预交金 in cash at a window with an open shift; `None` takes all of the balance.
    WithdrawCash {
        card: CardNo,
        amount: Option<Money>,
    },
    /// 挂失, with the holder's ID (as its keyed hash).
    ReportLoss {
        card: CardNo,
        person: PersonKey,
    },
    /// 解挂
    CancelLoss {
        card: CardNo,
        person: PersonKey,
    },
    /// 补卡: a new card bound to the same account; the old one is retired.
    ReplaceCard {
        old_card: CardNo,
        new_card: CardNo,
        person: PersonKey,
    },
    Freeze {
        account: AccountId,
    },
    Unfreeze {
        account: AccountId,
    },
    /// 绿色通道: how far below zero charges may take the balance.
    SetOverdraft {
        account: AccountId,
        limit: Money,
    },
    /// Registers the command's own terminal id named here (by an admin).
    RegisterTerminal {
        terminal: TerminalId,
    },
    SetTerminalStatus {
        terminal: TerminalId,
        status: TerminalStatus,
    },
    /// Opens a shift at the command's window for the command's operator.
    OpenShift,
    /// 日结: closes the window's shift and stores its report.
    CloseShift,
    /// Empties the kiosk's cash box; `counted` is what staff counted.
    CollectCash {
        counted: Money,
    },
    /// Stores a reconciliation report (from the cluster or an admin console).
    RecordReconciliation {
        report: ReconciliationReport,
    },
    /// Creates a credential (from an admin console). Ids are never reused.
    PutCredential {
        id: String,
        roles: Vec<Role>,
        terminal: Option<TerminalId>,
        secret_sha256: String,
    },
    /// Revokes a credential: from this entry on, every node refuses it.
    RevokeCredential {
        id: String,
    },
    /// Records a membership change an admin made (Raft keeps the membership itself), so the
    /// audit trail shows who changed the cluster and when.
    RecordMembership {
        change: String,
    },
    /// Revokes a bootstrap credential (one of a node's config, not replicated): from this entry
    /// on every node refuses it, whatever its config still lists. (New variants go last: the
    /// encoding numbers them in order.)
    RevokeBootstrapCredential {
        id: String,
    },
    /// 退费 into the prepaid account of a bill paid by card or channel, once an online refund
    /// of it (`declined`, its bank reference) was declined: the fallback the outpatient flow
    /// allows when the card cannot take it back.
    RefundToAccount {
        bill: BillId,
        declined: BankRef,
    },
    /// Lets go of request records made before `before` that are not in the audit trail, at
    /// most `limit` of them (oldest first): past its retention a request id no longer guards
    /// against a retry. The journal is never pruned. Only the cluster's own housekeeping
    /// (an `S-` terminal) sends it.
    PruneRequests {
        before: Timestamp,
        limit: u32,
    },
    /// A read of `account` by its id (not by a card presented) by credential `reader` through
    /// API method `method`: recorded in the audit trail before the read is served, by the
    /// node serving it (an `S-` terminal).
    RecordAccess {
        account: AccountId,
        reader: String,
        method: String,
    },
    /// HIS cancels `amount` more of a paid bill (a drug returned, one exam of several called
    /// off): that much more may be refunded. Cancelling all of it makes the bill Cancelled.
    CancelBillPart {
        bill: BillId,
        amount: Money,
    },
    /// HIS printed the bill's invoice (发票已打印): from now on it is refunded only at a window.
    MarkInvoiced {
        bill: BillId,
    },
    /// 退费 of `amount` (all that is refundable when `None`) of a bill HIS cancelled, in whole
    /// or in part, to the prepaid account or in cash at a window with an open shift. A bill
    /// paid by card or channel comes here only after its online refund `declined` was declined
    /// (a closed card, say); otherwise it goes back online (`StartBankOp`, purpose `Refund`).
    RefundBill {
        bill: BillId,
        amount: Option<Money>,
        to: RefundTo,
        declined: Option<BankRef>,
    },
    /// 调账: a person corrects an account's money (by an admin console, with an operator, a
    /// reason and a reference): an entry in the journal and the audit trail, never an edit.
    /// Naming a reconciliation `difference`, it must be the entry that difference calls for,
    /// and the day's report then shows the difference resolved by it.
    Adjust {
        account: AccountId,
        direction: AdjustDirection,
        amount: Money,
        reason: String,
        reference: String,
        difference: Option<DifferenceRef>,
    },
    /// Stores the day's reconciliation of HIS's charged bills with the ledger (made by the
    /// cluster from HIS's list).
    RecordHisReconciliation {
        report: HisReconciliationReport,
    },
    /// HIS admits a patient (住院登记): opens inpatient episode `episode` on the account of
    /// `card`, in `ward`. Below `reminder_below` of unused deposit the patient is on the
    /// reminder list (催缴): the ward's threshold, which HIS keeps with its ward records.
    OpenEpisode {
        episode: AdmissionId,
        card: CardNo,
        ward: WardId,
        reminder_below: Money,
    },
    /// 住院预交金 into an episode, in cash or from a prepaid account (the patient's, or a
    /// relative's: the card presented names the payer). By card or channel it is a bank
    /// operation (`StartBankOp`, purpose `EpisodeDeposit`).
    DepositToEpisode {
        episode: AdmissionId,
        amount: Money,
        from: EpisodeFunds,
    },
    /// HIS's daily charges (日清单) against an open episode.
    PostEpisodeCharges {
        episode: AdmissionId,
        amount: Money,
    },
    /// HIS's final amount at discharge (出院): no more charges.
    FinalizeEpisode {
        episode: AdmissionId,
        final_amount: Money,
    },
    /// 出院结算 of a finalized episode. A shortfall is taken from the patient's account when
    /// `shortfall_from_account` (else it must be deposited first, by any way a deposit goes).
    /// A surplus goes back to the cards and channels that paid, oldest deposit first (each a
    /// bank operation this command starts), and the rest into the account or in cash at a
    /// window, as `rest_to` says.
    SettleEpisode {
        episode: AdmissionId,
        /// The patient's card, presented: in use, and of the episode's account.
        card: CardNo,
        rest_to: RefundTo,
        shortfall_from_account: bool,
    },
    /// Sets the cluster's business rules (by an admin console, with an operator): from this
    /// entry on every node applies them. Overdrafts already given above a lower maximum stay.
    SetRules {
        rules: crate::apply::Rules,
    },
    /// HIS posts an insured bill: the patient owes the self-pay part; the split is kept for
    /// 医保对账.
    PostInsuredBill {
        bill: BillId,
        card: CardNo,
        kind: BillKind,
        split: crate::InsuranceSplit,
    },
    /// 预授权: the mobile channel holds `amount` (the estimate, before the insurance card is
    /// read) on the payer's bank card or channel account. No money moves and the account is
    /// untouched; the saga asks the bank for the hold.
    AuthorizePayment {
        card: CardNo,
        external: External,
        amount: Money,
    },
    /// 预授权完成: pays `bill` (its amount: the self-pay part of an insured bill) out of the hold
    /// of `authorization`, which must cover it; the bank frees the rest of the hold.
    CapturePayment {
        card: CardNo,
        authorization: BankRef,
        bill: BillId,
    },
    /// 预授权撤销: the payer takes the whole hold back (no bill came, or it was paid another
    /// way); the saga tells the bank.
    ReleaseAuthorization {
        card: CardNo,
        authorization: BankRef,
    },
    /// A hold not captured in time is to be released: recorded by the cluster's own saga
    /// before it tells the bank, so no capture can start after the bank was told.
    ExpireAuthorization {
        authorization: BankRef,
    },
}

/// Where an inpatient deposit that is not a bank operation comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpisodeFunds {
    /// Notes at a kiosk, or cash at a window with an open shift.
    Cash,
    /// The prepaid account of this card: the patient's, or a relative's at a window (where a
    /// cashier sees who pays).
    Account { card: CardNo },
}

/// Which way an adjustment moves the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdjustDirection {
    /// Money into the account (the bank took it and we never booked it, say).
    Credit,
    /// Money out of the account (we booked money the bank never moved).
    Debit,
}

/// A reconciliation difference: the day's report and the bank reference in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferenceRef {
    /// `YYYY-MM-DD`, the business day of the report.
    pub date: String,
    pub bank_ref: BankRef,
}

/// Where a refund that does not go back online takes the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundTo {
    /// Into the prepaid account.
    Account,
    /// Cash paid out at a window, from its open shift.
    Cash,
}

impl CommandBody {
    /// Whether the command belongs in the audit trail of sensitive operations: card loss and
    /// replacement, refunds, withdrawals (cash or to a card), account controls, terminal
    /// administration.
    pub fn is_sensitive(&self) -> bool {
        match self {
            CommandBody::ReportLoss { .. }
            | CommandBody::CancelLoss { .. }
            | CommandBody::ReplaceCard { .. }
            | CommandBody::Refund { .. }
            | CommandBody::RefundToAccount { .. }
            | CommandBody::RefundBill { .. }
            | CommandBody::Adjust { .. }
            | CommandBody::WithdrawCash { .. }
            | CommandBody::Freeze { .. }
            | CommandBody::Unfreeze { .. }
            | CommandBody::SetOverdraft { .. }
            | CommandBody::RegisterTerminal { .. }
            | CommandBody::SetTerminalStatus { .. }
            | CommandBody::CollectCash { .. }
            | CommandBody::PutCredential { .. }
            | CommandBody::RevokeCredential { .. }
            | CommandBody::RevokeBootstrapCredential { .. }
            | CommandBody::RecordMembership { .. }
            | CommandBody::RecordAccess { .. }
            | CommandBody::SettleEpisode { .. }
            | CommandBody::SetRules { .. } => true,
            CommandBody::StartBankOp { purpose, .. } => matches!(
                purpose,
                crate::BankPurpose::Withdraw | crate::BankPurpose::Refund { .. }
            ),
            _ => false,
        }
    }

    /// The name of the transaction, as metrics and logs show it.
    pub fn name(&self) -> &'static str {
        match self {
            CommandBody::IssueCard { .. } => "IssueCard",
            CommandBody::DepositCash { .. } => "DepositCash",
            CommandBody::StartBankOp { .. } => "StartBankOp",
            CommandBody::CompleteBankOp { .. } => "CompleteBankOp",
            CommandBody::DeclineBankOp { .. } => "DeclineBankOp",
            CommandBody::MarkBankOpInDoubt { .. } => "MarkBankOpInDoubt",
            CommandBody::ReverseBankOp { .. } => "ReverseBankOp",
            CommandBody::PostBill { .. } => "PostBill",
            CommandBody::CancelBill { .. } => "CancelBill",
            CommandBody::PayBill { .. } => "PayBill",
            CommandBody::Refund { .. } => "Refund",
            CommandBody::WithdrawCash { .. } => "WithdrawCash",
            CommandBody::ReportLoss { .. } => "ReportLoss",
            CommandBody::CancelLoss { .. } => "CancelLoss",
            CommandBody::ReplaceCard { .. } => "ReplaceCard",
            CommandBody::Freeze { .. } => "Freeze",
            CommandBody::Unfreeze { .. } => "Unfreeze",
            CommandBody::SetOverdraft { .. } => "SetOverdraft",
            CommandBody::RegisterTerminal { .. } => "RegisterTerminal",
            CommandBody::SetTerminalStatus { .. } => "SetTerminalStatus",
            CommandBody::OpenShift => "OpenShift",
            CommandBody::CloseShift => "CloseShift",
            CommandBody::CollectCash { .. } => "CollectCash",
            CommandBody::RecordReconciliation { .. } => "RecordReconciliation",
            CommandBody::PutCredential { .. } => "PutCredential",
            CommandBody::RevokeCredential { .. } => "RevokeCredential",
            CommandBody::RecordMembership { .. } => "RecordMembership",
            CommandBody::RevokeBootstrapCredential { .. } => "RevokeBootstrapCredential",
            CommandBody::RefundToAccount { .. } => "RefundToAccount",
            CommandBody::PruneRequests { .. } => "PruneRequests",
            CommandBody::RecordAccess { .. } => "RecordAccess",
            CommandBody::CancelBillPart { .. } => "CancelBillPart",
            CommandBody::MarkInvoiced { .. } => "MarkInvoiced",
            CommandBody::RefundBill { .. } => "RefundBill",
            CommandBody::Adjust { .. } => "Adjust",
            CommandBody::RecordHisReconciliation { .. } => "RecordHisReconciliation",
            CommandBody::OpenEpisode { .. } => "OpenEpisode",
            CommandBody::DepositToEpisode { .. } => "DepositToEpisode",
            CommandBody::PostEpisodeCharges { .. } => "PostEpisodeCharges",
            CommandBody::FinalizeEpisode { .. } => "FinalizeEpisode",
            CommandBody::SettleEpisode { .. } => "SettleEpisode",
            CommandBody::SetRules { .. } => "SetRules",
            CommandBody::PostInsuredBill { .. } => "PostInsuredBill",
            CommandBody::AuthorizePayment { .. } => "AuthorizePayment",
            CommandBody::CapturePayment { .. } => "CapturePayment",
            CommandBody::ReleaseAuthorization { .. } => "ReleaseAuthorization",
            CommandBody::ExpireAuthorization { .. } => "ExpireAuthorization",
        }
    }
}

//! Between the wire and the ledger: parsing every field of a request into ledger types (bad
//! input is `INVALID_ARGUMENT` with a reason, and nothing is proposed), mapping rejections and
//! failures to gRPC statuses, and rendering ledger records as messages.

use tonic::{Code, Status};
use yinyi_actors::SubmitError;
use yinyi_api::error::status_with_reason;
use yinyi_api::v1;
use yinyi_ledger::{
    AccountId, AccountStatus, Bill, BillId, BillKind, BillStatus, CardKind, CardNo, CardStatus,
    Channel, CollectionReport, JournalEntry, Money, OperatorId, PersonKey, ReasonClass, Rejection,
    ReportLine, RequestId, ShiftReport, TerminalId, TerminalStatus, TxnId,
};

/// Reasons the API adds to the ledger's own.
pub mod reason {
    pub const MISSING_FIELD: &str = "MISSING_FIELD";
    /// Too many requests from one credential (RESOURCE_EXHAUSTED): slow down and retry.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    pub const INVALID_ID: &str = "INVALID_ID";
    pub const INVALID_AMOUNT: &str = "INVALID_AMOUNT";
    pub const INVALID_ENUM: &str = "INVALID_ENUM";
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    pub const NO_LEADER: &str = "NO_LEADER";
    pub const OVERLOADED: &str = "OVERLOADED";
    pub const BANK_LINK_NOT_CONFIGURED: &str = "BANK_LINK_NOT_CONFIGURED";
    pub const INTERNAL: &str = "INTERNAL";
    /// A client named one of the cluster's own `S-` terminals.
    pub const SYSTEM_TERMINAL: &str = "SYSTEM_TERMINAL";
    /// A credential bound to one terminal named another.
    pub const WRONG_TERMINAL: &str = "WRONG_TERMINAL";
    /// A credential named a terminal of another kind than its roles act through.
    pub const WRONG_TERMINAL_KIND: &str = "WRONG_TERMINAL_KIND";
    /// UNAUTHENTICATED: no `authorization: Bearer ID:SECRET` header.
    pub const CREDENTIAL_MISSING: &str = "CREDENTIAL_MISSING";
    /// UNAUTHENTICATED: the header is not `Bearer ID:SECRET`.
    pub const CREDENTIAL_MALFORMED: &str = "CREDENTIAL_MALFORMED";
    /// UNAUTHENTICATED: no such credential, or a wrong secret (one answer for both).
    pub const CREDENTIAL_UNKNOWN: &str = "CREDENTIAL_UNKNOWN";
    /// UNAUTHENTICATED: the credential was revoked.
    pub const CREDENTIAL_REVOKED: &str = "CREDENTIAL_REVOKED";
    /// PERMISSION_DENIED: none of the credential's roles may call the method.
    pub const ROLE_NOT_ALLOWED: &str = "ROLE_NOT_ALLOWED";
    /// PERMISSION_DENIED: no role at all may call the method (not part of the public API).
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// DEADLINE_EXCEEDED: the leader this node forwarded to did not answer in time; the
    /// outcome is unknown, ask again with the same request id.
    pub const LEADER_TIMEOUT: &str = "LEADER_TIMEOUT";
    /// FAILED_PRECONDITION: HIS confirmed a double collection the day's HIS reconciliation
    /// does not show as one.
    pub const NOT_A_DOUBLE_COLLECTION: &str = "NOT_A_DOUBLE_COLLECTION";
}

/// Every reason the API adds to the ledger's, with its status code and what a client does
/// about it (the API guide's table; a test finds each one here).
pub const API_REASONS: &[(&str, Code, &str)] = &[
    (
        reason::MISSING_FIELD,
        Code::InvalidArgument,
        "a required field is empty; fix the request",
    ),
    (
        reason::INVALID_ID,
        Code::InvalidArgument,
        "an id breaks its syntax (see Identifiers)",
    ),
    (
        reason::INVALID_AMOUNT,
        Code::InvalidArgument,
        "not a positive amount with at most two decimals, or above the single-transaction limit",
    ),
    (
        reason::INVALID_ENUM,
        Code::InvalidArgument,
        "an enum field holds no valid value",
    ),
    (
        reason::INVALID_REQUEST,
        Code::InvalidArgument,
        "the request as a whole is not valid (e.g. too many cards in IssueCards)",
    ),
    (
        reason::CREDENTIAL_MISSING,
        Code::Unauthenticated,
        "no `authorization: Bearer ID:SECRET` header",
    ),
    (
        reason::CREDENTIAL_MALFORMED,
        Code::Unauthenticated,
        "the header is not `Bearer ID:SECRET`",
    ),
    (
        reason::CREDENTIAL_UNKNOWN,
        Code::Unauthenticated,
        "no such credential, or a wrong secret (one answer for both); a credential created a moment ago may not have reached this node yet: retry shortly",
    ),
    (
        reason::CREDENTIAL_REVOKED,
        Code::Unauthenticated,
        "the credential was revoked",
    ),
    (
        reason::ROLE_NOT_ALLOWED,
        Code::PermissionDenied,
        "none of the credential's roles may call the method (see Who may call what)",
    ),
    (
        reason::METHOD_NOT_ALLOWED,
        Code::PermissionDenied,
        "the method is not open to any role",
    ),
    (
        reason::SYSTEM_TERMINAL,
        Code::PermissionDenied,
        "an `S-` terminal is the cluster's own",
    ),
    (
        reason::WRONG_TERMINAL,
        Code::PermissionDenied,
        "the credential is bound to another terminal",
    ),
    (
        reason::WRONG_TERMINAL_KIND,
        Code::PermissionDenied,
        "the credential's roles act through terminals of another kind",
    ),
    (
        "READ_BY_CARD_ONLY",
        Code::PermissionDenied,
        "kiosks and mobile channels read an account only by the card presented",
    ),
    (
        "REPORT_NOT_FOUND",
        Code::NotFound,
        "no reconciliation report for that day yet",
    ),
    (
        reason::RATE_LIMITED,
        Code::ResourceExhausted,
        "the credential made too many requests a second on this node: slow down, retry with the same request id",
    ),
    (
        reason::OVERLOADED,
        Code::ResourceExhausted,
        "too many requests queued: retry shortly with the same request id",
    ),
    (
        reason::NO_LEADER,
        Code::Unavailable,
        "no leader now (an election, a lost quorum, the leader unreachable): retry with the same request id; metadata `x-yinyi-leader` names the leader when known",
    ),
    (
        reason::LEADER_TIMEOUT,
        Code::DeadlineExceeded,
        "the leader did not answer in time; the outcome is unknown: ask again with the same request id",
    ),
    (
        reason::NOT_A_DOUBLE_COLLECTION,
        Code::FailedPrecondition,
        "the day's HIS reconciliation does not list the bill as a likely double collection; run HisService.ReconcileHis for the day first",
    ),
    (
        reason::BANK_LINK_NOT_CONFIGURED,
        Code::Unimplemented,
        "the cluster has no bank link; nothing was done",
    ),
    (
        reason::INTERNAL,
        Code::Internal,
        "a fault of the node; retry with the same request id and report it",
    ),
];

/// Request ids the cluster makes for itself begin with this (saga steps: `saga:REF:STEP`); a
/// client's never do.
pub const SYSTEM_REQUEST_PREFIX: &str = "saga:";

pub fn invalid(reason: &str, message: impl Into<String>) -> Status {
    status_with_reason(Code::InvalidArgument, reason, message)
}

pub fn required<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(invalid(
            reason::MISSING_FIELD,
            format!("{field} is required"),
        ))
    } else {
        Ok(value)
    }
}

pub fn id<T, E: std::fmt::Display>(
    field: &str,
    value: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<T, Status> {
    parse(required(field, value)?).map_err(|e| invalid(reason::INVALID_ID, format!("{field}: {e}")))
}

pub fn request_id(value: &str) -> Result<RequestId, Status> {
    let id = id("request_id", value, RequestId::parse)?;
    if id.as_str().starts_with(SYSTEM_REQUEST_PREFIX) {
        return Err(invalid(
            reason::INVALID_ID,
            format!("request_id: ids beginning {SYSTEM_REQUEST_PREFIX:?} are the cluster's own"),
        ));
    }
    Ok(id)
}

pub fn terminal_id(field: &str, value: &str) -> Result<TerminalId, Status> {
    id(field, value, TerminalId::parse)
}

pub fn card_no(field: &str, value: &str) -> Result<CardNo, Status> {
    id(field, value, CardNo::parse)
}

pub fn bill_id(value: &str) -> Result<BillId, Status> {
    id("bill_id", value, BillId::parse)
}

pub fn account_id(value: &str) -> Result<AccountId, Status> {
    id("account_id", value, AccountId::parse)
}

pub fn person_key(value: &str) -> Result<PersonKey, Status> {
    id("person_key", value, PersonKey::parse)
}

/// An operator id when given (`""` is none: kiosks and channels have no operator).
pub fn operator(value: &str) -> Result<Option<OperatorId>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    OperatorId::parse(value)
        .map(Some)
        .map_err(|e| invalid(reason::INVALID_ID, format!("operator_id: {e}")))
}

/// An amount that must be positive and within the single-transaction limit.
pub fn amount(field: &str, value: &str, limit: Money) -> Result<Money, Status> {
    Money::parse_positive(required(field, value)?, limit)
        .map_err(|e| invalid(reason::INVALID_AMOUNT, format!("{field}: {e}")))
}

/// An optional positive amount (`""` is none).
pub fn optional_amount(field: &str, value: &str, limit: Money) -> Result<Option<Money>, Status> {
    if value.is_empty() {
        Ok(None)
    } else {
        amount(field, value, limit).map(Some)
    }
}

/// An amount that may be zero (an overdraft limit, cash counted) but not negative.
pub fn non_negative(field: &str, value: &str) -> Result<Money, Status> {
    let money = Money::parse(required(field, value)?)
        .map_err(|e| invalid(reason::INVALID_AMOUNT, format!("{field}: {e}")))?;
    if money.is_negative() {
        return Err(invalid(
            reason::INVALID_AMOUNT,
            format!("{field}: {money} is negative"),
        ));
    }
    Ok(money)
}

/// A transaction id as shown by the API: `log_index.position`.
pub fn txn_id(field: &str, value: &str) -> Result<TxnId, Status> {
    let bad = || {
        invalid(
            reason::INVALID_ID,
            format!("{field}: {value:?} is not a txn id"),
        )
    };
    let (index, position) = value.split_once('.').ok_or_else(bad)?;
    let index: u64 = index.parse().map_err(|_| bad())?;
    let position: u64 = position.parse().map_err(|_| bad())?;
    if position >= yinyi_ledger::MAX_COMMANDS_PER_ENTRY || index >= (1 << 52) {
        return Err(bad());
    }
    Ok(TxnId::new(index, position))
}

pub fn card_kind(value: i32) -> Result<CardKind, Status> {
    match v1::CardKind::try_from(value) {
        Ok(v1::CardKind::Hospital) => Ok(CardKind::Hospital),
        Ok(v1::CardKind::Health) => Ok(CardKind::Health),
        Ok(v1::CardKind::SocialSecurity) => Ok(CardKind::SocialSecurity),
        Ok(v1::CardKind::IdCard) => Ok(CardKind::IdCard),
        _ => Err(invalid(reason::INVALID_ENUM, "card_kind is required")),
    }
}

pub fn bill_kind(value: i32) -> Result<BillKind, Status> {
    match v1::BillKind::try_from(value) {
        Ok(v1::BillKind::Registration) => Ok(BillKind::Registration),
        Ok(v1::BillKind::Outpatient) => Ok(BillKind::Outpatient),
        Ok(v1::BillKind::InpatientDeposit) => Ok(BillKind::InpatientDeposit),
        _ => Err(invalid(reason::INVALID_ENUM, "kind is required")),
    }
}

pub fn terminal_status(value: &str) -> Result<TerminalStatus, Status> {
    match value {
        "IN_SERVICE" => Ok(TerminalStatus::InService),
        "OUT_OF_SERVICE" => Ok(TerminalStatus::OutOfService),
        "RETIRED" => Ok(TerminalStatus::Retired),
        other => Err(invalid(
            reason::INVALID_ENUM,
            format!("status {other:?}: IN_SERVICE, OUT_OF_SERVICE or RETIRED"),
        )),
    }
}

/// The gRPC status of a ledger rejection, its reason code in the details.
pub fn rejected(rejection: &Rejection) -> Status {
    let code = match rejection.code.class() {
        ReasonClass::InvalidInput => Code::InvalidArgument,
        ReasonClass::NotFound => Code::NotFound,
        ReasonClass::AlreadyExists => Code::AlreadyExists,
        ReasonClass::PermissionDenied => Code::PermissionDenied,
        ReasonClass::FailedPrecondition => Code::FailedPrecondition,
        ReasonClass::Internal => Code::Internal,
    };
    status_with_reason(code, rejection.code.as_str(), rejection.message.clone())
}

pub fn submit_failed(error: SubmitError) -> Status {
    match error {
        SubmitError::NotLeader => status_with_reason(
            Code::Unavailable,
            reason::NO_LEADER,
            "this node is not the leader now; retry with the same request id",
        ),
        SubmitError::Unavailable(m) => status_with_reason(
            Code::Unavailable,
            reason::NO_LEADER,
            format!("{m}; retry with the same request id"),
        ),
        SubmitError::Overloaded => status_with_reason(
            Code::ResourceExhausted,
            reason::OVERLOADED,
            "too many requests queued; retry shortly with the same request id",
        ),
        SubmitError::Invalid(m) => invalid(reason::INVALID_REQUEST, m),
    }
}

pub fn internal(message: impl Into<String>) -> Status {
    status_with_reason(Code::Internal, reason::INTERNAL, message)
}

pub fn money(m: Money) -> String {
    m.to_string()
}

/// `CashDeposit` → `CASH_DEPOSIT`.
pub fn screaming<T: std::fmt::Debug>(value: &T) -> String {
    screaming_name(&format!("{value:?}"))
}

/// `ReportLoss` → `REPORT_LOSS`.
pub fn screaming_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

pub fn channel(c: Channel) -> i32 {
    (match c {
        Channel::Cash => v1::Channel::Cash,
        Channel::Account => v1::Channel::Account,
        Channel::BankCard => v1::Channel::BankCard,
        Channel::ThirdParty => v1::Channel::ThirdParty,
    }) as i32
}

pub fn bill_status(status: BillStatus) -> v1::BillStatus {
    match status {
        BillStatus::Unpaid => v1::BillStatus::Unpaid,
        BillStatus::Paid => v1::BillStatus::Paid,
        BillStatus::Cancelled => v1::BillStatus::Cancelled,
        BillStatus::Refunded => v1::BillStatus::Refunded,
    }
}

pub fn bill(b: &Bill) -> v1::Bill {
    v1::Bill {
        bill_id: b.id.to_string(),
        account_id: b.account.to_string(),
        kind: (match b.kind {
            BillKind::Registration => v1::BillKind::Registration,
            BillKind::Outpatient => v1::BillKind::Outpatient,
            BillKind::InpatientDeposit => v1::BillKind::InpatientDeposit,
        }) as i32,
        amount: money(b.amount),
        status: bill_status(b.status) as i32,
        paid_by: b
            .payment
            .as_ref()
            .map_or(v1::Channel::Unspecified as i32, |p| channel(p.channel)),
        paid_txn_id: b
            .payment
            .as_ref()
            .map_or(String::new(), |p| p.txn.to_string()),
        posted_at_ms: b.posted_at.0,
        cancelled: money(b.cancelled),
        refunded: money(b.refunded),
        invoiced: b.invoiced,
        // Filled in where the insured bill is read (HisService).
        insurance: None,
        insurance_reversed: false,
    }
}

pub fn bill_event(e: &yinyi_ledger::BillEvent) -> v1::BillEvent {
    v1::BillEvent {
        txn_id: e.txn.to_string(),
        bill_id: e.bill.to_string(),
        account_id: e.account.to_string(),
        kind: screaming(&e.kind),
        amount: money(e.amount),
        channel: e.channel.map_or(v1::Channel::Unspecified as i32, channel),
        at_ms: e.at.0,
    }
}

pub fn his_report(r: &yinyi_ledger::HisReconciliationReport) -> v1::HisReconciliationReport {
    let optional = |m: Option<Money>| m.map(money).unwrap_or_default();
    v1::HisReconciliationReport {
        date: r.date.clone(),
        his_lines: r.his_lines,
        matched: r.matched,
        matched_total: money(r.matched_total),
        differences: r
            .differences
            .iter()
            .map(|d| v1::HisDifference {
                bill_id: d.bill.to_string(),
                kind: screaming(&d.kind),
                his_amount: optional(d.his_amount),
                ledger_amount: optional(d.ledger_amount),
                resolution: d.resolution.clone(),
            })
            .collect(),
    }
}

pub fn report_line(l: &ReportLine) -> v1::ReportLine {
    v1::ReportLine {
        kind: screaming(&l.kind),
        channel: channel(l.channel),
        count: l.count,
        total: money(l.total),
    }
}

pub fn shift_report(r: &ShiftReport) -> v1::ShiftReport {
    v1::ShiftReport {
        terminal_id: r.terminal.to_string(),
        seq: r.seq,
        operator_id: r.operator.to_string(),
        opened_at_ms: r.opened_at.0,
        closed_at_ms: r.closed_at.0,
        lines: r.lines.iter().map(report_line).collect(),
        cash_expected: money(r.cash_expected),
    }
}

pub fn collection_report(r: &CollectionReport) -> v1::CollectionReport {
    v1::CollectionReport {
        terminal_id: r.terminal.to_string(),
        seq: r.seq,
        operator_id: r.operator.to_string(),
        at_ms: r.at.0,
        expected: money(r.expected),
        counted: money(r.counted),
        difference: money(r.difference),
    }
}

pub fn transaction(e: &JournalEntry) -> v1::Transaction {
    v1::Transaction {
        txn_id: e.txn.to_string(),
        request_id: e.request.to_string(),
        kind: screaming(&e.kind),
        channel: channel(e.channel),
        amount: money(e.amount),
        balance_after: money(e.balance_after),
        terminal_id: e.terminal.to_string(),
        bill_id: e.bill.as_ref().map_or(String::new(), |b| b.to_string()),
        bank_ref: e.bank_ref.as_ref().map_or(String::new(), |r| r.to_string()),
        at_ms: e.at.0,
    }
}

pub fn account_status(s: AccountStatus) -> String {
    screaming(&s)
}

pub fn card_status(s: CardStatus) -> String {
    screaming(&s)
}

/// An insurance split from the API: a settlement id and four amounts, none negative (the
/// self-pay part positive and within `limit`; the ledger checks the whole).
pub fn to_insurance_split(
    split: &v1::InsuranceSplit,
    limit: Money,
) -> Result<yinyi_ledger::InsuranceSplit, Status> {
    let split = yinyi_ledger::InsuranceSplit {
        settlement: id(
            "insurance.settlement_id",
            &split.settlement_id,
            yinyi_ledger::InsuranceSettlementId::parse,
        )?,
        pooled: non_negative("insurance.pooled", &split.pooled)?,
        personal_account: non_negative("insurance.personal_account", &split.personal_account)?,
        self_pay: amount("insurance.self_pay", &split.self_pay, limit)?,
        reductions: non_negative("insurance.reductions", &split.reductions)?,
    };
    split
        .check(limit)
        .map_err(|why| invalid(reason::INVALID_AMOUNT, format!("insurance: {why}")))?;
    Ok(split)
}

pub fn insurance_split(split: &yinyi_ledger::InsuranceSplit) -> v1::InsuranceSplit {
    v1::InsuranceSplit {
        settlement_id: split.settlement.to_string(),
        pooled: money(split.pooled),
        personal_account: money(split.personal_account),
        self_pay: money(split.self_pay),
        reductions: money(split.reductions),
    }
}

/// One line of the daily insurance list: the split, and the bill's status when it is there.
pub fn insured_bill_line(
    insured: &yinyi_ledger::InsuredBill,
    bill: Option<&Bill>,
) -> v1::InsuredBillLine {
    v1::InsuredBillLine {
        bill_id: insured.bill.to_string(),
        account_id: insured.account.to_string(),
        split: Some(insurance_split(&insured.split)),
        status: bill.map_or(v1::BillStatus::Unspecified, |b| bill_status(b.status)) as i32,
        posted_at_ms: insured.posted_at.0,
        reversed_at_ms: insured.reversed_at.map_or(0, |at| at.0),
    }
}

/// The count and the sum of each part of `splits`.
pub fn insurance_totals(splits: &[yinyi_ledger::InsuranceSplit]) -> v1::InsuranceTotals {
    let sum = |part: fn(&yinyi_ledger::InsuranceSplit) -> Money| {
        money(splits.iter().fold(Money::ZERO, |total, s| {
            total
                .checked_add(part(s))
                .expect("a day's insurance parts within range")
        }))
    };
    v1::InsuranceTotals {
        count: splits.len() as u64,
        pooled: sum(|s| s.pooled),
        personal_account: sum(|s| s.personal_account),
        self_pay: sum(|s| s.self_pay),
        reductions: sum(|s| s.reductions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yinyi_api::reason_of;

    #[test]
    fn names_turn_into_wire_constants() {
        assert_eq!(screaming(&TerminalStatus::OutOfService), "OUT_OF_SERVICE");
        assert_eq!(
            screaming(&yinyi_ledger::EntryKind::CashDeposit),
            "CASH_DEPOSIT"
        );
    }

    #[test]
    fn bad_amounts_are_invalid_argument_with_a_reason() {
        let limit = Money::from_yuan(50_000);
        for text in [
            "-1",
            "0",
            "1.001",
            "1e9",
            "abc",
            "",
            "50000.01",
            &"9".repeat(10_000),
        ] {
            let status = amount("amount", text, limit).unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{text:?}");
            let reason = reason_of(&status).unwrap();
            assert!(
                reason == reason::INVALID_AMOUNT || reason == reason::MISSING_FIELD,
                "{text:?}: {reason}"
            );
        }
        assert_eq!(
            amount("amount", "12.30", limit).unwrap().to_string(),
            "12.30"
        );
    }

    #[test]
    fn txn_ids_round_trip_and_garbage_is_refused() {
        let txn = TxnId::new(42, 7);
        assert_eq!(txn_id("t", &txn.to_string()).unwrap(), txn);
        for bad in ["", "1", "a.b", "1.4096", "-1.0", "1.2.3"] {
            assert!(txn_id("t", bad).is_err(), "{bad}");
        }
    }
}

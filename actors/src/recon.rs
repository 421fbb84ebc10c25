//! Reconciliation (对账): the bank's statement of a day against the journal's bank
//! operations. Pure: the node fetches the statement, reads the operations, acts on the
//! differences it can resolve, and stores the report through Raft.

use std::collections::{BTreeMap, BTreeSet};

use yinyi_ledger::{
    BankOp, BankOpState, BankRef, DifferenceKind, Money, ReconDifference, ReconciliationReport,
};

/// One line of the bank's statement: an operation the bank applied that day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    pub bank_ref: BankRef,
    pub amount: Money,
}

/// Says what reconciliation can do about a difference by itself: a bank-only item whose
/// operation we declined or reversed is money the bank holds for nothing; a reversal returns it.
pub fn needs_reversal(difference: &ReconDifference) -> bool {
    difference.kind == DifferenceKind::BankOnly
        && matches!(
            difference.journal_state,
            Some(BankOpState::Declined | BankOpState::Reversed)
        )
}

/// Compares `statement` (the bank's lines for `date`) with `ours` (every operation the journal
/// knows, by reference) and `started_on_day` (the references the journal started that day).
pub fn compare(
    date: &str,
    statement: &[StatementEntry],
    ours: &BTreeMap<BankRef, BankOp>,
    started_on_day: &BTreeSet<BankRef>,
) -> ReconciliationReport {
    let mut matched = 0u64;
    let mut matched_total = Money::ZERO;
    let mut differences = Vec::new();
    let mut on_statement = BTreeSet::new();
    for line in statement {
        on_statement.insert(line.bank_ref.clone());
        let op = ours.get(&line.bank_ref);
        let difference = |kind, resolution: &str| ReconDifference {
            bank_ref: line.bank_ref.clone(),
            kind,
            bank_amount: Some(line.amount),
            journal_amount: op.map(|o| o.amount),
            journal_state: op.map(|o| o.state),
            resolution: resolution.to_string(),
        };
        match op.map(|o| o.state) {
            Some(BankOpState::Completed) if op.is_some_and(|o| o.amount == line.amount) => {
                matched += 1;
                matched_total = matched_total
                    .checked_add(line.amount)
                    .unwrap_or(matched_total);
            }
            Some(BankOpState::Completed) => differences.push(difference(
                DifferenceKind::AmountDiffers,
                "open: the bank and the journal disagree on the amount; check with the bank",
            )),
            None => differences.push(difference(
                DifferenceKind::BankOnly,
                "open: the bank shows a reference yinyi never started; have the bank return it",
            )),
            Some(BankOpState::Declined | BankOpState::Reversed) => differences.push(difference(
                DifferenceKind::BankOnly,
                "to reverse: declined or reversed here, applied at the bank",
            )),
            Some(BankOpState::Pending | BankOpState::InDoubt) => differences.push(difference(
                DifferenceKind::BankOnly,
                "open: still in flight; its saga settles it, run reconciliation again after",
            )),
        }
    }
    for bank_ref in started_on_day {
        let Some(op) = ours.get(bank_ref) else {
            continue;
        };
        if op.state == BankOpState::Completed && !on_statement.contains(bank_ref) {
            differences.push(ReconDifference {
                bank_ref: bank_ref.clone(),
                kind: DifferenceKind::JournalOnly,
                bank_amount: None,
                journal_amount: Some(op.amount),
                journal_state: Some(op.state),
                resolution: "open: completed here, not on the bank's statement; ask the bank \
                             (it may be on the next day's statement)"
                    .into(),
            });
        }
    }
    ReconciliationReport {
        date: date.to_string(),
        bank_lines: statement.len() as u64,
        matched,
        matched_total,
        differences,
    }
}

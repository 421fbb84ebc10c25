//! Reconciliation (对账): the bank's statement of a day against the journal's bank
//! operations. Pure: the node fetches the statement, reads the operations, acts on the
//! differences it can resolve, and stores the report through Raft.

use std::collections::{BTreeMap, BTreeSet};

use yinyi_ledger::{
    BankOp, BankOpState, BankRef, Bill, BillEvent, BillId, DifferenceKind, HisDifference,
    HisDifferenceKind, HisReconciliationReport, Money, ReconDifference, ReconciliationReport,
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
        // A hold moves no money: what was taken is its capture, a line of its own.
        let hold = op.is_some_and(|o| o.purpose.is_hold());
        if hold {
            differences.push(difference(
                DifferenceKind::BankOnly,
                "open: the bank lists a hold (预授权) as money taken; the money is its capture's \
                 line; check with the bank",
            ));
            continue;
        }
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
            Some(BankOpState::Pending | BankOpState::InDoubt | BankOpState::Authorized) => {
                differences.push(difference(
                    DifferenceKind::BankOnly,
                    "open: still in flight; its saga settles it, run reconciliation again after",
                ))
            }
        }
    }
    for bank_ref in started_on_day {
        let Some(op) = ours.get(bank_ref) else {
            continue;
        };
        if op.state == BankOpState::Completed
            && !op.purpose.is_hold()
            && !on_statement.contains(bank_ref)
        {
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

/// One line of HIS's list of a day's charged bills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HisLine {
    pub bill: BillId,
    pub amount: Money,
}

/// Compares HIS's charged bills of `date` (`his`) with the bills the ledger saw paid that day
/// (`paid`, one event per bill), reading any other bill through `bill`. A bill the ledger has
/// paid that HIS does not list, of the same patient and amount as one HIS does list, is a
/// likely double collection (HIS charged twice, the patient paid twice): HIS confirms it and it
/// is refunded the way it was paid. Differences come sorted by bill.
pub fn compare_his(
    date: &str,
    his: &[HisLine],
    paid: &[BillEvent],
    bill: impl Fn(&BillId) -> Option<Bill>,
) -> HisReconciliationReport {
    let paid_by_bill: BTreeMap<&BillId, &BillEvent> = paid.iter().map(|e| (&e.bill, e)).collect();
    let listed: BTreeSet<&BillId> = his.iter().map(|l| &l.bill).collect();
    let mut seen = BTreeSet::new();
    let mut matched = 0u64;
    let mut matched_total = Money::ZERO;
    let mut differences = Vec::new();
    let difference =
        |bill: &BillId, kind, his_amount, ledger_amount, resolution: String| HisDifference {
            bill: bill.clone(),
            kind,
            his_amount,
            ledger_amount,
            resolution,
        };
    for line in his {
        if !seen.insert(&line.bill) {
            differences.push(difference(
                &line.bill,
                HisDifferenceKind::HisOnly,
                Some(line.amount),
                None,
                "open: HIS lists this bill more than once; HIS corrects its list".into(),
            ));
            continue;
        }
        match paid_by_bill.get(&line.bill) {
            Some(e) if e.amount == line.amount => {
                matched += 1;
                matched_total = matched_total.checked_add(e.amount).unwrap_or(matched_total);
            }
            Some(e) => differences.push(difference(
                &line.bill,
                HisDifferenceKind::AmountDiffers,
                Some(line.amount),
                Some(e.amount),
                "open: HIS and the ledger disagree on the amount; HIS corrects its charge, or \
                 the difference is refunded in part"
                    .into(),
            )),
            None => {
                let why = match bill(&line.bill) {
                    None => "open: no such bill in the ledger; HIS posts it or drops the charge"
                        .to_string(),
                    Some(b) => match &b.payment {
                        None => "open: not paid in the ledger; the patient still owes it".into(),
                        Some(p) => format!(
                            "open: paid on {} in the ledger, not on this day",
                            yinyi_ledger::BusinessDay::of_ms(p.at.0)
                        ),
                    },
                };
                differences.push(difference(
                    &line.bill,
                    HisDifferenceKind::HisOnly,
                    Some(line.amount),
                    None,
                    why,
                ));
            }
        }
    }
    for e in paid.iter().filter(|e| !listed.contains(&e.bill)) {
        let now = bill(&e.bill);
        let refunded = now.as_ref().is_some_and(|b| b.refunded == b.amount);
        let twin = paid.iter().find(|other| {
            other.bill != e.bill
                && other.account == e.account
                && other.amount == e.amount
                && listed.contains(&other.bill)
        });
        let resolution = match (refunded, twin) {
            (true, Some(twin)) => {
                format!("resolved: double collection with {}, refunded", twin.bill)
            }
            (true, None) => "resolved: refunded".into(),
            (false, Some(twin)) => format!(
                "open: likely double collection with {} (same patient and amount); HIS confirms \
                 it (HisService.ConfirmDoubleCollection) and it is refunded the way it was paid",
                twin.bill
            ),
            (false, None) => "open: paid in the ledger, not charged by HIS; HIS checks its \
                              charges"
                .into(),
        };
        differences.push(difference(
            &e.bill,
            HisDifferenceKind::LedgerOnly,
            None,
            Some(e.amount),
            resolution,
        ));
    }
    differences.sort_by(|a, b| a.bill.cmp(&b.bill));
    HisReconciliationReport {
        date: date.to_string(),
        his_lines: his.len() as u64,
        matched,
        matched_total,
        differences,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yinyi_ledger::{
        AccountId, BillEventKind, BillKind, BillStatus, Channel, Payment, TerminalId, Timestamp,
        TxnId,
    };

    fn id(text: &str) -> BillId {
        BillId::parse(text).unwrap()
    }

    fn paid(bill: &str, account: u64, yuan: i64) -> BillEvent {
        BillEvent {
            txn: TxnId::new(1, 0),
            bill: id(bill),
            account: AccountId(account),
            kind: BillEventKind::Paid,
            amount: Money::from_yuan(yuan),
            channel: Some(Channel::Account),
            at: Timestamp(1_760_000_000_000),
        }
    }

    fn bill(text: &str, yuan: i64, paid_at: Option<i64>, refunded: bool) -> Bill {
        let amount = Money::from_yuan(yuan);
        Bill {
            id: id(text),
            account: AccountId(1),
            kind: BillKind::Outpatient,
            amount,
            status: if refunded {
                BillStatus::Refunded
            } else {
                BillStatus::Paid
            },
            payment: paid_at.map(|at| Payment {
                channel: Channel::Account,
                txn: TxnId::new(1, 0),
                bank_ref: None,
                terminal: TerminalId::parse("K-0101").unwrap(),
                at: Timestamp(at),
            }),
            pending_op: None,
            posted_at: Timestamp(0),
            cancelled: if refunded { amount } else { Money::ZERO },
            refunded: if refunded { amount } else { Money::ZERO },
            invoiced: false,
            declined_refund: None,
            declined_left: Money::ZERO,
        }
    }

    #[test]
    fn his_and_the_ledger_are_compared_bill_by_bill() {
        let line = |b: &str, yuan| HisLine {
            bill: id(b),
            amount: Money::from_yuan(yuan),
        };
        let his = [
            line("B1", 10),
            line("B2", 20),
            line("B3", 5),
            line("B1", 10),
            line("B6", 9),
        ];
        let ledger = [
            paid("B1", 1, 10),
            paid("B2", 1, 25),
            paid("B4", 1, 10),
            paid("B5", 2, 7),
        ];
        let lookup = |b: &BillId| match b.as_str() {
            "B5" => Some(bill("B5", 7, Some(1_760_000_000_000), true)),
            "B6" => Some(bill("B6", 9, Some(1_700_000_000_000), false)),
            "B1" | "B2" | "B4" => Some(bill(b.as_str(), 10, Some(1_760_000_000_000), false)),
            _ => None,
        };
        let report = compare_his("2025-10-09", &his, &ledger, lookup);
        assert_eq!((report.his_lines, report.matched), (5, 1));
        assert_eq!(report.matched_total, Money::from_yuan(10));
        let found: Vec<(&str, HisDifferenceKind, &str)> = report
            .differences
            .iter()
            .map(|d| {
                (
                    d.bill.as_str(),
                    d.kind,
                    d.resolution.split(':').next().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("B1", HisDifferenceKind::HisOnly, "open"),
                ("B2", HisDifferenceKind::AmountDiffers, "open"),
                ("B3", HisDifferenceKind::HisOnly, "open"),
                ("B4", HisDifferenceKind::LedgerOnly, "open"),
                ("B5", HisDifferenceKind::LedgerOnly, "resolved"),
                ("B6", HisDifferenceKind::HisOnly, "open"),
            ]
        );
        let b4 = &report.differences[3];
        assert!(
            b4.resolution.contains("double collection with B1"),
            "{b4:?}"
        );
        assert!(
            report.differences[5]
                .resolution
                .contains("paid on 2023-11-15")
        );
    }
}

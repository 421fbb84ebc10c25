//! The balance audit (稽核) finds each kind of damage a stored state can carry, and nothing in a
//! state `apply` built.

mod common;

use common::*;
use yinyi_ledger::{Audit, Money};

/// Two patients with deposits at a kiosk; one has paid a bill.
fn day() -> World {
    let mut w = World::standard();
    w.patient("HC00000001", 1, 300);
    w.patient("HC00000002", 2, 200);
    w.check();
    w
}

#[test]
fn a_state_apply_built_audits_clean_with_its_totals() {
    let w = day();
    let report = Audit::of_state(&w.state);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.accounts, 2);
    assert_eq!(report.entries, 2);
    assert_eq!(report.total_balance, yuan(500));
    assert_eq!(report.flows.cash_in, yuan(500));
    assert_eq!(report.flows.expected_total(), Some(yuan(500)));
    assert_eq!(report.unresolved_bank_ops, 0);
}

#[test]
fn a_balance_that_is_not_its_journal_is_found() {
    let mut w = day();
    let account = w.state.accounts.values_mut().next().unwrap();
    account.balance = account.balance.checked_add(cents(1)).unwrap();
    let report = Audit::of_state(&w.state);
    assert!(!report.ok());
    // Invariant 1 for the account, and 2 for the sum.
    assert!(
        report.problems.iter().any(|p| p.starts_with("invariant 1")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.starts_with("invariant 2")),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_lost_journal_entry_and_an_orphan_are_found() {
    let mut w = day();
    let entry = w.state.journal.remove(0);
    let report = Audit::of_state(&w.state);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("journal sums to 0.00")),
        "{:?}",
        report.problems
    );
    let mut orphan = entry.clone();
    orphan.account = yinyi_ledger::AccountId(u64::MAX);
    w.state.journal.push(entry);
    w.state.journal.push(orphan);
    let report = Audit::of_state(&w.state);
    assert_eq!(report.problem_count, 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("unknown account"));
}

#[test]
fn an_account_below_its_overdraft_limit_is_found() {
    let mut w = day();
    let account = w.state.accounts.values_mut().next().unwrap();
    account.overdraft_limit = Money::from_cents(-1);
    let report = Audit::of_state(&w.state);
    assert!(
        report.problems.iter().any(|p| p.starts_with("invariant 3")),
        "{:?}",
        report.problems
    );
}

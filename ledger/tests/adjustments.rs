//! 调账 (issue 18, part 3): the only way a person corrects money — an entry with the operator,
//! a reason and a reference, in the journal and the audit trail, never an edit; naming a
//! reconciliation difference, only the entry that difference calls for, once.

mod common;

use common::*;
use yinyi_ledger::{
    AccountId, AdjustDirection, BankRef, CommandBody, DifferenceKind, DifferenceRef, EntryKind,
    Money, Outcome, ReasonCode, ReconDifference, ReconciliationReport, Report,
};

const DAY: &str = "2025-10-09";

fn adjust(
    w: &mut World,
    account: AccountId,
    direction: AdjustDirection,
    amount: Money,
    difference: Option<&BankRef>,
) -> Outcome {
    w.run_as(
        ADMIN,
        Some(FINANCE),
        CommandBody::Adjust {
            account,
            direction,
            amount,
            reason: "bank statement shows the top-up; our side timed out".into(),
            reference: "RECON-2025-10-09-3".into(),
            difference: difference.map(|bank_ref| DifferenceRef {
                date: DAY.into(),
                bank_ref: bank_ref.clone(),
            }),
        },
    )
}

fn difference(
    bank_ref: &BankRef,
    kind: DifferenceKind,
    bank: Option<i64>,
    ours: Option<i64>,
    resolution: &str,
) -> ReconDifference {
    ReconDifference {
        bank_ref: bank_ref.clone(),
        kind,
        bank_amount: bank.map(yuan),
        journal_amount: ours.map(yuan),
        journal_state: None,
        resolution: resolution.into(),
    }
}

/// The two open differences of the day: a reference the bank shows that we never started,
/// and an operation of ours the bank booked at another amount.
fn the_day(stranger: &BankRef, ours: &BankRef) -> Vec<ReconDifference> {
    vec![
        difference(
            stranger,
            DifferenceKind::BankOnly,
            Some(50),
            None,
            "open: never started",
        ),
        difference(
            ours,
            DifferenceKind::AmountDiffers,
            Some(32),
            Some(30),
            "open: amounts differ",
        ),
    ]
}

fn record(w: &mut World, differences: Vec<ReconDifference>) {
    expect_done(w.run(
        ADMIN,
        CommandBody::RecordReconciliation {
            report: ReconciliationReport {
                date: DAY.into(),
                bank_lines: differences.len() as u64,
                matched: 0,
                matched_total: Money::ZERO,
                differences,
            },
        },
    ));
}

fn resolution(w: &World, bank_ref: &BankRef) -> String {
    let Some(Report::Reconciliation(report)) = w.state.reports.get(&format!("recon/{DAY}")) else {
        panic!("no report");
    };
    report
        .differences
        .iter()
        .find(|d| &d.bank_ref == bank_ref)
        .expect("the difference")
        .resolution
        .clone()
}

#[test]
fn finance_adjusts_an_account_with_a_reason_and_a_reference() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let (amount, balance) = balance_changed(adjust(
        &mut w,
        account,
        AdjustDirection::Credit,
        yuan(25),
        None,
    ));
    assert_eq!((amount, balance), (yuan(25), yuan(125)));
    let (_, balance) = balance_changed(adjust(
        &mut w,
        account,
        AdjustDirection::Debit,
        yuan(5),
        None,
    ));
    assert_eq!(balance, yuan(120));
    let last = w.state.journal.last().unwrap();
    assert_eq!(
        (last.kind, last.operator.as_ref().map(|o| o.to_string())),
        (EntryKind::AdjustmentDebit, Some(FINANCE.to_string()))
    );
    // The request record, with its reason and reference, is in the audit trail.
    let cmd = &w.log.last().unwrap().cmd;
    assert!(cmd.body.is_sensitive());
    w.check();
}

#[test]
fn an_adjustment_is_refused_without_who_why_or_the_money() {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    let account = w.patient("HC0001", 1, 100);
    let body = |reason: &str, reference: &str, amount: Money, direction| CommandBody::Adjust {
        account,
        direction,
        amount,
        reason: reason.into(),
        reference: reference.into(),
        difference: None,
    };
    let ok = || body("late booking", "T-1", yuan(1), AdjustDirection::Credit);
    w.refused(ReasonCode::OperatorRequired, |w| {
        w.run_as(ADMIN, None, ok())
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| w.run(WINDOW, ok()));
    w.refused(ReasonCode::TerminalNotAllowed, |w| w.run(HIS, ok()));
    for (reason, reference) in [
        ("", "T-1"),
        ("  ", "T-1"),
        ("late", ""),
        ("line\nbreak", "T-1"),
    ] {
        w.refused(ReasonCode::InvalidAdjustment, |w| {
            w.run_as(
                ADMIN,
                Some(FINANCE),
                body(reason, reference, yuan(1), AdjustDirection::Credit),
            )
        });
    }
    w.refused(ReasonCode::InvalidAdjustment, |w| {
        w.run_as(
            ADMIN,
            Some(FINANCE),
            body(&"x".repeat(201), "T-1", yuan(1), AdjustDirection::Credit),
        )
    });
    for amount in [Money::ZERO, yuan(-1), Money::from_yuan(50_001)] {
        w.refused(ReasonCode::InvalidAmount, |w| {
            adjust(w, account, AdjustDirection::Credit, amount, None)
        });
    }
    w.refused(ReasonCode::InsufficientFunds, |w| {
        adjust(w, account, AdjustDirection::Debit, yuan(101), None)
    });
    w.refused(ReasonCode::AccountNotFound, |w| {
        adjust(
            w,
            AccountId(424_242),
            AdjustDirection::Credit,
            yuan(1),
            None,
        )
    });
    // A frozen account can still be corrected.
    expect_done(w.freeze(account));
    expect_done(adjust(
        &mut w,
        account,
        AdjustDirection::Debit,
        yuan(100),
        None,
    ));
    assert_eq!(w.balance("HC0001"), Money::ZERO);
    w.check();
}

#[test]
fn a_reconciliation_difference_is_resolved_by_the_adjustment_it_calls_for_once() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let other = w.patient("HC0002", 2, 100);
    // A top-up of HC0001 completed at 30.00 that the bank booked at 32.00; one still in flight;
    // a reference the bank shows that we never started; one declined here and being reversed.
    let ours = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(30)));
    expect_done(w.complete(&ours));
    let in_flight = started_ref(w.top_up(KIOSK, "HC0002", bank_card(2), yuan(7)));
    let stranger = unknown_bank_ref();
    let reversing = BankRef::for_txn(yinyi_ledger::TxnId::new(9_999, 1));
    let mut found = the_day(&stranger, &ours);
    found.push(difference(
        &reversing,
        DifferenceKind::BankOnly,
        Some(8),
        None,
        "to reverse: declined here",
    ));
    found.push(difference(
        &in_flight,
        DifferenceKind::BankOnly,
        Some(7),
        None,
        "open: still in flight",
    ));
    record(&mut w, found);
    w.refused(ReasonCode::DifferenceNotFound, |w| {
        w.run_as(
            ADMIN,
            Some(FINANCE),
            CommandBody::Adjust {
                account,
                direction: AdjustDirection::Credit,
                amount: yuan(2),
                reason: "x".into(),
                reference: "y".into(),
                difference: Some(DifferenceRef {
                    date: "2025-10-10".into(),
                    bank_ref: ours.clone(),
                }),
            },
        )
    });
    // Differences with another way out are not adjusted: the bank returns what we never
    // started, a saga settles what is in flight, a reversal what was declined here.
    w.refused(ReasonCode::AdjustmentMismatch, |w| {
        adjust(
            w,
            account,
            AdjustDirection::Credit,
            yuan(50),
            Some(&stranger),
        )
    });
    w.refused(ReasonCode::AdjustmentMismatch, |w| {
        adjust(w, other, AdjustDirection::Credit, yuan(7), Some(&in_flight))
    });
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(
            w,
            account,
            AdjustDirection::Credit,
            yuan(8),
            Some(&reversing),
        )
    });
    // The bank took 2.00 more from the card than we credited: Credit 2.00 to HC0001, nothing
    // else.
    for (to, direction, amount) in [
        (account, AdjustDirection::Credit, yuan(32)),
        (account, AdjustDirection::Debit, yuan(2)),
        (other, AdjustDirection::Credit, yuan(2)),
    ] {
        w.refused(ReasonCode::AdjustmentMismatch, |w| {
            adjust(w, to, direction, amount, Some(&ours))
        });
    }
    let (_, balance) = balance_changed(adjust(
        &mut w,
        account,
        AdjustDirection::Credit,
        yuan(2),
        Some(&ours),
    ));
    assert_eq!(balance, yuan(132));
    let resolved = resolution(&w, &ours);
    assert!(
        resolved.starts_with("resolved by adjustment") && resolved.contains(FINANCE),
        "{resolved}"
    );
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(w, account, AdjustDirection::Credit, yuan(2), Some(&ours))
    });
    // Reconciliation run again for the day: the difference is found again, and stays resolved.
    record(&mut w, the_day(&stranger, &ours));
    assert_eq!(resolution(&w, &ours), resolved);
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(w, account, AdjustDirection::Credit, yuan(2), Some(&ours))
    });
    // The bank corrects its statement: the difference is gone, the adjustment stands alone,
    // and the report keeps it for finance to review.
    record(&mut w, vec![]);
    let review = resolution(&w, &ours);
    assert!(
        review.starts_with("review: no longer a difference"),
        "{review}"
    );
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(w, account, AdjustDirection::Debit, yuan(2), Some(&ours))
    });
    // It comes back on a third run, the same or at another amount: never open again, so never
    // adjusted twice.
    record(&mut w, the_day(&stranger, &ours));
    assert!(resolution(&w, &ours).contains("resolved by adjustment"));
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(w, account, AdjustDirection::Credit, yuan(2), Some(&ours))
    });
    let mut changed = the_day(&stranger, &ours);
    changed[1].bank_amount = Some(yuan(35));
    record(&mut w, changed);
    let review = resolution(&w, &ours);
    assert!(
        review.starts_with("review: now AmountDiffers")
            && review.contains("resolved by adjustment"),
        "{review}"
    );
    w.refused(ReasonCode::DifferenceAlreadyResolved, |w| {
        adjust(w, account, AdjustDirection::Credit, yuan(5), Some(&ours))
    });
    w.check();
}

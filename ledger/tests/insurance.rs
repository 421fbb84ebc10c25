//! Insured bills (issue 19, part 1): HIS posts a bill with its medical-insurance split; only the
//! self-pay part moves money, every part is kept for 医保对账, and an insured bill is cancelled
//! whole, which records the reversal of its insurance settlement.

mod common;

use common::*;
use yinyi_ledger::{CommandBody, Money, ReasonCode};

#[test]
fn only_the_self_pay_part_of_an_insured_bill_is_taken_and_every_part_is_kept() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(post_insured(
        &mut w,
        "B1",
        "HC0001",
        split("YB-1", 80, 12, 6, 2),
    ));
    let bill = &w.state.bills[&bill_id("B1")];
    assert_eq!(bill.amount, yuan(6), "the bill is what the patient pays");
    let insured = &w.state.insured_bills[&bill_id("B1")];
    assert_eq!(insured.split.checked_total(), Some(yuan(100)));
    assert_eq!(insured.account, w.account_of("HC0001"));
    assert_eq!(insured.reversed_at, None);
    let (amount, balance) = balance_changed(w.pay_bill(KIOSK, "B1", "HC0001"));
    assert_eq!((amount, balance), (yuan(6), yuan(94)));
    w.check();
}

#[test]
fn a_split_that_does_not_hold_is_refused_and_nothing_is_written() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let mut negative = split("YB-1", 80, 12, 6, 2);
    negative.reductions = Money::from_cents(-1);
    w.refused(ReasonCode::InvalidAmount, |w| {
        post_insured(w, "B1", "HC0001", negative)
    });
    // Nothing for the patient to pay: HIS settles that bill without yinyi.
    w.refused(ReasonCode::InvalidAmount, |w| {
        post_insured(w, "B1", "HC0001", split("YB-1", 90, 10, 0, 0))
    });
    // The self-pay part is a bill: within the single-transaction limit.
    w.refused(ReasonCode::InvalidAmount, |w| {
        post_insured(w, "B1", "HC0001", split("YB-1", 0, 0, 50_001, 0))
    });
    // The whole is bounded like an inpatient settlement.
    w.refused(ReasonCode::InvalidAmount, |w| {
        post_insured(w, "B1", "HC0001", split("YB-1", 10_000_000, 0, 1, 0))
    });
    w.refused(ReasonCode::CardNotFound, |w| {
        post_insured(w, "B1", "HC9999", split("YB-1", 1, 1, 1, 1))
    });
    assert!(w.state.insured_bills.is_empty());
    expect_done(post_insured(
        &mut w,
        "B1",
        "HC0001",
        split("YB-1", 1, 1, 1, 1),
    ));
    // One settlement, one bill; one bill id, one bill.
    w.refused(ReasonCode::InsuranceSettlementExists, |w| {
        post_insured(w, "B2", "HC0001", split("YB-1", 1, 1, 1, 1))
    });
    w.refused(ReasonCode::BillAlreadyExists, |w| {
        post_insured(w, "B1", "HC0001", split("YB-2", 1, 1, 1, 1))
    });
    w.check();
}

#[test]
fn an_insured_bill_is_cancelled_whole_with_its_settlement_reversed_then_refunded() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(post_insured(
        &mut w,
        "B1",
        "HC0001",
        split("YB-1", 80, 12, 6, 2),
    ));
    balance_changed(w.pay_bill(KIOSK, "B1", "HC0001"));
    w.refused(ReasonCode::InsuredBillWholeOnly, |w| {
        w.run(
            HIS,
            CommandBody::CancelBillPart {
                bill: bill_id("B1"),
                amount: yuan(1),
            },
        )
    });
    expect_done(w.cancel_bill("B1"));
    let reversed = w.state.insured_bills[&bill_id("B1")].reversed_at;
    assert!(
        reversed.is_some(),
        "the reversal is recorded with the cancellation"
    );
    let (amount, balance) = balance_changed(w.refund(KIOSK, "B1"));
    assert_eq!(
        (amount, balance),
        (yuan(6), yuan(100)),
        "the self-pay part comes back"
    );
    // A bill that is not insured is still cancelled in part.
    w.post_bill("B2", "HC0001", yuan(10));
    balance_changed(w.pay_bill(KIOSK, "B2", "HC0001"));
    expect_done(w.run(
        HIS,
        CommandBody::CancelBillPart {
            bill: bill_id("B2"),
            amount: yuan(1),
        },
    ));
    w.check();
}

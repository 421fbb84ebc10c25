//! Refunds as cashiers do them (issue 18, part 2): partial refunds up to what HIS cancelled, a
//! destination named (the account, cash at a window, back online), invoiced bills refunded only
//! at a window, and the fallback after a declined online refund. Every refusal goes through
//! `World::refused` (nothing written but its request record); every test ends with the
//! invariants.

mod common;

use common::*;
use yinyi_ledger::{
    BankPurpose, Bill, BillFirstLayout, BillKind, BillStatus, Channel, CommandBody, Effect,
    EntryKind, Money, Outcome, ReasonCode, RefundTo, Timestamp,
};

fn cancel_part(w: &mut World, bill: &str, amount: Money) -> Outcome {
    w.run(
        HIS,
        CommandBody::CancelBillPart {
            bill: bill_id(bill),
            amount,
        },
    )
}

fn refund_to(
    w: &mut World,
    at: &str,
    bill: &str,
    amount: Option<Money>,
    to: RefundTo,
    declined: Option<yinyi_ledger::BankRef>,
) -> Outcome {
    w.run(
        at,
        CommandBody::RefundBill {
            bill: bill_id(bill),
            amount,
            to,
            declined,
        },
    )
}

fn refund_online_part(w: &mut World, at: &str, bill: &str, amount: Option<Money>) -> Outcome {
    w.start_bank_op(
        at,
        "HC0001",
        bank_card(1),
        BankPurpose::Refund {
            bill: bill_id(bill),
        },
        amount,
    )
}

/// HC0001 with 200 yuan, the window's shift open, and OP-1 of 100 yuan paid from the account.
fn paid_from_account() -> World {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    w.patient("HC0001", 1, 200);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(100)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    w
}

/// As `paid_from_account`, but OP-1 paid by bank card 1 from the mobile channel.
fn paid_by_card() -> World {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    w.patient("HC0001", 1, 200);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(100)));
    let r = started_ref(w.pay_by_card(MOBILE, "OP-1", "HC0001", bank_card(1)));
    expect_done(w.complete(&r));
    w
}

#[test]
fn partial_refunds_repeat_up_to_what_his_cancelled() {
    let mut w = paid_from_account();
    // Nothing is refundable before HIS cancels some of it.
    w.refused(ReasonCode::RefundNotAllowed, |w| {
        refund_to(w, KIOSK, "OP-1", Some(yuan(10)), RefundTo::Account, None)
    });
    // One drug returned: 30 of the 100.
    assert_eq!(
        expect_done(cancel_part(&mut w, "OP-1", yuan(30))),
        Effect::BillCancelled {
            bill: bill_id("OP-1"),
            refundable: true,
        }
    );
    assert_eq!(w.bill("OP-1").status, BillStatus::Paid);
    let (amount, balance) = balance_changed(refund_to(
        &mut w,
        KIOSK,
        "OP-1",
        Some(yuan(20)),
        RefundTo::Account,
        None,
    ));
    assert_eq!((amount, balance), (yuan(20), yuan(120)));
    // 10 left of what HIS cancelled: 20 more is refused, not rounded down.
    w.refused(ReasonCode::InvalidAmount, |w| {
        refund_to(w, KIOSK, "OP-1", Some(yuan(20)), RefundTo::Account, None)
    });
    // No amount: the rest of what is refundable.
    let (amount, balance) = balance_changed(w.refund(KIOSK, "OP-1"));
    assert_eq!((amount, balance), (yuan(10), yuan(130)));
    w.refused(ReasonCode::AlreadyRefunded, |w| w.refund(KIOSK, "OP-1"));
    // More cancelled than is left of the bill is refused.
    w.refused(ReasonCode::InvalidAmount, |w| {
        cancel_part(w, "OP-1", yuan(71))
    });
    // The exam called off too: the whole bill is cancelled, the last 70 refundable.
    expect_done(cancel_part(&mut w, "OP-1", yuan(70)));
    assert_eq!(w.bill("OP-1").status, BillStatus::Cancelled);
    let (amount, balance) = balance_changed(w.refund(KIOSK, "OP-1"));
    assert_eq!((amount, balance), (yuan(70), yuan(200)));
    let b = w.bill("OP-1");
    assert_eq!(
        (b.status, b.cancelled, b.refunded),
        (BillStatus::Refunded, yuan(100), yuan(100))
    );
    w.refused(ReasonCode::AlreadyRefunded, |w| {
        refund_to(w, WINDOW, "OP-1", None, RefundTo::Cash, None)
    });
    w.refused(ReasonCode::AlreadyRefunded, |w| {
        cancel_part(w, "OP-1", yuan(1))
    });
    w.check();
}

#[test]
fn his_cancels_only_parts_of_a_paid_bill_it_has_not_cancelled_yet() {
    let mut w = paid_from_account();
    expect_done(w.post_bill("OP-2", "HC0001", yuan(50)));
    w.refused(ReasonCode::BillNotPaid, |w| cancel_part(w, "OP-2", yuan(5)));
    w.refused(ReasonCode::InvalidAmount, |w| {
        cancel_part(w, "OP-1", Money::ZERO)
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        cancel_part(w, "OP-1", yuan(101))
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            WINDOW,
            CommandBody::CancelBillPart {
                bill: bill_id("OP-1"),
                amount: yuan(1),
            },
        )
    });
    expect_done(w.cancel_bill("OP-1"));
    w.refused(ReasonCode::BillCancelled, |w| {
        cancel_part(w, "OP-1", yuan(1))
    });
    w.check();
}

#[test]
fn a_cash_refund_is_paid_out_of_the_window_shift_and_leaves_the_balance_alone() {
    let mut w = paid_from_account();
    expect_done(cancel_part(&mut w, "OP-1", yuan(40)));
    let drawer = w.cash_box(WINDOW);
    // Cash only from a person at a window with a shift open.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        refund_to(w, KIOSK, "OP-1", None, RefundTo::Cash, None)
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        refund_to(w, HIS, "OP-1", None, RefundTo::Cash, None)
    });
    expect_done(w.close_shift(WINDOW));
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        refund_to(w, WINDOW, "OP-1", None, RefundTo::Cash, None)
    });
    expect_done(w.open_shift(WINDOW));
    let (amount, balance) = balance_changed(refund_to(
        &mut w,
        WINDOW,
        "OP-1",
        Some(yuan(15)),
        RefundTo::Cash,
        None,
    ));
    assert_eq!((amount, balance), (yuan(15), yuan(100)));
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(
        w.cash_box(WINDOW),
        drawer.checked_sub(yuan(15)).unwrap(),
        "the cash left the window's drawer"
    );
    assert_eq!(
        journal_kinds(&w).last(),
        Some(&(EntryKind::CashRefund, Channel::Cash))
    );
    // The rest into the account.
    let (amount, balance) = balance_changed(refund_to(
        &mut w,
        WINDOW,
        "OP-1",
        None,
        RefundTo::Account,
        None,
    ));
    assert_eq!((amount, balance), (yuan(25), yuan(125)));
    assert_eq!(w.bill("OP-1").refunded, yuan(40));
    // The shift report counts the cash paid out.
    let Effect::ShiftClosed(report) = expect_done(w.close_shift(WINDOW)) else {
        panic!("a shift report");
    };
    assert!(
        report.lines.iter().any(|l| l.kind == EntryKind::CashRefund
            && l.channel == Channel::Cash
            && l.total == yuan(15)),
        "{report:?}"
    );
    w.check();
}

#[test]
fn an_invoiced_bill_is_refunded_only_at_a_window() {
    let mut w = paid_by_card();
    expect_done(w.post_bill("OP-2", "HC0001", yuan(5)));
    w.refused(ReasonCode::BillNotPaid, |w| {
        w.run(
            HIS,
            CommandBody::MarkInvoiced {
                bill: bill_id("OP-2"),
            },
        )
    });
    assert_eq!(
        expect_done(w.run(
            HIS,
            CommandBody::MarkInvoiced {
                bill: bill_id("OP-1"),
            },
        )),
        Effect::BillInvoiced {
            bill: bill_id("OP-1")
        }
    );
    assert!(w.bill("OP-1").invoiced);
    expect_done(w.cancel_bill("OP-1"));
    // Online, from a kiosk or HIS: refused; the invoice must come back at a window.
    for at in [KIOSK, HIS] {
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            refund_online_part(w, at, "OP-1", None)
        });
    }
    let r = started_ref(refund_online_part(&mut w, WINDOW, "OP-1", None));
    expect_done(w.complete(&r));
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    w.check();
}

#[test]
fn an_online_refund_may_be_partial_and_repeated() {
    let mut w = paid_by_card();
    expect_done(cancel_part(&mut w, "OP-1", yuan(30)));
    w.refused(ReasonCode::InvalidAmount, |w| {
        refund_online_part(w, KIOSK, "OP-1", Some(yuan(31)))
    });
    let r = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", Some(yuan(10))));
    assert_eq!(w.bank_op(&r).amount, yuan(10));
    // Nothing else while it is under way.
    w.refused(ReasonCode::BillOperationInProgress, |w| {
        refund_online_part(w, KIOSK, "OP-1", Some(yuan(10)))
    });
    expect_done(w.complete(&r));
    let b = w.bill("OP-1");
    assert_eq!((b.status, b.refunded), (BillStatus::Paid, yuan(10)));
    // The rest of what HIS cancelled, then the rest of the bill once HIS cancels it all.
    let r = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", None));
    assert_eq!(w.bank_op(&r).amount, yuan(20));
    expect_done(w.complete(&r));
    w.refused(ReasonCode::AlreadyRefunded, |w| {
        refund_online_part(w, KIOSK, "OP-1", None)
    });
    expect_done(w.cancel_bill("OP-1"));
    let r = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", None));
    assert_eq!(w.bank_op(&r).amount, yuan(70));
    expect_done(w.complete(&r));
    let b = w.bill("OP-1");
    assert_eq!((b.status, b.refunded), (BillStatus::Refunded, yuan(100)));
    // The account never moved: the money went back to the card each time.
    assert_eq!(w.balance("HC0001"), yuan(200));
    w.check();
}

#[test]
fn a_declined_online_refund_falls_back_to_cash_at_the_window() {
    let mut w = paid_by_card();
    expect_done(w.cancel_bill("OP-1"));
    // Paid by card: not into the account or in cash while the card can take it back.
    for to in [RefundTo::Account, RefundTo::Cash] {
        w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
            refund_to(w, WINDOW, "OP-1", None, to, None)
        });
    }
    let r = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", Some(yuan(60))));
    expect_done(w.decline(&r));
    // What the card declined may go another way: 60.00, not more.
    w.refused(ReasonCode::InvalidAmount, |w| {
        refund_to(
            w,
            WINDOW,
            "OP-1",
            Some(yuan(61)),
            RefundTo::Cash,
            Some(r.clone()),
        )
    });
    let drawer = w.cash_box(WINDOW);
    let (amount, balance) = balance_changed(refund_to(
        &mut w,
        WINDOW,
        "OP-1",
        Some(yuan(45)),
        RefundTo::Cash,
        Some(r.clone()),
    ));
    assert_eq!((amount, balance), (yuan(45), yuan(200)));
    assert_eq!(w.cash_box(WINDOW), drawer.checked_sub(yuan(45)).unwrap());
    // No amount: the rest of what was declined (15.00), into the account.
    let (amount, balance) = balance_changed(refund_to(
        &mut w,
        KIOSK,
        "OP-1",
        None,
        RefundTo::Account,
        Some(r.clone()),
    ));
    assert_eq!((amount, balance), (yuan(15), yuan(215)));
    // Used up: the other 40.00 goes back to the card, not out as cash on the old decline.
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        refund_to(w, WINDOW, "OP-1", None, RefundTo::Cash, Some(r.clone()))
    });
    let again = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", None));
    assert_eq!(w.bank_op(&again).amount, yuan(40));
    expect_done(w.complete(&again));
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    w.check();
}

#[test]
fn a_new_online_refund_takes_back_what_an_earlier_decline_allowed() {
    let mut w = paid_by_card();
    expect_done(w.cancel_bill("OP-1"));
    let declined = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", Some(yuan(30))));
    expect_done(w.decline(&declined));
    // The card works again: a new online refund of 20.00 goes through.
    let ok = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", Some(yuan(20))));
    expect_done(w.complete(&ok));
    // The old decline no longer lets money out another way.
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        refund_to(
            w,
            WINDOW,
            "OP-1",
            None,
            RefundTo::Cash,
            Some(declined.clone()),
        )
    });
    // A later decline does, for its own amount.
    let later = started_ref(refund_online_part(&mut w, KIOSK, "OP-1", Some(yuan(10))));
    expect_done(w.decline(&later));
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        refund_to(
            w,
            WINDOW,
            "OP-1",
            None,
            RefundTo::Cash,
            Some(declined.clone()),
        )
    });
    let (amount, _) = balance_changed(refund_to(
        &mut w,
        WINDOW,
        "OP-1",
        None,
        RefundTo::Cash,
        Some(later),
    ));
    assert_eq!(amount, yuan(10));
    assert_eq!(w.bill("OP-1").refunded, yuan(30));
    w.check();
}

#[test]
fn a_bill_stored_before_partial_refunds_reads_its_refund_state_off_its_status() {
    let old = |status| BillFirstLayout {
        id: bill_id("OP-1"),
        account: yinyi_ledger::AccountId(7),
        kind: BillKind::Outpatient,
        amount: yuan(30),
        status,
        payment: None,
        pending_op: None,
        posted_at: Timestamp(1),
    };
    let read = |status| {
        let b: Bill = Bill::from_first_layout(old(status));
        (b.cancelled, b.refunded, b.invoiced, b.refundable())
    };
    assert_eq!(
        read(BillStatus::Paid),
        (Money::ZERO, Money::ZERO, false, Money::ZERO)
    );
    assert_eq!(
        read(BillStatus::Cancelled),
        (yuan(30), Money::ZERO, false, yuan(30))
    );
    assert_eq!(
        read(BillStatus::Refunded),
        (yuan(30), yuan(30), false, Money::ZERO)
    );
}

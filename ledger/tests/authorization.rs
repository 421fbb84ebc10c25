//! Mobile pre-authorization (预授权 / 预授权完成 / 预授权撤销), the outpatient notes' flow: the
//! payer's channel holds an estimate before the insurance card is read; once HIS posts the
//! insured bill, its self-pay part is captured out of the hold and the bank frees the rest; or
//! the payer takes the whole hold back. A hold moves no money and never touches the account.

mod common;

use common::*;
use yinyi_ledger::{
    BankOpKind, BankOpState, BankPurpose, BankRef, BillStatus, Channel, CommandBody, Effect,
    EntryKind, External, JournalEntry, Money, Outcome, ReasonCode,
};

fn authorize(w: &mut World, card_no: &str, external: External, amount: Money) -> Outcome {
    w.run(
        MOBILE,
        CommandBody::AuthorizePayment {
            card: card(card_no),
            external,
            amount,
        },
    )
}

fn capture(w: &mut World, card_no: &str, authorization: &BankRef, bill: &str) -> Outcome {
    w.run(
        MOBILE,
        CommandBody::CapturePayment {
            card: card(card_no),
            authorization: authorization.clone(),
            bill: bill_id(bill),
        },
    )
}

fn release(w: &mut World, card_no: &str, authorization: &BankRef) -> Outcome {
    w.run(
        MOBILE,
        CommandBody::ReleaseAuthorization {
            card: card(card_no),
            authorization: authorization.clone(),
        },
    )
}

/// The state a saga step took the operation to.
#[track_caller]
fn settled(outcome: Outcome) -> BankOpState {
    match expect_done(outcome) {
        Effect::BankOpSettled { state, .. } => state,
        other => panic!("expected BankOpSettled, got {other:?}"),
    }
}

/// A hold of `amount` yuan that the bank approved: its reference.
#[track_caller]
fn held(w: &mut World, card_no: &str, external: External, amount: i64) -> BankRef {
    let r = started_ref(authorize(w, card_no, external, yuan(amount)));
    assert_eq!(settled(w.complete(&r)), BankOpState::Authorized);
    r
}

/// What the authorization says is under way: its capture, and whether a release was asked for.
#[track_caller]
fn under_way(w: &World, authorization: &BankRef) -> (Option<BankRef>, bool) {
    match w.bank_op(authorization).purpose {
        BankPurpose::Authorization { capture, release } => (capture, release),
        other => panic!("{authorization} is no authorization: {other:?}"),
    }
}

/// The journal entries that name the bank operation.
fn entries_of(w: &World, r: &BankRef) -> Vec<JournalEntry> {
    w.state
        .journal
        .iter()
        .filter(|e| e.bank_ref.as_ref() == Some(r))
        .cloned()
        .collect()
}

/// The journal entries that name the bill.
fn entries_of_bill(w: &World, bill: &str) -> Vec<JournalEntry> {
    w.state
        .journal
        .iter()
        .filter(|e| e.bill == Some(bill_id(bill)))
        .cloned()
        .collect()
}

fn last_ref(w: &World) -> BankRef {
    BankRef::for_txn(w.log.last().expect("a command was applied").txn)
}

#[test]
fn the_self_pay_part_of_an_insured_bill_is_captured_out_of_the_hold() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    // Before the insurance card is read: ¥14 held on the payer's channel.
    let outcome = authorize(&mut w, "HC0001", third_party(1), yuan(14));
    let hold = last_ref(&w);
    assert_eq!(
        expect_done(outcome),
        Effect::BankOpStarted {
            bank_ref: hold.clone(),
            kind: BankOpKind::Hold,
            account,
            amount: yuan(14),
            balance: yuan(100),
        }
    );
    let op = w.bank_op(&hold);
    assert_eq!(
        (op.kind, op.state, op.amount, op.account, op.external),
        (
            BankOpKind::Hold,
            BankOpState::Pending,
            yuan(14),
            account,
            third_party(1)
        )
    );
    assert_eq!(under_way(&w, &hold), (None, false));
    w.check();
    assert_eq!(settled(w.complete(&hold)), BankOpState::Authorized);
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(
        w.balance("HC0001"),
        yuan(100),
        "a hold never touches the account"
    );
    assert!(entries_of(&w, &hold).is_empty());
    w.check();

    // The card is read: HIS posts the bill with its split; the patient's part is ¥6.
    expect_done(post_insured(
        &mut w,
        "B1",
        "HC0001",
        split("YB-1", 80, 12, 6, 2),
    ));
    let outcome = capture(&mut w, "HC0001", &hold, "B1");
    let captured = last_ref(&w);
    assert_eq!(
        expect_done(outcome),
        Effect::BankOpStarted {
            bank_ref: captured.clone(),
            kind: BankOpKind::Debit,
            account,
            amount: yuan(6),
            balance: yuan(100),
        }
    );
    let op = w.bank_op(&captured);
    assert_eq!(
        op.purpose,
        BankPurpose::Capture {
            authorization: hold.clone(),
            bill: bill_id("B1"),
        }
    );
    assert_eq!(
        (op.state, op.external, op.account),
        (BankOpState::Pending, third_party(1), account),
        "captured from the payer that holds it"
    );
    assert_eq!(w.bill("B1").pending_op, Some(captured.clone()));
    assert_eq!(w.bill("B1").status, BillStatus::Unpaid);
    assert_eq!(under_way(&w, &hold), (Some(captured.clone()), false));
    w.check();

    assert_eq!(settled(w.complete(&captured)), BankOpState::Completed);
    let b = w.bill("B1");
    assert_eq!((b.status, b.pending_op.clone()), (BillStatus::Paid, None));
    let payment = b.payment.expect("paid");
    assert_eq!(
        (payment.channel, payment.bank_ref, payment.terminal),
        (Channel::ThirdParty, Some(captured.clone()), tid(MOBILE))
    );
    let paid: Vec<_> = entries_of_bill(&w, "B1")
        .into_iter()
        .map(|e| (e.kind, e.amount, e.channel, e.account, e.bank_ref))
        .collect();
    assert_eq!(
        paid,
        vec![(
            EntryKind::ExternalBillPayment,
            yuan(6),
            Channel::ThirdParty,
            account,
            Some(captured.clone())
        )]
    );
    assert_eq!(
        w.balance("HC0001"),
        yuan(100),
        "paid by the channel, not from the account"
    );
    let auth = w.bank_op(&hold);
    assert_eq!(
        auth.state,
        BankOpState::Completed,
        "captured: the hold is over"
    );
    assert!(auth.bank_note.starts_with("captured"), "{}", auth.bank_note);
    assert_eq!(under_way(&w, &hold), (Some(captured.clone()), false));
    assert!(
        entries_of(&w, &hold).is_empty(),
        "the hold itself moves nothing"
    );
    w.check();

    // Over: neither released nor given back nor captured again; the bill is paid.
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        release(w, "HC0001", &hold)
    });
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.reverse(&hold));
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&captured));
    w.refused(ReasonCode::BillAlreadyPaid, |w| {
        w.pay_bill(KIOSK, "B1", "HC0001")
    });
    w.check();
}

#[test]
fn a_capture_above_the_hold_is_refused_and_the_hold_stays() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", bank_card(1), 14);
    expect_done(w.post_bill("OP-1", "HC0001", cents(1_401)));
    expect_done(w.post_bill("OP-2", "HC0001", yuan(14)));
    w.refused(ReasonCode::CaptureExceedsAuthorization, |w| {
        capture(w, "HC0001", &hold, "OP-1")
    });
    let b = w.bill("OP-1");
    assert_eq!((b.status, b.pending_op), (BillStatus::Unpaid, None));
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(under_way(&w, &hold), (None, false));
    // A bill the hold covers to the fen is captured.
    let c = started_ref(capture(&mut w, "HC0001", &hold, "OP-2"));
    assert_eq!(w.bank_op(&c).amount, yuan(14));
    assert_eq!(settled(w.complete(&c)), BankOpState::Completed);
    assert_eq!(w.bill("OP-2").status, BillStatus::Paid);
    assert_eq!(w.bill("OP-1").status, BillStatus::Unpaid);
    assert!(entries_of_bill(&w, "OP-1").is_empty());
    w.check();
}

#[test]
fn a_hold_under_a_capture_or_not_held_yet_is_neither_captured_nor_released() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", third_party(1), 50);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    expect_done(w.post_bill("OP-2", "HC0001", yuan(20)));
    let c = started_ref(capture(&mut w, "HC0001", &hold, "OP-1"));
    for in_doubt in [false, true] {
        if in_doubt {
            expect_done(w.in_doubt(&c));
        }
        w.refused(ReasonCode::AuthorizationNotHeld, |w| {
            capture(w, "HC0001", &hold, "OP-2")
        });
        w.refused(ReasonCode::AuthorizationNotHeld, |w| {
            release(w, "HC0001", &hold)
        });
        // Nor does the bank give it back, or settle it again, under a capture.
        w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.reverse(&hold));
        w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.decline(&hold));
        w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&hold));
        assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
        assert_eq!(under_way(&w, &hold), (Some(c.clone()), false));
    }
    // The status query finds the capture applied.
    assert_eq!(settled(w.complete(&c)), BankOpState::Completed);
    assert_eq!(w.bill("OP-1").status, BillStatus::Paid);
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &hold, "OP-2")
    });

    // Not approved yet, or declined: not held.
    let pending = started_ref(authorize(&mut w, "HC0001", third_party(1), yuan(30)));
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &pending, "OP-2")
    });
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        release(w, "HC0001", &pending)
    });
    assert_eq!(settled(w.decline(&pending)), BankOpState::Declined);
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &pending, "OP-2")
    });
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        release(w, "HC0001", &pending)
    });
    assert_eq!(under_way(&w, &pending), (None, false));
    let b = w.bill("OP-2");
    assert_eq!((b.status, b.pending_op), (BillStatus::Unpaid, None));
    w.check();
}

#[test]
fn a_capture_declined_or_reversed_leaves_the_hold_to_capture_again_and_the_bill_is_paid_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", third_party(2), 50);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));

    let first = started_ref(capture(&mut w, "HC0001", &hold, "OP-1"));
    assert_eq!(settled(w.decline(&first)), BankOpState::Declined);
    let b = w.bill("OP-1");
    assert_eq!(
        (b.status, b.pending_op, b.payment),
        (BillStatus::Unpaid, None, None)
    );
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(under_way(&w, &hold), (None, false), "held again");
    w.check();

    // Reversed after the bank went quiet: held again too.
    let second = started_ref(capture(&mut w, "HC0001", &hold, "OP-1"));
    expect_done(w.in_doubt(&second));
    assert_eq!(settled(w.reverse(&second)), BankOpState::Reversed);
    assert_eq!(w.bill("OP-1").pending_op, None);
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(under_way(&w, &hold), (None, false));
    w.check();

    let third = started_ref(capture(&mut w, "HC0001", &hold, "OP-1"));
    assert_eq!(settled(w.complete(&third)), BankOpState::Completed);
    let paid: Vec<_> = entries_of_bill(&w, "OP-1")
        .into_iter()
        .map(|e| (e.kind, e.amount, e.bank_ref))
        .collect();
    assert_eq!(
        paid,
        vec![(
            EntryKind::ExternalBillPayment,
            yuan(30),
            Some(third.clone())
        )],
        "paid once, by the capture that went through"
    );
    assert_eq!(
        w.bill("OP-1").payment.and_then(|p| p.bank_ref),
        Some(third.clone())
    );
    assert!(entries_of(&w, &first).is_empty() && entries_of(&w, &second).is_empty());
    assert_eq!(w.bank_op(&hold).state, BankOpState::Completed);
    assert_eq!(under_way(&w, &hold), (Some(third.clone()), false));
    assert_eq!(w.balance("HC0001"), yuan(100));
    // The captures that did not go through stay that way.
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&first));
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&second));
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &hold, "OP-1")
    });
    w.check();
}

#[test]
fn a_released_hold_is_given_back_and_moves_no_money() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", bank_card(3), 20);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    let journal = w.state.journal.clone();

    assert_eq!(
        expect_done(release(&mut w, "HC0001", &hold)),
        Effect::ReleaseAsked {
            bank_ref: hold.clone(),
            account,
            amount: yuan(20),
        }
    );
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(under_way(&w, &hold), (None, true));
    w.check();
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &hold, "OP-1")
    });
    // Asked again (a retry under a new request id): the release is under way, nothing changes.
    let before = w.bank_op(&hold);
    assert!(matches!(
        expect_done(release(&mut w, "HC0001", &hold)),
        Effect::ReleaseAsked { .. }
    ));
    assert_eq!(w.bank_op(&hold), before);

    assert_eq!(settled(w.reverse(&hold)), BankOpState::Reversed);
    assert_eq!(w.bank_op(&hold).state, BankOpState::Reversed);
    assert_eq!(
        w.state.journal, journal,
        "neither the release nor the reversal is in the journal"
    );
    assert_eq!(w.balance("HC0001"), yuan(100));
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &hold, "OP-1")
    });
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.reverse(&hold));
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&hold));
    // Asked after it was released: released it is.
    assert!(matches!(
        expect_done(release(&mut w, "HC0001", &hold)),
        Effect::ReleaseAsked { .. }
    ));
    assert_eq!(w.bank_op(&hold).state, BankOpState::Reversed);

    // A hold is never reversed before its release is recorded: asked by the payer, or by the
    // cluster's saga once it expired (and then no capture can start).
    let expired = held(&mut w, "HC0001", bank_card(3), 20);
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.reverse(&expired));
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            MOBILE,
            CommandBody::ExpireAuthorization {
                authorization: expired.clone(),
            },
        )
    });
    expect_done(w.run(
        SAGA,
        CommandBody::ExpireAuthorization {
            authorization: expired.clone(),
        },
    ));
    assert_eq!(under_way(&w, &expired), (None, true));
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &expired, "OP-1")
    });
    assert_eq!(settled(w.reverse(&expired)), BankOpState::Reversed);
    assert!(entries_of(&w, &expired).is_empty());

    // The bill is still the patient's to pay, another way.
    let b = w.bill("OP-1");
    assert_eq!((b.status, b.pending_op), (BillStatus::Unpaid, None));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    assert_eq!(w.balance("HC0001"), yuan(90));
    w.check();
}

#[test]
fn another_patients_card_or_bill_does_not_reach_the_hold() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.patient("HC0002", 2, 100);
    let hold = held(&mut w, "HC0001", third_party(1), 50);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    expect_done(w.post_bill("OP-2", "HC0002", yuan(10)));
    w.refused(ReasonCode::BankOpNotFound, |w| {
        capture(w, "HC0002", &hold, "OP-2")
    });
    w.refused(ReasonCode::BankOpNotFound, |w| {
        capture(w, "HC0002", &hold, "OP-1")
    });
    w.refused(ReasonCode::BankOpNotFound, |w| release(w, "HC0002", &hold));
    // The holder's hold does not pay another patient's bill.
    w.refused(ReasonCode::BillAccountMismatch, |w| {
        capture(w, "HC0001", &hold, "OP-2")
    });
    w.refused(ReasonCode::BillNotFound, |w| {
        capture(w, "HC0001", &hold, "OP-404")
    });
    w.refused(ReasonCode::CardNotFound, |w| {
        capture(w, "HC0404", &hold, "OP-1")
    });
    // Only an authorization is captured or released: not a top-up, not a reference nobody has.
    let top_up = started_ref(w.top_up(MOBILE, "HC0001", third_party(1), yuan(10)));
    w.refused(ReasonCode::BankOpNotFound, |w| {
        capture(w, "HC0001", &top_up, "OP-1")
    });
    w.refused(ReasonCode::BankOpNotFound, |w| {
        release(w, "HC0001", &top_up)
    });
    w.refused(ReasonCode::BankOpNotFound, |w| {
        capture(w, "HC0001", &unknown_bank_ref(), "OP-1")
    });
    // Another channel's terminal does not reach the hold, even with the right card.
    expect_done(w.register("M-ALI"));
    w.refused(ReasonCode::BankOpNotFound, |w| {
        w.run(
            "M-ALI",
            CommandBody::CapturePayment {
                card: card("HC0001"),
                authorization: hold.clone(),
                bill: bill_id("OP-1"),
            },
        )
    });
    w.refused(ReasonCode::BankOpNotFound, |w| {
        w.run(
            "M-ALI",
            CommandBody::ReleaseAuthorization {
                card: card("HC0001"),
                authorization: hold.clone(),
            },
        )
    });
    assert_eq!(under_way(&w, &hold), (None, false));
    assert_eq!(w.bill("OP-2").pending_op, None);
    w.check();
}

#[test]
fn holds_are_asked_for_captured_and_released_on_the_mobile_channel_only() {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", bank_card(1), 50);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    for at in [KIOSK, WINDOW, HIS] {
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.run(
                at,
                CommandBody::AuthorizePayment {
                    card: card("HC0001"),
                    external: bank_card(1),
                    amount: yuan(10),
                },
            )
        });
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.run(
                at,
                CommandBody::CapturePayment {
                    card: card("HC0001"),
                    authorization: hold.clone(),
                    bill: bill_id("OP-1"),
                },
            )
        });
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.run(
                at,
                CommandBody::ReleaseAuthorization {
                    card: card("HC0001"),
                    authorization: hold.clone(),
                },
            )
        });
    }
    // Nor through the saga's own start, from anywhere: only their own commands make these.
    for at in [MOBILE, KIOSK] {
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.start_bank_op(
                at,
                "HC0001",
                third_party(1),
                BankPurpose::Authorization {
                    capture: None,
                    release: false,
                },
                Some(yuan(10)),
            )
        });
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.start_bank_op(
                at,
                "HC0001",
                third_party(1),
                BankPurpose::Capture {
                    authorization: hold.clone(),
                    bill: bill_id("OP-1"),
                },
                None,
            )
        });
    }
    // And the bank's answer is the cluster's to record.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            MOBILE,
            CommandBody::CompleteBankOp {
                bank_ref: hold.clone(),
                bank_note: "00 forged".to_string(),
            },
        )
    });
    assert_eq!(w.bank_op(&hold).state, BankOpState::Authorized);
    assert_eq!(under_way(&w, &hold), (None, false));
    w.check();
}

#[test]
fn a_hold_is_checked_like_a_payment() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::InvalidAmount, |w| {
        authorize(w, "HC0001", third_party(1), Money::ZERO)
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        authorize(w, "HC0001", third_party(1), yuan(50_001))
    });
    w.refused(ReasonCode::CardNotFound, |w| {
        authorize(w, "HC0404", third_party(1), yuan(10))
    });
    let hold = held(&mut w, "HC0001", third_party(1), 50);
    expect_done(w.freeze(account));
    w.refused(ReasonCode::AccountFrozen, |w| {
        authorize(w, "HC0001", third_party(1), yuan(10))
    });
    expect_done(w.unfreeze(account));
    assert_eq!(w.state.bank_ops.len(), 1, "only the hold was started");
    assert_eq!(under_way(&w, &hold), (None, false));
    w.check();
}

#[test]
fn a_hold_in_doubt_is_held_once_the_bank_confirms_it_and_not_once_reversed() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));

    let confirmed = started_ref(authorize(&mut w, "HC0001", third_party(1), yuan(30)));
    assert_eq!(settled(w.in_doubt(&confirmed)), BankOpState::InDoubt);
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &confirmed, "OP-1")
    });
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        release(w, "HC0001", &confirmed)
    });
    assert_eq!(settled(w.complete(&confirmed)), BankOpState::Authorized);
    assert_eq!(w.bank_op(&confirmed).state, BankOpState::Authorized);
    w.check();

    let reversed = started_ref(authorize(&mut w, "HC0001", third_party(1), yuan(30)));
    expect_done(w.in_doubt(&reversed));
    assert_eq!(settled(w.reverse(&reversed)), BankOpState::Reversed);
    w.refused(ReasonCode::AuthorizationNotHeld, |w| {
        capture(w, "HC0001", &reversed, "OP-1")
    });
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&reversed));

    // A decline that comes after the wait ends it too.
    let late = started_ref(authorize(&mut w, "HC0001", third_party(1), yuan(30)));
    expect_done(w.in_doubt(&late));
    assert_eq!(settled(w.decline(&late)), BankOpState::Declined);
    w.check();

    // The confirmed hold pays the bill.
    let c = started_ref(capture(&mut w, "HC0001", &confirmed, "OP-1"));
    assert_eq!(settled(w.complete(&c)), BankOpState::Completed);
    assert_eq!(w.bill("OP-1").status, BillStatus::Paid);
    assert_eq!(w.bank_op(&confirmed).state, BankOpState::Completed);
    for r in [&confirmed, &reversed, &late] {
        assert!(entries_of(&w, r).is_empty());
    }
    assert_eq!(w.balance("HC0001"), yuan(100));
    w.check();
}

/// `check_invariants` and the node's balance audit must notice a hold and its capture that
/// disagree.
#[test]
fn the_invariant_checks_notice_a_broken_hold() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let hold = held(&mut w, "HC0001", third_party(1), 50);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    let c = started_ref(capture(&mut w, "HC0001", &hold, "OP-1"));
    let top_up = started_ref(w.top_up(MOBILE, "HC0001", third_party(1), yuan(10)));
    let good = w.state.clone();
    assert_eq!(check_invariants(&good), Ok(()));

    let mut damaged: Vec<(&str, yinyi_ledger::MemState)> = Vec::new();
    let mut s = good.clone();
    s.bank_ops.get_mut(&hold).expect("hold").purpose = BankPurpose::Authorization {
        capture: None,
        release: false,
    };
    damaged.push(("the hold forgot the capture under way", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&hold).expect("hold").state = BankOpState::Completed;
    damaged.push(("captured before the capture completed", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&hold).expect("hold").state = BankOpState::Reversed;
    damaged.push(("given back under a capture", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&hold).expect("hold").purpose = BankPurpose::Authorization {
        capture: Some(c.clone()),
        release: true,
    };
    damaged.push(("released and captured at once", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&c).expect("capture").external = third_party(2);
    damaged.push(("captured from another payer", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&hold).expect("hold").amount = yuan(9);
    damaged.push(("a capture beyond the hold", s));

    let mut s = good.clone();
    s.bills.get_mut(&bill_id("OP-1")).expect("bill").pending_op = None;
    damaged.push(("the bill forgot its capture", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&top_up).expect("top-up").state = BankOpState::Authorized;
    damaged.push(("a top-up held", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&c).expect("capture").state = BankOpState::Declined;
    damaged.push(("a declined capture still named by its hold", s));

    assert!(yinyi_ledger::Audit::of_state(&good).ok());
    for (what, state) in damaged {
        assert!(
            check_invariants(&state).is_err(),
            "check_invariants missed: {what}"
        );
        // The node's balance audit (稽核) checks holds against their captures too; a bill's
        // own fields are the ledger's rules' to keep.
        if what != "the bill forgot its capture" {
            let report = yinyi_ledger::Audit::of_state(&state);
            assert!(!report.ok(), "the balance audit missed: {what}");
        }
    }
}

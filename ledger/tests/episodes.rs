//! Inpatient episodes (issue 18, part 1): admission, deposits by every way (cash, the
//! patient's or a relative's account, card and channel), HIS's daily charges and final amount,
//! the reminder list, and the discharge settlement — a surplus back online first, oldest
//! deposit first, the rest into the account or in cash; a shortfall from the account or
//! deposited first. Every refusal goes through `World::refused` (nothing written but its request
//! record); every step ends with the invariants.

mod common;

use common::*;
use yinyi_ledger::{
    BankOpState, BankPurpose, Channel, Effect, EntryKind, EpisodeStatus, Money, Outcome,
    ReasonCode, RefundTo, Report,
};

/// HC0001 (the patient, 500 yuan) and HC0002 (a relative, 3,000 yuan) with cards; the window's
/// shift open; the patient admitted as ZY-1 into ward W5.
fn admitted() -> World {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    w.patient("HC0001", 1, 500);
    w.patient("HC0002", 2, 3_000);
    match expect_done(w.admit("ZY-1", "HC0001", "W5")) {
        Effect::EpisodeOpened { account, .. } => assert_eq!(account, w.account_of("HC0001")),
        other => panic!("{other:?}"),
    }
    w.check();
    w
}

fn settled(outcome: Outcome) -> (Money, Vec<(yinyi_ledger::BankRef, Money)>, Money) {
    match expect_done(outcome) {
        Effect::EpisodeSettled {
            collected,
            online,
            rest,
            ..
        } => (collected, online, rest),
        other => panic!("expected a settlement, got {other:?}"),
    }
}

#[test]
fn deposits_by_every_way_then_a_surplus_goes_back_online_first_and_the_rest_in_cash() {
    let mut w = admitted();
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(3_000)));
    // A relative pays from their own prepaid account, at a window where a cashier sees them.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.episode_from_account(KIOSK, "ZY-1", "HC0002", yuan(2_000))
    });
    expect_done(w.episode_from_account(WINDOW, "ZY-1", "HC0002", yuan(2_000)));
    assert_eq!(w.balance("HC0002"), yuan(1_000));
    let card_deposit =
        started_ref(w.episode_by_card(KIOSK, "ZY-1", "HC0001", bank_card(7), yuan(5_000)));
    assert_eq!(w.episode("ZY-1").deposits_in_flight, 1);
    w.check();
    expect_done(w.complete(&card_deposit));
    let ep = w.episode("ZY-1");
    assert_eq!(ep.deposited, yuan(10_000));
    assert_eq!(ep.deposits.len(), 3);
    assert_eq!(ep.held(), yuan(10_000));
    w.check();

    for _ in 0..3 {
        expect_done(w.charge("ZY-1", yuan(1_000)));
    }
    assert_eq!(w.episode("ZY-1").unused(), yuan(7_000));
    expect_done(w.finalize("ZY-1", yuan(6_500)));
    w.refused(ReasonCode::EpisodeNotOpen, |w| w.charge("ZY-1", yuan(10)));

    let cash_before = w.cash_box(WINDOW);
    let (collected, online, rest) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Cash, false));
    assert_eq!(collected, Money::ZERO);
    // 3,500 left over: all of it back to the card, the only online deposit.
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].1, yuan(3_500));
    assert_eq!(rest, Money::ZERO);
    assert_eq!(w.cash_box(WINDOW), cash_before);
    let refund = online[0].0.clone();
    let op = w.bank_op(&refund);
    assert_eq!(op.state, BankOpState::Pending);
    assert_eq!(op.external, bank_card(7));
    let ep = w.episode("ZY-1");
    assert_eq!(ep.status, EpisodeStatus::Discharged);
    assert_eq!(ep.held(), yuan(3_500), "held until the bank takes it back");
    w.check();

    expect_done(w.complete(&refund));
    let ep = w.episode("ZY-1");
    assert_eq!(ep.held(), Money::ZERO);
    assert_eq!(ep.refunded, yuan(3_500));
    w.check();
    // The patient's own balance never moved: the episode's money is its own.
    assert_eq!(w.balance("HC0001"), yuan(500));
    w.refused(ReasonCode::EpisodeNotOpen, |w| {
        w.episode_cash(WINDOW, "ZY-1", yuan(100))
    });
    w.refused(ReasonCode::EpisodeNotOpen, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Cash, false)
    });
}

#[test]
fn a_declined_online_refund_goes_into_the_account_and_the_rest_goes_there_too() {
    let mut w = admitted();
    let by_channel =
        started_ref(w.episode_by_card(MOBILE, "ZY-1", "HC0001", third_party(3), yuan(2_000)));
    expect_done(w.complete(&by_channel));
    expect_done(w.episode_cash(KIOSK, "ZY-1", yuan(5_000)));
    expect_done(w.finalize("ZY-1", yuan(1_000)));
    let (_, online, rest) = settled(w.settle(KIOSK, "ZY-1", RefundTo::Account, false));
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].1, yuan(2_000));
    assert_eq!(rest, yuan(4_000));
    assert_eq!(w.balance("HC0001"), yuan(4_500));
    w.check();
    // The channel account is closed: the money goes into the patient's account instead.
    expect_done(w.decline(&online[0].0));
    assert_eq!(w.balance("HC0001"), yuan(6_500));
    let ep = w.episode("ZY-1");
    assert_eq!(ep.held(), Money::ZERO);
    assert_eq!(ep.refunding, Money::ZERO);
    assert_eq!(ep.deposits[0].refunded_online, Money::ZERO);
    w.check();
    let kinds = journal_kinds(&w);
    assert!(kinds.contains(&(EntryKind::EpisodeRefundToAccount, Channel::Account)));
}

#[test]
fn several_online_deposits_are_refunded_oldest_first_each_up_to_what_it_brought() {
    let mut w = admitted();
    let mut refs = Vec::new();
    for (n, amount) in [(1, 1_000), (2, 2_000), (3, 3_000)] {
        let r =
            started_ref(w.episode_by_card(WINDOW, "ZY-1", "HC0001", bank_card(n), yuan(amount)));
        expect_done(w.complete(&r));
        refs.push(r);
    }
    expect_done(w.finalize("ZY-1", yuan(2_500)));
    let (_, online, rest) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Cash, false));
    // 3,500 back: 1,000 to the first card, 2,000 to the second, 500 to the third.
    let amounts: Vec<Money> = online.iter().map(|(_, a)| *a).collect();
    assert_eq!(amounts, vec![yuan(1_000), yuan(2_000), yuan(500)]);
    assert_eq!(rest, Money::ZERO);
    let cards: Vec<_> = online.iter().map(|(r, _)| w.bank_op(r).external).collect();
    assert_eq!(cards, vec![bank_card(1), bank_card(2), bank_card(3)]);
    let mut distinct: Vec<_> = online.iter().map(|(r, _)| r.clone()).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each refund has its own bank reference");
    w.check();
    // One in doubt then reversed, the others approved: all settle, nothing is lost.
    expect_done(w.complete(&online[0].0));
    expect_done(w.in_doubt(&online[1].0));
    expect_done(w.reverse(&online[1].0));
    expect_done(w.complete(&online[2].0));
    assert_eq!(w.episode("ZY-1").held(), Money::ZERO);
    assert_eq!(
        w.balance("HC0001"),
        yuan(2_500),
        "the reversed 2,000 went to the account"
    );
    w.check();
}

#[test]
fn a_shortfall_is_deposited_first_or_taken_from_the_account() {
    let mut w = admitted();
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(1_000)));
    expect_done(w.finalize("ZY-1", yuan(1_800)));
    w.refused(ReasonCode::EpisodeShortfall, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Cash, false)
    });
    // The account holds 500: not enough for 800.
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Cash, true)
    });
    // A deposit after the final amount covers part of it; the account the rest.
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(400)));
    let (collected, online, rest) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Cash, true));
    assert_eq!(collected, yuan(400));
    assert!(online.is_empty());
    assert_eq!(rest, Money::ZERO);
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(w.episode("ZY-1").held(), Money::ZERO);
    w.check();
}

#[test]
fn the_green_channel_overdraft_may_cover_a_shortfall_but_never_a_deposit() {
    let mut w = admitted();
    let account = w.account_of("HC0001");
    expect_done(w.set_overdraft(account, yuan(2_000)));
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.episode_from_account(WINDOW, "ZY-1", "HC0001", yuan(600))
    });
    expect_done(w.finalize("ZY-1", yuan(2_000)));
    let (collected, _, _) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Account, true));
    assert_eq!(collected, yuan(2_000));
    assert_eq!(w.balance("HC0001"), yuan(-1_500));
    w.check();
}

#[test]
fn the_reminder_list_names_open_episodes_below_their_threshold() {
    let mut w = admitted();
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(2_000)));
    assert!(!w.episode("ZY-1").needs_reminder());
    expect_done(w.charge("ZY-1", yuan(900)));
    assert!(!w.episode("ZY-1").needs_reminder(), "1,100 unused");
    expect_done(w.charge("ZY-1", yuan(200)));
    assert!(
        w.episode("ZY-1").needs_reminder(),
        "900 unused, below 1,000"
    );
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(500)));
    assert!(!w.episode("ZY-1").needs_reminder());
    expect_done(w.charge("ZY-1", yuan(3_000)));
    assert_eq!(w.episode("ZY-1").unused(), yuan(-1_600));
    assert!(w.episode("ZY-1").needs_reminder());
    expect_done(w.finalize("ZY-1", yuan(4_100)));
    assert!(
        !w.episode("ZY-1").needs_reminder(),
        "discharging: the window collects"
    );
    w.check();
}

#[test]
fn episode_refusals_write_nothing() {
    let mut w = admitted();
    w.refused(ReasonCode::EpisodeExists, |w| {
        w.admit("ZY-1", "HC0002", "W5")
    });
    w.refused(ReasonCode::EpisodeNotFound, |w| {
        w.episode_cash(WINDOW, "ZY-9", yuan(100))
    });
    w.refused(ReasonCode::EpisodeNotFound, |w| w.charge("ZY-9", yuan(100)));
    w.refused(ReasonCode::InvalidDenomination, |w| {
        w.episode_cash(KIOSK, "ZY-1", cents(10_050))
    });
    w.refused(ReasonCode::InvalidAmount, |w| w.charge("ZY-1", Money::ZERO));
    w.refused(ReasonCode::InvalidAmount, |w| w.finalize("ZY-1", yuan(-1)));
    // Only HIS admits and charges; only a window pays out cash.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            KIOSK,
            yinyi_ledger::CommandBody::PostEpisodeCharges {
                episode: admission("ZY-1"),
                amount: yuan(1),
            },
        )
    });
    w.refused(ReasonCode::EpisodeNotOpen, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Cash, false)
    });
    // A deposit by card names the patient's card: another patient's card finds no episode.
    w.refused(ReasonCode::EpisodeNotFound, |w| {
        w.episode_by_card(KIOSK, "ZY-1", "HC0002", bank_card(2), yuan(100))
    });
    // Nobody starts an inpatient refund by hand.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.start_bank_op(
            WINDOW,
            "HC0001",
            bank_card(2),
            BankPurpose::EpisodeRefund {
                episode: admission("ZY-1"),
                deposit: 1,
            },
            Some(yuan(100)),
        )
    });
    let pending =
        started_ref(w.episode_by_card(KIOSK, "ZY-1", "HC0001", bank_card(1), yuan(1_000)));
    expect_done(w.finalize("ZY-1", yuan(100)));
    w.refused(ReasonCode::EpisodeOperationInProgress, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Account, false)
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.settle(KIOSK, "ZY-1", RefundTo::Cash, false)
    });
    expect_done(w.decline(&pending));
    // Declined: nothing came in, the shortfall is still there.
    w.refused(ReasonCode::EpisodeShortfall, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Account, false)
    });
    expect_done(w.close_shift(WINDOW));
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.settle(WINDOW, "ZY-1", RefundTo::Cash, true)
    });
}

#[test]
fn the_shift_report_carries_inpatient_lines_and_the_cash_that_moved() {
    let mut w = admitted();
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(3_000)));
    expect_done(w.finalize("ZY-1", yuan(1_200)));
    let (_, _, rest) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Cash, false));
    assert_eq!(rest, yuan(1_800));
    let report = match expect_done(w.close_shift(WINDOW)) {
        Effect::ShiftClosed(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.cash_expected, yuan(1_200));
    let line = |kind| {
        report
            .lines
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.total)
    };
    assert_eq!(line(EntryKind::EpisodeDeposit), Some(yuan(3_000)));
    assert_eq!(line(EntryKind::EpisodeRefund), Some(yuan(1_800)));
    assert!(
        w.state
            .reports
            .values()
            .any(|r| matches!(r, Report::Shift(s) if s.seq == report.seq))
    );
    w.check();
}

#[test]
fn a_retried_settlement_is_answered_from_its_record_and_settles_once() {
    let mut w = admitted();
    let r = started_ref(w.episode_by_card(KIOSK, "ZY-1", "HC0001", bank_card(1), yuan(2_000)));
    expect_done(w.complete(&r));
    expect_done(w.finalize("ZY-1", yuan(500)));
    let cmd = w.command(
        WINDOW,
        Some(CASHIER),
        yinyi_ledger::CommandBody::SettleEpisode {
            episode: admission("ZY-1"),
            card: card("HC0001"),
            rest_to: RefundTo::Cash,
            shortfall_from_account: false,
        },
    );
    let first = w.submit(&cmd);
    let ops = w.state.bank_ops.len();
    let journal = w.state.journal.len();
    assert_eq!(w.submit(&cmd), first);
    assert_eq!(w.state.bank_ops.len(), ops);
    assert_eq!(w.state.journal.len(), journal);
    w.check();
}

/// The checks above are only as good as the audit and `check_invariants`: each must notice a
/// damaged episode.
#[test]
fn the_checks_notice_a_broken_episode() {
    let mut w = admitted();
    let r = started_ref(w.episode_by_card(KIOSK, "ZY-1", "HC0001", bank_card(1), yuan(2_000)));
    expect_done(w.complete(&r));
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(1_000)));
    expect_done(w.finalize("ZY-1", yuan(500)));
    let (_, online, _) = settled(w.settle(WINDOW, "ZY-1", RefundTo::Account, false));
    assert_eq!(online.len(), 1);
    let good = w.state.clone();
    assert_eq!(check_invariants(&good), Ok(()));
    let id = admission("ZY-1");

    let mut damaged = Vec::new();
    let mut s = good.clone();
    s.episodes.get_mut(&id).unwrap().deposited = yuan(3_001);
    damaged.push(("deposited off", s));
    let mut s = good.clone();
    s.episodes.get_mut(&id).unwrap().refunding = Money::ZERO;
    damaged.push(("a refund in flight forgotten", s));
    let mut s = good.clone();
    s.episodes.get_mut(&id).unwrap().final_amount = Some(yuan(400));
    damaged.push(("final amount changed after settlement", s));
    let mut s = good.clone();
    s.episodes.get_mut(&id).unwrap().status = EpisodeStatus::Final;
    damaged.push(("discharged episode reopened", s));
    let mut s = good.clone();
    s.episodes.get_mut(&id).unwrap().deposits.pop();
    damaged.push(("a deposit dropped", s));
    let mut s = good.clone();
    s.journal
        .retain(|e| e.kind != EntryKind::EpisodeRefundToAccount);
    damaged.push(("the surplus entry lost", s));
    let mut s = good.clone();
    s.episodes.remove(&id);
    damaged.push(("the episode lost", s));
    for (what, state) in damaged {
        assert!(
            check_invariants(&state).is_err(),
            "check_invariants missed: {what}"
        );
    }
}

#[test]
fn a_settlement_needs_the_patients_card_in_use_and_pays_little_cash() {
    let mut w = admitted();
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(40_000)));
    expect_done(w.episode_cash(WINDOW, "ZY-1", yuan(30_000)));
    expect_done(w.finalize("ZY-1", yuan(5_000)));
    let settle_with = |w: &mut World, card_no: &str, rest_to| {
        w.run(
            WINDOW,
            yinyi_ledger::CommandBody::SettleEpisode {
                episode: admission("ZY-1"),
                card: card(card_no),
                rest_to,
                shortfall_from_account: false,
            },
        )
    };
    // Another patient's card settles nothing.
    w.refused(ReasonCode::EpisodeNotFound, |w| {
        settle_with(w, "HC0002", RefundTo::Account)
    });
    // 65,000 in cash is more than a window pays out.
    w.refused(ReasonCode::InvalidAmount, |w| {
        settle_with(w, "HC0001", RefundTo::Cash)
    });
    // A lost card settles nothing either; found again, it does.
    expect_done(w.report_loss("HC0001", 1));
    w.refused(ReasonCode::CardLost, |w| {
        settle_with(w, "HC0001", RefundTo::Account)
    });
    expect_done(w.cancel_loss("HC0001", 1));
    let (_, _, rest) = settled(settle_with(&mut w, "HC0001", RefundTo::Account));
    assert_eq!(rest, yuan(65_000));
    assert_eq!(w.balance("HC0001"), yuan(65_500));
    w.check();
}

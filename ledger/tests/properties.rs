//! Long random sequences of commands over a small universe (a handful of persons and cards, a
//! few bills, two kiosks, one window, a mobile channel, HIS, and saga steps on existing bank
//! operations): the invariants hold after every step, a rejected command writes nothing but
//! its request record, and any earlier command applied again returns its first outcome and
//! changes nothing.

mod common;

use std::collections::BTreeSet;

use common::random::{Step, perform, steps};
use common::{World, check_invariants, same_but_requests};
use proptest::prelude::*;
use proptest::test_runner::Config;
use yinyi_ledger::{EntryKind, Outcome, ReasonCode, apply};

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures are reported with their shrunk sequence; nothing is written to the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Applies the steps, checking after each one; returns the world and what the run covered.
fn run_checked(steps: &[Step]) -> Result<(World, Coverage), TestCaseError> {
    let mut world = World::standard();
    let mut coverage = Coverage::default();
    for (i, step) in steps.iter().enumerate() {
        let before = world.state.clone();
        let (cmd, outcome) = perform(&mut world, step);
        let after = &world.state;
        let key = (cmd.terminal.clone(), cmd.request.clone());
        let seen_before = before.requests.get(&key).cloned();

        if let Err(e) = check_invariants(after) {
            return Err(TestCaseError::fail(format!(
                "step {i} {step:?}\ncommand {cmd:?}\noutcome {outcome:?}\n{e}"
            )));
        }
        match seen_before {
            Some(record) => {
                // A retry or a reused id: nothing at all is written.
                prop_assert!(
                    before == *after,
                    "step {i}: a seen request id changed the state"
                );
                if record.answers(&cmd) {
                    prop_assert_eq!(&outcome, &record.outcome, "step {}: retry", i);
                    coverage.retries += 1;
                } else {
                    prop_assert_eq!(outcome.reason(), Some(ReasonCode::RequestIdReused));
                    coverage.reused += 1;
                }
            }
            None => {
                prop_assert_eq!(
                    after.requests.len(),
                    before.requests.len() + 1,
                    "step {}: one request record per new request",
                    i
                );
                prop_assert_eq!(&after.requests[&key].outcome, &outcome);
                if let Outcome::Rejected(r) = &outcome {
                    prop_assert!(
                        same_but_requests(&before, after),
                        "step {i}: rejected {} wrote more than its request record",
                        r.code
                    );
                    prop_assert_ne!(r.code, ReasonCode::InvariantViolation);
                    coverage.codes.insert(r.code);
                } else {
                    coverage.done.insert(cmd.body.name());
                }
            }
        }
    }
    coverage.kinds = world.state.journal.iter().map(|e| e.kind).collect();
    Ok((world, coverage))
}

#[derive(Default, Debug)]
struct Coverage {
    done: BTreeSet<&'static str>,
    codes: BTreeSet<ReasonCode>,
    kinds: BTreeSet<EntryKind>,
    retries: usize,
    reused: usize,
}

/// Every earlier command applied again: its first outcome, and no write at all.
fn replay_all(world: &mut World) -> Result<(), TestCaseError> {
    let before = world.state.clone();
    let log = world.log.clone();
    for applied in &log {
        let ctx = world.next_ctx();
        let again = apply(&applied.cmd, &mut world.state, &ctx);
        prop_assert_eq!(&again, &applied.outcome, "replaying {:?}", applied.cmd);
    }
    prop_assert!(before == world.state, "replaying the log changed the state");
    Ok(())
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn invariants_hold_after_every_step_of_a_random_day(steps in steps(200..=400)) {
        let (mut world, _) = run_checked(&steps)?;
        replay_all(&mut world)?;
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Very long days: over a thousand commands against the same few patients.
    #[test]
    fn invariants_hold_over_a_very_long_day(steps in steps(1000..=1500)) {
        let (mut world, _) = run_checked(&steps)?;
        replay_all(&mut world)?;
    }
}

/// The generator reaches the interesting parts of the rules: guards against a universe so
/// small or so hostile that the properties above check only rejections.
#[test]
fn random_days_cover_the_transactions_and_the_refusals() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

    let mut runner = TestRunner::new_with_rng(
        config(1),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut done = BTreeSet::new();
    let mut codes = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let (mut retries, mut reused) = (0, 0);
    for _ in 0..48 {
        let steps = steps(300..=300)
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        let (_, coverage) = run_checked(&steps).expect("the properties hold");
        done.extend(coverage.done);
        codes.extend(coverage.codes);
        kinds.extend(coverage.kinds);
        retries += coverage.retries;
        reused += coverage.reused;
    }
    for name in [
        "IssueCard",
        "DepositCash",
        "StartBankOp",
        "CompleteBankOp",
        "DeclineBankOp",
        "MarkBankOpInDoubt",
        "ReverseBankOp",
        "PostBill",
        "PostInsuredBill",
        "CancelBill",
        "CancelBillPart",
        "MarkInvoiced",
        "PayBill",
        "Refund",
        "RefundBill",
        "Adjust",
        "WithdrawCash",
        "ReportLoss",
        "CancelLoss",
        "ReplaceCard",
        "Freeze",
        "Unfreeze",
        "SetOverdraft",
        "SetTerminalStatus",
        "OpenShift",
        "CloseShift",
        "CollectCash",
        "OpenEpisode",
        "DepositToEpisode",
        "PostEpisodeCharges",
        "FinalizeEpisode",
        "SettleEpisode",
        "SetRules",
        "AuthorizePayment",
        "CapturePayment",
        "ReleaseAuthorization",
    ] {
        assert!(
            done.contains(name),
            "no random day ever did {name}: {done:?}"
        );
    }
    for kind in EntryKind::ALL {
        assert!(
            kinds.contains(&kind),
            "no random day journaled {kind:?}: {codes:?}"
        );
    }
    assert!(
        codes.len() >= 25,
        "random days reached only {} reason codes: {codes:?}",
        codes.len()
    );
    assert!(
        retries > 50 && reused > 20,
        "{retries} retries, {reused} reused ids"
    );
}

/// The checks above are only as good as `check_invariants`: it must notice each kind of damage.
#[test]
fn the_invariant_checks_notice_a_broken_state() {
    use common::*;
    use yinyi_ledger::{BankOpState, Money, Report};

    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    let account = w.patient("HC0001", 1, 100);
    expect_done(w.set_overdraft(account, yuan(50)));
    expect_done(w.post_bill("OP-1", "HC0001", yuan(120)));
    expect_done(w.pay_bill(WINDOW, "OP-1", "HC0001"));
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(5)));
    expect_done(w.complete(&r));
    expect_done(w.deposit(WINDOW, "HC0001", yuan(3)));
    expect_done(w.close_shift(WINDOW));
    expect_done(w.open_shift(WINDOW));
    expect_done(w.deposit(WINDOW, "HC0001", yuan(1)));
    let good = w.state.clone();
    assert_eq!(check_invariants(&good), Ok(()));
    let account_id = account;

    let mut damaged: Vec<(&str, yinyi_ledger::MemState)> = Vec::new();
    let mut s = good.clone();
    let a = s.accounts.get_mut(&account_id).expect("account");
    a.balance = a.balance.checked_add(Money::from_cents(1)).expect("small");
    damaged.push(("balance off by a fen", s));

    let mut s = good.clone();
    assert_eq!(s.accounts[&account_id].balance, yuan(-11));
    s.accounts
        .get_mut(&account_id)
        .expect("account")
        .overdraft_limit = yuan(10);
    let err = check_invariants(&s).expect_err("below the overdraft");
    assert!(err.contains("invariant 3"), "{err}");

    let mut s = good.clone();
    s.terminals.get_mut(&tid(KIOSK)).expect("kiosk").cash_box = yuan(99);
    damaged.push(("kiosk cash box", s));

    let mut s = good.clone();
    s.terminals.get_mut(&tid(WINDOW)).expect("window").cash_box = Money::ZERO;
    damaged.push(("window cash box", s));

    let mut s = good.clone();
    let paid = s
        .journal
        .iter()
        .find(|e| e.bill.is_some())
        .cloned()
        .expect("a payment");
    s.journal.push(paid);
    damaged.push(("bill paid twice", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&r).expect("op").state = BankOpState::Declined;
    damaged.push(("top-up credited but declined", s));

    let mut s = good.clone();
    s.bank_ops.get_mut(&r).expect("op").amount = yuan(6);
    damaged.push(("top-up amount differs from its operation", s));

    let mut s = good.clone();
    for report in s.reports.values_mut() {
        if let Report::Shift(shift) = report {
            shift.cash_expected = yuan(0);
        }
    }
    damaged.push(("shift report cash", s));

    let mut s = good.clone();
    for report in s.reports.values_mut() {
        if let Report::Shift(shift) = report {
            shift.lines.pop();
        }
    }
    damaged.push(("shift report lines", s));

    let mut s = good.clone();
    s.terminals
        .get_mut(&tid(WINDOW))
        .expect("window")
        .shift
        .as_mut()
        .expect("open")
        .totals
        .clear();
    damaged.push(("open shift totals", s));

    let mut s = good.clone();
    let first = s.journal[0].request.clone();
    s.requests.retain(|(_, id), _| *id != first);
    damaged.push(("journal entry of an unrecorded request", s));

    let mut s = good.clone();
    s.bills.get_mut(&bill_id("OP-1")).expect("bill").status = yinyi_ledger::BillStatus::Unpaid;
    damaged.push(("bill status disagrees with the journal", s));

    for (what, state) in damaged {
        assert!(
            check_invariants(&state).is_err(),
            "check_invariants missed: {what}"
        );
    }
}

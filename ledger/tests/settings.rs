//! The business rules as replicated state (issue 19, part 4's first step): an admin sets them
//! with an operator, every node applies them from that entry on, and until then the defaults
//! apply. Refusals write nothing but their request record.

mod common;

use common::*;
use yinyi_ledger::{CommandBody, Effect, Money, ReasonCode, Rules};

fn set_rules(w: &mut World, operator_id: Option<&str>, rules: Rules) -> yinyi_ledger::Outcome {
    w.run_as(ADMIN, operator_id, CommandBody::SetRules { rules })
}

#[test]
fn rules_set_by_an_admin_apply_from_their_entry_on() {
    let mut w = World::standard();
    // The defaults first: a first deposit of 10 yuan is enough.
    w.patient("HC0001", 1, 10);
    assert_eq!(w.state.rules, None);
    let stricter = Rules {
        single_txn_limit: yuan(1_000),
        min_first_deposit: yuan(50),
        max_overdraft: yuan(500),
    };
    match expect_done(set_rules(&mut w, Some(FINANCE), stricter)) {
        Effect::RulesSet { rules } => assert_eq!(rules, stricter),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.state.rules, Some(stricter));
    w.refused(ReasonCode::BelowMinimumDeposit, |w| {
        w.issue(KIOSK, "HC0002", 2, Some(yuan(20)))
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.deposit(KIOSK, "HC0001", yuan(2_000))
    });
    let account = w.account_of("HC0001");
    w.refused(ReasonCode::OverdraftAboveMaximum, |w| {
        w.set_overdraft(account, yuan(600))
    });
    expect_done(w.deposit(KIOSK, "HC0001", yuan(1_000)));
    // Loosened again, the same deposit goes through.
    expect_done(set_rules(&mut w, Some(FINANCE), Rules::default()));
    expect_done(w.deposit(KIOSK, "HC0001", yuan(2_000)));
    w.check();
}

#[test]
fn only_an_admin_with_an_operator_sets_sensible_rules() {
    let mut w = World::standard();
    let good = Rules::default();
    w.refused(ReasonCode::OperatorRequired, |w| set_rules(w, None, good));
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run_as(WINDOW, Some(CASHIER), CommandBody::SetRules { rules: good })
    });
    let bad = [
        Rules {
            single_txn_limit: Money::ZERO,
            ..good
        },
        Rules {
            single_txn_limit: Money::from_cents(9_999),
            min_first_deposit: Money::ZERO,
            max_overdraft: Money::ZERO,
        },
        Rules {
            single_txn_limit: yuan(1_000_000),
            max_overdraft: yuan(200_001),
            ..good
        },
        Rules {
            single_txn_limit: yuan(1_000_001),
            ..good
        },
        Rules {
            min_first_deposit: yuan(60_000),
            ..good
        },
        Rules {
            max_overdraft: yuan(-1),
            ..good
        },
    ];
    for rules in bad {
        w.refused(ReasonCode::InvalidAmount, |w| {
            set_rules(w, Some(FINANCE), rules)
        });
    }
    assert_eq!(w.state.rules, None);
    // The bounds themselves are allowed; the same request again is answered from its record.
    let widest = Rules {
        single_txn_limit: yuan(1_000_000),
        min_first_deposit: yuan(1_000_000),
        max_overdraft: yuan(200_000),
    };
    let cmd = w.command(
        ADMIN,
        Some(FINANCE),
        CommandBody::SetRules { rules: widest },
    );
    let first = w.submit(&cmd);
    expect_done(first.clone());
    assert_eq!(w.submit(&cmd), first);
    let mut reused = cmd.clone();
    reused.body = CommandBody::SetRules { rules: good };
    expect_code(&w.submit(&reused), ReasonCode::RequestIdReused);
    assert_eq!(w.state.rules, Some(widest));
    // Raised above the default, a deposit of 60,000 goes through (the first deposit at
    // issue must now be the whole limit, so the card is issued with none).
    w.issue(KIOSK, "HC0001", 1, None);
    expect_done(w.deposit(KIOSK, "HC0001", yuan(60_000)));
    w.check();
}

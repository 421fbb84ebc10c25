//! One test per rule of DOMAIN.md and per refusal `apply` can give. Every refusal goes through
//! `World::refused`, which also checks that it wrote nothing but its request record; every test
//! ends by checking the invariants.

mod common;

use std::collections::BTreeSet;

use common::*;
use yinyi_ledger::{
    AccountStatus, BankOpKind, BankOpState, BankPurpose, BillKind, BillStatus, CardKind,
    CardStatus, Channel, Command, CommandBody, Effect, EntryKind, Money, Outcome, ReasonCode,
    ReconciliationReport, Report, ReportLine, StateView, TerminalKind, TerminalStatus, Timestamp,
    TxnId,
};

/// The standard world with the window's shift open.
fn ready() -> World {
    let mut w = World::standard();
    expect_done(w.open_shift(WINDOW));
    w
}

fn last_txn(w: &World) -> TxnId {
    w.log.last().expect("a command was applied").txn
}

#[track_caller]
fn settled(outcome: Outcome) -> (BankOpState, Money) {
    match expect_done(outcome) {
        Effect::BankOpSettled { state, balance, .. } => (state, balance),
        other => panic!("expected BankOpSettled, got {other:?}"),
    }
}

// ---- terminals ----

#[test]
fn registering_a_terminal_puts_it_in_service() {
    let mut w = World::new();
    assert_eq!(
        expect_done(w.register(KIOSK)),
        Effect::TerminalChanged {
            terminal: tid(KIOSK),
            status: TerminalStatus::InService
        }
    );
    let t = &w.state.terminals[&tid(KIOSK)];
    assert_eq!(t.kind, TerminalKind::Kiosk);
    assert_eq!(t.status, TerminalStatus::InService);
    assert_eq!(t.cash_box, Money::ZERO);
    assert!(t.shift.is_none());
    w.check();
}

#[test]
fn a_terminal_is_registered_once() {
    let mut w = World::standard();
    w.refused(ReasonCode::TerminalAlreadyRegistered, |w| w.register(KIOSK));
}

#[test]
fn only_an_admin_console_registers_terminals() {
    let mut w = World::standard();
    let body = CommandBody::RegisterTerminal {
        terminal: tid("K-0200"),
    };
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(KIOSK, body.clone())
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(SAGA, body.clone())
    });
    assert!(!w.state.terminals.contains_key(&tid("K-0200")));
}

#[test]
fn admin_and_system_terminals_are_never_registered() {
    let mut w = World::new();
    w.refused(ReasonCode::TerminalNotAllowed, |w| w.register("A-OTHER"));
    w.refused(ReasonCode::TerminalNotAllowed, |w| w.register("S-NODE2"));
}

#[test]
fn an_unregistered_terminal_is_refused() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::TerminalNotRegistered, |w| {
        w.deposit("K-0999", "HC0001", yuan(10))
    });
    w.refused(ReasonCode::TerminalNotRegistered, |w| {
        w.issue("K-0999", "HC0002", 2, None)
    });
    // An HIS that was never registered posts nothing.
    w.refused(ReasonCode::TerminalNotRegistered, |w| {
        w.run(
            "H-LIS",
            CommandBody::PostBill {
                bill: bill_id("OP-2"),
                card: card("HC0001"),
                kind: BillKind::Outpatient,
                amount: yuan(1),
            },
        )
    });
}

#[test]
fn a_terminal_out_of_service_refuses_business_until_it_is_back() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.set_terminal_status(KIOSK, TerminalStatus::OutOfService));
    w.refused(ReasonCode::TerminalOutOfService, |w| {
        w.deposit(KIOSK, "HC0001", yuan(10))
    });
    w.refused(ReasonCode::TerminalOutOfService, |w| {
        w.issue(KIOSK, "HC0002", 2, None)
    });
    assert_eq!(
        expect_done(w.set_terminal_status(KIOSK, TerminalStatus::InService)),
        Effect::TerminalChanged {
            terminal: tid(KIOSK),
            status: TerminalStatus::InService
        }
    );
    expect_done(w.deposit(KIOSK, "HC0001", yuan(10)));
    assert_eq!(w.balance("HC0001"), yuan(110));
    w.check();
}

#[test]
fn a_retired_terminal_is_retired_for_good() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.set_terminal_status(KIOSK2, TerminalStatus::Retired));
    w.refused(ReasonCode::TerminalOutOfService, |w| {
        w.set_terminal_status(KIOSK2, TerminalStatus::InService)
    });
    w.refused(ReasonCode::TerminalOutOfService, |w| {
        w.deposit(KIOSK2, "HC0001", yuan(10))
    });
    assert_eq!(
        w.state.terminals[&tid(KIOSK2)].status,
        TerminalStatus::Retired
    );
}

#[test]
fn the_status_of_an_unknown_terminal_cannot_be_set() {
    let mut w = World::standard();
    w.refused(ReasonCode::TerminalNotRegistered, |w| {
        w.set_terminal_status("W-99", TerminalStatus::OutOfService)
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            KIOSK,
            CommandBody::SetTerminalStatus {
                terminal: tid(KIOSK2),
                status: TerminalStatus::OutOfService,
            },
        )
    });
}

// ---- cards and real name ----

#[test]
fn issuing_a_card_opens_an_account_with_its_first_deposit() {
    let mut w = World::standard();
    let effect = expect_done(w.issue(KIOSK, "HC0001", 1, Some(yuan(100))));
    let txn = last_txn(&w);
    let account = yinyi_ledger::AccountId(txn.0);
    assert_eq!(
        effect,
        Effect::CardIssued {
            account,
            card: card("HC0001"),
            existing_account: false,
            balance: yuan(100),
        }
    );
    let a = &w.state.accounts[&account];
    assert_eq!(a.holder, holder(1));
    assert_eq!(a.balance, yuan(100));
    assert_eq!(a.overdraft_limit, Money::ZERO);
    assert_eq!(a.status, AccountStatus::Active);
    assert_eq!(w.state.persons[&person(1)], account);
    let c = &w.state.cards[&card("HC0001")];
    assert_eq!(
        (c.kind, c.status, c.account),
        (CardKind::Hospital, CardStatus::Active, account)
    );
    assert_eq!(
        journal_kinds(&w),
        vec![(EntryKind::CashDeposit, Channel::Cash)]
    );
    assert_eq!(w.state.journal[0].txn, txn);
    assert_eq!(w.cash_box(KIOSK), yuan(100));
    w.check();
}

#[test]
fn a_card_can_be_issued_without_a_deposit_even_at_a_closed_window() {
    let mut w = World::standard();
    match expect_done(w.issue(WINDOW, "HC0001", 1, None)) {
        Effect::CardIssued {
            balance,
            existing_account,
            ..
        } => {
            assert_eq!(balance, Money::ZERO);
            assert!(!existing_account);
        }
        other => panic!("{other:?}"),
    }
    assert!(w.state.journal.is_empty());
    w.check();
}

#[test]
fn second_card_for_the_same_person_binds_to_the_existing_account() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 50);
    assert_eq!(
        expect_done(w.issue(KIOSK2, "HC0002", 1, Some(yuan(20)))),
        Effect::CardIssued {
            account,
            card: card("HC0002"),
            existing_account: true,
            balance: yuan(70),
        }
    );
    assert_eq!(w.state.accounts.len(), 1);
    assert_eq!(w.state.persons.len(), 1);
    assert_eq!(w.account_of("HC0002"), account);
    // Either card reaches the same money.
    expect_done(w.deposit(KIOSK, "HC0001", yuan(5)));
    assert_eq!(w.balance("HC0002"), yuan(75));
    // Another person gets another account.
    let other = w.patient("HC0003", 2, 10);
    assert_ne!(other, account);
    w.check();
}

#[test]
fn a_card_number_is_issued_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 50);
    w.refused(ReasonCode::CardAlreadyExists, |w| {
        w.issue(KIOSK, "HC0001", 2, Some(yuan(20)))
    });
    assert_eq!(w.state.accounts.len(), 1);
    assert!(!w.state.persons.contains_key(&person(2)));
}

#[test]
fn a_first_deposit_below_the_minimum_is_refused() {
    let mut w = ready();
    w.refused(ReasonCode::BelowMinimumDeposit, |w| {
        w.issue(WINDOW, "HC0001", 1, Some(cents(999)))
    });
    assert!(w.state.accounts.is_empty() && w.state.cards.is_empty());
    expect_done(w.issue(WINDOW, "HC0001", 1, Some(yuan(10))));
    assert_eq!(w.balance("HC0001"), yuan(10));
    w.check();
}

#[test]
fn a_kiosk_takes_whole_yuan_for_a_first_deposit() {
    let mut w = ready();
    w.refused(ReasonCode::InvalidDenomination, |w| {
        w.issue(KIOSK, "HC0001", 1, Some(cents(1050)))
    });
    expect_done(w.issue(WINDOW, "HC0001", 1, Some(cents(1050))));
    assert_eq!(w.balance("HC0001"), cents(1050));
    w.check();
}

#[test]
fn a_first_deposit_at_a_window_needs_an_open_shift() {
    let mut w = World::standard();
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.issue(WINDOW, "HC0001", 1, Some(yuan(100)))
    });
}

#[test]
fn cards_are_issued_only_at_kiosks_and_windows() {
    let mut w = World::standard();
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.issue(MOBILE, "HC0001", 1, None)
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.issue(HIS, "HC0001", 1, None)
    });
}

// ---- cash deposits ----

#[test]
fn a_cash_deposit_credits_the_account_and_the_cash_box() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let outcome = w.deposit(KIOSK2, "HC0001", yuan(50));
    assert_eq!(
        expect_done(outcome),
        Effect::BalanceChanged {
            account,
            txn: last_txn(&w),
            amount: yuan(50),
            balance: yuan(150),
        }
    );
    assert_eq!(w.cash_box(KIOSK2), yuan(50));
    assert_eq!(w.cash_box(KIOSK), yuan(100));
    let e = w.state.journal.last().expect("an entry");
    assert_eq!(e.terminal, tid(KIOSK2));
    assert_eq!(e.balance_after, yuan(150));
    w.check();
}

#[test]
fn a_kiosk_takes_only_whole_yuan() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::InvalidDenomination, |w| {
        w.deposit(KIOSK, "HC0001", cents(10_050))
    });
    // A window counts coins.
    expect_done(w.deposit(WINDOW, "HC0001", cents(10_050)));
    assert_eq!(w.balance("HC0001"), cents(20_050));
    w.check();
}

#[test]
fn amounts_must_be_positive_and_within_the_single_transaction_limit() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    for bad in [Money::ZERO, cents(-1), yuan(-100), cents(5_000_001)] {
        w.refused(ReasonCode::InvalidAmount, |w| {
            w.deposit(WINDOW, "HC0001", bad)
        });
    }
    expect_done(w.deposit(WINDOW, "HC0001", yuan(50_000)));
    assert_eq!(w.balance("HC0001"), yuan(50_100));
    w.check();
}

#[test]
fn a_window_needs_an_open_shift_to_take_cash() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.deposit(WINDOW, "HC0001", yuan(10))
    });
}

#[test]
fn cash_is_taken_only_at_kiosks_and_windows() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.deposit(MOBILE, "HC0001", yuan(10))
    });
}

#[test]
fn an_unknown_card_is_refused() {
    let mut w = ready();
    w.refused(ReasonCode::CardNotFound, |w| {
        w.deposit(KIOSK, "HC0404", yuan(10))
    });
    w.refused(ReasonCode::CardNotFound, |w| {
        w.post_bill("OP-1", "HC0404", yuan(10))
    });
    w.refused(ReasonCode::CardNotFound, |w| {
        w.top_up(KIOSK, "HC0404", bank_card(1), yuan(10))
    });
}

// ---- loss, replacement ----

#[test]
fn lost_card_is_refused_everywhere() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    assert_eq!(
        expect_done(w.report_loss("HC0001", 1)),
        Effect::CardStatusChanged {
            card: card("HC0001"),
            status: CardStatus::Lost
        }
    );
    w.refused(ReasonCode::CardLost, |w| {
        w.deposit(KIOSK, "HC0001", yuan(10))
    });
    w.refused(ReasonCode::CardLost, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    w.refused(ReasonCode::CardLost, |w| {
        w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1))
    });
    w.refused(ReasonCode::CardLost, |w| {
        w.top_up(MOBILE, "HC0001", third_party(1), yuan(10))
    });
    w.refused(ReasonCode::CardLost, |w| {
        w.withdraw_cash(WINDOW, "HC0001", None)
    });
    w.refused(ReasonCode::CardLost, |w| {
        w.withdraw_to(KIOSK, "HC0001", bank_card(1), None)
    });
    w.refused(ReasonCode::CardLost, |w| w.report_loss("HC0001", 1));
    // The money is the account's: another card of the same person still reaches it.
    expect_done(w.issue(WINDOW, "HC0002", 1, None));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0002"));
    assert_eq!(w.balance("HC0002"), yuan(90));
    w.check();
}

#[test]
fn cancelling_a_loss_makes_the_card_usable_again() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.report_loss("HC0001", 1));
    assert_eq!(
        expect_done(w.cancel_loss("HC0001", 1)),
        Effect::CardStatusChanged {
            card: card("HC0001"),
            status: CardStatus::Active
        }
    );
    expect_done(w.deposit(KIOSK, "HC0001", yuan(10)));
    assert_eq!(w.balance("HC0001"), yuan(110));
    w.check();
}

#[test]
fn a_loss_of_an_active_card_cannot_be_cancelled() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::CardNotLost, |w| w.cancel_loss("HC0001", 1));
}

#[test]
fn loss_and_replacement_need_the_holders_identity() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.patient("HC0002", 2, 100);
    w.refused(ReasonCode::IdentityMismatch, |w| w.report_loss("HC0001", 2));
    assert_eq!(w.state.cards[&card("HC0001")].status, CardStatus::Active);
    expect_done(w.report_loss("HC0001", 1));
    w.refused(ReasonCode::IdentityMismatch, |w| w.cancel_loss("HC0001", 2));
    w.refused(ReasonCode::IdentityMismatch, |w| {
        w.replace_card("HC0001", "HC0009", 2)
    });
    w.refused(ReasonCode::CardNotFound, |w| w.report_loss("HC0404", 1));
    assert_eq!(w.state.cards[&card("HC0001")].status, CardStatus::Lost);
}

#[test]
fn a_replacement_card_reaches_the_same_account_and_balance() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    expect_done(w.report_loss("HC0001", 1));
    assert_eq!(
        expect_done(w.replace_card("HC0001", "HC0009", 1)),
        Effect::CardReplaced {
            old_card: card("HC0001"),
            new_card: card("HC0009"),
            account,
        }
    );
    let new = &w.state.cards[&card("HC0009")];
    assert_eq!((new.account, new.status), (account, CardStatus::Active));
    assert_eq!(w.state.cards[&card("HC0001")].status, CardStatus::Replaced);
    assert_eq!(w.balance("HC0009"), yuan(100));
    w.refused(ReasonCode::CardReplaced, |w| {
        w.deposit(KIOSK, "HC0001", yuan(10))
    });
    expect_done(w.deposit(KIOSK, "HC0009", yuan(10)));
    assert_eq!(w.balance("HC0009"), yuan(110));
    // No money moved to replace the card.
    assert_eq!(w.state.journal.len(), 2);
    w.check();
}

#[test]
fn an_active_card_can_be_replaced_directly() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 30);
    expect_done(w.replace_card("HC0001", "HC0009", 1));
    assert_eq!(w.balance("HC0009"), yuan(30));
    w.check();
}

#[test]
fn a_replaced_card_can_be_neither_replaced_nor_reported_again() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.replace_card("HC0001", "HC0009", 1));
    w.refused(ReasonCode::CardReplaced, |w| {
        w.replace_card("HC0001", "HC0010", 1)
    });
    w.refused(ReasonCode::CardReplaced, |w| w.report_loss("HC0001", 1));
    w.refused(ReasonCode::CardReplaced, |w| w.cancel_loss("HC0001", 1));
}

#[test]
fn a_replacement_card_number_must_be_new() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.patient("HC0002", 2, 100);
    w.refused(ReasonCode::CardAlreadyExists, |w| {
        w.replace_card("HC0001", "HC0002", 1)
    });
    w.refused(ReasonCode::CardAlreadyExists, |w| {
        w.replace_card("HC0001", "HC0001", 1)
    });
    assert_eq!(w.account_of("HC0002"), w.state.persons[&person(2)]);
}

#[test]
fn loss_and_replacement_are_handled_at_a_window() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            KIOSK,
            CommandBody::ReportLoss {
                card: card("HC0001"),
                person: person(1),
            },
        )
    });
}

// ---- freeze and overdraft ----

#[test]
fn a_frozen_account_refuses_payment() {
    let mut w = ready();
    let account = w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    assert_eq!(
        expect_done(w.freeze(account)),
        Effect::AccountStatusChanged {
            account,
            status: AccountStatus::Frozen
        }
    );
    w.refused(ReasonCode::AccountFrozen, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    w.refused(ReasonCode::AccountFrozen, |w| {
        w.deposit(KIOSK, "HC0001", yuan(10))
    });
    w.refused(ReasonCode::AccountFrozen, |w| {
        w.withdraw_cash(WINDOW, "HC0001", None)
    });
    w.refused(ReasonCode::AccountFrozen, |w| {
        w.top_up(KIOSK, "HC0001", bank_card(1), yuan(10))
    });
    assert_eq!(
        expect_done(w.unfreeze(account)),
        Effect::AccountStatusChanged {
            account,
            status: AccountStatus::Active
        }
    );
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    assert_eq!(w.balance("HC0001"), yuan(70));
    w.check();
}

#[test]
fn an_unknown_account_is_refused() {
    let mut w = World::standard();
    let nobody = yinyi_ledger::AccountId(4242);
    w.refused(ReasonCode::AccountNotFound, |w| w.freeze(nobody));
    w.refused(ReasonCode::AccountNotFound, |w| w.unfreeze(nobody));
    w.refused(ReasonCode::AccountNotFound, |w| {
        w.set_overdraft(nobody, yuan(100))
    });
}

#[test]
fn accounts_are_administered_only_from_a_window_or_an_admin_console() {
    let mut w = ready();
    let account = w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(KIOSK, CommandBody::Freeze { account })
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            HIS,
            CommandBody::SetOverdraft {
                account,
                limit: yuan(100),
            },
        )
    });
    expect_done(w.run(WINDOW, CommandBody::Freeze { account }));
    assert_eq!(w.state.accounts[&account].status, AccountStatus::Frozen);
    w.check();
}

#[test]
fn a_payment_beyond_the_balance_is_refused() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 50);
    expect_done(w.post_bill("OP-1", "HC0001", cents(5001)));
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    assert_eq!(w.bill("OP-1").status, BillStatus::Unpaid);
}

#[test]
fn overdraft_lets_a_charge_go_below_zero_down_to_the_limit_and_not_further() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 50);
    assert_eq!(
        expect_done(w.set_overdraft(account, yuan(100))),
        Effect::OverdraftSet {
            account,
            limit: yuan(100)
        }
    );
    expect_done(w.post_bill("OP-1", "HC0001", yuan(150)));
    expect_done(w.post_bill("OP-2", "HC0001", cents(1)));
    let (_, balance) = balance_changed(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    assert_eq!(balance, yuan(-100));
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.pay_bill(KIOSK, "OP-2", "HC0001")
    });
    assert_eq!(w.balance("HC0001"), yuan(-100));
    // A deposit pays the debt back first.
    expect_done(w.deposit(KIOSK, "HC0001", yuan(1)));
    expect_done(w.pay_bill(KIOSK, "OP-2", "HC0001"));
    assert_eq!(w.balance("HC0001"), cents(-9_901));
    w.check();
}

#[test]
fn the_overdraft_cannot_be_lowered_below_what_is_in_use() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 0);
    expect_done(w.set_overdraft(account, yuan(200)));
    expect_done(w.post_bill("OP-1", "HC0001", yuan(100)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    w.refused(ReasonCode::OverdraftInUse, |w| {
        w.set_overdraft(account, cents(9_999))
    });
    w.refused(ReasonCode::OverdraftInUse, |w| {
        w.set_overdraft(account, Money::ZERO)
    });
    expect_done(w.set_overdraft(account, yuan(100)));
    assert_eq!(w.state.accounts[&account].overdraft_limit, yuan(100));
    w.check();
}

#[test]
fn an_overdraft_above_the_maximum_is_refused() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 10);
    w.refused(ReasonCode::OverdraftAboveMaximum, |w| {
        w.set_overdraft(account, cents(2_000_001))
    });
    expect_done(w.set_overdraft(account, yuan(20_000)));
    w.check();
}

#[test]
fn a_negative_overdraft_is_an_invalid_amount() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 10);
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.set_overdraft(account, cents(-1))
    });
}

// ---- bills ----

#[test]
fn a_bill_belongs_to_the_account_of_the_card_it_was_posted_with() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 10);
    assert_eq!(
        expect_done(w.post_bill("REG-1", "HC0001", yuan(8))),
        Effect::BillPosted {
            bill: bill_id("REG-1"),
            account
        }
    );
    let b = w.bill("REG-1");
    assert_eq!(
        (b.account, b.amount, b.status),
        (account, yuan(8), BillStatus::Unpaid)
    );
    assert!(b.payment.is_none() && b.pending_op.is_none());
    // It stays the account's when the card is replaced.
    expect_done(w.replace_card("HC0001", "HC0002", 1));
    expect_done(w.pay_bill(KIOSK, "REG-1", "HC0002"));
    assert_eq!(w.balance("HC0002"), yuan(2));
    w.check();
}

#[test]
fn bills_are_posted_and_cancelled_only_by_his() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 10);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            KIOSK,
            CommandBody::PostBill {
                bill: bill_id("OP-1"),
                card: card("HC0001"),
                kind: BillKind::Outpatient,
                amount: yuan(1),
            },
        )
    });
    expect_done(w.post_bill("OP-1", "HC0001", yuan(1)));
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            WINDOW,
            CommandBody::CancelBill {
                bill: bill_id("OP-1"),
            },
        )
    });
}

#[test]
fn a_bill_id_is_posted_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 10);
    w.patient("HC0002", 2, 10);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(5)));
    w.refused(ReasonCode::BillAlreadyExists, |w| {
        w.post_bill("OP-1", "HC0002", yuan(7))
    });
    assert_eq!(w.bill("OP-1").amount, yuan(5));
}

#[test]
fn a_bill_amount_must_be_valid() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 10);
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.post_bill("OP-1", "HC0001", Money::ZERO)
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.post_bill("OP-1", "HC0001", cents(5_000_001))
    });
}

#[test]
fn paying_a_bill_takes_its_amount_from_the_account() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", cents(3_050)));
    let outcome = w.pay_bill(MOBILE, "OP-1", "HC0001");
    let txn = last_txn(&w);
    assert_eq!(
        expect_done(outcome),
        Effect::BalanceChanged {
            account,
            txn,
            amount: cents(3_050),
            balance: cents(6_950),
        }
    );
    let b = w.bill("OP-1");
    assert_eq!(b.status, BillStatus::Paid);
    let payment = b.payment.expect("paid");
    assert_eq!(
        (
            payment.channel,
            payment.txn,
            payment.bank_ref,
            payment.terminal
        ),
        (Channel::Account, txn, None, tid(MOBILE))
    );
    // Paying from the account moves no cash.
    assert_eq!(w.cash_box(KIOSK), yuan(100));
    w.check();
}

#[test]
fn a_bill_is_paid_at_most_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    w.refused(ReasonCode::BillAlreadyPaid, |w| {
        w.pay_bill(KIOSK2, "OP-1", "HC0001")
    });
    w.refused(ReasonCode::BillAlreadyPaid, |w| {
        w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1))
    });
    assert_eq!(w.balance("HC0001"), yuan(70));
}

#[test]
fn a_bill_of_another_account_is_refused() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.patient("HC0002", 2, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    w.refused(ReasonCode::BillAccountMismatch, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0002")
    });
    w.refused(ReasonCode::BillAccountMismatch, |w| {
        w.pay_by_card(KIOSK, "OP-1", "HC0002", bank_card(2))
    });
}

#[test]
fn an_unknown_bill_is_refused() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::BillNotFound, |w| {
        w.pay_bill(KIOSK, "OP-404", "HC0001")
    });
    w.refused(ReasonCode::BillNotFound, |w| w.cancel_bill("OP-404"));
    w.refused(ReasonCode::BillNotFound, |w| w.refund(WINDOW, "OP-404"));
    w.refused(ReasonCode::BillNotFound, |w| {
        w.pay_by_card(KIOSK, "OP-404", "HC0001", bank_card(1))
    });
}

#[test]
fn a_window_needs_an_open_shift_to_take_payments_and_give_refunds() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.pay_bill(WINDOW, "OP-1", "HC0001")
    });
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    expect_done(w.cancel_bill("OP-1"));
    w.refused(ReasonCode::ShiftNotOpen, |w| w.refund(WINDOW, "OP-1"));
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.top_up(WINDOW, "HC0001", bank_card(1), yuan(10))
    });
}

#[test]
fn a_cancelled_unpaid_bill_can_be_neither_paid_nor_refunded() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    assert_eq!(
        expect_done(w.cancel_bill("OP-1")),
        Effect::BillCancelled {
            bill: bill_id("OP-1"),
            refundable: false
        }
    );
    w.refused(ReasonCode::BillCancelled, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    w.refused(ReasonCode::BillNotPaid, |w| w.refund(KIOSK, "OP-1"));
    w.refused(ReasonCode::BillCancelled, |w| w.cancel_bill("OP-1"));
    assert_eq!(w.balance("HC0001"), yuan(100));
}

#[test]
fn an_unpaid_bill_cannot_be_refunded() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    w.refused(ReasonCode::BillNotPaid, |w| w.refund(HIS, "OP-1"));
}

#[test]
fn refund_requires_his_cancellation() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    w.refused(ReasonCode::RefundNotAllowed, |w| w.refund(KIOSK, "OP-1"));
    assert_eq!(w.balance("HC0001"), yuan(70));
}

#[test]
fn a_refund_after_cancellation_returns_the_money_to_the_account() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    assert_eq!(
        expect_done(w.cancel_bill("OP-1")),
        Effect::BillCancelled {
            bill: bill_id("OP-1"),
            refundable: true
        }
    );
    let outcome = w.refund(HIS, "OP-1");
    assert_eq!(
        expect_done(outcome),
        Effect::BalanceChanged {
            account,
            txn: last_txn(&w),
            amount: yuan(30),
            balance: yuan(100),
        }
    );
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    assert_eq!(
        journal_kinds(&w)[1..],
        [
            (EntryKind::BillPayment, Channel::Account),
            (EntryKind::Refund, Channel::Account)
        ]
    );
    w.check();
}

#[test]
fn a_bill_is_refunded_at_most_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    expect_done(w.cancel_bill("OP-1"));
    expect_done(w.refund(KIOSK, "OP-1"));
    w.refused(ReasonCode::AlreadyRefunded, |w| w.refund(KIOSK, "OP-1"));
    w.refused(ReasonCode::AlreadyRefunded, |w| w.cancel_bill("OP-1"));
    w.refused(ReasonCode::BillAlreadyPaid, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    w.refused(ReasonCode::AlreadyRefunded, |w| {
        w.refund_online(KIOSK, "OP-1", "HC0001", bank_card(1))
    });
    assert_eq!(w.balance("HC0001"), yuan(100));
}

#[test]
fn refunds_are_not_given_through_a_mobile_channel() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    expect_done(w.cancel_bill("OP-1"));
    w.refused(ReasonCode::TerminalNotAllowed, |w| w.refund(MOBILE, "OP-1"));
}

// ---- cash withdrawals ----

#[test]
fn a_cash_withdrawal_at_a_window_pays_out_of_the_shifts_cash() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    expect_done(w.deposit(WINDOW, "HC0001", yuan(10)));
    let (amount, balance) = balance_changed(w.withdraw_cash(WINDOW, "HC0001", Some(yuan(40))));
    assert_eq!((amount, balance), (yuan(40), yuan(70)));
    assert_eq!(w.cash_box(WINDOW), yuan(-30));
    assert_eq!(w.cash_box(KIOSK), yuan(100));
    let e = w.state.journal.last().expect("an entry");
    assert_eq!((e.kind, e.channel), (EntryKind::Withdrawal, Channel::Cash));
    assert_eq!(e.operator, Some(operator(CASHIER)));
    w.check();
}

#[test]
fn a_withdrawal_without_an_amount_takes_the_whole_balance() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    let (amount, balance) = balance_changed(w.withdraw_cash(WINDOW, "HC0001", None));
    assert_eq!((amount, balance), (yuan(100), Money::ZERO));
    w.check();
}

#[test]
fn kiosk_cannot_withdraw_cash() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.withdraw_cash(KIOSK, "HC0001", Some(yuan(10)))
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.withdraw_cash(MOBILE, "HC0001", Some(yuan(10)))
    });
}

#[test]
fn a_cash_withdrawal_needs_an_open_shift() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.withdraw_cash(WINDOW, "HC0001", None)
    });
}

#[test]
fn a_withdrawal_never_uses_the_overdraft() {
    let mut w = ready();
    let account = w.patient("HC0001", 1, 50);
    expect_done(w.set_overdraft(account, yuan(100)));
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.withdraw_cash(WINDOW, "HC0001", Some(cents(5_001)))
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.withdraw_cash(WINDOW, "HC0001", Some(Money::ZERO))
    });
    expect_done(w.withdraw_cash(WINDOW, "HC0001", None));
    assert_eq!(w.balance("HC0001"), Money::ZERO);
    w.check();
}

#[test]
fn there_is_nothing_to_withdraw_from_an_empty_or_overdrawn_account() {
    let mut w = ready();
    let account = w.patient("HC0001", 1, 0);
    w.refused(ReasonCode::NothingToWithdraw, |w| {
        w.withdraw_cash(WINDOW, "HC0001", None)
    });
    expect_done(w.set_overdraft(account, yuan(100)));
    expect_done(w.post_bill("OP-1", "HC0001", yuan(10)));
    expect_done(w.pay_bill(WINDOW, "OP-1", "HC0001"));
    w.refused(ReasonCode::NothingToWithdraw, |w| {
        w.withdraw_cash(WINDOW, "HC0001", None)
    });
    w.refused(ReasonCode::NothingToWithdraw, |w| {
        w.withdraw_to(KIOSK, "HC0001", bank_card(1), None)
    });
}

// ---- the bank saga: top-ups ----

#[test]
fn a_bank_card_top_up_credits_the_account_only_after_the_bank_approves() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let outcome = w.top_up(KIOSK, "HC0001", bank_card(1), cents(12_345));
    let bank_ref = yinyi_ledger::BankRef::for_txn(last_txn(&w));
    assert_eq!(
        expect_done(outcome),
        Effect::BankOpStarted {
            bank_ref: bank_ref.clone(),
            kind: BankOpKind::Debit,
            account,
            amount: cents(12_345),
            balance: yuan(100),
        }
    );
    let op = w.bank_op(&bank_ref);
    assert_eq!((op.state, op.steps), (BankOpState::Pending, 0));
    assert_eq!(op.purpose, BankPurpose::TopUp);
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(w.state.journal.len(), 1);
    w.check();

    assert_eq!(
        expect_done(w.complete(&bank_ref)),
        Effect::BankOpSettled {
            bank_ref: bank_ref.clone(),
            state: BankOpState::Completed,
            account,
            balance: cents(22_345),
        }
    );
    let e = w.state.journal.last().expect("an entry");
    assert_eq!((e.kind, e.channel), (EntryKind::TopUp, Channel::BankCard));
    assert_eq!(e.bank_ref.as_ref(), Some(&bank_ref));
    assert_eq!(e.terminal, tid(KIOSK));
    assert_eq!(w.bank_op(&bank_ref).steps, 1);
    assert_eq!(w.bank_op(&bank_ref).bank_note, "00 approved");
    // A card top-up puts no cash in the box.
    assert_eq!(w.cash_box(KIOSK), yuan(100));
    w.check();
}

#[test]
fn a_declined_top_up_leaves_the_account_untouched() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
    assert_eq!(settled(w.decline(&r)), (BankOpState::Declined, yuan(100)));
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(w.state.journal.len(), 1);
    w.check();
}

#[test]
fn an_in_doubt_top_up_is_reversed_without_touching_the_account() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
    assert_eq!(settled(w.in_doubt(&r)), (BankOpState::InDoubt, yuan(100)));
    // A second timeout while reversing keeps it in doubt.
    assert_eq!(settled(w.in_doubt(&r)), (BankOpState::InDoubt, yuan(100)));
    assert_eq!(settled(w.reverse(&r)), (BankOpState::Reversed, yuan(100)));
    assert_eq!(w.bank_op(&r).steps, 3);
    assert_eq!(w.state.journal.len(), 1);
    w.check();
}

#[test]
fn an_in_doubt_top_up_the_bank_confirms_is_credited_once() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.top_up(MOBILE, "HC0001", bank_card(1), yuan(50)));
    expect_done(w.in_doubt(&r));
    assert_eq!(settled(w.complete(&r)), (BankOpState::Completed, yuan(150)));
    w.refused(ReasonCode::BankOpAlreadyFinal, |w| w.complete(&r));
    assert_eq!(w.balance("HC0001"), yuan(150));
}

#[test]
fn a_late_decline_ends_an_in_doubt_operation() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
    expect_done(w.in_doubt(&r));
    assert_eq!(settled(w.decline(&r)), (BankOpState::Declined, yuan(100)));
    w.check();
}

#[test]
fn final_bank_operations_refuse_further_steps() {
    type Step = fn(&mut World, &yinyi_ledger::BankRef) -> Outcome;
    let steps: [Step; 4] = [
        World::complete,
        World::decline,
        World::in_doubt,
        World::reverse,
    ];
    let finals: [(Step, BankOpState); 3] = [
        (World::complete, BankOpState::Completed),
        (World::decline, BankOpState::Declined),
        (World::reverse, BankOpState::Reversed),
    ];
    for (finish, state) in finals {
        let mut w = World::standard();
        w.patient("HC0001", 1, 100);
        let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
        expect_done(w.in_doubt(&r));
        expect_done(finish(&mut w, &r));
        assert_eq!(w.bank_op(&r).state, state);
        assert!(state.is_final());
        let balance = w.balance("HC0001");
        for step in steps {
            w.refused(ReasonCode::BankOpAlreadyFinal, |w| step(w, &r));
        }
        assert_eq!(w.balance("HC0001"), balance);
        assert_eq!(w.bank_op(&r).state, state);
    }
}

#[test]
fn an_unknown_bank_reference_is_refused() {
    let mut w = World::standard();
    let r = unknown_bank_ref();
    w.refused(ReasonCode::BankOpNotFound, |w| w.complete(&r));
    w.refused(ReasonCode::BankOpNotFound, |w| w.reverse(&r));
}

#[test]
fn saga_steps_come_only_from_the_cluster() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
    let body = CommandBody::CompleteBankOp {
        bank_ref: r.clone(),
        bank_note: "forged".to_string(),
    };
    // Not even an admin console: only the bank's own answer settles an operation (a person
    // corrects money with an adjustment, never by completing a top-up the bank did not approve).
    for t in [KIOSK, WINDOW, MOBILE, HIS, ADMIN] {
        w.refused(ReasonCode::TerminalNotAllowed, |w| w.run(t, body.clone()));
    }
    expect_done(w.run(SAGA, body));
    assert_eq!(w.balance("HC0001"), yuan(150));
    w.check();
}

#[test]
fn third_party_payments_start_only_from_a_mobile_channel() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    for t in [KIOSK, WINDOW] {
        w.refused(ReasonCode::TerminalNotAllowed, |w| {
            w.top_up(t, "HC0001", third_party(1), yuan(10))
        });
    }
    let r = started_ref(w.top_up(MOBILE, "HC0001", third_party(1), yuan(10)));
    expect_done(w.complete(&r));
    let e = w.state.journal.last().expect("an entry");
    assert_eq!((e.kind, e.channel), (EntryKind::TopUp, Channel::ThirdParty));
    assert_eq!(w.balance("HC0001"), yuan(110));
    // HIS starts no top-ups at all.
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.top_up(HIS, "HC0001", bank_card(1), yuan(10))
    });
    w.check();
}

#[test]
fn a_top_up_needs_a_valid_amount_but_not_whole_yuan() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.start_bank_op(KIOSK, "HC0001", bank_card(1), BankPurpose::TopUp, None)
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.top_up(KIOSK, "HC0001", bank_card(1), Money::ZERO)
    });
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.top_up(KIOSK, "HC0001", bank_card(1), cents(5_000_001))
    });
    // A card is not a note acceptor: fen are fine at a kiosk.
    let r = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), cents(1_234)));
    expect_done(w.complete(&r));
    assert_eq!(w.balance("HC0001"), cents(11_234));
    w.check();
}

// ---- the bank saga: bills ----

#[test]
fn bill_payment_by_bank_card_leaves_the_account_untouched() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 0);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(300)));
    let outcome = w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1));
    let r = yinyi_ledger::BankRef::for_txn(last_txn(&w));
    assert_eq!(
        expect_done(outcome),
        Effect::BankOpStarted {
            bank_ref: r.clone(),
            kind: BankOpKind::Debit,
            account,
            amount: yuan(300),
            balance: Money::ZERO,
        }
    );
    assert_eq!(w.bill("OP-1").pending_op.as_ref(), Some(&r));
    assert_eq!(w.bill("OP-1").status, BillStatus::Unpaid);
    let complete = w.complete(&r);
    let txn = last_txn(&w);
    assert_eq!(settled(complete), (BankOpState::Completed, Money::ZERO));
    let b = w.bill("OP-1");
    assert_eq!(b.status, BillStatus::Paid);
    assert!(b.pending_op.is_none());
    let payment = b.payment.expect("paid");
    assert_eq!(
        (
            payment.channel,
            payment.txn,
            payment.bank_ref,
            payment.terminal
        ),
        (Channel::BankCard, txn, Some(r), tid(KIOSK))
    );
    assert_eq!(w.balance("HC0001"), Money::ZERO);
    assert_eq!(
        journal_kinds(&w),
        vec![(EntryKind::ExternalBillPayment, Channel::BankCard)]
    );
    w.check();
}

#[test]
fn a_bill_with_a_bank_operation_in_flight_can_be_neither_paid_again_nor_cancelled() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    let r = started_ref(w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1)));
    for in_doubt in [false, true] {
        if in_doubt {
            expect_done(w.in_doubt(&r));
        }
        w.refused(ReasonCode::BillOperationInProgress, |w| {
            w.pay_bill(KIOSK, "OP-1", "HC0001")
        });
        w.refused(ReasonCode::BillOperationInProgress, |w| {
            w.pay_by_card(MOBILE, "OP-1", "HC0001", third_party(1))
        });
        w.refused(ReasonCode::BillOperationInProgress, |w| {
            w.cancel_bill("OP-1")
        });
    }
    // Reversed: the bill is free again.
    expect_done(w.reverse(&r));
    assert!(w.bill("OP-1").pending_op.is_none());
    assert_eq!(w.bill("OP-1").status, BillStatus::Unpaid);
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    assert_eq!(w.balance("HC0001"), yuan(70));
    w.check();
}

#[test]
fn a_declined_card_payment_leaves_the_bill_unpaid() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    let r = started_ref(w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1)));
    expect_done(w.decline(&r));
    let b = w.bill("OP-1");
    assert_eq!(
        (b.status, b.pending_op, b.payment),
        (BillStatus::Unpaid, None, None)
    );
    assert!(w.state.journal.iter().all(|e| e.bill.is_none()));
    expect_done(w.cancel_bill("OP-1"));
    w.check();
}

#[test]
fn a_bill_payment_takes_its_amount_from_the_bill() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    w.refused(ReasonCode::InvalidAmount, |w| {
        w.start_bank_op(
            KIOSK,
            "HC0001",
            bank_card(1),
            BankPurpose::PayBill {
                bill: bill_id("OP-1"),
            },
            Some(yuan(1)),
        )
    });
}

/// Pays OP-1 (30 yuan) for HC0001 with `external` from MOBILE, completes it and has HIS
/// cancel it.
fn paid_online_and_cancelled(external: yinyi_ledger::External) -> World {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    let r = started_ref(w.pay_by_card(MOBILE, "OP-1", "HC0001", external));
    expect_done(w.complete(&r));
    expect_done(w.cancel_bill("OP-1"));
    w
}

#[test]
fn online_refund_goes_only_to_the_card_that_paid() {
    let mut w = paid_online_and_cancelled(bank_card(1));
    for other in [bank_card(2), third_party(1)] {
        w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
            w.refund_online(KIOSK, "OP-1", "HC0001", other)
        });
    }
    let outcome = w.refund_online(KIOSK, "OP-1", "HC0001", bank_card(1));
    let r = yinyi_ledger::BankRef::for_txn(last_txn(&w));
    match expect_done(outcome) {
        Effect::BankOpStarted {
            kind,
            amount,
            balance,
            ..
        } => assert_eq!(
            (kind, amount, balance),
            (BankOpKind::Credit, yuan(30), yuan(100))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.bill("OP-1").pending_op.as_ref(), Some(&r));
    // While the online refund is in flight, no refund to the account either.
    w.refused(ReasonCode::BillOperationInProgress, |w| {
        w.refund(KIOSK, "OP-1")
    });
    expect_done(w.complete(&r));
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(
        journal_kinds(&w)[1..],
        [
            (EntryKind::ExternalBillPayment, Channel::BankCard),
            (EntryKind::ExternalRefund, Channel::BankCard)
        ]
    );
    w.refused(ReasonCode::AlreadyRefunded, |w| w.refund(KIOSK, "OP-1"));
    w.check();
}

#[test]
fn online_refund_goes_back_to_the_third_party_payer_that_paid() {
    let mut w = paid_online_and_cancelled(third_party(1));
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        w.refund_online(HIS, "OP-1", "HC0001", third_party(2))
    });
    let r = started_ref(w.refund_online(HIS, "OP-1", "HC0001", third_party(1)));
    expect_done(w.complete(&r));
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    w.check();
}

#[test]
fn a_bill_paid_from_the_account_cannot_be_refunded_online() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    expect_done(w.cancel_bill("OP-1"));
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        w.refund_online(KIOSK, "OP-1", "HC0001", bank_card(1))
    });
    expect_done(w.refund(KIOSK, "OP-1"));
    w.check();
}

#[test]
fn an_online_refund_needs_his_cancellation_first() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    let r = started_ref(w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1)));
    expect_done(w.complete(&r));
    w.refused(ReasonCode::RefundNotAllowed, |w| {
        w.refund_online(KIOSK, "OP-1", "HC0001", bank_card(1))
    });
    let part = |w: &mut World, amount| {
        w.start_bank_op(
            KIOSK,
            "HC0001",
            bank_card(1),
            BankPurpose::Refund {
                bill: bill_id("OP-1"),
            },
            Some(amount),
        )
    };
    w.refused(ReasonCode::RefundNotAllowed, |w| part(w, yuan(30)));
    // Once cancelled, no more than was paid.
    expect_done(w.cancel_bill("OP-1"));
    w.refused(ReasonCode::InvalidAmount, |w| part(w, yuan(31)));
    w.check();
}

#[test]
fn a_declined_online_refund_leaves_the_bill_refundable_to_the_account() {
    let mut w = paid_online_and_cancelled(bank_card(1));
    let r = started_ref(w.refund_online(WINDOW_OR_KIOSK, "OP-1", "HC0001", bank_card(1)));
    expect_done(w.decline(&r));
    let b = w.bill("OP-1");
    assert_eq!((b.status, b.pending_op), (BillStatus::Cancelled, None));
    // Not by a plain refund (issue 15, path 3): only naming the declined online refund.
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        w.refund(KIOSK, "OP-1")
    });
    let fallback = |declined: yinyi_ledger::BankRef| CommandBody::RefundToAccount {
        bill: bill_id("OP-1"),
        declined,
    };
    // The payment's own reference is not a declined refund.
    let payment_ref = w
        .bill("OP-1")
        .payment
        .expect("paid")
        .bank_ref
        .expect("by card");
    w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
        w.run(KIOSK, fallback(payment_ref.clone()))
    });
    let (amount, balance) = balance_changed(w.run(KIOSK, fallback(r.clone())));
    assert_eq!((amount, balance), (yuan(30), yuan(130)));
    // At most once.
    w.refused(ReasonCode::AlreadyRefunded, |w| w.run(KIOSK, fallback(r)));
    w.check();
}

/// A kiosk: an online refund may be started there without a shift.
const WINDOW_OR_KIOSK: &str = KIOSK2;

// ---- the bank saga: withdrawals to a card ----

#[test]
fn withdrawal_to_a_card_takes_the_money_first_and_gives_it_back_on_decline() {
    let mut w = World::standard();
    let account = w.patient("HC0001", 1, 100);
    let outcome = w.withdraw_to(KIOSK, "HC0001", bank_card(1), Some(yuan(60)));
    let r = yinyi_ledger::BankRef::for_txn(last_txn(&w));
    assert_eq!(
        expect_done(outcome),
        Effect::BankOpStarted {
            bank_ref: r.clone(),
            kind: BankOpKind::Credit,
            account,
            amount: yuan(60),
            balance: yuan(40),
        }
    );
    assert_eq!(w.balance("HC0001"), yuan(40));
    w.check();
    // The money on its way to the card is not available meanwhile.
    expect_done(w.post_bill("OP-1", "HC0001", yuan(50)));
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.pay_bill(KIOSK, "OP-1", "HC0001")
    });
    assert_eq!(settled(w.decline(&r)), (BankOpState::Declined, yuan(100)));
    assert_eq!(
        journal_kinds(&w)[1..],
        [
            (EntryKind::Withdrawal, Channel::BankCard),
            (EntryKind::WithdrawalReturned, Channel::BankCard)
        ]
    );
    expect_done(w.pay_bill(KIOSK, "OP-1", "HC0001"));
    w.check();
}

#[test]
fn withdrawal_to_a_card_gives_the_money_back_on_reversal() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.withdraw_to(KIOSK, "HC0001", bank_card(1), None));
    assert_eq!(w.balance("HC0001"), Money::ZERO);
    assert_eq!(settled(w.in_doubt(&r)), (BankOpState::InDoubt, Money::ZERO));
    assert_eq!(settled(w.reverse(&r)), (BankOpState::Reversed, yuan(100)));
    w.check();
}

#[test]
fn a_completed_withdrawal_to_a_card_keeps_the_money_out() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    let r = started_ref(w.withdraw_to(WINDOW, "HC0001", bank_card(1), Some(yuan(25))));
    assert_eq!(settled(w.complete(&r)), (BankOpState::Completed, yuan(75)));
    assert_eq!(w.state.journal.len(), 2);
    // Not cash: the window's box is untouched.
    assert_eq!(w.cash_box(WINDOW), Money::ZERO);
    w.check();
}

#[test]
fn a_withdrawal_to_a_card_is_checked_like_a_cash_withdrawal() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::InsufficientFunds, |w| {
        w.withdraw_to(KIOSK, "HC0001", bank_card(1), Some(cents(10_001)))
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.withdraw_to(MOBILE, "HC0001", third_party(1), Some(yuan(1)))
    });
    w.refused(ReasonCode::ShiftNotOpen, |w| {
        w.withdraw_to(WINDOW, "HC0001", bank_card(1), Some(yuan(1)))
    });
}

// ---- shifts ----

#[test]
fn opening_a_shift_needs_an_operator() {
    let mut w = World::standard();
    w.refused(ReasonCode::OperatorRequired, |w| {
        w.run_as(WINDOW, None, CommandBody::OpenShift)
    });
    assert_eq!(
        expect_done(w.open_shift(WINDOW)),
        Effect::ShiftOpened {
            terminal: tid(WINDOW),
            seq: 1
        }
    );
    let shift = w.state.terminals[&tid(WINDOW)].shift.clone().expect("open");
    assert_eq!(shift.operator, operator(CASHIER));
    w.check();
}

#[test]
fn a_window_has_one_open_shift_at_a_time() {
    let mut w = ready();
    w.refused(ReasonCode::ShiftAlreadyOpen, |w| w.open_shift(WINDOW));
}

#[test]
fn a_shift_that_is_not_open_cannot_be_closed() {
    let mut w = World::standard();
    w.refused(ReasonCode::ShiftNotOpen, |w| w.close_shift(WINDOW));
}

#[test]
fn shifts_are_kept_only_at_windows() {
    let mut w = World::standard();
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run_as(KIOSK, Some(CASHIER), CommandBody::OpenShift)
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run_as(MOBILE, Some(CASHIER), CommandBody::CloseShift)
    });
}

#[test]
fn the_shift_report_counts_every_movement_and_the_cash_to_hand_over() {
    let mut w = ready();
    expect_done(w.issue(WINDOW, "HC0001", 1, Some(yuan(100))));
    expect_done(w.deposit(WINDOW, "HC0001", cents(5_050)));
    expect_done(w.deposit(KIOSK, "HC0001", yuan(20))); // another terminal: not in the shift
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    expect_done(w.pay_bill(WINDOW, "OP-1", "HC0001"));
    expect_done(w.withdraw_cash(WINDOW, "HC0001", Some(yuan(20))));
    let r = started_ref(w.top_up(WINDOW, "HC0001", bank_card(1), yuan(200)));
    expect_done(w.complete(&r));
    w.check();

    let report = match expect_done(w.close_shift(WINDOW)) {
        Effect::ShiftClosed(report) => report,
        other => panic!("{other:?}"),
    };
    let line = |kind, channel, count, total| ReportLine {
        kind,
        channel,
        count,
        total,
    };
    assert_eq!(
        report.lines,
        vec![
            line(EntryKind::CashDeposit, Channel::Cash, 2, cents(15_050)),
            line(EntryKind::TopUp, Channel::BankCard, 1, yuan(200)),
            line(EntryKind::BillPayment, Channel::Account, 1, yuan(30)),
            line(EntryKind::Withdrawal, Channel::Cash, 1, yuan(20)),
        ]
    );
    assert_eq!(report.cash_expected, cents(13_050));
    assert_eq!(
        (report.seq, report.operator.clone()),
        (1, operator(CASHIER))
    );
    assert_eq!(report.terminal, tid(WINDOW));
    assert_eq!(
        w.state.reports.get("shift/W-03/0000000001"),
        Some(&Report::Shift(report))
    );
    let t = &w.state.terminals[&tid(WINDOW)];
    assert!(t.shift.is_none());
    assert_eq!(t.cash_box, Money::ZERO);
    assert_eq!(w.cash_box(KIOSK), yuan(20));
    w.check();

    // The next shift starts empty and counts on.
    assert_eq!(
        expect_done(w.open_shift(WINDOW)),
        Effect::ShiftOpened {
            terminal: tid(WINDOW),
            seq: 2
        }
    );
    expect_done(w.deposit(WINDOW, "HC0001", yuan(1)));
    match expect_done(w.close_shift(WINDOW)) {
        Effect::ShiftClosed(report) => {
            assert_eq!(report.seq, 2);
            assert_eq!(
                report.lines,
                vec![line(EntryKind::CashDeposit, Channel::Cash, 1, yuan(1))]
            );
            assert_eq!(report.cash_expected, yuan(1));
        }
        other => panic!("{other:?}"),
    }
    w.check();
}

#[test]
fn a_shift_can_be_closed_at_a_window_taken_out_of_service() {
    let mut w = ready();
    w.patient("HC0001", 1, 10);
    expect_done(w.deposit(WINDOW, "HC0001", yuan(5)));
    expect_done(w.set_terminal_status(WINDOW, TerminalStatus::OutOfService));
    w.refused(ReasonCode::TerminalOutOfService, |w| {
        w.deposit(WINDOW, "HC0001", yuan(5))
    });
    match expect_done(w.close_shift(WINDOW)) {
        Effect::ShiftClosed(report) => assert_eq!(report.cash_expected, yuan(5)),
        other => panic!("{other:?}"),
    }
    w.refused(ReasonCode::TerminalOutOfService, |w| w.open_shift(WINDOW));
    w.check();
}

// ---- cash collection ----

#[test]
fn cash_collection_records_what_staff_counted_and_the_difference() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    expect_done(w.deposit(KIOSK, "HC0001", yuan(50)));
    let report = match expect_done(w.collect(KIOSK, yuan(140))) {
        Effect::CashCollected(report) => report,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            report.seq,
            report.expected,
            report.counted,
            report.difference
        ),
        (1, yuan(150), yuan(140), yuan(-10))
    );
    assert_eq!(report.operator, operator(COLLECTOR));
    assert_eq!(w.cash_box(KIOSK), Money::ZERO);
    assert_eq!(
        w.state.reports.get("collection/K-0101/0000000001"),
        Some(&Report::Collection(report))
    );
    w.check();
    // Over (长款) the next time.
    expect_done(w.deposit(KIOSK, "HC0001", yuan(20)));
    match expect_done(w.collect(KIOSK, yuan(25))) {
        Effect::CashCollected(r) => {
            assert_eq!((r.seq, r.expected, r.difference), (2, yuan(20), yuan(5)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.balance("HC0001"), yuan(170));
    w.check();
}

#[test]
fn collecting_cash_needs_an_operator_and_a_count_that_is_not_negative() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    w.refused(ReasonCode::OperatorRequired, |w| {
        w.run_as(KIOSK, None, CommandBody::CollectCash { counted: yuan(100) })
    });
    w.refused(ReasonCode::InvalidAmount, |w| w.collect(KIOSK, cents(-1)));
    assert_eq!(w.cash_box(KIOSK), yuan(100));
}

#[test]
fn cash_is_collected_from_a_kiosk_out_of_service_but_only_from_kiosks() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    expect_done(w.set_terminal_status(KIOSK, TerminalStatus::OutOfService));
    expect_done(w.collect(KIOSK, yuan(100)));
    assert_eq!(w.cash_box(KIOSK), Money::ZERO);
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.collect(WINDOW, Money::ZERO)
    });
    w.check();
}

// ---- request ids ----

#[test]
fn same_request_id_returns_the_stored_outcome() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let cmd = w.command(
        KIOSK,
        None,
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(50),
        },
    );
    let first = w.submit(&cmd);
    assert!(first.is_done());
    let state = w.state.clone();
    // Sent again, even stamped later by another leader: the first outcome, nothing written.
    let mut again = cmd.clone();
    again.at = w.tick();
    assert_eq!(w.submit(&cmd), first);
    assert_eq!(w.submit(&again), first);
    assert_eq!(w.state, state);
    assert_eq!(w.balance("HC0001"), yuan(150));
    w.check();
}

#[test]
fn same_request_id_with_other_payload_is_rejected() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let cmd = w.command(
        KIOSK,
        None,
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(50),
        },
    );
    let first = w.submit(&cmd);
    let state = w.state.clone();
    let mut other_body = cmd.clone();
    other_body.body = CommandBody::DepositCash {
        card: card("HC0001"),
        amount: yuan(51),
    };
    let mut other_operator = cmd.clone();
    other_operator.operator = Some(operator("SOMEONE"));
    for reused in [other_body, other_operator] {
        expect_code(&w.submit(&reused), ReasonCode::RequestIdReused);
        // Not even a record: the id still answers with its first outcome.
        assert_eq!(w.state, state);
    }
    assert_eq!(w.submit(&cmd), first);
    w.check();
}

#[test]
fn a_rejected_request_is_answered_with_the_same_rejection_when_retried() {
    let mut w = World::standard();
    let cmd = w.command(
        KIOSK,
        None,
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(50),
        },
    );
    let first = w.submit(&cmd);
    expect_code(&first, ReasonCode::CardNotFound);
    w.patient("HC0001", 1, 100);
    // The card exists now, but the request was answered: a retry gets the same answer.
    assert_eq!(w.submit(&cmd), first);
    assert_eq!(w.balance("HC0001"), yuan(100));
    // A new request id is a new request.
    expect_done(w.deposit(KIOSK, "HC0001", yuan(50)));
    w.check();
}

#[test]
fn rejected_command_writes_nothing_but_its_request_record() {
    // A refusal found late, after the card number, the person and the account were checked
    // (the account turns out frozen): no card, no cash, no journal entry, only the record.
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    expect_done(w.freeze(w.account_of("HC0001")));
    let before = w.state.clone();
    let outcome = w.issue(WINDOW, "HC0002", 1, Some(yuan(50)));
    expect_code(&outcome, ReasonCode::AccountFrozen);
    assert_eq!(without_requests(&w.state), without_requests(&before));
    let new: Vec<_> = w
        .state
        .requests
        .keys()
        .filter(|k| !before.requests.contains_key(*k))
        .collect();
    assert_eq!(new.len(), 1);
    let record = &w.state.requests[new[0]];
    assert_eq!(record.outcome, outcome);
    assert_eq!(record.terminal, tid(WINDOW));
    assert_eq!(record.operator, Some(operator(CASHIER)));
    assert!(!w.state.cards.contains_key(&card("HC0002")));
    w.check();
}

#[test]
fn account_ids_are_the_transaction_ids_of_the_issuing_commands() {
    let mut w = World::standard();
    let a = w.patient("HC0001", 1, 10);
    assert_eq!(a.0, last_txn(&w).0);
    let b = w.patient("HC0002", 2, 10);
    assert_eq!(b.0, last_txn(&w).0);
    assert!(a < b);
}

// ---- coverage of the whole command set and of every reason code ----

/// One walk through every transaction and every refusal, recording what it saw.
fn tour() -> (BTreeSet<&'static str>, BTreeSet<ReasonCode>) {
    let mut w = World::new();
    let mut done = BTreeSet::new();
    let mut codes = BTreeSet::new();
    let mut go = |w: &mut World, f: &dyn Fn(&mut World) -> Outcome| {
        let outcome = f(w);
        let name = w.log.last().expect("applied").cmd.body.name();
        match &outcome {
            Outcome::Done(_) => {
                done.insert(name);
            }
            Outcome::Rejected(r) => {
                codes.insert(r.code);
            }
        }
        w.check();
        outcome
    };
    for t in [KIOSK, KIOSK2, WINDOW, MOBILE, HIS] {
        go(&mut w, &|w| w.register(t));
    }
    go(&mut w, &|w| w.register(KIOSK)); // TerminalAlreadyRegistered
    go(&mut w, &|w| w.deposit("K-0999", "HC0001", yuan(1))); // TerminalNotRegistered
    go(&mut w, &|w| w.issue(MOBILE, "HC0001", 1, None)); // TerminalNotAllowed
    go(&mut w, &|w| w.issue(WINDOW, "HC0001", 1, Some(yuan(10)))); // ShiftNotOpen
    go(&mut w, &|w| w.run_as(WINDOW, None, CommandBody::OpenShift)); // OperatorRequired
    go(&mut w, &|w| w.open_shift(WINDOW));
    go(&mut w, &|w| w.open_shift(WINDOW)); // ShiftAlreadyOpen
    go(&mut w, &|w| w.issue(KIOSK, "HC0001", 1, Some(yuan(5)))); // BelowMinimumDeposit
    go(&mut w, &|w| w.issue(KIOSK, "HC0001", 1, Some(cents(1_050)))); // InvalidDenomination
    go(&mut w, &|w| {
        w.run(
            KIOSK,
            CommandBody::IssueCard {
                card: card("HC0099"),
                card_kind: CardKind::Hospital,
                holder: yinyi_ledger::Holder {
                    id_masked: "110101199003074512".into(),
                    ..holder(99)
                },
                first_deposit: None,
            },
        )
    }); // InvalidHolder
    go(&mut w, &|w| w.issue(KIOSK, "HC0001", 1, Some(yuan(100))));
    go(&mut w, &|w| w.issue(KIOSK, "HC0001", 2, None)); // CardAlreadyExists
    go(&mut w, &|w| w.issue(WINDOW, "HC0002", 2, Some(yuan(100))));
    go(&mut w, &|w| w.deposit(KIOSK, "HC0001", Money::ZERO)); // InvalidAmount
    go(&mut w, &|w| w.deposit(KIOSK, "HC0404", yuan(1))); // CardNotFound
    go(&mut w, &|w| w.deposit(KIOSK, "HC0001", yuan(10)));
    let a1 = w.account_of("HC0001");
    go(&mut w, &|w| w.freeze(yinyi_ledger::AccountId(4242))); // AccountNotFound
    go(&mut w, &|w| w.freeze(a1));
    go(&mut w, &|w| w.deposit(KIOSK, "HC0001", yuan(10))); // AccountFrozen
    go(&mut w, &|w| w.unfreeze(a1));
    go(&mut w, &|w| w.set_overdraft(a1, yuan(20_001))); // OverdraftAboveMaximum
    go(&mut w, &|w| w.set_overdraft(a1, yuan(100)));
    go(&mut w, &|w| w.post_bill("OP-1", "HC0001", yuan(150)));
    go(&mut w, &|w| w.post_bill("OP-1", "HC0001", yuan(1))); // BillAlreadyExists
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-404", "HC0001")); // BillNotFound
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-1", "HC0002")); // BillAccountMismatch
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-1", "HC0001"));
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-1", "HC0001")); // BillAlreadyPaid
    go(&mut w, &|w| w.set_overdraft(a1, Money::ZERO)); // OverdraftInUse
    go(&mut w, &|w| w.withdraw_cash(WINDOW, "HC0001", None)); // NothingToWithdraw
    go(&mut w, &|w| w.post_bill("OP-2", "HC0001", yuan(100)));
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-2", "HC0001")); // InsufficientFunds
    go(&mut w, &|w| w.refund(KIOSK, "OP-2")); // BillNotPaid
    go(&mut w, &|w| w.refund(KIOSK, "OP-1")); // RefundNotAllowed
    go(&mut w, &|w| w.cancel_bill("OP-2"));
    go(&mut w, &|w| w.pay_bill(KIOSK, "OP-2", "HC0001")); // BillCancelled
    go(&mut w, &|w| w.cancel_bill("OP-1"));
    go(&mut w, &|w| {
        w.refund_online(KIOSK, "OP-1", "HC0001", bank_card(1))
    }); // RefundChannelNotAllowed
    go(&mut w, &|w| w.refund(WINDOW, "OP-1"));
    go(&mut w, &|w| w.refund(WINDOW, "OP-1")); // AlreadyRefunded
    go(&mut w, &|w| w.post_bill("OP-3", "HC0002", yuan(40)));
    let pay = go(&mut w, &|w| {
        w.pay_by_card(KIOSK, "OP-3", "HC0002", bank_card(2))
    });
    let pay = started_ref(pay);
    go(&mut w, &|w| w.cancel_bill("OP-3")); // BillOperationInProgress
    go(&mut w, &|w| w.in_doubt(&pay));
    go(&mut w, &|w| w.complete(&pay));
    go(&mut w, &|w| w.reverse(&pay)); // BankOpAlreadyFinal
    go(&mut w, &|w| w.complete(&unknown_bank_ref())); // BankOpNotFound
    go(&mut w, &|w| w.cancel_bill("OP-3"));
    let refund = go(&mut w, &|w| {
        w.refund_online(KIOSK, "OP-3", "HC0002", bank_card(2))
    });
    go(&mut w, &|w| w.decline(&started_ref(refund.clone())));
    let top_up = go(&mut w, &|w| {
        w.top_up(MOBILE, "HC0002", third_party(1), yuan(10))
    });
    go(&mut w, &|w| w.reverse(&started_ref(top_up.clone())));
    go(&mut w, &|w| {
        w.withdraw_cash(WINDOW, "HC0002", Some(yuan(10)))
    });
    go(&mut w, &|w| w.report_loss("HC0002", 1)); // IdentityMismatch
    go(&mut w, &|w| w.cancel_loss("HC0002", 2)); // CardNotLost
    go(&mut w, &|w| w.report_loss("HC0002", 2));
    go(&mut w, &|w| w.deposit(KIOSK, "HC0002", yuan(1))); // CardLost
    go(&mut w, &|w| w.cancel_loss("HC0002", 2));
    go(&mut w, &|w| w.replace_card("HC0002", "HC0003", 2));
    go(&mut w, &|w| w.deposit(KIOSK, "HC0002", yuan(1))); // CardReplaced
    go(&mut w, &|w| {
        w.set_terminal_status(KIOSK2, TerminalStatus::OutOfService)
    });
    go(&mut w, &|w| w.deposit(KIOSK2, "HC0003", yuan(1))); // TerminalOutOfService
    go(&mut w, &|w| w.collect(KIOSK, yuan(100)));
    go(&mut w, &|w| w.close_shift(WINDOW));
    go(&mut w, &|w| w.close_shift(WINDOW)); // ShiftNotOpen
    go(&mut w, &|w| {
        w.run(
            SAGA,
            CommandBody::RecordReconciliation {
                report: empty_reconciliation("2026-11-24"),
            },
        )
    });
    let put = |id: &str, sha: &str| CommandBody::PutCredential {
        id: id.into(),
        roles: vec![yinyi_ledger::Role::Kiosk],
        terminal: None,
        secret_sha256: sha.into(),
    };
    let sha = "a".repeat(64);
    go(&mut w, &|w| w.run(ADMIN, put("K-0101", &sha)));
    go(&mut w, &|w| w.run(ADMIN, put("K-0101", &sha))); // CredentialExists
    go(&mut w, &|w| w.run(ADMIN, put("bad id", &sha))); // InvalidCredential
    go(&mut w, &|w| w.run(KIOSK, put("K-0102", &sha))); // TerminalNotAllowed
    go(&mut w, &|w| {
        w.run(
            ADMIN,
            CommandBody::RevokeCredential {
                id: "K-0101".into(),
            },
        )
    });
    go(&mut w, &|w| {
        w.run(
            ADMIN,
            CommandBody::RevokeCredential {
                id: "nobody".into(),
            },
        )
    }); // CredentialNotFound
    go(&mut w, &|w| {
        w.run(
            SAGA,
            CommandBody::RecordMembership {
                change: "AddLearner 4".into(),
            },
        )
    });
    assert!(w.state.credentials["K-0101"].is_revoked());
    // 调账 refusals (tests/adjustments.rs has them one by one).
    let account = w.account_of("HC0001");
    let stranger = unknown_bank_ref();
    let adjust = |amount: Money, reason: &str, date: &str| CommandBody::Adjust {
        account,
        direction: yinyi_ledger::AdjustDirection::Credit,
        amount,
        reason: reason.into(),
        reference: "T-1".into(),
        difference: Some(yinyi_ledger::DifferenceRef {
            date: date.into(),
            bank_ref: stranger.clone(),
        }),
    };
    let mut report = empty_reconciliation("2025-10-09");
    report.differences.push(yinyi_ledger::ReconDifference {
        bank_ref: stranger.clone(),
        kind: yinyi_ledger::DifferenceKind::BankOnly,
        bank_amount: Some(yuan(5)),
        journal_amount: None,
        journal_state: None,
        resolution: "to reverse: declined here".into(),
    });
    go(&mut w, &|w| {
        w.run(
            ADMIN,
            CommandBody::RecordReconciliation {
                report: report.clone(),
            },
        )
    });
    let finance = |w: &mut World, body| w.run_as(ADMIN, Some(FINANCE), body);
    go(&mut w, &|w| finance(w, adjust(yuan(5), "", "2025-10-09"))); // InvalidAdjustment
    go(&mut w, &|w| finance(w, adjust(yuan(5), "r", "2025-10-10"))); // DifferenceNotFound
    go(&mut w, &|w| finance(w, adjust(yuan(5), "r", "2025-10-09"))); // DifferenceAlreadyResolved
    report.differences[0].resolution = "open: never started".into();
    go(&mut w, &|w| {
        w.run(
            ADMIN,
            CommandBody::RecordReconciliation {
                report: report.clone(),
            },
        )
    });
    go(&mut w, &|w| finance(w, adjust(yuan(4), "r", "2025-10-09"))); // AdjustmentMismatch
    // Inpatients: admitted once, a card deposit in flight holds the discharge, a shortfall.
    w.patient("HCEP01", 77, 500);
    if w.state.terminals[&tid(WINDOW)].shift.is_none() {
        expect_done(w.open_shift(WINDOW));
    }
    go(&mut w, &|w| w.admit("EP-1", "HCEP01", "W1"));
    go(&mut w, &|w| w.admit("EP-1", "HCEP01", "W1")); // EpisodeExists
    go(&mut w, &|w| w.charge("EP-9", yuan(1))); // EpisodeNotFound
    let pending = started_ref(w.episode_by_card(KIOSK, "EP-1", "HCEP01", bank_card(9), yuan(100)));
    go(&mut w, &|w| w.finalize("EP-1", yuan(500)));
    go(&mut w, &|w| {
        w.settle(WINDOW, "EP-1", yinyi_ledger::RefundTo::Account, false)
    }); // EpisodeOperationInProgress
    expect_done(w.decline(&pending));
    go(&mut w, &|w| {
        w.settle(WINDOW, "EP-1", yinyi_ledger::RefundTo::Account, false)
    }); // EpisodeShortfall
    go(&mut w, &|w| w.charge("EP-1", yuan(1))); // EpisodeNotOpen
    // Insured bills: one bill per settlement, cancelled whole only.
    let insured = |bill: &str, settlement: &str| CommandBody::PostInsuredBill {
        bill: bill_id(bill),
        card: card("HCEP01"),
        kind: yinyi_ledger::BillKind::Outpatient,
        split: yinyi_ledger::InsuranceSplit {
            settlement: yinyi_ledger::InsuranceSettlementId::parse(settlement).unwrap(),
            pooled: yuan(80),
            personal_account: yuan(12),
            self_pay: yuan(6),
            reductions: yuan(2),
        },
    };
    go(&mut w, &|w| w.run(HIS, insured("YB-B1", "YB-S1")));
    go(&mut w, &|w| w.run(HIS, insured("YB-B2", "YB-S1"))); // InsuranceSettlementExists
    go(&mut w, &|w| {
        w.run(
            HIS,
            CommandBody::CancelBillPart {
                bill: bill_id("YB-B1"),
                amount: yuan(1),
            },
        )
    }); // InsuredBillWholeOnly
    // 预授权 on the mobile channel: captured only while held and only within the hold.
    let hold = |amount: i64| CommandBody::AuthorizePayment {
        card: card("HCEP01"),
        external: third_party(7),
        amount: yuan(amount),
    };
    let capture = |authorization: &yinyi_ledger::BankRef| CommandBody::CapturePayment {
        card: card("HCEP01"),
        authorization: authorization.clone(),
        bill: bill_id("YB-B1"),
    };
    let small = started_ref(go(&mut w, &|w| w.run(MOBILE, hold(5))));
    go(&mut w, &|w| w.run(MOBILE, capture(&small))); // AuthorizationNotHeld
    go(&mut w, &|w| w.complete(&small));
    go(&mut w, &|w| w.run(MOBILE, capture(&small))); // CaptureExceedsAuthorization
    go(&mut w, &|w| {
        w.run(
            MOBILE,
            CommandBody::ReleaseAuthorization {
                card: card("HCEP01"),
                authorization: small.clone(),
            },
        )
    });
    go(&mut w, &|w| w.reverse(&small));
    let lapsed = started_ref(go(&mut w, &|w| w.run(MOBILE, hold(5))));
    go(&mut w, &|w| w.complete(&lapsed));
    go(&mut w, &|w| {
        w.run(
            SAGA,
            CommandBody::ExpireAuthorization {
                authorization: lapsed.clone(),
            },
        )
    });
    let enough = started_ref(go(&mut w, &|w| w.run(MOBILE, hold(14))));
    go(&mut w, &|w| w.complete(&enough));
    let captured = started_ref(go(&mut w, &|w| w.run(MOBILE, capture(&enough))));
    go(&mut w, &|w| w.complete(&captured));
    assert_eq!(w.bill("YB-B1").status, BillStatus::Paid);
    let cmd = w.log.last().expect("applied").cmd.clone();
    let mut reused = cmd;
    reused.body = CommandBody::OpenShift;
    go(&mut w, &|w| w.submit(&reused)); // RequestIdReused
    (done, codes)
}

#[test]
fn every_command_kind_succeeds_somewhere() {
    let (done, _) = tour();
    let all = [
        "IssueCard",
        "DepositCash",
        "StartBankOp",
        "CompleteBankOp",
        "DeclineBankOp",
        "MarkBankOpInDoubt",
        "ReverseBankOp",
        "PostBill",
        "CancelBill",
        "PayBill",
        "Refund",
        "WithdrawCash",
        "ReportLoss",
        "CancelLoss",
        "ReplaceCard",
        "Freeze",
        "Unfreeze",
        "SetOverdraft",
        "RegisterTerminal",
        "SetTerminalStatus",
        "OpenShift",
        "CloseShift",
        "CollectCash",
        "RecordReconciliation",
        "PutCredential",
        "RevokeCredential",
        "RecordMembership",
        "OpenEpisode",
        "FinalizeEpisode",
        "PostInsuredBill",
        "AuthorizePayment",
        "CapturePayment",
        "ReleaseAuthorization",
        "ExpireAuthorization",
    ];
    let missing: Vec<_> = all.iter().filter(|n| !done.contains(*n)).collect();
    assert!(missing.is_empty(), "never succeeded: {missing:?}");
    assert_eq!(done.len(), all.len());
}

#[test]
fn every_reason_code_apply_can_give_is_given() {
    let (_, codes) = tour();
    // InvariantViolation is the last line of defence and cannot be reached through the rules:
    // every debit is checked before it is posted (payments against balance + overdraft,
    // withdrawals against the balance, a lower overdraft against what is in use), so the
    // staged check after a command never finds an account below its limit.
    let reachable: Vec<ReasonCode> = ReasonCode::ALL
        .into_iter()
        .filter(|c| *c != ReasonCode::InvariantViolation)
        .collect();
    let missing: Vec<_> = reachable.iter().filter(|c| !codes.contains(*c)).collect();
    assert!(missing.is_empty(), "never given: {missing:?}");
    assert!(!codes.contains(&ReasonCode::InvariantViolation));
}

fn empty_reconciliation(date: &str) -> ReconciliationReport {
    ReconciliationReport {
        date: date.into(),
        bank_lines: 0,
        matched: 0,
        matched_total: Money::ZERO,
        differences: Vec::new(),
    }
}

#[test]
fn a_reconciliation_report_is_stored_by_the_cluster_and_replaced_by_a_later_run() {
    let mut w = World::standard();
    let first = w.run(
        SAGA,
        CommandBody::RecordReconciliation {
            report: empty_reconciliation("2026-11-24"),
        },
    );
    assert!(matches!(
        expect_done(first),
        Effect::ReconciliationRecorded { differences: 0, .. }
    ));
    let mut second = empty_reconciliation("2026-11-24");
    second.bank_lines = 3;
    expect_done(w.run(
        ADMIN,
        CommandBody::RecordReconciliation {
            report: second.clone(),
        },
    ));
    let stored = w
        .state
        .reports
        .get("recon/2026-11-24")
        .expect("stored under its day");
    assert_eq!(stored, &Report::Reconciliation(second));
    let refused = w.run(
        KIOSK,
        CommandBody::RecordReconciliation {
            report: empty_reconciliation("2026-11-24"),
        },
    );
    expect_code(&refused, ReasonCode::TerminalNotAllowed);
}

// ---- issue 15: money safety ----

/// Issue 15, path 1: request ids are the terminal's own. Another terminal sending the same id
/// (a guessed or replayed one) is a separate request and never takes the first terminal's, nor
/// the cluster's saga steps (`saga:REF:STEP` from `S-SAGA`).
#[test]
fn request_ids_of_one_terminal_never_collide_with_another_terminals() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let id = rid("K-0101:000777");
    let deposit = |terminal: &str| Command {
        request: id.clone(),
        terminal: tid(terminal),
        operator: None,
        at: Timestamp(1_760_000_500_000),
        body: CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(10),
        },
    };
    // The attacker's kiosk sends the honest kiosk's next id first.
    balance_changed(w.submit(&deposit(KIOSK2)));
    // The honest kiosk's request is applied, not refused as a reused id.
    let (_, balance) = balance_changed(w.submit(&deposit(KIOSK)));
    assert_eq!(balance, yuan(120));
    // Each retry is answered from its own terminal's record.
    balance_changed(w.submit(&deposit(KIOSK)));
    assert_eq!(w.balance("HC0001"), yuan(120));

    // A saga step's id taken by a client before the step runs does not block the step.
    let started = w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50));
    let bank_ref = started_ref(started);
    let step_id = rid(&format!("saga:{bank_ref}:complete"));
    let taken = Command {
        request: step_id.clone(),
        terminal: tid(KIOSK2),
        operator: None,
        at: Timestamp(1_760_000_600_000),
        body: CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(1),
        },
    };
    balance_changed(w.submit(&taken));
    let step = Command {
        request: step_id,
        terminal: tid(SAGA),
        operator: None,
        at: Timestamp(1_760_000_700_000),
        body: CommandBody::CompleteBankOp {
            bank_ref: bank_ref.clone(),
            bank_note: "00".into(),
        },
    };
    let (state, balance) = settled(w.submit(&step));
    assert_eq!(state, BankOpState::Completed);
    assert_eq!(balance, yuan(171));
    w.check();
}

/// Issue 15, path 5 (the ledger's half): a retry is answered only when the terminal, the
/// operator and the body all match; another operator under the same id is a reused id.
#[test]
fn a_retry_by_another_operator_is_a_reused_id() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    let first = w.command(
        WINDOW,
        Some(CASHIER),
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(10),
        },
    );
    balance_changed(w.submit(&first));
    let mut other = first.clone();
    other.operator = Some(operator("CASHIER-02"));
    let outcome = w.submit(&other);
    expect_code(&outcome, ReasonCode::RequestIdReused);
    assert_eq!(w.balance("HC0001"), yuan(110));
}

/// Issue 15, path 3: a bill paid by bank card is never refunded into the prepaid account (which
/// would turn a card payment into cash at a window); only to the card that paid.
#[test]
fn a_card_paid_bill_is_never_refunded_into_the_account() {
    let mut w = ready();
    w.patient("HC0001", 1, 100);
    expect_done(w.post_bill("OP-1", "HC0001", yuan(30)));
    let bank_ref = started_ref(w.pay_by_card(KIOSK, "OP-1", "HC0001", bank_card(1)));
    settled(w.complete(&bank_ref));
    expect_done(w.cancel_bill("OP-1"));
    for terminal in [WINDOW, KIOSK, HIS] {
        w.refused(ReasonCode::RefundChannelNotAllowed, |w| {
            w.refund(terminal, "OP-1")
        });
    }
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(w.bill("OP-1").status, BillStatus::Cancelled);
    // The card that paid gets it back.
    let refund = started_ref(w.refund_online(WINDOW, "OP-1", "HC0001", bank_card(1)));
    settled(w.complete(&refund));
    assert_eq!(w.bill("OP-1").status, BillStatus::Refunded);
    assert_eq!(w.balance("HC0001"), yuan(100));
    w.check();
}

/// Issue 15, path 4: a command stamped before the terminal's current business day (a new
/// leader's clock behind the old one's near midnight) is counted in the current day; the day
/// never goes back, so a finished day's report is never replaced by a partial one.
#[test]
fn a_terminals_business_day_never_goes_back() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let day_ms = 86_400_000;
    let deposit_at = |w: &mut World, at: i64| {
        let mut cmd = w.command(
            KIOSK,
            None,
            CommandBody::DepositCash {
                card: card("HC0001"),
                amount: yuan(10),
            },
        );
        cmd.at = Timestamp(at);
        balance_changed(w.submit(&cmd));
    };
    let today = w.tick().0 + 2 * day_ms;
    deposit_at(&mut w, today);
    let reports_before = w.state.reports.len();
    // Stamped a day earlier, then today again.
    deposit_at(&mut w, today - day_ms);
    deposit_at(&mut w, today + 1_000);
    assert_eq!(
        w.state.reports.len(),
        reports_before,
        "no day report was stored: the day did not change"
    );
    let terminal = w.state.terminals[&tid(KIOSK)].clone();
    let day = terminal.today.expect("today's totals");
    assert_eq!(
        day.date,
        yinyi_ledger::BusinessDay::of_ms(today).to_string()
    );
    let deposits: Money = day
        .lines
        .iter()
        .filter(|l| l.kind == EntryKind::CashDeposit)
        .map(|l| l.total)
        .fold(Money::ZERO, |a, b| a.checked_add(b).unwrap());
    assert_eq!(deposits, yuan(30));
    w.check();
}

/// Issue 15, path 6: only the cluster's own sagas settle a bank operation; an admin console
/// cannot complete a top-up the bank never approved.
#[test]
fn only_the_system_settles_a_bank_operation() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let bank_ref = started_ref(w.top_up(KIOSK, "HC0001", bank_card(1), yuan(50)));
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            ADMIN,
            CommandBody::CompleteBankOp {
                bank_ref: bank_ref.clone(),
                bank_note: "forced".into(),
            },
        )
    });
    assert_eq!(w.balance("HC0001"), yuan(100));
    assert_eq!(w.bank_op(&bank_ref).state, BankOpState::Pending);
}

/// Issue 15, path 6: a bootstrap credential (from the nodes' config, not replicated) can be
/// revoked: the cluster keeps a tombstone every node checks; a replicated one is revoked as such.
#[test]
fn a_bootstrap_credential_is_revoked_by_a_tombstone() {
    let mut w = World::standard();
    expect_done(w.run(
        ADMIN,
        CommandBody::RevokeBootstrapCredential { id: "ops".into() },
    ));
    let tombstone = w.state.credentials["ops"].clone();
    assert!(tombstone.is_revoked());
    assert!(tombstone.roles.is_empty() && tombstone.secret_sha256.is_empty());
    // Revoking again is harmless; the id can never be created.
    expect_done(w.run(
        ADMIN,
        CommandBody::RevokeBootstrapCredential { id: "ops".into() },
    ));
    w.refused(ReasonCode::CredentialExists, |w| {
        w.run(
            ADMIN,
            CommandBody::PutCredential {
                id: "ops".into(),
                roles: vec![yinyi_ledger::Role::Admin],
                terminal: None,
                secret_sha256: "a".repeat(64),
            },
        )
    });
    w.refused(ReasonCode::TerminalNotAllowed, |w| {
        w.run(
            KIOSK,
            CommandBody::RevokeBootstrapCredential { id: "x".into() },
        )
    });
}

/// Issue 16, point 3: personal data is stored only in its masked shapes.
#[test]
fn a_holder_is_stored_only_with_masked_id_and_phone() {
    let good = holder(7);
    assert!(good.check().is_ok());
    for (id_masked, phone, name) in [
        ("110101199003074512", "", "Li"),
        ("11010119900307451X", "", "Li"),
        ("110101*99003074512", "", "Li"),
        ("110***1234", "", "Li"),
        ("110**********12**34", "", "Li"),
        ("110***********0007", "13800138000", "Li"),
        ("110***********0007", "138****00a0", "Li"),
        ("110***********0007", "", ""),
        ("110***********0007", "", "Li\nSecond line"),
        // A sealed value of the wrong shape (not hex, too short, too long).
        ("110***********0007", "", "sealed:v1:not-hex-at-all"),
        ("110***********0007", "", "sealed:v1:abcd"),
        (
            "110***********0007",
            "",
            &format!("sealed:v1:{}", "ab".repeat(400)),
        ),
    ] {
        let h = yinyi_ledger::Holder {
            id_masked: id_masked.into(),
            phone: phone.into(),
            name: name.into(),
            ..good.clone()
        };
        assert!(h.check().is_err(), "{id_masked:?} {phone:?} {name:?}");
    }
    // Sealed by the API (nonce, ciphertext and tag in hex) after it checked the plain values.
    let sealed = format!("sealed:v1:{}", "0f".repeat(24 + 16 + 9));
    let h = yinyi_ledger::Holder {
        name: sealed.clone(),
        phone: sealed,
        ..good.clone()
    };
    assert!(h.check().is_ok());
    let mut w = World::standard();
    w.refused(ReasonCode::InvalidHolder, |w| {
        w.run(
            KIOSK,
            CommandBody::IssueCard {
                card: card("HC0001"),
                card_kind: CardKind::Hospital,
                holder: yinyi_ledger::Holder {
                    id_masked: "110101199003074512".into(),
                    ..holder(1)
                },
                first_deposit: None,
            },
        )
    });
    assert!(w.state.accounts.is_empty());
}

// ---- request retention ----

/// Past its retention a request record is let go (a retry of it is then a new request), oldest
/// first and at most the prune's limit; requests in the audit trail are kept, and so is the
/// journal. Only the cluster's own `S-` terminals prune, and never into the future.
#[test]
fn a_prune_lets_go_of_old_request_records_but_keeps_the_audit_trail_and_the_journal() {
    let mut w = World::standard();
    w.patient("HC0001", 1, 100);
    let deposit = w.command(
        KIOSK,
        None,
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(20),
        },
    );
    expect_done(w.submit(&deposit));
    let loss = w.report_loss("HC0001", 1);
    expect_done(loss);
    let cutoff = w.tick();
    let later = w.command(
        KIOSK,
        None,
        CommandBody::DepositCash {
            card: card("HC0001"),
            amount: yuan(1),
        },
    );
    w.submit(&later); // refused (the card is lost), but recorded
    let journal = w.state.journal.clone();
    let requests_before = w.state.requests.len();

    // Not from a kiosk, and not with a limit out of bounds or a time to come.
    let prune = |before, limit| CommandBody::PruneRequests { before, limit };
    expect_code(
        &w.run(KIOSK, prune(cutoff, 10)),
        ReasonCode::TerminalNotAllowed,
    );
    expect_code(&w.run(SAGA, prune(cutoff, 0)), ReasonCode::InvalidAmount);
    expect_code(
        &w.run(
            SAGA,
            prune(cutoff, yinyi_ledger::MAX_PRUNED_PER_COMMAND + 1),
        ),
        ReasonCode::InvalidAmount,
    );
    expect_code(
        &w.run(SAGA, prune(Timestamp(w.clock + 60_000), 10)),
        ReasonCode::InvalidAmount,
    );

    // Two at a time, oldest first.
    let pruned = |outcome| match expect_done(outcome) {
        Effect::RequestsPruned { requests } => requests,
        other => panic!("expected RequestsPruned, got {other:?}"),
    };
    let first = pruned(w.run(SAGA, prune(cutoff, 2)));
    assert_eq!(first, 2);
    let mut total = first;
    loop {
        let n = pruned(w.run(SAGA, prune(cutoff, 2)));
        total += n;
        if n < 2 {
            break;
        }
    }
    // The card's issue and the deposit; the terminals' registrations and the loss report are
    // in the audit trail.
    assert_eq!(total, 2, "{total} records let go");
    // What is left: the audited loss report, everything after the cut-off (the refused
    // deposit, the refused prunes, the prunes themselves), and nothing made before it that a
    // prune may take.
    assert!(w.state.expired_requests(cutoff, 100).is_empty());
    assert!(
        w.state
            .request(&deposit.terminal, &deposit.request)
            .is_none(),
        "the old deposit's record is still there"
    );
    assert!(
        w.state
            .requests
            .values()
            .any(|r| matches!(r.body, CommandBody::ReportLoss { .. })),
        "the audited loss report was let go"
    );
    assert!(w.state.request(&later.terminal, &later.request).is_some());
    assert!(w.state.requests.len() < requests_before + 8);
    assert_eq!(w.state.journal, journal, "a prune touched the journal");

    // A retry of the let-go deposit is a new request now: applied again (documented).
    let retried = w.submit(&deposit);
    expect_code(&retried, ReasonCode::CardLost);
}

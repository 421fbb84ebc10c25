//! `apply`: every business rule of the ledger, in one deterministic function.
//!
//! A command runs against a `Staged` overlay of the state. Only when every rule passed and the
//! account invariants still hold are its writes handed to the `StateView`; a rejected command
//! writes nothing but its outcome under its request id. So nothing is ever half-applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{AdjustDirection, Command, CommandBody, DifferenceRef, RefundTo};
use crate::credential::Credential;
use crate::ids::{
    AccountId, BankRef, BillId, CardNo, OperatorId, PersonKey, RequestId, TerminalId, TerminalKind,
    TxnId,
};
use crate::model::{
    Account, AccountStatus, BankOp, BankOpKind, BankOpState, BankPurpose, Bill, BillEvent,
    BillEventKind, BillKind, BillStatus, Card, CardKind, CardStatus, Channel, CollectionReport,
    DifferenceKind, EntryKind, External, Holder, JournalEntry, Payment, Report, Shift, ShiftReport,
    Terminal, TerminalDay, TerminalDayReport, TerminalStatus, add_to_lines,
};
use crate::money::Money;
use crate::outcome::{Effect, Outcome, ReasonCode, Rejection};
use crate::permissions::{allowed_out_of_service, allowed_terminals};
use crate::view::{RequestRecord, StateView};

/// The cluster-wide business limits. Every node must apply with the same `Rules`, so they are
/// part of the cluster's configuration, not of one node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// No single transaction moves more than this.
    pub single_txn_limit: Money,
    /// The smallest first deposit when a card is issued with one.
    pub min_first_deposit: Money,
    /// The largest overdraft (绿色通道) an account may be given.
    pub max_overdraft: Money,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            single_txn_limit: Money::from_yuan(50_000),
            min_first_deposit: Money::from_yuan(10),
            max_overdraft: Money::from_yuan(20_000),
        }
    }
}

/// The most request records one `PruneRequests` lets go of (one Raft entry's worth of deletes).
pub const MAX_PRUNED_PER_COMMAND: u32 = 10_000;

/// What `apply` gets besides the command: where in the log it is, and the rules.
#[derive(Debug, Clone, Copy)]
pub struct ApplyCtx {
    /// The command's transaction id: its log index and position in the entry.
    pub txn: TxnId,
    pub rules: Rules,
}

/// Applies one command. Deterministic: the same commands in the same order on the same state
/// give the same outcomes and the same writes on every node.
pub fn apply<V: StateView>(cmd: &Command, view: &mut V, ctx: &ApplyCtx) -> Outcome {
    if let Some(record) = view.request(&cmd.terminal, &cmd.request) {
        if record.answers(cmd) {
            return record.outcome;
        }
        return Outcome::rejected(
            ReasonCode::RequestIdReused,
            format!(
                "request id {} was used before by terminal {} for another {}",
                cmd.request,
                record.terminal,
                record.body.name()
            ),
        );
    }
    let outcome = {
        let mut staged = Staged::new(view, cmd, ctx);
        match staged
            .execute()
            .and_then(|effect| staged.check_invariants().map(|()| effect))
        {
            Ok(effect) => {
                staged.commit();
                Outcome::Done(effect)
            }
            Err(rejection) => Outcome::Rejected(rejection),
        }
    };
    view.put_request(
        cmd.request.clone(),
        RequestRecord {
            terminal: cmd.terminal.clone(),
            operator: cmd.operator.clone(),
            body: cmd.body.clone(),
            outcome: outcome.clone(),
            at: cmd.at,
        },
    );
    outcome
}

/// What `apply` would refuse `cmd` with on `view` as it is now, writing nothing (not even a
/// request record): the leader's actors answer such a refusal at once instead of proposing.
/// The same rules in the same order decide, so the early answer is the one `apply` would give
/// on this state. `None` when it would be applied, or when the request id is already recorded
/// (a retry or a reused id, which `apply` answers from the record).
pub fn refusal<V: StateView>(cmd: &Command, view: &mut V, ctx: &ApplyCtx) -> Option<Rejection> {
    if view.request(&cmd.terminal, &cmd.request).is_some() {
        return None;
    }
    let mut staged = Staged::new(view, cmd, ctx);
    staged
        .execute()
        .and_then(|_| staged.check_invariants())
        .err()
}

type Rule<T> = Result<T, Rejection>;

fn reject<T>(code: ReasonCode, message: impl Into<String>) -> Rule<T> {
    Err(Rejection::new(code, message))
}

/// Writes of one command, held back until it has passed every rule.
struct Staged<'v, V: StateView> {
    base: &'v mut V,
    cmd: &'v Command,
    ctx: &'v ApplyCtx,
    accounts: BTreeMap<AccountId, Account>,
    cards: BTreeMap<CardNo, Card>,
    persons: BTreeMap<PersonKey, AccountId>,
    bills: BTreeMap<BillId, Bill>,
    bank_ops: BTreeMap<BankRef, BankOp>,
    terminals: BTreeMap<TerminalId, Terminal>,
    journal: Vec<JournalEntry>,
    reports: Vec<Report>,
    credentials: Vec<Credential>,
    forgotten: Vec<(TerminalId, RequestId)>,
    bill_events: Vec<BillEvent>,
}

/// One movement of money to record in the journal.
struct Movement {
    account: AccountId,
    kind: EntryKind,
    channel: Channel,
    amount: Money,
    bill: Option<BillId>,
    bank_ref: Option<BankRef>,
    /// Where the patient was: the command's terminal, or the one that started a saga.
    terminal: TerminalId,
}

impl<'v, V: StateView> Staged<'v, V> {
    fn new(base: &'v mut V, cmd: &'v Command, ctx: &'v ApplyCtx) -> Self {
        Staged {
            base,
            cmd,
            ctx,
            accounts: BTreeMap::new(),
            cards: BTreeMap::new(),
            persons: BTreeMap::new(),
            bills: BTreeMap::new(),
            bank_ops: BTreeMap::new(),
            terminals: BTreeMap::new(),
            journal: Vec::new(),
            reports: Vec::new(),
            credentials: Vec::new(),
            forgotten: Vec::new(),
            bill_events: Vec::new(),
        }
    }

    // ---- reads through the overlay ----

    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts
            .get(&id)
            .cloned()
            .or_else(|| self.base.account(id))
    }
    fn card(&self, no: &CardNo) -> Option<Card> {
        self.cards.get(no).cloned().or_else(|| self.base.card(no))
    }
    fn person(&self, person: &PersonKey) -> Option<AccountId> {
        self.persons
            .get(person)
            .copied()
            .or_else(|| self.base.person(person))
    }
    fn bill(&self, id: &BillId) -> Option<Bill> {
        self.bills.get(id).cloned().or_else(|| self.base.bill(id))
    }
    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp> {
        self.bank_ops
            .get(bank_ref)
            .cloned()
            .or_else(|| self.base.bank_op(bank_ref))
    }
    fn terminal(&self, id: &TerminalId) -> Option<Terminal> {
        self.terminals
            .get(id)
            .cloned()
            .or_else(|| self.base.terminal(id))
    }
    fn report(&self, key: &str) -> Option<Report> {
        self.reports
            .iter()
            .rev()
            .find(|r| r.key() == key)
            .cloned()
            .or_else(|| self.base.report(key))
    }

    /// Records what happened to `bill` for HIS's feed.
    fn bill_event(
        &mut self,
        bill: &Bill,
        kind: BillEventKind,
        amount: Money,
        channel: Option<Channel>,
    ) {
        self.bill_events.push(BillEvent {
            txn: self.ctx.txn,
            bill: bill.id.clone(),
            account: bill.account,
            kind,
            amount,
            channel,
            at: self.cmd.at,
        });
    }

    fn put_account(&mut self, mut account: Account) {
        account.version += 1;
        account.last_activity_at = self.cmd.at;
        self.accounts.insert(account.id, account);
    }

    /// Every account this command touched must stay within its overdraft; money code that
    /// breaks this stops here, loudly, instead of writing a wrong balance.
    fn check_invariants(&self) -> Rule<()> {
        for account in self.accounts.values() {
            if account.balance < account.overdraft_limit.negated() {
                return reject(
                    ReasonCode::InvariantViolation,
                    format!(
                        "account {} would end at {} below its overdraft {}",
                        account.id, account.balance, account.overdraft_limit
                    ),
                );
            }
        }
        Ok(())
    }

    fn commit(self) {
        let Staged {
            base,
            accounts,
            cards,
            persons,
            bills,
            bank_ops,
            terminals,
            journal,
            reports,
            credentials,
            forgotten,
            bill_events,
            ..
        } = self;
        for account in accounts.into_values() {
            base.put_account(account);
        }
        for card in cards.into_values() {
            base.put_card(card);
        }
        for (person, account) in persons {
            base.put_person(person, account);
        }
        for bill in bills.into_values() {
            base.put_bill(bill);
        }
        for op in bank_ops.into_values() {
            base.put_bank_op(op);
        }
        for terminal in terminals.into_values() {
            base.put_terminal(terminal);
        }
        for entry in journal {
            base.append_journal(entry);
        }
        for report in reports {
            base.put_report(report);
        }
        for credential in credentials {
            base.put_credential(credential);
        }
        for (terminal, id) in forgotten {
            base.forget_request(&terminal, &id);
        }
        for event in bill_events {
            base.append_bill_event(event);
        }
    }

    // ---- common checks ----

    /// The command's terminal may do this (`permissions::allowed_terminals`). Kiosks,
    /// windows, mobile channels and HIS must be registered and in service (out of service only
    /// to close a shift or empty the cash box); admin consoles and the cluster's own terminal
    /// need not be registered.
    fn terminal_allowed(&self) -> Rule<Option<Terminal>> {
        let allowed = allowed_terminals(&self.cmd.body);
        let even_out_of_service = allowed_out_of_service(&self.cmd.body);
        let id = &self.cmd.terminal;
        let kind = id.kind();
        if !allowed.contains(&kind) {
            return reject(
                ReasonCode::TerminalNotAllowed,
                format!(
                    "{} may not be done from terminal {id} ({kind:?})",
                    self.cmd.body.name()
                ),
            );
        }
        if matches!(kind, TerminalKind::Admin | TerminalKind::System) {
            return Ok(None);
        }
        let Some(terminal) = self.terminal(id) else {
            return reject(
                ReasonCode::TerminalNotRegistered,
                format!("terminal {id} is not registered"),
            );
        };
        let usable = terminal.status == TerminalStatus::InService
            || (even_out_of_service && terminal.status == TerminalStatus::OutOfService);
        if !usable {
            return reject(
                ReasonCode::TerminalOutOfService,
                format!("terminal {id} is {:?}", terminal.status),
            );
        }
        Ok(Some(terminal))
    }

    /// At a window, money moves only inside an open shift.
    fn require_shift_at_window(&self, terminal: &Option<Terminal>) -> Rule<()> {
        if let Some(t) = terminal
            && t.kind == TerminalKind::Window
            && t.shift.is_none()
        {
            return reject(
                ReasonCode::ShiftNotOpen,
                format!("window {} has no open shift", t.id),
            );
        }
        Ok(())
    }

    fn operator(&self) -> Rule<OperatorId> {
        match &self.cmd.operator {
            Some(op) => Ok(op.clone()),
            None => reject(
                ReasonCode::OperatorRequired,
                format!("{} needs an operator", self.cmd.body.name()),
            ),
        }
    }

    fn amount(&self, amount: Money) -> Rule<Money> {
        amount
            .check_positive(self.ctx.rules.single_txn_limit)
            .map_err(|e| Rejection::new(ReasonCode::InvalidAmount, e.to_string()))
    }

    /// Note acceptors take whole yuan.
    fn kiosk_cash(&self, amount: Money) -> Rule<()> {
        if self.cmd.terminal.kind() == TerminalKind::Kiosk && !amount.is_whole_yuan() {
            return reject(
                ReasonCode::InvalidDenomination,
                format!("a kiosk takes whole yuan in notes, not {amount}"),
            );
        }
        Ok(())
    }

    fn card_exists(&self, no: &CardNo) -> Rule<Card> {
        self.card(no).ok_or_else(|| {
            Rejection::new(ReasonCode::CardNotFound, format!("card {no} is not known"))
        })
    }

    fn account_exists(&self, id: AccountId) -> Rule<Account> {
        self.account(id).ok_or_else(|| {
            Rejection::new(
                ReasonCode::AccountNotFound,
                format!("account {id} is not known"),
            )
        })
    }

    fn active(&self, account: Account) -> Rule<Account> {
        if account.status == AccountStatus::Frozen {
            return reject(
                ReasonCode::AccountFrozen,
                format!("account {} is frozen", account.id),
            );
        }
        Ok(account)
    }

    /// A card a patient presents: it must be active and its account usable.
    fn card_in_use(&self, no: &CardNo) -> Rule<(Card, Account)> {
        let card = self.card_exists(no)?;
        match card.status {
            CardStatus::Active => {}
            CardStatus::Lost => {
                return reject(ReasonCode::CardLost, format!("card {no} is reported lost"));
            }
            CardStatus::Replaced => {
                return reject(
                    ReasonCode::CardReplaced,
                    format!("card {no} was replaced by a new card"),
                );
            }
        }
        let account = self.active(self.account_exists(card.account)?)?;
        Ok((card, account))
    }

    /// The holder's ID must match for loss, cancellation of loss and replacement.
    fn holder_card(&self, no: &CardNo, person: &PersonKey) -> Rule<(Card, Account)> {
        let card = self.card_exists(no)?;
        let account = self.account_exists(card.account)?;
        if &account.holder.person != person {
            return reject(
                ReasonCode::IdentityMismatch,
                format!("the ID presented is not the holder's of card {no}"),
            );
        }
        Ok((card, account))
    }

    fn bill_exists(&self, id: &BillId) -> Rule<Bill> {
        self.bill(id).ok_or_else(|| {
            Rejection::new(ReasonCode::BillNotFound, format!("bill {id} is not known"))
        })
    }

    fn bill_of(&self, bill: &Bill, account: AccountId) -> Rule<()> {
        if bill.account != account {
            return reject(
                ReasonCode::BillAccountMismatch,
                format!("bill {} belongs to another account", bill.id),
            );
        }
        Ok(())
    }

    fn no_op_in_flight(&self, bill: &Bill) -> Rule<()> {
        if let Some(r) = &bill.pending_op {
            return reject(
                ReasonCode::BillOperationInProgress,
                format!("bill {} has bank operation {r} in progress", bill.id),
            );
        }
        Ok(())
    }

    fn payable(&self, bill: &Bill) -> Rule<()> {
        match bill.status {
            BillStatus::Unpaid => self.no_op_in_flight(bill),
            BillStatus::Paid | BillStatus::Refunded => reject(
                ReasonCode::BillAlreadyPaid,
                format!("bill {} is already paid", bill.id),
            ),
            BillStatus::Cancelled => reject(
                ReasonCode::BillCancelled,
                format!("bill {} was cancelled by HIS", bill.id),
            ),
        }
    }

    /// HIS cancels only a bill it has not cancelled yet, and not one refunded in full.
    fn still_open(&self, bill: &Bill) -> Rule<()> {
        match bill.status {
            BillStatus::Unpaid | BillStatus::Paid => Ok(()),
            BillStatus::Cancelled => reject(
                ReasonCode::BillCancelled,
                format!("bill {} is already cancelled", bill.id),
            ),
            BillStatus::Refunded => reject(
                ReasonCode::AlreadyRefunded,
                format!("bill {} is already refunded", bill.id),
            ),
        }
    }

    /// Refunds: a paid bill, up to what HIS has cancelled of it and not refunded yet; an
    /// invoiced bill only at a window. Returns how it was paid and what is still refundable.
    fn refundable(&self, bill: &Bill) -> Rule<(Payment, Money)> {
        let payment = match (bill.status, &bill.payment) {
            (BillStatus::Refunded, _) => {
                return reject(
                    ReasonCode::AlreadyRefunded,
                    format!("bill {} is already refunded", bill.id),
                );
            }
            (_, Some(payment)) => payment.clone(),
            (_, None) => {
                return reject(
                    ReasonCode::BillNotPaid,
                    format!("bill {} was never paid", bill.id),
                );
            }
        };
        self.no_op_in_flight(bill)?;
        let left = bill.refundable();
        if left.is_zero() {
            if bill.refunded.is_zero() {
                return reject(
                    ReasonCode::RefundNotAllowed,
                    format!(
                        "bill {} is paid and not cancelled by HIS; HIS must cancel it (or part of it) first",
                        bill.id
                    ),
                );
            }
            return reject(
                ReasonCode::AlreadyRefunded,
                format!(
                    "all HIS cancelled of bill {} ({}) is already refunded",
                    bill.id, bill.cancelled
                ),
            );
        }
        if bill.invoiced && self.cmd.terminal.kind() != TerminalKind::Window {
            return reject(
                ReasonCode::TerminalNotAllowed,
                format!(
                    "bill {} is invoiced (发票已打印): it is refunded only at a window, where the invoice is taken back",
                    bill.id
                ),
            );
        }
        Ok((payment, left))
    }

    /// How much a refund takes: all that is refundable when no amount is given.
    fn refund_amount(&self, bill: &Bill, left: Money, asked: Option<Money>) -> Rule<Money> {
        let Some(asked) = asked else {
            return Ok(left);
        };
        let amount = self.amount(asked)?;
        if amount > left {
            return reject(
                ReasonCode::InvalidAmount,
                format!(
                    "a refund of {amount} is more than the {left} that may go this way of bill {} (paid {}, cancelled {}, refunded {}, declined online and not yet refunded otherwise {})",
                    bill.id, bill.amount, bill.cancelled, bill.refunded, bill.declined_left
                ),
            );
        }
        Ok(amount)
    }

    /// Records `amount` more refunded on the bill; refunded in full, it is Refunded.
    fn mark_refunded(bill: &mut Bill, amount: Money) {
        bill.refunded = bill
            .refunded
            .checked_add(amount)
            .expect("bill amounts within range");
        if bill.refunded == bill.amount {
            bill.status = BillStatus::Refunded;
        }
    }

    /// How much a withdrawal takes: all of the balance when no amount is given. A withdrawal
    /// never uses the overdraft.
    fn withdrawal_amount(&self, account: &Account, amount: Option<Money>) -> Rule<Money> {
        let amount = match amount {
            Some(a) => self.amount(a)?,
            None if account.balance.is_positive() => self.amount(account.balance)?,
            None => {
                return reject(
                    ReasonCode::NothingToWithdraw,
                    format!("account {} has no balance to withdraw", account.id),
                );
            }
        };
        if amount > account.balance {
            return reject(
                ReasonCode::InsufficientFunds,
                format!(
                    "withdrawal of {amount} exceeds the balance {} of account {}",
                    account.balance, account.id
                ),
            );
        }
        Ok(amount)
    }

    // ---- writes ----

    /// Records a movement: changes the balance by the entry kind's sign, journals it, and
    /// counts it at the terminal (cash box, open shift). Debits must be checked by the caller.
    fn post(&mut self, m: Movement) -> Money {
        let mut account = self
            .account(m.account)
            .expect("posting to an account the command has read");
        account.balance = match m.kind.balance_sign() {
            1 => account.balance.checked_add(m.amount),
            -1 => account.balance.checked_sub(m.amount),
            _ => Some(account.balance),
        }
        .expect("balances stay far inside Money's range");
        let balance = account.balance;
        self.put_account(account);
        self.count_at_terminal(&m.terminal, m.kind, m.channel, m.amount);
        let operator = self.cmd.operator.clone();
        self.journal.push(JournalEntry {
            txn: self.ctx.txn,
            request: self.cmd.request.clone(),
            account: m.account,
            kind: m.kind,
            amount: m.amount,
            balance_after: balance,
            channel: m.channel,
            terminal: m.terminal,
            operator,
            bill: m.bill,
            bank_ref: m.bank_ref,
            at: self.cmd.at,
        });
        balance
    }

    /// Cash goes in and out of the terminal's box; at a window every movement is counted in the
    /// open shift for its report.
    fn count_at_terminal(
        &mut self,
        id: &TerminalId,
        kind: EntryKind,
        channel: Channel,
        amount: Money,
    ) {
        let Some(mut terminal) = self.terminal(id) else {
            return;
        };
        if channel == Channel::Cash {
            // Cash comes in only as a deposit; withdrawals and cash refunds hand it out.
            terminal.cash_box = match kind {
                EntryKind::CashDeposit => terminal.cash_box.checked_add(amount),
                _ => terminal.cash_box.checked_sub(amount),
            }
            .expect("cash box within range");
        }
        if let Some(shift) = &mut terminal.shift {
            add_to_lines(&mut shift.totals, kind, channel, amount);
        }
        // The day's totals by kind and channel; a new day stores the last one as a report.
        let date = crate::BusinessDay::of_ms(self.cmd.at.0).to_string();
        match &mut terminal.today {
            // The same day, or a stamp from before it (a new leader's clock a little behind the
            // old one's near midnight): the day never goes back, so a finished day's report is
            // never replaced by a partial one.
            Some(today) if today.date >= date => {}
            other => {
                if let Some(done) = other.take() {
                    self.reports.push(Report::TerminalDay(TerminalDayReport {
                        terminal: terminal.id.clone(),
                        day: done,
                    }));
                }
                *other = Some(TerminalDay {
                    date,
                    lines: Vec::new(),
                });
            }
        }
        if let Some(today) = &mut terminal.today {
            add_to_lines(&mut today.lines, kind, channel, amount);
        }
        self.terminals.insert(terminal.id.clone(), terminal);
    }

    fn debit_from_account(&mut self, account: &Account, amount: Money) -> Rule<()> {
        if amount > account.available() {
            return reject(
                ReasonCode::InsufficientFunds,
                format!(
                    "account {} has {} available (balance {}, overdraft {}), needs {amount}",
                    account.id,
                    account.available(),
                    account.balance,
                    account.overdraft_limit
                ),
            );
        }
        Ok(())
    }

    // ---- the transactions ----

    fn execute(&mut self) -> Rule<Effect> {
        use TerminalKind::*;
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::IssueCard {
                card,
                card_kind,
                holder,
                first_deposit,
            } => {
                let terminal = self.terminal_allowed()?;
                self.issue_card(terminal, card, *card_kind, holder, *first_deposit)
            }
            CommandBody::DepositCash { card, amount } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let amount = self.amount(*amount)?;
                self.kiosk_cash(amount)?;
                let (_, account) = self.card_in_use(card)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::CashDeposit,
                    channel: Channel::Cash,
                    amount,
                    bill: None,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            CommandBody::StartBankOp {
                card,
                external,
                purpose,
                amount,
            } => self.start_bank_op(card, external, purpose, *amount),
            CommandBody::CompleteBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Completed, bank_note),
            CommandBody::DeclineBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Declined, bank_note),
            CommandBody::MarkBankOpInDoubt {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::InDoubt, bank_note),
            CommandBody::ReverseBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Reversed, bank_note),
            CommandBody::PostBill {
                bill,
                card,
                kind,
                amount,
            } => self.post_bill(bill, card, *kind, *amount),
            CommandBody::CancelBill { bill } => {
                self.terminal_allowed()?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                self.still_open(&b)?;
                let refundable = b.status == BillStatus::Paid;
                let part = b
                    .amount
                    .checked_sub(b.cancelled)
                    .expect("bill amounts within range");
                b.status = BillStatus::Cancelled;
                b.cancelled = b.amount;
                self.bill_event(&b, BillEventKind::Cancelled, part, None);
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillCancelled {
                    bill: bill.clone(),
                    refundable,
                })
            }
            CommandBody::CancelBillPart { bill, amount } => {
                self.terminal_allowed()?;
                let amount = self.amount(*amount)?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                self.still_open(&b)?;
                if b.status == BillStatus::Unpaid {
                    return reject(
                        ReasonCode::BillNotPaid,
                        format!("bill {bill} is not paid: cancel it whole, or post it again"),
                    );
                }
                let cancelled = b
                    .cancelled
                    .checked_add(amount)
                    .expect("bill amounts within range");
                if cancelled > b.amount {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "cancelling {amount} more of bill {bill} makes {cancelled}, more than its {}",
                            b.amount
                        ),
                    );
                }
                b.cancelled = cancelled;
                if cancelled == b.amount {
                    b.status = BillStatus::Cancelled;
                }
                self.bill_event(&b, BillEventKind::Cancelled, amount, None);
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillCancelled {
                    bill: bill.clone(),
                    refundable: true,
                })
            }
            CommandBody::MarkInvoiced { bill } => {
                self.terminal_allowed()?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                match (b.status, &b.payment) {
                    (BillStatus::Refunded, _) => {
                        return reject(
                            ReasonCode::AlreadyRefunded,
                            format!("bill {bill} is refunded; there is nothing to invoice"),
                        );
                    }
                    (_, None) => {
                        return reject(
                            ReasonCode::BillNotPaid,
                            format!("bill {bill} is not paid; it cannot be invoiced"),
                        );
                    }
                    _ => {}
                }
                b.invoiced = true;
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillInvoiced { bill: bill.clone() })
            }
            CommandBody::PayBill { bill, card } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let (_, account) = self.card_in_use(card)?;
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                self.payable(&b)?;
                self.debit_from_account(&account, b.amount)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::BillPayment,
                    channel: Channel::Account,
                    amount: b.amount,
                    bill: Some(bill.clone()),
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                b.status = BillStatus::Paid;
                b.payment = Some(Payment {
                    channel: Channel::Account,
                    txn: self.ctx.txn,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                    at: cmd.at,
                });
                let amount = b.amount;
                self.bill_event(&b, BillEventKind::Paid, amount, Some(Channel::Account));
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            CommandBody::Adjust {
                account,
                direction,
                amount,
                reason,
                reference,
                difference,
            } => self.adjust(
                *account,
                *direction,
                *amount,
                reason,
                reference,
                difference.as_ref(),
            ),
            CommandBody::Refund { bill } => self.refund(bill, None, RefundTo::Account, None),
            CommandBody::RefundToAccount { bill, declined } => {
                self.refund(bill, None, RefundTo::Account, Some(declined))
            }
            CommandBody::RefundBill {
                bill,
                amount,
                to,
                declined,
            } => self.refund(bill, *amount, *to, declined.as_ref()),
            CommandBody::WithdrawCash { card, amount } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let (_, account) = self.card_in_use(card)?;
                let amount = self.withdrawal_amount(&account, *amount)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::Withdrawal,
                    channel: Channel::Cash,
                    amount,
                    bill: None,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            CommandBody::ReportLoss { card, person } => {
                self.terminal_allowed()?;
                let (mut c, _) = self.holder_card(card, person)?;
                match c.status {
                    CardStatus::Active => {}
                    CardStatus::Lost => {
                        return reject(
                            ReasonCode::CardLost,
                            format!("card {card} is already reported lost"),
                        );
                    }
                    CardStatus::Replaced => {
                        return reject(
                            ReasonCode::CardReplaced,
                            format!("card {card} was replaced"),
                        );
                    }
                }
                c.status = CardStatus::Lost;
                self.cards.insert(c.no.clone(), c);
                Ok(Effect::CardStatusChanged {
                    card: card.clone(),
                    status: CardStatus::Lost,
                })
            }
            CommandBody::CancelLoss { card, person } => {
                self.terminal_allowed()?;
                let (mut c, _) = self.holder_card(card, person)?;
                match c.status {
                    CardStatus::Lost => {}
                    CardStatus::Active => {
                        return reject(
                            ReasonCode::CardNotLost,
                            format!("card {card} is not reported lost"),
                        );
                    }
                    CardStatus::Replaced => {
                        return reject(
                            ReasonCode::CardReplaced,
                            format!("card {card} was replaced"),
                        );
                    }
                }
                c.status = CardStatus::Active;
                self.cards.insert(c.no.clone(), c);
                Ok(Effect::CardStatusChanged {
                    card: card.clone(),
                    status: CardStatus::Active,
                })
            }
            CommandBody::ReplaceCard {
                old_card,
                new_card,
                person,
            } => {
                self.terminal_allowed()?;
                let (mut old, account) = self.holder_card(old_card, person)?;
                if old.status == CardStatus::Replaced {
                    return reject(
                        ReasonCode::CardReplaced,
                        format!("card {old_card} was already replaced"),
                    );
                }
                if self.card(new_card).is_some() {
                    return reject(
                        ReasonCode::CardAlreadyExists,
                        format!("card {new_card} is already issued"),
                    );
                }
                old.status = CardStatus::Replaced;
                let new = Card {
                    no: new_card.clone(),
                    kind: old.kind,
                    account: account.id,
                    status: CardStatus::Active,
                };
                self.cards.insert(old.no.clone(), old);
                self.cards.insert(new.no.clone(), new);
                Ok(Effect::CardReplaced {
                    old_card: old_card.clone(),
                    new_card: new_card.clone(),
                    account: account.id,
                })
            }
            CommandBody::Freeze { account } => {
                self.set_account_status(*account, AccountStatus::Frozen)
            }
            CommandBody::Unfreeze { account } => {
                self.set_account_status(*account, AccountStatus::Active)
            }
            CommandBody::SetOverdraft { account, limit } => {
                self.terminal_allowed()?;
                if limit.is_negative() {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("overdraft limit {limit} is negative"),
                    );
                }
                if *limit > self.ctx.rules.max_overdraft {
                    return reject(
                        ReasonCode::OverdraftAboveMaximum,
                        format!(
                            "overdraft limit {limit} is above the maximum {}",
                            self.ctx.rules.max_overdraft
                        ),
                    );
                }
                let mut a = self.account_exists(*account)?;
                if a.balance < limit.negated() {
                    return reject(
                        ReasonCode::OverdraftInUse,
                        format!(
                            "account {account} is at {}, below the new limit {limit}",
                            a.balance
                        ),
                    );
                }
                a.overdraft_limit = *limit;
                self.put_account(a);
                Ok(Effect::OverdraftSet {
                    account: *account,
                    limit: *limit,
                })
            }
            CommandBody::PutCredential {
                id,
                roles,
                terminal,
                secret_sha256,
            } => {
                self.terminal_allowed()?;
                crate::credential::check_id(id)
                    .and_then(|()| crate::credential::check_sha256(secret_sha256))
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                if roles.is_empty() {
                    return reject(ReasonCode::InvalidCredential, "a credential needs a role");
                }
                if self.base.credential(id).is_some() {
                    return reject(
                        ReasonCode::CredentialExists,
                        format!("credential {id} exists (ids are never reused)"),
                    );
                }
                let mut roles = roles.clone();
                roles.sort();
                roles.dedup();
                self.credentials.push(Credential {
                    id: id.clone(),
                    roles,
                    terminal: terminal.clone(),
                    secret_sha256: secret_sha256.clone(),
                    created_at: self.cmd.at,
                    revoked_at: None,
                });
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::RevokeCredential { id } => {
                self.terminal_allowed()?;
                let Some(mut credential) = self.base.credential(id) else {
                    return reject(
                        ReasonCode::CredentialNotFound,
                        format!("no credential {id}"),
                    );
                };
                if credential.revoked_at.is_none() {
                    credential.revoked_at = Some(self.cmd.at);
                    self.credentials.push(credential);
                }
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::PruneRequests { before, limit } => {
                self.terminal_allowed()?;
                if *limit == 0 || *limit > MAX_PRUNED_PER_COMMAND {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "a prune lets go of 1 to {MAX_PRUNED_PER_COMMAND} records, not {limit}"
                        ),
                    );
                }
                if *before > self.cmd.at {
                    return reject(
                        ReasonCode::InvalidAmount,
                        "a prune cannot let go of requests not yet made",
                    );
                }
                self.forgotten = self.base.expired_requests(*before, *limit as usize);
                Ok(Effect::RequestsPruned {
                    requests: self.forgotten.len() as u64,
                })
            }
            CommandBody::RecordAccess {
                account,
                reader,
                method,
            } => {
                self.terminal_allowed()?;
                crate::credential::check_id(reader)
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                if method.is_empty()
                    || method.len() > 40
                    || !method.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("method {method:?}: 1 to 40 letters or digits"),
                    );
                }
                if self.account(*account).is_none() {
                    return reject(ReasonCode::AccountNotFound, format!("no account {account}"));
                }
                Ok(Effect::Recorded)
            }
            CommandBody::RevokeBootstrapCredential { id } => {
                self.terminal_allowed()?;
                crate::credential::check_id(id)
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                match self.base.credential(id) {
                    Some(c) if c.is_revoked() => {}
                    Some(_) => {
                        return reject(
                            ReasonCode::CredentialExists,
                            format!("credential {id} is a replicated one: revoke it as such"),
                        );
                    }
                    // A tombstone: every node refuses the id from now on, whatever its
                    // config still lists; no secret matches an empty hash.
                    None => self.credentials.push(Credential {
                        id: id.clone(),
                        roles: Vec::new(),
                        terminal: None,
                        secret_sha256: String::new(),
                        created_at: self.cmd.at,
                        revoked_at: Some(self.cmd.at),
                    }),
                }
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::RecordMembership { .. } => {
                self.terminal_allowed()?;
                Ok(Effect::Recorded)
            }
            CommandBody::RegisterTerminal { terminal } => {
                self.terminal_allowed()?;
                if matches!(terminal.kind(), Admin | System) {
                    return reject(
                        ReasonCode::TerminalNotAllowed,
                        format!(
                            "{terminal} is an admin or system terminal and needs no registration"
                        ),
                    );
                }
                if self.terminal(terminal).is_some() {
                    return reject(
                        ReasonCode::TerminalAlreadyRegistered,
                        format!("terminal {terminal} is already registered"),
                    );
                }
                self.terminals.insert(
                    terminal.clone(),
                    Terminal {
                        id: terminal.clone(),
                        kind: terminal.kind(),
                        status: TerminalStatus::InService,
                        cash_box: Money::ZERO,
                        shift: None,
                        shifts_opened: 0,
                        collections: 0,
                        registered_at: cmd.at,
                        today: None,
                    },
                );
                Ok(Effect::TerminalChanged {
                    terminal: terminal.clone(),
                    status: TerminalStatus::InService,
                })
            }
            CommandBody::SetTerminalStatus { terminal, status } => {
                self.terminal_allowed()?;
                let Some(mut t) = self.terminal(terminal) else {
                    return reject(
                        ReasonCode::TerminalNotRegistered,
                        format!("terminal {terminal} is not registered"),
                    );
                };
                if t.status == TerminalStatus::Retired {
                    return reject(
                        ReasonCode::TerminalOutOfService,
                        format!("terminal {terminal} is retired for good"),
                    );
                }
                t.status = *status;
                self.terminals.insert(t.id.clone(), t);
                Ok(Effect::TerminalChanged {
                    terminal: terminal.clone(),
                    status: *status,
                })
            }
            CommandBody::OpenShift => {
                let mut t = self.terminal_allowed()?.expect("windows are registered");
                let operator = self.operator()?;
                if t.shift.is_some() {
                    return reject(
                        ReasonCode::ShiftAlreadyOpen,
                        format!("window {} already has an open shift", t.id),
                    );
                }
                t.shifts_opened += 1;
                let seq = t.shifts_opened;
                t.shift = Some(Shift {
                    seq,
                    operator,
                    opened_at: cmd.at,
                    totals: Vec::new(),
                });
                self.terminals.insert(t.id.clone(), t);
                Ok(Effect::ShiftOpened {
                    terminal: cmd.terminal.clone(),
                    seq,
                })
            }
            CommandBody::CloseShift => {
                let mut t = self.terminal_allowed()?.expect("windows are registered");
                let Some(shift) = t.shift.take() else {
                    return reject(
                        ReasonCode::ShiftNotOpen,
                        format!("window {} has no open shift", t.id),
                    );
                };
                let report = ShiftReport {
                    terminal: t.id.clone(),
                    seq: shift.seq,
                    operator: shift.operator,
                    opened_at: shift.opened_at,
                    closed_at: cmd.at,
                    lines: shift.totals,
                    cash_expected: t.cash_box,
                };
                // The cash is handed over with the report: the box starts the next shift empty.
                t.cash_box = Money::ZERO;
                self.terminals.insert(t.id.clone(), t);
                self.reports.push(Report::Shift(report.clone()));
                Ok(Effect::ShiftClosed(report))
            }
            CommandBody::CollectCash { counted } => {
                let mut t = self.terminal_allowed()?.expect("kiosks are registered");
                let operator = self.operator()?;
                if counted.is_negative() {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("counted cash {counted} is negative"),
                    );
                }
                t.collections += 1;
                let expected = t.cash_box;
                let report = CollectionReport {
                    terminal: t.id.clone(),
                    seq: t.collections,
                    operator,
                    at: cmd.at,
                    expected,
                    counted: *counted,
                    difference: counted
                        .checked_sub(expected)
                        .expect("cash amounts within range"),
                };
                t.cash_box = Money::ZERO;
                self.terminals.insert(t.id.clone(), t);
                self.reports.push(Report::Collection(report.clone()));
                Ok(Effect::CashCollected(report))
            }
            CommandBody::RecordHisReconciliation { report } => {
                self.terminal_allowed()?;
                self.reports.push(Report::HisReconciliation(report.clone()));
                Ok(Effect::ReconciliationRecorded {
                    date: report.date.clone(),
                    differences: report.differences.len() as u64,
                })
            }
            CommandBody::RecordReconciliation { report } => {
                self.terminal_allowed()?;
                let mut report = report.clone();
                self.keep_adjustments(&mut report);
                self.reports.push(Report::Reconciliation(report.clone()));
                Ok(Effect::ReconciliationRecorded {
                    date: report.date.clone(),
                    differences: report.differences.len() as u64,
                })
            }
        }
    }

    fn issue_card(
        &mut self,
        terminal: Option<Terminal>,
        card: &CardNo,
        card_kind: CardKind,
        holder: &Holder,
        first_deposit: Option<Money>,
    ) -> Rule<Effect> {
        holder
            .check()
            .or_else(|e| reject(ReasonCode::InvalidHolder, e))?;
        if let Some(deposit) = first_deposit {
            self.require_shift_at_window(&terminal)?;
            let deposit = self.amount(deposit)?;
            if deposit < self.ctx.rules.min_first_deposit {
                return reject(
                    ReasonCode::BelowMinimumDeposit,
                    format!(
                        "a first deposit is at least {}, not {deposit}",
                        self.ctx.rules.min_first_deposit
                    ),
                );
            }
            self.kiosk_cash(deposit)?;
        }
        if self.card(card).is_some() {
            return reject(
                ReasonCode::CardAlreadyExists,
                format!("card {card} is already issued"),
            );
        }
        // 实名: one account per person; a second card binds to the existing account.
        let (account, existing_account) = match self.person(&holder.person) {
            Some(id) => (self.account_exists(id)?, true),
            None => {
                let account = Account {
                    id: AccountId(self.ctx.txn.0),
                    holder: holder.clone(),
                    balance: Money::ZERO,
                    overdraft_limit: Money::ZERO,
                    status: AccountStatus::Active,
                    version: 0,
                    opened_at: self.cmd.at,
                    last_activity_at: self.cmd.at,
                };
                self.persons.insert(holder.person.clone(), account.id);
                (account, false)
            }
        };
        if first_deposit.is_some() {
            self.active(account.clone())?;
        }
        self.cards.insert(
            card.clone(),
            Card {
                no: card.clone(),
                kind: card_kind,
                account: account.id,
                status: CardStatus::Active,
            },
        );
        let mut balance = account.balance;
        self.put_account(account.clone());
        if let Some(deposit) = first_deposit {
            balance = self.post(Movement {
                account: account.id,
                kind: EntryKind::CashDeposit,
                channel: Channel::Cash,
                amount: deposit,
                bill: None,
                bank_ref: None,
                terminal: self.cmd.terminal.clone(),
            });
        }
        Ok(Effect::CardIssued {
            account: account.id,
            card: card.clone(),
            existing_account,
            balance,
        })
    }

    /// 退费 into the account or in cash at a window: a bill paid from the account, or one paid
    /// by card or channel whose online refund `declined` was declined (or reversed). Money paid
    /// by card or channel goes back only there otherwise: refunded here, it could leave as cash.
    fn refund(
        &mut self,
        bill: &BillId,
        amount: Option<Money>,
        to: RefundTo,
        declined: Option<&BankRef>,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let mut b = self.bill_exists(bill)?;
        let (payment, left) = self.refundable(&b)?;
        let mut fallback = None;
        match (payment.channel, declined) {
            (Channel::Account, None) => {}
            (Channel::Account, Some(_)) => {
                return reject(
                    ReasonCode::RefundChannelNotAllowed,
                    format!(
                        "bill {bill} was paid from the account; refund it without a declined bank reference"
                    ),
                );
            }
            (channel, None) => {
                return reject(
                    ReasonCode::RefundChannelNotAllowed,
                    format!(
                        "bill {bill} was paid by {channel:?}; it is refunded to the card or channel that paid (into the account or in cash only after that refund is declined)"
                    ),
                );
            }
            (_, Some(bank_ref)) => {
                let declined_op = self.bank_op(bank_ref).filter(|op| {
                    op.purpose == (BankPurpose::Refund { bill: bill.clone() })
                        && matches!(op.state, BankOpState::Declined | BankOpState::Reversed)
                });
                // What the declined refund still lets go another way: the bill's latest
                // declined refund, up to its amount, once; or, for a bill declined before
                // this release (it records none), the declined refund while nothing has been
                // refunded yet.
                let allowed = match declined_op {
                    Some(_) if b.declined_refund.as_ref() == Some(bank_ref) => b.declined_left,
                    Some(op) if b.declined_refund.is_none() && b.refunded.is_zero() => op.amount,
                    _ => Money::ZERO,
                };
                if allowed.is_zero() {
                    return reject(
                        ReasonCode::RefundChannelNotAllowed,
                        format!(
                            "{bank_ref} is not the latest declined online refund of bill {bill}, or what it declined has gone another way already; refund it to the card or channel that paid"
                        ),
                    );
                }
                fallback = Some(allowed);
            }
        }
        let left = match fallback {
            Some(allowed) if allowed < left => allowed,
            _ => left,
        };
        let amount = self.refund_amount(&b, left, amount)?;
        if fallback.is_some() {
            b.declined_left = b
                .declined_left
                .checked_sub(amount)
                .filter(|rest| !rest.is_negative())
                .unwrap_or(Money::ZERO);
            if b.declined_left.is_zero() {
                b.declined_refund = None;
            }
        }
        let account = self.active(self.account_exists(b.account)?)?;
        let (kind, channel) = match to {
            RefundTo::Account => (EntryKind::Refund, Channel::Account),
            RefundTo::Cash => (EntryKind::CashRefund, Channel::Cash),
        };
        let balance = self.post(Movement {
            account: account.id,
            kind,
            channel,
            amount,
            bill: Some(bill.clone()),
            bank_ref: None,
            terminal: self.cmd.terminal.clone(),
        });
        Self::mark_refunded(&mut b, amount);
        self.bill_event(&b, BillEventKind::Refunded, amount, Some(channel));
        self.bills.insert(b.id.clone(), b);
        Ok(Effect::BalanceChanged {
            account: account.id,
            txn: self.ctx.txn,
            amount,
            balance,
        })
    }

    /// 调账: an entry a person makes, with a reason and a reference. Naming a reconciliation
    /// difference, only an open one (not one reconciliation resolved, nor one a reversal is
    /// settling), by its amount and on the account of its operation; the day's report then
    /// shows it resolved by this entry. The account may be frozen (a correction is not a
    /// payment) but does not go below its overdraft.
    fn adjust(
        &mut self,
        id: AccountId,
        direction: AdjustDirection,
        amount: Money,
        reason: &str,
        reference: &str,
        difference: Option<&DifferenceRef>,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let operator = self.operator()?;
        let amount = self.amount(amount)?;
        for (field, text, max) in [("reason", reason, 200), ("reference", reference, 64)] {
            if text.trim().is_empty()
                || text.chars().count() > max
                || text.chars().any(char::is_control)
            {
                return reject(
                    ReasonCode::InvalidAdjustment,
                    format!("an adjustment's {field} is 1 to {max} characters of plain text"),
                );
            }
        }
        let account = self.account_exists(id)?;
        let resolved = match difference {
            None => None,
            Some(DifferenceRef { date, bank_ref }) => {
                let key = format!("recon/{date}");
                let Some(Report::Reconciliation(mut report)) = self.report(&key) else {
                    return reject(
                        ReasonCode::DifferenceNotFound,
                        format!("no reconciliation report for {date}"),
                    );
                };
                let Some(d) = report
                    .differences
                    .iter_mut()
                    .find(|d| &d.bank_ref == bank_ref)
                else {
                    return reject(
                        ReasonCode::DifferenceNotFound,
                        format!("the report of {date} has no difference for {bank_ref}"),
                    );
                };
                if !d.resolution.starts_with("open") {
                    return reject(
                        ReasonCode::DifferenceAlreadyResolved,
                        format!(
                            "the difference for {bank_ref} on {date} is {}",
                            d.resolution
                        ),
                    );
                }
                let (due, direction_due, account_due) = self.adjustment_due(d, date)?;
                if amount != due || direction != direction_due || id != account_due {
                    return reject(
                        ReasonCode::AdjustmentMismatch,
                        format!(
                            "the difference for {bank_ref} on {date} calls for {direction_due:?} {due} on account {account_due}, not {direction:?} {amount} on {id}"
                        ),
                    );
                }
                d.resolution = format!(
                    "resolved by adjustment {} ({operator}, {direction:?} {amount}): {reason} [{reference}]",
                    self.ctx.txn
                );
                Some(report)
            }
        };
        let kind = match direction {
            AdjustDirection::Credit => EntryKind::AdjustmentCredit,
            AdjustDirection::Debit => {
                let floor = account.overdraft_limit.negated();
                if account
                    .balance
                    .checked_sub(amount)
                    .is_none_or(|after| after < floor)
                {
                    return reject(
                        ReasonCode::InsufficientFunds,
                        format!(
                            "account {id} holds {}; taking {amount} would go below its overdraft {}",
                            account.balance, account.overdraft_limit
                        ),
                    );
                }
                EntryKind::AdjustmentDebit
            }
        };
        let balance = self.post(Movement {
            account: id,
            kind,
            channel: Channel::Account,
            amount,
            bill: None,
            bank_ref: None,
            terminal: self.cmd.terminal.clone(),
        });
        if let Some(report) = resolved {
            self.reports.push(Report::Reconciliation(report));
        }
        Ok(Effect::BalanceChanged {
            account: id,
            txn: self.ctx.txn,
            amount,
            balance,
        })
    }

    /// What a reconciliation difference calls for. Only one with no automatic path is
    /// adjusted: the bank and a completed operation of ours disagree on the amount. The
    /// adjustment gives the patient what the bank took from (or did not give to) the card
    /// beyond our books, or takes back what we booked beyond the bank. Everything else has
    /// another way out that an adjustment would double: an operation still in flight (its saga
    /// settles it), one declined or reversed here (reconciliation reverses it at the bank), a
    /// reference we never started (the bank returns it), one not on the statement (it may be
    /// on the next day's).
    fn adjustment_due(
        &self,
        d: &crate::model::ReconDifference,
        date: &str,
    ) -> Rule<(Money, AdjustDirection, AccountId)> {
        let bank_ref = &d.bank_ref;
        let op = self
            .bank_op(bank_ref)
            .filter(|op| op.state == BankOpState::Completed);
        let (Some(op), DifferenceKind::AmountDiffers, Some(bank)) = (op, d.kind, d.bank_amount)
        else {
            return reject(
                ReasonCode::AdjustmentMismatch,
                format!(
                    "the difference for {bank_ref} on {date} ({:?}, ours {:?}) is not settled by an adjustment: {}",
                    d.kind, d.journal_state, d.resolution
                ),
            );
        };
        let more_at_bank = bank.cents() - op.amount.cents();
        let due = Money::from_cents(more_at_bank.abs());
        // A debit took money from the card: the bank taking more means the patient is owed it.
        // A credit gave money to the card: the bank giving more means the patient owes it.
        let credit = (op.kind == BankOpKind::Debit) == (more_at_bank > 0);
        let direction = if credit {
            AdjustDirection::Credit
        } else {
            AdjustDirection::Debit
        };
        Ok((due, direction, op.account))
    }

    /// A reconciliation run again for a day keeps what people resolved by adjustment, so a
    /// difference is never adjusted twice: the same reference, kind and amounts in the new
    /// report shows the same resolution; a reference found again with another kind or amounts,
    /// or no longer found (the bank corrected its statement, say), is marked for review with
    /// the adjustment named, since it now stands alone. Either way it is no longer "open".
    fn keep_adjustments(&self, report: &mut crate::model::ReconciliationReport) {
        const ADJUSTED: &str = "resolved by adjustment";
        let Some(Report::Reconciliation(before)) = self.report(&format!("recon/{}", report.date))
        else {
            return;
        };
        for old in &before.differences {
            let Some(at) = old.resolution.find(ADJUSTED) else {
                continue;
            };
            let adjusted = &old.resolution[at..];
            match report
                .differences
                .iter_mut()
                .find(|d| d.bank_ref == old.bank_ref)
            {
                Some(d)
                    if d.kind == old.kind
                        && d.bank_amount == old.bank_amount
                        && d.journal_amount == old.journal_amount =>
                {
                    d.resolution = old.resolution.clone();
                }
                Some(d) => {
                    d.resolution = format!(
                        "review: now {:?} (bank {:?}, ours {:?}), after {adjusted}",
                        d.kind, d.bank_amount, d.journal_amount
                    );
                }
                None => {
                    let mut gone = old.clone();
                    gone.resolution = format!("review: no longer a difference, after {adjusted}");
                    report.differences.push(gone);
                }
            }
        }
    }

    fn post_bill(
        &mut self,
        bill: &BillId,
        card: &CardNo,
        kind: BillKind,
        amount: Money,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let amount = self.amount(amount)?;
        if self.bill(bill).is_some() {
            return reject(
                ReasonCode::BillAlreadyExists,
                format!("bill {bill} is already posted"),
            );
        }
        // A bill belongs to the account, whatever the state of the card HIS knows it by.
        let account = self.account_exists(self.card_exists(card)?.account)?;
        self.bills.insert(
            bill.clone(),
            Bill {
                id: bill.clone(),
                account: account.id,
                kind,
                amount,
                status: BillStatus::Unpaid,
                payment: None,
                pending_op: None,
                posted_at: self.cmd.at,
                cancelled: Money::ZERO,
                refunded: Money::ZERO,
                invoiced: false,
                declined_refund: None,
                declined_left: Money::ZERO,
            },
        );
        Ok(Effect::BillPosted {
            bill: bill.clone(),
            account: account.id,
        })
    }

    fn set_account_status(&mut self, id: AccountId, status: AccountStatus) -> Rule<Effect> {
        self.terminal_allowed()?;
        let mut account = self.account_exists(id)?;
        account.status = status;
        self.put_account(account);
        Ok(Effect::AccountStatusChanged {
            account: id,
            status,
        })
    }

    /// The first step of a saga: checks, records the operation Pending, and for a withdrawal
    /// takes the money from the account now (it is given back if the bank declines).
    fn start_bank_op(
        &mut self,
        card: &CardNo,
        external: &External,
        purpose: &BankPurpose,
        amount: Option<Money>,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let (_, account) = self.card_in_use(card)?;
        let bank_ref = BankRef::for_txn(self.ctx.txn);
        let no_amount_for_bill = |amount: Option<Money>| match amount {
            None => Ok(()),
            Some(a) => reject(
                ReasonCode::InvalidAmount,
                format!("a bill's payment is the bill's amount; do not send one ({a})"),
            ),
        };
        let (kind, amount) = match purpose {
            BankPurpose::TopUp => {
                let Some(a) = amount else {
                    return reject(ReasonCode::InvalidAmount, "a top-up needs an amount");
                };
                (BankOpKind::Debit, self.amount(a)?)
            }
            BankPurpose::PayBill { bill } => {
                no_amount_for_bill(amount)?;
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                self.payable(&b)?;
                let amount = b.amount;
                b.pending_op = Some(bank_ref.clone());
                self.bills.insert(b.id.clone(), b);
                (BankOpKind::Debit, amount)
            }
            BankPurpose::Refund { bill } => {
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                let (payment, left) = self.refundable(&b)?;
                self.same_channel_as_payment(&payment, external, bill)?;
                let amount = self.refund_amount(&b, left, amount)?;
                b.pending_op = Some(bank_ref.clone());
                b.declined_refund = None;
                b.declined_left = Money::ZERO;
                self.bills.insert(b.id.clone(), b);
                (BankOpKind::Credit, amount)
            }
            BankPurpose::Withdraw => {
                let amount = self.withdrawal_amount(&account, amount)?;
                self.post(Movement {
                    account: account.id,
                    kind: EntryKind::Withdrawal,
                    channel: external.channel(),
                    amount,
                    bill: None,
                    bank_ref: Some(bank_ref.clone()),
                    terminal: self.cmd.terminal.clone(),
                });
                (BankOpKind::Credit, amount)
            }
        };
        self.bank_ops.insert(
            bank_ref.clone(),
            BankOp {
                bank_ref: bank_ref.clone(),
                kind,
                purpose: purpose.clone(),
                external: external.clone(),
                account: account.id,
                amount,
                state: BankOpState::Pending,
                request: self.cmd.request.clone(),
                terminal: self.cmd.terminal.clone(),
                steps: 0,
                bank_note: String::new(),
                started_at: self.cmd.at,
                updated_at: self.cmd.at,
            },
        );
        let balance = self.account(account.id).expect("read above").balance;
        Ok(Effect::BankOpStarted {
            bank_ref,
            kind,
            account: account.id,
            amount,
            balance,
        })
    }

    /// Online refunds go back only the way the bill was paid: the same card or channel account.
    fn same_channel_as_payment(
        &self,
        payment: &Payment,
        external: &External,
        bill: &BillId,
    ) -> Rule<()> {
        let paid_by = payment
            .bank_ref
            .as_ref()
            .and_then(|r| self.bank_op(r))
            .map(|op| op.external);
        if paid_by.as_ref() != Some(external) {
            return reject(
                ReasonCode::RefundChannelNotAllowed,
                format!(
                    "bill {bill} was paid by {:?}; an online refund goes only to the card or channel that paid",
                    payment.channel
                ),
            );
        }
        Ok(())
    }

    /// The later steps of a saga. Pending may go anywhere; InDoubt may be completed (the status
    /// query found it) or reversed; Completed, Declined and Reversed are final.
    fn settle_bank_op(
        &mut self,
        bank_ref: &BankRef,
        to: BankOpState,
        bank_note: &str,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let Some(mut op) = self.bank_op(bank_ref) else {
            return reject(
                ReasonCode::BankOpNotFound,
                format!("bank operation {bank_ref} is not known"),
            );
        };
        let allowed = match (op.state, to) {
            (BankOpState::Pending, _) => true,
            (BankOpState::InDoubt, BankOpState::InDoubt) => true,
            (BankOpState::InDoubt, BankOpState::Completed | BankOpState::Reversed) => true,
            // A decline that arrives after we stopped waiting still ends the operation.
            (BankOpState::InDoubt, BankOpState::Declined) => true,
            _ => false,
        };
        if !allowed {
            return reject(
                ReasonCode::BankOpAlreadyFinal,
                format!(
                    "bank operation {bank_ref} is {:?} and cannot become {to:?}",
                    op.state
                ),
            );
        }
        let channel = op.external.channel();
        let account_id = op.account;
        // The account exists: the operation was started against it.
        let balance_before = self.account_exists(account_id)?.balance;
        let movement = |kind| Movement {
            account: account_id,
            kind,
            channel,
            amount: op.amount,
            bill: match &op.purpose {
                BankPurpose::PayBill { bill } | BankPurpose::Refund { bill } => Some(bill.clone()),
                _ => None,
            },
            bank_ref: Some(bank_ref.clone()),
            terminal: op.terminal.clone(),
        };
        let mut balance = balance_before;
        match to {
            BankOpState::Completed => match &op.purpose {
                BankPurpose::TopUp => balance = self.post(movement(EntryKind::TopUp)),
                BankPurpose::PayBill { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.status = BillStatus::Paid;
                    b.pending_op = None;
                    b.payment = Some(Payment {
                        channel,
                        txn: self.ctx.txn,
                        bank_ref: Some(bank_ref.clone()),
                        terminal: op.terminal.clone(),
                        at: self.cmd.at,
                    });
                    self.bill_event(&b, BillEventKind::Paid, op.amount, Some(channel));
                    self.bills.insert(b.id.clone(), b);
                    balance = self.post(movement(EntryKind::ExternalBillPayment));
                }
                BankPurpose::Refund { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    Self::mark_refunded(&mut b, op.amount);
                    b.pending_op = None;
                    self.bill_event(&b, BillEventKind::Refunded, op.amount, Some(channel));
                    self.bills.insert(b.id.clone(), b);
                    balance = self.post(movement(EntryKind::ExternalRefund));
                }
                // The money left the account when the withdrawal started.
                BankPurpose::Withdraw => {}
            },
            BankOpState::Declined | BankOpState::Reversed => match &op.purpose {
                BankPurpose::TopUp => {}
                BankPurpose::PayBill { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.pending_op = None;
                    self.bills.insert(b.id.clone(), b);
                }
                // The card did not take it: this much may go into the account or out in cash.
                BankPurpose::Refund { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.pending_op = None;
                    b.declined_refund = Some(bank_ref.clone());
                    b.declined_left = op.amount;
                    self.bills.insert(b.id.clone(), b);
                }
                BankPurpose::Withdraw => {
                    balance = self.post(movement(EntryKind::WithdrawalReturned));
                }
            },
            BankOpState::InDoubt | BankOpState::Pending => {}
        }
        op.state = to;
        op.steps += 1;
        op.bank_note = bank_note.chars().take(128).collect();
        op.updated_at = self.cmd.at;
        self.bank_ops.insert(bank_ref.clone(), op);
        Ok(Effect::BankOpSettled {
            bank_ref: bank_ref.clone(),
            state: to,
            account: account_id,
            balance,
        })
    }
}

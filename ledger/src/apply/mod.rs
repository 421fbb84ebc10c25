//! `apply`: every business rule of the ledger, in one deterministic function. The rules live
//! in one file per capability (cards, cash, terminals and shifts, bills and refunds, bank
//! operations, accounts, administration, reconciliation); this file holds what they share.
//!
//! A command runs against a `Staged` overlay of the state. Only when every rule passed and the
//! account invariants still hold are its writes handed to the `StateView`; a rejected command
//! writes nothing but its outcome under its request id. So nothing is ever half-applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{
    AdjustDirection, Command, CommandBody, DifferenceRef, EpisodeFunds, RefundTo,
};
use crate::credential::Credential;
use crate::ids::{
    AccountId, AdmissionId, BankRef, BillId, CardNo, OperatorId, PersonKey, RequestId, TerminalId,
    TerminalKind, TxnId, WardId,
};
use crate::model::{
    Account, AccountStatus, BankOp, BankOpKind, BankOpState, BankPurpose, Bill, BillEvent,
    BillEventKind, BillKind, BillStatus, Card, CardKind, CardStatus, Channel, CollectionReport,
    DifferenceKind, EntryKind, Episode, EpisodeDeposit, EpisodeStatus, External, Holder,
    InsuranceSplit, InsuredBill, JournalEntry, Payment, Report, Shift, ShiftReport, Terminal,
    TerminalDay, TerminalDayReport, TerminalStatus, add_to_lines,
};
use crate::money::Money;
use crate::outcome::{Effect, Outcome, ReasonCode, Rejection};
use crate::permissions::{allowed_out_of_service, allowed_terminals};
use crate::view::{RequestRecord, StateView};

mod accounts;
mod admin;
mod bank;
mod bills;
mod cards;
mod cash;
mod episodes;
mod reconciliation;
mod terminals;

/// The cluster-wide business limits. Every node must apply with the same `Rules`: they are
/// replicated state, set by an admin (`SetRules`, in the audit trail); until the first is set
/// every node applies the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// No single transaction moves more than this.
    pub single_txn_limit: Money,
    /// The smallest first deposit when a card is issued with one.
    pub min_first_deposit: Money,
    /// The largest overdraft (绿色通道) an account may be given.
    pub max_overdraft: Money,
}

impl Rules {
    /// The highest single-transaction limit an admin may set.
    pub fn highest_limit() -> Money {
        Money::from_yuan(1_000_000)
    }

    /// The lowest single-transaction limit an admin may set: below it the hospital would stop.
    pub fn lowest_limit() -> Money {
        Money::from_yuan(100)
    }

    /// The highest overdraft maximum an admin may set (绿色通道 is for emergencies).
    pub fn highest_overdraft() -> Money {
        Money::from_yuan(200_000)
    }

    /// Rules an admin may set: a limit from [`Rules::lowest_limit`] to
    /// [`Rules::highest_limit`], a minimum first deposit from 0 to the limit, an overdraft
    /// maximum from 0 to the limit and at most [`Rules::highest_overdraft`].
    pub fn check(&self) -> Result<(), String> {
        if self.single_txn_limit < Rules::lowest_limit()
            || self.single_txn_limit > Rules::highest_limit()
        {
            return Err(format!(
                "single_txn_limit {}: from {} to {}",
                self.single_txn_limit,
                Rules::lowest_limit(),
                Rules::highest_limit()
            ));
        }
        if self.max_overdraft > Rules::highest_overdraft() {
            return Err(format!(
                "max_overdraft {}: at most {}",
                self.max_overdraft,
                Rules::highest_overdraft()
            ));
        }
        for (name, value) in [
            ("min_first_deposit", self.min_first_deposit),
            ("max_overdraft", self.max_overdraft),
        ] {
            if value.is_negative() || value > self.single_txn_limit {
                return Err(format!(
                    "{name} {value}: from 0 to the single-transaction limit {}",
                    self.single_txn_limit
                ));
            }
        }
        Ok(())
    }
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
    /// The rules until an admin has set some (then the state's apply).
    pub rules: Rules,
}

impl ApplyCtx {
    /// This context with the rules the state holds, when an admin has set them.
    fn with_rules_of<V: StateView>(&self, view: &V) -> ApplyCtx {
        ApplyCtx {
            rules: view.rules().unwrap_or(self.rules),
            ..*self
        }
    }
}

/// Applies one command. Deterministic: the same commands in the same order on the same state
/// give the same outcomes and the same writes on every node.
pub fn apply<V: StateView>(cmd: &Command, view: &mut V, ctx: &ApplyCtx) -> Outcome {
    let ctx = &ctx.with_rules_of(view);
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
    let ctx = &ctx.with_rules_of(view);
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
    episodes: BTreeMap<AdmissionId, Episode>,
    insured_bills: BTreeMap<BillId, InsuredBill>,
    rules: Option<Rules>,
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
            episodes: BTreeMap::new(),
            insured_bills: BTreeMap::new(),
            rules: None,
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
    fn episode(&self, id: &AdmissionId) -> Option<Episode> {
        self.episodes
            .get(id)
            .cloned()
            .or_else(|| self.base.episode(id))
    }
    fn insured_bill(&self, bill: &BillId) -> Option<InsuredBill> {
        self.insured_bills
            .get(bill)
            .cloned()
            .or_else(|| self.base.insured_bill(bill))
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
        // The journal is keyed by account and transaction: a second entry of one command on
        // one account would overwrite the first in storage.
        for (i, entry) in self.journal.iter().enumerate() {
            if self.journal[..i].iter().any(|e| e.account == entry.account) {
                return reject(
                    ReasonCode::InvariantViolation,
                    format!(
                        "{} would post two journal entries on account {}",
                        self.cmd.body.name(),
                        entry.account
                    ),
                );
            }
        }
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
            episodes,
            insured_bills,
            rules,
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
        for episode in episodes.into_values() {
            base.put_episode(episode);
        }
        for insured in insured_bills.into_values() {
            base.put_insured_bill(insured);
        }
        if let Some(rules) = rules {
            base.put_rules(rules);
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
                EntryKind::CashDeposit | EntryKind::EpisodeDeposit => {
                    terminal.cash_box.checked_add(amount)
                }
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
        match &self.cmd.body {
            CommandBody::IssueCard { .. }
            | CommandBody::ReportLoss { .. }
            | CommandBody::CancelLoss { .. }
            | CommandBody::ReplaceCard { .. } => self.execute_cards(),
            CommandBody::DepositCash { .. } | CommandBody::WithdrawCash { .. } => {
                self.execute_cash()
            }
            CommandBody::RegisterTerminal { .. }
            | CommandBody::SetTerminalStatus { .. }
            | CommandBody::OpenShift
            | CommandBody::CloseShift
            | CommandBody::CollectCash { .. } => self.execute_terminals(),
            CommandBody::PostBill { .. }
            | CommandBody::PostInsuredBill { .. }
            | CommandBody::CancelBill { .. }
            | CommandBody::CancelBillPart { .. }
            | CommandBody::MarkInvoiced { .. }
            | CommandBody::PayBill { .. }
            | CommandBody::Refund { .. }
            | CommandBody::RefundToAccount { .. }
            | CommandBody::RefundBill { .. } => self.execute_bills(),
            CommandBody::StartBankOp { .. }
            | CommandBody::CompleteBankOp { .. }
            | CommandBody::DeclineBankOp { .. }
            | CommandBody::MarkBankOpInDoubt { .. }
            | CommandBody::ReverseBankOp { .. }
            | CommandBody::AuthorizePayment { .. }
            | CommandBody::CapturePayment { .. }
            | CommandBody::ReleaseAuthorization { .. }
            | CommandBody::ExpireAuthorization { .. } => self.execute_bank(),
            CommandBody::Freeze { .. }
            | CommandBody::Unfreeze { .. }
            | CommandBody::SetOverdraft { .. } => self.execute_accounts(),
            CommandBody::PutCredential { .. }
            | CommandBody::RevokeCredential { .. }
            | CommandBody::RevokeBootstrapCredential { .. }
            | CommandBody::PruneRequests { .. }
            | CommandBody::RecordAccess { .. }
            | CommandBody::RecordMembership { .. }
            | CommandBody::SetRules { .. } => self.execute_admin(),
            CommandBody::OpenEpisode { .. }
            | CommandBody::DepositToEpisode { .. }
            | CommandBody::PostEpisodeCharges { .. }
            | CommandBody::FinalizeEpisode { .. }
            | CommandBody::SettleEpisode { .. } => self.execute_episodes(),
            CommandBody::Adjust { .. }
            | CommandBody::RecordReconciliation { .. }
            | CommandBody::RecordHisReconciliation { .. } => self.execute_reconciliation(),
        }
    }
}

//! The balance audit (稽核): DOMAIN.md's invariants 1, 2, 3 and 5 recomputed from the stored
//! state alone, one account at a time, so a node can audit millions of accounts by streaming
//! them in key order.
//!
//! Feed every account with its journal entries (in transaction order), then every bank
//! operation, then [`Audit::finish`]. Each check that fails adds a problem; the report keeps the
//! first [`MAX_PROBLEMS`] and counts all.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    Account, AccountId, BankOp, BankOpKind, BankOpState, BankPurpose, BankRef, BillId, Channel,
    EntryKind, Episode, EpisodeStatus, JournalEntry, Money,
};

/// Problems described in full in a report; the rest are only counted.
pub const MAX_PROBLEMS: usize = 100;

/// The money flows that explain the sum of the balances (invariant 2), from the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flows {
    pub cash_in: Money,
    pub cash_out: Money,
    pub top_ups: Money,
    pub payments: Money,
    pub refunds: Money,
    pub card_withdrawals: Money,
    pub withdrawals_returned: Money,
    /// 调账 into and out of accounts.
    pub adjustments_in: Money,
    pub adjustments_out: Money,
    /// Inpatient deposits taken from accounts, and discharge surpluses paid into them.
    pub episode_deposits_from_accounts: Money,
    pub episode_refunds_to_accounts: Money,
}

impl Flows {
    /// What the balances must sum to.
    pub fn expected_total(&self) -> Option<Money> {
        self.cash_in
            .checked_sub(self.cash_out)?
            .checked_add(self.top_ups)?
            .checked_sub(self.payments)?
            .checked_add(self.refunds)?
            .checked_sub(self.card_withdrawals)?
            .checked_add(self.withdrawals_returned)?
            .checked_add(self.adjustments_in)?
            .checked_sub(self.adjustments_out)?
            .checked_sub(self.episode_deposits_from_accounts)?
            .checked_add(self.episode_refunds_to_accounts)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub accounts: u64,
    pub entries: u64,
    pub bank_ops: u64,
    /// Bank operations still Pending or InDoubt (invariant 5 asks for none once the bank has
    /// been reachable for a while).
    pub unresolved_bank_ops: u64,
    pub total_balance: Money,
    pub flows: Flows,
    /// Inpatient episodes audited, and the money they hold (deposits not yet settled or
    /// paid back): each episode's must be what its journal entries leave.
    pub episodes: u64,
    pub episodes_held: Money,
    pub problem_count: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }
}

/// One bank-backed journal entry, kept until its operation is seen.
struct RefEntry {
    kind: EntryKind,
    amount: Money,
    account: AccountId,
    channel: Channel,
}

#[derive(Default)]
pub struct Audit {
    accounts: u64,
    entries: u64,
    bank_ops: u64,
    unresolved: u64,
    total: i64,
    flows: [i64; 11],
    episodes: u64,
    episodes_held: i64,
    /// What each episode's journal entries leave it holding, by admission id, until the
    /// episode itself is seen.
    episode_money: HashMap<BillId, i64>,
    /// Top-ups and card withdrawals/returns as the bank operations say they should be.
    by_ops: [i64; 3],
    by_ref: HashMap<BankRef, Vec<RefEntry>>,
    /// Holds (预授权) and their captures, checked against each other at the end.
    holds: HashMap<BankRef, BankOp>,
    captures: Vec<BankOp>,
    problem_count: u64,
    problems: Vec<String>,
}

const CASH_IN: usize = 0;
const CASH_OUT: usize = 1;
const TOP_UPS: usize = 2;
const PAYMENTS: usize = 3;
const REFUNDS: usize = 4;
const CARD_WITHDRAWALS: usize = 5;
const RETURNED: usize = 6;
const ADJUSTED_IN: usize = 7;
const ADJUSTED_OUT: usize = 8;
const EPISODE_FROM_ACCOUNTS: usize = 9;
const EPISODE_TO_ACCOUNTS: usize = 10;

fn external(channel: Channel) -> bool {
    matches!(channel, Channel::BankCard | Channel::ThirdParty)
}

impl Audit {
    pub fn new() -> Audit {
        Audit::default()
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    /// A journal entry whose account is not stored (found while streaming the journal).
    pub fn orphan_entry(&mut self, entry: &JournalEntry) {
        self.entries += 1;
        self.problem(format!(
            "journal entry {} names unknown account {}",
            entry.txn, entry.account
        ));
    }

    /// One account and its whole journal, oldest first. Checks invariant 1 (the balance and
    /// every `balance_after` are the running sum) and 3 (not below the overdraft limit), and
    /// adds the entries to the flows.
    pub fn account<'a>(
        &mut self,
        account: &Account,
        journal: impl IntoIterator<Item = &'a JournalEntry>,
    ) {
        self.accounts += 1;
        let mut running: i64 = 0;
        let mut last_txn = None;
        for entry in journal {
            self.entries += 1;
            if entry.account != account.id {
                self.problem(format!(
                    "journal entry {} of account {} filed under {}",
                    entry.txn, entry.account, account.id
                ));
                continue;
            }
            if last_txn.is_some_and(|t| entry.txn <= t) {
                self.problem(format!("account {}: journal out of order", account.id));
            }
            last_txn = Some(entry.txn);
            if !entry.amount.is_positive() {
                self.problem(format!(
                    "journal entry {} has a non-positive amount {}",
                    entry.txn, entry.amount
                ));
            }
            let cents = entry.amount.cents();
            running += cents * i64::from(entry.kind.balance_sign());
            if entry.balance_after.cents() != running {
                self.problem(format!(
                    "invariant 1: account {} entry {} says balance after {} but the journal sums to {}",
                    account.id,
                    entry.txn,
                    entry.balance_after,
                    Money::from_cents(running)
                ));
            }
            self.flow(entry);
        }
        if account.balance.cents() != running {
            self.problem(format!(
                "invariant 1: account {} holds {} but its journal sums to {}",
                account.id,
                account.balance,
                Money::from_cents(running)
            ));
        }
        if account.overdraft_limit.is_negative()
            || account.balance < account.overdraft_limit.negated()
        {
            self.problem(format!(
                "invariant 3: account {} at {} with overdraft limit {}",
                account.id, account.balance, account.overdraft_limit
            ));
        }
        self.total += account.balance.cents();
    }

    fn flow(&mut self, e: &JournalEntry) {
        let cents = e.amount.cents();
        let (slot, channel_ok) = match e.kind {
            EntryKind::CashDeposit => (
                Some(CASH_IN),
                e.channel == Channel::Cash && e.bank_ref.is_none(),
            ),
            EntryKind::TopUp => (Some(TOP_UPS), external(e.channel) && e.bank_ref.is_some()),
            EntryKind::BillPayment => (
                Some(PAYMENTS),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_some(),
            ),
            EntryKind::Refund => (
                Some(REFUNDS),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_some(),
            ),
            EntryKind::Withdrawal if e.channel == Channel::Cash => {
                (Some(CASH_OUT), e.bank_ref.is_none())
            }
            EntryKind::Withdrawal => (
                Some(CARD_WITHDRAWALS),
                external(e.channel) && e.bank_ref.is_some(),
            ),
            EntryKind::WithdrawalReturned => {
                (Some(RETURNED), external(e.channel) && e.bank_ref.is_some())
            }
            EntryKind::AdjustmentCredit => (
                Some(ADJUSTED_IN),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_none(),
            ),
            EntryKind::AdjustmentDebit => (
                Some(ADJUSTED_OUT),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_none(),
            ),
            EntryKind::CashRefund => (
                None,
                e.channel == Channel::Cash && e.bank_ref.is_none() && e.bill.is_some(),
            ),
            EntryKind::ExternalBillPayment | EntryKind::ExternalRefund => (
                None,
                external(e.channel) && e.bank_ref.is_some() && e.bill.is_some(),
            ),
            EntryKind::EpisodeDeposit | EntryKind::EpisodeRefund => (
                None,
                e.bill.is_some()
                    && ((e.channel == Channel::Cash && e.bank_ref.is_none())
                        || (external(e.channel) && e.bank_ref.is_some())),
            ),
            EntryKind::EpisodeDepositFromAccount => (
                Some(EPISODE_FROM_ACCOUNTS),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_some(),
            ),
            EntryKind::EpisodeRefundToAccount => (
                Some(EPISODE_TO_ACCOUNTS),
                e.channel == Channel::Account && e.bank_ref.is_none() && e.bill.is_some(),
            ),
        };
        let into_episode = match e.kind {
            EntryKind::EpisodeDeposit | EntryKind::EpisodeDepositFromAccount => 1,
            EntryKind::EpisodeRefund | EntryKind::EpisodeRefundToAccount => -1,
            _ => 0,
        };
        if into_episode != 0
            && let Some(episode) = &e.bill
        {
            *self.episode_money.entry(episode.clone()).or_default() += into_episode * cents;
        }
        if let Some(slot) = slot {
            self.flows[slot] += cents;
        }
        if !channel_ok {
            self.problem(format!(
                "journal entry {} of kind {:?} has channel {:?}, bank ref {:?}, bill {:?}",
                e.txn, e.kind, e.channel, e.bank_ref, e.bill
            ));
        }
        if let Some(r) = &e.bank_ref {
            self.by_ref.entry(r.clone()).or_default().push(RefEntry {
                kind: e.kind,
                amount: e.amount,
                account: e.account,
                channel: e.channel,
            });
        }
    }

    /// One bank operation, after every account: its journal entries must follow from its
    /// state, and only from it.
    pub fn bank_op(&mut self, op: &BankOp) {
        self.bank_ops += 1;
        match &op.purpose {
            BankPurpose::Authorization { .. } => {
                if op.kind != BankOpKind::Hold {
                    self.problem(format!("hold {} is a {:?}", op.bank_ref, op.kind));
                }
                self.holds.insert(op.bank_ref.clone(), op.clone());
            }
            BankPurpose::Capture { .. } => self.captures.push(op.clone()),
            _ if op.state == BankOpState::Authorized => self.problem(format!(
                "bank op {} is AUTHORIZED but is no hold ({:?})",
                op.bank_ref, op.purpose
            )),
            _ => {}
        }
        if op.is_unresolved() {
            self.unresolved += 1;
        }
        let settled_back = matches!(op.state, BankOpState::Declined | BankOpState::Reversed);
        let completed = op.state == BankOpState::Completed;
        let mut expected: Vec<EntryKind> = match &op.purpose {
            BankPurpose::TopUp if completed => vec![EntryKind::TopUp],
            BankPurpose::PayBill { .. } | BankPurpose::Capture { .. } if completed => {
                vec![EntryKind::ExternalBillPayment]
            }
            BankPurpose::Refund { .. } if completed => vec![EntryKind::ExternalRefund],
            BankPurpose::Withdraw if settled_back => {
                vec![EntryKind::Withdrawal, EntryKind::WithdrawalReturned]
            }
            BankPurpose::Withdraw => vec![EntryKind::Withdrawal],
            BankPurpose::EpisodeDeposit { .. } if completed => vec![EntryKind::EpisodeDeposit],
            // Declined or reversed, the money went into the account by an entry of its own
            // (no bank reference): the episode's own audit covers it.
            BankPurpose::EpisodeRefund { .. } if completed => vec![EntryKind::EpisodeRefund],
            _ => vec![],
        };
        expected.sort();
        let entries = self.by_ref.remove(&op.bank_ref).unwrap_or_default();
        let mut kinds: Vec<EntryKind> = entries.iter().map(|e| e.kind).collect();
        kinds.sort();
        if kinds != expected {
            self.problem(format!(
                "bank op {} ({:?}, {:?}) has entries {kinds:?}, expected {expected:?}",
                op.bank_ref, op.purpose, op.state
            ));
        }
        if entries.iter().any(|e| {
            e.amount != op.amount || e.account != op.account || e.channel != op.external.channel()
        }) {
            self.problem(format!(
                "bank op {}: a journal entry differs in amount, account or channel",
                op.bank_ref
            ));
        }
        match op.purpose {
            BankPurpose::TopUp if completed => self.by_ops[0] += op.amount.cents(),
            BankPurpose::Withdraw => {
                self.by_ops[1] += op.amount.cents();
                if settled_back {
                    self.by_ops[2] += op.amount.cents();
                }
            }
            _ => {}
        }
    }

    /// One inpatient episode, after every account: what came in less what went back must be
    /// what its journal entries say; what it holds (that, less the final amount once
    /// discharged) is never below zero; before discharge nothing has left it, and after
    /// discharge only online refunds still under way remain. (The settlement itself is no
    /// journal entry: the final amount stays in the episode's record, and an account gets at
    /// most one entry per transaction.)
    pub fn episode(&mut self, ep: &Episode) {
        self.episodes += 1;
        let id = BillId::parse(ep.id.as_str()).expect("an admission id has a bill id's shape");
        let journal = self.episode_money.remove(&id).unwrap_or(0);
        let held = ep.held();
        self.episodes_held += held.cents();
        let kept = ep.deposited.cents() - ep.refunded.cents();
        if kept != journal {
            self.problem(format!(
                "episode {} took in {} and paid back {}, but its journal leaves {}",
                ep.id,
                ep.deposited,
                ep.refunded,
                Money::from_cents(journal)
            ));
        }
        let deposits: i64 = ep.deposits.iter().map(|d| d.amount.cents()).sum();
        let settled_ok = match ep.status {
            EpisodeStatus::Open | EpisodeStatus::Final => {
                ep.refunded.is_zero() && ep.refunding.is_zero()
            }
            EpisodeStatus::Discharged => held == ep.refunding && ep.deposits_in_flight == 0,
        };
        if held.is_negative() || deposits != ep.deposited.cents() || !settled_ok {
            self.problem(format!(
                "episode {} ({:?}): deposited {} in {} deposits summing to {}, refunded {}, refunding {}, holds {held}",
                ep.id,
                ep.status,
                ep.deposited,
                ep.deposits.len(),
                Money::from_cents(deposits),
                ep.refunded,
                ep.refunding
            ));
        }
    }

    /// Invariant 2 and the bank operations' totals; the report.
    /// Every capture against its hold: the same account, payer and at most its amount; named
    /// by the hold while under way or done, not once refused; a hold is done (`Completed`)
    /// exactly when its capture is; a hold names no capture that does not exist.
    fn check_holds(&mut self) {
        let holds = std::mem::take(&mut self.holds);
        let mut named: HashMap<BankRef, BankRef> = HashMap::new();
        for capture in std::mem::take(&mut self.captures) {
            let BankPurpose::Capture { authorization, .. } = &capture.purpose else {
                continue;
            };
            let r = &capture.bank_ref;
            let Some(hold) = holds.get(authorization) else {
                self.problem(format!("capture {r} of unknown hold {authorization}"));
                continue;
            };
            if capture.kind != BankOpKind::Debit
                || capture.account != hold.account
                || capture.external != hold.external
                || capture.amount > hold.amount
            {
                self.problem(format!(
                    "capture {r} ({:?} of {}) does not fit hold {authorization} ({})",
                    capture.kind, capture.amount, hold.amount
                ));
            }
            let refused = matches!(capture.state, BankOpState::Declined | BankOpState::Reversed);
            let names_it = matches!(&hold.purpose,
                BankPurpose::Authorization { capture: Some(c), .. } if c == r);
            let done = capture.state == BankOpState::Completed;
            let hold_done = hold.state == BankOpState::Completed;
            if names_it == refused || (names_it && done != hold_done) {
                self.problem(format!(
                    "capture {r} is {:?} and hold {authorization} is {:?} ({:?})",
                    capture.state, hold.state, hold.purpose
                ));
            }
            if names_it {
                named.insert(authorization.clone(), r.clone());
            }
        }
        for (r, hold) in &holds {
            let (capture, release) = match &hold.purpose {
                BankPurpose::Authorization { capture, release } => (capture.as_ref(), *release),
                _ => (None, false),
            };
            let found = named.get(r);
            let state_fits = match hold.state {
                BankOpState::Completed => capture.is_some(),
                BankOpState::Authorized => true,
                _ => capture.is_none(),
            };
            if capture != found || !state_fits || (release && capture.is_some()) {
                self.problem(format!(
                    "hold {r} is {:?} naming capture {capture:?}, found {found:?}",
                    hold.state
                ));
            }
        }
    }

    pub fn finish(mut self) -> AuditReport {
        self.check_holds();
        let orphans: Vec<BankRef> = self.by_ref.keys().cloned().collect();
        for r in orphans {
            self.problem(format!("journal entries name unknown bank op {r}"));
        }
        let mut strays: Vec<(BillId, i64)> = self
            .episode_money
            .drain()
            .filter(|(_, cents)| *cents != 0)
            .collect();
        strays.sort();
        for (episode, cents) in strays {
            self.problem(format!(
                "journal entries leave {} in episode {episode}, which is not stored",
                Money::from_cents(cents)
            ));
        }
        let f = self.flows;
        let expected = f[CASH_IN] - f[CASH_OUT] + f[TOP_UPS] - f[PAYMENTS] + f[REFUNDS]
            - f[CARD_WITHDRAWALS]
            + f[RETURNED]
            + f[ADJUSTED_IN]
            - f[ADJUSTED_OUT]
            - f[EPISODE_FROM_ACCOUNTS]
            + f[EPISODE_TO_ACCOUNTS];
        if self.total != expected {
            self.problem(format!(
                "invariant 2: Σ balances {} but the flows give {}",
                Money::from_cents(self.total),
                Money::from_cents(expected)
            ));
        }
        if self.by_ops != [f[TOP_UPS], f[CARD_WITHDRAWALS], f[RETURNED]] {
            self.problem(format!(
                "invariant 2: journal top-ups/card withdrawals/returned {}/{}/{}, bank operations say {}/{}/{}",
                Money::from_cents(f[TOP_UPS]),
                Money::from_cents(f[CARD_WITHDRAWALS]),
                Money::from_cents(f[RETURNED]),
                Money::from_cents(self.by_ops[0]),
                Money::from_cents(self.by_ops[1]),
                Money::from_cents(self.by_ops[2]),
            ));
        }
        AuditReport {
            accounts: self.accounts,
            entries: self.entries,
            bank_ops: self.bank_ops,
            unresolved_bank_ops: self.unresolved,
            total_balance: Money::from_cents(self.total),
            episodes: self.episodes,
            episodes_held: Money::from_cents(self.episodes_held),
            flows: Flows {
                cash_in: Money::from_cents(f[CASH_IN]),
                cash_out: Money::from_cents(f[CASH_OUT]),
                top_ups: Money::from_cents(f[TOP_UPS]),
                payments: Money::from_cents(f[PAYMENTS]),
                refunds: Money::from_cents(f[REFUNDS]),
                card_withdrawals: Money::from_cents(f[CARD_WITHDRAWALS]),
                withdrawals_returned: Money::from_cents(f[RETURNED]),
                adjustments_in: Money::from_cents(f[ADJUSTED_IN]),
                adjustments_out: Money::from_cents(f[ADJUSTED_OUT]),
                episode_deposits_from_accounts: Money::from_cents(f[EPISODE_FROM_ACCOUNTS]),
                episode_refunds_to_accounts: Money::from_cents(f[EPISODE_TO_ACCOUNTS]),
            },
            problem_count: self.problem_count,
            problems: self.problems,
        }
    }

    /// Audits an in-memory state (tests, tools).
    pub fn of_state(state: &crate::MemState) -> AuditReport {
        let mut audit = Audit::new();
        let mut journal: HashMap<AccountId, Vec<&JournalEntry>> = HashMap::new();
        for entry in &state.journal {
            if state.accounts.contains_key(&entry.account) {
                journal.entry(entry.account).or_default().push(entry);
            } else {
                audit.orphan_entry(entry);
            }
        }
        for (id, account) in &state.accounts {
            let entries = journal.remove(id).unwrap_or_default();
            audit.account(account, entries);
        }
        for op in state.bank_ops.values() {
            audit.bank_op(op);
        }
        for episode in state.episodes.values() {
            audit.episode(episode);
        }
        audit.finish()
    }
}

//! `StateView`: the reads and writes `apply` needs, and `MemState`, an in-memory implementation
//! for tests and tools. The RocksDB implementation lives in `storage`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::CommandBody;
use crate::credential::Credential;
use crate::ids::{
    AccountId, AdmissionId, BankRef, BillId, CardNo, InsuranceSettlementId, OperatorId, PersonKey,
    RequestId, TerminalId,
};
use crate::model::{
    Account, BankOp, Bill, BillEvent, Card, Episode, InsuredBill, JournalEntry, Report, Terminal,
    Timestamp,
};
use crate::outcome::Outcome;

/// What is kept under a request id: enough to answer a retry and to recognise a reused id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub terminal: TerminalId,
    pub operator: Option<OperatorId>,
    pub body: CommandBody,
    pub outcome: Outcome,
    pub at: Timestamp,
}

impl RequestRecord {
    /// Whether `command` is a retry of the request recorded here: the same terminal, operator
    /// and body. A retry gets the recorded outcome; anything else under the same id is refused
    /// as a reused id. The actors' early answers and `apply` both decide with this.
    pub fn answers(&self, command: &crate::command::Command) -> bool {
        self.terminal == command.terminal
            && self.operator == command.operator
            && self.body == command.body
    }
}

/// The state `apply` reads and writes. Reads return owned values; writes replace whole records.
/// An implementation must return its own earlier writes on later reads (read your writes), as
/// commands of one Raft entry see each other's effects.
pub trait StateView {
    fn account(&self, id: AccountId) -> Option<Account>;
    fn card(&self, no: &CardNo) -> Option<Card>;
    fn person(&self, person: &PersonKey) -> Option<AccountId>;
    fn bill(&self, id: &BillId) -> Option<Bill>;
    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp>;
    fn terminal(&self, id: &TerminalId) -> Option<Terminal>;
    /// A request is known by its terminal and its id: request ids are the terminal's own
    /// (terminal id + serial), so one terminal's ids never collide with another's, and no client
    /// can take an id of the cluster's own `S-` terminal.
    fn request(&self, terminal: &TerminalId, id: &RequestId) -> Option<RequestRecord>;
    fn credential(&self, id: &str) -> Option<Credential>;
    /// A stored report by its key ([`Report::key`]).
    fn report(&self, key: &str) -> Option<Report>;
    fn episode(&self, id: &AdmissionId) -> Option<Episode>;
    /// The insurance split of an insured bill.
    fn insured_bill(&self, bill: &BillId) -> Option<InsuredBill>;
    /// The bill posted under an insurance settlement id.
    fn bill_of_settlement(&self, settlement: &InsuranceSettlementId) -> Option<BillId>;
    /// The business rules an admin set, if any.
    fn rules(&self) -> Option<crate::apply::Rules>;
    /// Request records a prune may let go: those made before `before` that are not in the
    /// audit trail (sensitive requests stay), oldest first (by time, then terminal and id), at
    /// most `limit`.
    fn expired_requests(&self, before: Timestamp, limit: usize) -> Vec<(TerminalId, RequestId)>;

    fn put_account(&mut self, account: Account);
    fn put_card(&mut self, card: Card);
    fn put_person(&mut self, person: PersonKey, account: AccountId);
    fn put_bill(&mut self, bill: Bill);
    fn put_bank_op(&mut self, op: BankOp);
    fn put_terminal(&mut self, terminal: Terminal);
    /// Records a request's outcome under its terminal (`record.terminal`) and id.
    fn put_request(&mut self, id: RequestId, record: RequestRecord);
    /// Removes a request record (a retry of it is then a new request).
    fn forget_request(&mut self, terminal: &TerminalId, id: &RequestId);
    fn append_journal(&mut self, entry: JournalEntry);
    fn put_report(&mut self, report: Report);
    fn put_credential(&mut self, credential: Credential);
    /// Adds an event to HIS's bill feed (keyed by its transaction and bill).
    fn append_bill_event(&mut self, event: BillEvent);
    fn put_episode(&mut self, episode: Episode);
    fn put_insured_bill(&mut self, insured: InsuredBill);
    fn put_rules(&mut self, rules: crate::apply::Rules);
}

/// The whole state in ordered maps: deterministic to iterate and to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemState {
    pub accounts: BTreeMap<AccountId, Account>,
    pub cards: BTreeMap<CardNo, Card>,
    pub persons: BTreeMap<PersonKey, AccountId>,
    pub bills: BTreeMap<BillId, Bill>,
    pub bank_ops: BTreeMap<BankRef, BankOp>,
    pub terminals: BTreeMap<TerminalId, Terminal>,
    pub requests: BTreeMap<(TerminalId, RequestId), RequestRecord>,
    /// In log order.
    pub journal: Vec<JournalEntry>,
    pub reports: BTreeMap<String, Report>,
    pub credentials: BTreeMap<String, Credential>,
    /// HIS's bill feed, in log order.
    pub bill_events: Vec<BillEvent>,
    pub episodes: BTreeMap<AdmissionId, Episode>,
    pub insured_bills: BTreeMap<BillId, InsuredBill>,
    pub rules: Option<crate::apply::Rules>,
}

impl MemState {
    pub fn new() -> MemState {
        MemState::default()
    }

    /// The journal entries of one account, in log order.
    pub fn journal_of(&self, account: AccountId) -> impl Iterator<Item = &JournalEntry> {
        self.journal.iter().filter(move |e| e.account == account)
    }
}

impl StateView for MemState {
    fn account(&self, id: AccountId) -> Option<Account> {
        self.accounts.get(&id).cloned()
    }
    fn card(&self, no: &CardNo) -> Option<Card> {
        self.cards.get(no).cloned()
    }
    fn person(&self, person: &PersonKey) -> Option<AccountId> {
        self.persons.get(person).copied()
    }
    fn bill(&self, id: &BillId) -> Option<Bill> {
        self.bills.get(id).cloned()
    }
    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp> {
        self.bank_ops.get(bank_ref).cloned()
    }
    fn terminal(&self, id: &TerminalId) -> Option<Terminal> {
        self.terminals.get(id).cloned()
    }
    fn request(&self, terminal: &TerminalId, id: &RequestId) -> Option<RequestRecord> {
        self.requests.get(&(terminal.clone(), id.clone())).cloned()
    }
    fn credential(&self, id: &str) -> Option<Credential> {
        self.credentials.get(id).cloned()
    }
    fn report(&self, key: &str) -> Option<Report> {
        self.reports.get(key).cloned()
    }
    fn episode(&self, id: &AdmissionId) -> Option<Episode> {
        self.episodes.get(id).cloned()
    }
    fn insured_bill(&self, bill: &BillId) -> Option<InsuredBill> {
        self.insured_bills.get(bill).cloned()
    }
    fn bill_of_settlement(&self, settlement: &InsuranceSettlementId) -> Option<BillId> {
        self.insured_bills
            .values()
            .find(|i| &i.split.settlement == settlement)
            .map(|i| i.bill.clone())
    }
    fn rules(&self) -> Option<crate::apply::Rules> {
        self.rules
    }
    fn expired_requests(&self, before: Timestamp, limit: usize) -> Vec<(TerminalId, RequestId)> {
        let mut expired: Vec<(Timestamp, String, &TerminalId, &RequestId)> = self
            .requests
            .iter()
            .filter(|(_, record)| record.at < before && !record.body.is_sensitive())
            .map(|((terminal, id), record)| {
                (
                    record.at.max(Timestamp(0)),
                    format!("{terminal}/{id}"),
                    terminal,
                    id,
                )
            })
            .collect();
        expired.sort();
        expired
            .into_iter()
            .take(limit)
            .map(|(_, _, terminal, id)| (terminal.clone(), id.clone()))
            .collect()
    }

    fn put_account(&mut self, account: Account) {
        self.accounts.insert(account.id, account);
    }
    fn put_card(&mut self, card: Card) {
        self.cards.insert(card.no.clone(), card);
    }
    fn put_person(&mut self, person: PersonKey, account: AccountId) {
        self.persons.insert(person, account);
    }
    fn put_bill(&mut self, bill: Bill) {
        self.bills.insert(bill.id.clone(), bill);
    }
    fn put_bank_op(&mut self, op: BankOp) {
        self.bank_ops.insert(op.bank_ref.clone(), op);
    }
    fn put_terminal(&mut self, terminal: Terminal) {
        self.terminals.insert(terminal.id.clone(), terminal);
    }
    fn put_request(&mut self, id: RequestId, record: RequestRecord) {
        self.requests.insert((record.terminal.clone(), id), record);
    }
    fn forget_request(&mut self, terminal: &TerminalId, id: &RequestId) {
        self.requests.remove(&(terminal.clone(), id.clone()));
    }
    fn append_journal(&mut self, entry: JournalEntry) {
        self.journal.push(entry);
    }
    fn put_report(&mut self, report: Report) {
        self.reports.insert(report.key(), report);
    }
    fn put_credential(&mut self, credential: Credential) {
        self.credentials.insert(credential.id.clone(), credential);
    }
    fn append_bill_event(&mut self, event: BillEvent) {
        self.bill_events.push(event);
    }
    fn put_episode(&mut self, episode: Episode) {
        self.episodes.insert(episode.id.clone(), episode);
    }
    fn put_insured_bill(&mut self, insured: InsuredBill) {
        self.insured_bills.insert(insured.bill.clone(), insured);
    }
    fn put_rules(&mut self, rules: crate::apply::Rules) {
        self.rules = Some(rules);
    }
}

//! The test harness of the ledger: a `World` that builds and applies commands the way the
//! cluster does (one log index per command, a clock that only moves forward, request ids that
//! are unique per terminal), and `check_invariants`, which recomputes DOMAIN.md's invariants
//! from the state alone.
//!
//! Shared by several test crates, each of which uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use yinyi_ledger::{
    AccountId, AdjustDirection, AdmissionId, ApplyCtx, BankOp, BankOpKind, BankOpState,
    BankPurpose, BankRef, Bill, BillEventKind, BillId, BillKind, BillStatus, Card, CardKind,
    CardNo, CardStatus, CardToken, Channel, Command, CommandBody, DifferenceRef, Effect, EntryKind,
    EpisodeFunds, EpisodeStatus, External, Holder, JournalEntry, MemState, Money, OperatorId,
    Outcome, PersonKey, ReasonCode, RefundTo, Report, ReportLine, RequestId, Rules, TerminalId,
    TerminalKind, TerminalStatus, Timestamp, TxnId, WardId, add_to_lines, apply,
};

// ---- the universe ----

pub const ADMIN: &str = "A-ADMIN";
pub const SAGA: &str = "S-SAGA";
pub const HIS: &str = "H-HIS";
pub const KIOSK: &str = "K-0101";
pub const KIOSK2: &str = "K-0102";
pub const WINDOW: &str = "W-03";
pub const MOBILE: &str = "M-WX";
pub const CASHIER: &str = "CASHIER-01";
pub const COLLECTOR: &str = "COLLECTOR-01";
pub const FINANCE: &str = "FINANCE-01";

pub fn tid(text: &str) -> TerminalId {
    TerminalId::parse(text).expect("valid terminal id")
}

pub fn card(text: &str) -> CardNo {
    CardNo::parse(text).expect("valid card number")
}

pub fn bill_id(text: &str) -> BillId {
    BillId::parse(text).expect("valid bill id")
}

pub fn admission(text: &str) -> AdmissionId {
    AdmissionId::parse(text).unwrap()
}

pub fn ward(text: &str) -> WardId {
    WardId::parse(text).unwrap()
}

pub fn operator(text: &str) -> OperatorId {
    OperatorId::parse(text).expect("valid operator id")
}

pub fn rid(text: &str) -> RequestId {
    RequestId::parse(text).expect("valid request id")
}

/// The keyed hash of person `n`'s ID number: 64 lowercase hex digits.
pub fn person(n: u64) -> PersonKey {
    PersonKey::parse(&format!("{n:064x}")).expect("64 lowercase hex digits")
}

pub fn holder(n: u64) -> Holder {
    Holder {
        name: format!("Patient {n}"),
        person: person(n),
        id_masked: format!("110***********{:04}", n % 10_000),
        phone: format!("138****{:04}", n % 10_000),
    }
}

pub fn yuan(n: i64) -> Money {
    Money::from_yuan(n)
}

pub fn cents(n: i64) -> Money {
    Money::from_cents(n)
}

/// Bank card number `n`, as the bank's token and a masked number.
pub fn bank_card(n: u64) -> External {
    External::BankCard {
        token: CardToken::parse(&format!("tok_bank_{n:04}")).expect("valid token"),
        masked: format!("6222********{:04}", n % 10_000),
    }
}

/// Third-party payer `n` (WeChat-style).
pub fn third_party(n: u64) -> External {
    External::ThirdParty {
        provider: "wechat".to_string(),
        payer: format!("wx_payer_{n}"),
    }
}

/// A bank reference no operation has.
pub fn unknown_bank_ref() -> BankRef {
    BankRef::for_txn(TxnId::new(999_999_999, 0))
}

// ---- outcomes ----

#[track_caller]
pub fn expect_done(outcome: Outcome) -> Effect {
    match outcome {
        Outcome::Done(effect) => effect,
        Outcome::Rejected(r) => panic!("expected success, got {r}"),
    }
}

#[track_caller]
pub fn expect_code(outcome: &Outcome, code: ReasonCode) {
    assert_eq!(
        outcome.reason(),
        Some(code),
        "expected {code}, got {outcome:?}"
    );
}

/// The amount moved and the balance after, of a command that moved money.
#[track_caller]
pub fn balance_changed(outcome: Outcome) -> (Money, Money) {
    match expect_done(outcome) {
        Effect::BalanceChanged {
            amount, balance, ..
        } => (amount, balance),
        other => panic!("expected BalanceChanged, got {other:?}"),
    }
}

/// Every journal entry's kind and channel, in log order.
pub fn journal_kinds(w: &World) -> Vec<(EntryKind, Channel)> {
    w.state
        .journal
        .iter()
        .map(|e| (e.kind, e.channel))
        .collect()
}

/// The reference of a saga a `StartBankOp` started.
#[track_caller]
pub fn started_ref(outcome: Outcome) -> BankRef {
    match expect_done(outcome) {
        Effect::BankOpStarted { bank_ref, .. } => bank_ref,
        other => panic!("expected BankOpStarted, got {other:?}"),
    }
}

/// The state without its request records: what a rejected command must leave unchanged.
pub fn without_requests(state: &MemState) -> MemState {
    let mut copy = state.clone();
    copy.requests.clear();
    copy
}

/// The two states are equal apart from their request records.
pub fn same_but_requests(a: &MemState, b: &MemState) -> bool {
    a.accounts == b.accounts
        && a.cards == b.cards
        && a.persons == b.persons
        && a.bills == b.bills
        && a.bank_ops == b.bank_ops
        && a.terminals == b.terminals
        && a.journal == b.journal
        && a.reports == b.reports
        && a.credentials == b.credentials
        && a.bill_events == b.bill_events
        && a.episodes == b.episodes
        && a.rules == b.rules
        && a.insured_bills == b.insured_bills
}

// ---- the world ----

/// One command as it went through `apply`.
#[derive(Debug, Clone)]
pub struct Applied {
    pub cmd: Command,
    pub txn: TxnId,
    pub outcome: Outcome,
}

/// A ledger and the machinery around it: log indices, a clock, request serials.
pub struct World {
    pub state: MemState,
    pub rules: Rules,
    /// The last log index handed out; each applied command gets the next one.
    pub index: u64,
    /// Milliseconds; every command is stamped strictly later than the one before.
    pub clock: i64,
    serials: BTreeMap<String, u64>,
    pub log: Vec<Applied>,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An empty ledger: no terminals, no accounts.
    pub fn new() -> World {
        World {
            state: MemState::new(),
            rules: Rules::default(),
            index: 0,
            clock: 1_760_000_000_000,
            serials: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// A ledger with two kiosks, a window, a mobile channel and HIS registered (no shift open).
    pub fn standard() -> World {
        let mut world = World::new();
        for t in [KIOSK, KIOSK2, WINDOW, MOBILE, HIS] {
            expect_done(world.register(t));
        }
        world
    }

    /// The context of the next command: the next log index, position 0.
    pub fn next_ctx(&mut self) -> ApplyCtx {
        self.index += 1;
        ApplyCtx {
            txn: TxnId::new(self.index, 0),
            rules: self.rules,
        }
    }

    /// The next timestamp, strictly later than every earlier one.
    pub fn tick(&mut self) -> Timestamp {
        self.clock += 1_000;
        Timestamp(self.clock)
    }

    /// A fresh request id: the terminal id and its own serial (流水号).
    pub fn request_id(&mut self, terminal: &str) -> RequestId {
        let serial = self.serials.entry(terminal.to_string()).or_insert(0);
        *serial += 1;
        rid(&format!("{terminal}:{serial:06}"))
    }

    /// Who is at the terminal by default: the cashier at a window, nobody elsewhere.
    pub fn default_operator(terminal: &str) -> Option<&'static str> {
        match tid(terminal).kind() {
            TerminalKind::Window => Some(CASHIER),
            _ => None,
        }
    }

    /// Builds a command with a fresh request id and timestamp, without applying it.
    pub fn command(&mut self, terminal: &str, op: Option<&str>, body: CommandBody) -> Command {
        Command {
            request: self.request_id(terminal),
            terminal: tid(terminal),
            operator: op.map(operator),
            at: self.tick(),
            body,
        }
    }

    /// Applies a command at the next log index and records it.
    pub fn submit(&mut self, cmd: &Command) -> Outcome {
        let ctx = self.next_ctx();
        let outcome = apply(cmd, &mut self.state, &ctx);
        self.log.push(Applied {
            cmd: cmd.clone(),
            txn: ctx.txn,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Builds and applies a command as the terminal's default operator.
    pub fn run(&mut self, terminal: &str, body: CommandBody) -> Outcome {
        self.run_as(terminal, World::default_operator(terminal), body)
    }

    pub fn run_as(&mut self, terminal: &str, op: Option<&str>, body: CommandBody) -> Outcome {
        let cmd = self.command(terminal, op, body);
        self.submit(&cmd)
    }

    // ---- terminals and shifts ----

    pub fn register(&mut self, terminal: &str) -> Outcome {
        self.run(
            ADMIN,
            CommandBody::RegisterTerminal {
                terminal: tid(terminal),
            },
        )
    }

    pub fn set_terminal_status(&mut self, terminal: &str, status: TerminalStatus) -> Outcome {
        self.run(
            ADMIN,
            CommandBody::SetTerminalStatus {
                terminal: tid(terminal),
                status,
            },
        )
    }

    pub fn open_shift(&mut self, window: &str) -> Outcome {
        self.run_as(window, Some(CASHIER), CommandBody::OpenShift)
    }

    pub fn close_shift(&mut self, window: &str) -> Outcome {
        self.run_as(window, Some(CASHIER), CommandBody::CloseShift)
    }

    pub fn collect(&mut self, kiosk: &str, counted: Money) -> Outcome {
        self.run_as(kiosk, Some(COLLECTOR), CommandBody::CollectCash { counted })
    }

    // ---- cards and cash ----

    pub fn issue(
        &mut self,
        terminal: &str,
        card_no: &str,
        person_n: u64,
        first_deposit: Option<Money>,
    ) -> Outcome {
        self.run(
            terminal,
            CommandBody::IssueCard {
                card: card(card_no),
                card_kind: CardKind::Hospital,
                holder: holder(person_n),
                first_deposit,
            },
        )
    }

    /// Issues a card at the first kiosk with a whole-yuan first deposit (or none for 0).
    #[track_caller]
    pub fn patient(&mut self, card_no: &str, person_n: u64, deposit_yuan: i64) -> AccountId {
        let deposit = (deposit_yuan > 0).then(|| yuan(deposit_yuan));
        match expect_done(self.issue(KIOSK, card_no, person_n, deposit)) {
            Effect::CardIssued { account, .. } => account,
            other => panic!("expected CardIssued, got {other:?}"),
        }
    }

    pub fn deposit(&mut self, terminal: &str, card_no: &str, amount: Money) -> Outcome {
        self.run(
            terminal,
            CommandBody::DepositCash {
                card: card(card_no),
                amount,
            },
        )
    }

    pub fn withdraw_cash(&mut self, window: &str, card_no: &str, amount: Option<Money>) -> Outcome {
        self.run(
            window,
            CommandBody::WithdrawCash {
                card: card(card_no),
                amount,
            },
        )
    }

    pub fn report_loss(&mut self, card_no: &str, person_n: u64) -> Outcome {
        self.run(
            WINDOW,
            CommandBody::ReportLoss {
                card: card(card_no),
                person: person(person_n),
            },
        )
    }

    pub fn cancel_loss(&mut self, card_no: &str, person_n: u64) -> Outcome {
        self.run(
            WINDOW,
            CommandBody::CancelLoss {
                card: card(card_no),
                person: person(person_n),
            },
        )
    }

    pub fn replace_card(&mut self, old: &str, new: &str, person_n: u64) -> Outcome {
        self.run(
            WINDOW,
            CommandBody::ReplaceCard {
                old_card: card(old),
                new_card: card(new),
                person: person(person_n),
            },
        )
    }

    pub fn freeze(&mut self, account: AccountId) -> Outcome {
        self.run(ADMIN, CommandBody::Freeze { account })
    }

    pub fn unfreeze(&mut self, account: AccountId) -> Outcome {
        self.run(ADMIN, CommandBody::Unfreeze { account })
    }

    pub fn set_overdraft(&mut self, account: AccountId, limit: Money) -> Outcome {
        self.run(ADMIN, CommandBody::SetOverdraft { account, limit })
    }

    // ---- bills ----

    pub fn post_bill(&mut self, bill: &str, card_no: &str, amount: Money) -> Outcome {
        self.run(
            HIS,
            CommandBody::PostBill {
                bill: bill_id(bill),
                card: card(card_no),
                kind: BillKind::Outpatient,
                amount,
            },
        )
    }

    pub fn cancel_bill(&mut self, bill: &str) -> Outcome {
        self.run(
            HIS,
            CommandBody::CancelBill {
                bill: bill_id(bill),
            },
        )
    }

    pub fn pay_bill(&mut self, terminal: &str, bill: &str, card_no: &str) -> Outcome {
        self.run(
            terminal,
            CommandBody::PayBill {
                bill: bill_id(bill),
                card: card(card_no),
            },
        )
    }

    pub fn refund(&mut self, terminal: &str, bill: &str) -> Outcome {
        self.run(
            terminal,
            CommandBody::Refund {
                bill: bill_id(bill),
            },
        )
    }

    // ---- inpatient episodes ----

    /// HIS admits the holder of `card_no` into `ward` with a reminder threshold of 1,000 yuan.
    pub fn admit(&mut self, episode: &str, card_no: &str, ward_id: &str) -> Outcome {
        self.run(
            HIS,
            CommandBody::OpenEpisode {
                episode: admission(episode),
                card: card(card_no),
                ward: ward(ward_id),
                reminder_below: yuan(1_000),
            },
        )
    }

    pub fn episode_cash(&mut self, terminal: &str, episode: &str, amount: Money) -> Outcome {
        self.run(
            terminal,
            CommandBody::DepositToEpisode {
                episode: admission(episode),
                amount,
                from: EpisodeFunds::Cash,
            },
        )
    }

    pub fn episode_from_account(
        &mut self,
        terminal: &str,
        episode: &str,
        payer_card: &str,
        amount: Money,
    ) -> Outcome {
        self.run(
            terminal,
            CommandBody::DepositToEpisode {
                episode: admission(episode),
                amount,
                from: EpisodeFunds::Account {
                    card: card(payer_card),
                },
            },
        )
    }

    /// A deposit by card or channel into the episode of the patient of `card_no`: started
    /// Pending; the saga completes or declines it.
    pub fn episode_by_card(
        &mut self,
        terminal: &str,
        episode: &str,
        card_no: &str,
        external: External,
        amount: Money,
    ) -> Outcome {
        self.start_bank_op(
            terminal,
            card_no,
            external,
            BankPurpose::EpisodeDeposit {
                episode: admission(episode),
            },
            Some(amount),
        )
    }

    pub fn charge(&mut self, episode: &str, amount: Money) -> Outcome {
        self.run(
            HIS,
            CommandBody::PostEpisodeCharges {
                episode: admission(episode),
                amount,
            },
        )
    }

    pub fn finalize(&mut self, episode: &str, final_amount: Money) -> Outcome {
        self.run(
            HIS,
            CommandBody::FinalizeEpisode {
                episode: admission(episode),
                final_amount,
            },
        )
    }

    pub fn settle(
        &mut self,
        terminal: &str,
        episode: &str,
        rest_to: RefundTo,
        shortfall_from_account: bool,
    ) -> Outcome {
        // The patient's card, as they present it.
        let account = self
            .state
            .episodes
            .get(&admission(episode))
            .map(|e| e.account);
        let card = self
            .state
            .cards
            .values()
            .find(|c| Some(c.account) == account && c.status == CardStatus::Active)
            .map_or_else(|| card("HC9999"), |c| c.no.clone());
        self.run(
            terminal,
            CommandBody::SettleEpisode {
                episode: admission(episode),
                card,
                rest_to,
                shortfall_from_account,
            },
        )
    }

    pub fn episode(&self, episode: &str) -> yinyi_ledger::Episode {
        self.state.episodes[&admission(episode)].clone()
    }

    // ---- the bank saga ----

    pub fn start_bank_op(
        &mut self,
        terminal: &str,
        card_no: &str,
        external: External,
        purpose: BankPurpose,
        amount: Option<Money>,
    ) -> Outcome {
        self.run(
            terminal,
            CommandBody::StartBankOp {
                card: card(card_no),
                external,
                purpose,
                amount,
            },
        )
    }

    pub fn top_up(
        &mut self,
        terminal: &str,
        card_no: &str,
        external: External,
        amount: Money,
    ) -> Outcome {
        self.start_bank_op(
            terminal,
            card_no,
            external,
            BankPurpose::TopUp,
            Some(amount),
        )
    }

    pub fn pay_by_card(
        &mut self,
        terminal: &str,
        bill: &str,
        card_no: &str,
        external: External,
    ) -> Outcome {
        self.start_bank_op(
            terminal,
            card_no,
            external,
            BankPurpose::PayBill {
                bill: bill_id(bill),
            },
            None,
        )
    }

    pub fn refund_online(
        &mut self,
        terminal: &str,
        bill: &str,
        card_no: &str,
        external: External,
    ) -> Outcome {
        self.start_bank_op(
            terminal,
            card_no,
            external,
            BankPurpose::Refund {
                bill: bill_id(bill),
            },
            None,
        )
    }

    pub fn withdraw_to(
        &mut self,
        terminal: &str,
        card_no: &str,
        external: External,
        amount: Option<Money>,
    ) -> Outcome {
        self.start_bank_op(terminal, card_no, external, BankPurpose::Withdraw, amount)
    }

    pub fn complete(&mut self, bank_ref: &BankRef) -> Outcome {
        self.run(
            SAGA,
            CommandBody::CompleteBankOp {
                bank_ref: bank_ref.clone(),
                bank_note: "00 approved".to_string(),
            },
        )
    }

    pub fn decline(&mut self, bank_ref: &BankRef) -> Outcome {
        self.run(
            SAGA,
            CommandBody::DeclineBankOp {
                bank_ref: bank_ref.clone(),
                bank_note: "51 insufficient funds".to_string(),
            },
        )
    }

    pub fn in_doubt(&mut self, bank_ref: &BankRef) -> Outcome {
        self.run(
            SAGA,
            CommandBody::MarkBankOpInDoubt {
                bank_ref: bank_ref.clone(),
                bank_note: "timeout".to_string(),
            },
        )
    }

    pub fn reverse(&mut self, bank_ref: &BankRef) -> Outcome {
        self.run(
            SAGA,
            CommandBody::ReverseBankOp {
                bank_ref: bank_ref.clone(),
                bank_note: "reversal acknowledged".to_string(),
            },
        )
    }

    // ---- reads ----

    #[track_caller]
    pub fn account_of(&self, card_no: &str) -> AccountId {
        self.state
            .cards
            .get(&card(card_no))
            .unwrap_or_else(|| panic!("card {card_no} is not issued"))
            .account
    }

    #[track_caller]
    pub fn balance(&self, card_no: &str) -> Money {
        self.state.accounts[&self.account_of(card_no)].balance
    }

    #[track_caller]
    pub fn bill(&self, bill: &str) -> Bill {
        self.state.bills[&bill_id(bill)].clone()
    }

    #[track_caller]
    pub fn bank_op(&self, bank_ref: &BankRef) -> BankOp {
        self.state.bank_ops[bank_ref].clone()
    }

    #[track_caller]
    pub fn cash_box(&self, terminal: &str) -> Money {
        self.state.terminals[&tid(terminal)].cash_box
    }

    /// Runs `f`, which must be refused with `code`, and checks the refusal wrote nothing but
    /// its request record.
    #[track_caller]
    pub fn refused(&mut self, code: ReasonCode, f: impl FnOnce(&mut World) -> Outcome) -> Outcome {
        let before = self.state.clone();
        let outcome = f(self);
        expect_code(&outcome, code);
        assert!(
            same_but_requests(&before, &self.state),
            "the refused command ({code}) wrote more than its request record"
        );
        let cmd = &self.log.last().expect("a command was applied").cmd;
        let request = (cmd.terminal.clone(), cmd.request.clone());
        assert!(
            !before.requests.contains_key(&request),
            "{request:?} was not new"
        );
        assert_eq!(self.state.requests.len(), before.requests.len() + 1);
        assert_eq!(self.state.requests[&request].outcome, outcome);
        self.check();
        outcome
    }

    /// Panics with the broken invariant.
    #[track_caller]
    pub fn check(&self) {
        if let Err(e) = check_invariants(&self.state) {
            panic!("invariant broken: {e}");
        }
    }
}

// ---- the invariants ----

/// DOMAIN.md's invariants 1, 2, 3, 4 and 6, recomputed from the state alone: 1–3 by the
/// ledger's own balance audit, 4 and 6 here. Invariant 6 and the report checks read time windows
/// from timestamps, so they need every command stamped strictly later than the one before (as
/// `World` does).
pub fn check_invariants(state: &MemState) -> Result<(), String> {
    let audit = yinyi_ledger::Audit::of_state(state);
    if !audit.ok() {
        return Err(audit.problems.join("; "));
    }
    for (id, account) in &state.accounts {
        if account.id != *id {
            return Err(format!("account {id} stored under the wrong key"));
        }
    }
    for (r, op) in &state.bank_ops {
        if op.bank_ref != *r {
            return Err(format!("bank op {r} stored under the wrong key"));
        }
    }
    check_requests_and_bills(state)?;
    check_cash_boxes_and_reports(state)?;
    check_episodes(state)?;
    check_insured_bills(state)?;
    check_authorizations(state)?;
    Ok(())
}

/// 预授权 and its captures. Only an authorization is ever `Authorized` (held), and it is a
/// `Hold`, which the audit expects no journal entry of. While a capture of it is under way the
/// authorization is held and names that capture, which is unresolved; once captured it is
/// `Completed` and names the capture, `Completed` too; a release asked for leaves it held or
/// reversed, never captured, and nothing else is under way then. Each capture is a `Debit` of
/// an authorization of the same account and payer, within its hold, for a bill of that account
/// of the capture's amount; the authorization names it exactly while it is in flight or
/// completed (declined or reversed, the hold is held again).
fn check_authorizations(state: &MemState) -> Result<(), String> {
    for (r, op) in &state.bank_ops {
        match &op.purpose {
            BankPurpose::Authorization { capture, release } => {
                if op.kind != BankOpKind::Hold {
                    return Err(format!("authorization {r} is a {:?}", op.kind));
                }
                let captured = match capture {
                    None => None,
                    Some(c) => {
                        let of_this = state.bank_ops.get(c).filter(|cop| {
                            matches!(&cop.purpose,
                                BankPurpose::Capture { authorization, .. } if authorization == r)
                        });
                        let Some(cop) = of_this else {
                            return Err(format!("authorization {r} names {c}, no capture of it"));
                        };
                        Some(cop.state)
                    }
                };
                let ok = match (op.state, captured) {
                    (BankOpState::Authorized, None) => true,
                    (BankOpState::Authorized, Some(c)) => c.is_unresolved() && !*release,
                    (BankOpState::Completed, Some(c)) => c == BankOpState::Completed && !*release,
                    // Not held (yet, or any more): nothing captured or under way.
                    (_, Some(_)) | (BankOpState::Completed, None) => false,
                    (BankOpState::Reversed, None) => true,
                    (BankOpState::Pending | BankOpState::InDoubt | BankOpState::Declined, None) => {
                        !*release
                    }
                };
                if !ok {
                    return Err(format!(
                        "authorization {r} is {:?} with capture {capture:?} ({captured:?}) and release {release}",
                        op.state
                    ));
                }
            }
            BankPurpose::Capture {
                authorization,
                bill,
            } => {
                let Some(auth) = state.bank_ops.get(authorization) else {
                    return Err(format!(
                        "capture {r} of unknown authorization {authorization}"
                    ));
                };
                let BankPurpose::Authorization { capture, .. } = &auth.purpose else {
                    return Err(format!("capture {r} of {authorization}, no authorization"));
                };
                if op.kind != BankOpKind::Debit
                    || op.account != auth.account
                    || op.external != auth.external
                    || op.amount > auth.amount
                {
                    return Err(format!(
                        "capture {r} ({:?} of {} from account {}) does not fit authorization {authorization} ({} from account {})",
                        op.kind, op.amount, op.account, auth.amount, auth.account
                    ));
                }
                let named = capture.as_ref() == Some(r);
                let settled_back =
                    matches!(op.state, BankOpState::Declined | BankOpState::Reversed);
                if named == settled_back {
                    return Err(format!(
                        "capture {r} is {:?} but authorization {authorization} names {capture:?}",
                        op.state
                    ));
                }
                let Some(b) = state.bills.get(bill) else {
                    return Err(format!("capture {r} names unknown bill {bill}"));
                };
                let paid_by_it = b.payment.as_ref().and_then(|p| p.bank_ref.as_ref()) == Some(r);
                if b.account != op.account
                    || b.amount != op.amount
                    || paid_by_it != (op.state == BankOpState::Completed)
                {
                    return Err(format!(
                        "capture {r} ({:?}) does not fit bill {bill}",
                        op.state
                    ));
                }
            }
            _ if op.state == BankOpState::Authorized => {
                return Err(format!("bank op {r} ({:?}) is Authorized", op.purpose));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Insured bills: each split is its bill's — the bill exists, of the same account, its amount
/// the self-pay part, no part negative — one bill per settlement; the settlement is reversed
/// exactly when the bill is cancelled whole, and an insured bill is never cancelled in part.
fn check_insured_bills(state: &MemState) -> Result<(), String> {
    let mut settlements = BTreeSet::new();
    for (id, insured) in &state.insured_bills {
        let split = &insured.split;
        let Some(bill) = state.bills.get(id).filter(|_| insured.bill == *id) else {
            return Err(format!("insured bill {id} has no bill"));
        };
        if bill.account != insured.account || bill.amount != split.self_pay {
            return Err(format!(
                "insured bill {id}: {bill:?} is not its split's {split:?}"
            ));
        }
        if [split.pooled, split.personal_account, split.reductions]
            .iter()
            .any(|part| part.is_negative())
            || !split.self_pay.is_positive()
        {
            return Err(format!("insured bill {id}: a part out of range {split:?}"));
        }
        if !settlements.insert(split.settlement.clone()) {
            return Err(format!("settlement {} of two bills", split.settlement));
        }
        let whole = bill.cancelled == bill.amount;
        if insured.reversed_at.is_some() != whole || (!bill.cancelled.is_zero() && !whole) {
            return Err(format!(
                "insured bill {id}: reversed {:?}, cancelled {} of {}",
                insured.reversed_at, bill.cancelled, bill.amount
            ));
        }
    }
    Ok(())
}

/// Inpatient episodes, beyond the audit's money check: each deposit is in the journal once, as
/// the deposit it says; the deposits by card waiting for the bank and the refunds on their way
/// back are exactly the episode's open bank operations; nothing goes back online beyond what a
/// deposit brought; a discharged episode took its final amount once, and before discharge
/// nothing left.
fn check_episodes(state: &MemState) -> Result<(), String> {
    let mut entries: BTreeMap<&str, Vec<&JournalEntry>> = BTreeMap::new();
    for e in state.journal.iter().filter(|e| e.kind.is_episode()) {
        let Some(id) = &e.bill else {
            return Err(format!("episode entry {} names no admission", e.txn));
        };
        entries.entry(id.as_str()).or_default().push(e);
    }
    for (id, ep) in &state.episodes {
        if ep.id != *id {
            return Err(format!("episode {id} stored under the wrong key"));
        }
        let mine = entries.remove(id.as_str()).unwrap_or_default();
        for d in &ep.deposits {
            let kind = if d.from_account.is_some() {
                EntryKind::EpisodeDepositFromAccount
            } else {
                EntryKind::EpisodeDeposit
            };
            let found = mine
                .iter()
                .filter(|e| e.txn == d.txn && e.kind == kind && e.amount == d.amount)
                .count();
            if found != 1 {
                return Err(format!(
                    "episode {id} deposit {} has {found} journal entries",
                    d.seq
                ));
            }
            if d.refunded_online > d.amount
                || (d.bank_ref.is_none() && !d.refunded_online.is_zero())
            {
                return Err(format!(
                    "episode {id} deposit {} of {} went back online {}",
                    d.seq, d.amount, d.refunded_online
                ));
            }
        }
        let deposits = mine
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EntryKind::EpisodeDeposit | EntryKind::EpisodeDepositFromAccount
                )
            })
            .count();
        if deposits != ep.deposits.len() {
            return Err(format!(
                "episode {id} lists {} deposits, the journal {deposits}",
                ep.deposits.len()
            ));
        }
        let settled_ok = match ep.status {
            EpisodeStatus::Discharged => ep.final_amount.is_some() && ep.discharged_at.is_some(),
            EpisodeStatus::Final => ep.final_amount.is_some() && ep.discharged_at.is_none(),
            EpisodeStatus::Open => ep.final_amount.is_none() && ep.discharged_at.is_none(),
        };
        if !settled_ok {
            return Err(format!("episode {id} is {:?}: {ep:?}", ep.status));
        }
        let (mut in_flight, mut refunding) = (0u32, 0i64);
        for op in state.bank_ops.values() {
            match &op.purpose {
                BankPurpose::EpisodeDeposit { episode } if episode == id => {
                    in_flight += u32::from(!op.state.is_final());
                }
                BankPurpose::EpisodeRefund { episode, deposit } if episode == id => {
                    if !op.state.is_final() {
                        refunding += op.amount.cents();
                    }
                    let of = ep.deposits.iter().find(|d| d.seq == *deposit);
                    if of.and_then(|d| d.bank_ref.as_ref()).is_none() {
                        return Err(format!(
                            "bank op {} refunds deposit {deposit} of {id}, not one by card",
                            op.bank_ref
                        ));
                    }
                }
                _ => {}
            }
        }
        if in_flight != ep.deposits_in_flight || refunding != ep.refunding.cents() {
            return Err(format!(
                "episode {id}: {in_flight} deposits and {} refunds in flight at the bank, the episode says {} and {}",
                Money::from_cents(refunding),
                ep.deposits_in_flight,
                ep.refunding
            ));
        }
    }
    if let Some(id) = entries.keys().next() {
        return Err(format!("journal entries name unknown episode {id}"));
    }
    Ok(())
}

/// 4: each request applied once (one transaction id per request, one request per transaction
/// id, only successful requests in the journal); each bill paid at most once and refunded at
/// most once, and its status agrees with its journal entries and bank operations.
fn check_requests_and_bills(state: &MemState) -> Result<(), String> {
    let mut txn_of_request: BTreeMap<(TerminalId, RequestId), TxnId> = BTreeMap::new();
    let mut request_of_txn: BTreeMap<TxnId, &RequestId> = BTreeMap::new();
    let mut last_txn = None;
    for e in &state.journal {
        if last_txn.is_some_and(|t| e.txn < t) {
            return Err(format!("journal out of log order at {}", e.txn));
        }
        last_txn = Some(e.txn);
        // Requests are recorded by terminal and id. A journal entry's terminal is where the
        // patient was: the request's own, or, for a saga step (from a system terminal), the
        // terminal that started the operation.
        let candidates: Vec<_> = state
            .requests
            .iter()
            .filter(|((terminal, id), _)| {
                *id == e.request
                    && (*terminal == e.terminal || terminal.kind() == TerminalKind::System)
            })
            .collect();
        let key = match candidates.iter().find(|(_, r)| r.outcome.is_done()) {
            Some((key, _)) => (*key).clone(),
            None if !candidates.is_empty() => {
                return Err(format!(
                    "rejected request {} has journal entries",
                    e.request
                ));
            }
            None => {
                return Err(format!(
                    "entry {} names unrecorded request {}",
                    e.txn, e.request
                ));
            }
        };
        if *txn_of_request.entry(key).or_insert(e.txn) != e.txn {
            return Err(format!("request {} applied at two transactions", e.request));
        }
        if *request_of_txn.entry(e.txn).or_insert(&e.request) != &e.request {
            return Err(format!("transaction {} carries two requests", e.txn));
        }
    }

    let mut by_bill: BTreeMap<&BillId, Vec<&JournalEntry>> = BTreeMap::new();
    for e in &state.journal {
        if let Some(b) = &e.bill
            && !e.kind.is_episode()
        {
            if !state.bills.contains_key(b) {
                return Err(format!("entry {} names unknown bill {b}", e.txn));
            }
            by_bill.entry(b).or_default().push(e);
        }
    }
    for (id, bill) in &state.bills {
        if bill.id != *id {
            return Err(format!("bill {id} stored under the wrong key"));
        }
        let entries: Vec<&JournalEntry> = by_bill.get(id).cloned().unwrap_or_default();
        let paid: Vec<&&JournalEntry> = entries
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EntryKind::BillPayment | EntryKind::ExternalBillPayment
                )
            })
            .collect();
        let refunded: Vec<&&JournalEntry> = entries
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EntryKind::Refund | EntryKind::ExternalRefund | EntryKind::CashRefund
                )
            })
            .collect();
        if paid.len() > 1 {
            return Err(format!("invariant 4: bill {id} paid {} times", paid.len()));
        }
        if entries.len() != paid.len() + refunded.len() {
            return Err(format!("bill {id} has entries of other kinds"));
        }
        for e in &paid {
            if e.amount != bill.amount || e.account != bill.account {
                return Err(format!("entry {} does not match bill {id}", e.txn));
            }
        }
        // Refunds, whole or in parts, add up to what the bill says was refunded, which is
        // never more than HIS cancelled, which is never more than was paid.
        let refunded_cents: i64 = refunded.iter().map(|e| e.amount.cents()).sum();
        if refunded_cents != bill.refunded.cents()
            || refunded.iter().any(|e| e.account != bill.account)
        {
            return Err(format!(
                "invariant 4: bill {id} says {} refunded, its refund entries add up to {}",
                bill.refunded,
                Money::from_cents(refunded_cents)
            ));
        }
        if bill.refunded > bill.cancelled || bill.cancelled > bill.amount {
            return Err(format!(
                "invariant 4: bill {id} of {} has {} cancelled and {} refunded",
                bill.amount, bill.cancelled, bill.refunded
            ));
        }
        if !refunded.is_empty() && paid.is_empty() {
            return Err(format!("bill {id} refunded but never paid"));
        }
        let want_paid = match bill.status {
            BillStatus::Unpaid => false,
            BillStatus::Paid | BillStatus::Refunded => true,
            BillStatus::Cancelled => bill.payment.is_some(),
        };
        let fully_refunded = bill.refunded == bill.amount;
        if (bill.status == BillStatus::Refunded) != fully_refunded
            || (bill.status == BillStatus::Paid && bill.cancelled == bill.amount)
        {
            return Err(format!(
                "bill {id} is {:?} with {} of {} cancelled and {} refunded",
                bill.status, bill.cancelled, bill.amount, bill.refunded
            ));
        }
        if (paid.len() == 1) != want_paid {
            return Err(format!(
                "bill {id} is {:?} with {} payment and {} refund entries",
                bill.status,
                paid.len(),
                refunded.len()
            ));
        }
        if bill.payment.is_some() != want_paid {
            return Err(format!(
                "bill {id} is {:?} with payment {:?}",
                bill.status, bill.payment
            ));
        }
        if let (Some(payment), Some(entry)) = (&bill.payment, paid.first())
            && (payment.txn != entry.txn
                || payment.channel != entry.channel
                || payment.bank_ref != entry.bank_ref)
        {
            return Err(format!(
                "bill {id} payment record disagrees with the journal"
            ));
        }
        if let Some(p) = paid.first()
            && refunded.iter().any(|r| r.txn <= p.txn)
        {
            return Err(format!("bill {id} refunded before it was paid"));
        }
        if let Some(r) = &bill.pending_op {
            let Some(op) = state.bank_ops.get(r) else {
                return Err(format!("bill {id} waits on unknown bank op {r}"));
            };
            // A payment (by card, or a capture of a hold) or an online refund, still waiting on
            // the bank: never a held authorization, which is no bill's.
            let for_this_bill = matches!(&op.purpose,
                BankPurpose::PayBill { bill }
                | BankPurpose::Refund { bill }
                | BankPurpose::Capture { bill, .. } if bill == id);
            if !op.state.is_unresolved() || !for_this_bill {
                return Err(format!("bill {id} waits on bank op {r} in {:?}", op.state));
            }
        }
    }
    // HIS's feed tells every payment, refund and cancellation of every bill, once, in log order.
    let mut told: BTreeMap<&BillId, [i64; 3]> = BTreeMap::new();
    for pair in state.bill_events.windows(2) {
        if pair[0].txn >= pair[1].txn {
            return Err(format!("bill feed out of order at {}", pair[1].txn));
        }
    }
    for e in &state.bill_events {
        let slot = match e.kind {
            BillEventKind::Paid => 0,
            BillEventKind::Refunded => 1,
            BillEventKind::Cancelled => 2,
        };
        told.entry(&e.bill).or_default()[slot] += e.amount.cents();
    }
    for (id, bill) in &state.bills {
        let paid = if bill.payment.is_some() {
            bill.amount
        } else {
            Money::ZERO
        };
        let want = [paid.cents(), bill.refunded.cents(), bill.cancelled.cents()];
        let got = told.remove(id).unwrap_or_default();
        if got != want {
            return Err(format!(
                "bill feed tells {id} paid/refunded/cancelled {got:?} cents, the bill says {want:?}"
            ));
        }
    }
    if let Some(id) = told.keys().next() {
        return Err(format!("bill feed names unknown bill {id}"));
    }
    for (r, op) in &state.bank_ops {
        if let BankPurpose::PayBill { bill }
        | BankPurpose::Refund { bill }
        | BankPurpose::Capture { bill, .. } = &op.purpose
        {
            let Some(b) = state.bills.get(bill) else {
                return Err(format!("bank op {r} names unknown bill {bill}"));
            };
            if op.state.is_unresolved() && b.pending_op.as_ref() != Some(r) {
                return Err(format!(
                    "bank op {r} is {:?} but bill {bill} does not wait on it",
                    op.state
                ));
            }
        }
        if !state
            .requests
            .contains_key(&(op.terminal.clone(), op.request.clone()))
        {
            return Err(format!("bank op {r} names unrecorded request"));
        }
    }
    Ok(())
}

/// Cash an entry puts into (+) or takes out of (−) its terminal's box.
fn cash_cents(e: &JournalEntry) -> i64 {
    if e.channel != Channel::Cash {
        return 0;
    }
    match e.kind {
        EntryKind::CashDeposit | EntryKind::EpisodeDeposit => e.amount.cents(),
        // Cash handed out: a withdrawal from the account, or a refund paid at the window.
        EntryKind::Withdrawal | EntryKind::CashRefund | EntryKind::EpisodeRefund => {
            -e.amount.cents()
        }
        other => panic!("a cash entry of kind {other:?}"),
    }
}

fn lines_of<'a>(entries: impl Iterator<Item = &'a JournalEntry>) -> Vec<ReportLine> {
    let mut lines = Vec::new();
    for e in entries {
        add_to_lines(&mut lines, e.kind, e.channel, e.amount);
    }
    lines
}

/// Every terminal's day totals (the stored days and the current one) are exactly its journal
/// entries of that business day, by kind and channel.
fn check_day_reports(state: &MemState) -> Result<(), String> {
    let mut reported: BTreeMap<(TerminalId, String), Vec<ReportLine>> = BTreeMap::new();
    for report in state.reports.values() {
        if let Report::TerminalDay(r) = report
            && reported
                .insert(
                    (r.terminal.clone(), r.day.date.clone()),
                    r.day.lines.clone(),
                )
                .is_some()
        {
            return Err(format!(
                "two day reports of {} on {}",
                r.terminal, r.day.date
            ));
        }
    }
    for terminal in state.terminals.values() {
        if let Some(today) = &terminal.today
            && reported
                .insert(
                    (terminal.id.clone(), today.date.clone()),
                    today.lines.clone(),
                )
                .is_some()
        {
            return Err(format!(
                "{} has a stored and a current {}",
                terminal.id, today.date
            ));
        }
    }
    let mut from_journal: BTreeMap<(TerminalId, String), Vec<ReportLine>> = BTreeMap::new();
    // In log order; a terminal's day never goes back (an entry stamped before the day it is
    // in counts in that day).
    let mut day_of: BTreeMap<&TerminalId, String> = BTreeMap::new();
    for e in &state.journal {
        if !state.terminals.contains_key(&e.terminal) {
            continue;
        }
        let stamped = yinyi_ledger::BusinessDay::of_ms(e.at.0).to_string();
        let day = match day_of.get(&e.terminal) {
            Some(current) if *current >= stamped => current.clone(),
            _ => stamped,
        };
        day_of.insert(&e.terminal, day.clone());
        let lines = from_journal.entry((e.terminal.clone(), day)).or_default();
        add_to_lines(lines, e.kind, e.channel, e.amount);
    }
    if reported != from_journal {
        return Err(format!(
            "terminal day totals {reported:?} differ from the journal's {from_journal:?}"
        ));
    }
    Ok(())
}

/// 6: a terminal's cash box equals the cash taken there since its last collection or shift
/// close minus the cash paid out; every report's expected cash is the cash of its period, a
/// shift report's lines are the entries of its shift, and an open shift's totals are the
/// entries since it opened.
fn check_cash_boxes_and_reports(state: &MemState) -> Result<(), String> {
    check_day_reports(state)?;
    let mut reports_of: BTreeMap<&TerminalId, Vec<&Report>> = BTreeMap::new();
    for (key, report) in &state.reports {
        if report.key() != *key {
            return Err(format!(
                "report stored under {key} but keyed {}",
                report.key()
            ));
        }
        let terminal = match report {
            Report::Shift(r) => &r.terminal,
            Report::Collection(r) => &r.terminal,
            // Not about cash boxes: reconciliation; days are checked by `check_day_reports`.
            Report::Reconciliation(_) | Report::TerminalDay(_) | Report::HisReconciliation(_) => {
                continue;
            }
        };
        if !state.terminals.contains_key(terminal) {
            return Err(format!("report {key} names unknown terminal"));
        }
        reports_of.entry(terminal).or_default().push(report);
    }
    let mut by_terminal: BTreeMap<&TerminalId, Vec<&JournalEntry>> = BTreeMap::new();
    for e in &state.journal {
        by_terminal.entry(&e.terminal).or_default().push(e);
    }
    for (id, terminal) in &state.terminals {
        let at_terminal: Vec<&JournalEntry> = by_terminal.get(id).cloned().unwrap_or_default();
        let cash_between = |after: Timestamp, upto: Option<Timestamp>| -> i64 {
            at_terminal
                .iter()
                .filter(|e| e.at > after && upto.is_none_or(|u| e.at <= u))
                .map(|e| cash_cents(e))
                .sum()
        };
        let mut reports = reports_of.get(id).cloned().unwrap_or_default();
        let reset_at = |r: &Report| match r {
            Report::Shift(s) => s.closed_at,
            Report::Collection(c) => c.at,
            Report::Reconciliation(_) | Report::TerminalDay(_) | Report::HisReconciliation(_) => {
                unreachable!("only shifts and collections are here")
            }
        };
        reports.sort_by_key(|r| reset_at(r));
        let mut last_reset = Timestamp(i64::MIN);
        let (mut shifts, mut collections) = (0u64, 0u64);
        for report in &reports {
            let at = reset_at(report);
            let cash = cash_between(last_reset, Some(at));
            match report {
                Report::Shift(s) => {
                    shifts += 1;
                    if s.seq != shifts {
                        return Err(format!("shift reports of {id} out of sequence"));
                    }
                    if s.cash_expected.cents() != cash {
                        return Err(format!(
                            "shift {} of {id} expects cash {} but its entries give {}",
                            s.seq,
                            s.cash_expected,
                            Money::from_cents(cash)
                        ));
                    }
                    let lines = lines_of(
                        at_terminal
                            .iter()
                            .copied()
                            .filter(|e| e.at > s.opened_at && e.at <= s.closed_at),
                    );
                    if lines != s.lines {
                        return Err(format!(
                            "shift {} of {id} reports {:?} but its entries give {lines:?}",
                            s.seq, s.lines
                        ));
                    }
                }
                Report::Collection(c) => {
                    collections += 1;
                    if c.seq != collections {
                        return Err(format!("collections of {id} out of sequence"));
                    }
                    if c.expected.cents() != cash
                        || c.difference.cents() != c.counted.cents() - c.expected.cents()
                    {
                        return Err(format!(
                            "collection {} of {id}: expected {}, counted {}, difference {}, \
                             entries give {}",
                            c.seq,
                            c.expected,
                            c.counted,
                            c.difference,
                            Money::from_cents(cash)
                        ));
                    }
                }
                Report::Reconciliation(_)
                | Report::TerminalDay(_)
                | Report::HisReconciliation(_) => {
                    unreachable!("only shifts and collections are here")
                }
            }
            last_reset = at;
        }
        let cash = cash_between(last_reset, None);
        if terminal.cash_box.cents() != cash {
            return Err(format!(
                "invariant 6: terminal {id} cash box {} but its cash since {:?} is {}",
                terminal.cash_box,
                last_reset,
                Money::from_cents(cash)
            ));
        }
        let open = u64::from(terminal.shift.is_some());
        if terminal.shifts_opened != shifts + open || terminal.collections != collections {
            return Err(format!(
                "terminal {id} counts {} shifts and {} collections, reports show {shifts}+{open} \
                 and {collections}",
                terminal.shifts_opened, terminal.collections
            ));
        }
        if let Some(shift) = &terminal.shift {
            if shift.seq != terminal.shifts_opened {
                return Err(format!("open shift of {id} has the wrong sequence"));
            }
            let lines = lines_of(
                at_terminal
                    .iter()
                    .copied()
                    .filter(|e| e.at > shift.opened_at),
            );
            if lines != shift.totals {
                return Err(format!(
                    "open shift of {id} totals {:?} but its entries give {lines:?}",
                    shift.totals
                ));
            }
        }
        if !matches!(terminal.kind, TerminalKind::Kiosk | TerminalKind::Window)
            && !terminal.cash_box.is_zero()
        {
            return Err(format!("{id} is no cash terminal but holds cash"));
        }
    }
    for e in &state.journal {
        // Adjustments are made at admin consoles, which are never registered; every other
        // movement happens at a registered terminal.
        let adjustment = matches!(
            e.kind,
            EntryKind::AdjustmentCredit | EntryKind::AdjustmentDebit
        );
        if adjustment != (e.terminal.kind() == TerminalKind::Admin) {
            return Err(format!(
                "entry {} ({:?}) at terminal {}",
                e.txn, e.kind, e.terminal
            ));
        }
        if !adjustment && !state.terminals.contains_key(&e.terminal) {
            return Err(format!("entry {} at unregistered terminal", e.txn));
        }
    }
    Ok(())
}

// ---- random command sequences, for the property and determinism tests ----

pub mod random {
    use proptest::prelude::*;

    use super::*;

    /// Where random commands come from: mostly the registered terminals, sometimes an
    /// unregistered kiosk or an admin console.
    pub const TERMINALS: [&str; 10] = [
        KIOSK, KIOSK, KIOSK2, WINDOW, WINDOW, WINDOW, MOBILE, MOBILE, HIS, "K-0999",
    ];
    pub const CARDS: u8 = 8;
    pub const PERSONS: u8 = 5;
    pub const BILLS: u8 = 16;

    pub fn card_no(n: u8) -> String {
        format!("HC{:04}", n % CARDS)
    }

    pub fn bill_no(n: u8) -> String {
        format!("OP-{:03}", n % BILLS)
    }

    fn terminal(n: u8) -> &'static str {
        TERMINALS[usize::from(n) % TERMINALS.len()]
    }

    /// Where refunds come from: mostly where they are allowed.
    fn refund_terminal(n: u8) -> &'static str {
        [KIOSK, KIOSK2, WINDOW, HIS, HIS, MOBILE][usize::from(n) % 6]
    }

    fn external(n: u8) -> External {
        match n % 4 {
            0 => bank_card(1),
            1 => bank_card(2),
            2 => third_party(1),
            _ => third_party(2),
        }
    }

    /// One random action; turned into a command against the world as it is then.
    #[derive(Debug, Clone)]
    pub enum Step {
        Issue {
            at: u8,
            card: u8,
            person: u8,
            deposit: Option<Money>,
        },
        Deposit {
            at: u8,
            card: u8,
            amount: Money,
        },
        TopUp {
            at: u8,
            card: u8,
            ext: u8,
            amount: Option<Money>,
        },
        PayByCard {
            at: u8,
            card: u8,
            bill: u8,
            ext: u8,
            own: bool,
        },
        RefundOnline {
            at: u8,
            card: u8,
            bill: u8,
            ext: u8,
            own: bool,
            /// A part (eighths of what is refundable, 8 and above: more than that), or all.
            part: Option<u8>,
        },
        /// HIS cancels part of a paid bill: eighths of it (more than what is left above 8).
        CancelBillPart {
            bill: u8,
            part: u8,
        },
        MarkInvoiced {
            bill: u8,
        },
        /// 调账 by finance: maybe without an operator, maybe naming a difference no report has.
        Adjust {
            card: u8,
            debit: bool,
            amount: Money,
            with_operator: bool,
            difference: bool,
        },
        /// A refund naming its destination, whole or a part, maybe after a declined online one.
        RefundBill {
            at: u8,
            bill: u8,
            part: Option<u8>,
            cash: bool,
            after_declined: bool,
        },
        WithdrawToCard {
            at: u8,
            card: u8,
            ext: u8,
            amount: Option<Money>,
        },
        Saga {
            pick: u16,
            open_only: bool,
            to: u8,
        },
        PostBill {
            bill: u8,
            card: u8,
            kind: u8,
            amount: Money,
        },
        /// HIS posts an insured bill: the self-pay part and the pooled fund's (in cents, a
        /// negative one now and then), under one of a few settlement ids (so some repeat).
        PostInsuredBill {
            bill: u8,
            card: u8,
            self_pay: Money,
            pooled_cents: i64,
            settlement: u8,
        },
        CancelBill {
            bill: u8,
        },
        PayBill {
            at: u8,
            card: u8,
            bill: u8,
            own: bool,
        },
        Refund {
            at: u8,
            bill: u8,
        },
        WithdrawCash {
            at: u8,
            card: u8,
            amount: Option<Money>,
        },
        Loss {
            card: u8,
            person: u8,
            cancel: bool,
            own: bool,
        },
        Replace {
            old: u8,
            new: u8,
            person: u8,
            own: bool,
        },
        Freeze {
            card: u8,
            freeze: bool,
        },
        Overdraft {
            card: u8,
            limit: Money,
        },
        TerminalStatus {
            which: u8,
            status: u8,
        },
        OpenShift {
            with_operator: bool,
        },
        CloseShift,
        Collect {
            kiosk: u8,
            counted: Money,
            with_operator: bool,
        },
        /// HIS admits the holder of a card (episode ids `ZY-0` … `ZY-5`).
        Admit {
            episode: u8,
            card: u8,
            ward: u8,
        },
        /// An inpatient deposit: `how` 0 cash, 1 the patient's account, 2 another card's
        /// account, 3 by card or channel `ext` (through the patient's card, or card `card`).
        EpisodeDeposit {
            at: u8,
            episode: u8,
            how: u8,
            card: u8,
            ext: u8,
            amount: Money,
        },
        Charge {
            episode: u8,
            amount: Money,
        },
        Finalize {
            episode: u8,
            amount: Money,
        },
        Settle {
            at: u8,
            episode: u8,
            cash: bool,
            from_account: bool,
        },
        /// 预授权 of `amount` on card or channel `ext` for the holder of a card, mostly from the
        /// mobile channel.
        Authorize {
            at: u8,
            card: u8,
            ext: u8,
            amount: Money,
        },
        /// 预授权完成: one of the authorizations (mostly one held now) pays a bill (mostly one of
        /// its patient's that the hold covers), with the patient's card (`own`) or another.
        Capture {
            at: u8,
            pick: u16,
            bill: u8,
            own: bool,
        },
        /// 预授权撤销 of one of the authorizations (mostly one held now).
        Release {
            at: u8,
            pick: u16,
            own: bool,
        },
        /// An admin sets the business rules (tighter or looser than the defaults, or bad ones).
        SetRules {
            limit_yuan: u32,
            min_first_yuan: u16,
            max_overdraft_yuan: u32,
            with_operator: bool,
        },
        /// The same command again (maybe stamped later): must return the first outcome.
        Retry {
            pick: u16,
            restamp: bool,
        },
        /// An earlier request id with another payload: must be refused.
        Reuse {
            pick: u16,
            how: u8,
        },
    }

    /// Amounts, valid and not: whole yuan, fen, zero, negative, the limit and just above it.
    pub fn amount() -> impl Strategy<Value = Money> {
        prop_oneof![
            8 => (1i64..=300).prop_map(Money::from_yuan),
            4 => (1i64..=30_000).prop_map(Money::from_cents),
            1 => (300i64..=5_000).prop_map(Money::from_yuan),
            1 => Just(Money::ZERO),
            1 => (1i64..=10_000).prop_map(|c| Money::from_cents(-c)),
            1 => Just(Money::from_yuan(50_000)),
            1 => Just(Money::from_cents(5_000_001)),
        ]
    }

    fn overdraft() -> impl Strategy<Value = Money> {
        prop_oneof![
            2 => Just(Money::ZERO),
            3 => (1i64..=500).prop_map(Money::from_yuan),
            1 => Just(Money::from_yuan(20_000)),
            1 => Just(Money::from_cents(2_000_001)),
            1 => Just(Money::from_yuan(-1)),
        ]
    }

    pub fn step() -> impl Strategy<Value = Step> {
        let u = any::<u8>;
        let own = || prop::bool::weighted(0.85);
        prop_oneof![
            5 => (u(), u(), 0..PERSONS, prop::option::weighted(0.7, amount()))
                .prop_map(|(at, card, person, deposit)| Step::Issue { at, card, person, deposit }),
            6 => (u(), u(), amount())
                .prop_map(|(at, card, amount)| Step::Deposit { at, card, amount }),
            4 => (u(), u(), u(), prop::option::weighted(0.95, amount()))
                .prop_map(|(at, card, ext, amount)| Step::TopUp { at, card, ext, amount }),
            5 => (u(), u(), u(), u(), own())
                .prop_map(|(at, card, bill, ext, own)| Step::PayByCard { at, card, bill, ext, own }),
            3 => (u(), u(), u(), u(), own(), prop::option::weighted(0.4, 1u8..10))
                .prop_map(|(at, card, bill, ext, own, part)| Step::RefundOnline { at, card, bill, ext, own, part }),
            2 => (u(), 1u8..10).prop_map(|(bill, part)| Step::CancelBillPart { bill, part }),
            1 => u().prop_map(|bill| Step::MarkInvoiced { bill }),
            2 => (u(), any::<bool>(), amount(), prop::bool::weighted(0.9), prop::bool::weighted(0.1))
                .prop_map(|(card, debit, amount, with_operator, difference)| Step::Adjust { card, debit, amount, with_operator, difference }),
            3 => (u(), u(), prop::option::weighted(0.5, 1u8..10), any::<bool>(), prop::bool::weighted(0.3))
                .prop_map(|(at, bill, part, cash, after_declined)| Step::RefundBill { at, bill, part, cash, after_declined }),
            2 => (u(), u(), u(), prop::option::of(amount()))
                .prop_map(|(at, card, ext, amount)| Step::WithdrawToCard { at, card, ext, amount }),
            12 => (any::<u16>(), prop::bool::weighted(0.8), 0u8..4)
                .prop_map(|(pick, open_only, to)| Step::Saga { pick, open_only, to }),
            5 => (u(), u(), u(), amount())
                .prop_map(|(bill, card, kind, amount)| Step::PostBill { bill, card, kind, amount }),
            3 => (u(), u(), amount(), -100i64..2_000_000, 0u8..40)
                .prop_map(|(bill, card, self_pay, pooled_cents, settlement)| Step::PostInsuredBill { bill, card, self_pay, pooled_cents, settlement }),
            3 => u().prop_map(|bill| Step::CancelBill { bill }),
            5 => (u(), u(), u(), own())
                .prop_map(|(at, card, bill, own)| Step::PayBill { at, card, bill, own }),
            3 => (u(), u()).prop_map(|(at, bill)| Step::Refund { at, bill }),
            2 => (u(), u(), prop::option::of(amount()))
                .prop_map(|(at, card, amount)| Step::WithdrawCash { at, card, amount }),
            3 => (u(), 0..PERSONS + 1, any::<bool>(), own())
                .prop_map(|(card, person, cancel, own)| Step::Loss { card, person, cancel, own }),
            1 => (u(), u(), 0..PERSONS + 1, own())
                .prop_map(|(old, new, person, own)| Step::Replace { old, new, person, own }),
            1 => (u(), prop::bool::weighted(0.5))
                .prop_map(|(card, freeze)| Step::Freeze { card, freeze }),
            1 => (u(), overdraft()).prop_map(|(card, limit)| Step::Overdraft { card, limit }),
            1 => (prop_oneof![Just(50u32), 50..=1_100_000u32], 0u16..=200, 0u32..=250_000, prop::bool::weighted(0.9))
                .prop_map(|(limit_yuan, min_first_yuan, max_overdraft_yuan, with_operator)| Step::SetRules { limit_yuan, min_first_yuan, max_overdraft_yuan, with_operator }),
            1 => (u(), 0u8..10)
                .prop_map(|(which, status)| Step::TerminalStatus { which, status }),
            2 => prop::bool::weighted(0.9)
                .prop_map(|with_operator| Step::OpenShift { with_operator }),
            1 => Just(Step::CloseShift),
            1 => (u(), prop_oneof![3 => (0i64..200_000).prop_map(Money::from_cents),
                                   1 => Just(Money::from_yuan(-5))], prop::bool::weighted(0.9))
                .prop_map(|(kiosk, counted, with_operator)| Step::Collect { kiosk, counted, with_operator }),
            2 => (u(), u(), u()).prop_map(|(episode, card, ward)| Step::Admit { episode, card, ward }),
            4 => (u(), u(), 0u8..4, u(), u(), amount())
                .prop_map(|(at, episode, how, card, ext, amount)| Step::EpisodeDeposit { at, episode, how, card, ext, amount }),
            2 => (u(), amount()).prop_map(|(episode, amount)| Step::Charge { episode, amount }),
            2 => (u(), amount()).prop_map(|(episode, amount)| Step::Finalize { episode, amount }),
            3 => (u(), u(), any::<bool>(), prop::bool::weighted(0.3))
                .prop_map(|(at, episode, cash, from_account)| Step::Settle { at, episode, cash, from_account }),
            3 => (u(), u(), u(), amount())
                .prop_map(|(at, card, ext, amount)| Step::Authorize { at, card, ext, amount }),
            3 => (u(), any::<u16>(), u(), own())
                .prop_map(|(at, pick, bill, own)| Step::Capture { at, pick, bill, own }),
            1 => (u(), any::<u16>(), own())
                .prop_map(|(at, pick, own)| Step::Release { at, pick, own }),
            4 => (any::<u16>(), any::<bool>())
                .prop_map(|(pick, restamp)| Step::Retry { pick, restamp }),
            2 => (any::<u16>(), 0u8..3).prop_map(|(pick, how)| Step::Reuse { pick, how }),
        ]
    }

    pub fn steps(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(step(), len)
    }

    /// The account a card names, or one nobody has.
    fn account_for(world: &World, card_n: u8) -> AccountId {
        world
            .state
            .cards
            .get(&card(&card_no(card_n)))
            .map(|c| c.account)
            .unwrap_or(AccountId(424_242))
    }

    /// With `own`, a card of the bill's account (an active one if there is one); otherwise
    /// card `n`.
    fn own_card(world: &World, own: bool, bill: &BillId, n: u8) -> CardNo {
        let of_bill = own
            .then(|| world.state.bills.get(bill))
            .flatten()
            .and_then(|b| card_of_account(world, b.account));
        of_bill.unwrap_or_else(|| card(&card_no(n)))
    }

    /// Mostly a card that is issued; sometimes any card number of the universe.
    fn issued_card(world: &World, n: u8) -> CardNo {
        let issued: Vec<&CardNo> = world.state.cards.keys().collect();
        if n >= 200 || issued.is_empty() {
            return card(&card_no(n));
        }
        issued[usize::from(n) % issued.len()].clone()
    }

    /// Mostly a posted bill, preferring one in the given states; sometimes any bill id of the
    /// universe, posted or not.
    fn pick_bill(world: &World, n: u8, prefer: fn(&Bill) -> bool) -> BillId {
        if n >= 200 || world.state.bills.is_empty() {
            return bill_id(&bill_no(n));
        }
        let preferred: Vec<&BillId> = world
            .state
            .bills
            .values()
            .filter(|b| prefer(b))
            .map(|b| &b.id)
            .collect();
        let all: Vec<&BillId> = world.state.bills.keys().collect();
        let from = if preferred.is_empty() || n.is_multiple_of(4) {
            all
        } else {
            preferred
        };
        from[usize::from(n) % from.len()].clone()
    }

    /// `part` eighths of `of` (at least a fen); above 8, more than all of it.
    fn eighths(of: Money, part: u8) -> Money {
        Money::from_cents((of.cents() * i64::from(part) / 8).max(1))
    }

    /// `part` eighths of what is refundable of the bill (of 1 yuan if it is not posted).
    fn part_of(world: &World, bill: &BillId, part: u8) -> Money {
        let left = world
            .state
            .bills
            .get(bill)
            .map_or(Money::from_yuan(1), |b| b.refundable());
        eighths(left, part)
    }

    /// The card or channel that paid the bill, if it was paid through the bank.
    fn paying_external(world: &World, bill: &BillId) -> Option<External> {
        let b = world.state.bills.get(bill)?;
        let r = b.payment.as_ref()?.bank_ref.as_ref()?;
        Some(world.state.bank_ops.get(r)?.external.clone())
    }

    /// With `own`, the holder's ID of the card's account; otherwise person `n` (1-based; 0 is
    /// nobody's).
    fn holder_key(world: &World, own: bool, card_no: &CardNo, n: u8) -> PersonKey {
        own.then(|| world.state.cards.get(card_no))
            .flatten()
            .and_then(|c| world.state.accounts.get(&c.account))
            .map(|a| a.holder.person.clone())
            .unwrap_or_else(|| person(u64::from(n) + 1))
    }

    /// Mostly an admitted episode (one of those not discharged when there are); sometimes
    /// any episode id of the universe.
    fn pick_episode(world: &World, n: u8) -> AdmissionId {
        let open: Vec<&AdmissionId> = world
            .state
            .episodes
            .values()
            .filter(|e| e.status != EpisodeStatus::Discharged)
            .map(|e| &e.id)
            .collect();
        if n >= 220 || open.is_empty() {
            return admission(&format!("ZY-{}", n % 6));
        }
        open[usize::from(n) % open.len()].clone()
    }

    /// The card of the episode's patient (any of the account's, an active one first).
    fn patient_card(world: &World, episode: &AdmissionId, n: u8) -> CardNo {
        world
            .state
            .episodes
            .get(episode)
            .and_then(|ep| card_of_account(world, ep.account))
            .unwrap_or_else(|| card(&card_no(n)))
    }

    /// A card of the account, an active one if there is one.
    fn card_of_account(world: &World, account: AccountId) -> Option<CardNo> {
        let cards: Vec<&Card> = world
            .state
            .cards
            .values()
            .filter(|c| c.account == account)
            .collect();
        cards
            .iter()
            .find(|c| c.status == CardStatus::Active)
            .or(cards.first())
            .map(|c| c.no.clone())
    }

    /// Where holds are asked for and captured: mostly the mobile channel.
    fn mobile_terminal(n: u8) -> &'static str {
        if n.is_multiple_of(5) {
            terminal(n)
        } else {
            MOBILE
        }
    }

    /// Mostly an authorization held now with nothing under way (when there is one); sometimes
    /// any authorization, any bank operation, or a reference nobody has.
    fn pick_authorization(world: &World, n: u16) -> Option<&BankOp> {
        let ops: Vec<&BankOp> = world.state.bank_ops.values().collect();
        let all: Vec<&BankOp> = ops
            .iter()
            .copied()
            .filter(|op| matches!(op.purpose, BankPurpose::Authorization { .. }))
            .collect();
        let held: Vec<&BankOp> = all
            .iter()
            .copied()
            .filter(|op| {
                op.state == BankOpState::Authorized
                    && op.purpose
                        == (BankPurpose::Authorization {
                            capture: None,
                            release: false,
                        })
            })
            .collect();
        let from = match n % 16 {
            15 => return None,
            14 => ops,
            12 | 13 => all,
            _ if held.is_empty() => all,
            _ => held,
        };
        (!from.is_empty()).then(|| from[usize::from(n) % from.len()])
    }

    /// With `own`, a card of the operation's account; otherwise card `n`.
    fn card_of_op(world: &World, own: bool, op: Option<&BankOp>, n: u8) -> CardNo {
        own.then_some(op)
            .flatten()
            .and_then(|op| card_of_account(world, op.account))
            .unwrap_or_else(|| card(&card_no(n)))
    }

    /// Mostly an unpaid bill of the hold's patient that the hold covers (when there is one);
    /// otherwise any bill, an unpaid one preferred.
    fn capturable_bill(world: &World, hold: Option<&BankOp>, n: u8) -> BillId {
        let fits: Vec<&BillId> = hold
            .map(|h| {
                world
                    .state
                    .bills
                    .values()
                    .filter(|b| {
                        b.account == h.account
                            && b.status == BillStatus::Unpaid
                            && b.pending_op.is_none()
                            && b.amount <= h.amount
                    })
                    .map(|b| &b.id)
                    .collect::<Vec<&BillId>>()
            })
            .unwrap_or_default();
        if fits.is_empty() || n.is_multiple_of(4) {
            return pick_bill(world, n, |b| b.status == BillStatus::Unpaid);
        }
        fits[usize::from(n) % fits.len()].clone()
    }

    /// The command a step makes in this world, without applying it.
    pub fn command_for(world: &mut World, step: &Step) -> Command {
        let body_at = |world: &mut World, at: &str, body| {
            let op = World::default_operator(at);
            world.command(at, op, body)
        };
        match step {
            Step::Issue {
                at,
                card: c,
                person: p,
                deposit,
            } => body_at(
                world,
                terminal(*at),
                CommandBody::IssueCard {
                    card: card(&card_no(*c)),
                    card_kind: CardKind::Hospital,
                    holder: holder(u64::from(*p) + 1),
                    first_deposit: *deposit,
                },
            ),
            Step::Deposit {
                at,
                card: c,
                amount,
            } => body_at(
                world,
                terminal(*at),
                CommandBody::DepositCash {
                    card: card(&card_no(*c)),
                    amount: *amount,
                },
            ),
            Step::TopUp {
                at,
                card: c,
                ext,
                amount,
            } => body_at(
                world,
                terminal(*at),
                CommandBody::StartBankOp {
                    card: card(&card_no(*c)),
                    external: external(*ext),
                    purpose: BankPurpose::TopUp,
                    amount: *amount,
                },
            ),
            Step::PayByCard {
                at,
                card: c,
                bill,
                ext,
                own,
            } => {
                let bill = pick_bill(world, *bill, |b| b.status == BillStatus::Unpaid);
                let card = own_card(world, *own, &bill, *c);
                body_at(
                    world,
                    terminal(*at),
                    CommandBody::StartBankOp {
                        card,
                        external: external(*ext),
                        purpose: BankPurpose::PayBill { bill },
                        amount: None,
                    },
                )
            }
            Step::RefundOnline {
                at,
                card: c,
                bill,
                ext,
                own,
                part,
            } => {
                let bill = pick_bill(world, *bill, |b| {
                    !b.refundable().is_zero()
                        && b.payment.as_ref().is_some_and(|p| p.bank_ref.is_some())
                });
                let amount = part.map(|part| part_of(world, &bill, part));
                let card = own_card(world, *own, &bill, *c);
                let external = own
                    .then(|| paying_external(world, &bill))
                    .flatten()
                    .unwrap_or_else(|| external(*ext));
                body_at(
                    world,
                    refund_terminal(*at),
                    CommandBody::StartBankOp {
                        card,
                        external,
                        purpose: BankPurpose::Refund { bill },
                        amount,
                    },
                )
            }
            Step::WithdrawToCard {
                at,
                card: c,
                ext,
                amount,
            } => body_at(
                world,
                terminal(*at),
                CommandBody::StartBankOp {
                    card: card(&card_no(*c)),
                    external: external(*ext),
                    purpose: BankPurpose::Withdraw,
                    amount: *amount,
                },
            ),
            Step::Saga {
                pick,
                open_only,
                to,
            } => {
                let refs: Vec<&BankRef> = world
                    .state
                    .bank_ops
                    .values()
                    .filter(|op| !open_only || !op.state.is_final())
                    .map(|op| &op.bank_ref)
                    .collect();
                let bank_ref = if refs.is_empty() {
                    unknown_bank_ref()
                } else {
                    refs[usize::from(*pick) % refs.len()].clone()
                };
                let bank_note = format!("step {pick}");
                let body = match to % 4 {
                    0 => CommandBody::CompleteBankOp {
                        bank_ref,
                        bank_note,
                    },
                    1 => CommandBody::DeclineBankOp {
                        bank_ref,
                        bank_note,
                    },
                    2 => CommandBody::MarkBankOpInDoubt {
                        bank_ref,
                        bank_note,
                    },
                    _ => CommandBody::ReverseBankOp {
                        bank_ref,
                        bank_note,
                    },
                };
                world.command(SAGA, None, body)
            }
            Step::PostBill {
                bill,
                card: c,
                kind,
                amount,
            } => {
                let kind = match kind % 3 {
                    0 => BillKind::Registration,
                    1 => BillKind::Outpatient,
                    _ => BillKind::InpatientDeposit,
                };
                let card = issued_card(world, *c);
                world.command(
                    HIS,
                    None,
                    CommandBody::PostBill {
                        bill: bill_id(&bill_no(*bill)),
                        card,
                        kind,
                        amount: *amount,
                    },
                )
            }
            Step::PostInsuredBill {
                bill,
                card: c,
                self_pay,
                pooled_cents,
                settlement,
            } => {
                let card = issued_card(world, *c);
                let split = yinyi_ledger::InsuranceSplit {
                    settlement: yinyi_ledger::InsuranceSettlementId::parse(&format!(
                        "YB{settlement}"
                    ))
                    .unwrap(),
                    pooled: Money::from_cents(*pooled_cents),
                    personal_account: Money::from_cents(pooled_cents.rem_euclid(700)),
                    self_pay: *self_pay,
                    reductions: Money::from_cents(pooled_cents.rem_euclid(3)),
                };
                world.command(
                    HIS,
                    None,
                    CommandBody::PostInsuredBill {
                        bill: bill_id(&bill_no(*bill)),
                        card,
                        kind: BillKind::Outpatient,
                        split,
                    },
                )
            }
            Step::CancelBillPart { bill, part } => {
                let bill = pick_bill(world, *bill, |b| b.status == BillStatus::Paid);
                let left = world
                    .state
                    .bills
                    .get(&bill)
                    .map_or(Money::from_yuan(1), |b| {
                        Money::from_cents(b.amount.cents() - b.cancelled.cents())
                    });
                let amount = eighths(left, *part);
                world.command(HIS, None, CommandBody::CancelBillPart { bill, amount })
            }
            Step::Adjust {
                card: c,
                debit,
                amount,
                with_operator,
                difference,
            } => {
                let account = account_for(world, *c);
                let body = CommandBody::Adjust {
                    account,
                    direction: if *debit {
                        AdjustDirection::Debit
                    } else {
                        AdjustDirection::Credit
                    },
                    amount: *amount,
                    reason: "bank statement line 17 booked late".into(),
                    reference: "TICKET-0042".into(),
                    difference: difference.then(|| DifferenceRef {
                        date: "2025-10-09".into(),
                        bank_ref: unknown_bank_ref(),
                    }),
                };
                world.command(ADMIN, with_operator.then_some(FINANCE), body)
            }
            Step::MarkInvoiced { bill } => {
                let bill = pick_bill(world, *bill, |b| b.payment.is_some());
                world.command(HIS, None, CommandBody::MarkInvoiced { bill })
            }
            Step::RefundBill {
                at,
                bill,
                part,
                cash,
                after_declined,
            } => {
                let bill = pick_bill(world, *bill, |b| !b.refundable().is_zero());
                let amount = part.map(|part| part_of(world, &bill, part));
                let declined = after_declined
                    .then(|| {
                        world.state.bank_ops.values().rev().find(|op| {
                            op.purpose == (BankPurpose::Refund { bill: bill.clone() })
                                && matches!(op.state, BankOpState::Declined | BankOpState::Reversed)
                        })
                    })
                    .flatten()
                    .map(|op| op.bank_ref.clone());
                let to = if *cash {
                    RefundTo::Cash
                } else {
                    RefundTo::Account
                };
                // Cash refunds come from a window, mostly.
                let at = if *cash && at % 4 != 0 {
                    WINDOW
                } else {
                    refund_terminal(*at)
                };
                body_at(
                    world,
                    at,
                    CommandBody::RefundBill {
                        bill,
                        amount,
                        to,
                        declined,
                    },
                )
            }
            Step::CancelBill { bill } => {
                let bill = pick_bill(world, *bill, |b| b.status == BillStatus::Paid);
                world.command(HIS, None, CommandBody::CancelBill { bill })
            }
            Step::PayBill {
                at,
                card: c,
                bill,
                own,
            } => {
                let bill = pick_bill(world, *bill, |b| b.status == BillStatus::Unpaid);
                let card = own_card(world, *own, &bill, *c);
                body_at(world, terminal(*at), CommandBody::PayBill { bill, card })
            }
            Step::Refund { at, bill } => {
                let bill = pick_bill(world, *bill, |b| {
                    !b.refundable().is_zero() && b.payment.is_some()
                });
                body_at(world, refund_terminal(*at), CommandBody::Refund { bill })
            }
            Step::WithdrawCash {
                at,
                card: c,
                amount,
            } => body_at(
                world,
                terminal(*at),
                CommandBody::WithdrawCash {
                    card: card(&card_no(*c)),
                    amount: *amount,
                },
            ),
            Step::Loss {
                card: c,
                person: p,
                cancel,
                own,
            } => {
                let card = card(&card_no(*c));
                let person = holder_key(world, *own, &card, *p);
                let body = if *cancel {
                    CommandBody::CancelLoss { card, person }
                } else {
                    CommandBody::ReportLoss { card, person }
                };
                body_at(world, WINDOW, body)
            }
            Step::Replace {
                old,
                new,
                person: p,
                own,
            } => {
                let old_card = card(&card_no(*old));
                let person = holder_key(world, *own, &old_card, *p);
                body_at(
                    world,
                    WINDOW,
                    CommandBody::ReplaceCard {
                        old_card,
                        new_card: card(&card_no(*new)),
                        person,
                    },
                )
            }
            Step::Freeze { card: c, freeze } => {
                let account = account_for(world, *c);
                let body = if *freeze {
                    CommandBody::Freeze { account }
                } else {
                    CommandBody::Unfreeze { account }
                };
                world.command(ADMIN, None, body)
            }
            Step::Overdraft { card: c, limit } => {
                let account = account_for(world, *c);
                world.command(
                    ADMIN,
                    None,
                    CommandBody::SetOverdraft {
                        account,
                        limit: *limit,
                    },
                )
            }
            Step::SetRules {
                limit_yuan,
                min_first_yuan,
                max_overdraft_yuan,
                with_operator,
            } => world.command(
                ADMIN,
                with_operator.then_some(FINANCE),
                CommandBody::SetRules {
                    rules: yinyi_ledger::Rules {
                        single_txn_limit: Money::from_yuan(i64::from(*limit_yuan)),
                        min_first_deposit: Money::from_yuan(i64::from(*min_first_yuan)),
                        max_overdraft: Money::from_yuan(i64::from(*max_overdraft_yuan)),
                    },
                },
            ),
            Step::TerminalStatus { which, status } => {
                // Only the second kiosk may be retired, so the rest of the universe stays usable.
                let terminal = [KIOSK, WINDOW, KIOSK2][usize::from(*which % 3)];
                let status = match status {
                    0..=5 => TerminalStatus::InService,
                    9 if terminal == KIOSK2 => TerminalStatus::Retired,
                    _ => TerminalStatus::OutOfService,
                };
                world.command(
                    ADMIN,
                    None,
                    CommandBody::SetTerminalStatus {
                        terminal: tid(terminal),
                        status,
                    },
                )
            }
            Step::OpenShift { with_operator } => world.command(
                WINDOW,
                with_operator.then_some(CASHIER),
                CommandBody::OpenShift,
            ),
            Step::CloseShift => world.command(WINDOW, Some(CASHIER), CommandBody::CloseShift),
            Step::Collect {
                kiosk,
                counted,
                with_operator,
            } => {
                let at = if kiosk.is_multiple_of(2) {
                    KIOSK
                } else {
                    KIOSK2
                };
                world.command(
                    at,
                    with_operator.then_some(COLLECTOR),
                    CommandBody::CollectCash { counted: *counted },
                )
            }
            Step::Admit {
                episode,
                card: c,
                ward: wd,
            } => world.command(
                HIS,
                None,
                CommandBody::OpenEpisode {
                    episode: admission(&format!("ZY-{}", episode % 6)),
                    card: issued_card(world, *c),
                    ward: ward(&format!("W{}", wd % 3)),
                    reminder_below: Money::from_yuan(i64::from(*wd) * 10),
                },
            ),
            Step::EpisodeDeposit {
                at,
                episode,
                how,
                card: c,
                ext,
                amount,
            } => {
                let episode = pick_episode(world, *episode);
                let body = match how {
                    0 => CommandBody::DepositToEpisode {
                        episode,
                        amount: *amount,
                        from: EpisodeFunds::Cash,
                    },
                    1 | 2 => {
                        let payer = if *how == 1 {
                            patient_card(world, &episode, *c)
                        } else {
                            issued_card(world, *c)
                        };
                        CommandBody::DepositToEpisode {
                            episode,
                            amount: *amount,
                            from: EpisodeFunds::Account { card: payer },
                        }
                    }
                    _ => {
                        let card = if c.is_multiple_of(5) {
                            issued_card(world, *c)
                        } else {
                            patient_card(world, &episode, *c)
                        };
                        CommandBody::StartBankOp {
                            card,
                            external: external(*ext),
                            purpose: BankPurpose::EpisodeDeposit { episode },
                            amount: Some(*amount),
                        }
                    }
                };
                body_at(world, terminal(*at), body)
            }
            Step::Charge { episode, amount } => {
                let episode = pick_episode(world, *episode);
                world.command(
                    HIS,
                    None,
                    CommandBody::PostEpisodeCharges {
                        episode,
                        amount: *amount,
                    },
                )
            }
            Step::Finalize { episode, amount } => {
                let episode = pick_episode(world, *episode);
                // Mostly near what was deposited, so both surpluses and shortfalls come up.
                let near = world.state.episodes.get(&episode).map(|e| e.deposited);
                let final_amount = match near {
                    Some(d) if !amount.is_negative() && amount.cents() % 3 != 0 => {
                        Money::from_cents((d.cents() + amount.cents() % 40_000 - 20_000).max(0))
                    }
                    _ => *amount,
                };
                world.command(
                    HIS,
                    None,
                    CommandBody::FinalizeEpisode {
                        episode,
                        final_amount,
                    },
                )
            }
            Step::Settle {
                at,
                episode,
                cash,
                from_account,
            } => {
                let episode = pick_episode(world, *episode);
                let card = patient_card(world, &episode, *at);
                // Mostly the window, where a discharge is settled.
                let here = [WINDOW, WINDOW, KIOSK, terminal(*at)][usize::from(*at) % 4];
                body_at(
                    world,
                    here,
                    CommandBody::SettleEpisode {
                        episode,
                        card,
                        rest_to: if *cash {
                            RefundTo::Cash
                        } else {
                            RefundTo::Account
                        },
                        shortfall_from_account: *from_account,
                    },
                )
            }
            Step::Authorize {
                at,
                card: c,
                ext,
                amount,
            } => {
                let card = issued_card(world, *c);
                body_at(
                    world,
                    mobile_terminal(*at),
                    CommandBody::AuthorizePayment {
                        card,
                        external: external(*ext),
                        amount: *amount,
                    },
                )
            }
            Step::Capture {
                at,
                pick,
                bill,
                own,
            } => {
                let hold = pick_authorization(world, *pick);
                let card = card_of_op(world, *own, hold, *bill);
                let bill = capturable_bill(world, hold, *bill);
                let authorization = hold.map_or_else(unknown_bank_ref, |op| op.bank_ref.clone());
                body_at(
                    world,
                    mobile_terminal(*at),
                    CommandBody::CapturePayment {
                        card,
                        authorization,
                        bill,
                    },
                )
            }
            Step::Release { at, pick, own } => {
                let hold = pick_authorization(world, *pick);
                // `pick` is u16; any card number of the universe will do for a stranger's.
                let card = card_of_op(world, *own, hold, pick.to_le_bytes()[0]);
                let authorization = hold.map_or_else(unknown_bank_ref, |op| op.bank_ref.clone());
                body_at(
                    world,
                    mobile_terminal(*at),
                    CommandBody::ReleaseAuthorization {
                        card,
                        authorization,
                    },
                )
            }
            Step::Retry { pick, restamp } => {
                if world.log.is_empty() {
                    return world.command(WINDOW, Some(CASHIER), CommandBody::CloseShift);
                }
                let mut cmd = world.log[usize::from(*pick) % world.log.len()].cmd.clone();
                if *restamp {
                    cmd.at = world.tick();
                }
                cmd
            }
            Step::Reuse { pick, how } => {
                if world.log.is_empty() {
                    return world.command(WINDOW, Some(CASHIER), CommandBody::CloseShift);
                }
                let mut cmd = world.log[usize::from(*pick) % world.log.len()].cmd.clone();
                cmd.at = world.tick();
                match how % 3 {
                    0 => {
                        cmd.body = if cmd.body == CommandBody::CloseShift {
                            CommandBody::OpenShift
                        } else {
                            CommandBody::CloseShift
                        };
                    }
                    1 => {
                        cmd.terminal = if cmd.terminal == tid(KIOSK2) {
                            tid(KIOSK)
                        } else {
                            tid(KIOSK2)
                        };
                    }
                    _ => {
                        cmd.operator = if cmd.operator.is_some() {
                            None
                        } else {
                            Some(operator("SOMEONE-ELSE"))
                        };
                    }
                }
                cmd
            }
        }
    }

    /// Makes the step's command and applies it.
    pub fn perform(world: &mut World, step: &Step) -> (Command, Outcome) {
        let cmd = command_for(world, step);
        let outcome = world.submit(&cmd);
        (cmd, outcome)
    }

    /// Request ids already recorded, to tell a first application from a retry.
    pub fn recorded(world: &World) -> BTreeSet<(TerminalId, RequestId)> {
        world.state.requests.keys().cloned().collect()
    }
}

/// An insurance split in whole yuan under `settlement`.
pub fn split(
    settlement: &str,
    pooled: i64,
    personal: i64,
    self_pay: i64,
    reductions: i64,
) -> yinyi_ledger::InsuranceSplit {
    yinyi_ledger::InsuranceSplit {
        settlement: yinyi_ledger::InsuranceSettlementId::parse(settlement).unwrap(),
        pooled: yuan(pooled),
        personal_account: yuan(personal),
        self_pay: yuan(self_pay),
        reductions: yuan(reductions),
    }
}

/// HIS posts outpatient bill `bill` of the patient of `card_no` with its insurance `split`.
pub fn post_insured(
    w: &mut World,
    bill: &str,
    card_no: &str,
    split: yinyi_ledger::InsuranceSplit,
) -> Outcome {
    w.run(
        HIS,
        CommandBody::PostInsuredBill {
            bill: bill_id(bill),
            card: card(card_no),
            kind: yinyi_ledger::BillKind::Outpatient,
            split,
        },
    )
}

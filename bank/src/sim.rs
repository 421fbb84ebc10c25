//! The bank simulator behind `yinyi banksim`: a front-end processor that keeps card balances,
//! deduplicates by reference, writes every decision to its own journal (synced before it
//! answers) and serves the day's statement, with faults injected on demand: latency, declines,
//! "applied but the response is lost", dropped connections, down windows, and a faulty switch
//! that applies another amount than asked. Faults are set at start and changed at run time
//! with a 9800 message (`yinyi banksim --set-faults`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use yinyi_ledger::{BankRef, CardToken, Money};

use crate::codec::{read_message, write_message};
use crate::message::{Message, OpState, Processing, ResponseCode, StatementLine};

/// The faults in force. Probabilities are per financial request or reversal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Every answer waits this long, plus up to `jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    /// Share of debits declined ("05") although funds suffice.
    pub decline: f64,
    /// Share of requests applied whose response is then lost (the connection is closed).
    pub lost: f64,
    /// Share of requests whose connection is dropped before anything is applied.
    pub drop: f64,
    /// Down until then: connections are closed at once.
    pub down_until: Option<Instant>,
    /// How long a payer takes to confirm a channel order in their app.
    pub confirm: Duration,
    /// Share of channel orders the payer never confirms.
    pub abandon: f64,
    /// Share of new financial requests applied (or ordered) for one fen more than asked, and
    /// answered with that amount: a faulty switch whose reply does not fit the request.
    pub mismatch: f64,
}

fn parse_ms(key: &str, value: &str) -> Result<Duration, String> {
    let (digits, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| value.split_at(i))
        .ok_or_else(|| format!("{key}={value}: a duration needs a unit (ms or s)"))?;
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{key}={value} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("{key}={value}: unit must be ms or s")),
    }
}

fn parse_share(key: &str, value: &str) -> Result<f64, String> {
    let share: f64 = value
        .parse()
        .map_err(|_| format!("{key}={value} is not a number"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err(format!("{key}={value} must be between 0 and 1"));
    }
    Ok(share)
}

impl Faults {
    /// Applies `latency=20ms,jitter=10ms,decline=0.03,lost=0.02,drop=0.01,down=5s,
    /// confirm=200ms,abandon=0.05,mismatch=0.01` (any subset) on top of the faults in force;
    /// `clear` first resets everything.
    pub fn apply_spec(&mut self, spec: &str) -> Result<(), String> {
        let mut next = self.clone();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "clear" {
                next = Faults::default();
                continue;
            }
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            match key {
                "latency" => next.latency = parse_ms(key, value)?,
                "jitter" => next.jitter = parse_ms(key, value)?,
                "decline" => next.decline = parse_share(key, value)?,
                "lost" => next.lost = parse_share(key, value)?,
                "drop" => next.drop = parse_share(key, value)?,
                "confirm" => next.confirm = parse_ms(key, value)?,
                "abandon" => next.abandon = parse_share(key, value)?,
                "mismatch" => next.mismatch = parse_share(key, value)?,
                "down" => {
                    let d = parse_ms(key, value)?;
                    next.down_until = (!d.is_zero()).then(|| Instant::now() + d);
                }
                other => {
                    return Err(format!(
                        "unknown fault {other:?}: latency, jitter, decline, lost, drop, down, confirm, abandon, mismatch or clear"
                    ));
                }
            }
        }
        *self = next;
        Ok(())
    }

    pub fn describe(&self) -> String {
        let down = self
            .down_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
            .map_or("no".to_string(), |d| format!("{}ms", d.as_millis()));
        format!(
            "latency={}ms,jitter={}ms,decline={},lost={},drop={},down={down},confirm={}ms,abandon={},mismatch={}",
            self.latency.as_millis(),
            self.jitter.as_millis(),
            self.decline,
            self.lost,
            self.drop,
            self.confirm.as_millis(),
            self.abandon,
            self.mismatch
        )
    }

    fn is_down(&self) -> bool {
        self.down_until.is_some_and(|t| Instant::now() < t)
    }
}

/// One operation as the bank recorded it; the journal is a line of JSON per decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Op {
    bank_ref: String,
    credit: bool,
    /// A third-party channel order rather than a card debit.
    #[serde(default)]
    channel: bool,
    /// A pre-authorization: while Applied the amount is held (not available), Captured once a
    /// completion took part of it, Reversed once released. Never on a statement: the
    /// completion is the money.
    #[serde(default)]
    hold: bool,
    token: String,
    cents: i64,
    state: char,
    code: String,
    at_ms: i64,
}

impl Op {
    fn state(&self) -> OpState {
        OpState::parse(self.state as u8).unwrap_or(OpState::Unknown)
    }

    /// What this operation did to its card's available balance, in fen (a hold counts while
    /// it is held).
    fn effect(&self) -> i64 {
        match (self.state(), self.credit) {
            (OpState::Applied, true) => self.cents,
            (OpState::Applied, false) => -self.cents,
            _ => 0,
        }
    }
}

struct Book {
    ops: HashMap<String, Op>,
    /// Card balances in fen, for cards that have moved.
    cards: HashMap<String, i64>,
    journal: File,
    /// Decisions written to the journal so far (not all synced yet: see `BankSim::durable`).
    written: u64,
}

impl Book {
    fn balance(&self, token: &str, initial: i64) -> i64 {
        self.cards.get(token).copied().unwrap_or(initial)
    }

    /// Records a decision: journal first, then memory. It is not durable until
    /// [`BankSim::durable`] returns; nothing that shows it leaves before that.
    fn record(&mut self, op: Op, initial: i64) -> std::io::Result<()> {
        let mut line = serde_json::to_string(&op).map_err(std::io::Error::other)?;
        line.push('\n');
        self.journal.write_all(line.as_bytes())?;
        self.written += 1;
        let before = self.ops.get(&op.bank_ref).map_or(0, Op::effect);
        let delta = op.effect() - before;
        if delta != 0 {
            let balance = self.balance(&op.token, initial) + delta;
            self.cards.insert(op.token.clone(), balance);
        }
        self.ops.insert(op.bank_ref.clone(), op);
        Ok(())
    }
}

/// The simulated bank.
pub struct BankSim {
    book: Mutex<Book>,
    faults: Mutex<Faults>,
    /// Every card starts with this balance, in fen.
    initial: i64,
    /// Financial requests read off the wire (before any latency), for tests and operators.
    seen: std::sync::atomic::AtomicU64,
    /// The same, by reference: how often each operation was sent.
    seen_by_ref: Mutex<HashMap<BankRef, u64>>,
    /// Told the result of every channel order the payer settled (the channel's asynchronous
    /// notification).
    notifier: Mutex<Option<Notifier>>,
    /// Decisions known synced; held while one caller syncs for everyone waiting (group
    /// commit: one fsync for all decisions written meanwhile).
    synced: tokio::sync::Mutex<u64>,
    /// The journal again, to sync without holding the book.
    sync_handle: Arc<File>,
    /// The link's settlement terms (清分结算): its fee and reserve.
    terms: Mutex<yinyi_ledger::SettlementTerms>,
    /// Days settled otherwise than the terms say, for tests: paid this much, or not at all.
    settled_otherwise: Mutex<HashMap<String, Option<Money>>>,
}

/// Receives the channel's asynchronous notifications: the order and how it ended.
pub type Notifier = Arc<dyn Fn(BankRef, OpState) + Send + Sync>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What to do with a connection after a request.
enum Reply {
    Send(Message),
    /// Answer, then let the payer confirm the channel order later.
    Order(Message, BankRef),
    /// Close without answering (a lost response, a dropped connection, a down bank).
    Close,
}

impl BankSim {
    /// Opens the simulator with its journal at `journal` (replayed when it exists).
    pub fn open(
        journal: &Path,
        initial_balance: Money,
        faults: Faults,
    ) -> std::io::Result<BankSim> {
        let mut ops: HashMap<String, Op> = HashMap::new();
        if let Ok(file) = File::open(journal) {
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                match serde_json::from_str::<Op>(&line) {
                    Ok(op) => {
                        ops.insert(op.bank_ref.clone(), op);
                    }
                    // A torn last line from a crash: the decision was never answered.
                    Err(e) => tracing::warn!(line = n + 1, "journal line skipped: {e}"),
                }
            }
        }
        let initial = initial_balance.cents();
        let mut cards: HashMap<String, i64> = HashMap::new();
        for op in ops.values() {
            let effect = op.effect();
            if effect != 0 {
                *cards.entry(op.token.clone()).or_insert(initial) += effect;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(journal)?;
        let sync_handle = Arc::new(file.try_clone()?);
        Ok(BankSim {
            book: Mutex::new(Book {
                ops,
                cards,
                journal: file,
                written: 0,
            }),
            synced: tokio::sync::Mutex::new(0),
            sync_handle,
            faults: Mutex::new(faults),
            initial,
            seen: std::sync::atomic::AtomicU64::new(0),
            seen_by_ref: Mutex::new(HashMap::new()),
            notifier: Mutex::new(None),
            terms: Mutex::new(yinyi_ledger::SettlementTerms::default()),
            settled_otherwise: Mutex::new(HashMap::new()),
        })
    }

    /// The fee and reserve this link settles with.
    pub fn set_settlement_terms(&self, terms: yinyi_ledger::SettlementTerms) {
        *self.terms.lock().unwrap_or_else(|e| e.into_inner()) = terms;
    }

    /// Injects a settlement difference for tests: day `date` (`YYYYMMDD`) is paid `amount`,
    /// or not paid at all when `None`, whatever the terms say.
    pub fn tamper_settlement(&self, date: &str, amount: Option<Money>) {
        self.settled_otherwise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(date.to_string(), amount);
    }

    /// The link's settlement advice of `date`: the day's statement under its terms, with the
    /// reserve kept the day before released. The simulator settles a day at once (a real link
    /// pays T+1).
    fn settlement(&self, date: &str) -> Message {
        let statement_lines = |date: &str| match self.statement(date) {
            Message::Statement { lines, .. } => crate::message::settlement_lines(&lines),
            _ => Vec::new(),
        };
        let terms = *self.terms.lock().unwrap_or_else(|e| e.into_inner());
        let released = yinyi_ledger::BusinessDay::parse_compact(date).map_or(Money::ZERO, |day| {
            let before = statement_lines(&day.previous().compact());
            yinyi_ledger::settle(&before, terms, Money::ZERO).reserve_kept
        });
        let due = yinyi_ledger::settle(&statement_lines(date), terms, released).due;
        let paid = self
            .settled_otherwise
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(date)
            .copied()
            .unwrap_or(Some(due));
        Message::SettlementAdvice {
            date: date.to_string(),
            paid: paid.is_some(),
            amount: paid.unwrap_or(Money::ZERO),
            reference: if paid.is_some() {
                format!("STL{date}")
            } else {
                String::new()
            },
        }
    }

    /// Injects a statement difference for reconciliation tests: the bank's record of
    /// `bank_ref` is changed in memory (not in the journal) — dropped when `state` is
    /// `Unknown`, else set to `state`, and to `amount` when given. Card balances are untouched.
    pub fn tamper(&self, bank_ref: &BankRef, state: OpState, amount: Option<Money>) -> bool {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if state == OpState::Unknown {
            return book.ops.remove(bank_ref.as_str()).is_some();
        }
        match book.ops.get_mut(bank_ref.as_str()) {
            Some(op) => {
                op.state = state.as_char() as char;
                if let Some(amount) = amount {
                    op.cents = amount.cents();
                }
                true
            }
            None => false,
        }
    }

    /// Where the channel's notifications go.
    pub fn on_channel_result(&self, notifier: Notifier) {
        *self.notifier.lock().unwrap_or_else(|e| e.into_inner()) = Some(notifier);
    }

    /// The payer of channel order `bank_ref` confirms it (after the confirmation delay, unless
    /// they abandon it): the debit applies or is declined, and the notifier hears of it.
    async fn confirm_later(self: Arc<Self>, bank_ref: BankRef) {
        let faults = self.faults();
        tokio::time::sleep(faults.confirm).await;
        if Self::roll(faults.abandon) {
            return;
        }
        let state = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            let Some(op) = book.ops.get(bank_ref.as_str()).cloned() else {
                return;
            };
            if op.state() != OpState::Pending {
                return; // closed (reversed) before the payer confirmed
            }
            let funded = book.balance(&op.token, self.initial) >= op.cents;
            let (state, code) = if funded {
                (OpState::Applied, ResponseCode::Approved)
            } else {
                (OpState::Declined, ResponseCode::InsufficientFunds)
            };
            let mut settled = op;
            settled.state = state.as_char() as char;
            settled.code = code.as_str().to_string();
            settled.at_ms = now_ms();
            if let Err(e) = book.record(settled, self.initial) {
                tracing::error!("bank journal write failed: {e}");
                return;
            }
            state
        };
        if let Err(e) = self.durable().await {
            tracing::error!("bank journal sync failed: {e}");
            return;
        }
        let notifier = self
            .notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(notify) = notifier {
            notify(bank_ref, state);
        }
    }

    /// Waits until every decision written so far is synced to the journal. Callers that
    /// arrive while a sync runs wait for it and then usually find their decision covered, so
    /// one fsync serves many answers.
    async fn durable(&self) -> std::io::Result<()> {
        let target = self.book.lock().unwrap_or_else(|e| e.into_inner()).written;
        let mut synced = self.synced.lock().await;
        if *synced >= target {
            return Ok(());
        }
        let upto = self.book.lock().unwrap_or_else(|e| e.into_inner()).written;
        let file = self.sync_handle.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(std::io::Error::other)??;
        *synced = upto;
        Ok(())
    }

    /// Financial requests received so far (counted on arrival, before any injected latency).
    pub fn requests_seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Financial requests received so far for `bank_ref` (counted as `requests_seen`).
    pub fn requests_for(&self, bank_ref: &BankRef) -> u64 {
        self.seen_by_ref
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bank_ref)
            .copied()
            .unwrap_or(0)
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_faults(&self, spec: &str) -> Result<String, String> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.apply_spec(spec)?;
        Ok(faults.describe())
    }

    /// A card's balance now.
    pub fn balance(&self, token: &CardToken) -> Money {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        Money::from_cents(book.balance(token.as_str(), self.initial))
    }

    /// What the bank holds about `bank_ref`.
    pub fn state_of(&self, bank_ref: &BankRef) -> OpState {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.ops
            .get(bank_ref.as_str())
            .map_or(OpState::Unknown, Op::state)
    }

    fn roll(share: f64) -> bool {
        share > 0.0 && rand::rng().random::<f64>() < share
    }

    fn financial(
        &self,
        processing: Processing,
        bank_ref: &BankRef,
        token: &CardToken,
        amount: Money,
    ) -> std::io::Result<Reply> {
        let faults = self.faults();
        if Self::roll(faults.drop) {
            return Ok(Reply::Close);
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let respond = |code, amount| Message::FinancialResponse {
            processing,
            bank_ref: bank_ref.clone(),
            amount,
            code,
        };
        if let Some(op) = book.ops.get(bank_ref.as_str()) {
            // Seen before: the first answer again, for the amount recorded (a reversed one is
            // refused), nothing applied.
            let code = match op.state() {
                OpState::Reversed => ResponseCode::InvalidTransaction,
                OpState::Pending => ResponseCode::InProgress,
                _ => ResponseCode::parse(&op.code).unwrap_or(ResponseCode::Declined),
            };
            return Ok(Reply::Send(respond(code, Money::from_cents(op.cents))));
        }
        let amount = if Self::roll(faults.mismatch) {
            Money::from_cents(amount.cents() + 1)
        } else {
            amount
        };
        if processing == Processing::ChannelDebit {
            // An order: the payer confirms it later, in their app.
            book.record(
                Op {
                    bank_ref: bank_ref.to_string(),
                    credit: false,
                    channel: true,
                    hold: false,
                    token: token.to_string(),
                    cents: amount.cents(),
                    state: OpState::Pending.as_char() as char,
                    code: ResponseCode::InProgress.as_str().to_string(),
                    at_ms: now_ms(),
                },
                self.initial,
            )?;
            return Ok(Reply::Order(
                respond(ResponseCode::InProgress, amount),
                bank_ref.clone(),
            ));
        }
        let credit = processing == Processing::Credit;
        let code = if !credit && Self::roll(faults.decline) {
            ResponseCode::Declined
        } else if !credit && book.balance(token.as_str(), self.initial) < amount.cents() {
            ResponseCode::InsufficientFunds
        } else {
            ResponseCode::Approved
        };
        let state = if code == ResponseCode::Approved {
            OpState::Applied
        } else {
            OpState::Declined
        };
        book.record(
            Op {
                bank_ref: bank_ref.to_string(),
                credit,
                channel: false,
                hold: processing == Processing::PreAuth,
                token: token.to_string(),
                cents: amount.cents(),
                state: state.as_char() as char,
                code: code.as_str().to_string(),
                at_ms: now_ms(),
            },
            self.initial,
        )?;
        metrics::counter!("banksim_requests_total", "code" => code.as_str()).increment(1);
        if Self::roll(faults.lost) {
            return Ok(Reply::Close);
        }
        Ok(Reply::Send(respond(code, amount)))
    }

    /// A completion advice: takes `amount` of the hold `original` under `bank_ref` and frees
    /// the rest, or refuses when the hold is unknown, no longer held or too small. Recorded
    /// either way, so a repeat is answered as the first was.
    fn completion(
        &self,
        bank_ref: &BankRef,
        original: &BankRef,
        amount: Money,
    ) -> std::io::Result<Reply> {
        let faults = self.faults();
        if Self::roll(faults.drop) {
            return Ok(Reply::Close);
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let ack = |code: ResponseCode| Message::CompletionAck {
            bank_ref: bank_ref.clone(),
            code,
        };
        if let Some(op) = book.ops.get(bank_ref.as_str()) {
            let code = ResponseCode::parse(&op.code).unwrap_or(ResponseCode::Declined);
            return Ok(Reply::Send(ack(code)));
        }
        let hold = book
            .ops
            .get(original.as_str())
            .filter(|op| op.hold)
            .cloned();
        let code = match &hold {
            None => ResponseCode::NotFound,
            Some(h) if h.state() != OpState::Applied || h.cents < amount.cents() => {
                ResponseCode::InvalidTransaction
            }
            Some(_) => ResponseCode::Approved,
        };
        let approved = code == ResponseCode::Approved;
        // The hold is marked captured before the completion is recorded: a power cut between
        // the two leaves nothing taken and nothing answered (the hold is then lost to both
        // sides, never taken twice).
        if let (true, Some(mut captured)) = (approved, hold.clone()) {
            captured.state = OpState::Captured.as_char() as char;
            book.record(captured, self.initial)?;
        }
        book.record(
            Op {
                bank_ref: bank_ref.to_string(),
                credit: false,
                channel: false,
                hold: false,
                token: hold.map_or_else(String::new, |h| h.token),
                cents: amount.cents(),
                state: if approved {
                    OpState::Applied
                } else {
                    OpState::Declined
                }
                .as_char() as char,
                code: code.as_str().to_string(),
                at_ms: now_ms(),
            },
            self.initial,
        )?;
        metrics::counter!("banksim_completions_total", "code" => code.as_str()).increment(1);
        if Self::roll(faults.lost) {
            return Ok(Reply::Close);
        }
        Ok(Reply::Send(ack(code)))
    }

    fn reversal(&self, bank_ref: &BankRef, amount: Money) -> std::io::Result<Reply> {
        let faults = self.faults();
        if Self::roll(faults.drop) {
            return Ok(Reply::Close);
        }
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let captured = book
            .ops
            .get(bank_ref.as_str())
            .is_some_and(|op| op.state() == OpState::Captured);
        if captured {
            // A hold already taken by its completion is not freed by a reversal: refused, so
            // nobody records the hold as given back.
            return Ok(Reply::Send(Message::ReversalAck {
                bank_ref: bank_ref.clone(),
                code: ResponseCode::InvalidTransaction,
            }));
        }
        match book.ops.get(bank_ref.as_str()).cloned() {
            Some(op) if matches!(op.state(), OpState::Applied | OpState::Pending) => {
                let mut reversed = op;
                reversed.state = OpState::Reversed.as_char() as char;
                book.record(reversed, self.initial)?;
            }
            // Declined or already reversed: nothing to undo.
            Some(_) => {}
            None => {
                // Reversed before it was seen: recorded so that a late original is refused.
                book.record(
                    Op {
                        bank_ref: bank_ref.to_string(),
                        credit: false,
                        channel: false,
                        hold: false,
                        token: String::new(),
                        cents: amount.cents(),
                        state: OpState::Reversed.as_char() as char,
                        code: ResponseCode::InvalidTransaction.as_str().to_string(),
                        at_ms: now_ms(),
                    },
                    self.initial,
                )?;
            }
        }
        if Self::roll(faults.lost) {
            return Ok(Reply::Close);
        }
        Ok(Reply::Send(Message::ReversalAck {
            bank_ref: bank_ref.clone(),
            code: ResponseCode::Approved,
        }))
    }

    fn statement(&self, date: &str) -> Message {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<StatementLine> = book
            .ops
            .values()
            .filter(|op| {
                op.state() == OpState::Applied
                    && !op.hold
                    && yinyi_ledger::BusinessDay::of_ms(op.at_ms).compact() == date
            })
            .filter_map(|op| {
                Some(StatementLine {
                    bank_ref: BankRef::parse(&op.bank_ref).ok()?,
                    processing: if op.credit {
                        Processing::Credit
                    } else if op.channel {
                        Processing::ChannelDebit
                    } else {
                        Processing::Debit
                    },
                    token: CardToken::parse(&op.token).ok()?,
                    amount: Money::from_cents(op.cents),
                    state: OpState::Applied,
                    at_ms: op.at_ms,
                })
            })
            .collect();
        lines.sort_by(|a, b| a.bank_ref.cmp(&b.bank_ref));
        Message::Statement {
            date: date.to_string(),
            lines,
        }
    }

    fn handle(&self, request: Message) -> std::io::Result<Reply> {
        Ok(match request {
            Message::FinancialRequest {
                processing,
                bank_ref,
                token,
                amount,
                ..
            } => return self.financial(processing, &bank_ref, &token, amount),
            Message::ReversalAdvice {
                bank_ref, amount, ..
            } => return self.reversal(&bank_ref, amount),
            Message::CompletionAdvice {
                bank_ref,
                original,
                amount,
                ..
            } => return self.completion(&bank_ref, &original, amount),
            Message::StatusQuery { bank_ref } => {
                let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
                let (state, cents) = book
                    .ops
                    .get(bank_ref.as_str())
                    .map_or((OpState::Unknown, 0), |op| (op.state(), op.cents));
                Reply::Send(Message::StatusReply {
                    bank_ref,
                    state,
                    amount: Money::from_cents(cents),
                })
            }
            Message::StatementRequest { date } => Reply::Send(self.statement(&date)),
            Message::SettlementRequest { date } => Reply::Send(self.settlement(&date)),
            Message::SetFaults { spec } => Reply::Send(match self.set_faults(&spec) {
                Ok(text) => Message::FaultsAck { ok: true, text },
                Err(text) => Message::FaultsAck { ok: false, text },
            }),
            // Responses are not requests: the connection is closed.
            _ => Reply::Close,
        })
    }

    async fn serve_connection(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        loop {
            let request = match read_message(&mut stream).await {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("bad frame, closing: {e}");
                    return;
                }
            };
            if let Message::FinancialRequest { bank_ref, .. } = &request {
                self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                *self
                    .seen_by_ref
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(bank_ref.clone())
                    .or_default() += 1;
            }
            let admin = matches!(request, Message::SetFaults { .. });
            let faults = self.faults();
            if faults.is_down() && !admin {
                return;
            }
            let delayed = !faults.latency.is_zero() || !faults.jitter.is_zero();
            if !admin && delayed {
                let jitter = if faults.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    faults.jitter.mul_f64(rand::rng().random::<f64>())
                };
                tokio::time::sleep(faults.latency + jitter).await;
            }
            let reply = match self.handle(request) {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::error!("bank journal write failed: {e}");
                    return;
                }
            };
            // Whatever the reply shows (or a lost reply hides) is on disk first.
            if let Err(e) = self.durable().await {
                tracing::error!("bank journal sync failed: {e}");
                return;
            }
            match reply {
                Reply::Send(message) => {
                    if write_message(&mut stream, &message).await.is_err() {
                        return;
                    }
                }
                Reply::Order(message, bank_ref) => {
                    tokio::spawn(self.clone().confirm_later(bank_ref));
                    if write_message(&mut stream, &message).await.is_err() {
                        return;
                    }
                }
                Reply::Close => return,
            }
        }
    }

    /// Serves connections on `listener` until the task is dropped. Channel orders still
    /// pending in the journal are the payers' to confirm as before: a channel that restarts
    /// does not forget the orders its payers have open in their apps.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let open_orders: Vec<BankRef> = {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            book.ops
                .values()
                .filter(|op| op.channel && op.state() == OpState::Pending)
                .filter_map(|op| BankRef::parse(&op.bank_ref).ok())
                .collect()
        };
        for bank_ref in open_orders {
            tokio::spawn(self.clone().confirm_later(bank_ref));
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let sim = self.clone();
                    tokio::spawn(sim.serve_connection(stream));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_and_refuse_nonsense() {
        let mut f = Faults::default();
        f.apply_spec("latency=20ms,jitter=1s,decline=0.03,lost=0.5,drop=0,mismatch=0.25")
            .unwrap();
        assert_eq!(f.latency, Duration::from_millis(20));
        assert_eq!(f.jitter, Duration::from_secs(1));
        assert_eq!((f.decline, f.lost, f.drop), (0.03, 0.5, 0.0));
        assert_eq!(f.mismatch, 0.25);
        assert!(f.describe().contains("mismatch=0.25"));
        for bad in [
            "decline=2",
            "latency=5",
            "lost=x",
            "speed=1",
            "latency",
            "mismatch=1.5",
        ] {
            let before = f.clone();
            assert!(f.apply_spec(bad).is_err(), "{bad}");
            assert_eq!(f, before, "a refused spec changes nothing");
        }
        f.apply_spec("clear,decline=0.1").unwrap();
        assert_eq!(f.latency, Duration::ZERO);
        assert_eq!(f.decline, 0.1);
    }

    fn reference(n: u64) -> BankRef {
        BankRef::parse(&format!("Y{n:019}")).unwrap()
    }

    fn answer(sim: &BankSim, request: Message) -> Message {
        match sim.handle(request).unwrap() {
            Reply::Send(message) => message,
            _ => panic!("no answer"),
        }
    }

    fn hold(sim: &BankSim, n: u64, token: &CardToken, yuan: i64) -> Message {
        answer(
            sim,
            Message::FinancialRequest {
                processing: Processing::PreAuth,
                bank_ref: reference(n),
                token: token.clone(),
                amount: Money::from_yuan(yuan),
                at_ms: 0,
            },
        )
    }

    fn complete(sim: &BankSim, n: u64, original: u64, yuan: i64) -> ResponseCode {
        match answer(
            sim,
            Message::CompletionAdvice {
                bank_ref: reference(n),
                original: reference(original),
                amount: Money::from_yuan(yuan),
                repeat: false,
            },
        ) {
            Message::CompletionAck { code, .. } => code,
            other => panic!("{other:?}"),
        }
    }

    fn reverse(sim: &BankSim, n: u64) -> ResponseCode {
        match answer(
            sim,
            Message::ReversalAdvice {
                bank_ref: reference(n),
                amount: Money::ZERO,
                repeat: false,
            },
        ) {
            Message::ReversalAck { code, .. } => code,
            other => panic!("{other:?}"),
        }
    }

    /// A hold takes nothing but makes it unavailable; its completion takes part of it and
    /// frees the rest, once; a repeat is answered as the first; a reversal frees a hold but
    /// never one already taken; nothing of a hold is on the statement; and the journal
    /// replays to the same balances.
    #[test]
    fn a_hold_is_taken_once_by_its_completion_and_the_rest_freed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("bank.journal");
        let sim = BankSim::open(&journal, Money::from_yuan(100), Faults::default()).unwrap();
        let token = CardToken::parse("tok_hold_0001").unwrap();
        assert!(matches!(
            hold(&sim, 1, &token, 14),
            Message::FinancialResponse {
                code: ResponseCode::Approved,
                ..
            }
        ));
        assert_eq!(sim.balance(&token), Money::from_yuan(86));
        assert_eq!(complete(&sim, 2, 1, 15), ResponseCode::InvalidTransaction);
        assert_eq!(complete(&sim, 3, 9, 1), ResponseCode::NotFound);
        assert_eq!(complete(&sim, 4, 1, 6), ResponseCode::Approved);
        assert_eq!(complete(&sim, 4, 1, 6), ResponseCode::Approved, "a repeat");
        assert_eq!(sim.balance(&token), Money::from_yuan(94));
        assert_eq!(sim.state_of(&reference(1)), OpState::Captured);
        assert_eq!(
            complete(&sim, 5, 1, 6),
            ResponseCode::InvalidTransaction,
            "taken once"
        );
        assert_eq!(reverse(&sim, 1), ResponseCode::InvalidTransaction);
        assert_eq!(sim.balance(&token), Money::from_yuan(94));
        // Another hold, released whole.
        hold(&sim, 6, &token, 20);
        assert_eq!(sim.balance(&token), Money::from_yuan(74));
        assert_eq!(reverse(&sim, 6), ResponseCode::Approved);
        assert_eq!(sim.balance(&token), Money::from_yuan(94));
        assert_eq!(complete(&sim, 7, 6, 1), ResponseCode::InvalidTransaction);
        let today = yinyi_ledger::BusinessDay::of_ms(now_ms()).compact();
        let Message::Statement { lines, .. } = sim.statement(&today) else {
            panic!("no statement");
        };
        let listed: Vec<_> = lines
            .iter()
            .map(|l| (l.bank_ref.clone(), l.amount))
            .collect();
        assert_eq!(listed, vec![(reference(4), Money::from_yuan(6))]);
        drop(sim);
        let again = BankSim::open(&journal, Money::from_yuan(100), Faults::default()).unwrap();
        assert_eq!(again.balance(&token), Money::from_yuan(94));
        assert_eq!(again.state_of(&reference(1)), OpState::Captured);
    }

    /// The link settles a day by its statement under its terms, the reserve of the day before
    /// released; a day tampered with is paid otherwise, or not at all.
    #[test]
    fn the_link_settles_a_day_by_its_statement_and_terms() {
        let dir = tempfile::tempdir().unwrap();
        let sim = BankSim::open(
            &dir.path().join("bank.journal"),
            Money::from_yuan(1_000),
            Faults::default(),
        )
        .unwrap();
        sim.set_settlement_terms(yinyi_ledger::SettlementTerms::parse("0.006", "0.05").unwrap());
        let token = CardToken::parse("tok_settle_01").unwrap();
        for (n, processing, yuan) in [
            (1, Processing::Debit, 100),
            (2, Processing::Debit, 50),
            (3, Processing::Credit, 20),
        ] {
            answer(
                &sim,
                Message::FinancialRequest {
                    processing,
                    bank_ref: reference(n),
                    token: token.clone(),
                    amount: Money::from_yuan(yuan),
                    at_ms: 0,
                },
            );
        }
        let today = yinyi_ledger::BusinessDay::of_ms(now_ms()).compact();
        let advice = |sim: &BankSim| match sim.settlement(&today) {
            Message::SettlementAdvice { paid, amount, .. } => (paid, amount),
            other => panic!("{other:?}"),
        };
        // 150 collected, 20 refunded, fees 0.60 + 0.30, reserve 7.50: 121.60.
        assert_eq!(advice(&sim), (true, Money::from_cents(12_160)));
        sim.tamper_settlement(&today, Some(Money::from_yuan(100)));
        assert_eq!(advice(&sim), (true, Money::from_yuan(100)));
        sim.tamper_settlement(&today, None);
        assert_eq!(advice(&sim), (false, Money::ZERO));
    }
}

//! The outpatient visits of `WORKLOAD.md`, and the load tester's own book of what each patient
//! must hold: every acknowledged money movement is added to it, and every request whose outcome
//! is unknown (no answer within the deadline, or a bank operation not yet final) is kept to be
//! asked again, with the same request id, at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};

use crate::stats::Stats;

/// Cash every preloaded patient deposited when their card was issued.
pub const PRELOAD_DEPOSIT_CENTS: i64 = 30_000;
/// Cards per IssueCards call in the preload.
const PRELOAD_BATCH: u64 = 500;
const SHARDS: usize = 64;

/// Yuan amounts as the API writes them ("12.30") to cents; never through a float.
pub fn cents(text: &str) -> Option<i64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = whole.starts_with('-');
    let whole: i64 = whole.trim_start_matches('-').parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        2 => frac.parse().ok()?,
        _ => return None,
    };
    let value = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if negative { -value } else { value })
}

pub fn yuan(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "DECLINED" | "REVERSED")
}

/// A patient the load tester has touched: their card now, what their account must hold, and
/// the acknowledged transactions its journal must show once each.
#[derive(Debug, Clone)]
pub struct Patient {
    pub card: String,
    pub cents: i64,
    pub acked: Vec<Ack>,
}

/// How an acknowledged transaction shows in the account's journal: by the request id of a
/// direct one, or by the bank reference of a saga's entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ack {
    Request(String),
    BankRef(String),
}

/// A request that changes money or cards, kept whole so it can be sent again unchanged.
#[derive(Debug, Clone)]
pub enum Op {
    Issue(IssueCardRequest),
    Deposit(DepositCashRequest),
    TopUpBank(TopUpBankCardRequest),
    TopUpThirdParty(TopUpThirdPartyRequest),
    /// From the account when the request names no bank card.
    Pay {
        request: PayBillRequest,
        cents: i64,
    },
    Refund {
        request: RefundRequest,
        cents: i64,
        to_account: bool,
    },
    /// 预授权完成: a bill paid out of a hold on the channel; the account is untouched.
    Capture {
        request: CapturePaymentRequest,
        cents: i64,
    },
    Withdraw(WithdrawRequest),
    ReportLoss(CardRequest),
    Replace(ReplaceCardRequest),
    /// HIS admits the patient; no money moves.
    Admit(OpenEpisodeRequest),
    /// 住院预交金: booked on the payer's account when it comes from one, else on the patient's
    /// (whose balance it leaves alone).
    EpisodeDeposit(EpisodeDepositRequest),
    Charges(EpisodeChargesRequest),
    Finalize(FinalizeEpisodeRequest),
    /// 出院结算: known once every online refund of it is final.
    Settle(SettleEpisodeRequest),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Issue(_) => "IssueCard",
            Op::Deposit(_) => "DepositCash",
            Op::TopUpBank(_) => "TopUpBankCard",
            Op::TopUpThirdParty(_) => "TopUpThirdParty",
            Op::Pay { request, .. } if !request.bank_card_token.is_empty() => "PayBillByCard",
            Op::Pay { .. } => "PayBill",
            Op::Refund { .. } => "Refund",
            Op::Capture { .. } => "CapturePayment",
            Op::Withdraw(_) => "Withdraw",
            Op::ReportLoss(_) => "ReportLoss",
            Op::Replace(_) => "ReplaceCard",
            Op::Admit(_) => "OpenEpisode",
            Op::EpisodeDeposit(r) => match r.from {
                Some(episode_deposit_request::From::Card(_)) => "EpisodeDepositByCard",
                _ => "EpisodeDeposit",
            },
            Op::Charges(_) => "PostEpisodeCharges",
            Op::Finalize(_) => "FinalizeEpisode",
            Op::Settle(_) => "SettleEpisode",
        }
    }
}

/// What an acknowledged request did, as far as the book is concerned.
#[derive(Debug, Default)]
struct Effect {
    cents: i64,
    /// Cash into (+) or out of (−) this terminal's box.
    cash: Option<(String, i64)>,
    /// The patient's card from now on.
    card: Option<String>,
    /// The final state of a bank operation.
    bank_state: Option<String>,
    /// The journal entries it made on the booked account.
    ack: Option<Ack>,
    more_acks: Vec<Ack>,
    /// A bill paid (its id and cents), for HIS's reconciliation at the end.
    paid_bill: Option<(String, i64)>,
}

enum Failure {
    /// Refused for good (counted by its reason code): nothing happened.
    Refused,
    /// Not known yet: no answer in time, or a bank operation still pending or in doubt.
    Unknown,
}

pub struct Run {
    pub client: Client,
    pub prefix: String,
    kiosks: u64,
    windows: u64,
    serial: AtomicU64,
    /// Patients not in a visit now (a patient is in one visit at a time, as in life).
    idle: Mutex<Vec<u64>>,
    next_patient: AtomicU64,
    /// Patients 0..preloaded were issued by the preload (their book entry is implicit until
    /// they are touched).
    pub preloaded: AtomicU64,
    book: Vec<Mutex<HashMap<u64, Patient>>>,
    unsettled: Mutex<Vec<(u64, Op)>>,
    /// Cash each of our terminals must hold (acknowledged only).
    cash: Mutex<BTreeMap<String, i64>>,
    /// Final states of the bank operations we started.
    pub bank_states: Mutex<BTreeMap<String, u64>>,
    /// Every bill we were told was paid, with its cents: HIS's list for the day's HIS
    /// reconciliation.
    pub paid_bills: Mutex<Vec<(String, i64)>>,
    /// Insured bills (医保): those we were told were posted, with their self-pay cents, and
    /// those whose posting is unknown (it may have happened): the day's insurance list must
    /// hold every one of the first and nothing beyond both.
    pub insured_posted: Mutex<BTreeMap<String, InsuranceSplit>>,
    pub insured_unknown: Mutex<BTreeSet<String>>,
    /// Inpatient stays admitted and discharged (settled).
    pub stays: AtomicU64,
    pub discharges: AtomicU64,
    /// The business day (China Standard Time) the run began on: HIS's reconciliation covers
    /// one day.
    pub day: String,
    pub stats: Stats,
}

/// Today's business day, `YYYY-MM-DD`, China Standard Time.
pub fn business_day_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    yinyi_ledger::BusinessDay::of_ms(ms).to_string()
}

impl Run {
    pub fn new(client: Client, prefix: String, kiosks: u64, windows: u64) -> Run {
        Run {
            client,
            prefix,
            kiosks,
            windows,
            serial: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            next_patient: AtomicU64::new(0),
            preloaded: AtomicU64::new(0),
            book: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            unsettled: Mutex::new(Vec::new()),
            cash: Mutex::new(BTreeMap::new()),
            bank_states: Mutex::new(BTreeMap::new()),
            paid_bills: Mutex::new(Vec::new()),
            insured_posted: Mutex::new(BTreeMap::new()),
            insured_unknown: Mutex::new(BTreeSet::new()),
            stays: AtomicU64::new(0),
            discharges: AtomicU64::new(0),
            day: business_day_now(),
            stats: Stats::new(),
        }
    }

    pub fn id(&self) -> String {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.prefix)
    }

    fn card(&self, n: u64) -> String {
        format!("{}P{n}", self.prefix)
    }

    fn person(&self, n: u64) -> String {
        let mut tag = 0u64;
        for b in self.prefix.bytes() {
            tag = tag.wrapping_mul(31).wrapping_add(u64::from(b));
        }
        format!("{tag:016x}{n:048x}")
    }

    fn token(&self, n: u64) -> String {
        format!("tok_{}_{n}", self.prefix)
    }

    pub fn kiosk(&self, n: u64) -> String {
        format!("K-{}X{}", self.prefix, n % self.kiosks)
    }

    pub fn window(&self, n: u64) -> String {
        format!("W-{}X{}", self.prefix, n % self.windows)
    }

    pub fn operator(&self, n: u64) -> String {
        format!("op{}", n % self.windows)
    }

    pub fn his(&self) -> String {
        format!("H-{}", self.prefix)
    }

    pub fn mobile(&self) -> String {
        format!("M-{}", self.prefix)
    }

    /// Every terminal the run uses, for registration and the cash-box check.
    pub fn terminals(&self) -> Vec<String> {
        let mut all = vec![self.his(), self.mobile()];
        all.extend((0..self.kiosks).map(|k| self.kiosk(k)));
        all.extend((0..self.windows).map(|w| self.window(w)));
        all
    }

    pub fn windows(&self) -> u64 {
        self.windows
    }

    fn shard(&self, n: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Patient>> {
        self.book[(n as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// What the book says of patient `n`, if they have a card.
    pub fn patient(&self, n: u64) -> Option<Patient> {
        if let Some(p) = self.shard(n).get(&n) {
            return Some(p.clone());
        }
        (n < self.preloaded.load(Ordering::Relaxed)).then(|| Patient {
            card: self.card(n),
            cents: PRELOAD_DEPOSIT_CENTS,
            acked: Vec::new(),
        })
    }

    /// Every patient the run touched, with what they must hold.
    pub fn touched(&self) -> Vec<(u64, Patient)> {
        let mut all = Vec::new();
        for shard in &self.book {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.iter().map(|(n, p)| (*n, p.clone())));
        }
        all.sort_by_key(|(n, _)| *n);
        all
    }

    pub fn cash(&self) -> BTreeMap<String, i64> {
        self.cash.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn unsettled_count(&self) -> usize {
        self.unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn book_effect(&self, n: u64, effect: Effect) {
        {
            let preloaded = n < self.preloaded.load(Ordering::Relaxed);
            let default = Patient {
                card: self.card(n),
                cents: if preloaded { PRELOAD_DEPOSIT_CENTS } else { 0 },
                acked: Vec::new(),
            };
            let mut shard = self.shard(n);
            let patient = shard.entry(n).or_insert(default);
            patient.cents += effect.cents;
            patient.acked.extend(effect.ack);
            patient.acked.extend(effect.more_acks);
            if let Some(card) = effect.card {
                patient.card = card;
            }
        }
        if let Some((terminal, delta)) = effect.cash {
            *self
                .cash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(terminal)
                .or_default() += delta;
        }
        if let Some(paid) = effect.paid_bill {
            self.paid_bills
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(paid);
        }
        if let Some(state) = effect.bank_state {
            *self
                .bank_states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(state)
                .or_default() += 1;
        }
    }

    /// Times `call` as a request of `kind`; a failure is counted by its code.
    async fn timed<T>(
        &self,
        kind: &'static str,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, Failure> {
        let began = self.stats.begin();
        match call.await {
            Ok(value) => {
                self.stats.ok(kind, began);
                Ok(value)
            }
            Err(ApiError::Refused { reason, code, .. }) => {
                let reason = if reason.is_empty() {
                    format!("{code:?}")
                } else {
                    reason
                };
                self.stats.error(kind, &reason, began);
                Err(Failure::Refused)
            }
            Err(ApiError::DeadlineExceeded { .. }) => {
                self.stats.error(kind, "DEADLINE_EXCEEDED", began);
                Err(Failure::Unknown)
            }
            Err(ApiError::BadAddress(_)) => {
                self.stats.error(kind, "BAD_ADDRESS", began);
                Err(Failure::Unknown)
            }
            Err(ApiError::BadCredential(_)) => {
                self.stats.error(kind, "BAD_CREDENTIAL", began);
                Err(Failure::Refused)
            }
        }
    }

    /// Sends `op` once and says what it did.
    async fn send(&self, op: &Op) -> Result<Effect, Failure> {
        let c = &self.client;
        let kind = op.kind();
        let bank = |reply_state: &str, bank_ref: &str, cents: i64| {
            let completed = reply_state == "COMPLETED";
            if is_final(reply_state) {
                Ok(Effect {
                    cents: if completed { cents } else { 0 },
                    bank_state: Some(reply_state.to_string()),
                    ack: completed.then(|| Ack::BankRef(bank_ref.to_string())),
                    ..Effect::default()
                })
            } else {
                Err(Failure::Unknown)
            }
        };
        let ack = |request_id: &str| Some(Ack::Request(request_id.to_string()));
        match op {
            Op::Issue(r) => {
                let reply = self.timed(kind, c.issue_card(r.clone())).await?;
                let deposit = cents(&r.first_deposit).unwrap_or(0);
                Ok(Effect {
                    cents: deposit,
                    cash: Some((r.terminal_id.clone(), deposit)),
                    card: Some(reply.card_no),
                    ack: if deposit > 0 {
                        ack(&r.request_id)
                    } else {
                        None
                    },
                    ..Effect::default()
                })
            }
            Op::Deposit(r) => {
                self.timed(kind, c.deposit_cash(r.clone())).await?;
                let amount = cents(&r.amount).unwrap_or(0);
                Ok(Effect {
                    cents: amount,
                    cash: Some((r.terminal_id.clone(), amount)),
                    ack: ack(&r.request_id),
                    ..Effect::default()
                })
            }
            Op::TopUpBank(r) => {
                let reply = self.timed(kind, c.top_up_bank_card(r.clone())).await?;
                bank(&reply.state, &reply.bank_ref, cents(&r.amount).unwrap_or(0))
            }
            Op::TopUpThirdParty(r) => {
                let reply = self.timed(kind, c.top_up_third_party(r.clone())).await?;
                bank(&reply.state, &reply.bank_ref, cents(&r.amount).unwrap_or(0))
            }
            Op::Pay { request, cents } => {
                let receipt = self.timed(kind, c.pay_bill(request.clone())).await?;
                let mut effect = if request.bank_card_token.is_empty() {
                    Effect {
                        cents: -cents,
                        ack: ack(&request.request_id),
                        ..Effect::default()
                    }
                } else {
                    bank(&receipt.bank_state, &receipt.bank_ref, 0)?
                };
                if effect.ack.is_some() {
                    effect.paid_bill = Some((request.bill_id.clone(), *cents));
                }
                Ok(effect)
            }
            Op::Capture { request, cents } => {
                let receipt = self.timed(kind, c.capture_payment(request.clone())).await?;
                let mut effect = bank(&receipt.bank_state, &receipt.bank_ref, 0)?;
                if effect.ack.is_some() {
                    effect.paid_bill = Some((request.bill_id.clone(), *cents));
                }
                Ok(effect)
            }
            Op::Refund {
                request,
                cents,
                to_account,
            } => {
                let receipt = self.timed(kind, c.refund(request.clone())).await?;
                if *to_account {
                    Ok(Effect {
                        cents: *cents,
                        ack: ack(&request.request_id),
                        ..Effect::default()
                    })
                } else {
                    bank(&receipt.bank_state, &receipt.bank_ref, 0)
                }
            }
            Op::Withdraw(r) => {
                let receipt = self.timed(kind, c.withdraw(r.clone())).await?;
                let amount = cents(&receipt.amount).unwrap_or(0);
                Ok(Effect {
                    cents: -amount,
                    cash: Some((r.terminal_id.clone(), -amount)),
                    ack: ack(&r.request_id),
                    ..Effect::default()
                })
            }
            Op::ReportLoss(r) => {
                self.timed(kind, c.report_loss(r.clone())).await?;
                Ok(Effect::default())
            }
            Op::Replace(r) => {
                let reply = self.timed(kind, c.replace_card(r.clone())).await?;
                Ok(Effect {
                    card: Some(reply.new_card_no),
                    ..Effect::default()
                })
            }
            Op::Admit(r) => {
                self.timed(kind, c.open_episode(r.clone())).await?;
                Ok(Effect::default())
            }
            Op::EpisodeDeposit(r) => {
                let reply = self.timed(kind, c.deposit(r.clone())).await?;
                let amount = cents(&r.amount).unwrap_or(0);
                match &r.from {
                    Some(episode_deposit_request::From::Card(_)) => {
                        bank(&reply.bank_state, &reply.bank_ref, 0)
                    }
                    Some(episode_deposit_request::From::PayerCardNo(_)) => Ok(Effect {
                        cents: -amount,
                        ack: ack(&r.request_id),
                        ..Effect::default()
                    }),
                    _ => Ok(Effect {
                        cash: Some((r.terminal_id.clone(), amount)),
                        ack: ack(&r.request_id),
                        ..Effect::default()
                    }),
                }
            }
            Op::Charges(r) => {
                self.timed(kind, c.post_charges(r.clone())).await?;
                Ok(Effect::default())
            }
            Op::Finalize(r) => {
                self.timed(kind, c.finalize(r.clone())).await?;
                Ok(Effect::default())
            }
            Op::Settle(r) => {
                let reply = self.timed(kind, c.settle(r.clone())).await?;
                settle_effect(r, &reply)
            }
        }
    }

    /// A balance query by card (timed; it changes nothing, so nothing is booked).
    pub async fn query_balance(&self, card_no: String) {
        let _ = self
            .timed(
                "QueryBalance",
                self.client.query_balance(QueryBalanceRequest {
                    card_no,
                    account_id: String::new(),
                }),
            )
            .await;
    }

    /// Does `op` for patient `n` as a terminal would: a bank operation not final at once is
    /// asked about again (same request) a few times. Ok(true) when it happened, Ok(false) when
    /// it was refused; Err when the outcome is unknown (kept for the end; the visit stops).
    pub async fn perform(&self, n: u64, op: Op) -> Result<bool, ()> {
        let mut attempt = 0;
        loop {
            match self.send(&op).await {
                Ok(effect) => {
                    let happened = effect
                        .bank_state
                        .as_deref()
                        .is_none_or(|s| s == "COMPLETED");
                    self.book_effect(n, effect);
                    return Ok(happened);
                }
                Err(Failure::Refused) => return Ok(false),
                Err(Failure::Unknown) if attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(Failure::Unknown) => {
                    self.unsettled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((n, op));
                    return Err(());
                }
            }
        }
    }

    /// Asks again about every request whose outcome was unknown, until each has one or
    /// `within` passes; books what they did. Returns how many are still unknown.
    pub async fn settle_unknown(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let pending: Vec<(u64, Op)> =
                std::mem::take(&mut *self.unsettled.lock().unwrap_or_else(|e| e.into_inner()));
            let mut still = Vec::new();
            for (n, op) in pending {
                match self.send(&op).await {
                    Ok(effect) => self.book_effect(n, effect),
                    Err(Failure::Refused) => {}
                    Err(Failure::Unknown) => still.push((n, op)),
                }
            }
            let left = still.len();
            self.unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(still);
            if left == 0 || Instant::now() > deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn issue_request(&self, n: u64, terminal: String, deposit_cents: i64) -> IssueCardRequest {
        IssueCardRequest {
            request_id: self.id(),
            terminal_id: terminal,
            operator_id: String::new(),
            card_no: self.card(n),
            card_kind: CardKind::Hospital as i32,
            holder_name: format!("patient {n}"),
            person_key: self.person(n),
            id_masked: "110***********0000".into(),
            phone: String::new(),
            first_deposit: yuan(deposit_cents),
        }
    }

    /// Registers the run's terminals from the admin console and opens every window's shift.
    pub async fn setup_terminals(&self) -> anyhow::Result<()> {
        for terminal in self.terminals() {
            self.client
                .register_terminal(RegisterTerminalRequest {
                    request_id: self.id(),
                    terminal_id: "A-ADMIN".into(),
                    operator_id: "loadtest".into(),
                    new_terminal_id: terminal,
                })
                .await
                .context("register the load tester's terminals")?;
        }
        for w in 0..self.windows() {
            self.client
                .open_shift(ShiftRequest {
                    request_id: self.id(),
                    terminal_id: self.window(w),
                    operator_id: self.operator(w),
                })
                .await
                .context("open the windows' shifts")?;
        }
        Ok(())
    }

    /// Issues cards to patients `0..count` through IssueCards, `PRELOAD_BATCH` a call, from
    /// `parallel` kiosks at once; `on_batch` hears how many were done. Returns how many were
    /// issued.
    pub async fn preload(
        self: &std::sync::Arc<Self>,
        count: u64,
        parallel: u64,
        on_batch: impl Fn(u64) + Send + Sync + 'static,
    ) -> anyhow::Result<u64> {
        let next = std::sync::Arc::new(AtomicU64::new(0));
        let issued = std::sync::Arc::new(AtomicU64::new(0));
        let on_batch = std::sync::Arc::new(on_batch);
        let mut workers = Vec::new();
        for worker in 0..parallel.max(1) {
            let run = self.clone();
            let next = next.clone();
            let issued = issued.clone();
            let on_batch = on_batch.clone();
            workers.push(tokio::spawn(async move {
                let kiosk = run.kiosk(worker);
                loop {
                    let first = next.fetch_add(PRELOAD_BATCH, Ordering::Relaxed);
                    if first >= count {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let last = (first + PRELOAD_BATCH).min(count);
                    let cards: Vec<IssueCardRequest> = (first..last)
                        .map(|n| run.issue_request(n, kiosk.clone(), PRELOAD_DEPOSIT_CENTS))
                        .collect();
                    let reply = run
                        .client
                        .issue_cards(IssueCardsRequest { cards })
                        .await
                        .map_err(|e| anyhow::anyhow!("preload: IssueCards failed: {e}"))?;
                    let mut ok = 0;
                    for (n, result) in (first..last).zip(&reply.results) {
                        if result.issued.is_some() {
                            ok += 1;
                            run.done_with(n);
                        } else {
                            anyhow::bail!(
                                "preload: card of patient {n} refused: {} {}",
                                result.reason,
                                result.message
                            );
                        }
                    }
                    *run.cash
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(kiosk.clone())
                        .or_default() += ok as i64 * PRELOAD_DEPOSIT_CENTS;
                    issued.fetch_add(ok, Ordering::Relaxed);
                    on_batch(last - first);
                }
            }));
        }
        for worker in workers {
            worker.await??;
        }
        self.preloaded.store(count, Ordering::SeqCst);
        self.next_patient.fetch_max(count, Ordering::SeqCst);
        Ok(issued.load(Ordering::Relaxed))
    }

    /// A patient for the next visit: a returning one who is idle (70%), else a new one.
    fn next_visitor(&self) -> (u64, bool) {
        if rand::rng().random_bool(0.7) {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.is_empty() {
                let i = rand::rng().random_range(0..idle.len());
                return (idle.swap_remove(i), false);
            }
        }
        (self.next_patient.fetch_add(1, Ordering::Relaxed), true)
    }

    fn done_with(&self, n: u64) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(n);
    }

    pub async fn one_visit(self: std::sync::Arc<Self>) {
        let began = Instant::now();
        let (n, new) = self.next_visitor();
        let done = if rand::rng().random_bool(STAY_SHARE) {
            self.stay(n, new).await
        } else {
            self.visit(n, new).await
        };
        if done.is_ok() {
            self.done_with(n);
        }
        self.stats.visit(began);
    }

    /// An idle patient other than `n` (a relative), taken out of the idle list while used.
    fn relative(&self, n: u64) -> Option<u64> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle.iter().position(|&r| r != n)?;
        Some(idle.swap_remove(i))
    }

    /// 住院: an inpatient stay of patient `n`, compressed into one run of requests
    /// (WORKLOAD.md's inpatients): admission, 1–2 deposits (30% by a relative — from their
    /// account when it holds enough, else in cash — 40% by bank card, 30% cash at a window),
    /// the daily charges, one more deposit for 40% of stays, the final amount (a surplus for
    /// 60%, a shortfall for 40%), and the settlement at a window: the rest into the account
    /// or in cash; a shortfall from the account when it holds enough, else deposited in cash
    /// first.
    async fn stay(&self, n: u64, new: bool) -> Result<(), ()> {
        let plan = StayPlan::draw(&mut rand::rng());
        let window = self.window(n);
        let operator = self.operator(n);
        if new {
            let request = self.issue_request(n, self.kiosk(n), 100 * 100);
            if !self.perform(n, Op::Issue(request)).await? {
                return Err(());
            }
        }
        let Some(patient) = self.patient(n) else {
            return Err(());
        };
        let admission = format!("{}Z{}", self.prefix, self.id().replace(':', "x"));
        let admitted = self
            .perform(
                n,
                Op::Admit(OpenEpisodeRequest {
                    request_id: self.id(),
                    terminal_id: self.his(),
                    admission_id: admission.clone(),
                    card_no: patient.card.clone(),
                    ward_id: format!("W{:02}", n % 40),
                    reminder_below: "1000.00".into(),
                }),
            )
            .await?;
        if !admitted {
            return Ok(());
        }
        self.stays.fetch_add(1, Ordering::Relaxed);
        let deposit = |amount: i64, from| EpisodeDepositRequest {
            request_id: self.id(),
            terminal_id: String::new(),
            operator_id: String::new(),
            admission_id: admission.clone(),
            amount: yuan(amount),
            from: Some(from),
        };
        let mut deposited = 0;
        for (i, &(amount, way)) in plan.deposits.iter().enumerate() {
            if i == plan.deposits.len() - 1 && plan.deposits.len() > 1 {
                // The mid-stay deposit comes after some charges, as the reminder list asks.
                for &charge in &plan.charges[..plan.charges.len() / 2] {
                    self.charge(n, &admission, charge).await?;
                }
            }
            // A relative pays what their account holds, in whole hundreds, up to the amount.
            let relative = (way == Paid::Relative)
                .then(|| self.relative(n))
                .flatten()
                .map(|r| {
                    let holds = self.patient(r).map_or(0, |p| p.cents / 10_000 * 10_000);
                    (r, holds.min(amount))
                });
            let amount = relative.map_or(amount, |(_, pays)| if pays > 0 { pays } else { amount });
            let done = match way {
                Paid::Relative => match relative {
                    Some((r, pays)) if pays > 0 => {
                        let card = self.patient(r).map(|p| p.card).unwrap_or_default();
                        // At the window, where a cashier sees who pays.
                        let mut request =
                            deposit(pays, episode_deposit_request::From::PayerCardNo(card));
                        request.terminal_id = window.clone();
                        request.operator_id = operator.clone();
                        let done = self.perform(r, Op::EpisodeDeposit(request)).await;
                        if done.is_ok() {
                            self.done_with(r);
                        }
                        done?
                    }
                    other => {
                        if let Some((r, _)) = other {
                            self.done_with(r);
                        }
                        self.cash_deposit(
                            n,
                            &window,
                            &operator,
                            deposit(amount, episode_deposit_request::From::Cash(true)),
                        )
                        .await?
                    }
                },
                Paid::Card => {
                    let mut request = deposit(
                        amount,
                        episode_deposit_request::From::Card(CardPayment {
                            card_no: patient.card.clone(),
                            bank_card_token: self.token(n),
                            bank_card_masked: "6222****0000".into(),
                        }),
                    );
                    request.terminal_id = self.kiosk(n);
                    self.perform(n, Op::EpisodeDeposit(request)).await?
                }
                Paid::Cash => {
                    self.cash_deposit(
                        n,
                        &window,
                        &operator,
                        deposit(amount, episode_deposit_request::From::Cash(true)),
                    )
                    .await?
                }
            };
            if done {
                deposited += amount;
            }
        }
        let already = if plan.deposits.len() > 1 {
            plan.charges.len() / 2
        } else {
            0
        };
        for &charge in &plan.charges[already..] {
            self.charge(n, &admission, charge).await?;
        }
        // The final amount: a share of what was deposited (more than all of it: a shortfall).
        let final_cents = deposited * plan.final_percent / 100;
        self.perform(
            n,
            Op::Finalize(FinalizeEpisodeRequest {
                request_id: self.id(),
                terminal_id: self.his(),
                admission_id: admission.clone(),
                final_amount: yuan(final_cents),
            }),
        )
        .await?;
        let short = final_cents - deposited;
        let from_account = short > 0 && self.patient(n).is_some_and(|p| p.cents >= short);
        if short > 0 && !from_account {
            self.cash_deposit(
                n,
                &window,
                &operator,
                deposit(short, episode_deposit_request::From::Cash(true)),
            )
            .await?;
        }
        let settled = self
            .perform(
                n,
                Op::Settle(SettleEpisodeRequest {
                    request_id: self.id(),
                    terminal_id: window,
                    operator_id: operator,
                    admission_id: admission,
                    card_no: self.patient(n).map(|p| p.card).unwrap_or_default(),
                    rest_to: if plan.rest_in_cash {
                        RefundDestination::Cash
                    } else {
                        RefundDestination::Account
                    } as i32,
                    shortfall_from_account: from_account,
                }),
            )
            .await?;
        if settled {
            self.discharges.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A deposit in cash at the patient's window (its shift open, its cashier named).
    async fn cash_deposit(
        &self,
        n: u64,
        window: &str,
        operator: &str,
        mut request: EpisodeDepositRequest,
    ) -> Result<bool, ()> {
        request.terminal_id = window.to_string();
        request.operator_id = operator.to_string();
        self.perform(n, Op::EpisodeDeposit(request)).await
    }

    async fn charge(&self, n: u64, admission: &str, amount: i64) -> Result<bool, ()> {
        self.perform(
            n,
            Op::Charges(EpisodeChargesRequest {
                request_id: self.id(),
                terminal_id: self.his(),
                admission_id: admission.to_string(),
                amount: yuan(amount),
            }),
        )
        .await
    }

    /// 预授权: holds `cents` on patient `n`'s channel account; the hold's reference once the
    /// bank holds it. Any other outcome moves no money: the bill is then paid the usual way
    /// (a hold whose outcome is unknown is settled by its saga, and released when it expires).
    async fn authorize(&self, n: u64, card: &str, cents: i64) -> Option<String> {
        let request = AuthorizePaymentRequest {
            request_id: self.id(),
            terminal_id: self.mobile(),
            card_no: card.to_string(),
            amount: yuan(cents),
            third_party_provider: "WECHAT".into(),
            third_party_payer: format!("wx_{}_{n}", self.prefix),
            ..Default::default()
        };
        let reply = self
            .timed("AuthorizePayment", self.client.authorize_payment(request))
            .await
            .ok()?;
        (reply.state == "AUTHORIZED").then_some(reply.bank_ref)
    }

    /// 预授权撤销, once: a hold not released here is released by the cluster when it expires.
    async fn release(&self, card: &str, hold: &str) {
        let request = ReleaseAuthorizationRequest {
            request_id: self.id(),
            terminal_id: self.mobile(),
            card_no: card.to_string(),
            authorization_ref: hold.to_string(),
        };
        let _ = self
            .timed(
                "ReleaseAuthorization",
                self.client.release_authorization(request),
            )
            .await;
    }

    /// 预授权完成: pays `bill` (`cents`) out of `hold`; true when paid. One patient in eight
    /// of these leaves before paying this way (the hold is released); a capture refused or
    /// declined releases the hold, and the bill is then paid the usual way.
    async fn pay_from_hold(
        &self,
        n: u64,
        card: &str,
        bill: &str,
        hold: &str,
        cents: i64,
    ) -> Result<bool, ()> {
        if n.is_multiple_of(8) {
            self.release(card, hold).await;
            return Ok(false);
        }
        let request = CapturePaymentRequest {
            request_id: self.id(),
            terminal_id: self.mobile(),
            card_no: card.to_string(),
            authorization_ref: hold.to_string(),
            bill_id: bill.to_string(),
        };
        let paid = self.perform(n, Op::Capture { request, cents }).await?;
        if !paid {
            self.release(card, hold).await;
        }
        Ok(paid)
    }

    /// One visit of patient `n` (a first visit when `new`). Err when an outcome is unknown:
    /// the patient then waits for the end of the run.
    async fn visit(&self, n: u64, new: bool) -> Result<(), ()> {
        let plan = Plan::draw(&mut rand::rng());
        let kiosk = self.kiosk(n);
        if new {
            let request = self.issue_request(n, kiosk.clone(), plan.first_deposit * 100);
            if !self.perform(n, Op::Issue(request)).await? {
                // Refused: no such patient after all.
                return Err(());
            }
        }
        for (i, (amount, by_card, refund)) in plan.fees.iter().copied().enumerate() {
            let Some(patient) = self.patient(n) else {
                return Err(());
            };
            let bill = format!("{}B{}", self.prefix, self.id().replace(':', "x"));
            // Half the outpatient bills not to be refunded are insured (医保): the patient pays
            // the self-pay part, the fund three times it, the personal account half of it.
            let insured = i > 0 && !refund && (n + i as u64).is_multiple_of(2);
            let insurance = insured.then(|| InsuranceSplit {
                settlement_id: bill.clone(),
                pooled: yuan(amount * 300),
                personal_account: yuan(amount * 50),
                self_pay: yuan(amount * 100),
                reductions: yuan(amount % 3 * 100),
            });
            // Half the insured bills paid online go the mobile way: the channel holds an
            // estimate before the insurance card is read, and the self-pay part is captured
            // out of it once HIS has posted the split.
            let hold = if insured && by_card && (n / 2).is_multiple_of(2) {
                self.authorize(n, &patient.card, amount * 150).await
            } else {
                None
            };
            let posted = self
                .timed(
                    "PostBill",
                    self.client.post_bill(PostBillRequest {
                        request_id: self.id(),
                        terminal_id: self.his(),
                        bill_id: bill.clone(),
                        card_no: patient.card.clone(),
                        kind: if i == 0 {
                            BillKind::Registration
                        } else {
                            BillKind::Outpatient
                        } as i32,
                        amount: amount.to_string(),
                        insurance: insurance.clone(),
                    }),
                )
                .await;
            if insured {
                if let (Ok(_), Some(split)) = (&posted, insurance) {
                    self.insured_posted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(bill.clone(), split);
                } else {
                    self.insured_unknown
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(bill.clone());
                }
            }
            if posted.is_err() {
                if let Some(hold) = &hold {
                    self.release(&patient.card, hold).await;
                }
                continue;
            }
            if let Some(hold) = &hold
                && self
                    .pay_from_hold(n, &patient.card, &bill, hold, amount * 100)
                    .await?
            {
                continue;
            }
            let mut pay = PayBillRequest {
                request_id: self.id(),
                terminal_id: kiosk.clone(),
                bill_id: bill.clone(),
                card_no: patient.card.clone(),
                ..Default::default()
            };
            if by_card {
                pay.bank_card_token = self.token(n);
                pay.bank_card_masked = "6222****0000".into();
            } else if patient.cents < amount * 100 {
                self.top_up(n, &patient.card, amount * 100 - patient.cents, plan.top_up)
                    .await?;
            }
            let paid = self
                .perform(
                    n,
                    Op::Pay {
                        request: pay,
                        cents: amount * 100,
                    },
                )
                .await?;
            if paid && refund {
                let cancelled = self
                    .timed(
                        "CancelBill",
                        self.client.cancel_bill(CancelBillRequest {
                            request_id: self.id(),
                            terminal_id: self.his(),
                            bill_id: bill.clone(),
                            ..Default::default()
                        }),
                    )
                    .await;
                if cancelled.is_ok() {
                    let request = RefundRequest {
                        request_id: self.id(),
                        terminal_id: kiosk.clone(),
                        operator_id: String::new(),
                        bill_id: bill,
                        card_no: patient.card.clone(),
                        after_declined_bank_ref: String::new(),
                        ..Default::default()
                    };
                    self.perform(
                        n,
                        Op::Refund {
                            request,
                            cents: amount * 100,
                            to_account: !by_card,
                        },
                    )
                    .await?;
                }
            }
        }
        let card = self.patient(n).map(|p| p.card).unwrap_or_default();
        for _ in 0..plan.queries {
            self.query_balance(card.clone()).await;
        }
        if plan.lose_card {
            let window = self.window(n);
            let operator = self.operator(n);
            let lost = self
                .perform(
                    n,
                    Op::ReportLoss(CardRequest {
                        request_id: self.id(),
                        terminal_id: window.clone(),
                        operator_id: operator.clone(),
                        card_no: card.clone(),
                        person_key: self.person(n),
                    }),
                )
                .await?;
            if lost {
                let new_card = format!("{}R{}", self.prefix, self.id().replace(':', "x"));
                self.perform(
                    n,
                    Op::Replace(ReplaceCardRequest {
                        request_id: self.id(),
                        terminal_id: window,
                        operator_id: operator,
                        old_card_no: card,
                        new_card_no: new_card,
                        person_key: self.person(n),
                    }),
                )
                .await?;
            }
        }
        if plan.withdraw
            && let Some(patient) = self.patient(n)
            && patient.cents > 0
        {
            let card = patient.card;
            self.perform(
                n,
                Op::Withdraw(WithdrawRequest {
                    request_id: self.id(),
                    terminal_id: self.window(n),
                    operator_id: self.operator(n),
                    card_no: card,
                    ..Default::default()
                }),
            )
            .await?;
        }
        Ok(())
    }

    /// Tops up at least `short` cents, in whole hundreds of yuan, by the planned means; a
    /// declined bank card is followed by cash.
    async fn top_up(&self, n: u64, card: &str, short: i64, means: TopUp) -> Result<(), ()> {
        // Cents to whole hundreds of yuan (10,000 cents each), in yuan.
        let amount = ((short + 9_999) / 10_000 * 100).to_string();
        let by_bank = match means {
            TopUp::Cash => false,
            TopUp::BankCard => {
                self.perform(
                    n,
                    Op::TopUpBank(TopUpBankCardRequest {
                        request_id: self.id(),
                        terminal_id: self.kiosk(n),
                        operator_id: String::new(),
                        card_no: card.to_string(),
                        bank_card_token: self.token(n),
                        bank_card_masked: "6222****0000".into(),
                        amount: amount.clone(),
                    }),
                )
                .await?
            }
            TopUp::ThirdParty => {
                self.perform(
                    n,
                    Op::TopUpThirdParty(TopUpThirdPartyRequest {
                        request_id: self.id(),
                        terminal_id: self.mobile(),
                        card_no: card.to_string(),
                        provider: "WECHAT".into(),
                        payer: format!("wx_{}_{n}", self.prefix),
                        amount: amount.clone(),
                    }),
                )
                .await?
            }
        };
        if !by_bank {
            self.perform(
                n,
                Op::Deposit(DepositCashRequest {
                    request_id: self.id(),
                    terminal_id: self.kiosk(n),
                    operator_id: String::new(),
                    card_no: card.to_string(),
                    amount,
                }),
            )
            .await?;
        }
        Ok(())
    }
}

/// What a discharge settlement did to the patient's account and the window's cash, once every
/// online refund of it is final: the shortfall taken, the rest paid into the account or in
/// cash, and each online refund the bank would not take paid into the account instead.
fn settle_effect(r: &SettleEpisodeRequest, reply: &SettleEpisodeReply) -> Result<Effect, Failure> {
    if !reply.online.iter().all(|o| is_final(&o.state)) {
        return Err(Failure::Unknown);
    }
    let collected = cents(&reply.collected).unwrap_or(0);
    let rest = cents(&reply.rest).unwrap_or(0);
    let in_cash = r.rest_to == RefundDestination::Cash as i32;
    let returned: i64 = reply
        .online
        .iter()
        .filter(|o| o.state != "COMPLETED")
        .map(|o| cents(&o.amount).unwrap_or(0))
        .sum();
    let mut effect = Effect {
        cents: -collected + if in_cash { 0 } else { rest } + returned,
        cash: (in_cash && rest > 0).then(|| (r.terminal_id.clone(), -rest)),
        // One entry of the settlement's own on the account: the shortfall or the rest.
        ack: (collected > 0 || rest > 0).then(|| Ack::Request(r.request_id.clone())),
        ..Effect::default()
    };
    effect.more_acks = reply
        .online
        .iter()
        .filter(|o| o.state == "COMPLETED")
        .map(|o| Ack::BankRef(o.bank_ref.clone()))
        .collect();
    Ok(effect)
}

#[derive(Debug, Clone, Copy)]
enum TopUp {
    Cash,
    BankCard,
    ThirdParty,
}

/// The share of visits that are inpatient stays: WORKLOAD.md's 300 admissions a day against
/// 20,000 outpatient visits.
const STAY_SHARE: f64 = 0.015;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    Relative,
    Card,
    Cash,
}

/// What one inpatient stay will do, in cents.
struct StayPlan {
    /// 1–2 at admission (2,000–10,000 yuan in hundreds), and one more mid-stay for 40%.
    deposits: Vec<(i64, Paid)>,
    /// HIS's daily charges (200–2,000 yuan a day, 3–12 days).
    charges: Vec<i64>,
    /// The final amount as a share of the deposits: 50–95 (a surplus, 60%) or 105–130.
    final_percent: i64,
    rest_in_cash: bool,
}

impl StayPlan {
    fn draw(rng: &mut impl Rng) -> StayPlan {
        let way = |rng: &mut dyn rand::RngCore| match rng.random_range(0..10) {
            0..3 => Paid::Relative,
            3..7 => Paid::Card,
            _ => Paid::Cash,
        };
        let at_admission = rng.random_range(1..=2);
        let mut deposits: Vec<(i64, Paid)> = (0..at_admission)
            .map(|_| (rng.random_range(20..=100) * 10_000, way(rng)))
            .collect();
        if rng.random_bool(0.4) {
            deposits.push((rng.random_range(20..=100) * 10_000, way(rng)));
        }
        let charges = (0..rng.random_range(3..=12))
            .map(|_| rng.random_range(200..=2_000) * 100)
            .collect();
        let final_percent = if rng.random_bool(0.6) {
            rng.random_range(50..=95)
        } else {
            rng.random_range(105..=130)
        };
        StayPlan {
            deposits,
            charges,
            final_percent,
            rest_in_cash: rng.random_bool(0.5),
        }
    }
}

/// What one visit will do, drawn by WORKLOAD.md's shares.
struct Plan {
    /// Yuan, whole notes, for a first visit's card.
    first_deposit: i64,
    /// (yuan, paid by bank card, cancelled and refunded): the registration fee first.
    fees: Vec<(i64, bool, bool)>,
    top_up: TopUp,
    queries: u32,
    withdraw: bool,
    lose_card: bool,
}

impl Plan {
    fn draw(rng: &mut impl Rng) -> Plan {
        let bills = poisson(rng, 2.2).min(5);
        let amounts: Vec<i64> = std::iter::once(rng.random_range(5..=100))
            .chain((0..bills).map(|_| rng.random_range(20..=800)))
            .collect();
        let fees = amounts
            .into_iter()
            .map(|amount| (amount, rng.random_bool(0.15), rng.random_bool(0.05)))
            .collect();
        let top_up = match rng.random_range(0..10) {
            0..5 => TopUp::Cash,
            5..9 => TopUp::BankCard,
            _ => TopUp::ThirdParty,
        };
        Plan {
            first_deposit: rng.random_range(1..=5) * 100,
            fees,
            top_up,
            // 0.8 a visit on average.
            queries: u32::from(rng.random_bool(0.8)),
            withdraw: rng.random_bool(0.02),
            lose_card: rng.random_bool(0.005),
        }
    }
}

/// A Poisson draw by Knuth's method (small means only).
fn poisson(rng: &mut impl Rng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_cents_exactly() {
        assert_eq!(cents("12.30"), Some(1230));
        assert_eq!(cents("12.3"), Some(1230));
        assert_eq!(cents("7"), Some(700));
        assert_eq!(cents("-0.05"), Some(-5));
        assert_eq!(cents("1.234"), None);
        assert_eq!(cents("abc"), None);
        assert_eq!(yuan(123456), "1234.56");
    }

    #[test]
    fn plans_follow_the_workload_shares() {
        let mut rng = rand::rng();
        let plans: Vec<Plan> = (0..20_000).map(|_| Plan::draw(&mut rng)).collect();
        let bills: usize = plans.iter().map(|p| p.fees.len() - 1).sum();
        let mean = bills as f64 / plans.len() as f64;
        // Poisson(2.2) capped at 5: a little under 2.2.
        assert!((2.0..2.25).contains(&mean), "{mean}");
        let by_card = plans.iter().flat_map(|p| &p.fees).filter(|f| f.1).count() as f64
            / plans.iter().map(|p| p.fees.len()).sum::<usize>() as f64;
        assert!((0.13..0.17).contains(&by_card), "{by_card}");
        let withdrawals = plans.iter().filter(|p| p.withdraw).count();
        assert!((250..550).contains(&withdrawals), "{withdrawals}");
        assert!(plans.iter().all(|p| (100..=500).contains(&p.first_deposit)));
    }
}

//! Bank sagas (DOMAIN.md, "The bank saga"). An operation is replicated as Pending before the
//! bank is called; the bank's answer is replicated after: Completed or Declined, or InDoubt when
//! nobody knows. An InDoubt operation is settled by the bank's status query when it knows, else
//! reversed (冲正) with repeats until the bank acknowledges. Every step is a ledger command from
//! the system terminal with a request id derived from the bank reference and the step, so a
//! step repeated by a new leader is answered from the stored outcome and applied once. A refused
//! step counts only when the operation has moved on; otherwise the saga backs off and alerts.
//! An outcome becomes final only from the bank's own answer or status, never from "not sent".
//!
//! The gateway runs each operation's saga in its own task (a caller waiting longer than its
//! deadline leaves it running) and joins a second caller of the same reference to the first.
//! Recovery drives every unresolved operation again after a leader change and on a timer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use yinyi_ledger::{
    BankOp, BankOpState, BankPurpose, BankRef, Command, CommandBody, Outcome, RequestId,
    TerminalId, Timestamp,
};

use crate::backend::Backend;
use crate::{Actors, EntityKey, SubmitError};

/// The system terminal saga steps come from.
pub const SAGA_TERMINAL: &str = "S-SAGA";

/// What the bank said to a financial request. Only `Approved`, `Declined` and `InProgress` are
/// the bank's own answers; an outcome becomes final only from one of them (or from the bank's
/// status query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankAnswer {
    Approved(String),
    Declined(String),
    /// No answer, or one that does not settle it: the outcome is unknown.
    Unknown(String),
    /// A third-party channel order placed: the payer confirms it later; the channel notifies.
    InProgress(String),
    /// Nothing left this node this time (e.g. the link's breaker is open). Not an answer: an
    /// earlier leader may have sent the same request, so the operation stays as it is and the
    /// saga tries again later.
    NotSent(String),
    /// An advice (a capture's completion) the bank did not answer: the operation stays as it
    /// is and the advice is sent again later (the bank answers a repeat as the first), so it
    /// is never in doubt.
    Unanswered(String),
}

/// What the bank's status query says about a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankStatus {
    Applied,
    Declined,
    Reversed,
    /// The bank has never seen it.
    Unknown,
    /// A channel order still awaiting the payer.
    Pending,
}

/// The bank as the sagas see it; the node implements it over the front-end processor link.
pub trait BankLink: Send + Sync + 'static {
    /// Sends the operation's financial request (debit or credit) once.
    fn execute(&self, op: &BankOp) -> impl Future<Output = BankAnswer> + Send;
    /// Sends a reversal advice (a repeat when `repeat`); true when the bank acknowledged it.
    fn reverse(&self, op: &BankOp, repeat: bool) -> impl Future<Output = bool> + Send;
    /// Asks the bank what it holds for the reference; `None` when it could not be asked.
    fn status(&self, op: &BankOp) -> impl Future<Output = Option<BankStatus>> + Send;
}

#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// The first pause between reversal attempts; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How often recovery looks for unresolved operations while leading.
    pub recovery_every: Duration,
    /// An operation unresolved longer than this is logged as an error for manual handling
    /// (and still retried).
    pub resolution_deadline: Duration,
    /// How long a channel order waits for a notification before its status is asked.
    pub channel_poll: Duration,
    /// A channel order the payer has not confirmed after this long is closed (reversed).
    pub channel_order_expiry: Duration,
    /// A hold (预授权) not captured after this long is released.
    pub authorization_expiry: Duration,
}

impl Default for SagaConfig {
    fn default() -> SagaConfig {
        SagaConfig {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            recovery_every: Duration::from_secs(5),
            resolution_deadline: Duration::from_secs(600),
            channel_poll: Duration::from_secs(2),
            channel_order_expiry: Duration::from_secs(900),
            authorization_expiry: Duration::from_secs(7200),
        }
    }
}

/// The longest one saga step may take before it is given up and tried again.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn age(op: &BankOp, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms - op.started_at.0).unwrap_or(0))
}

/// Owns the bank link and the running sagas of this node.
pub struct BankGateway<B: Backend, L: BankLink> {
    backend: Arc<B>,
    actors: Actors<B>,
    link: Arc<L>,
    config: SagaConfig,
    /// Sagas running now, by reference: a second caller waits on the same one.
    running: Mutex<HashMap<BankRef, watch::Receiver<Option<BankOpState>>>>,
    /// Channel notifications, by reference (a notification before the wait is kept).
    notices: Mutex<HashMap<BankRef, Arc<tokio::sync::Notify>>>,
}

impl<B: Backend, L: BankLink> BankGateway<B, L> {
    pub fn new(backend: Arc<B>, actors: Actors<B>, link: Arc<L>, config: SagaConfig) -> Arc<Self> {
        Arc::new(BankGateway {
            backend,
            actors,
            link,
            config,
            running: Mutex::new(HashMap::new()),
            notices: Mutex::new(HashMap::new()),
        })
    }

    fn notice(&self, bank_ref: &BankRef) -> Arc<tokio::sync::Notify> {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(bank_ref.clone())
            .or_default()
            .clone()
    }

    /// The channel says something happened to `bank_ref`: its saga asks the channel now (a
    /// notification is a hint to look, never trusted as the result itself). Starts the saga
    /// when it is not running (e.g. on a new leader).
    pub fn notify(self: &Arc<Self>, bank_ref: &BankRef) -> bool {
        if self.backend.bank_op(bank_ref).is_none() {
            return false;
        }
        self.notice(bank_ref).notify_one();
        self.start(bank_ref);
        true
    }

    /// Waits for the channel's notification (or `channel_poll`), then settles the order by its
    /// status; closes it by a reversal once it has expired unconfirmed.
    async fn await_channel(&self, op: &BankOp) -> Result<(), SubmitError> {
        let notice = self.notice(&op.bank_ref);
        let _ = tokio::time::timeout(self.config.channel_poll, notice.notified()).await;
        let settle =
            |name: &'static str, body: CommandBody| async move { self.step(op, name, body).await };
        match self.link.status(op).await {
            Some(BankStatus::Applied) => {
                settle(
                    "complete",
                    CommandBody::CompleteBankOp {
                        bank_ref: op.bank_ref.clone(),
                        bank_note: "channel: paid".into(),
                    },
                )
                .await
            }
            Some(BankStatus::Declined) => {
                settle(
                    "decline",
                    CommandBody::DeclineBankOp {
                        bank_ref: op.bank_ref.clone(),
                        bank_note: "channel: declined".into(),
                    },
                )
                .await
            }
            Some(BankStatus::Reversed) => {
                settle(
                    "reverse",
                    CommandBody::ReverseBankOp {
                        bank_ref: op.bank_ref.clone(),
                        bank_note: "channel: order closed".into(),
                    },
                )
                .await
            }
            _ => {
                if age(op, now_ms()) < self.config.channel_order_expiry {
                    return Ok(());
                }
                // Expired unconfirmed: close the order; a late confirmation is then refused.
                if self.link.reverse(op, false).await {
                    settle(
                        "reverse",
                        CommandBody::ReverseBankOp {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: "channel: order expired unconfirmed".into(),
                        },
                    )
                    .await
                } else {
                    Err(SubmitError::Unavailable(
                        "the channel did not close the order".into(),
                    ))
                }
            }
        }
    }

    pub fn link(&self) -> &Arc<L> {
        &self.link
    }

    pub fn actors(&self) -> &Actors<B> {
        &self.actors
    }

    /// Drives the operation to an end and returns its state, or its state at `wait`'s end if
    /// the saga is still running then (it goes on in the background).
    pub async fn drive(self: &Arc<Self>, bank_ref: &BankRef, wait: Duration) -> Option<BankOp> {
        let mut done = self.start(bank_ref);
        let _ = tokio::time::timeout(wait, done.wait_for(|s| s.is_some())).await;
        self.backend.bank_op(bank_ref)
    }

    /// Starts the saga of `bank_ref` unless it is running; returns its completion signal.
    fn start(self: &Arc<Self>, bank_ref: &BankRef) -> watch::Receiver<Option<BankOpState>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = running.get(bank_ref) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        running.insert(bank_ref.clone(), rx.clone());
        let gateway = self.clone();
        let bank_ref = bank_ref.clone();
        tokio::spawn(async move {
            let end = gateway.run(&bank_ref).await;
            gateway
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&bank_ref);
            gateway
                .notices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&bank_ref);
            let _ = tx.send(Some(end));
        });
        rx
    }

    /// One saga step as a ledger command, through the account's actor (so its cache follows).
    /// A refused step is success only when the operation has moved on from the state the step
    /// started from (another leader's saga got there first, or it is final); a refusal that
    /// leaves it where it was is an error, so the saga backs off and a person is told.
    async fn step(
        &self,
        op: &BankOp,
        name: &'static str,
        body: CommandBody,
    ) -> Result<(), SubmitError> {
        // A hold's expiry may be refused while a capture is under way and be due again once
        // the capture is declined: each generation of the hold (its steps) expires anew.
        let request = match name {
            "expire" => format!("saga:{}:expire-{}", op.bank_ref, op.steps),
            _ => format!("saga:{}:{name}", op.bank_ref),
        };
        let request =
            RequestId::parse(&request).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let terminal =
            TerminalId::parse(SAGA_TERMINAL).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let command = Command {
            request,
            terminal,
            operator: None,
            at: Timestamp(0),
            body,
        };
        match self
            .actors
            .submit(EntityKey::Account(op.account), command)
            .await?
        {
            Outcome::Done(_) => Ok(()),
            Outcome::Rejected(r) => {
                let now = self.backend.bank_op(&op.bank_ref);
                // Moved on: another leader's saga got there first, or (a hold) a capture or a
                // release was recorded meanwhile.
                if now.as_ref().is_none_or(|o| {
                    o.state != op.state || o.purpose != op.purpose || o.steps != op.steps
                }) {
                    let now = now.map(|o| o.state);
                    tracing::info!(bank_ref = %op.bank_ref, step = name, from = ?op.state, ?now,
                        "saga step refused, the operation moved on: {}", r.message);
                    return Ok(());
                }
                metrics::counter!("bank_saga_steps_refused_total",
                    "step" => name, "reason" => r.code.as_str())
                .increment(1);
                tracing::error!(bank_ref = %op.bank_ref, step = name, state = ?op.state,
                    reason = r.code.as_str(),
                    "saga step refused and the operation did not move on: {}", r.message);
                Err(SubmitError::Unavailable(format!(
                    "saga step {name} refused: {} {}",
                    r.code.as_str(),
                    r.message
                )))
            }
        }
    }

    /// Runs the saga until the operation is final or this node cannot go on (not leading):
    /// returns the state it reached.
    async fn run(&self, bank_ref: &BankRef) -> BankOpState {
        let mut backoff = self.config.first_backoff;
        let mut reversals_sent = 0u32;
        // Once the channel order is placed, this run only waits for the payer (the channel's
        // notice or the status query) and never sends the order again; a new leader's run
        // sends it at most once more (the bank deduplicates by reference).
        let mut order_placed = false;
        loop {
            // A deposed leader stops: the new leader's recovery drives the operation on (a
            // deposed node calling the bank would only repeat what the new leader does).
            if !self.actors.is_leading() {
                return self
                    .backend
                    .bank_op(bank_ref)
                    .map_or(BankOpState::Pending, |op| op.state);
            }
            let Some(op) = self.backend.bank_op(bank_ref) else {
                tracing::error!(%bank_ref, "saga for an unknown bank operation");
                return BankOpState::Declined;
            };
            if op.state.is_final() {
                metrics::counter!("bank_sagas_finished_total", "state" => format!("{:?}", op.state))
                    .increment(1);
                return op.state;
            }
            // A hold waits for its capture: nothing to do until the payer asks for it back or
            // it expires.
            if op.state == BankOpState::Authorized && !self.release_due(&op, now_ms()) {
                return op.state;
            }
            // A step that hangs (a proposal or a bank call that never answers) must not hold
            // the operation: it is given up and the operation read again (a step is safe to
            // repeat: the bank deduplicates by reference, the ledger by request id).
            let result = match tokio::time::timeout(
                STEP_TIMEOUT,
                self.advance(&op, &mut order_placed, &mut reversals_sent),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => {
                    metrics::counter!("bank_saga_steps_timed_out_total").increment(1);
                    Err(SubmitError::Unavailable(format!(
                        "saga step gave no answer in {STEP_TIMEOUT:?}"
                    )))
                }
            };
            match result {
                Ok(()) => backoff = self.config.first_backoff,
                Err(SubmitError::NotLeader) => return op.state,
                Err(e) => {
                    tracing::warn!(%bank_ref, state = ?op.state, "saga waits {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }

    /// One step of the operation from the state it is in now.
    async fn advance(
        &self,
        op: &BankOp,
        order_placed: &mut bool,
        reversals_sent: &mut u32,
    ) -> Result<(), SubmitError> {
        match op.state {
            BankOpState::Pending if *order_placed => self.await_channel(op).await,
            BankOpState::Pending => match self.link.execute(op).await {
                BankAnswer::Approved(note) => {
                    self.step(
                        op,
                        "complete",
                        CommandBody::CompleteBankOp {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: note,
                        },
                    )
                    .await
                }
                BankAnswer::Declined(note) => {
                    self.step(
                        op,
                        "decline",
                        CommandBody::DeclineBankOp {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: note,
                        },
                    )
                    .await
                }
                BankAnswer::Unknown(note) => {
                    self.step(
                        op,
                        "in-doubt",
                        CommandBody::MarkBankOpInDoubt {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: note,
                        },
                    )
                    .await
                }
                BankAnswer::InProgress(_) => {
                    *order_placed = true;
                    self.await_channel(op).await
                }
                // Not sent now is not "declined": an earlier leader may have sent it, and
                // the bank may have moved the money. Pending, and tried again later.
                BankAnswer::NotSent(note) => {
                    metrics::counter!("bank_requests_not_sent_total").increment(1);
                    Err(SubmitError::Unavailable(format!(
                        "nothing sent to the bank: {note}"
                    )))
                }
                BankAnswer::Unanswered(note) => {
                    metrics::counter!("bank_advices_unanswered_total").increment(1);
                    Err(SubmitError::Unavailable(format!(
                        "the bank did not answer the advice: {note}"
                    )))
                }
            },
            // Expired uncaptured: the release is recorded first, so no capture can start
            // once the bank may have freed the hold.
            BankOpState::Authorized
                if matches!(
                    op.purpose,
                    BankPurpose::Authorization { release: false, .. }
                ) =>
            {
                self.step(
                    op,
                    "expire",
                    CommandBody::ExpireAuthorization {
                        authorization: op.bank_ref.clone(),
                    },
                )
                .await
            }
            // Its release recorded: the bank frees the hold on a reversal advice.
            BankOpState::Authorized => {
                let acked = self.link.reverse(op, *reversals_sent > 0).await;
                *reversals_sent += 1;
                if !acked {
                    metrics::counter!("bank_reversals_unacknowledged_total").increment(1);
                    return Err(SubmitError::Unavailable("release not acknowledged".into()));
                }
                self.step(
                    op,
                    "release",
                    CommandBody::ReverseBankOp {
                        bank_ref: op.bank_ref.clone(),
                        bank_note: "hold released".into(),
                    },
                )
                .await
            }
            BankOpState::InDoubt => match self.link.status(op).await {
                Some(BankStatus::Applied) => {
                    self.step(
                        op,
                        "complete",
                        CommandBody::CompleteBankOp {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: "status query: applied".into(),
                        },
                    )
                    .await
                }
                Some(BankStatus::Declined) => {
                    self.step(
                        op,
                        "decline",
                        CommandBody::DeclineBankOp {
                            bank_ref: op.bank_ref.clone(),
                            bank_note: "status query: declined".into(),
                        },
                    )
                    .await
                }
                // Never seen, already reversed, or the bank cannot be asked: reverse.
                _ => {
                    let acked = self.link.reverse(op, *reversals_sent > 0).await;
                    *reversals_sent += 1;
                    if acked {
                        self.step(
                            op,
                            "reverse",
                            CommandBody::ReverseBankOp {
                                bank_ref: op.bank_ref.clone(),
                                bank_note: "reversal acknowledged".into(),
                            },
                        )
                        .await
                    } else {
                        metrics::counter!("bank_reversals_unacknowledged_total").increment(1);
                        Err(SubmitError::Unavailable("reversal not acknowledged".into()))
                    }
                }
            },
            _ => Ok(()),
        }
    }

    /// Whether the hold `op` is to be released now: the payer asked, or it expired, and no
    /// capture of it is under way.
    fn release_due(&self, op: &BankOp, now_ms: i64) -> bool {
        match op.purpose {
            BankPurpose::Authorization {
                capture: None,
                release,
            } => release || age(op, now_ms) >= self.config.authorization_expiry,
            _ => false,
        }
    }

    /// Drives every Pending or InDoubt operation once, and every hold due for release;
    /// returns how many were unresolved (holds waiting for their capture are not).
    pub fn recover(self: &Arc<Self>, now_ms: i64) -> usize {
        let (unresolved, held): (Vec<BankOp>, Vec<BankOp>) = self
            .backend
            .unresolved_bank_ops()
            .into_iter()
            .partition(BankOp::is_unresolved);
        let oldest = unresolved
            .iter()
            .filter(|op| !op.purpose.is_hold())
            .map(|op| age(op, now_ms))
            .max();
        metrics::gauge!("bank_ops_unresolved").set(unresolved.len() as f64);
        metrics::gauge!("bank_ops_unresolved_oldest_seconds")
            .set(oldest.unwrap_or_default().as_secs_f64());
        metrics::gauge!("bank_authorizations_held").set(held.len() as f64);
        for op in &unresolved {
            // A hold waits on the bank only since its release was recorded.
            let age = if op.purpose.is_hold() {
                Duration::from_millis(u64::try_from(now_ms - op.updated_at.0).unwrap_or(0))
            } else {
                age(op, now_ms)
            };
            if age > self.config.resolution_deadline {
                tracing::error!(bank_ref = %op.bank_ref, ?age, state = ?op.state,
                    "bank operation unresolved past its deadline: needs a person");
            }
            self.start(&op.bank_ref);
        }
        // A hold waiting for its capture needs nothing until it expires.
        for op in held.iter().filter(|op| self.release_due(op, now_ms)) {
            self.start(&op.bank_ref);
        }
        unresolved.len()
    }

    /// While this node leads, drives unresolved operations at once and then on a timer.
    pub async fn run_recovery(self: Arc<Self>, mut leading: watch::Receiver<bool>) {
        loop {
            if *leading.borrow_and_update() {
                let n = self.recover(now_ms());
                if n > 0 {
                    tracing::info!(unresolved = n, "recovery drives unresolved bank operations");
                }
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(self.config.recovery_every) => {}
            }
        }
    }
}

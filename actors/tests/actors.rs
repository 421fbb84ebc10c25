//! The actors over an in-memory ledger (the ledger's own `apply` on a `MemState`): routing,
//! duplicate answers, early rejections, supervision, leadership, passivation, and the bank
//! saga's answer to a refused step. The backend (and, for the saga, the bank) is the one
//! stand-in here; the node's tests run the same actors over Raft and RocksDB.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use yinyi_actors::{
    Actors, ActorsConfig, Backend, BankAnswer, BankGateway, BankLink, BankStatus, EntityKey,
    LiveCounts, ProposeFailure, SagaConfig, SubmitError,
};
use yinyi_ledger::*;

/// The ledger applied in memory, one command per log index, with a switch to panic and one to
/// refuse a request id as taken (without applying anything).
#[derive(Default)]
struct MemBackend {
    state: Mutex<MemState>,
    index: AtomicU64,
    proposals: AtomicU64,
    panic_on: Mutex<Option<RequestId>>,
    refuse: Mutex<Option<RequestId>>,
}

impl Backend for MemBackend {
    async fn propose(&self, command: Command) -> Result<Outcome, ProposeFailure> {
        if self.panic_on.lock().unwrap().as_ref() == Some(&command.request) {
            panic!("injected failure while proposing {}", command.request);
        }
        if self.refuse.lock().unwrap().as_ref() == Some(&command.request) {
            return Ok(Outcome::rejected(
                ReasonCode::RequestIdReused,
                format!("request id {} was used before", command.request),
            ));
        }
        self.proposals.fetch_add(1, Ordering::SeqCst);
        let index = self.index.fetch_add(1, Ordering::SeqCst) + 1;
        let ctx = ApplyCtx {
            txn: TxnId::new(index, 0),
            rules: Rules::default(),
        };
        Ok(apply(&command, &mut *self.state.lock().unwrap(), &ctx))
    }
    fn account(&self, id: AccountId) -> Option<Account> {
        self.state.lock().unwrap().account(id)
    }
    fn terminal(&self, id: &TerminalId) -> Option<Terminal> {
        self.state.lock().unwrap().terminal(id)
    }
    fn bill(&self, id: &BillId) -> Option<Bill> {
        self.state.lock().unwrap().bill(id)
    }
    fn request(&self, terminal: &TerminalId, id: &RequestId) -> Option<RequestRecord> {
        self.state.lock().unwrap().request(terminal, id)
    }
    fn refusal(&self, command: &Command) -> Option<Rejection> {
        let ctx = ApplyCtx {
            txn: TxnId::new(0, 0),
            rules: Rules::default(),
        };
        yinyi_ledger::refusal(command, &mut *self.state.lock().unwrap(), &ctx)
    }
    fn bank_op(&self, bank_ref: &BankRef) -> Option<BankOp> {
        self.state.lock().unwrap().bank_op(bank_ref)
    }
    fn unresolved_bank_ops(&self) -> Vec<BankOp> {
        Vec::new()
    }
}

struct Harness {
    backend: Arc<MemBackend>,
    actors: Actors<MemBackend>,
    leader: watch::Sender<bool>,
    serial: u64,
}

const KIOSK: &str = "K-0101";
const HIS: &str = "H-HIS";

fn card(n: u64) -> CardNo {
    CardNo::parse(&format!("HC{n:06}")).unwrap()
}

impl Harness {
    async fn new(config: ActorsConfig) -> Harness {
        let backend = Arc::new(MemBackend::default());
        let (leader, rx) = watch::channel(true);
        let actors = Actors::start(backend.clone(), config, rx).await.unwrap();
        let mut h = Harness {
            backend,
            actors,
            leader,
            serial: 0,
        };
        for t in [KIOSK, HIS] {
            let body = CommandBody::RegisterTerminal {
                terminal: TerminalId::parse(t).unwrap(),
            };
            let c = h.command("A-ADMIN", body);
            let key = EntityKey::Terminal(TerminalId::parse(t).unwrap());
            assert!(h.actors.submit(key, c).await.unwrap().is_done());
        }
        h
    }

    fn command(&mut self, terminal: &str, body: CommandBody) -> Command {
        self.serial += 1;
        Command {
            request: RequestId::parse(&format!("{terminal}:{:06}", self.serial)).unwrap(),
            terminal: TerminalId::parse(terminal).unwrap(),
            operator: None,
            at: Timestamp(self.serial as i64),
            body,
        }
    }

    /// Issues card `n` at the kiosk with `yuan`, through the kiosk's actor.
    async fn patient(&mut self, n: u64, yuan: i64) -> AccountId {
        let c = self.command(
            KIOSK,
            CommandBody::IssueCard {
                card: card(n),
                card_kind: CardKind::Hospital,
                holder: Holder {
                    name: format!("patient {n}"),
                    person: PersonKey::parse(&format!("{n:064x}")).unwrap(),
                    id_masked: "110****1234".into(),
                    phone: String::new(),
                },
                first_deposit: (yuan > 0).then(|| Money::from_yuan(yuan)),
            },
        );
        let key = EntityKey::Terminal(c.terminal.clone());
        match self.actors.submit(key, c).await.unwrap() {
            Outcome::Done(Effect::CardIssued { account, .. }) => account,
            other => panic!("{other:?}"),
        }
    }

    fn deposit(&mut self, n: u64, yuan: i64) -> Command {
        self.command(
            KIOSK,
            CommandBody::DepositCash {
                card: card(n),
                amount: Money::from_yuan(yuan),
            },
        )
    }

    async fn post_bill(&mut self, n: u64, bill: &str, yuan: i64, account: AccountId) {
        let c = self.command(
            HIS,
            CommandBody::PostBill {
                bill: BillId::parse(bill).unwrap(),
                card: card(n),
                kind: BillKind::Outpatient,
                amount: Money::from_yuan(yuan),
            },
        );
        let outcome = self.actors.submit(EntityKey::Account(account), c).await;
        assert!(outcome.unwrap().is_done());
    }

    fn pay(&mut self, n: u64, bill: &str) -> Command {
        self.command(
            KIOSK,
            CommandBody::PayBill {
                bill: BillId::parse(bill).unwrap(),
                card: card(n),
            },
        )
    }

    fn proposals(&self) -> u64 {
        self.backend.proposals.load(Ordering::SeqCst)
    }

    fn balance(&self, account: AccountId) -> Money {
        self.backend.account(account).unwrap().balance
    }
}

fn code(outcome: &Outcome) -> Option<ReasonCode> {
    match outcome {
        Outcome::Rejected(r) => Some(r.code),
        Outcome::Done(_) => None,
    }
}

/// Polls `f` until it holds or `within` passes.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[tokio::test]
async fn commands_run_on_their_entitys_actor_and_rejections_come_from_apply() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let account = h.patient(1, 100).await;
    let c = h.deposit(1, 20);
    let outcome = h
        .actors
        .submit(EntityKey::Account(account), c)
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        Outcome::Done(Effect::BalanceChanged { balance, .. }) if balance == Money::from_yuan(120)
    ));
    // Through apply: the bill is unknown.
    let c = h.pay(1, "NOPE");
    let outcome = h
        .actors
        .submit(EntityKey::Account(account), c)
        .await
        .unwrap();
    assert_eq!(code(&outcome), Some(ReasonCode::BillNotFound));
    assert_eq!(
        h.actors.live(),
        LiveCounts {
            accounts: 1,
            terminals: 2
        }
    );
}

#[tokio::test]
async fn a_retried_request_is_answered_from_its_stored_outcome_without_a_proposal() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let account = h.patient(1, 100).await;
    let c = h.deposit(1, 20);
    let first = h
        .actors
        .submit(EntityKey::Account(account), c.clone())
        .await
        .unwrap();
    let proposals = h.proposals();
    let again = h
        .actors
        .submit(EntityKey::Account(account), c)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(h.proposals(), proposals);
    assert_eq!(h.balance(account), Money::from_yuan(120));
}

#[tokio::test]
async fn a_frozen_account_and_a_short_balance_are_refused_early_and_not_recorded() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let account = h.patient(1, 100).await;
    h.post_bill(1, "LAB-1", 150, account).await;

    let pay = h.pay(1, "LAB-1");
    let before = h.proposals();
    let outcome = h
        .actors
        .submit(EntityKey::Account(account), pay.clone())
        .await
        .unwrap();
    assert_eq!(code(&outcome), Some(ReasonCode::InsufficientFunds));
    assert_eq!(h.proposals(), before, "refused without proposing");
    assert!(
        h.backend.request(&pay.terminal, &pay.request).is_none(),
        "not recorded"
    );

    // Once the money is there, the same request succeeds.
    let c = h.deposit(1, 100);
    h.actors
        .submit(EntityKey::Account(account), c)
        .await
        .unwrap();
    let outcome = h
        .actors
        .submit(EntityKey::Account(account), pay)
        .await
        .unwrap();
    assert!(outcome.is_done(), "{outcome:?}");
    assert_eq!(h.balance(account), Money::from_yuan(50));

    // Frozen: refused early with the ledger's code.
    let freeze = h.command("A-ADMIN", CommandBody::Freeze { account });
    h.actors
        .submit(EntityKey::Account(account), freeze)
        .await
        .unwrap();
    h.post_bill(1, "LAB-2", 1, account).await;
    let before = h.proposals();
    let pay = h.pay(1, "LAB-2");
    let outcome = h
        .actors
        .submit(EntityKey::Account(account), pay)
        .await
        .unwrap();
    assert_eq!(code(&outcome), Some(ReasonCode::AccountFrozen));
    assert_eq!(h.proposals(), before);
}

#[tokio::test]
async fn a_panicking_actor_is_restarted_and_no_other_actor_is_touched() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let a = h.patient(1, 100).await;
    let b = h.patient(2, 100).await;
    let warm = h.deposit(2, 1);
    h.actors.submit(EntityKey::Account(b), warm).await.unwrap();

    let doomed = h.deposit(1, 10);
    *h.backend.panic_on.lock().unwrap() = Some(doomed.request.clone());
    let err = h
        .actors
        .submit(EntityKey::Account(a), doomed.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, SubmitError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(
        eventually(Duration::from_secs(5), || h
            .actors
            .stats()
            .accounts
            .restarted
            == 1)
        .await
    );

    // The other account's actor kept running: no new spawn for it.
    let spawned = h.actors.stats().accounts.spawned;
    let c = h.deposit(2, 1);
    assert!(
        h.actors
            .submit(EntityKey::Account(b), c)
            .await
            .unwrap()
            .is_done()
    );
    assert_eq!(h.actors.stats().accounts.spawned, spawned);

    // The failed one comes back on its next command; the retry applies once.
    *h.backend.panic_on.lock().unwrap() = None;
    let outcome = h
        .actors
        .submit(EntityKey::Account(a), doomed)
        .await
        .unwrap();
    assert!(outcome.is_done());
    assert_eq!(h.actors.stats().accounts.spawned, spawned + 1);
    assert_eq!(h.balance(a), Money::from_yuan(110));
}

#[tokio::test]
async fn losing_leadership_stops_every_actor_and_refuses_until_it_returns() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let a = h.patient(1, 100).await;
    assert!(h.actors.live().accounts + h.actors.live().terminals > 0);
    h.leader.send(false).unwrap();
    let c = h.deposit(1, 10);
    assert_eq!(
        h.actors.submit(EntityKey::Account(a), c.clone()).await,
        Err(SubmitError::NotLeader)
    );
    assert!(
        eventually(Duration::from_secs(5), || h.actors.live()
            == LiveCounts::default())
        .await
    );
    h.leader.send(true).unwrap();
    let outcome = h.actors.submit(EntityKey::Account(a), c).await.unwrap();
    assert!(outcome.is_done());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_passivated_under_the_cap_and_then_all() {
    const ACCOUNTS: u64 = 20_000;
    const CAP: usize = 1_000;
    let mut h = Harness::new(ActorsConfig {
        idle_timeout: Duration::from_millis(500),
        max_live: CAP,
        sweep_every: Duration::from_millis(50),
    })
    .await;
    // Accounts by id only: the actors start (and cache nothing) for each id touched.
    let mut tasks = Vec::new();
    for n in 0..ACCOUNTS {
        let c = h.command(
            "A-ADMIN",
            CommandBody::Unfreeze {
                account: AccountId(1_000_000 + n),
            },
        );
        let actors = h.actors.clone();
        tasks.push(tokio::spawn(async move {
            actors.submit(EntityKey::Account(c_account(&c)), c).await
        }));
    }
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert_eq!(code(&outcome), Some(ReasonCode::AccountNotFound));
    }
    assert!(
        eventually(Duration::from_secs(10), || h.actors.live().accounts <= CAP).await,
        "{:?}",
        h.actors.live()
    );
    assert!(eventually(Duration::from_secs(10), || h.actors.live().accounts == 0).await);
    let stats = h.actors.stats().accounts;
    assert_eq!(stats.spawned, ACCOUNTS);
    assert_eq!(stats.passivated, ACCOUNTS);
}

fn c_account(c: &Command) -> AccountId {
    match c.body {
        CommandBody::Unfreeze { account } => account,
        _ => unreachable!("only unfreezes here"),
    }
}

/// Every counter this test process increments, by `name{label=value,...}` (labels sorted), so a
/// test can see that a path was counted. Installed once as the global recorder.
#[derive(Clone, Default)]
struct Counters(Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>);

impl metrics::Recorder for Counters {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let cell = self.0.lock().unwrap().entry(name).or_default().clone();
        metrics::Counter::from_arc(cell)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The value of counter `name{labels}` (labels sorted, as `k=v` joined by commas) so far.
fn counted(name: &str) -> u64 {
    static COUNTERS: OnceLock<Counters> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        let counters = Counters::default();
        metrics::set_global_recorder(counters.clone())
            .unwrap_or_else(|_| panic!("only this test file installs a recorder"));
        counters
    });
    counters
        .0
        .lock()
        .unwrap()
        .get(name)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// A bank that approves every request and counts them; `racer`, when set, is another leader's
/// saga that completes the operation (under its own request id) while this one waits for the
/// bank's answer.
struct ApprovingBank {
    executed: AtomicU64,
    racer: Option<Arc<MemBackend>>,
}

impl BankLink for ApprovingBank {
    async fn execute(&self, op: &BankOp) -> BankAnswer {
        self.executed.fetch_add(1, Ordering::SeqCst);
        if let Some(backend) = &self.racer {
            let other = Command {
                request: RequestId::parse(&format!("other-leader:{}", op.bank_ref)).unwrap(),
                terminal: TerminalId::parse("S-SAGA").unwrap(),
                operator: None,
                at: Timestamp(0),
                body: CommandBody::CompleteBankOp {
                    bank_ref: op.bank_ref.clone(),
                    bank_note: "00".into(),
                },
            };
            assert!(backend.propose(other).await.unwrap().is_done());
        }
        BankAnswer::Approved("00".into())
    }
    async fn reverse(&self, _: &BankOp, _: bool) -> bool {
        true
    }
    async fn status(&self, _: &BankOp) -> Option<BankStatus> {
        Some(BankStatus::Applied)
    }
}

impl Harness {
    /// Starts a 50 yuan bank-card top-up of card `n` (Pending) and returns its reference.
    async fn bank_top_up(&mut self, n: u64, account: AccountId) -> BankRef {
        let c = self.command(
            KIOSK,
            CommandBody::StartBankOp {
                card: card(n),
                external: External::BankCard {
                    token: CardToken::parse("tok_bank_0001").unwrap(),
                    masked: "6222****0001".into(),
                },
                purpose: BankPurpose::TopUp,
                amount: Some(Money::from_yuan(50)),
            },
        );
        match self
            .actors
            .submit(EntityKey::Account(account), c)
            .await
            .unwrap()
        {
            Outcome::Done(Effect::BankOpStarted { bank_ref, .. }) => bank_ref,
            other => panic!("{other:?}"),
        }
    }
}

fn saga_config() -> SagaConfig {
    SagaConfig {
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        ..SagaConfig::default()
    }
}

/// Issue 15, path 1: a refused saga step is not success. The bank approved, but the step that
/// records it is refused (its request id `saga:{ref}:complete` taken) while the operation has
/// not moved on: the saga does not finish, backs off instead of looping on the bank, counts
/// the refusal in `bank_saga_steps_refused_total`, and completes once the step goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_saga_step_backs_off_is_counted_and_never_reported_done() {
    let refused = "bank_saga_steps_refused_total{reason=REQUEST_ID_REUSED,step=complete}";
    let refused_before = counted(refused);
    let mut h = Harness::new(ActorsConfig::default()).await;
    let account = h.patient(1, 100).await;
    let bank_ref = h.bank_top_up(1, account).await;
    *h.backend.refuse.lock().unwrap() =
        Some(RequestId::parse(&format!("saga:{bank_ref}:complete")).unwrap());
    let bank = Arc::new(ApprovingBank {
        executed: AtomicU64::new(0),
        racer: None,
    });
    let gateway = BankGateway::new(
        h.backend.clone(),
        h.actors.clone(),
        bank.clone(),
        saga_config(),
    );

    let op = gateway
        .drive(&bank_ref, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(op.state, BankOpState::Pending, "not recorded: not done");
    assert_eq!(h.balance(account), Money::from_yuan(100));
    // Backing off 50 ms doubling to 400 ms: about 8 attempts in 2 s, not a busy loop.
    let attempts = bank.executed.load(Ordering::SeqCst);
    assert!((2..=12).contains(&attempts), "{attempts} bank calls in 2 s");
    assert!(
        counted(refused) >= refused_before + 2,
        "each refusal counted"
    );

    // The step goes through at last: completed once.
    *h.backend.refuse.lock().unwrap() = None;
    let op = gateway
        .drive(&bank_ref, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(op.state, BankOpState::Completed);
    assert_eq!(h.balance(account), Money::from_yuan(150));
}

/// Issue 15, path 1 (the other side): a step refused because another leader's saga already
/// moved the operation on is no error: the saga sees the new state and ends without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_refused_after_another_saga_settled_it_ends_the_saga() {
    let mut h = Harness::new(ActorsConfig::default()).await;
    let account = h.patient(1, 100).await;
    let bank_ref = h.bank_top_up(1, account).await;
    *h.backend.refuse.lock().unwrap() =
        Some(RequestId::parse(&format!("saga:{bank_ref}:complete")).unwrap());
    let bank = Arc::new(ApprovingBank {
        executed: AtomicU64::new(0),
        racer: Some(h.backend.clone()),
    });
    let gateway = BankGateway::new(
        h.backend.clone(),
        h.actors.clone(),
        bank.clone(),
        saga_config(),
    );
    let op = gateway
        .drive(&bank_ref, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(op.state, BankOpState::Completed);
    assert_eq!(bank.executed.load(Ordering::SeqCst), 1);
    assert_eq!(h.balance(account), Money::from_yuan(150));
}

/// A hold's expiry refused while a capture was under way (its refusal stored under its request
/// id) must not block the expiry once the capture is declined and the hold is held again: each
/// generation of the hold expires under its own request id, so the saga releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_held_again_after_a_declined_capture_still_expires() {
    const MOBILE: &str = "M-WX";
    let mut h = Harness::new(ActorsConfig::default()).await;
    let register = h.command(
        "A-ADMIN",
        CommandBody::RegisterTerminal {
            terminal: TerminalId::parse(MOBILE).unwrap(),
        },
    );
    let key = EntityKey::Terminal(TerminalId::parse(MOBILE).unwrap());
    assert!(h.actors.submit(key, register).await.unwrap().is_done());
    let account = h.patient(1, 100).await;
    let run = |h: &mut Harness, terminal: &str, body: CommandBody| {
        let c = h.command(terminal, body);
        let actors = h.actors.clone();
        async move { actors.submit(EntityKey::Account(account), c).await.unwrap() }
    };
    let started = |outcome: Outcome| match outcome {
        Outcome::Done(Effect::BankOpStarted { bank_ref, .. }) => bank_ref,
        other => panic!("{other:?}"),
    };
    let hold = started(
        run(
            &mut h,
            MOBILE,
            CommandBody::AuthorizePayment {
                card: card(1),
                external: External::ThirdParty {
                    provider: "WECHAT".into(),
                    payer: "payer_0001".into(),
                },
                amount: Money::from_yuan(14),
            },
        )
        .await,
    );
    let bank = Arc::new(ApprovingBank {
        executed: AtomicU64::new(0),
        racer: None,
    });
    // Held, not yet expired (the harness stamps commands near 1970: a long expiry): the saga
    // ends with the hold held.
    let patient = BankGateway::new(
        h.backend.clone(),
        h.actors.clone(),
        bank.clone(),
        SagaConfig {
            authorization_expiry: Duration::from_secs(1 << 40),
            ..saga_config()
        },
    );
    let op = patient.drive(&hold, Duration::from_secs(5)).await.unwrap();
    assert_eq!(op.state, BankOpState::Authorized);

    assert!(
        run(
            &mut h,
            HIS,
            CommandBody::PostBill {
                bill: BillId::parse("B1").unwrap(),
                card: card(1),
                kind: BillKind::Outpatient,
                amount: Money::from_yuan(6),
            },
        )
        .await
        .is_done()
    );
    let capture = started(
        run(
            &mut h,
            MOBILE,
            CommandBody::CapturePayment {
                card: card(1),
                authorization: hold.clone(),
                bill: BillId::parse("B1").unwrap(),
            },
        )
        .await,
    );
    // An expiry proposed while the capture is under way (as the saga names it for this
    // generation of the hold) is refused, and the refusal is stored under its request id.
    let generation = h.backend.bank_op(&hold).unwrap().steps;
    let early = Command {
        request: RequestId::parse(&format!("saga:{hold}:expire-{generation}")).unwrap(),
        terminal: TerminalId::parse("S-SAGA").unwrap(),
        operator: None,
        at: Timestamp(0),
        body: CommandBody::ExpireAuthorization {
            authorization: hold.clone(),
        },
    };
    let refused = h
        .actors
        .submit(EntityKey::Account(account), early)
        .await
        .unwrap();
    assert!(!refused.is_done(), "{refused:?}");
    // The bank refuses the capture: the hold is held again.
    let decline = Command {
        request: RequestId::parse(&format!("saga:{capture}:decline")).unwrap(),
        terminal: TerminalId::parse("S-SAGA").unwrap(),
        operator: None,
        at: Timestamp(0),
        body: CommandBody::DeclineBankOp {
            bank_ref: capture.clone(),
            bank_note: "12".into(),
        },
    };
    assert!(
        h.actors
            .submit(EntityKey::Account(account), decline)
            .await
            .unwrap()
            .is_done()
    );
    assert_eq!(
        h.backend.bank_op(&hold).unwrap().state,
        BankOpState::Authorized
    );
    // Now it expires (at once, by this saga's configuration) and is released.
    let expiring = BankGateway::new(
        h.backend.clone(),
        h.actors.clone(),
        bank,
        SagaConfig {
            authorization_expiry: Duration::ZERO,
            ..saga_config()
        },
    );
    let op = expiring.drive(&hold, Duration::from_secs(5)).await.unwrap();
    assert_eq!(op.state, BankOpState::Reversed, "{op:?}");
}

//! A hostile credential of every role against a running 3-node TLS cluster with the bank
//! simulator (issue 15, acceptance): guessing system request ids, replaying other terminals'
//! ids, racing refunds against payments, paying with a lost or replaced card, acting for another
//! terminal, and calling what the role table and the ledger disagree on, while honest kiosks, a
//! window and HIS do a small normal workload (one kiosk in the background all along).
//!
//! Every answer a client gets that moves money is written in a book. The run ends by holding
//! the cluster to it: each account's balance on every node, the balance audit of every node,
//! the conservation law computed from the book, the honest terminals' cash, and the bank
//! simulator's own card balances and records. Nothing the attacker does may move money it
//! should not.
//!
//! Each step says which path of issue 15 it probes. A broken expectation is collected as a
//! finding naming its step, so one run reports every path; the test fails at the end with all
//! of them. Step 1 runs last: on a cluster without its fix, the sagas it breaks keep looping and
//! would blur what the other steps show.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_bank::{BankSim, Faults, OpState};
use yinyi_ledger::{BankRef, CardToken, Money, TxnId};
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const T: Duration = Duration::from_secs(30);
/// How long an honest client asks again for a bank operation to end.
const SETTLE: Duration = Duration::from_secs(12);
/// Every bank card starts with this at the simulator.
const CARD_START_YUAN: i64 = 10_000;

const ADMIN_TERMINAL: &str = "A-ADMIN";
const KIOSK: &str = "K-0101";
const KIOSK_BG: &str = "K-0102";
const WINDOW: &str = "W-01";
const HIS: &str = "H-HIS";
const CASHIER: &str = "CASHIER1";
const EVIL_KIOSK: &str = "K-0666";
const EVIL_WINDOW: &str = "W-66";
const EVIL_MOBILE: &str = "M-66";
const EVIL_HIS: &str = "H-666";
const EVIL_OPERATOR: &str = "EVIL1";
/// The attacker's own card, account and bank card.
const EVIL_CARD: &str = "EV00000666";
const EVIL_TOKEN: &str = "tok_evil_0666";
const EVIL_PAYER: &str = "wx_evil_0666";
/// A card nobody issued: a request naming it is refused by the ledger (CARD_NOT_FOUND), which
/// still records its request id. The cheapest way to take an id.
const GHOST_CARD: &str = "GHOST0001";

/// What a refund racing the payment may be told: the bill unknown, unpaid, paid and not yet
/// cancelled, being paid or refunded, refunded already, or paid by card (so not refundable to
/// the account).
const RACING_REFUND_REASONS: &[&str] = &[
    "BILL_NOT_FOUND",
    "BILL_NOT_PAID",
    "REFUND_NOT_ALLOWED",
    "BILL_OPERATION_IN_PROGRESS",
    "ALREADY_REFUNDED",
    "REFUND_CHANNEL_NOT_ALLOWED",
];

const S1: &str = "step 1 (issue 15 path 1: system request ids taken by a client)";
const S2: &str = "step 2 (issue 15 path 1: request ids deduplicated across terminals)";
const S3: &str = "step 3 (issue 15 path 3: card-paid bill refunded into the prepaid account)";
const S4: &str = "step 4 (lost and replaced cards refused everywhere)";
const S5: &str = "step 5 (issue 15 path 6: acting for another terminal)";
const S6: &str = "step 6 (issue 15 path 6: role table and ledger disagree)";
const FINAL: &str = "final check (audit, conservation, bank)";

fn money(text: &str) -> Money {
    Money::parse(text).unwrap_or_else(|e| panic!("{text:?} is not an amount: {e}"))
}

fn plus(a: Money, b: Money) -> Money {
    a.checked_add(b).expect("test amounts are small")
}

fn minus(a: Money, b: Money) -> Money {
    a.checked_sub(b).expect("test amounts are small")
}

fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "DECLINED" | "REVERSED")
}

fn show<R: Debug>(result: &Result<R, ApiError>) -> String {
    match result {
        Ok(reply) => format!("OK {reply:?}"),
        Err(e) => e.to_string(),
    }
}

/// The reason of a refusal, "" for any other answer.
fn reason_of<R>(result: &Result<R, ApiError>) -> &str {
    match result {
        Err(ApiError::Refused { reason, .. }) => reason,
        _ => "",
    }
}

type Call<'a> = Pin<Box<dyn Future<Output = Result<String, ApiError>> + 'a>>;

/// A call whose answer is only looked at as refused or not.
fn call<'a, R: Debug>(f: impl Future<Output = Result<R, ApiError>> + 'a) -> Call<'a> {
    Box::pin(async move { f.await.map(|reply| format!("{reply:?}")) })
}

/// What a bank-backed reply says about its operation: reference and state.
trait BankAnswer {
    fn bank(&self) -> (&str, &str);
}

impl BankAnswer for Receipt {
    fn bank(&self) -> (&str, &str) {
        (&self.bank_ref, &self.bank_state)
    }
}

impl BankAnswer for BankOpReply {
    fn bank(&self) -> (&str, &str) {
        (&self.bank_ref, &self.state)
    }
}

/// Asks again (the same request, so the same request id) until the bank operation is final or
/// `within` has passed; returns the last answer.
async fn settle<R, F, Fut>(within: Duration, mut ask: F) -> Result<R, ApiError>
where
    R: BankAnswer,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    let deadline = Instant::now() + within;
    loop {
        let reply = ask().await?;
        let (bank_ref, state) = reply.bank();
        if bank_ref.is_empty() || is_final(state) || Instant::now() >= deadline {
            return Ok(reply);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What clients were told, honest or not: the balances and flows it implies.
#[derive(Clone)]
struct Book {
    balances: BTreeMap<String, Money>,
    cash_in: Money,
    cash_out: Money,
    top_ups: Money,
    account_payments: Money,
    account_refunds: Money,
    card_withdrawals: Money,
    /// The net change each bank card should show at the bank, by token.
    tokens: BTreeMap<String, Money>,
    /// Every bank reference a client was given: the token and the last state it was told.
    bank_refs: BTreeMap<String, (String, String)>,
    /// Bills paid by bank card: the token that paid.
    paid_by_card: BTreeMap<String, String>,
    /// Cash the honest terminals took in less what they paid out (their cash box or shift).
    honest_cash: BTreeMap<String, Money>,
}

impl Book {
    fn new() -> Book {
        Book {
            balances: BTreeMap::new(),
            cash_in: Money::ZERO,
            cash_out: Money::ZERO,
            top_ups: Money::ZERO,
            account_payments: Money::ZERO,
            account_refunds: Money::ZERO,
            card_withdrawals: Money::ZERO,
            tokens: BTreeMap::new(),
            bank_refs: BTreeMap::new(),
            paid_by_card: BTreeMap::new(),
            honest_cash: BTreeMap::new(),
        }
    }

    fn account(&mut self, account: &str, delta: Money) {
        let balance = self
            .balances
            .entry(account.to_string())
            .or_insert(Money::ZERO);
        *balance = plus(*balance, delta);
    }

    fn token(&mut self, token: &str, delta: Money) {
        let net = self.tokens.entry(token.to_string()).or_insert(Money::ZERO);
        *net = plus(*net, delta);
    }

    /// Cash taken at `terminal`; counted in its box only when an honest terminal took it.
    fn cash_deposit(&mut self, account: &str, amount: Money, terminal: &str, honest: bool) {
        self.account(account, amount);
        self.cash_in = plus(self.cash_in, amount);
        if honest {
            let cash = self
                .honest_cash
                .entry(terminal.to_string())
                .or_insert(Money::ZERO);
            *cash = plus(*cash, amount);
        }
    }

    fn cash_withdrawal(&mut self, account: &str, amount: Money, terminal: &str) {
        self.account(account, amount.negated());
        self.cash_out = plus(self.cash_out, amount);
        let cash = self
            .honest_cash
            .entry(terminal.to_string())
            .or_insert(Money::ZERO);
        *cash = minus(*cash, amount);
    }

    fn account_payment(&mut self, account: &str, amount: Money) {
        self.account(account, amount.negated());
        self.account_payments = plus(self.account_payments, amount);
    }

    fn account_refund(&mut self, account: &str, amount: Money) {
        self.account(account, amount);
        self.account_refunds = plus(self.account_refunds, amount);
    }

    fn bank_ref(&mut self, bank_ref: &str, token: &str, state: &str) {
        self.bank_refs
            .insert(bank_ref.to_string(), (token.to_string(), state.to_string()));
    }

    fn top_up(&mut self, account: &str, token: &str, reply: &BankOpReply, amount: Money) {
        self.bank_ref(&reply.bank_ref, token, &reply.state);
        if reply.state == "COMPLETED" {
            self.account(account, amount);
            self.top_ups = plus(self.top_ups, amount);
            self.token(token, amount.negated());
        }
    }

    fn card_payment(&mut self, bill: &str, token: &str, receipt: &Receipt) {
        self.bank_ref(&receipt.bank_ref, token, &receipt.bank_state);
        if receipt.bank_state == "COMPLETED" {
            self.token(token, money(&receipt.amount).negated());
            self.paid_by_card
                .insert(bill.to_string(), token.to_string());
        }
    }

    fn card_withdrawal(&mut self, account: &str, token: &str, receipt: &Receipt) {
        self.bank_ref(&receipt.bank_ref, token, &receipt.bank_state);
        if receipt.bank_state == "COMPLETED" {
            let amount = money(&receipt.amount);
            self.account(account, amount.negated());
            self.card_withdrawals = plus(self.card_withdrawals, amount);
            self.token(token, amount);
        }
    }

    /// A refund's settled receipt: to the account, or online to the card that paid.
    fn refund(&mut self, bill: &str, receipt: &Receipt) {
        let amount = money(&receipt.amount);
        if receipt.bank_ref.is_empty() {
            self.account_refund(&receipt.account_id, amount);
            return;
        }
        let token = self.paid_by_card.get(bill).cloned().unwrap_or_default();
        self.bank_ref(&receipt.bank_ref, &token, &receipt.bank_state);
        if receipt.bank_state == "COMPLETED" {
            self.token(&token, amount);
        }
    }

    fn total(&self) -> Money {
        self.balances.values().fold(Money::ZERO, |a, b| plus(a, *b))
    }

    /// The conservation law's right-hand side, from the flows clients were told of.
    fn flows(&self) -> Money {
        let mut total = self.cash_in;
        total = minus(total, self.cash_out);
        total = plus(total, self.top_ups);
        total = minus(total, self.account_payments);
        total = plus(total, self.account_refunds);
        minus(total, self.card_withdrawals)
    }
}

struct Shared {
    book: Mutex<Book>,
    findings: Mutex<Vec<String>>,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finding(&self, step: &str, message: String) {
        eprintln!("FINDING {step}: {message}");
        self.findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{step}: {message}"));
    }

    fn findings(&self) -> Vec<String> {
        self.findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// An honest call must succeed; a refusal is a finding.
    fn honest<R: Debug>(&self, step: &str, what: &str, result: Result<R, ApiError>) -> Option<R> {
        match result {
            Ok(reply) => Some(reply),
            Err(e) => {
                self.finding(step, format!("honest {what} was refused: {e}"));
                None
            }
        }
    }

    /// An attack must be refused with one of `codes`, and, when it has a reason, one of
    /// `reasons` (empty: any reason).
    fn refused(
        &self,
        step: &str,
        what: &str,
        result: &Result<String, ApiError>,
        codes: &[Code],
        reasons: &[&str],
    ) -> bool {
        let as_expected = match result {
            Err(ApiError::Refused { code, reason, .. }) => {
                codes.contains(code)
                    && (reasons.is_empty()
                        || reason.is_empty()
                        || reasons.contains(&reason.as_str()))
            }
            _ => false,
        };
        if !as_expected {
            self.finding(
                step,
                format!(
                    "{what}: expected a refusal {codes:?} {reasons:?}, got {}",
                    show(result)
                ),
            );
        }
        as_expected
    }
}

struct Patient {
    card: String,
    person: String,
    token: String,
    account: String,
}

/// The attacker's credentials: one of every role.
struct Evil {
    /// Bound to K-0666.
    kiosk: Client,
    /// A kiosk credential bound to no terminal.
    kiosk_free: Client,
    /// Bound to W-66.
    window: Client,
    /// Bound to M-66.
    mobile: Client,
    /// Bound to H-666.
    his: Client,
    admin: Client,
    auditor: Client,
    bank: Client,
}

struct World {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    sim: Arc<BankSim>,
    /// The cluster's every-role credential: setup and the final checks.
    root: Client,
    kiosk: Client,
    /// The kiosk of the background workload.
    kiosk_bg: Client,
    window: Client,
    his: Client,
    evil: Evil,
    shared: Arc<Shared>,
    serials: BTreeMap<String, u64>,
    patients: Vec<Patient>,
    evil_account: String,
    /// The honest kiosk's first deposit, replayed word for word in step 2.
    first_deposit: Option<(DepositCashRequest, Receipt)>,
}

/// Creates a credential through the API and returns `ID:SECRET`.
async fn credential(root: &Client, id: &str, role: &str, terminal: &str) -> String {
    let secret = yinyi_api::credential::new_secret();
    root.put_credential(PutCredentialRequest {
        request_id: format!("cred-{id}"),
        terminal_id: ADMIN_TERMINAL.into(),
        operator_id: "SEC".into(),
        credential_id: id.into(),
        roles: vec![role.to_string()],
        bound_terminal_id: terminal.into(),
        secret_sha256: yinyi_api::credential::secret_sha256(&secret),
    })
    .await
    .unwrap_or_else(|e| panic!("credential {id}: {e}"));
    format!("{id}:{secret}")
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let sim = Arc::new(
            BankSim::open(
                &dir.path().join("bank.journal"),
                Money::from_yuan(CARD_START_YUAN),
                Faults::default(),
            )
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bank_addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(sim.clone().serve(listener));
        // A bank call may take up to 6 s, so a slow bank (step 1) is slow, not in doubt.
        let cluster = LocalCluster::start(
            &yinyi_exe().unwrap(),
            dir.path(),
            3,
            vec![
                "--bank-addr".into(),
                bank_addr,
                "--bank-timeout-ms".into(),
                "6000".into(),
            ],
        )
        .unwrap();
        cluster.wait_for_leader(T).await.unwrap();
        let mut config = cluster.api_config();
        config.deadline = T;
        let root = Client::new(config).unwrap();
        for terminal in [
            KIOSK,
            KIOSK_BG,
            WINDOW,
            HIS,
            EVIL_KIOSK,
            EVIL_WINDOW,
            EVIL_MOBILE,
            EVIL_HIS,
        ] {
            root.register_terminal(RegisterTerminalRequest {
                request_id: format!("reg-{terminal}"),
                terminal_id: ADMIN_TERMINAL.into(),
                operator_id: "SEC".into(),
                new_terminal_id: terminal.into(),
            })
            .await
            .unwrap();
        }
        let as_cred = |cred: String| root.with_credential(&cred).unwrap();
        let kiosk = as_cred(credential(&root, "honest-kiosk", "kiosk", KIOSK).await);
        let window = as_cred(credential(&root, "honest-window", "window", WINDOW).await);
        let his = as_cred(credential(&root, "honest-his", "his", HIS).await);
        let kiosk_bg = as_cred(credential(&root, "honest-kiosk-bg", "kiosk", KIOSK_BG).await);
        let evil = Evil {
            kiosk: as_cred(credential(&root, "evil-kiosk", "kiosk", EVIL_KIOSK).await),
            kiosk_free: as_cred(credential(&root, "evil-kiosk-free", "kiosk", "").await),
            window: as_cred(credential(&root, "evil-window", "window", EVIL_WINDOW).await),
            mobile: as_cred(credential(&root, "evil-mobile", "mobile", EVIL_MOBILE).await),
            his: as_cred(credential(&root, "evil-his", "his", EVIL_HIS).await),
            admin: as_cred(credential(&root, "evil-admin", "admin", "").await),
            auditor: as_cred(credential(&root, "evil-auditor", "auditor", "").await),
            bank: as_cred(credential(&root, "evil-bank", "bank", "").await),
        };
        // Every node knows the credentials before they are used (a follower that has not
        // applied one yet refuses it as unknown).
        cluster
            .wait_applied_everywhere(Duration::from_secs(30))
            .await
            .unwrap();
        World {
            _dir: dir,
            cluster,
            sim,
            root,
            kiosk,
            kiosk_bg,
            window,
            his,
            evil,
            shared: Arc::new(Shared {
                book: Mutex::new(Book::new()),
                findings: Mutex::new(Vec::new()),
            }),
            serials: BTreeMap::new(),
            patients: Vec::new(),
            evil_account: String::new(),
            first_deposit: None,
        }
    }

    /// The next request id of `terminal`: its id and its own serial (流水号).
    fn next(&mut self, terminal: &str) -> String {
        let serial = self.serials.entry(terminal.to_string()).or_insert(0);
        *serial += 1;
        format!("{terminal}:{serial:06}")
    }

    fn finding(&self, step: &str, message: String) {
        self.shared.finding(step, message);
    }

    async fn balance(&self, account: &str) -> Money {
        let reply = self
            .root
            .query_balance(QueryBalanceRequest {
                card_no: String::new(),
                account_id: account.into(),
            })
            .await
            .unwrap();
        money(&reply.balance)
    }

    async fn bill_status(&self, bill: &str) -> BillStatus {
        self.root
            .get_bill(GetBillRequest {
                bill_id: bill.into(),
            })
            .await
            .unwrap()
            .status()
    }

    /// HIS posts a bill on `card`.
    async fn post_bill(&mut self, step: &str, bill: &str, card: &str, amount: &str) {
        let request_id = self.next(HIS);
        let result = self
            .his
            .post_bill(PostBillRequest {
                request_id,
                terminal_id: HIS.into(),
                bill_id: bill.into(),
                card_no: card.into(),
                kind: BillKind::Outpatient as i32,
                amount: amount.into(),
                insurance: None,
            })
            .await;
        self.shared
            .honest(step, &format!("PostBill {bill}"), result);
    }

    async fn cancel_bill(&mut self, step: &str, bill: &str) {
        let request_id = self.next(HIS);
        let result = self
            .his
            .cancel_bill(CancelBillRequest {
                request_id,
                terminal_id: HIS.into(),
                bill_id: bill.into(),
                ..Default::default()
            })
            .await;
        self.shared
            .honest(step, &format!("CancelBill {bill}"), result);
    }

    /// The honest kiosk takes cash for `patient`.
    async fn deposit(&mut self, step: &str, patient: usize, amount: &str) -> Option<Receipt> {
        let request = DepositCashRequest {
            request_id: self.next(KIOSK),
            terminal_id: KIOSK.into(),
            operator_id: String::new(),
            card_no: self.patients[patient].card.clone(),
            amount: amount.into(),
        };
        let result = self.kiosk.deposit_cash(request.clone()).await;
        let what = format!("DepositCash {} ({})", request.request_id, request.card_no);
        let receipt = self.shared.honest(step, &what, result)?;
        self.shared
            .book()
            .cash_deposit(&receipt.account_id, money(amount), KIOSK, true);
        if self.first_deposit.is_none() {
            self.first_deposit = Some((request, receipt.clone()));
        }
        Some(receipt)
    }

    /// The honest kiosk pays `bill` from the patient's account.
    async fn pay_from_account(&mut self, step: &str, patient: usize, bill: &str) {
        let request = PayBillRequest {
            request_id: self.next(KIOSK),
            terminal_id: KIOSK.into(),
            bill_id: bill.into(),
            card_no: self.patients[patient].card.clone(),
            ..Default::default()
        };
        let what = format!("PayBill {} ({bill} from the account)", request.request_id);
        let result = self.kiosk.pay_bill(request).await;
        if let Some(receipt) = self.shared.honest(step, &what, result) {
            self.shared
                .book()
                .account_payment(&receipt.account_id, money(&receipt.amount));
        }
    }

    /// The honest kiosk pays `bill` with the patient's bank card.
    async fn pay_by_card(&mut self, step: &str, patient: usize, bill: &str) -> Option<Receipt> {
        let p = &self.patients[patient];
        let token = p.token.clone();
        let request = PayBillRequest {
            request_id: self.next(KIOSK),
            terminal_id: KIOSK.into(),
            bill_id: bill.into(),
            card_no: self.patients[patient].card.clone(),
            bank_card_token: token.clone(),
            bank_card_masked: "6222****0001".into(),
            ..Default::default()
        };
        let what = format!("PayBill {} ({bill} by bank card)", request.request_id);
        let kiosk = self.kiosk.clone();
        let result = settle(SETTLE, || kiosk.pay_bill(request.clone())).await;
        let receipt = self.shared.honest(step, &what, result)?;
        if receipt.bank_state != "COMPLETED" {
            self.finding(step, format!("honest {what} ended {}", receipt.bank_state));
        }
        self.shared.book().card_payment(bill, &token, &receipt);
        Some(receipt)
    }

    /// A top-up at the honest kiosk from the patient's own bank card.
    fn top_up_request(&mut self, patient: usize, amount: &str) -> TopUpBankCardRequest {
        TopUpBankCardRequest {
            request_id: self.next(KIOSK),
            terminal_id: KIOSK.into(),
            operator_id: String::new(),
            card_no: self.patients[patient].card.clone(),
            bank_card_token: self.patients[patient].token.clone(),
            bank_card_masked: "6222****0001".into(),
            amount: amount.into(),
        }
    }

    /// Asks again until the top-up ends, and books what the patient was told.
    async fn settle_top_up(&self, step: &str, patient: usize, request: TopUpBankCardRequest) {
        let kiosk = self.kiosk.with_deadline(Duration::from_secs(4));
        let result = settle(SETTLE, || kiosk.top_up_bank_card(request.clone())).await;
        let what = format!("TopUpBankCard {}", request.request_id);
        let Some(reply) = self.shared.honest(step, &what, result) else {
            return;
        };
        if !is_final(&reply.state) {
            self.finding(
                step,
                format!(
                    "honest {what} ({}) is still {} after {SETTLE:?}: its saga is stuck (the bank says {:?})",
                    reply.bank_ref,
                    reply.state,
                    BankRef::parse(&reply.bank_ref)
                        .map(|r| self.sim.state_of(&r))
                        .ok()
                ),
            );
        }
        let p = &self.patients[patient];
        self.shared
            .book()
            .top_up(&p.account, &p.token, &reply, money(&request.amount));
    }

    /// The honest window refunds `bill`; answers settled and booked.
    async fn window_refund(&mut self, patient: usize, bill: &str) -> Result<Receipt, ApiError> {
        let request = RefundRequest {
            request_id: self.next(WINDOW),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
            bill_id: bill.into(),
            card_no: self.patients[patient].card.clone(),
            after_declined_bank_ref: String::new(),
            ..Default::default()
        };
        let window = self.window.clone();
        let result = settle(SETTLE, || window.refund(request.clone())).await;
        if let Ok(receipt) = &result {
            self.shared.book().refund(bill, receipt);
        }
        result
    }

    // ---- setup and the honest background workload ----

    async fn setup(&mut self) {
        let step = "setup";
        for (n, first) in [
            (1, "200"),
            (2, "300"),
            (3, "300"),
            (4, "200"),
            (5, "500"),
            (6, "100"),
        ] {
            let card = format!("HC0000100{n}");
            let person = format!("{:064x}", 1000 + n);
            let request_id = self.next(KIOSK);
            let reply = self
                .kiosk
                .issue_card(IssueCardRequest {
                    request_id,
                    terminal_id: KIOSK.into(),
                    operator_id: String::new(),
                    card_no: card.clone(),
                    card_kind: CardKind::Hospital as i32,
                    holder_name: format!("patient {n}"),
                    person_key: person.clone(),
                    id_masked: "110***********0001".into(),
                    phone: String::new(),
                    first_deposit: first.into(),
                })
                .await
                .unwrap();
            self.shared
                .book()
                .cash_deposit(&reply.account_id, money(first), KIOSK, true);
            self.patients.push(Patient {
                card,
                person,
                token: format!("tok_patient_{n:04}"),
                account: reply.account_id,
            });
        }
        // The attacker is a patient too, with a little cash on a card of its own.
        let request_id = self.next(EVIL_KIOSK);
        let reply = self
            .evil
            .kiosk
            .issue_card(IssueCardRequest {
                request_id,
                terminal_id: EVIL_KIOSK.into(),
                operator_id: String::new(),
                card_no: EVIL_CARD.into(),
                card_kind: CardKind::Hospital as i32,
                holder_name: "mallory".into(),
                person_key: format!("{:064x}", 0x666),
                id_masked: "110***********0666".into(),
                phone: String::new(),
                first_deposit: "10".into(),
            })
            .await
            .unwrap();
        self.shared
            .book()
            .cash_deposit(&reply.account_id, money("10"), EVIL_KIOSK, false);
        self.evil_account = reply.account_id;

        for (client, terminal, operator) in [
            (self.window.clone(), WINDOW, CASHIER),
            (self.evil.window.clone(), EVIL_WINDOW, EVIL_OPERATOR),
        ] {
            let request_id = self.next(terminal);
            client
                .open_shift(ShiftRequest {
                    request_id,
                    terminal_id: terminal.into(),
                    operator_id: operator.into(),
                })
                .await
                .unwrap();
        }

        // A normal morning: cash at the kiosk and the window, a top-up, a bill, withdrawals.
        self.deposit(step, 0, "100").await;
        let request = self.top_up_request(0, "150");
        self.settle_top_up(step, 0, request).await;
        self.post_bill(step, "B-0", &self.patients[1].card.clone(), "35.50")
            .await;
        self.pay_from_account(step, 1, "B-0").await;
        let window = self.window.clone();
        let request_id = self.next(WINDOW);
        let result = window
            .deposit_cash(DepositCashRequest {
                request_id,
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
                card_no: self.patients[1].card.clone(),
                amount: "50".into(),
            })
            .await;
        if let Some(r) = self.shared.honest(step, "window DepositCash", result) {
            self.shared
                .book()
                .cash_deposit(&r.account_id, money("50"), WINDOW, true);
        }
        let request_id = self.next(WINDOW);
        let result = window
            .withdraw(WithdrawRequest {
                request_id,
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
                card_no: self.patients[1].card.clone(),
                amount: "30".into(),
                ..Default::default()
            })
            .await;
        if let Some(r) = self.shared.honest(step, "window cash Withdraw", result) {
            self.shared
                .book()
                .cash_withdrawal(&r.account_id, money("30"), WINDOW);
        }
        let request = WithdrawRequest {
            request_id: self.next(WINDOW),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
            card_no: self.patients[0].card.clone(),
            amount: "20".into(),
            bank_card_token: self.patients[0].token.clone(),
            bank_card_masked: "6222****0001".into(),
        };
        let result = settle(SETTLE, || window.withdraw(request.clone())).await;
        if let Some(r) = self.shared.honest(step, "window Withdraw to card", result) {
            let token = self.patients[0].token.clone();
            self.shared
                .book()
                .card_withdrawal(&r.account_id, &token, &r);
        }
    }

    /// An honest kiosk and HIS keep working on patient 5 until `stop`.
    fn background(&self, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        let his = self.his.clone();
        let kiosk = self.kiosk_bg.clone();
        let card = self.patients[4].card.clone();
        tokio::spawn(async move {
            let step = "background workload (honest kiosk K-0102)";
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let result = kiosk
                    .deposit_cash(DepositCashRequest {
                        request_id: format!("{KIOSK_BG}:{n:06}"),
                        terminal_id: KIOSK_BG.into(),
                        operator_id: String::new(),
                        card_no: card.clone(),
                        amount: "10".into(),
                    })
                    .await;
                if let Some(r) = shared.honest(step, "DepositCash", result) {
                    shared
                        .book()
                        .cash_deposit(&r.account_id, money("10"), KIOSK_BG, true);
                }
                if n.is_multiple_of(3) {
                    let bill = format!("BG-{n}");
                    let posted = his
                        .post_bill(PostBillRequest {
                            request_id: format!("{HIS}:bg{n:06}"),
                            terminal_id: HIS.into(),
                            bill_id: bill.clone(),
                            card_no: card.clone(),
                            kind: BillKind::Registration as i32,
                            amount: "7.50".into(),
                            insurance: None,
                        })
                        .await;
                    if shared.honest(step, "PostBill", posted).is_some() {
                        let paid = kiosk
                            .pay_bill(PayBillRequest {
                                request_id: format!("{KIOSK_BG}:{n:06}b"),
                                terminal_id: KIOSK_BG.into(),
                                bill_id: bill,
                                card_no: card.clone(),
                                ..Default::default()
                            })
                            .await;
                        if let Some(r) = shared.honest(step, "PayBill", paid) {
                            shared
                                .book()
                                .account_payment(&r.account_id, money(&r.amount));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    }

    // ---- the attacks ----

    /// Issue 15 path 1 (and "decide whether dedup should be per terminal"): the attacker kiosk
    /// K-0666 sends the honest kiosk K-0101's request ids, those already used and those it will
    /// use next, with other payloads (cash on the attacker's own card). Another terminal's id
    /// must never collide: the honest kiosk's next requests are applied as it meant them.
    async fn step2_replayed_request_ids(&mut self) {
        let used = self.serials[KIOSK];
        let planned = 6;
        for n in 1..=used + planned {
            let result = self
                .evil
                .kiosk
                .deposit_cash(DepositCashRequest {
                    request_id: format!("{KIOSK}:{n:06}"),
                    terminal_id: EVIL_KIOSK.into(),
                    operator_id: String::new(),
                    card_no: EVIL_CARD.into(),
                    amount: "1".into(),
                })
                .await;
            // Cash the attacker really put in its own kiosk: fine, and booked.
            if let Ok(r) = result {
                self.shared
                    .book()
                    .cash_deposit(&r.account_id, money("1"), EVIL_KIOSK, false);
            }
        }
        // The honest kiosk's own request sent again word for word (by an unbound kiosk
        // credential): the first answer, nothing applied twice.
        let (request, first) = self.first_deposit.clone().expect("setup deposited");
        let before = self.balance(&first.account_id).await;
        let again = self.evil.kiosk_free.deposit_cash(request.clone()).await;
        match &again {
            Ok(r) if r.txn_id == first.txn_id => {}
            other => self.finding(
                S2,
                format!(
                    "an exact replay of {} must get its first answer {first:?}, got {}",
                    request.request_id,
                    show(other)
                ),
            ),
        }
        if self.balance(&first.account_id).await != before {
            self.finding(
                S2,
                format!("an exact replay of {} moved money", request.request_id),
            );
        }

        // The honest kiosk goes on with exactly the ids the attacker took.
        let (p1, p2) = (
            self.patients[0].account.clone(),
            self.patients[1].account.clone(),
        );
        let (p1_before, p2_before) = (self.balance(&p1).await, self.balance(&p2).await);
        let serial_before = self.serials[KIOSK];
        self.post_bill(S2, "B-2", &self.patients[1].card.clone(), "25")
            .await;
        let d1 = self.deposit(S2, 0, "50").await.is_some();
        let d2 = self.deposit(S2, 1, "20").await.is_some();
        self.pay_from_account(S2, 1, "B-2").await;
        let paid = self.bill_status("B-2").await == BillStatus::Paid;
        let request = self.top_up_request(0, "100");
        let kiosk = self.kiosk.clone();
        let result = settle(SETTLE, || kiosk.top_up_bank_card(request.clone())).await;
        let topped =
            match self
                .shared
                .honest(S2, &format!("TopUpBankCard {}", request.request_id), result)
            {
                Some(reply) => {
                    let p = &self.patients[0];
                    self.shared
                        .book()
                        .top_up(&p.account, &p.token, &reply, money("100"));
                    reply.state == "COMPLETED"
                }
                None => false,
            };
        let d3 = self.deposit(S2, 0, "10").await.is_some();
        let d4 = self.deposit(S2, 1, "30").await.is_some();
        assert_eq!(
            self.serials[KIOSK],
            serial_before + planned,
            "step 2 uses {planned} ids"
        );
        let p1_expected = plus(p1_before, money("160"));
        let p2_expected = plus(p2_before, money("25"));
        let (p1_after, p2_after) = (self.balance(&p1).await, self.balance(&p2).await);
        if !(d1 && d2 && d3 && d4 && paid && topped)
            || p1_after != p1_expected
            || p2_after != p2_expected
        {
            self.finding(
                S2,
                format!(
                    "K-0101's requests {KIOSK}:{:06}..={KIOSK}:{:06} were not applied as meant after K-0666 sent the same ids: \
                     patient 1 {p1_after} (meant {p1_expected}), patient 2 {p2_after} (meant {p2_expected})",
                    serial_before + 1,
                    serial_before + planned
                ),
            );
        }
    }

    /// Paying with a lost card and with a replaced one (DOMAIN: "a Lost card is refused
    /// everywhere"): every role that moves money tries every way; all refused, nothing moves.
    async fn step4_lost_and_replaced_cards(&mut self) {
        let p = 3;
        let (card, person, account) = (
            self.patients[p].card.clone(),
            self.patients[p].person.clone(),
            self.patients[p].account.clone(),
        );
        self.post_bill(S4, "B-4", &card, "30").await;
        let request_id = self.next(WINDOW);
        let lost = self
            .window
            .report_loss(CardRequest {
                request_id,
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
                card_no: card.clone(),
                person_key: person.clone(),
            })
            .await;
        self.shared.honest(S4, "ReportLoss at the window", lost);
        let balance = self.balance(&account).await;
        let evil_bank = self.sim.balance(&CardToken::parse(EVIL_TOKEN).unwrap());

        self.attack_card(&card, "lost", &["CARD_LOST", "IDENTITY_MISMATCH"])
            .await;
        let new_card = "HC00001014";
        let request_id = self.next(WINDOW);
        let replaced = self
            .window
            .replace_card(ReplaceCardRequest {
                request_id,
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
                old_card_no: card.clone(),
                new_card_no: new_card.into(),
                person_key: person,
            })
            .await;
        self.shared
            .honest(S4, "ReplaceCard at the window", replaced);
        self.attack_card(&card, "replaced", &["CARD_REPLACED", "IDENTITY_MISMATCH"])
            .await;

        if self.balance(&account).await != balance {
            self.finding(
                S4,
                format!(
                    "the lost card's account moved: {balance} → {}",
                    self.balance(&account).await
                ),
            );
        }
        if self.bill_status("B-4").await != BillStatus::Unpaid {
            self.finding(S4, "bill B-4 of the lost card was paid".into());
        }
        let evil_now = self.sim.balance(&CardToken::parse(EVIL_TOKEN).unwrap());
        if evil_now != evil_bank {
            self.finding(
                S4,
                format!("the attacker's bank card moved: {evil_bank} → {evil_now}"),
            );
        }
        // The patient's money is on the new card, which works.
        self.patients[p].card = new_card.into();
        if let Some(r) = self.deposit(S4, p, "10").await
            && money(&r.balance) != plus(balance, money("10"))
        {
            self.finding(
                S4,
                format!(
                    "the new card's account holds {}, expected {balance} + 10",
                    r.balance
                ),
            );
        }
    }

    /// Every way the attacker's roles could move money with `card` (lost or replaced).
    async fn attack_card(&self, card: &str, state: &str, reasons: &[&str]) {
        let ev = &self.evil;
        let wrong_person = format!("{:064x}", 0x666);
        let id = |n: &str| format!("EVIL:{state}:{n}");
        let attempts: Vec<(&str, Call)> = vec![
            (
                "kiosk DepositCash",
                call(
                    ev.kiosk
                        .deposit_cash(deposit_request(id("k-dep"), EVIL_KIOSK, card, "50")),
                ),
            ),
            (
                "window DepositCash",
                call(
                    ev.window
                        .deposit_cash(deposit_request(id("w-dep"), EVIL_WINDOW, card, "50")),
                ),
            ),
            (
                "kiosk TopUpBankCard from the attacker's bank card",
                call(
                    ev.kiosk
                        .top_up_bank_card(top_up_request(id("k-top"), EVIL_KIOSK, card)),
                ),
            ),
            (
                "mobile TopUpBankCard from the attacker's bank card",
                call(
                    ev.mobile
                        .top_up_bank_card(top_up_request(id("m-top"), EVIL_MOBILE, card)),
                ),
            ),
            (
                "mobile TopUpThirdParty",
                call(ev.mobile.top_up_third_party(TopUpThirdPartyRequest {
                    request_id: id("m-3p"),
                    terminal_id: EVIL_MOBILE.into(),
                    card_no: card.into(),
                    provider: "WECHAT".into(),
                    payer: EVIL_PAYER.into(),
                    amount: "50".into(),
                })),
            ),
            (
                "kiosk PayBill from the account",
                call(
                    ev.kiosk
                        .pay_bill(pay_request(id("k-pay"), EVIL_KIOSK, card, "B-4", "")),
                ),
            ),
            (
                "kiosk PayBill by the attacker's bank card",
                call(ev.kiosk.pay_bill(pay_request(
                    id("k-pay-card"),
                    EVIL_KIOSK,
                    card,
                    "B-4",
                    EVIL_TOKEN,
                ))),
            ),
            (
                "mobile PayBill from the account",
                call(
                    ev.mobile
                        .pay_bill(pay_request(id("m-pay"), EVIL_MOBILE, card, "B-4", "")),
                ),
            ),
            (
                "window cash Withdraw of the whole balance",
                call(
                    ev.window
                        .withdraw(withdraw_request(id("w-cash"), EVIL_WINDOW, card, "", "")),
                ),
            ),
            (
                "window Withdraw to the attacker's bank card",
                call(ev.window.withdraw(withdraw_request(
                    id("w-card"),
                    EVIL_WINDOW,
                    card,
                    "50",
                    EVIL_TOKEN,
                ))),
            ),
            (
                "kiosk Withdraw to the attacker's bank card",
                call(ev.kiosk.withdraw(withdraw_request(
                    id("k-card"),
                    EVIL_KIOSK,
                    card,
                    "50",
                    EVIL_TOKEN,
                ))),
            ),
            (
                "window CancelLoss without the holder's ID",
                call(ev.window.cancel_loss(CardRequest {
                    request_id: id("w-unlose"),
                    terminal_id: EVIL_WINDOW.into(),
                    operator_id: EVIL_OPERATOR.into(),
                    card_no: card.into(),
                    person_key: wrong_person.clone(),
                })),
            ),
            (
                "window ReplaceCard onto a card of its own without the holder's ID",
                call(ev.window.replace_card(ReplaceCardRequest {
                    request_id: id("w-replace"),
                    terminal_id: EVIL_WINDOW.into(),
                    operator_id: EVIL_OPERATOR.into(),
                    old_card_no: card.into(),
                    new_card_no: format!("EV0{state}"),
                    person_key: wrong_person,
                })),
            ),
        ];
        for (what, attempt) in attempts {
            let result = attempt.await;
            self.shared.refused(
                S4,
                &format!("{what} with the {state} card"),
                &result,
                &[Code::FailedPrecondition, Code::PermissionDenied],
                reasons,
            );
        }
    }

    /// Issue 15 path 6 ("Heartbeat skips the terminal check") and the terminal binding: a
    /// credential bound to K-0666 names K-0101; an unbound kiosk credential names window W-01,
    /// which has an open shift, to take or pay out cash there (a role acts only through
    /// terminals of its kind); a window and HIS name the honest window and HIS.
    async fn step5_acting_for_another_terminal(&mut self) {
        let ev = &self.evil;
        let patient = self.patients[0].card.clone();
        let id = |n: &str| format!("EVIL:s5:{n}");
        let denied = &[Code::PermissionDenied][..];
        let attempts: Vec<(&str, Call)> = vec![
            (
                "K-0666's credential naming K-0101 for DepositCash",
                call(
                    ev.kiosk
                        .deposit_cash(deposit_request(id("k-dep"), KIOSK, EVIL_CARD, "100")),
                ),
            ),
            (
                "K-0666's credential naming K-0101 for TopUpBankCard",
                call(
                    ev.kiosk
                        .top_up_bank_card(top_up_request(id("k-top"), KIOSK, EVIL_CARD)),
                ),
            ),
            (
                "M-66's credential naming K-0101 for TopUpBankCard",
                call(
                    ev.mobile
                        .top_up_bank_card(top_up_request(id("m-top"), KIOSK, EVIL_CARD)),
                ),
            ),
            (
                "an unbound kiosk credential naming W-01 for a cash Withdraw",
                call(ev.kiosk_free.withdraw(withdraw_request(
                    id("kf-cash"),
                    WINDOW,
                    EVIL_CARD,
                    "5",
                    "",
                ))),
            ),
            (
                "an unbound kiosk credential naming H-HIS for DepositCash",
                call(ev.kiosk_free.deposit_cash(deposit_request(
                    id("kf-his"),
                    HIS,
                    EVIL_CARD,
                    "5",
                ))),
            ),
            (
                "W-66's credential naming W-01 to pay out patient 1's cash",
                call(
                    ev.window
                        .withdraw(withdraw_request(id("w-cash"), WINDOW, &patient, "5", "")),
                ),
            ),
            (
                "H-666's credential naming H-HIS to cancel bill B-4",
                call(ev.his.cancel_bill(CancelBillRequest {
                    request_id: id("h-cancel"),
                    terminal_id: HIS.into(),
                    bill_id: "B-4".into(),
                    ..Default::default()
                })),
            ),
            (
                "K-0666's credential asking K-0101's Heartbeat",
                call(ev.kiosk.heartbeat(HeartbeatRequest {
                    terminal_id: KIOSK.into(),
                })),
            ),
            (
                "an unbound kiosk credential asking W-01's Heartbeat",
                call(ev.kiosk_free.heartbeat(HeartbeatRequest {
                    terminal_id: WINDOW.into(),
                })),
            ),
        ];
        for (what, attempt) in attempts {
            let result = attempt.await;
            self.shared.refused(S5, what, &result, denied, &[]);
        }
        // The unbound kiosk credential takes cash at the window: the window's operator never
        // saw it, yet the shift would owe it.
        let result = ev
            .kiosk_free
            .deposit_cash(DepositCashRequest {
                operator_id: CASHIER.into(),
                ..deposit_request(id("kf-dep"), WINDOW, EVIL_CARD, "100")
            })
            .await;
        if let Ok(r) = &result {
            self.shared
                .book()
                .cash_deposit(&r.account_id, money("100"), WINDOW, false);
        }
        self.shared.refused(
            S5,
            "an unbound kiosk credential naming window W-01 for DepositCash",
            &text(&result),
            denied,
            &[],
        );
    }

    /// Issue 15 path 6 ("ReportLoss is allowed to kiosk/mobile roles but apply accepts it only
    /// at windows; an admin Refund can never succeed"): both must be refused at the API, before
    /// anything is proposed, so the ledger's audit trail never sees them.
    async fn step6_role_table_and_ledger(&mut self) {
        let p = 5;
        let (card, person) = (
            self.patients[p].card.clone(),
            self.patients[p].person.clone(),
        );
        let mut never_proposed = Vec::new();
        for (client, terminal, who) in [
            (self.evil.kiosk.clone(), EVIL_KIOSK, "kiosk"),
            (self.evil.mobile.clone(), EVIL_MOBILE, "mobile"),
        ] {
            let request_id = format!("EVIL:s6:loss-{who}");
            let result = client
                .report_loss(CardRequest {
                    request_id: request_id.clone(),
                    terminal_id: terminal.into(),
                    operator_id: String::new(),
                    card_no: card.clone(),
                    person_key: person.clone(),
                })
                .await;
            let what = format!("ReportLoss from a {who} credential");
            self.shared
                .refused(S6, &what, &text(&result), &[Code::PermissionDenied], &[]);
            never_proposed.push((what, request_id));
        }
        self.post_bill(S6, "B-6", &card, "15").await;
        self.pay_from_account(S6, p, "B-6").await;
        self.cancel_bill(S6, "B-6").await;
        let request_id = "EVIL:s6:refund-admin".to_string();
        let result = self
            .evil
            .admin
            .refund(RefundRequest {
                request_id: request_id.clone(),
                terminal_id: ADMIN_TERMINAL.into(),
                operator_id: "SEC".into(),
                bill_id: "B-6".into(),
                card_no: card.clone(),
                after_declined_bank_ref: String::new(),
                ..Default::default()
            })
            .await;
        if let Ok(r) = &result {
            self.shared.book().refund("B-6", r);
        }
        let what = "Refund by an admin credential".to_string();
        self.shared
            .refused(S6, &what, &text(&result), &[Code::PermissionDenied], &[]);
        never_proposed.push((what, request_id));

        let audited = self.audited_request_ids().await;
        for (what, request_id) in never_proposed {
            if audited.contains(&request_id) {
                self.finding(
                    S6,
                    format!(
                        "{what} ({request_id}) passed the role table and was refused only by the ledger (it is in the audit trail); \
                         the API must refuse it with PERMISSION_DENIED before proposing"
                    ),
                );
            }
        }
        // The card still works, and the honest window refunds the bill to the account.
        self.deposit(S6, p, "5").await;
        if let Err(e) = self.window_refund(p, "B-6").await {
            self.finding(
                S6,
                format!("honest Refund of B-6 at the window was refused: {e}"),
            );
        }
    }

    /// Every request id in the audit trail (sensitive operations the ledger decided).
    async fn audited_request_ids(&self) -> BTreeSet<String> {
        const PAGE: u32 = 1000;
        let mut ids = BTreeSet::new();
        let mut since_ms = 0;
        loop {
            let records = self
                .root
                .list_audit(ListAuditRequest {
                    since_ms,
                    limit: PAGE,
                })
                .await
                .unwrap()
                .records;
            let full = records.len() == PAGE as usize;
            let last = records.last().map(|r| r.at_ms);
            ids.extend(records.into_iter().map(|r| r.request_id));
            match last {
                Some(at_ms) if full && at_ms > since_ms => since_ms = at_ms,
                _ => return ids,
            }
        }
    }

    /// The journal entries of `account` about `bill`, by kind.
    async fn entries_for_bill(&self, account: &str, bill: &str) -> BTreeMap<String, usize> {
        let reply = self
            .root
            .list_transactions(ListTransactionsRequest {
                card_no: String::new(),
                account_id: account.into(),
                limit: 1000,
                before_txn_id: String::new(),
            })
            .await
            .unwrap();
        let mut kinds = BTreeMap::new();
        for t in reply.transactions.iter().filter(|t| t.bill_id == bill) {
            *kinds.entry(t.kind.clone()).or_insert(0) += 1;
        }
        kinds
    }

    /// Issue 15 path 3: bills paid by bank card, then cancelled by HIS. (a) The attacker window
    /// races many refunds, with and without the card, against the honest window's refund of a
    /// card-paid and an account-paid bill. (b) It races refunds against the payment itself:
    /// refunds of a bill HIS has not posted yet are read while the bill is unknown and wait
    /// behind a flood of its own requests, so they reach the ledger only after the bill was
    /// paid by card and cancelled. A card-paid bill is never refunded into the prepaid account
    /// (REFUND_CHANNEL_NOT_ALLOWED) and no bill is refunded twice.
    async fn step3_refund_races(&mut self) {
        let p = 2;
        let (card, account) = (
            self.patients[p].card.clone(),
            self.patients[p].account.clone(),
        );
        let token = CardToken::parse(&self.patients[p].token).unwrap();

        // (a) Many refunds at once.
        self.post_bill(S3, "B-3A", &card, "80").await;
        self.post_bill(S3, "B-3B", &card, "40").await;
        self.pay_by_card(S3, p, "B-3A").await;
        self.pay_from_account(S3, p, "B-3B").await;
        self.cancel_bill(S3, "B-3A").await;
        self.cancel_bill(S3, "B-3B").await;
        let card_before = self.sim.balance(&token);
        let mut race = JoinSet::new();
        for bill in ["B-3A", "B-3B"] {
            let honest = RefundRequest {
                request_id: self.next(WINDOW),
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
                bill_id: bill.into(),
                card_no: card.clone(),
                after_declined_bank_ref: String::new(),
                ..Default::default()
            };
            race.spawn(refund_task(self.window.clone(), true, honest));
            for i in 0..12 {
                let attack = RefundRequest {
                    request_id: format!("EVIL:s3:{bill}:{i}"),
                    terminal_id: EVIL_WINDOW.into(),
                    operator_id: EVIL_OPERATOR.into(),
                    bill_id: bill.into(),
                    card_no: if i % 2 == 0 {
                        card.clone()
                    } else {
                        String::new()
                    },
                    after_declined_bank_ref: String::new(),
                    ..Default::default()
                };
                race.spawn(refund_task(self.evil.window.clone(), false, attack));
            }
        }
        let mut refunded: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while let Some(joined) = race.join_next().await {
            let (honest, request, result) = joined.unwrap();
            let bill = request.bill_id.clone();
            match &result {
                Ok(r) => {
                    self.shared.book().refund(&bill, r);
                    refunded.entry(bill.clone()).or_default().push(format!(
                        "{} ({}{})",
                        request.request_id,
                        if r.bank_ref.is_empty() {
                            "to the account"
                        } else {
                            "online "
                        },
                        r.bank_state
                    ));
                    if bill == "B-3A" && r.bank_ref.is_empty() {
                        self.finding(
                            S3,
                            format!(
                                "card-paid bill B-3A was refunded into the prepaid account by {}",
                                request.request_id
                            ),
                        );
                    }
                }
                Err(e)
                    if honest
                        && !matches!(
                            reason_of(&result),
                            "ALREADY_REFUNDED" | "BILL_OPERATION_IN_PROGRESS"
                        ) =>
                {
                    self.finding(S3, format!("honest Refund of {bill} got {e}"));
                }
                Err(_) => {}
            }
        }
        for bill in ["B-3A", "B-3B"] {
            let times = refunded.get(bill).map_or(0, Vec::len);
            if times != 1 {
                self.finding(
                    S3,
                    format!(
                        "bill {bill} was refunded {times} times: {:?}",
                        refunded.get(bill)
                    ),
                );
            }
            // An online refund still running when its racers stopped ends on its own.
            let deadline = Instant::now() + SETTLE;
            while self.bill_status(bill).await != BillStatus::Refunded && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let status = self.bill_status(bill).await;
            if status != BillStatus::Refunded {
                self.finding(S3, format!("bill {bill} ended {status:?}, not refunded"));
            }
        }
        let a = self.entries_for_bill(&account, "B-3A").await;
        let b = self.entries_for_bill(&account, "B-3B").await;
        if a.contains_key("REFUND") || a.get("EXTERNAL_REFUND") != Some(&1) {
            self.finding(S3, format!("card-paid B-3A's journal entries: {a:?}; expected one EXTERNAL_REFUND and no REFUND"));
        }
        if b.get("REFUND") != Some(&1) {
            self.finding(
                S3,
                format!("account-paid B-3B's journal entries: {b:?}; expected one REFUND"),
            );
        }
        let card_after = self.sim.balance(&token);
        if card_after != plus(card_before, money("80")) {
            self.finding(
                S3,
                format!(
                    "the card that paid B-3A holds {card_after}, expected {card_before} + 80.00"
                ),
            );
        }

        // (b) Refunds read before the bill exists, applied after it was paid by card and
        // cancelled. Up to three waves, until one reaches the ledger after the cancellation.
        let leader = self.cluster.wait_for_leader(T).await.unwrap();
        let mut direct = self.evil.window.config().clone();
        direct.nodes = vec![self.cluster.addr(leader)];
        direct.attempt_timeout = Duration::from_secs(20);
        direct.deadline = T;
        let mut exercised = false;
        for wave in 0..3 {
            let bill = format!("B-3C{wave}");
            let mut flood = JoinSet::new();
            for f in 0..3 {
                // Own connections: the refunds below must not wait behind these streams.
                let client = Client::new(direct.clone()).unwrap();
                for i in 0..150 {
                    let request = deposit_request(
                        format!("EVIL:flood:{wave}:{f}:{i}"),
                        EVIL_WINDOW,
                        GHOST_CARD,
                        "1",
                    );
                    let client = client.clone();
                    flood.spawn(async move { client.deposit_cash(request).await });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let refunder = Client::new(direct.clone()).unwrap();
            let mut refunds = JoinSet::new();
            for i in 0..8 {
                let attack = RefundRequest {
                    request_id: format!("EVIL:s3c:{wave}:{i}"),
                    terminal_id: EVIL_WINDOW.into(),
                    operator_id: EVIL_OPERATOR.into(),
                    bill_id: bill.clone(),
                    card_no: card.clone(),
                    after_declined_bank_ref: String::new(),
                    ..Default::default()
                };
                refunds.spawn(refund_task(refunder.clone(), false, attack));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let card_before = self.sim.balance(&token);
            self.post_bill(S3, &bill, &card, "60").await;
            self.pay_by_card(S3, p, &bill).await;
            self.cancel_bill(S3, &bill).await;
            let mut outcomes = Vec::new();
            while let Some(joined) = refunds.join_next().await {
                let (_, request, result) = joined.unwrap();
                let reason = reason_of(&result);
                if matches!(reason, "REFUND_CHANNEL_NOT_ALLOWED" | "ALREADY_REFUNDED") {
                    exercised = true;
                }
                // Refused for what the bill was when the refund reached the ledger, and
                // nothing else (an internal error would hide what happened).
                if result.is_err() && !RACING_REFUND_REASONS.contains(&reason) {
                    self.finding(
                        S3,
                        format!("racing refund {} got {}", request.request_id, show(&result)),
                    );
                }
                if let Ok(r) = &result {
                    exercised = true;
                    self.shared.book().refund(&bill, r);
                    if r.bank_ref.is_empty() {
                        self.finding(
                            S3,
                            format!(
                                "card-paid bill {bill} was refunded into the prepaid account by {} (read before HIS posted it, applied after it was paid by card and cancelled)",
                                request.request_id
                            ),
                        );
                    }
                }
                outcomes.push(format!("{}: {}", request.request_id, show(&result)));
            }
            let mut flooded_ok = 0;
            while let Some(joined) = flood.join_next().await {
                if joined.unwrap().is_ok() {
                    flooded_ok += 1;
                }
            }
            assert_eq!(flooded_ok, 0, "deposits to a card nobody issued succeeded");
            // The honest window refunds it: online, to the card that paid.
            let refund = self.window_refund(p, &bill).await;
            let entries = self.entries_for_bill(&account, &bill).await;
            let online_once =
                entries.get("EXTERNAL_REFUND") == Some(&1) && !entries.contains_key("REFUND");
            match &refund {
                Ok(r) if !r.bank_ref.is_empty() && r.bank_state == "COMPLETED" => {}
                Err(_) if reason_of(&refund) == "ALREADY_REFUNDED" && online_once => {}
                _ => self.finding(
                    S3,
                    format!("honest Refund of card-paid bill {bill} got {}; the attacker's racing refunds got {outcomes:?}", show(&refund)),
                ),
            }
            if entries.contains_key("REFUND") {
                self.finding(
                    S3,
                    format!("card-paid bill {bill} has a REFUND to the account: {entries:?}"),
                );
            }
            let card_after = self.sim.balance(&token);
            if card_after != card_before {
                self.finding(
                    S3,
                    format!("the card that paid {bill} holds {card_after}, {card_before} before it paid: the refund never reached it"),
                );
            }
            eprintln!("step 3 (b) wave {wave}: racing refunds {outcomes:?}");
            if exercised {
                break;
            }
        }
        if !exercised {
            eprintln!(
                "step 3 (b): no racing refund reached the ledger after the cancellation in three waves"
            );
        }
    }

    /// Issue 15 path 1: saga steps propose request id `saga:{bank_ref}:{step}` from terminal
    /// S-SAGA. With the bank slow, so that the honest top-ups' steps are still to come, every
    /// role sends requests with those ids: for a reference it saw on a receipt, for references
    /// predicted from its own receipts (`Y` and 19 digits: the log index × 4096 + the position),
    /// and naming terminal S-SAGA. All refused (INVALID_ARGUMENT for the id, PERMISSION_DENIED
    /// for the role or the system terminal); every honest top-up ends as the bank decided and
    /// the account is credited exactly what the bank took.
    async fn step1_system_request_ids(&mut self) {
        self.sim.set_faults("latency=3s").unwrap();
        let quick = self.kiosk.with_deadline(Duration::from_secs(2));
        let seen_top_up = self.top_up_request(0, "60");
        let first = quick.top_up_bank_card(seen_top_up.clone()).await;
        let seen = match &first {
            Ok(r) if !r.bank_ref.is_empty() && !is_final(&r.state) => r.bank_ref.clone(),
            other => {
                self.finding(S1, format!("the slow top-up's first answer was {}; expected PENDING with its reference", show(other)));
                String::new()
            }
        };
        if !seen.is_empty() {
            let ev = &self.evil;
            let id = |step: &str| format!("saga:{seen}:{step}");
            let invalid = &[Code::InvalidArgument][..];
            let denied = &[Code::PermissionDenied][..];
            let attempts: Vec<(&str, String, Call, &[Code])> = vec![
                (
                    "an unbound kiosk credential naming terminal S-SAGA",
                    id("complete"),
                    call(ev.kiosk_free.deposit_cash(deposit_request(
                        id("complete"),
                        "S-SAGA",
                        GHOST_CARD,
                        "1",
                    ))),
                    &[Code::PermissionDenied, Code::InvalidArgument][..],
                ),
                (
                    "kiosk K-0666 (DepositCash)",
                    id("complete"),
                    call(ev.kiosk.deposit_cash(deposit_request(
                        id("complete"),
                        EVIL_KIOSK,
                        GHOST_CARD,
                        "1",
                    ))),
                    invalid,
                ),
                (
                    "window W-66 (DepositCash)",
                    id("decline"),
                    call(ev.window.deposit_cash(deposit_request(
                        id("decline"),
                        EVIL_WINDOW,
                        GHOST_CARD,
                        "1",
                    ))),
                    invalid,
                ),
                (
                    "mobile M-66 (TopUpThirdParty)",
                    id("in-doubt"),
                    call(ev.mobile.top_up_third_party(TopUpThirdPartyRequest {
                        request_id: id("in-doubt"),
                        terminal_id: EVIL_MOBILE.into(),
                        card_no: GHOST_CARD.into(),
                        provider: "WECHAT".into(),
                        payer: EVIL_PAYER.into(),
                        amount: "1".into(),
                    })),
                    invalid,
                ),
                (
                    "HIS H-666 (PostBill)",
                    id("reverse"),
                    call(ev.his.post_bill(PostBillRequest {
                        request_id: id("reverse"),
                        terminal_id: EVIL_HIS.into(),
                        bill_id: "EVIL-1".into(),
                        card_no: GHOST_CARD.into(),
                        kind: BillKind::Outpatient as i32,
                        amount: "1".into(),
                        insurance: None,
                    })),
                    invalid,
                ),
                (
                    "admin (Freeze)",
                    id("complete"),
                    call(ev.admin.freeze(AccountRequest {
                        request_id: id("complete"),
                        terminal_id: ADMIN_TERMINAL.into(),
                        operator_id: "SEC".into(),
                        account_id: "999999".into(),
                    })),
                    invalid,
                ),
                (
                    "auditor (DepositCash)",
                    id("decline"),
                    call(ev.auditor.deposit_cash(deposit_request(
                        id("decline"),
                        EVIL_KIOSK,
                        GHOST_CARD,
                        "1",
                    ))),
                    denied,
                ),
                (
                    "bank (PostBill)",
                    id("reverse"),
                    call(ev.bank.post_bill(PostBillRequest {
                        request_id: id("reverse"),
                        terminal_id: EVIL_HIS.into(),
                        bill_id: "EVIL-2".into(),
                        card_no: GHOST_CARD.into(),
                        kind: BillKind::Outpatient as i32,
                        amount: "1".into(),
                        insurance: None,
                    })),
                    denied,
                ),
                (
                    "an unbound kiosk credential naming terminal S-SAGA with an ordinary id",
                    "EVIL:s1:system".into(),
                    call(ev.kiosk_free.deposit_cash(deposit_request(
                        "EVIL:s1:system".into(),
                        "S-SAGA",
                        GHOST_CARD,
                        "1",
                    ))),
                    denied,
                ),
            ];
            for (who, request_id, attempt, codes) in attempts {
                let result = attempt.await;
                self.shared.refused(
                    S1,
                    &format!("{who} sending request id {request_id} before the saga's step"),
                    &result,
                    codes,
                    &[],
                );
            }
            // The bank role's notice about the reference is only a hint to look.
            let _ = ev
                .bank
                .third_party_notify(ThirdPartyNotice {
                    bank_ref: seen.clone(),
                    provider: "WECHAT".into(),
                })
                .await;
        }

        // Predicted references: from the attacker's own receipt, the next log indices.
        let request_id = self.next(EVIL_KIOSK);
        let own = self
            .evil
            .kiosk
            .deposit_cash(deposit_request(request_id, EVIL_KIOSK, EVIL_CARD, "1"))
            .await
            .unwrap();
        let evil_account = self.evil_account.clone();
        self.shared
            .book()
            .cash_deposit(&evil_account, money("1"), EVIL_KIOSK, false);
        let log_index: u64 = own
            .txn_id
            .split('.')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("txn id {:?} is LOG.POSITION", own.txn_id));
        let mut predicted = Vec::new();
        for ahead in 1..=300u64 {
            let positions = if ahead <= 150 { 0..4 } else { 0..1 };
            for position in positions {
                predicted.push(BankRef::for_txn(TxnId::new(log_index + ahead, position)));
            }
        }
        let victim = self.patients[0].card.clone();
        let cards: Vec<IssueCardRequest> = predicted
            .iter()
            .map(|bank_ref| IssueCardRequest {
                request_id: format!("saga:{bank_ref}:complete"),
                terminal_id: EVIL_WINDOW.into(),
                operator_id: EVIL_OPERATOR.into(),
                // An existing card: refused by the ledger, yet its request id recorded.
                card_no: victim.clone(),
                card_kind: CardKind::Hospital as i32,
                holder_name: "mallory".into(),
                person_key: format!("{:064x}", 0x666),
                id_masked: "110***********0666".into(),
                phone: String::new(),
                first_deposit: String::new(),
            })
            .collect();
        let burned = self
            .evil
            .window
            .issue_cards(IssueCardsRequest { cards })
            .await
            .map(|reply| {
                let reasons: BTreeSet<String> =
                    reply.results.iter().map(|r| r.reason.clone()).collect();
                format!(
                    "{} ids recorded by the ledger (reasons {reasons:?})",
                    reply.results.len()
                )
            });
        self.shared.refused(
            S1,
            &format!(
                "W-66's IssueCards with {} predicted saga ids",
                predicted.len()
            ),
            &burned,
            &[Code::InvalidArgument],
            &[],
        );
        let predicted_top_up = self.top_up_request(1, "40");
        if let Ok(r) = quick.top_up_bank_card(predicted_top_up.clone()).await
            && let Ok(bank_ref) = BankRef::parse(&r.bank_ref)
        {
            eprintln!(
                "step 1: the second top-up's reference {bank_ref} was {}predicted",
                if predicted.contains(&bank_ref) {
                    ""
                } else {
                    "not "
                }
            );
        }
        tokio::join!(
            self.settle_top_up(S1, 0, seen_top_up),
            self.settle_top_up(S1, 1, predicted_top_up)
        );
        // A slower bank for the rest: sagas a failed run left looping stay slow.
        self.sim.set_faults("clear,latency=1s").unwrap();
    }

    /// Holds the cluster and the bank to the book.
    async fn final_check(&mut self, first_day: &str) {
        let book = self.shared.book().clone();
        assert_eq!(
            book.total(),
            book.flows(),
            "the book's own balances and flows disagree"
        );

        // Each honest terminal's cash is what it took: the kiosks' boxes, the window's shift.
        for kiosk in [KIOSK, KIOSK_BG] {
            let reply = self
                .root
                .heartbeat(HeartbeatRequest {
                    terminal_id: kiosk.into(),
                })
                .await
                .unwrap();
            let expected = book.honest_cash.get(kiosk).copied().unwrap_or(Money::ZERO);
            if money(&reply.cash_box) != expected {
                self.finding(
                    FINAL,
                    format!(
                        "kiosk {kiosk}'s cash box holds {}, its own cash was {expected}",
                        reply.cash_box
                    ),
                );
            }
        }
        let request_id = self.next(WINDOW);
        let report = self
            .window
            .close_shift(ShiftRequest {
                request_id,
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
            })
            .await
            .unwrap();
        let expected = book.honest_cash.get(WINDOW).copied().unwrap_or(Money::ZERO);
        if money(&report.cash_expected) != expected {
            self.finding(
                FINAL,
                format!(
                    "window {WINDOW}'s shift expects {} cash; its operator took {expected}",
                    report.cash_expected
                ),
            );
        }

        if let Err(e) = self.cluster.wait_converged(T).await {
            self.finding(FINAL, format!("the nodes did not converge: {e}"));
        }
        let mut cluster_total = None;
        let mut digests = BTreeSet::new();
        let ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        let mut nodes = Vec::new();
        for id in ids {
            let mut config = self.root.config().clone();
            config.nodes = vec![self.cluster.addr(id)];
            let node = Client::new(config).unwrap();
            let mut total = Money::ZERO;
            for (account, expected) in &book.balances {
                let reply = node
                    .query_balance(QueryBalanceRequest {
                        card_no: String::new(),
                        account_id: account.clone(),
                    })
                    .await
                    .unwrap();
                let balance = money(&reply.balance);
                total = plus(total, balance);
                if balance != *expected {
                    self.finding(FINAL, format!("node {id}: account {account} holds {balance}; its clients were told {expected}"));
                }
            }
            cluster_total.get_or_insert(total);
            nodes.push((id, node));
        }
        // A read by account id is itself recorded in the audit trail (issue 16): the state
        // grows with the reads above, so the digests are compared once every node has applied
        // the same log.
        if let Err(e) = self.cluster.wait_converged(T).await {
            self.finding(
                FINAL,
                format!("the nodes did not converge after the reads: {e}"),
            );
        }
        for (id, node) in nodes {
            let audit = node
                .audit_balances(AuditRequest { with_digest: true })
                .await
                .unwrap();
            digests.insert(audit.digest.clone());
            let problems = !audit.ok
                || audit.problem_count > 0
                || audit.unresolved_bank_ops > 0
                || audit.total_balance != audit.expected_total
                || money(&audit.total_balance) != book.total()
                || audit.accounts != book.balances.len() as u64;
            if problems {
                self.finding(
                    FINAL,
                    format!(
                        "node {id}'s balance audit: ok {}, {} unresolved bank operations, total {} (journal flows say {}, the book {}), {} accounts (the book {}), problems {:?}",
                        audit.ok,
                        audit.unresolved_bank_ops,
                        audit.total_balance,
                        audit.expected_total,
                        book.total(),
                        audit.accounts,
                        book.balances.len(),
                        audit.problems
                    ),
                );
            }
        }
        if digests.len() != 1 {
            self.finding(
                FINAL,
                format!("the nodes' state digests differ: {digests:?}"),
            );
        }
        // Conservation: Σ balances = cash in − cash out + top-ups − payments + refunds −
        // withdrawals to cards, from what clients were told.
        if cluster_total != Some(book.flows()) {
            self.finding(
                FINAL,
                format!(
                    "conservation: Σ balances {cluster_total:?} ≠ cash in {} − cash out {} + top-ups {} − payments {} + refunds {} − card withdrawals {} = {}",
                    book.cash_in,
                    book.cash_out,
                    book.top_ups,
                    book.account_payments,
                    book.account_refunds,
                    book.card_withdrawals,
                    book.flows()
                ),
            );
        }

        // The bank's own record: each card's balance and each operation's state.
        let mut tokens: BTreeSet<String> = self.patients.iter().map(|p| p.token.clone()).collect();
        tokens.extend([EVIL_TOKEN.to_string(), EVIL_PAYER.to_string()]);
        tokens.extend(book.tokens.keys().cloned());
        for token in tokens {
            let expected = plus(
                Money::from_yuan(CARD_START_YUAN),
                book.tokens.get(&token).copied().unwrap_or(Money::ZERO),
            );
            let at_bank = self.sim.balance(&CardToken::parse(&token).unwrap());
            if at_bank != expected {
                self.finding(FINAL, format!("bank card {token} holds {at_bank} at the bank; its clients were told it would hold {expected}"));
            }
        }
        for (bank_ref, (token, told)) in &book.bank_refs {
            let at_bank = self.sim.state_of(&BankRef::parse(bank_ref).unwrap());
            let agrees = match told.as_str() {
                "COMPLETED" => at_bank == OpState::Applied,
                "DECLINED" | "REVERSED" => at_bank != OpState::Applied,
                _ => false,
            };
            if !agrees {
                self.finding(FINAL, format!("bank operation {bank_ref} on {token}: the client was last told {told}, the bank holds {at_bank:?}"));
            }
        }
        let today = business_day();
        if today != first_day {
            eprintln!("the business day changed during the run: no reconciliation of half a run");
            return;
        }
        match self
            .root
            .reconcile(ReconcileRequest {
                date: today.clone(),
            })
            .await
        {
            Ok(report) if report.differences.is_empty() => {}
            Ok(report) => self.finding(
                FINAL,
                format!("reconciliation of {today} found {:?}", report.differences),
            ),
            Err(e) => self.finding(FINAL, format!("reconciliation of {today} failed: {e}")),
        }
    }
}

fn text<R: Debug>(result: &Result<R, ApiError>) -> Result<String, ApiError> {
    result
        .as_ref()
        .map(|reply| format!("{reply:?}"))
        .map_err(Clone::clone)
}

fn business_day() -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    yinyi_ledger::BusinessDay::of_ms(now_ms).to_string()
}

fn deposit_request(
    request_id: String,
    terminal: &str,
    card: &str,
    amount: &str,
) -> DepositCashRequest {
    DepositCashRequest {
        request_id,
        terminal_id: terminal.into(),
        operator_id: if terminal.starts_with("W-") {
            EVIL_OPERATOR.into()
        } else {
            String::new()
        },
        card_no: card.into(),
        amount: amount.into(),
    }
}

fn top_up_request(request_id: String, terminal: &str, card: &str) -> TopUpBankCardRequest {
    TopUpBankCardRequest {
        request_id,
        terminal_id: terminal.into(),
        operator_id: String::new(),
        card_no: card.into(),
        bank_card_token: EVIL_TOKEN.into(),
        bank_card_masked: "6222****0666".into(),
        amount: "50".into(),
    }
}

fn pay_request(
    request_id: String,
    terminal: &str,
    card: &str,
    bill: &str,
    token: &str,
) -> PayBillRequest {
    PayBillRequest {
        request_id,
        terminal_id: terminal.into(),
        bill_id: bill.into(),
        card_no: card.into(),
        bank_card_token: token.into(),
        bank_card_masked: if token.is_empty() {
            String::new()
        } else {
            "6222****0666".into()
        },
        ..Default::default()
    }
}

fn withdraw_request(
    request_id: String,
    terminal: &str,
    card: &str,
    amount: &str,
    token: &str,
) -> WithdrawRequest {
    WithdrawRequest {
        request_id,
        terminal_id: terminal.into(),
        operator_id: EVIL_OPERATOR.into(),
        card_no: card.into(),
        amount: amount.into(),
        bank_card_token: token.into(),
        bank_card_masked: if token.is_empty() {
            String::new()
        } else {
            "6222****0666".into()
        },
    }
}

/// One refund, asked again until its bank operation (if any) ends.
async fn refund_task(
    client: Client,
    honest: bool,
    request: RefundRequest,
) -> (bool, RefundRequest, Result<Receipt, ApiError>) {
    let result = settle(SETTLE, || client.refund(request.clone())).await;
    (honest, request, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_credentials_of_every_role_move_no_money_they_should_not() {
    let started = Instant::now();
    let mut w = World::start().await;
    let day = business_day();
    w.setup().await;
    let stop = Arc::new(AtomicBool::new(false));
    let background = w.background(stop.clone());

    let mut reported = 0;
    let mut report = |w: &World, step: &str| {
        let findings = w.shared.findings().len();
        eprintln!(
            "{step}: {} finding(s) ({:?} in)",
            findings - reported,
            started.elapsed()
        );
        reported = findings;
    };
    report(&w, "setup");
    w.step2_replayed_request_ids().await;
    report(&w, S2);
    w.step4_lost_and_replaced_cards().await;
    report(&w, S4);
    w.step5_acting_for_another_terminal().await;
    report(&w, S5);
    w.step6_role_table_and_ledger().await;
    report(&w, S6);
    w.step3_refund_races().await;
    report(&w, S3);
    w.step1_system_request_ids().await;
    report(&w, S1);

    stop.store(true, Ordering::SeqCst);
    background.await.unwrap();
    w.final_check(&day).await;
    report(&w, FINAL);
    eprintln!("hostile suite: {:?}", started.elapsed());
    let findings = w.shared.findings();
    assert!(
        findings.is_empty(),
        "{} finding(s):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

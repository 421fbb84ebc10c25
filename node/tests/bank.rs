//! Bank-card top-ups through a real 3-node cluster and the bank simulator on real TCP, under
//! each fault: approval, decline, a response lost after the bank applied, a connection dropped
//! before it applied, a timeout, and the bank down. Afterwards the account and the bank agree,
//! and the client got the truth (or a non-final state first, then the truth on asking again).
//! Also the money-safety paths of issue 15 the bank link had: an open breaker taken for a
//! decline, a reply for another amount taken for an approval, a channel order sent again.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use yinyi_api::Client;
use yinyi_api::v1::*;
use yinyi_bank::{BankSim, Faults};
use yinyi_ledger::{CardToken, Money};
use yinyi_node::local::LocalCluster;

const T: Duration = Duration::from_secs(30);
/// A cluster is three processes and a bank on a small machine: one test at a time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const KIOSK: &str = "K-0101";
const TOKEN: &str = "tok_bank_0001";

fn is_final(state: &str) -> bool {
    matches!(state, "COMPLETED" | "DECLINED" | "REVERSED")
}

struct World {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    sim: Arc<BankSim>,
    sim_addr: String,
    client: Client,
    serial: u64,
}

impl World {
    async fn new() -> World {
        World::with(&[]).await
    }

    async fn with(extra: &[&str]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let sim = Arc::new(
            BankSim::open(
                &dir.path().join("bank.journal"),
                Money::from_yuan(10_000),
                Faults::default(),
            )
            .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bank_addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(sim.clone().serve(listener));
        let cluster = LocalCluster::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_yinyi")),
            dir.path(),
            3,
            [
                "--bank-addr".to_string(),
                bank_addr.clone(),
                "--bank-timeout-ms".into(),
                "300".into(),
            ]
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect(),
        )
        .unwrap();
        cluster.wait_for_leader(T).await.unwrap();
        let mut config = cluster.api_config();
        config.deadline = T;
        let client = Client::new(config).unwrap();
        let mut w = World {
            _dir: dir,
            cluster,
            sim,
            sim_addr: bank_addr,
            client,
            serial: 0,
        };
        w.register(KIOSK).await;
        let request_id = w.next();
        w.client
            .issue_card(IssueCardRequest {
                request_id,
                terminal_id: KIOSK.into(),
                operator_id: String::new(),
                card_no: "HC00000001".into(),
                card_kind: CardKind::Hospital as i32,
                holder_name: "patient".into(),
                person_key: format!("{:064x}", 1),
                id_masked: "110****1234".into(),
                phone: String::new(),
                first_deposit: String::new(),
            })
            .await
            .unwrap();
        w
    }

    /// Registers `terminal` from the admin console.
    async fn register(&mut self, terminal: &str) {
        let request_id = self.next();
        self.client
            .register_terminal(RegisterTerminalRequest {
                request_id,
                terminal_id: "A-ADMIN".into(),
                operator_id: "admin".into(),
                new_terminal_id: terminal.into(),
            })
            .await
            .unwrap();
    }

    fn next(&mut self) -> String {
        self.serial += 1;
        format!("bank:{:06}", self.serial)
    }

    fn top_up(&mut self, yuan: i64) -> TopUpBankCardRequest {
        TopUpBankCardRequest {
            request_id: self.next(),
            terminal_id: KIOSK.into(),
            operator_id: String::new(),
            card_no: "HC00000001".into(),
            bank_card_token: TOKEN.into(),
            bank_card_masked: "6222****0001".into(),
            amount: yuan.to_string(),
        }
    }

    /// Asks again with the same request until the operation is final.
    async fn settle(&self, request: &TopUpBankCardRequest) -> BankOpReply {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let reply = self.client.top_up_bank_card(request.clone()).await.unwrap();
            if is_final(&reply.state) {
                return reply;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {} after {T:?}",
                reply.state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn balance(&self) -> Money {
        let reply = self
            .client
            .query_balance(QueryBalanceRequest {
                card_no: "HC00000001".into(),
                account_id: String::new(),
            })
            .await
            .unwrap();
        Money::parse(&reply.balance).unwrap()
    }

    /// Asks the third-party top-up again until it is final.
    async fn settle_order(&self, request: &TopUpThirdPartyRequest) -> BankOpReply {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let reply = self
                .client
                .top_up_third_party(request.clone())
                .await
                .unwrap();
            if is_final(&reply.state) {
                return reply;
            }
            assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The account holds exactly what left the bank card.
    async fn agree(&self) {
        let taken = Money::from_yuan(10_000)
            .checked_sub(self.sim.balance(&CardToken::parse(TOKEN).unwrap()))
            .unwrap();
        assert_eq!(self.balance().await, taken);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_with_the_account_and_the_bank_agreeing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut w = World::new().await;

    // Approved.
    let approved = w.top_up(100);
    let reply = w.client.top_up_bank_card(approved.clone()).await.unwrap();
    assert_eq!(reply.state, "COMPLETED");
    assert_eq!(reply.balance, "100.00");
    w.agree().await;
    // Asked again: the same truth, nothing applied twice.
    assert_eq!(w.settle(&approved).await.state, "COMPLETED");
    w.agree().await;

    // Declined by the bank.
    w.sim.set_faults("decline=1").unwrap();
    let declined = w.top_up(50);
    assert_eq!(w.settle(&declined).await.state, "DECLINED");
    w.sim.set_faults("clear").unwrap();
    w.agree().await;

    // Applied at the bank, response lost: the status query completes it.
    w.sim.set_faults("lost=1").unwrap();
    let lost = w.top_up(30);
    let reply = w.settle(&lost).await;
    assert_eq!(reply.state, "COMPLETED");
    w.sim.set_faults("clear").unwrap();
    assert_eq!(w.balance().await, Money::from_yuan(130));
    w.agree().await;

    // Dropped before the bank applied anything, reversals dropped too: in doubt until the
    // bank takes calls again, then reversed.
    w.sim.set_faults("drop=1").unwrap();
    let dropped = w.top_up(20);
    let first = w.client.top_up_bank_card(dropped.clone()).await.unwrap();
    assert!(!is_final(&first.state), "{first:?}");
    w.sim.set_faults("clear").unwrap();
    assert_eq!(w.settle(&dropped).await.state, "REVERSED");
    w.agree().await;

    // A timeout: the bank answers after the node gave up (and applies late).
    w.sim.set_faults("latency=800ms").unwrap();
    let slow = w.top_up(15);
    let first = w.client.top_up_bank_card(slow.clone()).await.unwrap();
    assert!(!is_final(&first.state), "{first:?}");
    w.sim.set_faults("clear").unwrap();
    let end = w.settle(&slow).await.state;
    assert!(end == "COMPLETED" || end == "REVERSED", "{end}");
    w.agree().await;

    // The bank down for a while: nothing is lost, everything ends.
    w.sim.set_faults("down=2s").unwrap();
    let down = w.top_up(10);
    let end = w.settle(&down).await.state;
    assert!(is_final(&end));
    w.agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_between_the_banks_approval_and_its_record_is_settled_once() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut w = World::new().await;
    // The bank applies each request after 1.5 s: the leader dies while it waits.
    w.sim.set_faults("latency=1500ms").unwrap();
    let seen = w.sim.requests_seen();
    let request = w.top_up(40);
    let client = w.client.clone();
    let call = tokio::spawn({
        let request = request.clone();
        async move { client.top_up_bank_card(request).await }
    });
    let deadline = tokio::time::Instant::now() + T;
    while w.sim.requests_seen() == seen {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bank was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = w.cluster.wait_for_leader(T).await.unwrap();
    w.cluster.kill(leader).unwrap();
    // The first call ends one way or another (its retries reach the new leader).
    let _ = call.await.unwrap();
    w.sim.set_faults("clear").unwrap();
    let end = w.settle(&request).await.state;
    // The bank applied it once (it deduplicates the new leader's repeat): completed, never
    // both completed and reversed, never left open.
    assert!(end == "COMPLETED" || end == "REVERSED", "{end}");
    w.agree().await;
    w.cluster.spawn(leader).unwrap();
    w.cluster.wait_converged(T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bill_paid_by_card_is_refunded_to_it_and_withdrawals_reach_the_card() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut w = World::new().await;
    w.register("H-HIS").await;
    let top_up = w.top_up(200);
    assert_eq!(w.settle(&top_up).await.state, "COMPLETED");

    // Paid by bank card: the account is untouched.
    let request_id = w.next();
    w.client
        .post_bill(PostBillRequest {
            request_id,
            terminal_id: "H-HIS".into(),
            bill_id: "B-1".into(),
            card_no: "HC00000001".into(),
            kind: BillKind::Outpatient as i32,
            amount: "50".into(),
            insurance: None,
        })
        .await
        .unwrap();
    let pay = PayBillRequest {
        request_id: w.next(),
        terminal_id: KIOSK.into(),
        bill_id: "B-1".into(),
        card_no: "HC00000001".into(),
        bank_card_token: TOKEN.into(),
        bank_card_masked: "6222****0001".into(),
        ..Default::default()
    };
    let paid = w.client.pay_bill(pay).await.unwrap();
    assert_eq!(paid.bank_state, "COMPLETED", "{paid:?}");
    assert_eq!(paid.balance, "200.00");
    let card = CardToken::parse(TOKEN).unwrap();
    assert_eq!(w.sim.balance(&card), Money::from_yuan(10_000 - 250));

    // HIS cancels; the refund goes back online to the card that paid.
    let request_id = w.next();
    w.client
        .cancel_bill(CancelBillRequest {
            request_id,
            terminal_id: "H-HIS".into(),
            bill_id: "B-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refund = RefundRequest {
        request_id: w.next(),
        terminal_id: KIOSK.into(),
        bill_id: "B-1".into(),
        card_no: "HC00000001".into(),
        ..Default::default()
    };
    let refunded = w.client.refund(refund).await.unwrap();
    assert_eq!(refunded.bank_state, "COMPLETED", "{refunded:?}");
    assert_eq!(w.sim.balance(&card), Money::from_yuan(10_000 - 200));
    w.agree().await;

    // A withdrawal to the card takes the money first; completed, it stays out.
    let withdraw = |w: &mut World, yuan: i64| WithdrawRequest {
        request_id: w.next(),
        terminal_id: KIOSK.into(),
        card_no: "HC00000001".into(),
        amount: yuan.to_string(),
        bank_card_token: TOKEN.into(),
        bank_card_masked: "6222****0001".into(),
        ..Default::default()
    };
    let out = withdraw(&mut w, 80);
    let done = w.client.withdraw(out).await.unwrap();
    assert_eq!(done.bank_state, "COMPLETED");
    assert_eq!(done.balance, "120.00");
    w.agree().await;

    // Lost on the way (dropped, reversals too): the money comes back once the bank answers.
    w.sim.set_faults("drop=1").unwrap();
    let out = withdraw(&mut w, 20);
    let first = w.client.withdraw(out.clone()).await.unwrap();
    assert!(!is_final(&first.bank_state), "{first:?}");
    w.sim.set_faults("clear").unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let end = loop {
        let reply = w.client.withdraw(out.clone()).await.unwrap();
        if is_final(&reply.bank_state) {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(end.bank_state, "REVERSED");
    assert_eq!(w.balance().await, Money::from_yuan(120));
    w.agree().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_exactly_the_injected_differences() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    use yinyi_bank::{BankClient, BankClientConfig, Message, OpState, Processing};
    use yinyi_ledger::BankRef;

    let mut w = World::new().await;
    let mut refs = Vec::new();
    for yuan in [100, 50, 30] {
        let request = w.top_up(yuan);
        let reply = w.settle(&request).await;
        assert_eq!(reply.state, "COMPLETED");
        refs.push(BankRef::parse(&reply.bank_ref).unwrap());
    }
    w.sim.set_faults("decline=1").unwrap();
    let declined = w.top_up(40);
    let reply = w.settle(&declined).await;
    assert_eq!(reply.state, "DECLINED");
    w.sim.set_faults("clear").unwrap();
    let declined = BankRef::parse(&reply.bank_ref).unwrap();

    // The injected differences.
    let (amount_differs, journal_only, matched) = (&refs[0], &refs[1], &refs[2]);
    assert!(
        w.sim
            .tamper(amount_differs, OpState::Applied, Some(Money::from_yuan(99)))
    );
    assert!(w.sim.tamper(journal_only, OpState::Unknown, None));
    assert!(w.sim.tamper(&declined, OpState::Applied, None));
    // The bank applies a debit nobody here started.
    let stranger = BankRef::parse("Y9999999999999999999").unwrap();
    let bank = BankClient::new(BankClientConfig::new(w.sim_addr.clone()));
    bank.call(&Message::FinancialRequest {
        processing: Processing::Debit,
        bank_ref: stranger.clone(),
        token: CardToken::parse(TOKEN).unwrap(),
        amount: Money::from_yuan(7),
        at_ms: 0,
    })
    .await
    .unwrap();

    let date = yinyi_ledger::BusinessDay::of_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
    .to_string();
    let report = w
        .client
        .reconcile(ReconcileRequest { date: date.clone() })
        .await
        .unwrap();
    assert_eq!(report.matched, 1, "{report:#?}");
    assert_eq!(report.matched_total, "30.00");
    let mut found: Vec<(String, String, bool)> = report
        .differences
        .iter()
        .map(|d| {
            (
                d.bank_ref.clone(),
                d.kind.clone(),
                d.resolution.starts_with("resolved"),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (
            amount_differs.to_string(),
            "AMOUNT_DIFFERS".to_string(),
            false,
        ),
        (journal_only.to_string(), "JOURNAL_ONLY".to_string(), false),
        (declined.to_string(), "BANK_ONLY".to_string(), true),
        (stranger.to_string(), "BANK_ONLY".to_string(), false),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report:#?}");
    // The bank held money for an operation declined here: reconciliation reversed it.
    assert_eq!(w.sim.state_of(&declined), OpState::Reversed);
    assert_eq!(w.sim.state_of(matched), OpState::Applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_top_ups_end_on_the_notification_a_status_query_or_expiry() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut w = World::with(&["--channel-order-expiry-ms", "1500"]).await;
    w.register("M-APP").await;
    // The channel notifies the cluster, unless told to stay silent.
    let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let notices = Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let client = w.client.clone();
        let silent = silent.clone();
        let notices = notices.clone();
        w.sim.on_channel_result(Arc::new(move |bank_ref, _| {
            if silent.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let client = client.clone();
            let notices = notices.clone();
            tokio::spawn(async move {
                let ack = client
                    .third_party_notify(ThirdPartyNotice {
                        bank_ref: bank_ref.to_string(),
                        provider: "WECHAT".into(),
                    })
                    .await
                    .unwrap();
                assert!(ack.known);
                notices.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }));
    }
    let payer = CardToken::parse("wx_payer_0001").unwrap();
    let order = |w: &mut World, yuan: i64| TopUpThirdPartyRequest {
        request_id: w.next(),
        terminal_id: "M-APP".into(),
        card_no: "HC00000001".into(),
        provider: "WECHAT".into(),
        payer: payer.to_string(),
        amount: yuan.to_string(),
    };
    let settle = |w: &World, r: TopUpThirdPartyRequest| {
        let client = w.client.clone();
        async move {
            let deadline = tokio::time::Instant::now() + T;
            loop {
                let reply = client.top_up_third_party(r.clone()).await.unwrap();
                if is_final(&reply.state) {
                    return reply;
                }
                assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Confirmed by the payer; the channel's notification settles it.
    w.sim.set_faults("confirm=100ms").unwrap();
    let paid = {
        let r = order(&mut w, 60);
        settle(&w, r)
    }
    .await;
    assert_eq!(paid.state, "COMPLETED");
    assert_eq!(paid.balance, "60.00");
    assert_eq!(w.sim.balance(&payer), Money::from_yuan(10_000 - 60));
    assert!(notices.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // No notification: the status query finds it paid.
    silent.store(true, std::sync::atomic::Ordering::SeqCst);
    let paid = {
        let r = order(&mut w, 40);
        settle(&w, r)
    }
    .await;
    assert_eq!(paid.state, "COMPLETED");
    assert_eq!(w.sim.balance(&payer), Money::from_yuan(10_000 - 100));
    silent.store(false, std::sync::atomic::Ordering::SeqCst);

    // The payer's wallet is short: declined.
    let short = {
        let r = order(&mut w, 20_000);
        settle(&w, r)
    }
    .await;
    assert_eq!(short.state, "DECLINED");

    // A bill paid through the channel, cancelled by HIS, refunded online to the payer.
    w.register("H-HIS").await;
    let request_id = w.next();
    w.client
        .post_bill(PostBillRequest {
            request_id,
            terminal_id: "H-HIS".into(),
            bill_id: "WX-1".into(),
            card_no: "HC00000001".into(),
            kind: BillKind::Registration as i32,
            amount: "25.50".into(),
            insurance: None,
        })
        .await
        .unwrap();
    let pay = PayBillRequest {
        request_id: w.next(),
        terminal_id: "M-APP".into(),
        bill_id: "WX-1".into(),
        card_no: "HC00000001".into(),
        third_party_provider: "WECHAT".into(),
        third_party_payer: payer.to_string(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + T;
    let paid = loop {
        let reply = w.client.pay_bill(pay.clone()).await.unwrap();
        if is_final(&reply.bank_state) {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(paid.bank_state, "COMPLETED");
    assert_eq!(paid.balance, "100.00", "the account is untouched");
    assert_eq!(
        w.sim.balance(&payer),
        Money::from_cents(1_000_000 - 10_000 - 2_550)
    );
    let request_id = w.next();
    w.client
        .cancel_bill(CancelBillRequest {
            request_id,
            terminal_id: "H-HIS".into(),
            bill_id: "WX-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let request_id = w.next();
    let refunded = w
        .client
        .refund(RefundRequest {
            request_id,
            terminal_id: KIOSK.into(),
            bill_id: "WX-1".into(),
            card_no: "HC00000001".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refunded.bank_state, "COMPLETED", "{refunded:?}");
    assert_eq!(w.sim.balance(&payer), Money::from_yuan(10_000 - 100));

    // Never confirmed: closed once it expires; a late confirmation could not apply.
    w.sim.set_faults("abandon=1").unwrap();
    let abandoned = {
        let r = order(&mut w, 30);
        settle(&w, r)
    }
    .await;
    assert_eq!(abandoned.state, "REVERSED");
    assert_eq!(w.sim.balance(&payer), Money::from_yuan(10_000 - 100));
    assert_eq!(w.balance().await, Money::from_yuan(100));
}

/// Today's business day, as the API takes it.
fn today() -> String {
    yinyi_ledger::BusinessDay::of_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
    .to_string()
}

/// Issue 15, path 2: "nothing was sent this time" is not the bank's answer. The leader's breaker
/// is open (the bank was down), so a top-up leaves nothing on the wire: it must stay pending,
/// not be declined, because an earlier leader may have sent the same request. Here that
/// earlier copy (played by the test) reaches the bank once it is back and is applied: the
/// operation then ends by the bank's own answer, and the account holds what left the card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_leaves_a_top_up_pending_until_the_bank_answers() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    use yinyi_bank::{BankClient, BankClientConfig, Message, OpState, Processing};
    use yinyi_ledger::BankRef;

    let mut w = World::new().await;
    // The bank down: the leader's calls to it (reconciliation's statement here) fail until
    // its breaker opens, which the next call reports. Asked of the leader alone, a call ends
    // with the last attempt's error: the breaker opened less than the call's deadline ago.
    w.sim.set_faults("down=60s").unwrap();
    let leader = w.cluster.wait_for_leader(T).await.unwrap();
    let mut config = w.cluster.api_config();
    config.nodes = vec![w.cluster.addr(leader)];
    config.deadline = Duration::from_millis(300);
    let on_leader = Client::new(config).unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let err = on_leader
            .reconcile(ReconcileRequest { date: today() })
            .await
            .expect_err("the bank is down");
        if err.to_string().contains("circuit open") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no breaker: {err}");
    }
    // Within the breaker's pause: nothing leaves the leader for this top-up.
    let request = w.top_up(70);
    let first = w
        .client
        .with_deadline(Duration::from_secs(1))
        .top_up_bank_card(request.clone())
        .await
        .unwrap();
    assert!(
        !is_final(&first.state),
        "the bank said nothing, yet the top-up is {}",
        first.state
    );
    // The bank is back and an earlier leader's copy of the request reaches it.
    w.sim.set_faults("clear").unwrap();
    let bank_ref = BankRef::parse(&first.bank_ref).unwrap();
    let earlier_leader = BankClient::new(BankClientConfig::new(w.sim_addr.clone()));
    earlier_leader
        .call(&Message::FinancialRequest {
            processing: Processing::Debit,
            bank_ref: bank_ref.clone(),
            token: CardToken::parse(TOKEN).unwrap(),
            amount: Money::from_yuan(70),
            at_ms: 0,
        })
        .await
        .unwrap();
    let end = w.settle(&request).await;
    match end.state.as_str() {
        "COMPLETED" => assert_eq!(w.sim.state_of(&bank_ref), OpState::Applied),
        // Only if the saga's own try reached the bank while it was down, and its reversal
        // came before the earlier copy (which the bank then refused).
        "REVERSED" => assert_ne!(w.sim.state_of(&bank_ref), OpState::Applied),
        other => panic!("{other}: only the bank's answer may end it, and it applied it"),
    }
    w.agree().await;
}

/// Issue 15, path 7: the bank's reply must fit the request. A switch that applies (and answers)
/// another amount than asked never gets the operation completed here: the 0210 is a protocol
/// error, the operation goes in doubt, the status query's other amount cannot settle it, and it
/// is reversed. No account is ever credited an amount the bank did not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_reply_for_another_amount_never_credits_the_account() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    use yinyi_bank::OpState;
    use yinyi_ledger::BankRef;

    let mut w = World::new().await;
    w.sim.set_faults("mismatch=1").unwrap();
    let wrong = w.top_up(100);
    let end = w.settle(&wrong).await;
    assert_eq!(end.state, "REVERSED", "{end:?}");
    let bank_ref = BankRef::parse(&end.bank_ref).unwrap();
    assert_eq!(w.sim.state_of(&bank_ref), OpState::Reversed);
    assert_eq!(w.balance().await, Money::ZERO);
    w.agree().await;

    // Half the replies wrong: each operation ends, and the account and the bank agree.
    w.sim.set_faults("mismatch=0.5").unwrap();
    for yuan in [10, 20, 30, 40, 50, 60] {
        let request = w.top_up(yuan);
        let end = w.settle(&request).await.state;
        assert!(end == "COMPLETED" || end == "REVERSED", "{end}");
        w.agree().await;
    }
}

/// Issue 15, path 7: a third-party channel order is placed once. While the payer takes several
/// of the saga's poll periods (2 s) to confirm, the saga only asks the order's status; the bank
/// receives exactly one 0200 for it, and the order completes once paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_order_is_sent_to_the_bank_once_while_the_payer_takes_time() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    use yinyi_ledger::BankRef;

    let mut w = World::new().await;
    w.register("M-APP").await;
    w.sim.set_faults("confirm=5s").unwrap();
    let payer = CardToken::parse("wx_payer_0001").unwrap();
    let order = TopUpThirdPartyRequest {
        request_id: w.next(),
        terminal_id: "M-APP".into(),
        card_no: "HC00000001".into(),
        provider: "WECHAT".into(),
        payer: payer.to_string(),
        amount: "60".into(),
    };
    let paid = w.settle_order(&order).await;
    assert_eq!(paid.state, "COMPLETED", "{paid:?}");
    let bank_ref = BankRef::parse(&paid.bank_ref).unwrap();
    assert_eq!(w.sim.requests_for(&bank_ref), 1, "the order was sent again");
    assert_eq!(w.sim.balance(&payer), Money::from_yuan(10_000 - 60));
    assert_eq!(w.balance().await, Money::from_yuan(60));
}

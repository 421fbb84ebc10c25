//! Refunds as cashiers do them (issue 18, part 2), through the API of a real 3-node cluster
//! with the bank simulator: a partial refund repeated up to what HIS cancelled, cash at a
//! window, an online refund of part of a card payment, an invoiced bill refunded only at a
//! window, and a batch refund (a doctor's clinic cancelled) done half way, its leader killed,
//! and sent again whole: every patient refunded exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_ledger::{CardToken, Money};
use yinyi_tests::bank_cluster::{BankCluster, reason};

const T: Duration = Duration::from_secs(30);
const ADMIN: &str = "A-ADMIN";
const KIOSK: &str = "K-0101";
const WINDOW: &str = "W-01";
const HIS: &str = "H-HIS";
const CASHIER: &str = "CASHIER1";
const TOKEN: &str = "tok_refund_0001";
/// Patients whose clinic is cancelled (each paid 20.00 from the account), and one more who
/// paid by bank card.
const CLINIC: usize = 24;

static SERIAL: AtomicU64 = AtomicU64::new(0);

fn rid(terminal: &str) -> String {
    format!("{terminal}:{:06}", SERIAL.fetch_add(1, Ordering::Relaxed))
}

fn money(text: &str) -> Money {
    Money::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

struct Desk {
    client: Client,
}

impl Desk {
    async fn balance(&self, card: &str) -> Money {
        let reply = self
            .client
            .query_balance(QueryBalanceRequest {
                card_no: card.into(),
                account_id: String::new(),
            })
            .await
            .unwrap();
        money(&reply.balance)
    }

    async fn bill(&self, bill: &str) -> Bill {
        self.client
            .get_bill(GetBillRequest {
                bill_id: bill.into(),
            })
            .await
            .unwrap()
    }

    async fn patient(&self, card: &str, person: u64, deposit: &str) {
        self.client
            .issue_card(IssueCardRequest {
                request_id: rid(KIOSK),
                terminal_id: KIOSK.into(),
                card_no: card.into(),
                card_kind: CardKind::Hospital as i32,
                holder_name: format!("Patient {person}"),
                person_key: format!("{person:064x}"),
                id_masked: "1101**********0011".into(),
                first_deposit: deposit.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn post_bill(&self, bill: &str, card: &str, amount: &str) {
        self.client
            .post_bill(PostBillRequest {
                request_id: rid(HIS),
                terminal_id: HIS.into(),
                bill_id: bill.into(),
                card_no: card.into(),
                kind: BillKind::Outpatient as i32,
                amount: amount.into(),
                insurance: None,
            })
            .await
            .unwrap();
    }

    async fn pay_from_account(&self, bill: &str, card: &str) {
        self.client
            .pay_bill(PayBillRequest {
                request_id: rid(KIOSK),
                terminal_id: KIOSK.into(),
                bill_id: bill.into(),
                card_no: card.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn pay_by_card(&self, bill: &str, card: &str) -> String {
        let request = PayBillRequest {
            request_id: rid(KIOSK),
            terminal_id: KIOSK.into(),
            bill_id: bill.into(),
            card_no: card.into(),
            bank_card_token: TOKEN.into(),
            bank_card_masked: "6222****0001".into(),
            ..Default::default()
        };
        let receipt = self
            .until_final(|| self.client.pay_bill(request.clone()))
            .await;
        assert_eq!(receipt.bank_state, "COMPLETED", "{receipt:?}");
        receipt.bank_ref
    }

    async fn cancel(&self, bill: &str, amount: &str) -> Result<CancelBillReply, ApiError> {
        self.client
            .cancel_bill(CancelBillRequest {
                request_id: rid(HIS),
                terminal_id: HIS.into(),
                bill_id: bill.into(),
                amount: amount.into(),
            })
            .await
    }

    fn refund_request(
        at: &str,
        bill: &str,
        card: &str,
        amount: &str,
        destination: RefundDestination,
    ) -> RefundRequest {
        RefundRequest {
            request_id: rid(at),
            terminal_id: at.into(),
            operator_id: if at == WINDOW {
                CASHIER.into()
            } else {
                String::new()
            },
            bill_id: bill.into(),
            card_no: card.into(),
            amount: amount.into(),
            destination: destination as i32,
            ..Default::default()
        }
    }

    /// Asks again (the same request id) until the bank operation, if any, is final.
    async fn until_final<F, Fut>(&self, ask: F) -> Receipt
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Receipt, ApiError>>,
    {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let receipt = ask().await.unwrap();
            if matches!(
                receipt.bank_state.as_str(),
                "" | "COMPLETED" | "DECLINED" | "REVERSED"
            ) {
                return receipt;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {receipt:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many of the clinic's patients hold their 100.00 again (were refunded).
async fn refunded_count(desk: &Desk, card: impl Fn(usize) -> String) -> usize {
    let mut refunded = 0;
    for i in 0..CLINIC {
        if desk.balance(&card(i)).await == money("100.00") {
            refunded += 1;
        }
    }
    refunded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_partial_in_cash_online_invoiced_and_in_a_batch_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = BankCluster::start(
        dir.path(),
        Money::from_yuan(10_000),
        &[KIOSK, WINDOW, HIS],
        T,
    )
    .await
    .unwrap();
    started
        .open_shift(rid(WINDOW), WINDOW, CASHIER)
        .await
        .unwrap();
    let (sim, mut cluster) = (started.sim, started.cluster);
    let desk = Desk {
        client: started.client,
    };

    // ---- a partial refund, repeated, into the account and in cash ----
    desk.patient("RF0001", 1, "200.00").await;
    desk.post_bill("RB-ACC", "RF0001", "100.00").await;
    desk.pay_from_account("RB-ACC", "RF0001").await;
    let refund = |at: &str, amount: &str, destination| {
        Desk::refund_request(at, "RB-ACC", "", amount, destination)
    };
    assert_eq!(
        reason(
            desk.client
                .refund(refund(KIOSK, "10.00", RefundDestination::Account))
                .await
        ),
        "REFUND_NOT_ALLOWED",
        "nothing is refundable before HIS cancels"
    );
    assert!(desk.cancel("RB-ACC", "30.00").await.unwrap().refundable);
    let receipt = desk
        .client
        .refund(refund(KIOSK, "20.00", RefundDestination::Account))
        .await
        .unwrap();
    assert_eq!(
        (receipt.amount.as_str(), receipt.balance.as_str()),
        ("20.00", "120.00")
    );
    assert_eq!(
        reason(
            desk.client
                .refund(refund(KIOSK, "20.00", RefundDestination::Account))
                .await
        ),
        "INVALID_AMOUNT",
        "only 10.00 is left of what HIS cancelled"
    );
    assert_eq!(
        reason(
            desk.client
                .refund(refund(KIOSK, "", RefundDestination::Cash))
                .await
        ),
        "TERMINAL_NOT_ALLOWED",
        "cash only at a window"
    );
    let receipt = desk
        .client
        .refund(refund(WINDOW, "", RefundDestination::Cash))
        .await
        .unwrap();
    assert_eq!(
        (receipt.amount.as_str(), receipt.balance.as_str()),
        ("10.00", "120.00")
    );
    let bill = desk.bill("RB-ACC").await;
    assert_eq!(
        (bill.status, bill.cancelled.as_str(), bill.refunded.as_str()),
        (BillStatus::Paid as i32, "30.00", "30.00")
    );
    // The shift report counts the cash paid out, and the cash to hand over is 10.00 less.
    let shift = |terminal_id: &str| ShiftRequest {
        request_id: rid(terminal_id),
        terminal_id: terminal_id.into(),
        operator_id: CASHIER.into(),
    };
    let report = desk.client.close_shift(shift(WINDOW)).await.unwrap();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.kind == "CASH_REFUND" && l.total == "10.00"),
        "{report:?}"
    );
    assert_eq!(report.cash_expected, "-10.00", "{report:?}");
    desk.client.open_shift(shift(WINDOW)).await.unwrap();

    // ---- part of a card payment refunded online, the card's balance at the bank restored ----
    desk.patient("RF0002", 2, "").await;
    desk.post_bill("RB-CARD", "RF0002", "80.00").await;
    let token = CardToken::parse(TOKEN).unwrap();
    let at_bank = sim.balance(&token);
    let card_payment = desk.pay_by_card("RB-CARD", "RF0002").await;
    desk.cancel("RB-CARD", "").await.unwrap();
    let to_account =
        Desk::refund_request(KIOSK, "RB-CARD", "RF0002", "", RefundDestination::Account);
    assert_eq!(
        reason(desk.client.refund(to_account).await),
        "REFUND_CHANNEL_NOT_ALLOWED",
        "a card payment goes back to the card while it can take it"
    );
    let online = Desk::refund_request(
        KIOSK,
        "RB-CARD",
        "RF0002",
        "30.00",
        RefundDestination::Original,
    );
    let receipt = desk
        .until_final(|| desk.client.refund(online.clone()))
        .await;
    assert_eq!(
        (receipt.bank_state.as_str(), receipt.amount.as_str()),
        ("COMPLETED", "30.00")
    );
    assert_eq!(
        sim.balance(&token),
        at_bank.checked_sub(money("50.00")).unwrap(),
        "paid 80.00, 30.00 back"
    );
    assert_eq!(desk.bill("RB-CARD").await.refunded, "30.00");

    // ---- an invoiced bill: only at a window ----
    desk.post_bill("RB-INV", "RF0001", "15.00").await;
    desk.pay_from_account("RB-INV", "RF0001").await;
    let invoiced = desk
        .client
        .mark_invoiced(MarkInvoicedRequest {
            request_id: rid(HIS),
            terminal_id: HIS.into(),
            bill_id: "RB-INV".into(),
        })
        .await
        .unwrap();
    assert!(invoiced.invoiced);
    desk.cancel("RB-INV", "").await.unwrap();
    let at_kiosk = Desk::refund_request(KIOSK, "RB-INV", "", "", RefundDestination::Unspecified);
    assert_eq!(
        reason(desk.client.refund(at_kiosk).await),
        "TERMINAL_NOT_ALLOWED"
    );
    let at_window = Desk::refund_request(WINDOW, "RB-INV", "", "", RefundDestination::Unspecified);
    let receipt = desk.client.refund(at_window).await.unwrap();
    assert_eq!(receipt.amount, "15.00");
    assert_eq!(
        desk.bill("RB-INV").await.status,
        BillStatus::Refunded as i32
    );

    // ---- a batch refund: a clinic cancelled, cut off half way, its leader killed, sent again ----
    let mut items = Vec::new();
    for i in 0..CLINIC {
        let card = format!("CL{i:04}");
        let bill = format!("CL-{i:04}");
        desk.patient(&card, 100 + i as u64, "100.00").await;
        desk.post_bill(&bill, &card, "20.00").await;
        desk.pay_from_account(&bill, &card).await;
        desk.cancel(&bill, "").await.unwrap();
        items.push(BatchRefundItem {
            bill_id: bill,
            card_no: card,
        });
    }
    // One paid by card, refunded online; one HIS did not cancel: refused, the rest go on.
    desk.post_bill("CL-CARD", "RF0002", "20.00").await;
    desk.pay_by_card("CL-CARD", "RF0002").await;
    desk.cancel("CL-CARD", "").await.unwrap();
    items.push(BatchRefundItem {
        bill_id: "CL-CARD".into(),
        card_no: "RF0002".into(),
    });
    desk.post_bill("CL-KEPT", "RF0001", "20.00").await;
    desk.pay_from_account("CL-KEPT", "RF0001").await;
    items.push(BatchRefundItem {
        bill_id: "CL-KEPT".into(),
        card_no: "RF0001".into(),
    });
    let batch = BatchRefundRequest {
        batch_id: "CLINIC-0426-PM".into(),
        terminal_id: WINDOW.into(),
        operator_id: CASHIER.into(),
        items: items.clone(),
    };
    // A malformed batch refunds nobody.
    let mut bad = batch.clone();
    bad.items.push(BatchRefundItem {
        bill_id: "no spaces".into(),
        card_no: String::new(),
    });
    assert_eq!(reason(desk.client.batch_refund(bad).await), "INVALID_ID");
    assert_eq!(desk.balance("CL0000").await, money("80.00"));

    // Cut off half way: the first half of the batch is done (as a node that died during the
    // call would leave it: items go in order), then the leader is killed.
    let mut first_half = batch.clone();
    first_half.items.truncate(CLINIC / 2);
    let done = desk.client.batch_refund(first_half).await.unwrap();
    assert_eq!(done.refunded, CLINIC as u64 / 2, "{done:?}");
    let refunded_before = refunded_count(&desk, |i| format!("CL{i:04}")).await;
    assert_eq!(refunded_before, CLINIC / 2);
    let leader = cluster.wait_for_leader(T).await.unwrap();
    cluster.kill(leader).unwrap();
    cluster.wait_for_leader(T).await.unwrap();

    // Sent again (the same batch id) until no online refund is under way.
    let deadline = tokio::time::Instant::now() + T;
    let reply = loop {
        let reply = desk.client.batch_refund(batch.clone()).await.unwrap();
        if reply.pending == 0 {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.results.len(), CLINIC + 2);
    assert_eq!(
        (reply.refunded, reply.refused),
        (CLINIC as u64 + 1, 1),
        "{reply:?}"
    );
    let by_bill: BTreeMap<&str, &BatchRefundResult> = reply
        .results
        .iter()
        .map(|r| (r.bill_id.as_str(), r))
        .collect();
    assert_eq!(by_bill["CL-KEPT"].reason, "REFUND_NOT_ALLOWED");
    assert_eq!(by_bill["CL-CARD"].outcome, "REFUNDED");
    for i in 0..CLINIC {
        let bill = format!("CL-{i:04}");
        assert_eq!(by_bill[bill.as_str()].outcome, "REFUNDED", "{bill}");
        assert_eq!(by_bill[bill.as_str()].amount, "20.00", "{bill}");
        // Exactly once: back to the 100.00 deposited, not 120.00.
        assert_eq!(
            desk.balance(&format!("CL{i:04}")).await,
            money("100.00"),
            "{bill}"
        );
        assert_eq!(desk.bill(&bill).await.refunded, "20.00", "{bill}");
    }
    // Once more: nothing moves, every line answered from its record.
    let again = desk.client.batch_refund(batch.clone()).await.unwrap();
    assert_eq!(again.refunded, CLINIC as u64 + 1);
    assert_eq!(desk.balance("CL0000").await, money("100.00"));
    assert_eq!(
        sim.balance(&token),
        at_bank.checked_sub(money("50.00")).unwrap(),
        "CL-CARD paid 20.00 and got it back once"
    );

    // ---- 调账: the bank's statement disagrees; finance resolves the difference, once ----
    // The bank booked RB-CARD's payment at 80.50, not 80.00.
    let payment_ref = yinyi_ledger::BankRef::parse(&card_payment).unwrap();
    assert!(sim.tamper(
        &payment_ref,
        yinyi_bank::OpState::Applied,
        Some(money("80.50"))
    ));
    let today = yinyi_ledger::BusinessDay::of_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
    .to_string();
    let reconcile = || async {
        desk.client
            .reconcile(ReconcileRequest {
                date: today.clone(),
            })
            .await
            .unwrap()
    };
    let report = reconcile().await;
    let difference = |report: &ReconciliationReport| {
        report
            .differences
            .iter()
            .find(|d| d.bank_ref == card_payment)
            .cloned()
            .unwrap_or_else(|| panic!("no difference for {card_payment}: {report:?}"))
    };
    assert_eq!(difference(&report).kind, "AMOUNT_DIFFERS");
    let adjustment = |amount: &str, operator: &str| AdjustRequest {
        request_id: rid(ADMIN),
        terminal_id: ADMIN.into(),
        operator_id: operator.into(),
        account_id: String::new(),
        direction: AdjustDirection::Credit as i32,
        amount: amount.into(),
        reason: "the bank took 0.50 more than the bill from the card: credited to the account"
            .into(),
        reference: "BANK-STMT-LINE-7".into(),
        recon_date: today.clone(),
        bank_ref: card_payment.clone(),
    };
    let account = desk
        .client
        .query_balance(QueryBalanceRequest {
            card_no: "RF0002".into(),
            account_id: String::new(),
        })
        .await
        .unwrap()
        .account_id;
    let with_account = |mut r: AdjustRequest| {
        r.account_id = account.clone();
        r
    };
    assert_eq!(
        reason(
            desk.client
                .adjust(with_account(adjustment("0.50", "")))
                .await
        ),
        "OPERATOR_REQUIRED"
    );
    assert_eq!(
        reason(
            desk.client
                .adjust(with_account(adjustment("0.40", "FIN01")))
                .await
        ),
        "ADJUSTMENT_MISMATCH"
    );
    let receipt = desk
        .client
        .adjust(with_account(adjustment("0.50", "FIN01")))
        .await
        .unwrap();
    assert_eq!(receipt.balance, "0.50");
    // Reconciled again: the difference is found again and stays resolved by the adjustment.
    let again = reconcile().await;
    assert!(
        difference(&again)
            .resolution
            .starts_with("resolved by adjustment"),
        "{again:?}"
    );
    assert_eq!(
        reason(
            desk.client
                .adjust(with_account(adjustment("0.50", "FIN01")))
                .await
        ),
        "DIFFERENCE_ALREADY_RESOLVED"
    );

    // ---- HIS对账: HIS's charges of the day against the ledger; a double collection refunded ----
    desk.patient("RF0003", 3, "100.00").await;
    for (bill, amount) in [("DC-1", "12.00"), ("DC-2", "12.00"), ("DC-3", "10.00")] {
        desk.post_bill(bill, "RF0003", amount).await;
        desk.pay_from_account(bill, "RF0003").await;
    }
    assert_eq!(desk.balance("RF0003").await, money("66.00"));
    let charges: Vec<HisCharge> = [("DC-1", "12.00"), ("DC-3", "11.00"), ("DC-9", "5.00")]
        .into_iter()
        .map(|(bill_id, amount)| HisCharge {
            bill_id: bill_id.into(),
            amount: amount.into(),
        })
        .collect();
    let his_reconcile = || async {
        desk.client
            .reconcile_his(ReconcileHisRequest {
                terminal_id: HIS.into(),
                date: today.clone(),
                charges: charges.clone(),
            })
            .await
            .unwrap()
    };
    let report = his_reconcile().await;
    let found = |report: &HisReconciliationReport, bill: &str| {
        report
            .differences
            .iter()
            .find(|d| d.bill_id == bill)
            .cloned()
            .unwrap_or_else(|| panic!("no difference for {bill}: {report:?}"))
    };
    assert_eq!(report.matched, 1, "DC-1");
    assert_eq!(found(&report, "DC-3").kind, "AMOUNT_DIFFERS");
    assert_eq!(found(&report, "DC-9").kind, "HIS_ONLY");
    let dc2 = found(&report, "DC-2");
    assert_eq!(dc2.kind, "LEDGER_ONLY");
    assert!(
        dc2.resolution.contains("double collection with DC-1"),
        "{dc2:?}"
    );
    let confirm = |bill: &str| ConfirmDoubleCollectionRequest {
        request_id: format!("{HIS}:dc-{bill}"),
        terminal_id: HIS.into(),
        date: today.clone(),
        bill_id: bill.into(),
        card_no: "RF0003".into(),
    };
    assert_eq!(
        reason(desk.client.confirm_double_collection(confirm("DC-3")).await),
        "NOT_A_DOUBLE_COLLECTION"
    );
    let receipt = desk
        .client
        .confirm_double_collection(confirm("DC-2"))
        .await
        .unwrap();
    assert_eq!(
        (receipt.amount.as_str(), receipt.balance.as_str()),
        ("12.00", "78.00")
    );
    // A retry answers the same and refunds nothing more.
    let again = desk
        .client
        .confirm_double_collection(confirm("DC-2"))
        .await
        .unwrap();
    assert_eq!(again.txn_id, receipt.txn_id);
    assert_eq!(desk.balance("RF0003").await, money("78.00"));
    let report = his_reconcile().await;
    assert!(
        found(&report, "DC-2")
            .resolution
            .starts_with("resolved: double collection"),
        "{report:?}"
    );

    // ---- HIS's feed: every payment, refund and cancellation, once, across the leader's death ----
    let mut cursor = String::new();
    let mut told: BTreeMap<(String, String), Money> = BTreeMap::new();
    let mut pages = 0;
    loop {
        let page = desk
            .client
            .bill_feed(BillFeedRequest {
                after_cursor: cursor.clone(),
                limit: 7,
            })
            .await
            .unwrap();
        if page.events.is_empty() {
            assert_eq!(page.next_cursor, cursor, "an empty page keeps the cursor");
            break;
        }
        pages += 1;
        for e in &page.events {
            let sum = told
                .entry((e.bill_id.clone(), e.kind.clone()))
                .or_insert(Money::ZERO);
            *sum = sum.checked_add(money(&e.amount)).unwrap();
        }
        cursor = page.next_cursor;
    }
    assert!(pages >= 10, "{pages} pages of at most 7");
    let said = |bill: &str, kind: &str| {
        told.get(&(bill.to_string(), kind.to_string()))
            .map(|m| m.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        (
            said("RB-ACC", "PAID"),
            said("RB-ACC", "CANCELLED"),
            said("RB-ACC", "REFUNDED")
        ),
        ("100.00".into(), "30.00".into(), "30.00".into())
    );
    assert_eq!(said("RB-CARD", "REFUNDED"), "30.00");
    assert_eq!(said("CL-KEPT", "REFUNDED"), "");
    for i in 0..CLINIC {
        let bill = format!("CL-{i:04}");
        assert_eq!(
            (
                said(&bill, "PAID"),
                said(&bill, "CANCELLED"),
                said(&bill, "REFUNDED")
            ),
            ("20.00".into(), "20.00".into(), "20.00".into()),
            "{bill}"
        );
    }
    assert_eq!(
        reason(
            desk.client
                .bill_feed(BillFeedRequest {
                    after_cursor: "yesterday".into(),
                    limit: 0,
                })
                .await
        ),
        "INVALID_ID"
    );

    // The books balance on the nodes left.
    let audit = desk
        .client
        .audit_balances(AuditRequest { with_digest: false })
        .await
        .unwrap();
    assert!(audit.ok, "{audit:?}");
    assert_eq!(audit.unresolved_bank_ops, 0, "{audit:?}");
}

//! Mobile payment before the insurance card is read (issue 19, part 1), through the API of a
//! real 3-node cluster and the bank simulator over TCP: the channel holds the estimate (预授权,
//! ¥14), HIS posts the insured bill, its self-pay part is captured out of the hold (¥6) and the
//! bank frees the rest (¥8); a hold is released on request or when it expires; a capture above
//! the hold, or of a hold no longer held, is refused with nothing moved; a capture the bank
//! refuses leaves the hold to be released. The day's reconciliation and the balance audit
//! agree with the ledger, and the payer's balance at the bank shows each hold and capture.

use std::time::Duration;

use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_bank::OpState;
use yinyi_ledger::{BankRef, CardToken, Money};
use yinyi_tests::bank_cluster::{BankCluster, reason, today};

const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0401";
const HIS: &str = "H-HIS";
const MOBILE: &str = "M-WX";
const CARD: &str = "HC0401";
const PAYER: &str = "payer_0401";
const BANK_TOKEN: &str = "tok_bank_0401";

async fn issue(client: &Client) {
    client
        .issue_card(IssueCardRequest {
            request_id: "K-0401:1".into(),
            terminal_id: KIOSK.into(),
            card_no: CARD.into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "Mobile Patient".into(),
            person_key: format!("{:064x}", 401),
            id_masked: "1101**********0401".into(),
            first_deposit: "100.00".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn authorize(
    client: &Client,
    id: &str,
    amount: &str,
    by_bank_card: bool,
) -> Result<BankOpReply, ApiError> {
    let mut request = AuthorizePaymentRequest {
        request_id: id.into(),
        terminal_id: MOBILE.into(),
        card_no: CARD.into(),
        amount: amount.into(),
        ..Default::default()
    };
    if by_bank_card {
        request.bank_card_token = BANK_TOKEN.into();
        request.bank_card_masked = "6222****0401".into();
    } else {
        request.third_party_provider = "WECHAT".into();
        request.third_party_payer = PAYER.into();
    }
    client.authorize_payment(request).await
}

async fn capture(client: &Client, id: &str, hold: &str, bill: &str) -> Result<Receipt, ApiError> {
    client
        .capture_payment(CapturePaymentRequest {
            request_id: id.into(),
            terminal_id: MOBILE.into(),
            card_no: CARD.into(),
            authorization_ref: hold.into(),
            bill_id: bill.into(),
        })
        .await
}

async fn release(client: &Client, id: &str, hold: &str) -> Result<BankOpReply, ApiError> {
    client
        .release_authorization(ReleaseAuthorizationRequest {
            request_id: id.into(),
            terminal_id: MOBILE.into(),
            card_no: CARD.into(),
            authorization_ref: hold.into(),
        })
        .await
}

async fn post_bill(client: &Client, id: &str, bill: &str, amount: &str, self_pay: Option<&str>) {
    client
        .post_bill(PostBillRequest {
            request_id: id.into(),
            terminal_id: HIS.into(),
            bill_id: bill.into(),
            card_no: CARD.into(),
            kind: BillKind::Outpatient as i32,
            amount: amount.into(),
            insurance: self_pay.map(|self_pay| InsuranceSplit {
                settlement_id: format!("YB-{bill}"),
                pooled: "80.00".into(),
                personal_account: "12.00".into(),
                self_pay: self_pay.into(),
                reductions: "2.00".into(),
            }),
        })
        .await
        .unwrap();
}

async fn bill_status(client: &Client, bill: &str) -> String {
    let bill = client
        .get_bill(GetBillRequest {
            bill_id: bill.into(),
        })
        .await
        .unwrap();
    format!("{:?}", BillStatus::try_from(bill.status).unwrap())
}

async fn balance(client: &Client) -> Money {
    let reply = client
        .query_balance(QueryBalanceRequest {
            card_no: CARD.into(),
            account_id: String::new(),
        })
        .await
        .unwrap();
    Money::parse(&reply.balance).unwrap()
}

fn token(text: &str) -> CardToken {
    CardToken::parse(text).unwrap()
}

fn reference(text: &str) -> BankRef {
    BankRef::parse(text).unwrap()
}

async fn audit_is_clean(client: &Client) {
    let audit = client
        .audit_balances(AuditRequest { with_digest: false })
        .await
        .unwrap();
    assert!(audit.ok, "{:?}", audit.problems);
    assert_eq!(audit.unresolved_bank_ops, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_pays_the_self_pay_part_and_the_bank_frees_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let c = BankCluster::start(
        dir.path(),
        Money::from_yuan(1_000),
        &[KIOSK, HIS, MOBILE],
        T,
    )
    .await
    .unwrap();
    let client = &c.client;
    issue(client).await;

    // Bad requests: refused at the edge, nothing held.
    assert_eq!(
        reason(
            client
                .authorize_payment(AuthorizePaymentRequest {
                    request_id: "M-WX:bad-1".into(),
                    terminal_id: MOBILE.into(),
                    card_no: CARD.into(),
                    amount: "14.00".into(),
                    ..Default::default()
                })
                .await
        ),
        "INVALID_REQUEST",
        "no payer named"
    );
    assert_eq!(
        reason(authorize(client, "M-WX:bad-2", "-1.00", false).await),
        "INVALID_AMOUNT"
    );
    assert_eq!(
        reason(capture(client, "M-WX:bad-3", "not a ref", "B-1").await),
        "INVALID_ID"
    );
    // A channel is one the hospital configured, never a free-text label.
    for (n, provider) in ["PAYPAL", "wechat", "WECHAT PAY"].into_iter().enumerate() {
        let refused = client
            .authorize_payment(AuthorizePaymentRequest {
                request_id: format!("M-WX:bad-provider-{n}"),
                terminal_id: MOBILE.into(),
                card_no: CARD.into(),
                amount: "14.00".into(),
                third_party_provider: provider.into(),
                third_party_payer: PAYER.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(reason(refused), "INVALID_ID", "{provider}");
    }
    // Only the mobile channel authorizes.
    assert_eq!(
        reason(
            client
                .authorize_payment(AuthorizePaymentRequest {
                    request_id: "K-0401:bad-4".into(),
                    terminal_id: KIOSK.into(),
                    card_no: CARD.into(),
                    amount: "14.00".into(),
                    third_party_provider: "WECHAT".into(),
                    third_party_payer: PAYER.into(),
                    ..Default::default()
                })
                .await
        ),
        "TERMINAL_NOT_ALLOWED"
    );

    // The outpatient notes' flow: ¥14 held, the bill's self-pay part ¥6 captured, ¥8 back.
    let hold = authorize(client, "M-WX:1", "14.00", false).await.unwrap();
    assert_eq!(hold.state, "AUTHORIZED", "{hold:?}");
    assert_eq!(
        balance(client).await,
        Money::from_yuan(100),
        "no money moved"
    );
    assert_eq!(c.sim.balance(&token(PAYER)), Money::from_yuan(986));
    assert_eq!(c.sim.state_of(&reference(&hold.bank_ref)), OpState::Applied);
    // A retry of the same request is the same hold, not a second one.
    let again = authorize(client, "M-WX:1", "14.00", false).await.unwrap();
    assert_eq!(again.bank_ref, hold.bank_ref);
    assert_eq!(c.sim.balance(&token(PAYER)), Money::from_yuan(986));

    post_bill(client, "H-HIS:1", "B-1", "", Some("6.00")).await;
    let paid = capture(client, "M-WX:2", &hold.bank_ref, "B-1")
        .await
        .unwrap();
    assert_eq!(paid.bank_state, "COMPLETED", "{paid:?}");
    assert_eq!(paid.amount, "6.00");
    assert_ne!(
        paid.bank_ref, hold.bank_ref,
        "the capture is its own operation"
    );
    assert_eq!(bill_status(client, "B-1").await, "Paid");
    assert_eq!(balance(client).await, Money::from_yuan(100));
    assert_eq!(
        c.sim.balance(&token(PAYER)),
        Money::from_yuan(994),
        "only the self-pay part is taken; the rest of the hold is free again"
    );
    assert_eq!(
        c.sim.state_of(&reference(&hold.bank_ref)),
        OpState::Captured
    );
    assert_eq!(
        reason(release(client, "M-WX:3", &hold.bank_ref).await),
        "AUTHORIZATION_NOT_HELD"
    );
    assert_eq!(
        reason(capture(client, "M-WX:4", &hold.bank_ref, "B-1").await),
        "AUTHORIZATION_NOT_HELD"
    );

    // A bill above the hold is refused, the hold unchanged; released, the bank frees it all.
    let card_hold = authorize(client, "M-WX:5", "20.00", true).await.unwrap();
    assert_eq!(card_hold.state, "AUTHORIZED");
    assert_eq!(c.sim.balance(&token(BANK_TOKEN)), Money::from_yuan(980));
    post_bill(client, "H-HIS:2", "B-2", "25.00", None).await;
    assert_eq!(
        reason(capture(client, "M-WX:6", &card_hold.bank_ref, "B-2").await),
        "CAPTURE_EXCEEDS_AUTHORIZATION"
    );
    assert_eq!(bill_status(client, "B-2").await, "Unpaid");
    let released = release(client, "M-WX:7", &card_hold.bank_ref)
        .await
        .unwrap();
    assert_eq!(released.state, "REVERSED", "{released:?}");
    assert_eq!(c.sim.balance(&token(BANK_TOKEN)), Money::from_yuan(1_000));
    assert_eq!(
        reason(capture(client, "M-WX:8", &card_hold.bank_ref, "B-2").await),
        "AUTHORIZATION_NOT_HELD"
    );

    // The bank let a hold go on its side: the capture is refused there, nothing is paid, and
    // the hold can still be released.
    let lost = authorize(client, "M-WX:9", "30.00", false).await.unwrap();
    assert_eq!(lost.state, "AUTHORIZED");
    assert!(
        c.sim
            .tamper(&reference(&lost.bank_ref), OpState::Reversed, None)
    );
    let refused = capture(client, "M-WX:10", &lost.bank_ref, "B-2")
        .await
        .unwrap();
    assert_eq!(refused.bank_state, "DECLINED", "{refused:?}");
    assert_eq!(bill_status(client, "B-2").await, "Unpaid");
    let released = release(client, "M-WX:11", &lost.bank_ref).await.unwrap();
    assert_eq!(released.state, "REVERSED");

    // A hold still held when the day is reconciled: not on the statement, not a difference.
    let open = authorize(client, "M-WX:12", "9.00", false).await.unwrap();
    assert_eq!(open.state, "AUTHORIZED");
    // The day's reconciliation finds the capture on the bank's statement and no hold on it.
    let report = client
        .reconcile(ReconcileRequest { date: today() })
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{report:?}");
    assert_eq!(report.matched, 1, "the one capture: {report:?}");
    assert_eq!(report.matched_total, "6.00");
    audit_is_clean(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_not_captured_in_time_is_released_and_cannot_be_captured() {
    let dir = tempfile::tempdir().unwrap();
    let c = BankCluster::start_with(
        dir.path(),
        Money::from_yuan(1_000),
        &[KIOSK, HIS, MOBILE],
        T,
        &["--authorization-expiry-s", "2"],
    )
    .await
    .unwrap();
    let client = &c.client;
    issue(client).await;
    let hold = authorize(client, "M-WX:1", "14.00", false).await.unwrap();
    assert_eq!(hold.state, "AUTHORIZED");
    assert_eq!(c.sim.balance(&token(PAYER)), Money::from_yuan(986));
    // The saga's recovery releases it once expired: the bank frees it.
    let deadline = tokio::time::Instant::now() + T;
    while c.sim.state_of(&reference(&hold.bank_ref)) != OpState::Reversed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired hold was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.sim.balance(&token(PAYER)), Money::from_yuan(1_000));
    // The ledger records it released: the same request asked again answers the hold's state.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let again = authorize(client, "M-WX:1", "14.00", false).await.unwrap();
        assert_eq!(again.bank_ref, hold.bank_ref);
        if again.state == "REVERSED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger never recorded the release: {again:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    post_bill(client, "H-HIS:1", "B-1", "", Some("6.00")).await;
    let refused = capture(client, "M-WX:2", &hold.bank_ref, "B-1").await;
    assert_eq!(reason(refused), "AUTHORIZATION_NOT_HELD");
    assert_eq!(bill_status(client, "B-1").await, "Unpaid");
    audit_is_clean(client).await;
}

//! Bad input through the real API of a real 3-node cluster, table-driven: malformed and
//! out-of-range amounts, unknown and malformed ids, missing fields, an unknown enum, an
//! oversized message, a request id reused with another payload, a terminal calling what its kind
//! may not. Each gets its documented code and reason. Refused input changes nothing at all (one
//! digest before and after, on every node); a refusal by the ledger moves no money and writes no
//! journal entry (it keeps only the request's record, so a retry gets the same answer).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tonic::Code;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0101";
const WINDOW: &str = "W-01";
const HIS: &str = "H-HIS";
const CARD: &str = "HC00000001";

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), ApiError>> + 'a>>;

fn call<'a, T>(f: impl Future<Output = Result<T, ApiError>> + 'a) -> Call<'a> {
    Box::pin(async move { f.await.map(|_| ()) })
}

fn deposit(request_id: &str, card: &str, amount: &str) -> DepositCashRequest {
    DepositCashRequest {
        request_id: request_id.into(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        card_no: card.into(),
        amount: amount.into(),
    }
}

fn issue(request_id: &str, card: &str) -> IssueCardRequest {
    IssueCardRequest {
        request_id: request_id.into(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        card_no: card.into(),
        card_kind: CardKind::Hospital as i32,
        holder_name: "patient".into(),
        person_key: format!("{:064x}", 1),
        id_masked: "110****1234".into(),
        phone: String::new(),
        first_deposit: "100".into(),
    }
}

/// Each call of the table is refused with its code and reason.
async fn expect_refused(table: Vec<(&str, Call<'_>, Code, &str)>) {
    for (name, result, code, reason) in table {
        match result.await {
            Err(ApiError::Refused {
                code: got,
                reason: why,
                ..
            }) => assert_eq!((got, why.as_str()), (code, reason), "{name}"),
            other => panic!("{name}: expected {code:?} {reason}, got {other:?}"),
        }
    }
}

async fn digests(c: &LocalCluster) -> Vec<String> {
    c.wait_converged(T)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.digest.unwrap_or_default())
        .collect()
}

async fn money(client: &Client) -> (u64, String) {
    let audit = client
        .audit_balances(AuditRequest { with_digest: false })
        .await
        .unwrap();
    assert!(audit.ok, "{:?}", audit.problems);
    (audit.journal_entries, audit.total_balance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_code_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    c.wait_for_leader(T).await.unwrap();
    let mut config = c.api_config();
    config.deadline = T;
    let client = Client::new(config).unwrap();
    for terminal in [KIOSK, WINDOW, HIS] {
        client
            .register_terminal(RegisterTerminalRequest {
                request_id: format!("setup-{terminal}"),
                terminal_id: "A-ADMIN".into(),
                operator_id: "admin".into(),
                new_terminal_id: terminal.into(),
            })
            .await
            .unwrap();
    }
    client.issue_card(issue("setup-card", CARD)).await.unwrap();
    client
        .deposit_cash(deposit("used-once", CARD, "50"))
        .await
        .unwrap();

    // Input refused before anything is proposed.
    let huge = "9".repeat(10_000);
    let mut unknown_kind = issue("kind-99", "HC00000002");
    unknown_kind.card_kind = 99;
    let mut oversized = issue("oversized", "HC00000003");
    oversized.holder_name = "x".repeat(5 * 1024 * 1024);
    let mut no_terminal = deposit("no-terminal", CARD, "1");
    no_terminal.terminal_id = String::new();
    let invalid: Vec<(&str, Call, Code, &str)> = vec![
        (
            "amount -1",
            call(client.deposit_cash(deposit("a1", CARD, "-1"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount 0",
            call(client.deposit_cash(deposit("a2", CARD, "0"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount 1.001",
            call(client.deposit_cash(deposit("a3", CARD, "1.001"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount 1e9",
            call(client.deposit_cash(deposit("a4", CARD, "1e9"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount abc",
            call(client.deposit_cash(deposit("a5", CARD, "abc"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount empty",
            call(client.deposit_cash(deposit("a6", CARD, ""))),
            Code::InvalidArgument,
            "MISSING_FIELD",
        ),
        (
            "amount 10,000 digits",
            call(client.deposit_cash(deposit("a7", CARD, &huge))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "amount above the limit",
            call(client.deposit_cash(deposit("a8", CARD, "50000.01"))),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
        (
            "malformed card",
            call(client.deposit_cash(deposit("a9", "HC 0001!", "1"))),
            Code::InvalidArgument,
            "INVALID_ID",
        ),
        (
            "missing card",
            call(client.deposit_cash(deposit("a10", "", "1"))),
            Code::InvalidArgument,
            "MISSING_FIELD",
        ),
        (
            "missing request id",
            call(client.deposit_cash(deposit("", CARD, "1"))),
            Code::InvalidArgument,
            "MISSING_FIELD",
        ),
        (
            "malformed request id",
            call(client.deposit_cash(deposit("a b\n", CARD, "1"))),
            Code::InvalidArgument,
            "INVALID_ID",
        ),
        (
            "missing terminal",
            call(client.deposit_cash(no_terminal)),
            Code::InvalidArgument,
            "MISSING_FIELD",
        ),
        (
            "unknown card kind",
            call(client.issue_card(unknown_kind)),
            Code::InvalidArgument,
            "INVALID_ENUM",
        ),
        (
            "malformed account id",
            call(client.query_balance(QueryBalanceRequest {
                card_no: String::new(),
                account_id: "x1".into(),
            })),
            Code::InvalidArgument,
            "INVALID_ID",
        ),
        (
            "malformed bill amount",
            call(client.post_bill(PostBillRequest {
                request_id: "b1".into(),
                terminal_id: HIS.into(),
                bill_id: "B1".into(),
                card_no: CARD.into(),
                kind: BillKind::Outpatient as i32,
                amount: "12.345".into(),
                insurance: None,
            })),
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        ),
    ];
    let before = digests(&c).await;
    assert!(before.windows(2).all(|w| w[0] == w[1]));
    expect_refused(invalid).await;
    // A message over the size limit is refused whole (no reason: gRPC refuses it).
    match client.issue_card(oversized).await {
        Err(ApiError::Refused { code, .. }) => {
            assert!(
                matches!(
                    code,
                    Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
                ),
                "{code:?}"
            )
        }
        other => panic!("oversized: {other:?}"),
    }
    assert_eq!(digests(&c).await, before, "refused input changed the state");

    // Refused by the ledger: no money moves, no journal entry.
    let (entries, total) = money(&client).await;
    let mut wrong_kind = deposit("w1", CARD, "10");
    wrong_kind.terminal_id = HIS.into();
    let refusals: Vec<(&str, Call, Code, &str)> = vec![
        (
            "unknown card",
            call(client.deposit_cash(deposit("u1", "HC99999999", "1"))),
            Code::NotFound,
            "CARD_NOT_FOUND",
        ),
        (
            "unregistered kiosk",
            call(client.deposit_cash(DepositCashRequest {
                terminal_id: "K-9999".into(),
                ..deposit("u2", CARD, "1")
            })),
            Code::NotFound,
            "TERMINAL_NOT_REGISTERED",
        ),
        (
            "request id reused with another payload",
            call(client.deposit_cash(deposit("used-once", CARD, "60"))),
            Code::AlreadyExists,
            "REQUEST_ID_REUSED",
        ),
        (
            "HIS takes cash",
            call(client.deposit_cash(wrong_kind)),
            Code::PermissionDenied,
            "TERMINAL_NOT_ALLOWED",
        ),
        (
            "a kiosk pays out cash",
            call(client.withdraw(WithdrawRequest {
                request_id: "w2".into(),
                terminal_id: KIOSK.into(),
                card_no: CARD.into(),
                amount: "10".into(),
                ..Default::default()
            })),
            Code::PermissionDenied,
            "TERMINAL_NOT_ALLOWED",
        ),
        (
            "a kiosk registers a terminal",
            call(client.register_terminal(RegisterTerminalRequest {
                request_id: "w3".into(),
                terminal_id: KIOSK.into(),
                operator_id: String::new(),
                new_terminal_id: "K-0202".into(),
            })),
            Code::PermissionDenied,
            "TERMINAL_NOT_ALLOWED",
        ),
        (
            "refund of an unknown bill",
            call(client.refund(RefundRequest {
                request_id: "r1".into(),
                terminal_id: KIOSK.into(),
                bill_id: "B404".into(),
                ..Default::default()
            })),
            Code::NotFound,
            "BILL_NOT_FOUND",
        ),
    ];
    expect_refused(refusals).await;
    assert_eq!(
        money(&client).await,
        (entries, total),
        "a refusal moved money"
    );
    let balance = client
        .query_balance(QueryBalanceRequest {
            card_no: CARD.into(),
            account_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(balance.balance, "150.00");
}

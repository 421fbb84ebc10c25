//! The public API against real 3-node clusters, through the client library: every
//! transaction's success path and its rejections with their codes, idempotent retries across
//! nodes, follower forwarding, a leader killed under a stream of requests, and actor
//! passivation. Tests run one cluster at a time and wait on conditions with deadlines.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::Code;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_node::local::LocalCluster;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(30);

const ADMIN: &str = "A-ADMIN";
const KIOSK: &str = "K-0101";
const WINDOW: &str = "W-03";
const HIS: &str = "H-HIS";
const MOBILE: &str = "M-APP";
const CASHIER: &str = "op-li";

fn cluster(extra: &[&str]) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_yinyi")),
        dir.path(),
        3,
        extra.iter().map(|s| s.to_string()).collect(),
    )
    .unwrap();
    (dir, c)
}

fn client_of(c: &LocalCluster, addrs: Vec<String>) -> Client {
    let mut config = c.api_config();
    config.nodes = addrs;
    config.deadline = T;
    Client::new(config).unwrap()
}

fn person(n: u64) -> String {
    format!("{n:064x}")
}

fn card(n: u64) -> String {
    format!("HC{n:08}")
}

/// Request ids made the way terminals make them: a run prefix and a serial.
struct Ids {
    prefix: String,
    serial: u64,
}

impl Ids {
    fn new(prefix: &str) -> Ids {
        Ids {
            prefix: prefix.into(),
            serial: 0,
        }
    }
    fn next(&mut self) -> String {
        self.serial += 1;
        format!("{}:{:06}", self.prefix, self.serial)
    }
}

/// Asserts a refusal's code and reason.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, ApiError>, code: Code, reason: &str) {
    match result {
        Err(ApiError::Refused {
            code: c, reason: r, ..
        }) => {
            assert_eq!((c, r.as_str()), (code, reason));
        }
        other => panic!("expected {code:?} {reason}, got {other:?}"),
    }
}

async fn register(client: &Client, ids: &mut Ids, terminal: &str) {
    client
        .register_terminal(RegisterTerminalRequest {
            request_id: ids.next(),
            terminal_id: ADMIN.into(),
            operator_id: "admin".into(),
            new_terminal_id: terminal.into(),
        })
        .await
        .unwrap();
}

/// Registers the kiosk, window, HIS and mobile channel and opens a shift at the window.
async fn hospital(client: &Client, ids: &mut Ids) {
    for t in [KIOSK, WINDOW, HIS, MOBILE] {
        register(client, ids, t).await;
    }
    client
        .open_shift(ShiftRequest {
            request_id: ids.next(),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
        })
        .await
        .unwrap();
}

fn issue(ids: &mut Ids, n: u64, first_deposit: &str) -> IssueCardRequest {
    IssueCardRequest {
        request_id: ids.next(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        card_no: card(n),
        card_kind: CardKind::Hospital as i32,
        holder_name: format!("patient {n}"),
        person_key: person(n),
        id_masked: "110***********1234".into(),
        phone: "138****0000".into(),
        first_deposit: first_deposit.into(),
    }
}

fn deposit(ids: &mut Ids, n: u64, amount: &str) -> DepositCashRequest {
    DepositCashRequest {
        request_id: ids.next(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        card_no: card(n),
        amount: amount.into(),
    }
}

fn post(ids: &mut Ids, n: u64, bill: &str, amount: &str) -> PostBillRequest {
    PostBillRequest {
        request_id: ids.next(),
        terminal_id: HIS.into(),
        bill_id: bill.into(),
        card_no: card(n),
        kind: BillKind::Outpatient as i32,
        amount: amount.into(),
        insurance: None,
    }
}

fn pay(ids: &mut Ids, n: u64, bill: &str) -> PayBillRequest {
    PayBillRequest {
        request_id: ids.next(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        bill_id: bill.into(),
        card_no: card(n),
        ..Default::default()
    }
}

fn at_window(ids: &mut Ids, n: u64, person_n: u64) -> CardRequest {
    CardRequest {
        request_id: ids.next(),
        terminal_id: WINDOW.into(),
        operator_id: CASHIER.into(),
        card_no: card(n),
        person_key: person(person_n),
    }
}

async fn balance(client: &Client, n: u64) -> String {
    client
        .query_balance(QueryBalanceRequest {
            card_no: card(n),
            account_id: String::new(),
        })
        .await
        .unwrap()
        .balance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_succeeds_and_each_rejection_has_its_code() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&[]);
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("tour");

    // Terminals and shifts.
    hospital(&client, &mut ids).await;
    refused(
        client
            .register_terminal(RegisterTerminalRequest {
                request_id: ids.next(),
                terminal_id: ADMIN.into(),
                operator_id: "admin".into(),
                new_terminal_id: KIOSK.into(),
            })
            .await,
        Code::AlreadyExists,
        "TERMINAL_ALREADY_REGISTERED",
    );
    refused(
        client
            .open_shift(ShiftRequest {
                request_id: ids.next(),
                terminal_id: WINDOW.into(),
                operator_id: CASHIER.into(),
            })
            .await,
        Code::FailedPrecondition,
        "SHIFT_ALREADY_OPEN",
    );
    let beat = client
        .heartbeat(HeartbeatRequest {
            terminal_id: KIOSK.into(),
        })
        .await
        .unwrap();
    assert_eq!(beat.status, "IN_SERVICE");
    refused(
        client
            .heartbeat(HeartbeatRequest {
                terminal_id: "K-9999".into(),
            })
            .await,
        Code::NotFound,
        "TERMINAL_NOT_REGISTERED",
    );

    // Cards and cash.
    let issued = client.issue_card(issue(&mut ids, 1, "200")).await.unwrap();
    assert!(!issued.existing_account);
    assert_eq!(issued.balance, "200.00");
    let account = issued.account_id.clone();
    let mut other = issue(&mut ids, 1, "");
    other.person_key = person(2);
    refused(
        client.issue_card(other).await,
        Code::AlreadyExists,
        "CARD_ALREADY_EXISTS",
    );
    refused(
        client.issue_card(issue(&mut ids, 3, "1.001")).await,
        Code::InvalidArgument,
        "INVALID_AMOUNT",
    );
    refused(
        client.issue_card(issue(&mut ids, 3, "5")).await,
        Code::InvalidArgument,
        "BELOW_MINIMUM_DEPOSIT",
    );
    let receipt = client
        .deposit_cash(deposit(&mut ids, 1, "50"))
        .await
        .unwrap();
    assert_eq!(
        (receipt.amount.as_str(), receipt.balance.as_str()),
        ("50.00", "250.00")
    );
    assert_eq!(receipt.account_id, account);
    refused(
        client.deposit_cash(deposit(&mut ids, 9, "50")).await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    refused(
        client.deposit_cash(deposit(&mut ids, 1, "10.50")).await,
        Code::InvalidArgument,
        "INVALID_DENOMINATION",
    );
    for bad in ["-1", "0", "1.001", "1e9", "abc", "50000.01"] {
        refused(
            client.deposit_cash(deposit(&mut ids, 1, bad)).await,
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        );
    }
    refused(
        client.deposit_cash(deposit(&mut ids, 1, "")).await,
        Code::InvalidArgument,
        "MISSING_FIELD",
    );
    let mut bad_card = deposit(&mut ids, 1, "10");
    bad_card.card_no = "no spaces allowed".into();
    refused(
        client.deposit_cash(bad_card).await,
        Code::InvalidArgument,
        "INVALID_ID",
    );

    // Bills: post, pay, cancel, refund.
    let bill = client
        .post_bill(post(&mut ids, 1, "REG-1", "25.50"))
        .await
        .unwrap();
    assert_eq!(bill.status, BillStatus::Unpaid as i32);
    assert_eq!(bill.account_id, account);
    refused(
        client.post_bill(post(&mut ids, 1, "REG-1", "25.50")).await,
        Code::AlreadyExists,
        "BILL_ALREADY_EXISTS",
    );
    let paid = client.pay_bill(pay(&mut ids, 1, "REG-1")).await.unwrap();
    assert_eq!(paid.balance, "224.50");
    refused(
        client.pay_bill(pay(&mut ids, 1, "REG-1")).await,
        Code::FailedPrecondition,
        "BILL_ALREADY_PAID",
    );
    refused(
        client.pay_bill(pay(&mut ids, 1, "NOPE")).await,
        Code::NotFound,
        "BILL_NOT_FOUND",
    );
    client
        .post_bill(post(&mut ids, 1, "LAB-1", "1000"))
        .await
        .unwrap();
    refused(
        client.pay_bill(pay(&mut ids, 1, "LAB-1")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_FUNDS",
    );
    let refund = |ids: &mut Ids| RefundRequest {
        request_id: ids.next(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        bill_id: "REG-1".into(),
        ..Default::default()
    };
    refused(
        client.refund(refund(&mut ids)).await,
        Code::FailedPrecondition,
        "REFUND_NOT_ALLOWED",
    );
    let cancelled = client
        .cancel_bill(CancelBillRequest {
            request_id: ids.next(),
            terminal_id: HIS.into(),
            bill_id: "REG-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(cancelled.refundable);
    let refunded = client.refund(refund(&mut ids)).await.unwrap();
    assert_eq!(refunded.balance, "250.00");
    refused(
        client.refund(refund(&mut ids)).await,
        Code::FailedPrecondition,
        "ALREADY_REFUNDED",
    );
    let got = client
        .get_bill(GetBillRequest {
            bill_id: "REG-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(got.status, BillStatus::Refunded as i32);
    assert_eq!(got.paid_by, Channel::Account as i32);
    refused(
        client
            .get_bill(GetBillRequest {
                bill_id: "NOPE".into(),
            })
            .await,
        Code::NotFound,
        "BILL_NOT_FOUND",
    );

    // Reads.
    assert_eq!(balance(&client, 1).await, "250.00");
    let by_account = client
        .query_balance(QueryBalanceRequest {
            card_no: String::new(),
            account_id: account.clone(),
        })
        .await
        .unwrap();
    assert_eq!(by_account.available, "250.00");
    assert_eq!(by_account.status, "ACTIVE");
    refused(
        client
            .query_balance(QueryBalanceRequest {
                card_no: card(1),
                account_id: account.clone(),
            })
            .await,
        Code::InvalidArgument,
        "MISSING_FIELD",
    );
    let txns = client
        .list_transactions(ListTransactionsRequest {
            card_no: card(1),
            account_id: String::new(),
            limit: 0,
            before_txn_id: String::new(),
        })
        .await
        .unwrap()
        .transactions;
    let kinds: Vec<&str> = txns.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["REFUND", "BILL_PAYMENT", "CASH_DEPOSIT", "CASH_DEPOSIT"]
    );
    let page = client
        .list_transactions(ListTransactionsRequest {
            card_no: card(1),
            account_id: String::new(),
            limit: 2,
            before_txn_id: txns[1].txn_id.clone(),
        })
        .await
        .unwrap()
        .transactions;
    assert_eq!(page, txns[2..]);

    // Loss and replacement, at the window, with the holder's identity.
    refused(
        client.report_loss(at_window(&mut ids, 1, 2)).await,
        Code::PermissionDenied,
        "IDENTITY_MISMATCH",
    );
    let lost = client.report_loss(at_window(&mut ids, 1, 1)).await.unwrap();
    assert_eq!(lost.status, "LOST");
    refused(
        client.deposit_cash(deposit(&mut ids, 1, "10")).await,
        Code::FailedPrecondition,
        "CARD_LOST",
    );
    let found = client.cancel_loss(at_window(&mut ids, 1, 1)).await.unwrap();
    assert_eq!(found.status, "ACTIVE");
    refused(
        client.cancel_loss(at_window(&mut ids, 1, 1)).await,
        Code::FailedPrecondition,
        "CARD_NOT_LOST",
    );
    let replaced = client
        .replace_card(ReplaceCardRequest {
            request_id: ids.next(),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
            old_card_no: card(1),
            new_card_no: card(11),
            person_key: person(1),
        })
        .await
        .unwrap();
    assert_eq!(replaced.account_id, account);
    refused(
        client.deposit_cash(deposit(&mut ids, 1, "10")).await,
        Code::FailedPrecondition,
        "CARD_REPLACED",
    );
    assert_eq!(balance(&client, 11).await, "250.00");

    // Account controls.
    let account_request = |ids: &mut Ids| AccountRequest {
        request_id: ids.next(),
        terminal_id: ADMIN.into(),
        operator_id: "admin".into(),
        account_id: account.clone(),
    };
    let frozen = client.freeze(account_request(&mut ids)).await.unwrap();
    assert_eq!(frozen.status, "FROZEN");
    client
        .post_bill(post(&mut ids, 11, "LAB-2", "10"))
        .await
        .unwrap();
    refused(
        client.pay_bill(pay(&mut ids, 11, "LAB-2")).await,
        Code::FailedPrecondition,
        "ACCOUNT_FROZEN",
    );
    client.unfreeze(account_request(&mut ids)).await.unwrap();
    client.pay_bill(pay(&mut ids, 11, "LAB-2")).await.unwrap();
    let overdraft = |ids: &mut Ids, limit: &str| SetOverdraftRequest {
        request_id: ids.next(),
        terminal_id: ADMIN.into(),
        operator_id: "admin".into(),
        account_id: account.clone(),
        limit: limit.into(),
    };
    let set = client
        .set_overdraft(overdraft(&mut ids, "800"))
        .await
        .unwrap();
    assert_eq!(set.overdraft_limit, "800.00");
    refused(
        client.set_overdraft(overdraft(&mut ids, "1000000")).await,
        Code::InvalidArgument,
        "OVERDRAFT_ABOVE_MAXIMUM",
    );
    // With the overdraft the ¥1000 lab bill goes through: 240 - 1000 = -760.
    let overdrawn = client.pay_bill(pay(&mut ids, 11, "LAB-1")).await.unwrap();
    assert_eq!(overdrawn.balance, "-760.00");
    client
        .deposit_cash(deposit(&mut ids, 11, "1000"))
        .await
        .unwrap();

    // Withdrawal at the window only; everything when no amount is given.
    let withdraw = |ids: &mut Ids, terminal: &str, amount: &str| WithdrawRequest {
        request_id: ids.next(),
        terminal_id: terminal.into(),
        operator_id: if terminal == WINDOW {
            CASHIER.into()
        } else {
            String::new()
        },
        card_no: card(11),
        amount: amount.into(),
        ..Default::default()
    };
    refused(
        client.withdraw(withdraw(&mut ids, KIOSK, "10")).await,
        Code::PermissionDenied,
        "TERMINAL_NOT_ALLOWED",
    );
    refused(
        client.withdraw(withdraw(&mut ids, WINDOW, "10000")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_FUNDS",
    );
    let out = client
        .withdraw(withdraw(&mut ids, WINDOW, ""))
        .await
        .unwrap();
    assert_eq!(
        (out.amount.as_str(), out.balance.as_str()),
        ("240.00", "0.00")
    );
    refused(
        client.withdraw(withdraw(&mut ids, WINDOW, "")).await,
        Code::FailedPrecondition,
        "NOTHING_TO_WITHDRAW",
    );

    // The bank link is not there yet: refused, nothing done.
    refused(
        client
            .top_up_bank_card(TopUpBankCardRequest {
                request_id: ids.next(),
                terminal_id: KIOSK.into(),
                operator_id: String::new(),
                card_no: card(11),
                bank_card_token: "tok-12345678".into(),
                bank_card_masked: "6222****1234".into(),
                amount: "100".into(),
            })
            .await,
        Code::Unimplemented,
        "BANK_LINK_NOT_CONFIGURED",
    );

    // The same request id with another payload.
    let first = deposit(&mut ids, 11, "20");
    client.deposit_cash(first.clone()).await.unwrap();
    let mut reused = first.clone();
    reused.amount = "30".into();
    refused(
        client.deposit_cash(reused).await,
        Code::AlreadyExists,
        "REQUEST_ID_REUSED",
    );

    // Terminals out of service, cash collection and the shift report.
    let out_of_service = client
        .set_terminal_status(SetTerminalStatusRequest {
            request_id: ids.next(),
            terminal_id: ADMIN.into(),
            operator_id: "admin".into(),
            target_terminal_id: KIOSK.into(),
            status: "OUT_OF_SERVICE".into(),
        })
        .await
        .unwrap();
    assert_eq!(out_of_service.status, "OUT_OF_SERVICE");
    refused(
        client.deposit_cash(deposit(&mut ids, 11, "10")).await,
        Code::FailedPrecondition,
        "TERMINAL_OUT_OF_SERVICE",
    );
    let collected = client
        .collect_cash(CollectCashRequest {
            request_id: ids.next(),
            terminal_id: KIOSK.into(),
            operator_id: CASHIER.into(),
            counted: "265".into(),
        })
        .await
        .unwrap();
    // The kiosk took 200 + 50 + 1000 + 20 in cash.
    assert_eq!(collected.expected, "1270.00");
    assert_eq!(collected.difference, "-1005.00");
    let report = client
        .close_shift(ShiftRequest {
            request_id: ids.next(),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
        })
        .await
        .unwrap();
    // The window paid out the withdrawal.
    assert_eq!(report.cash_expected, "-240.00");
    let again = client
        .get_shift_report(GetShiftReportRequest {
            terminal_id: WINDOW.into(),
            seq: report.seq,
        })
        .await
        .unwrap();
    assert_eq!(again, report);
    let today = yinyi_ledger::BusinessDay::of_ms(report.closed_at_ms).to_string();
    let daily = client
        .daily_report(DailyReportRequest { date: today })
        .await
        .unwrap();
    assert_eq!(daily.shifts, vec![report]);
    assert_eq!(daily.collections, vec![collected]);
    // By terminal and channel, kiosks included: the kiosk's cash lines are the cash it took.
    let kiosk_day = daily
        .terminals
        .iter()
        .find(|t| t.terminal_id == KIOSK)
        .expect("the kiosk's day");
    let kiosk_cash = kiosk_day
        .lines
        .iter()
        .filter(|l| l.channel == Channel::Cash as i32)
        .fold(yinyi_ledger::Money::ZERO, |sum, l| {
            sum.checked_add(yinyi_ledger::Money::parse(&l.total).unwrap())
                .unwrap()
        });
    assert_eq!(kiosk_cash, yinyi_ledger::Money::parse("1270").unwrap());
    let day_count: u64 = daily
        .terminals
        .iter()
        .flat_map(|t| &t.lines)
        .map(|l| l.count)
        .sum();
    let channel_count: u64 = daily.by_channel.iter().map(|l| l.count).sum();
    assert_eq!(day_count, channel_count);
    assert!(daily.terminals.iter().any(|t| t.terminal_id == WINDOW));
    refused(
        client
            .daily_report(DailyReportRequest {
                date: "2026-02-30".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ID",
    );

    // The audit trail holds every sensitive operation the tour made, refusals too, with who
    // and where; and nothing else.
    let trail = client
        .list_audit(ListAuditRequest {
            since_ms: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .records;
    let has = |action: &str, outcome: &str| {
        trail
            .iter()
            .any(|r| r.action == action && r.outcome == outcome)
    };
    for (action, outcome) in [
        ("REGISTER_TERMINAL", "OK"),
        ("REGISTER_TERMINAL", "TERMINAL_ALREADY_REGISTERED"),
        ("REPORT_LOSS", "OK"),
        ("REPORT_LOSS", "IDENTITY_MISMATCH"),
        ("REPLACE_CARD", "OK"),
        ("REFUND", "OK"),
        ("FREEZE", "OK"),
        ("SET_OVERDRAFT", "OK"),
        ("WITHDRAW_CASH", "OK"),
        ("WITHDRAW_CASH", "TERMINAL_NOT_ALLOWED"),
        ("COLLECT_CASH", "OK"),
    ] {
        assert!(has(action, outcome), "no {action} {outcome} in {trail:#?}");
    }
    let loss = trail
        .iter()
        .find(|r| r.action == "REPORT_LOSS" && r.outcome == "OK")
        .unwrap();
    assert_eq!(
        (loss.terminal_id.as_str(), loss.operator_id.as_str()),
        (WINDOW, CASHIER)
    );
    assert!(trail.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    assert!(
        trail
            .iter()
            .all(|r| !matches!(r.action.as_str(), "DEPOSIT_CASH" | "PAY_BILL" | "POST_BILL"))
    );

    // Dormant accounts: none inactive since the epoch; every account inactive since tomorrow.
    let none = client
        .dormant_accounts(DormantAccountsRequest {
            inactive_since_ms: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!((none.total, none.total_balance.as_str()), (0, "0.00"));
    let tomorrow = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 86_400_000;
    let all = client
        .dormant_accounts(DormantAccountsRequest {
            inactive_since_ms: tomorrow,
            limit: 1,
        })
        .await
        .unwrap();
    assert!(all.total >= 1, "{all:?}");
    assert_eq!(all.accounts.len(), 1);
    assert!(!all.accounts[0].id_masked.is_empty());

    // Every node holds the same state.
    c.wait_converged(T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_in_bulk_are_issued_once_and_every_node_audits_clean() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&[]);
    let leader = c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("bulk");
    hospital(&client, &mut ids).await;

    // 300 cards and, last, a card number already issued in this very batch.
    let mut cards: Vec<IssueCardRequest> = (1..=300).map(|n| issue(&mut ids, n, "100")).collect();
    let mut twice = issue(&mut ids, 301, "100");
    twice.card_no = card(1);
    cards.push(twice);
    // Through a follower, which forwards the whole call.
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    let via_follower = client_of(&c, vec![c.addr(follower)]);
    let batch = IssueCardsRequest { cards };
    let first = via_follower.issue_cards(batch.clone()).await.unwrap();
    assert_eq!(first.results.len(), 301);
    assert!(first.results[..300].iter().all(|r| r.issued.is_some()));
    assert_eq!(first.results[300].reason, "CARD_ALREADY_EXISTS");
    // The same call again: the same answers, nothing issued twice.
    let again = client.issue_cards(batch.clone()).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(balance(&client, 1).await, "100.00");
    assert_eq!(balance(&client, 300).await, "100.00");

    // Bad input refuses the whole call, naming the card, and issues nothing.
    let mut bad = vec![issue(&mut ids, 401, "100"), issue(&mut ids, 402, "100")];
    bad.push(issue(&mut ids, 403, "1.001"));
    let refusal = client
        .issue_cards(IssueCardsRequest { cards: bad })
        .await
        .unwrap_err();
    assert_eq!(refusal.reason(), Some("INVALID_AMOUNT"));
    assert!(refusal.to_string().contains("cards[2]"), "{refusal}");
    refused(
        client
            .query_balance(QueryBalanceRequest {
                card_no: card(401),
                account_id: String::new(),
            })
            .await,
        Code::NotFound,
        "CARD_NOT_FOUND",
    );
    let mut elsewhere = issue(&mut ids, 404, "");
    elsewhere.terminal_id = "K-0102".into();
    refused(
        client
            .issue_cards(IssueCardsRequest {
                cards: vec![issue(&mut ids, 405, ""), elsewhere],
            })
            .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
    );
    refused(
        client
            .issue_cards(IssueCardsRequest { cards: vec![] })
            .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
    );

    // Every node's own balance audit: 300 accounts of 100.00, nothing wrong, one digest.
    c.wait_converged(T).await.unwrap();
    let mut digests = std::collections::BTreeSet::new();
    for id in c.running() {
        let audit = client_of(&c, vec![c.addr(id)])
            .audit_balances(AuditRequest { with_digest: true })
            .await
            .unwrap();
        assert!(audit.ok, "node {id}: {:?}", audit.problems);
        assert_eq!(audit.node, id);
        assert_eq!(audit.accounts, 300);
        assert_eq!(audit.total_balance, "30000.00");
        assert_eq!(audit.expected_total, "30000.00");
        assert_eq!(audit.unresolved_bank_ops, 0);
        digests.insert(audit.digest);
    }
    assert_eq!(digests.len(), 1);
}

/// The business rules are replicated state: an admin sets them once, every node (a follower
/// asked directly too, and a new leader after the old one dies) applies them, and `GetRules`
/// shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_set_by_an_admin_hold_on_every_node_and_across_a_leader_change() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(&[]);
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("rules");
    hospital(&client, &mut ids).await;
    client.issue_card(issue(&mut ids, 1, "")).await.unwrap();
    let defaults = client.get_rules(GetRulesRequest {}).await.unwrap();
    assert_eq!(
        (defaults.single_txn_limit.as_str(), defaults.set),
        ("50000.00", false)
    );
    client
        .deposit_cash(deposit(&mut ids, 1, "2000"))
        .await
        .unwrap();
    let stricter = BusinessRules {
        single_txn_limit: "1000.00".into(),
        min_first_deposit: "50.00".into(),
        max_overdraft: "500.00".into(),
        set: false,
    };
    let set = |ids: &mut Ids, operator: &str, rules: BusinessRules| SetRulesRequest {
        request_id: ids.next(),
        terminal_id: ADMIN.into(),
        operator_id: operator.into(),
        rules: Some(rules),
    };
    refused(
        client.set_rules(set(&mut ids, "", stricter.clone())).await,
        Code::InvalidArgument,
        "OPERATOR_REQUIRED",
    );
    let mut bad = stricter.clone();
    bad.min_first_deposit = "5000.00".into();
    refused(
        client.set_rules(set(&mut ids, "fin-1", bad)).await,
        Code::InvalidArgument,
        "INVALID_AMOUNT",
    );
    let now = client
        .set_rules(set(&mut ids, "fin-1", stricter.clone()))
        .await
        .unwrap();
    assert_eq!((now.single_txn_limit.as_str(), now.set), ("1000.00", true));
    // Every node refuses what the new rules refuse, the followers too.
    for id in c.running() {
        let one = client_of(&c, vec![c.addr(id)]);
        refused(
            one.deposit_cash(deposit(&mut ids, 1, "2000")).await,
            Code::InvalidArgument,
            "INVALID_AMOUNT",
        );
    }
    let leader = c.wait_for_leader(T).await.unwrap();
    c.kill(leader).unwrap();
    c.wait_for_leader(T).await.unwrap();
    refused(
        client.issue_card(issue(&mut ids, 2, "20")).await,
        Code::InvalidArgument,
        "BELOW_MINIMUM_DEPOSIT",
    );
    client
        .deposit_cash(deposit(&mut ids, 1, "1000"))
        .await
        .unwrap();
    assert_eq!(balance(&client, 1).await, "3000.00");
    let shown = client.get_rules(GetRulesRequest {}).await.unwrap();
    assert_eq!(
        (shown.min_first_deposit.as_str(), shown.set),
        ("50.00", true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_to_two_nodes_applies_once_and_answers_the_same() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&[]);
    let leader = c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("twice");
    hospital(&client, &mut ids).await;
    client.issue_card(issue(&mut ids, 1, "")).await.unwrap();

    let request = deposit(&mut ids, 1, "30");
    let mut answers = Vec::new();
    // To the leader and to a follower (which forwards), then again to the leader.
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    for id in [leader, follower, leader] {
        let one = client_of(&c, vec![c.addr(id)]);
        answers.push(one.deposit_cash(request.clone()).await.unwrap());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(balance(&client, 1).await, "30.00");
    let txns = client
        .list_transactions(ListTransactionsRequest {
            card_no: card(1),
            account_id: String::new(),
            limit: 100,
            before_txn_id: String::new(),
        })
        .await
        .unwrap()
        .transactions;
    assert_eq!(txns.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_follower_is_served_through_the_leader() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&[]);
    let leader = c.wait_for_leader(T).await.unwrap();
    let followers: Vec<u64> = c.running().into_iter().filter(|&id| id != leader).collect();
    // A client that knows only the followers.
    let client = client_of(&c, followers.iter().map(|&id| c.addr(id)).collect());
    let mut ids = Ids::new("follower");
    hospital(&client, &mut ids).await;
    client.issue_card(issue(&mut ids, 1, "100")).await.unwrap();
    let paid = {
        client
            .post_bill(post(&mut ids, 1, "B-1", "12.30"))
            .await
            .unwrap();
        client.pay_bill(pay(&mut ids, 1, "B-1")).await.unwrap()
    };
    assert_eq!(paid.balance, "87.70");
    assert_eq!(balance(&client, 1).await, "87.70");
    let status = client
        .cluster_status(ClusterStatusRequest { with_digest: false })
        .await
        .unwrap();
    assert_eq!(status.leader, leader);
    assert_eq!(status.members.len(), 3);

    // Load balancers see every service serving on every node, followers included.
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    for &id in &followers {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", c.addr(id)))
            .unwrap()
            .tls_config(c.client_tls())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in [
            "yinyi.v1.PaymentService",
            "yinyi.v1.HisService",
            "yinyi.v1.TerminalService",
            "yinyi.v1.AdminService",
        ] {
            let reply = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.status, ServingStatus::Serving as i32, "{service}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_finish_through_a_leader_kill_and_nothing_applies_twice() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(&[]);
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("kill");
    hospital(&client, &mut ids).await;
    const CLIENTS: u64 = 8;
    const EACH: u64 = 60;
    for n in 1..=CLIENTS {
        client.issue_card(issue(&mut ids, n, "")).await.unwrap();
    }

    let mut tasks = Vec::new();
    for n in 1..=CLIENTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Ids::new(&format!("kill-{n}"));
            let mut sent = Vec::new();
            for i in 0..EACH {
                // Deposits of 1..=3 yuan; each acknowledged once.
                let request = deposit(&mut ids, n, &(1 + i % 3).to_string());
                let receipt = client.deposit_cash(request.clone()).await.unwrap();
                sent.push((request, receipt));
            }
            sent
        }));
    }
    // Kill the leader while the clients are busy, then bring it back.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let st = client
            .cluster_status(ClusterStatusRequest { with_digest: false })
            .await
            .unwrap();
        if st.node.map_or(0, |n| n.applied) > 60 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = c.wait_for_leader(T).await.unwrap();
    c.kill(leader).unwrap();
    let mut acknowledged = BTreeMap::new();
    for task in tasks {
        for (request, receipt) in task.await.unwrap() {
            acknowledged.insert(request.request_id.clone(), (request, receipt));
        }
    }
    c.spawn(leader).unwrap();
    assert_eq!(acknowledged.len() as u64, CLIENTS * EACH);

    // Every balance is the sum of its acknowledged deposits, each applied once.
    for n in 1..=CLIENTS {
        let expected: u64 = (0..EACH).map(|i| 1 + i % 3).sum();
        assert_eq!(balance(&client, n).await, format!("{expected}.00"));
        let txns = client
            .list_transactions(ListTransactionsRequest {
                card_no: card(n),
                account_id: String::new(),
                limit: 1000,
                before_txn_id: String::new(),
            })
            .await
            .unwrap()
            .transactions;
        assert_eq!(txns.len() as u64, EACH);
    }
    // A retry of any acknowledged request answers the same receipt.
    for (request, receipt) in acknowledged.values().take(20) {
        assert_eq!(
            &client.deposit_cash(request.clone()).await.unwrap(),
            receipt
        );
    }
    c.wait_converged(T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_passivated_back_under_the_cap() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    const ACCOUNTS: u64 = 100_000;
    const CAP: u64 = 20_000;
    const WORKERS: u64 = 64;
    let (_dir, c) = cluster(&[
        "--max-live-actors",
        "20000",
        "--actor-idle-timeout-ms",
        "3000",
    ]);
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c, c.addrs());
    let mut ids = Ids::new("idle");
    hospital(&client, &mut ids).await;
    // One kiosk per worker, as in a hall full of them: a terminal's work is serial.
    let kiosk = |w: u64| format!("K-{:04}", 1000 + w);
    for w in 0..WORKERS {
        register(&client, &mut ids, &kiosk(w)).await;
    }
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let client = client.clone();
        let kiosk = kiosk(w);
        tasks.push(tokio::spawn(async move {
            let mut ids = Ids::new(&format!("idle-{w}"));
            let mut n = 1 + w;
            while n <= ACCOUNTS {
                let mut card = issue(&mut ids, n, "");
                card.terminal_id = kiosk.clone();
                client.issue_card(card).await.unwrap();
                let mut touch = deposit(&mut ids, n, "1");
                touch.terminal_id = kiosk.clone();
                client.deposit_cash(touch).await.unwrap();
                n += WORKERS;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // The leader now (on two shared cores it may have changed during the run): its actors.
    let leader = c.wait_for_leader(T).await.unwrap();
    let leader_client = client_of(&c, vec![c.addr(leader)]);
    let live = || async {
        leader_client
            .cluster_status(ClusterStatusRequest { with_digest: false })
            .await
            .unwrap()
            .node
            .unwrap()
            .live_account_actors
    };
    let at_end = live().await;
    assert!(
        at_end > 0,
        "the run left no account actor alive to passivate"
    );
    // Idle now: the live actors fall under the cap, then to none.
    let deadline = tokio::time::Instant::now() + T;
    let mut under_cap = false;
    loop {
        let now = live().await;
        under_cap |= now <= CAP;
        if now == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} account actors still live (cap {CAP}, idle timeout 3 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(under_cap);
}

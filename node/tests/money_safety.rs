//! Issue 15, money safety, through the real API of real 3-node clusters: each test names the
//! path it closes and fails on the code before the fix. (The bank saga's paths are in
//! `bank.rs`; the hostile credential of every role is `tests/tests/hostile.rs`.)

use std::time::Duration;

use tonic::Code;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_node::local::LocalCluster;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(30);
const DAY_MS: i64 = 86_400_000;

const ADMIN: &str = "A-ADMIN";
const KIOSK: &str = "K-0101";
const KIOSK2: &str = "K-0102";
const WINDOW: &str = "W-03";
const HIS: &str = "H-HIS";

fn exe() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_yinyi"))
}

fn client_of(c: &LocalCluster) -> Client {
    let mut config = c.api_config();
    config.nodes = c
        .running()
        .into_iter()
        .map(|id| c.addr(id))
        .collect::<Vec<_>>();
    config.deadline = T;
    Client::new(config).unwrap()
}

fn person(n: u64) -> String {
    format!("{n:064x}")
}

fn card(n: u64) -> String {
    format!("HC{n:08}")
}

#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, ApiError>, code: Code, reason: &str) {
    match result {
        Err(ApiError::Refused {
            code: c, reason: r, ..
        }) => assert_eq!((c, r.as_str()), (code, reason)),
        other => panic!("expected {code:?} {reason}, got {other:?}"),
    }
}

async fn register(client: &Client, terminal: &str) {
    client
        .register_terminal(RegisterTerminalRequest {
            request_id: format!("reg-{terminal}"),
            terminal_id: ADMIN.into(),
            operator_id: "admin".into(),
            new_terminal_id: terminal.into(),
        })
        .await
        .unwrap();
}

fn issue(
    request_id: &str,
    terminal: &str,
    card_n: u64,
    person_n: u64,
    deposit: &str,
) -> IssueCardRequest {
    IssueCardRequest {
        request_id: request_id.into(),
        terminal_id: terminal.into(),
        operator_id: String::new(),
        card_no: card(card_n),
        card_kind: CardKind::Hospital as i32,
        holder_name: format!("patient {person_n}"),
        person_key: person(person_n),
        id_masked: "110***********1234".into(),
        phone: "138****0000".into(),
        first_deposit: deposit.into(),
    }
}

fn deposit(request_id: &str, terminal: &str, card_n: u64, amount: &str) -> DepositCashRequest {
    DepositCashRequest {
        request_id: request_id.into(),
        terminal_id: terminal.into(),
        operator_id: if terminal.starts_with('W') {
            "op-li".into()
        } else {
            String::new()
        },
        card_no: card(card_n),
        amount: amount.into(),
    }
}

async fn balance(client: &Client, card_n: u64) -> String {
    client
        .query_balance(QueryBalanceRequest {
            card_no: card(card_n),
            account_id: String::new(),
        })
        .await
        .unwrap()
        .balance
}

/// Creates a credential through the API and returns a client that uses it, once every node
/// knows it (a follower that has not applied it yet refuses it as unknown).
async fn credential(
    c: &LocalCluster,
    admin: &Client,
    id: &str,
    roles: &[&str],
    bound: &str,
) -> Client {
    let secret = yinyi_api::credential::new_secret();
    admin
        .put_credential(PutCredentialRequest {
            request_id: format!("cred-{id}"),
            terminal_id: ADMIN.into(),
            operator_id: "sec".into(),
            credential_id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            bound_terminal_id: bound.into(),
            secret_sha256: yinyi_api::credential::secret_sha256(&secret),
        })
        .await
        .unwrap();
    c.wait_applied_everywhere(T).await.unwrap();
    admin.with_credential(&format!("{id}:{secret}")).unwrap()
}

/// Issue 15, path 1: a client can take neither another terminal's request ids nor the
/// cluster's own. Before, the dedup table was global: a kiosk sending the honest kiosk's next
/// id (or a saga step's `saga:REF:complete`) made the real request fail as REQUEST_ID_REUSED —
/// for a saga step, with the patient's card charged and the account never credited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_the_terminals_own_and_system_ids_are_out_of_reach() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(exe(), dir.path(), 3, vec![]).unwrap();
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c);
    for t in [KIOSK, KIOSK2] {
        register(&client, t).await;
    }
    client
        .issue_card(issue("K-0101:000001", KIOSK, 1, 1, "100"))
        .await
        .unwrap();

    // The attacker's kiosk sends the honest kiosk's next id first, with its own payload.
    client
        .deposit_cash(deposit("K-0101:000002", KIOSK2, 1, "1"))
        .await
        .unwrap();
    // The honest request is applied as its terminal meant it.
    let receipt = client
        .deposit_cash(deposit("K-0101:000002", KIOSK, 1, "50"))
        .await
        .unwrap();
    assert_eq!(receipt.balance, "151.00");
    // Retries of each are answered from their own terminal's record.
    client
        .deposit_cash(deposit("K-0101:000002", KIOSK, 1, "50"))
        .await
        .unwrap();
    assert_eq!(balance(&client, 1).await, "151.00");

    // The system's namespace: neither its ids nor its terminals.
    refused(
        client
            .deposit_cash(deposit("saga:Y0000000000000004096:complete", KIOSK, 1, "1"))
            .await,
        Code::InvalidArgument,
        "INVALID_ID",
    );
    refused(
        client
            .deposit_cash(deposit("K-0101:000003", "S-SAGA", 1, "1"))
            .await,
        Code::PermissionDenied,
        "SYSTEM_TERMINAL",
    );
    assert_eq!(balance(&client, 1).await, "151.00");
}

/// Issue 15, path 5: an early answer never differs from what `apply` would decide. Before, the
/// account actor answered from a cached balance: a deposit through another actor (a second
/// card issued to the same person, with a first deposit, goes through the terminal's actor)
/// left it stale, and a bill the account could pay was refused INSUFFICIENT_FUNDS; and a retry
/// by another operator under the same id was answered as a retry, where `apply` says the id
/// was reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_are_the_ledgers_own() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(exe(), dir.path(), 3, vec![]).unwrap();
    c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c);
    for t in [KIOSK, WINDOW, HIS] {
        register(&client, t).await;
    }
    client
        .open_shift(ShiftRequest {
            request_id: "shift-1".into(),
            terminal_id: WINDOW.into(),
            operator_id: "op-li".into(),
        })
        .await
        .unwrap();
    client
        .issue_card(issue("i-1", KIOSK, 1, 7, "10"))
        .await
        .unwrap();
    let bill = client
        .post_bill(PostBillRequest {
            request_id: "b-1".into(),
            terminal_id: HIS.into(),
            bill_id: "OP-1".into(),
            card_no: card(1),
            kind: BillKind::Outpatient as i32,
            amount: "50".into(),
            insurance: None,
        })
        .await
        .unwrap();
    let pay = |request_id: &str| PayBillRequest {
        request_id: request_id.into(),
        terminal_id: KIOSK.into(),
        bill_id: bill.bill_id.clone(),
        card_no: card(1),
        ..Default::default()
    };
    // The account's actor now knows a balance of 10.
    refused(
        client.pay_bill(pay("p-1")).await,
        Code::FailedPrecondition,
        "INSUFFICIENT_FUNDS",
    );
    // A second card for the same person, with a first deposit: through the kiosk's actor.
    let second = client
        .issue_card(issue("i-2", KIOSK, 2, 7, "100"))
        .await
        .unwrap();
    assert!(second.existing_account, "{second:?}");
    assert_eq!(balance(&client, 1).await, "110.00");
    let paid = client.pay_bill(pay("p-2")).await.unwrap();
    assert_eq!(paid.balance, "60.00");

    // Another operator under the same request id is a reused id, not a retry.
    let first = deposit("w-1", WINDOW, 1, "20");
    client.deposit_cash(first.clone()).await.unwrap();
    let mut other_operator = first.clone();
    other_operator.operator_id = "op-wang".into();
    refused(
        client.deposit_cash(other_operator).await,
        Code::AlreadyExists,
        "REQUEST_ID_REUSED",
    );
    assert_eq!(balance(&client, 1).await, "80.00");
}

/// Issue 15, path 6: who may do what has one source (the ledger's table of terminal kinds,
/// each role acting only through its own kind), and every credential can be revoked. Before:
/// `ReportLoss` passed the role check from a kiosk; an unbound kiosk credential could deposit
/// into a window's open shift; `Heartbeat` answered for any terminal; a bootstrap credential
/// could not be revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_acts_only_through_its_own_terminals_and_every_credential_can_be_revoked() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let ops_secret = yinyi_api::credential::new_secret();
    let c = LocalCluster::start(
        exe(),
        dir.path(),
        3,
        vec![
            "--bootstrap-credential".into(),
            yinyi_api::credential::bootstrap_entry(&format!("ops:{ops_secret}"), "admin"),
        ],
    )
    .unwrap();
    c.wait_for_leader(T).await.unwrap();
    let admin = client_of(&c);
    for t in [KIOSK, KIOSK2, WINDOW] {
        register(&admin, t).await;
    }
    admin
        .open_shift(ShiftRequest {
            request_id: "shift-1".into(),
            terminal_id: WINDOW.into(),
            operator_id: "op-li".into(),
        })
        .await
        .unwrap();
    admin
        .issue_card(issue("i-1", KIOSK, 1, 1, "100"))
        .await
        .unwrap();

    let kiosk = credential(&c, &admin, "kiosk-any", &["kiosk"], "").await;
    // A kiosk cannot report a loss (a window's job, with the holder's ID).
    let loss = CardRequest {
        request_id: "k-loss".into(),
        terminal_id: KIOSK.into(),
        operator_id: String::new(),
        card_no: card(1),
        person_key: person(1),
    };
    let e = kiosk.report_loss(loss).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("may not call"), "{e}");
    // An unbound kiosk credential cannot act through the window's open shift.
    refused(
        kiosk
            .deposit_cash(deposit("k-at-window", WINDOW, 1, "10"))
            .await,
        Code::PermissionDenied,
        "WRONG_TERMINAL_KIND",
    );
    assert_eq!(balance(&admin, 1).await, "100.00");
    // A credential bound to one kiosk cannot heartbeat for another.
    let bound = credential(&c, &admin, "kiosk-0102", &["kiosk"], KIOSK2).await;
    bound
        .heartbeat(HeartbeatRequest {
            terminal_id: KIOSK2.into(),
        })
        .await
        .unwrap();
    refused(
        bound
            .heartbeat(HeartbeatRequest {
                terminal_id: KIOSK.into(),
            })
            .await,
        Code::PermissionDenied,
        "WRONG_TERMINAL",
    );
    // An admin credential cannot refund (the ledger never lets an A- terminal refund).
    let admin_only = credential(&c, &admin, "admin-only", &["admin"], "").await;
    let e = admin_only
        .refund(RefundRequest {
            request_id: "a-refund".into(),
            terminal_id: ADMIN.into(),
            bill_id: "OP-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");

    // The bootstrap credential `ops` works, is revoked through the API, and then is refused
    // by every node although their config still lists it.
    let ops = admin.with_credential(&format!("ops:{ops_secret}")).unwrap();
    ops.cluster_status(ClusterStatusRequest::default())
        .await
        .unwrap();
    admin
        .revoke_credential(RevokeCredentialRequest {
            request_id: "revoke-ops".into(),
            terminal_id: ADMIN.into(),
            operator_id: "sec".into(),
            credential_id: "ops".into(),
        })
        .await
        .unwrap();
    for id in c.running() {
        let mut config = c.api_config();
        config.nodes = vec![c.addr(id)];
        config.deadline = T;
        let on_node = Client::new(config)
            .unwrap()
            .with_credential(&format!("ops:{ops_secret}"))
            .unwrap();
        // Every node applies the revocation (a follower may lag a moment behind the leader).
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match on_node
                .cluster_status(ClusterStatusRequest::default())
                .await
            {
                Err(e) if e.code() == Some(Code::Unauthenticated) => break,
                other => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "node {id} still accepts the revoked bootstrap credential: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Its id can never be given to a replicated credential.
    let e = admin
        .put_credential(PutCredentialRequest {
            request_id: "cred-ops-again".into(),
            terminal_id: ADMIN.into(),
            operator_id: "sec".into(),
            credential_id: "ops".into(),
            roles: vec!["admin".into()],
            bound_terminal_id: String::new(),
            secret_sha256: yinyi_api::credential::secret_sha256("x"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::AlreadyExists), "{e}");
}

/// Issue 15, path 4: time stamped on commands never goes back. Before, a new leader whose
/// clock was behind the old one's stamped its own time: near midnight a terminal's business
/// day went back, and the finished day's report was replaced by a partial one. Here the two
/// followers run a day behind; after the leader dies, what the new leader stamps is still at or
/// after everything already applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_with_its_clock_behind_never_stamps_time_backwards() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(exe(), dir.path(), 3, vec![]).unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let client = client_of(&c);
    register(&client, KIOSK).await;
    client
        .issue_card(issue("i-1", KIOSK, 1, 1, "100"))
        .await
        .unwrap();
    client
        .deposit_cash(deposit("d-1", KIOSK, 1, "10"))
        .await
        .unwrap();

    // Restart both followers with their clocks a day behind, one at a time, each caught up.
    let followers: Vec<u64> = c.running().into_iter().filter(|&id| id != leader).collect();
    for &id in &followers {
        c.kill(id).unwrap();
        c.set_node_env(
            id,
            vec![(
                yinyi_consensus::CLOCK_SKEW_ENV.to_string(),
                (-DAY_MS).to_string(),
            )],
        );
        c.spawn(id).unwrap();
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let statuses = c.statuses().await.unwrap_or_default();
            let applied = |n: u64| statuses.iter().find(|s| s.id == n).and_then(|s| s.applied);
            if applied(id).is_some() && applied(id) == applied(leader) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.kill(leader).unwrap();
    let new_leader = c.wait_for_leader(T).await.unwrap();
    assert!(followers.contains(&new_leader));
    let client = client_of(&c);
    client
        .deposit_cash(deposit("d-2", KIOSK, 1, "10"))
        .await
        .unwrap();

    let history = client
        .list_transactions(ListTransactionsRequest {
            card_no: card(1),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .transactions;
    assert_eq!(history.len(), 3, "{history:?}");
    // Newest first: each entry's time at or after the one before it in the log.
    for pair in history.windows(2) {
        assert!(
            pair[0].at_ms >= pair[1].at_ms,
            "time went back: {} stamped {} after {} at {}",
            pair[0].txn_id,
            pair[0].at_ms,
            pair[1].txn_id,
            pair[1].at_ms
        );
    }
}

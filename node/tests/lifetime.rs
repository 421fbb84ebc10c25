//! Issue 17, a year in production, through the real API of real 3-node clusters: request
//! records let go after their retention (on every node alike), and one credential held to its
//! rate. (Streaming snapshots: `cluster.rs`; power cuts and full disks: `tests/tests/power.rs`.)

use std::time::{Duration, Instant};

use tonic::Code;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_node::local::LocalCluster;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0101";
const CARD: &str = "HC00000001";

/// A 3-node cluster whose nodes all get `env`.
fn cluster(dir: &std::path::Path, env: &[(&str, &str)]) -> LocalCluster {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_yinyi"));
    let mut c = LocalCluster::prepare(exe, dir, 3, Vec::new()).unwrap();
    for id in 1..=3 {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        c.set_node_env(id, env.collect());
        c.spawn(id).unwrap();
    }
    c
}

fn client(c: &LocalCluster, nodes: Vec<String>) -> Client {
    let mut config = c.api_config();
    config.nodes = nodes;
    config.deadline = T;
    Client::new(config).unwrap()
}

/// Registers the kiosk and issues the card with ¥100.
async fn a_patient(client: &Client) {
    client
        .register_terminal(RegisterTerminalRequest {
            request_id: "reg-kiosk".into(),
            terminal_id: "A-ADMIN".into(),
            operator_id: "admin".into(),
            new_terminal_id: KIOSK.into(),
        })
        .await
        .unwrap();
    client
        .issue_card(IssueCardRequest {
            request_id: "issue-1".into(),
            terminal_id: KIOSK.into(),
            operator_id: String::new(),
            card_no: CARD.into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "patient 1".into(),
            person_key: format!("{:064x}", 1),
            id_masked: "110***********1234".into(),
            phone: "138****0000".into(),
            first_deposit: "100".into(),
        })
        .await
        .unwrap();
}

async fn deposit(client: &Client, request_id: &str) -> String {
    client
        .deposit_cash(DepositCashRequest {
            request_id: request_id.into(),
            terminal_id: KIOSK.into(),
            operator_id: String::new(),
            card_no: CARD.into(),
            amount: "10".into(),
        })
        .await
        .unwrap()
        .balance
}

/// Request records stay only for their retention (shortened here by the test switch; 30 days
/// by default): within it a retry is answered from the record, after it the record is gone on
/// every node alike (the digests agree) and a retry is a new request. Before the fix every
/// record stayed for ever, so a terminal could fill the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_records_past_their_retention_are_let_go_on_every_node() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(
        dir.path(),
        &[(yinyi_node::retention::RETENTION_MS_ENV, "2000")],
    );
    c.wait_for_leader(T).await.unwrap();
    let client = client(&c, c.addrs());
    a_patient(&client).await;
    assert_eq!(deposit(&client, "dep-1").await, "110.00");
    assert_eq!(
        deposit(&client, "dep-1").await,
        "110.00",
        "a retry within retention"
    );
    let deadline = Instant::now() + T;
    loop {
        let balance = deposit(&client, "dep-1").await;
        if balance != "110.00" {
            assert_eq!(
                balance, "120.00",
                "the retry after retention is one new deposit"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request record was never let go"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses = c.wait_converged(T).await.unwrap();
    assert_eq!(statuses.len(), 3);
}

/// One credential beyond its rate on a node is told RESOURCE_EXHAUSTED with reason
/// RATE_LIMITED, and served again once it slows down. Before the fix a credential could make
/// the cluster store as fast as it could send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_beyond_its_rate_is_told_to_slow_down() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(dir.path(), &[("YINYI_REQUESTS_PER_CREDENTIAL_PER_S", "5")]);
    let leader = c.wait_for_leader(T).await.unwrap();
    let client = client(&c, vec![c.addr(leader)]);
    a_patient(&client).await;
    // A client that gives up quickly: the API client backs off and retries a
    // RESOURCE_EXHAUSTED on its own, so the refusal shows as the last answer it got.
    let mut config = c.api_config();
    config.nodes = vec![c.addr(leader)];
    config.deadline = Duration::from_millis(150);
    let impatient = Client::new(config).unwrap();
    let mut limited = 0;
    for i in 0..40 {
        match impatient
            .query_balance(QueryBalanceRequest {
                card_no: CARD.into(),
                account_id: String::new(),
            })
            .await
        {
            Ok(_) => {}
            Err(ApiError::DeadlineExceeded { last, .. }) => {
                assert!(
                    last.starts_with(&format!("{:?}", Code::ResourceExhausted))
                        && last.contains("slow down"),
                    "query {i}: {last}"
                );
                limited += 1;
            }
            Err(other) => panic!("query {i}: {other:?}"),
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 40 quick queries were limited"
    );
    // Refilled at 5 a second: served again after a pause.
    let deadline = Instant::now() + T;
    loop {
        let answer = client
            .query_balance(QueryBalanceRequest {
                card_no: CARD.into(),
                account_id: String::new(),
            })
            .await;
        match answer {
            Ok(reply) => {
                assert_eq!(reply.balance, "100.00");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

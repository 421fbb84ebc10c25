//! Day-two operations on real clusters: a backup restored into a fresh cluster (new data
//! directories, new ports, new certificates) gives the same digest and serves on; a leader
//! stopped with SIGTERM hands leadership over before it exits.

use std::process::Command;
use std::time::Duration;

use yinyi_api::Client;
use yinyi_api::v1::*;
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const T: Duration = Duration::from_secs(30);

async fn client(c: &LocalCluster) -> Client {
    let mut config = c.api_config();
    config.deadline = T;
    Client::new(config).unwrap()
}

async fn setup(client: &Client, cards: u64) {
    client
        .register_terminal(RegisterTerminalRequest {
            request_id: "reg-k".into(),
            terminal_id: "A-ADMIN".into(),
            operator_id: "OPS".into(),
            new_terminal_id: "K-0101".into(),
        })
        .await
        .unwrap();
    for n in 1..=cards {
        client
            .issue_card(IssueCardRequest {
                request_id: format!("issue-{n}"),
                terminal_id: "K-0101".into(),
                card_no: format!("HC{n:08}"),
                card_kind: CardKind::Hospital as i32,
                holder_name: format!("patient {n}"),
                person_key: format!("{n:064x}"),
                id_masked: "1101**********0011".into(),
                first_deposit: format!("{}", 100 + n),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_fresh_cluster_has_the_same_digest_and_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let exe = yinyi_exe().unwrap();
    let mut a = LocalCluster::start(&exe, &dir.path().join("a"), 3, vec![]).unwrap();
    let mut leader = a.wait_for_leader(T).await.unwrap();
    setup(&client(&a).await, 20).await;
    // Issue 17, point 4: two leader changes before the backup, so its last entry's term is
    // above 1 (a restore that forgot the term never committed anything after this).
    let mut term = 0;
    for _ in 0..2 {
        a.kill(leader).unwrap();
        // A new leader of a later term among the nodes still running.
        let deadline = tokio::time::Instant::now() + T;
        let next = loop {
            let statuses = a.statuses().await.unwrap_or_default();
            if let Some(s) = statuses
                .iter()
                .find(|s| s.state == "Leader" && s.leader == Some(s.id) && s.term > term)
            {
                term = s.term;
                break s.id;
            }
            assert!(tokio::time::Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        a.spawn(leader).unwrap();
        leader = next;
    }
    let statuses = a.wait_converged(T).await.unwrap();
    assert!(
        statuses.iter().all(|s| s.term >= 3),
        "two leader changes: {statuses:?}"
    );
    let before = statuses;

    // `yinyi ctl backup` on a follower (any node holds everything committed).
    let follower = a.running().into_iter().find(|&id| id != leader).unwrap();
    let backup = dir.path().join("backup");
    let take_backup = || {
        Command::new(&exe)
            .args(["ctl", "--node", &a.addr(follower), "--certs"])
            .arg(a.tls_dir())
            .args(["--credential", a.credential(), "backup", "--out"])
            .arg(&backup)
            .output()
            .unwrap()
    };
    let out = take_backup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: yinyi_consensus::backup::BackupInfo =
        serde_json::from_str(&std::fs::read_to_string(backup.join("backup.json")).unwrap())
            .unwrap();
    assert_eq!(Some(&info.digest), before[0].digest.as_ref());
    // A second backup into the same place is refused, not merged.
    assert!(!take_backup().status.success());
    drop(a);

    // A new cluster: other ports, other data, other certificates; every node restored from
    // the one backup with `yinyi ctl restore`, then started.
    let mut b = LocalCluster::prepare(&exe, &dir.path().join("b"), 3, vec![]).unwrap();
    let restore = |data: &std::path::Path| {
        Command::new(&exe)
            .args(["ctl", "restore", "--backup"])
            .arg(&backup)
            .arg("--data")
            .arg(data)
            .args(["--peers", &b.peers_arg()])
            .output()
            .unwrap()
    };
    for id in 1..=3u64 {
        let out = restore(&b.nodes[&id].data);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Restoring over an existing database is refused.
    assert!(!restore(&b.nodes[&1].data).status.success());
    for id in 1..=3u64 {
        b.spawn(id).unwrap();
    }
    b.wait_for_leader(T).await.unwrap();
    let after = b.wait_converged(T).await.unwrap();
    for s in &after {
        assert_eq!(s.digest.as_ref(), Some(&info.digest), "node {}", s.id);
    }
    // It serves on: balances from before, and new writes.
    let cb = client(&b).await;
    let balance = cb
        .query_balance(QueryBalanceRequest {
            card_no: "HC00000007".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(balance.balance, "107.00");
    cb.deposit_cash(DepositCashRequest {
        request_id: "after-restore".into(),
        terminal_id: "K-0101".into(),
        card_no: "HC00000007".into(),
        amount: "50".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let converged = b.wait_converged(T).await.unwrap();
    assert_ne!(converged[0].digest.as_ref(), Some(&info.digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_leadership_over_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let cl = client(&c).await;
    setup(&cl, 3).await;
    // Writes keep coming while the leader stops.
    let writer = {
        let cl = cl.clone();
        tokio::spawn(async move {
            let mut acked = 0u64;
            for n in 0..400u64 {
                cl.deposit_cash(DepositCashRequest {
                    request_id: format!("during-{n}"),
                    terminal_id: "K-0101".into(),
                    card_no: format!("HC{:08}", n % 3 + 1),
                    amount: "1".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                acked += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop(leader).unwrap();
    let log = std::fs::read_to_string(c.nodes[&leader].data.with_extension("log")).unwrap();
    // A log written to a file is plain text (issue 22, point 5): no terminal colour codes.
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    assert!(
        log.contains("leadership handed over"),
        "the stopped leader did not hand over:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let next = c.wait_for_leader(T).await.unwrap();
    assert_ne!(next, leader);
    assert_eq!(writer.await.unwrap(), 400);
    // Every deposit is in, once: 3 cards, 101+102+103 opening, 400 yuan since.
    let mut total = yinyi_ledger::Money::ZERO;
    for n in 1..=3 {
        let b = cl
            .query_balance(QueryBalanceRequest {
                card_no: format!("HC{n:08}"),
                ..Default::default()
            })
            .await
            .unwrap();
        total = total
            .checked_add(yinyi_ledger::Money::parse(&b.balance).unwrap())
            .unwrap();
    }
    assert_eq!(total, yinyi_ledger::Money::from_yuan(706));
    c.spawn(leader).unwrap();
    c.wait_converged(T).await.unwrap();
}

/// Issue 21: openraft asks its network for a new client for every linearizable read (one
/// heartbeat round to the followers each). A new client was a new TCP connection and TLS
/// handshake per read and follower — a tenth of the cluster's CPU under the anchor mix, and
/// a stream of sockets in TIME_WAIT. The nodes now keep one connection per peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_reads_reuse_its_connections_to_the_followers() {
    let dir = tempfile::tempdir().unwrap();
    let chaos = yinyi_tests::harness::Chaos::start(dir.path(), 3, &[])
        .await
        .unwrap();
    let leader = chaos.leader().await.unwrap();
    let mut config = chaos.cluster.api_config();
    config.deadline = T;
    config.nodes = vec![chaos.cluster.addr(leader)];
    let cl = Client::new(config).unwrap();
    setup(&cl, 1).await;
    let query = || {
        cl.query_balance(QueryBalanceRequest {
            card_no: "HC00000001".into(),
            ..Default::default()
        })
    };
    query().await.unwrap();
    let followers: Vec<u64> = chaos.ids().into_iter().filter(|&id| id != leader).collect();
    let before: Vec<u64> = followers
        .iter()
        .map(|&f| chaos.connections(leader, f))
        .collect();
    const READS: u64 = 100;
    for _ in 0..READS {
        assert_eq!(query().await.unwrap().balance, "101.00");
    }
    // The leader's own reads, not reads forwarded to another after an election.
    assert_eq!(chaos.leader().await.unwrap(), leader, "leadership moved");
    for (f, before) in followers.iter().zip(before) {
        assert!(
            before >= 1,
            "the leader never dialled node {f} through its proxy"
        );
        let opened = chaos.connections(leader, *f) - before;
        assert!(
            opened <= 2,
            "{READS} reads on the leader opened {opened} connections to node {f}"
        );
    }
}

//! A short form of each nemesis (about 15 s of load, a strike every 3 s) against a real
//! 3-node cluster behind proxies: after healing, every acknowledged transaction is in the
//! journal once, every invariant holds on every node, and no bank operation is left open.

use std::time::Duration;

use yinyi_tests::nemesis::{self, Nemesis, Plan};

/// A cluster is three processes and a bank on a small machine: one run at a time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn survive(nemesis: Nemesis, duration: Duration) {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        nemeses: vec![nemesis],
        random: false,
        seed: 7,
        duration,
        calm: Duration::from_secs(3),
        clients: 12,
        accounts: 500,
    };
    let report = match nemesis::run(dir.path(), &plan).await {
        Ok(report) => report,
        Err(e) => panic!(
            "{}: {e:#} (logs in {})",
            nemesis.name(),
            dir.keep().display()
        ),
    };
    println!("{}", report.row());
    assert!(report.injected >= 1, "{report:?}");
    assert!(report.acknowledged > 100, "{report:?}");
    assert_eq!((report.lost, report.duplicated), (0, 0), "{report:?}");
    assert_eq!(report.unresolved_bank_ops, 0, "{report:?}");
    assert!(report.ok(), "{}: {:?}", nemesis.name(), report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader() {
    survive(Nemesis::KillLeader, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_follower() {
    survive(Nemesis::KillFollower, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_leader() {
    survive(Nemesis::PauseLeader, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_leader() {
    survive(Nemesis::IsolateLeader, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition() {
    survive(Nemesis::Partition, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_snapshot_install() {
    survive(Nemesis::KillDuringSnapshot, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart() {
    survive(Nemesis::RollingRestart, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_down_during_a_leader_change() {
    survive(Nemesis::BankDownLeaderChange, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_leader_links() {
    survive(Nemesis::SlowLeaderLinks, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_of_the_leader() {
    survive(Nemesis::PowerCutLeader, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_of_a_follower() {
    survive(Nemesis::PowerCutFollower, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_of_every_node() {
    survive(Nemesis::PowerCutEverywhere, Duration::from_secs(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk() {
    survive(Nemesis::FullDisk, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_mix() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        nemeses: nemesis::ALL.to_vec(),
        random: true,
        seed: 20261125,
        duration: Duration::from_secs(25),
        calm: Duration::from_secs(2),
        clients: 12,
        accounts: 500,
    };
    let report = nemesis::run(dir.path(), &plan).await.unwrap();
    println!("{}", report.row());
    assert!(report.ok(), "{:?}", report.violations);
}

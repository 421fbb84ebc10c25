//! Real `yinyi` processes on 127.0.0.1: convergence, leader failure, catch-up by snapshot,
//! full restart, refusal on followers and membership changes. Tests run one at a time (a
//! cluster is three processes on a small machine) and wait on conditions with deadlines.

use std::time::{Duration, Instant};

use yinyi_consensus::ProposeError;
use yinyi_consensus::pb::Payload;
use yinyi_ledger::{Command, Outcome};
use yinyi_node::local::LocalCluster;
use yinyi_node::scenario::Scenario;
use yinyi_storage::codec;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const T: Duration = Duration::from_secs(30);

fn cluster(size: u64, extra: &[&str]) -> (tempfile::TempDir, LocalCluster) {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_yinyi")),
        dir.path(),
        size,
        extra.iter().map(|s| s.to_string()).collect(),
    )
    .unwrap();
    (dir, c)
}

/// Issues `patients` cards (¥100 each) after registering the terminals.
async fn setup(c: &LocalCluster, s: &mut Scenario, patients: u64) {
    c.wait_for_leader(T).await.unwrap();
    let mut client = c.client();
    let outcomes = client.propose(s.setup_hospital(), T).await.unwrap();
    assert!(outcomes.iter().all(Outcome::is_done), "{outcomes:?}");
    let cards: Vec<_> = (1..=patients).map(|n| s.issue_card(n, Some(100))).collect();
    let outcomes = client.propose(cards, T).await.unwrap();
    assert!(outcomes.iter().all(Outcome::is_done), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_after_thousands_of_proposals_from_several_tasks() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(3, &[]);
    let mut s = Scenario::new("conv");
    setup(&c, &mut s, 8).await;
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let mut client = c.client();
        tasks.push(tokio::spawn(async move {
            let mut s = Scenario::new(&format!("conv-t{task}"));
            for round in 0..50 {
                let batch: Vec<Command> = (0..10)
                    .map(|_| s.deposit(task + 1, 1 + round % 3))
                    .collect();
                let outcomes = client.propose(batch, T).await.unwrap();
                assert!(outcomes.iter().all(Outcome::is_done));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let statuses = c.wait_converged(T).await.unwrap();
    assert_eq!(statuses.len(), 3);
    assert!(statuses.iter().all(|s| s.digest == statuses[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_within_two_seconds_and_nothing_acknowledged_is_lost() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(3, &[]);
    let mut s = Scenario::new("fail");
    setup(&c, &mut s, 2).await;
    let mut acknowledged = Vec::new();
    let mut client = c.client();
    for _ in 0..20 {
        let cmd = s.deposit(1, 5);
        let outcome = client.propose(vec![cmd.clone()], T).await.unwrap();
        acknowledged.push((cmd, outcome[0].clone()));
    }
    let leader = c.wait_for_leader(T).await.unwrap();
    let killed = Instant::now();
    c.stop(leader).unwrap();
    let new_leader = c.wait_for_leader(T).await.unwrap();
    let took = killed.elapsed();
    assert_ne!(new_leader, leader);
    assert!(took < Duration::from_secs(2), "new leader after {took:?}");

    let mut client = c.client();
    for _ in 0..20 {
        let cmd = s.deposit(2, 5);
        let outcome = client.propose(vec![cmd.clone()], T).await.unwrap();
        assert!(outcome[0].is_done());
        acknowledged.push((cmd, outcome[0].clone()));
    }
    // Every acknowledged command is still there: re-sent with its request id it answers the
    // stored outcome (a new one would show another balance).
    for (cmd, first) in &acknowledged {
        let again = client.propose(vec![cmd.clone()], T).await.unwrap();
        assert_eq!(&again[0], first);
    }
    c.spawn(leader).unwrap();
    c.wait_converged(T).await.unwrap();
}

/// A cluster whose snapshots are small and frequent (1 KiB chunks: a compressed snapshot of
/// this little state is a few KiB), with one follower stopped
/// while the leader writes 200 entries and purges its log behind a snapshot: started again,
/// that follower can only catch up by snapshot. Returns the cluster (with its directory) and
/// the stopped follower.
async fn a_follower_behind_a_purged_log(name: &str) -> (tempfile::TempDir, LocalCluster, u64) {
    let (dir, mut owned) = cluster(3, &SMALL_SNAPSHOTS);
    let (c, s) = (&mut owned, &mut Scenario::new(name));
    setup(c, s, 2).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    c.stop(follower).unwrap();
    let mut client = c.client();
    // One proposal per entry, so the log grows well past the snapshot threshold.
    for _ in 0..200 {
        client.propose(vec![s.deposit(1, 1)], T).await.unwrap();
    }
    let mut leader_status = client.status(&c.addr(leader)).await.unwrap();
    let deadline = Instant::now() + T;
    while leader_status.purged.is_none() {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
        leader_status = client.status(&c.addr(leader)).await.unwrap();
    }
    (dir, owned, follower)
}

const SMALL_SNAPSHOTS: [&str; 6] = [
    "--snapshot-after-entries",
    "50",
    "--log-entries-kept-after-snapshot",
    "5",
    "--snapshot-chunk-bytes",
    "1024",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purged_log_catches_up_by_snapshot() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c, follower) = a_follower_behind_a_purged_log("snap").await;
    c.spawn(follower).unwrap();
    let statuses = c.wait_converged(T).await.unwrap();
    let caught_up = statuses.iter().find(|s| s.id == follower).unwrap();
    assert!(
        caught_up.snapshot.is_some(),
        "the follower installed no snapshot: {caught_up:?}"
    );
    // It came in many chunks (1 KiB each here), and the follower keeps it as a file.
    let snapshots = c.dir().join(format!("node{follower}")).join("snapshots");
    let sizes: Vec<u64> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap-"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(sizes.len(), 1, "one snapshot kept in {snapshots:?}");
    assert!(
        sizes[0] > 4 * 1024,
        "a snapshot of {} bytes is not several chunks",
        sizes[0]
    );
}

/// A follower whose snapshot transfer and install take seconds (a big state's do; here faults
/// slow a small one's) does not campaign meanwhile. On openraft 0.9 it did: the leader sends it
/// no heartbeats while the snapshot is in flight and its own messages wait behind the install,
/// yet its election timer ran, so it came out with a term far above the leader's and deposed a
/// healthy leader (the 90-day history saw term 1 become 432).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_installing_a_snapshot_for_seconds_leaves_the_leader_in_place() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c, follower) = a_follower_behind_a_purged_log("slowsnap").await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let before = c.client().status(&c.addr(leader)).await.unwrap();
    c.set_node_env(
        follower,
        vec![
            (
                yinyi_consensus::SLOW_INSTALL_ENV.to_string(),
                "2000".to_string(),
            ),
            (
                yinyi_consensus::SLOW_CHUNK_ENV.to_string(),
                "300".to_string(),
            ),
        ],
    );
    c.spawn(follower).unwrap();
    let statuses = c.wait_converged(T).await.unwrap();
    let installed = statuses.iter().find(|s| s.id == follower).unwrap();
    assert!(
        installed.snapshot.is_some(),
        "the follower installed no snapshot: {installed:?}"
    );
    for status in &statuses {
        assert_eq!(
            (status.leader, status.term),
            (Some(leader), before.term),
            "node {} after the install: {status:?}",
            status.id
        );
    }
    // The faults did slow it: several chunks, each 300 ms late, and the install 2 s.
    let log = std::fs::read_to_string(c.nodes[&follower].data.with_extension("log")).unwrap();
    let slowed_chunks = log
        .matches("every snapshot chunk received is slowed")
        .count();
    assert!(slowed_chunks >= 4, "{slowed_chunks} slowed chunks");
    assert!(log.contains("every snapshot install is slowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_command_survives_a_full_restart() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(3, &[]);
    let mut s = Scenario::new("restart");
    setup(&c, &mut s, 3).await;
    let mut client = c.client();
    let commands: Vec<Command> = (0..30).map(|i| s.deposit(1 + i % 3, 7)).collect();
    let first = client.propose(commands.clone(), T).await.unwrap();
    let before = c.wait_converged(T).await.unwrap()[0].digest.clone();
    for id in c.running() {
        c.kill(id).unwrap();
    }
    for id in 1..=3 {
        c.spawn(id).unwrap();
    }
    c.wait_for_leader(T).await.unwrap();
    let mut client = c.client();
    let again = client.propose(commands, T).await.unwrap();
    assert_eq!(again, first);
    let after = c.wait_converged(T).await.unwrap();
    assert!(after.iter().all(|s| s.digest == before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_to_a_follower_is_refused_with_the_leaders_id() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(3, &[]);
    let mut s = Scenario::new("follower");
    setup(&c, &mut s, 1).await;
    let leader = c.wait_for_leader(T).await.unwrap();
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    let mut raw =
        yinyi_consensus::network::connect_lazy(&c.addr(follower), Some(&c.node_tls(1))).unwrap();
    let reply = raw
        .propose(Payload {
            data: codec::encode(&vec![s.deposit(1, 1)]).unwrap(),
        })
        .await
        .unwrap();
    let results: Vec<Result<Outcome, ProposeError>> =
        codec::decode(&reply.into_inner().data).unwrap();
    assert_eq!(
        results,
        vec![Err(ProposeError::NotLeader {
            leader: Some((leader, c.addr(leader)))
        })]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_as_learner_is_promoted_and_another_is_removed() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(3, &[]);
    let mut s = Scenario::new("member");
    setup(&c, &mut s, 1).await;
    let addr4 = c.add_node(4).unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let mut client = c.client();
    client
        .change_membership(
            yinyi_consensus::MembershipChange::AddLearner { id: 4, addr: addr4 },
            T,
        )
        .await
        .unwrap();
    client
        .change_membership(
            yinyi_consensus::MembershipChange::Promote { ids: [4].into() },
            T,
        )
        .await
        .unwrap();
    let removed = c
        .running()
        .into_iter()
        .find(|&id| id != leader && id != 4)
        .unwrap();
    client
        .change_membership(
            yinyi_consensus::MembershipChange::Remove {
                ids: [removed].into(),
            },
            T,
        )
        .await
        .unwrap();
    c.stop(removed).unwrap();
    let mut client = c.client();
    let outcome = client.propose(vec![s.deposit(1, 3)], T).await.unwrap();
    assert!(outcome[0].is_done());
    let statuses = c.wait_converged(T).await.unwrap();
    let members: Vec<u64> = statuses[0].members.iter().map(|m| m.id).collect();
    assert!(
        members.contains(&4) && !members.contains(&removed),
        "{members:?}"
    );
    assert!(statuses[0].members.iter().all(|m| m.voter));
}

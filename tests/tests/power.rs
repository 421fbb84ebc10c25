//! Durability shown, not asserted (issue 17, points 5 and 6). Every node's data directory is on
//! a `PowerFs`, a FUSE passthrough that loses every write not yet fsynced when its "power" is
//! cut (SIGKILL alone keeps the kernel's page cache, so it cannot tell a synced log from one
//! that is not).
//!
//! - Cards issued (acknowledged) and then a power cut of every node at once: after restart every
//!   card is there with its deposit; with the log's sync switched off
//!   (`YINYI_FAULT_NO_LOG_SYNC=1`) the same cut loses acknowledged cards, so the test would
//!   catch a log store that stopped syncing.
//! - A full disk: the node stops serving with an error naming its disk and the
//!   `storage_failed` metric, the others keep taking writes, and once the disk has space the
//!   node starts again in place and catches up to the same state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use yinyi_api::Client;
use yinyi_api::v1::QueryBalanceRequest;
use yinyi_loadtest::workload::{Run, cents};
use yinyi_tests::harness::{Chaos, ChaosOptions};
use yinyi_tests::nemesis::wait_until;

/// A cluster is three processes on a small machine: one at a time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Cards issued (each acknowledged with its opening deposit) before the power fails.
const CARDS: u64 = 300;

struct AfterTheCut {
    acknowledged: u64,
    missing: u64,
    unsynced_bytes_lost: u64,
}

/// Issues `CARDS` cards, cuts the power of every node at once, restores it, and reads every
/// card's balance back.
async fn issue_cards_then_cut_every_node(no_log_sync: bool) -> Result<AfterTheCut> {
    let dir = tempfile::tempdir()?;
    let env = if no_log_sync {
        vec![(
            yinyi_consensus::NO_LOG_SYNC_ENV.to_string(),
            "1".to_string(),
        )]
    } else {
        Vec::new()
    };
    let options = ChaosOptions {
        power_fs: true,
        env,
        ..ChaosOptions::default()
    };
    let result = async {
        let mut chaos = Chaos::start_with(dir.path(), 3, &[], &options).await?;
        chaos.leader().await?;
        let mut config = chaos.cluster.api_config();
        config.deadline = Duration::from_secs(20);
        let run = Arc::new(Run::new(Client::new(config)?, "PWR".into(), 4, 1));
        run.setup_terminals().await?;
        let acknowledged = run.preload(CARDS, 4, |_| {}).await?;
        let ids = chaos.ids();
        let unsynced_bytes_lost = chaos.power_cut(&ids)?;
        for id in &ids {
            chaos.restart(*id)?;
        }
        chaos.leader().await?;
        // Every node applies what it holds first. Read at once, right after the new leader
        // was elected, some acknowledged cards answered CARD_NOT_FOUND and were there a moment
        // later: a read right after a whole-cluster restart that was not linearizable, an open
        // question of its own. This test is about what the disks kept.
        chaos
            .cluster
            .wait_converged(Duration::from_secs(30))
            .await?;
        let mut missing = 0;
        for n in 0..CARDS {
            let patient = run.patient(n).context("a preloaded patient")?;
            let balance = run
                .client
                .query_balance(QueryBalanceRequest {
                    card_no: patient.card.clone(),
                    account_id: String::new(),
                })
                .await;
            match balance {
                Ok(reply) if cents(&reply.balance) == Some(patient.cents) => {}
                other => {
                    if missing < 3 {
                        eprintln!("card {} after the cut: {other:?}", patient.card);
                    }
                    missing += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>(AfterTheCut {
            acknowledged,
            missing,
            unsynced_bytes_lost,
        })
    }
    .await;
    if result.is_err() {
        eprintln!("logs kept in {}", dir.keep().display());
    }
    result
}

impl AfterTheCut {
    fn print(&self, label: &str, began: Instant) {
        println!(
            "{label}: {} acknowledged, {} missing after the cut ({} unsynced bytes lost), {:?}",
            self.acknowledged,
            self.missing,
            self.unsynced_bytes_lost,
            began.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_of_every_node_loses_no_acknowledged_card() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let began = Instant::now();
    let cut = issue_cards_then_cut_every_node(false).await.unwrap();
    cut.print("synced log", began);
    assert_eq!(cut.acknowledged, CARDS);
    assert!(
        cut.unsynced_bytes_lost > 0,
        "the cut lost nothing: not a real power cut"
    );
    assert_eq!(cut.missing, 0, "acknowledged cards lost in a power cut");
}

/// The other half: the same test catches a log that does not sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_log_sync_a_power_cut_loses_acknowledged_cards() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let began = Instant::now();
    let cut = issue_cards_then_cut_every_node(true).await.unwrap();
    cut.print("unsynced log", began);
    assert_eq!(cut.acknowledged, CARDS);
    assert!(
        cut.missing > 0,
        "with the log's sync off a power cut lost nothing: the power cut does not test durability"
    );
}

/// Node `id`'s Prometheus text.
async fn scrape(addr: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_its_node_loudly_and_it_catches_up_once_freed() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let options = ChaosOptions {
        power_fs: true,
        metrics: true,
        ..ChaosOptions::default()
    };
    let chaos = Chaos::start_with(dir.path(), 3, &[], &options)
        .await
        .unwrap();
    let result = async {
        let full = chaos.follower().await?;
        let mut config = chaos.cluster.api_config();
        config.deadline = Duration::from_secs(20);
        let client = Client::new(config)?;
        let before = Arc::new(Run::new(client.clone(), "FULL".into(), 2, 1));
        before.setup_terminals().await?;
        before.preload(100, 2, |_| {}).await?;
        let pid = chaos.cluster.nodes[&full].pid();
        let addr = chaos.cluster.addr(full);
        let template = chaos.cluster.api_config();

        // Its disk fills; the next writes it receives fail and it stops serving.
        chaos.disk(full)?.fill();
        let during = Arc::new(Run::new(client.clone(), "DURING".into(), 2, 1));
        during.setup_terminals().await?;
        during.preload(100, 2, |_| {}).await?;
        let node_answers = |template: yinyi_api::ClientConfig, addr: String| async move {
            let mut config = template;
            config.nodes = vec![addr];
            config.deadline = Duration::from_secs(1);
            config.attempt_timeout = Duration::from_millis(500);
            let Ok(client) = Client::new(config) else {
                return false;
            };
            client
                .cluster_status(yinyi_api::v1::ClusterStatusRequest { with_digest: false })
                .await
                .is_ok()
        };
        wait_until(Duration::from_secs(15), || {
            let (template, addr) = (template.clone(), addr.clone());
            async move { !node_answers(template, addr).await }
        })
        .await
        .context("the node with the full disk still serves")?;

        // Loud: an error naming the disk, and the metrics an alert watches.
        let log = std::fs::read_to_string(dir.path().join(format!("node{full}.log")))?;
        anyhow::ensure!(
            log.contains("the data disk is full"),
            "no clear error in node {full}'s log"
        );
        let metrics_addr = chaos.metrics_addr(full).context("metrics")?.to_string();
        let text = scrape(&metrics_addr).await?;
        anyhow::ensure!(
            metric(&text, "storage_failed") == Some(1.0),
            "storage_failed:\n{text}"
        );
        anyhow::ensure!(
            metric(&text, "storage_write_errors_total") >= Some(1.0),
            "storage_write_errors_total:\n{text}"
        );
        anyhow::ensure!(
            metric(&text, "disk_free_bytes") == Some(0.0),
            "disk_free_bytes:\n{text}"
        );

        // The others keep taking writes.
        let after = Arc::new(Run::new(client.clone(), "AFTER".into(), 2, 1));
        after.setup_terminals().await?;
        after.preload(100, 2, |_| {}).await?;

        // Space again: the same process starts again and catches up to the same state.
        chaos.disk(full)?.set_quota(None);
        wait_until(Duration::from_secs(30), || {
            let (template, addr) = (template.clone(), addr.clone());
            async move { node_answers(template, addr).await }
        })
        .await
        .context("the node did not start again once its disk had space")?;
        anyhow::ensure!(
            chaos.cluster.nodes[&full].pid() == pid,
            "the node was not restarted in place"
        );
        let statuses = chaos
            .cluster
            .wait_converged(Duration::from_secs(60))
            .await?;
        anyhow::ensure!(statuses.len() == 3, "{statuses:?}");
        for (run, n) in [(&before, 100), (&during, 100), (&after, 100)] {
            for i in 0..n {
                let patient = run.patient(i).context("patient")?;
                let reply = client
                    .query_balance(QueryBalanceRequest {
                        card_no: patient.card.clone(),
                        account_id: String::new(),
                    })
                    .await?;
                anyhow::ensure!(
                    cents(&reply.balance) == Some(patient.cents),
                    "card {} holds {}",
                    patient.card,
                    reply.balance
                );
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        drop(chaos);
        panic!("{e:#} (logs in {})", dir.keep().display());
    }
    println!("full disk test: {:?}", began.elapsed());
}

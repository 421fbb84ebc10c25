//! The nemeses, and a run: clients of mixed transactions (the load tester's outpatient visits,
//! closed loop, every request with a unique id and its acknowledged outcome in the book) while
//! a nemesis strikes again and again; then everything is healed and the load tester's checker
//! holds the cluster to every invariant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;
use yinyi_api::{Client, ClientConfig};
use yinyi_loadtest::workload::Run;

use crate::harness::{Chaos, ChaosOptions};
use crate::proxy::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nemesis {
    /// kill -9 the leader; restart it after a while.
    KillLeader,
    KillFollower,
    /// SIGSTOP the leader longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// Cut every link of the leader, then heal.
    IsolateLeader,
    /// Cut a random node (a minority of one) from the majority, then heal.
    Partition,
    /// A follower falls behind the purged log, restarts into a snapshot install, and is killed
    /// during it.
    KillDuringSnapshot,
    /// SIGTERM and restart every node in turn, each once the cluster has its leader again.
    RollingRestart,
    /// The bank's process dies and the leader is killed while it is down.
    BankDownLeaderChange,
    /// One way only: the leader's links to the others are slowed (delay), then healed.
    SlowLeaderLinks,
    /// The leader's power fails: it dies and its disk loses what it had not synced; power
    /// returns after a while.
    PowerCutLeader,
    /// The same for a follower (a minority of one).
    PowerCutFollower,
    /// The whole site's power fails: every node at once.
    PowerCutEverywhere,
    /// A random node's disk fills: it must stop serving, keep its data, and catch up once the
    /// disk has space again, while the others serve.
    FullDisk,
}

pub const ALL: [Nemesis; 13] = [
    Nemesis::KillLeader,
    Nemesis::KillFollower,
    Nemesis::PauseLeader,
    Nemesis::IsolateLeader,
    Nemesis::Partition,
    Nemesis::KillDuringSnapshot,
    Nemesis::RollingRestart,
    Nemesis::BankDownLeaderChange,
    Nemesis::SlowLeaderLinks,
    Nemesis::PowerCutLeader,
    Nemesis::PowerCutFollower,
    Nemesis::PowerCutEverywhere,
    Nemesis::FullDisk,
];

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::KillLeader => "kill -9 leader",
            Nemesis::KillFollower => "kill -9 follower",
            Nemesis::PauseLeader => "SIGSTOP leader 2 s",
            Nemesis::IsolateLeader => "isolate leader 3 s",
            Nemesis::Partition => "one node cut from two, 3 s",
            Nemesis::KillDuringSnapshot => "kill during snapshot install",
            Nemesis::RollingRestart => "rolling restart",
            Nemesis::BankDownLeaderChange => "bank down + leader change",
            Nemesis::SlowLeaderLinks => "leader's links +150 ms one way",
            Nemesis::PowerCutLeader => "power cut: leader",
            Nemesis::PowerCutFollower => "power cut: follower",
            Nemesis::PowerCutEverywhere => "power cut: every node",
            Nemesis::FullDisk => "full disk on one node",
        }
    }

    /// Whether the nodes must run on a power-cut filesystem ([`crate::powerfs`]).
    pub fn needs_power_fs(self) -> bool {
        matches!(
            self,
            Nemesis::PowerCutLeader
                | Nemesis::PowerCutFollower
                | Nemesis::PowerCutEverywhere
                | Nemesis::FullDisk
        )
    }

    /// Flags the cluster needs for this nemesis (small snapshots for the snapshot one).
    pub fn node_flags(self) -> &'static [&'static str] {
        match self {
            // Small enough that a follower down for a few seconds must be sent a snapshot, and
            // with enough log kept to cover the entries written while one is installed (with
            // 300/50 a restarted follower installed snapshot after snapshot and never caught
            // up under load).
            Nemesis::KillDuringSnapshot => &[
                "--snapshot-after-entries",
                "1000",
                "--log-entries-kept-after-snapshot",
                "500",
            ],
            _ => &[],
        }
    }

    /// Strikes once and undoes it; marks the fault in the run's statistics.
    pub async fn strike(self, chaos: &Mutex<Chaos>, run: &Run, rng: &mut StdRng) -> Result<()> {
        run.stats.fault(self.name().to_string());
        match self {
            Nemesis::KillLeader => {
                let id = chaos.lock().await.leader().await?;
                chaos.lock().await.kill(id)?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                chaos.lock().await.restart(id)?;
            }
            Nemesis::KillFollower => {
                let id = chaos.lock().await.follower().await?;
                chaos.lock().await.kill(id)?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                chaos.lock().await.restart(id)?;
            }
            Nemesis::PauseLeader => {
                let id = chaos.lock().await.leader().await?;
                chaos.lock().await.pause(id)?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                chaos.lock().await.resume(id)?;
            }
            Nemesis::IsolateLeader => {
                let id = chaos.lock().await.leader().await?;
                chaos.lock().await.partition(&[id]);
                tokio::time::sleep(Duration::from_secs(3)).await;
                chaos.lock().await.heal_network();
            }
            Nemesis::Partition => {
                let ids = chaos.lock().await.ids();
                let id = ids[rng.random_range(0..ids.len())];
                chaos.lock().await.partition(&[id]);
                tokio::time::sleep(Duration::from_secs(3)).await;
                chaos.lock().await.heal_network();
            }
            Nemesis::KillDuringSnapshot => {
                let id = chaos.lock().await.follower().await?;
                chaos.lock().await.kill(id)?;
                // More writes go by than the log keeps behind a snapshot; then the leader
                // snapshots (and purges), so the follower can only catch up by a snapshot.
                let leader = chaos.lock().await.leader().await?;
                let addr = chaos.lock().await.cluster.addr(leader);
                let template = chaos.lock().await.cluster.api_config();
                let start = applied(&template, &addr).await?;
                // The load may be ending: wait a bounded while, then snapshot whatever is there.
                let _ = wait_until(Duration::from_secs(10), || {
                    let (addr, template) = (addr.clone(), template.clone());
                    async move {
                        applied(&template, &addr)
                            .await
                            .is_ok_and(|a| a > start + 600)
                    }
                })
                .await;
                let tls = chaos.lock().await.cluster.node_tls(1);
                yinyi_node::client::ClusterClient::new(vec![addr.clone()], Some(tls))
                    .trigger_snapshot(&addr)
                    .await?;
                chaos.lock().await.restart(id)?;
                // Killed again while it fetches and installs the snapshot.
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
                chaos.lock().await.kill(id)?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                chaos.lock().await.restart(id)?;
            }
            Nemesis::RollingRestart => {
                let ids = chaos.lock().await.ids();
                for id in ids {
                    chaos.lock().await.stop(id)?;
                    chaos.lock().await.restart(id)?;
                    chaos.lock().await.leader().await?;
                    // The restarted node catches up before the next one goes.
                    wait_until(Duration::from_secs(60), || async move {
                        let c = chaos.lock().await;
                        let Ok(leader) = c.leader().await else {
                            return false;
                        };
                        let template = c.cluster.api_config();
                        let (Ok(a), Ok(b)) = (
                            applied(&template, &c.cluster.addr(id)).await,
                            applied(&template, &c.cluster.addr(leader)).await,
                        ) else {
                            return false;
                        };
                        a + 50 >= b
                    })
                    .await
                    .context("a restarted node did not catch up")?;
                }
            }
            Nemesis::BankDownLeaderChange => {
                chaos.lock().await.bank_down()?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let id = chaos.lock().await.leader().await?;
                chaos.lock().await.kill(id)?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                chaos.lock().await.restart(id)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                chaos.lock().await.bank_up()?;
            }
            Nemesis::SlowLeaderLinks => {
                let c = chaos.lock().await;
                let id = c.leader().await?;
                for to in c.ids().into_iter().filter(|to| *to != id) {
                    c.link(id, to, Mode::Delay(Duration::from_millis(150)));
                }
                drop(c);
                tokio::time::sleep(Duration::from_secs(3)).await;
                chaos.lock().await.heal_network();
            }
            Nemesis::PowerCutLeader => {
                let id = chaos.lock().await.leader().await?;
                chaos.lock().await.power_cut(&[id])?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                chaos.lock().await.restart(id)?;
            }
            Nemesis::PowerCutFollower => {
                let id = chaos.lock().await.follower().await?;
                chaos.lock().await.power_cut(&[id])?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                chaos.lock().await.restart(id)?;
            }
            Nemesis::PowerCutEverywhere => {
                let ids = chaos.lock().await.ids();
                chaos.lock().await.power_cut(&ids)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                for id in ids {
                    chaos.lock().await.restart(id)?;
                }
                chaos.lock().await.leader().await?;
            }
            Nemesis::FullDisk => {
                let ids = chaos.lock().await.ids();
                let id = ids[rng.random_range(0..ids.len())];
                let template = chaos.lock().await.cluster.api_config();
                let addr = chaos.lock().await.cluster.addr(id);
                chaos.lock().await.disk(id)?.fill();
                // Under load the node's next writes fail: it stops serving (its port closes).
                // A node that wrote nothing meanwhile (the load may be ending) simply waits.
                let stopped = wait_until(Duration::from_secs(10), || {
                    let (template, addr) = (template.clone(), addr.clone());
                    async move { applied(&template, &addr).await.is_err() }
                })
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                chaos.lock().await.disk(id)?.set_quota(None);
                if stopped.is_ok() {
                    // Space again: it starts again by itself and serves.
                    wait_until(Duration::from_secs(30), || {
                        let (template, addr) = (template.clone(), addr.clone());
                        async move { applied(&template, &addr).await.is_ok() }
                    })
                    .await
                    .with_context(|| {
                        format!("node {id} did not come back after its disk had space")
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The last applied index a node reports.
async fn applied(template: &ClientConfig, addr: &str) -> Result<i64> {
    let mut config = template.clone();
    config.nodes = vec![addr.to_string()];
    config.deadline = Duration::from_secs(2);
    config.attempt_timeout = Duration::from_secs(1);
    let status = Client::new(config)?
        .cluster_status(yinyi_api::v1::ClusterStatusRequest { with_digest: false })
        .await?;
    Ok(status.node.map_or(-1, |n| n.applied))
}

/// Polls `condition` until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        if Instant::now() > deadline {
            anyhow::bail!("not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// What one run showed.
#[derive(Debug, Clone)]
pub struct Report {
    pub nemesis: String,
    pub injected: u32,
    pub acknowledged: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unresolved_bank_ops: u64,
    pub unknown_left: usize,
    pub worst_unavailable_ms: f64,
    pub violations: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            self.nemesis,
            self.injected,
            self.acknowledged,
            self.lost,
            self.duplicated,
            self.unresolved_bank_ops,
            self.worst_unavailable_ms
        )
    }
}

pub const TABLE_HEAD: &str = "| fault | injected | acknowledged | lost | duplicated | unresolved bank ops | worst unavailability ms |\n|---|---:|---:|---:|---:|---:|---:|";

/// How a run goes.
pub struct Plan {
    /// Which nemeses strike, in turn (or drawn at random with `random`).
    pub nemeses: Vec<Nemesis>,
    pub random: bool,
    pub seed: u64,
    pub duration: Duration,
    /// Pause between strikes.
    pub calm: Duration,
    pub clients: usize,
    pub accounts: u64,
}

/// Starts a 3-node cluster under `dir`, runs `plan`, heals, checks; the report of the run.
pub async fn run(dir: &std::path::Path, plan: &Plan) -> Result<Report> {
    let mut flags: Vec<&str> = vec!["--bank-timeout-ms", "500"];
    for n in &plan.nemeses {
        flags.extend(n.node_flags());
    }
    let options = ChaosOptions {
        power_fs: plan.nemeses.iter().any(|n| n.needs_power_fs()),
        ..ChaosOptions::default()
    };
    let chaos = Chaos::start_with(dir, 3, &flags, &options).await?;
    chaos.leader().await?;
    let addrs = chaos.addrs();
    let chaos = Arc::new(Mutex::new(chaos));
    let mut config = chaos.lock().await.cluster.api_config();
    config.deadline = Duration::from_secs(15);
    config.attempt_timeout = Duration::from_secs(1);
    let client = Client::new(config)?;
    let run = Arc::new(Run::new(client, format!("C{}", plan.seed), 16, 4));
    run.setup_terminals().await?;
    run.preload(plan.accounts, 2, |_| {}).await?;
    run.stats.start();

    let load = tokio::spawn({
        let run = run.clone();
        let (clients, duration) = (plan.clients, plan.duration);
        async move { yinyi_loadtest::drive::closed_loop(&run, clients, duration).await }
    });
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let began = Instant::now();
    let mut injected = 0;
    let mut turn = 0;
    // Strikes until the load ends, leaving its last stretch calm.
    while began.elapsed() + plan.calm < plan.duration {
        tokio::time::sleep(plan.calm).await;
        let nemesis = if plan.random {
            plan.nemeses[rng.random_range(0..plan.nemeses.len())]
        } else {
            plan.nemeses[turn % plan.nemeses.len()]
        };
        turn += 1;
        nemesis
            .strike(&chaos, &run, &mut rng)
            .await
            .with_context(|| format!("nemesis {}", nemesis.name()))?;
        injected += 1;
    }
    load.await??;
    run.stats.stop();

    chaos.lock().await.heal().await?;
    let checked = yinyi_loadtest::check::run(&run, &addrs, true, Duration::from_secs(120)).await?;
    let seen = run.stats.lock();
    let name = if plan.random {
        format!("random schedule (seed {})", plan.seed)
    } else {
        plan.nemeses
            .iter()
            .map(|n| n.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Report {
        nemesis: name,
        injected,
        acknowledged: checked.acknowledged,
        lost: checked.lost,
        duplicated: checked.duplicated,
        unresolved_bank_ops: checked.unresolved_bank_ops(),
        unknown_left: checked.unknown_left,
        worst_unavailable_ms: seen
            .unavailable_by_fault()
            .iter()
            .map(|f| f.2)
            .fold(0.0, f64::max),
        violations: checked.violations,
    })
}

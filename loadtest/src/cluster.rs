//! `--local N`: a cluster of real `yinyi` processes and a bank simulator process on loopback, in
//! a temporary directory, and the faults `--chaos` injects into it: SIGKILL, SIGSTOP/SIGCONT,
//! restarts, the bank down for a while.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local bank link's fee on each collected line and its reserve, for settlement (清分结算).
pub const FEE_RATE: &str = "0.006";
pub const RESERVE_RATE: &str = "0.05";

use anyhow::{Context, Result, bail};
use yinyi_api::v1::ClusterStatusRequest;
use yinyi_api::{Client, ClientConfig};

struct Node {
    addr: String,
    child: Option<Child>,
    paused: bool,
}

pub struct LocalCluster {
    exe: PathBuf,
    dir: tempfile::TempDir,
    /// `loadtest:SECRET` (every role but bank) and `banksim:SECRET` (bank), accepted by the
    /// nodes from their command line.
    credential: String,
    bank_credential: String,
    peers: String,
    bank_addr: String,
    bank: Option<Child>,
    nodes: Vec<Node>,
}

fn free_addr() -> Result<String> {
    Ok(format!("127.0.0.1:{}", yinyi_measure::free_port()?))
}

fn signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{name} {} failed", child.id());
    }
    Ok(())
}

impl LocalCluster {
    /// Starts the bank simulator (with `bank_faults`) and `size` nodes that use it.
    pub fn start(size: u64, bank_faults: &str) -> Result<LocalCluster> {
        if size == 0 {
            bail!("--local needs 1 or more nodes");
        }
        let exe = std::env::current_exe()?.with_file_name("yinyi");
        if !exe.exists() {
            bail!(
                "{} not found: build it with `cargo build --release`",
                exe.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("yinyi-loadtest-")
            .tempdir()?;
        let addrs: Vec<String> = (0..size).map(|_| free_addr()).collect::<Result<_>>()?;
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // A CA and node certificates: the local cluster runs TLS like a site.
        let status = Command::new(&exe)
            .args(["ctl", "certs", "--nodes", &size.to_string(), "--out"])
            .arg(dir.path().join("tls"))
            .stdout(Stdio::null())
            .status()
            .context("run yinyi ctl certs")?;
        if !status.success() {
            bail!("yinyi ctl certs failed");
        }
        let mut cluster = LocalCluster {
            exe,
            credential: format!("loadtest:{}", yinyi_api::credential::new_secret()),
            bank_credential: format!("banksim:{}", yinyi_api::credential::new_secret()),
            peers,
            bank_addr: free_addr()?,
            bank: None,
            nodes: addrs
                .into_iter()
                .map(|addr| Node {
                    addr,
                    child: None,
                    paused: false,
                })
                .collect(),
            dir,
        };
        cluster.start_bank(bank_faults)?;
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        eprintln!(
            "started {size} local nodes and a bank simulator under {}",
            cluster.dir.path().display()
        );
        Ok(cluster)
    }

    fn log(&self, name: &str) -> Result<(Stdio, Stdio)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        Ok((log.try_clone()?.into(), log.into()))
    }

    fn start_bank(&mut self, faults: &str) -> Result<()> {
        // The link's settlement terms, the same on both sides: the day's settlement must then
        // match to the fen.
        let (out, err) = self.log("bank")?;
        let child = Command::new(&self.exe)
            .args(["banksim", "--listen", &self.bank_addr, "--faults", faults])
            .args(["--fee-rate", FEE_RATE, "--reserve-rate", RESERVE_RATE])
            .arg("--journal")
            .arg(self.dir.path().join("bank.journal"))
            .args(["--notify", &self.addrs().join(",")])
            .arg("--certs")
            .arg(self.dir.path().join("tls"))
            .args(["--credential", &self.bank_credential])
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {} banksim", self.exe.display()))?;
        self.bank = Some(child);
        Ok(())
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let (out, err) = self.log(&format!("node{id}"))?;
        let node = self.node(id)?;
        let child = Command::new(&self.exe)
            .args(["start", "--id", &id.to_string(), "--listen", &node.addr])
            .arg("--data")
            .arg(self.dir.path().join(format!("node{id}")))
            .args(["--peers", &self.peers, "--bank-addr", &self.bank_addr])
            .args([
                "--bank-fee-rate",
                FEE_RATE,
                "--bank-reserve-rate",
                RESERVE_RATE,
            ])
            .arg("--tls-ca")
            .arg(self.dir.path().join("tls/ca.pem"))
            .arg("--tls-cert")
            .arg(self.dir.path().join(format!("tls/node{id}.pem")))
            .arg("--tls-key")
            .arg(self.dir.path().join(format!("tls/node{id}-key.pem")))
            .arg("--data-key-file")
            .arg(self.dir.path().join("tls/data.key"))
            .args([
                "--bootstrap-credential",
                &yinyi_api::credential::bootstrap_entry(
                    &self.credential,
                    "kiosk+window+mobile+his+admin+auditor",
                ),
                "--bootstrap-credential",
                &yinyi_api::credential::bootstrap_entry(&self.bank_credential, "bank"),
            ])
            // One credential plays every client of the load: no per-credential limit.
            .env("YINYI_REQUESTS_PER_CREDENTIAL_PER_S", "0")
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", self.exe.display()))?;
        let node = self.node_mut(id)?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    fn node(&self, id: u64) -> Result<&Node> {
        self.nodes
            .get((id as usize).wrapping_sub(1))
            .with_context(|| format!("no node {id}"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .get_mut((id as usize).wrapping_sub(1))
            .with_context(|| format!("no node {id}"))
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// How the load tester calls this cluster: TLS (the cluster's CA) and its credential.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut config = ClientConfig::new(self.addrs());
        config.tls =
            Some(yinyi_api::TlsFiles::in_dir(&self.dir.path().join("tls"), None).client()?);
        config.credential = Some(self.credential.clone());
        Ok(config)
    }

    /// The nodes' and the bank simulator's processes, named for a CPU report
    /// (`node 1 (leader)`), and this one's.
    pub async fn processes(&self) -> Vec<(String, u32)> {
        let leader = self.leader().await;
        let mut out: Vec<(String, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let id = i as u64 + 1;
                let role = if id == leader { " (leader)" } else { "" };
                Some((format!("node {id}{role}"), n.child.as_ref()?.id()))
            })
            .collect();
        if let Some(bank) = &self.bank {
            out.push(("bank simulator".into(), bank.id()));
        }
        out.push(("yinyi-loadtest".into(), std::process::id()));
        out
    }

    pub fn bank_addr(&self) -> &str {
        &self.bank_addr
    }

    pub fn size(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        if let Some(mut child) = self.node_mut(id)?.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGSTOP: the process stays, silent, as a hung machine would.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if let Some(child) = &node.child {
            signal(child, "STOP")?;
            node.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if let Some(child) = &node.child
            && node.paused
        {
            signal(child, "CONT")?;
            node.paused = false;
        }
        Ok(())
    }

    /// Brings every node back: resumes the paused ones, restarts the killed ones (same data).
    pub fn heal(&mut self) -> Result<Vec<u64>> {
        let mut restarted = Vec::new();
        for id in 1..=self.size() {
            self.resume(id)?;
            if self.node(id)?.child.is_none() {
                self.spawn(id)?;
                restarted.push(id);
            }
        }
        Ok(restarted)
    }

    /// Changes the bank simulator's faults at run time (`yinyi bank-faults`).
    pub fn bank_faults(&self, spec: &str) -> Result<()> {
        let status = Command::new(&self.exe)
            .args(["bank-faults", "--bank", &self.bank_addr, spec])
            .stdout(Stdio::null())
            .status()
            .context("run yinyi bank-faults")?;
        if !status.success() {
            bail!("yinyi bank-faults {spec} failed");
        }
        Ok(())
    }

    /// The leader's id as the running nodes see it (0 when none answers with one).
    pub async fn leader(&self) -> u64 {
        let Ok(template) = self.client_config() else {
            return 0;
        };
        for node in self.nodes.iter().filter(|n| n.child.is_some() && !n.paused) {
            let mut config = template.clone();
            config.nodes = vec![node.addr.clone()];
            config.deadline = Duration::from_millis(500);
            let Ok(client) = Client::new(config) else {
                continue;
            };
            if let Ok(status) = client
                .cluster_status(ClusterStatusRequest { with_digest: false })
                .await
                && status.leader != 0
            {
                return status.leader;
            }
        }
        0
    }

    /// A running node other than the leader.
    pub async fn follower(&self) -> Result<u64> {
        let leader = self.leader().await;
        (1..=self.size())
            .find(|id| {
                *id != leader && self.node(*id).is_ok_and(|n| n.child.is_some() && !n.paused)
            })
            .context("no running follower")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let children = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .chain(self.bank.take());
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (up to `timeout`) until the cluster (`config`'s nodes) answers with a leader.
pub async fn wait_for_leader(config: &ClientConfig, timeout: Duration) -> Result<()> {
    let mut config = config.clone();
    config.deadline = Duration::from_secs(2);
    let client = Client::new(config)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(status) = client
            .cluster_status(ClusterStatusRequest { with_digest: false })
            .await
            && status.leader != 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster elected no leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One fault of `--chaos`: what, when (from the start of the measured run), for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub action: Action,
    pub at: Duration,
    pub lasting: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    KillLeader,
    KillFollower,
    PauseLeader,
    PauseFollower,
    /// Restart every killed node and resume every paused one.
    Restart,
    BankDown,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::KillLeader => "kill-leader",
            Action::KillFollower => "kill-follower",
            Action::PauseLeader => "pause-leader",
            Action::PauseFollower => "pause-follower",
            Action::Restart => "restart",
            Action::BankDown => "bank-down",
        }
    }
}

/// Parses `kill-leader@30s,pause-follower@60s:5s,restart@90s,bank-down@100s:10s`.
pub fn parse_chaos(spec: &str) -> Result<Vec<Fault>, String> {
    let mut faults = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, when) = item
            .split_once('@')
            .ok_or_else(|| format!("{item:?}: write ACTION@TIME[:DURATION]"))?;
        let action = match name {
            "kill-leader" => Action::KillLeader,
            "kill-follower" => Action::KillFollower,
            "pause-leader" => Action::PauseLeader,
            "pause-follower" => Action::PauseFollower,
            "restart" => Action::Restart,
            "bank-down" => Action::BankDown,
            other => {
                return Err(format!(
                    "unknown fault {other:?}: kill-leader, kill-follower, pause-leader, pause-follower, restart or bank-down"
                ));
            }
        };
        let (at, lasting) = match when.split_once(':') {
            Some((at, lasting)) => (crate::parse_duration(at)?, crate::parse_duration(lasting)?),
            None => (crate::parse_duration(when)?, Duration::ZERO),
        };
        let needs_duration = matches!(
            action,
            Action::PauseLeader | Action::PauseFollower | Action::BankDown
        );
        if needs_duration && lasting.is_zero() {
            return Err(format!(
                "{item:?}: {name} needs a duration, e.g. {name}@60s:5s"
            ));
        }
        faults.push(Fault {
            action,
            at,
            lasting,
        });
    }
    faults.sort_by_key(|f| f.at);
    Ok(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_specs_parse_and_refuse_clearly() {
        let faults =
            parse_chaos("restart@90s, kill-leader@30s,pause-follower@60s:5s,bank-down@2m:10s")
                .unwrap();
        assert_eq!(faults.len(), 4);
        assert_eq!(faults[0].action, Action::KillLeader);
        assert_eq!(faults[0].at, Duration::from_secs(30));
        assert_eq!(faults[1].lasting, Duration::from_secs(5));
        assert_eq!(faults[3].at, Duration::from_secs(120));
        assert!(
            parse_chaos("kill-leader")
                .unwrap_err()
                .contains("ACTION@TIME")
        );
        assert!(
            parse_chaos("nuke@3s")
                .unwrap_err()
                .contains("unknown fault")
        );
        assert!(
            parse_chaos("pause-leader@3s")
                .unwrap_err()
                .contains("duration")
        );
        assert!(parse_chaos("kill-leader@soon").is_err());
        assert!(parse_chaos("").unwrap().is_empty());
    }
}

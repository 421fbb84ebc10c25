//! A cluster for the failure suite: real `yinyi` processes on loopback, a fault-injecting proxy
//! on every directed node-to-node link (each node dials the others through its own proxies, by
//! `--peer-routes`), and the bank simulator as a real process that can be killed and restarted on
//! its journal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use yinyi_node::local::{LocalCluster, free_port};

use crate::powerfs::PowerFs;
use crate::proxy::{Mode, Proxy};

/// The `yinyi` binary beside the running test or tool (`YINYI_BIN` overrides).
pub fn yinyi_exe() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("YINYI_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut dir = std::env::current_exe()?
        .parent()
        .context("the executable has no directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let exe = dir.join("yinyi");
    if !exe.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --bins)",
            exe.display()
        );
    }
    Ok(exe)
}

/// How the nodes of a [`Chaos`] cluster run, besides their flags.
#[derive(Debug, Clone, Default)]
pub struct ChaosOptions {
    /// Each node's data directory on its own [`PowerFs`] (its disk), so its power can be cut
    /// and its disk filled.
    pub power_fs: bool,
    /// Environment of every node (fault-injection switches).
    pub env: Vec<(String, String)>,
    /// Each node serves Prometheus metrics ([`Chaos::metrics_addr`]).
    pub metrics: bool,
}

pub struct Chaos {
    exe: PathBuf,
    dir: PathBuf,
    pub cluster: LocalCluster,
    proxies: BTreeMap<(u64, u64), Proxy>,
    paused: BTreeSet<u64>,
    bank: Option<Child>,
    bank_addr: String,
    /// Declared after `cluster`: dropped after its processes are killed, so each unmounts.
    disks: BTreeMap<u64, PowerFs>,
    metrics: BTreeMap<u64, String>,
}

impl Chaos {
    /// Starts the bank simulator and `size` nodes (flags `extra` on each) under `dir`, each
    /// reaching the others through its own proxies.
    pub async fn start(dir: &Path, size: u64, extra: &[&str]) -> Result<Chaos> {
        Chaos::start_with(dir, size, extra, &ChaosOptions::default()).await
    }

    /// [`Chaos::start`] with `options`.
    pub async fn start_with(
        dir: &Path,
        size: u64,
        extra: &[&str],
        options: &ChaosOptions,
    ) -> Result<Chaos> {
        let exe = yinyi_exe()?;
        let bank_addr = format!("127.0.0.1:{}", free_port()?);
        let mut args: Vec<String> = vec!["--bank-addr".into(), bank_addr.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cluster = LocalCluster::prepare(&exe, dir, size, args)?;
        let mut proxies = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        for from in 1..=size {
            let mut routes = Vec::new();
            for to in (1..=size).filter(|to| *to != from) {
                let upstream: SocketAddr = cluster.addr(to).parse()?;
                let proxy = Proxy::start(upstream).await?;
                routes.push(format!("{to}={}", proxy.addr()));
                proxies.insert((from, to), proxy);
            }
            let mut args = vec!["--peer-routes".into(), routes.join(",")];
            if options.metrics {
                let addr = format!("127.0.0.1:{}", free_port()?);
                args.extend(["--metrics-listen".to_string(), addr.clone()]);
                metrics.insert(from, addr);
            }
            cluster.set_node_args(from, args);
            cluster.set_node_env(from, options.env.clone());
        }
        let mut disks = BTreeMap::new();
        if options.power_fs {
            for (id, node) in &cluster.nodes {
                let backing = dir.join(format!("node{id}.disk"));
                disks.insert(*id, PowerFs::mount(&backing, &node.data)?);
            }
        }
        let mut chaos = Chaos {
            exe,
            dir: dir.to_path_buf(),
            cluster,
            proxies,
            paused: BTreeSet::new(),
            bank: None,
            bank_addr,
            disks,
            metrics,
        };
        chaos.bank_up()?;
        for id in 1..=size {
            chaos.cluster.spawn(id)?;
        }
        Ok(chaos)
    }

    pub fn addrs(&self) -> Vec<String> {
        self.cluster.addrs()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.cluster.nodes.keys().copied().collect()
    }

    /// Sets the link from `from` to `to` (node `from`'s connections to `to`).
    pub fn link(&self, from: u64, to: u64, mode: Mode) {
        if let Some(proxy) = self.proxies.get(&(from, to)) {
            proxy.set(mode);
        }
    }

    /// Connections node `from` opened to node `to` so far.
    pub fn connections(&self, from: u64, to: u64) -> u64 {
        self.proxies.get(&(from, to)).map_or(0, Proxy::connections)
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        for ((from, to), proxy) in &self.proxies {
            if side.contains(from) != side.contains(to) {
                proxy.set(Mode::Blackhole);
            }
        }
    }

    pub fn heal_network(&self) {
        for proxy in self.proxies.values() {
            proxy.set(Mode::Pass);
        }
    }

    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.paused.remove(&id);
        self.cluster.kill(id)
    }

    /// The power of nodes `ids` fails at once: each process dies and its disk loses every write
    /// it had not synced. Bytes lost, in all. Needs `ChaosOptions::power_fs`.
    pub fn power_cut(&mut self, ids: &[u64]) -> Result<u64> {
        for id in ids {
            self.kill(*id)?;
        }
        let mut lost = 0;
        for id in ids {
            lost += self.disk(*id)?.cut_power();
        }
        Ok(lost)
    }

    /// Node `id`'s disk: a [`PowerFs`] (with `ChaosOptions::power_fs`).
    pub fn disk(&self, id: u64) -> Result<&PowerFs> {
        self.disks
            .get(&id)
            .with_context(|| format!("node {id} does not run on a power-cut filesystem"))
    }

    /// Where node `id` serves its metrics (with `ChaosOptions::metrics`).
    pub fn metrics_addr(&self, id: u64) -> Option<&str> {
        self.metrics.get(&id).map(String::as_str)
    }

    /// SIGTERM and wait for the clean exit.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        self.paused.remove(&id);
        self.cluster.stop(id)
    }

    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.cluster.pause(id)?;
        self.paused.insert(id);
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<()> {
        if self.paused.remove(&id) {
            self.cluster.resume(id)?;
        }
        Ok(())
    }

    /// Starts node `id` again on its data, if it is not running.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        if !self.cluster.running().contains(&id) {
            self.cluster.spawn(id)?;
        }
        Ok(())
    }

    /// The bank simulator's process dies (its journal stays).
    pub fn bank_down(&mut self) -> Result<()> {
        if let Some(mut child) = self.bank.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the bank simulator on its journal (again), telling the nodes of channel results.
    pub fn bank_up(&mut self) -> Result<()> {
        if self.bank.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bank.log"))?;
        let child = Command::new(&self.exe)
            .args(["banksim", "--listen", &self.bank_addr])
            .arg("--journal")
            .arg(self.dir.join("bank.journal"))
            .args(["--notify", &self.addrs().join(",")])
            .arg("--certs")
            .arg(self.cluster.tls_dir())
            .args(["--credential", self.cluster.credential()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start the bank simulator")?;
        self.bank = Some(child);
        Ok(())
    }

    /// Undoes every fault: the network heals, full disks get space, paused nodes resume,
    /// stopped ones restart, the bank comes back; then waits for a leader.
    pub async fn heal(&mut self) -> Result<u64> {
        self.heal_network();
        for disk in self.disks.values() {
            disk.set_quota(None);
        }
        for id in self.ids() {
            self.resume(id)?;
            self.restart(id)?;
        }
        self.bank_up()?;
        self.cluster.wait_for_leader(Duration::from_secs(30)).await
    }

    pub async fn leader(&self) -> Result<u64> {
        self.cluster.wait_for_leader(Duration::from_secs(30)).await
    }

    /// A running, unpaused node that is not the leader.
    pub async fn follower(&self) -> Result<u64> {
        let leader = self.leader().await?;
        self.cluster
            .running()
            .into_iter()
            .find(|id| *id != leader && !self.paused.contains(id))
            .context("no running follower")
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        for id in self.paused.clone() {
            let _ = self.cluster.resume(id);
        }
        let _ = self.bank_down();
    }
}

//! A cluster of real `yinyi` processes on loopback, for the demo, the benchmark and the tests:
//! start, kill (SIGKILL), stop (SIGTERM), pause (SIGSTOP) and restart nodes, and wait on
//! conditions with deadlines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;
use yinyi_consensus::NodeStatus;

use crate::client::ClusterClient;

pub struct LocalNode {
    pub id: u64,
    pub addr: String,
    pub data: PathBuf,
    child: Option<Child>,
}

impl LocalNode {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct LocalCluster {
    exe: PathBuf,
    dir: PathBuf,
    /// Extra flags for every `yinyi start` (e.g. a small snapshot threshold in tests).
    extra_args: Vec<String>,
    /// Extra flags for one node's `yinyi start` (e.g. its routes to the others).
    node_args: BTreeMap<u64, Vec<String>>,
    /// Environment for one node (fault-injection switches).
    node_env: BTreeMap<u64, Vec<(String, String)>>,
    /// Nodes started with `--join` (added to a running cluster).
    joining: Vec<u64>,
    /// The cluster's CA and certificates (`tls/` under its dir): every node serves TLS.
    tls_dir: PathBuf,
    authority: crate::certs::Authority,
    /// `local:SECRET`, a bootstrap credential with every role, for the tests' clients.
    credential: String,
    pub nodes: BTreeMap<u64, LocalNode>,
}

/// A free port on loopback for a server started right after ([`yinyi_measure::free_port`]).
pub fn free_port() -> Result<u16> {
    Ok(yinyi_measure::free_port()?)
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

impl LocalCluster {
    /// Starts `size` nodes (ids 1..=size) of the binary `exe` with data under `dir`.
    pub fn start(
        exe: &Path,
        dir: &Path,
        size: u64,
        extra_args: Vec<String>,
    ) -> Result<LocalCluster> {
        let mut cluster = LocalCluster::prepare(exe, dir, size, extra_args)?;
        for id in 1..=size {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Chooses the `size` nodes' addresses and data dirs without starting them, so each can be
    /// given its own flags ([`LocalCluster::set_node_args`]) before [`LocalCluster::spawn`].
    pub fn prepare(
        exe: &Path,
        dir: &Path,
        size: u64,
        extra_args: Vec<String>,
    ) -> Result<LocalCluster> {
        let tls_dir = dir.join("tls");
        let authority = crate::certs::Authority::open_or_create(&tls_dir)?;
        authority.issue(&tls_dir, "admin", crate::certs::Kind::Operator, &[])?;
        let mut nodes = BTreeMap::new();
        for id in 1..=size {
            authority.issue(
                &tls_dir,
                &format!("node{id}"),
                crate::certs::Kind::Node,
                &[],
            )?;
            let addr = format!("127.0.0.1:{}", free_port()?);
            nodes.insert(
                id,
                LocalNode {
                    id,
                    addr,
                    data: dir.join(format!("node{id}")),
                    child: None,
                },
            );
        }
        Ok(LocalCluster {
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            extra_args,
            node_args: BTreeMap::new(),
            node_env: BTreeMap::new(),
            joining: Vec::new(),
            tls_dir,
            authority,
            credential: format!("local:{}", yinyi_api::credential::new_secret()),
            nodes,
        })
    }

    /// Flags for node `id` alone, from its next start on.
    pub fn set_node_args(&mut self, id: u64, args: Vec<String>) {
        self.node_args.insert(id, args);
    }

    /// Environment for node `id` alone (fault-injection switches such as
    /// `YINYI_FAULT_CLOCK_SKEW_MS`), from its next start on.
    pub fn set_node_env(&mut self, id: u64, env: Vec<(String, String)>) {
        self.node_env.insert(id, env);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the CA and the certificates are (`ca.pem`, `nodeN.pem`, `admin.pem`).
    pub fn tls_dir(&self) -> &Path {
        &self.tls_dir
    }

    /// TLS as an operator (the `admin` certificate): for the internal service and the API.
    pub fn client_tls(&self) -> tonic::transport::ClientTlsConfig {
        yinyi_api::TlsFiles::in_dir(&self.tls_dir, Some("admin"))
            .client()
            .expect("the cluster's own certificates load")
    }

    /// TLS with node `id`'s own certificate: what the internal service (Raft, proposals,
    /// membership, snapshots, elections) asks of a caller. The harness speaks as node 1 for its
    /// bare proposals and snapshot triggers.
    pub fn node_tls(&self, id: u64) -> tonic::transport::ClientTlsConfig {
        yinyi_api::TlsFiles::in_dir(&self.tls_dir, Some(&format!("node{id}")))
            .client()
            .expect("the cluster's own certificates load")
    }

    /// A public-API client configuration for every node, over TLS, with the cluster's
    /// every-role credential.
    pub fn api_config(&self) -> yinyi_api::ClientConfig {
        let mut config = yinyi_api::ClientConfig::new(self.addrs());
        config.tls = Some(self.client_tls());
        config.credential = Some(self.credential.clone());
        config
    }

    /// `local:SECRET`: every role (the tests act as every channel).
    pub fn credential(&self) -> &str {
        &self.credential
    }

    /// The `--bootstrap-credential` the nodes start with.
    fn bootstrap_credential(&self) -> String {
        let roles: Vec<&str> = yinyi_ledger::Role::ALL.iter().map(|r| r.as_str()).collect();
        yinyi_api::credential::bootstrap_entry(&self.credential, &roles.join("+"))
    }

    pub fn peers_arg(&self) -> String {
        self.nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Adds a node that is not in the peer list (it joins by `add-node`).
    pub fn add_node(&mut self, id: u64) -> Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        self.authority.issue(
            &self.tls_dir,
            &format!("node{id}"),
            crate::certs::Kind::Node,
            &[],
        )?;
        self.nodes.insert(
            id,
            LocalNode {
                id,
                addr: addr.clone(),
                data: self.dir.join(format!("node{id}")),
                child: None,
            },
        );
        self.joining.push(id);
        self.spawn_with_peers(id, format!("{id}={addr}"))?;
        Ok(addr)
    }

    /// Starts (or restarts) node `id` on its data dir.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let peers = self.peers_arg();
        self.spawn_with_peers(id, peers)
    }

    fn spawn_with_peers(&mut self, id: u64, peers: String) -> Result<()> {
        let bootstrap = self.bootstrap_credential();
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if node.child.is_some() {
            bail!("node {id} is already running");
        }
        std::fs::create_dir_all(&node.data)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.data.with_extension("log"))?;
        let child = Command::new(&self.exe)
            .arg("start")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&node.addr)
            .arg("--data")
            .arg(&node.data)
            .arg("--peers")
            .arg(peers)
            .arg("--tls-ca")
            .arg(self.tls_dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(self.tls_dir.join(format!("node{id}.pem")))
            .arg("--tls-key")
            .arg(self.tls_dir.join(format!("node{id}-key.pem")))
            .arg("--data-key-file")
            .arg(self.tls_dir.join("data.key"))
            .arg("--bootstrap-credential")
            .arg(bootstrap)
            .args(&self.extra_args)
            .args(self.node_args.get(&id).into_iter().flatten())
            .args(if self.joining.contains(&id) {
                &["--join"][..]
            } else {
                &[][..]
            })
            // Tests and benchmarks drive one credential hard: no per-credential limit unless
            // a test sets one.
            .env("YINYI_REQUESTS_PER_CREDENTIAL_PER_S", "0")
            .envs(self.node_env.get(&id).into_iter().flatten().cloned())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.exe.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the process dies at once, as on a power cut for everything not synced.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).context("no such node")?;
        if let Some(mut child) = node.child.take() {
            signal(child.id(), "TERM")?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn pause(&self, id: u64) -> Result<()> {
        signal(self.nodes[&id].pid().context("not running")?, "STOP")
    }

    pub fn resume(&self, id: u64) -> Result<()> {
        signal(self.nodes[&id].pid().context("not running")?, "CONT")
    }

    /// The running nodes' processes, named for a CPU report (`node 1 (leader)`, found
    /// now), and this process as `me`; only `me` without a local cluster.
    pub async fn measured(cluster: Option<&LocalCluster>, me: &str) -> Vec<(String, u32)> {
        match cluster {
            Some(c) => {
                let leader = c.wait_for_leader(Duration::from_secs(10)).await.ok();
                c.measured_processes(leader, me)
            }
            None => vec![(me.to_string(), std::process::id())],
        }
    }

    fn measured_processes(&self, leader: Option<u64>, me: &str) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .nodes
            .values()
            .filter_map(|n| {
                let role = if Some(n.id) == leader {
                    " (leader)"
                } else {
                    ""
                };
                Some((format!("node {}{role}", n.id), n.pid()?))
            })
            .collect();
        out.push((me.to_string(), std::process::id()));
        out
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn client(&self) -> ClusterClient {
        let addrs = self
            .nodes
            .values()
            .filter(|n| n.is_running())
            .map(|n| n.addr.clone())
            .collect();
        ClusterClient::new(addrs, Some(self.node_tls(1)))
    }

    /// Waits until a running node reports a leader that is itself running and a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut client = self.client();
        loop {
            for id in self.running() {
                if let Ok(status) = client.status(&self.addr(id)).await
                    && status.state == "Leader"
                    && status.leader == Some(id)
                {
                    return Ok(id);
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Statuses of every running node, with their digests.
    pub async fn statuses(&self) -> Result<Vec<NodeStatus>> {
        let mut client = self.client();
        let mut out = Vec::new();
        for id in self.running() {
            out.push(client.status_with_digest(&self.addr(id)).await?);
        }
        Ok(out)
    }

    /// Waits until every running node has applied at least what the leader had applied when
    /// asked: what was just written (a new credential, say) is then known on every node.
    pub async fn wait_applied_everywhere(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut client = self.client();
        let leader = self.wait_for_leader(timeout).await?;
        let target = client.status(&self.addr(leader)).await?.applied;
        loop {
            let mut behind = Vec::new();
            for id in self.running() {
                let applied = client
                    .status(&self.addr(id))
                    .await
                    .ok()
                    .and_then(|s| s.applied);
                if applied < target {
                    behind.push(id);
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nodes {behind:?} did not apply index {target:?} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node has applied the same index and has the same digest.
    pub async fn wait_converged(&self, timeout: Duration) -> Result<Vec<NodeStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(statuses) = self.statuses().await {
                let applied: Vec<_> = statuses.iter().map(|s| s.applied).collect();
                let same_applied = applied.windows(2).all(|w| w[0] == w[1]);
                let same_digest = statuses.windows(2).all(|w| w[0].digest == w[1].digest);
                let caught_up = statuses
                    .iter()
                    .all(|s| s.applied.unwrap_or(0) >= s.committed && s.applied == s.last_log);
                if same_applied && same_digest && caught_up && !statuses.is_empty() {
                    return Ok(statuses);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "nodes did not converge within {timeout:?}: {:?}",
                    self.statuses().await.map(|s| s
                        .iter()
                        .map(|s| (s.id, s.applied, s.digest.clone()))
                        .collect::<Vec<_>>())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

//! The node's configuration: one struct owns every knob. Defaults run a local node with no file;
//! a TOML file (`--config`) sets any key; `YINYI_*` environment variables and flags override it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use yinyi_consensus::{BatchLimits, ConsensusConfig, NodeId};

/// What `yinyi start` runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub id: NodeId,
    /// Where this node listens for gRPC (clients, operators and other nodes).
    pub listen: String,
    /// Where this node keeps its RocksDB and snapshots.
    pub data: PathBuf,
    /// Every member at start: `1=127.0.0.1:7101,2=…`. The lowest id forms the cluster.
    pub peers: BTreeMap<NodeId, String>,
    /// Dial these addresses instead of the members' own to reach these nodes over Raft:
    /// `2=HOST:PORT,…` (a proxy in the failure tests, a route through NAT). Usually empty.
    pub peer_routes: BTreeMap<NodeId, String>,
    /// This node joins a running cluster (through `yinyi ctl add-node`) and never forms one.
    pub join: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot after this many entries since the last, at least…
    pub snapshot_after_entries: u64,
    /// …and once the log written since the last snapshot is this percent of its size (0:
    /// entries alone decide).
    pub snapshot_log_percent: u64,
    /// MiB of memory for the state's table blocks.
    pub block_cache_mib: u64,
    /// Log entries kept behind a snapshot before purging.
    pub log_entries_kept_after_snapshot: u64,
    /// Bytes of a snapshot sent in one message (a snapshot of any size travels in chunks).
    pub snapshot_chunk_bytes: u64,
    /// Commands packed into one Raft entry at most.
    pub max_batch_commands: usize,
    /// Bytes of commands in one Raft entry at most.
    pub max_batch_bytes: usize,
    /// Raft entries proposed and not yet answered at most.
    pub max_inflight_entries: usize,
    /// Commands waiting for a batch at most; beyond it callers are told to retry.
    pub max_queued_commands: usize,
    /// An account or terminal actor idle this long is stopped (passivated).
    pub actor_idle_timeout_ms: u64,
    /// Live entity actors at most; beyond it the least recently used idle ones are stopped.
    pub max_live_actors: usize,
    /// Where to serve Prometheus metrics over HTTP (`host:port`); none when empty.
    pub metrics_listen: String,
    /// The bank's front-end processor (`host:port`); bank-card operations are refused when
    /// empty.
    pub bank_addr: String,
    /// The bank link is plain TCP (ISO 8583 front-end processors speak no TLS): it belongs on
    /// the bank's private line (专线) or a VPN. A bank address that is not on this machine is
    /// refused unless this says the link runs over such a line.
    pub bank_private_line: bool,
    /// One bank call's timeout; past it the outcome is unknown and the saga settles it.
    pub bank_timeout_ms: u64,
    /// When (HH:MM, China Standard Time) the leader reconciles the previous day with the bank.
    pub recon_daily_at: String,
    /// A bank operation unresolved this long (seconds) raises an error for a person to handle;
    /// its saga keeps trying.
    pub bank_resolution_deadline_s: u64,
    /// A third-party channel order the payer has not confirmed after this long is closed.
    pub channel_order_expiry_ms: u64,
    /// A pre-authorization (预授权) not captured after this long (seconds) is released.
    pub authorization_expiry_s: u64,
    /// The bank link's settlement terms (清分结算): its fee on each collected line and the
    /// reserve it keeps back for the next day's refunds, fractions such as "0.006".
    pub bank_fee_rate: String,
    pub bank_reserve_rate: String,
    /// The third-party channels (providers) a payment may name, comma-separated: a payment
    /// naming any other is refused, so no free-text label reaches the ledger.
    pub channel_providers: String,
    /// Run the balance audit (稽核) on this node's state this often (seconds); 0 never.
    pub audit_every_s: u64,
    /// How long (days, at least 1) a request id guards against a retry: request records older
    /// than this are let go, except those in the audit trail. The journal is kept for ever.
    pub request_retention_days: u64,
    /// Requests per second one credential may make on this node (its burst is twice that);
    /// beyond it the node answers RESOURCE_EXHAUSTED. 0: no limit.
    pub requests_per_credential_per_s: u64,
    /// Free bytes the data directory's disk must have for the node to start, or to start again
    /// after its disk filled (RocksDB needs room to replay and flush its log). A node whose
    /// disk fills stops serving, waits until this much is free, then restarts in place.
    pub min_free_disk_bytes: u64,
    /// The site's data key (64 hex characters, the same on every node): holder names and
    /// phones are sealed with it before they are stored. Empty: stored in the clear.
    pub data_key_file: PathBuf,
    /// The site CA (PEM): clients and other nodes must chain to it.
    pub tls_ca: PathBuf,
    /// This node's certificate and key (PEM), signed by the CA for the name `yinyi`.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Serve and dial in plaintext, without certificates: local demos and tests only.
    pub insecure: bool,
    /// Credentials every node accepts without the cluster's list, `ID:ROLES:SHA256` (roles
    /// joined by `+`): the first administrator's, to create the others with
    /// `yinyi ctl credential add`. Keep them few; revoke one with `yinyi ctl credential revoke ID`
    /// (a replicated tombstone every node honours), then remove it here.
    pub bootstrap_credentials: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        let consensus = ConsensusConfig::new(1, "127.0.0.1:7101");
        NodeConfig {
            id: 1,
            listen: "127.0.0.1:7101".into(),
            data: PathBuf::from("yinyi-data"),
            peers: BTreeMap::new(),
            peer_routes: BTreeMap::new(),
            join: false,
            heartbeat_interval_ms: consensus.heartbeat_interval_ms,
            election_timeout_min_ms: consensus.election_timeout_min_ms,
            election_timeout_max_ms: consensus.election_timeout_max_ms,
            install_snapshot_timeout_ms: consensus.install_snapshot_timeout_ms,
            snapshot_after_entries: consensus.snapshot_after_entries,
            snapshot_log_percent: consensus.snapshot_log_percent,
            block_cache_mib: consensus.block_cache_bytes / (1024 * 1024),
            log_entries_kept_after_snapshot: consensus.log_entries_kept_after_snapshot,
            snapshot_chunk_bytes: consensus.snapshot_chunk_bytes,
            max_batch_commands: consensus.batch.max_batch_commands,
            max_batch_bytes: consensus.batch.max_batch_bytes,
            max_inflight_entries: consensus.batch.max_inflight_entries,
            max_queued_commands: consensus.batch.max_queued_commands,
            actor_idle_timeout_ms: 60_000,
            max_live_actors: 100_000,
            metrics_listen: String::new(),
            bank_addr: String::new(),
            bank_private_line: false,
            bank_timeout_ms: 3_000,
            recon_daily_at: "02:00".into(),
            bank_resolution_deadline_s: 600,
            channel_order_expiry_ms: 900_000,
            authorization_expiry_s: 7_200,
            bank_fee_rate: "0".into(),
            bank_reserve_rate: "0".into(),
            channel_providers: "WECHAT,ALIPAY,UNIONPAY".into(),
            audit_every_s: 3600,
            request_retention_days: 30,
            requests_per_credential_per_s: 200,
            min_free_disk_bytes: 256 * 1024 * 1024,
            data_key_file: PathBuf::new(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            insecure: false,
            bootstrap_credentials: Vec::new(),
        }
    }
}

impl NodeConfig {
    /// The peers, with this node added when it was not listed (a single-node cluster).
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        let mut members = self.peers.clone();
        members
            .entry(self.id)
            .or_insert_with(|| self.listen.clone());
        members
    }

    /// The bank link's settlement terms, from `bank_fee_rate` and `bank_reserve_rate`.
    pub fn settlement_terms(&self) -> Result<yinyi_ledger::SettlementTerms, String> {
        yinyi_ledger::SettlementTerms::parse(&self.bank_fee_rate, &self.bank_reserve_rate)
            .map_err(|e| format!("bank settlement terms: {e}"))
    }

    /// The third-party channels a payment may name.
    pub fn providers(&self) -> Result<Vec<String>, String> {
        let providers: Vec<String> = self
            .channel_providers
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        for p in &providers {
            let shape = p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !shape {
                return Err(format!(
                    "channel_providers: {p:?} is not 1 to 32 capital letters or digits, e.g. WECHAT"
                ));
            }
        }
        Ok(providers)
    }

    /// Checks what a typo would otherwise turn into a confusing failure later.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_retention_days == 0 {
            return Err("request_retention_days must be 1 or more".into());
        }
        if self.id == 0 {
            return Err("id must be 1 or more".into());
        }
        if let Some(addr) = self.peers.get(&self.id)
            && addr != &self.listen
        {
            return Err(format!(
                "peers say node {} is at {addr}, but it listens on {}",
                self.id, self.listen
            ));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms * 2 {
            return Err("election_timeout_min_ms must exceed twice heartbeat_interval_ms".into());
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "metrics_listen {:?} is not host:port",
                self.metrics_listen
            ));
        }
        crate::recon::parse_time_of_day(&self.recon_daily_at)
            .map_err(|e| format!("recon_daily_at: {e}"))?;
        self.settlement_terms()?;
        self.providers()?;
        if self.authorization_expiry_s == 0 {
            return Err("authorization_expiry_s must be 1 or more".into());
        }
        if self.max_live_actors == 0 {
            return Err("max_live_actors must be 1 or more".into());
        }
        if !(8..=65_536).contains(&self.block_cache_mib) {
            return Err(format!(
                "block_cache_mib {} must be 8 to 65536",
                self.block_cache_mib
            ));
        }
        if self.max_inflight_entries == 0 {
            return Err("max_inflight_entries must be 1 or more".into());
        }
        if self.max_batch_commands == 0 || self.max_batch_commands > 4096 {
            return Err("max_batch_commands must be 1 to 4096".into());
        }
        if !self.bank_addr.is_empty() && !self.bank_private_line && !is_loopback(&self.bank_addr) {
            return Err(format!(
                "bank_addr {:?} is not on this machine and the bank link is plain TCP: run it over \
                 the bank's private line (or a VPN) and set bank_private_line = true \
                 (--bank-private-line) to say so",
                self.bank_addr
            ));
        }
        for c in &self.bootstrap_credentials {
            crate::api::auth::parse_bootstrap(c)?;
        }
        let tls_set = [&self.tls_ca, &self.tls_cert, &self.tls_key]
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .count();
        match (self.insecure, tls_set) {
            (true, 0) | (false, 3) => {}
            (true, _) => return Err("insecure is set together with TLS files; choose one".into()),
            (false, 0) => {
                return Err(
                    "TLS is required: set tls_ca, tls_cert and tls_key (`yinyi ctl certs` \
                     makes them), or start with --insecure for a local demo"
                        .into(),
                );
            }
            (false, _) => return Err("tls_ca, tls_cert and tls_key go together".into()),
        }
        Ok(())
    }

    pub fn actors(&self) -> yinyi_actors::ActorsConfig {
        yinyi_actors::ActorsConfig {
            idle_timeout: std::time::Duration::from_millis(self.actor_idle_timeout_ms),
            max_live: self.max_live_actors,
            ..yinyi_actors::ActorsConfig::default()
        }
    }

    /// This node's TLS files, unless it runs insecure.
    pub fn tls(&self) -> Option<yinyi_api::TlsFiles> {
        (!self.insecure).then(|| yinyi_api::TlsFiles {
            ca: self.tls_ca.clone(),
            cert: Some(self.tls_cert.clone()),
            key: Some(self.tls_key.clone()),
        })
    }

    pub fn consensus(&self) -> ConsensusConfig {
        let mut c = ConsensusConfig::new(self.id, self.listen.clone());
        c.heartbeat_interval_ms = self.heartbeat_interval_ms;
        c.election_timeout_min_ms = self.election_timeout_min_ms;
        c.election_timeout_max_ms = self.election_timeout_max_ms;
        c.install_snapshot_timeout_ms = self.install_snapshot_timeout_ms;
        c.snapshot_after_entries = self.snapshot_after_entries;
        c.snapshot_log_percent = self.snapshot_log_percent;
        c.block_cache_bytes = self.block_cache_mib * 1024 * 1024;
        c.log_entries_kept_after_snapshot = self.log_entries_kept_after_snapshot;
        c.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
        c.routes = self.peer_routes.clone();
        c.batch = BatchLimits {
            max_batch_commands: self.max_batch_commands,
            max_batch_bytes: self.max_batch_bytes,
            max_inflight_entries: self.max_inflight_entries,
            max_queued_commands: self.max_queued_commands,
        };
        c
    }
}

/// `IP:PORT`, or `NAME:PORT` with a DNS name (letters, digits, `-`, `.`).
fn is_host_port(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    port.parse::<u16>().is_ok_and(|p| p > 0)
        && !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Parses `1=127.0.0.1:7101,2=127.0.0.1:7102` (or host names: `1=node1:7101`).
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer {part:?} is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer id {id:?} is not a number"))?;
        let addr = addr.trim();
        if !is_host_port(addr) {
            return Err(format!("peer address {addr:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer {id} is listed twice"));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_site_configs_parse_and_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let config: NodeConfig =
                    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config
                    .validate()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(config.peers.len(), 3, "{}", path.display());
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn peers_parse_and_refuse_garbage() {
        let peers = parse_peers("1=127.0.0.1:7101, 2=127.0.0.1:7102").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&2], "127.0.0.1:7102");
        assert!(parse_peers("1=nowhere").is_err());
        assert!(parse_peers("1=node1:7101").is_ok());
        assert!(parse_peers("1=node1:0").is_err());
        assert!(parse_peers("1=no de:7101").is_err());
        assert!(parse_peers("x=127.0.0.1:1").is_err());
        assert!(parse_peers("1=127.0.0.1:1,1=127.0.0.1:2").is_err());
    }

    #[test]
    fn toml_sets_any_key_and_refuses_unknown_ones() {
        let config: NodeConfig =
            toml::from_str("id = 2\nlisten = \"127.0.0.1:7102\"\nmax_batch_commands = 64\n")
                .unwrap();
        assert!(config.validate().unwrap_err().contains("TLS is required"));
        assert_eq!(config.id, 2);
        assert_eq!(config.max_batch_commands, 64);
        assert_eq!(
            config.heartbeat_interval_ms,
            NodeConfig::default().heartbeat_interval_ms
        );
        assert!(toml::from_str::<NodeConfig>("idd = 2\n").is_err());
    }

    #[test]
    fn validation_catches_a_peer_list_that_contradicts_listen() {
        let mut config = NodeConfig {
            id: 1,
            insecure: true,
            ..NodeConfig::default()
        };
        config.validate().unwrap();
        config.peers = parse_peers("1=127.0.0.1:9999").unwrap();
        assert!(config.validate().is_err());
    }
}

/// Whether `host:port` names this machine (a loopback address or `localhost`).
fn is_loopback(addr: &str) -> bool {
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod bank_line_tests {
    use super::*;

    /// Issue 16, point 5: a plaintext bank link leaves this machine only when the operator
    /// says it runs over the bank's private line.
    #[test]
    fn a_remote_plaintext_bank_address_needs_the_private_line_flag() {
        let mut config = NodeConfig {
            insecure: true,
            ..NodeConfig::default()
        };
        for local in [
            "127.0.0.1:7900",
            "localhost:7900",
            "[::1]:7900",
            "127.0.0.9:1",
        ] {
            config.bank_addr = local.into();
            assert!(config.validate().is_ok(), "{local}");
        }
        config.bank_addr = "10.1.2.3:7900".into();
        let e = config.validate().unwrap_err();
        assert!(e.contains("private line"), "{e}");
        config.bank_private_line = true;
        assert!(config.validate().is_ok());
    }
}

//! yinyi-consensus: the only crate that speaks openraft. It declares the Raft types (an entry
//! carries a batch of ledger commands), implements the log store and the state machine over
//! `yinyi-storage`, the network over tonic, the proposer that packs commands into entries (group
//! commit), and `Consensus`, the handle the rest of the node uses: propose, linearizable reads,
//! membership and status.

// openraft's own `StorageError` is large and its trait signatures return it; boxing it here
// would only add conversions at every boundary.
#![allow(clippy::result_large_err)]

pub mod backup;
pub mod election_pause;
pub mod error;
pub mod log_store;
pub mod network;
pub mod proposer;
mod reads;
pub mod server;
pub mod snapshot_policy;
pub mod state_machine;
pub mod types;

/// The generated gRPC code of `proto/internal.proto`.
pub mod pb {
    tonic::include_proto!("yinyi.internal.v1");

    /// For gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("internal_descriptor");
}

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::{BasicNode, ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use yinyi_ledger::{Command, Outcome, Rules, Timestamp};
use yinyi_storage::Store;

pub use error::{ProposeError, StartError};
pub use log_store::NO_LOG_SYNC_ENV;
pub use proposer::BatchLimits;
pub use server::SLOW_CHUNK_ENV;
pub use state_machine::SLOW_INSTALL_ENV;

/// A test-only fault's delay: the milliseconds in `env`, if set (logged as a warning).
pub(crate) fn fault_delay(env: &str, what: &str) -> Option<Duration> {
    let ms: u64 = std::env::var(env).ok()?.parse().ok()?;
    tracing::warn!("{env}={ms}: {what} (a test-only fault)");
    Some(Duration::from_millis(ms))
}
pub use types::{NodeId, Raft, TypeConfig};

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;

/// Every knob of the consensus layer, with the defaults a local cluster runs with.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub id: NodeId,
    /// The address other nodes reach this one at (host:port).
    pub addr: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
    /// Build a snapshot after this many applied entries since the last one, at least.
    pub snapshot_after_entries: u64,
    /// …and once the log written since the last snapshot is this percent of its size
    /// (0: entries alone decide). See [`snapshot_policy`].
    pub snapshot_log_percent: u64,
    /// Bytes of memory for the state's table blocks (RocksDB's block cache).
    pub block_cache_bytes: u64,
    /// Log entries kept behind a snapshot before purging (lets a slow follower catch up by log).
    pub log_entries_kept_after_snapshot: u64,
    /// Bytes of a snapshot per InstallSnapshot message (the snapshot travels in chunks).
    pub snapshot_chunk_bytes: u64,
    /// Entries per AppendEntries message at most.
    pub max_payload_entries: u64,
    pub batch: BatchLimits,
    pub rules: Rules,
    /// Dial these addresses instead of the members' own for these nodes (a proxy in the
    /// failure tests, a route through NAT); empty for most clusters.
    pub routes: std::collections::BTreeMap<NodeId, String>,
    /// TLS to the other nodes, with this node's certificate; `None` only when the node was
    /// started `--insecure`.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ConsensusConfig {
    pub fn new(id: NodeId, addr: impl Into<String>) -> ConsensusConfig {
        ConsensusConfig {
            id,
            addr: addr.into(),
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            install_snapshot_timeout_ms: 10_000,
            snapshot_after_entries: 100_000,
            snapshot_log_percent: 25,
            block_cache_bytes: yinyi_storage::DEFAULT_BLOCK_CACHE_BYTES,
            log_entries_kept_after_snapshot: 1_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            max_payload_entries: 64,
            batch: BatchLimits::default(),
            routes: std::collections::BTreeMap::new(),
            rules: Rules::default(),
            tls: None,
        }
    }

    fn raft_config(&self) -> Result<Config, String> {
        let chunk_limit = network::MAX_MESSAGE_BYTES as u64 / 2;
        if !(1024..=chunk_limit).contains(&self.snapshot_chunk_bytes) {
            return Err(format!(
                "snapshot chunk of {} bytes: it must be 1024 to {chunk_limit}",
                self.snapshot_chunk_bytes
            ));
        }
        let config = Config {
            cluster_name: "yinyi".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            // Our own policy decides (`snapshot_policy::build_when_due`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.log_entries_kept_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            ..Default::default()
        };
        config.validate().map_err(|e| e.to_string())
    }
}

/// One node's view of itself and the cluster, as `yinyi ctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log: Option<u64>,
    pub committed: u64,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// Every member: id, address, and whether it votes.
    pub members: Vec<Member>,
    /// A hash over the ledger's state; equal on nodes that applied the same log. Only when
    /// asked for: it walks the whole state.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// A membership change an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Form a new cluster of these voters (only on a node that has never been initialized).
    Initialize { members: BTreeMap<NodeId, String> },
    /// Add a node that receives the log but does not vote; waits until it has caught up.
    AddLearner { id: NodeId, addr: String },
    /// Make learners voters.
    Promote { ids: BTreeSet<NodeId> },
    /// Remove nodes from the cluster altogether.
    Remove { ids: BTreeSet<NodeId> },
}

/// How long adding a learner waits for it to catch up (a snapshot of a big state included).
pub const LEARNER_CATCH_UP: Duration = Duration::from_secs(300);

/// The node's handle on Raft.
#[derive(Clone)]
pub struct Consensus {
    id: NodeId,
    addr: String,
    raft: Raft,
    store: Arc<Store>,
    committed: Arc<AtomicU64>,
    proposals: mpsc::Sender<proposer::Proposal>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    routes: std::collections::BTreeMap<NodeId, String>,
    /// Set while handing leadership over: proposals are refused (clients retry and find the
    /// next leader), so the successor's log stays complete.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Proposals accepted and not yet written.
    pending: Arc<std::sync::atomic::AtomicUsize>,
    /// The term this node leads and since when (see [`track_leadership`]).
    leader_since: Arc<std::sync::Mutex<Option<(u64, tokio::time::Instant)>>>,
    /// openraft's leader lease: the longest election timeout.
    lease: Duration,
    /// The latest command time applied or stamped here: stamps never go below it, so a new
    /// leader whose clock is behind the old one's cannot move time (and business days) back.
    clock: Arc<std::sync::atomic::AtomicI64>,
    /// The cluster's business rules, as the state machine applies them.
    rules: Rules,
    /// Holds this node's elections while it receives or installs a snapshot.
    election_pause: Arc<election_pause::ElectionPause>,
    /// The quorum rounds linearizable reads share.
    reads: reads::SharedReads,
}

/// Records when this node became leader of its current term: a leader votes for another
/// candidate only once its own lease (granted at election, never renewed) has run out.
async fn track_leadership(
    raft: Raft,
    id: NodeId,
    since: Arc<std::sync::Mutex<Option<(u64, tokio::time::Instant)>>>,
) {
    let mut metrics = raft.metrics();
    loop {
        {
            let m = metrics.borrow();
            let leading = m.state == ServerState::Leader && m.current_leader == Some(id);
            let mut since = since.lock().unwrap_or_else(|e| e.into_inner());
            match *since {
                Some((term, _)) if leading && term == m.current_term => {}
                _ if leading => *since = Some((m.current_term, tokio::time::Instant::now())),
                _ => *since = None,
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A fault-injection switch for the failure tests: this node's clock runs this many
/// milliseconds off (`YINYI_FAULT_CLOCK_SKEW_MS`, may be negative), as a badly synchronised
/// machine's would. Unset in production.
pub const CLOCK_SKEW_ENV: &str = "YINYI_FAULT_CLOCK_SKEW_MS";

fn now_ms() -> i64 {
    static SKEW_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let skew = *SKEW_MS.get_or_init(|| {
        std::env::var(CLOCK_SKEW_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + skew
}

/// The time to stamp on a proposal: the wall clock, but never below the latest time applied or
/// stamped on this node (a leader elected with its clock behind the last one's, or a clock
/// stepped back, keeps time moving forward).
fn stamp(clock: &std::sync::atomic::AtomicI64, now_ms: i64) -> i64 {
    clock.fetch_max(now_ms, Ordering::SeqCst).max(now_ms)
}

impl Consensus {
    /// Opens the node's database in `data_dir` and starts Raft. The node serves no one until
    /// its [`Consensus::grpc_service`] is mounted on a server.
    pub async fn start(config: ConsensusConfig, data_dir: &Path) -> Result<Consensus, StartError> {
        let store = Arc::new(
            Store::open_with_cache(&data_dir.join("db"), config.block_cache_bytes)
                .map_err(StartError::Store)?,
        );
        let raft_config = Arc::new(config.raft_config().map_err(StartError::Config)?);
        let log_store = LogStore::new(store.clone());
        let committed = log_store.committed_handle();
        let log_written = log_store.written_handle();
        let election_pause = Arc::new(election_pause::ElectionPause::new(
            Duration::from_millis(config.install_snapshot_timeout_ms),
            Duration::from_millis(config.election_timeout_max_ms),
        ));
        let state_machine = StateMachine::new(store.clone(), config.rules, data_dir)
            .map_err(|e| StartError::Raft(format!("state machine: {e}")))?
            .with_election_pause(election_pause.clone());
        let clock = state_machine.clock();
        let snapshot_bytes = state_machine.snapshot_bytes();
        let snapshot_at = state_machine.snapshot_last_log_id();
        let log_on_disk = store.log_bytes_on_disk(snapshot_at.map_or(0, |l| l.index + 1));
        let raft = Raft::new(
            config.id,
            raft_config,
            network::NetworkFactory::new(config.routes.clone(), config.tls.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        tokio::spawn(election_pause::apply(raft.clone(), election_pause.clone()));
        tokio::spawn(snapshot_policy::build_when_due(
            raft.clone(),
            snapshot_policy::SnapshotRule {
                after_entries: config.snapshot_after_entries,
                log_percent: config.snapshot_log_percent,
            },
            snapshot_at,
            log_on_disk,
            log_written,
            snapshot_bytes,
        ));
        let proposals = proposer::spawn(raft.clone(), config.batch);
        let leader_since = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(track_leadership(
            raft.clone(),
            config.id,
            leader_since.clone(),
        ));
        Ok(Consensus {
            id: config.id,
            addr: config.addr,
            raft,
            store,
            committed,
            proposals,
            tls: config.tls,
            routes: config.routes,
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pending: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            leader_since,
            lease: Duration::from_millis(config.election_timeout_max_ms),
            clock,
            rules: config.rules,
            election_pause,
            reads: reads::SharedReads::default(),
        })
    }

    /// A snapshot chunk arrived from the leader (elections are held meanwhile).
    pub(crate) fn snapshot_chunk_received(&self) {
        self.election_pause.chunk();
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster's business rules (for the actors' early refusals, decided by the ledger).
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// How this node dials the others (TLS with its certificate, or plaintext when insecure).
    pub fn client_tls(&self) -> Option<&tonic::transport::ClientTlsConfig> {
        self.tls.as_ref()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The internal gRPC service (Raft RPCs, propose, status, membership) to mount on the
    /// node's server. With `require_peer_certificate` (every TLS node) each call is checked
    /// against the caller's certificate ([`server::Peer`]): Raft, proposals, membership and
    /// elections only from a node that is a member now; status from any certificate of the
    /// site CA (an operator's console); nothing from a caller without one.
    pub fn grpc_service(
        &self,
        require_peer_certificate: bool,
    ) -> pb::internal_server::InternalServer<server::InternalService> {
        pb::internal_server::InternalServer::new(server::InternalService::new(
            self.clone(),
            require_peer_certificate,
        ))
        .max_decoding_message_size(network::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(network::MAX_MESSAGE_BYTES)
    }

    /// Whether node `id` may speak Raft to this one: a member now (voter or learner), or any
    /// node while this one has no membership yet (it is waiting to be initialized or added).
    pub fn admits_peer(&self, id: NodeId) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let mut members = membership.nodes().map(|(member, _)| *member).peekable();
        members.peek().is_none() || membership.nodes().any(|(member, _)| *member == id)
    }

    /// Proposes one command and waits for its outcome. The leader stamps its time. On a
    /// follower: `NotLeader` with the leader, and nothing is proposed.
    pub async fn propose(&self, mut command: Command) -> Result<Outcome, ProposeError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.id) {
            return Err(self.not_leader(leader));
        }
        // Counted before the check, so a hand-over that set `draining` either sees this
        // proposal pending or this proposal sees `draining`.
        let pending = proposer::Pending::new(&self.pending);
        if self.draining.load(Ordering::SeqCst) {
            return Err(ProposeError::NotLeader { leader: None });
        }
        command.at = Timestamp(stamp(&self.clock, now_ms()));
        let bytes = yinyi_storage::encode(&command)
            .map_err(|e| ProposeError::Invalid(e.to_string()))?
            .len();
        let (reply, answer) = oneshot::channel();
        self.proposals
            .try_send(proposer::Proposal {
                command,
                pending,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    ProposeError::Overloaded("proposal queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => ProposeError::ShuttingDown,
            })?;
        answer.await.map_err(|_| ProposeError::ShuttingDown)?
    }

    /// The leader this node knows of, with its address.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let leader = self.raft.metrics().borrow().current_leader?;
        Some((leader, self.member_addr(leader).unwrap_or_default()))
    }

    /// How long since a majority last acknowledged this leader (`None` when not leading). A
    /// leader cut off from its followers keeps its role (openraft 0.9 does not step down), so
    /// the API asks this before taking a request it could never commit.
    pub fn quorum_silence(&self) -> Option<std::time::Duration> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader {
            return None;
        }
        metrics
            .millis_since_quorum_ack
            .map(std::time::Duration::from_millis)
    }

    /// Whether this node is the leader now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.id) && metrics.state == ServerState::Leader
    }

    fn not_leader(&self, leader: Option<NodeId>) -> ProposeError {
        let addr = leader.and_then(|id| self.member_addr(id));
        ProposeError::NotLeader {
            leader: leader.map(|id| (id, addr.unwrap_or_default())),
        }
    }

    fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Waits until this node may serve a linearizable read (read index, then applied past it):
    /// one quorum round, shared with the reads that arrive while it waits for it to start.
    pub async fn linearizable_read(&self) -> Result<(), ProposeError> {
        let raft = self.raft.clone();
        self.reads.read(move || read_round(raft.clone())).await
    }
}

/// One quorum round of openraft's: this node is still the leader, and its state machine has
/// applied everything committed when the round began.
async fn read_round(raft: Raft) -> Result<(), ProposeError> {
    raft.ensure_linearizable().await.map(|_| ()).map_err(|e| {
        match e.forward_to_leader::<BasicNode>() {
            Some(f) => ProposeError::forward(f),
            None => ProposeError::Unavailable(e.to_string()),
        }
    })
}

impl Consensus {
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ProposeError> {
        let map_err = |e: openraft::error::RaftError<
            NodeId,
            openraft::error::ClientWriteError<NodeId, BasicNode>,
        >| { ProposeError::from_raft(&e) };
        match change {
            MembershipChange::Initialize { members } => {
                let nodes: BTreeMap<NodeId, BasicNode> = members
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode { addr }))
                    .collect();
                self.raft
                    .initialize(nodes)
                    .await
                    .map_err(|e| ProposeError::Invalid(e.to_string()))
            }
            MembershipChange::AddLearner { id, addr } => {
                // openraft's "blocking" add_learner gives up waiting after 500 ms and answers
                // Ok all the same; a learner that cannot be reached (down, or refused by TLS)
                // must not be reported as caught up, so wait here for its log.
                let written = self
                    .raft
                    .add_learner(id, BasicNode { addr: addr.clone() }, false)
                    .await
                    .map_err(map_err)?;
                self.wait_caught_up(id, &addr, written.log_id.index).await
            }
            MembershipChange::Promote { ids } => self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map(|_| ())
                .map_err(map_err),
            MembershipChange::Remove { ids } => self
                .raft
                .change_membership(ChangeMembers::RemoveVoters(ids), false)
                .await
                .map(|_| ())
                .map_err(map_err),
        }
    }

    /// Waits until the leader has replicated up to `index` to node `id`.
    async fn wait_caught_up(&self, id: NodeId, addr: &str, index: u64) -> Result<(), ProposeError> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + LEARNER_CATCH_UP;
        loop {
            {
                let m = metrics.borrow();
                if m.current_leader != Some(self.id) {
                    return Err(self.not_leader(m.current_leader));
                }
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .and_then(|l| l.map(|l| l.index));
                if matched >= Some(index) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(ProposeError::Unavailable(format!(
                    "node {id} at {addr} is a learner but has not caught up within \
                     {LEARNER_CATCH_UP:?}: is it running, and does its certificate chain to \
                     the cluster's CA? (remove it with remove-node)"
                )));
            }
        }
    }

    /// Whether this node has ever been part of a cluster (it has a vote or a membership).
    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// This node's status; with `with_digest`, also a digest of its state (walks all of it).
    pub async fn status(&self, with_digest: bool) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let digest = if with_digest {
            let store = self.store.clone();
            let digest = tokio::task::spawn_blocking(move || store.digest())
                .await
                .ok()
                .and_then(|d| d.ok())
                .unwrap_or_else(|| "unavailable".into());
            Some(digest)
        } else {
            None
        };
        NodeStatus {
            id: self.id,
            addr: self.addr.clone(),
            state: match metrics.state {
                ServerState::Leader => "Leader",
                ServerState::Follower => "Follower",
                ServerState::Candidate => "Candidate",
                ServerState::Learner => "Learner",
                ServerState::Shutdown => "Shutdown",
            }
            .to_string(),
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log: metrics.last_log_index,
            committed: self.committed.load(Ordering::Relaxed),
            applied: metrics.last_applied.map(|l| l.index),
            snapshot: metrics.snapshot.map(|l| l.index),
            purged: metrics.purged.map(|l| l.index),
            members,
            digest,
        }
    }

    /// Waits until this node knows a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = rx.borrow().current_leader {
                return Some(leader);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    pub async fn trigger_snapshot(&self) -> Result<(), ProposeError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    pub async fn trigger_elect(&self) -> Result<(), ProposeError> {
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))
    }

    /// Hands leadership over before this node stops (openraft 0.9 has no transfer): new
    /// proposals are refused, what was accepted is written and applied, the most caught-up
    /// voter is waited for until it holds every entry, and — once this node's own leader
    /// lease (granted at election, never renewed on the leader) has run out — it is told to
    /// campaign. Its log is as long as ours, so this node votes for it and it wins at once
    /// (the other followers, whose lease the heartbeats renew, refuse; one vote is enough).
    /// The successor, or why there is none within `within` (the node then just stops, as
    /// after a crash).
    pub async fn hand_over(&self, within: Duration) -> Result<NodeId, String> {
        if !self.is_leader() {
            return Err("not the leader".into());
        }
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        let mut metrics = self.raft.metrics();
        // Asked again if it has not won after a while (a proposal raced the check, say).
        let mut told: Option<(NodeId, tokio::time::Instant)> = None;
        let again = Duration::from_millis(500);
        loop {
            let m = metrics.borrow().clone();
            // Done when another node leads (right after stepping down none is known yet).
            if let Some(leader) = m.current_leader
                && leader != self.id
            {
                return Ok(leader);
            }
            let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let best = m
                .replication
                .as_ref()
                .into_iter()
                .flatten()
                .filter(|(id, _)| **id != self.id && voters.contains(id))
                .max_by_key(|(_, matched)| matched.map(|l| l.index));
            // Nothing left to write, everything written applied, and the target holds it all:
            // its log is as long as ours, so we (and any follower) may vote for it.
            let lease_over = self
                .leader_since
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|(_, at)| at.elapsed() > self.lease + Duration::from_millis(20));
            let quiet = self.pending.load(Ordering::SeqCst) == 0
                && m.last_applied.map(|l| l.index) == m.last_log_index
                && lease_over;
            if let Some((&target, matched)) = best
                && quiet
                && matched.map(|l| l.index) == m.last_log_index
                && told.is_none_or(|(_, at)| at.elapsed() > again)
                && let Some(addr) = self
                    .routes
                    .get(&target)
                    .cloned()
                    .or_else(|| self.member_addr(target))
            {
                told = Some((target, tokio::time::Instant::now()));
                tracing::info!(target, "handing leadership over");
                let mut client = network::connect_lazy(&addr, self.tls.as_ref())
                    .map_err(|e| format!("dial {addr}: {e}"))?;
                if let Err(e) = client.trigger_elect(pb::Empty {}).await {
                    tracing::warn!(target, "could not ask it to campaign: {e}");
                    told = None;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no successor within {within:?}"));
            }
            let wake = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(wake, metrics.changed()).await;
        }
    }

    /// A backup of this node's database into `dir` (see [`backup`]).
    pub async fn backup(
        &self,
        dir: std::path::PathBuf,
    ) -> Result<backup::BackupInfo, backup::BackupError> {
        let store = self.store.clone();
        let id = self.id;
        tokio::task::spawn_blocking(move || backup::take(&store, id, &dir))
            .await
            .map_err(|e| backup::BackupError::Io(format!("backup task: {e}")))?
    }

    /// Stops Raft; the store closes when the last handle is dropped.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    /// Issue 15, path 4: a clock behind what was applied (a new leader's, or one stepped back)
    /// never stamps below it; a clock ahead moves time on.
    #[test]
    fn stamps_never_go_below_the_latest_time_applied_or_stamped() {
        let clock = AtomicI64::new(1_000);
        assert_eq!(stamp(&clock, 900), 1_000);
        assert_eq!(stamp(&clock, 1_500), 1_500);
        assert_eq!(stamp(&clock, 1_200), 1_500);
        assert_eq!(clock.load(Ordering::SeqCst), 1_500);
    }
}

//! A client of the nodes' internal service for `ctl`, the demo, the benchmark and tests: finds
//! the leader, follows `NotLeader` answers, and retries what is retryable with the same commands
//! (so the same request ids) until a deadline.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::Instant;
use tonic::transport::{Channel, ClientTlsConfig};
use yinyi_consensus::network::connect_lazy;
use yinyi_consensus::pb::internal_client::InternalClient;
use yinyi_consensus::pb::{Empty, Payload, StatusRequest};
use yinyi_consensus::{MembershipChange, NodeStatus, ProposeError};
use yinyi_ledger::{Command, Outcome};
use yinyi_storage::codec;

/// How long one RPC may take before it counts as failed.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// A status with the digest of the state, which the node computes by walking all of it.
const DIGEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Pause between retries while there is no leader; grows to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct ClusterClient {
    addrs: Vec<String>,
    clients: HashMap<String, InternalClient<Channel>>,
    leader: Option<String>,
    tls: Option<ClientTlsConfig>,
    pub retries: u64,
}

impl ClusterClient {
    /// A client of the internal service; `tls` carries a CA-signed certificate (a node's or an
    /// operator's), which TLS nodes require of every internal caller.
    pub fn new(addrs: Vec<String>, tls: Option<ClientTlsConfig>) -> ClusterClient {
        ClusterClient {
            addrs,
            clients: HashMap::new(),
            leader: None,
            tls,
            retries: 0,
        }
    }

    fn client(&mut self, addr: &str) -> Result<InternalClient<Channel>> {
        if let Some(c) = self.clients.get(addr) {
            return Ok(c.clone());
        }
        let c =
            connect_lazy(addr, self.tls.as_ref()).with_context(|| format!("bad address {addr}"))?;
        self.clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// One node's status, without its digest.
    pub async fn status(&mut self, addr: &str) -> Result<NodeStatus> {
        self.status_of(addr, false).await
    }

    /// One node's status with the digest of its state (the node walks all of it).
    pub async fn status_with_digest(&mut self, addr: &str) -> Result<NodeStatus> {
        self.status_of(addr, true).await
    }

    async fn status_of(&mut self, addr: &str, with_digest: bool) -> Result<NodeStatus> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(StatusRequest { with_digest });
        // A digest walks the whole state: minutes for millions of accounts.
        request.set_timeout(if with_digest {
            DIGEST_TIMEOUT
        } else {
            RPC_TIMEOUT
        });
        let reply = client
            .status(request)
            .await
            .with_context(|| format!("status of {addr}"))?;
        Ok(codec::decode(&reply.into_inner().data)?)
    }

    /// The leader's address, asking each node in turn until one knows.
    pub async fn find_leader(&mut self, deadline: Instant) -> Result<String> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            for addr in self.addrs.clone() {
                if let Ok(status) = self.status(&addr).await
                    && let Some(leader) = status.leader
                    && let Some(member) = status.members.iter().find(|m| m.id == leader)
                {
                    self.leader = Some(member.addr.clone());
                    return Ok(member.addr.clone());
                }
            }
            if Instant::now() >= deadline {
                bail!("no leader among {:?}", self.addrs);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn propose_once(
        &mut self,
        addr: &str,
        commands: &[Command],
    ) -> Result<Vec<Result<Outcome, ProposeError>>> {
        let mut client = self.client(addr)?;
        let mut request = tonic::Request::new(Payload {
            data: codec::encode(commands)?,
        });
        request.set_timeout(RPC_TIMEOUT);
        let reply = client.propose(request).await?;
        Ok(codec::decode(&reply.into_inner().data)?)
    }

    /// Proposes `commands` and returns one outcome each, retrying those that failed in a
    /// retryable way (no leader, leader moved, timeout) with the same request ids until
    /// `timeout` has passed.
    pub async fn propose(
        &mut self,
        commands: Vec<Command>,
        timeout: Duration,
    ) -> Result<Vec<Outcome>> {
        let deadline = Instant::now() + timeout;
        let mut outcomes: Vec<Option<Outcome>> = vec![None; commands.len()];
        let mut backoff = FIRST_BACKOFF;
        loop {
            let todo: Vec<usize> = (0..commands.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if todo.is_empty() {
                return Ok(outcomes
                    .into_iter()
                    .map(|o| o.expect("all answered"))
                    .collect());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} of {} commands unanswered at the deadline",
                    todo.len(),
                    commands.len()
                );
            }
            let leader = match self.leader.clone() {
                Some(l) => l,
                None => match self.find_leader(deadline).await {
                    Ok(l) => l,
                    Err(e) => bail!("{e}"),
                },
            };
            let batch: Vec<Command> = todo.iter().map(|&i| commands[i].clone()).collect();
            let mut progress = false;
            match self.propose_once(&leader, &batch).await {
                Ok(results) => {
                    for (&i, result) in todo.iter().zip(results) {
                        match result {
                            Ok(outcome) => {
                                outcomes[i] = Some(outcome);
                                progress = true;
                            }
                            Err(ProposeError::NotLeader {
                                leader: Some((_, addr)),
                            }) if !addr.is_empty() => {
                                self.leader = Some(addr);
                            }
                            Err(e) if e.is_retryable() => {
                                self.leader = None;
                            }
                            Err(e) => return Err(anyhow!("refused: {e}")),
                        }
                    }
                }
                Err(_) => self.leader = None,
            }
            if !progress {
                self.retries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = FIRST_BACKOFF;
            }
        }
    }

    /// Sends a membership change to the leader.
    pub async fn change_membership(
        &mut self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let leader = self.find_leader(deadline).await?;
        let mut client = self.client(&leader)?;
        let mut request = tonic::Request::new(Payload {
            data: codec::encode(&change)?,
        });
        request.set_timeout(timeout);
        let reply = client.change_membership(request).await?;
        let result: Result<(), ProposeError> = codec::decode(&reply.into_inner().data)?;
        result.map_err(|e| anyhow!("membership change refused: {e}"))
    }

    pub async fn trigger_snapshot(&mut self, addr: &str) -> Result<()> {
        let mut client = self.client(addr)?;
        let reply = client.trigger_snapshot(Empty {}).await?;
        let result: Result<(), ProposeError> = codec::decode(&reply.into_inner().data)?;
        result.map_err(|e| anyhow!("{e}"))
    }

    pub async fn trigger_elect(&mut self, addr: &str) -> Result<()> {
        let mut client = self.client(addr)?;
        let reply = client.trigger_elect(Empty {}).await?;
        let result: Result<(), ProposeError> = codec::decode(&reply.into_inner().data)?;
        result.map_err(|e| anyhow!("{e}"))
    }
}

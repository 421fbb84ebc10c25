//! The internal gRPC service: Raft RPCs from other nodes, and proposals, status and membership
//! changes from operators and (until the public API exists) the demo. Payloads are decoded with
//! the storage codec; a payload that does not decode is `INVALID_ARGUMENT`, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use yinyi_ledger::{Command, Outcome};
use yinyi_storage::codec;

use crate::pb::{Empty, Payload, StatusRequest};
use crate::types::TypeConfig;
use crate::{Consensus, MembershipChange, ProposeError};

/// Commands one Propose call may carry at most.
pub const MAX_COMMANDS_PER_CALL: usize = 4096;

pub struct InternalService {
    consensus: Consensus,
}

impl InternalService {
    pub fn new(consensus: Consensus) -> InternalService {
        InternalService { consensus }
    }
}

/// Refuses callers without a verified client certificate when certificates are required.
/// rustls has already checked the certificate against the site CA during the handshake.
#[derive(Clone, Copy, Debug)]
pub struct PeerCheck {
    pub required: bool,
}

impl tonic::service::Interceptor for PeerCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.required {
            return Ok(request);
        }
        match request.peer_certs() {
            Some(certs) if !certs.is_empty() => Ok(request),
            _ => {
                metrics::counter!("internal_refusals_total").increment(1);
                Err(Status::unauthenticated(
                    "the internal service needs a client certificate of the cluster's CA",
                ))
            }
        }
    }
}

fn decode<T: DeserializeOwned>(request: Request<Payload>) -> Result<T, Status> {
    codec::decode(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = codec::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { data }))
}

#[tonic::async_trait]
impl crate::pb::internal_server::Internal for InternalService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(request)?;
        reply(&self.consensus.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: openraft::raft::VoteRequest<u64> = decode(request)?;
        reply(&self.consensus.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(request)?;
        reply(&self.consensus.raft.install_snapshot(rpc).await)
    }

    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let commands: Vec<Command> = decode(request)?;
        if commands.len() > MAX_COMMANDS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} commands in one call; at most {MAX_COMMANDS_PER_CALL}",
                commands.len()
            )));
        }
        let calls = commands.into_iter().map(|c| self.consensus.propose(c));
        let outcomes: Vec<Result<Outcome, ProposeError>> = futures::future::join_all(calls).await;
        reply(&outcomes)
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<Payload>, Status> {
        let with_digest = request.into_inner().with_digest;
        reply(&self.consensus.status(with_digest).await)
    }

    async fn change_membership(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let change: MembershipChange = decode(request)?;
        reply(&self.consensus.change_membership(change).await)
    }

    async fn trigger_snapshot(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Payload>, Status> {
        reply(&self.consensus.trigger_snapshot().await)
    }

    async fn trigger_elect(&self, _request: Request<Empty>) -> Result<Response<Payload>, Status> {
        reply(&self.consensus.trigger_elect().await)
    }
}

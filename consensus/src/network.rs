//! The Raft network over tonic: a thin adapter. Each RPC is the openraft message encoded with
//! the storage codec inside a protobuf `Payload`; the reply is the remote's `Result`, encoded the
//! same way. Connections are made lazily and reused.

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use yinyi_storage::codec;

use crate::pb::Payload;
use crate::pb::internal_client::InternalClient;
use crate::types::{NodeId, TypeConfig};

/// The largest gRPC message between nodes (a batch of entries or a snapshot chunk).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A lazily connecting channel to a node: TLS when `tls` is given (the node's own certificate
/// inside it is shown to the callee), plaintext otherwise.
pub fn channel_to(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(endpoint.connect_lazy())
}

/// A client of one node's internal service, connecting on first use.
pub fn connect_lazy(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<InternalClient<Channel>, tonic::transport::Error> {
    Ok(InternalClient::new(channel_to(addr, tls)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Makes openraft's clients of the other nodes. openraft asks for a new client for each
/// replication stream, each election and each linearizable read (a heartbeat round); they all
/// share one connection per node and address (an HTTP/2 channel that reconnects when it
/// breaks), so a read costs no TCP connection and TLS handshake.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    /// Addresses dialled instead of the members' own, by node.
    routes: std::sync::Arc<std::collections::BTreeMap<NodeId, String>>,
    tls: Option<ClientTlsConfig>,
    clients: std::sync::Arc<std::sync::Mutex<Clients>>,
}

/// The shared client of each node, by id and the address it was dialled at.
type Clients = std::collections::HashMap<(NodeId, String), InternalClient<Channel>>;

impl NetworkFactory {
    pub fn new(
        routes: std::collections::BTreeMap<NodeId, String>,
        tls: Option<ClientTlsConfig>,
    ) -> NetworkFactory {
        NetworkFactory {
            routes: std::sync::Arc::new(routes),
            tls,
            clients: Default::default(),
        }
    }

    /// The shared client of `target` at `addr`, made on first use.
    fn client(&self, target: NodeId, addr: &str) -> Option<InternalClient<Channel>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target, addr.to_string());
        if let Some(client) = clients.get(&key) {
            return Some(client.clone());
        }
        // A node that moved leaves its old address behind: drop that channel.
        clients.retain(|(id, _), _| *id != target);
        let client = connect_lazy(addr, self.tls.as_ref()).ok()?;
        clients.insert(key, client.clone());
        Some(client)
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        let addr = self.routes.get(&target).unwrap_or(&node.addr).clone();
        Network {
            target,
            client: self.client(target, &addr),
            snapshot_client: None,
            tls: self.tls.clone(),
            addr,
        }
    }
}

pub struct Network {
    target: NodeId,
    addr: String,
    /// The node's shared connection (appends, votes, read rounds).
    client: Option<InternalClient<Channel>>,
    /// Snapshot chunks (megabytes each) go on a connection of their own, dialled on the first
    /// one, so appends and read rounds to the node never wait behind them.
    snapshot_client: Option<InternalClient<Channel>>,
    tls: Option<ClientTlsConfig>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Network {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if matches!(method, Method::Snapshot) && self.snapshot_client.is_none() {
            self.snapshot_client = connect_lazy(&self.addr, self.tls.as_ref()).ok();
        }
        let client = match method {
            Method::Snapshot => self.snapshot_client.as_mut(),
            _ => self.client.as_mut(),
        };
        let Some(client) = client else {
            let e = TransportError(format!("bad address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let data = codec::encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut req = tonic::Request::new(Payload { data });
        req.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(req).await,
            Method::Vote => client.vote(req).await,
            Method::Snapshot => client.install_snapshot(req).await,
        };
        let reply = reply.map_err(|status| {
            let e = TransportError(format!("{}: {}", status.code(), status.message()));
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

//! The internal gRPC service: Raft RPCs, proposals, membership changes, snapshots and elections
//! from the member nodes (checked by the node named in the caller's certificate), and status
//! for any certificate of the site CA. Payloads are decoded with
//! the storage codec; a payload that does not decode is `INVALID_ARGUMENT`, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use yinyi_ledger::{Command, Outcome};
use yinyi_storage::codec;

use crate::pb::{Empty, Payload, StatusRequest};
use crate::types::TypeConfig;
use crate::{Consensus, MembershipChange, ProposeError};

/// A test-only fault: set to a number of milliseconds, this node takes that much longer over
/// every snapshot chunk it receives, as a big snapshot's transfer takes minutes. Never set it
/// in production.
pub const SLOW_CHUNK_ENV: &str = "YINYI_FAULT_SLOW_CHUNK_MS";

fn slow_chunks() -> Option<std::time::Duration> {
    crate::fault_delay(SLOW_CHUNK_ENV, "every snapshot chunk received is slowed")
}

/// Commands one Propose call may carry at most.
pub const MAX_COMMANDS_PER_CALL: usize = 4096;

pub struct InternalService {
    consensus: Consensus,
    /// Every caller must show a certificate of the site CA (every TLS node).
    require_peer_certificate: bool,
}

impl InternalService {
    pub fn new(consensus: Consensus, require_peer_certificate: bool) -> InternalService {
        InternalService {
            consensus,
            require_peer_certificate,
        }
    }

    /// Refuses a call unless its caller may make it: `Access::Member` only for a node that is a
    /// member now (its certificate names it, [`Peer::Node`]); `Access::Status` for any
    /// certificate of the site CA. rustls has already verified the certificate against the CA.
    fn admit<T>(&self, request: &Request<T>, access: Access) -> Result<(), Status> {
        if !self.require_peer_certificate {
            return Ok(());
        }
        let refuse = |reason: &'static str, message: String| {
            metrics::counter!("internal_refusals_total", "reason" => reason).increment(1);
            tracing::warn!(reason, "internal service refused: {message}");
            Err(Status::permission_denied(message))
        };
        let Some(peer) = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| Peer::of(c.as_ref())))
        else {
            metrics::counter!("internal_refusals_total", "reason" => "no_certificate").increment(1);
            return Err(Status::unauthenticated(
                "the internal service needs a client certificate of the cluster's CA",
            ));
        };
        match (peer, access) {
            (Peer::Node(id), _) if self.consensus.admits_peer(id) => Ok(()),
            (Peer::Node(id), _) => refuse(
                "not_member",
                format!("node {id} is not a member of this cluster"),
            ),
            (Peer::Other(_), Access::Status) => Ok(()),
            (Peer::Other(name), Access::Member) => refuse(
                "not_node",
                format!(
                    "certificate {name:?} is not a member node's: Raft, proposals and membership \
                     are for nodes; operators use the public API with a credential"
                ),
            ),
        }
    }
}

/// What an internal call needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Raft RPCs, proposals, membership changes, snapshots and elections: a member node.
    Member,
    /// A node's status: any certificate of the site CA.
    Status,
}

/// Who holds a client certificate of the site CA: a node names itself in the subject's common
/// name as `yinyi node<ID>` (what `yinyi ctl certs` issues); anything else (an operator's
/// console, `yinyi admin`) is not a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Node(u64),
    Other(String),
}

/// The common-name prefix of node certificates.
pub const NODE_COMMON_NAME_PREFIX: &str = "yinyi node";

impl Peer {
    /// The holder of the certificate `der` (DER, already verified against the site CA).
    pub fn of(der: &[u8]) -> Peer {
        let common_name = subject_common_name(der).unwrap_or_default();
        match common_name
            .strip_prefix(NODE_COMMON_NAME_PREFIX)
            .filter(|id| !id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|id| id.parse::<u64>().ok())
        {
            Some(id) => Peer::Node(id),
            None => Peer::Other(common_name),
        }
    }
}

/// One DER element at the start of `input`: its tag, its contents and what follows. `None`
/// when a length runs past the input (every length is checked before it is used).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let len = rest[..bytes]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[bytes..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject's common name (OID 2.5.4.3) of an X.509 certificate: Certificate → TBSCertificate
/// → (version), serial, signature algorithm, issuer, validity → subject. The few DER steps are
/// walked here rather than through an X.509 crate, whose compile would rebuild RocksDB's.
fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    if let (VERSION, _, after) = der_element(rest)? {
        rest = after;
    }
    // serialNumber, signature, issuer, validity
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, mut names, _) = der_element(rest)? else {
        return None;
    };
    while !names.is_empty() {
        let (SET, mut attributes, after) = der_element(names)? else {
            return None;
        };
        names = after;
        while !attributes.is_empty() {
            let (SEQUENCE, attribute, after) = der_element(attributes)? else {
                return None;
            };
            attributes = after;
            let (OID, oid, value) = der_element(attribute)? else {
                return None;
            };
            if oid == COMMON_NAME {
                // UTF8String, PrintableString or IA5String
                let (tag, text, _) = der_element(value)?;
                return matches!(tag, 0x0c | 0x13 | 0x16)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
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
        self.admit(&request, Access::Member)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(request)?;
        reply(&self.consensus.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
        let rpc: openraft::raft::VoteRequest<u64> = decode(request)?;
        reply(&self.consensus.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(request)?;
        self.consensus.snapshot_chunk_received();
        if let Some(pause) = slow_chunks() {
            tokio::time::sleep(pause).await;
        }
        reply(&self.consensus.raft.install_snapshot(rpc).await)
    }

    async fn propose(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
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
        self.admit(&request, Access::Status)?;
        let with_digest = request.into_inner().with_digest;
        reply(&self.consensus.status(with_digest).await)
    }

    async fn change_membership(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
        let change: MembershipChange = decode(request)?;
        reply(&self.consensus.change_membership(change).await)
    }

    async fn trigger_snapshot(&self, request: Request<Empty>) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
        reply(&self.consensus.trigger_snapshot().await)
    }

    async fn trigger_elect(&self, request: Request<Empty>) -> Result<Response<Payload>, Status> {
        self.admit(&request, Access::Member)?;
        reply(&self.consensus.trigger_elect().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(common_name: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["yinyi".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "hospital");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// Issue 16, point 1: the internal service knows a node by its certificate's name.
    #[test]
    fn a_certificate_names_its_node_or_is_another_callers() {
        assert_eq!(Peer::of(&certificate("yinyi node3")), Peer::Node(3));
        assert_eq!(Peer::of(&certificate("yinyi node12")), Peer::Node(12));
        for other in [
            "yinyi admin",
            "yinyi node",
            "yinyi node03",
            "yinyi node3x",
            "node3",
        ] {
            assert_eq!(
                Peer::of(&certificate(other)),
                Peer::Other(other.to_string()),
                "{other}"
            );
        }
        // Not a certificate, or cut short: nobody.
        let der = certificate("yinyi node3");
        assert_eq!(Peer::of(&der[..der.len() / 2]), Peer::Other(String::new()));
        assert_eq!(Peer::of(&[0x30, 0x84, 0xff]), Peer::Other(String::new()));
        assert_eq!(Peer::of(&[]), Peer::Other(String::new()));
    }
}

//! The public gRPC API on every node: PaymentService, HisService, TerminalService and
//! AdminService. A call is validated here (bad input never reaches Raft); on a follower it is
//! forwarded once to the leader with what is left of its deadline; on the leader, writes go to
//! the entity's actor and reads wait for a linearizable read index.

pub mod admin;
pub mod auth;
pub mod convert;
pub mod his;
pub mod inpatient;
pub mod payment;
pub mod terminal;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use yinyi_actors::{Actors, EntityKey};
use yinyi_api::error::{LEADER_HINT, status_with_reason};
use yinyi_consensus::{Consensus, ProposeError};
use yinyi_ledger::{BillId, CardNo, Command, Effect, Money, Outcome, TerminalId, Timestamp};

use crate::backend::NodeBackend;
use convert::reason;

/// Request metadata marking a call a follower forwarded; the receiver never forwards again.
pub const FORWARDED: &str = "x-yinyi-forwarded";
/// A forwarded call's deadline when the client set none.
const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a leader may go without a majority's acknowledgement before the API refuses
/// requests (heartbeats are every 50 ms; a loaded cluster acknowledges within a second).
pub const QUORUM_SILENCE: Duration = Duration::from_secs(5);

/// What every service of the node shares.
pub struct Gateway {
    consensus: Consensus,
    backend: NodeBackend,
    actors: Actors<NodeBackend>,
    /// The single-transaction limit until an admin sets the rules, for validating amounts
    /// before anything is proposed.
    limit: Money,
    channels: Mutex<HashMap<String, Channel>>,
    bank: Option<Arc<Bank>>,
    /// Seals holder names and phones before they are proposed, opens them for replies.
    sealer: Option<Arc<crate::seal::Sealer>>,
    /// The third-party channels a payment may name.
    providers: Vec<String>,
}

/// The bank gateway of this node.
pub type Bank = yinyi_actors::BankGateway<NodeBackend, crate::bank_link::NodeBankLink>;

impl Gateway {
    pub fn new(
        consensus: Consensus,
        backend: NodeBackend,
        actors: Actors<NodeBackend>,
        limit: Money,
        bank: Option<Arc<Bank>>,
        sealer: Option<Arc<crate::seal::Sealer>>,
        providers: Vec<String>,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            consensus,
            backend,
            actors,
            limit,
            channels: Mutex::new(HashMap::new()),
            bank,
            sealer,
            providers,
        })
    }

    /// The third-party channels a payment may name on this node.
    pub fn providers(&self) -> &[String] {
        &self.providers
    }

    /// A holder's name or phone as it is stored: sealed when this node has a data key.
    /// `context` names the request and field (a retry seals the same).
    pub fn seal(&self, context: &str, plain: &str) -> String {
        match &self.sealer {
            Some(sealer) => sealer.seal(context, plain),
            None => plain.to_string(),
        }
    }

    /// A stored name or phone as a reply shows it.
    pub fn show(&self, stored: &str) -> String {
        crate::seal::show(self.sealer.as_deref(), stored)
    }

    /// The bank gateway, when this node has a bank link.
    pub fn bank(&self) -> Option<&Arc<Bank>> {
        self.bank.as_ref()
    }

    /// The single-transaction limit in force: the replicated rules' once an admin set them.
    pub fn limit(&self) -> Money {
        self.backend
            .store()
            .rules()
            .ok()
            .flatten()
            .map_or(self.limit, |r| r.single_txn_limit)
    }

    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    pub fn actors(&self) -> &Actors<NodeBackend> {
        &self.actors
    }

    pub fn backend(&self) -> &NodeBackend {
        &self.backend
    }

    pub fn is_leader(&self) -> bool {
        self.consensus.is_leader()
    }

    /// A leader that has heard from no majority for [`QUORUM_SILENCE`] (its followers down or
    /// cut off) refuses at once with `NO_LEADER` instead of queueing a request it cannot
    /// commit; the client retries elsewhere.
    pub fn check_quorum(&self) -> Result<(), Status> {
        match self.consensus.quorum_silence() {
            Some(silence) if silence > QUORUM_SILENCE => Err(status_with_reason(
                Code::Unavailable,
                reason::NO_LEADER,
                format!(
                    "this node leads but has heard from no majority for {} ms; retry with the \
                     same request id",
                    silence.as_millis()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `UNAVAILABLE` with the leader's address in the metadata when this node knows it.
    pub fn no_leader(&self, message: &str) -> Status {
        let mut status = status_with_reason(
            Code::Unavailable,
            reason::NO_LEADER,
            format!("{message}; retry with the same request id"),
        );
        if let Some((_, addr)) = self.consensus.leader()
            && !addr.is_empty()
            && let Ok(value) = MetadataValue::try_from(addr.as_str())
        {
            status.metadata_mut().insert(LEADER_HINT, value);
        }
        status
    }

    fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = yinyi_consensus::network::channel_to(addr, self.consensus.client_tls())
            .map_err(|e| convert::internal(format!("leader address {addr}: {e}")))?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Sends a call that arrived on a follower to the leader, once, with what is left of the
    /// caller's deadline. A call that was already forwarded is not forwarded again.
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        if request.metadata().contains_key(FORWARDED) {
            return Err(self.no_leader("forwarded to a node that is not the leader"));
        }
        let Some((leader, addr)) = self.consensus.leader() else {
            return Err(self.no_leader("the cluster has no leader now"));
        };
        if leader == self.consensus.id() || addr.is_empty() {
            // Leader by Raft's metrics but not ready to serve yet.
            return Err(self.no_leader("the leader is still taking over"));
        }
        let timeout = grpc_timeout(request.metadata()).unwrap_or(DEFAULT_FORWARD_TIMEOUT);
        let (metadata, extensions, message) = request.into_parts();
        let mut forwarded = Request::from_parts(copy_metadata(&metadata), extensions, message);
        forwarded
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        forwarded.set_timeout(timeout);
        let channel = self.channel(&addr)?;
        metrics::counter!("api_forwarded_total").increment(1);
        match tokio::time::timeout(timeout, call(channel, forwarded)).await {
            Ok(Ok(response)) => Ok(response),
            // A failure reaching the leader (a connection refused or cut, the leader going
            // away): tonic's own status, without a yinyi reason. The caller retries with the
            // same request id, guided by the leader hint.
            Ok(Err(status))
                if yinyi_api::error::reason_of(&status).is_none()
                    && matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ) =>
            {
                Err(self.no_leader(&format!("leader {addr} unreachable: {}", status.message())))
            }
            Ok(Err(status)) => Err(status),
            Err(_) => Err(status_with_reason(
                Code::DeadlineExceeded,
                reason::LEADER_TIMEOUT,
                format!(
                    "the leader {addr} did not answer within {timeout:?}; \
                     ask again with the same request id"
                ),
            )),
        }
    }

    /// Runs a write on its entity's actor and returns what it did; a rejection is the
    /// matching gRPC status with its reason.
    pub async fn submit(&self, key: EntityKey, command: Command) -> Result<Effect, Status> {
        let name = command.body.name();
        let began = std::time::Instant::now();
        let outcome = self.actors.submit(key, command).await;
        metrics::histogram!("api_write_seconds", "method" => name)
            .record(began.elapsed().as_secs_f64());
        let outcome = outcome.map_err(convert::submit_failed)?;
        self.counted(name, outcome)
    }

    /// Runs a batch of commands on one entity, proposed together: each command's effect or
    /// refusal, in order. A failure to decide (no leader, overload) fails the whole call, so
    /// the caller retries it all with the same request ids.
    pub async fn submit_batch(
        &self,
        key: EntityKey,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Effect, Status>>, Status> {
        let names: Vec<&'static str> = commands.iter().map(|c| c.body.name()).collect();
        let outcomes = self.actors.submit_batch(key, commands).await;
        let mut answers = Vec::with_capacity(outcomes.len());
        for (outcome, name) in outcomes.into_iter().zip(names) {
            let outcome = outcome.map_err(convert::submit_failed)?;
            answers.push(self.counted(name, outcome));
        }
        Ok(answers)
    }

    fn counted(&self, name: &'static str, outcome: Outcome) -> Result<Effect, Status> {
        match outcome {
            Outcome::Done(effect) => {
                metrics::counter!("api_requests_total", "method" => name, "code" => "OK")
                    .increment(1);
                Ok(effect)
            }
            Outcome::Rejected(rejection) => {
                metrics::counter!("api_requests_total", "method" => name, "code" => rejection.code.as_str())
                    .increment(1);
                Err(convert::rejected(&rejection))
            }
        }
    }

    /// A command with the leader's time left to Raft (the proposer stamps it).
    pub fn command(
        &self,
        request_id: &str,
        terminal_id: &str,
        operator_id: &str,
        body: yinyi_ledger::CommandBody,
    ) -> Result<Command, Status> {
        let terminal = convert::terminal_id("terminal_id", terminal_id)?;
        auth::check_terminal(&terminal)?;
        Ok(Command {
            request: convert::request_id(request_id)?,
            terminal,
            operator: convert::operator(operator_id)?,
            at: Timestamp(0),
            body,
        })
    }

    /// A command of the cluster's own (`S-` terminal: membership records, reconciliation
    /// reports), made by the node itself on an operator's call, never from a client's ids.
    pub fn system_command(
        &self,
        request_id: &str,
        terminal_id: &str,
        body: yinyi_ledger::CommandBody,
    ) -> Result<Command, Status> {
        let terminal = TerminalId::parse(terminal_id)
            .map_err(|e| convert::internal(format!("system terminal: {e}")))?;
        assert_eq!(
            terminal.kind(),
            yinyi_ledger::TerminalKind::System,
            "system commands come from S- terminals"
        );
        Ok(Command {
            request: yinyi_ledger::RequestId::parse(request_id)
                .map_err(|e| convert::internal(format!("system request id: {e}")))?,
            terminal,
            operator: None,
            at: Timestamp(0),
            body,
        })
    }

    /// Builds a command of the cluster's own ([`Gateway::system_command`]) and submits it
    /// through its `S-` terminal's actor.
    pub async fn submit_system(
        &self,
        request_id: &str,
        terminal_id: &str,
        body: yinyi_ledger::CommandBody,
    ) -> Result<Effect, Status> {
        let command = self.system_command(request_id, terminal_id, body)?;
        self.submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await
    }

    /// The actor for a command about `card`: its account's, or the terminal's when the card
    /// is unknown (the ledger then answers CARD_NOT_FOUND).
    pub fn key_for_card(&self, card: &CardNo, terminal: &TerminalId) -> EntityKey {
        match self.backend.card(card) {
            Some(card) => EntityKey::Account(card.account),
            None => EntityKey::Terminal(terminal.clone()),
        }
    }

    /// The actor for a command about `bill`: its account's, or the terminal's when unknown.
    pub fn key_for_bill(&self, bill: &BillId, terminal: &TerminalId) -> EntityKey {
        use yinyi_actors::Backend;
        match self.backend.bill(bill) {
            Some(bill) => EntityKey::Account(bill.account),
            None => EntityKey::Terminal(terminal.clone()),
        }
    }

    /// Waits until this node (the leader) may answer a read linearizably.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        self.consensus
            .linearizable_read()
            .await
            .map_err(|e| match e {
                ProposeError::NotLeader { .. } => self.no_leader("leadership moved"),
                other => self.no_leader(&other.to_string()),
            })
    }
}

/// What of the caller's metadata travels with a forwarded call: the yinyi keys (request
/// context, later credentials), never transport headers.
fn copy_metadata(from: &MetadataMap) -> MetadataMap {
    let mut to = MetadataMap::new();
    for key_value in from.iter() {
        // Ours, and the caller's credential: the leader checks it again.
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = key_value
            && (key.as_str().starts_with("x-yinyi-") || key.as_str() == "authorization")
        {
            to.insert(key.clone(), value.clone());
        }
    }
    to
}

/// The caller's deadline from the `grpc-timeout` header ("250m", "3S", …).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Forwards to the leader unless this node is it.
#[macro_export]
macro_rules! lead_or_forward {
    ($gateway:expr, $request:ident, $client:ident, $method:ident) => {
        $gateway.check_quorum()?;
        if !$gateway.is_leader() {
            return $gateway
                .forward($request, |channel, request| async move {
                    $client::new(channel).$method(request).await
                })
                .await;
        }
    };
}

/// An effect of another kind than the call produces: a bug, reported as INTERNAL.
pub fn unexpected(effect: &Effect) -> Status {
    convert::internal(format!("unexpected effect {effect:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut m = MetadataMap::new();
        for (text, expected) in [
            ("250m", Duration::from_millis(250)),
            ("3S", Duration::from_secs(3)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("500u", Duration::from_micros(500)),
            ("7n", Duration::from_nanos(7)),
        ] {
            m.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&m), Some(expected), "{text}");
        }
        m.insert("grpc-timeout", "12x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
        m.insert("grpc-timeout", "S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }
}

//! The client library: calls any of a cluster's nodes, retries what may be retried with the
//! very same request (so the same request id: the cluster applies it once and answers the
//! same), follows the leader hint, backs off boundedly, and keeps to a deadline per call.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::error::{ApiError, LEADER_HINT};
use crate::v1;
use crate::v1::admin_service_client::AdminServiceClient;
use crate::v1::his_service_client::HisServiceClient;
use crate::v1::inpatient_service_client::InpatientServiceClient;
use crate::v1::payment_service_client::PaymentServiceClient;
use crate::v1::terminal_service_client::TerminalServiceClient;

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Every node's address, `host:port` (or an `http://` URI); at least one.
    pub nodes: Vec<String>,
    /// One attempt's timeout, also sent as `grpc-timeout` so a node forwarding to the leader
    /// knows what is left.
    pub attempt_timeout: Duration,
    /// A whole call's deadline, retries included.
    pub deadline: Duration,
    /// The first pause after a full round of failed attempts; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub connect_timeout: Duration,
    /// TLS to the nodes (`None`: plaintext, for local demos and tests that ask for it).
    pub tls: Option<ClientTlsConfig>,
    /// The caller's credential, `ID:SECRET` (`yinyi ctl credential add` prints it), sent as
    /// `authorization: Bearer …` with every call.
    pub credential: Option<String>,
}

impl ClientConfig {
    pub fn new(nodes: Vec<String>) -> ClientConfig {
        ClientConfig {
            nodes,
            attempt_timeout: Duration::from_secs(3),
            deadline: Duration::from_secs(10),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            tls: None,
            credential: None,
        }
    }
}

struct Node {
    addr: String,
    channel: Channel,
}

struct Shared {
    nodes: Mutex<Vec<Arc<Node>>>,
    /// The node that answered last; calls start there.
    preferred: AtomicUsize,
    retries: AtomicU64,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
}

/// A client of a yinyi cluster; cheap to clone (clones share connections).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    config: ClientConfig,
    /// `Bearer ID:SECRET`, ready for the metadata.
    authorization: Option<AsciiMetadataValue>,
}

fn connect(
    addr: &str,
    connect_timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<Node, ApiError> {
    let mut endpoint = Endpoint::from_shared(crate::tls::uri(addr, tls.is_some()))
        .map_err(|_| ApiError::BadAddress(addr.to_string()))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| ApiError::BadAddress(format!("{addr}: {e}")))?;
    }
    Ok(Node {
        addr: addr.to_string(),
        channel: endpoint.connect_lazy(),
    })
}

fn authorization(credential: Option<&str>) -> Result<Option<AsciiMetadataValue>, ApiError> {
    credential
        .map(|c| {
            format!("Bearer {c}")
                .parse()
                .map_err(|_| ApiError::BadCredential("a credential is printable ASCII".into()))
        })
        .transpose()
}

/// Whether a failed attempt may be sent again (the same request, to this or another node).
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown
    )
}

impl Client {
    /// A client of the nodes in `config`; connects lazily, on first use.
    pub fn new(config: ClientConfig) -> Result<Client, ApiError> {
        if config.nodes.is_empty() {
            return Err(ApiError::BadAddress("no node given".into()));
        }
        let nodes = config
            .nodes
            .iter()
            .map(|a| connect(a, config.connect_timeout, config.tls.as_ref()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let authorization = authorization(config.credential.as_deref())?;
        Ok(Client {
            shared: Arc::new(Shared {
                nodes: Mutex::new(nodes),
                preferred: AtomicUsize::new(0),
                retries: AtomicU64::new(0),
                connect_timeout: config.connect_timeout,
                tls: config.tls.clone(),
            }),
            config,
            authorization,
        })
    }

    /// The same connections, calling with another credential (`ID:SECRET`).
    pub fn with_credential(&self, credential: &str) -> Result<Client, ApiError> {
        let mut config = self.config.clone();
        config.credential = Some(credential.to_string());
        Ok(Client {
            shared: self.shared.clone(),
            authorization: authorization(Some(credential))?,
            config,
        })
    }

    /// Puts this client's credential on an outgoing request.
    pub fn authorize<T>(&self, request: &mut Request<T>) {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
    }

    /// The same connections with another deadline per call.
    pub fn with_deadline(&self, deadline: Duration) -> Client {
        let mut config = self.config.clone();
        config.deadline = deadline;
        Client {
            shared: self.shared.clone(),
            config,
            authorization: self.authorization.clone(),
        }
    }

    /// What this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Attempts beyond the first, over this client's life (shared by clones).
    pub fn retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    fn node(&self, index: usize) -> (usize, Arc<Node>) {
        let nodes = self.shared.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let i = index % nodes.len();
        (i, nodes[i].clone())
    }

    fn node_count(&self) -> usize {
        self.shared
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The index of the node at `addr`, added when new.
    fn index_of(&self, addr: &str) -> Option<usize> {
        let mut nodes = self.shared.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = nodes.iter().position(|n| n.addr == addr) {
            return Some(i);
        }
        let node = connect(addr, self.shared.connect_timeout, self.shared.tls.as_ref()).ok()?;
        nodes.push(Arc::new(node));
        Some(nodes.len() - 1)
    }

    /// Issues one RPC through `f` until it succeeds, fails in a way retrying cannot change,
    /// or the deadline passes. `f` gets a channel to the node to try and this attempt's
    /// timeout, and must send the same request each time.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ApiError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let mut index = self.shared.preferred.load(Ordering::Relaxed);
        let mut backoff = self.config.first_backoff;
        let mut attempts: u32 = 0;
        let mut failed_in_round = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::DeadlineExceeded {
                    attempts,
                    last: "deadline passed before an attempt".into(),
                });
            }
            let (i, node) = self.node(index);
            let timeout = self.config.attempt_timeout.min(remaining);
            attempts += 1;
            if attempts > 1 {
                self.shared.retries.fetch_add(1, Ordering::Relaxed);
            }
            let result = tokio::time::timeout(timeout, f(node.channel.clone(), timeout)).await;
            let status = match result {
                Ok(Ok(response)) => {
                    self.shared.preferred.store(i, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if !retryable(&status) => {
                    self.shared.preferred.store(i, Ordering::Relaxed);
                    return Err(ApiError::from_status(&status));
                }
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "{} gave no answer in {timeout:?}",
                    node.addr
                )),
            };
            tracing::debug!(node = %node.addr, code = ?status.code(), "retrying: {}", status.message());
            let hint = status
                .metadata()
                .get(LEADER_HINT)
                .and_then(|v| v.to_str().ok())
                .filter(|addr| *addr != node.addr)
                .and_then(|addr| self.index_of(addr));
            let overloaded = status.code() == Code::ResourceExhausted;
            match hint {
                Some(leader) => {
                    index = leader;
                    failed_in_round = 0;
                }
                None => {
                    index = i + 1;
                    failed_in_round += 1;
                }
            }
            if overloaded || failed_in_round >= self.node_count() {
                failed_in_round = 0;
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining <= backoff {
                    return Err(ApiError::DeadlineExceeded {
                        attempts,
                        last: format!("{:?}: {}", status.code(), status.message()),
                    });
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
    }
}

/// One convenience method per RPC: the request is cloned for each attempt.
macro_rules! rpcs {
    ($($client:ident :: $method:ident ($request:ty) -> $reply:ty;)*) => {
        impl Client {
            $(
                pub async fn $method(&self, request: $request) -> Result<$reply, ApiError> {
                    self.call(|channel, timeout| {
                        let mut r = Request::new(request.clone());
                        r.set_timeout(timeout);
                        self.authorize(&mut r);
                        async move { $client::new(channel).$method(r).await }
                    })
                    .await
                }
            )*
        }
    };
}

rpcs! {
    PaymentServiceClient::issue_card(v1::IssueCardRequest) -> v1::IssueCardReply;
    PaymentServiceClient::issue_cards(v1::IssueCardsRequest) -> v1::IssueCardsReply;
    PaymentServiceClient::deposit_cash(v1::DepositCashRequest) -> v1::Receipt;
    PaymentServiceClient::top_up_bank_card(v1::TopUpBankCardRequest) -> v1::BankOpReply;
    PaymentServiceClient::top_up_third_party(v1::TopUpThirdPartyRequest) -> v1::BankOpReply;
    PaymentServiceClient::pay_bill(v1::PayBillRequest) -> v1::Receipt;
    PaymentServiceClient::authorize_payment(v1::AuthorizePaymentRequest) -> v1::BankOpReply;
    PaymentServiceClient::capture_payment(v1::CapturePaymentRequest) -> v1::Receipt;
    PaymentServiceClient::release_authorization(v1::ReleaseAuthorizationRequest) -> v1::BankOpReply;
    PaymentServiceClient::refund(v1::RefundRequest) -> v1::Receipt;
    PaymentServiceClient::batch_refund(v1::BatchRefundRequest) -> v1::BatchRefundReply;
    PaymentServiceClient::withdraw(v1::WithdrawRequest) -> v1::Receipt;
    PaymentServiceClient::report_loss(v1::CardRequest) -> v1::CardReply;
    PaymentServiceClient::cancel_loss(v1::CardRequest) -> v1::CardReply;
    PaymentServiceClient::replace_card(v1::ReplaceCardRequest) -> v1::ReplaceCardReply;
    PaymentServiceClient::query_balance(v1::QueryBalanceRequest) -> v1::BalanceReply;
    PaymentServiceClient::list_transactions(v1::ListTransactionsRequest) -> v1::ListTransactionsReply;
    PaymentServiceClient::third_party_notify(v1::ThirdPartyNotice) -> v1::NoticeAck;
    HisServiceClient::post_bill(v1::PostBillRequest) -> v1::Bill;
    HisServiceClient::cancel_bill(v1::CancelBillRequest) -> v1::CancelBillReply;
    HisServiceClient::get_bill(v1::GetBillRequest) -> v1::Bill;
    HisServiceClient::mark_invoiced(v1::MarkInvoicedRequest) -> v1::Bill;
    HisServiceClient::bill_feed(v1::BillFeedRequest) -> v1::BillFeedReply;
    HisServiceClient::reconcile_his(v1::ReconcileHisRequest) -> v1::HisReconciliationReport;
    HisServiceClient::confirm_double_collection(v1::ConfirmDoubleCollectionRequest) -> v1::Receipt;
    HisServiceClient::insurance_report(v1::InsuranceReportRequest) -> v1::InsuranceDayReport;
    InpatientServiceClient::open_episode(v1::OpenEpisodeRequest) -> v1::Episode;
    InpatientServiceClient::deposit(v1::EpisodeDepositRequest) -> v1::EpisodeReply;
    InpatientServiceClient::post_charges(v1::EpisodeChargesRequest) -> v1::Episode;
    InpatientServiceClient::finalize(v1::FinalizeEpisodeRequest) -> v1::Episode;
    InpatientServiceClient::settle(v1::SettleEpisodeRequest) -> v1::SettleEpisodeReply;
    InpatientServiceClient::get_episode(v1::GetEpisodeRequest) -> v1::Episode;
    InpatientServiceClient::reminder_list(v1::WardRequest) -> v1::EpisodeList;
    InpatientServiceClient::ward_report(v1::WardRequest) -> v1::WardReportReply;
    InpatientServiceClient::discharges(v1::DischargesRequest) -> v1::EpisodeList;
    TerminalServiceClient::register_terminal(v1::RegisterTerminalRequest) -> v1::TerminalReply;
    TerminalServiceClient::heartbeat(v1::HeartbeatRequest) -> v1::TerminalReply;
    TerminalServiceClient::open_shift(v1::ShiftRequest) -> v1::OpenShiftReply;
    TerminalServiceClient::close_shift(v1::ShiftRequest) -> v1::ShiftReport;
    TerminalServiceClient::collect_cash(v1::CollectCashRequest) -> v1::CollectionReport;
    AdminServiceClient::cluster_status(v1::ClusterStatusRequest) -> v1::ClusterStatusReply;
    AdminServiceClient::add_learner(v1::AddLearnerRequest) -> v1::MembershipReply;
    AdminServiceClient::promote_voters(v1::NodeIds) -> v1::MembershipReply;
    AdminServiceClient::remove_nodes(v1::NodeIds) -> v1::MembershipReply;
    AdminServiceClient::freeze(v1::AccountRequest) -> v1::AccountReply;
    AdminServiceClient::unfreeze(v1::AccountRequest) -> v1::AccountReply;
    AdminServiceClient::set_overdraft(v1::SetOverdraftRequest) -> v1::AccountReply;
    AdminServiceClient::set_terminal_status(v1::SetTerminalStatusRequest) -> v1::TerminalStatusReply;
    AdminServiceClient::get_shift_report(v1::GetShiftReportRequest) -> v1::ShiftReport;
    AdminServiceClient::daily_report(v1::DailyReportRequest) -> v1::DailyReportReply;
    AdminServiceClient::settlement(v1::SettlementRequest) -> v1::SettlementReply;
    AdminServiceClient::reconcile(v1::ReconcileRequest) -> v1::ReconciliationReport;
    AdminServiceClient::audit_balances(v1::AuditRequest) -> v1::AuditReply;
    AdminServiceClient::list_audit(v1::ListAuditRequest) -> v1::ListAuditReply;
    AdminServiceClient::dormant_accounts(v1::DormantAccountsRequest) -> v1::DormantAccountsReply;
    AdminServiceClient::put_credential(v1::PutCredentialRequest) -> v1::CredentialReply;
    AdminServiceClient::revoke_credential(v1::RevokeCredentialRequest) -> v1::CredentialReply;
    AdminServiceClient::list_credentials(v1::ListCredentialsRequest) -> v1::ListCredentialsReply;
    AdminServiceClient::backup(v1::BackupRequest) -> v1::BackupReply;
    AdminServiceClient::trigger_snapshot(v1::NodeActionRequest) -> v1::NodeActionReply;
    AdminServiceClient::transfer_leader(v1::NodeActionRequest) -> v1::NodeActionReply;
    AdminServiceClient::adjust(v1::AdjustRequest) -> v1::Receipt;
    AdminServiceClient::set_rules(v1::SetRulesRequest) -> v1::BusinessRules;
    AdminServiceClient::get_rules(v1::GetRulesRequest) -> v1::BusinessRules;
}

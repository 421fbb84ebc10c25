//! Who may call what. Every call of the public API (`/yinyi.v1.*`) carries a credential,
//! `authorization: Bearer ID:SECRET`; the node finds the credential (the replicated ones, or
//! the bootstrap ones of its config), checks the secret's SHA-256, that it is not revoked, and
//! that one of its roles may call the method. A credential bound to a terminal may only name
//! that terminal in its requests ([`check_terminal`], from the gateway). Refusals are counted
//! by reason (`auth_refusals_total`). Health, reflection and the internal service are not
//! `yinyi.v1` methods: the internal service has its own check (a CA-signed client
//! certificate).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::{Code, Status};
use yinyi_api::error::status_with_reason;
use yinyi_ledger::{Credential, Role, TerminalId, TerminalKind, Timestamp};

use super::convert::reason;
use yinyi_storage::Store;
use yinyi_storage::keys::CF_CREDENTIALS;

use Role::*;

/// The caller of the call being served (set for the handler's task by [`AuthLayer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub roles: Vec<Role>,
    pub terminal: Option<TerminalId>,
}

tokio::task_local! {
    static CALLER: Caller;
}

impl Caller {
    /// The caller of the call this task serves, if it was authenticated.
    pub fn current() -> Option<Caller> {
        CALLER.try_with(Caller::clone).ok()
    }
}

/// Refuses a request naming a terminal its caller may not act for: the cluster's own `S-`
/// terminals (no client ever proposes as the system: saga steps and their request ids are
/// out of every client's reach), a terminal other than the one the credential is bound to, or a
/// terminal of another kind than the credential's roles act through (a kiosk credential acts
/// only through `K-` terminals, a window's through `W-`, …; `Role::terminal_kind`).
pub fn check_terminal(terminal: &TerminalId) -> Result<(), Status> {
    let kind = terminal.kind();
    if kind == TerminalKind::System {
        metrics::counter!("auth_refusals_total", "reason" => "system_terminal").increment(1);
        return Err(refused(
            reason::SYSTEM_TERMINAL,
            format!("{terminal} is a terminal of the cluster itself; no client acts for it"),
        ));
    }
    // On every command: read the caller in place, clone nothing unless refusing.
    let refusal = CALLER
        .try_with(|c| {
            if let Some(bound) = &c.terminal
                && bound != terminal
            {
                return Some((
                    "terminal",
                    reason::WRONG_TERMINAL,
                    format!(
                        "credential {} acts for terminal {bound}, not {terminal}",
                        c.id
                    ),
                ));
            }
            if !c.roles.iter().any(|r| r.terminal_kind() == Some(kind)) {
                let through: Vec<String> = c
                    .roles
                    .iter()
                    .filter_map(|r| r.terminal_kind())
                    .map(|k| format!("{}-", k.prefix()))
                    .collect();
                return Some((
                    "terminal_kind",
                    reason::WRONG_TERMINAL_KIND,
                    format!(
                        "credential {} ({}) acts only through terminals {}, not {terminal}",
                        c.id,
                        c.roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join("+"),
                        if through.is_empty() {
                            "(none)".to_string()
                        } else {
                            through.join(" ")
                        }
                    ),
                ));
            }
            None
        })
        .ok()
        .flatten();
    match refusal {
        Some((metric, code, message)) => {
            metrics::counter!("auth_refusals_total", "reason" => metric).increment(1);
            Err(refused(code, message))
        }
        None => Ok(()),
    }
}

fn refused(code: &'static str, message: String) -> Status {
    yinyi_api::error::status_with_reason(tonic::Code::PermissionDenied, code, message)
}

/// The roles that may call each method of the public API. A method missing here is refused
/// to everyone (a new method must be given its roles).
pub fn roles_for(service: &str, method: &str) -> Option<&'static [Role]> {
    const EVERY_CHANNEL: &[Role] = &[Kiosk, Window, Mobile, His, Admin, Auditor];
    const READERS: &[Role] = &[Kiosk, Window, Mobile, Admin, Auditor];
    const PAYERS: &[Role] = &[Kiosk, Window, Mobile];
    const STAFF_VIEW: &[Role] = &[Admin, Auditor];
    Some(match (service, method) {
        ("PaymentService", "IssueCard") => &[Kiosk, Window],
        ("PaymentService", "IssueCards") => &[Kiosk, Window],
        ("PaymentService", "DepositCash") => &[Kiosk, Window],
        ("PaymentService", "TopUpBankCard") => PAYERS,
        ("PaymentService", "TopUpThirdParty") => &[Mobile],
        ("PaymentService", "AuthorizePayment" | "CapturePayment" | "ReleaseAuthorization") => {
            &[Mobile]
        }
        ("PaymentService", "PayBill") => PAYERS,
        ("PaymentService", "Refund" | "BatchRefund") => &[Kiosk, Window, His],
        ("PaymentService", "Withdraw") => &[Kiosk, Window],
        ("PaymentService", "ReportLoss") => &[Window],
        ("PaymentService", "CancelLoss") => &[Window],
        ("PaymentService", "ReplaceCard") => &[Window],
        ("PaymentService", "QueryBalance") => EVERY_CHANNEL,
        ("PaymentService", "ListTransactions") => READERS,
        ("PaymentService", "ThirdPartyNotify") => &[Bank],
        ("HisService", "PostBill") => &[His],
        ("HisService", "CancelBill" | "MarkInvoiced") => &[His],
        ("HisService", "GetBill") => EVERY_CHANNEL,
        ("HisService", "BillFeed") => &[His, Admin, Auditor],
        ("HisService", "InsuranceReport") => &[His, Admin, Auditor],
        ("HisService", "ReconcileHis" | "ConfirmDoubleCollection") => &[His],
        ("InpatientService", "OpenEpisode" | "PostCharges" | "Finalize") => &[His],
        ("InpatientService", "Deposit") => PAYERS,
        ("InpatientService", "Settle") => &[Kiosk, Window],
        // Staff only: admission ids are HIS's running numbers, and a kiosk or channel must not
        // walk every inpatient (a deposit's reply carries the episode to whoever pays).
        ("InpatientService", "GetEpisode") => &[Window, His, Admin, Auditor],
        ("InpatientService", "ReminderList" | "WardReport" | "Discharges") => {
            &[His, Admin, Auditor]
        }
        ("TerminalService", "RegisterTerminal") => &[Admin],
        ("TerminalService", "Heartbeat") => &[Kiosk, Window, Mobile, His],
        ("TerminalService", "OpenShift") => &[Window],
        ("TerminalService", "CloseShift") => &[Window],
        ("TerminalService", "CollectCash") => &[Kiosk],
        ("AdminService", "ClusterStatus") => STAFF_VIEW,
        ("AdminService", "AddLearner" | "PromoteVoters" | "RemoveNodes") => &[Admin],
        ("AdminService", "Freeze" | "Unfreeze" | "SetOverdraft") => &[Window, Admin],
        ("AdminService", "SetTerminalStatus") => &[Admin],
        ("AdminService", "GetShiftReport" | "DailyReport") => STAFF_VIEW,
        ("AdminService", "Reconcile") => &[Admin],
        ("AdminService", "Settlement") => STAFF_VIEW,
        ("AdminService", "AuditBalances" | "ListAudit" | "DormantAccounts") => STAFF_VIEW,
        ("AdminService", "PutCredential" | "RevokeCredential" | "Backup" | "Adjust") => &[Admin],
        ("AdminService", "SetRules") => &[Admin],
        ("AdminService", "GetRules") => EVERY_CHANNEL,
        ("AdminService", "TriggerSnapshot" | "TransferLeader") => &[Admin],
        ("AdminService", "ListCredentials") => STAFF_VIEW,
        _ => return None,
    })
}

pub use yinyi_api::credential::secret_sha256;

/// `ID:ROLES:SHA256` (roles joined by `+`), a credential from the node's config.
pub fn parse_bootstrap(text: &str) -> Result<Credential, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(id), Some(roles), Some(sha)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "bootstrap credential {:?} is not ID:ROLES:SHA256",
            text.chars().take(40).collect::<String>()
        ));
    };
    yinyi_ledger::credential::check_id(id)?;
    yinyi_ledger::credential::check_sha256(sha)?;
    Ok(Credential {
        id: id.to_string(),
        roles: Role::parse_list(roles)?,
        terminal: None,
        secret_sha256: sha.to_string(),
        created_at: Timestamp(0),
        revoked_at: None,
    })
}

pub struct Authenticator {
    store: Arc<Store>,
    bootstrap: BTreeMap<String, Credential>,
    limiter: Option<RateLimiter>,
}

/// Requests per second per credential on this node: a token bucket each (burst twice the
/// rate), so one credential — a misbehaving terminal, a stolen key — cannot make the cluster
/// store without bound, nor crowd out everyone else. Small enough to write here (a crate such
/// as `governor` would add its clock and map for one bucket per credential).
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    pub fn new(per_s: u64) -> RateLimiter {
        RateLimiter {
            per_s: per_s as f64,
            burst: (2 * per_s).max(1) as f64,
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes one token of `id`'s bucket; false when it is empty.
    pub fn admit(&self, id: &str) -> bool {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Credentials are few (one per terminal and service); buckets idle long enough to be
        // full again are dropped so the map cannot grow with ids that come and go.
        if buckets.len() > 100_000 {
            let refill = std::time::Duration::from_secs_f64(self.burst / self.per_s.max(1.0));
            buckets.retain(|_, (_, at)| now.duration_since(*at) < refill);
        }
        // Looked up by `&str`: the id is copied only the first time it is seen.
        if !buckets.contains_key(id) {
            buckets.insert(id.to_string(), (self.burst, now));
        }
        let (tokens, at) = buckets.get_mut(id).expect("inserted above");
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_s).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn revoked(id: &str) -> Status {
    status_with_reason(
        Code::Unauthenticated,
        reason::CREDENTIAL_REVOKED,
        format!("credential {id} is revoked"),
    )
}

fn unknown() -> Status {
    status_with_reason(
        Code::Unauthenticated,
        reason::CREDENTIAL_UNKNOWN,
        "unknown credential or wrong secret",
    )
}

fn refuse(reason: &'static str, status: Status) -> Status {
    metrics::counter!("auth_refusals_total", "reason" => reason).increment(1);
    status
}

impl Authenticator {
    /// `per_credential_per_s`: requests per second one credential may make here (0: no limit).
    pub fn new(
        store: Arc<Store>,
        bootstrap: Vec<Credential>,
        per_credential_per_s: u64,
    ) -> Authenticator {
        Authenticator {
            store,
            bootstrap: bootstrap.into_iter().map(|c| (c.id.clone(), c)).collect(),
            limiter: (per_credential_per_s > 0).then(|| RateLimiter::new(per_credential_per_s)),
        }
    }

    /// Whether `id` is one of this node's bootstrap credentials.
    pub fn is_bootstrap(&self, id: &str) -> bool {
        self.bootstrap.contains_key(id)
    }

    /// The caller of a call to `path`, or why it is refused. `None`: not a public API method
    /// (health, reflection, the internal service), not checked here.
    pub fn check(&self, path: &str, authorization: Option<&str>) -> Result<Option<Caller>, Status> {
        let Some(rest) = path.strip_prefix("/yinyi.v1.") else {
            return Ok(None);
        };
        let (service, method) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(allowed) = roles_for(service, method) else {
            return Err(refuse(
                "method",
                status_with_reason(
                    Code::PermissionDenied,
                    reason::METHOD_NOT_ALLOWED,
                    format!("no role may call {path}"),
                ),
            ));
        };
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
            return Err(refuse(
                "missing",
                status_with_reason(
                    Code::Unauthenticated,
                    reason::CREDENTIAL_MISSING,
                    "a credential is required: authorization: Bearer ID:SECRET",
                ),
            ));
        };
        let Some((id, secret)) = token.split_once(':') else {
            return Err(refuse(
                "malformed",
                status_with_reason(
                    Code::Unauthenticated,
                    reason::CREDENTIAL_MALFORMED,
                    "the credential is not ID:SECRET",
                ),
            ));
        };
        let stored = || {
            self.store
                .get::<Credential>(CF_CREDENTIALS, id.as_bytes())
                .map_err(|e| super::convert::internal(format!("read credentials: {e}")))
        };
        let credential: Option<Cow<'_, Credential>> = match self.bootstrap.get(id) {
            // A bootstrap credential revoked by the cluster (a replicated tombstone).
            Some(_) if stored()?.is_some_and(|c| c.is_revoked()) => {
                return Err(refuse("revoked", revoked(id)));
            }
            Some(c) => Some(Cow::Borrowed(c)),
            None if yinyi_ledger::credential::check_id(id).is_ok() => stored()?.map(Cow::Owned),
            None => None,
        };
        // Unknown ids and wrong secrets get the same answer.
        let Some(credential) = credential else {
            return Err(refuse("unknown", unknown()));
        };
        if !constant_time_eq(
            secret_sha256(secret).as_bytes(),
            credential.secret_sha256.as_bytes(),
        ) {
            return Err(refuse("secret", unknown()));
        }
        if credential.is_revoked() {
            return Err(refuse("revoked", revoked(id)));
        }
        if !credential.has_any(allowed) {
            return Err(refuse(
                "role",
                status_with_reason(
                    Code::PermissionDenied,
                    reason::ROLE_NOT_ALLOWED,
                    format!(
                        "credential {id} ({}) may not call {service}/{method}; it needs one of: {}",
                        credential
                            .roles
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        allowed
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                ),
            ));
        }
        if let Some(limiter) = &self.limiter
            && !limiter.admit(id)
        {
            return Err(refuse(
                "rate",
                yinyi_api::error::status_with_reason(
                    tonic::Code::ResourceExhausted,
                    super::convert::reason::RATE_LIMITED,
                    format!(
                        "credential {id} made more than {} requests a second on this node: \
                             slow down and retry",
                        limiter.per_s
                    ),
                ),
            ));
        }
        Ok(Some(Caller {
            id: credential.id.clone(),
            roles: credential.roles.clone(),
            terminal: credential.terminal.clone(),
        }))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The tower layer in front of every service of the node's gRPC server.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> AuthLayer {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.auth.check(request.uri().path(), authorization) {
            Ok(Some(caller)) => {
                let served = self.inner.call(request);
                Box::pin(CALLER.scope(caller, served))
            }
            Ok(None) => Box::pin(self.inner.call(request)),
            Err(status) => {
                let response = status.into_http::<tonic::body::Body>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yinyi_ledger::{
        AccountId, BankPurpose, BillId, BillKind, CardKind, CardNo, CardToken, CommandBody,
        External, Holder, Money, PersonKey, RefundTo, TerminalStatus, allowed_terminals,
    };

    /// The commands each writing method of the API may propose (every shape its handler
    /// builds). Reads and cluster administration propose nothing of a client's.
    fn commands_of(service: &str, method: &str) -> Option<Vec<CommandBody>> {
        let card = CardNo::parse("HC0001").unwrap();
        let bill = BillId::parse("B1").unwrap();
        let account = AccountId(1);
        let person = PersonKey::parse(&"ab".repeat(32)).unwrap();
        let amount = Money::from_yuan(1);
        let bank = External::BankCard {
            token: CardToken::parse("tok_12345678").unwrap(),
            masked: "6222****0001".into(),
        };
        let channel = External::ThirdParty {
            provider: "wechat".into(),
            payer: "payer_0001".into(),
        };
        let start = |external: &External, purpose: BankPurpose, amount: Option<Money>| {
            CommandBody::StartBankOp {
                card: card.clone(),
                external: external.clone(),
                purpose,
                amount,
            }
        };
        let terminal = TerminalId::parse("K-0001").unwrap();
        let episode = yinyi_ledger::AdmissionId::parse("ZY-1").unwrap();
        Some(match (service, method) {
            ("PaymentService", "IssueCard" | "IssueCards") => vec![CommandBody::IssueCard {
                card: card.clone(),
                card_kind: CardKind::Hospital,
                holder: Holder {
                    name: "Li".into(),
                    person: person.clone(),
                    id_masked: "1101**********0011".into(),
                    phone: String::new(),
                },
                first_deposit: None,
            }],
            ("PaymentService", "DepositCash") => vec![CommandBody::DepositCash {
                card: card.clone(),
                amount,
            }],
            ("PaymentService", "TopUpBankCard") => {
                vec![start(&bank, BankPurpose::TopUp, Some(amount))]
            }
            ("PaymentService", "TopUpThirdParty") => {
                vec![start(&channel, BankPurpose::TopUp, Some(amount))]
            }
            ("PaymentService", "AuthorizePayment") => [&bank, &channel]
                .map(|external| CommandBody::AuthorizePayment {
                    card: card.clone(),
                    external: external.clone(),
                    amount,
                })
                .to_vec(),
            ("PaymentService", "CapturePayment") => vec![CommandBody::CapturePayment {
                card: card.clone(),
                authorization: yinyi_ledger::BankRef::for_txn(yinyi_ledger::TxnId(1)),
                bill: bill.clone(),
            }],
            ("PaymentService", "ReleaseAuthorization") => {
                vec![CommandBody::ReleaseAuthorization {
                    card: card.clone(),
                    authorization: yinyi_ledger::BankRef::for_txn(yinyi_ledger::TxnId(1)),
                }]
            }
            ("PaymentService", "PayBill") => vec![
                CommandBody::PayBill {
                    bill: bill.clone(),
                    card: card.clone(),
                },
                start(&bank, BankPurpose::PayBill { bill: bill.clone() }, None),
                start(&channel, BankPurpose::PayBill { bill: bill.clone() }, None),
            ],
            ("PaymentService", "Refund") => vec![
                CommandBody::Refund { bill: bill.clone() },
                CommandBody::RefundToAccount {
                    bill: bill.clone(),
                    declined: yinyi_ledger::BankRef::parse("Y0000000000000004096").unwrap(),
                },
                start(&bank, BankPurpose::Refund { bill: bill.clone() }, None),
                start(&channel, BankPurpose::Refund { bill: bill.clone() }, None),
                start(
                    &bank,
                    BankPurpose::Refund { bill: bill.clone() },
                    Some(amount),
                ),
                CommandBody::RefundBill {
                    bill: bill.clone(),
                    amount: Some(amount),
                    to: RefundTo::Account,
                    declined: None,
                },
                CommandBody::RefundBill {
                    bill: bill.clone(),
                    amount: None,
                    to: RefundTo::Cash,
                    declined: None,
                },
            ],
            ("PaymentService", "BatchRefund") => vec![
                CommandBody::Refund { bill: bill.clone() },
                start(&bank, BankPurpose::Refund { bill: bill.clone() }, None),
            ],
            ("PaymentService", "Withdraw") => vec![
                CommandBody::WithdrawCash {
                    card: card.clone(),
                    amount: None,
                },
                start(&bank, BankPurpose::Withdraw, None),
            ],
            ("PaymentService", "ReportLoss") => vec![CommandBody::ReportLoss {
                card: card.clone(),
                person: person.clone(),
            }],
            ("PaymentService", "CancelLoss") => vec![CommandBody::CancelLoss {
                card: card.clone(),
                person: person.clone(),
            }],
            ("PaymentService", "ReplaceCard") => vec![CommandBody::ReplaceCard {
                old_card: card.clone(),
                new_card: card.clone(),
                person: person.clone(),
            }],
            ("HisService", "PostBill") => vec![
                CommandBody::PostBill {
                    bill: bill.clone(),
                    card: card.clone(),
                    kind: BillKind::Outpatient,
                    amount,
                },
                CommandBody::PostInsuredBill {
                    bill: bill.clone(),
                    card: card.clone(),
                    kind: BillKind::Outpatient,
                    split: yinyi_ledger::InsuranceSplit {
                        settlement: yinyi_ledger::InsuranceSettlementId::parse("YB-1")
                            .expect("a settlement id"),
                        pooled: amount,
                        personal_account: amount,
                        self_pay: amount,
                        reductions: amount,
                    },
                },
            ],
            ("HisService", "CancelBill") => vec![
                CommandBody::CancelBill { bill: bill.clone() },
                CommandBody::CancelBillPart {
                    bill: bill.clone(),
                    amount,
                },
            ],
            ("HisService", "MarkInvoiced") => {
                vec![CommandBody::MarkInvoiced { bill: bill.clone() }]
            }
            // The cancellation only HIS makes; the refund that follows is one HIS's terminals
            // may make too (`Refund` or an online refund, checked by the ledger).
            ("HisService", "ConfirmDoubleCollection") => {
                vec![CommandBody::CancelBill { bill: bill.clone() }]
            }
            ("InpatientService", "OpenEpisode") => vec![CommandBody::OpenEpisode {
                episode: episode.clone(),
                card: card.clone(),
                ward: yinyi_ledger::WardId::parse("W1").unwrap(),
                reminder_below: amount,
            }],
            ("InpatientService", "PostCharges") => vec![CommandBody::PostEpisodeCharges {
                episode: episode.clone(),
                amount,
            }],
            ("InpatientService", "Finalize") => vec![CommandBody::FinalizeEpisode {
                episode: episode.clone(),
                final_amount: amount,
            }],
            ("InpatientService", "Deposit") => vec![
                CommandBody::DepositToEpisode {
                    episode: episode.clone(),
                    amount,
                    from: yinyi_ledger::EpisodeFunds::Cash,
                },
                CommandBody::DepositToEpisode {
                    episode: episode.clone(),
                    amount,
                    from: yinyi_ledger::EpisodeFunds::Account { card: card.clone() },
                },
                start(
                    &bank,
                    BankPurpose::EpisodeDeposit {
                        episode: episode.clone(),
                    },
                    Some(amount),
                ),
                start(
                    &channel,
                    BankPurpose::EpisodeDeposit {
                        episode: episode.clone(),
                    },
                    Some(amount),
                ),
            ],
            ("InpatientService", "Settle") => vec![
                CommandBody::SettleEpisode {
                    episode: episode.clone(),
                    card: card.clone(),
                    rest_to: RefundTo::Account,
                    shortfall_from_account: false,
                },
                CommandBody::SettleEpisode {
                    episode: episode.clone(),
                    card: card.clone(),
                    rest_to: RefundTo::Cash,
                    shortfall_from_account: true,
                },
            ],
            ("TerminalService", "RegisterTerminal") => {
                vec![CommandBody::RegisterTerminal { terminal }]
            }
            ("TerminalService", "OpenShift") => vec![CommandBody::OpenShift],
            ("TerminalService", "CloseShift") => vec![CommandBody::CloseShift],
            ("TerminalService", "CollectCash") => {
                vec![CommandBody::CollectCash { counted: amount }]
            }
            ("AdminService", "Freeze") => vec![CommandBody::Freeze { account }],
            ("AdminService", "Unfreeze") => vec![CommandBody::Unfreeze { account }],
            ("AdminService", "SetOverdraft") => vec![CommandBody::SetOverdraft {
                account,
                limit: amount,
            }],
            ("AdminService", "SetTerminalStatus") => vec![CommandBody::SetTerminalStatus {
                terminal,
                status: TerminalStatus::OutOfService,
            }],
            ("AdminService", "PutCredential") => vec![CommandBody::PutCredential {
                id: "x".into(),
                roles: vec![Kiosk],
                terminal: None,
                secret_sha256: "0".repeat(64),
            }],
            ("AdminService", "Adjust") => vec![CommandBody::Adjust {
                account,
                direction: yinyi_ledger::AdjustDirection::Credit,
                amount,
                reason: "r".into(),
                reference: "x".into(),
                difference: None,
            }],
            ("AdminService", "SetRules") => vec![CommandBody::SetRules {
                rules: yinyi_ledger::Rules::default(),
            }],
            ("AdminService", "RevokeCredential") => vec![
                CommandBody::RevokeCredential { id: "x".into() },
                CommandBody::RevokeBootstrapCredential { id: "x".into() },
            ],
            _ => return None,
        })
    }

    /// Issue 15, path 6: who may call a writing method is exactly who acts through a terminal
    /// the ledger lets do what the method proposes. (Before, `ReportLoss` passed the role
    /// check from a kiosk and the ledger then refused it; an admin `Refund` could never
    /// succeed.) Read the other way round: every role the ledger would serve can call it.
    #[test]
    fn the_role_table_and_the_ledger_agree_on_every_writing_method() {
        let methods = [
            ("PaymentService", "IssueCard"),
            ("PaymentService", "IssueCards"),
            ("PaymentService", "DepositCash"),
            ("PaymentService", "TopUpBankCard"),
            ("PaymentService", "TopUpThirdParty"),
            ("PaymentService", "AuthorizePayment"),
            ("PaymentService", "CapturePayment"),
            ("PaymentService", "ReleaseAuthorization"),
            ("PaymentService", "PayBill"),
            ("PaymentService", "Refund"),
            ("PaymentService", "BatchRefund"),
            ("PaymentService", "Withdraw"),
            ("PaymentService", "ReportLoss"),
            ("PaymentService", "CancelLoss"),
            ("PaymentService", "ReplaceCard"),
            ("HisService", "PostBill"),
            ("HisService", "CancelBill"),
            ("HisService", "MarkInvoiced"),
            ("HisService", "ConfirmDoubleCollection"),
            ("InpatientService", "OpenEpisode"),
            ("InpatientService", "PostCharges"),
            ("InpatientService", "Finalize"),
            ("InpatientService", "Deposit"),
            ("InpatientService", "Settle"),
            ("TerminalService", "RegisterTerminal"),
            ("TerminalService", "OpenShift"),
            ("TerminalService", "CloseShift"),
            ("TerminalService", "CollectCash"),
            ("AdminService", "Freeze"),
            ("AdminService", "Unfreeze"),
            ("AdminService", "SetOverdraft"),
            ("AdminService", "SetTerminalStatus"),
            ("AdminService", "PutCredential"),
            ("AdminService", "RevokeCredential"),
            ("AdminService", "Adjust"),
            ("AdminService", "SetRules"),
        ];
        for (service, method) in methods {
            let api: Vec<Role> = roles_for(service, method)
                .unwrap_or_else(|| panic!("{service}/{method} has no roles"))
                .to_vec();
            let commands = commands_of(service, method).expect("a writing method");
            let mut ledger: Vec<Role> = commands
                .iter()
                .flat_map(|body| allowed_terminals(body).iter())
                .filter_map(|kind| Role::for_terminal(*kind))
                .collect();
            ledger.sort();
            ledger.dedup();
            let mut api_sorted = api.clone();
            api_sorted.sort();
            assert_eq!(
                api_sorted, ledger,
                "{service}/{method}: the API lets {api_sorted:?} call it, the ledger serves {ledger:?}"
            );
        }
    }

    #[test]
    fn bootstrap_credentials_parse() {
        let sha = secret_sha256("s3cret");
        let c = parse_bootstrap(&format!("ops:admin+auditor:{sha}")).unwrap();
        assert_eq!(c.roles, vec![Admin, Auditor]);
        assert!(parse_bootstrap("ops:admin").is_err());
        assert!(parse_bootstrap(&format!("ops:root:{sha}")).is_err());
        assert!(parse_bootstrap("ops:admin:xyz").is_err());
    }
}

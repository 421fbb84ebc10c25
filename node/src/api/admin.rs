//! AdminService: the cluster, account controls, terminals and reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use yinyi_actors::{Backend, EntityKey};
use yinyi_api::error::status_with_reason;
use yinyi_api::v1::admin_service_client::AdminServiceClient;
use yinyi_api::v1::admin_service_server::AdminService;
use yinyi_api::v1::*;
use yinyi_consensus::{MembershipChange, ProposeError};
use yinyi_ledger::{CommandBody, Effect, Report};
use yinyi_storage::keys::{CF_CREDENTIALS, CF_REPORTS};

/// The terminal membership changes are recorded from in the audit trail.
pub const MEMBERSHIP_TERMINAL: &str = "S-CLUSTER";

use super::convert::{self, reason};
use super::{Gateway, unexpected};
use crate::lead_or_forward;

pub struct Admin {
    pub gateway: Arc<Gateway>,
    /// Which credentials are this node's bootstrap ones (revoked by a replicated tombstone).
    pub authenticator: Arc<super::auth::Authenticator>,
}

/// The business day `YYYY-MM-DD` (China Standard Time) as [start, end) in milliseconds.
pub fn business_day(date: &str) -> Result<(i64, i64), Status> {
    yinyi_ledger::BusinessDay::parse(date)
        .map(yinyi_ledger::BusinessDay::bounds_ms)
        .ok_or_else(|| {
            convert::invalid(
                reason::INVALID_ID,
                format!("date {date:?} is not a YYYY-MM-DD date"),
            )
        })
}

fn business_rules(rules: yinyi_ledger::Rules, set: bool) -> BusinessRules {
    BusinessRules {
        single_txn_limit: convert::money(rules.single_txn_limit),
        min_first_deposit: convert::money(rules.min_first_deposit),
        max_overdraft: convert::money(rules.max_overdraft),
        set,
    }
}

/// Adds a report line into lines kept by (kind, channel).
fn add_line(
    lines: &mut Vec<yinyi_ledger::ReportLine>,
    line: &yinyi_ledger::ReportLine,
) -> Result<(), Status> {
    yinyi_ledger::merge_line(lines, line).ok_or_else(|| convert::internal("daily total overflows"))
}

/// The node ids of a membership change: at least one.
fn node_ids(request: NodeIds) -> Result<std::collections::BTreeSet<u64>, Status> {
    if request.ids.is_empty() {
        return Err(convert::invalid(reason::MISSING_FIELD, "ids is required"));
    }
    Ok(request.ids.into_iter().collect())
}

fn membership_failed(e: ProposeError, gateway: &Gateway) -> Status {
    match e {
        ProposeError::Invalid(m) => convert::invalid(reason::INVALID_REQUEST, m),
        ProposeError::NotLeader { .. } => gateway.no_leader("leadership moved"),
        other => gateway.no_leader(&other.to_string()),
    }
}

/// How long an operator's action waits for a leader to record it in the audit trail.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long `TransferLeader` waits to see who leads after the campaign.
const TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Admin {
    /// Puts an operator's action on this node (a snapshot, a campaign) into the audit trail,
    /// with the credential that asked: through this node when it leads, else through the
    /// leader's internal service (as a member node). A failure to record is logged; the action
    /// itself stands.
    async fn record_operation(&self, what: String) {
        let who =
            super::auth::Caller::current().map_or_else(|| "insecure node".to_string(), |c| c.id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let consensus = self.gateway.consensus();
        let Ok(command) = self.gateway.system_command(
            &format!("operation:{}:{now}", consensus.id()),
            MEMBERSHIP_TERMINAL,
            CommandBody::RecordMembership {
                change: format!("{what} by credential {who}"),
            },
        ) else {
            return;
        };
        let recorded = if self.gateway.is_leader() {
            self.gateway
                .submit(EntityKey::Terminal(command.terminal.clone()), command)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            // Right after a campaign the leader may be unknown for a moment.
            let _ = consensus.wait_for_leader(RECORD_WAIT).await;
            match consensus.leader() {
                Some((_, addr)) if !addr.is_empty() => {
                    crate::client::ClusterClient::new(vec![addr], consensus.client_tls().cloned())
                        .propose(vec![command], std::time::Duration::from_secs(5))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                _ => Err("no leader known".to_string()),
            }
        };
        if let Err(e) = recorded {
            tracing::error!("{what} not recorded in the audit trail: {e}");
        }
    }

    async fn members(&self) -> MembershipReply {
        let status = self.gateway.consensus().status(false).await;
        MembershipReply {
            members: status
                .members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    addr: m.addr.clone(),
                    voter: m.voter,
                })
                .collect(),
        }
    }

    async fn change(
        &self,
        caller: Option<super::auth::Caller>,
        change: MembershipChange,
    ) -> Result<Response<MembershipReply>, Status> {
        let said = format!("{change:?}");
        self.gateway
            .consensus()
            .change_membership(change)
            .await
            .map_err(|e| membership_failed(e, &self.gateway))?;
        // Into the audit trail: who changed the cluster, and to what.
        let who = caller.map_or_else(|| "insecure node".to_string(), |c| c.id);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        if let Err(e) = self
            .gateway
            .submit_system(
                &format!("membership:{now}"),
                MEMBERSHIP_TERMINAL,
                CommandBody::RecordMembership {
                    change: format!("{said} by credential {who}"),
                },
            )
            .await
        {
            tracing::error!("membership changed but not recorded in the audit trail: {e}");
        }
        Ok(Response::new(self.members().await))
    }

    fn credential_info(c: &yinyi_ledger::Credential) -> CredentialInfo {
        CredentialInfo {
            credential_id: c.id.clone(),
            roles: c.roles.iter().map(|r| r.as_str().to_string()).collect(),
            bound_terminal_id: c
                .terminal
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            created_ms: c.created_at.0,
            revoked_ms: c.revoked_at.map_or(0, |t| t.0),
        }
    }

    async fn credential_command(
        &self,
        request_id: &str,
        terminal_id: &str,
        operator_id: &str,
        body: CommandBody,
    ) -> Result<Response<CredentialReply>, Status> {
        let g = &self.gateway;
        let command = g.command(request_id, terminal_id, operator_id, body)?;
        let id = match g
            .submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await?
        {
            Effect::Credential { id } => id,
            other => return Err(unexpected(&other)),
        };
        let credential = g
            .backend()
            .store()
            .get::<yinyi_ledger::Credential>(CF_CREDENTIALS, id.as_bytes())
            .map_err(|e| convert::internal(format!("read credential: {e}")))?
            .ok_or_else(|| convert::internal(format!("credential {id} written but not found")))?;
        Ok(Response::new(CredentialReply {
            credential: Some(Self::credential_info(&credential)),
        }))
    }

    async fn account_command(
        &self,
        r: AccountRequest,
        body: impl FnOnce(yinyi_ledger::AccountId) -> CommandBody,
    ) -> Result<Response<AccountReply>, Status> {
        let g = &self.gateway;
        let account = convert::account_id(&r.account_id)?;
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body(account))?;
        let effect = g.submit(EntityKey::Account(account), command).await?;
        self.account_reply(effect)
    }

    fn account_reply(&self, effect: Effect) -> Result<Response<AccountReply>, Status> {
        let account = match effect {
            Effect::AccountStatusChanged { account, .. } | Effect::OverdraftSet { account, .. } => {
                account
            }
            other => return Err(unexpected(&other)),
        };
        let record =
            self.gateway.backend().account(account).ok_or_else(|| {
                convert::internal(format!("account {account} changed but not found"))
            })?;
        Ok(Response::new(AccountReply {
            account_id: account.to_string(),
            status: convert::account_status(record.status),
            overdraft_limit: convert::money(record.overdraft_limit),
        }))
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn cluster_status(
        &self,
        request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let with_digest = request.into_inner().with_digest;
        let s = self.gateway.consensus().status(with_digest).await;
        let live = self.gateway.actors().live();
        Ok(Response::new(ClusterStatusReply {
            leader: s.leader.unwrap_or(0),
            term: s.term,
            members: s
                .members
                .iter()
                .map(|m| Member {
                    id: m.id,
                    addr: m.addr.clone(),
                    voter: m.voter,
                })
                .collect(),
            node: Some(NodeStatus {
                id: s.id,
                addr: s.addr.clone(),
                state: s.state.clone(),
                term: s.term,
                last_log: s.last_log.map_or(-1, |i| i as i64),
                committed: s.committed,
                applied: s.applied.map_or(-1, |i| i as i64),
                digest: s.digest.unwrap_or_default(),
                live_account_actors: live.accounts as u64,
                live_terminal_actors: live.terminals as u64,
            }),
        }))
    }

    async fn audit_balances(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditReply>, Status> {
        let with_digest = request.into_inner().with_digest;
        let status = self.gateway.consensus().status(false).await;
        let store = self.gateway.backend().store().clone();
        let (report, digest) = tokio::task::spawn_blocking(move || {
            let report = store.audit()?;
            let digest = if with_digest {
                store.digest()?
            } else {
                String::new()
            };
            Ok::<_, yinyi_storage::StorageError>((report, digest))
        })
        .await
        .map_err(|e| convert::internal(format!("audit task: {e}")))?
        .map_err(|e| convert::internal(format!("audit: {e}")))?;
        if !report.ok() {
            metrics::counter!("audit_mismatches_total").increment(1);
            tracing::error!(
                problems = report.problem_count,
                first = report.problems.first().map(String::as_str).unwrap_or(""),
                "balance audit found problems"
            );
        }
        metrics::gauge!("audit_problems").set(report.problem_count as f64);
        metrics::gauge!("bank_ops_unresolved").set(report.unresolved_bank_ops as f64);
        Ok(Response::new(AuditReply {
            node: status.id,
            applied: status.applied.map_or(-1, |i| i as i64),
            digest,
            accounts: report.accounts,
            journal_entries: report.entries,
            bank_ops: report.bank_ops,
            unresolved_bank_ops: report.unresolved_bank_ops,
            total_balance: convert::money(report.total_balance),
            expected_total: report
                .flows
                .expected_total()
                .map_or_else(|| "overflow".into(), convert::money),
            ok: report.ok(),
            problem_count: report.problem_count,
            problems: report.problems,
            episodes: report.episodes,
            episodes_held: convert::money(report.episodes_held),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembershipReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, add_learner);
        let caller = super::auth::Caller::current();
        let r = request.into_inner();
        if r.id == 0 {
            return Err(convert::invalid(
                reason::MISSING_FIELD,
                "id is required (1 or more)",
            ));
        }
        let addr = convert::required("addr", &r.addr)?;
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(convert::invalid(
                reason::INVALID_ID,
                format!("addr {addr:?} is not host:port"),
            ));
        }
        self.change(
            caller,
            MembershipChange::AddLearner {
                id: r.id,
                addr: addr.to_string(),
            },
        )
        .await
    }

    async fn promote_voters(
        &self,
        request: Request<NodeIds>,
    ) -> Result<Response<MembershipReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, promote_voters);
        let caller = super::auth::Caller::current();
        let ids = node_ids(request.into_inner())?;
        self.change(caller, MembershipChange::Promote { ids }).await
    }

    async fn remove_nodes(
        &self,
        request: Request<NodeIds>,
    ) -> Result<Response<MembershipReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, remove_nodes);
        let caller = super::auth::Caller::current();
        let ids = node_ids(request.into_inner())?;
        self.change(caller, MembershipChange::Remove { ids }).await
    }

    async fn freeze(
        &self,
        request: Request<AccountRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, freeze);
        self.account_command(request.into_inner(), |account| CommandBody::Freeze {
            account,
        })
        .await
    }

    async fn unfreeze(
        &self,
        request: Request<AccountRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, unfreeze);
        self.account_command(request.into_inner(), |account| CommandBody::Unfreeze {
            account,
        })
        .await
    }

    async fn adjust(&self, request: Request<AdjustRequest>) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, adjust);
        let r = request.into_inner();
        let g = &self.gateway;
        let account = convert::account_id(&r.account_id)?;
        let direction = match AdjustDirection::try_from(r.direction) {
            Ok(AdjustDirection::Credit) => yinyi_ledger::AdjustDirection::Credit,
            Ok(AdjustDirection::Debit) => yinyi_ledger::AdjustDirection::Debit,
            _ => {
                return Err(convert::invalid(
                    reason::INVALID_ENUM,
                    "direction: CREDIT or DEBIT",
                ));
            }
        };
        let amount = convert::amount("amount", &r.amount, g.limit())?;
        let difference = match (r.recon_date.as_str(), r.bank_ref.as_str()) {
            ("", "") => None,
            (date, bank_ref) if !date.is_empty() && !bank_ref.is_empty() => {
                business_day(date)?;
                Some(yinyi_ledger::DifferenceRef {
                    date: date.to_string(),
                    bank_ref: yinyi_ledger::BankRef::parse(bank_ref).map_err(|e| {
                        convert::invalid(reason::INVALID_ID, format!("bank_ref: {e}"))
                    })?,
                })
            }
            _ => {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    "a reconciliation difference is named by recon_date and bank_ref together",
                ));
            }
        };
        let body = CommandBody::Adjust {
            account,
            direction,
            amount,
            reason: r.reason,
            reference: r.reference,
            difference,
        };
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        super::payment::receipt(g.submit(EntityKey::Account(account), command).await?)
    }

    async fn set_rules(
        &self,
        request: Request<SetRulesRequest>,
    ) -> Result<Response<BusinessRules>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, set_rules);
        let r = request.into_inner();
        let g = &self.gateway;
        let given = r
            .rules
            .ok_or_else(|| convert::invalid(reason::MISSING_FIELD, "rules are required"))?;
        let money = |field: &str, text: &str| convert::non_negative(field, text);
        let rules = yinyi_ledger::Rules {
            single_txn_limit: money("single_txn_limit", &given.single_txn_limit)?,
            min_first_deposit: money("min_first_deposit", &given.min_first_deposit)?,
            max_overdraft: money("max_overdraft", &given.max_overdraft)?,
        };
        rules
            .check()
            .map_err(|e| convert::invalid(reason::INVALID_AMOUNT, e))?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::SetRules { rules },
        )?;
        match g
            .submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await?
        {
            Effect::RulesSet { rules } => Ok(Response::new(business_rules(rules, true))),
            other => Err(super::unexpected(&other)),
        }
    }

    async fn get_rules(
        &self,
        request: Request<GetRulesRequest>,
    ) -> Result<Response<BusinessRules>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, get_rules);
        let g = &self.gateway;
        g.read_barrier().await?;
        let stored = g
            .backend()
            .store()
            .rules()
            .map_err(|e| convert::internal(format!("the rules are unreadable: {e}")))?;
        Ok(Response::new(match stored {
            Some(rules) => business_rules(rules, true),
            None => business_rules(g.consensus().rules(), false),
        }))
    }

    async fn set_overdraft(
        &self,
        request: Request<SetOverdraftRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, set_overdraft);
        let r = request.into_inner();
        let limit = convert::non_negative("limit", &r.limit)?;
        self.account_command(
            AccountRequest {
                request_id: r.request_id,
                terminal_id: r.terminal_id,
                operator_id: r.operator_id,
                account_id: r.account_id,
            },
            |account| CommandBody::SetOverdraft { account, limit },
        )
        .await
    }

    async fn set_terminal_status(
        &self,
        request: Request<SetTerminalStatusRequest>,
    ) -> Result<Response<TerminalStatusReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            AdminServiceClient,
            set_terminal_status
        );
        let r = request.into_inner();
        let g = &self.gateway;
        let target = convert::terminal_id("target_terminal_id", &r.target_terminal_id)?;
        let status = convert::terminal_status(&r.status)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::SetTerminalStatus {
                terminal: target.clone(),
                status,
            },
        )?;
        match g.submit(EntityKey::Terminal(target), command).await? {
            Effect::TerminalChanged { terminal, status } => {
                Ok(Response::new(TerminalStatusReply {
                    terminal_id: terminal.to_string(),
                    status: convert::screaming(&status),
                }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, list_audit);
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000),
        } as usize;
        self.gateway.read_barrier().await?;
        let store = self.gateway.backend().store().clone();
        let since = r.since_ms;
        let trail = tokio::task::spawn_blocking(move || store.audit_trail(since, limit))
            .await
            .map_err(|e| convert::internal(format!("audit trail task: {e}")))?
            .map_err(|e| convert::internal(format!("audit trail read: {e}")))?;
        let records = trail
            .into_iter()
            .map(|(request_id, record)| AuditRecord {
                at_ms: record.at.0,
                request_id,
                terminal_id: record.terminal.to_string(),
                operator_id: record
                    .operator
                    .as_ref()
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
                action: convert::screaming_name(record.body.name()),
                details: format!("{:?}", record.body),
                outcome: match &record.outcome {
                    yinyi_ledger::Outcome::Done(_) => "OK".to_string(),
                    yinyi_ledger::Outcome::Rejected(r) => r.code.as_str().to_string(),
                },
            })
            .collect();
        Ok(Response::new(ListAuditReply { records }))
    }

    async fn put_credential(
        &self,
        request: Request<PutCredentialRequest>,
    ) -> Result<Response<CredentialReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, put_credential);
        let r = request.into_inner();
        if self.authenticator.is_bootstrap(&r.credential_id) {
            return Err(status_with_reason(
                Code::AlreadyExists,
                "CREDENTIAL_EXISTS",
                format!(
                    "credential {} is a bootstrap credential of the nodes' config (ids are never reused)",
                    r.credential_id
                ),
            ));
        }
        let roles = yinyi_ledger::Role::parse_list(&r.roles.join(","))
            .map_err(|e| convert::invalid(reason::INVALID_REQUEST, e))?;
        let terminal = if r.bound_terminal_id.is_empty() {
            None
        } else {
            Some(convert::terminal_id(
                "bound_terminal_id",
                &r.bound_terminal_id,
            )?)
        };
        self.credential_command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::PutCredential {
                id: r.credential_id,
                roles,
                terminal,
                secret_sha256: r.secret_sha256,
            },
        )
        .await
    }

    async fn revoke_credential(
        &self,
        request: Request<RevokeCredentialRequest>,
    ) -> Result<Response<CredentialReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, revoke_credential);
        let r = request.into_inner();
        // A bootstrap credential lives in the nodes' config: its revocation is a replicated
        // tombstone every node checks, whatever its config still lists.
        let body = if self.authenticator.is_bootstrap(&r.credential_id) {
            CommandBody::RevokeBootstrapCredential {
                id: r.credential_id,
            }
        } else {
            CommandBody::RevokeCredential {
                id: r.credential_id,
            }
        };
        self.credential_command(&r.request_id, &r.terminal_id, &r.operator_id, body)
            .await
    }

    async fn list_credentials(
        &self,
        request: Request<ListCredentialsRequest>,
    ) -> Result<Response<ListCredentialsReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, list_credentials);
        self.gateway.read_barrier().await?;
        let credentials: Vec<yinyi_ledger::Credential> = self
            .gateway
            .backend()
            .store()
            .scan_prefix(CF_CREDENTIALS, b"", usize::MAX)
            .map_err(|e| convert::internal(format!("read credentials: {e}")))?;
        Ok(Response::new(ListCredentialsReply {
            credentials: credentials.iter().map(Self::credential_info).collect(),
        }))
    }

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<BackupReply>, Status> {
        let r = request.into_inner();
        let dir = std::path::PathBuf::from(&r.dir);
        if !dir.is_absolute() {
            return Err(convert::invalid(
                reason::INVALID_REQUEST,
                format!(
                    "dir {:?} must be an absolute path on the node's machine",
                    r.dir
                ),
            ));
        }
        let info = self
            .gateway
            .consensus()
            .backup(dir)
            .await
            .map_err(|e| match e {
                yinyi_consensus::backup::BackupError::Exists(_) => {
                    status_with_reason(Code::AlreadyExists, reason::INVALID_REQUEST, e.to_string())
                }
                other => convert::internal(other.to_string()),
            })?;
        tracing::info!(dir = %r.dir, applied = info.applied, digest = %info.digest, "backup taken");
        Ok(Response::new(BackupReply {
            node: info.node,
            dir: r.dir,
            applied: info.applied,
            digest: info.digest,
            taken_ms: info.taken_ms,
        }))
    }

    async fn trigger_snapshot(
        &self,
        _request: Request<NodeActionRequest>,
    ) -> Result<Response<NodeActionReply>, Status> {
        let consensus = self.gateway.consensus();
        consensus
            .trigger_snapshot()
            .await
            .map_err(|e| convert::internal(format!("snapshot: {e}")))?;
        self.record_operation(format!("snapshot on node {}", consensus.id()))
            .await;
        Ok(Response::new(NodeActionReply {
            node: consensus.id(),
            leader: consensus.leader().map_or(0, |(id, _)| id),
        }))
    }

    async fn transfer_leader(
        &self,
        _request: Request<NodeActionRequest>,
    ) -> Result<Response<NodeActionReply>, Status> {
        let consensus = self.gateway.consensus();
        self.record_operation(format!("transfer-leader to node {}", consensus.id()))
            .await;
        consensus
            .trigger_elect()
            .await
            .map_err(|e| convert::internal(format!("campaign: {e}")))?;
        // Until this node leads, or the wait is over: the answer says who leads then.
        let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
        let leader = loop {
            let leader = consensus.leader().map_or(0, |(id, _)| id);
            if leader == consensus.id() || tokio::time::Instant::now() >= deadline {
                break leader;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        Ok(Response::new(NodeActionReply {
            node: consensus.id(),
            leader,
        }))
    }

    async fn dormant_accounts(
        &self,
        request: Request<DormantAccountsRequest>,
    ) -> Result<Response<DormantAccountsReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, dormant_accounts);
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => n.min(10_000),
        } as usize;
        self.gateway.read_barrier().await?;
        let store = self.gateway.backend().store().clone();
        let before = r.inactive_since_ms;
        let (total, total_balance, accounts) =
            tokio::task::spawn_blocking(move || store.dormant_accounts(before, limit))
                .await
                .map_err(|e| convert::internal(format!("dormant accounts task: {e}")))?
                .map_err(|e| convert::internal(format!("dormant accounts read: {e}")))?;
        Ok(Response::new(DormantAccountsReply {
            accounts: accounts
                .into_iter()
                .map(|a| DormantAccount {
                    account_id: a.id.to_string(),
                    holder_name: self.gateway.show(&a.holder.name),
                    id_masked: a.holder.id_masked,
                    balance: convert::money(a.balance),
                    last_activity_ms: a.last_activity_at.0,
                    status: convert::account_status(a.status),
                })
                .collect(),
            total,
            total_balance: convert::money(total_balance),
        }))
    }

    async fn get_shift_report(
        &self,
        request: Request<GetShiftReportRequest>,
    ) -> Result<Response<ShiftReport>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, get_shift_report);
        let r = request.into_inner();
        let terminal = convert::terminal_id("terminal_id", &r.terminal_id)?;
        self.gateway.read_barrier().await?;
        let key = format!("shift/{terminal}/{:010}", r.seq);
        let report: Option<Report> = self
            .gateway
            .backend()
            .store()
            .get(CF_REPORTS, key.as_bytes())
            .map_err(|e| convert::internal(format!("report read: {e}")))?;
        match report {
            Some(Report::Shift(report)) => Ok(Response::new(convert::shift_report(&report))),
            _ => Err(status_with_reason(
                Code::NotFound,
                "REPORT_NOT_FOUND",
                format!("no closed shift {} at {terminal}", r.seq),
            )),
        }
    }

    async fn reconcile(
        &self,
        request: Request<ReconcileRequest>,
    ) -> Result<Response<ReconciliationReport>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, reconcile);
        let date = request.into_inner().date;
        let report = crate::recon::reconcile(&self.gateway, &date).await?;
        Ok(Response::new(crate::recon::to_proto(&report)))
    }

    async fn settlement(
        &self,
        request: Request<SettlementRequest>,
    ) -> Result<Response<SettlementReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, settlement);
        let r = request.into_inner();
        let reply = crate::recon::settlement(&self.gateway, &r.from, &r.to).await?;
        Ok(Response::new(reply))
    }

    async fn daily_report(
        &self,
        request: Request<DailyReportRequest>,
    ) -> Result<Response<DailyReportReply>, Status> {
        lead_or_forward!(self.gateway, request, AdminServiceClient, daily_report);
        let date = request.into_inner().date;
        let (start, end) = business_day(&date)?;
        self.gateway.read_barrier().await?;
        let mut shifts = Vec::new();
        let mut collections = Vec::new();
        let mut totals = Vec::new();
        let mut days: BTreeMap<String, Vec<yinyi_ledger::ReportLine>> = BTreeMap::new();
        // That day's reports only, through their day index: the same cost on day 1 and day
        // 1,000.
        let day_reports = self
            .gateway
            .backend()
            .store()
            .reports_of_day(&yinyi_ledger::BusinessDay::of_ms(start).to_string())
            .map_err(|e| convert::internal(format!("report read: {e}")))?;
        for report in day_reports {
            match report {
                Report::Shift(s) if (start..end).contains(&s.closed_at.0) => {
                    for line in &s.lines {
                        add_line(&mut totals, line)?;
                    }
                    shifts.push(convert::shift_report(&s));
                }
                Report::Collection(c) if (start..end).contains(&c.at.0) => {
                    collections.push(convert::collection_report(&c));
                }
                Report::TerminalDay(d) if d.day.date == date => {
                    days.insert(d.terminal.to_string(), d.day.lines);
                }
                _ => {}
            }
        }
        // Terminals whose last movement was that day still hold it as their current day.
        let terminals: Vec<yinyi_ledger::Terminal> = self
            .gateway
            .backend()
            .store()
            .scan_prefix(yinyi_storage::keys::CF_TERMINALS, b"", usize::MAX)
            .map_err(|e| convert::internal(format!("read terminals: {e}")))?;
        for t in terminals {
            if let Some(today) = t.today
                && today.date == date
            {
                days.insert(t.id.to_string(), today.lines);
            }
        }
        let mut by_channel = Vec::new();
        for lines in days.values() {
            for line in lines {
                add_line(&mut by_channel, line)?;
            }
        }
        Ok(Response::new(DailyReportReply {
            date,
            shifts,
            collections,
            totals: totals.iter().map(convert::report_line).collect(),
            terminals: days
                .into_iter()
                .map(|(terminal_id, lines)| TerminalDayLines {
                    terminal_id,
                    lines: lines.iter().map(convert::report_line).collect(),
                })
                .collect(),
            by_channel: by_channel.iter().map(convert::report_line).collect(),
        }))
    }
}

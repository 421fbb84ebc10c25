//! `yinyi ctl`: operators' commands against a running cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use tonic::transport::ClientTlsConfig;

use crate::client::ClusterClient;

/// How `ctl` reaches the cluster: a node, TLS (the CA, and an operator certificate for the
/// internal service), and a credential for the public API.
pub struct Access {
    pub node: String,
    pub tls: Option<ClientTlsConfig>,
    pub credential: Option<String>,
}

impl Access {
    pub fn cluster(&self) -> ClusterClient {
        ClusterClient::new(vec![self.node.clone()], self.tls.clone())
    }

    pub fn api_config(&self, addr: &str) -> yinyi_api::ClientConfig {
        let mut config = yinyi_api::ClientConfig::new(vec![addr.to_string()]);
        config.tls = self.tls.clone();
        config.credential = self.credential.clone();
        config
    }
}

/// Membership changes wait this long for the new node to catch up.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(330);

/// `ctl status`: the cluster as `node` sees it, and each member's own indexes and digest.
pub async fn status(access: &Access, as_json: bool) -> Result<()> {
    let mut client = access.cluster();
    let own = client.status(&access.node).await?;
    let mut nodes = Vec::new();
    for member in &own.members {
        let status = client.status_with_digest(&member.addr).await;
        nodes.push((member.clone(), status));
    }
    if as_json {
        let value = json!({
            "leader": own.leader,
            "term": own.term,
            "members": own.members.iter().map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect::<Vec<_>>(),
            "nodes": nodes.iter().map(|(m, s)| match s {
                Ok(s) => json!({
                    "id": m.id, "addr": m.addr, "reachable": true, "state": s.state, "term": s.term,
                    "last_log": s.last_log, "committed": s.committed, "applied": s.applied,
                    "snapshot": s.snapshot, "purged": s.purged, "digest": s.digest,
                }),
                Err(e) => json!({"id": m.id, "addr": m.addr, "reachable": false, "error": e.to_string()}),
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "leader: {}   term: {}",
        own.leader
            .map(|l| l.to_string())
            .unwrap_or_else(|| "none".into()),
        own.term
    );
    println!(
        "{:>4}  {:<21} {:<9} {:>9} {:>10} {:>9}  digest",
        "id", "addr", "state", "last_log", "committed", "applied"
    );
    for (member, status) in nodes {
        match status {
            Ok(s) => println!(
                "{:>4}  {:<21} {:<9} {:>9} {:>10} {:>9}  {}",
                member.id,
                member.addr,
                if member.voter {
                    s.state.clone()
                } else {
                    format!("{} (learner)", s.state)
                },
                s.last_log
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.committed,
                s.applied
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "-".into()),
                s.digest.as_deref().map_or("-", |d| &d[..16.min(d.len())])
            ),
            Err(e) => println!("{:>4}  {:<21} unreachable: {e:#}", member.id, member.addr),
        }
    }
    Ok(())
}

/// `ctl add-node ID=ADDR`: adds the node as a learner, waits until it caught up, promotes it.
/// Through the admin API, so the credential's role is checked and the change is in the audit
/// trail.
pub async fn add_node(access: &Access, spec: &str) -> Result<()> {
    let (id, addr) = spec.split_once('=').context("expected ID=HOST:PORT")?;
    let id: u64 = id.parse().context("node id")?;
    if addr.parse::<std::net::SocketAddr>().is_err() {
        bail!("{addr:?} is not HOST:PORT");
    }
    let client = membership_client(access)?;
    client
        .add_learner(yinyi_api::v1::AddLearnerRequest {
            id,
            addr: addr.to_string(),
        })
        .await?;
    println!("node {id} added as a learner and caught up");
    client
        .promote_voters(yinyi_api::v1::NodeIds { ids: vec![id] })
        .await?;
    println!("node {id} is a voter");
    Ok(())
}

fn membership_client(access: &Access) -> Result<yinyi_api::Client> {
    let mut config = access.api_config(&access.node);
    config.deadline = MEMBERSHIP_TIMEOUT;
    config.attempt_timeout = MEMBERSHIP_TIMEOUT;
    Ok(yinyi_api::Client::new(config)?)
}

pub async fn remove_node(access: &Access, id: u64) -> Result<()> {
    membership_client(access)?
        .remove_nodes(yinyi_api::v1::NodeIds { ids: vec![id] })
        .await?;
    println!("node {id} removed");
    Ok(())
}

/// `ctl snapshot`: the node asked builds a snapshot now (an admin credential; audited).
pub async fn snapshot(access: &Access) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let reply = client
        .trigger_snapshot(yinyi_api::v1::NodeActionRequest {})
        .await?;
    println!(
        "snapshot requested on node {} ({})",
        reply.node, access.node
    );
    Ok(())
}

/// `ctl transfer-leader`: makes `node` campaign now; with an up-to-date log it wins (an admin
/// credential; audited).
pub async fn elect(access: &Access) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let reply = client
        .transfer_leader(yinyi_api::v1::NodeActionRequest {})
        .await?;
    if reply.leader != reply.node {
        bail!(
            "node {} ({}) did not become leader; leader is {}",
            reply.node,
            access.node,
            reply.leader
        );
    }
    println!("node {} ({}) is the leader", reply.node, access.node);
    Ok(())
}

/// `ctl recon`: reconciles a day through the cluster's leader and prints the report.
pub async fn recon(access: &Access, date: &str) -> Result<()> {
    let mut config = access.api_config(&access.node);
    config.deadline = Duration::from_secs(120);
    config.attempt_timeout = Duration::from_secs(60);
    let client = yinyi_api::Client::new(config)?;
    let report = client
        .reconcile(yinyi_api::v1::ReconcileRequest {
            date: date.to_string(),
        })
        .await?;
    println!(
        "reconciliation {}: {} bank lines, {} matched (¥{}), {} differences",
        report.date,
        report.bank_lines,
        report.matched,
        report.matched_total,
        report.differences.len()
    );
    if !report.differences.is_empty() {
        println!(
            "{:<21} {:<15} {:>12} {:>12} {:<10} resolution",
            "bank ref", "kind", "bank", "journal", "state"
        );
    }
    for d in &report.differences {
        println!(
            "{:<21} {:<15} {:>12} {:>12} {:<10} {}",
            d.bank_ref, d.kind, d.bank_amount, d.journal_amount, d.journal_state, d.resolution
        );
    }
    Ok(())
}

/// `ctl settlement`: the bank link's settlement (清分结算) of each day, and the days not
/// matched to the fen for finance to take up with the link.
pub async fn settlement(access: &Access, from: &str, to: &str) -> Result<()> {
    let mut config = access.api_config(&access.node);
    config.deadline = Duration::from_secs(120);
    config.attempt_timeout = Duration::from_secs(60);
    let client = yinyi_api::Client::new(config)?;
    let reply = client
        .settlement(yinyi_api::v1::SettlementRequest {
            from: from.to_string(),
            to: to.to_string(),
        })
        .await?;
    println!(
        "settlement of the bank link (fee {}, reserve {} of collections)",
        reply.fee_rate, reply.reserve_rate
    );
    println!(
        "{:<10} {:>6} {:>14} {:>12} {:>10} {:>12} {:>12} {:>14} {:>14} {:<9} {:>12} reference",
        "day",
        "lines",
        "collected",
        "paid out",
        "fees",
        "reserve",
        "released",
        "due",
        "received",
        "status",
        "difference"
    );
    for d in &reply.days {
        println!(
            "{:<10} {:>6} {:>14} {:>12} {:>10} {:>12} {:>12} {:>14} {:>14} {:<9} {:>12} {}",
            d.date,
            d.lines,
            d.collected,
            d.paid_out,
            d.fees,
            d.reserve_kept,
            d.reserve_released,
            d.due,
            if d.received.is_empty() {
                "-"
            } else {
                &d.received
            },
            d.status,
            d.difference,
            d.reference
        );
    }
    let open = reply.days.iter().filter(|d| d.status != "MATCHED").count();
    println!("{open} of {} days not matched", reply.days.len());
    Ok(())
}

/// `ctl audit-balances`: the balance audit (稽核) on every member; fails when any node finds a
/// problem or the nodes' digests differ.
pub async fn audit_balances(access: &Access) -> Result<()> {
    let mut cluster = access.cluster();
    let own = cluster.status(&access.node).await?;
    let mut digests = BTreeSet::new();
    let mut failed = false;
    println!(
        "{:>4} {:>10} {:>9} {:>9} {:>9} {:>10} {:>16} {:>16}  audit",
        "node",
        "applied",
        "accounts",
        "entries",
        "bank ops",
        "unresolved",
        "Σ balances",
        "flows give"
    );
    for member in &own.members {
        let mut config = access.api_config(&member.addr);
        config.deadline = Duration::from_secs(600);
        config.attempt_timeout = Duration::from_secs(600);
        let client = yinyi_api::Client::new(config)?;
        let reply = match client
            .audit_balances(yinyi_api::v1::AuditRequest { with_digest: true })
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                println!("{:>4} unreachable: {e}", member.id);
                failed = true;
                continue;
            }
        };
        println!(
            "{:>4} {:>10} {:>9} {:>9} {:>9} {:>10} {:>16} {:>16}  {}",
            reply.node,
            reply.applied,
            reply.accounts,
            reply.journal_entries,
            reply.bank_ops,
            reply.unresolved_bank_ops,
            reply.total_balance,
            reply.expected_total,
            if reply.ok {
                "ok".to_string()
            } else {
                format!("{} problems", reply.problem_count)
            }
        );
        for problem in &reply.problems {
            println!("       {problem}");
        }
        failed |= !reply.ok;
        digests.insert(reply.digest);
    }
    if digests.len() > 1 {
        println!(
            "the nodes' digests differ ({} distinct): compare again when no writes are in flight",
            digests.len()
        );
        failed = true;
    }
    if failed {
        bail!("the balance audit failed");
    }
    Ok(())
}

/// `ctl audit --since`: the audit trail of sensitive operations from a day (YYYY-MM-DD, China
/// Standard Time) or a time in milliseconds, oldest first, every page.
pub async fn audit(access: &Access, since: &str, limit: usize) -> Result<()> {
    let since_ms = match yinyi_ledger::BusinessDay::parse(since) {
        Some(day) => day.bounds_ms().0,
        None => since
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("--since {since:?}: give YYYY-MM-DD or milliseconds"))?,
    };
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let mut from = since_ms;
    let mut printed = 0usize;
    let mut seen = BTreeSet::new();
    println!(
        "{:<24} {:<22} {:<10} {:<10} {:<20} {:<26} details",
        "at (UTC)", "request", "terminal", "operator", "action", "outcome"
    );
    while printed < limit {
        let page = client
            .list_audit(yinyi_api::v1::ListAuditRequest {
                since_ms: from,
                limit: 1000,
            })
            .await?
            .records;
        let fresh: Vec<_> = page
            .iter()
            .filter(|r| !seen.contains(&(r.at_ms, r.request_id.clone())))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for r in fresh {
            if printed >= limit {
                break;
            }
            seen.insert((r.at_ms, r.request_id.clone()));
            let at = chrono_like(r.at_ms);
            println!(
                "{at:<24} {:<22} {:<10} {:<10} {:<20} {:<26} {}",
                r.request_id, r.terminal_id, r.operator_id, r.action, r.outcome, r.details
            );
            printed += 1;
        }
        from = page.last().map_or(from, |r| r.at_ms);
    }
    Ok(())
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmm` (UTC).
fn chrono_like(ms: i64) -> String {
    let day = yinyi_ledger::BusinessDay::of_ms(ms - yinyi_ledger::calendar::CST_OFFSET_MS);
    let in_day = ms.rem_euclid(yinyi_ledger::calendar::DAY_MS);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}",
        day,
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// `ctl dormant --months N`: accounts with no activity for N months (30 days each), with what
/// they hold.
pub async fn dormant(access: &Access, months: u32, limit: u32) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let since = now_ms - i64::from(months) * 30 * yinyi_ledger::calendar::DAY_MS;
    let mut config = access.api_config(&access.node);
    config.deadline = Duration::from_secs(300);
    config.attempt_timeout = Duration::from_secs(300);
    let client = yinyi_api::Client::new(config)?;
    let reply = client
        .dormant_accounts(yinyi_api::v1::DormantAccountsRequest {
            inactive_since_ms: since,
            limit,
        })
        .await?;
    println!(
        "{} accounts without activity for {months} months, holding ¥{} together",
        reply.total, reply.total_balance
    );
    if !reply.accounts.is_empty() {
        println!(
            "{:<22} {:<20} {:<20} {:>12} {:<24} status",
            "account", "holder", "ID (masked)", "balance", "last activity (UTC)"
        );
    }
    for a in &reply.accounts {
        println!(
            "{:<22} {:<20} {:<20} {:>12} {:<24} {}",
            a.account_id,
            a.holder_name,
            a.id_masked,
            a.balance,
            chrono_like(a.last_activity_ms),
            a.status
        );
    }
    if reply.total > reply.accounts.len() as u64 {
        println!(
            "… {} more (raise --limit)",
            reply.total - reply.accounts.len() as u64
        );
    }
    Ok(())
}

use yinyi_api::credential::new_secret;

/// The admin console's terminal and a request id for `ctl`'s own administrative commands.
const CTL_TERMINAL: &str = "A-CTL";

fn ctl_request_id(what: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("ctl-{what}-{now}")
}

fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    if user.is_empty() {
        "OPS".into()
    } else {
        user.to_uppercase()
    }
}

/// `ctl credential bootstrap ID --roles …`: a credential for the node configs (no cluster
/// needed): prints the config line and the credential to keep.
pub fn credential_bootstrap(id: &str, roles: &str) -> Result<()> {
    yinyi_ledger::credential::check_id(id).map_err(|e| anyhow::anyhow!(e))?;
    let roles = yinyi_ledger::Role::parse_list(roles).map_err(|e| anyhow::anyhow!(e))?;
    let secret = new_secret();
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    println!("# in every node's config:");
    println!(
        "bootstrap_credentials = [\"{}\"]",
        yinyi_api::credential::bootstrap_entry(&format!("{id}:{secret}"), &roles.join("+"))
    );
    println!("# the credential (shown once; YINYI_CREDENTIAL for `yinyi ctl`):");
    println!("{id}:{secret}");
    Ok(())
}

/// `ctl credential add ID --roles … [--terminal T]`: creates it in the cluster and prints the
/// secret once (only its SHA-256 is sent).
pub async fn credential_add(
    access: &Access,
    id: &str,
    roles: &str,
    terminal: Option<&str>,
) -> Result<()> {
    let roles = yinyi_ledger::Role::parse_list(roles).map_err(|e| anyhow::anyhow!(e))?;
    let secret = new_secret();
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let reply = client
        .put_credential(yinyi_api::v1::PutCredentialRequest {
            request_id: ctl_request_id("cred"),
            terminal_id: CTL_TERMINAL.into(),
            operator_id: operator(),
            credential_id: id.to_string(),
            roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
            bound_terminal_id: terminal.unwrap_or_default().to_string(),
            secret_sha256: crate::api::auth::secret_sha256(&secret),
        })
        .await?;
    let info = reply.credential.unwrap_or_default();
    println!(
        "credential {} ({}{}) created; give this to the terminal, it is shown once:",
        info.credential_id,
        info.roles.join(", "),
        if info.bound_terminal_id.is_empty() {
            String::new()
        } else {
            format!(", terminal {}", info.bound_terminal_id)
        }
    );
    println!("{id}:{secret}");
    Ok(())
}

pub async fn credential_revoke(access: &Access, id: &str) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    client
        .revoke_credential(yinyi_api::v1::RevokeCredentialRequest {
            request_id: ctl_request_id("revoke"),
            terminal_id: CTL_TERMINAL.into(),
            operator_id: operator(),
            credential_id: id.to_string(),
        })
        .await?;
    println!("credential {id} revoked");
    Ok(())
}

pub async fn credential_list(access: &Access) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let reply = client
        .list_credentials(yinyi_api::v1::ListCredentialsRequest {})
        .await?;
    println!(
        "{:<24} {:<28} {:<12} {:<24} revoked",
        "credential", "roles", "terminal", "created (UTC)"
    );
    for c in reply.credentials {
        println!(
            "{:<24} {:<28} {:<12} {:<24} {}",
            c.credential_id,
            c.roles.join(","),
            c.bound_terminal_id,
            chrono_like(c.created_ms),
            if c.revoked_ms == 0 {
                "-".to_string()
            } else {
                chrono_like(c.revoked_ms)
            }
        );
    }
    Ok(())
}

/// `ctl backup --out DIR`: a backup of the node asked (`--node`), in DIR on its machine.
pub async fn backup(access: &Access, out: &std::path::Path) -> Result<()> {
    let mut config = access.api_config(&access.node);
    config.deadline = Duration::from_secs(600);
    config.attempt_timeout = Duration::from_secs(600);
    let client = yinyi_api::Client::new(config)?;
    let reply = client
        .backup(yinyi_api::v1::BackupRequest {
            dir: out.display().to_string(),
        })
        .await?;
    println!(
        "backup of node {} in {} (on its machine): applied index {}, digest {}",
        reply.node, reply.dir, reply.applied, reply.digest
    );
    Ok(())
}

/// `ctl restore --backup DIR --data DIR --id N --peers …`: makes a new cluster's node from a
/// backup, offline (run it for every node of the new cluster, then start them).
pub fn restore(
    backup: &std::path::Path,
    data: &std::path::Path,
    members: &std::collections::BTreeMap<u64, String>,
) -> Result<()> {
    let info = yinyi_consensus::backup::restore(backup, data, members)?;
    println!(
        "restored node {}'s backup (applied {}, digest {}) into {} for a cluster of {:?}",
        info.node,
        info.applied,
        info.digest,
        data.display(),
        members.keys().collect::<Vec<_>>()
    );
    Ok(())
}

/// `ctl daily-report --date D`: the day by channel (every terminal), by terminal, the windows'
/// shifts and the kiosks' cash collections.
pub async fn daily_report(access: &Access, date: &str) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let r = client
        .daily_report(yinyi_api::v1::DailyReportRequest {
            date: date.to_string(),
        })
        .await?;
    let channel = |c: i32| {
        yinyi_api::v1::Channel::try_from(c)
            .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_string())
            .unwrap_or_else(|_| c.to_string())
    };
    let print_lines = |indent: &str, lines: &[yinyi_api::v1::ReportLine]| {
        for l in lines {
            println!(
                "{indent}{:<22} {:<12} {:>7} {:>14}",
                l.kind,
                channel(l.channel),
                l.count,
                l.total
            );
        }
    };
    println!("{} — by kind and channel, every terminal:", r.date);
    print_lines("  ", &r.by_channel);
    println!("by terminal:");
    for t in &r.terminals {
        println!("  {}", t.terminal_id);
        print_lines("    ", &t.lines);
    }
    println!("shifts closed: {}", r.shifts.len());
    for s in &r.shifts {
        println!(
            "  {} shift {} ({}): cash to hand over {}",
            s.terminal_id, s.seq, s.operator_id, s.cash_expected
        );
    }
    println!("cash collections: {}", r.collections.len());
    for c in &r.collections {
        println!(
            "  {} #{}: expected {}, counted {}, difference {}",
            c.terminal_id, c.seq, c.expected, c.counted, c.difference
        );
    }
    Ok(())
}

/// `ctl rules [--single-txn-limit L --min-first-deposit M --max-overdraft O]`: the business
/// rules the ledger applies, set first when given.
pub async fn rules(access: &Access, set: Option<yinyi_api::v1::BusinessRules>) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let rules = match set {
        Some(rules) => {
            client
                .set_rules(yinyi_api::v1::SetRulesRequest {
                    request_id: ctl_request_id("rules"),
                    terminal_id: CTL_TERMINAL.into(),
                    operator_id: operator(),
                    rules: Some(rules),
                })
                .await?
        }
        None => client.get_rules(yinyi_api::v1::GetRulesRequest {}).await?,
    };
    println!(
        "single-transaction limit {}, minimum first deposit {}, overdraft maximum {} ({})",
        rules.single_txn_limit,
        rules.min_first_deposit,
        rules.max_overdraft,
        if rules.set {
            "set by an admin"
        } else {
            "the defaults"
        }
    );
    Ok(())
}

/// `ctl insurance-report --date D`: the day's list for 医保对账, every page of it.
pub async fn insurance_report(access: &Access, date: &str) -> Result<()> {
    let client = yinyi_api::Client::new(access.api_config(&access.node))?;
    let (mut settled_after, mut reversed_after) = (String::new(), String::new());
    let mut first = true;
    loop {
        let page = client
            .insurance_report(yinyi_api::v1::InsuranceReportRequest {
                date: date.to_string(),
                settled_after: settled_after.clone(),
                reversed_after: reversed_after.clone(),
                limit: 0,
            })
            .await?;
        if first {
            let total = |what: &str, t: &Option<yinyi_api::v1::InsuranceTotals>| {
                let t = t.clone().unwrap_or_default();
                println!(
                    "{what}: {} bills; pooled (统筹) {}, personal account (个账) {}, self-pay \
                     (自付) {}, reductions (减免) {}",
                    t.count, t.pooled, t.personal_account, t.self_pay, t.reductions
                );
            };
            println!("{} — insured bills (医保对账)", page.date);
            total("settled", &page.settled_total);
            total("reversed", &page.reversed_total);
            println!(
                "{:<10} {:<24} {:<24} {:>12} {:>12} {:>12} {:>12}",
                "list", "settlement", "bill", "pooled", "personal", "self-pay", "reductions"
            );
            first = false;
        }
        for (list, lines) in [("settled", &page.settled), ("reversed", &page.reversed)] {
            for line in lines {
                let s = line.split.clone().unwrap_or_default();
                println!(
                    "{list:<10} {:<24} {:<24} {:>12} {:>12} {:>12} {:>12}",
                    s.settlement_id,
                    line.bill_id,
                    s.pooled,
                    s.personal_account,
                    s.self_pay,
                    s.reductions
                );
            }
        }
        if page.settled_next.is_empty() && page.reversed_next.is_empty() {
            return Ok(());
        }
        // Each list goes on after its last line; one that is done gives an empty page.
        if let Some(last) = page.settled.last() {
            settled_after = last.bill_id.clone();
        }
        if let Some(last) = page.reversed.last() {
            reversed_after = last.bill_id.clone();
        }
    }
}

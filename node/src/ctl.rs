//! `yinyi ctl`: operators' commands against a running cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use yinyi_consensus::MembershipChange;

use crate::client::ClusterClient;

/// Membership changes wait this long for the new node to catch up.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// `ctl status`: the cluster as `node` sees it, and each member's own indexes and digest.
pub async fn status(node: &str, as_json: bool) -> Result<()> {
    let mut client = ClusterClient::new(vec![node.to_string()]);
    let own = client.status(node).await?;
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
pub async fn add_node(node: &str, spec: &str) -> Result<()> {
    let (id, addr) = spec.split_once('=').context("expected ID=HOST:PORT")?;
    let id: u64 = id.parse().context("node id")?;
    if addr.parse::<std::net::SocketAddr>().is_err() {
        bail!("{addr:?} is not HOST:PORT");
    }
    let mut client = ClusterClient::new(vec![node.to_string()]);
    client
        .change_membership(
            MembershipChange::AddLearner {
                id,
                addr: addr.to_string(),
            },
            MEMBERSHIP_TIMEOUT,
        )
        .await?;
    println!("node {id} added as a learner and caught up");
    client
        .change_membership(
            MembershipChange::Promote {
                ids: BTreeSet::from([id]),
            },
            MEMBERSHIP_TIMEOUT,
        )
        .await?;
    println!("node {id} is a voter");
    Ok(())
}

pub async fn remove_node(node: &str, id: u64) -> Result<()> {
    let mut client = ClusterClient::new(vec![node.to_string()]);
    client
        .change_membership(
            MembershipChange::Remove {
                ids: BTreeSet::from([id]),
            },
            MEMBERSHIP_TIMEOUT,
        )
        .await?;
    println!("node {id} removed");
    Ok(())
}

pub async fn snapshot(node: &str) -> Result<()> {
    let mut client = ClusterClient::new(vec![node.to_string()]);
    client.trigger_snapshot(node).await?;
    println!("snapshot requested on {node}");
    Ok(())
}

/// `ctl transfer-leader`: makes `node` campaign now; with an up-to-date log it wins.
pub async fn elect(node: &str) -> Result<()> {
    let mut client = ClusterClient::new(vec![node.to_string()]);
    client.trigger_elect(node).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = client.status(node).await?;
        if status.state == "Leader" {
            println!("{node} is the leader (term {})", status.term);
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{node} did not become leader; leader is {:?}",
                status.leader
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ctl recon`: reconciles a day through the cluster's leader and prints the report.
pub async fn recon(node: &str, date: &str) -> Result<()> {
    let mut config = yinyi_api::ClientConfig::new(vec![node.to_string()]);
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

/// `ctl audit-balances`: the balance audit (稽核) on every member; fails when any node finds a
/// problem or the nodes' digests differ.
pub async fn audit_balances(node: &str) -> Result<()> {
    let mut cluster = ClusterClient::new(vec![node.to_string()]);
    let own = cluster.status(node).await?;
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
        let mut config = yinyi_api::ClientConfig::new(vec![member.addr.clone()]);
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
pub async fn audit(node: &str, since: &str, limit: usize) -> Result<()> {
    let since_ms = match yinyi_ledger::BusinessDay::parse(since) {
        Some(day) => day.bounds_ms().0,
        None => since
            .parse::<i64>()
            .map_err(|_| anyhow::anyhow!("--since {since:?}: give YYYY-MM-DD or milliseconds"))?,
    };
    let client = yinyi_api::Client::new(yinyi_api::ClientConfig::new(vec![node.to_string()]))?;
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
pub async fn dormant(node: &str, months: u32, limit: u32) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let since = now_ms - i64::from(months) * 30 * yinyi_ledger::calendar::DAY_MS;
    let mut config = yinyi_api::ClientConfig::new(vec![node.to_string()]);
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

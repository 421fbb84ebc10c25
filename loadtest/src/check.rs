//! The end-of-run checks, after the faults are healed and every unknown outcome asked about
//! again: DOMAIN.md's invariants against what the load tester sent and was told, and against
//! every node's own balance audit and digest.
//!
//! 1 — every touched account holds exactly what the book says (and a sample of untouched
//!     preloaded ones their opening deposit); each node's audit recomputes every balance from
//!     its journal.
//! 2 — each node's audit checks the conservation law; with `--local` (a cluster holding only
//!     this run's accounts) Σ balances also equals the book's total.
//! 3 — each node's audit checks overdraft limits.
//! 4 — no request id (or bank operation) twice in any touched account's journal.
//! 5 — no bank operation left PENDING or IN_DOUBT on any node.
//! 6 — each of the run's terminals holds the cash the book says.
//! 7 — every acknowledged transaction is in its account's journal after the faults, and every
//!     node holds the same state (equal digests at one applied index).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use yinyi_api::v1::*;
use yinyi_api::{Client, ClientConfig};

use crate::workload::{Ack, PRELOAD_DEPOSIT_CENTS, Patient, Run, cents};

/// The most lines one HIS reconciliation takes.
const MAX_HIS_LINES: usize = 100_000;

/// HIS对账 at the end of the day: HIS's list is every bill the run was told was paid; the
/// cluster (holding nothing but this run's bills) must find each paid, at its amount, and no
/// other. Returns the lines sent and matched.
async fn reconcile_his(run: &Run, violations: &mut Vec<String>) -> Result<(u64, u64), String> {
    let today = crate::workload::business_day_now();
    if today != run.day {
        return Err(format!(
            "not run: the run crossed midnight ({} to {today})",
            run.day
        ));
    }
    let paid = run
        .paid_bills
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if paid.len() > MAX_HIS_LINES {
        return Err(format!(
            "not run: {} bills paid, more than one reconciliation takes",
            paid.len()
        ));
    }
    let charges = paid
        .iter()
        .map(|(bill, c)| HisCharge {
            bill_id: bill.clone(),
            amount: crate::workload::yuan(*c),
        })
        .collect();
    match run
        .client
        .reconcile_his(ReconcileHisRequest {
            terminal_id: run.his(),
            date: today,
            charges,
        })
        .await
    {
        Ok(report) => {
            for d in report.differences.iter().take(20) {
                violations.push(format!(
                    "HIS reconciliation: {} {} (HIS {:?}, ledger {:?}): {}",
                    d.kind, d.bill_id, d.his_amount, d.ledger_amount, d.resolution
                ));
            }
            Ok((report.his_lines, report.matched))
        }
        Err(e) => {
            violations.push(format!("HIS reconciliation failed: {e}"));
            Err(format!("failed: {e}"))
        }
    }
}

/// 清分结算 at the end of the day: what the bank link owes for it, from its statement under the
/// local link's terms, must match to the fen what its settlement advice says it paid.
async fn settle_link(run: &Run, violations: &mut Vec<String>) -> Result<SettlementDay, String> {
    let today = crate::workload::business_day_now();
    let reply = run
        .client
        .settlement(SettlementRequest {
            from: today,
            to: String::new(),
        })
        .await
        .map_err(|e| format!("failed: {e}"))?;
    let day = reply
        .days
        .into_iter()
        .next()
        .ok_or_else(|| "failed: no day in the reply".to_string())?;
    if day.status != "MATCHED" {
        violations.push(format!(
            "settlement of {}: due {}, the link paid {:?}: {}",
            day.date, day.due, day.received, day.status
        ));
    }
    Ok(day)
}

/// 医保对账 at the end of the day: the day's insurance list must hold every insured bill the
/// run was told was posted, with its self-pay part, and nothing beyond those and the ones whose
/// posting is unknown. Returns the bills listed and matched.
async fn reconcile_insurance(
    run: &Run,
    violations: &mut Vec<String>,
) -> Result<(u64, u64), String> {
    let today = crate::workload::business_day_now();
    if today != run.day {
        return Err(format!(
            "not run: the run crossed midnight ({} to {today})",
            run.day
        ));
    }
    let mut settled = Vec::new();
    let mut reversed;
    let mut after = String::new();
    loop {
        let page = match run
            .client
            .insurance_report(InsuranceReportRequest {
                date: today.clone(),
                settled_after: after.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(page) => page,
            Err(e) => {
                violations.push(format!("insurance list failed: {e}"));
                return Err(format!("failed: {e}"));
            }
        };
        reversed = page.reversed.len();
        settled.extend(page.settled);
        if page.settled_next.is_empty() {
            break;
        }
        after = page.settled_next;
    }
    // The run refunds no insured bill: no settlement is reversed.
    if reversed > 0 {
        violations.push(format!("insurance list: {reversed} settlements reversed"));
    }
    let posted = run
        .insured_posted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let unknown = run
        .insured_unknown
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut matched = 0u64;
    let mut listed = std::collections::BTreeSet::new();
    for line in &settled {
        listed.insert(line.bill_id.clone());
        let split = line.split.clone().unwrap_or_default();
        match posted.get(&line.bill_id) {
            Some(expected) if expected == &split => matched += 1,
            Some(expected) => violations.push(format!(
                "insurance list: bill {} with {split:?}, posted with {expected:?}",
                line.bill_id
            )),
            None if unknown.contains(&line.bill_id) => {}
            None => violations.push(format!(
                "insurance list: bill {} was never posted",
                line.bill_id
            )),
        }
    }
    for bill in posted
        .keys()
        .filter(|bill| !listed.contains(*bill))
        .take(20)
    {
        violations.push(format!("insurance list: posted bill {bill} is missing"));
    }
    Ok((settled.len() as u64, matched))
}

/// Untouched preloaded accounts read back at the end.
const PRELOAD_SAMPLE: u64 = 1000;
/// Balance reads in flight at once.
const PARALLEL_READS: usize = 32;

pub struct NodeAudit {
    pub addr: String,
    pub reply: Option<AuditReply>,
}

pub struct Checked {
    pub accounts_checked: u64,
    /// Acknowledged transactions the journals were searched for.
    pub acknowledged: u64,
    /// Acknowledged and missing from the journal.
    pub lost: u64,
    /// In a journal more than once.
    pub duplicated: u64,
    pub unknown_left: usize,
    pub nodes: Vec<NodeAudit>,
    /// HIS's reconciliation of the bills paid during the run: lines sent and matched, or why
    /// it was not run.
    pub his_recon: Result<(u64, u64), String>,
    /// The day's insurance list (医保对账) against the insured bills posted: bills listed and
    /// matched, or why it was not run.
    pub insurance_recon: Result<(u64, u64), String>,
    /// The bank link's settlement (清分结算) of the day, or why it was not run.
    pub settlement: Result<SettlementDay, String>,
    pub violations: Vec<String>,
}

impl Checked {
    pub fn unresolved_bank_ops(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.reply.as_ref())
            .map(|r| r.unresolved_bank_ops)
            .max()
            .unwrap_or(0)
    }
}

/// Runs every check against the cluster at `addrs` (healed: every node up and the bank
/// reachable). `only_ours` says the cluster holds nothing but this run's accounts, so the sum of
/// every balance must be the book's total.
pub async fn run(
    run: &Arc<Run>,
    addrs: &[String],
    only_ours: bool,
    within: Duration,
) -> Result<Checked> {
    let mut violations = Vec::new();

    let unknown_left = run.settle_unknown(within).await;
    if unknown_left > 0 {
        violations.push(format!(
            "{unknown_left} requests still without a known outcome after {within:?}"
        ));
    }

    // 1 (and 7): every account as the book says.
    let touched = run.touched();
    let touched_ids: HashSet<u64> = touched.iter().map(|(n, _)| *n).collect();
    let preloaded = run.preloaded.load(std::sync::atomic::Ordering::SeqCst);
    let step = (preloaded / PRELOAD_SAMPLE).max(1);
    let untouched: Vec<(String, i64)> = (0..preloaded)
        .step_by(step as usize)
        .filter(|n| !touched_ids.contains(n))
        .filter_map(|n| run.patient(n).map(|p| (p.card, p.cents)))
        .collect();
    let expected: Vec<(String, i64)> = touched
        .iter()
        .map(|(_, p)| (p.card.clone(), p.cents))
        .chain(untouched)
        .collect();
    let accounts_checked = expected.len() as u64;
    violations.extend(check_balances(&run.client, expected).await);

    // 4 and 7: every acknowledged transaction once in its account's journal.
    let journals = check_journals(&run.client, &touched).await;
    violations.extend(journals.problems.iter().cloned());

    // 6: every terminal's cash box.
    let cash = run.cash();
    for terminal in run.terminals() {
        let want = cash.get(&terminal).copied().unwrap_or(0);
        match run
            .client
            .heartbeat(HeartbeatRequest {
                terminal_id: terminal.clone(),
            })
            .await
        {
            Ok(reply) if cents(&reply.cash_box) == Some(want) => {}
            Ok(reply) => violations.push(format!(
                "invariant 6: terminal {terminal} holds {} in cash, the book says {}",
                reply.cash_box,
                want as f64 / 100.0
            )),
            Err(e) => violations.push(format!("heartbeat of {terminal}: {e}")),
        }
    }

    // 2, 3, 5, 7: every node's audit, at one applied index, with one digest.
    let nodes = audit_nodes(run.client.config(), addrs, within).await;
    violations.extend(judge_audits(&nodes));
    if only_ours {
        let book_total: i64 = touched.iter().map(|(_, p)| p.cents).sum::<i64>()
            + (preloaded as i64 - touched.iter().filter(|(n, _)| *n < preloaded).count() as i64)
                * PRELOAD_DEPOSIT_CENTS;
        for node in &nodes {
            if let Some(reply) = &node.reply
                && cents(&reply.total_balance) != Some(book_total)
            {
                violations.push(format!(
                    "invariant 2: node {} holds Σ balances {}, the book says {}",
                    reply.node,
                    reply.total_balance,
                    book_total as f64 / 100.0
                ));
            }
        }
    }
    let (his_recon, insurance_recon, settlement) = if only_ours {
        (
            reconcile_his(run, &mut violations).await,
            reconcile_insurance(run, &mut violations).await,
            settle_link(run, &mut violations).await,
        )
    } else {
        let why = "not run: the cluster holds bills of others".to_string();
        (Err(why.clone()), Err(why.clone()), Err(why))
    };
    Ok(Checked {
        his_recon,
        insurance_recon,
        settlement,
        accounts_checked,
        acknowledged: journals.acknowledged,
        lost: journals.lost,
        duplicated: journals.duplicated,
        unknown_left,
        nodes,
        violations,
    })
}

#[derive(Default)]
struct Journals {
    acknowledged: u64,
    lost: u64,
    duplicated: u64,
    problems: Vec<String>,
}

/// Reads every touched account's whole journal (a few accounts at a time): each acknowledged
/// transaction must be there, and nothing twice (a request id on two entries, or a bank
/// reference on two entries of one kind).
async fn check_journals(client: &Client, touched: &[(u64, Patient)]) -> Journals {
    let mut out = Journals::default();
    let mut queue = touched.iter().map(|(_, p)| p.clone());
    let mut reads = tokio::task::JoinSet::new();
    loop {
        while reads.len() < PARALLEL_READS {
            let Some(patient) = queue.next() else { break };
            let client = client.clone();
            reads.spawn(async move {
                let journal = whole_journal(&client, &patient.card).await;
                (patient, journal)
            });
        }
        let Some(joined) = reads.join_next().await else {
            return out;
        };
        let (patient, journal) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                out.problems.push(format!("a journal read failed: {e}"));
                continue;
            }
        };
        let journal = match journal {
            Ok(journal) => journal,
            Err(e) => {
                out.problems
                    .push(format!("journal of card {}: {e}", patient.card));
                continue;
            }
        };
        let mut by_request: std::collections::HashMap<&str, u32> = Default::default();
        let mut by_ref: std::collections::HashMap<(&str, &str), u32> = Default::default();
        for t in &journal {
            *by_request.entry(t.request_id.as_str()).or_default() += 1;
            if !t.bank_ref.is_empty() {
                *by_ref
                    .entry((t.bank_ref.as_str(), t.kind.as_str()))
                    .or_default() += 1;
            }
        }
        for ack in &patient.acked {
            out.acknowledged += 1;
            let found = match ack {
                Ack::Request(id) => by_request.contains_key(id.as_str()),
                Ack::BankRef(r) => by_ref.keys().any(|(bank_ref, _)| bank_ref == r),
            };
            if !found {
                out.lost += 1;
                out.problems.push(format!(
                    "invariant 7: acknowledged {ack:?} is not in card {}'s journal",
                    patient.card
                ));
            }
        }
        // A withdrawal to a card and its return share a request id by design; we make none.
        for (id, n) in by_request.iter().filter(|(_, n)| **n > 1) {
            out.duplicated += 1;
            out.problems.push(format!(
                "invariant 4: request {id} on {n} entries of card {}'s journal",
                patient.card
            ));
        }
        for ((r, kind), n) in by_ref.iter().filter(|(_, n)| **n > 1) {
            out.duplicated += 1;
            out.problems.push(format!(
                "invariant 4: bank operation {r} on {n} {kind} entries of card {}'s journal",
                patient.card
            ));
        }
    }
}

/// Every transaction of the account holding `card`, newest first, page by page.
async fn whole_journal(
    client: &Client,
    card: &str,
) -> Result<Vec<Transaction>, yinyi_api::ApiError> {
    let mut all: Vec<Transaction> = Vec::new();
    loop {
        let before = all.last().map(|t| t.txn_id.clone()).unwrap_or_default();
        let page = client
            .list_transactions(ListTransactionsRequest {
                card_no: card.to_string(),
                limit: 1000,
                before_txn_id: before,
                ..Default::default()
            })
            .await?
            .transactions;
        let done = page.len() < 1000;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// Reads every balance (a few at a time); a difference is a violation.
async fn check_balances(client: &Client, expected: Vec<(String, i64)>) -> Vec<String> {
    let mut violations = Vec::new();
    let mut queue = expected.into_iter();
    let mut reads = tokio::task::JoinSet::new();
    loop {
        while reads.len() < PARALLEL_READS {
            let Some((card, want)) = queue.next() else {
                break;
            };
            let client = client.clone();
            reads.spawn(async move {
                let reply = client
                    .query_balance(QueryBalanceRequest {
                        card_no: card.clone(),
                        account_id: String::new(),
                    })
                    .await;
                match reply {
                    Ok(r) if cents(&r.balance) == Some(want) => None,
                    Ok(r) => Some(format!(
                        "invariant 1: card {card} holds {}, the book says {}",
                        r.balance,
                        want as f64 / 100.0
                    )),
                    Err(e) => Some(format!("balance of card {card}: {e}")),
                }
            });
        }
        match reads.join_next().await {
            Some(Ok(Some(v))) => violations.push(v),
            Some(Ok(None)) => {}
            Some(Err(e)) => violations.push(format!("a balance read failed: {e}")),
            None => return violations,
        }
    }
}

/// Asks every node for its audit until all have applied the same index, agree on the digest
/// and hold no unresolved bank operation, or `within` passes; the last answers.
async fn audit_nodes(
    template: &ClientConfig,
    addrs: &[String],
    within: Duration,
) -> Vec<NodeAudit> {
    let deadline = Instant::now() + within;
    loop {
        let mut nodes = Vec::new();
        for addr in addrs {
            let mut config = template.clone();
            config.nodes = vec![addr.clone()];
            config.deadline = Duration::from_secs(60);
            config.attempt_timeout = Duration::from_secs(60);
            let reply = match Client::new(config) {
                Ok(client) => client
                    .audit_balances(AuditRequest { with_digest: true })
                    .await
                    .ok(),
                Err(_) => None,
            };
            nodes.push(NodeAudit {
                addr: addr.clone(),
                reply,
            });
        }
        if judge_audits(&nodes).is_empty() || Instant::now() > deadline {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn judge_audits(nodes: &[NodeAudit]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut digests = BTreeSet::new();
    let mut applied = BTreeSet::new();
    for node in nodes {
        let Some(reply) = &node.reply else {
            violations.push(format!("node {} did not answer its audit", node.addr));
            continue;
        };
        if !reply.ok {
            violations.push(format!(
                "node {}'s balance audit found {} problems: {}",
                reply.node,
                reply.problem_count,
                reply.problems.join("; ")
            ));
        }
        if reply.unresolved_bank_ops > 0 {
            violations.push(format!(
                "invariant 5: node {} holds {} bank operations still pending or in doubt",
                reply.node, reply.unresolved_bank_ops
            ));
        }
        digests.insert(reply.digest.clone());
        applied.insert(reply.applied);
    }
    if applied.len() > 1 {
        violations.push(format!("invariant 7: the nodes applied {applied:?}"));
    } else if digests.len() > 1 {
        violations.push(format!(
            "invariant 7: {} different digests at one applied index",
            digests.len()
        ));
    }
    violations
}

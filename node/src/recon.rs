//! Reconciliation on the leader: the bank's statement of a day, compared with the journal
//! (`yinyi_actors::recon`), reversals for what the bank holds for operations declined or
//! reversed here, and the report stored through Raft.

use std::collections::{BTreeMap, BTreeSet};

use tonic::Status;
use yinyi_actors::BankLink;
use yinyi_actors::recon::{StatementEntry, compare, needs_reversal};
use yinyi_api::v1;
use yinyi_ledger::{CommandBody, DifferenceKind, Effect, Money, ReconciliationReport};

use crate::api::Gateway;
use crate::api::admin::business_day;
use crate::api::convert;

/// The system terminal reconciliation reports come from.
pub const RECON_TERMINAL: &str = "S-RECON";

pub async fn reconcile(gateway: &Gateway, date: &str) -> Result<ReconciliationReport, Status> {
    let (start, end) = business_day(date)?;
    let statement_day = yinyi_ledger::BusinessDay::of_ms(start).compact();
    let bank = gateway.bank().ok_or_else(|| {
        yinyi_api::error::status_with_reason(
            tonic::Code::Unimplemented,
            convert::reason::BANK_LINK_NOT_CONFIGURED,
            "reconciliation needs the bank link (start the nodes with --bank-addr)",
        )
    })?;
    let lines = bank
        .link()
        .statement(&statement_day)
        .await
        .map_err(|e| gateway.no_leader(&format!("the bank's statement is unavailable: {e}")))?;
    gateway.read_barrier().await?;
    let ops = gateway
        .backend()
        .all_bank_ops()
        .map_err(|e| convert::internal(format!("bank operations unreadable: {e}")))?;
    let started_on_day: BTreeSet<_> = ops
        .iter()
        .filter(|op| (start..end).contains(&op.started_at.0))
        .map(|op| op.bank_ref.clone())
        .collect();
    let ours: BTreeMap<_, _> = ops
        .into_iter()
        .map(|op| (op.bank_ref.clone(), op))
        .collect();
    let statement: Vec<StatementEntry> = lines
        .iter()
        .map(|l| StatementEntry {
            bank_ref: l.bank_ref.clone(),
            amount: l.amount,
        })
        .collect();
    let mut report = compare(date, &statement, &ours, &started_on_day);
    for difference in &mut report.differences {
        if !needs_reversal(difference) {
            continue;
        }
        // A hold listed as money is for a person to take up with the bank: a reversal would
        // free nothing the statement shows.
        let Some(op) = ours
            .get(&difference.bank_ref)
            .filter(|op| !op.purpose.is_hold())
        else {
            continue;
        };
        difference.resolution = if bank.link().reverse(op, true).await {
            "resolved: reversal acknowledged by the bank".into()
        } else {
            "open: reversal not acknowledged; reconciliation will send it again".into()
        };
    }
    record(
        gateway,
        "recon",
        date,
        CommandBody::RecordReconciliation {
            report: report.clone(),
        },
    )
    .await?;
    // What was stored: differences people resolved by adjustment (调账) keep that resolution.
    let key = yinyi_ledger::Report::Reconciliation(report).key();
    let report = match stored_report(gateway, &key)? {
        Some(yinyi_ledger::Report::Reconciliation(stored)) => stored,
        other => {
            return Err(convert::internal(format!(
                "the reconciliation report just stored is unreadable: {other:?}"
            )));
        }
    };
    metrics::counter!("recon_runs_total").increment(1);
    metrics::gauge!("recon_open_differences").set(
        report
            .differences
            .iter()
            .filter(|d| !d.resolution.starts_with("resolved"))
            .count() as f64,
    );
    tracing::info!(
        date,
        differences = report.differences.len(),
        matched = report.matched,
        "reconciled"
    );
    Ok(report)
}

/// The most days one settlement call covers.
pub const MAX_SETTLEMENT_DAYS: usize = 31;

/// Settlement (清分结算) of the bank link for the days `from` to `to` (`to` empty: `from`
/// alone): each day's amount due from the link's statements (the day before's for the reserve
/// it releases) under the configured terms, and the link's settlement advice matched to it.
pub async fn settlement(
    gateway: &Gateway,
    from: &str,
    to: &str,
) -> Result<v1::SettlementReply, Status> {
    use yinyi_ledger::BusinessDay;
    use yinyi_ledger::settlement::{compare, settle};
    let day = |text: &str| {
        BusinessDay::parse(text).ok_or_else(|| {
            convert::invalid(
                convert::reason::INVALID_ID,
                format!("date {text:?} is not a YYYY-MM-DD date"),
            )
        })
    };
    let first = day(from)?;
    let last = if to.is_empty() { first } else { day(to)? };
    if first.year < 2000 || last.year > 9999 {
        return Err(convert::invalid(
            convert::reason::INVALID_ID,
            format!("from {first}: settlement covers days from the year 2000 on"),
        ));
    }
    let mut days = vec![last];
    while *days.last().expect("one day at least") > first {
        if days.len() == MAX_SETTLEMENT_DAYS {
            return Err(convert::invalid(
                convert::reason::INVALID_REQUEST,
                format!(
                    "from {first} to {last}: at most {MAX_SETTLEMENT_DAYS} days, from before to"
                ),
            ));
        }
        days.push(days.last().expect("one day at least").previous());
    }
    if first > last {
        return Err(convert::invalid(
            convert::reason::INVALID_REQUEST,
            format!("from {first} is after to {last}"),
        ));
    }
    days.reverse();
    let bank = gateway.bank().ok_or_else(|| {
        yinyi_api::error::status_with_reason(
            tonic::Code::Unimplemented,
            convert::reason::BANK_LINK_NOT_CONFIGURED,
            "settlement needs the bank link (start the nodes with --bank-addr)",
        )
    })?;
    let link = bank.link();
    let terms = link.terms();
    let unavailable = |what: &str, e: String| {
        gateway.no_leader(&format!("the bank's {what} is unavailable: {e}"))
    };
    let lines_of = |day: BusinessDay| async move {
        link.statement(&day.compact())
            .await
            .map(|lines| yinyi_bank::settlement_lines(&lines))
            .map_err(|e| unavailable("statement", e))
    };
    let mut released = settle(&lines_of(first.previous()).await?, terms, Money::ZERO).reserve_kept;
    let mut out = Vec::with_capacity(days.len());
    for day in days {
        let expected = settle(&lines_of(day).await?, terms, released);
        released = expected.reserve_kept;
        let advice = link
            .settlement_advice(&day.compact())
            .await
            .map_err(|e| unavailable("settlement advice", e))?;
        let (status, difference) = compare(expected.due, advice.as_ref().map(|(paid, _)| *paid));
        out.push(v1::SettlementDay {
            date: day.to_string(),
            lines: expected.lines,
            collected: convert::money(expected.collected),
            paid_out: convert::money(expected.paid_out),
            fees: convert::money(expected.fees),
            reserve_kept: convert::money(expected.reserve_kept),
            reserve_released: convert::money(expected.reserve_released),
            due: convert::money(expected.due),
            received: advice
                .as_ref()
                .map_or(String::new(), |(paid, _)| convert::money(*paid)),
            reference: advice.map(|(_, reference)| reference).unwrap_or_default(),
            status: status.as_str().into(),
            difference: convert::money(difference),
        });
    }
    Ok(v1::SettlementReply {
        fee_rate: terms.fee_rate.to_string(),
        reserve_rate: terms.reserve_rate.to_string(),
        days: out,
    })
}

pub fn to_proto(report: &ReconciliationReport) -> v1::ReconciliationReport {
    let money = |m: Option<yinyi_ledger::Money>| m.map_or(String::new(), convert::money);
    v1::ReconciliationReport {
        date: report.date.clone(),
        bank_lines: report.bank_lines,
        matched: report.matched,
        matched_total: convert::money(report.matched_total),
        differences: report
            .differences
            .iter()
            .map(|d| v1::ReconDifference {
                bank_ref: d.bank_ref.to_string(),
                kind: match d.kind {
                    DifferenceKind::BankOnly => "BANK_ONLY",
                    DifferenceKind::JournalOnly => "JOURNAL_ONLY",
                    DifferenceKind::AmountDiffers => "AMOUNT_DIFFERS",
                }
                .into(),
                bank_amount: money(d.bank_amount),
                journal_amount: money(d.journal_amount),
                journal_state: d
                    .journal_state
                    .map_or(String::new(), |s| convert::screaming(&s)),
                resolution: d.resolution.clone(),
            })
            .collect(),
    }
}

/// Milliseconds from `now_ms` to the next `hh:mm` in China Standard Time (never zero).
pub fn until_next(now_ms: i64, hour: u32, minute: u32) -> i64 {
    const DAY: i64 = 86_400_000;
    const CST: i64 = 8 * 3_600_000;
    let local = now_ms + CST;
    let target = i64::from(hour) * 3_600_000 + i64::from(minute) * 60_000;
    let into_day = local.rem_euclid(DAY);
    let wait = (target - into_day).rem_euclid(DAY);
    if wait == 0 { DAY } else { wait }
}

/// The business day before the one `now_ms` falls in, as `YYYY-MM-DD`.
pub fn yesterday(now_ms: i64) -> String {
    yinyi_ledger::BusinessDay::of_ms(now_ms - yinyi_ledger::calendar::DAY_MS).to_string()
}

/// Parses `HH:MM`.
pub fn parse_time_of_day(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{text:?} is not a time of day HH:MM");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

/// Reconciles the previous business day every day at `at` (CST) while this node leads.
pub async fn run_daily(
    gateway: std::sync::Arc<Gateway>,
    at: (u32, u32),
    leading: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let now = now_ms();
        let wait = until_next(now, at.0, at.1);
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
        if !*leading.borrow() {
            continue;
        }
        let date = yesterday(now_ms());
        match reconcile(&gateway, &date).await {
            Ok(report) => tracing::info!(
                date,
                differences = report.differences.len(),
                "daily reconciliation done"
            ),
            Err(e) => tracing::error!(
                date,
                "daily reconciliation failed: {}; run `yinyi ctl recon --date {date}`",
                e.message()
            ),
        }
    }
}

/// Stores a reconciliation report through Raft from the cluster's own terminal.
async fn record(
    gateway: &Gateway,
    kind: &str,
    date: &str,
    body: CommandBody,
) -> Result<(), Status> {
    match gateway
        .submit_system(&format!("{kind}:{date}:{}", now_ms()), RECON_TERMINAL, body)
        .await?
    {
        Effect::ReconciliationRecorded { .. } => Ok(()),
        other => Err(crate::api::unexpected(&other)),
    }
}

/// A report as this node has applied it, by its key.
pub fn stored_report(gateway: &Gateway, key: &str) -> Result<Option<yinyi_ledger::Report>, Status> {
    gateway
        .backend()
        .store()
        .get::<yinyi_ledger::Report>(yinyi_storage::keys::CF_REPORTS, key.as_bytes())
        .map_err(|e| convert::internal(format!("report {key} is unreadable: {e}")))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// HIS's reconciliation of a day: its charged bills against the bills paid that day in the
/// ledger (one day's index, not every bill), stored through Raft and returned.
pub async fn reconcile_his(
    gateway: &Gateway,
    date: &str,
    lines: &[yinyi_actors::recon::HisLine],
) -> Result<yinyi_ledger::HisReconciliationReport, Status> {
    let (start, _) = business_day(date)?;
    gateway.read_barrier().await?;
    let day = yinyi_ledger::BusinessDay::of_ms(start).compact();
    let store = gateway.backend().store();
    let paid = store
        .paid_on_day(&day)
        .map_err(|e| convert::internal(format!("the day's payments are unreadable: {e}")))?;
    let report = yinyi_actors::recon::compare_his(date, lines, &paid, |bill| {
        store.bill(bill).ok().flatten()
    });
    record(
        gateway,
        "his-recon",
        date,
        CommandBody::RecordHisReconciliation {
            report: report.clone(),
        },
    )
    .await?;
    metrics::gauge!("his_recon_open_differences").set(
        report
            .differences
            .iter()
            .filter(|d| d.resolution.starts_with("open"))
            .count() as f64,
    );
    tracing::info!(
        date,
        differences = report.differences.len(),
        matched = report.matched,
        "reconciled with HIS"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_run_waits_for_the_next_time_of_day_in_beijing() {
        // 2026-11-24T00:00+08:00.
        let midnight = 1_795_449_600_000;
        assert_eq!(until_next(midnight, 2, 0), 2 * 3_600_000);
        assert_eq!(until_next(midnight + 3 * 3_600_000, 2, 0), 23 * 3_600_000);
        assert_eq!(until_next(midnight + 2 * 3_600_000, 2, 0), 86_400_000);
        assert_eq!(yesterday(midnight + 3_600_000), "2026-11-23");
        assert_eq!(parse_time_of_day("02:30"), Ok((2, 30)));
        for bad in ["24:00", "2", "aa:bb", "01:60"] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
    }
}

//! What a node reports besides its answers: Raft's state as Prometheus gauges, RocksDB's sizes,
//! and the scheduled balance audit (稽核), whose mismatch raises a metric and an error log at
//! once.

use std::time::Duration;

use yinyi_consensus::Consensus;

/// Publishes Raft's view every time it changes (and at least every second): term, leader,
/// role, log, commit and apply indexes, the lag between them, and how long since a quorum
/// last answered this node as leader.
pub async fn raft_gauges(consensus: Consensus) {
    let mut watch = consensus.raft().metrics();
    loop {
        {
            let m = watch.borrow_and_update();
            let leading = m.current_leader == Some(m.id);
            metrics::gauge!("raft_term").set(m.current_term as f64);
            metrics::gauge!("raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
            metrics::gauge!("raft_is_leader").set(if leading { 1.0 } else { 0.0 });
            let last_log = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.map_or(0, |l| l.index);
            metrics::gauge!("raft_last_log_index").set(last_log as f64);
            metrics::gauge!("raft_applied_index").set(applied as f64);
            metrics::gauge!("raft_apply_lag").set(last_log.saturating_sub(applied) as f64);
            if let Some(ms) = m.millis_since_quorum_ack {
                metrics::gauge!("raft_millis_since_quorum_ack").set(ms as f64);
            }
            if let Some(replication) = &m.replication {
                for (node, matched) in replication {
                    let behind = last_log.saturating_sub(matched.map_or(0, |l| l.index));
                    metrics::gauge!("raft_replication_lag", "node" => node.to_string())
                        .set(behind as f64);
                }
            }
        }
        let changed = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
        if matches!(changed, Ok(Err(_))) {
            return;
        }
    }
}

/// RocksDB's sizes by column family, every 15 s.
pub async fn storage_gauges(consensus: Consensus) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let store = consensus.store().clone();
        let Ok(sizes) = tokio::task::spawn_blocking(move || store.sizes()).await else {
            continue;
        };
        for (family, sst, memtables) in sizes {
            metrics::gauge!("rocksdb_sst_bytes", "cf" => family).set(sst as f64);
            metrics::gauge!("rocksdb_memtable_bytes", "cf" => family).set(memtables as f64);
        }
    }
}

/// The balance audit every `every`, on this node's own state (every node audits itself, so a
/// replica that diverged is caught too). A problem sets `audit_problems` and logs an error at
/// once; `audit_last_run_timestamp_seconds` shows the job is alive.
pub async fn scheduled_audit(consensus: Consensus, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let store = consensus.store().clone();
        match tokio::task::spawn_blocking(move || store.audit()).await {
            Ok(Ok(report)) => {
                metrics::gauge!("audit_problems").set(report.problem_count as f64);
                metrics::gauge!("audit_accounts").set(report.accounts as f64);
                metrics::gauge!("audit_last_run_timestamp_seconds").set(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
                if report.ok() {
                    tracing::info!(
                        accounts = report.accounts,
                        entries = report.entries,
                        unresolved_bank_ops = report.unresolved_bank_ops,
                        "balance audit passed"
                    );
                } else {
                    metrics::counter!("audit_mismatches_total").increment(1);
                    tracing::error!(
                        problems = report.problem_count,
                        first = report.problems.first().map(String::as_str).unwrap_or(""),
                        "balance audit found problems"
                    );
                }
            }
            Ok(Err(e)) => tracing::error!("balance audit could not read the state: {e}"),
            Err(e) => tracing::error!("balance audit task failed: {e}"),
        }
    }
}

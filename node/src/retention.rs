//! Request retention (issue 17): while this node leads, it lets go of request records past
//! their retention through the log (`PruneRequests`, so every node forgets the same records
//! and digests stay equal), a bounded number per command, again at once while a backlog
//! remains. Requests in the audit trail and the journal are kept for ever.

use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;
use yinyi_ledger::{CommandBody, Effect, MAX_PRUNED_PER_COMMAND, Timestamp};

use crate::api::Gateway;
use crate::api::convert;

/// The system terminal prunes come from.
pub const PRUNE_TERMINAL: &str = "S-PRUNE";

/// Tests only: a retention in milliseconds instead of the configured days (and a prune every
/// half of it), so a test sees records let go in seconds.
pub const RETENTION_MS_ENV: &str = "YINYI_FAULT_REQUEST_RETENTION_MS";

/// The retention and how often to prune, from the configured days (or the test switch).
pub fn schedule(retention_days: u64) -> (Duration, Duration) {
    if let Some(ms) = std::env::var(RETENTION_MS_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tracing::warn!(
            ms,
            "request retention shortened by {RETENTION_MS_ENV}: tests only"
        );
        let retention = Duration::from_millis(ms.max(1));
        return (retention, (retention / 2).max(Duration::from_millis(100)));
    }
    (
        Duration::from_secs(retention_days.max(1) * 86_400),
        Duration::from_secs(60),
    )
}

/// Prunes on a timer while `leading` says this node leads.
pub async fn run(
    gateway: std::sync::Arc<Gateway>,
    retention: Duration,
    every: Duration,
    mut leading: watch::Receiver<bool>,
) {
    loop {
        if *leading.borrow_and_update() {
            loop {
                match prune_once(&gateway, retention).await {
                    Ok(n) if n >= u64::from(MAX_PRUNED_PER_COMMAND) => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!("request prune failed (tried again later): {e}");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One `PruneRequests` of up to `MAX_PRUNED_PER_COMMAND` records: how many it let go.
async fn prune_once(gateway: &Gateway, retention: Duration) -> Result<u64, Status> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let before = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    // Nothing due: no command (a prune of nothing would only add its own record).
    let oldest = gateway
        .backend()
        .store()
        .oldest_expiring_request()
        .map_err(|e| convert::internal(format!("request expiry unreadable: {e}")))?;
    if oldest.is_none_or(|oldest| oldest >= before) {
        return Ok(0);
    }
    match gateway
        .submit_system(
            &format!("prune:{now}"),
            PRUNE_TERMINAL,
            CommandBody::PruneRequests {
                before: Timestamp(before),
                limit: MAX_PRUNED_PER_COMMAND,
            },
        )
        .await?
    {
        Effect::RequestsPruned { requests } => {
            metrics::counter!("requests_pruned_total").increment(requests);
            if requests > 0 {
                tracing::info!(requests, "request records past their retention let go");
            }
            Ok(requests)
        }
        other => Err(crate::api::unexpected(&other)),
    }
}

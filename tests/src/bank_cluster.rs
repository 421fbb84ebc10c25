//! A cluster with the bank simulator in this process, for API tests of flows through the bank:
//! three real `yinyi` nodes on loopback with `--bank-addr`, a client, and the terminals the
//! test names registered by an admin console.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::net::TcpListener;
use yinyi_api::Client;
use yinyi_api::v1::{RegisterTerminalRequest, ShiftRequest};
use yinyi_bank::{BankSim, Faults};
use yinyi_ledger::Money;
use yinyi_node::local::LocalCluster;

use crate::harness::yinyi_exe;

/// The reason code of a refusal; any other result fails the test.
pub fn reason<R: std::fmt::Debug>(result: Result<R, yinyi_api::ApiError>) -> String {
    match result {
        Err(yinyi_api::ApiError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Today's business day (`YYYY-MM-DD`, China Standard Time).
pub fn today() -> String {
    yinyi_ledger::BusinessDay::of_ms(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis() as i64,
    )
    .to_string()
}

pub struct BankCluster {
    pub sim: Arc<BankSim>,
    pub cluster: LocalCluster,
    pub client: Client,
}

impl BankCluster {
    /// The bank simulator (every card holding `card_balance`) and three nodes under `dir`,
    /// a leader elected, and `terminals` registered by admin console `A-ADMIN`. Calls wait up
    /// to `deadline`.
    pub async fn start(
        dir: &std::path::Path,
        card_balance: Money,
        terminals: &[&str],
        deadline: Duration,
    ) -> Result<BankCluster> {
        Self::start_with(dir, card_balance, terminals, deadline, &[]).await
    }

    /// As [`BankCluster::start`], every node started with `node_args` as well.
    pub async fn start_with(
        dir: &std::path::Path,
        card_balance: Money,
        terminals: &[&str],
        deadline: Duration,
        node_args: &[&str],
    ) -> Result<BankCluster> {
        let sim = Arc::new(BankSim::open(
            &dir.join("bank.journal"),
            card_balance,
            Faults::default(),
        )?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let bank_addr = listener.local_addr()?.to_string();
        tokio::spawn(sim.clone().serve(listener));
        let mut args = vec!["--bank-addr".to_string(), bank_addr];
        args.extend(node_args.iter().map(|a| a.to_string()));
        let cluster = LocalCluster::start(&yinyi_exe()?, dir, 3, args)?;
        cluster.wait_for_leader(deadline).await?;
        let mut config = cluster.api_config();
        config.deadline = deadline;
        let client = Client::new(config)?;
        for (n, terminal) in terminals.iter().enumerate() {
            client
                .register_terminal(RegisterTerminalRequest {
                    request_id: format!("A-ADMIN:desk-{n}"),
                    terminal_id: "A-ADMIN".into(),
                    operator_id: "SEC".into(),
                    new_terminal_id: terminal.to_string(),
                })
                .await?;
        }
        Ok(BankCluster {
            sim,
            cluster,
            client,
        })
    }

    /// Opens a shift at `window` for `operator` (request id `request_id`).
    pub async fn open_shift(&self, request_id: String, window: &str, operator: &str) -> Result<()> {
        self.client
            .open_shift(ShiftRequest {
                request_id,
                terminal_id: window.into(),
                operator_id: operator.into(),
            })
            .await?;
        Ok(())
    }
}

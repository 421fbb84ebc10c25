//! `yinyi bench-api`: requests per second and latency through the public API for a mix of
//! PayBill and DepositCash from N concurrent clients, each a kiosk serving its own patients.
//! Every request goes client library → any node (forwarded to the leader when needed) → the
//! account's actor → group commit → a quorum's fsync → apply, and back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use yinyi_api::v1::*;
use yinyi_api::{Client, ClientConfig};

use crate::local::LocalCluster;

pub struct ApiBenchOptions {
    pub clients: usize,
    pub duration: Duration,
    pub targets: Option<Vec<String>>,
    /// Patients per client (each client cycles over its own).
    pub patients_per_client: u64,
    /// Before the timed run, deposit once to every patient (one live actor each) and report
    /// the leader's live actors and memory.
    pub touch_all: bool,
    /// Extra flags for the local cluster's nodes.
    pub node_args: Vec<String>,
    /// How to reach `targets`: TLS and a credential (the local cluster brings its own).
    pub access: ClientConfig,
}

#[derive(Default)]
struct Kinds {
    deposit: Option<Histogram<u64>>,
    pay: Option<Histogram<u64>>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn row(name: &str, h: &Histogram<u64>, seconds: f64) {
    println!(
        "{:<12} {:>9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        name,
        h.len(),
        h.len() as f64 / seconds,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

pub async fn run(options: ApiBenchOptions) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("yinyi-bench-api-")
        .tempdir()?;
    let mut cluster = None;
    let config = match &options.targets {
        Some(t) => ClientConfig {
            nodes: t.clone(),
            ..options.access.clone()
        },
        None => {
            let c = LocalCluster::start(
                &std::env::current_exe()?,
                dir.path(),
                3,
                options.node_args.clone(),
            )?;
            c.wait_for_leader(Duration::from_secs(20)).await?;
            let config = c.api_config();
            cluster = Some(c);
            config
        }
    };
    let client = Client::new(config.clone())?;
    let run = format!("B{}", std::process::id());
    // Terminals: one kiosk per client and HIS.
    let mut serial = 0u64;
    let mut next = || {
        serial += 1;
        format!("{run}:setup:{serial}")
    };
    let his = format!("H-{run}");
    let kiosk = |c: usize| format!("K-{run}X{c}");
    for terminal in std::iter::once(his.clone()).chain((0..options.clients).map(kiosk)) {
        client
            .register_terminal(RegisterTerminalRequest {
                request_id: next(),
                terminal_id: "A-ADMIN".into(),
                operator_id: "admin".into(),
                new_terminal_id: terminal,
            })
            .await
            .context("register terminals")?;
    }
    println!(
        "preparing {} patients for {} clients …",
        options.clients as u64 * options.patients_per_client,
        options.clients
    );
    let mut setup = Vec::new();
    for c in 0..options.clients {
        let client = client.clone();
        let run = run.clone();
        let kiosk = kiosk(c);
        let patients = options.patients_per_client;
        setup.push(tokio::spawn(async move {
            for p in 0..patients {
                client
                    .issue_card(IssueCardRequest {
                        request_id: format!("{run}:issue:{c}:{p}"),
                        terminal_id: kiosk.clone(),
                        operator_id: String::new(),
                        card_no: format!("{run}C{c}P{p}"),
                        card_kind: CardKind::Hospital as i32,
                        holder_name: format!("patient {c}/{p}"),
                        person_key: format!("{:032x}{:032x}", c, p + (1 << 40)),
                        id_masked: "110***********0000".into(),
                        phone: String::new(),
                        first_deposit: "500".into(),
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in setup {
        task.await??;
    }

    if options.touch_all {
        touch_all(&client, &run, &options, cluster.as_ref()).await?;
    }

    let processes = LocalCluster::measured(cluster.as_ref(), "bench-api (clients)").await;
    let meter = yinyi_measure::CpuMeter::start(processes);
    let kinds = Arc::new(Mutex::new(Kinds::default()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..options.clients {
        let client = client.clone();
        let run = run.clone();
        let kiosk = kiosk(c);
        let his = his.clone();
        let kinds = kinds.clone();
        let duration = options.duration;
        let patients = options.patients_per_client;
        tasks.push(tokio::spawn(async move {
            let (mut deposits, mut pays) = (histogram(), histogram());
            let mut i = 0u64;
            while start.elapsed() < duration {
                let p = i % patients;
                let (deposit, pay) =
                    kiosk_round(&client, &run, c, i, &kiosk, &his, format!("{run}C{c}P{p}"))
                        .await?;
                deposits.saturating_record(deposit.as_micros() as u64);
                pays.saturating_record(pay.as_micros() as u64);
                i += 1;
            }
            let mut k = kinds.lock().await;
            k.deposit.get_or_insert_with(histogram).add(&deposits)?;
            k.pay.get_or_insert_with(histogram).add(&pays)?;
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    let k = kinds.lock().await;
    // Three writes a round: the deposit, HIS's bill and the payment.
    let writes = k.pay.as_ref().map_or(0, |h| h.len()) * 3;
    let cpu = meter.finish(writes);
    let (deposit, pay) = (
        k.deposit.clone().unwrap_or_else(histogram),
        k.pay.clone().unwrap_or_else(histogram),
    );
    let mut both = deposit.clone();
    both.add(&pay)?;
    println!(
        "{} clients, {:.1} s (each round also posts one bill through HisService, not counted)",
        options.clients, seconds
    );
    println!(
        "{:<12} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "kind", "requests", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    row("DepositCash", &deposit, seconds);
    row("PayBill", &pay, seconds);
    row("both", &both, seconds);
    println!("client retries: {}", client.retries());
    println!("\n{writes} writes: {}", cpu.table());
    Ok(())
}

/// One round at kiosk `kiosk` (client `c`, round `i`): a cash deposit of 20.00, a bill of
/// 18.50 posted by HIS, the bill paid from the account. Returns the deposit's and the payment's
/// latency (the posting is not timed).
pub(crate) async fn kiosk_round(
    client: &Client,
    run: &str,
    c: usize,
    i: u64,
    kiosk: &str,
    his: &str,
    card_no: String,
) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    client
        .deposit_cash(DepositCashRequest {
            request_id: format!("{run}:dep:{c}:{i}"),
            terminal_id: kiosk.to_string(),
            operator_id: String::new(),
            card_no: card_no.clone(),
            amount: "20".into(),
        })
        .await?;
    let deposit = t.elapsed();
    let bill_id = format!("{run}B{c}x{i}");
    client
        .post_bill(PostBillRequest {
            request_id: format!("{run}:post:{c}:{i}"),
            terminal_id: his.to_string(),
            bill_id: bill_id.clone(),
            card_no: card_no.clone(),
            kind: BillKind::Outpatient as i32,
            amount: "18.50".into(),
            insurance: None,
        })
        .await?;
    let t = Instant::now();
    client
        .pay_bill(PayBillRequest {
            request_id: format!("{run}:pay:{c}:{i}"),
            terminal_id: kiosk.to_string(),
            operator_id: String::new(),
            bill_id,
            card_no,
            ..Default::default()
        })
        .await?;
    Ok((deposit, t.elapsed()))
}

/// The resident memory of process `pid` in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    yinyi_measure::memory_mib(pid, "VmRSS")
}

/// One deposit to every patient, so each account has a live actor on the leader; then the
/// leader's live actors and resident memory, before and after.
async fn touch_all(
    client: &Client,
    run: &str,
    options: &ApiBenchOptions,
    cluster: Option<&LocalCluster>,
) -> Result<()> {
    let leader_rss = || async {
        let status = client
            .cluster_status(ClusterStatusRequest { with_digest: false })
            .await
            .ok()?;
        let leader = status.leader;
        let rss = cluster
            .and_then(|c| c.nodes.get(&leader))
            .and_then(|n| n.pid())
            .and_then(rss_mib);
        Some((leader, rss))
    };
    let before = leader_rss().await;
    let mut tasks = Vec::new();
    for c in 0..options.clients {
        let client = client.clone();
        let run = run.to_string();
        let kiosk = format!("K-{run}X{c}");
        let patients = options.patients_per_client;
        tasks.push(tokio::spawn(async move {
            for p in 0..patients {
                client
                    .deposit_cash(DepositCashRequest {
                        request_id: format!("{run}:touch:{c}:{p}"),
                        terminal_id: kiosk.clone(),
                        operator_id: String::new(),
                        card_no: format!("{run}C{c}P{p}"),
                        amount: "10".into(),
                    })
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let after = leader_rss().await;
    let status = client
        .cluster_status(ClusterStatusRequest { with_digest: false })
        .await?;
    // Ask the leader itself for its live actors.
    let leader_addr = status
        .members
        .iter()
        .find(|m| m.id == status.leader)
        .map(|m| m.addr.clone())
        .context("no leader")?;
    let leader = Client::new(ClientConfig {
        nodes: vec![leader_addr],
        ..client.config().clone()
    })?
    .cluster_status(ClusterStatusRequest { with_digest: false })
    .await?;
    let live = leader.node.map_or(0, |n| n.live_account_actors);
    let show = |r: Option<(u64, Option<f64>)>| match r {
        Some((id, Some(mib))) => format!("node {id}: {mib:.0} MiB"),
        Some((id, None)) => format!("node {id}: memory not readable"),
        None => "unknown".into(),
    };
    println!(
        "touched every patient: {live} live account actors on the leader; leader resident memory before {}, after {}",
        show(before),
        show(after)
    );
    Ok(())
}

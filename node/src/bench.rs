//! `yinyi bench`: proposals per second and commit latency for N concurrent proposers against a
//! local 3-node cluster (or `--targets`), then the time from killing the leader to the next
//! committed write. Each proposal is one DepositCash of ¥1, end to end through the internal
//! gRPC service, so the figures include the network hop, group commit, fsync and apply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;

use crate::client::ClusterClient;
use crate::local::LocalCluster;
use crate::scenario::Scenario;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct BenchOptions {
    pub proposers: Vec<usize>,
    pub duration: Duration,
    pub targets: Option<Vec<String>>,
    pub skip_failover: bool,
    /// How to reach `targets` (TLS with an operator certificate, or plaintext).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
}

pub struct LevelResult {
    pub proposers: usize,
    pub ops: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(options: BenchOptions) -> Result<()> {
    let max = *options.proposers.iter().max().unwrap_or(&1) as u64;
    let dir = tempfile::Builder::new().prefix("yinyi-bench-").tempdir()?;
    let mut cluster = None;
    let (addrs, tls) = match &options.targets {
        Some(t) => (t.clone(), options.tls.clone()),
        None => {
            let c = LocalCluster::start(&std::env::current_exe()?, dir.path(), 3, vec![])?;
            c.wait_for_leader(Duration::from_secs(20)).await?;
            let addrs = c.addrs();
            // Bare proposals go to the internal service, which takes them from member nodes.
            let tls = Some(c.node_tls(1));
            cluster = Some(c);
            (addrs, tls)
        }
    };
    let prefix = format!("bench{}", std::process::id());
    let mut setup = Scenario::new(&format!("{prefix}-setup"));
    let mut client = ClusterClient::new(addrs.clone(), tls.clone());
    client.propose(setup.setup_hospital(), CALL_TIMEOUT).await?;
    let cards: Vec<_> = (1..=max).map(|n| setup.issue_card(n, None)).collect();
    for chunk in cards.chunks(1024) {
        client.propose(chunk.to_vec(), CALL_TIMEOUT).await?;
    }
    println!(
        "{:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>11} {:>10}",
        "proposers", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "cpu µs/op", "ctxsw/op"
    );
    let mut last_cpu = None;
    for &n in &options.proposers {
        let processes = LocalCluster::measured(cluster.as_ref(), "bench (client)").await;
        let meter = yinyi_measure::CpuMeter::start(processes);
        let r = level(&addrs, tls.clone(), &prefix, n, options.duration).await?;
        let cpu = meter.finish(r.ops);
        println!(
            "{:>10} {:>10} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>11.0} {:>10.1}",
            r.proposers,
            r.ops,
            r.per_second,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            cpu.us_per_transaction(),
            cpu.context_switches as f64 / r.ops.max(1) as f64
        );
        last_cpu = Some((n, cpu));
    }
    if let Some((n, cpu)) = last_cpu {
        println!("\nat {n} proposers: {}", cpu.table());
    }
    if let Some(cluster) = cluster.as_mut()
        && !options.skip_failover
    {
        let ms = failover(cluster, &prefix).await?;
        println!("leader killed → next committed write: {ms:.0} ms");
    }
    Ok(())
}

async fn level(
    addrs: &[String],
    tls: Option<tonic::transport::ClientTlsConfig>,
    prefix: &str,
    proposers: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let addrs = addrs.to_vec();
        let tls = tls.clone();
        let histogram = histogram.clone();
        let mut s = Scenario::new(&format!("{prefix}-{proposers}-{p}"));
        tasks.push(tokio::spawn(async move {
            let mut client = ClusterClient::new(addrs, tls);
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let card = p as u64 + 1;
            while start.elapsed() < duration {
                let t = Instant::now();
                client
                    .propose(vec![s.deposit(card, 1)], CALL_TIMEOUT)
                    .await?;
                local.saturating_record(t.elapsed().as_micros() as u64);
            }
            histogram.lock().await.add(&local).expect("same bounds");
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let h = histogram.lock().await;
    Ok(LevelResult {
        proposers,
        ops: h.len(),
        per_second: h.len() as f64 / elapsed,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: h.max() as f64 / 1000.0,
    })
}

/// Kills the leader and writes at once; returns the time from the kill to that write's commit.
async fn failover(cluster: &mut LocalCluster, prefix: &str) -> Result<f64> {
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    let mut s = Scenario::new(&format!("{prefix}-failover"));
    let mut client = cluster.client();
    client.propose(vec![s.deposit(1, 1)], CALL_TIMEOUT).await?;
    let killed_at = Instant::now();
    cluster.kill(leader)?;
    let mut client = cluster.client();
    let outcome = client.propose(vec![s.deposit(1, 1)], CALL_TIMEOUT).await?;
    if !outcome[0].is_done() {
        bail!("write after failover refused: {:?}", outcome[0]);
    }
    let ms = killed_at.elapsed().as_secs_f64() * 1000.0;
    cluster.spawn(leader)?;
    cluster.wait_converged(Duration::from_secs(60)).await?;
    Ok(ms)
}

//! `yinyi history`: a long history through the real write path, and what a cluster holding it
//! does on the days that matter (issue 17's acceptance). On a local cluster of real processes:
//!
//! 1. builds `accounts` patients (a card issued with a first cash deposit) and visits until the
//!    journal holds `entries` entries (each visit: HIS posts two bills, the patient deposits
//!    what they cost and pays both), proposed in batches through the internal service: Raft,
//!    a quorum's fsync, `ledger::apply`, RocksDB — the same path as every API call past the
//!    account actor;
//! 2. builds a snapshot on the leader (its log is purged behind it);
//! 3. runs a load of `clients` kiosks through the public API (deposit, bill, payment on random
//!    patients of the history) and, under it: adds a fourth node with `yinyi ctl add-node` (it
//!    catches up by snapshot), stops a follower for `down` and starts it again;
//! 4. without load: two leader changes, `yinyi ctl backup` on a follower, `yinyi ctl restore`
//!    into a fresh 3-node cluster, which must show the same digest and take a write.
//!
//! Prints state size, snapshot build / transfer / install times, the new node's peak memory,
//! catch-up times and the load's p99 in each phase; `--json FILE` keeps them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use yinyi_api::Client;
use yinyi_api::v1::*;
use yinyi_ledger::Outcome;

use crate::local::LocalCluster;
use crate::scenario::{self, Scenario};
use yinyi_measure::{dir_bytes, memory_mib};

/// Commands per internal proposal call while building the history.
const PER_CALL: u64 = 1_000;
/// A generous bound for any one step on a state of millions of accounts.
const STEP: Duration = Duration::from_secs(1_800);

#[derive(clap::Args)]
pub struct HistoryOptions {
    #[arg(long, default_value_t = 2_000_000)]
    pub accounts: u64,
    /// Journal entries in all (each account's first deposit is one).
    #[arg(long, default_value_t = 9_000_000)]
    pub entries: u64,
    /// Concurrent proposal calls while building.
    #[arg(long, default_value_t = 4)]
    pub proposers: usize,
    /// Kiosks of the load run during the node operations.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Load alone before and after the node is added (the baseline p99).
    #[arg(long, default_value = "30s", value_parser = yinyi_api::parse_duration)]
    pub steady: Duration,
    /// How long a follower stays down under load.
    #[arg(long, default_value = "10m", value_parser = yinyi_api::parse_duration)]
    pub down: Duration,
    /// Where the clusters live (a temporary directory, removed at the end, when absent).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The load's phases, in order.
const PHASES: [&str; 5] = [
    "steady",
    "adding node 4 (snapshot install)",
    "steady, 4 nodes",
    "a follower down",
    "the follower catching up",
];

/// Kiosks through the public API on random patients of the history, each latency recorded in
/// the phase it ended in.
struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    latencies: Vec<std::sync::Mutex<Histogram<u64>>>,
    errors: Vec<AtomicU64>,
    started: std::sync::Mutex<Vec<Instant>>,
}

impl Load {
    fn new() -> Load {
        Load {
            phase: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            latencies: PHASES
                .iter()
                .map(|_| std::sync::Mutex::new(crate::bench_api::histogram()))
                .collect(),
            errors: PHASES.iter().map(|_| AtomicU64::new(0)).collect(),
            started: std::sync::Mutex::new(vec![Instant::now()]),
        }
    }

    fn enter(&self, phase: usize) {
        self.started
            .lock()
            .expect("phase clock")
            .push(Instant::now());
        self.phase.store(phase, Ordering::SeqCst);
    }

    fn record(&self, latency: Duration) {
        let phase = self.phase.load(Ordering::Relaxed);
        self.latencies[phase]
            .lock()
            .expect("latency lock")
            .saturating_record(latency.as_micros() as u64);
    }
}

#[derive(serde::Serialize)]
struct PhaseFigures {
    phase: &'static str,
    seconds: f64,
    requests: u64,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

#[derive(serde::Serialize, Default)]
struct Figures {
    accounts: u64,
    journal_entries: u64,
    commands: u64,
    refused: u64,
    build_seconds: f64,
    state_bytes_per_node: u64,
    snapshot_bytes: u64,
    snapshot_build_seconds: f64,
    add_node_seconds: f64,
    snapshot_install_seconds: f64,
    new_node_peak_rss_mib: f64,
    new_node_state_bytes: u64,
    leader_peak_rss_mib: f64,
    follower_down_seconds: f64,
    follower_catch_up_seconds: f64,
    follower_caught_up_by_snapshot: bool,
    /// Snapshots the restarted follower installed to catch up (more than one: the leader
    /// snapshotted and purged again while it installed).
    follower_snapshot_installs: usize,
    /// Elections while the load ran (the leader's term at the end minus at the start; every
    /// phase under load keeps its leader).
    elections_under_load: u64,
    /// Snapshots each node of the cluster built over the whole run (build and load).
    snapshots_built: Vec<(u64, usize)>,
    term_at_backup: u64,
    backup_bytes: u64,
    backup_seconds: f64,
    restore_seconds: f64,
    restored_digest_matches: bool,
    write_after_restore: bool,
    load: Vec<PhaseFigures>,
}

pub async fn run(options: HistoryOptions) -> Result<()> {
    if options.accounts == 0 || options.entries < options.accounts {
        bail!("--entries must be at least --accounts (each account's first deposit is one)");
    }
    let temp;
    let dir = match &options.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("yinyi-history-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let exe = std::env::current_exe()?;
    let mut figures = Figures::default();

    // Keep 100 entries behind a snapshot (not 1,000): even a small history's log is then
    // purged, so the node added later has to take the snapshot.
    let kept = vec![
        "--log-entries-kept-after-snapshot".to_string(),
        "100".into(),
    ];
    let mut a = LocalCluster::start(&exe, &dir.join("a"), 3, kept)?;
    a.wait_for_leader(Duration::from_secs(60)).await?;
    build(&a, &options, &mut figures).await?;

    // A snapshot on the leader, its log purged behind it: a node added now needs the snapshot.
    let leader = a.wait_for_leader(STEP).await?;
    let mut internal = a.client();
    let applied = internal.status(&a.addr(leader)).await?.applied.unwrap_or(0);
    let t = Instant::now();
    internal.trigger_snapshot(&a.addr(leader)).await?;
    wait_status(&a, leader, "the leader's snapshot and purge", |s| {
        s.snapshot.unwrap_or(0) >= applied && s.purged.is_some()
    })
    .await?;
    figures.snapshot_build_seconds =
        log_took(&a, leader, "built snapshot").unwrap_or_else(|| t.elapsed().as_secs_f64());
    let data = &a.nodes[&leader].data;
    figures.snapshot_bytes = dir_bytes(&data.join("snapshots"));
    figures.state_bytes_per_node = dir_bytes(data) - figures.snapshot_bytes;
    println!(
        "state on the leader: {} in RocksDB, snapshot {} built in {:.1} s",
        size(figures.state_bytes_per_node),
        size(figures.snapshot_bytes),
        figures.snapshot_build_seconds
    );

    under_load(&mut a, &options, &mut figures).await?;
    // The figures so far, kept before the last step (which may take long on a big state).
    print(&figures);
    save(&options, &figures)?;
    backup_and_restore(a, &exe, &dir, &mut figures).await?;

    print(&figures);
    save(&options, &figures)?;
    if !(figures.restored_digest_matches && figures.write_after_restore) {
        bail!("the restored cluster did not match the backup or took no write");
    }
    Ok(())
}

fn save(options: &HistoryOptions, figures: &Figures) -> Result<()> {
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(figures)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// A well-mixed number for `n` (splitmix64): spreads visits over the accounts.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Step 1: the accounts, then visits until the journal holds `entries` entries.
async fn build(c: &LocalCluster, options: &HistoryOptions, figures: &mut Figures) -> Result<()> {
    let started = Instant::now();
    let mut setup = Scenario::new("hist-setup");
    c.client().propose(setup.setup_hospital(), STEP).await?;
    // Each visit makes three journal entries (a deposit, two payments).
    let visits = (options.entries - options.accounts).div_ceil(3);
    let account_calls = options.accounts.div_ceil(PER_CALL);
    // A call of visits carries PER_CALL commands: 2 bills posted, then 3 per visit paid.
    let visits_per_call = PER_CALL / 5;
    let visit_calls = visits.div_ceil(visits_per_call);
    let next = Arc::new(AtomicU64::new(0));
    let entries = Arc::new(AtomicU64::new(0));
    let commands = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let accounts = options.accounts;
    println!(
        "building {accounts} accounts and {visits} visits ({} journal entries) with {} proposers …",
        options.entries, options.proposers
    );
    let mut tasks = Vec::new();
    for p in 0..options.proposers {
        let mut client = c.client();
        let (next, entries, commands, refused) = (
            next.clone(),
            entries.clone(),
            commands.clone(),
            refused.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut s = Scenario::new(&format!("hist{p}"));
            let count = |outcomes: Vec<Outcome>, journaled: bool| {
                commands.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                for o in outcomes {
                    if !o.is_done() {
                        if refused.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("  the first refusal: {o:?}");
                        }
                    } else if journaled {
                        entries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            };
            loop {
                let call = next.fetch_add(1, Ordering::Relaxed);
                if call < account_calls {
                    let first = call * PER_CALL + 1;
                    let last = ((call + 1) * PER_CALL).min(accounts);
                    let cards = (first..=last)
                        .map(|n| s.issue_card(n, Some(100 + (mix(n) % 401) as i64)))
                        .collect();
                    count(client.propose(cards, STEP).await?, true);
                } else if call < account_calls + visit_calls {
                    let first = (call - account_calls) * visits_per_call;
                    let last = (first + visits_per_call).min(visits);
                    let (mut posts, mut pays) = (Vec::new(), Vec::new());
                    for v in first..last {
                        let n = mix(v) % accounts + 1;
                        let cents = [2_000 + mix(2 * v) % 28_000, 2_000 + mix(2 * v + 1) % 28_000];
                        pays.push(s.deposit(n, (cents[0] + cents[1]).div_ceil(100) as i64));
                        for (k, cents) in cents.into_iter().enumerate() {
                            let bill = format!("HB{v:010}-{k}");
                            posts.push(s.post_bill(n, &bill, cents as i64));
                            pays.push(s.pay_bill(n, &bill));
                        }
                    }
                    count(client.propose(posts, STEP).await?, false);
                    count(client.propose(pays, STEP).await?, true);
                } else {
                    return anyhow::Ok(());
                }
            }
        }));
    }
    let total_calls = account_calls + visit_calls;
    let progress = {
        let (next, entries) = (next.clone(), entries.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(15)).await;
                let done = next.load(Ordering::Relaxed).min(total_calls);
                println!(
                    "  {:>5.1}%  {} journal entries, {:.0} s",
                    100.0 * done as f64 / total_calls as f64,
                    entries.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for task in tasks {
        task.await??;
    }
    progress.abort();
    c.wait_applied_everywhere(STEP).await?;
    figures.accounts = accounts;
    figures.journal_entries = entries.load(Ordering::SeqCst);
    figures.commands = commands.load(Ordering::SeqCst);
    figures.refused = refused.load(Ordering::SeqCst);
    figures.build_seconds = started.elapsed().as_secs_f64();
    println!(
        "built {} accounts, {} journal entries ({} commands, {} refused) in {:.0} s ({:.0} commands/s)",
        figures.accounts,
        figures.journal_entries,
        figures.commands,
        figures.refused,
        figures.build_seconds,
        figures.commands as f64 / figures.build_seconds
    );
    Ok(())
}

/// Step 3: the load, and under it a node added and a follower down for `down`.
async fn under_load(
    c: &mut LocalCluster,
    options: &HistoryOptions,
    figures: &mut Figures,
) -> Result<()> {
    let mut config = c.api_config();
    config.deadline = Duration::from_secs(60);
    let api = Client::new(config)?;
    let run = format!("HL{}", std::process::id());
    let kiosk = |k: usize| format!("K-{run}X{k}");
    for k in 0..options.clients {
        api.register_terminal(RegisterTerminalRequest {
            request_id: format!("{run}:reg:{k}"),
            terminal_id: scenario::ADMIN.into(),
            operator_id: "admin".into(),
            new_terminal_id: kiosk(k),
        })
        .await
        .context("register the load's kiosks")?;
    }
    let load = Arc::new(Load::new());
    let mut kiosks = Vec::new();
    for k in 0..options.clients {
        let (api, load, run, kiosk) = (api.clone(), load.clone(), run.clone(), kiosk(k));
        let accounts = options.accounts;
        kiosks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !load.stop.load(Ordering::Relaxed) {
                let n = mix((k as u64) << 40 | i) % accounts + 1;
                let card = scenario::card(n).to_string();
                match crate::bench_api::kiosk_round(&api, &run, k, i, &kiosk, scenario::HIS, card)
                    .await
                {
                    Ok((deposit, pay)) => {
                        load.record(deposit);
                        load.record(pay);
                    }
                    Err(_) => {
                        load.errors[load.phase.load(Ordering::Relaxed)]
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    println!(
        "load: {} kiosks (deposit, bill, payment) through the public API …",
        options.clients
    );
    let leader = c.wait_for_leader(STEP).await?;
    let term_before = c.client().status(&c.addr(leader)).await?.term;
    tokio::time::sleep(options.steady).await;

    // A fourth node, added with `yinyi ctl add-node` while the load runs.
    load.enter(1);
    let leader = c.wait_for_leader(STEP).await?;
    let addr4 = c.add_node(4)?;
    let t = Instant::now();
    let out = ctl(c, &c.addr(leader), &["add-node", &format!("4={addr4}")]).await?;
    figures.add_node_seconds = t.elapsed().as_secs_f64();
    print!("{out}");
    let pid4 = c.nodes[&4].pid().context("node 4 runs")?;
    figures.new_node_peak_rss_mib = memory_mib(pid4, "VmHWM").unwrap_or(0.0);
    figures.snapshot_install_seconds = log_took(c, 4, "installed snapshot").unwrap_or(0.0);
    figures.new_node_state_bytes = dir_bytes(&c.nodes[&4].data);
    println!(
        "node 4 added in {:.1} s (snapshot install {:.1} s), peak resident memory {:.0} MiB",
        figures.add_node_seconds, figures.snapshot_install_seconds, figures.new_node_peak_rss_mib
    );
    load.enter(2);
    tokio::time::sleep(options.steady).await;

    // A follower (not the new node) down for `down` under load, then started again.
    let leader = c.wait_for_leader(STEP).await?;
    figures.leader_peak_rss_mib = c.nodes[&leader]
        .pid()
        .and_then(|pid| memory_mib(pid, "VmHWM"))
        .unwrap_or(0.0);
    let follower = c
        .running()
        .into_iter()
        .find(|&id| id != leader && id != 4)
        .context("a follower")?;
    load.enter(3);
    c.kill(follower)?;
    let t = Instant::now();
    println!("node {follower} down for {:?} under load …", options.down);
    tokio::time::sleep(options.down).await;
    figures.follower_down_seconds = t.elapsed().as_secs_f64();
    load.enter(4);
    let target = c.client().status(&c.addr(leader)).await?.committed;
    let installs_before = count_lines(c, follower, "installed snapshot");
    let t = Instant::now();
    c.spawn(follower)?;
    wait_status(c, follower, "the restarted follower to catch up", |s| {
        s.applied.unwrap_or(0) >= target
    })
    .await?;
    figures.follower_catch_up_seconds = t.elapsed().as_secs_f64();
    figures.follower_snapshot_installs =
        count_lines(c, follower, "installed snapshot") - installs_before;
    figures.follower_caught_up_by_snapshot = figures.follower_snapshot_installs > 0;
    println!(
        "node {follower} caught up {:.1} s after its restart ({})",
        figures.follower_catch_up_seconds,
        if figures.follower_caught_up_by_snapshot {
            "by snapshot"
        } else {
            "by the log"
        }
    );
    load.stop.store(true, Ordering::SeqCst);
    let ended = Instant::now();
    let leader = c.wait_for_leader(STEP).await?;
    figures.elections_under_load = c.client().status(&c.addr(leader)).await?.term - term_before;
    figures.snapshots_built = c
        .nodes
        .keys()
        .map(|&id| (id, count_lines(c, id, "built snapshot")))
        .collect();
    for k in kiosks {
        k.await?;
    }
    let started = load.started.lock().expect("phase clock").clone();
    for (i, phase) in PHASES.iter().enumerate() {
        let h = load.latencies[i].lock().expect("latency lock");
        let seconds = started
            .get(i + 1)
            .copied()
            .unwrap_or(ended)
            .duration_since(started[i])
            .as_secs_f64();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        figures.load.push(PhaseFigures {
            phase,
            seconds,
            requests: h.len(),
            per_s: h.len() as f64 / seconds.max(0.001),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            errors: load.errors[i].load(Ordering::SeqCst),
        });
    }
    Ok(())
}

/// Step 4: two leader changes, a backup on a follower, a restore into a fresh cluster.
async fn backup_and_restore(
    mut a: LocalCluster,
    exe: &Path,
    dir: &Path,
    figures: &mut Figures,
) -> Result<()> {
    a.wait_applied_everywhere(STEP).await?;
    // Two leader changes: the leader killed, a new one elected among the rest, the old one
    // started again (`ctl transfer-leader` needs the other followers' votes, which their
    // leases refuse in a cluster of four voters).
    for _ in 0..2 {
        let leader = a.wait_for_leader(STEP).await?;
        let before = a.client().status(&a.addr(leader)).await?.term;
        a.kill(leader)?;
        let deadline = Instant::now() + STEP;
        loop {
            let statuses = a.statuses().await.unwrap_or_default();
            if statuses
                .iter()
                .any(|s| s.state == "Leader" && s.leader == Some(s.id) && s.term > before)
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("no new leader after killing node {leader}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        a.spawn(leader)?;
    }
    // Every node holding everything (digests, which walk millions of records, are compared
    // once, on the restored cluster).
    a.wait_applied_everywhere(STEP).await?;
    let leader = a.wait_for_leader(STEP).await?;
    figures.term_at_backup = a.client().status(&a.addr(leader)).await?.term;
    let follower = a
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .context("a follower")?;
    let backup = dir.join("backup");
    let t = Instant::now();
    ctl(
        &a,
        &a.addr(follower),
        &["backup", "--out", &backup.to_string_lossy()],
    )
    .await?;
    figures.backup_seconds = t.elapsed().as_secs_f64();
    figures.backup_bytes = dir_bytes(&backup);
    let info: yinyi_consensus::backup::BackupInfo =
        serde_json::from_str(&std::fs::read_to_string(backup.join("backup.json"))?)?;
    println!(
        "backup at term {} on node {follower}: {} in {:.1} s",
        figures.term_at_backup,
        size(figures.backup_bytes),
        figures.backup_seconds
    );
    // The old cluster's disks are not needed any more (a restore needs room for three more).
    let old: Vec<PathBuf> = a.nodes.values().map(|n| n.data.clone()).collect();
    drop(a);
    for data in old {
        let _ = std::fs::remove_dir_all(data);
    }

    let mut b = LocalCluster::prepare(exe, &dir.join("b"), 3, vec![])?;
    let t = Instant::now();
    for id in 1..=3u64 {
        let out = tokio::process::Command::new(exe)
            .args(["ctl", "restore", "--backup"])
            .arg(&backup)
            .arg("--data")
            .arg(&b.nodes[&id].data)
            .args(["--peers", &b.peers_arg()])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "restore node {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for id in 1..=3u64 {
        b.spawn(id)?;
    }
    let leader = b.wait_for_leader(STEP).await?;
    b.wait_applied_everywhere(STEP).await?;
    figures.restore_seconds = t.elapsed().as_secs_f64();
    // The restored leader's digest against the one the backup recorded (every node was
    // restored from the same files; `tests/tests/operations.rs` compares all three).
    let restored = b.client().status_with_digest(&b.addr(leader)).await?;
    figures.restored_digest_matches = restored.digest.as_ref() == Some(&info.digest);
    let mut config = b.api_config();
    config.deadline = Duration::from_secs(60);
    let written = Client::new(config)?
        .deposit_cash(DepositCashRequest {
            request_id: "history:after-restore".into(),
            terminal_id: scenario::KIOSK.into(),
            operator_id: String::new(),
            card_no: scenario::card(1).to_string(),
            amount: "50".into(),
        })
        .await;
    figures.write_after_restore = written.is_ok();
    println!(
        "restored into a fresh cluster in {:.1} s: digest {}, a new write {}",
        figures.restore_seconds,
        if figures.restored_digest_matches {
            "matches"
        } else {
            "DIFFERS"
        },
        match &written {
            Ok(_) => "accepted".to_string(),
            Err(e) => format!("REFUSED ({e})"),
        }
    );
    Ok(())
}

/// `yinyi ctl` against `node` as the cluster's operator; its standard output.
async fn ctl(c: &LocalCluster, node: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .args(["ctl", "--node", node, "--certs"])
        .arg(c.tls_dir())
        .args(["--credential", c.credential()])
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "yinyi ctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls node `id`'s status until `done` holds, within `within`.
async fn wait_status(
    c: &LocalCluster,
    id: u64,
    what: &str,
    done: impl Fn(&yinyi_consensus::NodeStatus) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + STEP;
    let mut internal = c.client();
    loop {
        if let Ok(status) = internal.status(&c.addr(id)).await
            && done(&status)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("waited {STEP:?} for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_lines(c: &LocalCluster, id: u64, message: &str) -> Vec<String> {
    std::fs::read_to_string(c.nodes[&id].data.with_extension("log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(message))
        .map(str::to_string)
        .collect()
}

fn count_lines(c: &LocalCluster, id: u64, message: &str) -> usize {
    log_lines(c, id, message).len()
}

/// The `took=` of node `id`'s last log line with `message`, in seconds.
fn log_took(c: &LocalCluster, id: u64, message: &str) -> Option<f64> {
    let line = log_lines(c, id, message).pop()?;
    let took = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("took="))?;
    parse_debug_duration(took)
}

/// A `Duration`'s `Debug` text (`1.5s`, `850.2ms`, `12µs`, `7ns`) in seconds.
fn parse_debug_duration(text: &str) -> Option<f64> {
    let units = [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n * scale)
    })
}

fn size(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn print(f: &Figures) {
    println!();
    println!("| what | figure |");
    println!("|---|---:|");
    let rows = [
        ("accounts", f.accounts.to_string()),
        ("journal entries", f.journal_entries.to_string()),
        (
            "history built (commands, seconds)",
            format!("{} in {:.0} s", f.commands, f.build_seconds),
        ),
        ("state on disk per node", size(f.state_bytes_per_node)),
        ("snapshot", size(f.snapshot_bytes)),
        (
            "snapshot build",
            format!("{:.1} s", f.snapshot_build_seconds),
        ),
        (
            "`ctl add-node` to caught up (transfer + install)",
            format!("{:.1} s", f.add_node_seconds),
        ),
        (
            "snapshot install on the new node",
            format!("{:.1} s", f.snapshot_install_seconds),
        ),
        (
            "new node's peak resident memory",
            format!("{:.0} MiB", f.new_node_peak_rss_mib),
        ),
        (
            "leader's peak resident memory",
            format!("{:.0} MiB", f.leader_peak_rss_mib),
        ),
        (
            "follower down under load, then caught up",
            format!(
                "{:.0} s down, {:.1} s to catch up ({})",
                f.follower_down_seconds,
                f.follower_catch_up_seconds,
                match f.follower_snapshot_installs {
                    0 => "log".to_string(),
                    1 => "snapshot".to_string(),
                    n => format!("{n} snapshots"),
                }
            ),
        ),
        (
            "new terms while the load ran (elections, won or not)",
            f.elections_under_load.to_string(),
        ),
        (
            "snapshots built per node over the run",
            f.snapshots_built
                .iter()
                .map(|(id, n)| format!("node {id}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "backup after two leader changes",
            format!(
                "term {}, {} in {:.1} s",
                f.term_at_backup,
                size(f.backup_bytes),
                f.backup_seconds
            ),
        ),
        (
            "restore into a fresh 3-node cluster",
            format!(
                "{:.1} s, digest {}, write {}",
                f.restore_seconds,
                if f.restored_digest_matches {
                    "same"
                } else {
                    "DIFFERENT"
                },
                if f.write_after_restore {
                    "accepted"
                } else {
                    "REFUSED"
                }
            ),
        ),
    ];
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
    println!();
    println!("| load phase | seconds | requests/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for p in &f.load {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {} |",
            p.phase, p.seconds, p.per_s, p.p50_ms, p.p99_ms, p.max_ms, p.errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_durations_the_logs_print() {
        assert_eq!(parse_debug_duration("1.5s"), Some(1.5));
        assert_eq!(parse_debug_duration("250ms"), Some(0.25));
        assert!((parse_debug_duration("12µs").unwrap() - 12e-6).abs() < 1e-12);
        assert_eq!(parse_debug_duration("soon"), None);
    }

    #[test]
    fn visits_spread_over_the_accounts() {
        let accounts = 1_000;
        let mut hit = vec![false; accounts as usize];
        for v in 0..10_000 {
            hit[(mix(v) % accounts) as usize] = true;
        }
        assert!(hit.iter().filter(|h| **h).count() > 990);
    }
}

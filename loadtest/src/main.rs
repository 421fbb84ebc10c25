//! yinyi-loadtest: plays the outpatient day of `WORKLOAD.md` against a cluster through the
//! public API and says what it sustained, then checks DOMAIN.md's invariants against what it
//! sent and was told, and against every node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use yinyi_api::{Client, ClientConfig};

use yinyi_loadtest::anchor;
use yinyi_loadtest::cluster::{self, Action, Fault, LocalCluster};
use yinyi_loadtest::drive::{closed_loop, find_max_rate, open_loop, play_day};
use yinyi_loadtest::workload::Run;
use yinyi_loadtest::{Preload, check, parse_duration, report};

#[derive(Parser)]
#[command(version, about = "A simulated outpatient day against a yinyi cluster")]
struct Cli {
    /// The cluster's nodes (host:port, comma-separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "local")]
    targets: Vec<String>,
    /// Start a local cluster of this many real `yinyi` processes (the binary beside this one)
    /// and a bank simulator, in a temporary directory; stop them at the end.
    #[arg(long, conflicts_with = "targets")]
    local: Option<u64>,
    /// Play the whole outpatient day (07:00–18:00, WORKLOAD.md's hourly curve) compressed into
    /// this long, open loop.
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["rate", "clients"])]
    day: Option<Duration>,
    /// Visits in the day played by `--day`.
    #[arg(long, default_value_t = 20_000)]
    visits: u64,
    /// Open loop: visits start at this many money transactions a second (five per visit, as
    /// WORKLOAD.md counts them), whatever the latency, for `--duration`.
    #[arg(long, conflicts_with = "clients")]
    rate: Option<u64>,
    /// Closed loop: this many concurrent patients, each starting a new visit when done.
    #[arg(long)]
    clients: Option<usize>,
    /// What each client plays: `visit`, the outpatient visits of WORKLOAD.md, or `anchor`, the
    /// PostgreSQL anchor's shape (60% PayBill of a bill the preload posted, 25% a cash top-up
    /// of 100.00, 15% a balance query; with --clients).
    #[arg(long, value_enum, default_value_t = Mix::Visit)]
    mix: Mix,
    /// How long `--rate` and `--clients` run (e.g. 60s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Step the open-loop rate up (×1.25 from `--start-rate` money transactions a second, each
    /// step `--step`) until p99 passes `--p99-bound`; report the highest rate that held.
    #[arg(long, conflicts_with_all = ["rate", "clients"])]
    find_max: bool,
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    p99_bound: Duration,
    #[arg(long, default_value_t = 1000)]
    start_rate: u64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    step: Duration,
    /// Returning patients registered before the run, through the bulk IssueCards path (Raft
    /// like everything else), with a progress bar.
    #[arg(long, alias = "patients", default_value_t = 2_000)]
    accounts: u64,
    /// Kiosks (each one's work is serial, as in a real hall).
    #[arg(long, default_value_t = 120)]
    kiosks: u64,
    /// Cashier windows, each with an open shift (withdrawals, loss and replacement).
    #[arg(long, default_value_t = 30)]
    windows: u64,
    /// Faults of the bank simulator (with --local), e.g. decline=0.03,lost=0.02,latency=20ms.
    #[arg(long, default_value = "")]
    bank_faults: String,
    /// Faults injected into the local cluster during the run, e.g.
    /// kill-leader@30s,pause-follower@60s:5s,restart@90s (also kill-follower, pause-leader,
    /// bank-down@T:D). Times are from the start of the run.
    #[arg(long, requires = "local", value_parser = chaos_arg)]
    chaos: Option<Chaos>,
    /// How long the end-of-run checks wait for unknown outcomes and bank operations to settle.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle_within: Duration,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write an HTML report with PNG plots of throughput and latency over time here.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// With --targets: the site CA (PEM) the nodes' certificates chain to.
    #[arg(long, env = "YINYI_CA", conflicts_with = "local")]
    ca: Option<std::path::PathBuf>,
    /// With --targets: a credential (ID:SECRET) with the roles of every channel played
    /// (kiosk, window, mobile, his) and admin (to register terminals).
    #[arg(long, env = "YINYI_CREDENTIAL", conflicts_with = "local")]
    credential: Option<String>,
    /// With --targets: the nodes run --insecure (plaintext).
    #[arg(long, conflicts_with_all = ["local", "ca"])]
    insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mix {
    Visit,
    Anchor,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("yinyi-loadtest: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A `--chaos` schedule (one clap value, many faults).
#[derive(Debug, Clone)]
struct Chaos(Vec<Fault>);

fn chaos_arg(text: &str) -> Result<Chaos, String> {
    cluster::parse_chaos(text).map(Chaos)
}

/// The cluster under test: a local one the load tester runs, or one it is pointed at.
struct Target {
    addrs: Vec<String>,
    /// TLS and the credential to call it with.
    config: ClientConfig,
    local: Option<tokio::sync::Mutex<LocalCluster>>,
}

async fn run(cli: Cli) -> Result<bool> {
    if cli.rate.is_none() && cli.clients.is_none() && !cli.find_max && cli.day.is_none() {
        bail!("give --day D, --rate N (open loop), --clients N (closed loop) or --find-max");
    }
    if cli.mix == Mix::Anchor && (cli.clients.is_none() || cli.accounts == 0) {
        bail!(
            "--mix anchor runs closed loop over preloaded accounts: give --clients N and --accounts N"
        );
    }
    if cli.kiosks == 0 || cli.windows == 0 {
        bail!("--kiosks and --windows must be 1 or more");
    }
    if !cli.bank_faults.is_empty() && cli.local.is_none() {
        bail!("--bank-faults needs --local (change a running simulator with `yinyi bank-faults`)");
    }
    let target = match cli.local {
        Some(size) => {
            let cluster = LocalCluster::start(size, &cli.bank_faults)?;
            let config = cluster.client_config()?;
            cluster::wait_for_leader(&config, Duration::from_secs(30)).await?;
            Target {
                addrs: cluster.addrs(),
                config,
                local: Some(tokio::sync::Mutex::new(cluster)),
            }
        }
        None => {
            let mut config = ClientConfig::new(cli.targets.clone());
            config.tls = match (&cli.ca, cli.insecure) {
                (Some(ca), false) => Some(
                    yinyi_api::TlsFiles {
                        ca: ca.clone(),
                        cert: None,
                        key: None,
                    }
                    .client()?,
                ),
                (None, true) => None,
                _ => bail!("with --targets give --ca FILE (the site CA) or --insecure"),
            };
            config.credential = Some(
                cli.credential
                    .clone()
                    .context("with --targets give --credential ID:SECRET")?,
            );
            Target {
                addrs: cli.targets.clone(),
                config,
                local: None,
            }
        }
    };
    let client = Client::new(target.config.clone())?;
    let prefix = format!("L{}", std::process::id());
    let run = Arc::new(Run::new(client.clone(), prefix, cli.kiosks, cli.windows));
    run.setup_terminals().await?;

    let preload = preload(&run, cli.accounts).await?;
    let anchor = match cli.mix {
        Mix::Anchor => Some(anchor_bills(&run, cli.accounts).await?),
        Mix::Visit => None,
    };

    let processes = match &target.local {
        Some(local) => local.lock().await.processes().await,
        None => vec![("yinyi-loadtest".into(), std::process::id())],
    };
    let meter = yinyi_measure::CpuMeter::start(processes);
    run.stats.start();
    let progress = progress(run.clone());
    let chaos = match (&target.local, &cli.chaos) {
        (Some(_), Some(Chaos(faults))) => Some(faults.clone()),
        _ => None,
    };
    let target = Arc::new(target);
    let chaos_task = chaos.map(|faults| tokio::spawn(inject(target.clone(), run.clone(), faults)));
    let (seconds, find_max) = match (cli.find_max, cli.rate, cli.clients) {
        _ if cli.day.is_some() => {
            let day = cli.day.unwrap_or_default();
            eprintln!("playing {} visits of a day in {day:?} …", cli.visits);
            (play_day(&run, cli.visits, day).await?, None)
        }
        (true, _, _) => {
            let (seconds, table) =
                find_max_rate(&run, cli.start_rate, cli.step, cli.p99_bound).await?;
            (seconds, Some(table))
        }
        (false, Some(rate), _) => {
            eprintln!(
                "running at {rate} money transactions/s for {:?} …",
                cli.duration
            );
            (open_loop(&run, rate, cli.duration).await?, None)
        }
        (false, None, Some(clients)) => {
            eprintln!(
                "running {clients} clients ({:?} mix) for {:?} …",
                cli.mix, cli.duration
            );
            let seconds = match &anchor {
                Some(anchor) => {
                    let seconds =
                        anchor::closed_loop(&run, anchor.clone(), clients, cli.duration).await?;
                    if anchor.exhausted() {
                        eprintln!(
                            "every one of the {} bills was charged after {seconds:.1} s: the run \
                             stopped there (give more --accounts for a longer run)",
                            cli.accounts
                        );
                    }
                    seconds
                }
                None => closed_loop(&run, clients, cli.duration).await?,
            };
            (seconds, None)
        }
        (false, None, None) => unreachable!("checked above"),
    };
    run.stats.stop();
    let cpu = meter.finish(run.stats.all().len());
    progress.abort();
    if let Some(task) = chaos_task {
        task.abort();
    }
    eprintln!("load done after {seconds:.1} s; checking …");

    if let Some(local) = &target.local {
        let mut cluster = local.lock().await;
        let restarted = cluster.heal()?;
        if !restarted.is_empty() {
            eprintln!("restarted nodes {restarted:?} for the checks");
        }
        cluster.bank_faults("clear")?;
        cluster::wait_for_leader(&target.config, Duration::from_secs(30)).await?;
    }
    let checked = check::run(
        &run,
        &target.addrs,
        target.local.is_some(),
        cli.settle_within,
    )
    .await?;
    let summary = report::Summary::new(&run, seconds, preload, checked, find_max);
    summary.print();
    // --find-max counts the last step's requests only; --chaos kills and restarts processes
    // the meter cannot follow: no CPU figure for either.
    let cpu = (!cli.find_max && cli.chaos.is_none()).then_some(cpu);
    if let Some(cpu) = &cpu {
        println!();
        print!("{}", cpu.table());
    }
    if let Some(path) = &cli.json {
        let mut json = summary.json();
        if let Some(cpu) = &cpu {
            json["cpu"] = serde_json::to_value(cpu)?;
            json["cpu_us_per_request"] = cpu.us_per_transaction().into();
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(dir) = &cli.report {
        report::write_report(dir, &run, &summary)
            .with_context(|| format!("write the report in {}", dir.display()))?;
        eprintln!("report written to {}", dir.join("index.html").display());
    }
    Ok(summary.checked.violations.is_empty())
}

/// The anchor's bills, one per preloaded account, posted from HIS with a progress bar.
async fn anchor_bills(run: &Arc<Run>, accounts: u64) -> Result<Arc<anchor::Anchor>> {
    let bar = progress_bar(
        accounts,
        "anchor bills {bar:40} {pos}/{len}, {per_sec}, eta {eta}",
    );
    let began = Instant::now();
    let ticker = bar.clone();
    anchor::Anchor::post_bills(run, accounts, 64, move |n| ticker.inc(n)).await?;
    bar.finish_and_clear();
    eprintln!(
        "posted {accounts} bills in {:.1} s",
        began.elapsed().as_secs_f64()
    );
    Ok(Arc::new(anchor::Anchor::new(accounts)))
}

/// A progress bar of `len` steps drawn with `template`.
fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

async fn preload(run: &Arc<Run>, accounts: u64) -> Result<Preload> {
    let bar = progress_bar(
        accounts,
        "preload {bar:40} {pos}/{len} accounts, {per_sec}, eta {eta}",
    );
    let began = Instant::now();
    let ticker = bar.clone();
    let issued = run
        .preload(accounts, 8, move |n| ticker.inc(n))
        .await
        .context("preload the returning patients")?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    if accounts > 0 {
        eprintln!(
            "preloaded {issued} accounts in {seconds:.1} s ({:.0}/s)",
            issued as f64 / seconds.max(0.001)
        );
    }
    Ok(Preload {
        accounts: issued,
        seconds,
    })
}

/// Injects `faults` at their times into the local cluster.
async fn inject(target: Arc<Target>, run: Arc<Run>, faults: Vec<Fault>) {
    let Some(local) = &target.local else {
        return;
    };
    let began = Instant::now();
    for fault in faults {
        tokio::time::sleep_until((began + fault.at).into()).await;
        let mut cluster = local.lock().await;
        let done: Result<String> = async {
            Ok(match fault.action {
                Action::KillLeader => {
                    let id = cluster.leader().await;
                    cluster.kill(id)?;
                    format!("kill-leader (node {id})")
                }
                Action::KillFollower => {
                    let id = cluster.follower().await?;
                    cluster.kill(id)?;
                    format!("kill-follower (node {id})")
                }
                Action::PauseLeader | Action::PauseFollower => {
                    let id = if fault.action == Action::PauseLeader {
                        cluster.leader().await
                    } else {
                        cluster.follower().await?
                    };
                    cluster.pause(id)?;
                    let local = target.clone();
                    let lasting = fault.lasting;
                    tokio::spawn(async move {
                        tokio::time::sleep(lasting).await;
                        if let Some(local) = &local.local {
                            let _ = local.lock().await.resume(id);
                        }
                    });
                    format!("{} (node {id}, {lasting:?})", fault.action.name())
                }
                Action::Restart => {
                    let restarted = cluster.heal()?;
                    format!("restart (nodes {restarted:?})")
                }
                Action::BankDown => {
                    cluster.bank_faults(&format!("down={}ms", fault.lasting.as_millis()))?;
                    format!("bank-down ({:?})", fault.lasting)
                }
            })
        }
        .await;
        match done {
            Ok(what) => {
                eprintln!("chaos at {:?}: {what}", began.elapsed());
                run.stats.fault(what);
            }
            Err(e) => eprintln!("chaos: {} failed: {e:#}", fault.action.name()),
        }
    }
}

/// A live line: requests so far, their rate, p99 and errors (hidden when the output is not a
/// terminal).
fn progress(run: Arc<Run>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let all = run.stats.all();
            let elapsed = run.stats.elapsed().max(0.001);
            bar.set_message(format!(
                "{} requests, {:.0}/s, p99 {:.1} ms, {} errors",
                all.len(),
                all.len() as f64 / elapsed,
                all.value_at_quantile(0.99) as f64 / 1000.0,
                run.stats.error_count()
            ));
            bar.tick();
        }
    })
}

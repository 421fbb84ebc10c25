//! yinyi-loadtest: plays the outpatient visits of `WORKLOAD.md` against a running cluster
//! through the public API and says what it sustained.
//!
//! This first cut drives the cash-and-account part of a visit (new patients' cards with a first
//! deposit, the registration fee and 0–5 outpatient bills posted by HIS and paid from the
//! account, cash top-ups at a kiosk when the balance is short, balance queries), open loop at
//! `--rate` or closed loop with `--clients`, and checks at the end that every touched account
//! holds exactly the balance the cluster last reported to it. The day curve, `--find-max`, bank
//! and third-party payments, faults, chaos and the HTML report come next (issue 6).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::Rng;
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client, ClientConfig};

#[derive(Parser)]
#[command(version, about = "A simulated outpatient day against a yinyi cluster")]
struct Cli {
    /// The cluster's nodes (host:port, comma-separated).
    #[arg(long, value_delimiter = ',', required_unless_present = "local")]
    targets: Vec<String>,
    /// Start a local cluster of this many real `yinyi` processes (the binary beside this one)
    /// in a temporary directory, and stop it at the end.
    #[arg(long, conflicts_with = "targets")]
    local: Option<u64>,
    /// Open loop: visits start at this many money transactions a second (five per visit, as
    /// WORKLOAD.md counts them), whatever the latency. Every request counts in the figures
    /// (HIS bill posts and balance queries too), about twice as many.
    #[arg(long, conflicts_with = "clients")]
    rate: Option<u64>,
    /// Play the whole outpatient day (07:00–18:00, WORKLOAD.md's hourly curve) compressed into
    /// this long, open loop.
    #[arg(long, value_parser = parse_duration, conflicts_with_all = ["rate", "clients"])]
    day: Option<Duration>,
    /// Visits in the day played by `--day`.
    #[arg(long, default_value_t = 20_000)]
    visits: u64,
    /// Closed loop: this many concurrent patients, each starting a new visit when done.
    #[arg(long)]
    clients: Option<usize>,
    /// How long to run (e.g. 60s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Returning patients registered before the run.
    #[arg(long, default_value_t = 2_000)]
    patients: u64,
    /// Kiosks (each one's work is serial, as in a real hall).
    #[arg(long, default_value_t = 64)]
    kiosks: u64,
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
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s or m"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

const KINDS: [&str; 6] = [
    "IssueCard",
    "DepositCash",
    "PostBill",
    "PayBill",
    "QueryBalance",
    "Visit",
];

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// What the run saw.
struct Stats {
    latency: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    /// The balance the cluster last reported for each patient, by card.
    told: BTreeMap<String, String>,
}

struct Run {
    client: Client,
    prefix: String,
    kiosks: u64,
    serial: std::sync::atomic::AtomicU64,
    /// Patients not in a visit now (a patient is in one visit at a time, as in life).
    idle: Mutex<Vec<u64>>,
    next_patient: std::sync::atomic::AtomicU64,
    stats: Mutex<Stats>,
}

impl Run {
    fn id(&self) -> String {
        let n = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.prefix)
    }

    fn card(&self, n: u64) -> String {
        format!("{}P{n}", self.prefix)
    }

    fn kiosk(&self, n: u64) -> String {
        format!("K-{}X{}", self.prefix, n % self.kiosks)
    }

    fn his(&self) -> String {
        format!("H-{}", self.prefix)
    }

    async fn timed<T>(
        &self,
        kind: &'static str,
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Option<T> {
        let start = Instant::now();
        let result = call.await;
        let micros = start.elapsed().as_micros() as u64;
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(value) => {
                if let Some(h) = stats.latency.get_mut(kind) {
                    h.saturating_record(micros);
                }
                Some(value)
            }
            Err(e) => {
                let code = match &e {
                    ApiError::Refused { reason, code, .. } if reason.is_empty() => {
                        format!("{code:?}")
                    }
                    ApiError::Refused { reason, .. } => reason.clone(),
                    ApiError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED".into(),
                    ApiError::BadAddress(_) => "BAD_ADDRESS".into(),
                };
                *stats.errors.entry(format!("{kind}:{code}")).or_default() += 1;
                None
            }
        }
    }

    fn told(&self, card: &str, balance: String) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.told.insert(card.to_string(), balance);
    }

    async fn issue(&self, n: u64, deposit: u64) -> bool {
        let card = self.card(n);
        let request = IssueCardRequest {
            request_id: self.id(),
            terminal_id: self.kiosk(n),
            operator_id: String::new(),
            card_no: card.clone(),
            card_kind: CardKind::Hospital as i32,
            holder_name: format!("patient {n}"),
            person_key: format!("{:032x}{n:032x}", self.prefix.len()),
            id_masked: "110***********0000".into(),
            phone: String::new(),
            first_deposit: deposit.to_string(),
        };
        match self
            .timed("IssueCard", self.client.issue_card(request))
            .await
        {
            Some(reply) => {
                self.told(&card, reply.balance);
                true
            }
            None => false,
        }
    }

    /// One visit of patient `n` (a new patient's card first when `new`).
    async fn visit(&self, n: u64, new: bool) {
        let start = Instant::now();
        let (new_deposit, registration, bills, amounts, query) = {
            let mut rng = rand::rng();
            let bills = poisson(&mut rng, 2.2).min(5);
            let amounts: Vec<u64> = (0..bills).map(|_| rng.random_range(20..=800)).collect();
            (
                rng.random_range(1..=5) * 100,
                rng.random_range(5..=100),
                bills,
                amounts,
                rng.random_bool(0.8),
            )
        };
        if new && !self.issue(n, new_deposit).await {
            return;
        }
        let card = self.card(n);
        let kiosk = self.kiosk(n);
        let fees = std::iter::once(registration).chain(amounts.into_iter().take(bills));
        for (i, amount) in fees.enumerate() {
            let bill = format!("{}B{}", self.prefix, self.id().replace(':', "x"));
            let posted = self
                .timed(
                    "PostBill",
                    self.client.post_bill(PostBillRequest {
                        request_id: self.id(),
                        terminal_id: self.his(),
                        bill_id: bill.clone(),
                        card_no: card.clone(),
                        kind: if i == 0 {
                            BillKind::Registration
                        } else {
                            BillKind::Outpatient
                        } as i32,
                        amount: amount.to_string(),
                    }),
                )
                .await;
            if posted.is_none() {
                continue;
            }
            // Short of money: top up with cash first, in whole hundreds.
            let balance = self.balance_told(&card);
            if balance < amount as f64 {
                let top_up = ((amount as f64 - balance) / 100.0).ceil() as u64 * 100;
                if let Some(receipt) = self
                    .timed(
                        "DepositCash",
                        self.client.deposit_cash(DepositCashRequest {
                            request_id: self.id(),
                            terminal_id: kiosk.clone(),
                            operator_id: String::new(),
                            card_no: card.clone(),
                            amount: top_up.to_string(),
                        }),
                    )
                    .await
                {
                    self.told(&card, receipt.balance);
                }
            }
            if let Some(receipt) = self
                .timed(
                    "PayBill",
                    self.client.pay_bill(PayBillRequest {
                        request_id: self.id(),
                        terminal_id: kiosk.clone(),
                        bill_id: bill,
                        card_no: card.clone(),
                        ..Default::default()
                    }),
                )
                .await
            {
                self.told(&card, receipt.balance);
            }
        }
        if query {
            self.timed(
                "QueryBalance",
                self.client.query_balance(QueryBalanceRequest {
                    card_no: card.clone(),
                    account_id: String::new(),
                }),
            )
            .await;
        }
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = stats.latency.get_mut("Visit") {
            h.saturating_record(start.elapsed().as_micros() as u64);
        }
    }

    fn balance_told(&self, card: &str) -> f64 {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .told
            .get(card)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0.0)
    }

    /// A patient for the next visit: a returning one who is idle (70%), else a new one.
    fn patient(&self) -> (u64, bool) {
        let returning = rand::rng().random_bool(0.7);
        if returning {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if !idle.is_empty() {
                let i = rand::rng().random_range(0..idle.len());
                return (idle.swap_remove(i), false);
            }
        }
        let n = self
            .next_patient
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (n, true)
    }

    fn done_with(&self, n: u64) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(n);
    }
}

/// A Poisson draw by Knuth's method (small means only).
fn poisson(rng: &mut impl Rng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
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

async fn run(cli: Cli) -> Result<bool> {
    if cli.rate.is_none() && cli.clients.is_none() && !cli.find_max && cli.day.is_none() {
        bail!("give --day D, --rate N (open loop), --clients N (closed loop) or --find-max");
    }
    if cli.kiosks == 0 {
        bail!("--kiosks must be 1 or more");
    }
    let (targets, _cluster) = match cli.local {
        Some(size) => {
            let cluster = LocalCluster::start(size)?;
            let targets = cluster.addrs.clone();
            wait_for_leader(&targets).await?;
            (targets, Some(cluster))
        }
        None => (cli.targets.clone(), None),
    };
    let client = Client::new(ClientConfig::new(targets))?;
    let prefix = format!("L{}", std::process::id());
    let run = Arc::new(Run {
        client: client.clone(),
        prefix: prefix.clone(),
        kiosks: cli.kiosks,
        serial: 0.into(),
        idle: Mutex::new(Vec::new()),
        next_patient: 0.into(),
        stats: Mutex::new(Stats {
            latency: KINDS.iter().map(|k| (*k, histogram())).collect(),
            errors: BTreeMap::new(),
            told: BTreeMap::new(),
        }),
    });
    let terminals = std::iter::once(run.his()).chain((0..cli.kiosks).map(|k| run.kiosk(k)));
    for terminal in terminals {
        client
            .register_terminal(RegisterTerminalRequest {
                request_id: run.id(),
                terminal_id: "A-ADMIN".into(),
                operator_id: "loadtest".into(),
                new_terminal_id: terminal,
            })
            .await
            .context("register the load tester's terminals")?;
    }
    eprintln!("registering {} returning patients …", cli.patients);
    let mut preload = Vec::new();
    for k in 0..cli.kiosks {
        let run = run.clone();
        let patients = cli.patients;
        preload.push(tokio::spawn(async move {
            let mut n = k;
            while n < patients {
                if run.issue(n, 300).await {
                    run.done_with(n);
                }
                n += run.kiosks;
            }
        }));
    }
    run.next_patient
        .store(cli.patients, std::sync::atomic::Ordering::SeqCst);
    for task in preload {
        task.await?;
    }
    // The preload is not part of the figures.
    run.reset();

    let progress = progress(run.clone());
    let seconds = match (cli.find_max, cli.rate, cli.clients) {
        _ if cli.day.is_some() => {
            let day = cli.day.unwrap_or_default();
            eprintln!("playing {} visits of a day in {day:?} …", cli.visits);
            play_day(&run, cli.visits, day).await?
        }
        (true, _, _) => find_max(&run, &cli).await?,
        (false, Some(rate), _) => {
            eprintln!("running for {:?} …", cli.duration);
            open_loop(&run, rate, cli.duration).await?
        }
        (false, None, Some(clients)) => {
            eprintln!("running for {:?} …", cli.duration);
            closed_loop(&run, clients, cli.duration).await?
        }
        (false, None, None) => unreachable!("checked above"),
    };

    progress.abort();

    // Invariant: every touched account holds exactly what the cluster last told us.
    let told: Vec<(String, String)> = {
        let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats
            .told
            .iter()
            .map(|(c, b)| (c.clone(), b.clone()))
            .collect()
    };
    let mut violations = Vec::new();
    for (card, expected) in &told {
        let reply = client
            .query_balance(QueryBalanceRequest {
                card_no: card.clone(),
                account_id: String::new(),
            })
            .await?;
        if &reply.balance != expected {
            violations.push(format!("{card}: told {expected}, holds {}", reply.balance));
        }
    }

    let stats = run.stats.lock().unwrap_or_else(|e| e.into_inner());
    let transactions: u64 = stats
        .latency
        .iter()
        .filter(|(k, _)| **k != "Visit")
        .map(|(_, h)| h.len())
        .sum();
    let mut all = histogram();
    for (kind, h) in &stats.latency {
        if *kind != "Visit" {
            all.add(h)?;
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{transactions} transactions in {seconds:.1} s: {:.0}/s; retries {}",
        transactions as f64 / seconds,
        client.retries()
    );
    println!(
        "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "kind", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let mut per_kind = serde_json::Map::new();
    for (kind, h) in stats.latency.iter().chain(std::iter::once((&"all", &all))) {
        println!(
            "{:<13} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            kind,
            h.len(),
            ms(h, 0.5),
            ms(h, 0.9),
            ms(h, 0.99),
            ms(h, 0.999),
            h.max() as f64 / 1000.0
        );
        per_kind.insert(
            kind.to_string(),
            serde_json::json!({
                "count": h.len(),
                "p50": ms(h, 0.5), "p90": ms(h, 0.9), "p99": ms(h, 0.99),
                "p999": ms(h, 0.999), "max": h.max() as f64 / 1000.0,
            }),
        );
    }
    for (code, n) in &stats.errors {
        println!("error {code}: {n}");
    }
    println!(
        "invariants: {} accounts checked, {} violations",
        told.len(),
        violations.len()
    );
    for v in violations.iter().take(10) {
        println!("  violation: {v}");
    }
    if let Some(path) = &cli.json {
        let summary = serde_json::json!({
            "ops": transactions,
            "throughput_per_s": transactions as f64 / seconds,
            "latency_ms": per_kind["all"].clone(),
            "per_kind": per_kind,
            "errors": stats.errors,
            "retries": client.retries(),
            "invariants": { "ok": violations.is_empty(), "violations": violations },
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(violations.is_empty())
}

/// A local cluster of real `yinyi` processes; stopped (killed) when dropped.
struct LocalCluster {
    addrs: Vec<String>,
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    fn start(size: u64) -> Result<LocalCluster> {
        if size == 0 {
            bail!("--local needs 1 or more nodes");
        }
        let exe = std::env::current_exe()?.with_file_name("yinyi");
        if !exe.exists() {
            bail!(
                "{} not found: build it with `cargo build --release`",
                exe.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("yinyi-loadtest-")
            .tempdir()?;
        let addrs: Vec<String> = (0..size)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                Ok(listener.local_addr()?.to_string())
            })
            .collect::<Result<_>>()?;
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut children = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("node{}.log", i + 1)))?;
            children.push(
                std::process::Command::new(&exe)
                    .args(["start", "--id", &(i + 1).to_string(), "--listen", addr])
                    .arg("--data")
                    .arg(dir.path().join(format!("node{}", i + 1)))
                    .args(["--peers", &peers.join(",")])
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("start {}", exe.display()))?,
            );
        }
        eprintln!("started {size} local nodes under {}", dir.path().display());
        Ok(LocalCluster {
            addrs,
            children,
            _dir: dir,
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits (up to 30 s) until the cluster answers with a leader.
async fn wait_for_leader(targets: &[String]) -> Result<()> {
    let mut config = ClientConfig::new(targets.to_vec());
    config.deadline = Duration::from_secs(2);
    let client = Client::new(config)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = client
            .cluster_status(ClusterStatusRequest { with_digest: false })
            .await
            && status.leader != 0
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the local cluster elected no leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Run {
    /// Forgets the latencies and errors seen so far.
    fn reset(&self) {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        for h in stats.latency.values_mut() {
            h.reset();
        }
        stats.errors.clear();
    }

    /// Transactions and their latency since the last reset.
    fn all(&self) -> Histogram<u64> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = histogram();
        for (kind, h) in &stats.latency {
            if *kind != "Visit" {
                // Same bounds: adding cannot fail.
                let _ = all.add(h);
            }
        }
        all
    }

    async fn one_visit(self: Arc<Self>) {
        let (n, new) = self.patient();
        self.visit(n, new).await;
        self.done_with(n);
    }
}

/// Visits start at `rate` transactions a second (five per visit) for `duration`, whatever
/// the latency (no coordinated omission); returns the seconds until the last one ended.
async fn open_loop(run: &Arc<Run>, rate: u64, duration: Duration) -> Result<f64> {
    let start = Instant::now();
    let every = Duration::from_secs_f64(5.0 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut visits = Vec::new();
    while start.elapsed() < duration {
        tick.tick().await;
        visits.push(tokio::spawn(run.clone().one_visit()));
    }
    for visit in visits {
        visit.await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `clients` patients in a row each, for `duration`.
async fn closed_loop(run: &Arc<Run>, clients: usize, duration: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..clients {
        let run = run.clone();
        loops.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                run.clone().one_visit().await;
            }
        }));
    }
    for l in loops {
        l.await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Raises the open-loop rate step by step until p99 passes the bound; prints each step and the highest rate that held. The figures
/// after it are those of the last step.
async fn find_max(run: &Arc<Run>, cli: &Cli) -> Result<f64> {
    let bound_ms = cli.p99_bound.as_secs_f64() * 1000.0;
    let mut rate = cli.start_rate.max(1);
    let mut best: Option<(u64, f64, f64)> = None;
    println!(
        "{:>16} {:>16} {:>9} {:>6}",
        "offered money/s", "served requests/s", "p99 ms", "held"
    );
    loop {
        run.reset();
        let seconds = open_loop(run, rate, cli.step).await?;
        let all = run.all();
        let served = all.len() as f64 / seconds;
        let p99 = all.value_at_quantile(0.99) as f64 / 1000.0;
        // Open loop: falling behind shows as latency, so the bound alone decides.
        let held = p99 <= bound_ms;
        println!(
            "{rate:>16} {served:>16.0} {p99:>9.2} {:>6}",
            if held { "yes" } else { "no" }
        );
        if !held {
            break;
        }
        best = Some((rate, served, p99));
        rate = rate * 5 / 4;
    }
    match best {
        Some((rate, served, p99)) => println!(
            "highest rate that held p99 ≤ {bound_ms:.0} ms: {rate} money transactions/s offered, {served:.0} requests/s served, p99 {p99:.2} ms"
        ),
        None => println!(
            "even {} /s did not hold p99 ≤ {bound_ms:.0} ms",
            cli.start_rate
        ),
    }
    Ok(cli.step.as_secs_f64())
}

/// Share of the day's visits that arrive in each hour from 07:00 to 17:00 (WORKLOAD.md).
const HOURLY_SHARE: [f64; 11] = [
    0.12, 0.18, 0.16, 0.12, 0.06, 0.03, 0.08, 0.10, 0.08, 0.05, 0.02,
];

/// Visits a second at `t` into a day of `visits` compressed into `day`: the hour's share, with a
/// minute-to-minute swell that brings the busiest moment of each hour to 1.5× its average.
fn day_rate(visits: u64, day: Duration, t: Duration) -> f64 {
    let hour_len = day.as_secs_f64() / HOURLY_SHARE.len() as f64;
    let hour = ((t.as_secs_f64() / hour_len) as usize).min(HOURLY_SHARE.len() - 1);
    let average = visits as f64 * HOURLY_SHARE[hour] / hour_len;
    let phase = (t.as_secs_f64() % hour_len) / hour_len;
    average * (1.0 + 0.5 * (std::f64::consts::TAU * phase).sin())
}

/// The day, open loop: visits start by the curve whatever the latency.
async fn play_day(run: &Arc<Run>, visits: u64, day: Duration) -> Result<f64> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut owed = 0.0;
    let mut last = Duration::ZERO;
    let mut started = Vec::new();
    while start.elapsed() < day {
        tick.tick().await;
        let now = start.elapsed().min(day);
        owed += day_rate(visits, day, now) * (now - last).as_secs_f64();
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            started.push(tokio::spawn(run.clone().one_visit()));
        }
    }
    for visit in started {
        visit.await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A live line on a terminal: requests so far, their rate, p99 and errors (hidden when the
/// output is not a terminal).
fn progress(run: Arc<Run>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let all = run.all();
            let errors: u64 = run
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .errors
                .values()
                .sum();
            bar.set_message(format!(
                "{} requests, {:.0}/s, p99 {:.1} ms, {errors} errors",
                all.len(),
                all.len() as f64 / start.elapsed().as_secs_f64().max(0.001),
                all.value_at_quantile(0.99) as f64 / 1000.0
            ));
            bar.tick();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_curve_delivers_the_days_visits_with_the_morning_peak() {
        let day = Duration::from_secs(1100);
        let steps = 110_000;
        let dt = day.as_secs_f64() / steps as f64;
        let total: f64 = (0..steps)
            .map(|i| day_rate(20_000, day, Duration::from_secs_f64(i as f64 * dt)) * dt)
            .sum();
        assert!((total - 20_000.0).abs() < 50.0, "{total}");
        // 08:00–09:00 is the busiest hour; its peak is 1.5× its average.
        let hour = 100.0;
        let peak = day_rate(20_000, day, Duration::from_secs_f64(hour + hour / 4.0));
        assert!((peak - 1.5 * 20_000.0 * 0.18 / hour).abs() < 1.0, "{peak}");
        assert!(HOURLY_SHARE.iter().sum::<f64>() > 0.999);
    }
}

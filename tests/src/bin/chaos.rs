//! `yinyi-chaos` (`make chaos`): the failure suite's long form. A random schedule of every
//! nemesis against a 3-node cluster under mixed load for minutes, then the checker; or each
//! nemesis alone (`--each`). Prints the seed first; `--seed` replays a schedule.

use std::time::Duration;

use clap::Parser;
use yinyi_loadtest::parse_duration;
use yinyi_tests::nemesis::{self, ALL, Plan, TABLE_HEAD};

#[derive(Parser)]
#[command(
    about = "The failure suite: nemeses against a 3-node cluster under load, then every invariant"
)]
struct Cli {
    /// The schedule's seed (printed at start; give it again to replay).
    #[arg(long)]
    seed: Option<u64>,
    /// How long the load runs (each nemesis's run with --each).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    duration: Duration,
    /// Calm between two strikes.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    calm: Duration,
    /// Concurrent clients (closed loop).
    #[arg(long, default_value_t = 24)]
    clients: usize,
    #[arg(long, default_value_t = 2000)]
    accounts: u64,
    /// Run each nemesis alone, one after another, instead of the random mix.
    #[arg(long)]
    each: bool,
    /// With --each: only the nemeses whose name contains this (e.g. "rolling").
    #[arg(long)]
    only: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(rand::random);
    println!("seed {seed} (replay with --seed {seed})");
    let plans: Vec<Plan> = if cli.each {
        ALL.iter()
            .filter(|n| {
                cli.only
                    .as_ref()
                    .is_none_or(|o| n.name().contains(o.as_str()))
            })
            .map(|n| Plan {
                nemeses: vec![*n],
                random: false,
                seed,
                duration: cli.duration,
                calm: cli.calm,
                clients: cli.clients,
                accounts: cli.accounts,
            })
            .collect()
    } else {
        vec![Plan {
            nemeses: ALL.to_vec(),
            random: true,
            seed,
            duration: cli.duration,
            calm: cli.calm,
            clients: cli.clients,
            accounts: cli.accounts,
        }]
    };
    if plans.is_empty() {
        let names: Vec<&str> = ALL.iter().map(|n| n.name()).collect();
        eprintln!(
            "yinyi-chaos: no nemesis matches --only; they are: {}",
            names.join("; ")
        );
        return std::process::ExitCode::from(2);
    }
    let mut rows = Vec::new();
    let mut failed = false;
    for plan in &plans {
        let dir = match tempfile::Builder::new().prefix("yinyi-chaos-").tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("yinyi-chaos: temp dir: {e}");
                return std::process::ExitCode::from(2);
            }
        };
        match nemesis::run(dir.path(), plan).await {
            Ok(report) => {
                println!("{}", report.row());
                for v in report.violations.iter().take(20) {
                    println!("  violation: {v}");
                }
                if !report.ok() {
                    failed = true;
                    println!("  logs kept in {}", dir.keep().display());
                }
                rows.push(report.row());
            }
            Err(e) => {
                println!("run failed: {e:#} (logs kept in {})", dir.keep().display());
                failed = true;
            }
        }
    }
    println!("\n{TABLE_HEAD}");
    for row in rows {
        println!("{row}");
    }
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

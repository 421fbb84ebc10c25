//! `yinyi snapshot-probe`: what a snapshot of a big state costs. It builds a state of
//! `accounts` patients (each a card issued with a first deposit, then `deposits` cash deposits:
//! accounts, cards, persons, journal and request records, as the write path makes them, through
//! `ledger::apply` and `RocksView` in batches like Raft entries), then exports a snapshot file,
//! and installs it into a fresh store in a new process of its own, so that process's peak
//! resident memory is the install's alone. Prints the state size on disk, the snapshot's size,
//! build and install times, and the installing process's peak memory.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use yinyi_ledger::*;
use yinyi_storage::Store;

/// Peak resident memory of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    yinyi_measure::memory_mib(std::process::id(), "VmHWM").unwrap_or(0.0)
}

use yinyi_measure::dir_bytes;

/// CPU time (user and system) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    yinyi_measure::cpu_times(std::process::id())
        .map_or(0.0, |t| (t.user_us + t.system_us) as f64 / 1e6)
}

fn command(serial: u64, terminal: &TerminalId, at: i64, body: CommandBody) -> Result<Command> {
    Ok(Command {
        request: RequestId::parse(&format!("probe-{serial}"))?,
        terminal: terminal.clone(),
        operator: None,
        at: Timestamp(at),
        body,
    })
}

/// Fills `store` with `accounts` patients and `deposits` deposits each; returns the commands.
fn fill(store: &Store, accounts: u64, deposits: u64) -> Result<u64> {
    const PER_BATCH: u64 = 2_000;
    let admin = TerminalId::parse("A-ADMIN")?;
    let kiosk = TerminalId::parse("K-PROBE")?;
    let start_ms = 1_767_225_600_000; // 2026-01-01
    let mut serial = 0u64;
    let mut index = 0u64;
    let mut apply_batch = |commands: Vec<Command>| -> Result<()> {
        index += 1;
        let mut view = store.view();
        for (position, cmd) in commands.iter().enumerate() {
            let ctx = ApplyCtx {
                txn: TxnId::new(index, position as u64),
                rules: Rules::default(),
            };
            if let Outcome::Rejected(r) = apply(cmd, &mut view, &ctx) {
                bail!("{} refused: {}", cmd.body.name(), r.message);
            }
        }
        store.commit_view(view, &[])?;
        Ok(())
    };
    apply_batch(vec![command(
        0,
        &admin,
        start_ms,
        CommandBody::RegisterTerminal {
            terminal: kiosk.clone(),
        },
    )?])?;
    let mut batch = Vec::new();
    for n in 0..accounts {
        for d in 0..=deposits {
            serial += 1;
            let at = start_ms + serial as i64 * 10;
            let card = CardNo::parse(&format!("HC{n:010}"))?;
            let body = if d == 0 {
                CommandBody::IssueCard {
                    card,
                    card_kind: CardKind::Hospital,
                    holder: Holder {
                        name: format!("patient {n}"),
                        person: PersonKey::parse(&format!("{n:064x}"))?,
                        id_masked: "110***********1234".into(),
                        phone: "138****0000".into(),
                    },
                    first_deposit: Some(Money::from_yuan(100)),
                }
            } else {
                CommandBody::DepositCash {
                    card,
                    amount: Money::from_yuan(20),
                }
            };
            batch.push(command(serial, &kiosk, at, body)?);
            if batch.len() as u64 == PER_BATCH {
                apply_batch(std::mem::take(&mut batch))?;
            }
        }
    }
    if !batch.is_empty() {
        apply_batch(batch)?;
    }
    Ok(serial)
}

/// Builds the state and the snapshot in `dir`, then installs it in a child process.
pub fn run(accounts: u64, deposits: u64, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let source_dir = dir.join("source");
    let snapshot = dir.join("snapshot.bin");
    let began = Instant::now();
    let commands = {
        let store = Store::open(&source_dir).context("open the source store")?;
        fill(&store, accounts, deposits)?
    };
    let filled = began.elapsed();
    let store = Store::open(&source_dir)?;
    let began = Instant::now();
    let exported = store.export_snapshot(&mut std::fs::File::create(&snapshot)?)?;
    let built = began.elapsed();
    drop(store);
    println!(
        "state: {accounts} accounts, {commands} commands applied in {:.1} s; {:.1} MiB on disk",
        filled.as_secs_f64(),
        dir_bytes(&source_dir) as f64 / 1048576.0
    );
    println!(
        "snapshot: {} records, {:.1} MiB, built in {:.2} s (builder's peak RSS so far {:.0} MiB)",
        exported.records,
        exported.bytes as f64 / 1048576.0,
        built.as_secs_f64(),
        peak_rss_mib()
    );
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["snapshot-probe", "--install"])
        .arg(&snapshot)
        .arg("--dir")
        .arg(dir.join("target"))
        .status()?;
    if !status.success() {
        bail!("the install failed");
    }
    Ok(())
}

/// Installs `snapshot` into a fresh store in `dir` and reports time and peak memory.
pub fn install(snapshot: &Path, dir: &Path) -> Result<()> {
    let store = Store::open(dir)?;
    let before = peak_rss_mib();
    let began = Instant::now();
    let cpu_before = cpu_seconds();
    let records = store.install_snapshot_file(snapshot, b"probe")?;
    let took = began.elapsed();
    let cpu_install = cpu_seconds() - cpu_before;
    // RocksDB's flushes and compactions after the install are part of its cost.
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while store.background_work_pending() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!(
        "install: {records} records in {:.2} s (check, table files, ingest), {cpu_install:.2} s of CPU; \
         {:.2} s of CPU with RocksDB's flushes and compactions after it ({:.1} s); installing \
         process peak RSS {:.0} MiB (at start {before:.0} MiB)",
        took.as_secs_f64(),
        cpu_seconds() - cpu_before,
        began.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}

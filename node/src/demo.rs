//! `yinyi demo`: a local 3-node cluster of real processes; a morning's transactions; the leader
//! killed mid-way; more transactions; the old leader back; every node on the same digest.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use yinyi_ledger::{Effect, Outcome};

use crate::local::LocalCluster;
use crate::scenario::Scenario;

const PATIENTS: u64 = 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done(Effect::CardIssued {
            account,
            card,
            balance,
            ..
        }) => {
            format!("card {card} → account {account}, balance ¥{balance}")
        }
        Outcome::Done(Effect::BalanceChanged {
            account,
            amount,
            balance,
            ..
        }) => {
            format!("account {account}: ¥{amount} moved, balance ¥{balance}")
        }
        Outcome::Done(effect) => format!("{effect:?}"),
        Outcome::Rejected(r) => format!("rejected {}: {}", r.code, r.message),
    }
}

pub async fn run() -> Result<()> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new().prefix("yinyi-demo-").tempdir()?;
    println!("▶ starting 3 yinyi nodes under {}", dir.path().display());
    let mut cluster = LocalCluster::start(&exe, dir.path(), 3, vec![])?;
    let leader = cluster.wait_for_leader(STEP_TIMEOUT).await?;
    println!("  node {leader} leads ({})", cluster.peers_arg());

    let mut s = Scenario::new(&format!("demo{}", std::process::id()));
    let mut client = cluster.client();
    client.propose(s.setup_hospital(), STEP_TIMEOUT).await?;
    println!("▶ kiosk K-0101, window W-03 and HIS registered; a shift is open at W-03");

    let issue: Vec<_> = (1..=PATIENTS).map(|n| s.issue_card(n, Some(200))).collect();
    let outcomes = client.propose(issue, STEP_TIMEOUT).await?;
    println!(
        "▶ {PATIENTS} patients get a card with ¥200 in cash, e.g. {}",
        describe(&outcomes[0])
    );
    let bills: Vec<_> = (1..=PATIENTS)
        .map(|n| s.post_bill(n, &format!("REG-{n}"), 2_550))
        .collect();
    client.propose(bills, STEP_TIMEOUT).await?;
    let pays: Vec<_> = (1..=PATIENTS)
        .map(|n| s.pay_bill(n, &format!("REG-{n}")))
        .collect();
    let outcomes = client.propose(pays, STEP_TIMEOUT).await?;
    println!(
        "▶ HIS posts a ¥25.50 registration fee each; paid at the kiosk: {}",
        describe(&outcomes[0])
    );
    let again = client
        .propose(vec![s.pay_bill(1, "REG-1")], STEP_TIMEOUT)
        .await?;
    println!("  paying REG-1 a second time: {}", describe(&again[0]));

    println!("▶ killing the leader, node {leader} (SIGKILL)");
    let killed_at = Instant::now();
    cluster.kill(leader)?;
    let mut client = cluster.client();
    let first = client
        .propose(vec![s.deposit(2, 100)], STEP_TIMEOUT)
        .await?;
    println!(
        "  next write committed {:.0} ms after the kill: {}",
        killed_at.elapsed().as_secs_f64() * 1000.0,
        describe(&first[0])
    );
    let new_leader = cluster.wait_for_leader(STEP_TIMEOUT).await?;
    println!("  node {new_leader} leads now");
    let more: Vec<_> = (1..=PATIENTS)
        .flat_map(|n| {
            [
                s.post_bill(n, &format!("LAB-{n}"), 8_800),
                s.pay_bill(n, &format!("LAB-{n}")),
            ]
        })
        .collect();
    let outcomes = client.propose(more, STEP_TIMEOUT).await?;
    println!(
        "▶ {PATIENTS} lab bills of ¥88.00 posted and paid: {}",
        describe(&outcomes[1])
    );

    println!("▶ restarting node {leader}; it catches up from the others");
    cluster.spawn(leader)?;
    let statuses = cluster.wait_converged(Duration::from_secs(60)).await?;
    for st in &statuses {
        println!(
            "  node {} {:<8} applied {:>4}  digest {}",
            st.id,
            st.state,
            st.applied.unwrap_or(0),
            st.digest.as_deref().map_or("-", |d| &d[..16.min(d.len())])
        );
    }
    if statuses.windows(2).any(|w| w[0].digest != w[1].digest) {
        bail!("digests differ");
    }
    println!("✔ all three nodes hold the same state");
    for id in cluster.running() {
        cluster.stop(id)?;
    }
    println!("▶ nodes stopped (SIGTERM)");
    Ok(())
}

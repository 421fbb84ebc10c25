//! `--mix anchor`: the shape of the PostgreSQL anchor the README compares yinyi with, so the two
//! are compared transaction for transaction. Over the preloaded accounts:
//!
//! - 60% a charge: PayBill, from the account, of the one bill the preload posted for it
//!   (accounts come in a shuffled order, so each is charged once; refused, and nothing
//!   changes, when the balance is short);
//! - 25% a cash top-up of 100.00 at a kiosk;
//! - 15% a balance query.
//!
//! Every acknowledged charge and top-up is booked like the visits' own, so the end-of-run
//! checks hold the anchor to the same invariants.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use rand::Rng;
use rand::seq::SliceRandom;
use yinyi_api::v1::*;

use crate::workload::{Op, Run};

/// A top-up's amount.
pub const TOP_UP_CENTS: i64 = 10_000;

/// The anchor's accounts, in the order they are charged.
pub struct Anchor {
    order: Vec<u64>,
    next: AtomicU64,
}

/// Bill `n`'s amount: 10.00 to 320.00, spread over the accounts (a few more than the
/// preloaded 300.00, so some charges are refused for a short balance, as in the anchor).
pub fn bill_cents(n: u64) -> i64 {
    let spread = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    1_000 + (spread % 31_001) as i64
}

impl Anchor {
    /// The preloaded accounts `0..accounts`, shuffled.
    pub fn new(accounts: u64) -> Anchor {
        let mut order: Vec<u64> = (0..accounts).collect();
        order.shuffle(&mut rand::rng());
        Anchor {
            order,
            next: AtomicU64::new(0),
        }
    }

    fn next_charged(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.order.get(i as usize).copied()
    }

    fn any(&self) -> u64 {
        rand::rng().random_range(0..self.order.len().max(1) as u64)
    }

    /// Posts each account's bill from HIS, `parallel` at a time; `on_done` hears of each.
    pub async fn post_bills(
        run: &Arc<Run>,
        accounts: u64,
        parallel: u64,
        on_done: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let on_done = Arc::new(on_done);
        let mut workers = Vec::new();
        for _ in 0..parallel.max(1) {
            let (run, next, on_done) = (run.clone(), next.clone(), on_done.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= accounts {
                        return anyhow::Ok(());
                    }
                    let patient = run.patient(n).context("a preloaded account")?;
                    run.client
                        .post_bill(PostBillRequest {
                            request_id: run.id(),
                            terminal_id: run.his(),
                            bill_id: bill_id(&run, n),
                            card_no: patient.card,
                            kind: BillKind::Outpatient as i32,
                            amount: crate::workload::yuan(bill_cents(n)),
                            insurance: None,
                        })
                        .await
                        .map_err(|e| anyhow::anyhow!("post the anchor's bill {n}: {e}"))?;
                    on_done(1);
                }
            }));
        }
        for worker in workers {
            worker.await??;
        }
        Ok(())
    }

    /// Whether every account's bill was charged (the run stopped there).
    pub fn exhausted(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.order.len() as u64
    }

    /// One transaction of the mix; false when a charge is drawn and every bill was charged
    /// already (the mix would no longer be the anchor's: the run stops).
    pub async fn step(&self, run: &Run) -> bool {
        let draw = rand::rng().random_range(0..100);
        if draw < 60 {
            let Some(n) = self.next_charged() else {
                return false;
            };
            let Some(patient) = run.patient(n) else {
                return true;
            };
            let request = PayBillRequest {
                request_id: run.id(),
                terminal_id: run.kiosk(n),
                bill_id: bill_id(run, n),
                card_no: patient.card,
                ..Default::default()
            };
            let cents = bill_cents(n);
            let _ = run.perform(n, Op::Pay { request, cents }).await;
        } else if draw < 85 {
            let n = self.any();
            let Some(patient) = run.patient(n) else {
                return true;
            };
            let request = DepositCashRequest {
                request_id: run.id(),
                terminal_id: run.kiosk(n),
                operator_id: String::new(),
                card_no: patient.card,
                amount: crate::workload::yuan(TOP_UP_CENTS),
            };
            let _ = run.perform(n, Op::Deposit(request)).await;
        } else {
            let n = self.any();
            let Some(patient) = run.patient(n) else {
                return true;
            };
            run.query_balance(patient.card).await;
        }
        true
    }
}

fn bill_id(run: &Run, n: u64) -> String {
    format!("{}A{n}", run.prefix)
}

/// `clients` loops of the anchor's mix for `duration`; returns the seconds it took.
pub async fn closed_loop(
    run: &Arc<Run>,
    anchor: Arc<Anchor>,
    clients: usize,
    duration: Duration,
) -> Result<f64> {
    let run = run.clone();
    crate::drive::repeat(clients, duration, move || {
        let (run, anchor) = (run.clone(), anchor.clone());
        async move { anchor.step(&run).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::PRELOAD_DEPOSIT_CENTS;

    #[test]
    fn bills_range_over_the_preloaded_balance_and_a_little_beyond() {
        let amounts: Vec<i64> = (0..100_000).map(bill_cents).collect();
        assert!(amounts.iter().all(|&c| (1_000..=32_000).contains(&c)));
        let short = amounts
            .iter()
            .filter(|&&c| c > PRELOAD_DEPOSIT_CENTS)
            .count();
        // (320 − 300) / 310 of the bills: about 6%.
        assert!((4_000..9_000).contains(&short), "{short}");
    }

    #[test]
    fn each_account_is_charged_once() {
        let anchor = Anchor::new(1_000);
        assert!(!anchor.exhausted());
        let mut charged: Vec<u64> = std::iter::from_fn(|| anchor.next_charged()).collect();
        assert!(anchor.exhausted());
        assert_eq!(charged.len(), 1_000);
        charged.sort_unstable();
        charged.dedup();
        assert_eq!(charged.len(), 1_000);
    }
}

//! yinyi-loadtest as a library: the outpatient workload of `WORKLOAD.md` with the load
//! tester's own book of every acknowledged outcome, the ways of driving it, the end-of-run
//! invariant checks, a local cluster with chaos, and the report. The `yinyi-loadtest` binary
//! drives it from the command line; the failure suite (`yinyi-tests`) drives it under its
//! nemeses.

pub mod anchor;
pub mod check;
pub mod cluster;
pub mod drive;
pub mod report;
pub mod stats;
pub mod workload;

pub use yinyi_api::parse_duration;

/// The preload's figures: accounts issued, seconds.
#[derive(Debug, Clone, Copy)]
pub struct Preload {
    pub accounts: u64,
    pub seconds: f64,
}

/// One step of `--find-max`: rate offered, requests served a second, p99 ms, held.
pub type Step = (u64, f64, f64, bool);

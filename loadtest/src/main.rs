//! yinyi-loadtest (to be built in the load-tester issue): plays `WORKLOAD.md`'s outpatient day
//! against a cluster through the public API (open loop by the hourly curve, constant rate, closed
//! loop, or `--find-max`), preloads patients, injects bank faults and chaos, checks the domain
//! invariants at the end and reports throughput and latency.
//!
//! Until the public API exists it only says so; `yinyi bench` measures the replicated core.

fn main() -> std::process::ExitCode {
    eprintln!(
        "yinyi-loadtest is not built yet: it needs the public API. \
         Measure the replicated core with `yinyi bench` instead."
    );
    std::process::ExitCode::from(2)
}

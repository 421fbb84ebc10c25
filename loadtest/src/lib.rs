//! yinyi-loadtest as a library: the outpatient workload of `WORKLOAD.md` with the load
//! tester's own book of every acknowledged outcome, the ways of driving it, the end-of-run
//! invariant checks, a local cluster with chaos, and the report. The `yinyi-loadtest` binary
//! drives it from the command line; the failure suite (`yinyi-tests`) drives it under its
//! nemeses.

pub mod check;
pub mod cluster;
pub mod drive;
pub mod report;
pub mod stats;
pub mod workload;

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// The preload's figures: accounts issued, seconds.
#[derive(Debug, Clone, Copy)]
pub struct Preload {
    pub accounts: u64,
    pub seconds: f64,
}

/// One step of `--find-max`: rate offered, requests served a second, p99 ms, held.
pub type Step = (u64, f64, f64, bool);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10h").is_err());
    }
}

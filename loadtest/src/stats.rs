//! What the run saw: latency per kind, errors by code, a per-second timeline, the longest
//! stretch without a successful request, and the faults injected.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Request kinds, in the order the summary lists them ("Visit" is a whole visit, not a request).
pub const KINDS: [&str; 23] = [
    "IssueCard",
    "DepositCash",
    "TopUpBankCard",
    "TopUpThirdParty",
    "PostBill",
    "PayBill",
    "PayBillByCard",
    "AuthorizePayment",
    "CapturePayment",
    "ReleaseAuthorization",
    "CancelBill",
    "Refund",
    "Withdraw",
    "ReportLoss",
    "ReplaceCard",
    "QueryBalance",
    "OpenEpisode",
    "EpisodeDeposit",
    "EpisodeDepositByCard",
    "PostEpisodeCharges",
    "FinalizeEpisode",
    "SettleEpisode",
    "Visit",
];

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Microseconds to milliseconds for printing.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// One second of the run.
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Second {
    fn new() -> Second {
        Second {
            ok: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds"),
        }
    }
}

pub struct Seen {
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Second>,
    /// When the measured run started; `None` during the preload.
    pub start: Option<Instant>,
    pub last_ok: Option<Instant>,
    /// Stretches longer than [`GAP_NOTED`] without a successful request: (from, to) in seconds
    /// since the start.
    pub gaps: Vec<(f64, f64)>,
    /// Faults injected: seconds since the start, and what.
    pub faults: Vec<(f64, String)>,
    /// When each request in flight began (a count per instant).
    in_flight: BTreeMap<Instant, u32>,
}

/// A stretch without any successful request this long, while a request waited through it, is
/// recorded as unavailability.
const GAP_NOTED: Duration = Duration::from_millis(200);

pub struct Stats {
    seen: Mutex<Seen>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            seen: Mutex::new(Seen {
                latency: KINDS.iter().map(|k| (*k, histogram())).collect(),
                errors: BTreeMap::new(),
                timeline: Vec::new(),
                start: None,
                last_ok: None,
                gaps: Vec::new(),
                faults: Vec::new(),
                in_flight: BTreeMap::new(),
            }),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets everything seen so far and starts the clock of the measured run.
    pub fn start(&self) {
        let mut seen = self.lock();
        for h in seen.latency.values_mut() {
            h.reset();
        }
        seen.errors.clear();
        seen.timeline.clear();
        seen.gaps.clear();
        seen.faults.clear();
        let now = Instant::now();
        seen.start = Some(now);
        seen.last_ok = Some(now);
    }

    /// Stops counting gaps (the load has ended).
    pub fn stop(&self) {
        self.lock().start = None;
    }

    pub fn elapsed(&self) -> f64 {
        self.lock().start.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }

    pub fn fault(&self, what: String) {
        let mut seen = self.lock();
        let at = seen.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        seen.faults.push((at, what));
    }

    /// A request begins: returns its start, to give to [`Stats::ok`] or [`Stats::error`].
    pub fn begin(&self) -> Instant {
        let now = Instant::now();
        *self.lock().in_flight.entry(now).or_default() += 1;
        now
    }

    /// A whole visit that began at `began` ended.
    pub fn visit(&self, began: Instant) {
        let micros = began.elapsed().as_micros() as u64;
        if let Some(h) = self.lock().latency.get_mut("Visit") {
            h.saturating_record(micros);
        }
    }

    /// A request of `kind` that began at `began` succeeded now. The stretch since the previous
    /// success is unavailability when some request waited through all of it (the oldest in
    /// flight, this one included, began before that success).
    pub fn ok(&self, kind: &'static str, began: Instant) {
        let now = Instant::now();
        let micros = (now - began).as_micros() as u64;
        let mut seen = self.lock();
        let oldest = seen.in_flight.keys().next().copied().unwrap_or(began);
        seen.end(began);
        if let Some(h) = seen.latency.get_mut(kind) {
            h.saturating_record(micros);
        }
        if let Some(start) = seen.start {
            if let Some(last) = seen.last_ok
                && now - last > GAP_NOTED
                && oldest <= last
            {
                let from = (last - start).as_secs_f64();
                seen.gaps.push((from, (now - start).as_secs_f64()));
            }
            seen.last_ok = Some(now);
            let second = second_of(&mut seen, start, now);
            second.ok += 1;
            second.latency.saturating_record(micros);
        }
    }

    pub fn error(&self, kind: &'static str, code: &str, began: Instant) {
        let now = Instant::now();
        let mut seen = self.lock();
        seen.end(began);
        *seen.errors.entry(format!("{kind}:{code}")).or_default() += 1;
        if let Some(start) = seen.start {
            second_of(&mut seen, start, now).errors += 1;
        }
    }

    /// Requests (every kind but whole visits) merged into one histogram.
    pub fn all(&self) -> Histogram<u64> {
        let seen = self.lock();
        merged(&seen)
    }

    pub fn error_count(&self) -> u64 {
        self.lock().errors.values().sum()
    }
}

pub fn merged(seen: &Seen) -> Histogram<u64> {
    let mut all = histogram();
    for (kind, h) in &seen.latency {
        if *kind != "Visit" {
            // Same bounds: adding cannot fail.
            let _ = all.add(h);
        }
    }
    all
}

fn second_of(seen: &mut Seen, start: Instant, now: Instant) -> &mut Second {
    let index = (now - start).as_secs() as usize;
    while seen.timeline.len() <= index {
        seen.timeline.push(Second::new());
    }
    &mut seen.timeline[index]
}

impl Seen {
    fn end(&mut self, began: Instant) {
        if let Some(n) = self.in_flight.get_mut(&began) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&began);
            }
        }
    }

    /// The longest stretch without a successful request, in milliseconds.
    pub fn unavailable_max_ms(&self) -> f64 {
        self.gaps
            .iter()
            .map(|(from, to)| (to - from) * 1000.0)
            .fold(0.0, f64::max)
    }

    /// For each fault, the longest stretch without success that began from its injection up
    /// to the next fault (or the end).
    pub fn unavailable_by_fault(&self) -> Vec<(f64, String, f64)> {
        let mut out = Vec::new();
        for (i, (at, what)) in self.faults.iter().enumerate() {
            let until = self.faults.get(i + 1).map_or(f64::MAX, |f| f.0);
            let worst = self
                .gaps
                .iter()
                .filter(|(from, to)| *to >= *at && *from < until)
                .map(|(from, to)| (to - from.max(*at)) * 1000.0)
                .fold(0.0, f64::max);
            out.push((*at, what.clone(), worst));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_attributed_to_the_fault_they_follow() {
        let seen = Seen {
            latency: BTreeMap::new(),
            errors: BTreeMap::new(),
            timeline: Vec::new(),
            start: None,
            last_ok: None,
            gaps: vec![(1.0, 1.3), (10.2, 11.7), (20.0, 20.25)],
            faults: vec![
                (10.0, "kill-leader".into()),
                (19.5, "pause-follower".into()),
            ],
            in_flight: BTreeMap::new(),
        };
        assert!((seen.unavailable_max_ms() - 1500.0).abs() < 1e-6);
        let by_fault = seen.unavailable_by_fault();
        assert!((by_fault[0].2 - 1500.0).abs() < 1e-6);
        assert!((by_fault[1].2 - 250.0).abs() < 1e-6);
    }
}

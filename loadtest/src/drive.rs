//! How visits arrive: open loop at a rate, closed loop with N patients, the day's curve, and
//! the stepped search for the highest rate that holds a p99 bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::Step;
use crate::workload::Run;

/// Visits start at `rate` money transactions a second (five per visit) for `duration`,
/// whatever the latency (no coordinated omission); returns the seconds until the last ended.
pub async fn open_loop(run: &Arc<Run>, rate: u64, duration: Duration) -> Result<f64> {
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
pub async fn closed_loop(run: &Arc<Run>, clients: usize, duration: Duration) -> Result<f64> {
    let run = run.clone();
    repeat(clients, duration, move || {
        let run = run.clone();
        async move {
            run.one_visit().await;
            true
        }
    })
    .await
}

/// `clients` loops, each doing `one` again and again until `duration` has passed or `one`
/// says there is no more to do (false); returns the seconds until the last one ended.
pub async fn repeat<F, Fut>(clients: usize, duration: Duration, one: F) -> Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..clients {
        let one = one.clone();
        loops.push(tokio::spawn(async move {
            while start.elapsed() < duration && one().await {}
        }));
    }
    for l in loops {
        l.await?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Raises the open-loop rate step by step until p99 passes the bound. The figures after it
/// are those of the last step.
pub async fn find_max_rate(
    run: &Arc<Run>,
    start_rate: u64,
    step: Duration,
    p99_bound: Duration,
) -> Result<(f64, Vec<Step>)> {
    let bound_ms = p99_bound.as_secs_f64() * 1000.0;
    let mut rate = start_rate.max(1);
    let mut steps = Vec::new();
    eprintln!(
        "{:>16} {:>18} {:>9} {:>6}",
        "offered money/s", "served requests/s", "p99 ms", "held"
    );
    loop {
        run.stats.start();
        let seconds = open_loop(run, rate, step).await?;
        let all = run.stats.all();
        let served = all.len() as f64 / seconds;
        let p99 = all.value_at_quantile(0.99) as f64 / 1000.0;
        // Open loop: falling behind shows as latency, so the bound alone decides.
        let held = p99 <= bound_ms;
        eprintln!(
            "{rate:>16} {served:>18.0} {p99:>9.2} {:>6}",
            if held { "yes" } else { "no" }
        );
        steps.push((rate, served, p99, held));
        if !held {
            return Ok((seconds, steps));
        }
        rate = rate * 5 / 4;
    }
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
pub async fn play_day(run: &Arc<Run>, visits: u64, day: Duration) -> Result<f64> {
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

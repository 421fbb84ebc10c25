//! The end of a run: the summary table, `--json`, and `--report DIR` (an HTML page with PNG
//! plots of throughput and latency over time, faults marked).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde_json::json;

use crate::check::Checked;
use crate::stats::{KINDS, merged, ms};
use crate::workload::Run;
use crate::{Preload, Step};

pub struct KindRow {
    pub kind: &'static str,
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn row(kind: &'static str, h: &Histogram<u64>) -> KindRow {
    KindRow {
        kind,
        count: h.len(),
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

pub struct Summary {
    pub seconds: f64,
    pub requests: u64,
    /// Money transactions (everything but bill posts, cancellations and queries).
    pub money: u64,
    pub rows: Vec<KindRow>,
    pub all: KindRow,
    pub errors: BTreeMap<String, u64>,
    pub retries: u64,
    pub bank: BTreeMap<String, u64>,
    pub unavailable_max_ms: f64,
    pub by_fault: Vec<(f64, String, f64)>,
    pub preload: Preload,
    pub find_max: Option<Vec<Step>>,
    pub checked: Checked,
}

const NOT_MONEY: [&str; 7] = [
    "PostBill",
    "CancelBill",
    "QueryBalance",
    "OpenEpisode",
    "PostEpisodeCharges",
    "FinalizeEpisode",
    "Visit",
];

impl Summary {
    pub fn new(
        run: &Run,
        seconds: f64,
        preload: Preload,
        checked: Checked,
        find_max: Option<Vec<Step>>,
    ) -> Summary {
        let seen = run.stats.lock();
        let all = merged(&seen);
        let rows: Vec<KindRow> = KINDS
            .iter()
            .filter_map(|k| seen.latency.get(k).map(|h| row(k, h)))
            .filter(|r| r.count > 0)
            .collect();
        let money = rows
            .iter()
            .filter(|r| !NOT_MONEY.contains(&r.kind))
            .map(|r| r.count)
            .sum();
        Summary {
            seconds,
            requests: all.len(),
            money,
            all: row("all", &all),
            rows,
            errors: seen.errors.clone(),
            retries: run.client.retries(),
            bank: run
                .bank_states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            unavailable_max_ms: seen.unavailable_max_ms(),
            by_fault: seen.unavailable_by_fault(),
            preload,
            find_max,
            checked,
        }
    }

    pub fn print(&self) {
        if let Some(steps) = &self.find_max {
            match steps.iter().rev().find(|s| s.3) {
                Some((rate, served, p99, _)) => println!(
                    "highest rate that held the p99 bound: {rate} money transactions/s offered, {served:.0} requests/s served, p99 {p99:.2} ms"
                ),
                None => println!("even the first step did not hold the p99 bound"),
            }
        }
        println!(
            "{} requests ({} money transactions) in {:.1} s: {:.0} requests/s, {:.0} money/s; retries {}",
            self.requests,
            self.money,
            self.seconds,
            self.requests as f64 / self.seconds,
            self.money as f64 / self.seconds,
            self.retries
        );
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "kind", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for r in self.rows.iter().chain(std::iter::once(&self.all)) {
            println!(
                "{:<16} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                r.kind, r.count, r.p50, r.p90, r.p99, r.p999, r.max
            );
        }
        for (code, n) in &self.errors {
            println!("error {code}: {n}");
        }
        if !self.bank.is_empty() {
            let states: Vec<String> = self.bank.iter().map(|(s, n)| format!("{s} {n}")).collect();
            println!(
                "bank operations: {}; unresolved on the nodes: {}",
                states.join(", "),
                self.checked.unresolved_bank_ops()
            );
        }
        println!(
            "longest stretch without a successful request: {:.0} ms",
            self.unavailable_max_ms
        );
        for (at, what, worst) in &self.by_fault {
            println!("  fault at {at:.1} s: {what}: {worst:.0} ms without success");
        }
        for node in &self.checked.nodes {
            if let Some(r) = &node.reply {
                println!(
                    "node {} audit: applied {}, {} accounts, {} entries, Σ {}, {} unresolved, digest {}, {}",
                    r.node,
                    r.applied,
                    r.accounts,
                    r.journal_entries,
                    r.total_balance,
                    r.unresolved_bank_ops,
                    r.digest.get(..12).unwrap_or(&r.digest),
                    if r.ok { "ok" } else { "PROBLEMS" }
                );
            }
        }
        match &self.checked.his_recon {
            Ok((lines, matched)) => {
                println!("HIS reconciliation: {lines} bills paid, {matched} matched")
            }
            Err(why) => println!("HIS reconciliation: {why}"),
        }
        match &self.checked.insurance_recon {
            Ok((listed, matched)) => println!(
                "insurance list (医保对账): {listed} insured bills settled, {matched} matched the \
                 bills posted"
            ),
            Err(why) => println!("insurance list (医保对账): {why}"),
        }
        match &self.checked.settlement {
            Ok(d) => println!(
                "settlement (清分结算) of {}: {} lines, collected {}, paid out {}, fees {}, reserve {}, due {}; the link paid {}: {}",
                d.date,
                d.lines,
                d.collected,
                d.paid_out,
                d.fees,
                d.reserve_kept,
                d.due,
                if d.received.is_empty() {
                    "nothing"
                } else {
                    &d.received
                },
                d.status
            ),
            Err(why) => println!("settlement (清分结算): {why}"),
        }
        println!(
            "invariants: {} accounts checked against the book, {} acknowledged transactions sought in the journals ({} lost, {} duplicated), {} violations",
            self.checked.accounts_checked,
            self.checked.acknowledged,
            self.checked.lost,
            self.checked.duplicated,
            self.checked.violations.len()
        );
        for v in self.checked.violations.iter().take(20) {
            println!("  violation: {v}");
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let latency = |r: &KindRow| json!({"count": r.count, "p50": r.p50, "p90": r.p90, "p99": r.p99, "p999": r.p999, "max": r.max});
        let per_kind: serde_json::Map<String, serde_json::Value> = self
            .rows
            .iter()
            .map(|r| (r.kind.to_string(), latency(r)))
            .collect();
        json!({
            "ops": self.requests,
            "money_transactions": self.money,
            "seconds": self.seconds,
            "throughput_per_s": self.requests as f64 / self.seconds,
            "money_per_s": self.money as f64 / self.seconds,
            "latency_ms": latency(&self.all),
            "per_kind": per_kind,
            "errors": self.errors,
            "retries": self.retries,
            "invariants": {
                "ok": self.checked.violations.is_empty(),
                "accounts_checked": self.checked.accounts_checked,
                "acknowledged": self.checked.acknowledged,
                "lost": self.checked.lost,
                "duplicated": self.checked.duplicated,
                "violations": self.checked.violations,
            },
            "bank": {
                "unresolved": self.checked.unresolved_bank_ops(),
                "reversed": self.bank.get("REVERSED").copied().unwrap_or(0),
                "states": self.bank,
                "unknown_outcomes_left": self.checked.unknown_left,
                "settlement": self.checked.settlement.as_ref().map_or_else(
                    |why| json!({"not_run": why}),
                    |d| json!({"date": d.date, "due": d.due, "received": d.received, "status": d.status}),
                ),
            },
            "unavailable_max_ms": self.unavailable_max_ms,
            "faults": self.by_fault.iter().map(|(at, what, worst)| json!({
                "at_s": at, "fault": what, "unavailable_max_ms": worst,
            })).collect::<Vec<_>>(),
            "preload": {
                "accounts": self.preload.accounts,
                "seconds": self.preload.seconds,
                "per_s": self.preload.accounts as f64 / self.preload.seconds.max(0.001),
            },
            "find_max": self.find_max.as_ref().map(|steps| steps.iter().map(|(rate, served, p99, held)| json!({
                "offered_money_per_s": rate, "served_requests_per_s": served, "p99_ms": p99, "held": held,
            })).collect::<Vec<_>>()),
            "nodes": self.checked.nodes.iter().filter_map(|n| n.reply.as_ref()).map(|r| json!({
                "node": r.node, "applied": r.applied, "digest": r.digest, "ok": r.ok,
                "accounts": r.accounts, "total_balance": r.total_balance,
                "unresolved_bank_ops": r.unresolved_bank_ops,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Fonts the plots' labels may use, looked for in these places (Debian's fonts-dejavu-core
/// first); without one the plots are drawn unlabelled and the page says what the axes are.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        FONTS.iter().any(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// One line of a plot: its name, colour and points (seconds, value).
type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

fn plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    faults: &[(f64, String)],
) -> Result<()> {
    let labels = load_font();
    let x_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .chain(faults.iter().map(|f| f.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if labels {
        builder
            .caption(title, ("sans-serif", 20))
            .x_label_area_size(36)
            .y_label_area_size(64);
    }
    let mut chart = builder.build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    if labels {
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc(y_label)
            .draw()?;
    } else {
        chart.configure_mesh().x_labels(0).y_labels(0).draw()?;
    }
    for (name, colour, points) in series {
        let drawn = chart.draw_series(LineSeries::new(points.iter().copied(), colour))?;
        if labels {
            drawn
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
        }
    }
    for (at, _) in faults {
        chart.draw_series(LineSeries::new([(*at, 0.0), (*at, y_max)], &MAGENTA))?;
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn write_report(dir: &Path, run: &Run, summary: &Summary) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let (throughput, errors, p50, p99, faults) = {
        let seen = run.stats.lock();
        let mut throughput = Vec::new();
        let mut errors = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for (i, second) in seen.timeline.iter().enumerate() {
            let t = i as f64;
            throughput.push((t, second.ok as f64));
            errors.push((t, second.errors as f64));
            if second.ok > 0 {
                p50.push((t, ms(second.latency.value_at_quantile(0.5))));
                p99.push((t, ms(second.latency.value_at_quantile(0.99))));
            }
        }
        (throughput, errors, p50, p99, seen.faults.clone())
    };
    plot(
        &dir.join("throughput.png"),
        "Throughput",
        "requests per second",
        &[
            ("successful requests/s", BLUE, throughput),
            ("errors/s", RED, errors),
        ],
        &faults,
    )?;
    plot(
        &dir.join("latency.png"),
        "Latency",
        "milliseconds",
        &[("p50", GREEN, p50), ("p99", RED, p99)],
        &faults,
    )?;

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>yinyi load test</title>\
         <style>body{{font-family:sans-serif;max-width:1040px;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}.bad{{color:#b00}}</style></head><body>\
         <h1>yinyi load test</h1><p>{} requests ({} money transactions) in {:.1} s: \
         <b>{:.0} requests/s</b>, {:.0} money transactions/s; retries {}; longest stretch without a \
         successful request {:.0} ms.</p>",
        summary.requests,
        summary.money,
        summary.seconds,
        summary.requests as f64 / summary.seconds,
        summary.money as f64 / summary.seconds,
        summary.retries,
        summary.unavailable_max_ms
    );
    let invariants = if summary.checked.violations.is_empty() {
        format!(
            "<p>Invariants: <b>all held</b> ({} accounts checked against the book; every node audited).</p>",
            summary.checked.accounts_checked
        )
    } else {
        let items: String = summary
            .checked
            .violations
            .iter()
            .map(|v| format!("<li>{}</li>", escape(v)))
            .collect();
        format!(
            "<p class=\"bad\">Invariants: <b>{} violations</b></p><ul>{items}</ul>",
            summary.checked.violations.len()
        )
    };
    html.push_str(&invariants);
    html.push_str("<h2>Latency by kind (ms)</h2><table><tr><th>kind</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for r in summary.rows.iter().chain(std::iter::once(&summary.all)) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            r.kind, r.count, r.p50, r.p90, r.p99, r.p999, r.max
        );
    }
    html.push_str("</table>");
    if !summary.errors.is_empty() {
        html.push_str("<h2>Errors</h2><table><tr><th>kind:code</th><th>count</th></tr>");
        for (code, n) in &summary.errors {
            let _ = write!(html, "<tr><td>{}</td><td>{n}</td></tr>", escape(code));
        }
        html.push_str("</table>");
    }
    if !summary.by_fault.is_empty() {
        html.push_str("<h2>Faults</h2><table><tr><th>fault</th><th>at (s)</th><th>longest stretch without success (ms)</th></tr>");
        for (at, what, worst) in &summary.by_fault {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{at:.1}</td><td>{worst:.0}</td></tr>",
                escape(what)
            );
        }
        html.push_str("</table>");
    }
    let axes = if load_font() {
        ""
    } else {
        " (no font was found, so the plots carry no labels: x is seconds into the run; in the first, blue is successful requests a second and red errors; in the second, green is p50 and red p99 in milliseconds)"
    };
    let _ = write!(
        html,
        "<h2>Over time</h2><p>Magenta lines mark injected faults{axes}.</p>\
         <img src=\"throughput.png\" alt=\"throughput over time\"><img src=\"latency.png\" alt=\"latency over time\">\
         </body></html>"
    );
    std::fs::write(dir.join("index.html"), html)?;
    Ok(())
}

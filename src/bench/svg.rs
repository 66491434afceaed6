//! A hand-written SVG bar chart of a scenario: one group of bars per case (client count),
//! one bar per target, the value printed on each bar. Throughput for closed-loop runs, p99
//! for open-loop runs (fixed offered load), KiB per client for idle memory.

use super::report::{fmt_us, ScenarioReport, TargetReport};
use super::scenario::Workload;
use std::fmt::Write as _;

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];
const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 50.0;

/// A value per bar and how to print it.
type Value = fn(&TargetReport) -> f64;
type Show = fn(f64) -> String;

/// What the bars show for this scenario.
fn metric(r: &ScenarioReport) -> (&'static str, Value, Show) {
    if r.scenario.workload == Workload::IdleMemory {
        (
            "resident memory per idle client (KiB, lower is better)",
            |t| t.rss_per_client_kib.unwrap_or(0.0),
            |v| format!("{v:.1}"),
        )
    } else if r.scenario.rate.is_some() {
        (
            "p99 latency at a fixed offered load (lower is better)",
            |t| t.p99_us as f64,
            |v| fmt_us(v as u64),
        )
    } else {
        (
            "throughput (operations per second, higher is better)",
            |t| t.ops_per_sec,
            |v| format!("{v:.0}"),
        )
    }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart as an SVG document.
pub fn chart(r: &ScenarioReport) -> String {
    let (label, value, show) = metric(r);
    let names: Vec<&str> = r
        .cases
        .first()
        .map(|c| c.targets.iter().map(|t| t.name.as_str()).collect())
        .unwrap_or_default();
    let top = r
        .cases
        .iter()
        .flat_map(|c| c.targets.iter().map(value))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"16\" font-weight=\"bold\">{}</text>\n\
         <text x=\"{LEFT}\" y=\"40\" fill=\"#555\">{}</text>",
        escape(&r.scenario.name),
        escape(label)
    );
    for (i, name) in names.iter().enumerate() {
        let x = LEFT + i as f64 * 130.0;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"50\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"60\">{}</text>",
            COLORS[i % COLORS.len()],
            x + 16.0,
            escape(name)
        );
    }
    for tick in 0..=4 {
        let v = top * f64::from(tick) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(tick) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&show(v))
        );
    }
    let groups = r.cases.len().max(1) as f64;
    let group_w = plot_w / groups;
    for (g, case) in r.cases.iter().enumerate() {
        let bars = case.targets.len().max(1) as f64;
        let bar_w = (group_w * 0.8 / bars).min(80.0);
        let x0 = LEFT + g as f64 * group_w + (group_w - bar_w * bars) / 2.0;
        for (i, t) in case.targets.iter().enumerate() {
            let v = value(t);
            let h = plot_h * v / top;
            let x = x0 + i as f64 * bar_w;
            let y = TOP + plot_h - h;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{}: {}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
                bar_w - 2.0,
                COLORS[i % COLORS.len()],
                escape(&t.name),
                escape(&show(v)),
                x + bar_w / 2.0 - 1.0,
                y - 3.0,
                escape(&show(v))
            );
        }
        let label = if case.active < case.clients && case.active > 0 {
            format!("{} connected, {} active", case.clients, case.active)
        } else {
            format!("{} clients", case.clients)
        };
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            LEFT + g as f64 * group_w + group_w / 2.0,
            HEIGHT - BOTTOM + 20.0,
            escape(&label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

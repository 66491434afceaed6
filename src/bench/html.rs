//! The single self-contained HTML page of a scenario (`OUT/NAME.html`), for a team to
//! attach to a ticket: what ran where, the warnings, the table per case (ops/s, CPU per
//! operation, latency percentiles, ratio), the chart inline, and every round with the
//! machine's load. No scripts, no external files.

use super::report::{figures, fmt_cpu, notes, ScenarioReport, TargetReport};
use super::svg::{chart, escape};
use std::fmt::Write as _;

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;\
color:#222}table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;\
padding:.25em .6em}td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}\
.warn{background:#fff4d6;border-left:4px solid #e0a100;padding:.4em .8em;margin:.3em 0}\
small{color:#666}";

/// The page.
pub fn page(r: &ScenarioReport) -> String {
    let s = &r.scenario;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pake bench: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>{name}</h1><p>{desc}</p>\n<p><small>{rounds} round(s) × {secs} s per target, \
         interleaved; ratios to <b>{base}</b>; started at Unix time {at}. Machine: {cpus} CPUs, \
         {mem} MiB, Linux {kernel}; {versions}.</small></p>\n",
        name = escape(&s.name),
        desc = escape(&s.description),
        rounds = s.rounds,
        secs = s.duration_secs,
        base = escape(s.baseline()),
        at = r.started_at,
        cpus = r.machine.nproc,
        mem = r.machine.memory_mib,
        kernel = escape(&r.machine.kernel),
        versions = escape(&r.machine.versions.join("; ")),
    );
    if r.partial {
        h.push_str("<p class=\"warn\">Stopped early (Ctrl-C): the rounds run so far.</p>\n");
    }
    for w in &r.warnings {
        let _ = writeln!(h, "<p class=\"warn\">{}</p>", escape(w));
    }
    for u in &r.unavailable {
        let _ = writeln!(
            h,
            "<p class=\"warn\">{}: {}</p>",
            escape(&u.target),
            escape(&u.reason)
        );
    }
    for case in &r.cases {
        let _ = writeln!(h, "<h2>{} clients</h2>", case.clients);
        h.push_str(&results(&case.targets));
    }
    h.push_str("<h2>Chart</h2>\n");
    h.push_str(&chart(r));
    h.push_str("\n<h2>Rounds</h2>\n");
    h.push_str(&rounds(r));
    h.push_str(
        "<p><small>CPU/op: user+system CPU time of the target's process (and its \
        children) from /proc over the measured window, divided by the operations. Load \
        generator: cores this bench kept busy; machine: share of all cores busy.</small></p>\n\
        </body></html>\n",
    );
    h
}

fn results(targets: &[TargetReport]) -> String {
    let mut h = String::from(
        "<table><tr><th>target</th><th>ops/s</th><th>CPU/op</th><th>p50</th><th>p95</th>\
         <th>p99</th><th>p99.9</th><th>errors</th><th>ratio</th><th>note</th></tr>\n",
    );
    for t in targets {
        let cells: String = figures(t)
            .iter()
            .map(|c| format!("<td class=n>{}</td>", escape(c)))
            .collect();
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{cells}<td>{}</td></tr>",
            escape(&t.name),
            escape(&notes(t, 1000).join("; "))
        );
    }
    h.push_str("</table>\n");
    h
}

fn rounds(r: &ScenarioReport) -> String {
    let mut h = String::from(
        "<table><tr><th>clients</th><th>target</th><th>round</th><th>ops/s</th><th>CPU/op</th>\
         <th>load generator cores</th><th>machine busy</th><th>load avg before → after</th></tr>\n",
    );
    let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".into(), f);
    let load = |l: Option<[f64; 3]>| opt(l.map(|l| l[0]), |v| format!("{v:.2}"));
    for case in &r.cases {
        for t in &case.targets {
            for e in &t.rounds_env {
                let _ = writeln!(
                    h,
                    "<tr><td class=n>{}</td><td>{}</td><td class=n>{}</td><td class=n>{:.0}</td>\
                     <td class=n>{}</td><td class=n>{}</td><td class=n>{}</td>\
                     <td class=n>{} → {}</td></tr>",
                    case.clients,
                    escape(&t.name),
                    e.round,
                    e.ops as f64 / e.secs.max(1e-9),
                    fmt_cpu(super::report::cpu_us_per_op(std::slice::from_ref(e))),
                    opt(e.loadgen_cores, |v| format!("{v:.2}")),
                    opt(e.machine_busy, |v| format!("{:.0}%", v * 100.0)),
                    load(e.loadavg_before),
                    load(e.loadavg_after),
                );
            }
        }
    }
    h.push_str("</table>\n");
    h
}

#[cfg(test)]
fn round(ops: u64, cpu: f64) -> super::report::RoundEnv {
    super::report::RoundEnv {
        round: 1,
        ops,
        secs: 1.0,
        cpu_secs: Some(cpu),
        loadgen_cores: Some(0.5),
        machine_busy: Some(0.4),
        loadavg_before: Some([1.0, 1.0, 1.0]),
        loadavg_after: Some([1.5, 1.0, 1.0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{CaseReport, Machine};
    use crate::bench::scenario::{Scenario, DEFAULT};

    #[test]
    fn the_page_is_whole_and_escaped() {
        let mut s = Scenario::parse(DEFAULT, "t").unwrap();
        s.description = "<script>alert(1)</script>".into();
        let r = ScenarioReport {
            scenario: s,
            machine: Machine::default(),
            started_at: 0,
            unavailable: Vec::new(),
            cases: vec![CaseReport {
                clients: 4,
                active: 4,
                rate: None,
                targets: vec![TargetReport {
                    name: "pake".into(),
                    ops_per_sec: 1000.0,
                    cpu_us_per_op: Some(42.0),
                    rounds_env: vec![round(1000, 0.042)],
                    ..TargetReport::default()
                }],
            }],
            warnings: vec!["the load generator itself was saturated".into()],
            partial: true,
        };
        let html = page(&r);
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert!(!html.contains("<script>"), "not escaped");
        assert!(html.contains("42.0µs") && html.contains("<svg"));
        assert!(html.contains("saturated") && html.contains("Stopped early"));
        assert!(html.contains("1.00 → 1.50"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "self-contained"
        );
    }
}

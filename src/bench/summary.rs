//! The issue's targets checked against the latest results, and the Markdown that
//! `make bench` writes into BENCHMARKS.md between `<!-- bench:begin -->` and
//! `<!-- bench:end -->`: the machine, a met/missed table, and every scenario's table.

use super::report::{figures, fmt_us, notes, CaseReport, ScenarioReport, TargetReport};
use super::scenario::Workload;
use super::BenchError;
use std::fmt::Write as _;
use std::path::Path;

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// One line of the targets table.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub goal: String,
    pub scenario: String,
    pub case: String,
    pub measured: String,
    /// `Some(true)` met, `Some(false)` missed, `None` not measured.
    pub met: Option<bool>,
}

fn find<'a>(case: &'a CaseReport, name: &str) -> Option<&'a TargetReport> {
    case.targets.iter().find(|t| t.name == name)
}

/// The Pake targets the goals are about (`pake-nol1` is shown, not judged).
fn judged(name: &str) -> bool {
    name == "pake" || name.starts_with("pake-w") || name.starts_with("pake-r")
}

fn pakes(case: &CaseReport) -> impl Iterator<Item = &TargetReport> {
    case.targets.iter().filter(|t| judged(&t.name))
}

fn ratio_check(
    r: &ScenarioReport,
    case: &CaseReport,
    p: &TargetReport,
    peer: &str,
    min: f64,
) -> Option<Check> {
    let other = find(case, peer)?;
    let goal = format!("{} / {peer} ≥ {min}", p.name);
    let (met, measured) = if other.ops_per_sec > 0.0 {
        let ratio = p.ops_per_sec / other.ops_per_sec;
        (Some(ratio >= min && p.errors == 0), format!("{ratio:.2}"))
    } else {
        (None, "no throughput from the peer".into())
    };
    let measured = match (p.errors, other.errors) {
        (0, 0) => measured,
        (0, e) => format!("{measured} ({peer}: {e} errors)"),
        (e, _) => format!("{measured} ({}: {e} errors)", p.name),
    };
    Some(Check {
        goal,
        scenario: r.scenario.name.clone(),
        case: format!("{} clients", case.clients),
        measured,
        met,
    })
}

/// Pake's CPU per operation over `peer`'s (lower is better) at most `max`.
fn cpu_check(
    r: &ScenarioReport,
    case: &CaseReport,
    p: &TargetReport,
    peer: &str,
    max: f64,
) -> Option<Check> {
    let other = find(case, peer)?;
    let (met, measured) = match (p.cpu_us_per_op, other.cpu_us_per_op) {
        (Some(a), Some(b)) if b > 0.0 => (
            Some(a / b <= max && p.errors == 0),
            format!("{:.2} ({a:.1} / {b:.1} µs)", a / b),
        ),
        _ => (None, "no CPU figure".into()),
    };
    Some(Check {
        goal: format!("{} CPU/op / {peer} CPU/op ≤ {max}", p.name),
        scenario: r.scenario.name.clone(),
        case: format!("{} clients", case.clients),
        measured,
        met,
    })
}

/// Every check the results allow.
pub fn checks(reports: &[ScenarioReport]) -> Vec<Check> {
    let mut out = Vec::new();
    for r in reports {
        let s = &r.scenario;
        for u in r.unavailable.iter().filter(|u| judged(&u.target)) {
            out.push(Check {
                goal: format!("{}: every goal of this scenario", u.target),
                scenario: s.name.clone(),
                case: "-".into(),
                measured: format!("target unavailable: {}", u.reason),
                met: None,
            });
        }
        match s.workload {
            Workload::PgSelect if s.rate.is_some() => out.extend(many_clients(r)),
            // the issue's throughput targets are pgbench -S (simple and prepared); the
            // other Postgres scenarios are reported in their tables only
            Workload::PgTpcb | Workload::PgMixed | Workload::PgSql => {}
            Workload::PgSelect => {
                for case in &r.cases {
                    if case.clients == 1 {
                        out.extend(added_latency(r, case));
                        continue;
                    }
                    for p in pakes(case) {
                        out.extend(ratio_check(r, case, p, "pgbouncer", 1.25));
                        out.extend(ratio_check(r, case, p, "direct", 0.8));
                        // issue 14: cheaper per transaction than PgBouncer
                        out.extend(cpu_check(r, case, p, "pgbouncer", 0.75));
                        // issue 6: query insight costs at most 3% of throughput
                        out.extend(ratio_check(r, case, p, "pake-noinsight", 0.97));
                    }
                }
            }
            // issue 13: behind a 250 µs link the L1 must pay three times over
            Workload::RedisGetset if s.link.is_some() => {
                for case in &r.cases {
                    for p in pakes(case) {
                        out.extend(ratio_check(r, case, p, "direct", 3.0));
                    }
                }
            }
            Workload::RedisGetset => {
                for case in &r.cases {
                    for p in pakes(case) {
                        out.extend(ratio_check(r, case, p, "direct", 1.2));
                        out.extend(ratio_check(r, case, p, "twemproxy", 2.0));
                        out.extend(cpu_check(r, case, p, "twemproxy", 0.8));
                    }
                }
            }
            Workload::IdleMemory => {
                for case in &r.cases {
                    for p in pakes(case) {
                        out.push(Check {
                            goal: format!("{}: RSS per idle client ≤ 8 KiB", p.name),
                            scenario: s.name.clone(),
                            case: format!("{} idle clients", case.clients),
                            measured: p
                                .rss_per_client_kib
                                .map_or("-".into(), |k| format!("{k:.2} KiB")),
                            met: p.rss_per_client_kib.map(|k| k <= 8.0 && p.errors == 0),
                        });
                    }
                }
            }
        }
    }
    out
}

fn added_latency(r: &ScenarioReport, case: &CaseReport) -> Vec<Check> {
    let Some(direct) = find(case, "direct") else {
        return Vec::new();
    };
    let added = |t: &TargetReport| t.p50_us as i64 - direct.p50_us as i64;
    // what a peer adds on the same run, when it was measured: the floor of two hops here
    let peer = find(case, "pgbouncer")
        .filter(|b| b.errors == 0)
        .map_or(String::new(), |b| {
            format!("; pgbouncer adds {} µs", added(b))
        });
    pakes(case)
        .flat_map(|p| {
            let measured = format!(
                "{} µs ({} vs {}){peer}",
                added(p),
                fmt_us(p.p50_us),
                fmt_us(direct.p50_us)
            );
            // issue 7 asked ≤ 30 µs; issue 14 asks ≤ 15 µs
            [30, 15].map(|limit| Check {
                goal: format!("{}: added p50 latency, one client ≤ {limit} µs", p.name),
                scenario: r.scenario.name.clone(),
                case: "1 client".into(),
                measured: measured.clone(),
                met: Some(added(p) <= limit && p.errors == 0),
            })
        })
        .collect()
}

fn many_clients(r: &ScenarioReport) -> Vec<Check> {
    let (Some(low), Some(high)) = (
        r.cases.iter().min_by_key(|c| c.clients),
        r.cases.iter().max_by_key(|c| c.clients),
    ) else {
        return Vec::new();
    };
    if low.clients == high.clients {
        return Vec::new();
    }
    pakes(high)
        .filter_map(|p| {
            let base = find(low, &p.name)?;
            let ratio = p.p99_us as f64 / base.p99_us.max(1) as f64;
            Some(Check {
                goal: format!(
                    "{}: p99 at {} connected ≤ 2× p99 at {}",
                    p.name, high.clients, low.clients
                ),
                scenario: r.scenario.name.clone(),
                case: format!(
                    "{} active, {:.0} req/s",
                    high.active,
                    high.rate.unwrap_or(0.0)
                ),
                measured: format!(
                    "{ratio:.2}× ({} vs {})",
                    fmt_us(p.p99_us),
                    fmt_us(base.p99_us)
                ),
                met: Some(ratio <= 2.0 && p.errors == 0 && base.errors == 0),
            })
        })
        .collect()
}

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The generated Markdown block (without the markers).
pub fn markdown(reports: &[ScenarioReport]) -> String {
    let mut md = String::new();
    if let Some(m) = reports.first().map(|r| &r.machine) {
        let _ = writeln!(
            md,
            "Machine: {} CPUs, {} MiB memory, Linux {}; {}.\n",
            m.nproc,
            m.memory_mib,
            m.kernel,
            m.versions.join("; ")
        );
    }
    md.push_str(
        "### Targets\n\n| goal | scenario | case | measured | status |\n|---|---|---|---|---|\n",
    );
    for c in checks(reports) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.goal,
            c.scenario,
            c.case,
            c.measured.replace('|', "/"),
            status(c.met)
        );
    }
    for r in reports {
        md.push_str(&scenario_table(r));
    }
    md
}

/// One scenario's Markdown section: the table of every case, then the warnings.
pub fn scenario_table(r: &ScenarioReport) -> String {
    let s = &r.scenario;
    let mut md = format!(
        "\n### {}\n\n{} ({} × {} s per target, interleaved; baseline `{}`)\n\n",
        s.name,
        s.description,
        s.rounds,
        s.duration_secs,
        s.baseline()
    );
    for u in &r.unavailable {
        let _ = writeln!(md, "- target unavailable: `{}`: {}", u.target, u.reason);
    }
    md.push_str(
        "\n| clients | target | ops/s | CPU/op | p50 | p95 | p99 | p99.9 | errors | ratio | note |\n",
    );
    md.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for case in &r.cases {
        for t in &case.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                case.clients,
                t.name,
                figures(t).join(" | "),
                notes(t, 80).join("; ").replace('|', "/")
            );
        }
    }
    if r.partial {
        md.push_str("\nStopped early (Ctrl-C): the rounds run so far.\n");
    }
    for w in &r.warnings {
        let _ = writeln!(md, "\n- warning: {w}");
    }
    md
}

/// Every `*.json` result in `dir`, by name.
pub fn load_all(dir: &Path) -> Result<Vec<ScenarioReport>, BenchError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| ScenarioReport::read(p)).collect()
}

/// Replace the block between the markers in `file` (appending markers when absent).
pub fn rewrite(file: &Path, block: &str) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}\n{block}{}", &text[..b], &text[e..])
        }
        _ => format!("{text}\n{BEGIN}\n{block}{END}\n"),
    };
    std::fs::write(file, new)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::bench::report::{Machine, TargetReport};
    use crate::bench::scenario::{Scenario, DEFAULT};

    fn target(name: &str, ops: f64, p50: u64) -> TargetReport {
        TargetReport {
            name: name.into(),
            ops_per_sec: ops,
            p50_us: p50,
            ..TargetReport::default()
        }
    }

    fn report(clients: usize, targets: Vec<TargetReport>) -> ScenarioReport {
        ScenarioReport {
            warnings: Vec::new(),
            partial: false,
            scenario: Scenario::parse(DEFAULT, "default").unwrap(),
            machine: Machine::default(),
            started_at: 0,
            unavailable: Vec::new(),
            cases: vec![CaseReport {
                clients,
                active: clients,
                rate: None,
                targets,
            }],
        }
    }

    #[test]
    fn throughput_goals_are_judged_per_pake_target() {
        let r = report(
            100,
            vec![
                target("direct", 1000.0, 100),
                target("pake-w1", 1100.0, 100),
                target("pake-w2", 1400.0, 100),
                target("pgbouncer", 1000.0, 100),
            ],
        );
        let c = checks(&[r]);
        let find = |goal: &str| c.iter().find(|c| c.goal == goal).unwrap().met;
        assert_eq!(find("pake-w1 / pgbouncer ≥ 1.25"), Some(false));
        assert_eq!(find("pake-w2 / pgbouncer ≥ 1.25"), Some(true));
        assert_eq!(find("pake-w1 / direct ≥ 0.8"), Some(true));
    }

    #[test]
    fn cpu_per_op_is_judged_against_pgbouncer() {
        let with_cpu = |name: &str, cpu: Option<f64>| TargetReport {
            cpu_us_per_op: cpu,
            ..target(name, 1000.0, 100)
        };
        let r = report(
            100,
            vec![
                with_cpu("pake-w1", Some(30.0)),
                with_cpu("pake-w2", None),
                with_cpu("pgbouncer", Some(50.0)),
            ],
        );
        let c = checks(&[r]);
        let find = |goal: &str| c.iter().find(|c| c.goal == goal).unwrap();
        let w1 = find("pake-w1 CPU/op / pgbouncer CPU/op ≤ 0.75");
        assert_eq!(w1.met, Some(true));
        assert!(w1.measured.starts_with("0.60"), "{}", w1.measured);
        assert_eq!(find("pake-w2 CPU/op / pgbouncer CPU/op ≤ 0.75").met, None);
    }

    #[test]
    fn one_client_gives_the_added_latency() {
        let r = report(1, vec![target("direct", 1.0, 40), target("pake", 1.0, 75)]);
        let c = checks(&[r]);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.met == Some(false)), "{c:?}");
        assert!(c[0].measured.starts_with("35 µs"), "{}", c[0].measured);
        assert!(c[1].goal.ends_with("≤ 15 µs"), "{}", c[1].goal);
        // beside a peer: its added latency is named, and 20 µs meets 30 but not 15
        let r = report(
            1,
            vec![
                target("direct", 1.0, 40),
                target("pake", 1.0, 60),
                target("pgbouncer", 1.0, 58),
            ],
        );
        let c = checks(&[r]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].met, c[1].met), (Some(true), Some(false)));
        assert!(
            c[0].measured.ends_with("; pgbouncer adds 18 µs"),
            "{}",
            c[0].measured
        );
        let md = markdown(&[report(1, vec![target("direct", 1.0, 40)])]);
        assert!(md.contains("### pg-select-only"), "{md}");
        let svg = crate::bench::svg::chart(&report(1, vec![target("direct", 1.0, 40)]));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn rewrite_replaces_only_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("B.md");
        std::fs::write(&f, format!("head\n{BEGIN}\nold\n{END}\ntail\n")).unwrap();
        rewrite(&f, "new\n").unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text, format!("head\n{BEGIN}\nnew\n{END}\ntail\n"));
    }
}

//! The DBA report from [`ReportData`]: Markdown (for tickets and chat), JSON (for tools) and a
//! self-contained HTML page (inline CSS and SVG charts, no external assets, so it opens from a
//! file anywhere) — see [`html`].

pub mod html;

use super::model::{QueryStats, ReportData};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Write `report.md`, `report.json` and `report.html` into `dir`; returns their paths.
pub fn write_all(data: &ReportData, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let files = [
        ("report.md", markdown(data)),
        ("report.json", serde_json::to_string_pretty(data)?),
        ("report.html", html::render(data)),
    ];
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })?;
        out.push(path);
    }
    Ok(out)
}

/// Short label of a query for tables and charts.
pub fn short(q: &str, n: usize) -> String {
    let one_line: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let cut: String = one_line.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'")
}

/// The report as Markdown.
pub fn markdown(d: &ReportData) -> String {
    let s = &d.summary;
    let mut m = String::new();
    let _ = writeln!(m, "# Pake query report\n");
    let _ = writeln!(
        m,
        "{} statement(s) in {} fingerprint(s), {:.1} ms total execution time, {} error(s), {} slow.\n",
        s.calls, s.fingerprints, s.total_ms, s.errors, s.slow
    );
    let _ = writeln!(m, "## Top queries by total time\n");
    let _ = writeln!(
        m,
        "| # | query | calls | total ms | share | mean ms | p50 | p95 | p99 | p99.9 | errors | rows |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, q) in d.queries.iter().enumerate() {
        let _ = writeln!(
            m,
            "| {} | `{}` | {} |",
            i + 1,
            md_cell(&short(&q.query, 100)),
            stat_cells(q).join(" | ")
        );
    }
    markdown_advice(d, &mut m);
    if !d.slow.is_empty() {
        let _ = writeln!(m, "\n## Slow samples\n");
        let _ = writeln!(m, "| ms | database | client | trace id | statement |");
        let _ = writeln!(m, "|---|---|---|---|---|");
        for s in &d.slow {
            let _ = writeln!(
                m,
                "| {:.1} | {} | {} | {} | `{}` |",
                s.duration_ms,
                md_cell(&s.database),
                md_cell(&s.client_addr),
                s.trace_id.as_deref().unwrap_or(""),
                md_cell(&short(&s.text, 100))
            );
        }
    }
    m
}

/// When the advice was computed and what it covered, in one sentence.
pub fn advice_age(d: &ReportData) -> String {
    let a = &d.advice;
    if a.at_ms == 0 {
        return "The index advisor has not run yet (run `pake report` without --no-advise).".into();
    }
    let age_s = d.summary.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0;
    format!(
        "Advice {} {:.0} s before this report, in {:.0} ms, on {} fingerprint(s) covering {:.0}% of execution time.",
        if a.fresh { "computed for this report," } else { "from the last advisor run," },
        age_s,
        a.run_ms,
        a.examined,
        a.examined_time_share * 100.0
    )
}

fn markdown_advice(d: &ReportData, m: &mut String) {
    let _ = writeln!(m, "\n## Index advice\n");
    let _ = writeln!(m, "{}\n", advice_age(d));
    if d.advice.indexes.is_empty() {
        let _ = writeln!(m, "No index would clearly help.");
    }
    for a in &d.advice.indexes {
        let size = a
            .size_bytes
            .map(|b| format!(", est. size {}", super::advisor::advice::human_bytes(b)))
            .unwrap_or_default();
        let _ = writeln!(
            m,
            "- `{}` — ~{:.1} ms of execution saved so far ({:.0}% of the time of what it helps){size}{}. {}",
            a.sql,
            a.est_time_saved_ms,
            a.saving * 100.0,
            if a.validated { ", validated with hypopg" } else { ", NOT validated" },
            a.reason
        );
        for h in &a.helps {
            let _ = writeln!(
                m,
                "  - `{}` ({}): {}",
                md_cell(&short(&h.query, 90)),
                h.fingerprint,
                helped(h)
            );
        }
    }
    for n in &d.advice.no_index_helps {
        let _ = writeln!(
            m,
            "- no index can help `{}` ({:.1}% of total time): {}",
            md_cell(&short(&n.query, 90)),
            n.time_share * 100.0,
            n.reason
        );
    }
    if !d.advice.existing.is_empty() {
        let _ = writeln!(m, "\n### Existing indexes to review\n");
        for e in &d.advice.existing {
            let _ = writeln!(
                m,
                "- {} `{}` on {} ({}): {} — `{}`",
                e.kind,
                e.index,
                e.table,
                super::advisor::advice::human_bytes(e.size_bytes),
                e.detail,
                e.sql
            );
        }
    }
    for n in &d.advice.notes {
        let _ = writeln!(m, "- note: {n}");
    }
    if !d.advice.n_plus_one.is_empty() {
        let _ = writeln!(m, "\n## N+1 patterns\n");
        for n in &d.advice.n_plus_one {
            let _ = writeln!(
                m,
                "- `{}`: up to {} runs in one transaction, {} in one burst ({} occurrence(s))",
                md_cell(&short(&n.query, 100)),
                n.max_per_transaction,
                n.max_burst,
                n.occurrences
            );
        }
    }
}

/// What an index does for one fingerprint, in one line (Markdown and HTML say the same).
pub fn helped(h: &super::model::Helped) -> String {
    format!(
        "plan cost {:.0} → {:.0}, {} call(s), {:.1}% of total time; {}",
        h.cost_before,
        h.cost_after,
        h.calls,
        h.time_share * 100.0,
        h.replaces
    )
}

/// The numbers of a top-queries row, formatted: calls, total ms, share, mean, p50, p95,
/// p99, p99.9, errors, rows (the Markdown and HTML tables show the same columns).
pub fn stat_cells(q: &QueryStats) -> [String; 10] {
    [
        q.calls.to_string(),
        format!("{:.1}", q.total_ms),
        format!("{:.1}%", q.time_share * 100.0),
        format!("{:.2}", q.mean_ms),
        format!("{:.2}", q.p50_ms),
        format!("{:.2}", q.p95_ms),
        format!("{:.2}", q.p99_ms),
        format!("{:.2}", q.p999_ms),
        q.errors.to_string(),
        q.rows.to_string(),
    ]
}

/// A one-line text summary per query (for `pake observability --metrics`).
pub fn text_table(queries: &[QueryStats]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>8} {:>11} {:>9} {:>9} {:>9} {:>6}  query",
        "fingerprint", "calls", "total_ms", "mean_ms", "p95_ms", "p99_ms", "errors"
    );
    for q in queries {
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>6}  {}",
            q.id,
            q.calls,
            q.total_ms,
            q.mean_ms,
            q.p95_ms,
            q.p99_ms,
            q.errors,
            short(&q.query, 80)
        );
    }
    out
}

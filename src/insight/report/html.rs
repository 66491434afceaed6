//! The HTML report: one self-contained page (inline CSS, inline SVG charts, no script, no
//! external asset) a DBA opens from disk. Charts: share of total time per top query, and a
//! latency histogram per top query. Every piece of text from the data is HTML-escaped.

use super::{short, stat_cells};
use crate::insight::model::{QueryStats, ReportData};
use std::fmt::Write;

/// HTML-escape text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}\
td.q,th.q{text-align:left;font-family:monospace;max-width:560px;word-break:break-all}\
code,pre{font-family:monospace;background:#f4f4f4}pre{padding:.5em;white-space:pre-wrap}\
section{border-top:2px solid #ddd;margin-top:2em}.muted{color:#777}svg text{font:11px sans-serif}";

/// The whole page.
pub fn render(d: &ReportData) -> String {
    let s = &d.summary;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Pake query report</title><style>{STYLE}</style></head><body>\
         <h1>Pake query report</h1><p>{} statement(s) in {} fingerprint(s); \
         {:.1} ms total execution time; {} error(s); {} slow; {} fingerprint(s) evicted.</p>",
        s.calls, s.fingerprints, s.total_ms, s.errors, s.slow, s.evicted
    );
    h.push_str("<h2>Share of total time</h2>");
    h.push_str(&share_chart(&d.queries));
    top_table(&d.queries, &mut h);
    advice(d, &mut h);
    for (i, q) in d.queries.iter().enumerate() {
        query_section(i + 1, q, &mut h);
    }
    slow_samples(d, &mut h);
    h.push_str("</body></html>\n");
    h
}

fn top_table(queries: &[QueryStats], h: &mut String) {
    h.push_str(
        "<h2>Top queries by total time</h2><table id=\"top-queries\"><tr><th>#</th>\
         <th class=\"q\">query</th><th>calls</th><th>total ms</th><th>share</th><th>mean ms</th>\
         <th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>errors</th><th>rows</th>\
         <th>pool wait ms</th></tr>",
    );
    for (i, q) in queries.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td><a href=\"#q-{id}\">{n}</a></td><td class=\"q\">{text}</td>",
            id = esc(&q.id),
            n = i + 1,
            text = esc(&short(&q.query, 160)),
        );
        for cell in stat_cells(q) {
            let _ = write!(h, "<td>{cell}</td>");
        }
        let _ = write!(h, "<td>{:.1}</td></tr>", q.wait_total_ms);
    }
    h.push_str("</table>");
}

/// Horizontal bars: each top query's share of total execution time.
pub fn share_chart(queries: &[QueryStats]) -> String {
    let bar_h = 22;
    let width = 900;
    let label_w = 380;
    let height = bar_h * queries.len().max(1) + 10;
    let mut s = format!(
        "<svg id=\"share-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" role=\"img\" aria-label=\"share of total time\">"
    );
    for (i, q) in queries.iter().enumerate() {
        let y = i * bar_h + 5;
        let w = ((q.time_share.clamp(0.0, 1.0)) * (width - label_w - 70) as f64).max(1.0);
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{ty}\">{n}. {label}</text>\
             <rect class=\"share\" x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bh}\" fill=\"#4a7fb5\">\
             <title>{title}</title></rect><text x=\"{tx:.1}\" y=\"{ty}\">{pct:.1}%</text>",
            ty = y + 15,
            n = i + 1,
            label = esc(&short(&q.query, 55)),
            bh = bar_h - 6,
            title = esc(&q.query),
            tx = label_w as f64 + w + 5.0,
            pct = q.time_share * 100.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical bars: calls per latency bucket (powers of two of microseconds).
pub fn histogram_chart(q: &QueryStats) -> String {
    let buckets: Vec<_> = {
        // trim empty buckets at both ends
        let first = q.histogram.iter().position(|b| b.count > 0).unwrap_or(0);
        let last = q.histogram.iter().rposition(|b| b.count > 0).unwrap_or(0);
        q.histogram.get(first..=last).unwrap_or(&[]).to_vec()
    };
    let (width, height, base) = (640usize, 200usize, 170usize);
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    let bw = ((width - 20) / buckets.len().max(1)).min(60);
    let mut s = format!(
        "<svg class=\"latency-histogram\" id=\"hist-{id}\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"latency histogram\">\
         <line x1=\"10\" y1=\"{base}\" x2=\"{x2}\" y2=\"{base}\" stroke=\"#999\"/>",
        id = esc(&q.id),
        x2 = width - 10
    );
    for (i, b) in buckets.iter().enumerate() {
        let bh = (b.count as f64 / max as f64 * (base - 20) as f64).max(if b.count > 0 {
            1.0
        } else {
            0.0
        });
        let x = 10 + i * bw;
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{x}\" y=\"{y:.1}\" width=\"{w}\" height=\"{bh:.1}\" fill=\"#d9822b\">\
             <title>≤ {le} ms: {c} call(s)</title></rect>",
            y = base as f64 - bh,
            w = bw.saturating_sub(2).max(1),
            le = fmt_ms(b.le_ms),
            c = b.count
        );
        if i % 2 == 0 || buckets.len() <= 12 {
            let _ = write!(
                s,
                "<text x=\"{x}\" y=\"{ty}\">{le}</text>",
                ty = base + 14,
                le = fmt_ms(b.le_ms)
            );
        }
    }
    let _ = write!(
        s,
        "<text x=\"10\" y=\"{ty}\" class=\"muted\">upper bound of each bucket, ms</text></svg>",
        ty = base + 28
    );
    s
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

fn query_section(n: usize, q: &QueryStats, h: &mut String) {
    let _ = write!(
        h,
        "<section id=\"q-{id}\"><h3>{n}. fingerprint {id}</h3><pre>{text}</pre>\
         <p>{calls} call(s), {total:.1} ms total, mean {mean:.2} ms ± {sd:.2}, min {min:.2}, \
         max {max:.2}, p50 {p50:.2}, p95 {p95:.2}, p99 {p99:.2}, p99.9 {p999:.2} ms; \
         pool wait {wait:.1} ms total (max {wmax:.2}).</p>",
        id = esc(&q.id),
        text = esc(&q.query),
        calls = q.calls,
        total = q.total_ms,
        mean = q.mean_ms,
        sd = q.stddev_ms,
        min = q.min_ms,
        max = q.max_ms,
        p50 = q.p50_ms,
        p95 = q.p95_ms,
        p99 = q.p99_ms,
        p999 = q.p999_ms,
        wait = q.wait_total_ms,
        wmax = q.wait_max_ms,
    );
    h.push_str(&histogram_chart(q));
    if !q.errors_by_sqlstate.is_empty() {
        h.push_str("<p>Errors: ");
        for e in &q.errors_by_sqlstate {
            let _ = write!(h, "<code>{}</code> × {} ", esc(&e.sqlstate), e.count);
        }
        h.push_str("</p>");
    }
    h.push_str(
        "<table><tr><th class=\"q\">database</th><th class=\"q\">user</th>\
         <th class=\"q\">application</th><th class=\"q\">route</th><th>calls</th>\
         <th>total ms</th><th>mean ms</th><th>errors</th></tr>",
    );
    for s in &q.splits {
        let _ = write!(
            h,
            "<tr><td class=\"q\">{}</td><td class=\"q\">{}</td><td class=\"q\">{}</td>\
             <td class=\"q\">{:?}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td><td>{}</td></tr>",
            esc(&s.database),
            esc(&s.user),
            esc(&s.application),
            s.route,
            s.calls,
            s.total_ms,
            s.mean_ms,
            s.errors
        );
    }
    h.push_str("</table></section>");
}

fn advice(d: &ReportData, h: &mut String) {
    h.push_str("<h2>Index advice</h2>");
    let _ = write!(h, "<p class=\"muted\">{}</p>", esc(&super::advice_age(d)));
    if d.advice.indexes.is_empty() {
        h.push_str("<p class=\"muted\">No index would clearly help.</p>");
    }
    for a in &d.advice.indexes {
        let _ = write!(
            h,
            "<div class=\"advice\"><pre>{sql}</pre><p>{valid}: plan cost {b:.0} → {a:.0} \
             (−{pct:.0}%), ~{saved:.1} ms of execution saved so far; helps {fps}. {reason}</p></div>",
            sql = esc(&a.sql),
            valid = if a.validated {
                "validated with hypopg"
            } else {
                "not validated"
            },
            b = a.cost_before,
            a = a.cost_after,
            pct = a.saving * 100.0,
            saved = a.est_time_saved_ms,
            fps = esc(&a.fingerprints.join(", ")),
            reason = esc(&a.reason),
        );
        if !a.helps.is_empty() {
            h.push_str("<ul>");
            for x in &a.helps {
                let _ = write!(
                    h,
                    "<li><code>{}</code>: {}</li>",
                    esc(&short(&x.query, 140)),
                    esc(&super::helped(x))
                );
            }
            h.push_str("</ul>");
        }
    }
    for n in &d.advice.no_index_helps {
        let _ = write!(
            h,
            "<p>No index can help <code>{}</code>: {}</p>",
            esc(&short(&n.query, 140)),
            esc(&n.reason)
        );
    }
    for e in &d.advice.existing {
        let _ = write!(
            h,
            "<p>{} index <code>{}</code> on {}: {} <code>{}</code></p>",
            esc(&e.kind),
            esc(&e.index),
            esc(&e.table),
            esc(&e.detail),
            esc(&e.sql)
        );
    }
    for n in &d.advice.notes {
        let _ = write!(h, "<p class=\"muted\">{}</p>", esc(n));
    }
    if !d.advice.n_plus_one.is_empty() {
        h.push_str("<h2>N+1 patterns</h2><ul>");
        for n in &d.advice.n_plus_one {
            let _ = write!(
                h,
                "<li><code>{}</code>: up to {} runs in one transaction, {} in one burst</li>",
                esc(&short(&n.query, 140)),
                n.max_per_transaction,
                n.max_burst
            );
        }
        h.push_str("</ul>");
    }
}

fn slow_samples(d: &ReportData, h: &mut String) {
    if d.slow.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Slow samples</h2><table><tr><th>ms</th><th class=\"q\">database</th>\
         <th class=\"q\">client</th><th class=\"q\">trace id</th><th class=\"q\">statement</th></tr>",
    );
    for s in &d.slow {
        let _ = write!(
            h,
            "<tr><td>{:.1}</td><td class=\"q\">{}</td><td class=\"q\">{}</td>\
             <td class=\"q\">{}</td><td class=\"q\">{}</td></tr>",
            s.duration_ms,
            esc(&s.database),
            esc(&s.client_addr),
            esc(s.trace_id.as_deref().unwrap_or("")),
            esc(&short(&s.text, 200))
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
    }
}

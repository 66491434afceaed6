//! The literal-normalised form of a statement, and its hash: the key under which each
//! statement *shape* is analysed once (see DESIGN.md, hot path rules).
//!
//! One pass over the tokens: literals and `$n` become `?`, unquoted words are lower-cased,
//! comments and whitespace vanish, `IN (…)` lists of literals collapse to `in (?)` and repeated
//! identical `VALUES` tuples to one. The same pass reads routing hints (`/* pake:primary */`)
//! and sqlcommenter tags (`/*traceparent='00-…',application='…'*/`) before dropping comments.

use super::lexer::{Kind, Lexer, Token};
use crate::obs::traceparent::TraceParent;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A route asked for in a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteHint {
    Primary,
    Replica,
}

/// What the comments of a statement said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// `/* pake:primary */` or `/* pake:replica */`.
    pub route: Option<RouteHint>,
    /// sqlcommenter `key='value'` pairs, URL-decoded, in order.
    pub tags: Vec<(String, String)>,
}

impl Hints {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The W3C `traceparent` tag, when it is valid.
    pub fn traceparent(&self) -> Option<TraceParent> {
        TraceParent::parse(self.tag("traceparent")?)
    }

    /// The trace id (32 lowercase hex digits) of a valid W3C `traceparent` tag.
    pub fn trace_id(&self) -> Option<&str> {
        let tp = self.tag("traceparent")?;
        TraceParent::parse(tp)?;
        tp.trim_matches([' ', '\t']).get(3..35)
    }

    pub fn is_empty(&self) -> bool {
        self.route.is_none() && self.tags.is_empty()
    }
}

/// The result of normalising one statement text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Hash of the normalised text (stable within a process and across processes).
    pub hash: u64,
    pub hints: Hints,
}

/// Normalise `sql` into `out` (cleared first) and return its hash and hints.
pub fn normalize_into(sql: &str, out: &mut String) -> Normalized {
    out.clear();
    let mut hints = Hints::default();
    let mut w = Writer::new(out);
    for tok in Lexer::new(sql) {
        if tok.kind == Kind::Comment {
            read_comment(tok.text(sql), &mut hints);
            continue;
        }
        w.token(sql, tok);
    }
    Normalized {
        hash: hash64(out.as_bytes()),
        hints,
    }
}

/// Normalise into a fresh string: for tests, reports and cache misses.
pub fn normalize(sql: &str) -> (String, Normalized) {
    let mut s = String::with_capacity(sql.len());
    let n = normalize_into(sql, &mut s);
    (s, n)
}

/// Builds the normalised text, collapsing lists as it goes.
struct Writer<'a> {
    out: &'a mut String,
    prev: Prev,
    /// Open parentheses: where each started in `out` and what it is (the innermost
    /// [`MAX_TRACKED_DEPTH`] only).
    parens: Vec<Paren>,
    /// Open parentheses nested deeper than that: counted, not tracked (their lists are not
    /// collapsed), so a megabyte of `(` costs no more memory than the text.
    untracked: usize,
    /// Last `VALUES` tuple at the current level: (start, end) in `out`.
    values_prev: Option<(usize, usize)>,
    /// Set after `values`, and after a `,` that follows a VALUES tuple.
    values_expect: bool,
    /// Where the separator before the current tuple began (to drop ", (…)" duplicates).
    values_sep: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    Start,
    Word,
    Open,
    Dot,
    Other,
}

#[derive(Clone, Copy)]
struct Paren {
    start: usize,
    in_list: bool,
    values_tuple: bool,
    sep: Option<usize>,
    /// What the parenthesis holds so far, tracked token by token so that closing it costs
    /// nothing (re-reading its text would make nested `in (… in (…))` quadratic).
    content: Content,
}

/// The content of a parenthesis: nothing yet or after a `,` / one placeholder last /
/// anything that is not a list of placeholders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    Expect,
    Placeholder,
    Other,
}

/// A token as the content tracker sees it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Placeholder,
    Comma,
    Other,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut String) -> Self {
        Writer {
            out,
            prev: Prev::Start,
            parens: Vec::new(),
            untracked: 0,
            values_prev: None,
            values_expect: false,
            values_sep: None,
        }
    }

    fn space(&mut self) {
        if !matches!(self.prev, Prev::Start | Prev::Open | Prev::Dot) {
            self.out.push(' ');
        }
    }

    fn token(&mut self, src: &str, tok: Token) {
        let text = tok.text(src);
        match tok.kind {
            Kind::Word => {
                self.seen(Seen::Other);
                self.space();
                // lowered as it is copied: no string of its own per word
                let is_values = text.eq_ignore_ascii_case("values");
                let at = self.out.len();
                self.out.push_str(text);
                self.out[at..].make_ascii_lowercase();
                self.prev = Prev::Word;
                self.end_values_list_unless(false);
                if is_values {
                    self.values_expect = true;
                    self.values_prev = None;
                    self.values_sep = None;
                }
            }
            Kind::QuotedIdent => {
                self.seen(Seen::Other);
                self.space();
                self.out.push_str(text);
                self.prev = Prev::Word;
                self.end_values_list_unless(false);
            }
            Kind::String | Kind::Number | Kind::Param => {
                self.seen(Seen::Placeholder);
                self.space();
                self.out.push('?');
                self.prev = Prev::Other;
                self.end_values_list_unless(false);
            }
            Kind::Op => {
                self.seen(Seen::Other);
                self.space();
                self.out.push_str(text);
                self.prev = Prev::Other;
                self.end_values_list_unless(false);
            }
            Kind::Punct => self.punct(text.as_bytes().first().copied().unwrap_or(b' ')),
            Kind::Comment => {}
        }
    }

    /// Track the content of the innermost open parenthesis.
    fn seen(&mut self, tok: Seen) {
        if let Some(p) = self.parens.last_mut() {
            p.content = match (p.content, tok) {
                (Content::Expect, Seen::Placeholder) => Content::Placeholder,
                (Content::Placeholder, Seen::Comma) => Content::Expect,
                _ => Content::Other,
            };
        }
    }

    /// Any token other than `,` or `(` right after a VALUES tuple ends the list.
    fn end_values_list_unless(&mut self, keep: bool) {
        if !keep {
            self.values_expect = false;
            self.values_sep = None;
        }
    }

    /// `(`: a call's arguments, an `IN (…)` list or a `VALUES` tuple begins.
    fn open_paren(&mut self) {
        let in_list = self.out.ends_with(" in") || self.out == "in";
        let values_tuple = self.values_expect;
        let sep = self.values_sep.take();
        self.values_expect = false;
        // `f(x)` for calls, `in (x)` / `values (x)` after keywords
        if self.prev != Prev::Word || ends_with_keyword(self.out) {
            self.space();
        }
        let start = self.out.len();
        self.out.push('(');
        self.prev = Prev::Open;
        if self.parens.len() >= MAX_TRACKED_DEPTH || self.untracked > 0 {
            self.untracked += 1;
            return;
        }
        self.parens.push(Paren {
            start,
            in_list,
            values_tuple,
            sep,
            content: Content::Expect,
        });
    }

    /// `)`: an `IN` list of placeholders collapses to `(?)`, a `VALUES` tuple identical to
    /// the one before it is dropped.
    fn close_paren(&mut self) {
        self.out.push(')');
        self.prev = Prev::Other;
        if self.untracked > 0 {
            self.untracked -= 1;
            return;
        }
        let Some(p) = self.parens.pop() else {
            return;
        };
        // a closed parenthesis is not a placeholder to the one around it
        self.seen(Seen::Other);
        if p.in_list && p.content == Content::Placeholder {
            self.out.truncate(p.start);
            self.out.push_str("(?)");
        }
        if p.values_tuple {
            let end = self.out.len();
            let dup = self
                .values_prev
                .is_some_and(|(s, e)| self.out[s..e] == self.out[p.start..end]);
            if let (true, Some(sep)) = (dup, p.sep) {
                self.out.truncate(sep);
            } else {
                self.values_prev = Some((p.start, end));
            }
            self.values_expect = false;
            // a following "," continues the list
            self.values_sep = Some(usize::MAX);
        } else {
            self.values_sep = None;
        }
    }

    fn punct(&mut self, c: u8) {
        match c {
            b')' => {}
            b',' => self.seen(Seen::Comma),
            _ => self.seen(Seen::Other),
        }
        match c {
            b'(' => self.open_paren(),
            b')' => self.close_paren(),
            b',' => {
                let continues = self.values_sep == Some(usize::MAX);
                let sep = self.out.len();
                self.out.push(',');
                self.prev = Prev::Other;
                if continues {
                    self.values_expect = true;
                    self.values_sep = Some(sep);
                } else {
                    self.values_expect = false;
                    self.values_sep = None;
                }
            }
            b'.' => {
                self.out.push('.');
                self.prev = Prev::Dot;
                self.end_values_list_unless(false);
            }
            b'[' => {
                self.out.push('[');
                self.prev = Prev::Open;
                self.end_values_list_unless(false);
            }
            b']' => {
                self.out.push(']');
                self.prev = Prev::Other;
                self.end_values_list_unless(false);
            }
            b';' => {
                self.out.push(';');
                self.prev = Prev::Other;
                self.end_values_list_unless(false);
                self.values_prev = None;
            }
            other => {
                self.space();
                self.out.push(other as char);
                self.prev = Prev::Other;
            }
        }
    }
}

/// Parentheses nested deeper than this are not tracked (see [`Writer::untracked`]).
const MAX_TRACKED_DEPTH: usize = 256;

/// Words after which `(` opens a list or subquery rather than a call's arguments.
const SPACED_KEYWORDS: &[&str] = &[
    "in",
    "values",
    "as",
    "and",
    "or",
    "not",
    "on",
    "where",
    "from",
    "join",
    "exists",
    "select",
    "using",
    "returning",
    "into",
    "set",
    "when",
    "then",
    "else",
    "over",
    "with",
    "by",
    "is",
    "between",
    "like",
    "ilike",
    "case",
    "union",
    "all",
    "distinct",
    "lateral",
    "table",
    "conflict",
];

/// Longest word in [`SPACED_KEYWORDS`].
const LONGEST_KEYWORD: usize = 9;

/// Does `out` end with one of [`SPACED_KEYWORDS`]? Looks at the last few bytes only: the
/// text may be megabytes without a space (`a(a(a(…`) and this runs once per `(`.
fn ends_with_keyword(out: &str) -> bool {
    let bytes = out.as_bytes();
    let from = bytes.len().saturating_sub(LONGEST_KEYWORD + 1);
    let tail = &bytes[from..];
    let last = match tail.iter().rposition(|&b| b == b' ') {
        Some(i) => &tail[i + 1..],
        None if from == 0 => tail,
        None => return false,
    };
    SPACED_KEYWORDS.iter().any(|k| k.as_bytes() == last)
}

/// Most sqlcommenter tags kept per statement (a comment can hold millions).
const MAX_TAGS: usize = 32;

/// Read one comment for hints: `pake:primary`, `pake:replica`, or sqlcommenter tags.
fn read_comment(text: &str, hints: &mut Hints) {
    let inner = text
        .strip_prefix("/*")
        .and_then(|t| t.strip_suffix("*/"))
        .or_else(|| text.strip_prefix("--"))
        .unwrap_or(text)
        .trim();
    match inner.to_ascii_lowercase().as_str() {
        "pake:primary" | "pake: primary" => {
            hints.route = Some(RouteHint::Primary);
            return;
        }
        "pake:replica" | "pake: replica" => {
            hints.route = Some(RouteHint::Replica);
            return;
        }
        _ => {}
    }
    // sqlcommenter: key='value',key2='value2' (values URL-encoded, quotes escaped with \)
    for pair in split_tags(inner) {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let Some(v) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) else {
            continue;
        };
        let key = url_decode(k.trim());
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            continue;
        }
        if hints.tags.len() >= MAX_TAGS {
            return;
        }
        hints.tags.push((key, url_decode(&v.replace("\\'", "'"))));
    }
}

fn split_tags(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quote = false;
    let mut start = 0;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if i == 0 || bytes[i - 1] != b'\\' => in_quote = !in_quote,
            b',' if !in_quote => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A fast, stable 64-bit hash (FxHash-style mixing over 8-byte words, with a finaliser).
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(K);
    }
    // splitmix64 finaliser so that close inputs land far apart
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Hasher for keys that are already hashes (fingerprint ids): a multiply spreads them.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash64(bytes) ^ self.0.rotate_left(17);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s).0
    }

    #[test]
    fn literals_case_whitespace_and_comments_vanish() {
        assert_eq!(
            n("SELECT abalance FROM pgbench_accounts WHERE aid = 42;"),
            "select abalance from pgbench_accounts where aid = ?;"
        );
        assert_eq!(
            n("select  abalance\n from PGBENCH_ACCOUNTS /* hi */ where aid=$1;"),
            n("SELECT abalance FROM pgbench_accounts WHERE aid = 'x';")
        );
        assert_eq!(
            n("select \"Mixed\".x from \"Mixed\""),
            "select \"Mixed\".x from \"Mixed\""
        );
        assert_eq!(n("select f(1, 'a')"), "select f(?, ?)");
        assert_eq!(n("select a::int, b[1]"), "select a :: int, b[?]");
    }

    #[test]
    fn in_lists_and_values_collapse() {
        assert_eq!(
            n("select * from t where id in (1,2,3)"),
            "select * from t where id in (?)"
        );
        assert_eq!(
            n("select * from t where id IN ($1)"),
            "select * from t where id in (?)"
        );
        assert_eq!(
            n("select * from t where id in (select id from u)"),
            "select * from t where id in (select id from u)"
        );
        assert_eq!(
            n("insert into t values (1, 'a'), (2, 'b'), (3, 'c')"),
            "insert into t values (?, ?)"
        );
        assert_eq!(
            n("insert into t values (1, 'a'), (2, now()) returning id"),
            "insert into t values (?, ?), (?, now()) returning id"
        );
        // function argument lists are structure, not lists to collapse
        assert_ne!(n("select f(1, 2)"), n("select f(1)"));
    }

    #[test]
    fn same_shape_same_hash_different_shape_different_hash() {
        let a = normalize("SELECT * FROM t WHERE id = 1").1.hash;
        let b = normalize("select * from t where id = 999").1.hash;
        let c = normalize("select * from t where id > 1").1.hash;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn hints_and_sqlcommenter() {
        let (_, r) = normalize("/* pake:primary */ select 1");
        assert_eq!(r.hints.route, Some(RouteHint::Primary));
        let (_, r) = normalize("select 1 /* pake:replica */");
        assert_eq!(r.hints.route, Some(RouteHint::Replica));
        let (text, r) = normalize(
            "select 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',application='billing%20api'*/",
        );
        assert_eq!(text, "select ?");
        assert_eq!(r.hints.trace_id(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert_eq!(r.hints.tag("application"), Some("billing api"));
        let tp = r.hints.traceparent().unwrap();
        assert_eq!(tp.parent_id, 0xb7ad_6b71_6920_3331u64.to_be_bytes());
        assert!(tp.sampled());
        assert_eq!(
            normalize("select 1 /* traceparent='bad' */")
                .1
                .hints
                .trace_id(),
            None
        );
        // an invalid traceparent (all-zero trace id) gives neither a trace id nor a parent
        let (_, r) = normalize(
            "select 1 /*traceparent='00-00000000000000000000000000000000-b7ad6b7169203331-01'*/",
        );
        assert_eq!((r.hints.trace_id(), r.hints.traceparent()), (None, None));
        // flags 00: the caller did not sample
        let (_, r) = normalize(
            "select 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00'*/",
        );
        assert!(!r.hints.traceparent().unwrap().sampled());
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "(((",
            ")))",
            "in ())",
            "values (,),(",
            "'",
            "%",
            "/*traceparent='%zz'*/",
            "in(?,",
        ] {
            let _ = normalize(s);
        }
    }

    /// Issue 18: the normaliser is linear. Closing an IN list used to re-read its text
    /// (quadratic for nested `in (… in (…))`), each `(` after a word searched the whole output
    /// for its last space (quadratic for `a(a(a(…`), and every open parenthesis was tracked
    /// (a megabyte of `(` cost tens of megabytes). Same output as before on the usual shapes.
    #[test]
    fn nesting_is_linear_and_keeps_its_output() {
        assert_eq!(n("select 1 in (2 in (3, 4))"), "select ? in (? in (?))");
        assert_eq!(n("select x in (1, (2))"), "select x in (?, (?))");
        assert_eq!(n("select x in (1,,2)"), "select x in (?,, ?)");
        assert_eq!(n("select x in (1 2)"), "select x in (? ?)");
        assert_eq!(n("select f(g(h(1)))"), "select f(g(h(?)))");
        assert_eq!(
            n("select a.b(1) where not (1)"),
            "select a.b(?) where not (?)"
        );
        assert_eq!(
            n("insert into t values (1), (2)"),
            "insert into t values (?)"
        );
        let depth = 3 * MAX_TRACKED_DEPTH;
        let deep = format!("select {}1{}", "(".repeat(depth), ")".repeat(depth));
        let out = n(&deep);
        assert_eq!(out.matches('(').count(), depth);
        assert_eq!(out.matches(')').count(), depth);
        // past the tracked depth lists stay as written; back above it they collapse again
        let deep_list = format!(
            "select {}x in (1, 2){} and y in (1, 2)",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        assert!(n(&deep_list).ends_with(") and y in (?)"));
        let calls = format!("select {}1", "a(".repeat(10_000));
        assert!(n(&calls).starts_with("select a(a(a("));
    }

    #[test]
    fn sqlcommenter_tags_are_capped() {
        let tags: Vec<String> = (0..100).map(|i| format!("k{i}='v'")).collect();
        let (_, norm) = normalize(&format!("select 1 /*{}*/", tags.join(",")));
        assert_eq!(norm.hints.tags.len(), MAX_TAGS);
        assert_eq!(norm.hints.tag("k0"), Some("v"));
    }
}

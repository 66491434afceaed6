//! Statement analysis on the request path, done once per statement *shape*.
//!
//! Every Query and Parse text is normalised (one lexer pass, see [`normalize`]) and hashed;
//! the analysis of that shape is cached under the hash, first in a per-thread map (no lock,
//! no shared cache line on the hot path) and behind it in a process-wide sharded map, so each
//! shape is analysed once per process. The router (replica routing) and the insight collector
//! (fingerprints) add their results to [`StatementInfo`].
//!
//! Statements longer than `general.max_analyzed_statement_size` skip sqlparser (its tree of a
//! megabyte of SQL costs tens of megabytes): they get the token-level fingerprint, go to the
//! primary, and their analysis is never cached.

pub mod effects;
pub mod lexer;
pub mod normalize;
pub mod pins;
pub mod settings;

pub use effects::{Savepoint, SessionEffect};
pub use normalize::{Hints, Normalized, RouteHint};

use crate::pg::route::classify::{self, Classification};
use parking_lot::RwLock;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What Pake knows about one statement shape.
#[derive(Debug)]
pub struct StatementInfo {
    /// The normalised text (literals as `?`).
    pub normalized: Box<str>,
    /// How running it changes the server session beyond the transaction.
    pub session: SessionEffect,
    /// A database it needs free of other sessions (`DROP DATABASE x`…).
    pub frees_database: Option<std::sync::Arc<str>>,
    /// It may send a notification (`NOTIFY`, `pg_notify`).
    pub notifies: bool,
    /// It reads `pg_prepared_statements` (shown per client in transaction mode, see
    /// [`crate::pg::prepared_view`]).
    pub reads_prepared_view: bool,
    /// It is a savepoint statement (settings changed after a savepoint are undone by
    /// `ROLLBACK TO` it).
    pub savepoint: Option<Savepoint>,
    /// Read-only or not, for replica routing.
    pub route: Classification,
    /// The query-insight fingerprint (constants, parameters and list lengths merged).
    pub fingerprint: crate::insight::fingerprint::Fingerprint,
}

impl StatementInfo {
    /// Analyse a shape from the raw text of its first occurrence (parsed once, here).
    fn analyze(raw: &str, normalized: &str) -> StatementInfo {
        // parsed once per shape; the router and the fingerprint share the AST
        let ast = parse(raw);
        StatementInfo {
            normalized: normalized.into(),
            session: effects::session_effect(normalized),
            frees_database: effects::database_to_free(normalized).map(Into::into),
            notifies: effects::notifies(normalized),
            reads_prepared_view: crate::pg::prepared_view::reads_view(normalized),
            savepoint: effects::savepoint(normalized),
            route: classify::classify(ast.as_deref()),
            fingerprint: crate::insight::fingerprint::fingerprint(raw, ast.as_deref()),
        }
    }

    /// The analysis of a statement over the size limit: the lexer's view only (linear), and
    /// no copy of its text beyond the fingerprint's first kilobyte.
    fn oversized(normalized: &str) -> StatementInfo {
        let fingerprint = crate::insight::fingerprint::oversized(normalized);
        StatementInfo {
            normalized: fingerprint.text.clone(),
            session: effects::session_effect(normalized),
            frees_database: None,
            notifies: effects::notifies(normalized),
            reads_prepared_view: crate::pg::prepared_view::reads_view(normalized),
            savepoint: effects::savepoint(normalized),
            route: Classification::write(),
            fingerprint,
        }
    }
}

/// Deepest syntax tree (as [`lexer::deeper_than`] estimates it) handed to sqlparser: well
/// inside a 2 MiB worker stack even in a debug build. Deeper statements are analysed by
/// the lexer, like statements that do not parse.
pub const MAX_PARSE_DEPTH: usize = 500;

/// Parse `raw` for routing and fingerprints, unless its tree could be too deep to walk
/// safely or sqlparser would read other tokens than PostgreSQL does (`None`, as for a
/// statement that does not parse).
pub fn parse(raw: &str) -> Option<Vec<sqlparser::ast::Statement>> {
    match lexer::for_sqlparser(raw, MAX_PARSE_DEPTH) {
        lexer::ForSqlparser::Nothing => None,
        lexer::ForSqlparser::AsIs => classify::parse(raw),
        lexer::ForSqlparser::Rewritten(text) => classify::parse(&text),
    }
}

/// Default of `general.max_analyzed_statement_size`: statements longer than this (in bytes)
/// are not parsed by sqlparser.
pub const DEFAULT_MAX_ANALYZED: usize = 64 << 10;

/// Scratch capacity kept by a worker thread between statements.
const SCRATCH_KEEP: usize = 64 << 10;

/// Shards of the process-wide cache.
const SHARDS: usize = 16;
/// Entries per shard (and per thread-local map) before it is cleared.
const SHARD_CAP: usize = 4096;
const LOCAL_CAP: usize = 8192;

/// The process-wide cache of analysed shapes.
pub struct Analyzer {
    shards: Vec<RwLock<HashMap<u64, Arc<StatementInfo>>>>,
    /// Distinguishes analysers in the thread-local maps (tests build several).
    id: u64,
    /// Longest statement text (bytes) given to sqlparser; longer ones are analysed by the
    /// lexer alone and never cached.
    max_analyzed: AtomicUsize,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SCRATCH: RefCell<String> = RefCell::new(String::with_capacity(256));
    // keyed by (analyzer, shape hash): already hashes, spread by a multiply, not SipHash
    static LOCAL: RefCell<normalize::IdMap<(u64, u64), Arc<StatementInfo>>> =
        RefCell::new(normalize::IdMap::default());
}

impl Analyzer {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Analyzer {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            max_analyzed: AtomicUsize::new(DEFAULT_MAX_ANALYZED),
        }
    }

    /// Set the longest statement sqlparser is given (config load and RELOAD).
    pub fn set_max_analyzed(&self, bytes: usize) {
        self.max_analyzed.store(bytes, Ordering::Relaxed);
    }

    fn too_long(&self, sql: &str) -> bool {
        sql.len() > self.max_analyzed.load(Ordering::Relaxed)
    }

    /// Normalise `sql`, find (or compute) the analysis of its shape, and hand both to `f`.
    pub fn with<R>(&self, sql: &str, f: impl FnOnce(&Normalized, &StatementInfo) -> R) -> R {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let norm = normalize::normalize_into(sql, &mut scratch);
            if self.too_long(sql) {
                let info = StatementInfo::oversized(&scratch);
                // a huge statement's scratch space goes back, not kept per worker
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = String::with_capacity(256);
                }
                return f(&norm, &info);
            }
            let key = (self.id, norm.hash);
            // a hit in this thread's map is used in place: no reference count is touched,
            // so threads running the same statement share no written cache line
            let looked = LOCAL.with(|l| match l.borrow().get(&key) {
                Some(info) => Ok(f(&norm, info)),
                None => Err(f),
            });
            let f = match looked {
                Ok(r) => return r,
                Err(f) => f,
            };
            let info = self.shared(norm.hash, sql, &scratch);
            LOCAL.with(|l| {
                let mut l = l.borrow_mut();
                if l.len() >= LOCAL_CAP {
                    l.clear();
                }
                l.insert(key, info.clone());
            });
            f(&norm, &info)
        })
    }

    /// The analysis cached under `hash`, if it is still cached (no reference count taken:
    /// a hit in this thread's map is used in place).
    pub fn with_hash<R>(&self, hash: u64, f: impl FnOnce(&StatementInfo) -> R) -> Option<R> {
        let mut f = Some(f);
        let local = LOCAL.with(|l| {
            let map = l.borrow();
            let info = map.get(&(self.id, hash))?;
            f.take().map(|f| f(info))
        });
        if local.is_some() {
            return local;
        }
        let info = self.shards[(hash as usize) % SHARDS]
            .read()
            .get(&hash)?
            .clone();
        f.take().map(|f| f(&info))
    }

    /// Analysis of `sql` as an owned value (cold paths and tests).
    pub fn analyze(&self, sql: &str) -> (Normalized, Arc<StatementInfo>) {
        let (text, norm) = normalize::normalize(sql);
        if self.too_long(sql) {
            return (norm, Arc::new(StatementInfo::oversized(&text)));
        }
        let info = self.shared(norm.hash, sql, &text);
        (norm, info)
    }

    fn shared(&self, hash: u64, raw: &str, normalized: &str) -> Arc<StatementInfo> {
        let shard = &self.shards[(hash as usize) % SHARDS];
        if let Some(info) = shard.read().get(&hash) {
            return info.clone();
        }
        let info = Arc::new(StatementInfo::analyze(raw, normalized));
        let mut map = shard.write();
        if map.len() >= SHARD_CAP {
            map.clear();
        }
        map.entry(hash).or_insert(info).clone()
    }

    /// Shapes cached process-wide.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_analysis_per_shape() {
        let a = Analyzer::new();
        for id in 0..100 {
            let dirty = a.with(&format!("select * from t where id = {id}"), |_, i| {
                i.session.dirties()
            });
            assert!(!dirty);
        }
        assert_eq!(a.len(), 1);
        assert!(a.with("SET search_path = x", |_, i| i.session.dirties()));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn statements_over_the_limit_are_analysed_by_tokens_and_not_cached() {
        use crate::insight::fingerprint::Source;
        let a = Analyzer::new();
        a.set_max_analyzed(64);
        let short = "select * from t where id = 1";
        let long = format!("select * from t where id in ({})", "1, ".repeat(40) + "2");
        let (src, class) = a.with(short, |_, i| (i.fingerprint.source, i.route.class.clone()));
        assert_eq!(src, Source::Ast);
        assert_eq!(class, classify::Class::Read);
        let (src, class, dirty) = a.with(&long, |_, i| {
            (
                i.fingerprint.source,
                i.route.class.clone(),
                i.session.dirties(),
            )
        });
        assert_eq!(src, Source::Tokens);
        assert_eq!(class, classify::Class::Write, "unparsed: to the primary");
        assert!(!dirty);
        assert_eq!(a.len(), 1, "the long statement is not cached");
        let (norm, info) = a.analyze(&long);
        assert!(a.with_hash(norm.hash, |_| ()).is_none());
        assert_eq!(&*info.normalized, "select * from t where id in (?)");
        // a long SET still dirties the session: the lexer reads it
        let set = format!("SET application_name = '{}'", "x".repeat(100));
        assert!(a.with(&set, |_, i| i.session.dirties()));
    }

    /// The fuzzer's differential check: a statement and its twin get one fingerprint.
    fn assert_twins_agree(sql: &str, twin: &str) {
        use crate::insight::fingerprint::fingerprint;
        let (a, b) = (
            fingerprint(sql, parse(sql).as_deref()),
            fingerprint(twin, parse(twin).as_deref()),
        );
        assert_eq!((a.id, &a.text), (b.id, &b.text), "{sql:?} vs {twin:?}");
    }

    /// Found by the `sql_fingerprint` fuzzer (10 M-exec run, 2026-12-03): sqlparser took
    /// `$1$` for a dollar quote, so the string literal inside it was not a literal to
    /// sqlparser, and a twin with another literal got another fingerprint.
    #[test]
    fn a_parameter_glued_to_a_dollar_is_not_left_to_sqlparser() {
        use crate::insight::fingerprint::{fingerprint, Source};
        let sql = "select\t$1$'$1$/'m'";
        let twin = "seLecT $1$'zz'M'";
        assert!(lexer::sqlparser_misreads(sql));
        assert!(parse(sql).is_none());
        let (a, b) = (
            fingerprint(sql, parse(sql).as_deref()),
            fingerprint(twin, parse(twin).as_deref()),
        );
        assert_eq!((a.id, &a.text, a.source), (b.id, &b.text, Source::Tokens));
        // the second finding: an unclosed quote at the end, read by sqlparser depending on
        // the case of the word before it
        let (sql, twin) = ("select.5&>'\u{17}'U'", "SelEct.5&>'zz'u'");
        assert!(parse(sql).is_none() && parse(twin).is_none());
        let (a, b) = (fingerprint(sql, None), fingerprint(twin, None));
        assert_eq!((a.id, &a.text), (b.id, &b.text));
        for open in ["select 'a", "select \"a", "select $x$ a", "select 1 /* a"] {
            assert!(lexer::sqlparser_misreads(open), "{open}");
        }
        for fine in [
            "select $1, $2",
            "select $$a$$",
            "select $t$x$t$",
            "select '$1$'",
            "select 'a''b', \"q\"\"x\", e'\\'' /* c /* d */ */",
        ] {
            assert!(!lexer::sqlparser_misreads(fine), "{fine}");
        }
        assert!(parse("select $1, $2").is_some());
    }

    /// The third and fourth `sql_fingerprint` findings.
    #[test]
    fn sqlparser_only_operators_and_glued_placeholders_take_the_token_path() {
        // the third finding: postfix `!` (gone from PostgreSQL) and `&>` glued to what
        // follows (sqlparser skipped the character after it)
        let sql = "select\r -t\r -1, +2.5!e7, intelect\r -1, +.5!e1, +2.5!e7, inteleSET&>1, +.5#er";
        let twin = "seLecT\t-t   -42,   +2.5!e7,   inTelEct   -42,   +.5!e1,   +2.5!e7,   iNteLesEt&>100000, \t +.5#er";
        assert_twins_agree(sql, twin);
        assert!(parse("select 2.5!e7").is_none() && parse("select !!2").is_none());
        assert!(parse("select a != b, a !~ 'x' from t").is_some());
        assert!(parse("select box '(1,1),(0,0)' &>(box '(2,2),(0,0)')").is_none());
        let spaced = parse("select box '(1,1),(0,0)' &> box '(2,2),(0,0)'");
        assert!(spaced.is_some(), "`&>` before a space parses");
        let unicode = "select 'é' || x, \"ü\" &< y\n  from t where z <> 'ß' and w >= 1";
        assert!(
            parse(unicode).is_some(),
            "columns count characters, not bytes"
        );
        // the fourth: a dollar-quote tag starting with a digit (`$88888S8888$`), which
        // PostgreSQL reads as parameter `$88888` and a word
        let sql = "select@@@@@@@@$88888S8888$@@@@not@@@@@H@@@@@@@@@@@@@@@ escape '!' is n'y%'ot n@@@@$88888S8888$@@@@not@@@@@H@@@@@@@@@@@@@@@ escape nuIl";
        let twin = "SelEct@@@@@@@@$88888S8888$@@@@nOt@@@@@h@@@@@@@@@@@@@@@\tesCapE \t 'long literal'\tiS \t n'y%'Ot n@@@@$88888s8888$@@@@nOt@@@@@h@@@@@@@@@@@@@@@ EscApe nuIl";
        assert_twins_agree(sql, twin);
        assert!(parse("select $1x").is_none() && parse("select $2a$ x $2a$").is_none());
        assert!(parse("select $t$x$t$, $$y$$ from t where b = $12").is_some());
    }

    /// The seventh and eighth findings.
    #[test]
    fn operator_runs_and_quoted_identifiers_read_as_postgresql_does() {
        // the seventh: operators glued together, one operator to PostgreSQL (`@@@@`, `^-`,
        // `!=-`), split by sqlparser; a trailing `+`/`-` after plain ones is split by both
        // (and `||-` is one custom operator to both)
        let sql = "select@@@@no@c@@:ot like 'y%'@@@@@cap#x' e\0\0n\u{6}R\0\0\0M\u{1}\0\0\0\0\0\0\0''l\\','' \\',\u{1f}'";
        let twin = "SelEct@@@@nO@c@@:Ot\tlIke \t 'long literal'@@@@@Cap#x' e\0\0n\u{6}R\0\0\0M\u{1}\0\0\0\0\0\0\0''l\\','long literal'\t\\'a''b'";
        assert_twins_agree(sql, twin);
        for glued in [
            "select a @@@@ b",
            "select 2^-1",
            "select a !=-1",
            "select a @-1",
        ] {
            assert!(parse(glued).is_none(), "{glued}");
        }
        // the eighth: a quoted identifier holding a backslash and a quote, which sqlparser
        // prints back with that quote undoubled
        let sql = "select@v@\"\"\" \\\"\"$888s88$02*\0\0*\"L";
        let twin = "SelEct@v@\"\"\" \\\"\"$888s88$02*\0\0*\"l";
        assert_twins_agree(sql, twin);
        assert!(parse("select \"a\\\"\"b\" x").is_none());
        let quoted = "select \"Col\"\"x\", \"a\\b\", \"é\"\"\" from \"T\" where \"\"\"\" = 1";
        assert!(parse(quoted).is_some(), "{quoted}");
    }

    /// The ninth and tenth findings.
    #[test]
    fn byte_strings_and_operators_before_comments_take_the_token_path() {
        // the ninth: `''` inside a hex or bit string, an escaped quote to sqlparser only
        let sql = "SET th = a ,c#-  a, sel #xt #x':e\0''\\','s\tx'0 \0\0\0\0Rn\0\0''\\','";
        let twin = "Set   tH   =   A   ,C#-   A, \t Sel\t#Xt   #x':e\0''\\',''100000   \0\0\0\0rn\0\0''\\''";
        assert_twins_agree(sql, twin);
        assert!(parse("select x'ab''cd'").is_none() && parse("select b'01''10'").is_none());
        assert!(parse("select x'abcd', b'0110', 'it''s'").is_some());
        // the tenth: `#/*` read by sqlparser as one custom operator; PostgreSQL ends the
        // operator where the comment starts
        let sql = "SELECT a. b\r\r#/*'*/'.a. b.Fa*'x'\r\r\r/\r# /*'*/'b'";
        let twin = "SelEct a.\tb \t #/*'*/'long literal'x'\r\r\r/\r# /*'*/'zz'";
        assert_twins_agree(sql, twin);
        assert!(parse("select a #/* c */ 1").is_none() && parse("select a #-- c\n 1").is_none());
        assert!(parse("select a # /* c */ 1, b - -1").is_some());
        for split in [
            "select a=-1, b<-2, c*-3, d/+4, e<>-5, f>=-+6",
            "select a @@ b, 2 ^ -1, a || -1, a||-1",
        ] {
            assert!(parse(split).is_some(), "{split}");
        }
    }

    /// The eleventh and twelfth findings.
    #[test]
    fn constants_and_characters_postgresql_has_no_token_for() {
        // the eleventh: an integer past i64 where sqlparser wants a count (an array bound
        // here: `a[9] 42` is a typed literal to it) failed the parse, its twin's did not
        let sql = "select '5'::i+2.5e3, '0-01-01', x::nume(ci0r1,2), a[19999999999999999999999999][ 999]99updat-- - 4999999999999999999999";
        let twin = "seLecT \t 'long literal'::i+2.5e3, 'zz',\tx::NumE(Ci0R1,42), \t a[9][\t42]42updat-- - 4999999999999999999999";
        assert_twins_agree(sql, twin);
        for (long, short) in [
            (
                "select x::varchar(99999999999999999999)",
                "select x::varchar(9)",
            ),
            (
                "select top 99999999999999999999 a from t",
                "select top 9 a from t",
            ),
        ] {
            assert_eq!(parse(long).is_some(), parse(short).is_some(), "{long}");
        }
        let big =
            "select * from t where id = 123456789012345678901234567890 limit 9223372036854775807";
        assert_eq!(
            lexer::for_sqlparser(big, MAX_PARSE_DEPTH),
            lexer::ForSqlparser::Rewritten(
                "select * from t where id = 1 limit 9223372036854775807".into()
            )
        );
        assert!(parse(big).is_some());
        assert_eq!(
            lexer::for_sqlparser("select 007", 9),
            lexer::ForSqlparser::AsIs
        );
        // the twelfth: braces, an ODBC escape to sqlparser (`{t:n}` parses, `{T:n}` not), no
        // token at all to PostgreSQL
        assert_twins_agree("select 5.e3.ect@ {t:n}b", "seLecT \t 5.e3.eCt@ {T:n}b");
        for refused in ["select {t '10:00'}", "select a \\ b", "select {1}"] {
            assert!(parse(refused).is_none(), "{refused}");
        }
        assert!(parse("select '{1,2}'::int[], e'\\{', \"{\" from t").is_some());
    }

    /// Run the analysis on a thread with a tokio worker's stack (2 MiB): a stack overflow
    /// aborts the whole process, so this is where a deep tree would show.
    fn analyse_on_worker_stack(sql: String) -> crate::insight::fingerprint::Source {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let a = Analyzer::new();
                a.with(&sql, |_, i| i.fingerprint.source)
            })
            .expect("spawn")
            .join()
            .expect("analysis panicked")
    }

    /// Issue 18: `select 1+1+…` with 2,000 operators (4 KB) overflowed a worker's stack
    /// (sqlparser builds operator chains in a loop into a left-deep tree; cloning, printing,
    /// visiting and dropping it recurse). Deep statements are now analysed by the lexer; the
    /// deepest trees still handed to sqlparser are walked safely.
    #[test]
    fn deep_statements_never_overflow_a_worker_stack() {
        use crate::insight::fingerprint::Source;
        let deep = [
            format!("select 1{}", "+1".repeat(30_000)),
            format!(
                "select * from t where {}",
                "a = 1 and ".repeat(6_000) + "true"
            ),
            format!("select 1{}", " union select 1".repeat(4_000)),
            format!("select {}1", "not ".repeat(15_000)),
            format!("select 1{}", "::int".repeat(12_000)),
            format!("select a{}", "[1]".repeat(15_000)),
            format!("select {}1{}", "(".repeat(20_000), ")".repeat(20_000)),
        ];
        for sql in deep {
            let head: String = sql.chars().take(40).collect();
            assert_eq!(analyse_on_worker_stack(sql), Source::Tokens, "{head}");
        }
        // just under the estimate's limit: sqlparser gets it, and its tree is walked
        let limit = MAX_PARSE_DEPTH;
        let parsed = [
            format!("select 1{}", "+1".repeat(limit - 1)),
            format!("select 1{}", " union select 1".repeat(limit / 8 - 1)),
            format!(
                "select * from t where {}",
                "a = 1 and ".repeat(limit / 2 - 1) + "true"
            ),
        ];
        for sql in parsed {
            let head: String = sql.chars().take(40).collect();
            assert_eq!(analyse_on_worker_stack(sql), Source::Ast, "{head}");
        }
    }
}

//! `pg_prepared_statements` as a transaction-mode client would see it directly.
//!
//! In transaction mode a client's statement `s1` is the process-wide `pake_7` on whichever
//! server runs its transaction ([`crate::pg::prepared`]), so the server's view lists
//! `pake_<id>` names, other clients' statements, and misses the client's own that this server
//! has not prepared yet. Drivers read the view to see what they have prepared (psycopg's own
//! tests do, 17 of them). A statement that reads it is sent with the view shadowed by a
//! common table expression of the same name built from the client's statements:
//!
//! ```sql
//! WITH pg_prepared_statements AS (
//!   SELECT c.name, coalesce(s.statement, c.statement), c.prepare_time, …
//!   FROM (VALUES (<client name>, 'pake_7', <text>, <declared types>, <time>), …) c(…)
//!   LEFT JOIN pg_catalog.pg_prepared_statements s ON s.name = c.server_name
//!   UNION ALL SELECT … FROM pg_catalog.pg_prepared_statements WHERE from_sql)
//! SELECT count(*) FROM pg_prepared_statements WHERE name != ''
//! ```
//!
//! Names and prepare times are the client's; the parameter types and plan counts are the
//! server's when it has the statement, else the types the client declared (`-` for those it
//! left to the server) and no plans. Statements prepared with SQL `PREPARE` are on the server
//! under their own name (they keep their server for the client) and are listed as they are.
//!
//! What is rewritten: each statement of the text that starts with SELECT, WITH, VALUES,
//! TABLE, INSERT, UPDATE or DELETE and names the view, unqualified or as
//! `pg_catalog.pg_prepared_statements`, in a Query or an unnamed Parse; a named statement
//! reading it runs as the unnamed statement, rewritten afresh at each Bind or Describe (the
//! client's statements change after it was prepared). Others (EXPLAIN, COPY, CREATE … AS,
//! DECLARE, a view or function reading it) read the server's view.

use crate::pg::prepared::ClientStatements;
use crate::pg::sql::lexer::{Kind, Lexer, Token};
use std::fmt::Write as _;

/// Longest text a rewrite may produce; a client with statements past it gets an error.
pub const MAX_REWRITTEN: usize = 8 << 20;

const VIEW: &str = "pg_prepared_statements";

/// A reference to the view in `text` (a lexer pass; cheap next to the analysis it joins).
pub fn reads_view(text: &str) -> bool {
    Lexer::new(text).any(|t| names_view(text, &t))
}

fn names_view(src: &str, t: &Token) -> bool {
    match t.kind {
        Kind::Word => t.text(src).eq_ignore_ascii_case(VIEW),
        Kind::QuotedIdent => t.text(src).get(1..t.text(src).len() - 1) == Some(VIEW),
        _ => false,
    }
}

/// Why a text was not rewritten although it reads the view.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The rewritten text would pass [`MAX_REWRITTEN`].
    TooLarge(usize),
}

/// `text` with the view shadowed in every statement that can take a WITH clause; `Ok(None)`
/// when there is none (the text goes as it is). `server_version` is the server's reported
/// `server_version` (its columns depend on it).
pub fn rewrite(
    text: &str,
    statements: &ClientStatements,
    server_version: &str,
) -> Result<Option<String>, Refused> {
    let edits = edits(text);
    if edits.is_empty() {
        return Ok(None);
    }
    let cte = cte(statements, major(server_version)).ok_or(Refused::TooLarge(MAX_REWRITTEN))?;
    let inserts = edits
        .iter()
        .filter(|e| matches!(e, Edit::Insert { .. }))
        .count();
    let len = text.len() + inserts * (cte.len() + VIEW.len() + 16);
    if len > MAX_REWRITTEN {
        return Err(Refused::TooLarge(len));
    }
    let mut out = String::with_capacity(len);
    let mut at = 0;
    for edit in edits {
        match edit {
            Edit::Insert { at: pos, with } => {
                out.push_str(&text[at..pos]);
                match with {
                    // `WITH [RECURSIVE]` already there: ours goes first in its list
                    true => write!(out, " {VIEW} AS ({cte}),"),
                    false => write!(out, "WITH {VIEW} AS ({cte}) "),
                }
                .ok();
                at = pos;
            }
            Edit::Delete { from, to } => {
                out.push_str(&text[at..from]);
                at = to;
            }
        }
    }
    out.push_str(&text[at..]);
    Ok(Some(out))
}

/// One change to the text, in order of position.
#[derive(Debug, PartialEq, Eq)]
enum Edit {
    /// Our WITH clause at byte `at` (`with`: after an existing `WITH [RECURSIVE]`).
    Insert { at: usize, with: bool },
    /// Drop `pg_catalog.` before the view's name, so that the clause shadows it.
    Delete { from: usize, to: usize },
}

/// Where each statement of `src` that reads the view is changed.
fn edits(src: &str) -> Vec<Edit> {
    let toks: Vec<Token> = Lexer::new(src)
        .filter(|t| t.kind != Kind::Comment)
        .collect();
    let mut edits = Vec::new();
    for stmt in toks.split(|t| t.is_punct(src, b';')) {
        if !stmt.iter().any(|t| names_view(src, t)) {
            continue;
        }
        let Some(first) = stmt.first() else { continue };
        let word = |t: &Token| match t.kind {
            Kind::Word => t.text(src).to_ascii_lowercase(),
            _ => String::new(),
        };
        let insert = match word(first).as_str() {
            "select" | "values" | "table" | "insert" | "update" | "delete" => Edit::Insert {
                at: first.start,
                with: false,
            },
            "with" => {
                let after = match stmt.get(1).map(word).as_deref() {
                    Some("recursive") => stmt[1].end,
                    _ => first.end,
                };
                Edit::Insert {
                    at: after,
                    with: true,
                }
            }
            _ => continue,
        };
        edits.push(insert);
        for w in stmt.windows(3) {
            let qualified = w[0].kind == Kind::Word
                && w[0].text(src).eq_ignore_ascii_case("pg_catalog")
                && w[1].is_punct(src, b'.')
                && names_view(src, &w[2]);
            if qualified {
                edits.push(Edit::Delete {
                    from: w[0].start,
                    to: w[2].start,
                });
            }
        }
    }
    edits
}

/// Major version from a reported `server_version` ("15.4 (Debian …)", "16beta1").
fn major(version: &str) -> u32 {
    let digits = version.bytes().take_while(u8::is_ascii_digit).count();
    version[..digits].parse().unwrap_or(15)
}

/// The view's columns after `parameter_types` on server `major`, as
/// (name, value when the server does not have the statement).
fn later_columns(major: u32) -> &'static [(&'static str, &'static str)] {
    const V13: &[(&str, &str)] = &[("from_sql", "false")];
    const V14: &[(&str, &str)] = &[
        ("from_sql", "false"),
        ("generic_plans", "0::int8"),
        ("custom_plans", "0::int8"),
    ];
    const V16: &[(&str, &str)] = &[
        ("result_types", "NULL::regtype[]"),
        ("from_sql", "false"),
        ("generic_plans", "0::int8"),
        ("custom_plans", "0::int8"),
    ];
    match major {
        0..=13 => V13,
        14 | 15 => V14,
        _ => V16,
    }
}

/// The body of the WITH clause standing for the view; `None` past [`MAX_REWRITTEN`].
fn cte(statements: &ClientStatements, major: u32) -> Option<String> {
    let later = later_columns(major);
    let mut sql = String::from(
        "SELECT c.name, coalesce(s.statement, c.statement) AS statement, c.prepare_time, \
         coalesce(s.parameter_types, c.parameter_types::regtype[]) AS parameter_types",
    );
    // (from_sql: the server's statements standing for the client's are protocol ones)
    for (name, absent) in later {
        write!(sql, ", coalesce(s.{name}, {absent}) AS {name}").ok();
    }
    sql.push_str(
        " FROM (VALUES (NULL::text, NULL::text, NULL::text, NULL::oid[], NULL::timestamptz)",
    );
    for (name, stmt, micros) in statements.iter() {
        if sql.len() > MAX_REWRITTEN {
            return None;
        }
        sql.push_str(", (");
        dollar_quoted(&mut sql, &String::from_utf8_lossy(name));
        write!(sql, ", '{}', ", stmt.name).ok();
        dollar_quoted(&mut sql, &stmt.query);
        sql.push_str(", '{");
        for (i, oid) in declared_types(stmt.definition()).enumerate() {
            if i > 0 {
                sql.push(',');
            }
            write!(sql, "{oid}").ok();
        }
        write!(
            sql,
            "}}', TIMESTAMPTZ 'epoch' + {micros} * INTERVAL '1 microsecond')"
        )
        .ok();
    }
    sql.push_str(
        ") AS c(name, server_name, statement, parameter_types, prepare_time) \
         LEFT JOIN pg_catalog.pg_prepared_statements s ON s.name = c.server_name \
         WHERE c.name IS NOT NULL UNION ALL SELECT name, statement, prepare_time, \
         parameter_types",
    );
    for (name, _) in later {
        write!(sql, ", {name}").ok();
    }
    sql.push_str(" FROM pg_catalog.pg_prepared_statements WHERE from_sql");
    Some(sql)
}

/// The parameter type oids a Parse definition (`query\0 nparams types…`) declares; as many
/// as its bytes hold.
fn declared_types(def: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let rest = def
        .iter()
        .position(|&b| b == 0)
        .map_or(&[][..], |nul| &def[nul + 1..]);
    let n = rest
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
    (0..n)
        .map_while(move |i| rest.get(2 + i * 4..6 + i * 4))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `s` as a dollar-quoted literal whose tag does not occur in it (independent of
/// `standard_conforming_strings`).
fn dollar_quoted(out: &mut String, s: &str) {
    let mut tag = String::from("$p$");
    let mut n = 0u32;
    // the closing tag must be the first occurrence of it after the text starts (a text
    // ending in `$p` would close early too)
    while format!("{s}{tag}").find(&tag) != Some(s.len()) {
        n += 1;
        tag = format!("$p{n}$");
    }
    write!(out, "{tag}{s}{tag}").ok();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::prepared::Registry;

    fn def(query: &str, types: &[u32]) -> Vec<u8> {
        let mut d = query.as_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            d.extend_from_slice(&t.to_be_bytes());
        }
        d
    }

    fn client(reg: &Registry) -> ClientStatements {
        let mut c = ClientStatements::default();
        c.insert(b"_pg3_0", reg.intern(&def("select $1::int", &[23])));
        c.insert(b"it's", reg.intern(&def("select '$p$'", &[])));
        c
    }

    #[test]
    fn finds_the_view_however_it_is_written() {
        assert!(reads_view("select * from pg_prepared_statements"));
        assert!(reads_view(
            "SELECT * FROM PG_CATALOG.PG_PREPARED_STATEMENTS"
        ));
        assert!(reads_view("select * from \"pg_prepared_statements\""));
        assert!(!reads_view("select 'pg_prepared_statements'"));
        assert!(!reads_view("select 1 -- pg_prepared_statements"));
        assert!(!reads_view("select * from my_pg_prepared_statements"));
    }

    #[test]
    fn statements_that_take_a_with_clause_get_one() {
        let reg = Registry::default();
        let c = client(&reg);
        let out = rewrite("select count(*) from pg_prepared_statements", &c, "15.4")
            .unwrap()
            .unwrap();
        assert!(out.starts_with("WITH pg_prepared_statements AS (SELECT c.name"));
        assert!(out.ends_with(") select count(*) from pg_prepared_statements"));
        assert!(out.contains("'pake_"));
        assert!(out.contains("'{23}'"));
        // a name with a quote and a text with the default tag are quoted safely
        assert!(out.contains("$p$it's$p$"));
        assert!(out.contains("$p1$select '$p$'$p1$"));
        let mut q = String::new();
        dollar_quoted(&mut q, "a$p");
        assert_eq!(q, "$p1$a$p$p1$");
        assert!(out.contains("generic_plans"));
        assert!(!out.contains("result_types"));

        let out = rewrite(
            "WITH RECURSIVE x AS (select 1) select * from x, pg_catalog.pg_prepared_statements",
            &c,
            "16.1",
        )
        .unwrap()
        .unwrap();
        assert!(out.starts_with("WITH RECURSIVE pg_prepared_statements AS (SELECT"));
        assert!(out.contains("), x AS (select 1) select * from x, pg_prepared_statements"));
        assert!(out.contains("result_types"));
    }

    #[test]
    fn only_the_statements_reading_the_view_change() {
        let c = ClientStatements::default();
        let text = "select 1; /* c */ select name from pg_prepared_statements; select 2";
        let out = rewrite(text, &c, "15").unwrap().unwrap();
        assert!(out.starts_with("select 1; /* c */ WITH pg_prepared_statements AS ("));
        assert!(out.ends_with(") select name from pg_prepared_statements; select 2"));
        // no statement of the client: the clause still has the right columns, no rows
        assert!(out.contains("WHERE c.name IS NOT NULL"));
        for unchanged in [
            "explain select * from pg_prepared_statements",
            "copy (select * from pg_prepared_statements) to stdout",
            "select 1",
        ] {
            assert_eq!(rewrite(unchanged, &c, "15"), Ok(None), "{unchanged}");
        }
    }

    #[test]
    fn a_rewrite_past_the_limit_is_refused() {
        let reg = Registry::default();
        let mut c = ClientStatements::default();
        let long = "x".repeat(MAX_REWRITTEN / 2 + 1);
        c.insert(b"a", reg.intern(&def(&format!("select '{long}'"), &[])));
        let text = "select 1 from pg_prepared_statements; select 2 from pg_prepared_statements";
        assert!(matches!(rewrite(text, &c, "15"), Err(Refused::TooLarge(_))));
    }

    #[test]
    fn definitions_and_versions_are_read_defensively() {
        let types = |d: &[u8]| declared_types(d).collect::<Vec<_>>();
        assert_eq!(types(b"select 1"), Vec::<u32>::new());
        assert_eq!(types(&def("q", &[1082, 21])), vec![1082, 21]);
        // a count past the bytes present reads what is there
        assert_eq!(types(b"q\0\0\x05\0\0\0\x17"), vec![23]);
        assert_eq!(major("16beta1"), 16);
        assert_eq!(major("15.4 (Debian 15.4-1)"), 15);
        assert_eq!(major("junk"), 15);
    }
}

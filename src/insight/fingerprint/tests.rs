//! The fingerprint table: pairs that must share a fingerprint, pairs that must not.

use super::*;

fn fp(sql: &str) -> Fingerprint {
    fingerprint(sql, parse(sql).as_deref())
}

/// Statements on one line are the same logical statement.
const SAME: &[&[&str]] = &[
    // literal vs parameter vs other literal types, casts and signs on constants
    &[
        "select a from t where id = 1",
        "SELECT a FROM t WHERE id = $1",
        "select a from t where id = '9'",
        "select a from t where id = 3000000000",
        "select a from t where id = -5",
        "select a from t where id = $1::int8",
        "select a from t where id = CAST($1 AS integer)",
        "select a from t where id = '7'::bigint",
    ],
    // case, whitespace, comments (incl. sqlcommenter), trailing semicolon
    &[
        "select a, b from t where x = 1 and y = 'q' order by a limit 10",
        "SELECT  a,b\n\tFROM T -- comment\nWHERE x=2 AND y='r' ORDER BY a LIMIT 20;",
        "/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/ select a, b from t where x = $1 and y = $2 order by a limit $3",
        "select /* hint */ a, b from t where x = 1 and y = 'q' order by a limit 10",
    ],
    // IN lists of any length, = ANY(array), <> ALL on the negation
    &[
        "select * from t where id in (1)",
        "select * from t where id in (1, 2)",
        "select * from t where id in (1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20)",
        "select * from t where id in ($1, $2, $3)",
        "select * from t where id = any($1)",
        "select * from t where id = ANY(ARRAY[1,2,3])",
        "select * from t where id = any('{1,2}'::int[])",
    ],
    &[
        "select * from t where id not in (1, 2)",
        "select * from t where id <> all($1)",
    ],
    // row-value IN lists
    &[
        "select * from t where (a, b) in ((1, 2))",
        "select * from t where (a, b) in ((1, 2), (3, 4), (5, 6))",
    ],
    // VALUES lists of any length
    &[
        "insert into t (a, b) values (1, 'x')",
        "insert into t (a, b) values (1, 'x'), (2, 'y'), (3, 'z')",
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)",
    ],
    // arrays of constants
    &[
        "select array[1, 2, 3]",
        "select array[$1]",
    ],
    // CTEs
    &[
        "with r as (select id from t where v > 10) select * from r join u on u.id = r.id where u.k = 'a'",
        "WITH r AS (SELECT id FROM t WHERE v > $1) SELECT * FROM r JOIN u ON u.id = r.id WHERE u.k = $2",
    ],
    // joins
    &[
        "select o.id from orders o join customers c on c.id = o.customer_id where c.email = 'a@b' and o.total > 10.5",
        "select o.id from orders o join customers c on c.id = o.customer_id where c.email = $1 and o.total > $2",
    ],
    // typed strings and intervals
    &[
        "select * from t where created > date '2020-01-01'",
        "select * from t where created > $1",
    ],
    // updates, deletes
    &[
        "update t set a = 1, b = 'x' where id = 5",
        "UPDATE t SET a = $1, b = $2 WHERE id = $3",
    ],
    &[
        "delete from t where id in (1, 2, 3)",
        "delete from t where id = any($1)",
    ],
    // statements the parser rejects still merge on their constants
    &[
        "select * from t where x = 1 frobnicate 2",
        "SELECT * FROM t WHERE x = 99 FROBNICATE 'y'",
    ],
];

/// Statements on one line are all different from each other.
const DIFFERENT: &[&[&str]] = &[
    &[
        "select a from t where id = 1",
        "select b from t where id = 1",
        "select a from u where id = 1",
        "select a from t where id > 1",
        "select a from t where id = 1 and x = 2",
        "select a from t where id = 1 or x = 2",
        "select a from t where id is null",
        "select a from t where id in (select id from u)",
        "select a from t where id not in (1)",
        "select a from t where id = 1 order by a",
        "select a from t where id = 1 order by a desc",
        "select a from t where id = 1 limit 1",
        "select a from t where id = 1 for update",
        "select count(*) from t where id = 1",
        "select a from t join u on u.id = t.id where t.id = 1",
        "select a from t left join u on u.id = t.id where t.id = 1",
        "select \"A\" from t where id = 1",
        "select a from t where id = x",
    ],
    &[
        "insert into t (a, b) values (1, 2)",
        "insert into t (a) values (1)",
        "insert into t (a, b) values (1, now())",
        "insert into t (a, b) values (1, 2) returning id",
        "insert into t (a, b) values (1, 2) on conflict do nothing",
    ],
    &[
        "select * from t where x = 1 frobnicate 2",
        "select * from t where x = 1 frobnicate y",
    ],
];

#[test]
fn same_logical_statement_same_fingerprint() {
    for group in SAME {
        let first = fp(group[0]);
        for sql in &group[1..] {
            let other = fp(sql);
            assert_eq!(
                first.id, other.id,
                "\n{}\n  -> {}\n{}\n  -> {}",
                group[0], first.text, sql, other.text
            );
        }
    }
}

#[test]
fn different_structure_different_fingerprint() {
    for group in DIFFERENT {
        let fps: Vec<Fingerprint> = group.iter().map(|s| fp(s)).collect();
        for i in 0..fps.len() {
            for j in i + 1..fps.len() {
                assert_ne!(
                    fps[i].id, fps[j].id,
                    "\n{}\n{}\nboth -> {}",
                    group[i], group[j], fps[i].text
                );
            }
        }
    }
}

#[test]
fn text_has_no_client_values() {
    let f =
        fp("select * from users where email = 'alice@example.com' and age > 41 and id in (7, 8)");
    assert_eq!(f.source, Source::Ast);
    assert!(!f.text.contains("alice"), "{}", f.text);
    assert!(!f.text.contains("41"), "{}", f.text);
    assert!(!f.text.contains('7'), "{}", f.text);
    assert_eq!(
        f.text.as_ref(),
        "select * from users where email = ? and age > ? and id in (?)"
    );
}

#[test]
fn parse_failures_fall_back_to_tokens() {
    let sql = "select * from t where x = 1 frobnicate 'secret'";
    assert!(parse(sql).is_none());
    let f = fp(sql);
    assert_eq!(f.source, Source::Tokens);
    assert!(!f.text.contains("secret"));
    assert_eq!(f.kind, Kind::Select);
    // nothing at all still fingerprints
    let empty = fingerprint("", None);
    assert_eq!(empty.source, Source::Tokens);
}

#[test]
fn kinds() {
    assert_eq!(fp("select 1").kind, Kind::Select);
    assert_eq!(fp("insert into t values (1)").kind, Kind::Insert);
    assert_eq!(fp("update t set a = 1").kind, Kind::Update);
    assert_eq!(fp("delete from t").kind, Kind::Delete);
    assert_eq!(fp("begin").kind, Kind::Other);
    assert_eq!(fp("set search_path = x").kind, Kind::Other);
    assert_eq!(fp("select 1; select 2").kind, Kind::Other);
    assert!(!Kind::Other.explainable());
}

#[test]
fn ids_are_stable() {
    // the id is a hash of the canonical text: the same in every process
    let a = fp("SELECT * FROM t WHERE id = 1");
    assert_eq!(a.id, hash64(a.text.as_bytes()));
}

/// Found by the sql_fingerprint fuzz target (issue 18): `TABLE` followed by a newline did
/// not get the `SELECT * FROM` rewrite, so it fell back to tokens (and to the primary).
#[test]
fn table_shorthand_with_any_whitespace() {
    // as the proxy analyses it: crate::pg::sql::parse (router and fingerprint share it)
    let proxy = |sql: &str| fingerprint(sql, crate::pg::sql::parse(sql).as_deref());
    assert_eq!(proxy("TABLE\n  t"), proxy("table t"));
    assert_eq!(proxy("table\tt").source, Source::Ast);
    // a multi-byte character across the keyword's sixth byte (the fuzzer, again)
    assert_eq!(proxy("tablé t").source, Source::Tokens);
}

/// Found by the `sql_fingerprint` fuzzer: VALUES rows that differ only in the case of an
/// unquoted identifier are one shape, as they are one text once normalised.
#[test]
fn values_rows_differing_in_identifier_case_are_one_shape() {
    let sql = "values (1, 'a'), (values %(1, 'a'),'( b2,' ), (3,2, 'a'), (values %(1, 'a'),'( b2,' ), (3,2, 'b'), (3, 'c')";
    let twin = "vaLueS   (42,   'a''b'),   (ValUes \t %(9, 'zz'),'long literal'\t),   (42,42,   'a''b'),   (vAluEs \t %(9, 'zz'),'long literal'\t),   (42,42,   'a''b'),   (42,   'a''b')";
    let (a, b) = (fp(sql), fp(twin));
    assert_eq!((a.source, b.source), (Source::Ast, Source::Ast));
    assert_eq!((a.id, &a.text), (b.id, &b.text));
    assert_eq!(&*a.text, "values (?, ?), (values % (?, ?), ?), (?, ?, ?)");
    assert_eq!(fp("values (Col), (cOL)").text, fp("values (col)").text);
    assert_ne!(fp("values (\"Col\"), (col)").text, fp("values (col)").text);
}

/// Found by the `sql_fingerprint` fuzzer: sqlparser ends the statement list at an END where
/// a statement could end and drops what follows; PostgreSQL reads such text as a syntax
/// error. It is analysed by tokens, all of it, whatever the literals.
#[test]
fn text_after_a_stray_end_is_not_dropped() {
    for (sql, twin) in [
        (
            "use'n' end Iid.i, 'x'",
            "usE'' \t enD\tIid.i, 'long literal'",
        ),
        ("select 1 end; delete from t", "SELECT 2 END; DELETE FROM t"),
    ] {
        let (a, b) = (fp(sql), fp(twin));
        assert_eq!(
            (a.source, b.source),
            (Source::Tokens, Source::Tokens),
            "{sql}"
        );
        assert_eq!((a.id, &a.text), (b.id, &b.text));
    }
    assert!(fp("select 1 end;").text.contains("end"));
    // a real END is still a statement
    assert_eq!(fp("begin; select 1; end").source, Source::Ast);
}

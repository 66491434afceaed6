//! Statement analysis as the proxy runs it on a cache miss: sqlparser (router and
//! fingerprint share the AST), the routing classification, the fingerprint; differential:
//! the twin (re-spaced, re-cased, other literal values) gets the same fingerprint.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::insight::fingerprint::fingerprint;
use pake::pg::route::classify;
use pake::pg::sql::parse;

fuzz_target!(|data: &[u8]| {
    let (seed, data) = pake_fuzz::split_first(data);
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let ast = parse(sql);
    let _ = classify::classify(ast.as_deref());
    let fp = fingerprint(sql, ast.as_deref());
    let twin = pake_fuzz::twin(sql, seed);
    let twin_ast = parse(&twin);
    let twin_fp = fingerprint(&twin, twin_ast.as_deref());
    assert_eq!(
        (fp.id, &fp.text, fp.kind),
        (twin_fp.id, &twin_fp.text, twin_fp.kind),
        "fingerprints differ\n  sql:  {sql:?}\n  twin: {twin:?}"
    );
});

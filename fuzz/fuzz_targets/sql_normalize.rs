//! The SQL lexer and the literal normaliser (the request path's per-statement pass), with
//! the statement-effect reader on top, and the differential check: a statement and its
//! re-spaced, re-cased, re-literal'ed twin normalise to the same hash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::pg::sql::effects::session_effect;
use pake::pg::sql::lexer::Lexer;
use pake::pg::sql::normalize::normalize;

fuzz_target!(|data: &[u8]| {
    let (seed, data) = pake_fuzz::split_first(data);
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    // tokens are in order, inside the text, on char boundaries
    let mut last = 0;
    for tok in Lexer::new(sql) {
        assert!(tok.start >= last && tok.end > tok.start && tok.end <= sql.len());
        assert!(sql.is_char_boundary(tok.start) && sql.is_char_boundary(tok.end));
        last = tok.end;
    }
    let (text, norm) = normalize(sql);
    let _ = session_effect(&text);
    let _ = norm.hints.trace_id();
    let twin = pake_fuzz::twin(sql, seed);
    let (twin_text, twin_norm) = normalize(&twin);
    assert_eq!(
        text, twin_text,
        "normalised texts differ\n  sql:  {sql:?}\n  twin: {twin:?}"
    );
    assert_eq!(norm.hash, twin_norm.hash);
});

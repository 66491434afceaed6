//! Helpers shared by the fuzz targets in `fuzz_targets/`.

use pake::pg::sql::lexer::{Kind, Lexer};

/// Split fuzz input into `(selector byte, rest)`.
pub fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, &[]),
    }
}

/// The statement's twin: same tokens, other whitespace, other ASCII case for unquoted words,
/// other values for plain integer and plain `'…'` string literals. Its normalised hash and its
/// fingerprint must equal the original's. `seed` picks the variations.
pub fn twin(sql: &str, seed: u8) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut last = 0;
    let mut n = seed as usize;
    let mut prev: Option<Kind> = None;
    for tok in Lexer::new(sql) {
        let gap = &sql[last..tok.start];
        out.push_str(&respace(gap, &mut n));
        let text = tok.text(sql);
        // a word glued to a number keeps its case: sqlparser reads `9L` as a long literal
        // (upper case only), a quirk PostgreSQL does not share
        let glued_to_number = gap.is_empty() && prev == Some(Kind::Number);
        prev = Some(tok.kind);
        match tok.kind {
            Kind::Word if glued_to_number => out.push_str(text),
            Kind::Word => {
                for (i, c) in text.chars().enumerate() {
                    if (n + i) % 3 == 0 {
                        out.push(c.to_ascii_uppercase());
                    } else {
                        out.push(c.to_ascii_lowercase());
                    }
                }
            }
            Kind::Number if text.bytes().all(|b| b.is_ascii_digit()) => {
                // never a leading 0: `0` before a word starting with x, o or b would lex as a prefix
                out.push_str(["7", "42", "100000", "9"][n % 4]);
            }
            Kind::String if is_plain_string(text) => {
                out.push_str(["'zz'", "''", "'a''b'", "'long literal'"][n % 4]);
            }
            _ => out.push_str(text),
        }
        n = n.wrapping_mul(31).wrapping_add(7);
        last = tok.end;
    }
    out.push_str(&respace(&sql[last..], &mut n));
    out
}

/// A `'…'` literal with no prefix, properly closed (`'a''` is `a'` unterminated).
fn is_plain_string(text: &str) -> bool {
    text.len() >= 2
        && text.starts_with('\'')
        && text.ends_with('\'')
        && !text[1..text.len() - 1].replace("''", "").contains('\'')
}

/// Whitespace between tokens, re-spaced: runs of whitespace become another run; comments and
/// anything else in the gap stay as they are (a comment is part of the input's meaning to
/// the hints reader).
fn respace(gap: &str, n: &mut usize) -> String {
    if gap.is_empty() {
        return String::new();
    }
    if !gap.bytes().all(|b| b.is_ascii_whitespace()) {
        return gap.to_string();
    }
    // a newline must stay a newline: it may end a `--` comment before it
    let choices = if gap.contains('\n') {
        ["\n", " \n\t", "\r\n", "\n\n  "]
    } else {
        [" ", "\t", "   ", " \t "]
    };
    *n = n.wrapping_add(1);
    choices[*n % 4].to_string()
}

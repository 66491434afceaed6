//! A single-pass SQL tokenizer for PostgreSQL text: enough to tell words, quoted names,
//! literals, parameters, operators, punctuation and comments apart, with every quoting form
//! PostgreSQL has (`'…'` with `''`, `E'…'` with backslashes, `$tag$…$tag$`, `"…"`, nested
//! `/* */`). It never fails: unterminated input ends the last token at the end of the text.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// An unquoted identifier or keyword.
    #[default]
    Word,
    /// `"Name"`.
    QuotedIdent,
    /// Any string literal: `'…'`, `E'…'`, `B'…'`, `X'…'`, `U&'…'`, `$$…$$`.
    String,
    /// A numeric literal.
    Number,
    /// `$1`, `$2`…
    Param,
    /// An operator such as `=`, `<>`, `::`, `||`.
    Op,
    /// One of `( ) [ ] , ; .`
    Punct,
    /// `-- …` or `/* … */` (the text includes the delimiters).
    Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, src: &'a str) -> &'a str {
        src.get(self.start..self.end).unwrap_or("")
    }

    /// Is this the word `kw` (ASCII case-insensitive)?
    pub fn is_word(&self, src: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.text(src).eq_ignore_ascii_case(kw)
    }

    pub fn is_punct(&self, src: &str, c: u8) -> bool {
        self.kind == Kind::Punct && src.as_bytes().get(self.start) == Some(&c)
    }
}

/// Iterator over the tokens of `src`.
pub struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// A quote, dollar quote or block comment ran to the end of the text unclosed.
    open: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            bytes: src.as_bytes(),
            pos: 0,
            open: false,
        }
    }

    /// Did a quoted string or identifier, a dollar quote or a block comment run to the end
    /// of the text without its closing delimiter? (PostgreSQL rejects such text.)
    pub fn ended_open(&self) -> bool {
        self.open
    }

    /// Read the rest of the text and tell [`Lexer::ended_open`].
    pub fn ended_open_after_all(mut self) -> bool {
        self.by_ref().for_each(drop);
        self.open
    }

    fn peek(&self, off: usize) -> u8 {
        self.bytes.get(self.pos + off).copied().unwrap_or(0)
    }

    /// Advance to the char boundary at or after `pos` (multi-byte UTF-8 stays whole).
    fn settle(&mut self) {
        while self.pos < self.bytes.len() && !self.src.is_char_boundary(self.pos) {
            self.pos += 1;
        }
    }

    fn quoted(&mut self, quote: u8, backslash: bool) {
        // self.pos is at the opening quote
        self.pos += 1;
        let mut closed = false;
        while self.pos < self.bytes.len() {
            let b = self.bytes[self.pos];
            if backslash && b == b'\\' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if b == quote {
                if self.peek(0) == quote {
                    self.pos += 1;
                    continue;
                }
                closed = true;
                break;
            }
        }
        self.open |= !closed;
        self.pos = self.pos.min(self.bytes.len());
    }

    fn dollar(&mut self) -> bool {
        // $tag$ … $tag$ ; tag is empty or an identifier not starting with a digit
        let start = self.pos;
        let mut end = start + 1;
        while end < self.bytes.len() && is_ident_char(self.bytes[end]) {
            end += 1;
        }
        if self.bytes.get(end) != Some(&b'$') {
            return false;
        }
        if end > start + 1 && self.bytes[start + 1].is_ascii_digit() {
            return false;
        }
        let tag = &self.bytes[start..=end];
        let body = end + 1;
        let close = find(&self.bytes[body..], tag).map(|i| body + i + tag.len());
        self.open |= close.is_none();
        self.pos = close.unwrap_or(self.bytes.len());
        true
    }

    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            if self.peek(0) == b'/' && self.peek(1) == b'*' {
                depth += 1;
                self.pos += 2;
            } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                depth = depth.saturating_sub(1);
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.open |= depth > 0;
    }

    fn number(&mut self) {
        if self.peek(0) == b'0' && matches!(self.peek(1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B') {
            self.pos += 2;
            while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == b'_' {
                self.pos += 1;
            }
            return;
        }
        while self.peek(0).is_ascii_digit() || self.peek(0) == b'_' {
            self.pos += 1;
        }
        if self.peek(0) == b'.' && self.peek(1) != b'.' {
            self.pos += 1;
            while self.peek(0).is_ascii_digit() || self.peek(0) == b'_' {
                self.pos += 1;
            }
        }
        if matches!(self.peek(0), b'e' | b'E')
            && (self.peek(1).is_ascii_digit()
                || (matches!(self.peek(1), b'+' | b'-') && self.peek(2).is_ascii_digit()))
        {
            self.pos += 2;
            while self.peek(0).is_ascii_digit() {
                self.pos += 1;
            }
        }
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

fn is_op_char(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b':'
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Lexer<'_> {
    /// A comment, a quoted string or identifier (with its prefixes), a `$n` parameter or a
    /// dollar-quoted string at the cursor; `None` (cursor unmoved) for anything else.
    fn comment_or_literal(&mut self, b: u8) -> Option<Kind> {
        Some(match b {
            b'-' if self.peek(1) == b'-' => {
                while self.pos < self.bytes.len() && self.bytes[self.pos] != b'\n' {
                    self.pos += 1;
                }
                Kind::Comment
            }
            b'/' if self.peek(1) == b'*' => {
                self.block_comment();
                Kind::Comment
            }
            b'\'' => {
                self.quoted(b'\'', false);
                Kind::String
            }
            b'"' => {
                self.quoted(b'"', false);
                Kind::QuotedIdent
            }
            b'e' | b'E' if self.peek(1) == b'\'' => {
                self.pos += 1;
                self.quoted(b'\'', true);
                Kind::String
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if self.peek(1) == b'\'' => {
                self.pos += 1;
                self.quoted(b'\'', false);
                Kind::String
            }
            b'u' | b'U' if self.peek(1) == b'&' && matches!(self.peek(2), b'\'' | b'"') => {
                let q = self.peek(2);
                self.pos += 2;
                self.quoted(q, false);
                if q == b'"' {
                    Kind::QuotedIdent
                } else {
                    Kind::String
                }
            }
            b'$' if self.peek(1).is_ascii_digit() => {
                self.pos += 1;
                while self.peek(0).is_ascii_digit() {
                    self.pos += 1;
                }
                Kind::Param
            }
            b'$' if self.dollar() => Kind::String,
            _ => return None,
        })
    }

    /// A number, punctuation, a word or an operator at the cursor.
    fn word_number_or_op(&mut self, b: u8) -> Kind {
        match b {
            b'0'..=b'9' => {
                self.number();
                Kind::Number
            }
            b'.' if self.peek(1).is_ascii_digit() => {
                self.number();
                Kind::Number
            }
            b'(' | b')' | b'[' | b']' | b',' | b';' | b'.' => {
                self.pos += 1;
                Kind::Punct
            }
            b if is_ident_start(b) => {
                while self.pos < self.bytes.len()
                    && (is_ident_char(self.bytes[self.pos]) || self.bytes[self.pos] == b'$')
                {
                    self.pos += 1;
                }
                Kind::Word
            }
            b if is_op_char(b) => {
                while self.pos < self.bytes.len()
                    && is_op_char(self.bytes[self.pos])
                    && !(self.bytes[self.pos] == b'-' && self.peek(1) == b'-')
                    && !(self.bytes[self.pos] == b'/' && self.peek(1) == b'*')
                {
                    self.pos += 1;
                }
                Kind::Op
            }
            _ => {
                self.pos += 1;
                Kind::Op
            }
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
        if self.pos >= self.bytes.len() {
            return None;
        }
        let start = self.pos;
        let b = self.bytes[start];
        let kind = match self.comment_or_literal(b) {
            Some(kind) => kind,
            None => self.word_number_or_op(b),
        };
        self.settle();
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

/// Words that join two expressions (or two queries) the way an operator does: chains of them
/// build syntax trees as deep as they are long.
const INFIX_WORDS: &[&str] = &[
    "and", "or", "xor", "not", "is", "in", "like", "ilike", "similar", "between", "collate", "at",
    "escape", "overlaps",
];

/// Words that join two queries: each link of such a chain is a whole query in the tree
/// (a debug build spends ~13 KiB of stack per link walking it), so it counts as this many.
const SET_WORDS: &[&str] = &["union", "intersect", "except"];
const SET_WEIGHT: usize = 8;

fn is_one_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// A positional parameter glued to a `$` (`$1$`). PostgreSQL reads `$1` and then `$` (a
/// dollar-quote tag cannot start with a digit); sqlparser opens a string quoted by `$1$`
/// and reads everything up to the next `$1$` as its text, so its tree and this lexer's
/// tokens describe different statements. Found by the `sql_fingerprint` fuzzer:
/// `select $1$'$1$/'m'` and its twin with another string literal fingerprinted apart.
///
/// Also text with an unclosed quote, dollar quote or block comment at its end: PostgreSQL
/// rejects it, and sqlparser reads some of it as a statement in ways that depend on letter
/// case (`select.5&>'x'U'` parsed, its twin `select.5&>'y'u'` did not: found by the same
/// fuzzer once the first case was fixed).
///
/// Also a lone `!` or `!!` operator: sqlparser reads them as the factorial operators
/// PostgreSQL 14 removed, so `select 2.5!e7` became `2.5! AS e7`, where PostgreSQL sees a
/// (missing) infix `!` between `2.5` and `e7` (the third finding).
pub fn sqlparser_misreads(sql: &str) -> bool {
    let misread = Misreading::of(sql);
    let mut lexer = Lexer::new(sql);
    lexer.by_ref().any(|t| misread.at(&t, sql)) || lexer.ended_open_after_all()
}

/// What sqlparser is given for a statement (see [`for_sqlparser`]).
#[derive(Debug, PartialEq, Eq)]
pub enum ForSqlparser {
    /// Nothing: the statement is [`deeper_than`] the limit or [`sqlparser_misreads`] it.
    Nothing,
    /// The text as written.
    AsIs,
    /// The text with every integer that fits no `i64` written as `1`.
    ///
    /// sqlparser reads an integer into an `i64` or `u64` where its grammar wants a number
    /// (array bounds, type lengths, `TOP`, sequence options) and fails the whole parse when
    /// it does not fit, so whether a statement parses would hang on a constant's value:
    /// `a[9] 42` parses (a typed literal to sqlparser) while `a[<26 digits>] 99` does not,
    /// and the two fingerprinted apart (the eleventh `sql_fingerprint` finding). Past
    /// `i64` no integer is a count PostgreSQL accepts either (its lexer turns one past
    /// `int32` into a numeric constant, which no such position takes), and the
    /// fingerprint reads every constant as `?`; the syntax tree's copy of such a constant
    /// reads `1`.
    Rewritten(String),
}

/// Whether and how `sql` goes to sqlparser, in one pass of the lexer: not when it is
/// [`deeper_than`] `limit` or [`sqlparser_misreads`] it; see [`ForSqlparser`].
pub fn for_sqlparser(sql: &str, limit: usize) -> ForSqlparser {
    let misread = Misreading::of(sql);
    let mut gauge = DepthGauge::new(limit);
    let mut long_integers: Vec<Token> = Vec::new();
    let mut lexer = Lexer::new(sql);
    for t in lexer.by_ref() {
        if misread.at(&t, sql) || gauge.over(&t, sql) {
            return ForSqlparser::Nothing;
        }
        if t.kind == Kind::Number && fits_no_i64(t.text(sql)) {
            long_integers.push(t);
        }
    }
    if lexer.ended_open_after_all() {
        return ForSqlparser::Nothing;
    }
    if long_integers.is_empty() {
        return ForSqlparser::AsIs;
    }
    let mut text = String::with_capacity(sql.len());
    let mut last = 0;
    for t in long_integers {
        text.push_str(sql.get(last..t.start).unwrap_or(""));
        text.push('1');
        last = t.end;
    }
    text.push_str(sql.get(last..).unwrap_or(""));
    ForSqlparser::Rewritten(text)
}

/// An integer literal (digits only) past `i64::MAX`.
fn fits_no_i64(number: &str) -> bool {
    number.bytes().all(|b| b.is_ascii_digit()) && number.parse::<i64>().is_err()
}

/// The tokens [`sqlparser_misreads`] looks for, and whether the text can hold them at all
/// (two byte scans spare the per-token test for most statements).
struct Misreading {
    glued: bool,
    bang: bool,
}

impl Misreading {
    fn of(sql: &str) -> Misreading {
        let b = sql.as_bytes();
        Misreading {
            glued: b.windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_digit()),
            bang: b.contains(&b'!'),
        }
    }

    fn at(&self, t: &Token, sql: &str) -> bool {
        (self.glued && t.kind == Kind::Param && sql.as_bytes().get(t.end) == Some(&b'$'))
            || (self.bang && t.kind == Kind::Op && matches!(t.text(sql), "!" | "!!"))
    }
}

/// Could the syntax tree of `sql` be more than `limit` levels deep?
///
/// A conservative estimate from the tokens, used before sqlparser runs: its recursion limit
/// counts nested parentheses, but a chain of operators (`1+1+1+…`, `a=1 and b=2 and …`,
/// `… union select …`) is parsed in a loop into a left-deep tree whose clone, printing,
/// visiting and drop recurse once per link: a few kilobytes of `+1` overflow a worker's
/// stack. Every operator or infix word since the last `,` at the same parenthesis level
/// adds one level (`union` and friends [`SET_WEIGHT`]), every open parenthesis or bracket
/// one more on top of what encloses it.
/// Stops reading, with bounded memory, as soon as the answer is yes.
pub fn deeper_than(sql: &str, limit: usize) -> bool {
    let mut gauge = DepthGauge::new(limit);
    Lexer::new(sql).any(|t| gauge.over(&t, sql))
}

/// [`deeper_than`]'s estimate, token by token.
struct DepthGauge {
    limit: usize,
    /// (depth of the enclosing levels, operators at this level) for each open parenthesis
    stack: Vec<(usize, usize)>,
    base: usize,
    chain: usize,
}

impl DepthGauge {
    fn new(limit: usize) -> DepthGauge {
        DepthGauge {
            limit,
            stack: Vec::new(),
            base: 0,
            chain: 0,
        }
    }

    /// Take `tok` into account; whether the estimate is now past the limit.
    fn over(&mut self, tok: &Token, sql: &str) -> bool {
        match tok.kind {
            Kind::Op => self.chain += 1,
            Kind::Word if is_one_of(tok.text(sql), INFIX_WORDS) => self.chain += 1,
            Kind::Word if is_one_of(tok.text(sql), SET_WORDS) => self.chain += SET_WEIGHT,
            Kind::Punct => match sql.as_bytes().get(tok.start) {
                Some(b'(' | b'[') => {
                    self.stack.push((self.base, self.chain));
                    self.base += self.chain + 1;
                    self.chain = 0;
                }
                Some(b')' | b']') => {
                    if let Some((b, c)) = self.stack.pop() {
                        self.base = b;
                        // a subscript or call on the result is one more level
                        self.chain = c + 1;
                    }
                }
                Some(b',') => self.chain = 0,
                Some(b';') => {
                    self.stack.clear();
                    self.base = 0;
                    self.chain = 0;
                }
                _ => {}
            },
            _ => {}
        }
        self.base + self.chain > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<(Kind, &str)> {
        Lexer::new(s).map(|t| (t.kind, t.text(s))).collect()
    }

    #[test]
    fn basic_tokens() {
        use Kind::*;
        assert_eq!(
            kinds("SELECT a.b, \"X\"\"y\" FROM t WHERE id = $1 AND v <> 'it''s' -- c\n"),
            vec![
                (Word, "SELECT"),
                (Word, "a"),
                (Punct, "."),
                (Word, "b"),
                (Punct, ","),
                (QuotedIdent, "\"X\"\"y\""),
                (Word, "FROM"),
                (Word, "t"),
                (Word, "WHERE"),
                (Word, "id"),
                (Op, "="),
                (Param, "$1"),
                (Word, "AND"),
                (Word, "v"),
                (Op, "<>"),
                (String, "'it''s'"),
                (Comment, "-- c"),
            ]
        );
    }

    #[test]
    fn quoting_forms() {
        use Kind::*;
        assert_eq!(kinds("E'a\\'b'"), vec![(String, "E'a\\'b'")]);
        assert_eq!(
            kinds("$f$ a ' b $f$ x"),
            vec![(String, "$f$ a ' b $f$"), (Word, "x")]
        );
        assert_eq!(kinds("$$;$$"), vec![(String, "$$;$$")]);
        assert_eq!(
            kinds("/* a /* b */ c */ d"),
            vec![(Comment, "/* a /* b */ c */"), (Word, "d")]
        );
        assert_eq!(
            kinds("x::int"),
            vec![(Word, "x"), (Op, "::"), (Word, "int")]
        );
        assert_eq!(
            kinds("1.5e-3 .5 0x1F"),
            vec![(Number, "1.5e-3"), (Number, ".5"), (Number, "0x1F")]
        );
        assert_eq!(
            kinds("B'101' X'ff'"),
            vec![(String, "B'101'"), (String, "X'ff'")]
        );
    }

    #[test]
    fn unterminated_input_never_panics() {
        for s in [
            "'abc",
            "\"abc",
            "$tag$ abc",
            "/* abc",
            "E'\\",
            "U&'",
            "é'ü",
            "$",
            "$1x",
        ] {
            let _ = kinds(s);
        }
    }

    #[test]
    fn one_pass_answers_as_the_two_checks_do() {
        let deep = format!("select {}1{}", "(".repeat(30), ")".repeat(30));
        let chain = format!("select 1{}", "+1".repeat(40));
        for sql in [
            "select 1",
            "select $1$x$1$",
            "select 2.5!e7",
            "select a != b",
            "select 'open",
            deep.as_str(),
            chain.as_str(),
            "select (1) + (2); select ((3))",
        ] {
            for limit in [5, 20, 500] {
                let two = deeper_than(sql, limit) || sqlparser_misreads(sql);
                let one = for_sqlparser(sql, limit) == ForSqlparser::Nothing;
                assert_eq!(one, two, "{sql} at {limit}");
            }
        }
    }
}

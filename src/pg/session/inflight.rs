//! The client statements sent to the server and not yet completed, in order, with the text
//! each is recorded with. A simple Query's literal text is copied into one buffer the queue
//! owns, not allocated per statement: insight keeps only the few it samples, at completion.

use crate::obs::traceparent::TraceParent;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The most Query text held for statements in flight. Past it a statement's text is not
/// kept (its fingerprint stands for it), so a client pipelining without pause costs no more.
const MAX_TEXT: usize = 256 << 10;

/// Room kept between requests; an idle client keeps none.
const KEEP_TEXT: usize = 4 << 10;

/// A statement sent to the server, waiting for its completion.
#[derive(Debug)]
pub(super) struct Inflight {
    /// Shape hash (the analysis and fingerprint are looked up at completion).
    pub hash: u64,
    pub text: Text,
    /// An Execute: its text (if known) has placeholders where each execution binds values.
    pub prepared: bool,
    /// From a sqlcommenter `traceparent` comment.
    pub parent: Option<TraceParent>,
    pub started: Instant,
    /// The client's transaction number when it was sent.
    pub tx: u64,
}

/// The text a statement is recorded with; without one its fingerprint stands for it.
#[derive(Debug)]
pub(super) enum Text {
    None,
    /// An Execute: the text its statement was prepared with (placeholders for its values).
    Prepared(Arc<str>),
    /// A simple Query's raw text (literals included, redacted by insight when shown): `len`
    /// bytes at `at` in the queue's text buffer (counted from the buffer's first use).
    Query {
        at: usize,
        len: usize,
    },
}

/// The statements in flight and the Query texts they hold.
#[derive(Debug, Default)]
pub(super) struct Inflights {
    queue: VecDeque<Inflight>,
    texts: String,
    /// Where `texts` starts, counted in bytes ever appended (texts already done are cut off
    /// the front).
    base: usize,
}

impl Inflights {
    /// Room for a simple Query's text, when the buffer has it. The texts of statements no
    /// longer in flight are cut off first.
    pub fn query_text(&mut self, text: &str) -> Text {
        self.cut_done();
        if self.texts.len() + text.len() > MAX_TEXT {
            return Text::None;
        }
        let at = self.base + self.texts.len();
        self.texts.push_str(text);
        Text::Query {
            at,
            len: text.len(),
        }
    }

    pub fn push(&mut self, stmt: Inflight) {
        self.queue.push_back(stmt);
    }

    /// The statement at the head. Its text stays readable ([`Inflights::text`]) until the
    /// next Query text is taken.
    pub fn pop(&mut self) -> Option<Inflight> {
        self.queue.pop_front()
    }

    /// The text of a statement (just popped, or in flight), `None` when it has none.
    pub fn text<'a>(&'a self, stmt: &'a Inflight) -> Option<&'a str> {
        match &stmt.text {
            Text::None => None,
            Text::Prepared(t) => Some(t),
            Text::Query { at, len } => {
                let start = at.checked_sub(self.base)?;
                self.texts.get(start..start + len)
            }
        }
    }

    /// Cut the texts of completed statements off the front of the buffer: all of them when
    /// none is in flight, else what precedes the oldest in flight once that is most of it.
    fn cut_done(&mut self) {
        let oldest = self.queue.iter().find_map(|s| match s.text {
            Text::Query { at, .. } => Some(at),
            _ => None,
        });
        let done = oldest.map_or(self.texts.len(), |at| at - self.base);
        if oldest.is_none() || (done >= KEEP_TEXT && done > self.texts.len() / 2) {
            self.texts.drain(..done);
            self.base += done;
        }
    }

    /// Give the room back (an idle client keeps none beyond `KEEP_TEXT`).
    pub fn release(&mut self) {
        if !self.queue.is_empty() {
            return;
        }
        self.base += self.texts.len();
        self.texts.clear();
        if self.texts.capacity() > KEEP_TEXT {
            self.texts = String::new();
        }
        if self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
    }

    /// Executes the server skipped after an error: they never ran.
    pub fn skip(&mut self, n: u32) {
        for _ in 0..n {
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(q: &mut Inflights, text: &str) {
        let text = q.query_text(text);
        q.push(Inflight {
            hash: 0,
            text,
            prepared: false,
            parent: None,
            started: Instant::now(),
            tx: 0,
        });
    }

    fn next(q: &mut Inflights) -> Option<String> {
        let s = q.pop()?;
        q.text(&s).map(str::to_string)
    }

    #[test]
    fn each_completed_statement_reads_its_own_text_while_others_are_in_flight() {
        let mut q = Inflights::default();
        let texts: Vec<String> = (0..2000).map(|i| format!("select {i}")).collect();
        // a client pipelining without pause: one completes as the next is sent
        stmt(&mut q, &texts[0]);
        for i in 1..texts.len() {
            stmt(&mut q, &texts[i]);
            assert_eq!(next(&mut q).as_deref(), Some(texts[i - 1].as_str()));
        }
        assert_eq!(next(&mut q).as_deref(), texts.last().map(|t| t.as_str()));
        assert!(
            q.texts.len() < 2 * KEEP_TEXT,
            "done texts are cut: {}",
            q.texts.len()
        );
        q.release();
        assert_eq!((q.texts.len(), q.texts.capacity()), (0, 0));
    }

    #[test]
    fn texts_in_flight_are_bounded_in_bytes() {
        let mut q = Inflights::default();
        let big = "x".repeat(MAX_TEXT / 4 + 1);
        for _ in 0..4 {
            stmt(&mut q, &big);
        }
        assert!(q.texts.len() <= MAX_TEXT);
        let kept: Vec<bool> = (0..4).map(|_| next(&mut q).is_some()).collect();
        assert_eq!(
            kept,
            [true, true, true, false],
            "the fourth is past the bound"
        );
        // none in flight: the room is free again
        stmt(&mut q, &big);
        assert_eq!(next(&mut q).as_deref(), Some(big.as_str()));
    }

    #[test]
    fn a_prepared_statement_keeps_its_shared_text_and_skips_drop_without_reading() {
        let mut q = Inflights::default();
        stmt(&mut q, "select 1");
        q.push(Inflight {
            hash: 1,
            text: Text::Prepared(Arc::from("select $1")),
            prepared: true,
            parent: None,
            started: Instant::now(),
            tx: 0,
        });
        stmt(&mut q, "select 3");
        q.skip(1);
        assert_eq!(next(&mut q).as_deref(), Some("select $1"));
        assert_eq!(next(&mut q).as_deref(), Some("select 3"));
        assert!(q.pop().is_none());
    }
}

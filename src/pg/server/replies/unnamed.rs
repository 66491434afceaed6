//! The client's own unnamed Parses a server owes an answer to (transaction mode), and what
//! its unnamed statement was before each: one the server skips after an error earlier in
//! its batch leaves the one before, as directly; one that fails leaves none.

use bytes::BytesMut;
use std::collections::VecDeque;

/// The client's unnamed Parses owed, oldest first: the batch each was sent in, and the
/// client's unnamed Parse before it (`None`: a simple Query since destroyed the unnamed
/// statement, so what it finds no longer matters).
#[derive(Debug, Default)]
pub struct OwnUnnamed {
    owed: VecDeque<(u64, Option<BytesMut>)>,
    /// The client's unnamed Parse once the last one owed was not made after all, for the
    /// session to take ([`OwnUnnamed::restored`]).
    restored: Option<BytesMut>,
    /// A buffer to reuse: no allocation per Parse once warm.
    spare: BytesMut,
}

impl OwnUnnamed {
    /// The client's unnamed Parse `frame` is sent in `batch`: it becomes `parse` (the
    /// client's unnamed Parse), the one before is kept until it is answered.
    pub fn sent(&mut self, batch: u64, parse: &mut BytesMut, frame: &[u8]) {
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        next.extend_from_slice(frame);
        let before = std::mem::replace(parse, next);
        self.owed.push_back((batch, Some(before)));
    }

    /// A simple Query is sent: it destroys the unnamed statement whatever the Parses owed
    /// before it find.
    pub fn query_sent(&mut self) {
        for (_, before) in &mut self.owed {
            *before = None;
        }
    }

    /// The batch of the last unnamed Parse owed.
    pub fn last_batch(&self) -> Option<u64> {
        self.owed.back().map(|(batch, _)| *batch)
    }

    /// The oldest Parse owed was answered ParseComplete.
    pub fn made(&mut self) {
        if let Some((_, Some(before))) = self.owed.pop_front() {
            self.spare = before;
        }
    }

    /// The oldest Parse owed failed (`failed`: the server dropped its unnamed statement
    /// first, none is left) or was skipped after an error (the one before is left).
    pub fn not_made(&mut self, failed: bool) {
        let Some((_, Some(before))) = self.owed.pop_front() else {
            return;
        };
        let now = if failed { BytesMut::new() } else { before };
        match self.owed.front_mut() {
            Some((_, next)) => *next = Some(now),
            None => self.restored = Some(now),
        }
    }

    /// The server is another client's now: what the last one's Parses came to is not its.
    pub fn clear(&mut self) {
        self.owed.clear();
        self.restored = None;
    }

    /// Give back a spare buffer a large Parse grew, between requests (a pooled server keeps
    /// at most `keep` bytes of it).
    pub fn shrink(&mut self, keep: usize) {
        if self.spare.capacity() > keep {
            self.spare = BytesMut::new();
        }
    }

    /// The client's unnamed Parse after all, when the last one sent was not made.
    pub fn restored(&mut self) -> Option<BytesMut> {
        self.restored.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_parse_leaves_no_large_spare_once_shrunk() {
        let mut own = OwnUnnamed::default();
        let mut parse = BytesMut::from(&vec![b'x'; 1 << 20][..]);
        own.sent(1, &mut parse, b"P small");
        own.made();
        assert!(
            own.spare.capacity() >= 1 << 20,
            "the old Parse is the spare"
        );
        own.shrink(8 << 10);
        assert_eq!(own.spare.capacity(), 0);
        // a small one is kept for reuse
        own.sent(2, &mut parse, b"P small again");
        own.made();
        own.shrink(8 << 10);
        assert!(own.spare.capacity() > 0);
    }
}

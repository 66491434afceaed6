//! A thread's spare I/O buffers.
//!
//! A client between transactions gives its read and write buffers back, so thousands of
//! idle clients hold no buffer memory. Given back to the allocator, that cost a `free` and
//! a `malloc` of 16 KiB per buffer per transaction (~1,300 instructions of Pake's ~20,000
//! per pgbench -S transaction, callgrind). Given back here, the next session on the thread
//! that needs a buffer takes it: a pop instead of a `malloc`. The spares are bounded in
//! bytes per thread, so idle clients still cost no buffer each; past the bound a buffer
//! goes back to the allocator as before.

use bytes::BytesMut;
use std::cell::RefCell;

/// Most bytes of spare buffers one thread keeps.
pub const MAX_SPARE_BYTES: usize = 1 << 20;
/// A buffer bigger than this (a large result went through it) is not kept.
pub const MAX_SPARE_BUFFER: usize = 64 << 10;

#[derive(Default)]
struct Spares {
    bufs: Vec<BytesMut>,
    bytes: usize,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

/// An empty buffer with room for at least `want` bytes: one of this thread's spares when
/// it has one.
pub fn take(want: usize) -> BytesMut {
    let spare = SPARES.with(|s| {
        let mut s = s.borrow_mut();
        let buf = s.bufs.pop()?;
        s.bytes -= buf.capacity();
        Some(buf)
    });
    match spare {
        Some(mut buf) => {
            buf.reserve(want);
            buf
        }
        None => BytesMut::with_capacity(want),
    }
}

/// Give `buf` back (it is left empty, with no capacity). An empty buffer is kept for this
/// thread's next [`take`], unless it is bigger than [`MAX_SPARE_BUFFER`] or the thread's
/// spares would pass [`MAX_SPARE_BYTES`]. A session's buffers are never split into shared
/// handles (only a server's side-channel reads split frames off, and drop them at once),
/// so a buffer's capacity, once its read part is reclaimed, is the memory it holds.
pub fn give(buf: &mut BytesMut) {
    let mut buf = std::mem::take(buf);
    if !buf.is_empty() {
        return;
    }
    // what was read from its front counts again (nothing is copied: it is empty)
    let _ = buf.try_reclaim(buf.capacity() + 1);
    let size = buf.capacity();
    if size == 0 || size > MAX_SPARE_BUFFER {
        return;
    }
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        if s.bytes + size <= MAX_SPARE_BYTES {
            s.bytes += size;
            s.bufs.push(buf);
        }
    });
}

/// This thread's spares: how many, and their bytes.
pub fn held() -> (usize, usize) {
    SPARES.with(|s| {
        let s = s.borrow();
        (s.bufs.len(), s.bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, BufMut};

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        std::thread::spawn(|| {
            let mut buf = take(16 << 10);
            buf.put_slice(b"select 1");
            buf.advance(8);
            let at = buf.as_ptr() as usize;
            give(&mut buf);
            assert_eq!(buf.capacity(), 0, "the giver keeps nothing");
            assert_eq!(held().0, 1);
            let again = take(16 << 10);
            assert!(again.is_empty() && again.capacity() >= 16 << 10);
            // the same allocation, from its start (the read position was reclaimed)
            assert_eq!(again.as_ptr() as usize, at - 8);
            assert_eq!(held(), (0, 0));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn spares_are_bounded_in_bytes_and_by_size() {
        std::thread::spawn(|| {
            let n = MAX_SPARE_BYTES / (16 << 10);
            for _ in 0..n + 10 {
                give(&mut BytesMut::with_capacity(16 << 10));
            }
            let (count, bytes) = held();
            assert!(bytes <= MAX_SPARE_BYTES, "{bytes}");
            assert!(count >= n - 1 && count <= n, "{count}");
            // a large buffer, a buffer holding data: neither kept
            while held().0 > 0 {
                drop(take(1));
            }
            give(&mut BytesMut::with_capacity(MAX_SPARE_BUFFER + 1));
            let mut full = BytesMut::with_capacity(1024);
            full.put_slice(b"x");
            give(&mut full);
            assert_eq!(held(), (0, 0));
            // a buffer read to its end counts all of its memory, not what was left after
            // the read position
            let mut read = BytesMut::with_capacity(16 << 10);
            read.put_slice(&[1; 12 << 10]);
            read.advance(12 << 10);
            assert!(read.capacity() < 16 << 10);
            give(&mut read);
            assert_eq!(held(), (1, 16 << 10));
        })
        .join()
        .unwrap();
    }
}

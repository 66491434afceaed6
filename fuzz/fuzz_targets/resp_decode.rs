//! RESP2/RESP3 (and inline) requests from a client, and replies as a backend sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::redis::resp::{self, Limits};

fuzz_target!(|data: &[u8]| {
    // small limits: the over-limit paths are reached with short inputs
    resp::fuzz_logic(data);
    // default (client-facing) limits, every request consumed in order
    let mut buf = bytes::BytesMut::from(data);
    let limits = Limits::default();
    while let Ok(Some(req)) = resp::take_request(&mut buf, &limits) {
        assert!(req.raw.len() <= data.len());
    }
    // the scanner from every offset, as a pipelined reply stream is read
    let backend = Limits::backend();
    let mut pos = 0;
    while pos < data.len() {
        match resp::scan(data, pos, &backend) {
            Ok(Some(end)) => {
                assert!(
                    end > pos && end <= data.len(),
                    "scan went backwards or past the end"
                );
                pos = end;
            }
            _ => break,
        }
    }
});

//! The startup packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) as a client
//! sends it before authentication.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::pg::startup;

fuzz_target!(|data: &[u8]| {
    startup::fuzz_logic(data);
    // the same bytes as a whole packet with a correct length prefix, so the body parser is
    // reached without the fuzzer having to guess the length
    let mut packet = ((data.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(data);
    if let Ok(Some(len)) = startup::packet(&packet) {
        if let Ok(startup::Request::Startup(s)) = startup::parse(&packet[..len]) {
            let _ = s.param("user");
            let _ = s.param("options");
        }
    }
});

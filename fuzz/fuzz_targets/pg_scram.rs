//! SCRAM-SHA-256 client messages: SASLInitialResponse (mechanism + client-first-message) and
//! SASLResponse (client-final-message), through the server side of the exchange.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::pg::auth::{parse_sasl_initial, ScramSecret, ScramServer};
use std::sync::OnceLock;

fn secret() -> &'static ScramSecret {
    static S: OnceLock<ScramSecret> = OnceLock::new();
    S.get_or_init(|| ScramSecret::mock("fuzz"))
}

fuzz_target!(|data: &[u8]| {
    let (sel, data) = pake_fuzz::split_first(data);
    // the two client messages, split at the first 0xff byte (never valid UTF-8)
    let (initial, fin) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (mech, first) = match parse_sasl_initial(initial) {
        Ok(parts) => parts,
        // a raw client-first-message with the right mechanism, so the fuzzer need not build
        // the SASLInitialResponse frame to get past it
        Err(_) => (&b"SCRAM-SHA-256"[..], initial),
    };
    let mut server = ScramServer::new("fuzz", secret(), sel & 1 == 1);
    let Ok(server_first) = server.first(mech, first) else {
        return;
    };
    let server_first = String::from_utf8_lossy(&server_first).into_owned();
    let _ = server.finish(fin);
    // a final message carrying the right nonce and binding: reaches the proof check
    if let Some(nonce) = server_first.split(',').find_map(|a| a.strip_prefix("r=")) {
        let mut msg = format!("c=biws,r={nonce}").into_bytes();
        msg.extend_from_slice(fin);
        let _ = server.finish(&msg);
    }
});

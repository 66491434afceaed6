//! Postgres frontend frames after startup, as the session reads them: framing with the size
//! limit, the body fields the session reads (Query text, Parse name and text, Bind,
//! Describe/Close), statement analysis through the shape cache; then the reply-queue state
//! machine fed with the expectations those frames create and arbitrary server messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pake::pg::server::replies::{Effects, Expect, Replies};
use pake::pg::sql::Analyzer;
use pake::pg::wire::{self, fe};
use std::sync::OnceLock;

fn analyzer() -> &'static Analyzer {
    static A: OnceLock<Analyzer> = OnceLock::new();
    A.get_or_init(Analyzer::new)
}

/// Read what the session reads out of one frame's body; push what the server will owe.
fn on_frame(tag: u8, body: &[u8], q: &mut Replies) {
    let text = |t: &[u8]| std::str::from_utf8(t).ok().map(str::to_owned);
    match tag {
        fe::QUERY => {
            if let Some(sql) = wire::cstr(body).and_then(|(t, _)| text(t)) {
                analyzer().with(&sql, |n, info| {
                    let _ = (n.hash, info.session.dirties(), info.route.clone());
                });
            }
            q.push(Expect::Ready {
                swallow: false,
                stmt: true,
            });
        }
        fe::PARSE => {
            if let Some((_, rest)) = wire::cstr(body) {
                if let Some(sql) = wire::cstr(rest).and_then(|(t, _)| text(t)) {
                    let _ = analyzer().analyze(&sql);
                }
            }
            // now and then a duplicate name Pake refuses; otherwise a client's named Parse
            q.push(match body.len() % 5 {
                0 => Expect::Refused {
                    body: b"SERROR\0C42P05\0\0"[..].into(),
                },
                _ => Expect::Parse {
                    swallow: false,
                    registers: Some(body.len() as u64),
                    client: Some(body.len() as u64),
                },
            });
        }
        fe::BIND => {
            let _ = wire::cstr(body).and_then(|(_, rest)| wire::cstr(rest));
            // now and then one Pake made fail (a refused stale copy)
            q.push(match body.len() % 3 {
                0 => Expect::Stale {
                    stmt: body.len() as u64,
                },
                _ => Expect::Bind {
                    stmt: Some(body.len() as u64),
                },
            });
        }
        fe::DESCRIBE => q.push(match body.first() {
            // an even length stands for one Pake injected
            Some(b'S') => Expect::DescribeStatement {
                stmt: Some(body.len() as u64),
                injected: body.len() % 2 == 0,
            },
            _ => Expect::RowDescription {
                stmt: None,
                injected: false,
            },
        }),
        fe::CLOSE => q.push(Expect::Close {
            swallow: false,
            stmt: None,
        }),
        fe::EXECUTE => q.push(Expect::Execute),
        fe::SYNC => q.on_sync_sent(),
        fe::COPY_DONE | fe::COPY_FAIL => q.on_copy_end_sent(),
        fe::FUNCTION_CALL => q.push(Expect::Ready {
            swallow: false,
            stmt: false,
        }),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // client bytes, then server bytes, split where the first two bytes say
    let (client, server) = match data {
        [a, b, rest @ ..] => {
            rest.split_at((usize::from(*a) << 8 | usize::from(*b)).min(rest.len()))
        }
        _ => (data, &[][..]),
    };
    let max = 1 << 16;
    let mut q = Replies::default();
    let mut pos = 0;
    while let Ok(Some((tag, len))) = wire::frontend_frame(&client[pos..], max) {
        assert!(len >= wire::HEADER_LEN && pos + len <= client.len());
        on_frame(tag, wire::body(&client[pos..pos + len]), &mut q);
        pos += len;
    }
    let mut out = bytes::BytesMut::new();
    let mut pos = 0;
    while let Ok(Some((tag, len))) = wire::frame_header(&server[pos..], max) {
        if pos + len > server.len() {
            break;
        }
        let body = wire::body(&server[pos..pos + len]);
        let _ = wire::error_code(body);
        let mut fx = Effects::default();
        q.drain_synthetic(&mut out);
        if q.on_message(tag, body, &mut fx).is_err() {
            break;
        }
        pos += len;
    }
});

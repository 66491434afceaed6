use super::*;
use Disposition::*;

fn feed(r: &mut Replies, msgs: &[(u8, &[u8])]) -> Result<(Vec<Disposition>, Effects), Desync> {
    let mut fx = Effects::default();
    let mut out = Vec::new();
    for (tag, body) in msgs {
        out.push(r.on_message(*tag, body, &mut fx)?);
    }
    Ok((out, fx))
}

#[test]
fn simple_query_cycle() {
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: false,
        stmt: false,
    });
    let (d, fx) = feed(
        &mut r,
        &[(b'T', b""), (b'D', b""), (b'C', b""), (b'Z', b"I")],
    )
    .unwrap();
    assert!(d.iter().all(|d| *d == Forward));
    assert_eq!(fx.ready, Some((b'I', false)));
    assert!(r.is_empty());
}

#[test]
fn extended_batch_in_order() {
    let mut r = Replies::default();
    for e in [
        Expect::Parse {
            swallow: true,
            registers: Some(7),
            client: None,
        },
        Expect::Bind { stmt: None },
        Expect::DescribeStatement {
            stmt: None,
            injected: false,
        },
        Expect::Execute,
        Expect::Ready {
            swallow: false,
            stmt: false,
        },
    ] {
        r.push(e);
    }
    let (d, _) = feed(
        &mut r,
        &[
            (b'1', b""),
            (b'2', b""),
            (b't', b""),
            (b'T', b""),
            (b'D', b""),
            (b'C', b""),
            (b'Z', b"T"),
        ],
    )
    .unwrap();
    assert_eq!(d[0], Swallow, "injected Parse's reply is dropped");
    assert!(d[1..].iter().all(|d| *d == Forward));
    assert!(r.is_empty());
}

#[test]
fn error_skips_to_sync_and_reports_uncreated_statements() {
    let mut r = Replies::default();
    r.push(Expect::Parse {
        swallow: false,
        registers: Some(1),
        client: None,
    });
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Parse {
        swallow: false,
        registers: Some(2),
        client: None,
    });
    r.push(Expect::Execute);
    r.push(Expect::Ready {
        swallow: false,
        stmt: false,
    });
    let (_, fx) = feed(&mut r, &[(b'E', b"")]).unwrap();
    assert_eq!(fx.not_created, vec![1, 2]);
    assert_eq!(r.len(), 1);
    let (_, fx) = feed(&mut r, &[(b'Z', b"I")]).unwrap();
    assert_eq!(fx.ready, Some((b'I', false)));
}

#[test]
fn synthetic_replies_emit_in_order() {
    let mut r = Replies::default();
    r.push(Expect::Synth(Synth::CloseStatement(1)));
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Synth(Synth::CloseStatement(2)));
    r.push(Expect::Ready {
        swallow: false,
        stmt: false,
    });
    let mut out = BytesMut::new();
    r.drain_synthetic(&mut out);
    assert_eq!(&out[..], b"3\0\0\0\x04");
    assert_eq!(
        r.on_message(b'2', b"", &mut Effects::default()),
        Ok(Forward)
    );
    out.clear();
    r.drain_synthetic(&mut out);
    assert_eq!(&out[..], b"3\0\0\0\x04");
    assert_eq!(r.len(), 1);
}

#[test]
fn injected_query_is_swallowed_but_parameter_status_is_not() {
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: true,
        stmt: false,
    });
    r.push(Expect::Ready {
        swallow: false,
        stmt: false,
    });
    let (d, fx) = feed(
        &mut r,
        &[
            (b'S', b"TimeZone\0UTC\0"),
            (b'C', b"SET\0"),
            (b'N', b""),
            (b'Z', b"I"),
        ],
    )
    .unwrap();
    assert_eq!(d, vec![Forward, Swallow, Swallow, Swallow]);
    assert_eq!(fx.ready, Some((b'I', true)));
    assert_eq!(r.len(), 1);
}

#[test]
fn extended_copy_in_ignores_pipelined_sync() {
    // tokio-postgres: Bind, Execute, Sync, then data, then CopyDone, Sync
    let mut r = Replies::default();
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Execute);
    r.on_sync_sent();
    let (_, fx) = feed(&mut r, &[(b'2', b""), (b'G', b"")]).unwrap();
    assert_eq!(fx.copy_in, Some(true));
    assert_eq!(r.len(), 1, "the early Sync is owed nothing");
    r.on_sync_sent(); // during copy: ignored by the server
    assert_eq!(r.len(), 1);
    r.on_copy_end_sent();
    r.on_sync_sent();
    feed(&mut r, &[(b'C', b""), (b'Z', b"I")]).unwrap();
    assert!(r.is_empty());
}

#[test]
fn copy_in_state() {
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: false,
        stmt: false,
    });
    let (_, fx) = feed(&mut r, &[(b'G', b"")]).unwrap();
    assert_eq!(fx.copy_in, Some(true));
    assert!(r.in_copy_in());
    let (_, fx) = feed(&mut r, &[(b'C', b""), (b'Z', b"I")]).unwrap();
    assert_eq!(fx.copy_in, Some(false));
    assert!(!r.in_copy_in() && r.is_empty());
}

fn ready() -> Expect {
    Expect::Ready {
        swallow: false,
        stmt: false,
    }
}

/// An ErrorResponse body with severity and code.
fn error(severity: &str, code: &str) -> Vec<u8> {
    format!("S{severity}\0V{severity}\0C{code}\0Mboom\0\0").into_bytes()
}

#[test]
fn pipeline_error_before_sync_skips_what_follows() {
    // libpq pipeline mode: P B E Flush, error, then more B E, then Sync
    let mut r = Replies::default();
    r.push(Expect::Parse {
        swallow: false,
        registers: None,
        client: None,
    });
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Execute);
    let (d, fx) = feed(&mut r, &[(b'1', b""), (b'E', &error("ERROR", "22012"))]).unwrap();
    assert_eq!(d, vec![Forward, Forward]);
    assert_eq!(fx.done.and_then(|d| d.error), Some(*b"22012"));
    assert!(r.is_empty() && r.is_skipping());
    // sent after the error, before the Sync: the server discards them unanswered
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Execute);
    r.push(Expect::Synth(Synth::CloseStatement(3)));
    assert!(r.is_empty());
    r.on_sync_sent();
    assert!(!r.is_skipping());
    let (_, fx) = feed(&mut r, &[(b'Z', b"I")]).unwrap();
    assert_eq!(fx.ready, Some((b'I', false)));
    assert!(r.is_empty());
    // the next batch is matched as usual
    r.push(Expect::Bind { stmt: None });
    r.on_sync_sent();
    feed(&mut r, &[(b'2', b""), (b'Z', b"I")]).unwrap();
    assert!(r.is_empty());
}

#[test]
fn error_with_sync_queued_does_not_skip() {
    let mut r = Replies::default();
    r.push(Expect::Bind { stmt: None });
    r.push(Expect::Execute);
    r.on_sync_sent();
    r.push(Expect::Bind { stmt: None });
    r.on_sync_sent();
    feed(&mut r, &[(b'E', &error("ERROR", "23505"))]).unwrap();
    assert!(!r.is_skipping());
    assert_eq!(r.len(), 3, "the second batch is still owed its replies");
    feed(&mut r, &[(b'Z', b"I"), (b'2', b""), (b'Z', b"I")]).unwrap();
    assert!(r.is_empty());
}

#[test]
fn stale_plan_names_the_statement() {
    for (expect, before) in [
        (Expect::Bind { stmt: Some(9) }, &[][..]),
        (
            Expect::DescribeStatement {
                stmt: Some(9),
                injected: false,
            },
            &[][..],
        ),
        // the plan is checked between ParameterDescription and RowDescription
        (
            Expect::DescribeStatement {
                stmt: Some(9),
                injected: false,
            },
            &[(b't', &b""[..])][..],
        ),
    ] {
        let mut r = Replies::default();
        r.push(expect);
        r.on_sync_sent();
        feed(&mut r, before).unwrap();
        let (d, fx) = feed(&mut r, &[(b'E', &error("ERROR", "0A000"))]).unwrap();
        assert_eq!(d, vec![Forward], "the client sees the server's error");
        assert_eq!(fx.invalidated, Some(9));
    }
    // cache lookup failed (a type dropped, or rolled back, since it was prepared)
    let mut r = Replies::default();
    r.push(Expect::Bind { stmt: Some(9) });
    r.on_sync_sent();
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "XX000"))]).unwrap();
    assert_eq!(fx.invalidated, Some(9));
    let mut r = Replies::default();
    r.push(Expect::Bind { stmt: Some(9) });
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "42P01"))]).unwrap();
    assert_eq!(fx.invalidated, None, "other errors keep the statement");
}

#[test]
fn servers_own_farewell_is_forwarded_and_ends_it() {
    // idle_session_timeout while nothing is owed
    let mut r = Replies::default();
    let (d, fx) = feed(&mut r, &[(b'E', &error("FATAL", "57P05"))]).unwrap();
    assert_eq!((d, fx.ended), (vec![Forward], true));
    // pg_terminate_backend in the middle of a query
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: false,
        stmt: true,
    });
    let (d, fx) = feed(&mut r, &[(b'T', b""), (b'E', &error("FATAL", "57P01"))]).unwrap();
    assert_eq!((d, fx.ended), (vec![Forward, Forward], true));
    // a plain error is not the end
    let mut r = Replies::default();
    r.on_sync_sent();
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "42601"))]).unwrap();
    assert!(!fx.ended);
}

#[test]
fn copy_data_sent_before_copy_in_response() {
    // asyncpg: Query COPY … FROM STDIN, CopyData, CopyDone without waiting
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: false,
        stmt: true,
    });
    r.on_copy_end_sent();
    feed(&mut r, &[(b'G', b""), (b'C', b"COPY 2\0"), (b'Z', b"I")]).unwrap();
    assert!(r.is_empty());
    r.on_sync_sent();
    assert_eq!(r.len(), 1, "a later Sync is owed its ReadyForQuery");
    feed(&mut r, &[(b'Z', b"I")]).unwrap();
    // a stray CopyDone outside any COPY is forgotten at the next idle ReadyForQuery
    r.on_copy_end_sent();
    r.on_sync_sent();
    feed(&mut r, &[(b'Z', b"I")]).unwrap();
    r.push(ready());
    feed(&mut r, &[(b'G', b"")]).unwrap();
    r.on_sync_sent();
    assert_eq!(r.len(), 1, "this COPY's data is still to come");
}

#[test]
fn out_of_place_messages_are_desync() {
    let mut r = Replies::default();
    assert!(r.on_message(b'D', b"", &mut Effects::default()).is_err());
    r.push(Expect::Bind { stmt: None });
    assert!(r.on_message(b'1', b"", &mut Effects::default()).is_err());
    assert!(r.on_message(b'K', b"", &mut Effects::default()).is_err());
    // notices and parameter status are fine even with nothing expected
    let mut idle = Replies::default();
    assert_eq!(
        idle.on_message(b'N', b"", &mut Effects::default()),
        Ok(Forward)
    );
    assert_eq!(
        idle.on_message(b'A', b"", &mut Effects::default()),
        Ok(Forward)
    );
}

/// A RowDescription body of one column `v` of type `oid`.
fn one_column(oid: u32) -> Vec<u8> {
    let mut b = vec![0, 1, b'v', 0];
    b.extend_from_slice(&16384u32.to_be_bytes()); // table
    b.extend_from_slice(&1u16.to_be_bytes()); // column
    b.extend_from_slice(&oid.to_be_bytes());
    b.extend_from_slice(&4i16.to_be_bytes()); // size
    b.extend_from_slice(&(-1i32).to_be_bytes()); // modifier
    b.extend_from_slice(&0u16.to_be_bytes()); // format
    b
}

#[test]
fn an_injected_describe_is_swallowed_and_says_what_the_copy_returns() {
    use crate::pg::prepared::params_sig;
    let mut r = Replies::default();
    r.push(Expect::DescribeStatement {
        stmt: Some(4),
        injected: true,
    });
    assert!(r.describing());
    let int4 = one_column(23);
    let (d, fx) = feed(&mut r, &[(b't', b""), (b'T', &int4)]).unwrap();
    assert_eq!(d, vec![Swallow, Swallow]);
    let sig = crate::pg::prepared::statement_sig(params_sig(b""), b'T', &int4);
    assert_eq!(fx.described, Some((4, sig, true)));
    assert!(!r.describing() && r.is_empty());
    // the client's own is forwarded, and NoData is a result of its own
    r.push(Expect::DescribeStatement {
        stmt: Some(4),
        injected: false,
    });
    let (d, fx) = feed(&mut r, &[(b't', b""), (b'n', b"")]).unwrap();
    assert_eq!(d, vec![Forward, Forward]);
    let (_, nodata, _) = fx.described.unwrap();
    assert_ne!(nodata, sig);
    let int8 = crate::pg::prepared::statement_sig(params_sig(b""), b'T', &one_column(20));
    assert_ne!(sig, int8);
    // the same result, another parameter type
    r.push(Expect::DescribeStatement {
        stmt: Some(4),
        injected: false,
    });
    let (_, fx) = feed(&mut r, &[(b't', b"\0\x01\0\0\0\x17"), (b'T', &int4)]).unwrap();
    let (_, with_int4, _) = fx.described.unwrap();
    assert_ne!(with_int4, sig);
}

#[test]
fn a_refused_copy_fails_as_a_stale_plan() {
    let mut r = Replies::default();
    r.push(Expect::Stale { stmt: 4 });
    r.push(Expect::Execute);
    r.on_sync_sent();
    let (d, fx) = feed(&mut r, &[(b'E', &error("ERROR", "26000"))]).unwrap();
    assert_eq!(d, vec![Swallow], "the session writes 0A000 in its place");
    assert_eq!(
        (fx.refused.as_deref(), fx.invalidated),
        (Some(STALE_PLAN), Some(4))
    );
    let done = fx.done.unwrap();
    assert_eq!(done.error, Some(*b"0A000"));
    assert_eq!(r.len(), 1, "only the Sync's ReadyForQuery is owed");
}

#[test]
fn a_refused_parse_fails_with_its_own_error_and_the_parses_after_it_name_nothing() {
    let mut r = Replies::default();
    let body: Box<[u8]> = error("ERROR", "42P05").into();
    r.push(Expect::Refused { body: body.clone() });
    for stamp in [5, 6] {
        r.push(Expect::Parse {
            swallow: false,
            registers: Some(stamp as StatementId),
            client: Some(stamp),
        });
    }
    r.push(Expect::Execute);
    r.on_sync_sent();
    let (d, fx) = feed(&mut r, &[(b'E', &error("ERROR", "26000"))]).unwrap();
    assert_eq!(
        d,
        vec![Swallow],
        "the session writes the refusal in its place"
    );
    assert_eq!(fx.refused.as_deref(), Some(&*body));
    assert_eq!(fx.not_parsed, Some((5, 6)));
    assert_eq!(fx.not_created, vec![5, 6]);
    assert_eq!(fx.done.unwrap().error, Some(*b"42P05"));
    assert_eq!(r.len(), 1, "only the Sync's ReadyForQuery is owed");
}

#[test]
fn a_clients_parse_is_reported_by_its_stamp() {
    let mut r = Replies::default();
    r.push(Expect::Parse {
        swallow: false,
        registers: Some(3),
        client: Some(9),
    });
    let (d, fx) = feed(&mut r, &[(b'1', b"")]).unwrap();
    assert_eq!(d, vec![Forward]);
    assert_eq!((fx.created, fx.parsed), (Some(3), Some(9)));
}

#[test]
fn a_failed_injected_query_is_reported() {
    let mut r = Replies::default();
    r.push(Expect::Ready {
        swallow: true,
        stmt: false,
    });
    let (d, fx) = feed(&mut r, &[(b'E', b"C22023\0\0"), (b'Z', b"I")]).unwrap();
    assert_eq!(d, vec![Swallow, Swallow]);
    assert_eq!(fx.injected_failed.as_deref(), Some(&b"C22023\0\0"[..]));
}

#[test]
fn a_parse_is_in_doubt_from_a_later_batch_until_answered() {
    let mut r = Replies::default();
    let parse = |id| Expect::Parse {
        swallow: true,
        registers: Some(id),
        client: None,
    };
    let first = r.batch();
    r.push(parse(7));
    r.push(Expect::Bind { stmt: Some(7) });
    assert!(!r.copy_owed_in_earlier_batch(7), "its own batch");
    r.on_sync_sent();
    assert_ne!(r.batch(), first, "the next batch");
    r.push(ready());
    assert_eq!(r.batch(), first + 2, "a Query is a batch");
    assert!(r.copy_owed_in_earlier_batch(7));
    assert!(!r.copy_owed_in_earlier_batch(8), "another statement");
    feed(&mut r, &[(b'1', b"")]).unwrap();
    assert!(!r.copy_owed_in_earlier_batch(7), "answered");
    // failed (or skipped after an error before it): owed no more either
    r.push(parse(8));
    r.on_sync_sent();
    assert!(r.copy_owed_in_earlier_batch(8));
    feed(&mut r, &[(b'2', b""), (b'Z', b"I")]).unwrap();
    let (_, fx) = feed(&mut r, &[(b'Z', b"I"), (b'E', &error("ERROR", "42601"))]).unwrap();
    assert_eq!(fx.not_created, vec![8]);
    assert!(!r.copy_owed_in_earlier_batch(8));
}

#[test]
fn an_unnamed_parse_is_in_doubt_from_a_later_batch_and_lost_when_skipped() {
    let mut r = Replies::default();
    let unnamed = Expect::Parse {
        swallow: true,
        registers: None,
        client: None,
    };
    r.push(Expect::Bind { stmt: None });
    r.push(unnamed.clone());
    r.push(Expect::Bind { stmt: None });
    assert!(!r.unnamed_in_doubt(), "its own batch");
    r.on_sync_sent();
    assert!(r.unnamed_in_doubt(), "the next batch");
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "26000"))]).unwrap();
    assert!(fx.unnamed_lost, "skipped");
    feed(&mut r, &[(b'Z', b"I")]).unwrap();
    assert!(!r.unnamed_in_doubt(), "nothing owed");
    r.push(unnamed);
    r.on_sync_sent();
    r.on_sync_sent();
    let (_, fx) = feed(&mut r, &[(b'1', b""), (b'Z', b"I")]).unwrap();
    assert!(!fx.unnamed_lost);
    assert!(!r.unnamed_in_doubt(), "answered");
}

#[test]
fn a_close_of_a_copy_is_in_doubt_from_a_later_batch_and_kept_when_skipped() {
    let mut r = Replies::default();
    let close = |id| Expect::Close {
        swallow: true,
        stmt: Some(id),
    };
    r.push(close(3));
    r.on_sync_sent();
    r.push(close(4));
    r.on_sync_sent();
    assert!(r.copy_owed_in_earlier_batch(3));
    let (d, fx) = feed(&mut r, &[(b'3', b""), (b'Z', b"I")]).unwrap();
    assert_eq!(d[0], Swallow);
    assert_eq!(fx.closed, Some(3));
    assert!(!r.copy_owed_in_earlier_batch(3), "answered");
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "34000"))]).unwrap();
    assert_eq!(fx.closes_skipped, vec![4], "the server keeps it");
}

#[test]
fn the_clients_unnamed_parse_skipped_or_failed_leaves_the_one_before_or_none() {
    let mut r = Replies::default();
    let mut parse = BytesMut::from(&b"Y"[..]);
    assert!(r.push_own_unnamed(&mut parse, b"X1"));
    r.on_sync_sent();
    assert!(r.own_unnamed_in_doubt(), "the next batch");
    r.push(Expect::Execute);
    assert!(r.push_own_unnamed(&mut parse, b"X2"));
    assert!(!r.own_unnamed_in_doubt(), "its own batch");
    r.on_sync_sent();
    assert_eq!(&parse[..], b"X2");
    // X1 made, X2 skipped after an error before it: X1
    let (_, fx) = feed(&mut r, &[(b'1', b""), (b'Z', b"I")]).unwrap();
    assert!(!fx.unnamed_lost);
    assert_eq!(r.own_unnamed.restored(), None);
    let (_, fx) = feed(&mut r, &[(b'E', &error("ERROR", "22012"))]).unwrap();
    assert!(fx.unnamed_lost);
    assert_eq!(r.own_unnamed.restored().as_deref(), Some(&b"X1"[..]));
    feed(&mut r, &[(b'Z', b"I")]).unwrap();
    assert!(!r.own_unnamed_in_doubt(), "answered");
    // a Parse that fails leaves none; while skipping, one is not sent
    let mut parse = BytesMut::from(&b"X1"[..]);
    assert!(r.push_own_unnamed(&mut parse, b"bad"));
    feed(&mut r, &[(b'E', &error("ERROR", "42601"))]).unwrap();
    assert_eq!(r.own_unnamed.restored().as_deref(), Some(&b""[..]));
    assert!(!r.push_own_unnamed(&mut parse, b"X3"), "skipping");
    assert_eq!(&parse[..], b"bad", "as the session left it");
}

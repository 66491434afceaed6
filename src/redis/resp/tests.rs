use super::*;

fn take(s: &[u8]) -> Result<Option<Request>, FrameError> {
    take_request(&mut BytesMut::from(s), &Limits::default())
}

fn args(r: &Request) -> Vec<&[u8]> {
    r.args.iter().map(|a| a.as_ref()).collect()
}

#[test]
fn multibulk_keeps_raw_bytes_and_needs_whole_frames() {
    let frame = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPI"[..]);
    let r = take_request(&mut buf, &Limits::default()).unwrap().unwrap();
    assert_eq!(&r.raw[..], frame);
    assert_eq!(args(&r), vec![&b"GET"[..], b"key"]);
    assert!(take_request(&mut buf, &Limits::default())
        .unwrap()
        .is_none());
    assert_eq!(
        &buf[..],
        b"*1\r\n$4\r\nPI",
        "nothing consumed when incomplete"
    );
    for cut in 0..frame.len() {
        assert_eq!(take(&frame[..cut]).unwrap(), None, "cut at {cut}");
    }
}

/// Redis skips a request whose count is zero or negative (`*0`, `*-1`), and reads on.
#[test]
fn an_empty_or_negative_count_is_skipped_as_redis_skips_it() {
    for empty in ["*0\r\n", "*-1\r\n", "*-5\r\n", "*-1\r\n*0\r\n"] {
        let mut buf = BytesMut::from(format!("{empty}*1\r\n$4\r\nPING\r\n").as_str());
        let r = take_request(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(args(&r), vec![&b"PING"[..]], "{empty:?}");
        assert!(buf.is_empty());
        let mut alone = BytesMut::from(empty);
        assert_eq!(
            take_request(&mut alone, &Limits::default()),
            Ok(None),
            "{empty:?}"
        );
        assert!(alone.is_empty(), "{empty:?} consumed");
    }
}

/// Found by the resp_decode fuzzer: a count of a sign and 19 digits, its `\r` read and
/// its `\n` not yet, was refused as too long; whole, the same frame is fine.
#[test]
fn the_longest_count_line_may_wait_for_its_newline() {
    let frame = b"*2\r\n-\r2\r0\t0\r\n*-0000000000000000000\r\n";
    assert_eq!(scan(frame, 0, &Limits::backend()), Ok(Some(frame.len())));
    let mut scanner = Scanner::default();
    for seen in 1..frame.len() {
        let r = scanner.scan(&frame[..seen], &Limits::backend());
        assert_eq!(r, Ok(None), "cut at {seen}");
    }
    assert_eq!(
        scanner.scan(frame, &Limits::backend()),
        Ok(Some(frame.len()))
    );
    // one more digit is still refused before its newline comes
    let long = b"*-00000000000000000000\r";
    assert!(Scanner::default().scan(long, &Limits::backend()).is_err());
}

#[test]
fn the_one_pass_reader_agrees_with_redis_protocol() {
    let agree: &[&[u8]] = &[
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
        b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n",
        b"*0\r\n",
    ];
    for f in agree {
        let fast = bulk_args(f).unwrap_or_else(|| panic!("{f:?}"));
        assert_eq!(fast, decode_args(f).unwrap());
    }
    // not an array of plain bulk strings: left to redis-protocol (and its errors)
    let other: &[&[u8]] = &[
        b"*1\r\n:1\r\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$03\r\nGET\r\n",
        b"*1\r\n$+3\r\nGET\r\n",
        b"*2\r\n$3\r\nGET\r\n",
        b"*1\r\n$3\r\nGETX\r\n",
        b"*1\r\n$3\r\nGET\r\nextra",
        b"*99999999999\r\n",
        b"$3\r\nGET\r\n",
    ];
    for f in other {
        assert_eq!(bulk_args(f), None, "{f:?}");
    }
}

#[test]
fn inline_commands_split_and_quote() {
    let r = take(b"SET k \"a b\\n\" 'c d'\r\n").unwrap().unwrap();
    assert!(r.inline);
    assert_eq!(args(&r), vec![&b"SET"[..], b"k", b"a b\n", b"c d"]);
    let r = take(b"\r\n\nPING\n").unwrap().unwrap();
    assert_eq!(args(&r), vec![&b"PING"[..]]);
    assert_eq!(take(b"SET k \"open\r\n"), Err(FrameError::UnbalancedQuotes));
    let long = vec![b'a'; 70_000];
    assert_eq!(take(&long), Err(FrameError::InlineTooLong));
}

#[test]
fn limits_are_checked_before_the_payload_arrives() {
    let limits = Limits {
        max_bulk_len: 10,
        max_elements: 4,
        max_depth: 2,
        max_inline: 100,
    };
    let mut b = BytesMut::from(&b"*1\r\n$1000000\r\n"[..]);
    assert_eq!(
        take_request(&mut b, &limits),
        Err(FrameError::BulkTooLong {
            len: 1_000_000,
            max: 10
        })
    );
    let mut b = BytesMut::from(&b"*99\r\n"[..]);
    assert!(matches!(
        take_request(&mut b, &limits),
        Err(FrameError::TooManyElements { .. })
    ));
    assert_eq!(
        scan(b"*1\r\n*1\r\n*1\r\n:1\r\n", 0, &limits),
        Err(FrameError::TooDeep { max: 2 })
    );
    let mut b = BytesMut::from(&b"*1\r\n*1\r\n$1\r\na\r\n"[..]);
    assert_eq!(
        take_request(&mut b, &limits),
        Err(FrameError::ExpectedBulk('*'))
    );
    assert_eq!(take(b"*x\r\n"), Err(FrameError::BadAggregateLength));
    assert_eq!(take(b"*1\r\n$-5\r\n"), Err(FrameError::BadBulkLength));
    assert_eq!(take(b"*1\r\n$1\r\nab\r\n"), Err(FrameError::MissingCrlf));
}

#[test]
fn scans_resp3_replies() {
    let l = Limits::backend();
    let push = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
    let map = b"%1\r\n+a\r\n#t\r\n";
    let attr = b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n";
    for f in [
        &push[..],
        map,
        attr,
        b"_\r\n",
        b",1.5\r\n",
        b"=7\r\ntxt:abc\r\n",
    ] {
        assert_eq!(scan(f, 0, &l), Ok(Some(f.len())), "{f:?}");
        assert_eq!(scan(&f[..f.len() - 1], 0, &l), Ok(None));
    }
    assert_eq!(scan(b"?x\r\n", 0, &l), Err(FrameError::BadType('?')));
}

#[test]
fn a_scan_resumes_where_the_last_read_stopped() {
    let l = Limits::backend();
    // a wide reply, nested aggregates, an attribute, empty and null values
    let mut wide = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        wide.extend_from_slice(format!("${}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
    }
    let frames: [&[u8]; 5] = [
        &wide,
        b"*3\r\n*2\r\n:1\r\n*0\r\n$-1\r\n%1\r\n+a\r\n*-1\r\n",
        b"|1\r\n+ttl\r\n:3\r\n*2\r\n$1\r\nv\r\n|0\r\n_\r\n",
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
        b"$3\r\nabc\r\n",
    ];
    for f in frames {
        let mut s = Scanner::default();
        for cut in 1..f.len() {
            assert_eq!(s.scan(&f[..cut], &l), Ok(None), "cut at {cut}");
        }
        assert_eq!(s.scan(f, &l), Ok(Some(f.len())));
        // and the scanner starts over for the next frame
        assert_eq!(s.scan(f, &l), Ok(Some(f.len())));
    }
    // two frames back to back: the first one's end
    let two = b"*1\r\n:1\r\n+OK\r\n";
    assert_eq!(Scanner::default().scan(two, &l), Ok(Some(8)));
    // a count line that cannot be a count is refused, not waited for
    let mut s = Scanner::default();
    assert_eq!(
        s.scan(b"*1111111111111111111111111", &l),
        Err(FrameError::BadAggregateLength)
    );
    assert_eq!(
        Scanner::default().scan(b"$1111111111111111111111111", &l),
        Err(FrameError::BadBulkLength)
    );
    // depth is counted as the one-shot scan counts it (an attribute's value at its own)
    let deep = Limits {
        max_depth: 1,
        ..Limits::backend()
    };
    assert_eq!(
        scan(b"|1\r\n+a\r\n+b\r\n*1\r\n:1\r\n", 0, &deep),
        Ok(Some(20))
    );
    assert_eq!(
        scan(b"*1\r\n*1\r\n:1\r\n", 0, &deep),
        Err(FrameError::TooDeep { max: 1 })
    );
}

#[test]
fn fuzz_logic_survives_random_bytes() {
    // xorshift: deterministic, no extra dependency
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let alphabet = b"*$:+-\r\n0123456789-?%>|~_abc \"'\\";
    for round in 0..20_000 {
        let len = (round % 64) + 1;
        let mut data = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = if x % 4 == 0 {
                (x >> 8) as u8
            } else {
                alphabet[(x >> 8) as usize % alphabet.len()]
            };
            data.push(b);
        }
        fuzz_logic(&data);
    }
}

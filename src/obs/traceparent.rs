//! W3C Trace Context `traceparent` values (`00-<trace id>-<parent span id>-<flags>`), as
//! applications put them in sqlcommenter comments. Parsed into fixed-size arrays so that
//! carrying one along a statement costs no allocation; the rules are those of the W3C
//! Trace Context recommendation (level 1, "traceparent header"): lowercase hex only, version
//! `ff` and all-zero ids are invalid, version `00` has exactly four fields, later versions may
//! append fields after a `-`.

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The caller's span: Pake's span becomes its child.
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

impl TraceParent {
    /// Parse a `traceparent` value; `None` when it breaks any rule (the caller then acts as if
    /// there were none, as the recommendation asks).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let s = value.trim_matches([' ', '\t']).as_bytes();
        if s.len() < LEN || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return None;
        }
        let version = hex_byte(s[0], s[1])?;
        match version {
            0xff => return None,
            0 if s.len() != LEN => return None,
            // a later version: whatever follows the four fields is its business
            _ if s.len() > LEN && s[LEN] != b'-' => return None,
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        decode(&s[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        decode(&s[36..52], &mut parent_id)?;
        let flags = hex_byte(s[53], s[54])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The caller recorded its span: follow that decision.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits, written into `buf`.
    pub fn trace_id_hex<'a>(&self, buf: &'a mut [u8; 32]) -> &'a str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.trace_id.iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
        // only ASCII hex digits were written
        std::str::from_utf8(buf).unwrap_or_default()
    }
}

fn decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (pair, o) in hex.chunks_exact(2).zip(out.iter_mut()) {
        *o = hex_byte(pair[0], pair[1])?;
    }
    Some(())
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(nibble(hi)? << 4 | nibble(lo)?)
}

/// Lowercase hex only: the recommendation rejects uppercase.
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn parses_the_recommendation_example() {
        let tp = TraceParent::parse(GOOD).unwrap();
        assert_eq!(tp.trace_id[0], 0x0a);
        assert_eq!(tp.trace_id[15], 0x9c);
        assert_eq!(
            tp.parent_id,
            [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]
        );
        assert!(tp.sampled());
        let mut buf = [0u8; 32];
        assert_eq!(
            tp.trace_id_hex(&mut buf),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let unsampled = TraceParent::parse(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
        // other flag bits do not mean sampled
        assert!(!TraceParent::parse(&GOOD.replace("-01", "-02"))
            .unwrap()
            .sampled());
        assert!(TraceParent::parse(&format!(" {GOOD}\t")).is_some());
    }

    #[test]
    fn rejects_what_the_recommendation_rejects() {
        for bad in [
            "",
            "00",
            "bad",
            // uppercase hex
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            // all-zero ids
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            // version ff is invalid; version 00 has exactly four fields
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            // wrong lengths and separators
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
            "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            // a later version with a malformed tail
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            // multi-byte characters never panic
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333é-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_keep_the_four_fields() {
        let tp = TraceParent::parse(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next",
        )
        .unwrap();
        assert_eq!(tp, TraceParent::parse(GOOD).unwrap());
        assert!(TraceParent::parse(&GOOD.replacen("00", "01", 1)).is_some());
    }
}

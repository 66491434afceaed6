//! Cluster redirections and the errors that say a node did not run a command (`MOVED`,
//! `ASK`, `TRYAGAIN`, `CLUSTERDOWN`…), read from the raw reply bytes.

/// A cluster's answer that the node did not run the command and another route may.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Redirect {
    /// `-MOVED slot host:port`: the slot is served there now.
    Moved(String),
    /// `-ASK slot host:port`: the key is being migrated there; ask with ASKING first.
    Ask(String),
    /// TRYAGAIN, CLUSTERDOWN (or a redirection Pake cannot read): fred retries it (it
    /// reconnects and resyncs on CLUSTERDOWN).
    Fred,
}

impl Redirect {
    pub(super) fn parse(raw: &[u8]) -> Option<Redirect> {
        let text = match raw.first() {
            Some(b'-') => &raw[1..],
            Some(b'!') => {
                let eol = raw.iter().position(|&b| b == b'\n')?;
                &raw[eol + 1..]
            }
            _ => return None,
        };
        let target = |rest: &[u8]| {
            let line = std::str::from_utf8(rest).ok()?.trim();
            let (_slot, addr) = line.split_once(' ')?;
            Some(addr.to_string())
        };
        let redirect = if let Some(rest) = text.strip_prefix(b"MOVED") {
            target(rest).map_or(Redirect::Fred, Redirect::Moved)
        } else if let Some(rest) = text.strip_prefix(b"ASK") {
            target(rest).map_or(Redirect::Fred, Redirect::Ask)
        } else if text.starts_with(b"TRYAGAIN") || text.starts_with(b"CLUSTERDOWN") {
            Redirect::Fred
        } else {
            return None;
        };
        Some(redirect)
    }
}

/// A redirection or cluster error: the node did not run the command.
pub(super) fn is_redirect(raw: &[u8]) -> bool {
    Redirect::parse(raw).is_some()
}

/// `to` with the host of `from` when Redis left the host out (`:6380`: the same host as
/// the node that answered).
pub(super) fn with_host_of(to: &str, from: &str) -> String {
    match (to.strip_prefix(':'), from.rsplit_once(':')) {
        (Some(port), Some((host, _))) => format!("{host}:{port}"),
        _ => to.to_string(),
    }
}

/// A reply that says the command may succeed on another node or after a failover.
pub(super) fn retry_elsewhere(reply: &[u8]) -> bool {
    const CODES: [&[u8]; 7] = [
        b"-MOVED ",
        b"-ASK ",
        b"-TRYAGAIN",
        b"-CLUSTERDOWN",
        b"-READONLY",
        b"-LOADING",
        b"-MASTERDOWN",
    ];
    CODES.iter().any(|c| reply.starts_with(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirections_are_read_in_both_protocols() {
        let moved = Redirect::parse(b"-MOVED 3999 127.0.0.1:6381\r\n");
        assert_eq!(moved, Some(Redirect::Moved("127.0.0.1:6381".into())));
        let ask = Redirect::parse(b"-ASK 3999 10.0.0.2:7000\r\n");
        assert_eq!(ask, Some(Redirect::Ask("10.0.0.2:7000".into())));
        let blob = Redirect::parse(b"!27\r\nMOVED 12 127.0.0.1:6381\r\n");
        assert_eq!(blob, Some(Redirect::Moved("127.0.0.1:6381".into())));
        let down = Redirect::parse(b"-CLUSTERDOWN The cluster is down\r\n");
        assert_eq!(down, Some(Redirect::Fred));
        let again = Redirect::parse(b"-TRYAGAIN Multiple keys request during rehashing\r\n");
        assert_eq!(again, Some(Redirect::Fred));
        assert_eq!(Redirect::parse(b"-MOVED\r\n"), Some(Redirect::Fred));
        assert_eq!(Redirect::parse(b"-ERR no\r\n"), None);
        assert_eq!(Redirect::parse(b"+MOVED 1 a:1\r\n"), None);
        assert_eq!(Redirect::parse(b""), None);
        assert_eq!(with_host_of(":6380", "10.0.0.1:6379"), "10.0.0.1:6380");
        assert_eq!(with_host_of("a:1", "b:2"), "a:1");
    }
}

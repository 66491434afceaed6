//! `SCRIPT KILL`, `FUNCTION KILL` and `CLIENT UNPAUSE`: the commands that end what holds a
//! server up.
//!
//! Redis answers them from another connection while a script runs long (they are among the
//! few it runs while busy) or while writes are paused. Through Pake the script or the held
//! write may be in flight on the very shared link the rescue would queue behind, answered
//! only once the command timeout gave up on it. So each goes on a connection of its own to
//! every primary (one in standalone), logged in as the client (Redis's ACLs decide), in
//! database 0 (`SELECT` is refused while a script is busy), and closed after its reply.

use super::Session;
use crate::redis::backend::link::Link;
use crate::redis::error::Error;
use bytes::Bytes;
use futures_util::future::join_all;

/// Whether `args` is one of the rescue commands.
pub fn is_rescue(args: &[Bytes]) -> bool {
    let is = |i: usize, word: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    args.len() == 2
        && ((is(0, b"script") || is(0, b"function")) && is(1, b"kill")
            || is(0, b"client") && is(1, b"unpause"))
}

/// One reply for all the primaries asked: `+OK` where one ended something (the others
/// answer `-NOTBUSY`), else the first reply (or error).
fn merge(replies: Vec<Result<Bytes, Error>>) -> Result<Bytes, Error> {
    let mut first = None;
    for r in replies {
        if matches!(&r, Ok(b) if b.starts_with(b"+")) {
            return r;
        }
        first.get_or_insert(r);
    }
    first.unwrap_or_else(|| Err(Error::Backend("no primary known".into())))
}

impl Session {
    /// Send a rescue command on connections of its own (see the module) and answer.
    pub(super) async fn rescue(&mut self, args: &[Bytes]) -> Result<super::Flow, Error> {
        let addrs: Vec<String> = match self.svc.backend.cluster {
            true => self
                .svc
                .backend
                .primaries()
                .into_iter()
                .map(|p| p.addr)
                .collect(),
            false => self.svc.backend.node_for(None).into_iter().collect(),
        };
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        let mut asks = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let mut target = self.own_target(Some(addr))?;
            target.db = 0;
            let argv = &argv;
            asks.push(async move {
                let mut link = Link::connect(&target).await?;
                link.call(argv).await
            });
        }
        let reply = merge(join_all(asks).await)?;
        if reply.starts_with(b"+") && args[0].eq_ignore_ascii_case(b"client") {
            self.svc.pauses.unpaused();
        }
        self.push_reply(reply);
        Ok(super::Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::redis::test_args as args;

    #[test]
    fn rescues_are_told_by_name_and_merged_ok_first() {
        for yes in [
            &["script", "KILL"][..],
            &["FUNCTION", "kill"],
            &["client", "unpause"],
        ] {
            assert!(is_rescue(&args(yes)), "{yes:?}");
        }
        for no in [
            &["SCRIPT", "FLUSH"][..],
            &["SCRIPT", "KILL", "x"],
            &["CLIENT", "PAUSE"],
            &["CLIENT"],
            &["KILL"],
        ] {
            assert!(!is_rescue(&args(no)), "{no:?}");
        }
        let busy = || {
            Ok(Bytes::from_static(
                b"-NOTBUSY No scripts in execution right now.\r\n",
            ))
        };
        let ok = || Ok(Bytes::from_static(b"+OK\r\n"));
        let lost = || Err(Error::LinkLost("x".into()));
        assert_eq!(merge(vec![busy(), ok(), lost()]).ok(), ok().ok());
        assert_eq!(merge(vec![busy(), busy()]).ok(), busy().ok());
        assert!(
            merge(vec![lost(), busy()]).is_err(),
            "the first reply, an error"
        );
        assert!(merge(vec![]).is_err());
    }
}

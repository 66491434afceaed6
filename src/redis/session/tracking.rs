//! `CLIENT TRACKING`, `CACHING`, `TRACKINGINFO` and `GETREDIR` of one connection, answered
//! by Pake from its own tracking table ([`crate::redis::client_tracking`]), with Redis's
//! options, checks and error texts; and the step that records a tracked read's keys before
//! the read is sent or answered.

use super::Session;
use crate::redis::client_tracking::{ClientTracking, Mode};
use crate::redis::commands::{Kind, Spec, READ, WRITE};
use crate::redis::resp::encode::{self, Proto};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// A connection with tracking on.
pub struct Tracked {
    pub mode: Mode,
    /// `CLIENT CACHING YES|NO` for the next command (the whole of a MULTI … EXEC).
    pub caching: Option<bool>,
    table: Arc<ClientTracking>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.table.off(self.id);
    }
}

const SWITCH_BCAST: &str = "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.";
const SWITCH_OPT: &str = "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.";

/// `CLIENT TRACKING ON|OFF [options]` as parsed, before the checks against the
/// connection's current mode.
fn parse(args: &[Bytes]) -> Result<(bool, Mode, bool), String> {
    let on = match &args[2].to_ascii_lowercase()[..] {
        b"on" => true,
        b"off" => false,
        _ => return Err("ERR syntax error".into()),
    };
    let mut mode = Mode::default();
    let mut redirect_given = false;
    let mut i = 3;
    while i < args.len() {
        let more = i + 1 < args.len();
        match &args[i].to_ascii_lowercase()[..] {
            b"redirect" if more => {
                i += 1;
                if redirect_given {
                    return Err("ERR A client can only redirect to a single other client".into());
                }
                mode.redirect = std::str::from_utf8(&args[i])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("ERR value is not an integer or out of range")?;
                redirect_given = true;
            }
            b"bcast" => mode.bcast = true,
            b"optin" => mode.optin = true,
            b"optout" => mode.optout = true,
            b"noloop" => mode.noloop = true,
            b"prefix" if more => {
                i += 1;
                // its own copy: kept as long as tracking is on, a slice would pin the
                // whole read buffer of the CLIENT command
                mode.prefixes.push(Bytes::copy_from_slice(&args[i]));
            }
            _ => return Err("ERR syntax error".into()),
        }
        i += 1;
    }
    Ok((on, mode, redirect_given))
}

/// Two prefixes overlap when one starts with the other: a key under both would be
/// announced twice.
fn overlaps(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl Session {
    /// The tracking table, when Pake hears the writes it needs (its L1's streams).
    fn tracking_table(&self) -> Option<Arc<ClientTracking>> {
        self.svc.tracking.as_ref().map(|t| t.clients.clone())
    }

    /// `CLIENT TRACKING ON|OFF …`
    pub(super) fn client_tracking(&mut self, out: &mut BytesMut, args: &[Bytes]) {
        if let Err(e) = self.set_tracking(args) {
            encode::error(out, &e);
        } else {
            encode::simple(out, "OK");
        }
    }

    fn set_tracking(&mut self, args: &[Bytes]) -> Result<(), String> {
        let (on, mut mode, redirect_given) = parse(args)?;
        let target = match redirect_given {
            true => Some(
                self.svc
                    .registry
                    .get(mode.redirect)
                    .ok_or("ERR The client ID you want redirect to does not exist")?,
            ),
            false => None,
        };
        if !on {
            self.tracking = None;
            return Ok(());
        }
        let Some(table) = self.tracking_table() else {
            return Err("ERR CLIENT TRACKING through Pake needs its invalidation streams, which run with its L1: set [redis] l1 = true".into());
        };
        if !mode.prefixes.is_empty() && !mode.bcast {
            return Err("ERR PREFIX option requires BCAST mode to be enabled".into());
        }
        let current = self.tracking.as_ref().map(|t| &t.mode);
        if current.is_some_and(|c| c.bcast != mode.bcast) {
            return Err(SWITCH_BCAST.into());
        }
        if mode.bcast && (mode.optin || mode.optout) {
            return Err("ERR OPTIN and OPTOUT are not compatible with BCAST".into());
        }
        if mode.optin && mode.optout {
            return Err("ERR You can't specify both OPTIN mode and OPTOUT mode".into());
        }
        if current.is_some_and(|c| (mode.optin && c.optout) || (mode.optout && c.optin)) {
            return Err(SWITCH_OPT.into());
        }
        let mut prefixes = current.map(|c| c.prefixes.clone()).unwrap_or_default();
        if mode.bcast {
            for (i, p) in mode.prefixes.iter().enumerate() {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                if let Some(e) = prefixes.iter().find(|e| overlaps(e, p)) {
                    return Err(format!("ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.", text(p), text(e)));
                }
                if let Some(o) = mode.prefixes[i + 1..].iter().find(|o| overlaps(o, p)) {
                    return Err(format!("ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.", text(p), text(o)));
                }
            }
            prefixes.extend(mode.prefixes.iter().cloned());
            if prefixes.is_empty() {
                // every key, as Redis's empty prefix
                prefixes.push(Bytes::new());
            }
        }
        mode.prefixes = prefixes;
        let to = target.unwrap_or_else(|| self.reg.entry.clone());
        // replaced in place: dropping the old `Tracked` would turn tracking off for a
        // moment, and an invalidation in that moment would be lost
        table.on(self.id, &mode, to, &self.reg.entry);
        match &mut self.tracking {
            Some(t) => t.mode = mode,
            None => {
                self.tracking = Some(Tracked {
                    mode,
                    caching: None,
                    table,
                    id: self.id,
                })
            }
        }
        Ok(())
    }

    /// `CLIENT CACHING YES|NO`
    pub(super) fn client_caching(&mut self, out: &mut BytesMut, value: &Bytes) {
        let Some(t) = self
            .tracking
            .as_mut()
            .filter(|t| t.mode.optin || t.mode.optout)
        else {
            encode::error(out, "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
            return;
        };
        match &value.to_ascii_lowercase()[..] {
            b"yes" if t.mode.optin => t.caching = Some(true),
            b"yes" => {
                return encode::error(
                    out,
                    "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
                )
            }
            b"no" if t.mode.optout => t.caching = Some(false),
            b"no" => {
                return encode::error(
                    out,
                    "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
                )
            }
            _ => return encode::error(out, "ERR syntax error"),
        }
        encode::simple(out, "OK");
    }

    /// `CLIENT GETREDIR`: -1 without tracking, 0 without a redirection.
    pub(super) fn getredir(&self) -> i64 {
        self.tracking
            .as_ref()
            .map_or(-1, |t| t.mode.redirect as i64)
    }

    /// `CLIENT TRACKINGINFO`
    pub(super) fn tracking_info(&self, out: &mut BytesMut) {
        let p = self.state.proto;
        let mut flags = Vec::new();
        match &self.tracking {
            None => flags.push("off"),
            Some(t) => {
                flags.push("on");
                let m = &t.mode;
                let named = [
                    (m.bcast, "bcast"),
                    (m.optin, "optin"),
                    (m.optout, "optout"),
                    (t.caching == Some(true), "caching-yes"),
                    (t.caching == Some(false), "caching-no"),
                    (m.noloop, "noloop"),
                    (self.reg.entry.inbox.broken_redirect(), "broken_redirect"),
                ];
                flags.extend(named.iter().filter(|(on, _)| *on).map(|(_, f)| *f));
            }
        }
        encode::map(out, 3, p);
        encode::bulk(out, b"flags");
        match p {
            Proto::Resp3 => out.extend_from_slice(format!("~{}\r\n", flags.len()).as_bytes()),
            Proto::Resp2 => encode::array(out, flags.len()),
        }
        for f in flags {
            encode::bulk(out, f.as_bytes());
        }
        encode::bulk(out, b"redirect");
        encode::int(out, self.getredir());
        encode::bulk(out, b"prefixes");
        let mut prefixes: Vec<&Bytes> = self
            .tracking
            .iter()
            .filter(|t| t.mode.bcast)
            .flat_map(|t| &t.mode.prefixes)
            .collect();
        // Redis lists them from its radix tree: in byte order
        prefixes.sort();
        encode::array(out, prefixes.len());
        for pre in prefixes {
            encode::bulk(out, pre);
        }
    }

    /// Before a command is sent or answered: a tracked read's keys are recorded for this
    /// connection, so an invalidation Pake hears from now on reaches it. `CLIENT CACHING`
    /// holds for the next command (inside MULTI, until EXEC).
    pub(super) fn track(&mut self, spec: &Spec, args: &[Bytes]) {
        let in_tx = self.tx.is_some() && !matches!(spec.kind, Kind::Exec | Kind::Discard);
        let Some(t) = self.tracking.as_mut() else {
            return;
        };
        if spec.kind == Kind::Client {
            return;
        }
        let caching = match in_tx {
            true => t.caching,
            false => t.caching.take(),
        };
        let m = &t.mode;
        if !spec.is(READ) || spec.is(WRITE) {
            return;
        }
        if !m.bcast && ((m.optin && caching != Some(true)) || (m.optout && caching == Some(false)))
        {
            return;
        }
        let keys = super::dispatch::keys_of(spec, args);
        if keys.is_empty() {
            return;
        }
        if !m.bcast {
            t.table.read(self.id, &keys);
        }
        // recorded first: a stream armed from here on flushes the client, one lost announces
        // nothing more, so a key read where none is armed now is invalidated at once
        if let Some(l1) = &self.svc.l1 {
            let unheard: Vec<&Bytes> = (keys.iter().copied())
                .filter(|k| !l1.is_armed(crate::redis::commands::slot(k)))
                .collect();
            if !unheard.is_empty() {
                t.table.unheard(self.id, &unheard);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|w| Bytes::from(w.to_string())).collect()
    }

    #[test]
    fn options_parse_as_redis_reads_them() {
        let (on, m, r) = parse(&args(
            "CLIENT TRACKING on REDIRECT 7 BCAST PREFIX a PREFIX b NOLOOP",
        ))
        .unwrap_or_default();
        assert!(on && r && m.bcast && m.noloop);
        assert_eq!((m.redirect, m.prefixes.len()), (7, 2));
        let err = |s| parse(&args(s)).err().unwrap_or_default();
        assert_eq!(err("CLIENT TRACKING maybe"), "ERR syntax error");
        assert_eq!(err("CLIENT TRACKING ON PREFIX"), "ERR syntax error");
        assert_eq!(
            err("CLIENT TRACKING ON REDIRECT x"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            err("CLIENT TRACKING ON REDIRECT 1 REDIRECT 2"),
            "ERR A client can only redirect to a single other client"
        );
        assert!(overlaps(b"a", b"ab") && overlaps(b"ab", b"a") && !overlaps(b"ab", b"ac"));
    }
}

//! Asking Redis Sentinel where the primary is, and listening for it to move.
//!
//! Pake talks to the sentinels itself, over raw RESP2 on [`Link`]s, rather than through
//! fred's Sentinel mode: fred asks the first sentinel that answers and re-resolves only when
//! a connection drops, while Pake's dedicated links and tracking streams address the primary
//! directly, so all of them must follow one notion of "the current primary".
//!
//! * [`Sentinels::resolve`] asks every sentinel at once (`SENTINEL MASTER`, `SENTINEL
//!   REPLICAS`) and keeps the answer with the highest config epoch: a sentinel that has not
//!   heard of a failover yet reports the old primary under an older epoch and is outvoted,
//!   and one dead sentinel only costs its own answer.
//! * [`Sentinels::watch`] subscribes to `+switch-master` and to the failover's steps naming
//!   the replica being promoted (`+selected-slave`, `+failover-state-wait-promotion`,
//!   `+promoted-slave`) on one sentinel (Pake watches all of them), and calls back on each
//!   for this master, and on every (re)subscription, since events sent while disconnected
//!   are lost.
//!
//! The old primary is no signal to wait for: after `+switch-master` it stays a writable
//! primary until the sentinels convert it to a replica, about ten seconds later (measured
//! with Redis 7.0), so whatever is written there meanwhile is lost. Following the sentinels
//! is what stops Pake writing there, and `+switch-master` itself comes late: the leader
//! announces it only when it has reconfigured the replicas, and even `+promoted-slave` comes
//! up to a second after the replica took `REPLICAOF NO ONE` (the leader waits for it to say
//! so in `INFO`). Everything written to the old primary in between is lost: the chaos suite
//! measured 360–560 acknowledged writes of a forced failover lost that way. So Pake moves as
//! soon as the replica is selected: it asks that replica its `ROLE` until it is a primary.

use super::link::{command, error_text, Link, Target};
use super::server_addr;
use crate::redis::config::{split_host_port, RedisConfig};
use crate::redis::error::Error;
use crate::redis::resp::encode::Proto;
use bytes::Bytes;
use futures_util::future::join_all;
use redis_protocol::resp2::types::BytesFrame;
use std::collections::HashMap;
use std::time::Duration;

/// The sentinels of one monitored master, and how to log in to them.
#[derive(Debug, Clone)]
pub struct Sentinels {
    addrs: Vec<String>,
    master: String,
    username: Option<String>,
    password: Option<String>,
    timeout: Duration,
}

/// What the best-informed sentinel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `host:port` of the primary.
    pub primary: String,
    /// The sentinels' config epoch for this master: bumped by every failover.
    pub epoch: u64,
    /// Replicas the sentinel considers usable: not down, not disconnected, link to the
    /// primary up.
    pub replicas: Vec<String>,
}

/// One message on a `+switch-master` subscription.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// The subscription is (re)established.
    Subscribed,
    /// `+switch-master` for the named master.
    Switched(String),
    /// `+selected-slave`, `+failover-state-wait-promotion` or `+promoted-slave`: the
    /// leader is promoting (or has promoted) this replica (`host:port`) of the named master.
    Promoting {
        master: String,
        addr: String,
    },
    Other,
}

impl Sentinels {
    /// The sentinels of `cfg`, when Sentinel mode is on.
    pub fn from_config(cfg: &RedisConfig) -> Option<Sentinels> {
        if !cfg.uses_sentinel() {
            return None;
        }
        Some(Sentinels {
            addrs: cfg.sentinels.clone(),
            master: cfg.sentinel_master.clone().unwrap_or_default(),
            username: cfg.sentinel_username.clone(),
            password: cfg.sentinel_password.clone(),
            timeout: cfg.connect_timeout.0,
        })
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    pub fn master(&self) -> &str {
        &self.master
    }

    fn target(&self, addr: &str) -> Target {
        let addr = match split_host_port(addr) {
            Some((host, port)) => server_addr(host, port),
            None => addr.to_string(),
        };
        Target {
            addr,
            username: self.username.clone(),
            password: self.password.clone(),
            db: 0,
            proto: Proto::Resp2,
            connect_timeout: self.timeout,
            // sentinels are asked in plaintext (their own TLS is not supported yet)
            tls: None,
        }
    }

    /// Ask every sentinel; the answer with the highest config epoch wins. Fails, naming each
    /// sentinel's problem, when none of them knows the master.
    pub async fn resolve(&self) -> Result<Resolved, Error> {
        let answers = join_all(self.addrs.iter().map(|a| async move {
            match tokio::time::timeout(self.timeout, self.ask(a)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Backend(format!(
                    "{a}: no answer in {:?}",
                    self.timeout
                ))),
            }
        }))
        .await;
        let mut best: Option<Resolved> = None;
        let mut problems = Vec::new();
        for answer in answers {
            match answer {
                Ok(r) if best.as_ref().is_none_or(|b| r.epoch > b.epoch) => best = Some(r),
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        best.ok_or_else(|| {
            Error::Backend(format!(
                "no sentinel could name the primary of master '{}': {}",
                self.master,
                problems.join("; ")
            ))
        })
    }

    async fn ask(&self, addr: &str) -> Result<Resolved, Error> {
        let mut link = Link::connect(&self.target(addr)).await?;
        let name = self.master.as_bytes();
        let master = link.call(&[b"SENTINEL", b"MASTER", name]).await?;
        if let Some(e) = error_text(&master) {
            return Err(Error::Backend(format!("sentinel {addr}: {e}")));
        }
        let master = fields(&decode(&master)?);
        let primary = address(&master)
            .ok_or_else(|| Error::Backend(format!("sentinel {addr}: no address in its answer")))?;
        let epoch = master
            .get("config-epoch")
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        let replicas = link.call(&[b"SENTINEL", b"REPLICAS", name]).await?;
        let mut replicas: Vec<String> = match decode(&replicas)? {
            BytesFrame::Array(items) => items
                .iter()
                .map(fields)
                .filter(usable_replica)
                .filter_map(|r| address(&r))
                .collect(),
            _ => Vec::new(),
        };
        // a stable order: the same set from another sentinel is no change
        replicas.sort();
        Ok(Resolved {
            primary,
            epoch,
            replicas,
        })
    }

    /// Subscribe on the sentinel at `addr` and call `on_event` for each switch of this
    /// master and once subscribed (`None`: ask the sentinels), and for each step of a
    /// promotion (`Some(host:port)` of the replica being promoted). Returns when the
    /// connection fails.
    pub async fn watch(
        &self,
        addr: &str,
        on_event: &(dyn Fn(Option<String>) + Send + Sync),
    ) -> Error {
        let mut link = match Link::connect(&self.target(addr)).await {
            Ok(l) => l,
            Err(e) => return e,
        };
        if let Err(e) = link
            .send(&command(&[
                b"SUBSCRIBE",
                b"+switch-master",
                b"+selected-slave",
                b"+failover-state-wait-promotion",
                b"+promoted-slave",
            ]))
            .await
        {
            return e;
        }
        loop {
            let frame = match link.read_frame().await {
                Ok(f) => f,
                Err(e) => return e,
            };
            match event(&frame) {
                Event::Subscribed => on_event(None),
                Event::Switched(name) if name == self.master => {
                    tracing::info!(sentinel = %addr, master = %name, "sentinel announced +switch-master");
                    on_event(None)
                }
                Event::Promoting { master, addr: new } if master == self.master => {
                    tracing::info!(sentinel = %addr, master = %master, replica = %new, "sentinel is promoting a replica");
                    on_event(Some(new))
                }
                Event::Switched(_) | Event::Promoting { .. } | Event::Other => {}
            }
        }
    }
}

fn decode(frame: &Bytes) -> Result<BytesFrame, Error> {
    match redis_protocol::resp2::decode::decode_bytes(frame) {
        Ok(Some((f, _))) => Ok(f),
        _ => Err(Error::Backend("undecodable reply from a sentinel".into())),
    }
}

fn text(f: &BytesFrame) -> Option<String> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        BytesFrame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `[name, value, name, value…]` reply as a map.
fn fields(f: &BytesFrame) -> HashMap<String, String> {
    let BytesFrame::Array(items) = f else {
        return HashMap::new();
    };
    items
        .chunks(2)
        .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
        .collect()
}

fn address(f: &HashMap<String, String>) -> Option<String> {
    let port = f.get("port")?.parse().ok()?;
    Some(server_addr(f.get("ip")?, port))
}

fn usable_replica(r: &HashMap<String, String>) -> bool {
    let flags = r.get("flags").map(String::as_str).unwrap_or_default();
    let down = flags
        .split(',')
        .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"));
    !down && r.get("master-link-status").map(String::as_str) == Some("ok")
}

/// The failover events that name the replica being promoted.
const PROMOTION_STEPS: [&str; 3] = [
    "+selected-slave",
    "+failover-state-wait-promotion",
    "+promoted-slave",
];

/// Classify a message on the subscription connection.
fn event(frame: &Bytes) -> Event {
    let Ok(BytesFrame::Array(items)) = decode(frame) else {
        return Event::Other;
    };
    let parts: Vec<Option<String>> = items.iter().map(text).collect();
    match parts.as_slice() {
        [Some(kind), Some(channel), _] if kind == "subscribe" && channel == "+switch-master" => {
            Event::Subscribed
        }
        [Some(kind), Some(channel), Some(payload)]
            if kind == "message" && channel == "+switch-master" =>
        {
            // "<master name> <old ip> <old port> <new ip> <new port>"
            let name = payload.split(' ').next().unwrap_or_default();
            Event::Switched(name.to_string())
        }
        [Some(kind), Some(channel), Some(payload)]
            if kind == "message" && PROMOTION_STEPS.contains(&channel.as_str()) =>
        {
            // "slave <name> <ip> <port> @ <master name> <master ip> <master port>"
            match payload.split(' ').collect::<Vec<_>>().as_slice() {
                ["slave", _, ip, port, "@", master, ..] => match port.parse() {
                    Ok(port) => Event::Promoting {
                        master: master.to_string(),
                        addr: server_addr(ip, port),
                    },
                    Err(_) => Event::Other,
                },
                _ => Event::Other,
            }
        }
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(items: &[&str]) -> BytesFrame {
        BytesFrame::Array(
            items
                .iter()
                .map(|s| BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes())))
                .collect(),
        )
    }

    fn encoded(f: &BytesFrame) -> Bytes {
        let mut buf = bytes::BytesMut::new();
        redis_protocol::resp2::encode::extend_encode(&mut buf, f, false).expect("encode");
        buf.freeze()
    }

    #[test]
    fn sentinel_answers_are_read() {
        let m = fields(&array(&[
            "name", "m", "ip", "::1", "port", "7000", "flags", "master",
        ]));
        assert_eq!(address(&m).as_deref(), Some("[::1]:7000"));
        let ok = fields(&array(&["flags", "slave", "master-link-status", "ok"]));
        assert!(usable_replica(&ok));
        let down = fields(&array(&[
            "flags",
            "slave,s_down",
            "master-link-status",
            "ok",
        ]));
        assert!(!usable_replica(&down));
        let syncing = fields(&array(&["flags", "slave", "master-link-status", "err"]));
        assert!(!usable_replica(&syncing));
    }

    #[test]
    fn switch_master_events() {
        let sub = BytesFrame::Array(vec![
            BytesFrame::BulkString("subscribe".into()),
            BytesFrame::BulkString("+switch-master".into()),
            BytesFrame::Integer(1),
        ]);
        assert_eq!(event(&encoded(&sub)), Event::Subscribed);
        let msg = array(&[
            "message",
            "+switch-master",
            "mymaster 127.0.0.1 7000 127.0.0.1 7001",
        ]);
        assert_eq!(event(&encoded(&msg)), Event::Switched("mymaster".into()));
        assert_eq!(
            event(&encoded(&array(&["message", "+sdown", "x"]))),
            Event::Other
        );
    }

    #[test]
    fn promotion_events() {
        for step in PROMOTION_STEPS {
            let msg = array(&[
                "message",
                step,
                "slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 127.0.0.1 7000",
            ]);
            assert_eq!(
                event(&encoded(&msg)),
                Event::Promoting {
                    master: "mymaster".into(),
                    addr: "127.0.0.1:7001".into()
                },
                "{step}"
            );
        }
        let second_subscription = BytesFrame::Array(vec![
            BytesFrame::BulkString("subscribe".into()),
            BytesFrame::BulkString("+promoted-slave".into()),
            BytesFrame::Integer(2),
        ]);
        assert_eq!(event(&encoded(&second_subscription)), Event::Other);
        for bad in [
            "slave 127.0.0.1:7001 127.0.0.1 notaport @ mymaster 127.0.0.1 7000",
            "sentinel abc 127.0.0.1 7001 @ mymaster 127.0.0.1 7000",
            "slave truncated",
        ] {
            let msg = array(&["message", "+promoted-slave", bad]);
            assert_eq!(event(&encoded(&msg)), Event::Other, "{bad}");
        }
    }
}

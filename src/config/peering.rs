//! `[peering]`: several Pakes behind one address act as one for query cancellation.
//!
//! A CancelRequest opens a new connection, and a load balancer may send it to any instance,
//! not the one holding the query. With peering on, every key an instance hands out carries
//! its `peer_id`, and an instance that receives a cancel for another peer's key forwards it
//! to that peer (PgBouncer 1.19+ does the same with `peer_id` and `[peers]`).

use super::ConfigError;
use serde::{Deserialize, Serialize};

/// Cancel forwarding between Pake instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Peering {
    /// This instance's id, 1–255 and unique among its peers; 0 (the default) turns peering off.
    pub peer_id: u8,
    /// Every instance that may receive this one's cancels (this one may be listed too).
    pub peers: Vec<Peer>,
}

/// One Pake instance, by id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The instance's `peering.peer_id`.
    pub id: u8,
    /// `host:port` of its Postgres listener, reachable from the other instances.
    pub address: String,
}

impl Peering {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if self.peer_id == 0 && !self.peers.is_empty() {
            errs.push(ConfigError::new(
                "peering.peer_id",
                "must be set (1-255) when peering.peers are listed",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if p.id == 0 {
                errs.push(ConfigError::new(
                    format!("peering.peers[{i}].id"),
                    "must be 1-255 (0 means peering off)",
                ));
            }
            if !seen.insert(p.id) {
                errs.push(ConfigError::new(
                    format!("peering.peers[{i}].id"),
                    format!("peer {} is listed twice", p.id),
                ));
            }
            let has_port = p
                .address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                errs.push(ConfigError::new(
                    format!("peering.peers[{i}].address"),
                    format!("{:?} is not host:port", p.address),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(p: &Peering) -> Vec<String> {
        let mut errs = Vec::new();
        p.validate(&mut errs);
        errs.into_iter().map(|e| e.key).collect()
    }

    #[test]
    fn peers_need_an_id_a_unique_id_and_an_address() {
        assert!(errors(&Peering::default()).is_empty());
        let peer = |id, address: &str| Peer {
            id,
            address: address.into(),
        };
        let p = Peering {
            peer_id: 0,
            peers: vec![peer(1, "a:6432")],
        };
        assert_eq!(errors(&p), ["peering.peer_id"]);
        let p = Peering {
            peer_id: 1,
            peers: vec![
                peer(1, "a:6432"),
                peer(1, "b:6432"),
                peer(0, "c"),
                peer(3, ":1"),
            ],
        };
        assert_eq!(
            errors(&p),
            [
                "peering.peers[1].id",
                "peering.peers[2].id",
                "peering.peers[2].address",
                "peering.peers[3].address"
            ]
        );
    }
}

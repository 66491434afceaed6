//! Which primary serves each hash slot, as Pake last read it from fred's cached cluster
//! state, and a session's multiplexed links ([`super::mux`]) to those primaries.
//!
//! fred keeps the cluster's topology (it discovers it, follows MOVED/ASK and refreshes it on
//! reconnects); reading it per command would clone its whole routing table, so Pake copies
//! it into a [`SlotMap`]: a flat slot → node table, rebuilt off the request path (on a
//! timer, and after a redirection asked fred to resync) and given a new version only when
//! it changed. A session routes each command with two loads (the version, then the table)
//! and no lock.

use super::mux::Mux;
use crate::redis::l1::SLOTS;
use std::sync::Arc;

const NO_NODE: u16 = u16::MAX;

/// The primaries of a cluster and the slots each serves; `version` grows with each change.
pub struct SlotMap {
    pub version: u64,
    /// `host:port` of each primary, sorted.
    pub nodes: Vec<String>,
    /// Index into `nodes` per slot; [`NO_NODE`] for a slot nobody serves.
    owner: Vec<u16>,
}

impl SlotMap {
    pub fn empty() -> SlotMap {
        SlotMap {
            version: 0,
            nodes: Vec::new(),
            owner: vec![NO_NODE; SLOTS],
        }
    }

    /// The map of `primaries` (address and slot ranges), at `version`.
    pub fn new(version: u64, primaries: &[super::Primary]) -> SlotMap {
        let mut nodes: Vec<String> = primaries.iter().map(|p| p.addr.clone()).collect();
        nodes.sort();
        nodes.dedup();
        let mut owner = vec![NO_NODE; SLOTS];
        for p in primaries {
            let Ok(i) = nodes.binary_search(&p.addr) else {
                continue;
            };
            for &(a, b) in &p.slots {
                let (a, b) = (usize::from(a), usize::from(b).min(SLOTS - 1));
                if a <= b {
                    owner[a..=b].fill(i as u16);
                }
            }
        }
        SlotMap {
            version,
            nodes,
            owner,
        }
    }

    /// Same primaries serving the same slots (the version aside).
    pub fn same_as(&self, other: &SlotMap) -> bool {
        self.nodes == other.nodes && self.owner == other.owner
    }

    /// The index (into `nodes`) of the primary serving `slot`.
    pub fn node(&self, slot: u16) -> Option<usize> {
        match self.owner.get(usize::from(slot)) {
            Some(&i) if i != NO_NODE => Some(usize::from(i)),
            _ => None,
        }
    }
}

/// One session's view of the cluster: a slot map and this thread's link to each of its
/// primaries for the session's pool key. Built at bind and again when the map's version
/// moves (see `Session::take_requests` for why only between batches).
pub struct NodeLinks {
    map: Arc<SlotMap>,
    /// One per `map.nodes`, same order.
    links: Vec<Arc<Mux>>,
}

impl NodeLinks {
    pub fn new(map: Arc<SlotMap>, links: Vec<Arc<Mux>>) -> NodeLinks {
        NodeLinks { map, links }
    }

    pub fn version(&self) -> u64 {
        self.map.version
    }

    /// The link to the primary serving `slot`; any primary's for a keyless command. `None`
    /// when the map does not know the slot (fred then routes the command).
    pub fn for_slot(&self, slot: Option<u16>) -> Option<&Arc<Mux>> {
        match slot {
            Some(s) => self.links.get(self.map.node(s)?),
            None => self.links.first(),
        }
    }

    /// The link to the primary at `addr`, if the map knows it.
    pub fn by_addr(&self, addr: &str) -> Option<&Arc<Mux>> {
        let i = self
            .map
            .nodes
            .binary_search_by(|n| n.as_str().cmp(addr))
            .ok()?;
        self.links.get(i)
    }

    /// Every primary's link (a broadcast), in the order of [`SlotMap::nodes`].
    pub fn all(&self) -> &[Arc<Mux>] {
        &self.links
    }
}

#[cfg(test)]
mod tests {
    use super::super::Primary;
    use super::*;

    #[test]
    fn slots_map_to_their_primary_and_gaps_to_none() {
        let primaries = vec![
            Primary {
                addr: "b:2".into(),
                slots: vec![(5000, 10000)],
            },
            Primary {
                addr: "a:1".into(),
                slots: vec![(0, 4999), (10002, 16383)],
            },
        ];
        let map = SlotMap::new(3, &primaries);
        assert_eq!(map.nodes, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(map.node(0), Some(0));
        assert_eq!(map.node(4999), Some(0));
        assert_eq!(map.node(5000), Some(1));
        assert_eq!(map.node(10000), Some(1));
        assert_eq!(map.node(10001), None);
        assert_eq!(map.node(16383), Some(0));
        assert_eq!(map.node(20000), None);
        assert!(map.same_as(&SlotMap::new(4, &primaries)));
        assert!(!map.same_as(&SlotMap::empty()));
    }
}

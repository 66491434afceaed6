//! A (database, user)'s pools: one towards the primary and one per replica, with the
//! database's [`Topology`] that says which replica may take a read.

use super::pool::Pool;
use super::route::topology::ReplicaState;
use super::route::Topology;
use std::sync::Arc;

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    /// Index into [`Cluster::replicas`] and [`Topology::replicas`].
    Replica(usize),
}

pub struct Cluster {
    pub primary: Arc<Pool>,
    /// Aligned with `topology.replicas`.
    pub replicas: Vec<Arc<Pool>>,
    pub topology: Arc<Topology>,
    /// For an `auth_query` user: the server credentials every login refreshes.
    pub passthrough: Option<Arc<super::passthrough::Passthrough>>,
    /// The user was found with `auth_query` (it has no `[[users]]` entry).
    pub looked_up: bool,
}

impl Cluster {
    /// The pool for `target`. After a failover the primary is the promoted replica's pool:
    /// its servers left recovery and take writes.
    pub fn pool(&self, target: Target) -> &Arc<Pool> {
        match target {
            Target::Primary => self
                .topology
                .promoted()
                .and_then(|r| self.replicas.get(r.index))
                .unwrap_or(&self.primary),
            Target::Replica(i) => self.replicas.get(i).unwrap_or(&self.primary),
        }
    }

    pub fn replica_state(&self, target: Target) -> Option<&ReplicaState> {
        match target {
            Target::Primary => None,
            Target::Replica(i) => self.topology.replicas.get(i),
        }
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }
}

//! The Redis back end: `fred` pools for the shared path, and the topology Pake needs for
//! everything else (which primary serves a slot, for dedicated links and tracking).
//!
//! Under Sentinel ([`sentinel`]) the primary can move: Pake keeps its own "current primary",
//! which pools, dedicated links and tracking all follow. [`Backend::repoint`] rebuilds every
//! pool on the new primary and bumps a generation that sessions compare before each batch of
//! commands (and before trusting an L1 ticket), so none keeps talking to the old one.
//!
//! fred does slot-map discovery, MOVED/ASK redirection and reconnection; Pake copies its
//! slot map ([`slots`]) and sends a command whose slot the map knows on the thread's own
//! link to that primary ([`mux`]); what fred sends (a redirected command, a slot the map
//! lacks) carries the slot Pake computed from the command table (`ClusterHash::Custom`),
//! so fred never guesses where keys are. There is one pool per
//! (ACL user, database, protocol): a client's `AUTH` or `HELLO … AUTH` is forwarded by
//! logging a pool in as that user, so Redis itself accepts or refuses the credentials, and
//! RESP3 clients get replies from RESP3 connections (no lossy conversion).

pub mod link;
pub mod mux;
pub mod sentinel;
pub mod slots;

use super::config::RedisConfig;
use super::error::Error;
use super::l1::ALL_SLOTS;
use super::resp::encode::Proto;
use fred::clients::Pool;
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface};
use fred::types::config::{Config as FredConfig, ReconnectPolicy, ServerConfig};
use fred::types::{Builder, RespVersion};
use link::{Link, Target};
use parking_lot::RwLock;
use sentinel::Sentinels;
use slots::{NodeLinks, SlotMap};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the slot map is copied again from fred's cached cluster state (no network).
const SLOT_CHECK_EVERY: Duration = Duration::from_millis(500);
/// At most one slot-map resync (`CLUSTER SLOTS` through fred) per this long, however many
/// redirections ask for one.
const RESYNC_AT_MOST_EVERY: Duration = Duration::from_millis(100);

/// Which pool serves a client: its ACL identity, database and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// `(user, password)` after AUTH; `None` uses the URL's credentials.
    pub auth: Option<(String, String)>,
    pub db: u8,
    pub proto: Proto,
}

/// A primary and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub addr: String,
    pub slots: Vec<(u16, u16)>,
}

pub struct Backend {
    base: FredConfig,
    pub cluster: bool,
    /// `redis_version` of the seed node, reported in HELLO.
    pub version: String,
    pool_size: usize,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// The node Pake addresses: the standalone server, the current primary under Sentinel,
    /// or the seed of a cluster.
    seed: RwLock<String>,
    /// TLS to every Redis node (`rediss://`): pools, dedicated links, tracking.
    tls: Option<tokio_rustls::TlsConnector>,
    /// The sentinels, when the primary is found through them.
    pub sentinels: Option<Sentinels>,
    /// A primary switch is under way: no primary is reported, so no tracking stream arms.
    switching: AtomicBool,
    /// Bumped when pools are rebuilt (a new primary, a new replica set): sessions holding a
    /// client from an older generation rebind, and do not fill the L1 meanwhile.
    generation: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Set by whoever sees a sign the primary moved (READONLY, a lost connection): the
    /// Sentinel follower asks the sentinels at once instead of at its next tick.
    suspect: tokio::sync::Notify,
    pools: RwLock<HashMap<PoolKey, Arc<Pool>>>,
    /// Replicas reads may go to (`read_from_replicas`), as the sentinels last listed them.
    replicas: RwLock<Vec<String>>,
    replica_pools: RwLock<HashMap<(PoolKey, String), Arc<Pool>>>,
    /// Serialises pool creation so concurrent logins of one user build one pool.
    creating: tokio::sync::Mutex<()>,
    /// Pake's own multiplexed links ([`mux`]), one per thread, node and pool key.
    links: parking_lot::Mutex<HashMap<LinkKey, Arc<mux::Mux>>>,
    /// A cluster's slot → primary table, copied from fred's ([`slots`]); empty otherwise.
    slot_map: RwLock<Arc<SlotMap>>,
    /// `slot_map`'s version, read per command by sessions to see that it moved.
    slot_version: AtomicU64,
    /// Asks the slot follower to resync fred's map now (a link met MOVED, ASK…).
    resync: Arc<tokio::sync::Notify>,
}

type LinkKey = (std::thread::ThreadId, String, PoolKey);

pub(crate) fn server_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Backend {
    /// Parse the URL, find out (or take) whether it is a cluster, and connect the default
    /// pool. Fails when Redis cannot be reached: Pake then refuses to start.
    pub async fn connect(cfg: &RedisConfig) -> Result<Arc<Backend>, Error> {
        let (mut base, _) = cfg
            .fred_config()
            .map_err(|e| Error::Backend(format!("invalid Redis URL: {e}")))?;
        let tls = upstream_tls(cfg)?;
        let sentinels = Sentinels::from_config(cfg);
        let mut replicas = Vec::new();
        let seed = match (&sentinels, &base.server) {
            (Some(s), _) => {
                let found = s.resolve().await?;
                tracing::info!(master = %s.master(), primary = %found.primary, epoch = found.epoch, replicas = ?found.replicas, "primary found through Sentinel");
                if cfg.read_from_replicas {
                    replicas = found.replicas;
                }
                found.primary
            }
            (None, ServerConfig::Centralized { server }) => server_addr(&server.host, server.port),
            (None, ServerConfig::Clustered { hosts, .. }) => hosts
                .first()
                .map(|s| server_addr(&s.host, s.port))
                .ok_or_else(|| Error::Backend("the URL names no host".into()))?,
            _ => return Err(Error::Backend("only redis:// URLs are supported".into())),
        };
        let connect_timeout = cfg.connect_timeout.0;
        let (detected, version) = probe(&seed, &base, tls.clone(), connect_timeout).await?;
        if sentinels.is_some() && detected {
            return Err(Error::Backend(format!(
                "the sentinels name {seed} as primary, but it is a Redis Cluster node"
            )));
        }
        let cluster = cfg.cluster.unwrap_or(detected);
        if cluster {
            if let ServerConfig::Centralized { server } = &base.server {
                base.server =
                    ServerConfig::new_clustered(vec![(server.host.to_string(), server.port)]);
            }
        }
        let backend = Arc::new(Backend {
            base,
            cluster,
            version,
            pool_size: cfg.pool_size,
            connect_timeout,
            command_timeout: cfg.command_timeout.0,
            seed: RwLock::new(seed),
            tls,
            sentinels,
            switching: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            changed: tokio::sync::watch::channel(0).0,
            suspect: tokio::sync::Notify::new(),
            pools: RwLock::new(HashMap::new()),
            replicas: RwLock::new(replicas),
            replica_pools: RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            links: parking_lot::Mutex::new(HashMap::new()),
            slot_map: RwLock::new(Arc::new(SlotMap::empty())),
            slot_version: AtomicU64::new(0),
            resync: Arc::new(tokio::sync::Notify::new()),
        });
        backend.pool(&backend.default_key(Proto::Resp2)).await?;
        if cluster {
            backend.copy_slot_map();
            tokio::spawn(follow_slots(
                Arc::downgrade(&backend),
                backend.resync.clone(),
            ));
        }
        Ok(backend)
    }

    pub fn default_db(&self) -> u8 {
        self.base.database.unwrap_or(0)
    }

    pub fn default_key(&self, proto: Proto) -> PoolKey {
        PoolKey {
            auth: None,
            db: self.default_db(),
            proto,
        }
    }

    /// The pool for `key`, created and logged in on first use. A login Redis refuses is
    /// returned as its error (WRONGPASS…), and no pool is kept.
    pub async fn pool(self: &Arc<Self>, key: &PoolKey) -> Result<Arc<Pool>, Error> {
        if let Some(p) = self.pools.read().get(key) {
            return Ok(p.clone());
        }
        let _guard = self.creating.lock().await;
        if let Some(p) = self.pools.read().get(key) {
            return Ok(p.clone());
        }
        let pool = self.connect_pool(key, None).await?;
        self.pools.write().insert(key.clone(), pool.clone());
        if key.auth.is_some() {
            self.retire_when_refused(key, &pool);
        }
        Ok(pool)
    }

    /// A client's own user (AUTH/HELLO) whose login Redis refuses on a reconnect (the user
    /// deleted, its password changed): the pool is dropped and closed rather than left
    /// retrying a failed AUTH every two seconds per connection for as long as Pake runs; the
    /// next session of that user builds it again (and gets Redis's refusal while it stands).
    fn retire_when_refused(self: &Arc<Self>, key: &PoolKey, pool: &Arc<Pool>) {
        for client in pool.clients() {
            let (backend, key, weak) = (Arc::downgrade(self), key.clone(), Arc::downgrade(pool));
            client.on_error(move |(e, _)| {
                let (backend, key, weak) = (backend.clone(), key.clone(), weak.clone());
                async move {
                    if *e.kind() != fred::error::ErrorKind::Auth {
                        return Ok(());
                    }
                    let (Some(backend), Some(pool)) = (backend.upgrade(), weak.upgrade()) else {
                        return Err(e); // gone: the listener ends
                    };
                    let mut pools = backend.pools.write();
                    if pools.get(&key).is_some_and(|p| Arc::ptr_eq(p, &pool)) {
                        tracing::info!(error = %e, "Redis refused a user's login: its pool is closed");
                        pools.remove(&key);
                        drop(pools);
                        retire(vec![pool], Duration::ZERO);
                    }
                    Err(e) // the listener ends with the pool
                }
            });
        }
    }

    /// Build and connect a pool for `key`: to `node` (a replica), or to the seed/primary.
    async fn connect_pool(&self, key: &PoolKey, node: Option<&str>) -> Result<Arc<Pool>, Error> {
        let addr = node.map_or_else(|| self.seed(), str::to_string);
        let pool = Arc::new(self.build_pool(key, &addr)?);
        for client in pool.clients() {
            let init = tokio::time::timeout(self.connect_timeout, client.init()).await;
            let failure = match init {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(Error::Backend(e.details().to_string())),
                Err(_) => Some(Error::Backend(format!("connecting to {addr} timed out"))),
            };
            if let Some(e) = failure {
                let _ = pool.quit().await;
                return Err(e);
            }
        }
        Ok(pool)
    }

    fn build_pool(&self, key: &PoolKey, addr: &str) -> Result<Pool, Error> {
        let mut config = self.base.clone();
        if !self.cluster {
            // the standalone server, or whichever node the sentinels name now
            let (host, port) = super::config::split_host_port(addr)
                .ok_or_else(|| Error::Backend(format!("bad node address {addr}")))?;
            config.server = ServerConfig::new_centralized(host, port);
        }
        if let Some((user, pass)) = &key.auth {
            config.username = Some(user.clone());
            config.password = Some(pass.clone());
        }
        config.database = (key.db != 0).then_some(key.db);
        config.version = match key.proto {
            Proto::Resp2 => RespVersion::RESP2,
            Proto::Resp3 => RespVersion::RESP3,
        };
        config.fail_fast = true;
        config.tls = self.tls.clone().map(Into::into);
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        Builder::from_config(config)
            .with_performance_config(|p| {
                p.default_command_timeout = command_timeout;
            })
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                c.max_command_attempts = 3;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .build_pool(self.pool_size)
            .map_err(|e| Error::Backend(e.details().to_string()))
    }

    /// The primaries and their slots, as fred last saw them (the seed alone, with every
    /// slot, for a standalone server).
    pub fn primaries(&self) -> Vec<Primary> {
        if !self.cluster {
            if self.switching.load(SeqCst) {
                return Vec::new();
            }
            return vec![Primary {
                addr: self.seed(),
                slots: ALL_SLOTS.to_vec(),
            }];
        }
        let Some(pool) = self
            .pools
            .read()
            .get(&self.default_key(Proto::Resp2))
            .cloned()
        else {
            return Vec::new();
        };
        let Some(state) = pool
            .clients()
            .first()
            .and_then(|c| c.cached_cluster_state())
        else {
            return Vec::new();
        };
        let mut by_node: HashMap<String, Vec<(u16, u16)>> = HashMap::new();
        for range in state.slots() {
            let addr = server_addr(&range.primary.host, range.primary.port);
            by_node
                .entry(addr)
                .or_default()
                .push((range.start, range.end));
        }
        let mut out: Vec<Primary> = by_node
            .into_iter()
            .map(|(addr, mut slots)| {
                slots.sort_unstable();
                Primary { addr, slots }
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }

    /// The primary serving `slot` (any primary when `slot` is `None`).
    pub fn node_for(&self, slot: Option<u16>) -> Option<String> {
        if !self.cluster {
            // also mid-switch: dedicated links go to the new primary at once
            return Some(self.seed());
        }
        let primaries = self.primaries();
        match slot {
            None => primaries.into_iter().next().map(|p| p.addr),
            Some(s) => primaries
                .into_iter()
                .find(|p| p.slots.iter().any(|&(a, b)| (a..=b).contains(&s)))
                .map(|p| p.addr),
        }
    }

    /// The URL carries a password (Pake logs in to Redis with it).
    pub fn has_password(&self) -> bool {
        self.base.password.is_some()
    }

    /// Connection details for a dedicated link to `addr` as the pool `key` logs in.
    pub fn target(&self, addr: String, key: &PoolKey) -> Target {
        let (username, password) = match &key.auth {
            Some((u, p)) => (Some(u.clone()), Some(p.clone())),
            None => (self.base.username.clone(), self.base.password.clone()),
        };
        Target {
            addr,
            username,
            password,
            db: key.db,
            proto: key.proto,
            connect_timeout: self.connect_timeout,
            tls: self.tls.clone(),
        }
    }

    /// Ask Redis for the cluster's primaries (used when fred has not learnt them yet).
    pub async fn refresh(&self) {
        let pool = self
            .pools
            .read()
            .get(&self.default_key(Proto::Resp2))
            .cloned();
        if let Some(pool) = pool {
            if let Some(c) = pool.clients().first() {
                let _ = c.sync_cluster().await;
            }
        }
    }

    /// Close every pool.
    pub async fn close(&self) {
        self.links.lock().clear();
        let mut pools: Vec<Arc<Pool>> = self.pools.write().drain().map(|(_, p)| p).collect();
        pools.extend(self.replica_pools.write().drain().map(|(_, p)| p));
        for p in pools {
            let _ = p.quit().await;
        }
    }

    /// The standalone server or current primary (`host:port`); a cluster's seed node.
    pub fn seed(&self) -> String {
        self.seed.read().clone()
    }

    /// Which pools sessions should be using (see [`Backend::repoint`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Notified with the new generation whenever pools are rebuilt.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A sign the primary may have moved (READONLY, a lost connection): ask the sentinels now.
    pub fn suspect_primary(&self) {
        if self.sentinels.is_some() {
            self.suspect.notify_one();
        }
    }

    /// Wait for [`Backend::suspect_primary`].
    pub async fn suspected(&self) {
        self.suspect.notified().await
    }

    /// Step 1 of a primary switch: report no primary, so tracking stops the old stream (and
    /// flushes what it covered) and arms nothing until [`Backend::repoint`] is done.
    pub fn begin_switch(&self) {
        self.switching.store(true, SeqCst);
    }

    /// Step 2 of a primary switch: rebuild every pool on `primary` (and drop the replica
    /// pools, which sessions reopen on `replicas`), then bump the generation so sessions
    /// rebind. Pools that cannot connect now are left out; sessions build them on demand.
    /// The old pools are closed once their in-flight commands had a chance to finish.
    pub async fn repoint(&self, primary: &str, replicas: Vec<String>) {
        let _guard = self.creating.lock().await;
        *self.seed.write() = primary.to_string();
        let keys: Vec<PoolKey> = self.pools.read().keys().cloned().collect();
        let mut fresh = HashMap::new();
        for key in keys {
            match self.connect_pool(&key, None).await {
                Ok(p) => {
                    fresh.insert(key, p);
                }
                Err(e) => {
                    tracing::warn!(%primary, error = %e, "cannot connect a pool to the new primary yet")
                }
            }
        }
        let mut old: Vec<Arc<Pool>> = std::mem::replace(&mut *self.pools.write(), fresh)
            .into_values()
            .collect();
        old.extend(self.replica_pools.write().drain().map(|(_, p)| p));
        *self.replicas.write() = replicas;
        self.bump();
        self.switching.store(false, SeqCst);
        retire(old, self.command_timeout);
    }

    /// The replica set changed (read_from_replicas): drop the replica pools; sessions rebind.
    pub fn set_replicas(&self, replicas: Vec<String>) {
        if *self.replicas.read() == replicas {
            return;
        }
        *self.replicas.write() = replicas;
        let old: Vec<Arc<Pool>> = self.replica_pools.write().drain().map(|(_, p)| p).collect();
        self.bump();
        retire(old, self.command_timeout);
    }

    pub fn replicas(&self) -> Vec<String> {
        self.replicas.read().clone()
    }

    fn bump(&self) {
        let g = self.generation.fetch_add(1, SeqCst) + 1;
        self.changed.send_replace(g);
    }

    /// A client of a replica pool for `key` (the `pick`-th replica, round the list), built on
    /// first use; `None` when there is no replica or it cannot be reached.
    pub async fn replica_client(
        &self,
        key: &PoolKey,
        pick: usize,
    ) -> Option<fred::clients::Client> {
        let replicas = self.replicas();
        let addr = replicas.get(pick % replicas.len().max(1))?.clone();
        let slot = (key.clone(), addr.clone());
        let cached = self.replica_pools.read().get(&slot).cloned();
        let pool = match cached {
            Some(p) => p,
            None => {
                let _guard = self.creating.lock().await;
                let again = self.replica_pools.read().get(&slot).cloned();
                match again {
                    Some(p) => p,
                    None => match self.connect_pool(key, Some(&addr)).await {
                        Ok(p) => {
                            self.replica_pools.write().insert(slot, p.clone());
                            p
                        }
                        Err(e) => {
                            tracing::debug!(replica = %addr, error = %e, "replica unreachable: reads stay on the primary");
                            return None;
                        }
                    },
                }
            }
        };
        let clients = pool.clients();
        clients.get(pick % clients.len().max(1)).cloned()
    }

    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// The multiplexed link of this thread to the standalone server (or current primary)
    /// for `key`, started on first use; `None` for a cluster (see [`Backend::node_links`]).
    /// Links no session holds that have been idle a while are closed here.
    pub fn mux(&self, key: &PoolKey) -> Option<Arc<mux::Mux>> {
        if self.cluster {
            return None;
        }
        let addr = self.seed();
        let mut links = self.links.lock();
        // unheld links go when idle, or at once when they point at a server that is no
        // longer the primary (their server may be gone: they would retry for ever)
        sweep(&mut links, |at| at == addr);
        Some(self.link_in(&mut links, &addr, key))
    }

    /// This thread's links to every primary of the cluster for `key`, with the slot map
    /// they follow (started on first use). Unheld links to nodes that left the map, or idle
    /// a while, are closed here. With no map yet, no links: fred routes everything.
    pub fn node_links(&self, key: &PoolKey) -> Arc<NodeLinks> {
        let map = self.slot_map.read().clone();
        let mut links = self.links.lock();
        sweep(&mut links, |at| map.nodes.iter().any(|n| n == at));
        let per_node = map
            .nodes
            .iter()
            .map(|addr| self.link_in(&mut links, addr, key))
            .collect();
        Arc::new(NodeLinks::new(map, per_node))
    }

    /// The version of the cluster's slot map; it moves whenever the map changes.
    pub fn slot_version(&self) -> u64 {
        self.slot_version.load(SeqCst)
    }

    /// A link met a redirection or a cluster error: have fred resync its slot map soon (at
    /// most once per [`RESYNC_AT_MOST_EVERY`]), and copy it again.
    pub fn resync_soon(&self) {
        if self.cluster {
            self.resync.notify_one();
        }
    }

    /// Copy fred's cached cluster state into the slot map; a new version only if it changed.
    fn copy_slot_map(&self) {
        let primaries = self.primaries();
        if primaries.is_empty() {
            // fred knows nothing now (reconnecting): keep routing by the last map, its
            // redirections are followed through fred
            return;
        }
        let current = self.slot_map.read().clone();
        let fresh = SlotMap::new(current.version + 1, &primaries);
        if fresh.same_as(&current) {
            return;
        }
        tracing::debug!(version = fresh.version, nodes = ?fresh.nodes, "cluster slot map changed");
        let version = fresh.version;
        *self.slot_map.write() = Arc::new(fresh);
        self.slot_version.store(version, SeqCst);
    }

    /// The link of this thread to `addr` for `key` in `links`, started on first use.
    fn link_in(
        &self,
        links: &mut HashMap<LinkKey, Arc<mux::Mux>>,
        addr: &str,
        key: &PoolKey,
    ) -> Arc<mux::Mux> {
        let id = (std::thread::current().id(), addr.to_string(), key.clone());
        links
            .entry(id)
            .or_insert_with_key(|(_, addr, key)| {
                mux::Mux::spawn(self.target(addr.clone(), key), self.command_timeout)
            })
            .clone()
    }
}

/// Close the links no session holds that are idle, or point at a node `live` rejects.
fn sweep(links: &mut HashMap<LinkKey, Arc<mux::Mux>>, live: impl Fn(&str) -> bool) {
    links.retain(|(_, at, _), l| Arc::strong_count(l) > 1 || (!l.idle() && live(at)));
}

/// Keep a cluster's slot map in step with fred's: copy it every [`SLOT_CHECK_EVERY`]
/// (fred refreshes it on its own redirections and reconnects), and when a link asks
/// ([`Backend::resync_soon`]) have fred resync first, then rest [`RESYNC_AT_MOST_EVERY`]
/// (a request meanwhile is kept by the `Notify` and served after the rest: the last
/// redirection is never left without a resync). Ends with the backend.
async fn follow_slots(backend: Weak<Backend>, resync: Arc<tokio::sync::Notify>) {
    loop {
        let asked = tokio::time::timeout(SLOT_CHECK_EVERY, resync.notified())
            .await
            .is_ok();
        let Some(b) = backend.upgrade() else {
            return;
        };
        if asked {
            let _ = tokio::time::timeout(b.connect_timeout, b.refresh()).await;
        }
        b.copy_slot_map();
        drop(b);
        if asked {
            tokio::time::sleep(RESYNC_AT_MOST_EVERY).await;
        }
    }
}

/// Close pools that were replaced, after `grace` (their in-flight commands finish first).
fn retire(pools: Vec<Arc<Pool>>, grace: Duration) {
    if pools.is_empty() {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(grace.min(Duration::from_secs(5))).await;
        for p in pools {
            let _ = tokio::time::timeout(Duration::from_secs(1), p.quit()).await;
        }
    });
}

/// The TLS connector for a `rediss://` URL ([`RedisConfig::server_tls_connector`]).
fn upstream_tls(cfg: &RedisConfig) -> Result<Option<tokio_rustls::TlsConnector>, Error> {
    if !cfg.upstream_tls() {
        return Ok(None);
    }
    cfg.server_tls_connector()
        .map(Some)
        .map_err(|e| Error::Backend(format!("TLS to Redis (redis.server_tls_ca_file): {e}")))
}

/// Ask the seed whether it is a cluster node, and its version.
async fn probe(
    seed: &str,
    base: &FredConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Result<(bool, String), Error> {
    let target = Target {
        addr: seed.to_string(),
        username: base.username.clone(),
        password: base.password.clone(),
        db: 0,
        proto: Proto::Resp2,
        connect_timeout: timeout,
        tls,
    };
    let mut link = Link::connect(&target).await.map_err(|e| match e {
        // reached, but not trusted: the hint below would mislead
        Error::UpstreamTls(_) => e,
        e => Error::Backend(format!(
            "cannot reach Redis to tell standalone from cluster ({e}); pass --redis-cluster or fix the URL"
        )),
    })?;
    let info = link.call_ok(&[b"INFO"]).await.map_err(|e| match e {
        Error::LinkLost(m) => Error::Backend(format!(
            "{seed} hung up at the first command ({m}); if it serves TLS only, use a rediss:// url"
        )),
        e => e,
    })?;
    let info = String::from_utf8_lossy(&info);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let cluster = field("cluster_enabled:").as_deref() == Some("1");
    let version = field("redis_version:").unwrap_or_else(|| "unknown".into());
    Ok((cluster, version))
}

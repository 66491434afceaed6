//! The `[redis]` section: where Redis clients connect, which Redis (standalone, cluster, or
//! a primary found through Sentinel) Pake fronts, the client-facing limits and the L1 cache. Typed, `deny_unknown_fields`,
//! validated by [`RedisConfig::validate`] with errors that name the key.

use crate::config::{Bytes, ConfigError, Dur};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::tls::ClientTlsMode;

/// How invalidations reach Pake from each primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrackingProtocol {
    /// `HELLO 3` + `CLIENT TRACKING ON BCAST`: invalidations arrive as push messages on the
    /// tracking connection itself.
    #[default]
    Resp3,
    /// RESP2: one connection subscribes to `__redis__:invalidate`, a second one turns
    /// tracking on with `REDIRECT` to it (for servers or setups that avoid RESP3).
    Resp2,
}

/// How the certificate of a `rediss://` upstream is checked. Both modes verify the chain
/// against `server_tls_ca_file`: Pake never talks to an unauthenticated Redis over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTlsVerify {
    /// Chain, and the host name (or IP) Pake connects to (libpq's `verify-full`).
    #[default]
    VerifyFull,
    /// Chain only: any name signed by the CA is accepted (libpq's `verify-ca`), for nodes
    /// reached by addresses their certificates do not name.
    VerifyCa,
}

/// The Redis proxy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Where Redis clients connect.
    pub listen: SocketAddr,
    /// The Redis to front: `redis://[user:password@]host:port[/db]`. For a cluster, any
    /// node (the others are discovered). `rediss://` speaks TLS to every Redis node: the
    /// shared pools, dedicated links and tracking connections alike.
    pub url: String,
    /// Must a client log in (`AUTH`, `HELLO … AUTH`, judged by Redis) before its commands
    /// run? Absent: yes when the URL carries a password, as Redis asks it of a client when
    /// its default user has one; until then every command but AUTH, HELLO … AUTH, RESET and
    /// QUIT gets Redis's `-NOAUTH` reply. `false` lets a client that never logs in act as
    /// the URL's user (with Pake's credentials and their rights); `true` asks a login even
    /// in front of a Redis without a password (of its ACL users).
    pub require_client_auth: Option<bool>,
    /// TLS for Redis clients, named as `[tls] client_tls_sslmode` is: `disable`;
    /// `allow`/`prefer` (TLS and plaintext clients on the same port, told apart by their
    /// first byte: a TLS handshake starts with 0x16, a RESP command never does); `require`
    /// (TLS only, as redis-server's `tls-port`: a plaintext client gets one `-ERR` saying
    /// so, and is disconnected).
    pub client_tls_sslmode: ClientTlsMode,
    /// PEM certificate chain the Redis listener presents.
    pub client_tls_cert_file: Option<PathBuf>,
    /// PEM private key for `client_tls_cert_file`.
    pub client_tls_key_file: Option<PathBuf>,
    /// How a `rediss://` upstream's certificate is checked: `verify-full` (default) or
    /// `verify-ca`.
    pub server_tls_sslmode: ServerTlsVerify,
    /// PEM CA bundle a `rediss://` upstream's certificate must chain to (the system's is
    /// `/etc/ssl/certs/ca-certificates.crt` on Debian). Required with `rediss://`.
    pub server_tls_ca_file: Option<PathBuf>,
    /// `true`: a Redis Cluster; `false`: standalone; absent: ask the server (`INFO cluster`).
    pub cluster: Option<bool>,
    /// Sentinels to find the primary through (`"host:port"`). Non-empty turns Sentinel mode
    /// on: the primary is whatever the sentinels name for `sentinel_master`, and Pake follows
    /// a failover (`+switch-master`) without a restart. The URL's host and port are then not
    /// used, only its user, password and database.
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME …`).
    pub sentinel_master: Option<String>,
    /// User to log in to the sentinels as, when they require one (Sentinel's own ACL).
    pub sentinel_username: Option<String>,
    /// Password for the sentinels (their `requirepass`), when they require one; the data
    /// nodes use the URL's credentials.
    pub sentinel_password: Option<String>,
    /// How often the sentinels are asked for the primary besides listening for their
    /// `+switch-master` events: the most a missed event delays following a failover.
    pub sentinel_check_interval: Dur,
    /// With sentinels: read-only commands that do not fill the L1 go to a replica the
    /// sentinels report healthy (the primary when there is none). Cacheable reads keep
    /// filling the L1 from the primary, whose invalidation stream keeps it coherent. Replica
    /// reads may miss recent writes, a client's own included (replication lag).
    pub read_from_replicas: bool,
    /// Reactor threads for Redis clients, each a single-threaded runtime with its own
    /// SO_REUSEPORT listener, so a session's reads, L1 hits and writes never wake another
    /// thread (measured: ~10% less CPU per hit than sharing the main runtime). Defaults to
    /// one per CPU; 0 serves Redis clients on the main runtime's workers instead (tests).
    pub threads: usize,
    /// fred clients per (user, database, protocol) pool; each client has one connection per
    /// node and pipelines the commands of the sessions assigned to it.
    pub pool_size: usize,
    /// Connecting to Redis (shared pools, dedicated links, tracking connections).
    pub connect_timeout: Dur,
    /// A command on the shared path without an answer after this long fails with `-ERR`
    /// (blocking commands run on dedicated links and have no such limit).
    pub command_timeout: Dur,
    /// Largest bulk string a client may send; larger declared lengths close the connection
    /// before any memory is reserved (Redis: proto-max-bulk-len).
    pub max_bulk_len: Bytes,
    /// Deepest array nesting accepted from a client.
    pub max_nesting: usize,
    /// Bytes one client may have read and not yet dispatched: a command still arriving, or
    /// a pipeline waiting while the client does not read its replies. Past it the client
    /// gets `-ERR` and is disconnected (the rest of its command cannot be skipped safely).
    /// At least `max_bulk_len`.
    pub client_max_request_bytes: Bytes,
    /// Bytes of replies one client may have waiting: finished replies its slow reader has
    /// not taken yet, and the parts of a fan-out (a cluster MGET/MSET/DEL split) being
    /// merged. A reply that would pass it is replaced by `-ERR`; the connection stays usable.
    pub client_max_reply_bytes: Bytes,
    /// Bytes all Redis clients together may hold for requests and replies, beyond the
    /// first 16KiB of each (an ordinary client is never charged). Past it the client whose
    /// request or reply would cross it gets `-ERR`; everyone else is unaffected.
    pub clients_max_memory: Bytes,
    /// Commands per second one client address may send, all its connections together
    /// (a token bucket, as `general.rate_limit_per_address` on the Postgres side); past it
    /// a command gets `-ERR` and the connection stays. 0: no limit.
    pub rate_limit_per_address: f64,
    /// Bursts allowed above `rate_limit_per_address`, as seconds' worth of commands.
    pub rate_limit_burst: Dur,
    /// Consecutive commands that fail for want of Redis (unreachable, timed out, link
    /// lost) that open the circuit breaker: commands then fail at once with `-ERR` instead
    /// of each waiting for `command_timeout`, and one probe command is let through after a
    /// wait that starts at 100ms and doubles up to `circuit_breaker_cooldown` (the Postgres
    /// side's schedule). 0 turns the breaker off.
    pub circuit_breaker_failures: u32,
    /// The longest an open breaker fails fast before a probe.
    pub circuit_breaker_cooldown: Dur,
    /// Most client connections at once on the Redis listener.
    pub max_clients: usize,
    /// Writes at once held by a `CLIENT PAUSE … WRITE` sent through Pake, each on its
    /// client's own connection so the shared links keep flowing; past it a write gets
    /// `-ERR` (the client may send it again once unpaused).
    pub max_held_writes: usize,
    /// Serve hot reads from the in-process L1 cache, kept coherent with CLIENT TRACKING.
    pub l1: bool,
    /// L1 size bound, counting keys, arguments and encoded replies.
    pub l1_max_bytes: Bytes,
    /// Replies larger than this are never cached.
    pub l1_max_entry_size: Bytes,
    /// Longest an entry stays cached, whatever the key's own TTL (which is also honoured).
    pub l1_max_ttl: Dur,
    /// Look a read up in the L1 also while an earlier command of the same client is still
    /// in flight (a pipeline with a miss or a write ahead of it). Off, such a read is
    /// forwarded with the rest of the batch: its reply waits behind the earlier one
    /// anyway, so a hit saves no round trip there, only Redis work, and a lookup costs
    /// Pake more CPU than forwarding the read in the batch.
    pub l1_behind_inflight: bool,
    /// How invalidations are delivered (see [`TrackingProtocol`]).
    pub tracking_protocol: TrackingProtocol,
    /// How often each tracking connection is pinged to measure invalidation lag.
    pub tracking_heartbeat: Dur,
    /// Invalidations later than this (ping round trip on the tracking connection) make the
    /// node's entries untrusted: they are flushed and caching pauses until the lag is back.
    pub tracking_max_lag: Dur,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6380)),
            url: "redis://127.0.0.1:6379".into(),
            require_client_auth: None,
            client_tls_sslmode: ClientTlsMode::Disable,
            client_tls_cert_file: None,
            client_tls_key_file: None,
            server_tls_sslmode: ServerTlsVerify::VerifyFull,
            server_tls_ca_file: None,
            cluster: None,
            sentinels: Vec::new(),
            sentinel_master: None,
            sentinel_username: None,
            sentinel_password: None,
            sentinel_check_interval: Dur::secs(1),
            read_from_replicas: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pool_size: 4,
            connect_timeout: Dur::secs(5),
            command_timeout: Dur::secs(30),
            max_bulk_len: Bytes(32 << 20),
            max_nesting: 8,
            client_max_request_bytes: Bytes(64 << 20),
            client_max_reply_bytes: Bytes(64 << 20),
            clients_max_memory: Bytes(256 << 20),
            rate_limit_per_address: 0.0,
            rate_limit_burst: Dur::secs(1),
            circuit_breaker_failures: 5,
            circuit_breaker_cooldown: Dur::secs(5),
            max_clients: 10_000,
            max_held_writes: 1_000,
            l1: true,
            l1_max_bytes: Bytes(64 << 20),
            l1_max_entry_size: Bytes(256 << 10),
            l1_max_ttl: Dur::secs(300),
            l1_behind_inflight: false,
            tracking_protocol: TrackingProtocol::Resp3,
            tracking_heartbeat: Dur::millis(500),
            tracking_max_lag: Dur::secs(2),
        }
    }
}

impl RedisConfig {
    /// Problems with this section, each naming its key (`redis.pool_size`).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut bad = |key: &str, reason: &str| {
            errs.push(ConfigError {
                key: format!("redis.{key}"),
                reason: reason.into(),
            })
        };
        if let Err(e) = self.fred_config() {
            bad("url", &format!("not a Redis URL: {e}"));
        }
        self.validate_sentinel(&mut bad);
        self.validate_tls(&mut bad);
        if self.pool_size == 0 {
            bad("pool_size", "must be at least 1");
        }
        if self.connect_timeout.enabled().is_none() {
            bad("connect_timeout", "must be more than 0");
        }
        if self.max_bulk_len.0 < 1024 {
            bad(
                "max_bulk_len",
                "must be at least 1KiB: clients could not send ordinary values",
            );
        }
        self.validate_budget(&mut bad);
        if !self.rate_limit_per_address.is_finite() || self.rate_limit_per_address < 0.0 {
            bad(
                "rate_limit_per_address",
                "must be 0 (off) or a positive number",
            );
        }
        if self.rate_limit_per_address > 0.0 && self.rate_limit_burst.enabled().is_none() {
            bad("rate_limit_burst", "must be more than 0 with a rate limit");
        }
        if self.circuit_breaker_failures > 0 && self.circuit_breaker_cooldown.enabled().is_none() {
            bad(
                "circuit_breaker_cooldown",
                "must be more than 0 with the breaker on",
            );
        }
        if self.max_nesting == 0 {
            bad("max_nesting", "must be at least 1 (commands are arrays)");
        }
        if self.max_clients == 0 {
            bad("max_clients", "must be at least 1");
        }
        if self.max_held_writes == 0 {
            bad("max_held_writes", "must be at least 1");
        }
        if self.l1 && self.l1_max_entry_size.0 > self.l1_max_bytes.0 {
            bad("l1_max_entry_size", "must not be larger than l1_max_bytes");
        }
        if self.l1 && self.l1_max_ttl.enabled().is_none() {
            bad("l1_max_ttl", "must be more than 0 when l1 is on");
        }
        if self.tracking_heartbeat.enabled().is_none() {
            bad("tracking_heartbeat", "must be more than 0");
        }
        if self.tracking_max_lag.0 <= self.tracking_heartbeat.0 {
            bad("tracking_max_lag", "must be longer than tracking_heartbeat");
        }
        errs
    }

    /// fred's view of the URL, and whether it is `rediss://`. fred is handed the `redis://`
    /// form: Pake gives its pools its own TLS connector (CA file, verify mode), and fred
    /// would otherwise load the system's certificate store for every parse.
    pub fn fred_config(&self) -> Result<(fred::types::config::Config, bool), String> {
        let (url, tls) = match self.url.strip_prefix("rediss://") {
            Some(rest) => (format!("redis://{rest}"), true),
            None => (self.url.clone(), false),
        };
        fred::types::config::Config::from_url(&url)
            .map(|c| (c, tls))
            .map_err(|e| e.details().to_string())
    }

    /// The URL asks for TLS to Redis.
    pub fn upstream_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// The TLS connector for `rediss://` nodes: the Postgres side's rustls set-up, always
    /// verifying against `server_tls_ca_file` (`verify-full` also checks the node's name).
    /// Built whatever the URL's scheme: the health check also probes `--redis` URLs.
    pub fn server_tls_connector(&self) -> Result<tokio_rustls::TlsConnector, crate::tls::TlsError> {
        use crate::tls::{connector, ServerTlsMode, TlsConfig, TlsError};
        let missing = || {
            TlsError::Verifier("redis.server_tls_ca_file is not set: it names the CA the Redis certificates chain to".into())
        };
        if self.server_tls_ca_file.is_none() {
            return Err(missing());
        }
        let mode = match self.server_tls_sslmode {
            ServerTlsVerify::VerifyFull => ServerTlsMode::VerifyFull,
            ServerTlsVerify::VerifyCa => ServerTlsMode::VerifyCa,
        };
        connector(&TlsConfig {
            server_tls_sslmode: mode,
            server_tls_ca_file: self.server_tls_ca_file.clone(),
            ..TlsConfig::default()
        })?
        .ok_or_else(missing)
    }

    fn validate_tls(&self, bad: &mut impl FnMut(&str, &str)) {
        let file =
            |bad: &mut dyn FnMut(&str, &str), key: &str, path: &Option<PathBuf>, why| match path {
                None => bad(key, why),
                Some(p) if !p.is_file() => bad(
                    key,
                    &format!("{} does not exist (or is not a file)", p.display()),
                ),
                Some(_) => {}
            };
        if self.client_tls_sslmode != ClientTlsMode::Disable {
            let why = "is required when client_tls_sslmode is not disable";
            file(bad, "client_tls_cert_file", &self.client_tls_cert_file, why);
            file(bad, "client_tls_key_file", &self.client_tls_key_file, why);
        }
        if self.upstream_tls() {
            let why = "is required with a rediss:// url: the CA the Redis certificates chain to";
            file(bad, "server_tls_ca_file", &self.server_tls_ca_file, why);
        } else if self.server_tls_ca_file.is_some() {
            bad(
                "server_tls_ca_file",
                "is only used with a rediss:// url (TLS to Redis)",
            );
        }
    }

    fn validate_budget(&self, bad: &mut impl FnMut(&str, &str)) {
        if self.client_max_request_bytes.0 < self.max_bulk_len.0 {
            bad(
                "client_max_request_bytes",
                "must be at least max_bulk_len: a bulk string that long could never be buffered",
            );
        }
        if self.client_max_reply_bytes.0 < 64 << 10 {
            bad(
                "client_max_reply_bytes",
                "must be at least 64KiB: ordinary replies would be refused",
            );
        }
        let biggest = self
            .client_max_request_bytes
            .0
            .max(self.client_max_reply_bytes.0);
        if self.clients_max_memory.0 < biggest {
            bad(
                "clients_max_memory",
                "must be at least client_max_request_bytes and client_max_reply_bytes: one client could never reach its own limit",
            );
        }
    }

    /// Sentinel mode is on (`sentinels` given).
    pub fn uses_sentinel(&self) -> bool {
        !self.sentinels.is_empty()
    }

    fn validate_sentinel(&self, bad: &mut impl FnMut(&str, &str)) {
        for (i, s) in self.sentinels.iter().enumerate() {
            if split_host_port(s).is_none() {
                bad(&format!("sentinels[{i}]"), "expected host:port");
            }
        }
        let named = self
            .sentinel_master
            .as_deref()
            .is_some_and(|m| !m.is_empty());
        if self.uses_sentinel() && !named {
            bad(
                "sentinel_master",
                "needed with sentinels: the name they monitor the primary under",
            );
        }
        if !self.uses_sentinel() && self.sentinel_master.is_some() {
            bad(
                "sentinels",
                "needed with sentinel_master: where to ask for it",
            );
        }
        if self.uses_sentinel() && self.cluster == Some(true) {
            bad(
                "cluster",
                "must not be true with sentinels: Sentinel fronts a standalone primary",
            );
        }
        if self.uses_sentinel() && self.sentinel_check_interval.enabled().is_none() {
            bad("sentinel_check_interval", "must be more than 0");
        }
        if self.read_from_replicas && !self.uses_sentinel() {
            bad(
                "read_from_replicas",
                "needs sentinels: replicas are the ones the sentinels know",
            );
        }
    }
}

/// `host:port` (IPv6 in brackets) split, the port parsed.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(RedisConfig::default().validate().is_empty());
        let c = RedisConfig {
            url: "not a url".into(),
            pool_size: 0,
            l1_max_entry_size: Bytes(1 << 30),
            ..RedisConfig::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            vec!["redis.url", "redis.pool_size", "redis.l1_max_entry_size"]
        );
    }

    #[test]
    fn tls_keys_are_checked_together() {
        let keys =
            |c: RedisConfig| -> Vec<String> { c.validate().into_iter().map(|e| e.key).collect() };
        assert_eq!(
            keys(RedisConfig {
                client_tls_sslmode: ClientTlsMode::Require,
                client_tls_key_file: Some("/nonexistent/pake.key".into()),
                url: "rediss://cache:6380".into(),
                ..RedisConfig::default()
            }),
            vec![
                "redis.client_tls_cert_file",
                "redis.client_tls_key_file",
                "redis.server_tls_ca_file"
            ]
        );
        // any existing file will do for the check
        let here = PathBuf::from(file!());
        let ok = RedisConfig {
            url: "rediss://u:p@cache:6380/2".into(),
            server_tls_ca_file: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")),
            ..RedisConfig::default()
        };
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        let (fred, tls) = ok.fred_config().unwrap();
        assert!(tls && ok.upstream_tls());
        assert_eq!(fred.database, Some(2));
        assert_eq!(
            keys(RedisConfig {
                server_tls_ca_file: Some(here),
                ..RedisConfig::default()
            }),
            vec!["redis.server_tls_ca_file"]
        );
        let mode: RedisConfig = toml::from_str("server_tls_sslmode = \"verify-ca\"").unwrap();
        assert_eq!(mode.server_tls_sslmode, ServerTlsVerify::VerifyCa);
        assert!(toml::from_str::<RedisConfig>("server_tls_sslmode = \"require\"").is_err());
    }

    #[test]
    fn sentinel_keys_are_checked_together() {
        let ok = RedisConfig {
            sentinels: vec!["10.0.0.1:26379".into(), "[::1]:26380".into()],
            sentinel_master: Some("mymaster".into()),
            read_from_replicas: true,
            ..RedisConfig::default()
        };
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        let keys =
            |c: RedisConfig| -> Vec<String> { c.validate().into_iter().map(|e| e.key).collect() };
        assert_eq!(
            keys(RedisConfig {
                sentinels: vec!["nohost".into()],
                cluster: Some(true),
                ..RedisConfig::default()
            }),
            vec![
                "redis.sentinels[0]",
                "redis.sentinel_master",
                "redis.cluster"
            ]
        );
        assert_eq!(
            keys(RedisConfig {
                sentinel_master: Some("m".into()),
                read_from_replicas: true,
                ..RedisConfig::default()
            }),
            vec!["redis.sentinels", "redis.read_from_replicas"]
        );
        assert_eq!(split_host_port("[::1]:26379"), Some(("::1", 26379)));
        assert_eq!(split_host_port("h:x"), None);
    }
}

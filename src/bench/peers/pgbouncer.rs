//! PgBouncer (the Debian package) with a config equivalent to Pake's: same pool size, pool
//! mode, client authentication and client limit. It refuses to run as root, so it runs as
//! the lab's server account when we are root, in the foreground so its pid is the child's.

use super::{free_addr, which, Peer};
use crate::bench::peers::pake::PgSide;
use crate::bench::BenchError;
use crate::lab::process;
use std::net::SocketAddr;
use std::time::Duration;

pub struct PgBouncer {
    pub peer: Peer,
    pub addr: SocketAddr,
}

/// Start PgBouncer in front of `pg.primary_url` (its user and password come from the URL).
pub fn start(pg: &PgSide) -> Result<PgBouncer, BenchError> {
    let bin = which("pgbouncer").ok_or_else(|| {
        BenchError::Unavailable("pgbouncer is not installed (apt-get install pgbouncer)".into())
    })?;
    let t = crate::config::parse_url(&pg.primary_url).map_err(BenchError::Client)?;
    let dir = Peer::dir("pake-bench-pgbouncer-")?;
    let addr = free_addr()?;
    let users = dir.path().join("users.txt");
    std::fs::write(
        &users,
        format!("\"{}\" \"{}\"\n", t.user, t.password.unwrap_or_default()),
    )?;
    let ini = format!(
        "[databases]\n{db} = host={host} port={port} dbname={db}\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {lport}\nunix_socket_dir =\n\
         auth_type = {auth}\nauth_file = {users}\npool_mode = {mode}\n\
         default_pool_size = {pool}\nmax_client_conn = {max}\n\
         ignore_startup_parameters = extra_float_digits\n\
         log_connections = 0\nlog_disconnections = 0\n",
        db = t.dbname,
        host = t.host,
        port = t.port,
        lport = addr.port(),
        auth = pg.auth,
        users = users.display(),
        mode = pg.pool_mode,
        pool = pg.pool_size,
        max = pg.max_clients,
    );
    let conf = dir.path().join("pgbouncer.ini");
    std::fs::write(&conf, ini)?;
    process::hand_over(dir.path())?;
    let mut cmd = process::command(&bin);
    cmd.arg(&conf);
    let mut peer = Peer::spawn("pgbouncer", cmd, dir)?;
    peer.wait_listening(addr, Duration::from_secs(20))?;
    Ok(PgBouncer { peer, addr })
}

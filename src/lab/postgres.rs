//! Real PostgreSQL for tests, benches and `pake demo`: `initdb` in a temp dir, a free port,
//! ready when `pg_isready` says so, optionally a streaming replica made with
//! `pg_basebackup -R`. Everything is stopped and deleted on drop, also when a test panics.

use super::process::{self, command, free_port, hand_over, spawn_server};
use super::LabError;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How clients must authenticate over TCP (pg_hba.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaAuth {
    ScramSha256,
    Md5,
    Trust,
}

impl HbaAuth {
    fn hba(self) -> &'static str {
        match self {
            HbaAuth::ScramSha256 => "scram-sha-256",
            HbaAuth::Md5 => "md5",
            HbaAuth::Trust => "trust",
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub auth: HbaAuth,
    pub user: String,
    pub password: String,
    /// Also start a streaming replica of the primary.
    pub replica: bool,
    /// Extra `postgresql.conf` lines (`name = value`).
    pub conf: Vec<String>,
    /// Serve TLS with a lab certificate (the CA is in [`PgLab::certs`]).
    pub tls: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            auth: HbaAuth::ScramSha256,
            user: "pake".into(),
            password: "pake".into(),
            replica: false,
            conf: Vec::new(),
            tls: false,
        }
    }
}

/// One running postgres (primary or replica).
pub struct PgInstance {
    pub port: u16,
    pub data: PathBuf,
    sockets: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    bin: PathBuf,
}

/// A primary and, when asked, a replica. Owns the temp dir both live in.
pub struct PgLab {
    pub primary: PgInstance,
    pub replica: Option<PgInstance>,
    pub user: String,
    pub password: String,
    /// The lab CA and server certificate, when started with `tls`.
    pub certs: Option<super::certs::Certs>,
    // dropped last: the instances stop first
    _dir: TempDir,
}

/// The directory holding `initdb`, `postgres`, `pg_isready`, `pg_basebackup`.
pub fn bindir() -> Result<PathBuf, LabError> {
    if let Ok(dir) = std::env::var("PAKE_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").exists())
    {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .find(|p| p.join("initdb").exists() && p.join("postgres").exists())
        })
        .ok_or_else(|| {
            LabError::Missing(
                "PostgreSQL server binaries (initdb, postgres); install postgresql-15".into(),
            )
        })
}

impl PgLab {
    /// Start a primary (and a replica when `opts.replica`).
    pub fn start(opts: PgOptions) -> Result<PgLab, LabError> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new().prefix("pake-lab-pg-").tempdir()?;
        hand_over(dir.path())?;
        let data = dir.path().join("primary");
        let certs = if opts.tls {
            Some(super::certs::Certs::generate()?)
        } else {
            None
        };
        let mut opts = opts;
        if let Some(c) = &certs {
            opts.conf.push("ssl = on".into());
            opts.conf
                .push(format!("ssl_cert_file = '{}'", c.cert.display()));
            opts.conf
                .push(format!("ssl_key_file = '{}'", c.key.display()));
        }
        initdb(&bin, &data, &opts)?;
        let mut primary = PgInstance {
            port: 0,
            data,
            sockets: dir.path().to_path_buf(),
            log: dir.path().join("primary.log"),
            child: None,
            bin: bin.clone(),
        };
        primary.start_on_free_port()?;
        if opts.auth == HbaAuth::Md5 {
            // stored as md5 so the server really asks for md5
            primary.psql(
                &opts.user,
                &format!(
                    "SET password_encryption = 'md5'; ALTER ROLE \"{}\" PASSWORD '{}'",
                    opts.user,
                    opts.password.replace('\'', "''")
                ),
            )?;
        }
        let replica = if opts.replica {
            let data = dir.path().join("replica");
            let mut cmd = command(&bin.join("pg_basebackup"));
            cmd.args([
                "-h",
                "127.0.0.1",
                "-U",
                &opts.user,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .arg("-p")
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(&data)
            .env("PGPASSWORD", &opts.password);
            run_checked(cmd, "pg_basebackup")?;
            let mut replica = PgInstance {
                port: 0,
                data,
                sockets: dir.path().to_path_buf(),
                log: dir.path().join("replica.log"),
                child: None,
                bin,
            };
            replica.start_on_free_port()?;
            Some(replica)
        } else {
            None
        };
        Ok(PgLab {
            primary,
            replica,
            user: opts.user,
            password: opts.password,
            certs,
            _dir: dir,
        })
    }

    /// `postgres://user:password@127.0.0.1:port/db` for the primary.
    pub fn url(&self, db: &str) -> String {
        self.url_for(&self.primary, db)
    }

    /// Promote the replica to a primary (`pg_promote()`, as `pg_ctl promote` or a failover
    /// manager would), waiting until it accepts writes.
    pub fn promote_replica(&self) -> Result<(), LabError> {
        let replica = self
            .replica
            .as_ref()
            .ok_or_else(|| LabError::Missing("a replica to promote".into()))?;
        let out = replica.psql(&self.user, "select pg_promote(true, 60)")?;
        if out.trim() != "t" {
            return Err(LabError::Failed {
                what: "pg_promote()".into(),
                output: out,
            });
        }
        // a primary cloned with synchronous_standby_names has no standby of its own yet:
        // commits would wait forever, so drop it as a failover manager does
        replica.psql(
            &self.user,
            "alter system set synchronous_standby_names = ''",
        )?;
        replica.psql(&self.user, "select pg_reload_conf()")?;
        Ok(())
    }

    pub fn replica_url(&self, db: &str) -> Option<String> {
        self.replica.as_ref().map(|r| self.url_for(r, db))
    }

    fn url_for(&self, inst: &PgInstance, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, inst.port, db
        )
    }

    /// A tokio-postgres client straight to the primary (the "direct" baseline in tests).
    pub async fn client(&self, db: &str) -> Result<tokio_postgres::Client, LabError> {
        connect(&self.url(db)).await
    }
}

/// Connect with tokio-postgres and drive the connection in a task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, LabError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| LabError::Client(describe(&e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A tokio-postgres error with the server's SQLSTATE and message when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn initdb(bin: &Path, data: &Path, opts: &PgOptions) -> Result<(), LabError> {
    let pwfile = data.with_extension("pw");
    std::fs::write(&pwfile, &opts.password)?;
    hand_over(&pwfile)?;
    let mut cmd = command(&bin.join("initdb"));
    cmd.arg("-D")
        .arg(data)
        .args([
            "-U",
            &opts.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .args(["--auth-local=trust", "--auth-host", opts.auth.hba()])
        .arg(format!("--pwfile={}", pwfile.display()));
    run_checked(cmd, "initdb")?;
    let _ = std::fs::remove_file(&pwfile);
    let mut conf = String::from(
        "\n# pake lab\nlisten_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
         full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 400\n\
         wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\nwal_keep_size = 256MB\n\
         log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n",
    );
    for line in &opts.conf {
        conf.push_str(line);
        conf.push('\n');
    }
    append(&data.join("postgresql.conf"), &conf)?;
    let hba = format!(
        "local all all trust\nhost all all 127.0.0.1/32 {m}\nhost replication all 127.0.0.1/32 {m}\n",
        m = opts.auth.hba()
    );
    std::fs::write(data.join("pg_hba.conf"), hba)?;
    hand_over(data)?;
    Ok(())
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// Run `cmd` to completion; a failure carries its output.
pub(crate) fn run_checked(mut cmd: std::process::Command, what: &str) -> Result<(), LabError> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(LabError::Failed {
            what: what.into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

impl PgInstance {
    fn start_on_free_port(&mut self) -> Result<(), LabError> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| LabError::Missing("a free port".into())))
    }

    /// Start (or restart) this server on its port and wait until it accepts connections.
    pub fn start(&mut self) -> Result<(), LabError> {
        if self.is_running() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        hand_over(&self.log)?;
        let mut cmd = command(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.sockets)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(spawn_server(cmd)?);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(LabError::Failed {
                        what: format!("postgres exited ({status})"),
                        output: std::fs::read_to_string(&self.log).unwrap_or_default(),
                    });
                }
            }
            let ok = std::process::Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-t", "1"])
                .arg("-p")
                .arg(self.port.to_string())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(LabError::Failed {
                    what: "postgres did not become ready".into(),
                    output: std::fs::read_to_string(&self.log).unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fast shutdown (SIGINT): sessions are terminated with 57P01, then it stops.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGINT);
    }

    /// Immediate shutdown (SIGQUIT): like a crash, no checkpoint, children killed.
    pub fn crash(&mut self) {
        self.stop_with(libc::SIGQUIT);
    }

    /// `kill -9` of the postmaster, as an operator or the OOM killer would: no shutdown at
    /// all. Its backends see that the postmaster is gone and exit on their own; until they
    /// have, the data dir cannot be started again (see [`PgInstance::restart_after_kill`]).
    pub fn kill(&mut self) {
        self.stop_with(libc::SIGKILL);
    }

    /// Start again on the same port and data dir after [`PgInstance::kill`] (crash recovery
    /// runs). PostgreSQL refuses to start while backends orphaned by the kill still hold the
    /// old shared memory, so starting is retried until they are gone, up to `limit`.
    pub fn restart_after_kill(&mut self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        loop {
            match self.start() {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > limit => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn stop_with(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        process::signal(child.id(), sig);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Run SQL as the superuser over the unix socket (trust), with psql.
    pub fn psql(&self, user: &str, sql: &str) -> Result<String, LabError> {
        let mut cmd = command(&self.bin.join("psql"));
        cmd.arg("-h")
            .arg(&self.sockets)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                user,
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(LabError::Failed {
                what: format!("psql {sql:?}"),
                output: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The server's log so far (for test diagnostics).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        // immediate shutdown: nothing in a lab needs a checkpoint
        self.stop_with(libc::SIGQUIT);
    }
}

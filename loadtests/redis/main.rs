//! `pake-redis-load`: the Redis load comparison of issue 5, in one process and one run.
//!
//! Starts a lab `redis-server`, then in front of it: Pake with the L1, Pake with the L1 off
//! (both as separate `pake serve` processes) and twemproxy (`nutcracker`, Debian package),
//! each on free ports with generated configs. Then drives the same closed-loop workload —
//! N clients, one command in flight each, GET/SET over a Zipf(0.99) key space — against
//! direct Redis and the three proxies, interleaved round by round (A B C D A B C D…) so
//! drift on this shared machine hits all alike, and prints ops/s, latency quantiles, the
//! ratios between targets and Pake's L1 hit rate (from its /metrics, over the measured
//! rounds; every key is read once through Pake before them, untimed).
//!
//! Usage: `cargo build --release --bins && target/release/pake-redis-load [--clients 50]
//! [--keys 100000] [--rounds 3] [--round-secs 5] [--write-dist zipf|uniform] [--workers 2]
//! [--json FILE]`. Loopback only; every loop is bounded in time.

use bytes::{Buf, BytesMut};
use pake::lab::process::{free_port, spawn_server};
use pake::lab::zipf::Zipf;
use pake::lab::{RedisLab, RedisOptions};
use pake::redis::resp::{self, Limits};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    clients: usize,
    keys: usize,
    rounds: usize,
    round: Duration,
    uniform_writes: bool,
    workers: usize,
    json: Option<PathBuf>,
    /// Only these targets (profiling); all four when empty.
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        clients: 50,
        keys: 100_000,
        rounds: 3,
        round: Duration::from_secs(5),
        uniform_writes: false,
        workers: 2,
        json: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--clients" => a.clients = num(value()?)?,
            "--keys" => a.keys = num(value()?)?,
            "--rounds" => a.rounds = num(value()?)?,
            "--round-secs" => a.round = Duration::from_secs(num(value()?)? as u64),
            "--workers" => a.workers = num(value()?)?,
            "--write-dist" => a.uniform_writes = value()? == "uniform",
            "--json" => a.json = Some(PathBuf::from(value()?)),
            "--only" => a.only = value()?.split(',').map(String::from).collect(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_pake(
    dir: &Path,
    redis_port: u16,
    l1: bool,
    workers: usize,
) -> Result<(u16, u16, Proc), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let admin = free_port().map_err(|e| e.to_string())?;
    let conf = format!(
        "[general]\npg_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         workers = {workers}\nlog_level = \"warn\"\n\n[redis]\nlisten = \"127.0.0.1:{port}\"\n\
         url = \"redis://127.0.0.1:{redis_port}\"\nl1 = {l1}\n"
    );
    let path = dir.join(format!("pake-{port}.toml"));
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let pake = exe.with_file_name("pake");
    let mut cmd = Command::new(&pake);
    cmd.arg("serve").arg("--config").arg(&path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let child = spawn_server(cmd).map_err(|e| format!("{}: {e}", pake.display()))?;
    Ok((port, admin, Proc(child)))
}

fn start_twemproxy(dir: &Path, redis_port: u16) -> Result<(u16, Proc), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let stats = free_port().map_err(|e| e.to_string())?;
    let conf = format!(
        "pake_bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
         redis: true\n  auto_eject_hosts: false\n  server_connections: 1\n  timeout: 5000\n  \
         servers:\n   - 127.0.0.1:{redis_port}:1\n"
    );
    let path = dir.join("nutcracker.yml");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nutcracker");
    cmd.arg("-c")
        .arg(&path)
        .args(["-s", &stats.to_string(), "-a", "127.0.0.1"]);
    cmd.arg("-o").arg(dir.join("nutcracker.log"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_server(cmd).map_err(|e| format!("nutcracker: {e}"))?;
    Ok((port, Proc(child)))
}

struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: BytesMut::with_capacity(4096),
        })
    }

    async fn call(&mut self, req: &[u8]) -> std::io::Result<bool> {
        self.s.write_all(req).await?;
        loop {
            if let Ok(Some(n)) = resp::scan(&self.buf, 0, &Limits::backend()) {
                let ok = self.buf[0] != b'-';
                self.buf.advance(n);
                return Ok(ok);
            }
            if self.s.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

async fn wait_ready(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut c) = Conn::connect(port).await {
            if let Ok(Ok(true)) = tokio::time::timeout(
                Duration::from_secs(1),
                c.call(b"*2\r\n$3\r\nGET\r\n$3\r\nk:0\r\n"),
            )
            .await
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing answers on port {port}"))
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    pake::redis::backend::link::command(args).to_vec()
}

/// One closed-loop client until `until`: (ops, errors, latency samples in µs).
async fn client(port: u16, a: &Args, seed: u64, until: Instant) -> (u64, u64, Vec<u32>) {
    let Ok(mut c) = Conn::connect(port).await else {
        return (0, 1, Vec::new());
    };
    let mut zipf = Zipf::new(a.keys, 0.99, seed);
    let value = vec![b'v'; 100];
    let (mut ops, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    while Instant::now() < until {
        let write = zipf.uniform() < 0.1;
        let rank = if write && a.uniform_writes {
            (zipf.uniform() * a.keys as f64) as usize
        } else {
            zipf.next_rank()
        };
        let key = format!("k:{rank}");
        let req = if write {
            command(&[b"SET", key.as_bytes(), &value])
        } else {
            command(&[b"GET", key.as_bytes()])
        };
        let started = Instant::now();
        match c.call(&req).await {
            Ok(true) => ops += 1,
            Ok(false) => errors += 1,
            Err(_) => return (ops, errors + 1, lat),
        }
        if ops % 16 == 0 {
            lat.push(started.elapsed().as_micros() as u32);
        }
    }
    (ops, errors, lat)
}

#[derive(Default)]
struct Tally {
    ops: u64,
    errors: u64,
    secs: f64,
    lat: Vec<u32>,
    /// CPU seconds used by the proxy process and by redis-server during this target's rounds.
    proxy_cpu: f64,
    redis_cpu: f64,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after the command name, which is in parentheses and may hold spaces
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    ticks / 100.0
}

async fn round(port: u16, a: &Args, seed: u64, t: &mut Tally) {
    let started = Instant::now();
    let until = started + a.round;
    let tasks: Vec<_> = (0..a.clients)
        .map(|i| {
            let a = Args {
                json: None,
                only: Vec::new(),
                ..*a
            };
            tokio::spawn(async move { client(port, &a, seed * 1000 + i as u64, until).await })
        })
        .collect();
    for task in tasks {
        if let Ok((ops, errors, lat)) = task.await {
            t.ops += ops;
            t.errors += errors;
            t.lat.extend(lat);
        }
    }
    t.secs += started.elapsed().as_secs_f64();
}

async fn scrape(admin: u16, name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", admin)).await else {
        return 0.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn quantile(sorted: &[u32], q: f64) -> u32 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn main() -> Result<(), String> {
    let a = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(a))
}

async fn run(a: Args) -> Result<(), String> {
    let lab = tokio::task::spawn_blocking(|| RedisLab::start(RedisOptions::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let redis = lab.nodes[0].port;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // preload every key so GETs hit real values
    let mut c = Conn::connect(redis).await.map_err(|e| e.to_string())?;
    for chunk in (0..a.keys).collect::<Vec<_>>().chunks(1000) {
        let mut batch = Vec::new();
        for k in chunk {
            batch.extend(command(&[
                b"SET",
                format!("k:{k}").as_bytes(),
                &[b'v'; 100],
            ]));
        }
        c.s.write_all(&batch).await.map_err(|e| e.to_string())?;
        for _ in chunk {
            c.call(b"").await.map_err(|e| e.to_string())?;
        }
    }
    let (pake_l1, admin_l1, _p1) = start_pake(dir.path(), redis, true, a.workers)?;
    let (pake_nol1, _, _p2) = start_pake(dir.path(), redis, false, a.workers)?;
    let (twem, _p3) = start_twemproxy(dir.path(), redis)?;
    let targets = [
        ("direct", redis),
        ("pake_l1", pake_l1),
        ("pake_no_l1", pake_nol1),
        ("twemproxy", twem),
    ];
    let pids = [None, Some(_p1.0.id()), Some(_p2.0.id()), Some(_p3.0.id())];
    let redis_pid = lab.nodes[0].pid();
    for (_, port) in &targets {
        wait_ready(*port).await?;
    }
    warm_up(pake_l1, a.keys).await?;
    let hits0 = scrape(admin_l1, "pake_redis_l1_hits_total").await;
    let miss0 = scrape(admin_l1, "pake_redis_l1_misses_total").await;
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    for r in 0..a.rounds {
        for (i, (name, port)) in targets.iter().enumerate() {
            if !a.only.is_empty() && !a.only.iter().any(|o| o == name) {
                continue;
            }
            let (p0, r0) = (cpu_secs(pids[i]), cpu_secs(redis_pid));
            round(*port, &a, (r * 10 + i) as u64 + 1, &mut tallies[i]).await;
            tallies[i].proxy_cpu += cpu_secs(pids[i]) - p0;
            tallies[i].redis_cpu += cpu_secs(redis_pid) - r0;
            eprintln!(
                "round {} {name}: {:.0} ops/s so far",
                r + 1,
                tallies[i].ops as f64 / tallies[i].secs
            );
        }
    }
    let hits = scrape(admin_l1, "pake_redis_l1_hits_total").await - hits0;
    let misses = scrape(admin_l1, "pake_redis_l1_misses_total").await - miss0;
    report(&a, &targets, &mut tallies, hits / (hits + misses).max(1.0))
}

/// Read every key once through Pake (MGET fills the L1 per key), untimed: the measured
/// rounds then see a warm cache, as a long-running service would.
async fn warm_up(port: u16, keys: usize) -> Result<(), String> {
    let mut c = Conn::connect(port).await.map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..keys).map(|k| format!("k:{k}")).collect();
    for chunk in names.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(chunk.iter().map(|k| k.as_bytes()));
        c.call(&command(&args)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn report(
    a: &Args,
    targets: &[(&str, u16)],
    tallies: &mut [Tally],
    hit_rate: f64,
) -> Result<(), String> {
    let rates: Vec<f64> = tallies
        .iter()
        .map(|t| t.ops as f64 / t.secs.max(1e-9))
        .collect();
    let rate = |i: usize| rates[i];
    let (direct, twem) = (rate(0), rate(3));
    println!(
        "Zipf(0.99) 90% GET / 10% SET ({} writes), {} clients, {} keys, {} rounds x {:?}, Pake workers {}",
        if a.uniform_writes { "uniform" } else { "Zipf" },
        a.clients, a.keys, a.rounds, a.round, a.workers
    );
    println!(
        "{:<12} {:>10} {:>8} {:>8} {:>8} {:>9} {:>11} {:>12} {:>12}",
        "target",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "errors",
        "/direct",
        "/twemproxy",
        "proxy µs/op",
        "redis µs/op"
    );
    let mut json = Vec::new();
    for (i, (name, _)) in targets.iter().enumerate() {
        tallies[i].lat.sort_unstable();
        let (p50, p99) = (
            quantile(&tallies[i].lat, 0.5),
            quantile(&tallies[i].lat, 0.99),
        );
        let per_op = |cpu: f64| cpu * 1e6 / tallies[i].ops.max(1) as f64;
        let (proxy_cpu, redis_cpu) = (per_op(tallies[i].proxy_cpu), per_op(tallies[i].redis_cpu));
        println!(
            "{:<12} {:>10.0} {:>8} {:>8} {:>8} {:>9.2} {:>11.2} {:>12.2} {:>12.2}",
            name,
            rate(i),
            p50,
            p99,
            tallies[i].errors,
            rate(i) / direct,
            rate(i) / twem,
            proxy_cpu,
            redis_cpu
        );
        json.push(format!(
            "{{\"target\":\"{name}\",\"ops_per_sec\":{:.0},\"p50_us\":{p50},\"p99_us\":{p99},\"errors\":{},\"proxy_cpu_us_per_op\":{proxy_cpu:.2},\"redis_cpu_us_per_op\":{redis_cpu:.2}}}",
            rate(i), tallies[i].errors
        ));
    }
    println!("Pake L1 hit rate: {:.2}%", hit_rate * 100.0);
    if let Some(path) = &a.json {
        let body = format!(
            "{{\"hit_rate\":{hit_rate:.4},\"targets\":[{}]}}\n",
            json.join(",")
        );
        std::fs::write(path, body).map_err(|e| e.to_string())?;
    }
    Ok(())
}

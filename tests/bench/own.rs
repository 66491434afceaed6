//! `pake bench --target …` against servers this test starts itself, outside pake bench: a
//! lab Postgres with a separately started `pake serve` and PgBouncer in front, and a lab
//! Redis with Pake and twemproxy. Checks what a user relies on: ratios and the CPU column
//! are there and sane, --prepare/--cleanup make and remove the data, a read-only scenario
//! runs without --allow-writes while a write scenario is refused, and Ctrl-C still writes
//! the (partial) report. Never a speed.

use pake::bench::peers::pake::{PakeBinary, PgSide, RedisSide};
use pake::bench::peers::{pgbouncer, redis, twemproxy};
use pake::bench::report::{ScenarioReport, TargetReport};
use pake::bench::resp::{Reply, Resp};
use pake::lab::{PgLab, PgOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("loadtests")
        .join(format!("{name}.toml"))
}

fn bench(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pake"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run pake bench")
}

fn succeeded(run: &Output) -> String {
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "pake bench failed\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

fn target<'a>(r: &'a ScenarioReport, name: &str) -> &'a TargetReport {
    r.cases[0]
        .targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"))
}

/// Clean, a ratio to the first target, and for a proxy a CPU figure between nothing and
/// 50 ms per operation (a debug build on a busy machine stays far below).
fn assert_sane(r: &ScenarioReport, name: &str, cpu: bool) {
    let t = target(r, name);
    assert_eq!(t.errors, 0, "{name}: {:?}", t.first_error);
    assert!(t.ops > 0, "{name}: no operations");
    let ratio = t.ratio.unwrap_or_else(|| panic!("{name}: no ratio"));
    assert!(ratio.is_finite() && ratio > 0.0, "{name}: ratio {ratio}");
    if cpu {
        let c = t
            .cpu_us_per_op
            .unwrap_or_else(|| panic!("{name}: no CPU/op"));
        assert!(c > 0.0 && c < 50_000.0, "{name}: CPU/op {c} µs");
        assert!(t.rounds_env.iter().all(|e| e.loadavg_before.is_some()));
    }
}

fn pg_side(lab: &PgLab) -> PgSide {
    PgSide {
        primary_url: lab.url("postgres"),
        replica_url: None,
        pool_size: 5,
        pool_mode: "transaction".into(),
        auth: "scram-sha-256".into(),
        max_clients: 100,
        insight: true,
        // the reactor path, through the real binary under load
        pg_threads: 1,
    }
}

fn with_port(url: &str, port: u16) -> String {
    let (head, _) = url.rsplit_once(':').expect("url with a port");
    format!("{head}:{port}/postgres")
}

#[test]
fn postgres_direct_pake_and_pgbouncer_by_url() {
    let lab = PgLab::start(PgOptions::default()).expect("lab postgres");
    let side = pg_side(&lab);
    let bin = PakeBinary::new(Some(Path::new(env!("CARGO_BIN_EXE_pake")))).unwrap();
    let pake = bin.start_pg(&side, 1).expect("pake serve");
    let bouncer = pgbouncer::start(&side).expect("pgbouncer");
    let direct = lab.url("postgres");
    let targets = [
        format!("direct={direct}"),
        format!("pake={}", with_port(&direct, pake.addr.port())),
        format!("pgbouncer={}", with_port(&direct, bouncer.addr.port())),
    ];
    let mut args: Vec<String> = vec!["--scenario".into()];
    args.push(scenario("pg-select-only").display().to_string());
    for t in &targets {
        args.extend(["--target".into(), t.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tempfile::tempdir().unwrap();

    // a write scenario is refused before anything runs
    let mut write = args.clone();
    let tpcb = scenario("pg-tpcb").display().to_string();
    write[1] = &tpcb;
    let refused = bench(&write, out.path());
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--allow-writes"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // read-only, no --allow-writes: prepare, run, clean up
    let pid = bouncer.peer.pid().to_string();
    let pid_arg = format!("pgbouncer={pid}");
    let mut run = args.clone();
    run.extend(["--smoke", "--prepare", "--cleanup", "--pid", &pid_arg]);
    let stdout = succeeded(&bench(&run, out.path()));
    assert!(stdout.contains("CPU/op"), "{stdout}");
    let r = ScenarioReport::read(&out.path().join("pg-select-only.json")).unwrap();
    assert_eq!(target(&r, "direct").ratio, Some(1.0));
    assert_sane(&r, "direct", false);
    assert_sane(&r, "pake", true);
    assert_sane(&r, "pgbouncer", true);
    for ext in ["html", "md", "svg"] {
        assert!(
            out.path().join(format!("pg-select-only.{ext}")).exists(),
            "{ext}"
        );
    }
    // the cleanup dropped the schema: a run without --prepare says what to do
    let again = bench(&[&args[..], &["--smoke"]].concat(), out.path());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--prepare"));

    // your own statements (read-only) through the same targets
    let sql = scenario("pg-sql-example").display().to_string();
    let mut own = args.clone();
    own[1] = &sql;
    own.extend(["--smoke", "--prepare", "--cleanup"]);
    succeeded(&bench(&own, out.path()));
    let r = ScenarioReport::read(&out.path().join("pg-sql-example.json")).unwrap();
    assert_sane(&r, "pake", true);
    assert_sane(&r, "pgbouncer", true);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_direct_pake_and_twemproxy_by_url_and_ctrl_c() {
    let lab = tokio::task::spawn_blocking(redis::standalone)
        .await
        .unwrap()
        .expect("lab redis");
    let bin = PakeBinary::new(Some(Path::new(env!("CARGO_BIN_EXE_pake")))).unwrap();
    let side = RedisSide {
        url: lab.url(),
        cluster: false,
        l1: true,
        pool_size: 2,
        sentinel: None,
        threads: 0,
    };
    let pake = bin.start_redis(&side, 1).expect("pake serve");
    let tw = twemproxy::start(lab.addr(), 2).expect("twemproxy");
    let file = scenario("redis-getset").display().to_string();
    let direct = format!("direct=redis://{}", lab.addr());
    let via_pake = format!("pake=redis://{}", pake.addr);
    let via_tw = format!("twemproxy=redis://{}", tw.addr);
    let args = [
        "--scenario",
        file.as_str(),
        "--target",
        direct.as_str(),
        "--target",
        via_pake.as_str(),
        "--target",
        via_tw.as_str(),
    ];
    let out = tempfile::tempdir().unwrap();
    let path = out.path().to_path_buf();
    let refused = bench(&[&args[..], &["--smoke"]].concat(), &path);
    assert!(!refused.status.success(), "SETs without --allow-writes");

    let run: Vec<&str> = [
        &args[..],
        &["--smoke", "--allow-writes", "--prepare", "--cleanup"],
    ]
    .concat();
    succeeded(&bench(&run, &path));
    let r = ScenarioReport::read(&path.join("redis-getset.json")).unwrap();
    for (name, cpu) in [("direct", true), ("pake", true), ("twemproxy", true)] {
        assert_sane(&r, name, cpu);
    }
    let mut c = Resp::connect(lab.addr()).await.unwrap();
    assert_eq!(
        c.call(&[b"DBSIZE"]).await.unwrap(),
        Reply::Int(0),
        "cleanup left keys"
    );

    // Ctrl-C in the middle of a long round: a clean exit with the partial report
    let child = Command::new(env!("CARGO_BIN_EXE_pake"))
        .arg("bench")
        .args(args)
        .args(["--smoke", "--allow-writes", "--prepare", "--cleanup"])
        .args(["--duration", "60", "--rounds", "3", "--out"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // smoke-sized: 1,000 keys and 0.2 s warm-ups, so within seconds it is measuring
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    pake::lab::process::signal(child.id(), libc::SIGINT);
    let done = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    succeeded(&done);
    let r = ScenarioReport::read(&path.join("redis-getset.json")).unwrap();
    assert!(r.partial, "not marked partial");
    assert!(target(&r, "direct").ops > 0);
    assert_eq!(
        c.call(&[b"DBSIZE"]).await.unwrap(),
        Reply::Int(0),
        "cleanup skipped"
    );
}

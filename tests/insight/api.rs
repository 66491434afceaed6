//! The admin API, `pake report` (opened in headless Chromium) and `pake observability`,
//! against an engine fed by real executions.

use crate::harness::{Rig, Who};
use std::path::Path;
use std::process::Command;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn serve(rig: &Rig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = pake::insight::http::routes(rig.insight.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn get(base: &str, path: &str) -> Result<String, pake::insight::cli::CliError> {
    let (base, path) = (base.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || pake::insight::cli::http_get(&base, &path))
        .await
        .expect("get thread")
}

async fn pake(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pake"))
            .args(args)
            .output()
            .expect("run pake")
    })
    .await
    .expect("pake thread")
}

/// Headless Chromium's DOM of `file` (installing Chromium when missing and we may).
fn dump_dom(file: &Path) -> String {
    let have = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .status();
    }
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs (scripts/deps.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn api_report_in_a_browser_and_observability() {
    let mut rig = Rig::default().await;
    let c = rig.client("postgres").await;
    c.batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 1000) g;")
        .await
        .expect("seed");
    let traced = Who {
        trace_id: Some(TRACE),
        ..Who::default()
    };
    for _ in 0..3 {
        rig.exec(
            &c,
            "select pg_sleep(0.4), count(*) from items where name like 'n1%'", // slow enough to stay on top whatever the load
            &[],
            &[],
            traced,
        )
        .await;
    }
    for id in 1..=40i32 {
        let s = id.to_string();
        rig.exec(
            &c,
            "select name from items where id = $1",
            &[&id],
            &[Some(&s)],
            Who::default(),
        )
        .await;
    }
    let base = serve(&rig).await;

    let top: Vec<pake::insight::model::QueryStats> = serde_json::from_str(
        &get(&base, "/api/queries?sort=calls&limit=1")
            .await
            .expect("200"),
    )
    .expect("json");
    assert_eq!(top.len(), 1);
    assert_eq!(
        (top[0].query.as_str(), top[0].calls),
        ("select name from items where id = ?", 40)
    );
    let by_time: Vec<pake::insight::model::QueryStats> =
        serde_json::from_str(&get(&base, "/api/queries").await.expect("200")).expect("json");
    assert!(
        by_time[0].query.starts_with("select pg_sleep(?)"),
        "{}",
        by_time[0].query
    );
    let heavy = by_time[0].id.clone();
    assert!(matches!(
        get(&base, "/api/queries?sort=bogus").await,
        Err(pake::insight::cli::CliError::Status { status, .. }) if status == "400"
    ));
    assert!(get(&base, &format!("/api/queries/{heavy}")).await.is_ok());
    assert!(get(&base, "/api/traces/xyz").await.is_err());

    check_report(&base, &heavy).await;
    check_observability(&base, &heavy).await;
}

/// `pake report` writes three files; the HTML renders with the top query and its chart.
async fn check_report(base: &str, heavy: &str) {
    let dir = tempfile::tempdir().expect("out dir");
    let out = pake(vec![
        "report".into(),
        "--admin".into(),
        base.to_string(),
        "--out".into(),
        dir.path().display().to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["report.md", "report.json", "report.html"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let md = std::fs::read_to_string(dir.path().join("report.md")).expect("md");
    assert!(md.contains("select pg_sleep(?)"));
    if let Ok(keep) = std::env::var("PAKE_KEEP_REPORT") {
        // for a look by eye: PAKE_KEEP_REPORT=/tmp/x.html cargo test --test insight api
        let _ = std::fs::copy(dir.path().join("report.html"), keep);
    }
    let dom = dump_dom(&dir.path().join("report.html"));
    assert!(dom.contains("Pake query report"), "{dom}");
    assert!(dom.contains("select pg_sleep(?), count(*) from items where name like ?"));
    let hist = format!("id=\"hist-{heavy}\"");
    let at = dom.find(&hist).expect("the top query's latency chart");
    let chart_end = dom[at..]
        .find("</svg>")
        .map(|e| at + e)
        .expect("closed svg");
    assert!(
        dom[at..chart_end].contains("class=\"bar\""),
        "chart has bars"
    );
    assert!(dom.contains("id=\"share-chart\""));
    assert!(dom.contains(TRACE), "slow samples carry the trace id");
}

/// `pake observability`: the statements of one trace, and the top fingerprints.
async fn check_observability(base: &str, heavy: &str) {
    let out = pake(vec![
        "observability".into(),
        "--admin".into(),
        base.to_string(),
        "--metrics".into(),
        format!("--trace-id={TRACE}"),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("trace {TRACE}: 3 statement(s)")),
        "{text}"
    );
    assert!(text.contains(heavy));
    assert!(text.contains("select name from items where id = ?"));
}

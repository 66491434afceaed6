//! Session settings a client changes in pipelined groups and through prepared statements,
//! compared with a direct connection: a `SET` counts when its statement runs without error,
//! and stays when its transaction (explicit, or the implicit one of a Query or of an
//! extended group up to its Sync) commits; each group is settled by its own answers.

use crate::harness::{frame, query, Env, Opts, Raw};

fn parse(name: &str, text: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes())
}

/// Bind of statement `name` to the unnamed portal, no parameters.
fn bind(name: &str) -> Vec<u8> {
    frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes())
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

/// Parse, Bind, Execute of `text` (unnamed), no Sync.
fn run(text: &str) -> Vec<u8> {
    [parse("", text), bind(""), execute()].concat()
}

/// Groups of messages, each ended by its Sync or Query, sent back to back before reading;
/// then the value the client's session has for `work_mem`.
struct Step {
    what: &'static str,
    groups: Vec<Vec<u8>>,
}

fn steps() -> Vec<Step> {
    let q = query;
    vec![
        Step {
            what: "a SET in a group pipelined behind a failing group",
            groups: vec![q("SELECT 1/0"), q("SET work_mem = '3MB'")],
        },
        Step {
            what: "SET; error in one Query behind a group that succeeds",
            groups: vec![q("SELECT 1"), q("SET work_mem = '5MB'; SELECT 1/0")],
        },
        Step {
            what: "an extended SET behind a failing extended group",
            groups: vec![
                [run("SELECT 1/0"), sync()].concat(),
                [run("SET work_mem = '7MB'"), sync()].concat(),
            ],
        },
        Step {
            what: "an extended SET, then an error before the Sync",
            groups: vec![
                [run("SET work_mem = '9MB'"), run("SELECT 1/0"), sync()].concat(),
                q("SELECT 1"),
            ],
        },
        Step {
            what: "a SET parsed and bound, never executed",
            groups: vec![
                [parse("", "SET work_mem = '11MB'"), bind(""), sync()].concat(),
                [parse("s1", "SET work_mem = '13MB'"), bind("s1"), sync()].concat(),
            ],
        },
        Step {
            what: "a prepared SET executed in a failed transaction",
            groups: vec![
                q("BEGIN"),
                q("SELECT 1/0"),
                [bind("s1"), execute(), sync()].concat(),
                q("ROLLBACK"),
            ],
        },
        Step {
            what: "a prepared SET executed",
            groups: vec![[bind("s1"), execute(), sync()].concat(), q("SELECT 1")],
        },
        Step {
            what: "a SET in a transaction that fails in a later group and rolls back",
            groups: vec![
                q("BEGIN"),
                q("SET work_mem = '15MB'"),
                q("SELECT 1/0"),
                q("ROLLBACK"),
            ],
        },
        Step {
            what: "a SET committed in an extended group behind a failing one",
            groups: vec![
                [run("SELECT 1/0"), sync()].concat(),
                [run("BEGIN"), run("SET work_mem = '17MB'"), sync()].concat(),
                [run("SET LOCAL work_mem = '19MB'"), run("COMMIT"), sync()].concat(),
            ],
        },
    ]
}

/// Send `step`'s groups at once; what each group got (tags but ParameterStatus and
/// notices, which come as the server pleases; SQLSTATE; status).
async fn send(raw: &mut Raw, step: &Step) -> Vec<(String, String, u8)> {
    raw.send(&step.groups.concat()).await;
    let mut out = Vec::new();
    for _ in &step.groups {
        let r = raw.until_ready().await;
        let tags = r.tags.replace(['S', 'N'], "");
        out.push((tags, r.sqlstate, r.status));
    }
    out
}

async fn work_mem(raw: &mut Raw) -> String {
    raw.send(&query("SHOW work_mem")).await;
    let r = raw.until_ready().await;
    String::from_utf8_lossy(&r.value.unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_in_pipelined_groups_and_prepared_sets_follow_what_ran() {
    let env = Env::with(Opts {
        pool_size: 2,
        ..Opts::default()
    })
    .await;
    let direct_addr = format!("127.0.0.1:{}", env.lab.primary.port)
        .parse()
        .expect("addr");
    let login = |addr| Raw::login_at(addr, &env.lab.user, &env.lab.password, "postgres", &[]);
    let mut direct = login(direct_addr).await.expect("login");
    let mut pake = login(env.pake.pg_addr).await.expect("login");
    let other = env.client().await;
    for step in steps() {
        let want = send(&mut direct, &step).await;
        assert_eq!(send(&mut pake, &step).await, want, "{}", step.what);
        let want = work_mem(&mut direct).await;
        // on either server: the other one held by another client, then free
        for hold in [true, false] {
            if hold {
                other.batch_execute("BEGIN").await.expect("begin");
                other.query_one("SELECT 1", &[]).await.expect("hold");
            }
            let got = work_mem(&mut pake).await;
            assert_eq!(got, want, "after {} (hold {hold})", step.what);
            if hold {
                other.batch_execute("COMMIT").await.expect("commit");
            }
        }
    }
}

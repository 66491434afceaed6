//! Errors about a client's prepared statements, compared with a direct connection: the
//! same SQLSTATE, in the same order of checks, naming the statement as the client named it
//! (servers know it by Pake's `pake_<id>`).

use crate::harness::{field, frame, query, Env, Opts, Raw};

fn parse(name: &str, text: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{text}\0\0\0").as_bytes())
}

/// Bind of statement `name` with no parameters, Execute, Sync.
fn bind_none_run(name: &str) -> Vec<u8> {
    let mut out = frame(b'B', format!("\0{name}\0\0\0\0\0\0\0").as_bytes());
    out.extend(frame(b'E', b"\0\0\0\0\0"));
    out.extend(frame(b'S', b""));
    out
}

/// Send `msgs`, read to ReadyForQuery: the first error's SQLSTATE and message.
async fn first_error(raw: &mut Raw, msgs: &[u8]) -> (String, String) {
    raw.send(msgs).await;
    let mut error = (String::new(), String::new());
    loop {
        let (tag, body) = raw.read().await.expect("a reply");
        if tag == b'E' && error.0.is_empty() {
            error = (field(&body, b'C'), field(&body, b'M'));
        }
        if tag == b'Z' {
            return error;
        }
    }
}

/// A Bind with a wrong parameter count: 08P01 naming the client's statement, whether the
/// server has Pake's copy of it (its own error named `pake_<id>`) or not, even in an
/// aborted transaction — where Pake's Parse of the copy got 25P02 before PostgreSQL's check
/// of the counts. One server keeping one statement: parsing `t` evicts Pake's copy of `s`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_count_errors_name_the_clients_statement_in_postgres_order() {
    let env = Env::with(Opts {
        pool_size: 1,
        tweak: |c| c.pool.max_prepared_statements = 1,
        ..Opts::default()
    })
    .await;
    let direct_addr = format!("127.0.0.1:{}", env.lab.primary.port)
        .parse()
        .expect("addr");
    let mut got = Vec::new();
    for addr in [direct_addr, env.pake.pg_addr] {
        let mut raw = Raw::login_at(addr, &env.lab.user, &env.lab.password, "postgres", &[])
            .await
            .expect("login");
        let mut answers = Vec::new();
        let msgs = [parse("s", "SELECT $1::int"), frame(b'S', b"")].concat();
        answers.push(first_error(&mut raw, &msgs).await);
        answers.push(first_error(&mut raw, &bind_none_run("s")).await);
        let msgs = [parse("t", "SELECT 2"), frame(b'S', b"")].concat();
        answers.push(first_error(&mut raw, &msgs).await);
        answers.push(first_error(&mut raw, &query("BEGIN")).await);
        answers.push(first_error(&mut raw, &query("SELECT 1/0")).await);
        answers.push(first_error(&mut raw, &bind_none_run("s")).await);
        answers.push(first_error(&mut raw, &query("ROLLBACK")).await);
        answers.push(first_error(&mut raw, &bind_none_run("s")).await);
        got.push(answers);
    }
    assert_eq!(got[1], got[0], "through Pake, then directly");
    assert_eq!(got[0][5].0, "08P01", "{:?}", got[0]);
}

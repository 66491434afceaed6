//! Authentication both ways: clients to Pake (SCRAM, md5, trust where configured) and Pake
//! to servers (SCRAM, md5, trust), plus session parameters following the client.

use crate::harness::{Env, Opts};
use pake::config::{Config, User};
use pake::lab::{HbaAuth, PgOptions};
use pake::pg::auth::Method;

fn add_user(c: &mut Config, name: &str, password: &str, method: Method) {
    c.users.push(User {
        name: name.into(),
        password: Some(password.into()),
        server_password: None,
        auth_type: Some(method),
        pool_size: None,
        pool_mode: None,
        max_user_connections: 0,
        read_from_replicas: None,
        rate_limit: None,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_and_md5_server() {
    let env = Env::with(Opts {
        lab: PgOptions {
            auth: HbaAuth::Md5,
            ..PgOptions::default()
        },
        tweak: |c| {
            // the quick-start user logs in to Pake with md5 too
            c.users[0].auth_type = Some(Method::Md5);
        },
        ..Opts::default()
    })
    .await;
    let c = env.client().await;
    let v: String = c
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "pake");
    // the server really asked for md5: the stored password is an md5 hash
    let d = env.direct().await;
    let stored: String = d
        .query_one(
            "select rolpassword from pg_authid where rolname = 'pake'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("md5"), "{stored}");
    let bad = env.url("postgres").replace(":pake@", ":nope@");
    assert!(pake::lab::postgres::connect(&bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_only_when_configured_and_server_trust() {
    let env = Env::with(Opts {
        lab: PgOptions {
            auth: HbaAuth::Trust,
            ..PgOptions::default()
        },
        tweak: |c| add_user(c, "guest", "unused", Method::Trust),
        ..Opts::default()
    })
    .await;
    env.direct()
        .await
        .batch_execute("create role guest login")
        .await
        .unwrap();
    // guest is configured for trust: any password (or none) works
    let url = format!(
        "postgres://guest@127.0.0.1:{}/postgres",
        env.pake.pg_addr.port()
    );
    let c = pake::lab::postgres::connect(&url).await.unwrap();
    let v: String = c
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "guest");
    // pake (SCRAM by default) still needs its password
    let bad = env.url("postgres").replace(":pake@", ":nope@");
    assert!(pake::lab::postgres::connect(&bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_follow_the_client() {
    let env = Env::with(Opts {
        pool_size: 1,
        ..Opts::default()
    })
    .await;
    let a =
        pake::lab::postgres::connect(&format!("{}?application_name=alpha", env.url("postgres")))
            .await
            .unwrap();
    let b = pake::lab::postgres::connect(&format!(
        "{}?application_name=beta&options=-c%20search_path%3Dpg_catalog",
        env.url("postgres")
    ))
    .await
    .unwrap();
    for _ in 0..3 {
        // one server: it is re-set for each client in turn
        let name: String = a
            .query_one("show application_name", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "alpha");
        let sp: String = a.query_one("show search_path", &[]).await.unwrap().get(0);
        assert_eq!(sp, "\"$user\", public");
        let name: String = b
            .query_one("show application_name", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "beta");
        let sp: String = b.query_one("show search_path", &[]).await.unwrap().get(0);
        assert_eq!(sp, "pg_catalog");
    }
    // DISCARD ALL / DEALLOCATE ALL from a pooler-aware driver are answered for the client
    let s = a.prepare("select 1").await.unwrap();
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    assert!(
        a.query(&s, &[]).await.is_err(),
        "the statement is gone for this client"
    );
    a.batch_execute("DISCARD ALL").await.unwrap();
    let v: i32 = a.query_one("select 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
}

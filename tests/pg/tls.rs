//! TLS both ways: clients to Pake (psql, tokio-postgres with rustls), Pake to PostgreSQL
//! (require, verify-ca, verify-full), and a clear failure when channel binding is demanded.

use crate::harness::{pg_bin, Env, Opts};
use pake::lab::certs::Certs;
use pake::lab::{PgLab, PgOptions};
use pake::tls::{ClientTlsMode, ServerTlsMode};
use std::process::Command;
use std::sync::Arc;

fn psql(url: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new(pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c", sql])
        .arg(url)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn client_tls(certs: Arc<Certs>) -> Opts {
    Opts {
        tweak_lab: Some(Arc::new(move |c, _| {
            c.tls.client_tls_sslmode = ClientTlsMode::Require;
            c.tls.client_tls_cert_file = Some(certs.cert.clone());
            c.tls.client_tls_key_file = Some(certs.key.clone());
        })),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_tls_and_plaintext_refused() {
    let certs = Arc::new(
        tokio::task::spawn_blocking(Certs::generate)
            .await
            .unwrap()
            .unwrap(),
    );
    let env = Env::with(client_tls(certs.clone())).await;
    let base = env.url("postgres");
    let (ok, out, err) = tokio::task::block_in_place(|| {
        psql(&format!("{base}?sslmode=require"), "select 'tls works'")
    });
    assert!(ok, "{err}");
    assert_eq!(out, "tls works");
    // verify-full against the lab CA: the certificate names 127.0.0.1
    let (ok, _, err) = tokio::task::block_in_place(|| {
        psql(
            &format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                certs.ca.display()
            ),
            "select 1",
        )
    });
    assert!(ok, "{err}");
    // plaintext is refused with a clear message
    let (ok, _, err) =
        tokio::task::block_in_place(|| psql(&format!("{base}?sslmode=disable"), "select 1"));
    assert!(!ok);
    assert!(err.contains("SSL connection is required"), "{err}");
    // a client that demands channel binding fails clearly (Pake does not offer it)
    let (ok, _, err) = tokio::task::block_in_place(|| {
        psql(
            &format!("{base}?sslmode=require&channel_binding=require"),
            "select 1",
        )
    });
    assert!(!ok);
    assert!(err.to_lowercase().contains("channel binding"), "{err}");

    // tokio-postgres with rustls, verifying the CA
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(config);
    let (client, conn) = tokio_postgres::connect(&format!("{base}?sslmode=require"), tls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let v: i32 = client.query_one("select 21 * 2", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // and the extended protocol over TLS with a larger result
    let rows = client
        .query(
            "select g, repeat('z', 500) from generate_series(1, 2000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2000);
}

async fn server_tls_env(lab_tls: bool, mode: ServerTlsMode, ca: Option<std::path::PathBuf>) -> Env {
    Env::with(Opts {
        lab: PgOptions {
            tls: lab_tls,
            ..PgOptions::default()
        },
        tweak_lab: Some(Arc::new(move |c, lab: &PgLab| {
            c.tls.server_tls_sslmode = mode;
            c.tls.server_tls_ca_file = ca
                .clone()
                .or_else(|| lab.certs.as_ref().map(|certs| certs.ca.clone()));
        })),
        ..Opts::default()
    })
    .await
}

async fn server_sees_tls(env: &Env) -> Result<bool, tokio_postgres::Error> {
    let c = env.client().await;
    Ok(c.query_one(
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
        &[],
    )
    .await?
    .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pake_to_server_tls_modes() {
    let env = server_tls_env(true, ServerTlsMode::VerifyFull, None).await;
    assert!(
        server_sees_tls(&env).await.unwrap(),
        "verify-full: the server sees TLS"
    );
    let env = server_tls_env(true, ServerTlsMode::VerifyCa, None).await;
    assert!(server_sees_tls(&env).await.unwrap());
    let env = server_tls_env(true, ServerTlsMode::Require, None).await;
    assert!(server_sees_tls(&env).await.unwrap());
    // a CA that did not sign the server's certificate: no connection
    let other = tokio::task::spawn_blocking(Certs::generate)
        .await
        .unwrap()
        .unwrap();
    let env = server_tls_env(true, ServerTlsMode::VerifyFull, Some(other.ca.clone())).await;
    let e = pake::lab::postgres::connect(&env.url("postgres"))
        .await
        .expect_err("untrusted server");
    assert!(
        e.to_string().contains("08006") || e.to_string().contains("TLS"),
        "{e}"
    );
    // a server without TLS: require fails, prefer falls back to plaintext
    let env = server_tls_env(false, ServerTlsMode::Require, None).await;
    let e = pake::lab::postgres::connect(&env.url("postgres"))
        .await
        .expect_err("no TLS there");
    assert!(e.to_string().contains("TLS"), "{e}");
    let env = server_tls_env(false, ServerTlsMode::Prefer, None).await;
    assert!(
        !server_sees_tls(&env).await.unwrap(),
        "prefer: plaintext when the server has no TLS"
    );
}

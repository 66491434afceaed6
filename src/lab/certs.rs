//! Throwaway certificates for the lab: a CA and a server certificate for `localhost` and
//! `127.0.0.1` signed by it, made with the `openssl` command line in a temp dir. The
//! certificate is good for client authentication too: Redis Cluster nodes present it to
//! each other on the (always mutually authenticated) TLS cluster bus.

use super::LabError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files of a lab CA and a server certificate it signed.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| LabError::Missing(format!("openssl ({e})")))?;
    if !out.status.success() {
        return Err(LabError::Failed {
            what: format!("openssl {}", args.join(" ")),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

impl Certs {
    /// A fresh CA and server certificate (valid for localhost and 127.0.0.1).
    pub fn generate() -> Result<Certs, LabError> {
        let dir = tempfile::Builder::new().prefix("pake-lab-tls-").tempdir()?;
        let d = dir.path();
        std::fs::write(
            d.join("san.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=pake lab CA",
            ],
        )?;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        )?;
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
            ],
        )?;
        // PostgreSQL insists on a private key only its owner can read
        super::process::hand_over(d)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        Ok(Certs {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        })
    }
}

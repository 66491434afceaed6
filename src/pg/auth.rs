//! Client-facing authentication: Pake as the SCRAM-SHA-256 / md5 *server*.
//!
//! The expensive part of SCRAM (PBKDF2 over the password, 4096 rounds) is done once per user
//! when the config is loaded ([`Secret::from_config`]), not once per connection: a login costs
//! two HMACs and a hash. The exchange itself is sans-IO ([`ScramServer`]); the session feeds it
//! the client's messages and writes what it returns.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Authentication request codes (`R` message).
pub mod code {
    pub const OK: i32 = 0;
    pub const CLEARTEXT: i32 = 3;
    pub const MD5: i32 = 5;
    pub const SASL: i32 = 10;
    pub const SASL_CONTINUE: i32 = 11;
    pub const SASL_FINAL: i32 = 12;
}

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// How a client must prove who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    Md5,
    Trust,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::ScramSha256 => "scram-sha-256",
            Method::Md5 => "md5",
            Method::Trust => "trust",
        })
    }
}

/// SCRAM verifier parts, as PostgreSQL stores them in `pg_authid.rolpassword`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(..)")
    }
}

impl ScramSecret {
    /// Parse `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(verifier: &str) -> Option<ScramSecret> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: iterations.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?.try_into().ok()?,
            server_key: B64.decode(server).ok()?.try_into().ok()?,
        })
    }

    /// Derive a verifier from a plaintext password (random salt, 4096 iterations).
    pub fn from_password(password: &str) -> ScramSecret {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The library's output is always in the format parse() reads.
        ScramSecret::parse(&verifier).unwrap_or_else(|| ScramSecret::mock("fallback"))
    }

    /// A stable, unguessable secret for a user that does not exist, so a login attempt for an
    /// unknown user runs the same exchange and fails the same way as a wrong password.
    pub fn mock(user: &str) -> ScramSecret {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        let key = KEY.get_or_init(rand::random);
        let salt = hmac(key, &[user.as_bytes()])[..16].to_vec();
        ScramSecret {
            iterations: 4096,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

pub(super) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// What Pake knows about a configured user's password.
#[derive(Debug, Clone)]
pub struct Secret {
    /// Verifier for SCRAM logins, when the password allows one.
    pub scram: Option<ScramSecret>,
    /// `md5` + hex(md5(password ‖ user)), when the password allows md5 logins.
    pub md5: Option<String>,
    /// The plaintext, when configured as such; used to log in to servers as this user.
    pub plaintext: Option<String>,
}

impl Secret {
    /// From a config `password`: plaintext, `md5…` hash or `SCRAM-SHA-256$…` verifier.
    pub fn from_config(user: &str, password: &str) -> Secret {
        if let Some(scram) = ScramSecret::parse(password) {
            return Secret {
                scram: Some(scram),
                md5: None,
                plaintext: None,
            };
        }
        if password.len() == 35
            && password.starts_with("md5")
            && password[3..].bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Secret {
                scram: None,
                md5: Some(password.to_ascii_lowercase()),
                plaintext: None,
            };
        }
        Secret {
            scram: Some(ScramSecret::from_password(password)),
            md5: Some(postgres_protocol::password::md5(password.as_bytes(), user)),
            plaintext: Some(password.to_string()),
        }
    }
}

/// Why a login failed. Every variant is reported as 28P01 or 08P01 by the session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("unsupported SASL mechanism {0:?}: Pake offers SCRAM-SHA-256")]
    Mechanism(String),
    #[error(
        "channel binding is not supported by Pake: connect with channel_binding=disable or prefer"
    )]
    ChannelBinding,
    #[error(
        "user \"{user}\" cannot log in with {method}: its configured password does not allow it"
    )]
    MethodUnavailable { user: String, method: Method },
    #[error("expected a password message")]
    ExpectedPassword,
}

impl AuthError {
    /// Is this the client's malformed input (08P01) rather than a rejected login (28P01)?
    pub fn is_protocol_violation(&self) -> bool {
        matches!(
            self,
            AuthError::Malformed(_) | AuthError::Mechanism(_) | AuthError::ExpectedPassword
        )
    }
}

/// One SCRAM-SHA-256 exchange, server side.
pub struct ScramServer<'a> {
    user: &'a str,
    secret: &'a ScramSecret,
    /// Set for unknown users: run the exchange, then fail.
    doomed: bool,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
    /// The client's ClientKey, recovered from its proof once the proof checked out: what
    /// Pake logs in to servers with for a user whose password it only knows as a verifier
    /// (`auth_query`; see [`super::passthrough`]).
    client_key: Option<[u8; 32]>,
}

impl<'a> ScramServer<'a> {
    pub fn new(user: &'a str, secret: &'a ScramSecret, doomed: bool) -> Self {
        ScramServer {
            user,
            secret,
            doomed,
            client_first_bare: String::new(),
            server_first: String::new(),
            nonce: String::new(),
            gs2_header: String::new(),
            client_key: None,
        }
    }

    /// The ClientKey the client proved it has, after a successful [`ScramServer::finish`].
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.client_key
    }

    /// Handle SASLInitialResponse (`mechanism`, client-first-message); returns server-first.
    pub fn first(&mut self, mechanism: &[u8], client_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        if mechanism != SCRAM_SHA_256.as_bytes() {
            if mechanism == b"SCRAM-SHA-256-PLUS" {
                return Err(AuthError::ChannelBinding);
            }
            return Err(AuthError::Mechanism(
                String::from_utf8_lossy(mechanism).into_owned(),
            ));
        }
        let msg = std::str::from_utf8(client_first).map_err(|_| AuthError::Malformed("utf-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(AuthError::Malformed("gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(AuthError::ChannelBinding),
            _ => return Err(AuthError::Malformed("channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(AuthError::Malformed("gs2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::Malformed("authzid is not supported"));
        }
        self.gs2_header = format!("{flag},,");
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(AuthError::Malformed("client nonce"))?;
        let server_nonce: [u8; 18] = rand::random();
        self.nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        self.client_first_bare = bare.to_string();
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        Ok(self.server_first.clone().into_bytes())
    }

    /// Handle the client-final-message; returns server-final (`v=…`) when the proof is right.
    pub fn finish(&mut self, client_final: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| AuthError::Malformed("utf-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Malformed("missing proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let channel = channel.ok_or(AuthError::Malformed("missing channel binding"))?;
        if B64.decode(channel).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(AuthError::Malformed("channel binding mismatch"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(AuthError::Malformed("nonce mismatch"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(AuthError::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.secret.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = [0u8; 32];
        for (i, k) in client_key.iter_mut().enumerate() {
            *k = proof[i] ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let mut diff = 0u8;
        for (a, b) in stored.iter().zip(self.secret.stored_key.iter()) {
            diff |= a ^ b;
        }
        if diff != 0 || self.doomed {
            return Err(AuthError::Failed(self.user.to_string()));
        }
        self.client_key = Some(client_key);
        let server_signature = hmac(&self.secret.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// Check a plaintext password (admin HTTP API, Basic auth) against a user's secret.
pub fn verify_password(secret: &Secret, user: &str, password: &str) -> bool {
    if let Some(plain) = &secret.plaintext {
        return constant_eq(plain.as_bytes(), password.as_bytes());
    }
    if let Some(s) = &secret.scram {
        let salted = pbkdf2(password.as_bytes(), &s.salt, s.iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        return constant_eq(&stored, &s.stored_key);
    }
    if let Some(md5) = &secret.md5 {
        let mut h = Md5::new();
        h.update(password.as_bytes());
        h.update(user.as_bytes());
        return constant_eq(
            format!("md5{}", hex(&h.finalize())).as_bytes(),
            md5.as_bytes(),
        );
    }
    false
}

/// PBKDF2-HMAC-SHA256 with one 32-byte block (SCRAM's `Hi`).
fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &[0, 0, 0, 1]]);
    let mut out = u;
    for _ in 1..iterations.min(1_000_000) {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Check an md5 password message against the stored `md5…` hash and the salt sent.
pub fn md5_matches(stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let Some(inner) = stored.strip_prefix("md5") else {
        return false;
    };
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    let expected = format!("md5{}", hex(&h.finalize()));
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    expected.len() == response.len()
        && expected
            .as_bytes()
            .iter()
            .zip(response)
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Split a SASLInitialResponse body into (mechanism, data).
pub fn parse_sasl_initial(body: &[u8]) -> Result<(&[u8], &[u8]), AuthError> {
    let (mech, rest) = super::wire::cstr(body).ok_or(AuthError::Malformed("mechanism"))?;
    let (len, data) = super::wire::i32_at(rest).ok_or(AuthError::Malformed("length"))?;
    if len < 0 {
        return Ok((mech, &[]));
    }
    let data = data
        .get(..len as usize)
        .ok_or(AuthError::Malformed("length"))?;
    Ok((mech, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password_cfg: &str, client_password: &str) -> Result<(), AuthError> {
        let secret = Secret::from_config("alice", password_cfg);
        let scram = secret.scram.as_ref().unwrap();
        let mut server = ScramServer::new("alice", scram, false);
        let mut client =
            ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let server_first = server.first(SCRAM_SHA_256.as_bytes(), client.message())?;
        client.update(&server_first).unwrap();
        let server_final = server.finish(client.message())?;
        client
            .finish(&server_final)
            .expect("client verifies the server signature");
        Ok(())
    }

    #[test]
    fn scram_accepts_right_password_from_plaintext_and_verifier() {
        run("s3cret", "s3cret").unwrap();
        let verifier = postgres_protocol::password::scram_sha_256(b"s3cret");
        run(&verifier, "s3cret").unwrap();
    }

    #[test]
    fn scram_rejects_wrong_password() {
        assert_eq!(
            run("s3cret", "nope"),
            Err(AuthError::Failed("alice".into()))
        );
    }

    #[test]
    fn scram_unknown_user_always_fails() {
        let secret = ScramSecret::mock("ghost");
        assert_eq!(secret.salt, ScramSecret::mock("ghost").salt, "stable salt");
        let mut server = ScramServer::new("ghost", &secret, true);
        let mut client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let first = server.first(b"SCRAM-SHA-256", client.message()).unwrap();
        client.update(&first).unwrap();
        assert!(server.finish(client.message()).is_err());
    }

    #[test]
    fn scram_channel_binding_and_garbage() {
        let secret = ScramSecret::from_password("p");
        let mut s = ScramServer::new("u", &secret, false);
        assert_eq!(
            s.first(b"SCRAM-SHA-256", b"p=tls-server-end-point,,n=,r=abc"),
            Err(AuthError::ChannelBinding)
        );
        assert_eq!(
            s.first(b"SCRAM-SHA-256-PLUS", b"x"),
            Err(AuthError::ChannelBinding)
        );
        assert!(s.first(b"SCRAM-SHA-256", b"garbage").is_err());
        assert!(s.first(b"SCRAM-SHA-256", b"n,,n=,r=").is_err());
        s.first(b"SCRAM-SHA-256", b"n,,n=,r=abc").unwrap();
        assert!(s.finish(b"c=biws,r=wrong,p=AAAA").is_err());
        assert!(s.finish(b"no proof").is_err());
    }

    #[test]
    fn plaintext_passwords_check_against_every_secret_form() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let md5 = postgres_protocol::password::md5(b"pw", "bob");
        for cfg in ["pw", verifier.as_str(), md5.as_str()] {
            let s = Secret::from_config("bob", cfg);
            assert!(verify_password(&s, "bob", "pw"), "{cfg}");
            assert!(!verify_password(&s, "bob", "px"), "{cfg}");
        }
    }

    #[test]
    fn md5_roundtrip() {
        let secret = Secret::from_config("bob", "pw");
        let stored = secret.md5.unwrap();
        let salt = [1, 2, 3, 4];
        let resp = postgres_protocol::authentication::md5_hash(b"bob", b"pw", salt);
        assert!(md5_matches(&stored, salt, resp.as_bytes()));
        assert!(!md5_matches(&stored, [0, 0, 0, 0], resp.as_bytes()));
        let wrong = postgres_protocol::authentication::md5_hash(b"bob", b"px", salt);
        assert!(!md5_matches(&stored, salt, wrong.as_bytes()));
        // configured as an md5 hash directly
        let only = Secret::from_config("bob", &stored);
        assert!(only.scram.is_none() && only.plaintext.is_none());
        assert!(md5_matches(
            only.md5.as_deref().unwrap(),
            salt,
            resp.as_bytes()
        ));
    }

    #[test]
    fn sasl_initial_parsing() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend(5i32.to_be_bytes());
        body.extend(b"hello");
        assert_eq!(
            parse_sasl_initial(&body).unwrap(),
            (&b"SCRAM-SHA-256"[..], &b"hello"[..])
        );
        body.truncate(body.len() - 1);
        assert!(parse_sasl_initial(&body).is_err());
    }
}

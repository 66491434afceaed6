//! Logging in to servers as a user whose password Pake never sees: the users found through
//! `auth_query` (PgBouncer's pass-through authentication).
//!
//! Pake only holds what the server stores: a SCRAM verifier or an md5 hash. md5 needs nothing
//! more: the challenge answer is built from the stored hash. SCRAM needs the ClientKey, which a
//! verifier does not contain; Pake recovers it from a client's proof when that client logs in
//! (ClientProof XOR HMAC(StoredKey, AuthMessage), [`super::auth::ScramServer::client_key`])
//! and proves itself to the server with it. The server's salt and iteration count are the
//! verifier's, so the key fits until the password changes.
//!
//! A (database, user)'s pools share one [`Passthrough`], refreshed by every login, so servers
//! opened later (more load, `min_pool_size`, reconnects) log in with the latest key.

use super::auth::{hmac, Secret};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use md5::{Digest as _, Md5};
use parking_lot::Mutex;
use sha2::Sha256;
use std::sync::Arc;

/// What a SCRAM login to a server needs, without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    /// To check the server's signature: it knows the verifier too.
    pub server_key: [u8; 32],
    /// The verifier's salt and iteration count: a server offering others has another password.
    pub salt: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

/// The server credentials of one (database, user)'s pools for an `auth_query` user.
#[derive(Debug, Default)]
pub struct Passthrough {
    state: Mutex<Credentials>,
}

#[derive(Debug, Default, Clone)]
struct Credentials {
    md5: Option<String>,
    scram: Option<Arc<ScramKeys>>,
    /// When the secret these come from was looked up: a client checked against an older
    /// (cached) secret does not replace them, so a password change cannot be undone by a
    /// client still using the old password within the cache TTL.
    looked_up_at: Option<std::time::Instant>,
}

impl Passthrough {
    /// After a client logged in with `secret`, looked up at `looked_up_at` (and, over SCRAM,
    /// proved `client_key`).
    pub fn update(
        &self,
        secret: &Secret,
        client_key: Option<[u8; 32]>,
        looked_up_at: Option<std::time::Instant>,
    ) {
        let mut state = self.state.lock();
        if state.looked_up_at.is_some() && state.looked_up_at > looked_up_at {
            return;
        }
        let scram = match (&secret.scram, client_key) {
            (Some(s), Some(client_key)) => Some(Arc::new(ScramKeys {
                client_key,
                server_key: s.server_key,
                salt: s.salt.clone(),
                iterations: s.iterations,
            })),
            _ => None,
        };
        *state = Credentials {
            md5: secret.md5.clone(),
            scram,
            looked_up_at,
        };
    }

    /// Take `other`'s credentials when this holder has none yet (pools rebuilt by RELOAD).
    pub fn adopt(&self, other: &Passthrough) {
        let theirs = other.state.lock().clone();
        let mut state = self.state.lock();
        if state.md5.is_none() && state.scram.is_none() {
            *state = theirs;
        }
    }

    /// The stored `md5…` hash, for md5 challenges.
    pub fn md5(&self) -> Option<String> {
        self.state.lock().md5.clone()
    }

    pub fn scram(&self) -> Option<Arc<ScramKeys>> {
        self.state.lock().scram.clone()
    }
}

/// The answer to a server's md5 challenge from the stored `md5…` hash (what libpq computes
/// from the password: `md5` + md5(hex(md5(password ‖ user)) ‖ salt)).
pub fn md5_response(stored: &str, salt: [u8; 4]) -> Option<String> {
    let inner = stored.strip_prefix("md5")?;
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    let digest = h.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("md5");
    for b in digest {
        use std::fmt::Write;
        let _ = write!(out, "{b:02x}");
    }
    Some(out)
}

/// Why a pass-through SCRAM login failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PassError {
    #[error("malformed SCRAM message from the server: {0}")]
    Malformed(&'static str),
    #[error("the server's SCRAM salt or iteration count is not the looked-up verifier's: the password changed since the client logged in")]
    StaleKey,
    #[error("the server's SCRAM signature is wrong")]
    BadSignature,
    #[error("the server refused the SCRAM proof: {0}")]
    Refused(String),
}

/// One SCRAM-SHA-256 exchange as the client, with a ClientKey instead of a password
/// (sans-IO, like `postgres_protocol`'s `ScramSha256`: `message` / `update` / `finish`).
pub struct KeyScram {
    keys: Arc<ScramKeys>,
    client_nonce: String,
    message: Vec<u8>,
    auth_message: String,
}

impl KeyScram {
    pub fn new(keys: Arc<ScramKeys>) -> KeyScram {
        let nonce: [u8; 18] = rand::random();
        let client_nonce = B64.encode(nonce);
        KeyScram {
            keys,
            message: format!("n,,n=,r={client_nonce}").into_bytes(),
            client_nonce,
            auth_message: String::new(),
        }
    }

    /// The next message to send (client-first, then client-final).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Take the server-first message; builds the client-final one.
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), PassError> {
        let text = std::str::from_utf8(server_first).map_err(|_| PassError::Malformed("utf-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = Some(v);
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = Some(v);
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.client_nonce) && n.len() > self.client_nonce.len())
            .ok_or(PassError::Malformed("nonce"))?;
        let salt = salt
            .and_then(|s| B64.decode(s).ok())
            .ok_or(PassError::Malformed("salt"))?;
        let iterations: u32 = iterations
            .and_then(|i| i.parse().ok())
            .ok_or(PassError::Malformed("iteration count"))?;
        if salt != self.keys.salt || iterations != self.keys.iterations {
            return Err(PassError::StaleKey);
        }
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("n=,r={},{text},{without_proof}", self.client_nonce);
        let stored_key: [u8; 32] = Sha256::digest(self.keys.client_key).into();
        let signature = hmac(&stored_key, &[self.auth_message.as_bytes()]);
        let proof: Vec<u8> = self
            .keys
            .client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.message = format!("{without_proof},p={}", B64.encode(proof)).into_bytes();
        Ok(())
    }

    /// Check the server-final message (`v=` signature, or `e=` error).
    pub fn finish(&self, server_final: &[u8]) -> Result<(), PassError> {
        let text = std::str::from_utf8(server_final).map_err(|_| PassError::Malformed("utf-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(PassError::Refused(e.to_string()));
        }
        let verifier = text
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v.split(',').next().unwrap_or(v)).ok())
            .ok_or(PassError::Malformed("server signature"))?;
        let expected = hmac(&self.keys.server_key, &[self.auth_message.as_bytes()]);
        if verifier.as_slice() != expected.as_slice() {
            return Err(PassError::BadSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::auth::{ScramSecret, ScramServer, SCRAM_SHA_256};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// A client logs in to Pake (SCRAM server over the verifier); Pake keeps its ClientKey.
    fn client_key_from_login(secret: &ScramSecret, password: &str) -> Option<[u8; 32]> {
        let mut server = ScramServer::new("u", secret, false);
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let first = server
            .first(SCRAM_SHA_256.as_bytes(), client.message())
            .ok()?;
        client.update(&first).ok()?;
        server.finish(client.message()).ok()?;
        server.client_key()
    }

    fn keys(secret: &ScramSecret, client_key: [u8; 32]) -> Arc<ScramKeys> {
        Arc::new(ScramKeys {
            client_key,
            server_key: secret.server_key,
            salt: secret.salt.clone(),
            iterations: secret.iterations,
        })
    }

    #[test]
    fn recovered_client_key_logs_in_to_a_server_with_the_same_verifier() {
        let secret = ScramSecret::from_password("s3cret");
        let key = client_key_from_login(&secret, "s3cret").expect("login succeeds");
        assert!(client_key_from_login(&secret, "wrong").is_none());
        // the "server" holds the same verifier
        let mut server = ScramServer::new("u", &secret, false);
        let mut pass = KeyScram::new(keys(&secret, key));
        let first = server
            .first(SCRAM_SHA_256.as_bytes(), pass.message())
            .unwrap();
        pass.update(&first).unwrap();
        let fin = server
            .finish(pass.message())
            .expect("server accepts the proof");
        pass.finish(&fin)
            .expect("Pake accepts the server signature");
        assert_eq!(
            pass.finish(b"v=AAAA"),
            Err(PassError::BadSignature),
            "a forged server signature is refused"
        );
        assert!(matches!(
            pass.finish(b"e=invalid-proof"),
            Err(PassError::Refused(_))
        ));
    }

    #[test]
    fn a_changed_password_is_detected_by_its_new_salt() {
        let old = ScramSecret::from_password("old");
        let key = client_key_from_login(&old, "old").unwrap();
        let new = ScramSecret::from_password("new");
        let mut server = ScramServer::new("u", &new, false);
        let mut pass = KeyScram::new(keys(&old, key));
        let first = server
            .first(SCRAM_SHA_256.as_bytes(), pass.message())
            .unwrap();
        assert_eq!(pass.update(&first), Err(PassError::StaleKey));
        assert!(
            pass.update(b"r=zzz,s=AAAA,i=4096").is_err(),
            "foreign nonce"
        );
    }

    #[test]
    fn an_older_secret_does_not_replace_a_newer_one() {
        let t0 = std::time::Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        let (old, new) = (
            ScramSecret::from_password("old"),
            ScramSecret::from_password("new"),
        );
        let secret = |s: &ScramSecret| Secret {
            scram: Some(s.clone()),
            md5: None,
            plaintext: None,
        };
        let p = Passthrough::default();
        p.update(&secret(&new), Some([2; 32]), Some(t1));
        p.update(&secret(&old), Some([1; 32]), Some(t0));
        assert_eq!(p.scram().unwrap().client_key, [2; 32], "kept the newer key");
        p.update(&secret(&new), Some([3; 32]), Some(t1));
        assert_eq!(
            p.scram().unwrap().client_key,
            [3; 32],
            "same lookup: latest proof"
        );
        let q = Passthrough::default();
        q.adopt(&p);
        assert_eq!(q.scram().unwrap().salt, new.salt);
    }

    #[test]
    fn md5_answer_from_the_stored_hash_matches_libpq() {
        let stored = postgres_protocol::password::md5(b"pw", "bob");
        let salt = [9, 8, 7, 6];
        let libpq = postgres_protocol::authentication::md5_hash(b"bob", b"pw", salt);
        assert_eq!(md5_response(&stored, salt).as_deref(), Some(libpq.as_str()));
        assert_eq!(md5_response("SCRAM-SHA-256$x", salt), None);
    }
}

//! The console's sign-in: the bearer token is entered once and traded for a signed, expiring
//! session cookie; every state-changing form carries a CSRF token bound to that session.
//!
//! The signing key is derived from the token itself, so sessions hold across restarts and
//! across daemons sharing a token, and changing the token signs everyone out. Nothing secret
//! is in the cookie: it says who and with which role, until when, under an HMAC.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const COOKIE: &str = "rw_console";
/// How long a session lasts after sign-in.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// What a signed-in operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Signed in with `http.token`: sees and acts.
    Operator,
    /// Signed in with `http.read_only_token`: sees, changes nothing.
    ReadOnly,
}

impl Role {
    fn code(self) -> &'static str {
        match self {
            Self::Operator => "op",
            Self::ReadOnly => "ro",
        }
    }
}

/// A verified session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The name given at sign-in, for the audit.
    pub name: String,
    pub role: Role,
    /// Bound to this session: forms carry it back.
    pub csrf: String,
}

impl Session {
    /// As the audit names the operator.
    pub fn who(&self) -> String {
        match self.role {
            Role::Operator => format!("{} (console)", self.name),
            Role::ReadOnly => format!("{} (console, read-only)", self.name),
        }
    }
}

/// Signs and checks sessions.
pub struct Keys {
    key: Vec<u8>,
    /// SHA-256 of each token (`None`: not set), so a comparison takes the same time whatever
    /// the length of what is given.
    token: Option<[u8; 32]>,
    read_only_token: Option<[u8; 32]>,
}

fn digest(token: &str) -> Option<[u8; 32]> {
    (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into())
}

impl Keys {
    pub fn new(token: &str, read_only_token: &str) -> Self {
        let mut mac = mac(token.as_bytes());
        mac.update(b"renewal-worker console session v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
            token: digest(token),
            read_only_token: digest(read_only_token),
        }
    }

    /// The role a token given at sign-in grants, compared in constant time.
    pub fn role_of(&self, given: &str) -> Option<Role> {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let is = |t: &Option<[u8; 32]>| t.is_some_and(|t| bool::from(given.ct_eq(&t)));
        if is(&self.token) {
            Some(Role::Operator)
        } else if is(&self.read_only_token) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    fn sign(&self, what: &str) -> String {
        let mut m = mac(&self.key);
        m.update(what.as_bytes());
        B64.encode(m.finalize().into_bytes())
    }

    /// A new session's cookie value.
    pub fn issue(&self, name: &str, role: Role, now: DateTime<Utc>) -> String {
        // A nonce makes each sign-in a session of its own (and its CSRF token its own),
        // even for the same name in the same second.
        let body = format!(
            "{}.{}.{}.{}",
            role.code(),
            (now + LIFETIME).timestamp(),
            B64.encode(name.as_bytes()),
            B64.encode(rand::random::<[u8; 12]>())
        );
        let sig = self.sign(&body);
        format!("{body}.{sig}")
    }

    /// The session a cookie value stands for, if signed here and not expired.
    pub fn verify(&self, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let (body, sig) = cookie.rsplit_once('.')?;
        if !bool::from(self.sign(body).as_bytes().ct_eq(sig.as_bytes())) {
            return None;
        }
        let mut parts = body.split('.');
        let role = match parts.next()? {
            "op" => Role::Operator,
            "ro" => Role::ReadOnly,
            _ => return None,
        };
        let expires: i64 = parts.next()?.parse().ok()?;
        if now.timestamp() >= expires {
            return None;
        }
        let name = String::from_utf8(B64.decode(parts.next()?).ok()?).ok()?;
        Some(Session {
            name,
            role,
            csrf: self.sign(&format!("csrf:{sig}")),
        })
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// The value of the cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_session_holds_until_it_expires_and_only_under_its_key() {
        let keys = Keys::new("operator-token-0123456789", "reader-token-0123456789");
        let now = at("2026-12-01T12:00:00Z");
        let c = keys.issue("ann <b>", Role::Operator, now);
        let s = keys.verify(&c, now).unwrap();
        assert_eq!((s.name.as_str(), s.role), ("ann <b>", Role::Operator));
        assert!(keys.verify(&c, now + LIFETIME).is_none());
        let other = Keys::new("another-token-0123456789", "");
        assert!(other.verify(&c, now).is_none());
        // A role changed by hand breaks the signature.
        assert!(keys.verify(&c.replacen("op.", "ro.", 1), now).is_none());
        assert_eq!(
            keys.role_of("reader-token-0123456789"),
            Some(Role::ReadOnly)
        );
        assert_eq!(
            keys.role_of("operator-token-0123456789"),
            Some(Role::Operator)
        );
        assert_eq!(keys.role_of("operator-token-012345678"), None);
        assert_eq!(Keys::new("t-0123456789abcdef", "").role_of(""), None);
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let keys = Keys::new("operator-token-0123456789", "");
        let now = at("2026-12-01T12:00:00Z");
        let a = keys
            .verify(&keys.issue("a", Role::Operator, now), now)
            .unwrap();
        let b = keys
            .verify(&keys.issue("a", Role::Operator, now), now)
            .unwrap();
        assert_ne!(a.csrf, b.csrf);
    }
}

//! Console sessions and the checks that keep another site from acting
//! through a signed-in browser.
//!
//! A session is a random id in an `HttpOnly; SameSite=Strict` cookie scoped
//! to `/console`, kept in this process's memory with a fixed lifetime: a
//! restart signs everyone out, which for a handful of approvers is cheaper
//! than a session store. Each session has its own CSRF token, which the
//! console's script reads from `/console/api/session` (same-origin only)
//! and sends back as a header on every change; the header also proves the
//! request came from script, which a cross-site form cannot add.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{COOKIE, HOST, ORIGIN};
use http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};

pub const COOKIE_NAME: &str = "tollgate_console";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A working day: long enough not to sign an approver out mid-shift,
/// short enough that a forgotten browser does not stay an approver.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at once; past it the one closest to expiry goes. Bounds
/// the memory a flood of logins with a valid token could take.
const MAX_SESSIONS: usize = 256;
const RANDOM_BYTES: usize = 32;

/// A signed-in approver, as one request sees it.
#[derive(Clone)]
pub struct SignedIn {
    pub approver: String,
    pub csrf: String,
    pub expires: Instant,
    key: [u8; 32],
}

struct Session {
    approver: String,
    csrf: String,
    expires: Instant,
}

pub struct Sessions {
    /// Keyed by the SHA-256 of the cookie value: a lookup's timing says
    /// nothing about the ids kept, and a dump of memory holds no cookie.
    open: Mutex<HashMap<[u8; 32], Session>>,
    random: SystemRandom,
    ttl: Duration,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            open: Mutex::new(HashMap::new()),
            random: SystemRandom::new(),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn random(&self) -> Option<String> {
        let mut bytes = [0u8; RANDOM_BYTES];
        self.random.fill(&mut bytes).ok()?;
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A new session for `approver`: the cookie value and what it signs
    /// in. Always a fresh id, so an id planted before login is worthless.
    pub fn open(&self, approver: &str) -> Option<(String, SignedIn)> {
        let id = self.random()?;
        let csrf = self.random()?;
        let expires = Instant::now() + self.ttl;
        let key = sha256(id.as_bytes());
        let mut open = self.lock();
        let now = Instant::now();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                open.remove(&oldest);
            }
        }
        open.insert(
            key,
            Session {
                approver: approver.to_string(),
                csrf: csrf.clone(),
                expires,
            },
        );
        Some((
            id,
            SignedIn {
                approver: approver.to_string(),
                csrf,
                expires,
                key,
            },
        ))
    }

    /// The session the request's cookie names, if it is open.
    pub fn find(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let id = cookie(headers)?;
        let key = sha256(id.as_bytes());
        let mut open = self.lock();
        let session = open.get(&key)?;
        if session.expires <= Instant::now() {
            open.remove(&key);
            return None;
        }
        Some(SignedIn {
            approver: session.approver.clone(),
            csrf: session.csrf.clone(),
            expires: session.expires,
            key,
        })
    }

    pub fn is_open(&self, signed: &SignedIn) -> bool {
        signed.expires > Instant::now() && self.lock().contains_key(&signed.key)
    }

    pub fn close(&self, signed: &SignedIn) {
        self.lock().remove(&signed.key);
    }
}

/// `Set-Cookie` for a new session. No `Secure`: the admin listener speaks
/// plain HTTP (on loopback by default); see docs/console.md.
pub fn set_cookie(id: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}",
        ttl.as_secs()
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0")
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE_NAME && !value.is_empty()).then_some(value)
        })
}

/// The request carries the session's CSRF token. Compared as digests
/// folded without an early exit, so timing says nothing about the token.
pub fn csrf_matches(signed: &SignedIn, headers: &HeaderMap) -> bool {
    let Some(sent) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (a, b) = (sha256(sent.as_bytes()), sha256(signed.csrf.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A browser says where a request came from: `Sec-Fetch-Site` (every
/// current browser, on every request) and `Origin` (on every POST). A
/// change is refused when either names another site. A client sending
/// neither is not a browser, and a forged request needs a browser to
/// carry someone else's cookie.
pub fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let site = headers.get("sec-fetch-site");
    if site.is_some_and(|s| s.as_bytes() != b"same-origin") {
        return Err("the request came from another site (Sec-Fetch-Site)");
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    if origin.as_bytes() == b"null" {
        // What a browser sends from a page whose referrer policy is
        // `no-referrer`, as the console's own pages are; other sites can
        // send it too, so only the fetch metadata can vouch for it.
        return match site {
            Some(_) => Ok(()),
            None => Err("the request's origin is hidden and nothing says it is this site"),
        };
    }
    let host = headers.get(HOST).map(|h| h.as_bytes());
    // Scheme left aside: one host and port serve one thing, and a TLS
    // terminator in front changes the scheme the browser saw.
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority.as_bytes());
    if authority.is_none() || authority != host {
        return Err("the request came from another origin (Origin)");
    }
    Ok(())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_cookie_finds_its_session_until_closed() {
        let sessions = Sessions::new(SESSION_TTL);
        let (id, signed) = sessions.open("alice").unwrap();
        let with = |value: String| headers(&[("cookie", &value)]);
        let found = sessions
            .find(&with(format!("a=b; {COOKIE_NAME}={id}")))
            .unwrap();
        assert_eq!(found.approver, "alice");
        assert!(sessions
            .find(&with(format!("{COOKIE_NAME}={id}x")))
            .is_none());
        assert!(sessions.find(&with(format!("other={id}"))).is_none());
        sessions.close(&signed);
        assert!(sessions
            .find(&with(format!("{COOKIE_NAME}={id}")))
            .is_none());
        assert!(!sessions.is_open(&signed));
    }

    #[test]
    fn an_expired_session_is_gone() {
        let sessions = Sessions::new(Duration::ZERO);
        let (id, _) = sessions.open("alice").unwrap();
        let cookie = format!("{COOKIE_NAME}={id}");
        assert!(sessions.find(&headers(&[("cookie", &cookie)])).is_none());
    }

    #[test]
    fn csrf_token_must_be_sent_exactly() {
        let sessions = Sessions::new(SESSION_TTL);
        let (_, signed) = sessions.open("alice").unwrap();
        assert!(csrf_matches(
            &signed,
            &headers(&[(CSRF_HEADER, &signed.csrf)])
        ));
        let off = format!("{}x", signed.csrf);
        assert!(!csrf_matches(&signed, &headers(&[(CSRF_HEADER, &off)])));
        assert!(!csrf_matches(&signed, &HeaderMap::new()));
    }

    #[test]
    fn another_site_is_refused() {
        let host = ("host", "127.0.0.1:9901");
        assert!(same_origin(&headers(&[host])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9901")])).is_ok());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
        let hidden = ("origin", "null");
        assert!(same_origin(&headers(&[host, hidden, ("sec-fetch-site", "same-origin")])).is_ok());
        for bad in [
            &[host, ("origin", "http://evil.example")][..],
            &[host, ("origin", "http://127.0.0.1:9902")],
            &[host, hidden],
            &[host, hidden, ("sec-fetch-site", "cross-site")],
            &[host, ("sec-fetch-site", "cross-site")],
            &[host, ("sec-fetch-site", "same-site")],
            &[host, ("sec-fetch-site", "none")],
        ] {
            assert!(same_origin(&headers(bad)).is_err(), "{bad:?}");
        }
    }
}

//! Viewer authentication: the relay challenges viewers inside the tunnel with RTSP `401`, as a
//! camera would, so FFmpeg (`rtsp://user:pass@relay/...`), GStreamer (`user-id`/`user-pw`) and
//! live555 clients authenticate the way they already know.
//!
//! Users are stored as HA1 = MD5(user:realm:password) (RFC 2617), which verifies Digest
//! responses and Basic passwords alike without the relay ever holding a password. Basic is
//! offered and accepted only over TLS. Nonces are per session, random, and expire; an expired
//! nonce gets a fresh challenge with `stale=true` so clients retry without asking the user.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;

use super::digest::{Params, md5_hex};
use super::rng::Rng;
use super::rtsp::Message;

/// The configured viewers, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    pub realm: String,
    /// Lower-case hex HA1 per user name.
    ha1: HashMap<String, String>,
}

impl Users {
    pub fn new(realm: &str) -> Users {
        Users { realm: realm.to_owned(), ha1: HashMap::new() }
    }

    /// Adds a user by HA1 (32 hex digits).
    pub fn insert(&mut self, name: &str, ha1_hex: &str) -> Result<(), String> {
        if ha1_hex.len() != 32 || !ha1_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("user {name:?}: ha1 must be 32 hex digits (MD5 of user:realm:password)"));
        }
        self.ha1.insert(name.to_owned(), ha1_hex.to_ascii_lowercase());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.ha1.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ha1.contains_key(name)
    }

    fn ha1(&self, name: &str) -> Option<&str> {
        self.ha1.get(name).map(String::as_str)
    }
}

/// HA1 as stored in the configuration: hex MD5 of `user:realm:password`.
pub fn ha1_hex(user: &str, realm: &str, password: &str) -> String {
    md5_hex(&format!("{user}:{realm}:{password}"))
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a viewer was not let in: `relay_auth_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No `Authorization` header (the normal first step: the client learns the challenge).
    NoCredentials,
    UnknownUser,
    /// Wrong password or Digest response.
    BadCredentials,
    /// A known user not in this route's list.
    NotAllowed,
    /// A Digest response over a nonce this session did not issue or that expired.
    StaleNonce,
    /// Basic credentials on a connection without TLS.
    BasicWithoutTls,
    Malformed,
    /// A Digest `uri=` other than the request's URI (a response replayed onto another request).
    UriMismatch,
}

/// One session's side of viewer authentication.
#[derive(Debug, Clone)]
pub struct ViewerAuth {
    tls: bool,
    nonce: String,
    issued: Instant,
    ttl: Duration,
    /// Draws the nonces.
    rng: Rng,
}

impl ViewerAuth {
    /// `seed`: randomness from the shell, for nonces. `tls`: the viewer's connection is TLS.
    pub fn new(seed: u64, tls: bool, ttl: Duration, now: Instant) -> ViewerAuth {
        let mut a = ViewerAuth { tls, nonce: String::new(), issued: now, ttl, rng: Rng::new(seed) };
        a.renew(now);
        a
    }

    /// Whether the connections the credentials travel on are all TLS now (a tunnel's POST may
    /// be rebound from another listener).
    pub fn set_tls(&mut self, tls: bool) {
        self.tls = tls;
    }

    fn renew(&mut self, now: Instant) {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        self.nonce = format!("{a:016x}{b:016x}");
        self.issued = now;
    }

    /// Checks a viewer's request against the configured users and the route's allowed list
    /// (`None`: any configured user). Returns the user name.
    pub fn verify(
        &mut self,
        req: &Message,
        users: &Users,
        allowed: Option<&[String]>,
        now: Instant,
    ) -> Result<String, AuthFailure> {
        let Some(header) = req.header("Authorization") else {
            return Err(AuthFailure::NoCredentials);
        };
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
        let user = if scheme.eq_ignore_ascii_case("Digest") {
            self.verify_digest(rest, req, users, now)?
        } else if scheme.eq_ignore_ascii_case("Basic") {
            if !self.tls {
                return Err(AuthFailure::BasicWithoutTls);
            }
            verify_basic(rest, users)?
        } else {
            return Err(AuthFailure::Malformed);
        };
        if allowed.is_some_and(|list| !list.contains(&user)) {
            return Err(AuthFailure::NotAllowed);
        }
        Ok(user)
    }

    fn verify_digest(
        &mut self,
        params: &str,
        req: &Message,
        users: &Users,
        now: Instant,
    ) -> Result<String, AuthFailure> {
        let p = Params::parse(params);
        let get = |k: &str| p.get(k);
        let (Some(user), Some(nonce), Some(uri), Some(response)) =
            (get("username"), get("nonce"), get("uri"), get("response"))
        else {
            return Err(AuthFailure::Malformed);
        };
        if !digest_uri_matches(uri, req.uri().unwrap_or("")) {
            return Err(AuthFailure::UriMismatch);
        }
        let Some(ha1) = users.ha1(user) else { return Err(AuthFailure::UnknownUser) };
        if get("realm").is_some_and(|r| r != users.realm) {
            return Err(AuthFailure::BadCredentials);
        }
        if get("algorithm").is_some_and(|a| !a.eq_ignore_ascii_case("MD5")) {
            return Err(AuthFailure::Malformed);
        }
        let method = req.method().unwrap_or("");
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some(qop) => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return Err(AuthFailure::Malformed);
                };
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
            }
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
        };
        if !constant_time_eq(expected.as_bytes(), response.to_ascii_lowercase().as_bytes()) {
            return Err(AuthFailure::BadCredentials);
        }
        // Right password, but over a nonce we did not issue or that expired: the client
        // retries with the fresh one (`stale=true`) without asking its user again.
        if nonce != self.nonce || now.saturating_duration_since(self.issued) > self.ttl {
            return Err(AuthFailure::StaleNonce);
        }
        Ok(user.to_owned())
    }

    /// The `WWW-Authenticate` values of a 401: Digest always, Basic only over TLS. A stale or
    /// expired nonce is replaced first.
    pub fn challenge(&mut self, users: &Users, stale: bool, now: Instant) -> Vec<String> {
        if stale || now.saturating_duration_since(self.issued) > self.ttl {
            self.renew(now);
        }
        let realm = &users.realm;
        let stale = if stale { ", stale=true" } else { "" };
        let mut v = vec![format!("Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5{stale}", self.nonce)];
        if self.tls {
            v.push(format!("Basic realm=\"{realm}\""));
        }
        v
    }
}

/// RFC 7616 §3.4: the `uri` directive is the request target. Clients spell it as they spelled
/// the request line, or (some) as its path and query alone.
fn digest_uri_matches(directive: &str, request_uri: &str) -> bool {
    if directive == request_uri {
        return true;
    }
    directive.starts_with('/') && super::rtsp_url::RtspUrl::parse(request_uri).path_and_query() == directive
}

fn verify_basic(token: &str, users: &Users) -> Result<String, AuthFailure> {
    let raw = base64::engine::general_purpose::STANDARD.decode(token.trim()).map_err(|_| AuthFailure::Malformed)?;
    let text = String::from_utf8(raw).map_err(|_| AuthFailure::Malformed)?;
    let (user, pass) = text.split_once(':').ok_or(AuthFailure::Malformed)?;
    let Some(ha1) = users.ha1(user) else { return Err(AuthFailure::UnknownUser) };
    if constant_time_eq(ha1_hex(user, &users.realm, pass).as_bytes(), ha1.as_bytes()) {
        Ok(user.to_owned())
    } else {
        Err(AuthFailure::BadCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let mut u = Users::new("relay");
        u.insert("alice", &ha1_hex("alice", "relay", "wonderland")).unwrap();
        u.insert("bob", &ha1_hex("bob", "relay", "builder")).unwrap();
        u
    }

    fn req_with(auth: Option<&str>) -> Message {
        let mut m = Message::request("DESCRIBE", "rtsp://relay/cam1");
        if let Some(a) = auth {
            m.set_header("Authorization", a);
        }
        m
    }

    fn digest(user: &str, pass: &str, nonce: &str, qop: bool) -> String {
        let ha1 = ha1_hex(user, "relay", pass);
        let ha2 = md5_hex("DESCRIBE:rtsp://relay/cam1");
        if qop {
            let r = md5_hex(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
            format!(
                "Digest username=\"{user}\", realm=\"relay\", nonce=\"{nonce}\", uri=\"rtsp://relay/cam1\", response=\"{r}\", qop=auth, nc=00000001, cnonce=\"abc\""
            )
        } else {
            let r = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
            format!(
                "Digest username=\"{user}\", realm=\"relay\", nonce=\"{nonce}\", uri=\"rtsp://relay/cam1\", response=\"{r}\""
            )
        }
    }

    fn nonce_of(challenge: &str) -> String {
        Params::parse(challenge.strip_prefix("Digest ").unwrap()).get("nonce").unwrap().to_owned()
    }

    #[test]
    fn a_digest_response_for_another_uri_is_refused() {
        let u = users();
        let now = crate::test_fixtures::t0();
        let mut a = ViewerAuth::new(7, false, Duration::from_secs(60), now);
        let nonce = nonce_of(&a.challenge(&u, false, now)[0]);
        let header = digest("alice", "wonderland", &nonce, true);
        let mut other = Message::request("DESCRIBE", "rtsp://relay/cam2");
        other.set_header("Authorization", &header);
        assert_eq!(a.verify(&other, &u, None, now), Err(AuthFailure::UriMismatch));
        // The same response on its own request passes; the path-only spelling of the URI too.
        assert_eq!(a.verify(&req_with(Some(&header)), &u, None, now), Ok("alice".to_owned()));
        assert!(digest_uri_matches("/cam1", "rtsp://relay:8080/cam1"));
        assert!(!digest_uri_matches("/cam1", "rtsp://relay:8080/cam1/trackID=1"));
        assert!(!digest_uri_matches("rtsp://relay/cam1", "rtsp://relay/cam1/../cam2"));
    }

    #[test]
    fn ha1_matches_rfc_2617() {
        // RFC 2617 §3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let ha1 = ha1_hex("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
    }

    #[test]
    fn digest_with_and_without_qop_lets_the_right_user_in() {
        let now = crate::test_fixtures::t0();
        let mut a = ViewerAuth::new(7, false, Duration::from_secs(60), now);
        let u = users();
        let ch = a.challenge(&u, false, now);
        assert_eq!(ch.len(), 1, "no Basic without TLS: {ch:?}");
        let nonce = nonce_of(&ch[0]);
        for qop in [false, true] {
            let r = a.verify(&req_with(Some(&digest("alice", "wonderland", &nonce, qop))), &u, None, now);
            assert_eq!(r, Ok("alice".to_owned()));
        }
        let r = a.verify(&req_with(Some(&digest("alice", "wrong", &nonce, false))), &u, None, now);
        assert_eq!(r, Err(AuthFailure::BadCredentials));
        let r = a.verify(&req_with(Some(&digest("mallory", "x", &nonce, false))), &u, None, now);
        assert_eq!(r, Err(AuthFailure::UnknownUser));
        let only_bob = ["bob".to_owned()];
        let r = a.verify(&req_with(Some(&digest("alice", "wonderland", &nonce, false))), &u, Some(&only_bob), now);
        assert_eq!(r, Err(AuthFailure::NotAllowed));
        assert_eq!(a.verify(&req_with(None), &u, None, now), Err(AuthFailure::NoCredentials));
    }

    #[test]
    fn expired_or_foreign_nonces_are_stale_and_renewed() {
        let now = crate::test_fixtures::t0();
        let mut a = ViewerAuth::new(7, false, Duration::from_secs(30), now);
        let u = users();
        let nonce = nonce_of(&a.challenge(&u, false, now)[0]);
        let later = now + Duration::from_secs(31);
        let r = a.verify(&req_with(Some(&digest("alice", "wonderland", &nonce, false))), &u, None, later);
        assert_eq!(r, Err(AuthFailure::StaleNonce));
        let ch = a.challenge(&u, true, later);
        assert!(ch[0].ends_with("stale=true"));
        let fresh = nonce_of(&ch[0]);
        assert_ne!(fresh, nonce);
        let r = a.verify(&req_with(Some(&digest("alice", "wonderland", &fresh, false))), &u, None, later);
        assert_eq!(r, Ok("alice".to_owned()));
        let r = a.verify(&req_with(Some(&digest("alice", "wonderland", "0123", false))), &u, None, later);
        assert_eq!(r, Err(AuthFailure::StaleNonce));
    }

    #[test]
    fn basic_only_over_tls() {
        let now = crate::test_fixtures::t0();
        let u = users();
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:builder"));
        let mut plain = ViewerAuth::new(1, false, Duration::from_secs(60), now);
        assert_eq!(plain.verify(&req_with(Some(&basic)), &u, None, now), Err(AuthFailure::BasicWithoutTls));
        let mut tls = ViewerAuth::new(1, true, Duration::from_secs(60), now);
        assert!(tls.challenge(&u, false, now).iter().any(|c| c == "Basic realm=\"relay\""));
        assert_eq!(tls.verify(&req_with(Some(&basic)), &u, None, now), Ok("bob".to_owned()));
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("bob:nope"));
        assert_eq!(tls.verify(&req_with(Some(&wrong)), &u, None, now), Err(AuthFailure::BadCredentials));
        assert_eq!(tls.verify(&req_with(Some("Basic !!!")), &u, None, now), Err(AuthFailure::Malformed));
    }

    #[test]
    fn malformed_headers_never_panic() {
        let now = crate::test_fixtures::t0();
        let u = users();
        let mut a = ViewerAuth::new(1, false, Duration::from_secs(60), now);
        for h in [
            "",
            "Digest",
            "Digest username=",
            "Digest ,,,,",
            "Bearer x",
            "Digest username=\"alice",
            "Digest username=alice, nonce=x, uri=y",
        ] {
            let r = a.verify(&req_with(Some(h)), &u, None, now);
            assert!(r.is_err(), "{h:?}");
        }
        assert!(Users::new("r").insert("x", "nothex").is_err());
    }
}

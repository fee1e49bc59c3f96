//! The relay's own authentication towards a camera: on a 401 the relay answers
//! the challenge (Digest, with or without qop; Basic) over the *rewritten* URI and retries.
//! Camera credentials never leave the relay.

use super::digest::{Params, md5_hex};
use super::rng::Rng;
use super::rtsp::Message;

/// Credentials taken from a route's upstream URL (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub pass: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("pass", &"***").finish()
    }
}

/// What to do after a camera's 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthVerdict {
    /// A new challenge (or a stale nonce): resend the request with fresh `Authorization`.
    Retry,
    /// These credentials were already refused for this challenge (or no usable challenge): give up.
    GiveUp,
}

/// A challenge the camera sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Digest { realm: String, nonce: String, opaque: Option<String>, qop_auth: bool, sess: bool },
}

/// Per-session client authentication state towards one camera.
#[derive(Debug, Clone)]
pub struct UpstreamAuth {
    creds: Credentials,
    challenge: Option<Challenge>,
    /// Nonce count for qop=auth (RFC 2617 §3.2.2).
    nc: u32,
    /// Draws the cnonces.
    rng: Rng,
    /// Retries made after an authorized request was refused with a new nonce.
    renewals: u32,
}

/// The best usable challenge among the camera's `WWW-Authenticate` headers (Digest over Basic)
/// and whether it declared the previous nonce stale.
fn best_challenge(resp: &Message) -> Option<(Challenge, bool)> {
    let mut basic = None;
    for value in resp.headers_named("WWW-Authenticate") {
        let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        if scheme.eq_ignore_ascii_case("Digest") {
            let p = Params::parse(params);
            let get = |k: &str| p.get(k).map(str::to_owned);
            let algorithm = get("algorithm").unwrap_or_else(|| "MD5".into()).to_ascii_uppercase();
            if algorithm != "MD5" && algorithm != "MD5-SESS" {
                continue;
            }
            let (Some(realm), Some(nonce)) = (get("realm"), get("nonce")) else { continue };
            let qop_auth = get("qop").is_some_and(|q| q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")));
            let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
            let c = Challenge::Digest { realm, nonce, opaque: get("opaque"), qop_auth, sess: algorithm == "MD5-SESS" };
            return Some((c, stale));
        }
        if scheme.eq_ignore_ascii_case("Basic") {
            basic = Some((Challenge::Basic, false));
        }
    }
    basic
}

impl UpstreamAuth {
    /// `cnonce_seed` is randomness from the shell (proto reads no entropy source itself).
    pub fn new(creds: Credentials, cnonce_seed: u64) -> Self {
        UpstreamAuth { creds, challenge: None, nc: 0, rng: Rng::new(cnonce_seed), renewals: 0 }
    }

    /// Digests a camera's 401 response. `was_authorized`: the refused request already carried
    /// our `Authorization`.
    pub fn on_unauthorized(&mut self, resp: &Message, was_authorized: bool) -> AuthVerdict {
        let Some((challenge, stale)) = best_challenge(resp) else { return AuthVerdict::GiveUp };
        let verdict = if !was_authorized || stale {
            AuthVerdict::Retry
        } else if self.challenge.as_ref() == Some(&challenge) || matches!(challenge, Challenge::Basic) {
            // Our answer to this very challenge was refused: the credentials are wrong.
            AuthVerdict::GiveUp
        } else if self.renewals < 2 {
            // A new nonce without `stale`: some cameras rotate nonces per request. Try a
            // bounded number of times so a camera that always changes it cannot loop us.
            self.renewals += 1;
            AuthVerdict::Retry
        } else {
            AuthVerdict::GiveUp
        };
        if let Challenge::Digest { nonce, .. } = &challenge {
            if !matches!(&self.challenge, Some(Challenge::Digest { nonce: n, .. }) if n == nonce) {
                self.nc = 0;
            }
        }
        self.challenge = Some(challenge);
        verdict
    }

    /// The camera accepted an authorized request: the next unannounced nonce change is a fresh
    /// rotation, not a refusal, so the renewal budget starts over.
    pub fn on_accepted(&mut self) {
        self.renewals = 0;
    }

    /// Adds `Authorization` to a request about to go to the camera, if a challenge is known.
    /// Returns whether it did.
    pub fn authorize(&mut self, req: &mut Message) -> bool {
        let Some(challenge) = &self.challenge else { return false };
        let value = match challenge {
            Challenge::Basic => {
                use base64::Engine;
                let token = format!("{}:{}", self.creds.user, self.creds.pass);
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(token))
            }
            Challenge::Digest { realm, nonce, opaque, qop_auth, sess } => {
                let method = req.method().unwrap_or("");
                let uri = req.uri().unwrap_or("");
                self.nc += 1;
                let nc = format!("{:08x}", self.nc);
                let cnonce = format!("{:016x}", self.rng.next_u64());
                let mut ha1 = md5_hex(&format!("{}:{realm}:{}", self.creds.user, self.creds.pass));
                if *sess {
                    ha1 = md5_hex(&format!("{ha1}:{nonce}:{cnonce}"));
                }
                let ha2 = md5_hex(&format!("{method}:{uri}"));
                let mut v = format!(
                    "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\"",
                    self.creds.user
                );
                if *qop_auth {
                    let response = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
                    v.push_str(&format!(", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
                } else {
                    let response = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
                    v.push_str(&format!(", response=\"{response}\""));
                    if *sess {
                        // MD5-sess hashes the cnonce into HA1: the camera needs it even without qop.
                        v.push_str(&format!(", cnonce=\"{cnonce}\""));
                    }
                }
                if *sess {
                    v.push_str(", algorithm=MD5-sess");
                }
                if let Some(o) = opaque {
                    v.push_str(&format!(", opaque=\"{o}\""));
                }
                v
            }
        };
        req.set_header("Authorization", value);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtsp::{MessageLimits, parse_message};

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials { user: user.into(), pass: pass.into() }
    }

    fn unauthorized(challenges: &[&str]) -> Message {
        let mut m = Message::response(401, "Unauthorized");
        for c in challenges {
            m.headers.push(("WWW-Authenticate".into(), (*c).into()));
        }
        m
    }

    fn param(req: &Message, k: &str) -> String {
        let p = Params::parse(req.header("Authorization").unwrap().strip_prefix("Digest ").unwrap());
        p.get(k).unwrap_or_default().to_owned()
    }

    #[test]
    fn rfc_2617_example_without_qop() {
        // RFC 2617 §3.5 computes this response with qop; without qop the legacy formula holds:
        // MD5(HA1:nonce:HA2) with HA1 939e7578ed9e3c518a452acee763bce9 for Mufasa.
        let mut a = UpstreamAuth::new(creds("Mufasa", "Circle Of Life"), 1);
        let ch = unauthorized(&[
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        ]);
        assert_eq!(a.on_unauthorized(&ch, false), AuthVerdict::Retry);
        let mut req = Message::request("GET", "/dir/index.html");
        assert!(a.authorize(&mut req));
        let ha2 = md5_hex("GET:/dir/index.html");
        let expected = md5_hex(&format!("939e7578ed9e3c518a452acee763bce9:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}"));
        assert_eq!(param(&req, "response"), expected);
        assert_eq!(param(&req, "opaque"), "5ccc069c403ebaf9f0171e9517f40e41");
    }

    #[test]
    fn rfc_2617_example_with_qop() {
        // RFC 2617 §3.5: with cnonce 0a4f113b and nc 00000001 the response is
        // 6629fae49393a05397450978507c4ef1. Check the formula with the RFC's cnonce.
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let r = md5_hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        // And the client uses that formula with its own cnonce and counting nc.
        let mut a = UpstreamAuth::new(creds("Mufasa", "Circle Of Life"), 7);
        a.on_unauthorized(&unauthorized(&["Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\""]), false);
        for n in 1..=2u32 {
            let mut req = Message::request("GET", "/dir/index.html");
            a.authorize(&mut req);
            let (nc, cnonce) = (param(&req, "nc"), param(&req, "cnonce"));
            assert_eq!(nc, format!("{n:08x}"));
            let want = md5_hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{nc}:{cnonce}:auth:{ha2}"));
            assert_eq!(param(&req, "response"), want);
            assert_eq!(param(&req, "qop"), "auth");
        }
    }

    #[test]
    fn a_real_camera_challenge_and_the_give_up_path() {
        let bytes = crate::test_fixtures::bytes("cameras/longse_unauthorized.txt");
        let resp = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
        let mut a = UpstreamAuth::new(creds("admin", "pw"), 3);
        assert_eq!(a.on_unauthorized(&resp, false), AuthVerdict::Retry);
        let mut req = Message::request("DESCRIBE", "rtsp://cam/stream");
        a.authorize(&mut req);
        assert_eq!(param(&req, "realm"), "Surveillance Server");
        assert_eq!(param(&req, "uri"), "rtsp://cam/stream");
        // Refused again over the same nonce: wrong credentials, no loop.
        assert_eq!(a.on_unauthorized(&resp, true), AuthVerdict::GiveUp);
    }

    #[test]
    fn stale_nonces_and_rotating_nonces_retry_but_not_forever() {
        let mut a = UpstreamAuth::new(creds("u", "p"), 3);
        a.on_unauthorized(&unauthorized(&["Digest realm=\"r\", nonce=\"n1\""]), false);
        assert_eq!(
            a.on_unauthorized(&unauthorized(&["Digest realm=\"r\", nonce=\"n2\", stale=TRUE"]), true),
            AuthVerdict::Retry
        );
        let mut req = Message::request("PLAY", "rtsp://c/s");
        a.authorize(&mut req);
        assert_eq!(param(&req, "nonce"), "n2");
        assert_eq!(a.on_unauthorized(&unauthorized(&["Digest realm=\"r\", nonce=\"n3\""]), true), AuthVerdict::Retry);
        assert_eq!(a.on_unauthorized(&unauthorized(&["Digest realm=\"r\", nonce=\"n4\""]), true), AuthVerdict::Retry);
        assert_eq!(a.on_unauthorized(&unauthorized(&["Digest realm=\"r\", nonce=\"n5\""]), true), AuthVerdict::GiveUp);
    }

    #[test]
    fn digest_is_preferred_basic_is_the_fallback() {
        let mut a = UpstreamAuth::new(creds("admin", "12345"), 3);
        a.on_unauthorized(&unauthorized(&["Basic realm=\"cam\"", "Digest realm=\"cam\", nonce=\"abc\""]), false);
        let mut req = Message::request("OPTIONS", "rtsp://c/");
        a.authorize(&mut req);
        assert!(req.header("Authorization").unwrap().starts_with("Digest "));
        let mut b = UpstreamAuth::new(creds("admin", "12345"), 3);
        assert_eq!(b.on_unauthorized(&unauthorized(&["Basic realm=\"cam\""]), false), AuthVerdict::Retry);
        let mut req = Message::request("OPTIONS", "rtsp://c/");
        b.authorize(&mut req);
        assert_eq!(req.header("Authorization"), Some("Basic YWRtaW46MTIzNDU="));
        assert_eq!(b.on_unauthorized(&unauthorized(&["Basic realm=\"cam\""]), true), AuthVerdict::GiveUp);
    }

    #[test]
    fn unusable_challenges_give_up_without_panicking() {
        let mut a = UpstreamAuth::new(creds("u", "p"), 3);
        for c in [
            "",
            "Digest",
            "Digest realm=\"r\"",
            "Digest nonce=x",
            "Digest realm=r, nonce=n, algorithm=SHA-512-256",
            "Bearer x",
            "Digest ,,,=,\"",
        ] {
            assert_eq!(a.on_unauthorized(&unauthorized(&[c]), false), AuthVerdict::GiveUp, "{c:?}");
        }
        assert_eq!(a.on_unauthorized(&Message::response(401, "Unauthorized"), false), AuthVerdict::GiveUp);
        let mut req = Message::request("OPTIONS", "rtsp://c/");
        assert!(!a.authorize(&mut req));
    }
}

//! HTTP Digest pieces (RFC 2617, RFC 7616) shared by both sides of the relay: it verifies
//! viewers' credentials ([`super::viewer_auth`]) and answers cameras' challenges
//! ([`super::upstream_auth`]) with the same parameter parser and hash.

use md5::{Digest, Md5};

/// The `k=v, k="v"` parameters of a Digest challenge or `Authorization` value. Names are
/// lower-cased; quoted values may contain commas. A name given twice keeps its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses what follows the scheme name. Never fails: a malformed tail ends the list, and a
    /// parameter the caller needs but cannot find is its own error to report.
    pub fn parse(s: &str) -> Params {
        let mut out = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let Some(eq) = rest.find('=') else { break };
            let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
            rest = rest[eq + 1..].trim_start();
            let value = if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"').unwrap_or(r.len());
                let v = r[..end].to_owned();
                rest = r.get(end + 1..).unwrap_or("");
                v
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let v = rest[..end].trim().to_owned();
                rest = &rest[end..];
                v
            };
            rest = rest.trim_start().trim_start_matches(',').trim_start();
            out.push((key, value));
        }
        Params(out)
    }

    /// The value of parameter `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Lower-case hex MD5 of `s`: HA1, HA2 and responses are all spelled this way.
pub fn md5_hex(s: &str) -> String {
    hex(&Md5::digest(s.as_bytes()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_keep_commas_and_names_fold_case() {
        let p = Params::parse(
            "Realm=\"a, b\", nonce=abc , qop=\"auth,auth-int\",stale=TRUE, ,algorithm=MD5-sess, realm=\"second\"",
        );
        assert_eq!(p.get("realm"), Some("a, b"), "the first of a repeated name counts");
        assert_eq!(p.get("nonce"), Some("abc"));
        assert_eq!(p.get("qop"), Some("auth,auth-int"));
        assert_eq!(p.get("stale"), Some("TRUE"));
        assert_eq!(p.get("algorithm"), Some("MD5-sess"));
        assert_eq!(p.get("opaque"), None);
    }

    #[test]
    fn malformed_lists_end_quietly() {
        for s in ["", ",,,", "=", "a=\"unterminated", "a", "\"", ",,,=,\"", "a=, b=\"\"", "é=ü, ü=\"é"] {
            let _ = Params::parse(s);
        }
        assert_eq!(Params::parse("a=\"x").get("a"), Some("x"));
        assert_eq!(Params::parse("a=, b=\"\"").get("b"), Some(""));
    }

    #[test]
    fn md5_hex_matches_rfc_2617() {
        // RFC 2617 §3.5: HA1 of Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(md5_hex("Mufasa:testrealm@host.com:Circle Of Life"), "939e7578ed9e3c518a452acee763bce9");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}

//! Control API tokens: the configuration holds each secret's SHA-256 only; a request's
//! `Authorization: Bearer <secret>` is hashed and compared with every token in constant time,
//! so neither the secret nor how much of a digest matched shows in the answer's timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::permissions::{Action, Permission};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read everything (`GET`, `/status`).
    Read,
    /// Read, and change routes, end sessions, reload.
    Admin,
}

impl Scope {
    /// The scope as grants of the one permission model: `read` is `api` on every route,
    /// `admin` also `api_admin` on every route.
    pub fn grants(self) -> Vec<Permission> {
        let all = || vec!["*".to_owned()];
        match self {
            Scope::Read => vec![Permission { action: Action::Api, routes: all() }],
            Scope::Admin => vec![
                Permission { action: Action::Api, routes: all() },
                Permission { action: Action::ApiAdmin, routes: all() },
            ],
        }
    }

    pub fn allows(self, needed: Scope) -> bool {
        self == Scope::Admin || needed == Scope::Read
    }
}

/// One configured token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub name: String,
    digest: [u8; 32],
    pub scope: Scope,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The digest is not the secret, but there is no reason to print it either.
        f.debug_struct("Token").field("name", &self.name).field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Token>);

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer`, or a secret no token has (401).
    Unauthenticated,
    /// A token whose scope does not cover the request (403).
    Forbidden,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Tokens {
    /// `[[api.token]]` entries, checked: names unique and non-empty, digests 64 hex digits.
    /// Entries are (name, hex digest, scope).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str, Scope)>) -> Result<Tokens, String> {
        let mut tokens: Vec<Token> = Vec::new();
        for (name, sha256, scope) in entries {
            if name.is_empty() || tokens.iter().any(|t| t.name == name) {
                return Err(format!("[[api.token]] {name:?}: names must be non-empty and unique"));
            }
            let digest = parse_hex32(sha256).ok_or_else(|| {
                format!(
                    "[[api.token]] {name:?}: sha256 must be 64 hex digits (the SHA-256 of the secret, not the secret)"
                )
            })?;
            tokens.push(Token { name: name.to_owned(), digest, scope });
        }
        Ok(Tokens(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The token an `Authorization` header value names, if its scope covers `needed`.
    pub fn check(&self, authorization: Option<&[u8]>, needed: Scope) -> Result<&Token, Refusal> {
        let secret = authorization.and_then(bearer).ok_or(Refusal::Unauthenticated)?;
        let digest: [u8; 32] = Sha256::digest(secret).into();
        // Every token is compared, whichever matches, so the time taken does not say which.
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.digest.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        let token = found.ok_or(Refusal::Unauthenticated)?;
        if token.scope.allows(needed) { Ok(token) } else { Err(Refusal::Forbidden) }
    }
}

/// The secret of `Bearer <secret>` (the scheme's case ignored), if that is what the value is.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let secret = rest.trim_ascii();
    (!secret.is_empty()).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let (a, r) = (sha256_hex(b"s3cret-admin"), sha256_hex(b"s3cret-read"));
        Tokens::from_entries([("ops", a.as_str(), Scope::Admin), ("wall", r.as_str(), Scope::Read)]).unwrap()
    }

    #[test]
    fn a_bearer_secret_is_matched_by_its_digest_and_scope() {
        let t = tokens();
        assert_eq!(t.check(Some(b"Bearer s3cret-admin"), Scope::Admin).unwrap().name, "ops");
        assert_eq!(t.check(Some(b"bearer s3cret-read"), Scope::Read).unwrap().name, "wall");
        assert_eq!(t.check(Some(b"Bearer s3cret-read"), Scope::Admin).unwrap_err(), Refusal::Forbidden);
        for bad in [None, Some(&b"Bearer"[..]), Some(b"Bearer "), Some(b"Basic s3cret-admin"), Some(b"Bearer nope")] {
            assert_eq!(t.check(bad, Scope::Read).unwrap_err(), Refusal::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn scopes_are_grants_of_the_permission_model() {
        use crate::proto::permissions::{may, may_everywhere};
        let read = Scope::Read.grants();
        assert!(may(&read, Action::Api, "/x") && !may(&read, Action::ApiAdmin, "/x"));
        let admin = Scope::Admin.grants();
        assert!(may(&admin, Action::ApiAdmin, "/x") && may_everywhere(&admin, Action::ApiAdmin));
    }

    #[test]
    fn digests_must_be_hex_and_names_unique() {
        let read = Scope::Read;
        assert!(Tokens::from_entries([("a", "plaintext", read)]).unwrap_err().contains("64 hex digits"));
        let h = sha256_hex(b"x");
        assert!(
            Tokens::from_entries([("a", h.as_str(), read), ("a", h.as_str(), read)]).unwrap_err().contains("unique")
        );
        assert!(!format!("{:?}", Tokens::from_entries([("a", h.as_str(), read)]).unwrap()).contains(&h[..16]));
    }

    proptest::proptest! {
        /// Whatever a client sends as its header, checking it never panics.
        #[test]
        fn any_header_is_judged_without_panicking(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = tokens().check(Some(&bytes), Scope::Admin);
        }
    }
}

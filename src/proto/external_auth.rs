//! External authorization as the protocol core sees it: the question a session asks
//! ([`AuthQuery`]), the answer it waits for ([`Verdict`]), and where the credentials come from.
//! Who answers (an HTTP callback, a JWT checked against a JWKS) is the shell's: the session
//! only queues its requests while it waits, and a deadline bounds the wait.

use base64::Engine;

use super::rtsp::Message;

/// `[auth] method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `[[user]]` entries with Digest (today's behaviour).
    #[default]
    Internal,
    /// A POST to `[auth.http] url` decides.
    Http,
    /// A JWT checked against `[auth.jwt]`'s keys decides.
    Jwt,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Internal => "internal",
            Method::Http => "http",
            Method::Jwt => "jwt",
        }
    }
}

/// How the viewer reached the relay, as the callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tunnel,
    Rtsp,
    WebSocket,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tunnel => "tunnel",
            Protocol::Rtsp => "rtsp",
            Protocol::WebSocket => "websocket",
        }
    }
}

/// What a session asks the authorizer. Carries secrets: never logged (its `Debug` hides them).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthQuery {
    /// Matches the verdict to the question (a session asks again after a refusal).
    pub id: u64,
    pub user: String,
    pub password: String,
    /// A bearer token (`?jwt=` on the WebSocket URL); empty if none.
    pub token: String,
    pub ip: core::net::IpAddr,
    pub route: String,
    pub tls: bool,
    pub action: super::permissions::Action,
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthQuery")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("ip", &self.ip)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The authorizer's answer. Every failure refuses (fail closed); the reason is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let in, as this user (the callback's user, or the token's `sub`).
    Allow { user: String },
    /// The service said no (non-2xx), or the token is invalid, expired or grants no such route.
    Refused,
    /// No answer in time.
    Timeout,
    /// The service could not be reached, or the keys could not be fetched.
    Error,
}

/// Credentials in an RTSP request for an external method: Basic only (a callback or a JWT
/// check needs the secret itself, which Digest never sends).
pub enum Presented {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// Some other scheme (Digest), or Basic that does not decode.
    Unusable,
}

pub fn presented(req: &Message) -> Presented {
    let Some(header) = req.header("Authorization") else { return Presented::None };
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Presented::Unusable;
    }
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok().and_then(|raw| String::from_utf8(raw).ok());
    match decoded.as_deref().and_then(|t| t.split_once(':')) {
        Some((user, password)) => Presented::Basic { user: user.to_owned(), password: password.to_owned() },
        None => Presented::Unusable,
    }
}

/// The `jwt` query parameter of a request target (`/cam1?jwt=…`), as it is: tokens are
/// base64url and dots, nothing to decode.
pub fn bearer_from_target(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|kv| kv.strip_prefix("jwt=")).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// `uri` for the log: a `jwt` query parameter's value replaced.
pub fn without_token(uri: &str) -> std::borrow::Cow<'_, str> {
    match uri.split_once('?') {
        Some((path, query)) if query.contains("jwt=") => {
            let q: Vec<&str> = query.split('&').map(|kv| if kv.starts_with("jwt=") { "jwt=…" } else { kv }).collect();
            format!("{path}?{}", q.join("&")).into()
        }
        _ => uri.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(bearer_from_target("/cam1?jwt=a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(bearer_from_target("/cam1?x=1&jwt=a.b.c#f").as_deref(), Some("a.b.c"));
        assert_eq!(bearer_from_target("/cam1?jwt="), None);
        assert_eq!(bearer_from_target("/cam1"), None);
        assert_eq!(bearer_from_target("/cam1?notjwt=x"), None);
        assert_eq!(without_token("rtsp://h/cam1?a=1&jwt=secret"), "rtsp://h/cam1?a=1&jwt=…");
        assert_eq!(without_token("rtsp://h/cam1"), "rtsp://h/cam1");
    }

    #[test]
    fn basic_credentials_are_read_and_others_are_unusable() {
        let mut m = Message::request("DESCRIBE", "rtsp://relay/cam1");
        assert!(matches!(presented(&m), Presented::None));
        let b64 = base64::engine::general_purpose::STANDARD.encode("x:eyJ.a:b.c");
        m.set_header("Authorization", format!("Basic {b64}"));
        match presented(&m) {
            Presented::Basic { user, password } => assert_eq!((user.as_str(), password.as_str()), ("x", "eyJ.a:b.c")),
            _ => panic!("not read"),
        }
        for bad in ["Digest username=\"a\"", "Basic !!!", "Basic", "Basic bm9jb2xvbg=="] {
            m.set_header("Authorization", bad);
            assert!(matches!(presented(&m), Presented::Unusable), "{bad}");
        }
    }

    #[test]
    fn a_query_never_shows_its_secrets() {
        let q = AuthQuery {
            id: 1,
            user: "x".into(),
            password: "hunter2".into(),
            token: "eyJsecret".into(),
            ip: "127.0.0.1".parse().unwrap(),
            route: "/cam1".into(),
            tls: false,
            action: super::super::permissions::Action::Read,
        };
        let shown = format!("{q:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("eyJsecret"), "{shown}");
    }
}

//! External authorization: a session waits for the verdict with its requests queued, under a
//! deadline, and fails closed; the viewer caps; internal users' route globs.

use super::*;
use crate::proto::external_auth::{AuthQuery, Verdict};
use crate::proto::viewer_caps::ViewerCaps;

fn external_routes(extra: &str) -> RouteTable {
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[auth]\nmethod=\"http\"\n[auth.http]\nurl=\"http://127.0.0.1:9/auth\"\n\
         [[route]]\npath=\"/cam1\"\nupstream=\"rtsp://{CAMERA}/s\"\nmode=\"passthrough\"\n{extra}"
    );
    RouteTable::new(Config::from_toml(&text).unwrap().1)
}

fn plain_params(basic_over_plain: bool) -> SessionParams {
    let mut p = params();
    p.access.basic_over_plain = basic_over_plain;
    p.access.verdict_timeout = Duration::from_secs(5);
    p
}

fn basic(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

fn describe(cseq: u32, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    format!("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\n{auth}\r\n")
}

fn query_of(out: &[Output]) -> Option<AuthQuery> {
    out.iter().find_map(|o| match o {
        Output::Authorize(q) => Some(q.clone()),
        _ => None,
    })
}

fn plain_session(routes: &RouteTable, p: SessionParams) -> Session {
    Session::new(p, None, "127.0.0.1:8080", crate::test_fixtures::t0())
        .tap(|s| assert!(s.route().is_none() && routes.lookup("/cam1").is_some()))
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl Tap for Session {}

#[test]
fn requests_wait_for_the_verdict_and_go_on_in_order_when_allowed() {
    let routes = external_routes("");
    let now = crate::test_fixtures::t0();
    let mut s = plain_session(&routes, plain_params(true));
    let mut out = Vec::new();
    // No credentials: a Basic challenge, nothing asked.
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, None).as_bytes(), now, &routes, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"), "{out:?}");
    assert!(to_viewer(&out).contains("WWW-Authenticate: Basic realm="));
    assert!(query_of(&out).is_none());
    // Credentials: one question, the request waits, and so does the next one.
    out.clear();
    let creds = basic("x", "TOKEN");
    s.on_viewer_bytes(ViewerStream::Plain, describe(2, Some(&creds)).as_bytes(), now, &routes, &mut out);
    s.on_viewer_bytes(ViewerStream::Plain, describe(3, None).as_bytes(), now, &routes, &mut out);
    let q = query_of(&out).expect("asked");
    assert_eq!((q.user.as_str(), q.password.as_str(), q.route.as_str(), q.tls), ("x", "TOKEN", "/cam1", false));
    assert!(!out.iter().any(|o| matches!(o, Output::ToViewer(_) | Output::ConnectUpstream(_))), "{out:?}");
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Authorize(_))).count(), 1);
    // A verdict for another question changes nothing.
    out.clear();
    s.on_verdict(q.id + 1, Verdict::Allow { user: "x".into() }, now, &routes, &mut out);
    assert!(out.is_empty());
    s.on_verdict(q.id, Verdict::Allow { user: "carol".into() }, now, &routes, &mut out);
    assert_eq!(s.user(), Some("carol"));
    assert_eq!(out.first(), Some(&Output::ConnectUpstream(CAMERA.parse().unwrap())));
    let mut up = Vec::new();
    s.on_upstream_connected(now, &mut up);
    let sent = to_upstream(&up);
    let (a, b) = (sent.find("CSeq: 2").unwrap(), sent.find("CSeq: 3").unwrap());
    assert!(a < b && !sent.contains("Authorization"), "in order, without the viewer's credentials: {sent}");
}

#[test]
fn a_refusal_answers_every_waiting_request_and_counts_once() {
    let routes = external_routes("");
    let now = crate::test_fixtures::t0();
    let mut s = plain_session(&routes, plain_params(true));
    let mut out = Vec::new();
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, Some(&basic("x", "bad"))).as_bytes(), now, &routes, &mut out);
    s.on_viewer_bytes(ViewerStream::Plain, describe(2, None).as_bytes(), now, &routes, &mut out);
    let q = query_of(&out).unwrap();
    out.clear();
    s.on_verdict(q.id, Verdict::Refused, now, &routes, &mut out);
    let replies = to_viewer(&out);
    assert!(replies.contains("401 Unauthorized\r\nCSeq: 1\r\n") && replies.contains("401 Unauthorized\r\nCSeq: 2\r\n"));
    assert_eq!(out.iter().filter(|o| **o == Output::AuthFailed(AuthFailure::Refused)).count(), 1);
    assert!(s.user().is_none() && !s.is_closed());
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))));
}

#[test]
fn no_verdict_by_the_deadline_fails_closed_and_a_late_one_is_ignored() {
    let routes = external_routes("");
    let now = crate::test_fixtures::t0();
    let mut s = plain_session(&routes, plain_params(true));
    let mut out = Vec::new();
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, Some(&basic("x", "slow"))).as_bytes(), now, &routes, &mut out);
    let q = query_of(&out).unwrap();
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
    out.clear();
    s.on_tick(now + Duration::from_secs(4), &mut out);
    assert!(out.is_empty());
    s.on_tick(now + Duration::from_secs(5), &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\n"), "{out:?}");
    assert!(out.contains(&Output::AuthFailed(AuthFailure::Timeout)));
    assert_eq!(s.next_deadline(), None);
    out.clear();
    s.on_verdict(q.id, Verdict::Allow { user: "x".into() }, now + Duration::from_secs(6), &routes, &mut out);
    assert!(out.is_empty() && s.user().is_none());
    // An unreachable service refuses the same way.
    let mut s = plain_session(&routes, plain_params(true));
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, Some(&basic("x", "y"))).as_bytes(), now, &routes, &mut out);
    let q = query_of(&out).unwrap();
    out.clear();
    s.on_verdict(q.id, Verdict::Error, now, &routes, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 503 "));
    assert!(out.contains(&Output::AuthFailed(AuthFailure::Error)));
}

#[test]
fn basic_on_plain_text_is_refused_unless_allowed_and_a_bearer_token_needs_no_challenge() {
    let routes = external_routes("");
    let now = crate::test_fixtures::t0();
    let mut s = plain_session(&routes, plain_params(false));
    let mut out = Vec::new();
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, Some(&basic("x", "pw"))).as_bytes(), now, &routes, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 403 Forbidden\r\n"), "{out:?}");
    assert!(out.contains(&Output::AuthFailed(AuthFailure::BasicWithoutTls)));
    assert!(query_of(&out).is_none());
    // Nothing offered either: no client should be asked to send a password there.
    out.clear();
    s.on_viewer_bytes(ViewerStream::Plain, describe(2, None).as_bytes(), now, &routes, &mut out);
    assert!(!to_viewer(&out).contains("WWW-Authenticate"));
    // A token from the WebSocket URL is asked about as it is.
    let mut p = plain_params(false);
    p.access.bearer = Some("a.b.c".into());
    let mut s = plain_session(&routes, p);
    out.clear();
    s.on_viewer_bytes(ViewerStream::Plain, describe(1, None).as_bytes(), now, &routes, &mut out);
    assert_eq!(query_of(&out).map(|q| q.token), Some("a.b.c".to_owned()));
}

#[test]
fn max_viewers_answers_453_and_an_ended_session_frees_its_place() {
    let routes = external_routes("max_viewers=1\n");
    let now = crate::test_fixtures::t0();
    let caps: Arc<dyn ViewerCaps> = Arc::new(crate::admission::ViewerCapTable::new(0, 0));
    let mut p = plain_params(true);
    p.access.caps = caps.clone();
    let admitted = |s: &mut Session, out: &mut Vec<Output>| {
        s.on_viewer_bytes(ViewerStream::Plain, describe(1, Some(&basic("x", "y"))).as_bytes(), now, &routes, out);
        let q = query_of(out).unwrap();
        out.clear();
        s.on_verdict(q.id, Verdict::Allow { user: "x".into() }, now, &routes, out);
    };
    let mut first = plain_session(&routes, p.clone());
    let mut out = Vec::new();
    admitted(&mut first, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))));
    let mut second = plain_session(&routes, p.clone());
    out.clear();
    admitted(&mut second, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 453 Not Enough Bandwidth\r\nCSeq: 1\r\n"), "{out:?}");
    assert!(out.contains(&Output::Rejected(Rejection::MaxViewers)));
    drop(first);
    let mut third = plain_session(&routes, p);
    out.clear();
    admitted(&mut third, &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))), "{out:?}");
}

#[test]
fn internal_users_read_the_routes_their_globs_cover() {
    let ha1 = crate::proto::viewer_auth::ha1_hex("alice", "rtsp-tunnel-relay", "wonderland");
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\nroutes=[\"/lobby/*\"]\n\
         [[route]]\npath=\"/lobby/door\"\nupstream=\"rtsp://{CAMERA}/a\"\nmode=\"passthrough\"\n\
         [[route]]\npath=\"/vault\"\nupstream=\"rtsp://{CAMERA}/b\"\nmode=\"passthrough\"\n"
    );
    let settings = crate::config::Settings::from_toml(&text).unwrap();
    let routes = &settings.routes;
    let now = crate::test_fixtures::t0();
    let creds = basic("alice", "wonderland");
    for (path, admitted) in [("/lobby/door", true), ("/vault", false)] {
        let mut s = Session::new(SessionParams { viewer_tls: true, ..params() }, None, "127.0.0.1:8080", now);
        let mut out = Vec::new();
        let req =
            format!("DESCRIBE rtsp://127.0.0.1:8080{path} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic {creds}\r\n\r\n");
        s.on_viewer_bytes(ViewerStream::Plain, req.as_bytes(), now, routes, &mut out);
        assert_eq!(s.user().is_some(), admitted, "{path}: {out:?}");
        if !admitted {
            assert!(out.contains(&Output::AuthFailed(AuthFailure::NotAllowed)));
        }
    }
}

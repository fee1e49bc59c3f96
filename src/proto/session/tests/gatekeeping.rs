//! The session as the gatekeeper in front of a camera whose credentials it holds: what reaches
//! the camera is rebuilt from what the relay understood, whatever a viewer sends.

use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::proto::camera_audit::{Seen, is_at_or_below, path_and_query, read_one};

const ORIGIN: &str = "rtsp://10.0.0.5:554";
const CAMERA_PATH: &str = "/Streaming/Channels/101";
const ROUTE_QUERY: &str = "channel=1&subtype=0";

/// A route with camera credentials and a query, as an NVR channel is configured.
fn nvr_routes() -> RouteTable {
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://admin:secret@{CAMERA}{CAMERA_PATH}?{ROUTE_QUERY}\"\nmode=\"passthrough\"\n"
    );
    RouteTable::new(Config::from_toml(&text).unwrap().1)
}

/// A camera DESCRIBE answer that hands out a path outside the route and a track URL with its
/// own query: the only other URLs a viewer may then ask for.
fn describe_answer(cseq: u32) -> String {
    let sdp = format!(
        "v=0\r\nm=video 0 RTP/AVP 96\r\na=control:{ORIGIN}{CAMERA_PATH}/trackID=1?token=cam\r\nm=audio 0 RTP/AVP 0\r\na=control:{ORIGIN}/audio/track2\r\n"
    );
    format!(
        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Base: {ORIGIN}{CAMERA_PATH}/\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Every write to the camera must read as exactly one message to a lenient camera, name only
/// the route's camera path or one the camera handed out, and carry the route's query or the
/// one the camera handed out with that URL.
fn assert_camera_safe(out: &[Output]) -> Result<(), TestCaseError> {
    for o in out {
        let Output::ToUpstream(bytes) = o else { continue };
        let seen =
            read_one(bytes).map_err(|e| TestCaseError::fail(format!("{e}: {:?}", String::from_utf8_lossy(bytes))))?;
        let Seen::Request(req) = seen else { continue };
        if req.uri == "*" {
            prop_assert_eq!(req.method.as_str(), "OPTIONS");
            continue;
        }
        let (path, query) = path_and_query(&req.uri, ORIGIN)
            .ok_or_else(|| TestCaseError::fail(format!("another origin: {}", req.uri)))?;
        let in_route = is_at_or_below(path, CAMERA_PATH);
        prop_assert!(in_route || is_at_or_below(path, "/audio/track2"), "path {} left the route", req.uri);
        // The camera handed out these URLs exactly, query (or none) included.
        let handed = (path == format!("{CAMERA_PATH}/trackID=1") && query == Some("token=cam"))
            || (path == format!("{CAMERA_PATH}/") && query.is_none())
            || (path == "/audio/track2" && query.is_none());
        prop_assert!(query == Some(ROUTE_QUERY) || handed, "query of {}", req.uri);
        let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
        for forbidden in ["Host", "X-Junk", "Proxy-Authorization", "Cookie"] {
            prop_assert!(!names.iter().any(|n| n.eq_ignore_ascii_case(forbidden)), "{} reached the camera", forbidden);
        }
        prop_assert_eq!(names.iter().filter(|n| n.eq_ignore_ascii_case("CSeq")).count(), 1);
    }
    Ok(())
}

fn attack_uri() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("rtsp://127.0.0.1:8080/cam1".to_owned()),
        Just("rtsp://127.0.0.1:8080/cam1/trackID=1?token=cam".to_owned()),
        Just("rtsp://127.0.0.1:8080/audio/track2".to_owned()),
        Just("*".to_owned()),
        Just("rtsp://r/cam1?channel=10".to_owned()),
        Just("rtsp://r/cam1?channel=1&subtype=0&channel=4".to_owned()),
        Just("rtsp://r/cam1/../Streaming/Channels/201".to_owned()),
        Just("rtsp://r/cam1/%2e%2E/%2e%2e/x".to_owned()),
        Just("rtsp://r/cam1/..%2f..%2fx".to_owned()),
        Just("rtsp://r/audio/track2/../../Streaming/Channels/201".to_owned()),
        Just("/cam1//../other".to_owned()),
        Just("rtsp://admin:secret@10.0.0.5:554/Streaming/Channels/201".to_owned()),
        "rtsp://r/cam1[ -~]{0,24}",
        "[ -~]{0,24}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x\rDESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/201 RTSP/1.0".to_owned()),
        Just("x\rDESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/201 RTSP/1.0\rCSeq: 7".to_owned()),
        Just("1\0".to_owned()),
        Just("RTP/AVP/TCP;unicast;interleaved=0-1".to_owned()),
        "[\\x00-\\x7f]{0,16}",
        "[ -~]{0,16}",
    ]
}

fn request() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        Just("OPTIONS"),
        Just("DESCRIBE"),
        Just("SETUP"),
        Just("PLAY"),
        Just("TEARDOWN"),
        Just("GET_PARAMETER"),
        Just("SET_PARAMETER"),
        Just("ANNOUNCE"),
        Just("RECORD"),
    ];
    let header_name = prop_oneof![
        Just("User-Agent"),
        Just("Session"),
        Just("Transport"),
        Just("Range"),
        Just("Host"),
        Just("X-Junk"),
        Just("Proxy-Authorization"),
        Just("Cookie"),
        Just("Content-Type"),
    ];
    let body = proptest::option::of(prop_oneof![
        Just("DESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/201 RTSP/1.0\r\nCSeq: 9\r\n\r\n".to_owned()),
        "[ -~\r\n]{0,20}",
    ]);
    (method, attack_uri(), 1u32..50, proptest::collection::vec((header_name, header_value()), 0..4), body).prop_map(
        |(method, uri, cseq, headers, body)| {
            let mut m = format!("{method} {uri} RTSP/1.0\r\nCSeq: {cseq}\r\n");
            for (n, v) in headers {
                m.push_str(&format!("{n}: {v}\r\n"));
            }
            match body {
                Some(b) => m.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len())),
                None => m.push_str("\r\n"),
            }
            m
        },
    )
}

/// One viewer input: a whole request, or raw bytes (partial or garbage).
fn viewer_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => request().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// Feeds `inputs` as a tunnel or plain viewer, answering like a Basic-auth camera (a 401 first,
/// then a DESCRIBE answer handing out URLs), and checks every write to the camera.
fn run_viewer(inputs: &[Vec<u8>], tunnel: bool, chunk: usize) -> Result<(), TestCaseError> {
    let routes = nvr_routes();
    let now = crate::test_fixtures::t0();
    let p = SessionParams { max_pending_requests: 1000, ..params() };
    let route = if tunnel { routes.lookup("/cam1") } else { None };
    let mut s = Session::new(p, route, "127.0.0.1:8080", now);
    if tunnel {
        s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    }
    let stream = if tunnel { ViewerStream::TunnelCommands } else { ViewerStream::Plain };
    let mut answered = false;
    for input in inputs {
        let bytes = if tunnel { b64_bytes(input) } else { input.clone() };
        for piece in bytes.chunks(chunk.max(1)) {
            let mut out = Vec::new();
            s.on_viewer_bytes(stream, piece, now, &routes, &mut out);
            if out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))) {
                s.on_upstream_connected(now, &mut out);
            }
            assert_camera_safe(&out)?;
            // The camera asks for Basic credentials once, then hands out its URLs.
            let cseqs: Vec<u32> = out
                .iter()
                .filter_map(|o| match o {
                    Output::ToUpstream(b) => crate::proto::rtsp::parse_message(b, &MessageLimits::default())
                        .ok()
                        .flatten()
                        .and_then(|(m, _)| m.cseq()),
                    _ => None,
                })
                .collect();
            for cseq in cseqs {
                let answer = if !answered {
                    answered = true;
                    format!(
                        "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"
                    )
                } else {
                    describe_answer(cseq)
                };
                let mut out = Vec::new();
                s.on_upstream_bytes(answer.as_bytes(), now, &mut out);
                assert_camera_safe(&out)?;
            }
            if s.is_closed() {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn b64_bytes(b: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.encode(b).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn whatever_a_viewer_sends_the_camera_sees_only_its_route(
        inputs in proptest::collection::vec(viewer_input(), 1..12),
        tunnel in any::<bool>(),
        chunk in 1usize..200,
    ) {
        run_viewer(&inputs, tunnel, chunk)?;
    }
}

/// A camera that reads a bare CR as a line end (gst-rtsp-server, many firmwares) must not see
/// a second request hidden in a header value: the relay answers 400 and sends nothing.
#[test]
fn a_request_hidden_behind_a_bare_cr_never_reaches_the_camera() {
    let mut h = Harness::tunnel(true);
    h.connect();
    let out = h.command(
        "DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\nUser-Agent: x\rDESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/201 RTSP/1.0\r\n\r\n",
    );
    assert_eq!(to_upstream(&out), "");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 400 Bad Request\r\nCSeq: 2\r\n"), "{out:?}");
    assert!(out.contains(&Output::Rejected(Rejection::BadHeaderValue)));
    assert!(!h.s.is_closed(), "the session goes on");
}

#[test]
fn the_viewers_query_and_dot_segments_never_reach_the_camera() {
    let routes = nvr_routes();
    let now = crate::test_fixtures::t0();
    let mut s = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    let mut send = |req: &str| {
        let mut out = Vec::new();
        s.on_viewer_bytes(ViewerStream::TunnelCommands, &b64(req), now, &routes, &mut out);
        if out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))) {
            s.on_upstream_connected(now, &mut out);
        }
        let mut answer = Vec::new();
        if let Some(cseq) = req.split("CSeq: ").nth(1).and_then(|c| c.split('\r').next()) {
            s.on_upstream_bytes(format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n\r\n").as_bytes(), now, &mut answer);
        }
        out
    };
    let up = to_upstream(&send("OPTIONS rtsp://r/cam1?channel=10 RTSP/1.0\r\nCSeq: 1\r\n\r\n"));
    assert!(up.starts_with(&format!("OPTIONS {ORIGIN}{CAMERA_PATH}?{ROUTE_QUERY} RTSP/1.0\r\n")), "{up}");
    let up = to_upstream(&send("DESCRIBE rtsp://r/cam1?channel=1&subtype=0&channel=4 RTSP/1.0\r\nCSeq: 2\r\n\r\n"));
    assert!(up.starts_with(&format!("DESCRIBE {ORIGIN}{CAMERA_PATH}?{ROUTE_QUERY} RTSP/1.0\r\n")), "{up}");
    let out = send("DESCRIBE rtsp://r/cam1/../Streaming/Channels/201 RTSP/1.0\r\nCSeq: 3\r\n\r\n");
    assert_eq!(to_upstream(&out), "");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 404 Not Found\r\nCSeq: 3\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::OutsideRoute)));
    let out = send("DESCRIBE * RTSP/1.0\r\nCSeq: 4\r\n\r\n");
    assert_eq!(to_upstream(&out), "");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 400 Bad Request\r\nCSeq: 4\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::BadRequestUri)));
    let up = to_upstream(&send("OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n\r\n"));
    assert!(up.starts_with("OPTIONS * RTSP/1.0\r\nCSeq: 5\r\n"), "{up}");
    let out = send("ANNOUNCE rtsp://r/cam1 RTSP/1.0\r\nCSeq: 6\r\n\r\n");
    assert_eq!(to_upstream(&out), "");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 405 Method Not Allowed\r\nCSeq: 6\r\n"));
    assert!(to_viewer(&out).contains("Allow: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"));
}

/// A gate that blocks an address after `max` recorded failures, as the shell's limiter does.
struct CountingGate {
    max: u32,
    failures: Mutex<u32>,
}

impl AuthGate for CountingGate {
    fn is_blocked(&self, _: core::net::IpAddr, _: Instant) -> bool {
        *self.failures.lock().unwrap() >= self.max
    }
    fn record_failure(&self, _: core::net::IpAddr, _: Instant) {
        *self.failures.lock().unwrap() += 1;
    }
}

fn wrong_password(cseq: u32) -> String {
    format!(
        "OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\nAuthorization: Digest username=\"alice\", nonce=\"x\", uri=\"rtsp://127.0.0.1:8080/cam1\", response=\"00\"\r\n\r\n"
    )
}

/// Tunnels opened before their address was blocked stop guessing as soon as it is: the block
/// and the failures are checked on every request, not at accept.
#[test]
fn the_address_block_holds_for_sessions_opened_before_it() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let gate = Arc::new(CountingGate { max: 6, failures: Mutex::new(0) });
    let p = SessionParams { auth_gate: gate.clone(), ..params() };
    let mut sessions: Vec<Session> =
        (0..10).map(|_| Session::new(p.clone(), routes.lookup("/cam1"), "127.0.0.1:8080", now)).collect();
    let mut evaluated = 0;
    for cseq in 1..=4 {
        for s in &mut sessions {
            let mut out = Vec::new();
            s.on_viewer_bytes(ViewerStream::Plain, wrong_password(cseq).as_bytes(), now, &routes, &mut out);
            evaluated += out.iter().filter(|o| matches!(o, Output::AuthFailed(_))).count();
        }
    }
    assert_eq!(evaluated, 6, "no password is evaluated once the address is blocked");
    // The right password on a tunnel opened before the block is refused too.
    let mut late = Session::new(p, routes.lookup("/cam1"), "127.0.0.1:8080", now);
    let mut out = Vec::new();
    late.on_viewer_bytes(
        ViewerStream::Plain,
        b"OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        now,
        &routes,
        &mut out,
    );
    assert!(to_viewer(&out).starts_with("RTSP/1.0 429 Too Many Requests\r\nCSeq: 1\r\n"), "{out:?}");
    assert!(out.contains(&Output::Rejected(Rejection::AuthRateLimited)));
    assert!(late.is_closed());
}

fn basic_alice() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
    format!("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic {token}\r\n\r\n")
}

/// Basic credentials travel up the POST and the challenge down the GET: both must be TLS.
#[test]
fn basic_needs_tls_on_both_the_get_and_the_post() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    for (get_tls, post_tls, accepted) in [(true, false, false), (false, true, false), (true, true, true)] {
        let p = SessionParams { viewer_tls: get_tls, ..params() };
        let mut s = Session::new(p, routes.lookup("/cam1"), "127.0.0.1:8080", now);
        s.on_commands_bound("127.0.0.1".parse().unwrap(), post_tls).unwrap();
        let mut out = Vec::new();
        s.on_viewer_bytes(ViewerStream::TunnelCommands, &b64(&basic_alice()), now, &routes, &mut out);
        if accepted {
            assert_eq!(s.user(), Some("alice"), "GET tls {get_tls}, POST tls {post_tls}");
        } else {
            assert!(out.contains(&Output::AuthFailed(AuthFailure::BasicWithoutTls)), "{get_tls} {post_tls}: {out:?}");
            assert!(!to_viewer(&out).contains("Basic realm"), "Basic is not offered over plain text");
        }
    }
}

/// A POST from another address is refused and leaves the tunnel as it was; a POST that rebinds
/// an authenticated tunnel must authenticate again.
#[test]
fn a_rebinding_post_comes_from_the_get_and_authenticates_again() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let p = SessionParams { viewer_tls: true, ..params() };
    let mut s = Session::new(p.clone(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    s.on_commands_bound("127.0.0.1".parse().unwrap(), true).unwrap();
    let mut out = Vec::new();
    s.on_viewer_bytes(ViewerStream::TunnelCommands, &b64(&basic_alice()), now, &routes, &mut out);
    assert_eq!(s.user(), Some("alice"));
    assert_eq!(
        s.on_commands_bound("127.0.0.9".parse().unwrap(), true),
        Err(Rejection::PostFromOtherAddress),
        "a cookie seen on the wire does not let another host drive the tunnel"
    );
    assert_eq!(s.user(), Some("alice"), "the tunnel is untouched");
    s.on_commands_bound("127.0.0.1".parse().unwrap(), true).unwrap();
    assert_eq!(s.user(), None);
    out.clear();
    s.on_viewer_bytes(
        ViewerStream::TunnelCommands,
        &b64("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n"),
        now,
        &routes,
        &mut out,
    );
    assert!(to_viewer(&out).starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n"), "{out:?}");
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectUpstream(_) | Output::ToUpstream(_))));
    // Carrier NAT pools: the key loosens the address rule, not re-authentication.
    let loose = SessionParams { post_from_any_address: true, ..p };
    let mut s = Session::new(loose, routes.lookup("/cam1"), "127.0.0.1:8080", now);
    assert_eq!(s.on_commands_bound("127.0.0.9".parse().unwrap(), true), Ok(()));
}

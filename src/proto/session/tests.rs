//! Session state machine tests: whole dialogues fed as bytes, outputs checked.

use std::time::{Duration, Instant};

use base64::Engine;

use super::*;
use crate::config::{Config, RouteTable};
use crate::proto::viewer_auth::AuthFailure;

const CAMERA: &str = "10.0.0.5:554";

fn routes(with_credentials: bool) -> RouteTable {
    let creds = if with_credentials { "admin:secret@" } else { "" };
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://{creds}{CAMERA}/Streaming/Channels/101\"\nmode=\"passthrough\"\n"
    );
    RouteTable::new(Config::from_toml(&text).unwrap().1)
}

fn params() -> SessionParams {
    SessionParams {
        limits: MessageLimits::default(),
        response_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        cnonce_seed: 42,
        viewer_ip: "127.0.0.1".parse().unwrap(),
        viewer_tls: false,
        nonce_ttl: Duration::from_secs(60),
        max_pending_requests: 4,
        post_from_any_address: false,
        auth_gate: Arc::new(OpenGate),
        access: Default::default(),
    }
}

fn b64(msg: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.encode(msg).into_bytes()
}

struct Harness {
    s: Session,
    routes: RouteTable,
    now: Instant,
}

impl Harness {
    fn tunnel(with_credentials: bool) -> Harness {
        let routes = routes(with_credentials);
        let now = crate::test_fixtures::t0();
        let route = routes.lookup("/cam1");
        let mut s = Session::new(params(), route, "127.0.0.1:8080", now);
        s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
        Harness { s, routes, now }
    }

    fn plain() -> Harness {
        let routes = routes(false);
        let now = crate::test_fixtures::t0();
        Harness { s: Session::new(params(), None, "127.0.0.1:8080", now), routes, now }
    }

    fn viewer(&mut self, stream: ViewerStream, bytes: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        self.s.on_viewer_bytes(stream, bytes, self.now, &self.routes, &mut out);
        out
    }

    fn command(&mut self, msg: &str) -> Vec<Output> {
        self.viewer(ViewerStream::TunnelCommands, &b64(msg))
    }

    fn camera(&mut self, bytes: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        self.s.on_upstream_bytes(bytes, self.now, &mut out);
        out
    }

    /// OPTIONS up to a connected camera; returns what went upstream.
    fn connect(&mut self) -> Vec<Output> {
        let out = self.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        assert_eq!(out, vec![Output::ConnectUpstream(CAMERA.parse().unwrap())]);
        let mut out = Vec::new();
        self.s.on_upstream_connected(self.now, &mut out);
        out
    }
}

fn text(o: &Output) -> String {
    match o {
        Output::ToViewer(b) | Output::ToUpstream(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    }
}

fn to_viewer(out: &[Output]) -> String {
    out.iter().filter(|o| matches!(o, Output::ToViewer(_))).map(text).collect()
}

fn to_upstream(out: &[Output]) -> String {
    out.iter().filter(|o| matches!(o, Output::ToUpstream(_))).map(text).collect()
}

#[test]
fn tunnel_dialogue_is_rewritten_both_ways() {
    let mut h = Harness::tunnel(false);
    let up = h.connect();
    assert_eq!(to_upstream(&up), "OPTIONS rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    let out = h.camera(
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN\r\n\r\n",
    );
    assert!(to_viewer(&out).starts_with("RTSP/1.0 200 OK\r\nCSeq: 1\r\n"));
    assert!(out.contains(&Output::Observe(Hist::RtspRequest(RtspMethod::Options), Duration::ZERO)));

    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n");
    assert!(to_upstream(&out).starts_with("DESCRIBE rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\n"));
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=control:rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1\r\n";
    let reply = format!(
        "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://10.0.0.5:554/Streaming/Channels/101/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let v = to_viewer(&h.camera(reply.as_bytes()));
    assert!(v.contains("Content-Base: rtsp://127.0.0.1:8080/cam1/\r\n"), "{v}");
    assert!(v.contains("a=control:rtsp://127.0.0.1:8080/cam1/trackID=1\r\n"), "{v}");
    assert!(!v.contains("rtsp://10.0.0.5"), "camera URL leaked: {v}");
    let body = v.split("\r\n\r\n").nth(1).unwrap();
    assert!(v.contains(&format!("Content-Length: {}\r\n", body.len())), "{v}");

    let out = h.command(
        "SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n",
    );
    assert!(to_upstream(&out).starts_with("SETUP rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1 RTSP/1.0\r\n"));
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 12345678;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n");

    h.command("PLAY rtsp://127.0.0.1:8080/cam1/ RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n\r\n");
    assert!(!h.s.is_playing());
    let out = h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nRTP-Info: url=rtsp://10.0.0.5:554/Streaming/Channels/101/trackID=1;seq=1;rtptime=2\r\n\r\n");
    assert!(h.s.is_playing());
    assert!(to_viewer(&out).contains("RTP-Info: url=rtsp://127.0.0.1:8080/cam1/trackID=1;seq=1;rtptime=2\r\n"));
    assert!(out.iter().any(|o| matches!(o, Output::Observe(Hist::SessionSetup, _))));
}

#[test]
fn camera_media_is_forwarded_by_range_with_rtcp_before_the_play_reply() {
    let mut h = Harness::tunnel(false);
    h.connect();
    let mut chunk = b"$\x00\x00\x04abcd$\x01\x00\x02xy".to_vec();
    chunk.extend_from_slice(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n$\x00\x00\x01z");
    let out = h.camera(&chunk);
    assert_eq!(out[0], Output::ForwardToViewer { range: 0..14, frames: 2 });
    // Then the reply (after the request's latency observation).
    let reply = out.iter().position(|o| matches!(o, Output::ToViewer(_))).unwrap();
    assert!(text(&out[reply]).starts_with("RTSP/1.0 200 OK"));
    assert!(out.contains(&Output::ForwardToViewer { range: 42..47, frames: 1 }), "{out:?}");
}

#[test]
fn viewer_frames_reach_the_camera_from_both_tunnel_paths() {
    let mut h = Harness::tunnel(false);
    h.connect();
    // live555: raw `$` RTCP up the GET, header and payload in separate writes.
    let mut up = Vec::new();
    for piece in [&b"$\x01"[..], b"\x00\x03", b"rr!"] {
        up.extend(h.viewer(ViewerStream::TunnelData, piece));
    }
    let bytes: Vec<u8> = up
        .iter()
        .filter_map(|o| if let Output::ToUpstream(b) = o { Some(b.clone()) } else { None })
        .flatten()
        .collect();
    assert_eq!(bytes, b"$\x01\x00\x03rr!");
    assert!(up.contains(&Output::FramesToCamera(1)));
    // GStreamer: `$` frames inside the base64 POST body.
    let encoded = base64::engine::general_purpose::STANDARD.encode(b"$\x01\x00\x02ok");
    let out = h.viewer(ViewerStream::TunnelCommands, encoded.as_bytes());
    assert_eq!(out, vec![Output::ToUpstream(b"$\x01\x00\x02ok".to_vec()), Output::FramesToCamera(1)]);
}

#[test]
fn udp_transport_gets_461_and_never_reaches_the_camera() {
    let mut h = Harness::tunnel(false);
    h.connect();
    let out = h.command("SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n");
    assert_eq!(to_upstream(&out), "");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 461 Unsupported Transport\r\nCSeq: 3\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::UnsupportedTransport)));
    assert!(!h.s.is_closed(), "the viewer may retry with TCP");
    // Offered both: only the interleaved one goes up.
    let out = h.command("SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n");
    assert!(to_upstream(&out).contains("\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"));
}

#[test]
fn camera_digest_challenge_is_answered_by_the_relay() {
    let mut h = Harness::tunnel(true);
    h.connect();
    let challenge =
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc123\"\r\n\r\n";
    let out = h.camera(challenge);
    assert_eq!(to_viewer(&out), "", "the viewer never sees the camera's challenge");
    let retry = to_upstream(&out);
    assert!(retry.starts_with("OPTIONS rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\n"));
    assert!(retry.contains("Authorization: Digest ") && retry.contains("username=\"admin\""), "{retry}");
    assert!(!retry.contains("secret"));
    let out = h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 200 OK"));
    // Later requests carry credentials from the start.
    let out = h.command(
        "DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Basic dmlld2VyOnB3\r\n\r\n",
    );
    let up = to_upstream(&out);
    assert!(up.contains("Authorization: Digest "), "{up}");
    assert!(!up.contains("dmlld2VyOnB3"), "the viewer's own credentials must not reach the camera");
    // Refused again with the same nonce: give up, tell the viewer without the challenge.
    let out = h.camera(
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc123\"\r\n\r\n",
    );
    let v = to_viewer(&out);
    assert!(v.starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n") && !v.contains("WWW-Authenticate"), "{v}");
    assert!(out.contains(&Output::UpstreamError(UpstreamErrorKind::AuthFailed)));
}

#[test]
fn unreachable_camera_answers_503_and_closes() {
    let mut h = Harness::tunnel(false);
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 7\r\n\r\n");
    let mut out = Vec::new();
    h.s.on_upstream_connect_failed(UpstreamErrorKind::ConnectRefused, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 503 Service Unavailable\r\nCSeq: 7\r\n"));
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::UpstreamError)));
}

#[test]
fn slow_camera_gets_504_after_the_response_timeout() {
    let mut h = Harness::tunnel(false);
    h.connect();
    let mut out = Vec::new();
    h.s.on_tick(h.now + Duration::from_secs(9), &mut out);
    assert!(out.is_empty());
    h.s.on_tick(h.now + Duration::from_secs(11), &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 504 Gateway Timeout\r\nCSeq: 1\r\n"));
    assert!(out.contains(&Output::UpstreamError(UpstreamErrorKind::ResponseTimeout)));
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::UpstreamError)));
}

#[test]
fn plain_rtsp_routes_by_uri_and_refuses_unknown_paths() {
    let mut h = Harness::plain();
    let out = h.viewer(ViewerStream::Plain, b"DESCRIBE rtsp://127.0.0.1:8080/nope RTSP/1.0\r\nCSeq: 2\r\n\r\n");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 404 Not Found\r\nCSeq: 2\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::UnknownRoute)));
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::ProtocolError)));

    let mut h = Harness::plain();
    let out = h.viewer(ViewerStream::Plain, b"OPTIONS rtsp://localhost:8080/cam1?token=x RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert_eq!(out, vec![Output::ConnectUpstream(CAMERA.parse().unwrap())]);
    assert_eq!(h.s.route().unwrap().path, "/cam1");
}

#[test]
fn plain_rtsp_is_routed_only_by_the_routes_own_spelling() {
    for spelling in ["/cam1/x", "/cam1/b/..", "/cam1/./.", "/cam1//", "/cam1/trackID=1"] {
        let mut h = Harness::plain();
        let request = format!("OPTIONS rtsp://127.0.0.1:8080{spelling} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
        let out = h.viewer(ViewerStream::Plain, request.as_bytes());
        assert!(to_viewer(&out).starts_with("RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n"), "{spelling}: {out:?}");
        assert!(out.contains(&Output::Rejected(Rejection::RouteSpelling)), "{spelling}");
        assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::ProtocolError)));
        assert!(h.s.route().is_none());
    }
    // A trailing slash is the route's own (the balancer hashes it alike); later requests name
    // tracks below the route.
    let mut h = Harness::plain();
    let out = h.viewer(ViewerStream::Plain, b"OPTIONS rtsp://127.0.0.1:8080/cam1/ RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert_eq!(out, vec![Output::ConnectUpstream(CAMERA.parse().unwrap())]);
}

#[test]
fn garbage_from_either_side_ends_only_this_session() {
    let mut h = Harness::tunnel(false);
    let out = h.viewer(ViewerStream::TunnelCommands, b"!!!!");
    assert_eq!(out, vec![Output::Rejected(Rejection::BadBase64), Output::Close(SessionOutcome::ProtocolError)]);

    let mut h = Harness::tunnel(false);
    h.connect();
    let out = h.camera(b"\x00\x01garbage that is not RTSP\r\n\r\n");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 502 Bad Gateway\r\nCSeq: 1\r\n"));
    assert!(out.contains(&Output::UpstreamError(UpstreamErrorKind::Garbage)));
    assert!(h.s.is_closed());
}

#[test]
fn camera_requests_reach_the_viewer_and_answers_go_back() {
    let mut h = Harness::tunnel(false);
    h.connect();
    let out = h.camera(b"OPTIONS rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 9\r\n\r\n");
    assert_eq!(to_viewer(&out), "OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 9\r\n\r\n");
    let out = h.command("RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n");
    assert_eq!(to_upstream(&out), "RTSP/1.0 200 OK\r\nCSeq: 9\r\n\r\n");
}

#[test]
fn a_rebound_post_starts_a_fresh_base64_stream() {
    let mut h = Harness::tunnel(false);
    h.connect();
    // The old POST died mid-group.
    let enc = b64("GET_PARAMETER rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n");
    assert_eq!(h.viewer(ViewerStream::TunnelCommands, &enc[..6]), vec![]);
    h.s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    let out = h.viewer(ViewerStream::TunnelCommands, &enc);
    assert!(
        to_upstream(&out)
            .starts_with("GET_PARAMETER rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 2\r\n")
    );
    let mut out = Vec::new();
    h.s.on_viewer_closed(ViewerStream::TunnelCommands, &mut out);
    assert!(out.is_empty() && !h.s.is_closed(), "closing the POST keeps the tunnel");
    h.s.on_viewer_closed(ViewerStream::TunnelData, &mut out);
    assert_eq!(out, vec![Output::Close(SessionOutcome::Completed)]);
}

fn protected_routes() -> RouteTable {
    let ha1 = crate::proto::viewer_auth::ha1_hex("alice", "rtsp-tunnel-relay", "wonderland");
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://{CAMERA}/s\"\nusers=[\"alice\"]\ndeny=[\"127.0.0.66\"]\nmode=\"passthrough\"\n"
    );
    let (cfg, routes) = Config::from_toml(&text).unwrap();
    RouteTable::new(routes).with_users(cfg.viewer_users().unwrap())
}

#[test]
fn viewers_authenticate_before_anything_reaches_the_camera() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let mut s = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    let mut out = Vec::new();
    let describe = "DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n";
    s.on_viewer_bytes(ViewerStream::Plain, describe.as_bytes(), now, &routes, &mut out);
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))), "no camera before auth: {out:?}");
    let v = to_viewer(&out);
    assert!(v.starts_with("RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"), "{v}");
    assert!(out.contains(&Output::AuthFailed(AuthFailure::NoCredentials)));
    let nonce = v.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    // FFmpeg's answer: Digest over the URI it requested.
    let ha1 = crate::proto::viewer_auth::ha1_hex("alice", "rtsp-tunnel-relay", "wonderland");
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    use md5::Digest;
    let ha2 = hex(&md5::Md5::digest(b"DESCRIBE:rtsp://127.0.0.1:8080/cam1"));
    let response = hex(&md5::Md5::digest(format!("{ha1}:{nonce}:{ha2}").as_bytes()));
    let authed = format!(
        "DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\nAuthorization: Digest username=\"alice\", realm=\"rtsp-tunnel-relay\", nonce=\"{nonce}\", uri=\"rtsp://127.0.0.1:8080/cam1\", response=\"{response}\"\r\n\r\n"
    );
    out.clear();
    s.on_viewer_bytes(ViewerStream::Plain, authed.as_bytes(), now, &routes, &mut out);
    assert_eq!(out, vec![Output::ConnectUpstream(CAMERA.parse().unwrap())]);
    assert_eq!(s.user(), Some("alice"));
    out.clear();
    s.on_upstream_connected(now, &mut out);
    assert!(!to_upstream(&out).contains("Authorization"), "viewer credentials stay at the relay");
}

#[test]
fn wrong_passwords_are_refused_counted_and_end_the_session_after_a_few() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let mut s = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    let mut out = Vec::new();
    for cseq in 1..=5 {
        let req = format!(
            "OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\nAuthorization: Digest username=\"alice\", nonce=\"x\", uri=\"rtsp://127.0.0.1:8080/cam1\", response=\"00\"\r\n\r\n"
        );
        s.on_viewer_bytes(ViewerStream::Plain, req.as_bytes(), now, &routes, &mut out);
    }
    assert_eq!(out.iter().filter(|o| **o == Output::AuthFailed(AuthFailure::BadCredentials)).count(), 5);
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::ProtocolError)));
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))));
}

#[test]
fn a_denied_address_is_refused_before_any_camera_connection() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let p = SessionParams { viewer_ip: "127.0.0.66".parse().unwrap(), ..params() };
    let mut s = Session::new(p, None, "127.0.0.1:8080", now);
    let mut out = Vec::new();
    s.on_viewer_bytes(
        ViewerStream::Plain,
        b"OPTIONS rtsp://h/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
        now,
        &routes,
        &mut out,
    );
    assert!(to_viewer(&out).starts_with("RTSP/1.0 403 Forbidden\r\nCSeq: 1\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::AddressDenied)));
    assert!(!out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))));
}

/// The relay's camera credentials open the route's path and what the camera itself hands out,
/// nothing else on the device (another NVR channel, say).
#[test]
fn requests_outside_the_route_never_reach_the_camera() {
    let mut h = Harness::tunnel(true);
    h.connect();
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/Streaming/Channels/201 RTSP/1.0\r\nCSeq: 2\r\n\r\n");
    assert_eq!(to_upstream(&out), "", "{out:?}");
    assert!(to_viewer(&out).starts_with("RTSP/1.0 404 Not Found\r\nCSeq: 2\r\n"));
    assert!(out.contains(&Output::Rejected(Rejection::OutsideRoute)));
    // A camera whose SDP points elsewhere on the device: that path, and only it, is allowed.
    h.command("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 3\r\n\r\n");
    let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=control:rtsp://10.0.0.5/media/video1\r\n";
    let reply = format!(
        "RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    assert!(to_viewer(&h.camera(reply.as_bytes())).contains("a=control:rtsp://127.0.0.1:8080/media/video1\r\n"));
    let out = h.command(
        "SETUP rtsp://127.0.0.1:8080/media/video1 RTSP/1.0\r\nCSeq: 4\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n",
    );
    assert!(to_upstream(&out).starts_with("SETUP rtsp://10.0.0.5:554/media/video1 RTSP/1.0\r\n"), "{out:?}");
    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/media/video2 RTSP/1.0\r\nCSeq: 5\r\n\r\n");
    assert_eq!(to_upstream(&out), "");
    assert!(out.contains(&Output::Rejected(Rejection::OutsideRoute)));
}

/// A viewer "response" is the answer to a camera request; before any admitted request there is
/// no camera connection to answer, and it must not open one.
#[test]
fn viewer_responses_and_frames_never_open_a_camera_connection() {
    let routes = protected_routes();
    let now = crate::test_fixtures::t0();
    let mut s = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    let mut out = Vec::new();
    let sneaky = b64("RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nhello");
    s.on_viewer_bytes(ViewerStream::TunnelCommands, &sneaky, now, &routes, &mut out);
    s.on_viewer_bytes(ViewerStream::TunnelData, b"$\x01\x00\x04abcd", now, &routes, &mut out);
    assert!(
        !out.iter().any(|o| matches!(o, Output::ConnectUpstream(_) | Output::ToUpstream(_))),
        "unauthenticated bytes reached for the camera: {out:?}"
    );
}

/// Cameras that rotate their nonce on every request, without `stale`, keep working for a whole
/// dialogue: the renewal budget is per refusal streak, not per session.
#[test]
fn a_camera_rotating_nonces_on_every_request_keeps_working() {
    let mut h = Harness::tunnel(true);
    h.connect();
    for (i, method) in ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER"].iter().enumerate() {
        let cseq = i + 1;
        if cseq > 1 {
            let out = h.command(&format!(
                "{method} rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
            ));
            assert!(to_upstream(&out).contains("Authorization: Digest "), "{method}");
        }
        let challenge = format!(
            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"n{cseq}\"\r\n\r\n"
        );
        let retry = to_upstream(&h.camera(challenge.as_bytes()));
        assert!(retry.contains(&format!("nonce=\"n{cseq}\"")), "{method} was not retried: {retry:?}");
        let ok = format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 1\r\n\r\n");
        assert!(to_viewer(&h.camera(ok.as_bytes())).starts_with("RTSP/1.0 200 OK"), "{method}");
    }
}

#[test]
fn a_viewer_that_never_waits_for_answers_gets_503_beyond_the_limit() {
    let mut h = Harness::tunnel(false);
    h.connect();
    let limit = params().max_pending_requests;
    let mut upstream = 1; // the OPTIONS of connect()
    for cseq in 2..=limit + 3 {
        let out = h.command(&format!("GET_PARAMETER rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n"));
        if !to_upstream(&out).is_empty() {
            upstream += 1;
        } else {
            assert!(to_viewer(&out).starts_with(&format!("RTSP/1.0 503 Service Unavailable\r\nCSeq: {cseq}\r\n")));
            assert!(out.contains(&Output::Rejected(Rejection::TooManyPendingRequests)));
        }
    }
    assert_eq!(upstream, limit);
    // Answers free the slots again.
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    let out = h.command("GET_PARAMETER rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 99\r\n\r\n");
    assert!(!to_upstream(&out).is_empty());
}

/// The attack of one base64 character every second, never a whole request: it is not activity,
/// and it ends the session once the request has been unfinished for `request_timeout`.
#[test]
fn a_request_trickled_and_never_finished_times_out_and_is_not_activity() {
    let mut h = Harness::tunnel(false);
    let t0 = h.now;
    let enc = b64("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n");
    for (i, c) in enc.iter().take(9).enumerate() {
        h.now = t0 + Duration::from_secs(i as u64);
        assert_eq!(h.viewer(ViewerStream::TunnelCommands, std::slice::from_ref(c)), vec![]);
        let mut out = Vec::new();
        h.s.on_tick(h.now, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
    assert_eq!(h.s.last_viewer_progress(), t0, "bytes that complete nothing are not activity");
    assert_eq!(h.s.partial_since(), Some(t0), "the clock runs from the first byte");
    assert_eq!(h.s.next_deadline(), Some(t0 + Duration::from_secs(10)));
    let mut out = Vec::new();
    h.s.on_tick(t0 + Duration::from_millis(9_999), &mut out);
    assert!(out.is_empty());
    h.s.on_tick(t0 + Duration::from_secs(10), &mut out);
    assert_eq!(out[0], Output::Rejected(Rejection::RequestTimeout));
    assert!(to_viewer(&out).starts_with("RTSP/1.0 408 Request Timeout\r\n"), "{out:?}");
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::Timeout)));
}

#[test]
fn whole_messages_and_frames_are_activity_and_restart_the_request_clock() {
    let mut h = Harness::tunnel(false);
    let t0 = h.now;
    h.connect();
    assert_eq!((h.s.last_viewer_progress(), h.s.partial_since()), (t0, None));
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    // A request cut in two, its second half 9 s later: on time, and activity once whole.
    let req = "GET_PARAMETER rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n";
    let (a, b) = req.split_at(20);
    h.now = t0 + Duration::from_secs(5);
    h.viewer(ViewerStream::Plain, a.as_bytes());
    assert_eq!(h.s.partial_since(), Some(h.now));
    h.now += Duration::from_secs(9);
    let mut out = Vec::new();
    h.s.on_tick(h.now, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // The rest, and the start of a `$` frame behind it: that frame's clock starts now.
    let mut rest = b.as_bytes().to_vec();
    rest.extend_from_slice(b"$\x01\x00\x08rr");
    let out = h.viewer(ViewerStream::Plain, &rest);
    assert!(to_upstream(&out).starts_with("GET_PARAMETER "), "{out:?}");
    assert_eq!((h.s.last_viewer_progress(), h.s.partial_since()), (h.now, Some(h.now)));
    let frame_started = h.now;
    // Up the GET, a frame header split in two: the two streams' clocks are separate.
    h.now += Duration::from_secs(3);
    h.viewer(ViewerStream::TunnelData, b"$\x01");
    assert_eq!(h.s.partial_since(), Some(frame_started));
    h.viewer(ViewerStream::Plain, b"report");
    assert_eq!(h.s.partial_since(), Some(h.now), "the command stream's frame is whole, the GET's is not");
    assert_eq!(h.s.last_viewer_progress(), h.now);
    h.viewer(ViewerStream::TunnelData, b"\x00\x00");
    assert_eq!(h.s.partial_since(), None);
    // CR/LF between messages completes nothing and starts nothing.
    h.now += Duration::from_secs(1);
    h.viewer(ViewerStream::Plain, b"\r\n");
    assert_eq!((h.s.partial_since(), h.s.last_viewer_progress()), (None, h.now - Duration::from_secs(1)));
}

#[test]
fn a_post_closed_mid_request_leaves_nothing_to_time_out() {
    let mut h = Harness::tunnel(false);
    h.connect();
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n");
    assert!(h.s.partial_since().is_some());
    let mut out = Vec::new();
    h.s.on_viewer_closed(ViewerStream::TunnelCommands, &mut out);
    assert_eq!(h.s.partial_since(), None, "what a closed POST left unfinished cannot complete");
    h.s.on_tick(h.now + Duration::from_secs(60), &mut out);
    assert!(!out.contains(&Output::Rejected(Rejection::RequestTimeout)), "{out:?}");
}

/// SETUP and PLAY through a Digest camera; returns the harness with a camera session 12345678.
fn playing_with_camera_credentials() -> Harness {
    let mut h = Harness::tunnel(true);
    h.connect();
    h.camera(
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc123\"\r\n\r\n",
    );
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    h.command("SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n");
    h.camera(
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nSession: 12345678;timeout=60\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n",
    );
    h.command("PLAY rtsp://127.0.0.1:8080/cam1/ RTSP/1.0\r\nCSeq: 3\r\nSession: 12345678\r\n\r\n");
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 12345678\r\n\r\n");
    assert!(h.s.is_playing());
    h
}

#[test]
fn a_viewer_leaving_without_teardown_gets_one_built_by_the_relay() {
    let mut h = playing_with_camera_credentials();
    let mut out = Vec::new();
    h.s.on_viewer_closed(ViewerStream::TunnelData, &mut out);
    assert_eq!(out, vec![Output::Close(SessionOutcome::Completed)]);
    let teardown = String::from_utf8(h.s.teardown_for_camera().expect("a TEARDOWN")).unwrap();
    let uri = "rtsp://10.0.0.5:554/Streaming/Channels/101/";
    assert!(
        teardown.starts_with(&format!("TEARDOWN {uri} RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n")),
        "{teardown}"
    );
    // The route's credentials, answered to the camera's challenge for this very request.
    assert!(teardown.contains("Authorization: Digest username=\"admin\", realm=\"cam\", nonce=\"abc123\""));
    assert!(teardown.contains(&format!("uri=\"{uri}\"")), "{teardown}");
    assert!(!teardown.contains("secret"));
    assert_eq!(h.s.teardown_for_camera(), None, "only once");
}

#[test]
fn no_relay_teardown_when_the_viewer_sent_one_or_no_camera_session_exists() {
    // The viewer's TEARDOWN is on its way (the shell flushes it): no second one.
    let mut h = playing_with_camera_credentials();
    let out = h.command("TEARDOWN rtsp://127.0.0.1:8080/cam1/ RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n\r\n");
    assert!(to_upstream(&out).starts_with("TEARDOWN rtsp://10.0.0.5:554/Streaming/Channels/101/ RTSP/1.0\r\n"));
    assert_eq!(h.s.teardown_for_camera(), None);
    // ...or already answered.
    let mut h = playing_with_camera_credentials();
    h.command("TEARDOWN rtsp://127.0.0.1:8080/cam1/ RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n\r\n");
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 4\r\n\r\n");
    assert_eq!(h.s.teardown_for_camera(), None);
    // Nothing set up at the camera, or the camera is gone.
    let mut h = Harness::tunnel(false);
    h.connect();
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    assert_eq!(h.s.teardown_for_camera(), None);
    let mut h = playing_with_camera_credentials();
    h.s.on_upstream_closed(UpstreamErrorKind::Closed, &mut Vec::new());
    assert_eq!(h.s.teardown_for_camera(), None);
    // A SETUP but no PLAY: the route's own camera URL is the aggregate.
    let mut h = Harness::tunnel(false);
    h.connect();
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
    h.command("SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 7\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n");
    h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\nSession: ab-cd\r\n\r\n");
    let teardown = String::from_utf8(h.s.teardown_for_camera().unwrap()).unwrap();
    assert!(
        teardown.starts_with(
            "TEARDOWN rtsp://10.0.0.5:554/Streaming/Channels/101 RTSP/1.0\r\nCSeq: 8\r\nSession: ab-cd\r\n"
        ),
        "{teardown}"
    );
    assert!(!teardown.contains("Authorization"), "no credentials on this route");
}

mod external;
mod gatekeeping;

/// Issue 26 item 3, passthrough: the upstream cannot be reached, so the viewer's session opens
/// the route's fallback (once): its waiting request goes to the fallback's own URL (its path and
/// query), logged in with the fallback's credentials; the fallback failing too is a 503.
#[test]
fn an_unreachable_upstream_sends_the_passthrough_viewer_to_the_fallback() {
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://{CAMERA}/Streaming/Channels/101\"\n\
         fallback=\"rtsp://sub:pw@10.0.0.9:8554/sub?q=1\"\nmode=\"passthrough\"\n"
    );
    let routes = RouteTable::new(Config::from_toml(&text).unwrap().1);
    let now = crate::test_fixtures::t0();
    let mut s = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", now);
    s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    let mut h = Harness { s, routes, now };
    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 7\r\n\r\n");
    assert_eq!(out, vec![Output::ConnectUpstream(CAMERA.parse().unwrap())]);
    let mut out = Vec::new();
    h.s.on_upstream_connect_failed(UpstreamErrorKind::ConnectRefused, &mut out);
    assert_eq!(
        out,
        vec![
            Output::ConnectUpstream("10.0.0.9:8554".parse().unwrap()),
            Output::UpstreamError(UpstreamErrorKind::ConnectRefused)
        ],
        "no answer to the viewer yet: the fallback is tried"
    );
    assert_eq!(h.s.route().map(|r| r.upstream_url.as_str()), Some("rtsp://10.0.0.9:8554/sub?q=1"));
    let mut out = Vec::new();
    h.s.on_upstream_connected(h.now, &mut out);
    let sent = to_upstream(&out);
    assert!(sent.starts_with("DESCRIBE rtsp://10.0.0.9:8554/sub/trackID=1?q=1 RTSP/1.0\r\n"), "{sent}");
    // The camera's answers are mapped back to the viewer's URLs as before.
    let out =
        h.camera(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Base: rtsp://10.0.0.9:8554/sub/\r\nContent-Length: 0\r\n\r\n");
    assert!(to_viewer(&out).contains("Content-Base: rtsp://127.0.0.1:8080/cam1/\r\n"), "{}", to_viewer(&out));

    // The fallback unreachable as well: 503, as for any camera.
    let mut h = Harness::tunnel(false);
    let text = text.replace("mode=", "max_viewers=5\nmode=");
    h.routes = RouteTable::new(Config::from_toml(&text).unwrap().1);
    let mut s = Session::new(params(), h.routes.lookup("/cam1"), "127.0.0.1:8080", h.now);
    s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    h.s = s;
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 7\r\n\r\n");
    let mut out = Vec::new();
    h.s.on_upstream_connect_failed(UpstreamErrorKind::ConnectRefused, &mut out);
    let mut out = Vec::new();
    h.s.on_upstream_connect_failed(UpstreamErrorKind::ConnectRefused, &mut out);
    assert!(to_viewer(&out).starts_with("RTSP/1.0 503 Service Unavailable\r\nCSeq: 7\r\n"), "{out:?}");
    assert_eq!(out.last(), Some(&Output::Close(SessionOutcome::UpstreamError)));
}

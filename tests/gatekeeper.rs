//! The relay as the gatekeeper in front of cameras whose credentials it holds, tried as an
//! attacker would: smuggled requests, other queries and paths, Basic over plain text, guessing
//! on tunnels opened before a block, and a POST from another host. A real gst-rtsp-server
//! camera logs what reaches it; the rest use the scripted camera and raw tunnel viewers.
//! Passthrough routes, where viewers' requests are rebuilt for the camera (on a shared route
//! nothing of the viewer's reaches the camera at all: `proto::tunnel`'s property test).

mod fake;
mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use fake::*;
use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::metrics::MetricsHub;
use rtsp_tunnel_relay::proto::viewer_auth::ha1_hex;
use support::{GstCamera, peers_available};

fn metrics(relay: &Relay) -> String {
    MetricsHub::new(relay.metrics.clone()).render()
}

fn metric(relay: &Relay, series: &str) -> f64 {
    support::metric_value(&metrics(relay), series)
}

/// Sends one raw request up the tunnel and returns the answer with its CSeq.
fn ask(v: &mut TunnelViewer, raw: &str, cseq: u32) -> rtsp_tunnel_relay::proto::rtsp::Message {
    v.send_command(raw.as_bytes());
    loop {
        let m = v.next_message().unwrap_or_else(|| panic!("no answer to {raw:?}"));
        if m.cseq() == Some(cseq) {
            return m;
        }
    }
}

/// gst-rtsp-server, like many camera firmwares, ends a line at a bare CR: a request hidden in
/// a header value would reach it, as would another query or a path climbing out of the route.
/// The camera logs every request it handles; only the route's path and query may appear.
#[test]
fn smuggled_requests_other_queries_and_paths_never_reach_a_real_camera() {
    skip_when_quick!();
    if !peers_available() {
        eprintln!("skipped: real peers missing (scripts/install-test-deps.sh)");
        return;
    }
    let camera = GstCamera::start(None);
    let relay = Relay::start(&[("/cam1", camera.url("/cam1?channel=1"))], 2, Limits::default());
    let a = relay.addr;
    let other = camera.url("/cam2");
    let mut v = TunnelViewer::open_get(a, "/cam1", "smuggler0123456789abcd");
    v.open_post();
    assert_eq!(ask(&mut v, &format!("OPTIONS rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), 1).status(), Some(200));
    let smuggled = format!(
        "DESCRIBE rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 2\r\nUser-Agent: x\rDESCRIBE {other} RTSP/1.0\rCSeq: 3\r\n\r\n"
    );
    assert_eq!(ask(&mut v, &smuggled, 2).status(), Some(400));
    let dotted = format!("DESCRIBE rtsp://{a}/cam1/../cam2 RTSP/1.0\r\nCSeq: 4\r\n\r\n");
    assert_eq!(ask(&mut v, &dotted, 4).status(), Some(404));
    let encoded = format!("DESCRIBE rtsp://{a}/cam1/%2e%2e/cam2 RTSP/1.0\r\nCSeq: 5\r\n\r\n");
    assert_eq!(ask(&mut v, &encoded, 5).status(), Some(404));
    assert_eq!(ask(&mut v, "DESCRIBE * RTSP/1.0\r\nCSeq: 6\r\n\r\n", 6).status(), Some(400));
    let other_query =
        format!("DESCRIBE rtsp://{a}/cam1?channel=10 RTSP/1.0\r\nCSeq: 7\r\nAccept: application/sdp\r\n\r\n");
    let describe = ask(&mut v, &other_query, 7);
    assert_eq!(describe.status(), Some(200));
    // The session goes on: the viewer plays what the route allows.
    let sdp = String::from_utf8_lossy(&describe.body).into_owned();
    let control = sdp.lines().find_map(|l| l.strip_prefix("a=control:")).filter(|c| *c != "*").unwrap_or("stream=0");
    let track = if control.contains("://") { control.to_owned() } else { format!("rtsp://{a}/cam1/{control}") };
    let setup = ask(
        &mut v,
        &format!("SETUP {track} RTSP/1.0\r\nCSeq: 8\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"),
        8,
    );
    assert_eq!(setup.status(), Some(200), "{setup:?}\n{describe:?}\n{:?}", camera.requests());
    let session = setup.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let base = describe.header("Content-Base").unwrap_or("").to_owned();
    let play = ask(&mut v, &format!("PLAY {base} RTSP/1.0\r\nCSeq: 9\r\nSession: {session}\r\n\r\n"), 9);
    assert_eq!(play.status(), Some(200), "{play:?}\n{describe:?}\n{:?}", camera.requests());
    assert!(v.read_frames(20, Duration::from_secs(10)) >= 20, "no media after the refusals");
    let seen = camera.requests();
    assert!(!seen.is_empty());
    for r in &seen {
        let target = r.split(' ').nth(1).unwrap_or("");
        assert!(target == "*" || target.starts_with("/cam1"), "the camera saw {r}: {seen:?}");
        assert!(!target.contains("cam2") && !target.contains(".."), "{seen:?}");
        // The route's query, or none where the camera handed out its own URL without one
        // (gst-rtsp-server's Content-Base); never the viewer's.
        let query = target.split_once('?').map(|(_, q)| q);
        assert!(query.is_none_or(|q| q == "channel=1"), "{seen:?}");
    }
    assert!(seen.iter().any(|r| r == "DESCRIBE /cam1?channel=1"), "{seen:?}");
    assert_eq!(seen.iter().filter(|r| r.starts_with("DESCRIBE")).count(), 1, "{seen:?}");
    for reason in ["bad_header_value", "outside_route", "bad_request_uri"] {
        assert!(metric(&relay, &format!("relay_rejections_total{{reason=\"{reason}\"}}")) >= 1.0, "{reason}");
    }
}

const REALM: &str = "rtsp-tunnel-relay";

fn protected(camera: &str, auth: &str) -> String {
    let ha1 = ha1_hex("alice", REALM, "wonderland");
    format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n{auth}[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n[[route]]\npath=\"/cam1\"\nupstream=\"{camera}\"\nusers=[\"alice\"]\nmode=\"passthrough\"\n"
    )
}

fn basic_options(a: SocketAddr, cseq: u32) -> String {
    let token = b64(b"alice:wonderland");
    format!("OPTIONS rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: {cseq}\r\nAuthorization: Basic {token}\r\n\r\n")
}

/// Basic credentials travel up the POST: a tunnel whose GET came over TLS but whose POST came
/// to the plain listener must not accept them (nor offer Basic).
#[test]
fn basic_over_a_plain_post_is_refused_even_when_the_get_came_over_tls() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let dir = std::env::temp_dir().join(format!("rtr-gate-tls-{}", std::process::id()));
    let (server, cert) = test_tls(&dir);
    let relay = Relay::from_config(&protected(&camera.url("/stream"), ""), 2, Limits::default(), Some(server));
    let mut get = tls_connect(relay.tls_addr.unwrap(), &cert);
    let cookie = "mixedtls0123456789abcd";
    write!(get, "GET /cam1 HTTP/1.0\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n")
        .unwrap();
    // The POST to the plain listener, with Basic credentials in the clear.
    let mut post = open_post(relay.addr, "/cam1", cookie, false);
    std::thread::sleep(Duration::from_millis(200));
    post.write_all(b64(basic_options(relay.addr, 1).as_bytes()).as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("CSeq: 1\r\n") {
        match get.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"), "{text}");
    assert!(!text.contains("Basic realm"), "Basic offered over a plain POST: {text}");
    assert_eq!(metric(&relay, "relay_auth_failures_total{reason=\"basic_without_tls\"}"), 1.0);
    assert_eq!(camera.log.lock().unwrap().connections, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Digest answer FFmpeg would send for `uri` with `nonce`.
fn digest(method: &str, uri: &str, nonce: &str, password: &str) -> String {
    use md5::{Digest, Md5};
    let hex = |s: String| Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ha1 = hex(format!("alice:{REALM}:{password}"));
    let ha2 = hex(format!("{method}:{uri}"));
    let response = hex(format!("{ha1}:{nonce}:{ha2}"));
    format!(
        "Authorization: Digest username=\"alice\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"\r\n"
    )
}

fn nonce_of(challenge: &rtsp_tunnel_relay::proto::rtsp::Message) -> String {
    let h = challenge.header("WWW-Authenticate").expect("a challenge");
    h.split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_owned()
}

/// Tunnels opened before their address was blocked stop guessing at once: no password is
/// evaluated past `max_failures_per_ip`, and the right one is refused during the block.
#[test]
fn tunnels_opened_before_a_block_stop_guessing() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let text = protected(&camera.url("/stream"), "[auth]\nmax_failures_per_ip=3\n");
    let relay = Relay::from_config(&text, 2, Limits::default(), None);
    let a = relay.addr;
    let uri = format!("rtsp://{a}/cam1");
    // All open, and one holding a fresh nonce, before any guess.
    let mut tunnels: Vec<TunnelViewer> = (0..10)
        .map(|i| {
            let mut v = TunnelViewer::open_get(a, "/cam1", &format!("early{i:02}0123456789abcdef"));
            v.open_post();
            v
        })
        .collect();
    let mut keeper = tunnels.pop().unwrap();
    let challenge = keeper.request("OPTIONS", "", "");
    assert_eq!(challenge.status(), Some(401));
    let mut answers = Vec::new();
    for v in &mut tunnels {
        let wrong = digest("OPTIONS", &uri, "0123456789abcdef0123456789abcdef", "guess");
        answers.push(v.request("OPTIONS", "", &wrong).status());
    }
    assert_eq!(metric(&relay, "relay_auth_failures_total{reason=\"bad_credentials\"}"), 3.0, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == Some(429)).count(), 6, "{answers:?}");
    // The right password, on a tunnel opened before the block: refused while it lasts.
    let right = digest("OPTIONS", &uri, &nonce_of(&challenge), "wonderland");
    assert_eq!(keeper.request("OPTIONS", "", &right).status(), Some(429));
    assert_eq!(camera.log.lock().unwrap().connections, 0);
}

/// Opens a POST for `cookie` from another loopback address.
fn post_from(source: Ipv4Addr, relay: SocketAddr, cookie: &str) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::from((source, 0)).into()).ok()?;
    sock.connect(&relay.into()).ok()?;
    let mut s: TcpStream = sock.into();
    write!(s, "POST /cam1 HTTP/1.0\r\nx-sessioncookie: {cookie}\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n").ok()?;
    Some(s)
}

/// A cookie seen on the wire must not let another host drive a tunnel: its POST is closed,
/// counted, and the tunnel's own POST goes on undisturbed; nothing it sends reaches the camera.
#[test]
fn a_post_from_another_address_cannot_take_over_a_tunnel() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 2, Limits::default());
    let a = relay.addr;
    let cookie = "rebinder0123456789abcd";
    let mut v = TunnelViewer::open_get(a, "/cam1", cookie);
    v.open_post();
    assert_eq!(v.request("OPTIONS", "", "").status(), Some(200));
    let Some(mut intruder) = post_from(Ipv4Addr::new(127, 0, 0, 9), a, cookie) else {
        eprintln!("skipped: cannot bind 127.0.0.9");
        return;
    };
    let _ =
        intruder.write_all(b64(format!("DESCRIBE rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 77\r\n\r\n").as_bytes()).as_bytes());
    let (_, closed) = read_to_close(&mut intruder, Duration::from_secs(5));
    assert!(closed, "the intruder's POST is closed");
    assert!(eventually(Duration::from_secs(3), || metric(
        &relay,
        "relay_rejections_total{reason=\"post_from_other_address\"}"
    ) == 1.0));
    // The viewer's own POST still carries its requests.
    assert_eq!(v.request("DESCRIBE", "", "Accept: application/sdp\r\n").status(), Some(200));
    let log = camera.log.lock().unwrap();
    assert!(!log.requests.iter().any(|r| r.cseq() == Some(77)), "the intruder's request reached the camera");
}

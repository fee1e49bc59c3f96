//! HTTPS tunnels and viewer access control with real viewers (FFmpeg, GStreamer) through an
//! in-process relay, the built-in camera behind it.

mod fake;
mod support;

use std::io::Write;
use std::time::Duration;

use fake::*;
use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::demo_camera::DemoCamera;
use rtsp_tunnel_relay::proto::viewer_auth::ha1_hex;
use support::{ffmpeg_frames, ffmpeg_play, gst_decoded, gst_play, peers_available};

fn ffmpeg(transport: &str, url: &str) -> std::process::Output {
    ffmpeg_play(transport, url, 50)
}

fn gst(location: &str, extra: &[&str], frames: u32) -> std::process::Output {
    gst_play(location, extra, frames)
}

const REALM: &str = "rtsp-tunnel-relay";

fn protected_config(camera_url: &str, extra_route: &str) -> String {
    let ha1 = ha1_hex("alice", REALM, "wonderland");
    format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n[[route]]\npath=\"/demo\"\nupstream=\"{camera_url}\"\nusers=[\"alice\"]\n{extra_route}"
    )
}

#[test]
fn https_viewers_play() {
    skip_when_quick!();
    if !peers_available() {
        eprintln!("skipped: ffmpeg or gst-launch-1.0 not installed (scripts/install-test-deps.sh)");
        return;
    }
    let camera = DemoCamera::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = std::env::temp_dir().join(format!("rtr-https-{}", std::process::id()));
    let (tls, _) = test_tls(&dir);
    let relay = Relay::start_with_tls(&[("/demo", camera.url())], 2, Limits::default(), Some(tls));
    let https = relay.tls_addr.unwrap();
    let out = ffmpeg("https", &format!("rtsp://{https}/demo"));
    assert!(ffmpeg_frames(&out) >= 50, "ffmpeg https: {}", String::from_utf8_lossy(&out.stderr));
    let out = gst(&format!("rtspsh://{https}/demo"), &["tls-validation-flags=0"], 50);
    assert!(
        gst_decoded(&out),
        "gst rtspsh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP to the HTTPS port is refused without disturbing it.
    let mut s = connect(https);
    let _ = s.write_all(b"GET /demo HTTP/1.0\r\nx-sessioncookie: abcdefgh\r\n\r\n");
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed);
    let out = ffmpeg("https", &format!("rtsp://{https}/demo"));
    assert!(ffmpeg_frames(&out) >= 50);
}

#[test]
fn only_listed_viewers_with_the_right_password_play() {
    skip_when_quick!();
    if !peers_available() {
        eprintln!("skipped: ffmpeg or gst-launch-1.0 not installed (scripts/install-test-deps.sh)");
        return;
    }
    let camera = DemoCamera::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let relay = Relay::from_config(&protected_config(&camera.url(), ""), 2, Limits::default(), None);
    let a = relay.addr;
    // No credentials, then wrong ones: refused with 401.
    for url in
        [format!("rtsp://{a}/demo"), format!("rtsp://alice:wrong@{a}/demo"), format!("rtsp://mallory:x@{a}/demo")]
    {
        let out = ffmpeg("http", &url);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(ffmpeg_frames(&out), 0, "{url} played");
        assert!(err.contains("401"), "{url}: {err}");
    }
    // The right ones play, over the tunnel and plain RTSP alike.
    for transport in ["http", "tcp"] {
        let out = ffmpeg(transport, &format!("rtsp://alice:wonderland@{a}/demo"));
        assert!(ffmpeg_frames(&out) >= 50, "{transport}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = gst(&format!("rtsph://{a}/demo"), &["user-id=alice", "user-pw=wonderland"], 50);
    assert!(gst_decoded(&out), "gst: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = gst(&format!("rtsph://{a}/demo"), &["user-id=alice", "user-pw=nope"], 50);
    assert!(!gst_decoded(&out), "wrong password played");
}

#[test]
fn a_denied_address_is_refused_before_any_camera_connection() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"{}\"\ndeny=[\"127.0.0.0/8\"]\n",
        camera.url("/stream")
    );
    let relay = Relay::from_config(&text, 2, Limits::default(), None);
    let v = TunnelViewer::open_get(relay.addr, "/cam1", "deniedcookie01");
    assert!(v.reply_head.starts_with("HTTP/1.0 403"), "{}", v.reply_head);
    let mut s = connect(relay.addr);
    write!(s, "OPTIONS rtsp://{}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", relay.addr).unwrap();
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&reply).starts_with("RTSP/1.0 403 Forbidden\r\nCSeq: 1\r\n"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(camera.log.lock().unwrap().connections, 0);
}

#[test]
fn a_listener_deny_list_refuses_at_accept() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\ndeny=[\"127.0.0.1\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"{}\"\n",
        camera.url("/stream")
    );
    let relay = Relay::from_config(&text, 1, Limits::default(), None);
    let mut s = connect(relay.addr);
    let _ = s.write_all(b"GET /cam1 HTTP/1.0\r\nx-sessioncookie: abcdefgh\r\n\r\n");
    let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(closed && reply.is_empty(), "a denied address learns nothing: {reply:?}");
    // Another loopback address is not on the list.
    let mut ok = std::net::TcpStream::connect((std::net::Ipv4Addr::new(127, 0, 0, 2), relay.addr.port()));
    if let Ok(s) = ok.as_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /cam1 HTTP/1.0\r\nx-sessioncookie: abcdefgh\r\n\r\n");
        assert!(read_http_head(s).starts_with("HTTP/1.0 200"));
    }
}

#[test]
fn repeated_failures_from_one_address_are_rate_limited() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let text = protected_config(&camera.url("/stream"), "[auth]\nmax_failures_per_ip=3\n");
    // [auth] must come before the tables that follow it in TOML; rebuild in order.
    let text = format!("[auth]\nmax_failures_per_ip=3\n{}", text.replace("[auth]\nmax_failures_per_ip=3\n", ""));
    let relay = Relay::from_config(&text, 2, Limits::default(), None);
    for i in 0..3 {
        let mut v = TunnelViewer::open_get(relay.addr, "/demo", &format!("guesser{i:06}x"));
        v.open_post();
        let bad = "Authorization: Digest username=\"alice\", realm=\"rtsp-tunnel-relay\", nonce=\"x\", uri=\"/\", response=\"0\"\r\n";
        assert_eq!(v.request("OPTIONS", "", bad).status(), Some(401));
    }
    let mut s = connect(relay.addr);
    let _ = s.write_all(b"GET /demo HTTP/1.0\r\nx-sessioncookie: abcdefgh\r\n\r\n");
    let (reply, _) = read_to_close(&mut s, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.0 429"), "{:?}", String::from_utf8_lossy(&reply));
    assert_eq!(camera.log.lock().unwrap().connections, 0, "no camera connection for unauthenticated viewers");
}

//! External viewer authorization against real services: an HTTP callback and a JWKS served by
//! `tests/peers/auth_service.py`, tokens signed by PyJWT; raw RTSP viewers, FFmpeg and
//! GStreamer through an in-process relay with the built-in camera behind it.

mod fake;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine;
use fake::*;
use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::demo_camera::DemoCamera;
use support::raw_rtsp::{RawViewer, Reply};

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/auth_service.py");

/// PyJWT and cryptography, for the service and the tokens.
fn python_jwt_available() -> bool {
    Command::new("/usr/bin/python3").args(["-c", "import jwt, cryptography"]).status().is_ok_and(|s| s.success())
}

macro_rules! require_python_jwt {
    () => {
        skip_when_quick!();
        if !python_jwt_available() {
            eprintln!("skipped: python3-jwt / python3-cryptography missing (scripts/install-test-deps.sh)");
            return;
        }
    };
}

struct AuthService {
    child: Child,
    port: u16,
    keys: PathBuf,
}

impl AuthService {
    fn start(name: &str, users: &str) -> AuthService {
        let dir = support::temp_dir(name);
        let keys = dir.join("keys");
        let port_file = dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let child = Command::new("/usr/bin/python3")
            .arg(SERVICE)
            .args(["serve", "--lifetime", "120", "--users", users, "--keys"])
            .arg(&keys)
            .arg("--port-file")
            .arg(&port_file)
            .spawn()
            .expect("auth service");
        let mut port = None;
        assert!(
            support::eventually(Duration::from_secs(10), || {
                port = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok());
                port.is_some()
            }),
            "auth service did not start"
        );
        AuthService { child, port: port.unwrap_or(0), keys }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set_delay(&self, ms: u64) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::{Read, Write};
        write!(s, "POST /delay?ms={ms} HTTP/1.0\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    }

    fn keygen(&self, keys: &Path, kid: &str, alg: &str) {
        let st = Command::new("/usr/bin/python3")
            .arg(SERVICE)
            .args(["keygen", "--kid", kid, "--alg", alg, "--keys"])
            .arg(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn token(&self, keys: &Path, kid: &str, routes: &str, exp_in: i64) -> String {
        let out = Command::new("/usr/bin/python3")
            .arg(SERVICE)
            .args(["token", "--kid", kid, "--routes", routes, "--iss", "test-issuer", "--aud", "relay"])
            .arg(format!("--exp-in={exp_in}"))
            .arg("--keys")
            .arg(keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {b}\r\n")
}

fn describe(relay: std::net::SocketAddr, path: &str, auth: &str, timeout: Duration) -> Reply {
    let mut v = RawViewer::connect(relay, path);
    let url = v.url.clone();
    v.request("DESCRIBE", &url, &format!("Accept: application/sdp\r\n{auth}"), timeout)
}

fn metric(relay: &Relay, series: &str) -> f64 {
    let text = rtsp_tunnel_relay::metrics::MetricsHub::new(relay.metrics.clone()).render();
    support::metric_value(&text, series)
}

/// Plays through the relay, authenticated by `auth` on every request; returns the viewer.
fn playing(relay: std::net::SocketAddr, path: &str, auth: &str) -> RawViewer {
    let t = Duration::from_secs(15);
    let mut v = RawViewer::connect(relay, path);
    let url = v.url.clone();
    let d = v.request("DESCRIBE", &url, &format!("Accept: application/sdp\r\n{auth}"), t);
    assert_eq!(d.status, 200, "DESCRIBE: {d:?}");
    let base = d.header("Content-Base").unwrap_or(&url).trim_end_matches('/').to_owned();
    let control = d.body.lines().find_map(|l| l.strip_prefix("a=control:")).filter(|c| *c != "*").unwrap_or("");
    let track = if control.starts_with("rtsp://") { control.to_owned() } else { format!("{base}/{control}") };
    let s = v.request("SETUP", &track, &format!("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n{auth}"), t);
    assert_eq!(s.status, 200, "SETUP: {s:?}");
    let p = v.request("PLAY", &base, &format!("Range: npt=0.000-\r\n{auth}"), t);
    assert_eq!(p.status, 200, "PLAY: {p:?}");
    v
}

#[test]
fn an_http_callback_decides_and_a_slow_one_delays_only_its_viewers() {
    require_python_jwt!();
    let service = AuthService::start("va-http", "alice:pw");
    let camera = DemoCamera::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[auth]\nmethod=\"http\"\nbasic_over_plain=true\nmax_sessions_per_ip=30\n\
         [auth.http]\nurl=\"{}\"\ntimeout_ms=6500\nheaders={{ \"X-Relay-Secret\" = \"s3cret\" }}\n\
         [[route]]\npath=\"/demo\"\nupstream=\"{}\"\n\
         [[route]]\npath=\"/capped\"\nupstream=\"{}\"\nopen=true\nmax_viewers=1\n",
        service.url("/auth"),
        camera.url(),
        camera.url()
    );
    let relay = Relay::from_config(&config, 2, Limits::default(), None);
    let t = Duration::from_secs(10);
    // Asked with a Basic challenge, inside RTSP.
    let r = describe(relay.addr, "/demo", "", t);
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").is_some_and(|c| c.starts_with("Basic ")), "{r:?}");
    // Refused by the service: 401 again, counted.
    assert_eq!(describe(relay.addr, "/demo", &basic("alice", "nope"), t).status, 401);
    assert_eq!(metric(&relay, "relay_auth_failures_total{reason=\"refused\"}"), 1.0);
    // Allowed: plays.
    let mut watcher = playing(relay.addr, "/demo", &basic("alice", "pw"));
    assert!(watcher.next_rtp(0, t).is_some());

    // The service takes 5 s per answer: 20 viewers wait, the one playing keeps every packet.
    service.set_delay(5000);
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let addr = relay.addr;
            std::thread::spawn(move || describe(addr, "/demo", &basic("alice", "pw"), Duration::from_secs(20)).status)
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    let (mut packets, mut last_seq) = (0u64, None::<u16>);
    while Instant::now() < until {
        let p = watcher.next_rtp(0, Duration::from_secs(2)).expect("media keeps flowing");
        if let Some(prev) = last_seq {
            assert_eq!(p.seq, prev.wrapping_add(1), "a packet was lost while others waited");
        }
        last_seq = Some(p.seq);
        packets += 1;
    }
    assert!(packets > 25, "{packets} packets in 5 s");
    for w in waiting {
        assert_eq!(w.join().unwrap(), 200, "a waiting viewer is let in once the service answers");
    }
    // Slower than timeout_ms: fail closed (503), counted as a timeout.
    service.set_delay(8000);
    assert_eq!(describe(relay.addr, "/demo", &basic("alice", "pw"), Duration::from_secs(15)).status, 503);
    assert_eq!(metric(&relay, "relay_auth_failures_total{reason=\"timeout\"}"), 1.0);

    // max_viewers: the second viewer of /capped is answered 453 until the first leaves.
    let first = describe(relay.addr, "/capped", "", t);
    assert_eq!(first.status, 200);
    let mut holder = RawViewer::connect(relay.addr, "/capped");
    let url = holder.url.clone();
    assert_eq!(holder.request("DESCRIBE", &url, "", t).status, 200);
    assert_eq!(describe(relay.addr, "/capped", "", t).status, 453);
    assert!(metric(&relay, "relay_rejections_total{reason=\"max_viewers\"}") >= 1.0);
    drop(holder);
    assert!(support::eventually(Duration::from_secs(5), || describe(relay.addr, "/capped", "", t).status == 200));

    // The service down: fail closed (503), counted as an error.
    drop(service);
    assert_eq!(describe(relay.addr, "/demo", &basic("alice", "pw"), t).status, 503);
    assert_eq!(metric(&relay, "relay_auth_failures_total{reason=\"error\"}"), 1.0);
    drop(watcher);
    relay.stop();
}

#[test]
fn jwt_tokens_decide_by_route_expiry_and_key() {
    require_python_jwt!();
    let service = AuthService::start("va-jwt", "");
    for (kid, alg) in [("rsa", "RS256"), ("ec", "ES256"), ("ed", "EdDSA")] {
        service.keygen(&service.keys, kid, alg);
    }
    let camera = DemoCamera::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[auth]\nmethod=\"jwt\"\nbasic_over_plain=true\nmax_sessions_per_user=3\n\
         [auth.jwt]\njwks_url=\"{}\"\nissuer=\"test-issuer\"\naudience=\"relay\"\njwks_min_refresh_secs=1\njwks_refresh_secs=60\n\
         [[route]]\npath=\"/demo\"\nupstream=\"{}\"\n",
        service.url("/jwks.json"),
        camera.url()
    );
    let relay = Relay::from_config(&config, 2, Limits::default(), None);
    let t = Duration::from_secs(10);
    let keys = service.keys.clone();
    // Every algorithm, the token as the password of any user name.
    for kid in ["rsa", "ec", "ed"] {
        let token = service.token(&keys, kid, "/demo", 600);
        assert_eq!(describe(relay.addr, "/demo", &basic("x", &token), t).status, 200, "{kid}");
    }
    // A token for other routes, an expired one, garbage: refused.
    let other = service.token(&keys, "rsa", "/other,/demo2*", 600);
    assert_eq!(describe(relay.addr, "/demo", &basic("x", &other), t).status, 401);
    let expired = service.token(&keys, "ec", "/demo", -120);
    assert_eq!(describe(relay.addr, "/demo", &basic("x", &expired), t).status, 401);
    assert_eq!(describe(relay.addr, "/demo", &basic("x", "not.a.token"), t).status, 401);
    // An unknown kid is refused; once the set is rotated to include it, the same token passes.
    let elsewhere = support::temp_dir("va-jwt-new");
    service.keygen(&elsewhere, "new", "RS256");
    let fresh = service.token(&elsewhere, "new", "/d*", 600);
    assert_eq!(describe(relay.addr, "/demo", &basic("x", &fresh), t).status, 401);
    for ext in ["pem", "alg"] {
        std::fs::copy(elsewhere.join(format!("new.{ext}")), keys.join(format!("new.{ext}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(describe(relay.addr, "/demo", &basic("x", &fresh), t).status, 200);
    assert!(metric(&relay, "relay_auth_failures_total{reason=\"refused\"}") >= 4.0);

    // max_sessions_per_user: the token's subject holds three sessions at most.
    let token = service.token(&keys, "rsa", "/demo", 600);
    let held: Vec<RawViewer> = (0..3).map(|_| playing(relay.addr, "/demo", &basic("x", &token))).collect();
    assert_eq!(describe(relay.addr, "/demo", &basic("x", &token), t).status, 453);
    assert!(metric(&relay, "relay_rejections_total{reason=\"max_sessions_per_user\"}") >= 1.0);
    drop(held);

    // FFmpeg plays with the token in the URL (it keeps at most 127 bytes of user:password, so
    // `rtsp://x:TOKEN@` reaches the relay cut short), GStreamer with it as its password.
    if support::peers_available() {
        let addr = relay.addr;
        let out = support::ffmpeg_play("tcp", &format!("rtsp://{addr}/demo?jwt={token}"), 30);
        assert!(support::ffmpeg_frames(&out) >= 30, "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
        let out = support::gst_play(&format!("rtsp://{addr}/demo"), &["user-id=x", &format!("user-pw={token}")], 30);
        assert!(
            support::gst_decoded(&out),
            "gst: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    relay.stop();
}

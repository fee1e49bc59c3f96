//! The built-in player and RTSP over WebSocket with real peers, before the relay serves them: a
//! Python test double (tests/peers/ws_rtsp_bridge.py) bridges `rtsp.onvif.org` WebSockets to a
//! gst-rtsp-server camera asking for Digest credentials and serves assets/player. Python's
//! `websockets` runs a full RTSP dialogue through it and probes the framing rules (subprotocol,
//! text, oversized and fragmented frames, ping), and headless Chromium (DevTools protocol)
//! plays the page: decoded frames rise, currentTime advances for 10 s, the picture is not blank,
//! and after a stalled page thread it jumps back to the live edge; the same over HTTPS (wss://,
//! a secure context) with a generated certificate.
//! The modules themselves have unit tests under Node (tests/player/modules.test.mjs). Each test
//! is skipped with a message when chromium, python3-websockets or node is missing
//! (scripts/install-test-deps.sh installs them).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::GstCamera;

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn websockets_available() -> bool {
    support::peers_available() && have("/usr/bin/python3", &["-c", "import websockets"])
}

macro_rules! require {
    ($ok:expr, $what:literal) => {
        if !$ok {
            eprintln!("skipped: {} missing (run scripts/install-test-deps.sh)", $what);
            return;
        }
    };
}

/// The bridge, killed on drop (and exiting by itself when its stdin pipe closes).
struct Bridge {
    child: Child,
    port: u16,
    /// `WS <path>` and `WS-CLOSED <path> <code>` lines.
    events: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    /// `tls`: the certificate and key PEM files to serve HTTPS with.
    fn start(camera_port: u16, tls: Option<(&Path, &Path)>) -> Bridge {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ws_rtsp_bridge.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args([script, "--camera-port", &camera_port.to_string()]);
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start the bridge");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("READY port=").and_then(|p| p.parse().ok());
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        // Reads until the bridge exits: its prints must never meet a closed pipe.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Bridge { port: port.unwrap_or_else(|| panic!("bridge said {line:?}")), child, events }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a peer script under a hard time limit; its last stdout line parsed as JSON.
fn run_json(secs: u32, script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["-k", "5", &secs.to_string(), "/usr/bin/python3", &path])
        .args(args)
        .output()
        .expect("run peer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!("{script} printed nothing ({}): {}", out.status, String::from_utf8_lossy(&out.stderr))
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script}: {e}: {line}"))
}

#[test]
fn a_websocket_client_runs_a_full_rtsp_dialogue_with_digest_and_receives_rtp() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    let camera = GstCamera::start(Some(("alice", "s3cret")));
    let bridge = Bridge::start(camera.port, None);
    let url = format!("ws://127.0.0.1:{}/cam1", bridge.port);
    let r = run_json(30, "ws_rtsp_client.py", &[&url, "--seconds", "3", "--user", "alice", "--password", "s3cret"]);
    assert_eq!(r["subprotocol"], "rtsp.onvif.org", "{r}");
    for method in ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"] {
        assert_eq!(r["statuses"][method], 200, "{method}: {r}");
    }
    // 25 fps for 3 s, a few packets per frame.
    assert!(r["rtp"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["close_code"], 1000, "{r}");
    assert_eq!(camera.teardowns(), 1, "the TEARDOWN reached the camera");
    let closed = || bridge.events.lock().unwrap().iter().any(|l| l == "WS-CLOSED /cam1 1000");
    assert!(support::eventually(Duration::from_secs(5), closed), "{:?}", bridge.events.lock().unwrap());
}

/// The framing rules as a WebSocket client library meets them at `url` (`ws://…/cam1`): refused
/// subprotocols, a text frame, an 8 MiB frame, a fragmented request, a ping.
fn check_framing_rules(url: &str) {
    let probe = |name: &str| run_json(30, "ws_rtsp_client.py", &[url, "--probe", name]);
    for name in ["no-subprotocol", "wrong-subprotocol"] {
        let r = probe(name);
        assert_eq!(r["status"], 400, "{r}");
    }
    let r = probe("text");
    assert_eq!(r["close_code"], 1003, "{r}");
    let r = probe("oversized");
    assert_eq!(r["close_code"], 1009, "{r}");
    let r = probe("fragmented");
    assert_eq!(r["status"], 200, "a request over three fragments is one request: {r}");
    let r = probe("ping");
    assert_eq!((&r["pong"], &r["status"]), (&serde_json::json!(true), &serde_json::json!(200)), "{r}");
}

#[test]
fn a_websocket_client_library_meets_the_framing_rules() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    let camera = GstCamera::start(None);
    let bridge = Bridge::start(camera.port, None);
    check_framing_rules(&format!("ws://127.0.0.1:{}/cam1", bridge.port));
}

/// Opens the page for a camera asking for credentials, over HTTP or HTTPS (a self-signed
/// certificate for 127.0.0.1), and checks what the page played.
fn chromium_plays_the_page(tls: bool) {
    let camera = GstCamera::start(Some(("alice", "s3cret")));
    let dir = support::temp_dir("browser-player");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    }
    let bridge = Bridge::start(camera.port, tls.then_some((cert.as_path(), key.as_path())));
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{}/cam1", bridge.port);
    let shot = format!("{}/browser-player-{scheme}.png", env!("CARGO_TARGET_TMPDIR"));
    let mut args =
        vec![url.as_str(), "--screenshot", &shot, "--seconds", "10", "--user", "alice", "--password", "s3cret"];
    if tls {
        args.push("--insecure");
    }
    let r = run_json(60, "browser_player_check.py", &args);
    assert!(r.get("error").is_none(), "{r}");
    // (127.0.0.1 is a secure context over plain HTTP too; another host's address would not be.)
    assert_eq!(r["secure_context"], true, "{r}");
    assert_eq!(r["login_filled"], true, "the page asked for a name and password: {r}");
    let (start, end) = (&r["start"], &r["end"]);
    assert_eq!(end["player"]["codec"].as_str().map(|c| c.starts_with("avc1.")), Some(true), "{r}");
    assert_eq!((end["player"]["width"].as_u64(), end["player"]["height"].as_u64()), (Some(640), Some(360)), "{r}");
    let frames = |s: &serde_json::Value| s["frames"].as_u64().unwrap();
    let time = |s: &serde_json::Value| s["time"].as_f64().unwrap();
    // 25 fps for 10 s: well over a hundred decoded frames, and the clock moved most of 10 s.
    assert!(frames(end) > frames(start) + 100, "decoded frames did not rise: {r}");
    assert!(time(end) > time(start) + 5.0, "currentTime did not advance: {r}");
    assert!(r["variance"].as_f64().unwrap() > 10.0, "blank picture ({shot}): {r}");
    // After a 2.5 s stall the page jumps to the live edge instead of playing late.
    assert!(r["catch_up"]["jumps"].as_u64().unwrap() >= 1, "no jump to the live edge: {r}");
    assert!(r["catch_up"]["latency"].as_f64().unwrap() < 1.0, "still behind after the stall: {r}");
    assert_eq!(r["console_errors"], serde_json::json!([]), "{r}");
    // Measured, not judged: the page's own delay from a frame's arrival to its display.
    let delay = end["player"]["delayMs"].as_f64();
    assert!(delay.is_some(), "requestVideoFrameCallback measured nothing: {r}");
    let first = r["first_frame_secs"].as_f64().unwrap_or(-1.0);
    eprintln!(
        "{scheme}: first picture {first:.2} s after navigation, page delay {:.0} ms; screenshot {shot}",
        delay.unwrap_or(-1.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn headless_chromium_plays_the_player_page_after_asking_for_credentials() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    chromium_plays_the_page(false);
}

#[test]
fn headless_chromium_plays_the_player_page_over_https() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    chromium_plays_the_page(true);
}

#[test]
fn player_modules_pass_their_node_tests() {
    require!(have("node", &["--version"]), "node");
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/player/modules.test.mjs");
    let out = Command::new("timeout").args(["-k", "5", "120", "node", "--test", file]).output().expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

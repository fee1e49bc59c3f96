//! The built-in player and RTSP over WebSocket with real peers, through the relay binary (2
//! shards) to a gst-rtsp-server camera on a route that asks viewers for Digest credentials.
//! Python's `websockets` runs a full RTSP dialogue over `rtsp.onvif.org` and probes the framing
//! rules (subprotocol, text, oversized and fragmented frames, ping); headless Chromium (DevTools
//! protocol) plays the page the relay serves: decoded frames rise, currentTime advances for
//! 10 s, the picture is not blank, and after a stalled page thread it jumps back to the live
//! edge; the same over HTTPS (wss://, a secure context) with a generated certificate. The
//! glass-to-glass machinery (scripts/glass-to-glass.sh) reads capture times back from the
//! picture in the page and in FFmpeg (its numbers are measured, never judged). The pages
//! (route list, player, its files) are checked over raw HTTP, and `[web] enabled = false` turns
//! them all off. The modules themselves have unit tests under Node
//! (tests/player/modules.test.mjs). Each test is skipped with a message when its peers
//! (gstreamer, chromium, python3-websockets, node) are missing (scripts/install-test-deps.sh).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{GstCamera, RelayProcess};

const REALM: &str = "rtsp-tunnel-relay";

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn websockets_available() -> bool {
    support::peers_available() && have("/usr/bin/python3", &["-c", "import websockets"])
}

macro_rules! require {
    ($ok:expr, $what:literal) => {
        skip_when_quick!();
        if !$ok {
            eprintln!("skipped: {} missing (run scripts/install-test-deps.sh)", $what);
            return;
        }
    };
}

/// The relay in front of `camera`: `/cam1` for alice (password s3cret) from anywhere, `/hidden`
/// for nobody's address; `tls` adds an HTTPS listener (its address is returned) with these
/// certificate and key files; `extra` is appended to the configuration.
fn relay(name: &str, camera: &GstCamera, tls: Option<(&Path, &Path)>, extra: &str) -> (RelayProcess, Option<String>) {
    let ha1 = rtsp_tunnel_relay::proto::viewer_auth::ha1_hex("alice", REALM, "s3cret");
    let mut body = format!(
        "[[user]]\nname = \"alice\"\nha1 = \"{ha1}\"\n[[route]]\npath = \"/cam1\"\nupstream = \"{cam}\"\nusers = [\"alice\"]\nlinger_secs = 1\n[[route]]\npath = \"/hidden\"\nupstream = \"{cam}\"\nopen = true\ndeny = [\"127.0.0.0/8\"]\n{extra}",
        cam = camera.url("/cam1")
    );
    let mut https = None;
    if let Some((cert, key)) = tls {
        let addr = format!("127.0.0.1:{}", support::free_port());
        body.push_str(&format!(
            "[[listen.tls]]\naddr = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        https = Some(addr);
    }
    (RelayProcess::start(name, &body), https)
}

/// One request over a fresh connection; the whole answer (the relay closes after it).
fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.replace('\n', "\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
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
    let camera = GstCamera::start(None);
    let (relay, _) = relay("ws-dialogue", &camera, None, "");
    let url = format!("ws://{}/cam1", relay.tunnel);
    let r = run_json(30, "ws_rtsp_client.py", &[&url, "--seconds", "3", "--user", "alice", "--password", "s3cret"]);
    assert_eq!(r["subprotocol"], "rtsp.onvif.org", "{r}\n{}", relay.log_text());
    for method in ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "GET_PARAMETER", "TEARDOWN"] {
        assert_eq!(r["statuses"][method], 200, "{method}: {r}");
    }
    // 25 fps for 3 s, a few packets per frame.
    assert!(r["rtp"].as_u64().unwrap() > 50, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["close_code"], 1000, "{r}");
    let teardown = || camera.teardowns() == 1;
    assert!(support::eventually(Duration::from_secs(5), teardown), "the TEARDOWN reached the camera");
    assert_eq!(relay.metric("relay_connections_total{kind=\"websocket\"}"), 1.0);
    assert_eq!(relay.metric("relay_connections_total{kind=\"tunnel_get\"}"), 0.0);
    let ended = || relay.metric("relay_sessions_active") == 0.0;
    assert!(support::eventually(Duration::from_secs(5), ended), "{}", relay.scrape());
}

#[test]
fn a_stopping_relay_closes_its_websockets_with_going_away() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    let camera = GstCamera::start(None);
    let (relay, _) = relay("ws-drain", &camera, None, "");
    let url = format!("ws://{}/cam1", relay.tunnel);
    let client = std::thread::spawn(move || {
        run_json(30, "ws_rtsp_client.py", &[&url, "--seconds", "20", "--user", "alice", "--password", "s3cret"])
    });
    let playing = || relay.metric("relay_frames_total{direction=\"to_viewer\"}") > 10.0;
    assert!(support::eventually(Duration::from_secs(10), playing), "{}", relay.log_text());
    relay.signal("TERM");
    let r = client.join().unwrap();
    assert_eq!(r["statuses"]["PLAY"], 200, "{r}");
    // The drain's end (shutdown_grace_secs = 2) reached the viewer as a WebSocket close.
    assert_eq!(r["close_code"], 1001, "{r}");
}

/// A client still sending an oversized frame when the relay refuses it: the relay keeps reading
/// (and discarding) after its close frame, so the client's writes complete and it reads the
/// close (1009) and the end of the stream, instead of a reset or a stalled send.
#[test]
fn a_client_sending_an_oversized_frame_can_finish_and_read_the_close() {
    let relay =
        RelayProcess::start("ws-oversized", "[[route]]\npath = \"/open\"\nupstream = \"rtsp://127.0.0.1:9/x\"\n");
    let mut s = TcpStream::connect(relay.tunnel).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /open HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // A masked binary frame announcing 8 MiB (limit 64 KiB), then 4 MiB of it.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(8u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    s.write_all(&frame).unwrap();
    s.write_all(&vec![0u8; 4 << 20]).expect("the relay reads on after refusing the frame");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a close frame and the end of the stream, not a reset");
    assert_eq!(rest.get(..4), Some(&[0x88, rest[1], 0x03, 0xf1][..]), "close 1009: {rest:?}");
    assert_eq!(relay.metric("relay_rejections_total{reason=\"websocket_too_large\"}"), 1.0);
}

#[test]
fn a_websocket_viewer_without_credentials_is_asked_for_them() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    let camera = GstCamera::start(None);
    let (relay, _) = relay("ws-401", &camera, None, "");
    let r = run_json(30, "ws_rtsp_client.py", &[&format!("ws://{}/cam1", relay.tunnel), "--seconds", "1"]);
    assert_eq!(r["statuses"]["DESCRIBE"], 401, "{r}");
    assert!(camera.requests().iter().all(|m| !m.starts_with("PLAY")), "nothing played: {:?}", camera.requests());
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
    let open = format!("[[route]]\npath = \"/open\"\nupstream = \"{}\"\nopen = true\n", camera.url("/cam1"));
    let (relay, _) = relay("ws-framing", &camera, None, &open);
    check_framing_rules(&format!("ws://{}/open", relay.tunnel));
    let rejected = |reason: &str| relay.metric(&format!("relay_rejections_total{{reason=\"{reason}\"}}"));
    assert_eq!(rejected("websocket_handshake"), 2.0, "{}", relay.scrape());
    assert_eq!(rejected("websocket_text_frame"), 1.0);
    assert_eq!(rejected("websocket_too_large"), 1.0);
    // text, oversized, fragmented, ping: the refused upgrades are no WebSocket connections.
    assert_eq!(relay.metric("relay_connections_total{kind=\"websocket\"}"), 4.0);
}

/// Opens the page for a route asking for credentials, over HTTP or HTTPS (a self-signed
/// certificate for 127.0.0.1), and checks what the page played.
fn chromium_plays_the_page(tls: bool) {
    let camera = GstCamera::start(None);
    let dir = support::temp_dir("browser-player");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    }
    let scheme = if tls { "https" } else { "http" };
    let (relay, https) =
        relay(&format!("browser-{scheme}"), &camera, tls.then_some((cert.as_path(), key.as_path())), "");
    let authority = https.unwrap_or_else(|| relay.tunnel.to_string());
    let url = format!("{scheme}://{authority}/cam1");
    let shot = format!("{}/browser-player-{scheme}.png", env!("CARGO_TARGET_TMPDIR"));
    let mut args =
        vec![url.as_str(), "--screenshot", &shot, "--seconds", "10", "--user", "alice", "--password", "s3cret"];
    if tls {
        args.push("--insecure");
    }
    let r = run_json(60, "browser_player_check.py", &args);
    assert!(r.get("error").is_none(), "{r}\nrelay log:\n{}", relay.log_text());
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
    // The page's WebSocket went through the relay's WebSocket path (plus the 401 retry's).
    assert!(relay.metric("relay_connections_total{kind=\"websocket\"}") >= 1.0, "{}", relay.scrape());
    assert!(relay.metric("relay_bytes_total{direction=\"to_viewer\"}") > 100_000.0, "{}", relay.scrape());
    // Every request the page made was served (no favicon or missing module refused as not a tunnel).
    for reason in ["not_a_tunnel", "unknown_route"] {
        let refused = relay.metric(&format!("relay_rejections_total{{reason=\"{reason}\"}}"));
        assert_eq!(refused, 0.0, "{reason}\n{}", relay.log_text());
    }
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

/// `[auth] method = "jwt"`: the page opened with `?jwt=` (a token PyJWT signed, checked against
/// a key set file) plays without asking for a password, and the token is gone from its address.
#[test]
fn headless_chromium_plays_with_a_token_in_the_page_url() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    require!(have("/usr/bin/python3", &["-c", "import jwt, cryptography"]), "python3-jwt/python3-cryptography");
    let service = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/auth_service.py");
    let dir = support::temp_dir("browser-jwt");
    let keys = dir.join("keys");
    let py = |args: &[&str]| {
        let out = Command::new("/usr/bin/python3").arg(service).args(args).arg("--keys").arg(&keys).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    py(&["keygen", "--kid", "k1", "--alg", "ES256"]);
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, py(&["jwks"])).unwrap();
    let token = py(&["token", "--kid", "k1", "--routes", "/tok*"]);
    let camera = GstCamera::start(None);
    let extra = format!(
        "[auth]\nmethod = \"jwt\"\n[auth.jwt]\njwks_file = \"{}\"\n[[route]]\npath = \"/token\"\nupstream = \"{}\"\n",
        jwks.display(),
        camera.url("/cam1")
    );
    let (relay, _) = relay("browser-jwt", &camera, None, &extra);
    let url = format!("http://{}/token?maxLatency=1&jwt={token}", relay.tunnel);
    let shot = format!("{}/browser-player-jwt.png", env!("CARGO_TARGET_TMPDIR"));
    let r = run_json(60, "browser_player_check.py", &[url.as_str(), "--screenshot", &shot, "--seconds", "4"]);
    assert!(r.get("error").is_none(), "{r}\nrelay log:\n{}", relay.log_text());
    assert_eq!(r["login_filled"], false, "no password asked: {r}");
    let frames = |s: &serde_json::Value| s["frames"].as_u64().unwrap();
    assert!(frames(&r["end"]) > frames(&r["start"]) + 25, "decoded frames did not rise: {r}");
    let location = r["location"].as_str().unwrap_or("");
    assert!(location.ends_with("/token?maxLatency=1"), "the token left the address bar: {location}");
    assert!(!relay.log_text().contains(&token), "a token reached the log");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn headless_chromium_plays_the_player_page_over_https() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    chromium_plays_the_page(true);
}

/// tests/peers/stamp_camera.py: a camera writing each frame's capture time into the picture.
struct StampCamera(std::process::Child, u16);

impl StampCamera {
    fn start() -> StampCamera {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/stamp_camera.py");
        // Its stdin is a pipe held here: if the test dies, the camera sees EOF and exits.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the stamping camera");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("READY port=").and_then(|p| p.parse().ok());
        StampCamera(child, port.unwrap_or_else(|| panic!("camera said {line:?}")))
    }
}

impl Drop for StampCamera {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The machinery of scripts/glass-to-glass.sh, not its numbers (no speed is judged): the page
/// and FFmpeg, watching one shared route at once, read every frame's capture time back from the
/// picture and find each frame shown after it was captured, within reason.
#[test]
fn glass_to_glass_reads_capture_times_back_in_the_page_and_ffmpeg() {
    require!(websockets_available(), "gstreamer/python3-gi/python3-websockets");
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    let camera = StampCamera::start();
    let relay = RelayProcess::start(
        "glass-to-glass",
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:{}/cam1\"\nopen = true\n", camera.1),
    );
    let (page, rtsp) = (format!("http://{}/cam1", relay.tunnel), format!("rtsp://{}/cam1", relay.tunnel));
    let r = run_json(90, "glass_to_glass.py", &[&page, &rtsp, "--seconds", "3", "--warmup", "1"]);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}\n{}", relay.log_text());
    for viewer in ["page", "ffmpeg", "ffmpeg (defaults)"] {
        let v = &r["viewers"][viewer];
        // 3 s at 25 fps: frames were counted, and stamps that did not read back are rare.
        let frames = v["frames"].as_u64().unwrap();
        assert!(frames >= 10, "{viewer}: {r}");
        assert!(v["unreadable"].as_u64().unwrap() * 10 <= frames, "{viewer}: {r}");
        // Shown after captured and not absurdly late: the clocks were mapped right (a frame
        // shown before its capture would wrap to ~2^32 ms).
        let (p50, max) = (v["p50"].as_f64().unwrap(), v["max"].as_f64().unwrap());
        assert!(p50 > 0.0 && max < 60_000.0, "{viewer}: {r}");
    }
    assert!(r["page_minus_ffmpeg"]["p50"].as_f64().is_some_and(f64::is_finite), "{r}");
    // The page over a WebSocket, FFmpeg over HTTP tunnels (a GET each), through one route.
    assert!(relay.metric("relay_connections_total{kind=\"websocket\"}") >= 1.0, "{}", relay.scrape());
    assert!(relay.metric("relay_connections_total{kind=\"tunnel_get\"}") >= 2.0, "{}", relay.scrape());
}

#[test]
fn the_relay_serves_the_route_list_the_player_and_its_files() {
    require!(support::peers_available(), "gstreamer");
    let camera = GstCamera::start(None);
    let (relay, _) = relay("web-pages", &camera, None, "");
    let page =
        |target: &str| http(relay.tunnel, &format!("GET {target} HTTP/1.1\nHost: x\nAccept: text/html,*/*;q=0.8\n\n"));
    let list = page("/");
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    // A route with users is listed (the login is inside the WebSocket); a denied one is not.
    assert!(list.contains("href=\"/cam1\""), "{list}");
    assert!(!list.contains("hidden"), "{list}");
    let player = page("/cam1");
    assert!(player.starts_with("HTTP/1.1 200") && player.contains("<video"), "{player}");
    assert!(page("/hidden").starts_with("HTTP/1.0 403"));
    assert!(page("/nope").starts_with("HTTP/1.0 404"));
    let file = http(relay.tunnel, "GET /_player/player.js HTTP/1.1\nHost: x\nAccept: */*\n\n");
    assert!(file.starts_with("HTTP/1.1 200") && file.contains("text/javascript"), "{file}");
    assert!(http(relay.tunnel, "GET /_player/nope.js HTTP/1.1\nHost: x\n\n").starts_with("HTTP/1.0 404"));
    // Not a browser and not a tunnel: refused as before.
    assert!(http(relay.tunnel, "GET /cam1 HTTP/1.1\nHost: x\n\n").starts_with("HTTP/1.0 400"));
    assert_eq!(relay.metric("relay_connections_total{kind=\"websocket\"}"), 0.0);
    assert_eq!(relay.metric("relay_rejections_total{reason=\"not_a_tunnel\"}"), 1.0);
}

/// The first line of the relay's answer to a WebSocket upgrade of `/open` with these `Host`
/// and `Origin` headers.
fn upgrade_status(relay: &RelayProcess, host: &str, origin: Option<&str>) -> String {
    let mut s = TcpStream::connect(relay.tunnel).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    write!(s, "GET /open HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n{origin}\r\n").unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// Another site's page cannot open a WebSocket through a visitor's browser (it would watch a
/// camera only the visitor's address may), nor frame the player; the relay's own pages, the
/// origins listed in `[web] allowed_origins` and clients that send no `Origin` are served.
#[test]
fn websockets_from_other_origins_are_refused_and_the_pages_cannot_be_framed() {
    let relay = RelayProcess::start(
        "ws-origin",
        "[web]\nallowed_origins = [\"https://nvr.example\"]\n[[route]]\npath = \"/open\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nopen = true\n",
    );
    let own = relay.tunnel.to_string();
    let other_port = format!("127.0.0.1:{}", relay.tunnel.port().wrapping_add(1));
    let refused =
        [Some("http://evil.example".to_owned()), Some(format!("http://{other_port}")), Some("null".to_owned())];
    for origin in &refused {
        let status = upgrade_status(&relay, &own, origin.as_deref());
        assert!(status.starts_with("HTTP/1.0 403"), "{origin:?}: {status}");
    }
    for origin in [None, Some(format!("http://{own}")), Some("https://nvr.example".to_owned())] {
        let status = upgrade_status(&relay, &own, origin.as_deref());
        assert!(status.starts_with("HTTP/1.1 101"), "{origin:?}: {status}");
    }
    let rejected = relay.metric("relay_rejections_total{reason=\"websocket_origin\"}");
    assert_eq!(rejected, refused.len() as f64, "{}", relay.scrape());
    // The refused upgrades are no WebSocket connections.
    assert_eq!(relay.metric("relay_connections_total{kind=\"websocket\"}"), 3.0);
    let page = http(relay.tunnel, "GET /open HTTP/1.1\nHost: x\nAccept: text/html\n\n");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let head = page.split("\r\n\r\n").next().unwrap();
    assert!(head.lines().any(|l| l == "X-Frame-Options: SAMEORIGIN"), "{head}");
    assert!(head.lines().any(|l| l == "X-Content-Type-Options: nosniff"), "{head}");
    let csp = head.lines().find_map(|l| l.strip_prefix("Content-Security-Policy: ")).unwrap_or_default();
    assert!(csp.split(';').any(|d| d.trim() == "frame-ancestors 'self'"), "{head}");
}

/// A fresh 127.0.0.1 port for a page (another origin than the relay's), and that origin.
fn page_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    (listener, origin)
}

/// Serves `html` to every request on `listener` for at most 60 s; a request for
/// `/verdict/<word>` (the page reporting what it saw) sends `<word>` down the returned channel.
fn serve_page(listener: std::net::TcpListener, html: String) -> std::sync::mpsc::Receiver<String> {
    let (verdicts, verdict) = std::sync::mpsc::channel();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < end {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("");
            if let Some(word) = path.strip_prefix("/verdict/") {
                let _ = verdicts.send(word.to_owned());
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n");
                continue;
            }
            let reply =
                format!("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}", html.len());
            let _ = s.write_all(reply.as_bytes());
        }
    });
    verdict
}

/// What a page at `page` (another origin) wrote once its WebSocket to the relay opened or
/// failed: Chromium headless, its DOM dumped after the page settled.
fn chromium_page_result(page: &str, verdict: &std::sync::mpsc::Receiver<String>) -> String {
    let profile = support::temp_dir("chromium-origin");
    // The page reports its socket's fate to its own server: a dumped DOM could be read before
    // the socket settled (virtual time runs ahead of a slow handshake on a loaded box).
    let mut chromium = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(page)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chromium");
    let result = verdict.recv_timeout(Duration::from_secs(45)).unwrap_or_else(|_| "no verdict in 45 s".to_owned());
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(profile);
    result
}

/// A page on another site (another port of 127.0.0.1, served here) opening `ws://relay/open`
/// from a visitor's Chromium: refused, unless its origin is in `[web] allowed_origins`.
#[test]
fn chromium_on_another_origin_cannot_open_the_relays_websocket_unless_allowed() {
    require!(Path::new("/usr/bin/chromium").exists(), "chromium");
    let ((foreign_port, foreign), (partner_port, partner)) = (page_listener(), page_listener());
    let relay = RelayProcess::start(
        "ws-origin-chromium",
        &format!(
            "[web]\nallowed_origins = [\"{partner}\"]\n[[route]]\npath = \"/open\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nopen = true\n"
        ),
    );
    let page = format!(
        "<html><body><script>const ws = new WebSocket('ws://{}/open', 'rtsp.onvif.org');\nws.onopen = () => fetch('/verdict/OPEN');\nws.onerror = () => fetch('/verdict/REFUSED');</script></body></html>",
        relay.tunnel
    );
    let (foreign_verdict, partner_verdict) = (serve_page(foreign_port, page.clone()), serve_page(partner_port, page));
    assert_eq!(chromium_page_result(&format!("{foreign}/"), &foreign_verdict), "REFUSED");
    assert_eq!(chromium_page_result(&format!("{partner}/"), &partner_verdict), "OPEN");
    assert_eq!(relay.metric("relay_rejections_total{reason=\"websocket_origin\"}"), 1.0, "{}", relay.scrape());
}

#[test]
fn web_disabled_serves_no_page_and_no_websocket() {
    require!(support::peers_available(), "gstreamer");
    let camera = GstCamera::start(None);
    let (relay, _) = relay("web-off", &camera, None, "[web]\nenabled = false\n");
    let page = http(relay.tunnel, "GET / HTTP/1.1\nHost: x\nAccept: text/html\n\n");
    assert!(page.starts_with("HTTP/1.0 400"), "{page}");
    let upgrade = http(
        relay.tunnel,
        "GET /cam1 HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\nSec-WebSocket-Protocol: rtsp.onvif.org\n\n",
    );
    assert!(upgrade.starts_with("HTTP/1.0 400"), "{upgrade}");
    assert_eq!(relay.metric("relay_connections_total{kind=\"websocket\"}"), 0.0);
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

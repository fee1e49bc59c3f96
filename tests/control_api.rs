//! The control API end to end, driven with curl against the release binary while FFmpeg
//! plays: a route created over the API is played, seen `ready` with its viewer in
//! `/v1/cameras` and `/v1/sessions`, its viewer kicked, its camera killed (`retrying`, then
//! `ready` again, in the API and the metrics), the relay restarted (the route kept), the route
//! deleted (new viewers refused); the 401, 403 and 409 answers; `/status` in headless Chromium.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{GstCamera, LiveViewer, RelayProcess, api_curl as curl, eventually};

const ADMIN: &str = "adm-7f3c2e9a";
const READER: &str = "ro-51b0d4c8";

fn sha256_hex(secret: &str) -> String {
    rtsp_tunnel_relay::proto::api_token::sha256_hex(secret.as_bytes())
}

/// `[api]` on `port` with an admin and a read token, API routes kept in `state`.
fn api_config(port: u16, state: &Path) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {state:?}\n\
         [[api.token]]\nname = \"ops\"\nsha256 = \"{}\"\nscope = \"admin\"\n\
         [[api.token]]\nname = \"wall\"\nsha256 = \"{}\"\nscope = \"read\"\n\
         [metrics]\nper_route = true\n",
        sha256_hex(ADMIN),
        sha256_hex(READER)
    )
}

fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: curl missing");
    }
    ok
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let (code, body) = curl(port, "GET", path, Some(READER), None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn camera_of<'a>(cameras: &'a serde_json::Value, route: &str) -> Option<&'a serde_json::Value> {
    cameras["cameras"].as_array()?.iter().find(|c| c["route"] == route)
}

/// A series' value, if it is in the scrape.
fn series(relay: &RelayProcess, name: &str) -> Option<f64> {
    relay.scrape().lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The status line a plain RTSP DESCRIBE of `path` is answered with.
fn rtsp_status(relay: std::net::SocketAddr, path: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(relay).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "DESCRIBE rtsp://{relay}{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n").unwrap();
    let mut line = String::new();
    let _ = std::io::BufReader::new(s).read_line(&mut line);
    line.trim_end().to_owned()
}

fn start_relay(name: &str, camera: &GstCamera, port: u16, state: &Path) -> RelayProcess {
    let file_route = format!("[[route]]\npath = \"/filecam\"\nupstream = \"{}\"\n", camera.url("/cam2"));
    RelayProcess::start(name, &format!("{}{file_route}", api_config(port, state)))
}

fn state_dir(name: &str) -> PathBuf {
    let d = support::temp_dir(name).join("state");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tokens_scopes_and_file_routes_are_enforced() {
    // No peer but curl: fast enough for the quick loop.
    if !have_curl() {
        return;
    }
    let camera_url = "rtsp://127.0.0.1:9/x";
    let port = support::free_port();
    let state = state_dir("api-auth");
    let relay = RelayProcess::start(
        "api-auth",
        &format!("{}[[route]]\npath = \"/filecam\"\nupstream = \"{camera_url}\"\n", api_config(port, &state)),
    );
    let body = format!(r#"{{"upstream":"{camera_url}"}}"#);
    assert_eq!(curl(port, "GET", "/v1/routes", None, None).0, 401);
    assert_eq!(curl(port, "GET", "/v1/routes", Some("not-a-token"), None).0, 401);
    assert_eq!(curl(port, "GET", "/v1/routes", Some(READER), None).0, 200);
    assert_eq!(curl(port, "PUT", "/v1/routes/new", Some(READER), Some(&body)).0, 403);
    assert_eq!(curl(port, "POST", "/v1/reload", Some(READER), None).0, 403);
    let (code, text) = curl(port, "PUT", "/v1/routes/filecam", Some(ADMIN), Some(&body));
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("configuration file"), "{text}");
    assert_eq!(curl(port, "DELETE", "/v1/routes/filecam", Some(ADMIN), None).0, 409);
    assert_eq!(curl(port, "PATCH", "/v1/routes/filecam", Some(ADMIN), Some("{}")).0, 409);
    let (code, text) = curl(port, "PUT", "/v1/routes/bad", Some(ADMIN), Some(r#"{"upstream":"http://x/"}"#));
    assert_eq!(code, 422, "{text}");
    assert_eq!(
        curl(port, "PUT", "/v1/routes/bad", Some(ADMIN), Some(r#"{"upstream":"rtsp://127.0.0.1/","bogus":1}"#)).0,
        422
    );
    assert_eq!(curl(port, "DELETE", "/v1/sessions/0-999", Some(ADMIN), None).0, 404);
    // The document is served and is the one in docs/.
    let (code, doc) = curl(port, "GET", "/v1/openapi.json", Some(READER), None);
    assert_eq!(code, 200);
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(doc, shipped);
    assert_eq!(relay.metric("relay_rejections_total{reason=\"api_auth\"}"), 2.0);
    assert_eq!(relay.metric("relay_rejections_total{reason=\"api_forbidden\"}"), 2.0);
    let log = relay.log_text();
    for secret in [ADMIN, READER, "not-a-token"] {
        assert!(!log.contains(secret), "a token was logged:\n{log}");
    }
    // Failed attempts from one address are limited like viewer logins ([auth], 20 a minute).
    for _ in 0..20 {
        curl(port, "GET", "/v1/info", Some("wrong"), None);
    }
    assert_eq!(curl(port, "GET", "/v1/info", Some(READER), None).0, 429);
}

#[test]
fn the_api_speaks_https_with_its_own_certificate_keys() {
    if !have_curl() {
        return;
    }
    let dir = support::temp_dir("api-tls");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("api.pem"), dir.join("api.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let port = support::free_port();
    let api = api_config(port, &dir).replace("[api]\n", &format!("[api]\ncert = {cert:?}\nkey = {key:?}\n"));
    let _relay = RelayProcess::start("api-tls", &api);
    let get = |scheme: &str| {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "--cacert", cert.to_str().unwrap(), "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {READER}")])
            .arg(format!("{scheme}://localhost:{port}/v1/info"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).rsplit('\n').next().unwrap_or_default().to_owned()
    };
    assert_eq!(get("https"), "200", "the certificate verifies and the token is read inside TLS");
    assert_ne!(get("http"), "200", "plain HTTP is not served on an HTTPS API");
}

#[test]
fn a_route_made_over_the_api_plays_persists_and_goes() {
    require_peers!();
    let mut camera = GstCamera::start(None);
    let port = support::free_port();
    let state = state_dir("api-e2e");
    let relay = start_relay("api-e2e", &camera, port, &state);
    let upstream = camera.url("/cam1").replace("rtsp://", "rtsp://cam-user:Secr3tPass@");
    let (code, text) =
        curl(port, "PUT", "/v1/routes/site1/cam7", Some(ADMIN), Some(&format!(r#"{{"upstream":"{upstream}"}}"#)));
    assert_eq!(code, 201, "{text}");
    let routes = json(port, "/v1/routes");
    let text = routes.to_string();
    assert!(!text.contains("Secr3tPass"), "a camera password came back: {text}");
    let made = routes.as_array().unwrap().iter().find(|r| r["path"] == "/site1/cam7").unwrap();
    assert_eq!((made["source"].as_str(), made["upstream_user"].as_str()), (Some("api"), Some("cam-user")));
    assert_eq!(made["upstream_password"], "redacted");
    let file = routes.as_array().unwrap().iter().find(|r| r["path"] == "/filecam").unwrap();
    assert_eq!(file["source"], "file");

    // Played: ready with one viewer, the viewer listed.
    let mut viewer = LiveViewer::ffmpeg("api-v1", "tcp", &relay.url("/site1/cam7"), 90);
    let ready = eventually(Duration::from_secs(20), || {
        let c = json(port, "/v1/cameras");
        camera_of(&c, "/site1/cam7").is_some_and(|c| c["state"] == "ready" && c["viewers"] == 1)
    });
    assert!(ready, "{}\n{}", json(port, "/v1/cameras"), viewer.tail());
    assert!(eventually(Duration::from_secs(10), || viewer.frames() > 10), "{}", viewer.tail());
    let cams = json(port, "/v1/cameras");
    let cam = camera_of(&cams, "/site1/cam7").unwrap();
    assert!(cam["codecs"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("H264")), "{cam}");
    let sessions = json(port, "/v1/sessions");
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!((list[0]["route"].as_str(), list[0]["transport"].as_str()), (Some("/site1/cam7"), Some("plain")));
    assert_eq!(list[0]["tls"], false);
    // Kicked: the viewer's session ends, counted as such.
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(curl(port, "DELETE", &format!("/v1/sessions/{id}"), Some(ADMIN), None).0, 204);
    assert!(
        eventually(Duration::from_secs(10), || json(port, "/v1/sessions")["sessions"].as_array().unwrap().is_empty()),
        "{}",
        json(port, "/v1/sessions")
    );
    assert_eq!(relay.metric("relay_sessions_total{outcome=\"kicked\"}"), 1.0);
    viewer.kill();

    // Always on, through PATCH: the camera killed is `retrying`, then `ready` once it is back.
    let (code, text) = curl(port, "PATCH", "/v1/routes/site1/cam7", Some(ADMIN), Some(r#"{"always_on":true}"#));
    assert_eq!(code, 200, "{text}");
    let state_of =
        || camera_of(&json(port, "/v1/cameras"), "/site1/cam7").map(|c| c["state"].as_str().unwrap().to_owned());
    assert!(eventually(Duration::from_secs(20), || state_of().as_deref() == Some("ready")), "{:?}", state_of());
    let up = "relay_route_camera_up{route=\"/site1/cam7\"}";
    assert!(eventually(Duration::from_secs(5), || series(&relay, up) == Some(1.0)), "{}", relay.scrape());
    camera.kill();
    assert!(eventually(Duration::from_secs(20), || state_of().as_deref() == Some("retrying")), "{:?}", state_of());
    let cams = json(port, "/v1/cameras");
    assert!(camera_of(&cams, "/site1/cam7").unwrap()["last_error"].is_string(), "{cams}");
    assert!(eventually(Duration::from_secs(5), || series(&relay, up) == Some(0.0)), "{}", relay.scrape());
    camera.restart();
    assert!(eventually(Duration::from_secs(40), || state_of().as_deref() == Some("ready")), "{:?}", state_of());
    assert!(eventually(Duration::from_secs(5), || series(&relay, up) == Some(1.0)), "{}", relay.scrape());
    // Back to on demand, so the restarted relay opens the camera for its viewer.
    assert_eq!(curl(port, "PATCH", "/v1/routes/site1/cam7", Some(ADMIN), Some(r#"{"always_on":null}"#)).0, 200);

    // Restarted: the route is still there, and plays.
    drop(relay);
    let relay = start_relay("api-e2e-2", &camera, port, &state);
    let routes = json(port, "/v1/routes");
    assert!(routes.as_array().unwrap().iter().any(|r| r["path"] == "/site1/cam7" && r["source"] == "api"), "{routes}");
    let out = support::ffmpeg_play("tcp", &relay.url("/site1/cam7"), 10);
    assert!(support::ffmpeg_frames(&out) >= 10, "{}", support::describe(&out));

    // Deleted while watched: its viewer ends cleanly (route_removed), new viewers are refused.
    let mut watching = LiveViewer::ffmpeg("api-v2", "tcp", &relay.url("/site1/cam7"), 60);
    assert!(eventually(Duration::from_secs(15), || watching.frames() > 5), "{}", watching.tail());
    assert_eq!(curl(port, "DELETE", "/v1/routes/site1/cam7", Some(ADMIN), None).0, 204);
    assert!(watching.wait_exit(Duration::from_secs(10)), "the viewer of a deleted route went on");
    assert_eq!(relay.metric("relay_sessions_total{outcome=\"route_removed\"}"), 1.0);
    assert_eq!(curl(port, "GET", "/v1/routes/site1/cam7", Some(READER), None).0, 404);
    let refused = rtsp_status(relay.tunnel, "/site1/cam7");
    assert!(refused.starts_with("RTSP/1.0 404"), "{refused}");
    let out = support::ffmpeg_play("tcp", &relay.url("/site1/cam7"), 10);
    assert_eq!(support::ffmpeg_frames(&out), 0, "{}", support::describe(&out));
    // The file's route played on throughout.
    let out = support::ffmpeg_play("tcp", &relay.url("/filecam"), 10);
    assert!(support::ffmpeg_frames(&out) >= 10, "{}", support::describe(&out));
    let info = json(port, "/v1/info");
    assert_eq!((info["routes"].as_u64(), info["api_routes"].as_u64()), (Some(1), Some(0)), "{info}");
    assert_eq!(info["config_sha256"].as_str().map(str::len), Some(64), "{info}");
}

#[test]
fn the_status_page_asks_for_a_token_and_refreshes_itself_in_chromium() {
    require_peers!();
    if !Path::new("/usr/bin/chromium").exists() {
        eprintln!("skipped: chromium missing");
        return;
    }
    let camera = GstCamera::start(None);
    let port = support::free_port();
    let state = state_dir("api-status");
    let relay = RelayProcess::start(
        "api-status",
        &format!(
            "{}[[route]]\npath = \"/lobby\"\nupstream = \"{}\"\nalways_on = true\n",
            api_config(port, &state),
            camera.url("/cam1")
        ),
    );
    // Without a token: the login form, and nothing else.
    let (code, page) = curl(port, "GET", "/status", None, None);
    assert_eq!(code, 401);
    assert!(page.contains("id=\"login\"") && !page.contains("/lobby"), "{page}");
    // With one in the header: the status itself.
    let ready = eventually(Duration::from_secs(20), || {
        let (_, page) = curl(port, "GET", "/status", Some(READER), None);
        page.contains("data-route=\"/lobby\"") && page.contains("state ready")
    });
    assert!(ready, "{}", curl(port, "GET", "/status", Some(READER), None).1);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/status_page_check.py");
    let url = format!("http://127.0.0.1:{port}/status");
    let shot = format!("{}/status-page.png", env!("CARGO_TARGET_TMPDIR"));
    let out = support::run_limited(60, &["/usr/bin/python3", script, &url, "--token", READER, "--screenshot", &shot]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["form_first"], true, "{r}");
    let live = r["live"].as_str().unwrap_or_default();
    assert!(live.contains("/lobby") && live.contains("ready"), "{r}");
    assert_ne!(r["uptime_first"], r["uptime_later"], "the page did not refresh itself: {r}");
    // The token stayed in the page: not in its URL, cookies or storage.
    assert_eq!(r["href"], url.as_str(), "{r}");
    assert_eq!((r["cookie"].as_str(), r["local"].as_u64(), r["session"].as_u64()), (Some(""), Some(0), Some(0)), "{r}");
    drop(relay);
}

//! Several relays behind a real HAProxy running `deploy/haproxy/haproxy.cfg` (its frontend and
//! server lines pointed at loopback ports): the GET and the POST of a tunnel reach the same
//! relay, viewers of one path all reach one relay, a POST running far past its
//! `Content-Length: 32767` keeps working, FFmpeg, GStreamer and plain RTSP viewers play through
//! the balancer. Skipped (with a message) when haproxy is not installed.

mod fake;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fake::{CameraMode, FakeCamera, TunnelViewer, b64, connect_from, open_post_from, read_to_close};
use rtsp_tunnel_relay::proto::proxy_header::encode_v2;
use support::*;

const TEMPLATE: &str = include_str!("../deploy/haproxy/haproxy.cfg");

fn haproxy_available() -> bool {
    Command::new("haproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

macro_rules! require_haproxy {
    () => {
        skip_when_quick!();
        if !haproxy_available() {
            eprintln!("skipped: haproxy missing (run scripts/install-test-deps.sh)");
            return;
        }
    };
}

/// The shipped configuration with its frontends on loopback ports and its server lines
/// replaced by `relays` (tunnel address, health checked on the metrics port).
fn cluster_config(front: u16, tls_front: u16, relays: &[&RelayProcess]) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in TEMPLATE.lines() {
        let t = line.trim_start();
        if t.starts_with("server relay") {
            assert!(t.ends_with(" send-proxy-v2"), "the template's server lines changed: {t}");
            continue;
        }
        match t {
            "bind :80" => out.push_str(&format!("    bind 127.0.0.1:{front}\n")),
            "bind :443" => out.push_str(&format!("    bind 127.0.0.1:{tls_front}\n")),
            // The box's descriptor limit, not a production one.
            "maxconn 200000" => out.push_str("    maxconn 4000\n"),
            // Checks five times as often, so a drain is seen well within the relays' 2 s grace.
            _ if t.starts_with("default-server check") => {
                assert!(t.contains("inter 1s"), "the template's check interval moved");
                out.push_str(&format!("{}\n", line.replace("inter 1s", "inter 200ms")));
            }
            _ => out.push_str(&format!("{line}\n")),
        }
        // Each backend's servers follow its `retries` line, as in the template.
        if t == "retries 0" {
            for (i, r) in relays.iter().enumerate() {
                let (tunnel, port) = (r.tunnel, r.metrics.port());
                out.push_str(&format!("    server relay{} {tunnel} check port {port} send-proxy-v2\n", i + 1));
                servers += 1;
            }
        }
    }
    assert_eq!(servers, 2 * relays.len(), "the template's backends moved; update this test");
    assert!(out.contains(&format!("bind 127.0.0.1:{front}")), "the template's bind line moved");
    out
}

/// The `[listen]` keys of every relay here: behind the balancer (HAProxy connects from
/// 127.0.0.1), reading its PROXY headers, as the template expects.
const BEHIND_HAPROXY: &str = "proxy_protocol = true\nproxy_from = [\"127.0.0.1\"]\n";

/// A relay behind the balancer, with `body` (routes, limits) in its configuration.
fn relay(name: &str, body: &str) -> RelayProcess {
    RelayProcess::start_with(name, BEHIND_HAPROXY, body, &[])
}

/// HAProxy on a generated configuration; killed on drop.
struct Haproxy {
    child: Child,
    front: SocketAddr,
    log: PathBuf,
}

impl Haproxy {
    fn start(relays: &[&RelayProcess]) -> Haproxy {
        let dir = temp_dir("haproxy");
        let (front, tls_front) = (free_port(), free_port());
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, cluster_config(front, tls_front, relays)).unwrap();
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}", describe(&check));
        let log = dir.join("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("haproxy.err")).unwrap())
            .spawn()
            .expect("start haproxy");
        let front: SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
        let h = Haproxy { child, front, log };
        assert!(eventually(Duration::from_secs(10), || TcpStream::connect(h.front).is_ok()), "haproxy did not listen");
        h
    }

    fn url(&self, path: &str) -> String {
        format!("rtsp://{}{path}", self.front)
    }

    /// One line per connection ended: `... relays/relay2 route=/p3 ...`.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn routes(paths: &[String], camera: impl Fn(&str) -> String) -> String {
    paths.iter().map(|p| format!("[[route]]\npath = \"{p}\"\nupstream = \"{}\"\n", camera(p))).collect()
}

/// What a relay counted of tunnels: GETs, POSTs, and pairing failures of every kind.
fn tunnel_counts(r: &RelayProcess) -> (f64, f64, f64) {
    let text = r.scrape();
    let m = |s: &str| metric_value(&text, s);
    let failures = ["post_without_get", "get_without_post", "duplicate_cookie", "bad_cookie"]
        .iter()
        .map(|reason| m(&format!("relay_rejections_total{{reason=\"{reason}\"}}")))
        .sum();
    (m("relay_connections_total{kind=\"tunnel_get\"}"), m("relay_connections_total{kind=\"tunnel_post\"}"), failures)
}

#[test]
fn ffmpeg_gstreamer_and_plain_rtsp_viewers_play_through_haproxy() {
    require_haproxy!();
    require_peers!();
    let camera = GstCamera::start(None);
    let paths = ["/cam1".to_owned(), "/cam2".to_owned()];
    let body = routes(&paths, |p| camera.url(p));
    let (a, b) = (relay("cluster-a", &body), relay("cluster-b", &body));
    let lb = Haproxy::start(&[&a, &b]);

    let out = ffmpeg_play("http", &lb.url("/cam1"), 30);
    assert!(ffmpeg_frames(&out) >= 30, "ffmpeg tunnel: {}", describe(&out));
    let out = gst_play(&format!("rtsph://{}/cam2", lb.front), &[], 30);
    assert!(gst_decoded(&out), "gstreamer tunnel: {}", describe(&out));
    let out = ffmpeg_play("tcp", &lb.url("/cam2"), 30);
    assert!(ffmpeg_frames(&out) >= 30, "plain RTSP: {}", describe(&out));

    // Each GET found its POST on the relay it reached.
    let counts = [tunnel_counts(&a), tunnel_counts(&b)];
    for (get, post, failures) in counts {
        assert_eq!((get, failures), (post, 0.0), "{counts:?}\n{}", lb.log_text());
    }
    assert_eq!(counts[0].0 + counts[1].0, 2.0, "two tunnels: {counts:?}");
    let plain = metric_value(&a.scrape(), "relay_connections_total{kind=\"plain_rtsp\"}")
        + metric_value(&b.scrape(), "relay_connections_total{kind=\"plain_rtsp\"}");
    assert_eq!(plain, 1.0);
}

/// The path the camera saw in a request (`rtsp://127.0.0.1:9/p3/trackID=0` → `/p3`).
fn first_segment(uri: &str) -> String {
    let path = rtsp_tunnel_relay::config::uri_path(uri);
    format!("/{}", path.trim_start_matches('/').split('/').next().unwrap_or(""))
}

#[test]
fn two_hundred_tunnels_all_pair_and_each_path_stays_on_one_relay() {
    require_haproxy!();
    const SESSIONS: usize = 200;
    const PATHS: usize = 20;
    // One camera per relay, so where a request arrived tells which relay sent it.
    let (cam_a, cam_b) = (FakeCamera::start(CameraMode::Normal), FakeCamera::start(CameraMode::Normal));
    let paths: Vec<String> = (0..PATHS).map(|k| format!("/p{k}")).collect();
    let a = relay("cluster-200a", &routes(&paths, |p| cam_a.url(p)));
    let b = relay("cluster-200b", &routes(&paths, |p| cam_b.url(p)));
    let lb = Haproxy::start(&[&a, &b]);
    let front = lb.front;

    let viewers: Vec<TunnelViewer> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                s.spawn(move || {
                    (w..SESSIONS)
                        .step_by(4)
                        .map(|i| {
                            let mut v =
                                TunnelViewer::open_get(front, &format!("/p{}", i % PATHS), &format!("c200-{i:04}"));
                            assert!(v.reply_head.starts_with("HTTP/1.0 200"), "viewer {i}: {}", v.reply_head);
                            v.open_post();
                            let answers = v.play();
                            assert!(answers.iter().all(|m| m.status() == Some(200)), "viewer {i}: {answers:?}");
                            assert!(v.read_frames(1, Duration::from_secs(5)) >= 1, "viewer {i}: no media");
                            v
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(viewers.len(), SESSIONS);

    let counts = [tunnel_counts(&a), tunnel_counts(&b)];
    for (get, post, failures) in counts {
        assert_eq!((get, failures), (post, 0.0), "a GET without its POST on one relay: {counts:?}");
    }
    assert_eq!(counts[0].0 + counts[1].0, SESSIONS as f64, "{counts:?}");
    assert!(counts[0].0 > 0.0 && counts[1].0 > 0.0, "both relays take a share: {counts:?}");
    let active = a.metric("relay_sessions_active") + b.metric("relay_sessions_active");
    assert_eq!(active, SESSIONS as f64);

    // Every path's viewers reached one relay, which pulled its camera once: one DESCRIBE per
    // path across the cluster (shared camera sessions), ten viewers each.
    let describes = |cam: &FakeCamera| {
        let mut per_path = BTreeMap::<String, usize>::new();
        for m in &cam.log.lock().unwrap().requests {
            if m.method() == Some("DESCRIBE") {
                *per_path.entry(first_segment(m.uri().unwrap_or(""))).or_default() += 1;
            }
        }
        per_path
    };
    let (on_a, on_b) = (describes(&cam_a), describes(&cam_b));
    let keys = |m: &BTreeMap<String, usize>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert!(keys(&on_a).is_disjoint(&keys(&on_b)), "a path on both relays: {on_a:?} {on_b:?}");
    assert_eq!(keys(&on_a).len() + keys(&on_b).len(), PATHS);
    assert!(on_a.values().chain(on_b.values()).all(|&n| n == 1), "one camera session per path: {on_a:?} {on_b:?}");
    drop(viewers);
}

#[test]
fn a_post_far_past_its_content_length_keeps_working_through_haproxy() {
    require_haproxy!();
    let camera = FakeCamera::start(CameraMode::Normal);
    let paths = ["/cam1".to_owned()];
    let a = relay("cluster-post-a", &routes(&paths, |p| camera.url(p)));
    let b = relay("cluster-post-b", &routes(&paths, |p| camera.url(p)));
    let lb = Haproxy::start(&[&a, &b]);
    let mut v = TunnelViewer::open_get(lb.front, "/cam1", "longpostcookie01");
    v.open_post();
    assert!(v.play().iter().all(|m| m.status() == Some(200)));

    // Keepalives as a long session sends them, padded so the test stays short: 100 KB of
    // base64 on one POST, three times its Content-Length, then the same on a reopened POST.
    let pad = "k".repeat(300);
    let mut cseq = 1000;
    for round in 0..2 {
        let mut sent = 0;
        while sent < 100_000 {
            cseq += 1;
            let req = format!(
                "GET_PARAMETER rtsp://{}/cam1/ RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {}\r\nX-Pad: {pad}\r\n\r\n",
                lb.front, v.session
            );
            v.send_command(req.as_bytes());
            sent += b64(req.as_bytes()).len();
            let answer = loop {
                let m = v.next_message().unwrap_or_else(|| panic!("round {round}: tunnel closed after {sent} bytes"));
                if m.cseq() == Some(cseq) {
                    break m;
                }
            };
            assert_eq!(answer.status(), Some(200), "round {round} after {sent} bytes");
        }
        // A client may close its POST and open another mid-session: same path, same relay.
        drop(v.post.take());
        std::thread::sleep(Duration::from_millis(100));
        v.open_post();
    }
    let before = v.frames;
    assert!(v.read_frames(before + 10, Duration::from_secs(5)) >= before + 10, "media stopped");
    // Both POSTs went where the GET went.
    let counts = [tunnel_counts(&a), tunnel_counts(&b)];
    let (with_get, without): (Vec<&(f64, f64, f64)>, Vec<_>) = counts.iter().partition(|c| c.0 == 1.0);
    assert_eq!((with_get.len(), without.len()), (1, 1), "{counts:?}");
    assert_eq!((with_get[0].1, with_get[0].2, without[0].1), (3.0, 0.0, 0.0), "{counts:?}");
}

#[test]
fn the_template_balances_on_the_route_with_consistent_hashing() {
    // What the cluster depends on, stated once so an edit that breaks it fails here too.
    for needle in [
        "mode tcp",
        "tcp-request inspect-delay",
        "balance hash var(sess.route)",
        "hash-type consistent",
        "http-check send meth GET uri /readyz",
    ] {
        assert!(TEMPLATE.contains(needle), "deploy/haproxy/haproxy.cfg lacks {needle:?}");
    }
    let settings: Vec<&str> = TEMPLATE.lines().map(|l| l.split('#').next().unwrap_or("").trim()).collect();
    assert!(!settings.iter().any(|l| l.contains("mode http")), "an HTTP-mode balancer cuts tunnel POSTs");
    assert!(!settings.iter().any(|l| l.contains("shutdown-sessions")), "a draining relay's sessions must finish");
    // Every server line sends the viewer's address (the relays run with proxy_protocol = true).
    let servers: Vec<&&str> = settings.iter().filter(|l| l.starts_with("server ")).collect();
    assert_eq!(servers.len(), 6, "{servers:?}");
    assert!(servers.iter().all(|l| l.ends_with(" send-proxy-v2")), "{servers:?}");
}

#[test]
fn a_draining_relay_gets_no_new_sessions_while_its_live_ones_play_on() {
    require_haproxy!();
    let (cam_a, cam_b) = (FakeCamera::start(CameraMode::Normal), FakeCamera::start(CameraMode::Normal));
    let paths: Vec<String> = (0..8).map(|k| format!("/d{k}")).collect();
    let a = relay("cluster-drain-a", &routes(&paths, |p| cam_a.url(p)));
    let b = relay("cluster-drain-b", &routes(&paths, |p| cam_b.url(p)));
    let lb = Haproxy::start(&[&a, &b]);
    let on_a = |path: &str| {
        cam_a
            .log
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|m| m.method() == Some("DESCRIBE") && first_segment(m.uri().unwrap_or("")) == path)
    };
    // None when any step fails (a 503 from the draining relay, a connection HAProxy closed).
    let play = |path: &str, cookie: &str| -> Option<TunnelViewer> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut v = TunnelViewer::open_get(lb.front, path, cookie);
            if !v.reply_head.starts_with("HTTP/1.0 200") {
                return None;
            }
            v.open_post();
            v.play();
            (v.read_frames(1, Duration::from_secs(5)) >= 1).then_some(v)
        }))
        .ok()
        .flatten()
    };
    // A live viewer on relay a.
    let mut live = None;
    for p in &paths {
        let v = play(p, &format!("drainlive{}", &p[1..])).expect("plays");
        if on_a(p) {
            live = Some((p.clone(), v));
            break;
        }
    }
    let (path, mut live) = live.expect("a path hashed to relay a");

    // SIGTERM: a answers /readyz with 503 at once but keeps accepting for drain_accept_secs
    // (3 s, longer than HAProxy takes to see the 503s: inter 1s fall 2), while live sessions go on.
    a.signal("TERM");
    // New viewers of the same path keep arriving: none is refused, those HAProxy still sends
    // to a are served there, and once its check saw the 503s they go to b.
    let landed_on_b = || {
        cam_b
            .log
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|m| m.method() == Some("DESCRIBE") && first_segment(m.uri().unwrap_or("")) == path)
    };
    let t0 = std::time::Instant::now();
    let mut viewers = Vec::new();
    while !landed_on_b() {
        let n = viewers.len();
        let v = play(&path, &format!("drainnew{n:04}"));
        assert!(v.is_some(), "viewer {n} refused {:?} after the SIGTERM\n{}", t0.elapsed(), lb.log_text());
        viewers.push(v);
        assert!(t0.elapsed() < Duration::from_secs(10), "no new session of {path} on b\n{}", lb.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... while a still drains: taken out by its 503 on /readyz or its refused connects, not
    // by having exited.
    let state = std::fs::read_to_string(format!("/proc/{}/stat", a.pid())).unwrap_or_default();
    let state = state.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("gone").to_owned();
    assert!(
        !["Z", "X", "gone"].contains(&state.as_str()),
        "relay a had exited ({state}) first: nothing took it out while it drained"
    );
    assert!(viewers.len() > 1, "the first viewer after the SIGTERM went to b: the window was not tried");
    let frames = live.frames;
    assert!(live.read_frames(frames + 20, Duration::from_secs(1)) >= frames + 20, "the live session stopped");
    let (_, _, failures) = tunnel_counts(&b);
    assert_eq!(failures, 0.0);
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn tunnel_get(path: &str, cookie: &str) -> String {
    format!("GET {path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n")
}

#[test]
fn behind_proxy_protocol_a_relay_filters_counts_and_logs_the_viewers_address() {
    require_haproxy!();
    let camera = FakeCamera::start(CameraMode::Normal);
    // Every connection reaches the relay from HAProxy's 127.0.0.1: only the viewers' own
    // addresses, from the PROXY headers, tell them apart.
    let body = format!(
        "[limits]\nmax_connections_per_ip = 2\n[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\ndeny = [\"127.0.0.7\"]\n",
        camera.url("/cam1")
    );
    let r = relay("proxied", &body);
    let lb = Haproxy::start(&[&r]);

    let denied = TunnelViewer::open_get_from(ip("127.0.0.7"), lb.front, "/cam1", "proxydenied00001");
    assert!(denied.reply_head.starts_with("HTTP/1.0 403"), "the route's deny list: {}", denied.reply_head);
    // Two viewers play, each with its own two connections (GET and POST) of the cap.
    let mut players = Vec::new();
    for (n, src) in ["127.0.0.8", "127.0.0.9"].into_iter().enumerate() {
        let mut v = TunnelViewer::open_get_from(ip(src), lb.front, "/cam1", &format!("proxyplayer{n:05}"));
        assert!(v.reply_head.starts_with("HTTP/1.0 200"), "{src}: {}", v.reply_head);
        v.open_post();
        assert!(v.play().iter().all(|m| m.status() == Some(200)), "{src}");
        assert!(v.read_frames(1, Duration::from_secs(5)) >= 1, "{src}: no media");
        players.push(v);
    }
    // A third connection from 127.0.0.8 is over that viewer's cap.
    let mut third = connect_from(ip("127.0.0.8"), lb.front);
    third.write_all(tunnel_get("/cam1", "proxythird000001").as_bytes()).unwrap();
    let (reply, _) = read_to_close(&mut third, Duration::from_secs(5));
    assert!(reply.starts_with(b"HTTP/1.0 503"), "{}", String::from_utf8_lossy(&reply));

    // A POST from another viewer's address than its GET's is refused (the tunnel's own rule).
    let split = TunnelViewer::open_get_from(ip("127.0.0.10"), lb.front, "/cam1", "proxysplitpost01");
    assert!(split.reply_head.starts_with("HTTP/1.0 200"), "{}", split.reply_head);
    let mut post = open_post_from(ip("127.0.0.11"), lb.front, "/cam1", "proxysplitpost01", false);
    assert!(read_to_close(&mut post, Duration::from_secs(5)).1, "the POST from another address stays open");

    let text = r.scrape();
    let rejected = |reason: &str| metric_value(&text, &format!("relay_rejections_total{{reason=\"{reason}\"}}"));
    assert_eq!((rejected("address_denied"), rejected("per_ip_limit")), (1.0, 1.0));
    assert_eq!(rejected("post_from_other_address"), 1.0);
    assert_eq!((rejected("proxy_header"), rejected("proxy_untrusted")), (0.0, 0.0));
    let log = r.log_text();
    let started: Vec<&str> = log.lines().filter(|l| l.contains("session started")).collect();
    assert_eq!(started.len(), 3, "{log}");
    for src in ["127.0.0.8", "127.0.0.9", "127.0.0.10"] {
        assert!(started.iter().any(|l| l.contains(&format!("peer={src}:"))), "{src} not logged:\n{log}");
    }
    drop((players, split));
}

#[test]
fn a_proxy_header_is_taken_only_from_proxy_from() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let r = relay("proxy-untrusted", &routes(&["/cam1".to_owned()], |p| camera.url(p)));
    // From 127.0.0.5, not a balancer: a header naming another address is refused unanswered.
    let mut forged = connect_from(ip("127.0.0.5"), r.tunnel);
    let mut bytes = encode_v2("127.0.0.9:4000".parse().unwrap(), r.tunnel, &[]);
    bytes.extend_from_slice(tunnel_get("/cam1", "forgedheader0001").as_bytes());
    forged.write_all(&bytes).unwrap();
    assert_eq!(read_to_close(&mut forged, Duration::from_secs(5)), (Vec::new(), true));
    // From the balancer's address, a connection without a header is refused too.
    let mut bare = connect_from(ip("127.0.0.1"), r.tunnel);
    bare.write_all(tunnel_get("/cam1", "bareconnection01").as_bytes()).unwrap();
    assert_eq!(read_to_close(&mut bare, Duration::from_secs(5)), (Vec::new(), true));
    // Anyone else may still connect directly, without a header.
    let direct = TunnelViewer::open_get_from(ip("127.0.0.5"), r.tunnel, "/cam1", "directviewer0001");
    assert!(direct.reply_head.starts_with("HTTP/1.0 200"), "{}", direct.reply_head);
    let text = r.scrape();
    let rejected = |reason: &str| metric_value(&text, &format!("relay_rejections_total{{reason=\"{reason}\"}}"));
    assert_eq!((rejected("proxy_untrusted"), rejected("proxy_header")), (1.0, 1.0));
}

/// The first line of what the relay answers on `s` after `request` (`HTTP/1.0 404 Not Found`).
fn status_line(s: &mut TcpStream, request: &str) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// Every spelling of a route a viewer can send through the shipped balancer, as a tunnel GET, a
/// WebSocket upgrade and plain RTSP's first request: the route's own spellings (a trailing
/// slash, a query) all reach one relay; every other spelling (which the balancer hashes as
/// written, to any node) is refused there, so no other node pulls the camera.
#[test]
fn every_spelling_of_a_route_lands_on_one_relay_or_is_refused() {
    require_haproxy!();
    // The GETs wait for POSTs that never come: long enough to count them.
    let body = "[limits]\npairing_timeout_ms = 60000\n[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nopen = true\n";
    let relays = [relay("spell-a", body), relay("spell-b", body), relay("spell-c", body)];
    let lb = Haproxy::start(&relays.iter().collect::<Vec<_>>());
    let own = ["/cam1", "/cam1/", "/cam1?token=abc", "/cam1/?token=abc"];
    let others = [
        "/cam1/x",
        "/cam1/b/..",
        "/cam1/./.",
        "/cam1/.",
        "/cam1//",
        "//cam1",
        "/%63am1",
        "/cam1/%2e%2e",
        "/cam1/x/../",
        "/cam1/trackID=1",
    ];
    let mut kept = Vec::new();
    for (i, target) in own.iter().chain(&others).enumerate() {
        let accepted = own.contains(target);
        let mut get = TcpStream::connect(lb.front).unwrap();
        let request = format!(
            "GET {target} HTTP/1.0\r\nx-sessioncookie: spelling{i:04}cookie\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n"
        );
        let status = status_line(&mut get, &request);
        let want = if accepted { "HTTP/1.0 200" } else { "HTTP/1.0 404" };
        assert!(status.starts_with(want), "GET {target}: {status}\n{}", lb.log_text());
        let mut ws = TcpStream::connect(lb.front).unwrap();
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n\r\n"
        );
        let status = status_line(&mut ws, &request);
        let want = if accepted { "HTTP/1.1 101" } else { "HTTP/1.0 404" };
        assert!(status.starts_with(want), "WebSocket {target}: {status}");
        let mut rtsp = TcpStream::connect(lb.front).unwrap();
        let status =
            status_line(&mut rtsp, &format!("OPTIONS rtsp://{}{target} RTSP/1.0\r\nCSeq: 1\r\n\r\n", lb.front));
        let want = if accepted { "RTSP/1.0 200" } else { "RTSP/1.0 404" };
        assert!(status.starts_with(want), "RTSP {target}: {status}");
        if accepted {
            kept.extend([get, ws, rtsp]);
        }
    }
    // Every accepted connection is a live session, all on one relay.
    let active = || relays.iter().map(|r| r.metric("relay_sessions_active")).collect::<Vec<f64>>();
    let settled = || {
        let a = active();
        a.iter().sum::<f64>() == kept.len() as f64 && a.iter().filter(|&&n| n > 0.0).count() == 1
    };
    assert!(eventually(Duration::from_secs(5), settled), "sessions per relay: {:?}\n{}", active(), lb.log_text());
    // Each refusal counted where it happened.
    let refused: f64 = relays
        .iter()
        .map(|r| {
            let text = r.scrape();
            ["route_spelling", "unknown_route"]
                .iter()
                .map(|reason| metric_value(&text, &format!("relay_rejections_total{{reason=\"{reason}\"}}")))
                .sum::<f64>()
        })
        .sum();
    assert_eq!(refused, (3 * others.len()) as f64);
    drop(kept);
}

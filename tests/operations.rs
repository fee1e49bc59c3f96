//! Operating the relay binary: metrics while viewers play, SIGHUP reload, SIGTERM drain, and
//! the command line's checks.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn route(path: &str, upstream: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n")
}

/// Starts an FFmpeg tunnel viewer in the background for `frames` frames.
fn background_viewer(url: String, frames: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || ffmpeg_frames(&ffmpeg_play("http", &url, frames)))
}

#[test]
fn metrics_move_while_viewers_play_and_promtool_accepts_them() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("metrics", &route("/cam1", &camera.url("/cam1")));
    let viewer = background_viewer(relay.url("/cam1"), 125);
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_sessions_active") >= 1.0), "no session seen");
    let b1 = relay.metric("relay_bytes_total{direction=\"to_viewer\"}");
    std::thread::sleep(Duration::from_millis(1500));
    let b2 = relay.metric("relay_bytes_total{direction=\"to_viewer\"}");
    assert!(b2 > b1, "bytes did not grow: {b1} -> {b2}");
    // A bad request is refused and counted by reason.
    let before = relay.metric("relay_rejections_total{reason=\"malformed_head\"}");
    let mut s = std::net::TcpStream::connect(relay.tunnel).unwrap();
    s.write_all(b"\x16\x03\x01 definitely not http\r\n\r\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || relay.metric("relay_rejections_total{reason=\"malformed_head\"}")
        > before));
    // The live exposition passes promtool.
    let scrape = relay.scrape();
    let body = scrape.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    if let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {}", describe(&out));
    }
    assert!(viewer.join().unwrap() >= 125);
    assert!(eventually(Duration::from_secs(5), || relay.metric("relay_sessions_total{outcome=\"completed\"}") >= 1.0));
    assert!(relay.metric("relay_session_setup_seconds_count") >= 1.0);
    assert!(relay.metric("relay_forward_latency_seconds_count") > 0.0);
    assert!(relay.metric("relay_rtsp_request_seconds_count{method=\"PLAY\"}") >= 1.0);
    assert!(relay.log_text().contains("session ended"), "one line per session end");
}

#[test]
fn sighup_reloads_routes_without_dropping_sessions() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("reload", &route("/cam1", &camera.url("/cam1")));
    let keep = background_viewer(relay.url("/cam1"), 200);
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_sessions_active") >= 1.0));
    let text = std::fs::read_to_string(&relay.config).unwrap();
    // Add a route: new viewers can use it, the live session carries on.
    std::fs::write(&relay.config, format!("{text}{}", route("/cam2", &camera.url("/cam2")))).unwrap();
    relay.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || relay.log_text().contains("configuration reloaded")));
    assert!(ffmpeg_frames(&ffmpeg_play("http", &relay.url("/cam2"), 25)) >= 25, "new route does not play");
    // A bad file is refused; the running configuration stays.
    std::fs::write(&relay.config, "[listen]\ntunnel = []\n").unwrap();
    relay.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || relay.log_text().contains("reload rejected")));
    assert!(ffmpeg_frames(&ffmpeg_play("http", &relay.url("/cam2"), 25)) >= 25, "a bad reload broke the relay");
    assert!(keep.join().unwrap() >= 200, "the session was disturbed by reloads");
    // Removing a route ends its sessions cleanly.
    let removed = background_viewer(relay.url("/cam1"), 100_000);
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_sessions_active") >= 1.0));
    std::fs::write(
        &relay.config,
        format!("{text}{}", route("/cam2", &camera.url("/cam2"))).replace(&route("/cam1", &camera.url("/cam1")), ""),
    )
    .unwrap();
    relay.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || relay.metric("relay_sessions_total{outcome=\"route_removed\"}") >= 1.0)
    );
    let frames = removed.join().unwrap();
    assert!(frames < 100_000, "viewer on a removed route kept playing");
}

#[test]
fn sigterm_stops_accepting_drains_then_exits() {
    require_peers!();
    let camera = GstCamera::start(None);
    // drain_accept_secs = 0: the listeners close with the SIGTERM (the accepting window is
    // process_life.rs's).
    let body = format!("drain_accept_secs = 0\n{}", route("/cam1", &camera.url("/cam1")));
    let mut relay = RelayProcess::start("drain", &body);
    let viewer = background_viewer(relay.url("/cam1"), 100_000);
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_sessions_active") >= 1.0));
    let t0 = Instant::now();
    relay.signal("TERM");
    // New connections are refused at once...
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(relay.tunnel).is_err()),
        "still accepting after SIGTERM"
    );
    // ...the live viewer keeps its stream through the grace period (2 s here)...
    assert!(t0.elapsed() < Duration::from_secs(2));
    // ...then the relay ends it and exits cleanly.
    let status = loop {
        if let Some(s) = relay.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "relay did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() >= Duration::from_millis(1900), "exited before the grace period: {:?}", t0.elapsed());
    let frames = viewer.join().unwrap();
    assert!(frames > 0 && frames < 100_000, "viewer frames: {frames}");
    assert!(relay.log_text().contains("outcome=Shutdown"));
}

#[test]
fn check_config_accepts_good_files_and_explains_bad_ones() {
    let bin = env!("CARGO_BIN_EXE_rtsp-tunnel-relay");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/relay.toml");
    let out = Command::new(bin).args(["--config", example, "--check-config"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 routes)"));
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[listen]\ntunnel = [\"127.0.0.1:1\"]\n[[route]]\npath = \"cam\"\nupstream = \"rtsp://127.0.0.1/x\"\n",
    )
    .unwrap();
    let out = Command::new(bin).args(["--config", bad.to_str().unwrap(), "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with '/'"), "{}", describe(&out));
}

#[test]
fn hash_password_prints_a_user_entry_the_relay_accepts() {
    let bin = env!("CARGO_BIN_EXE_rtsp-tunnel-relay");
    let mut child = Command::new(bin)
        .args(["--hash-password", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"wonderland\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let entry = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = rtsp_tunnel_relay::proto::viewer_auth::ha1_hex("alice", "rtsp-tunnel-relay", "wonderland");
    assert!(entry.contains(&format!("ha1 = \"{expected}\"")), "{entry}");
    let text = format!(
        "[listen]\ntunnel = [\"127.0.0.1:1\"]\n{entry}[[route]]\npath = \"/c\"\nupstream = \"rtsp://127.0.0.1/c\"\nusers = [\"alice\"]\n"
    );
    assert!(rtsp_tunnel_relay::config::Config::from_toml(&text).is_ok());
}

fn relay_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn hostile_burst_leaves_a_playing_ffmpeg_viewer_alone_and_no_fd_behind() {
    require_peers!();
    let camera = GstCamera::start(None);
    let limits = "[limits]\npairing_timeout_ms = 500\nhead_read_timeout_ms = 1000\n";
    // No linger: the camera connection goes with the last viewer, so every descriptor is back.
    let relay =
        RelayProcess::start("burst", &format!("{limits}{}linger_secs = 0\n", route("/cam1", &camera.url("/cam1"))));
    let baseline = relay_fds(relay.pid());
    // 10 s of video: the burst runs while it plays.
    let viewer = background_viewer(relay.url("/cam1"), 250);
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_sessions_active") >= 1.0));
    let mut hostile = Vec::new();
    for i in 0..60 {
        let Ok(mut s) = std::net::TcpStream::connect(relay.tunnel) else { continue };
        let cookie = format!("hostile{i:04}");
        let junk: Vec<u8> = match i % 6 {
            0 => b"GET /cam1 HTTP/1.1\r\nx-sessi".to_vec(),
            1 => b"\x00\xff\x13 binary junk\r\n\r\n".to_vec(),
            2 => format!("POST /cam1 HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n\r\n").into_bytes(),
            3 => format!("GET /cam1 HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n\r\n").into_bytes(),
            4 => format!("GET /cam1 HTTP/1.1\r\nX-Junk: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            _ => b"DESCRIBE rtsp://x/cam1 RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
        };
        let _ = s.write_all(&junk);
        hostile.push(s);
    }
    let frames = viewer.join().unwrap();
    assert!(frames >= 250, "the FFmpeg viewer was disturbed: {frames} frames");
    drop(hostile);
    let back = eventually(Duration::from_secs(10), || relay_fds(relay.pid()) <= baseline);
    assert!(back, "relay fds: baseline {baseline}, now {}", relay_fds(relay.pid()));
    let rejected: f64 = [
        "malformed_head",
        "header_too_large",
        "rtsp_too_large",
        "head_timeout",
        "post_without_get",
        "get_without_post",
    ]
    .iter()
    .map(|r| relay.metric(&format!("relay_rejections_total{{reason=\"{r}\"}}")))
    .sum();
    assert!(rejected >= 40.0, "hostile connections counted: {rejected}");
}

/// Out of descriptors, the relay neither spins on a failing accept nor stops accepting for
/// good: accepting pauses until the next tick, and resumes once descriptors are free.
#[test]
fn running_out_of_descriptors_pauses_accepting_then_recovers() {
    // Set before start: a limit lowered later (prlimit --pid) did not bind the rings' accepts here.
    // A cap above the limit, so that accepting (not `[limits] max_connections`) meets it.
    let relay = RelayProcess::start_wrapped(
        "emfile",
        &format!("[limits]\nmax_connections = 1000\n{}", route("/cam1", "rtsp://127.0.0.1:9/x")),
        &["prlimit", "--nofile=40:40", "--"],
    );
    let before = relay.log_text().lines().count();
    // More connections than the relay has descriptors left; they idle in their head phase.
    let held: Vec<_> = (0..48).map(|_| std::net::TcpStream::connect(relay.tunnel).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(1));
    let log = relay.log_text();
    let accept_lines = log.lines().skip(before).filter(|l| l.contains("accept")).count();
    assert!(accept_lines > 0, "the relay never ran out:\n{log}");
    // A spinning accept logs on every retry (thousands a second); paused, a few per tick.
    assert!(accept_lines < 100, "{accept_lines} accept failures logged in a second");
    drop(held);
    let recovered = eventually(Duration::from_secs(10), || {
        let mut get = std::net::TcpStream::connect(relay.tunnel).unwrap();
        get.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = get.write_all(
            b"GET /cam1 HTTP/1.0\r\nx-sessioncookie: fdrecovery0123456789\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n",
        );
        let mut buf = [0u8; 32];
        std::io::Read::read(&mut get, &mut buf).is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.0 200"))
    });
    assert!(recovered, "accepting never resumed:\n{}", relay.log_text());
}

#[test]
fn slow_clients_on_the_metrics_port_do_not_lock_out_health_checks() {
    let body = format!(
        "[metrics]\nmax_connections = 4\nrequest_timeout_ms = 3000\n{}",
        route("/cam1", "rtsp://127.0.0.1:9/x")
    );
    let relay = RelayProcess::start("slowmetrics", &body);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Three times as many clients as the port serves, each trickling a request a byte a second.
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let (addr, stop) = (relay.metrics, stop.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = std::net::TcpStream::connect(addr) else { return };
                for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let health = http_get(relay.metrics, "/healthz").unwrap_or_default();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let scrape = relay.scrape();
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    // 8 of the 12 made room for the others ([metrics] max_connections = 4), one more for the
    // health check; the scrape took the slot the health check left.
    let shed = metric_value(&scrape, "relay_metrics_requests_dropped_total{reason=\"shed\"}");
    assert!(shed >= 9.0, "shed {shed}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        t.join().unwrap();
    }
}

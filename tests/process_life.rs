//! The relay process's life with the real binary: a shard that stops on its own, SIGTERM's
//! accepting window and a second signal, a port another process holds, and the metrics side
//! port at the open-file limit.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The status line a tunnel GET for `path` is answered with; empty when the connection is
/// refused, closed unanswered, or left hanging for 5 s.
fn tunnel_get_status(addr: SocketAddr, path: &str, cookie: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let get =
        format!("GET {path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n");
    if s.write_all(get.as_bytes()).is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}

/// Waits up to `timeout` for the relay to exit.
fn exit_within(relay: &mut RelayProcess, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn readyz(relay: &RelayProcess) -> String {
    http_get(relay.metrics, "/readyz").unwrap_or_default()
}

fn sample(relay: &RelayProcess, series: &str) -> Option<f64> {
    let text = relay.scrape();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Issue 20 item 2. Shard 1 panics (the test hook): at once `/readyz` is 503 naming it and
/// `/metrics` counts it; the viewer on shard 0 plays on through the accepting window and the
/// grace, new connections are answered (none left on the dead shard's share of the port, none
/// handed to its mailbox), and the process exits non-zero so systemd restarts it.
#[test]
fn a_stopped_shard_makes_the_relay_unready_and_exit_non_zero_after_draining_the_others() {
    require_peers!();
    let camera = GstCamera::start(None);
    // With two shards /cam1's camera lives on shard 0 and /cam2's on shard 1 (route hash).
    let body = format!(
        "drain_accept_secs = 2\n[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n[[route]]\npath = \"/cam2\"\nupstream = \"{}\"\n",
        camera.url("/cam1"),
        camera.url("/cam2")
    );
    let mut relay = RelayProcess::start_wrapped("shard-stop", &body, &["env", "RTR_TEST_STOP_SHARD=1"]);
    assert!(relay.log_text().contains("RTR_TEST_STOP_SHARD is set"), "{}", relay.log_text());
    assert_eq!(sample(&relay, "relay_shard_stops_total{reason=\"panic\"}"), Some(0.0), "exported from the start");
    let viewer = LiveViewer::ffmpeg("healthy", "http", &relay.url("/cam1"), 60);
    assert!(eventually(Duration::from_secs(15), || viewer.frames() >= 25), "{}", viewer.tail());
    assert_eq!(sample(&relay, "relay_shard_sessions_active{shard=\"0\"}"), Some(1.0), "the viewer lives on shard 0");
    // A tunnel of /cam2 (waiting for its POST) on shard 1.
    let mut doomed = TcpStream::connect(relay.tunnel).unwrap();
    doomed.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    doomed
        .write_all(
            b"GET /cam2 HTTP/1.0\r\nx-sessioncookie: doomed0000000001\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n",
        )
        .unwrap();
    let mut head = [0u8; 15];
    doomed.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.0 200 OK");
    assert_eq!(sample(&relay, "relay_sessions_active"), Some(2.0));

    relay.signal("USR2");
    let t0 = Instant::now();
    let named = eventually(Duration::from_secs(2), || {
        let r = readyz(&relay);
        r.starts_with("HTTP/1.1 503") && r.ends_with("not ready: shard 1 stopped (panic)\n")
    });
    assert!(named, "{}\n{}", readyz(&relay), relay.log_text());
    assert!(http_get(relay.metrics, "/healthz").unwrap_or_default().starts_with("HTTP/1.1 200"));
    assert_eq!(sample(&relay, "relay_shard_stops_total{reason=\"panic\"}"), Some(1.0));
    // Its sessions are ended (their sockets shut), no longer counted against the relay's caps.
    let mut rest = Vec::new();
    assert!(doomed.read_to_end(&mut rest).is_ok(), "the dead shard's tunnel was left open");
    assert_eq!(sample(&relay, "relay_sessions_active"), Some(1.0));
    let log = relay.log_text();
    let panic_line = log.lines().find(|l| l.contains("stopped by the test hook")).unwrap_or_default();
    assert!(panic_line.contains("ERROR"), "the panic is logged at error:\n{log}");
    assert!(log.lines().any(|l| l.contains("ERROR") && l.contains("shard stopped") && l.contains("shard=1")), "{log}");

    // Still accepting (drain_accept_secs = 2): every new connection is answered, whichever
    // shard's share of the port it reached. /cam1 is served on shard 0; /cam2's camera shard
    // is gone, so its viewers are refused instead of being handed to its mailbox.
    let frames_at_stop = viewer.frames();
    for i in 0..12 {
        let status = tunnel_get_status(relay.tunnel, "/cam1", &format!("afterstop1-{i:04}"));
        assert_eq!(status, "HTTP/1.0 200 OK", "connection {i} to /cam1");
        let status = tunnel_get_status(relay.tunnel, "/cam2", &format!("afterstop2-{i:04}"));
        assert_eq!(status, "HTTP/1.0 503 Service Unavailable", "connection {i} to /cam2");
    }
    // The viewer on the healthy shard plays on while the relay drains...
    assert!(
        eventually(Duration::from_secs(3), || viewer.frames() >= frames_at_stop + 40),
        "the healthy shard's viewer stalled at {} frames\n{}",
        viewer.frames(),
        viewer.tail()
    );
    // ...and the process ends, after the accepting window (2 s) and the grace (2 s), with a
    // failure status: Restart=on-failure brings it back.
    let status = exit_within(&mut relay, Duration::from_secs(15)).expect("the relay never exited");
    assert!(!status.success(), "{status:?}\n{}", relay.log_text());
    assert!(t0.elapsed() >= Duration::from_millis(3900), "exited before draining: {:?}", t0.elapsed());
    assert!(
        relay.log_text().contains("shard 1 stopped (panic); exiting with a failure status"),
        "{}",
        relay.log_text()
    );
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/rtsp-tunnel-relay.service")).unwrap();
    assert!(unit.lines().any(|l| l == "Restart=on-failure"), "the unit restarts a relay that failed");
}

/// Issue 20 item 8. After SIGTERM `/readyz` is 503 at once, but the tunnel port keeps
/// accepting (and serving) for `drain_accept_secs`; then it closes, sessions drain for the
/// grace period and the relay exits cleanly.
#[test]
fn sigterm_keeps_accepting_for_drain_accept_secs_while_unready() {
    let body = "drain_accept_secs = 2\n[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nmode = \"passthrough\"\n";
    let mut relay = RelayProcess::start("drain-accept", body);
    assert_eq!(tunnel_get_status(relay.tunnel, "/cam1", "beforeterm000001"), "HTTP/1.0 200 OK");
    relay.signal("TERM");
    let t0 = Instant::now();
    assert!(eventually(Duration::from_secs(1), || readyz(&relay).starts_with("HTTP/1.1 503")), "{}", readyz(&relay));
    assert!(readyz(&relay).ends_with("not ready: draining\n"), "{}", readyz(&relay));
    // A viewer a balancer still sends before its next health check is served, not refused.
    let mut served = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        assert_eq!(tunnel_get_status(relay.tunnel, "/cam1", &format!("afterterm{served:06}")), "HTTP/1.0 200 OK");
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served >= 5, "{served}");
    // Then the listeners close...
    assert!(
        eventually(Duration::from_secs(5), || TcpStream::connect(relay.tunnel).is_err()),
        "still accepting long after drain_accept_secs"
    );
    assert!(t0.elapsed() >= Duration::from_millis(1900), "closed before drain_accept_secs: {:?}", t0.elapsed());
    // ...and the relay, with no session left to drain, exits cleanly.
    let status = exit_within(&mut relay, Duration::from_secs(10)).expect("the relay never exited");
    assert!(status.success(), "{status:?}\n{}", relay.log_text());
}

/// Issue 20 item 8: a second SIGTERM or SIGINT while draining exits at once.
#[test]
fn a_second_stop_signal_exits_at_once() {
    for second in ["TERM", "INT"] {
        let body = "drain_accept_secs = 60\n[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:9/x\"\n";
        let mut relay = RelayProcess::start(&format!("second-{second}"), body);
        relay.signal("TERM");
        assert!(eventually(Duration::from_secs(1), || readyz(&relay).starts_with("HTTP/1.1 503")));
        assert!(exit_within(&mut relay, Duration::from_millis(300)).is_none(), "exited on the first SIGTERM");
        relay.signal(second);
        let status = exit_within(&mut relay, Duration::from_secs(5)).expect("a second signal did not end the relay");
        assert!(status.success(), "{second}: {status:?}\n{}", relay.log_text());
        assert!(relay.log_text().contains("second stop signal: exiting at once"), "{}", relay.log_text());
    }
}

/// Runs the relay binary on `config` until it exits (killed after 10 s): its status and what it
/// printed on standard error.
fn run_to_exit(config: &std::path::Path) -> (Option<ExitStatus>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtsp-tunnel-relay"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status, err)
}

/// Issue 20 item 7. A second relay on a tunnel port (or a metrics port) another relay listens
/// on refuses to start, saying so; the first one keeps every connection.
#[test]
fn a_second_relay_on_a_port_in_use_refuses_to_start_and_the_first_keeps_its_connections() {
    let route = "[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nmode = \"passthrough\"\n";
    let first = RelayProcess::start("port-owner", route);
    let dir = temp_dir("port-intruder");
    for (tunnel, metrics, taken) in
        [(first.tunnel.port(), free_port(), first.tunnel), (free_port(), first.metrics.port(), first.metrics)]
    {
        let config = dir.join(format!("relay-{tunnel}.toml"));
        let text = format!(
            "[listen]\ntunnel = [\"127.0.0.1:{tunnel}\"]\nmetrics = \"127.0.0.1:{metrics}\"\n[runtime]\nshards = 2\n{route}"
        );
        std::fs::write(&config, text).unwrap();
        let (status, err) = run_to_exit(&config);
        let status = status.expect("the second relay started on a port in use");
        assert!(!status.success(), "{status:?}: {err}");
        assert!(err.contains(&taken.to_string()) && err.contains("address in use by another process"), "{err}");
    }
    // The first relay answers every connection: no other process took a share of its port.
    assert!(readyz(&first).starts_with("HTTP/1.1 200"), "{}", readyz(&first));
    for i in 0..20 {
        assert_eq!(tunnel_get_status(first.tunnel, "/cam1", &format!("owner{i:06}")), "HTTP/1.0 200 OK");
    }
}

/// Issue 20 item 10. A connection flood takes the relay to its open-file limit (64 here): the
/// tunnel port stops accepting for a while, but the metrics port answers `/healthz` and
/// `/metrics` as before, from its spare descriptors, one request after another.
#[test]
fn the_metrics_port_answers_at_the_open_file_limit() {
    // A cap above the limit, so that accepting (not `[limits] max_connections`) meets it.
    let route = "[limits]\nmax_connections = 1000\n[[route]]\npath = \"/cam1\"\nupstream = \"rtsp://127.0.0.1:9/x\"\n";
    let relay = RelayProcess::start_wrapped("fd-limit", route, &["prlimit", "--nofile=64:64", "--"]);
    assert!(http_get(relay.metrics, "/healthz").unwrap_or_default().starts_with("HTTP/1.1 200"));
    // More connections than the relay has descriptors; they idle in their head phase (10 s).
    let flood: Vec<TcpStream> = (0..120).filter_map(|_| TcpStream::connect(relay.tunnel).ok()).collect();
    assert!(flood.len() > 64, "{} flood connections", flood.len());
    // The relay's own accept failing with EMFILE is the proof it reached the limit. Counting
    // /proc/<pid>/fd cannot be: a thread blocked in accept(2) (the metrics acceptor) holds a
    // reserved number that /proc does not list, so a full table can read 63.
    let at_limit = eventually(Duration::from_secs(5), || relay.log_text().contains("out of file descriptors"));
    let open = std::fs::read_dir(format!("/proc/{}/fd", relay.pid())).map(|d| d.count()).unwrap_or(0);
    assert!(at_limit && open >= 60, "the flood never took the relay to its limit ({open} open):\n{}", relay.log_text());
    for i in 0..10 {
        let health = http_get(relay.metrics, "/healthz").unwrap_or_default();
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "probe {i}: {health:?}");
    }
    // More clients holding half a request than there are spares: the oldest are shed to make
    // room, and a probe is still answered.
    let mut stalled: Vec<TcpStream> = (0..4).filter_map(|_| TcpStream::connect(relay.metrics).ok()).collect();
    for s in &mut stalled {
        let _ = s.write_all(b"GET /metr");
    }
    std::thread::sleep(Duration::from_millis(300));
    let health = http_get(relay.metrics, "/healthz").unwrap_or_default();
    assert!(health.starts_with("HTTP/1.1 200"), "with stalled clients: {health:?}");
    let scrape = relay.scrape();
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape:?}");
    assert!(metric_value(&scrape, "relay_accept_errors_total") > 0.0, "the tunnel port hit the limit");
    // The process gauges are still read (their /proc files are held open).
    assert!(metric_value(&scrape, "process_open_fds") >= 60.0, "{scrape}");
    assert_eq!(metric_value(&scrape, "process_max_fds"), 64.0);
    let shed = metric_value(&scrape, "relay_metrics_requests_dropped_total{reason=\"shed\"}");
    assert!(shed >= 2.0, "stalled clients shed: {shed}");
    assert!(readyz(&relay).starts_with("HTTP/1.1 200"), "{}", readyz(&relay));
    drop(flood);
}

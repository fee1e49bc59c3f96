//! A session's edges, end to end in process: input that never completes a request cannot hold
//! a session, and a session that ends leaves no session behind at the camera.

mod fake;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fake::*;
use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::metrics::MetricsHub;

fn metric(relay: &Relay, series: &str) -> f64 {
    let text = MetricsHub::new(relay.metrics.clone()).render();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

/// Issue 10's slot-holding attack: tunnels that trickle one base64 character a second and never
/// finish a request fill `max_sessions`. Each ends `request_timeout_secs` after its request
/// began (well before the idle timeout), and a real viewer then gets in.
#[test]
fn trickling_tunnels_time_out_and_free_their_slots_for_a_real_viewer() {
    const ATTACKERS: usize = 4;
    let camera = FakeCamera::start(CameraMode::Normal);
    let limits =
        Limits { max_sessions: ATTACKERS, request_timeout_secs: 2, idle_timeout_secs: 600, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 2, limits);
    assert_eq!(metric(&relay, "relay_rejections_total{reason=\"request_timeout\"}"), 0.0, "exported from the start");
    let request = b64(format!("OPTIONS rtsp://{}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", relay.addr).as_bytes());
    let mut attackers: Vec<(TcpStream, TcpStream)> = (0..ATTACKERS)
        .map(|i| {
            let cookie = format!("trickle{i:04}abcdefgh");
            let v = TunnelViewer::open_get(relay.addr, "/cam1", &cookie);
            assert!(v.reply_head.starts_with("HTTP/1.0 200 OK"), "{}", v.reply_head);
            (v.get, open_post(relay.addr, "/cam1", &cookie, false))
        })
        .collect();
    // The relay is full: a real viewer is refused.
    let refused = TunnelViewer::open_get(relay.addr, "/cam1", "realviewer0000001");
    assert!(refused.reply_head.starts_with("HTTP/1.0 503"), "{}", refused.reply_head);
    // One character a second on every POST: never a whole request (the request is 60+ long).
    let start = Instant::now();
    for c in request.bytes().take(12) {
        for (_, post) in &mut attackers {
            // Fails once the relay has closed it.
            let _ = post.write_all(&[c]);
        }
        std::thread::sleep(Duration::from_secs(1));
        if relay.shards().sessions() == 0 {
            break;
        }
    }
    assert_eq!(relay.shards().sessions(), 0, "trickling sessions still open after {:?}", start.elapsed());
    for (get, _) in &mut attackers {
        let (bytes, closed) = read_to_close(get, Duration::from_secs(5));
        assert!(closed, "the trickling tunnel's GET stays open");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("RTSP/1.0 408 Request Timeout\r\n"), "{text:?}");
    }
    assert_eq!(metric(&relay, "relay_rejections_total{reason=\"request_timeout\"}"), ATTACKERS as f64);
    assert_eq!(metric(&relay, "relay_rejections_total{reason=\"idle_timeout\"}"), 0.0);
    // A real viewer gets in and plays.
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "realviewer0000002");
    assert!(v.reply_head.starts_with("HTTP/1.0 200 OK"), "{}", v.reply_head);
    v.open_post();
    assert!(v.play().iter().all(|r| r.status() == Some(200)));
    assert!(v.read_frames(5, Duration::from_secs(5)) >= 5);
}

/// Bytes that complete no message and no frame are not activity: a trickle is closed by the idle
/// timeout even when the request timeout is far away.
#[test]
fn a_trickle_does_not_reset_the_idle_timer() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let limits = Limits { request_timeout_secs: 600, idle_timeout_secs: 2, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, limits);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "idletrickle00001");
    v.open_post();
    let request = b64(format!("OPTIONS rtsp://{}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", relay.addr).as_bytes());
    for c in request.bytes().take(10) {
        let _ = v.post.as_mut().unwrap().write_all(&[c]);
        std::thread::sleep(Duration::from_millis(500));
        if relay.shards().sessions() == 0 {
            break;
        }
    }
    assert_eq!(relay.shards().sessions(), 0, "a trickle kept the session alive");
    assert_eq!(metric(&relay, "relay_rejections_total{reason=\"idle_timeout\"}"), 1.0);
}

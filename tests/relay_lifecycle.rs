//! A session's edges, end to end in process: input that never completes a request cannot hold
//! a session, and a session that ends leaves no session behind at the camera.

mod fake;
mod support;

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

/// A plain RTSP/TCP viewer: OPTIONS, DESCRIBE, SETUP, PLAY; returns its socket once frames flow.
fn plain_viewer_playing(relay: &Relay) -> TcpStream {
    use rtsp_tunnel_relay::proto::interleaved::{Demux, Event};
    let mut s = connect(relay.addr);
    let url = format!("rtsp://{}/cam1", relay.addr);
    let mut demux = Demux::new(Default::default());
    let mut frames = 0;
    let steps = [
        format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: viewer\r\n\r\n"),
        format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nUser-Agent: viewer\r\n\r\n"),
        format!(
            "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nUser-Agent: viewer\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        ),
        format!("PLAY {url}/ RTSP/1.0\r\nCSeq: 4\r\nUser-Agent: viewer\r\nSession: 4242\r\n\r\n"),
    ];
    for (i, req) in steps.iter().enumerate() {
        s.write_all(req.as_bytes()).unwrap();
        let mut answered = false;
        while !answered || (i == 3 && frames < 3) {
            let mut buf = [0u8; 8192];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            assert!(n > 0, "relay closed during step {i}");
            let mut events = Vec::new();
            demux.feed(&buf[..n], &mut events).unwrap();
            for e in events {
                match e {
                    Event::Message(m) => {
                        assert_eq!(m.status(), Some(200), "step {i}: {m:?}");
                        answered = true;
                    }
                    Event::Frames { frames_completed, .. } => frames += frames_completed,
                }
            }
        }
    }
    s
}

/// TEARDOWNs the camera received, split by who wrote them.
fn teardowns(camera: &FakeCamera) -> (usize, usize) {
    let log = camera.log.lock().unwrap();
    let all: Vec<_> = log.requests.iter().filter(|m| m.method() == Some("TEARDOWN")).collect();
    let by_relay = all.iter().filter(|m| m.header("User-Agent") == Some("rtsp-tunnel-relay")).count();
    (all.len() - by_relay, by_relay)
}

/// Issue 10's item 9: a TEARDOWN written right before the viewer closes must reach the camera.
/// The relay sees the TEARDOWN and the end of stream in the same completion batch; the camera
/// connection used to be shut down at once, dropping the TEARDOWN queued for it.
#[test]
fn a_teardown_sent_just_before_the_viewer_closes_reaches_the_camera() {
    const RUNS: usize = 10;
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, Limits::default());
    for run in 1..=RUNS {
        let mut s = plain_viewer_playing(&relay);
        let teardown = format!(
            "TEARDOWN rtsp://{}/cam1/ RTSP/1.0\r\nCSeq: 5\r\nUser-Agent: viewer\r\nSession: 4242\r\n\r\n",
            relay.addr
        );
        s.write_all(teardown.as_bytes()).unwrap();
        drop(s);
        assert!(
            eventually(Duration::from_secs(3), || teardowns(&camera).0 >= run),
            "run {run}: the camera got {:?} (viewer's, relay's) TEARDOWNs",
            teardowns(&camera)
        );
    }
    assert_eq!(teardowns(&camera), (RUNS, 0), "the viewer's own, and no second one from the relay");
    assert!(eventually(Duration::from_secs(3), || relay.shards().sessions() == 0));
}

/// A viewer that vanishes after PLAY (no TEARDOWN): the relay writes one itself, with the camera's
/// session id and the route's camera credentials, so the camera frees the session at once.
#[test]
fn a_viewer_vanishing_after_play_gets_a_relay_teardown_at_the_camera() {
    let camera = FakeCamera::start(CameraMode::DigestAuth);
    let relay = Relay::start(&[("/cam1", format!("rtsp://admin:secret@{}/stream", camera.addr))], 2, Limits::default());
    // Over the tunnel, and over plain RTSP.
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "vanishing00000001");
    v.open_post();
    assert!(v.play().iter().all(|r| r.status() == Some(200)));
    assert!(v.read_frames(3, Duration::from_secs(5)) >= 3);
    drop(v);
    assert!(eventually(Duration::from_secs(3), || teardowns(&camera).1 == 1), "{:?}", teardowns(&camera));
    drop(plain_viewer_playing(&relay));
    assert!(eventually(Duration::from_secs(3), || teardowns(&camera).1 == 2), "{:?}", teardowns(&camera));
    assert_eq!(teardowns(&camera).0, 0);
    let log = camera.log.lock().unwrap();
    for t in log.requests.iter().filter(|m| m.method() == Some("TEARDOWN")) {
        assert_eq!(t.uri(), Some(format!("rtsp://{}/stream/", camera.addr).as_str()), "the aggregate PLAY named");
        assert_eq!(t.header("Session"), Some("4242"));
        assert_eq!(t.cseq(), Some(5));
        let auth = t.header("Authorization").expect("camera credentials");
        assert!(auth.starts_with("Digest username=\"admin\", realm=\"fakecam\", nonce=\"n0nce\""), "{auth}");
    }
}

/// A camera that takes nothing more cannot hold the relay: what was queued for it is given up
/// after `camera_close_grace_ms`, counted.
#[test]
fn a_camera_that_stops_reading_is_closed_after_the_close_grace() {
    let camera = FakeCamera::start(CameraMode::Deaf);
    let limits = Limits { max_camera_backlog_bytes: 64 << 20, camera_close_grace_ms: 300, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, limits);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "deafcamera00000001");
    v.open_post();
    v.send_command(format!("OPTIONS rtsp://{}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", relay.addr).as_bytes());
    std::thread::sleep(Duration::from_millis(200));
    // More RTCP-sized frames than the socket buffers on the way hold, less than the backlog limit.
    let frame = [&[b'$', 1, 0x05, 0xdc][..], &[0x81u8; 1500][..]].concat();
    for _ in 0..(16 << 20) / frame.len() {
        v.get.write_all(&frame).unwrap();
    }
    let ended = || metric(&relay, "relay_upstream_errors_total{reason=\"close_timeout\"}");
    assert_eq!(ended(), 0.0);
    drop(v);
    assert!(eventually(Duration::from_secs(5), || ended() == 1.0), "close_timeout {}", ended());
    assert_eq!(relay.shards().sessions(), 0);
}

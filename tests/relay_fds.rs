//! The relay's descriptor hygiene, in a process of its own so other tests' sockets don't count.

mod fake;
mod support;

use std::io::Write;
use std::time::Duration;

use fake::*;
use rtsp_tunnel_relay::config::Limits;

#[test]
fn hostile_burst_leaves_the_healthy_viewer_playing_and_no_fd_behind() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let limits = Limits { pairing_timeout_ms: 300, head_read_timeout_ms: 500, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 2, limits);
    let mut healthy = TunnelViewer::open_get(relay.addr, "/cam1", "healthycookie1");
    healthy.open_post();
    healthy.play();
    assert!(healthy.read_frames(5, Duration::from_secs(5)) >= 5);
    let baseline = open_fds();

    let mut hostile = Vec::new();
    for i in 0..30 {
        let mut s = connect(relay.addr);
        let _ = match i % 6 {
            0 => s.write_all(b"GET /cam1 HTTP/1.1\r\nx-sessi"), // slowloris
            1 => s.write_all(b"\x00\xff\x13garbage\r\n\r\n"),   // binary junk
            2 => s.write_all(format!("POST /cam1 HTTP/1.0\r\nx-sessioncookie: orphan{i}\r\n\r\n").as_bytes()), // POST, no GET
            3 => s.write_all(format!("GET /cam1 HTTP/1.0\r\nx-sessioncookie: noposts{i}\r\n\r\n").as_bytes()), // GET, no POST
            4 => s.write_all(b"GET /cam1 HTTP/1.0\r\nx-sessioncookie: healthycookie1\r\n\r\n"), // hijack attempt
            _ => s.write_all(format!("GET /cam1 HTTP/1.0\r\nx-sessioncookie: badb64{i}\r\n\r\n").as_bytes()),
        };
        if i % 6 == 5 {
            let mut p = open_post(relay.addr, "/cam1", &format!("badb64{i}"), false);
            let _ = p.write_all(b"!!!! not base64 !!!!");
            hostile.push(p);
        }
        hostile.push(s);
    }
    let before = healthy.frames;
    assert!(healthy.read_frames(before + 50, Duration::from_secs(10)) >= before + 50, "healthy viewer starved");
    drop(hostile);
    // Every hostile connection is closed by the relay (timeouts are sub-second here).
    let back = eventually(Duration::from_secs(10), || open_fds() <= baseline);
    assert!(back, "fds: baseline {baseline}, now {}", open_fds());
    let before = healthy.frames;
    assert!(healthy.read_frames(before + 10, Duration::from_secs(5)) >= before + 10);
    drop(healthy);
    relay.stop();
}

//! The relay end to end, in process: raw tunnel viewers through two io_uring shards to a
//! scripted camera. Each test checks one behaviour of the tunnel protocol or one bad input (docs/protocol.md).

mod fake;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fake::*;
use rtsp_tunnel_relay::config::Limits;

fn relay_for(camera: &FakeCamera, shards: usize) -> Relay {
    Relay::start(&[("/cam1", camera.url("/stream"))], shards, Limits::default())
}

#[test]
fn tunnel_viewer_plays_through_two_shards_with_urls_rewritten() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "7ac9c272db1c15a6");
    assert!(v.reply_head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", v.reply_head);
    assert!(v.reply_head.contains("Content-Type: application/x-rtsp-tunnelled\r\n"));
    assert!(!v.reply_head.to_ascii_lowercase().contains("content-length"));
    assert!(!v.reply_head.to_ascii_lowercase().contains("x-server-ip-address"));
    v.open_post();
    let replies = v.play();
    for r in &replies {
        assert_eq!(r.status(), Some(200), "{r:?}");
    }
    let relay_base = format!("rtsp://{}/cam1", relay.addr);
    assert_eq!(replies[1].header("Content-Base"), Some(format!("{relay_base}/").as_str()));
    let sdp = String::from_utf8_lossy(&replies[1].body).into_owned();
    assert!(sdp.contains(&format!("a=control:{relay_base}/trackID=0")), "{sdp}");
    assert!(!sdp.contains(&camera.addr.to_string()), "camera address leaked: {sdp}");
    assert!(replies[3].header("RTP-Info").unwrap().starts_with(&format!("url={relay_base}/trackID=0;")));
    assert!(v.read_frames(20, Duration::from_secs(5)) >= 20, "frames: {}", v.frames);
    // The camera saw its own URLs.
    let log = camera.log.lock().unwrap();
    let uris: Vec<_> = log.requests.iter().filter_map(|m| m.uri().map(str::to_owned)).collect();
    let cam = format!("rtsp://{}/stream", camera.addr);
    assert_eq!(uris[0], cam);
    assert_eq!(uris[2], format!("{cam}/trackID=0"));
}

#[test]
fn many_concurrent_tunnels_pair_across_shards() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let addr = relay.addr;
    let handles: Vec<_> = (0..24)
        .map(|i| {
            std::thread::spawn(move || {
                let mut v = TunnelViewer::open_get(addr, "/cam1", &format!("cookie{i:04}abcdef"));
                v.open_post();
                let ok = v.play().iter().all(|r| r.status() == Some(200));
                ok && v.read_frames(10, Duration::from_secs(10)) >= 10
            })
        })
        .collect();
    let ok = handles.into_iter().filter(|_| true).map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(ok, 24);
}

#[test]
fn post_before_get_is_parked_then_paired() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut post = open_post(relay.addr, "/cam1", "earlybird0001", false);
    std::thread::sleep(Duration::from_millis(300));
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "earlybird0001");
    assert!(v.reply_head.starts_with("HTTP/1.0 200 OK"));
    post.write_all(b64(b"OPTIONS rtsp://x/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes()).unwrap();
    let m = v.next_message().expect("answer through the parked POST");
    assert_eq!((m.status(), m.cseq()), (Some(200), Some(1)));
}

#[test]
fn post_without_get_is_closed_after_the_pairing_window() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let limits = Limits { pairing_timeout_ms: 300, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 2, limits);
    let mut post = open_post(relay.addr, "/cam1", "lonelypost001", false);
    let (bytes, closed) = read_to_close(&mut post, Duration::from_secs(3));
    assert!(closed, "the relay should close a POST whose GET never comes");
    assert!(bytes.is_empty(), "a POST is never answered");
}

#[test]
fn duplicate_get_is_refused_and_the_tunnel_keeps_playing() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "sharedcookie01");
    v.open_post();
    v.play();
    assert!(v.read_frames(5, Duration::from_secs(5)) >= 5);
    let mut intruder = connect(relay.addr);
    write!(
        intruder,
        "GET /cam1 HTTP/1.0\r\nx-sessioncookie: sharedcookie01\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n"
    )
    .unwrap();
    let head = read_http_head(&mut intruder);
    assert!(head.starts_with("HTTP/1.0 409"), "{head}");
    let before = v.frames;
    assert!(v.read_frames(before + 10, Duration::from_secs(5)) >= before + 10, "tunnel disturbed");
    // Counted as a refusal, not as a session that started and failed.
    let text = rtsp_tunnel_relay::metrics::MetricsHub::new(relay.metrics.clone()).render();
    assert!(text.contains("relay_rejections_total{reason=\"duplicate_cookie\"} 1\n"), "{text}");
    assert!(text.contains("relay_sessions_total{outcome=\"protocol_error\"} 0\n"), "{text}");
    assert!(text.contains("relay_sessions_active 1\n"), "{text}");
}

#[test]
fn a_reopened_post_rebinds_without_interrupting_media() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "rebindcookie01");
    v.open_post();
    v.play();
    assert!(v.read_frames(5, Duration::from_secs(5)) >= 5);
    drop(v.post.take());
    std::thread::sleep(Duration::from_millis(100));
    v.open_post();
    let keepalive = v.request("GET_PARAMETER", "/", "Session: 4242\r\n");
    assert_eq!(keepalive.status(), Some(200));
    let before = v.frames;
    assert!(v.read_frames(before + 10, Duration::from_secs(5)) >= before + 10);
    assert_eq!(v.request("TEARDOWN", "/", "Session: 4242\r\n").status(), Some(200));
    let log = camera.log.lock().unwrap();
    assert_eq!(log.connections, 1, "one camera session throughout");
    assert!(log.requests.iter().any(|m| m.method() == Some("GET_PARAMETER")), "keepalive reached the camera");
    assert!(log.requests.iter().any(|m| m.method() == Some("TEARDOWN")), "TEARDOWN reached the camera");
}

#[test]
fn expect_100_continue_gets_the_interim_reply_only() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 1);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "continuecookie");
    let mut post = open_post(relay.addr, "/cam1", "continuecookie", true);
    let head = read_http_head(&mut post);
    assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
    post.write_all(b64(b"OPTIONS rtsp://x/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(v.next_message().unwrap().status(), Some(200));
    post.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut rest = [0u8; 16];
    assert!(!matches!(post.read(&mut rest), Ok(n) if n > 0), "nothing more on the POST");
}

#[test]
fn live555_raw_rtcp_up_the_get_and_gstreamer_rtcp_in_the_post_reach_the_camera() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "rtcpcookie0001");
    v.open_post();
    v.play();
    // live555: header and payload in separate writes, raw on the GET socket.
    v.get.write_all(b"$\x01\x00\x07").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    v.get.write_all(b"rr-get!").unwrap();
    // GStreamer: a `$` frame inside the base64 POST body.
    v.send_command(b"$\x01\x00\x08rr-post!");
    let got = eventually(Duration::from_secs(5), || {
        let log = camera.log.lock().unwrap();
        log.frames.iter().any(|f| f == b"rr-get!") && log.frames.iter().any(|f| f == b"rr-post!")
    });
    assert!(got, "frames at camera: {:?}", camera.log.lock().unwrap().frames);
}

#[test]
fn bad_heads_get_clear_http_answers() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET /nope HTTP/1.0\r\nx-sessioncookie: abcdefgh\r\n\r\n".to_vec(), "HTTP/1.0 404"),
        (b"GET /cam1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.0 400"),
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), "HTTP/1.0 400"),
        (
            format!("GET /cam1 HTTP/1.1\r\nx-sessioncookie: abc\r\nX-Junk: {}\r\n\r\n", "a".repeat(20_000))
                .into_bytes(),
            "HTTP/1.0 431",
        ),
        (b"GET /cam1 HTTP/1.1\r\nx-sessioncookie: bad cookie<>\r\n\r\n".to_vec(), "HTTP/1.0 400"),
    ];
    for (req, want) in cases {
        let mut s = connect(relay.addr);
        let _ = s.write_all(&req);
        let (reply, closed) = read_to_close(&mut s, Duration::from_secs(5));
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with(want), "{:?} → {reply:?}", String::from_utf8_lossy(&req[..req.len().min(40)]));
        assert!(closed, "connection should be closed after {want}");
    }
}

#[test]
fn plain_rtsp_viewer_plays_on_the_same_port_and_udp_gets_461() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut s = connect(relay.addr);
    let url = format!("rtsp://{}/cam1", relay.addr);
    let mut demux = rtsp_tunnel_relay::proto::interleaved::Demux::new(Default::default());
    let mut read_reply = |s: &mut TcpStream| loop {
        let mut buf = [0u8; 8192];
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "relay closed");
        let mut ev = Vec::new();
        demux.feed(&buf[..n], &mut ev).unwrap();
        if let Some(m) = ev.into_iter().find_map(|e| match e {
            rtsp_tunnel_relay::proto::interleaved::Event::Message(m) => Some(m),
            _ => None,
        }) {
            return m;
        }
    };
    write!(s, "OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut s).status(), Some(200));
    write!(s, "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP;unicast;client_port=6000-6001\r\n\r\n")
        .unwrap();
    let r = read_reply(&mut s);
    assert_eq!((r.status(), r.cseq()), (Some(461), Some(2)));
    write!(s, "SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut s).status(), Some(200));
}

#[test]
fn unreachable_camera_gets_503_to_the_viewer() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let relay = Relay::start(&[("/cam1", format!("rtsp://127.0.0.1:{port}/x"))], 2, Limits::default());
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "nocameracookie");
    v.open_post();
    let r = v.request("OPTIONS", "", "");
    assert_eq!((r.status(), r.cseq()), (Some(503), Some(1)));
    let (_, closed) = read_to_close(&mut v.get, Duration::from_secs(3));
    assert!(closed);
}

#[test]
fn camera_credentials_are_used_by_the_relay_only() {
    let camera = FakeCamera::start(CameraMode::DigestAuth);
    let url = format!("rtsp://admin:secret@{}/stream", camera.addr);
    let relay = Relay::start(&[("/cam1", url)], 2, Limits::default());
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "digestcookie01");
    v.open_post();
    for r in v.play() {
        assert_eq!(r.status(), Some(200));
        assert!(r.header("WWW-Authenticate").is_none());
    }
    assert!(v.read_frames(5, Duration::from_secs(5)) >= 5);
}

#[test]
fn a_viewer_that_never_reads_cannot_grow_the_relay_without_bound() {
    let camera = FakeCamera::start(CameraMode::Flood);
    let limits = Limits { max_viewer_backlog_bytes: 256 * 1024, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, limits);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "slowviewer0001");
    v.open_post();
    v.play();
    // Stop reading; the camera floods until TCP backpressure reaches it.
    let written = || camera.bytes_written.load(std::sync::atomic::Ordering::Relaxed);
    let mut last = written();
    let settled = eventually(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = written();
        let flat = now - last < 64 * 1024;
        last = now;
        flat
    });
    // Socket buffers on three hops (autotuned to a few MB each) plus the relay's backlog limit.
    assert!(settled, "the camera never stalled: {} bytes pushed", written());
    assert!(last < 48 << 20, "camera pushed {last} bytes into a stalled session");
    // The viewer can resume and gets intact frames.
    let before = v.frames;
    assert!(v.read_frames(before + 100, Duration::from_secs(10)) >= before + 100);
}

#[test]
fn camera_reset_mid_stream_closes_the_viewer_cleanly() {
    let camera = FakeCamera::start(CameraMode::ResetAfterPlay);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "resetcookie001");
    v.open_post();
    v.play();
    let (_, closed) = read_to_close(&mut v.get, Duration::from_secs(5));
    assert!(closed, "the viewer's GET must be closed when the camera drops");
    assert!(eventually(Duration::from_secs(3), || relay.shards().sessions() == 0), "session not freed");
}

#[test]
fn camera_answering_garbage_gets_502_and_ends_only_its_session() {
    let bad = FakeCamera::start(CameraMode::Garbage);
    let good = FakeCamera::start(CameraMode::Normal);
    let relay = Relay::start(&[("/bad", bad.url("/x")), ("/cam1", good.url("/stream"))], 2, Limits::default());
    let mut healthy = TunnelViewer::open_get(relay.addr, "/cam1", "healthycookie2");
    healthy.open_post();
    healthy.play();
    let mut v = TunnelViewer::open_get(relay.addr, "/bad", "garbagecookie1");
    v.open_post();
    let r = v.request("OPTIONS", "", "");
    assert_eq!((r.status(), r.cseq()), (Some(502), Some(1)));
    let (_, closed) = read_to_close(&mut v.get, Duration::from_secs(5));
    assert!(closed);
    let before = healthy.frames;
    assert!(healthy.read_frames(before + 10, Duration::from_secs(5)) >= before + 10);
}

#[test]
fn silent_camera_gets_504_after_the_response_timeout() {
    let camera = FakeCamera::start(CameraMode::Silent);
    let limits = Limits { upstream_response_timeout_ms: 400, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, limits);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "silentcookie01");
    v.open_post();
    let r = v.request("DESCRIBE", "", "");
    assert_eq!((r.status(), r.cseq()), (Some(504), Some(1)));
}

#[test]
fn viewer_half_close_and_vanishing_free_the_session() {
    let camera = FakeCamera::start(CameraMode::Normal);
    let relay = relay_for(&camera, 2);
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", "halfclose00001");
    v.open_post();
    v.play();
    assert!(v.read_frames(5, Duration::from_secs(5)) >= 5);
    // The POST half-closes: the tunnel lives on.
    v.post.as_ref().unwrap().shutdown(std::net::Shutdown::Write).unwrap();
    let before = v.frames;
    assert!(v.read_frames(before + 10, Duration::from_secs(5)) >= before + 10);
    assert_eq!(relay.shards().sessions(), 1);
    // The viewer vanishes: everything is freed, the camera connection closed.
    drop(v);
    assert!(eventually(Duration::from_secs(3), || relay.shards().sessions() == 0));
}

/// Over HTTPS the interim `100 Continue` travels inside TLS like every other byte; written
/// in the clear it would break the client's record stream.
#[test]
fn https_post_gets_its_100_continue_inside_tls() {
    let dir = std::env::temp_dir().join(format!("relay-continue-{}", std::process::id()));
    let (server, cert) = test_tls(&dir);
    let relay = Relay::start_with_tls(&[("/cam1", "rtsp://127.0.0.1:9/x".into())], 2, Limits::default(), Some(server));
    let mut tls = tls_connect(relay.tls_addr.unwrap(), &cert);
    tls.write_all(
        b"POST /cam1 HTTP/1.1\r\nx-sessioncookie: a1b2c3d4e5f6a7b8c9d0e1\r\nContent-Type: application/x-rtsp-tunnelled\r\nExpect: 100-continue\r\nContent-Length: 32767\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tls.read(&mut buf).expect("a TLS record, not plaintext");
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tunnel viewer of `/cam1` sends RTCP-sized frames raw up its GET (as live555 sends them,
/// bound for a camera that reads nothing) until the relay gives up: its session must end, counted
/// as `camera_backlog`.
fn flood_until_the_camera_backlog_limit(relay: &Relay, cookie: &str) {
    let mut v = TunnelViewer::open_get(relay.addr, "/cam1", cookie);
    v.open_post();
    v.send_command(format!("OPTIONS rtsp://{}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", relay.addr).as_bytes());
    let frame = [&[b'$', 1, 0x05, 0xdc][..], &[0x81u8; 1500][..]].concat();
    v.get.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 && v.get.write_all(&frame).is_ok() {
        sent += frame.len();
    }
    let (_, closed) = read_to_close(&mut v.get, Duration::from_secs(10));
    assert!(closed, "the session should have ended after {sent} bytes");
    let text = rtsp_tunnel_relay::metrics::MetricsHub::new(relay.metrics.clone()).render();
    assert!(text.contains("relay_rejections_total{reason=\"camera_backlog\"} 1\n"), "{text}");
}

/// A camera that stops reading cannot make the relay hold the viewer's bytes without bound:
/// past `max_camera_backlog_bytes` the session ends and is counted; the relay stays healthy.
#[test]
fn a_camera_that_stops_reading_ends_its_session_at_the_backlog_limit() {
    let camera = FakeCamera::start(CameraMode::Deaf);
    let limits = Limits { max_camera_backlog_bytes: 64 * 1024, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", camera.url("/stream"))], 1, limits);
    flood_until_the_camera_backlog_limit(&relay, "deafcamera0123456789ab");
    // The relay still takes new sessions.
    let other = TunnelViewer::open_get(relay.addr, "/cam1", "another0123456789abcdef");
    assert!(other.reply_head.starts_with("HTTP/1.0 200 OK"), "{}", other.reply_head);
}

/// The same for a camera behind an RTSP-over-HTTP tunnel (`rtsp+http://`): the viewer's bytes
/// are queued on the tunnel's POST, and the POST's queue is what the limit bounds (the GET's
/// carries nothing after its head).
#[test]
fn a_tunnelled_camera_that_stops_reading_its_post_ends_its_session_at_the_backlog_limit() {
    let camera = DeafTunnelCamera::start();
    let limits = Limits { max_camera_backlog_bytes: 64 * 1024, ..Limits::default() };
    let relay = Relay::start(&[("/cam1", format!("rtsp+http://{}/stream", camera.addr))], 1, limits);
    flood_until_the_camera_backlog_limit(&relay, "deaftunnelcamera012345");
    // The camera's thread sees the POST in its own time.
    let posted = support::eventually(Duration::from_secs(5), || camera.posts_opened() >= 1);
    assert!(posted, "the relay never opened the camera's POST");
}

/// A camera's RTSP-over-HTTP tunnel end that opens the tunnel (answers the GET) and never reads
/// its POST. Its thread stops when the value is dropped.
struct DeafTunnelCamera {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    posts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeafTunnelCamera {
    fn start() -> DeafTunnelCamera {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let posts = std::sync::Arc::new(AtomicUsize::new(0));
        let (stop2, posts2) = (stop.clone(), posts.clone());
        let thread = std::thread::spawn(move || {
            // Connections held open (unread) until the end.
            let mut held = Vec::new();
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && std::time::Instant::now() < give_up {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                // The first connection is the GET, answered; the relay opens the POST once it
                // is, and may close it before sending anything (a burst over the limit ends the
                // session at once): it is counted when accepted, and never read.
                if held.is_empty() {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).is_ok() {
                        head.push(byte[0]);
                    }
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\n");
                } else {
                    posts2.fetch_add(1, Ordering::Relaxed);
                }
                held.push(s);
            }
        });
        DeafTunnelCamera { addr, stop, posts, thread: Some(thread) }
    }

    fn posts_opened(&self) -> usize {
        self.posts.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for DeafTunnelCamera {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

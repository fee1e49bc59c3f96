//! Viewers that send as fast as they can and never read what the relay answers, through the
//! relay binary: a WebSocket client flooding pings (each answered with a pong), a plain RTSP
//! client and a tunnel POST pipelining requests (each answered on the viewer's connection).
//! Everything the relay queues for a viewer counts towards its `max_viewer_backlog_bytes`:
//! past it the relay stops reading that viewer, so the flood stalls in the kernel's buffers
//! instead of the relay's memory, and a viewer that stays there is closed.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{RelayProcess, eventually};

/// More than any kernel buffers between the client and the relay hold, far less than what the
/// old relay read and queued (it read all of it).
const FLOOD_CAP: usize = 48 << 20;
/// How much the relay's resident memory may grow over the flood: the receive buffers touched,
/// the backlog limit, allocator slack; not what was sent.
const RSS_GROWTH_CAP_KB: u64 = 32 << 10;

/// A shared route whose camera is never reached (nothing here needs it), a 256 KiB backlog
/// limit and a 5 s idle timeout.
fn relay(name: &str) -> RelayProcess {
    RelayProcess::start(
        name,
        "[limits]\nmax_viewer_backlog_bytes = 262144\nidle_timeout_secs = 5\n[[route]]\npath = \"/open\"\nupstream = \"rtsp://127.0.0.1:9/x\"\nopen = true\n",
    )
}

/// A `/proc/PID/status` value in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} not in /proc/{pid}/status"))
}

/// Writes `chunk` again and again without ever reading, until `FLOOD_CAP` bytes went out or a
/// write makes no progress for 2 s (the relay stopped reading). Returns the bytes written.
fn flood(s: &mut TcpStream, chunk: &[u8]) -> usize {
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut sent = 0;
    while sent < FLOOD_CAP {
        match s.write(chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    sent
}

/// Whether the relay closed the connection within `within`, seen without reading: a write
/// fails once the relay has reset it (it closed with the flood unread).
fn closed_by_relay(s: &mut TcpStream, within: Duration) -> bool {
    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let end = Instant::now() + within;
    while Instant::now() < end {
        match s.write(&[0u8; 1024]) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Floods with `chunk` on `s` and checks the relay held out: it stopped reading before the cap,
/// its memory did not follow what was sent, and it closed the connection.
fn check_flood(relay: &RelayProcess, what: &str, s: &mut TcpStream, chunk: &[u8]) {
    let pid = relay.pid();
    let before = status_kb(pid, "VmRSS");
    let sent = flood(s, chunk);
    let peak = status_kb(pid, "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!("{what}: sent {} KiB before the relay stopped reading; RSS {before} kB, peak {peak} kB", sent >> 10);
    assert!(sent < FLOOD_CAP, "{what}: the relay read all {FLOOD_CAP} bytes of a viewer that never reads");
    assert!(growth < RSS_GROWTH_CAP_KB, "{what}: RSS grew {growth} kB for {} KiB sent", sent >> 10);
    assert!(closed_by_relay(s, Duration::from_secs(30)), "{what}: still open\n{}", relay.log_text());
    let ended = || relay.metric("relay_sessions_active") == 0.0;
    assert!(eventually(Duration::from_secs(5), ended), "{what}: {}", relay.scrape());
}

fn masked_ping(out: &mut Vec<u8>) {
    // FIN + ping, masked, 125 bytes (the largest control frame).
    out.extend_from_slice(&[0x89, 0x80 | 125, 1, 2, 3, 4]);
    out.extend_from_slice(&[0x55; 125]);
}

#[test]
fn a_websocket_client_flooding_pings_without_reading_pongs_is_paused_then_closed() {
    let relay = relay("flood-ws");
    let mut s = TcpStream::connect(relay.tunnel).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /open HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut pings = Vec::new();
    for _ in 0..512 {
        masked_ping(&mut pings);
    }
    check_flood(&relay, "websocket pings", &mut s, &pings);
    // Pings are no activity: the session ended on its idle timeout or its backlog, either way
    // counted.
    let rejected = |reason: &str| relay.metric(&format!("relay_rejections_total{{reason=\"{reason}\"}}"));
    assert_eq!(rejected("idle_timeout") + rejected("viewer_backlog"), 1.0, "{}", relay.scrape());
}

fn options(cseq: usize, out: &mut Vec<u8>) {
    write!(out, "OPTIONS rtsp://relay/open RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n").unwrap();
}

#[test]
fn a_plain_rtsp_client_pipelining_requests_without_reading_answers_is_paused_then_closed() {
    let relay = relay("flood-rtsp");
    let mut s = TcpStream::connect(relay.tunnel).unwrap();
    let mut requests = Vec::new();
    for cseq in 1..=1000 {
        options(cseq, &mut requests);
    }
    check_flood(&relay, "plain RTSP requests", &mut s, &requests);
    // Its requests kept it active: the backlog closed it.
    assert_eq!(relay.metric("relay_rejections_total{reason=\"viewer_backlog\"}"), 1.0, "{}", relay.scrape());
}

#[test]
fn a_tunnel_pipelining_requests_on_its_post_without_reading_its_get_is_paused_then_closed() {
    use base64::Engine as _;
    let relay = relay("flood-tunnel");
    let mut get = TcpStream::connect(relay.tunnel).unwrap();
    get.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    get.write_all(
        b"GET /open HTTP/1.0\r\nx-sessioncookie: floodcookie0001\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    get.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.0 200", "{}", String::from_utf8_lossy(&head));
    let mut post = TcpStream::connect(relay.tunnel).unwrap();
    post.write_all(
        b"POST /open HTTP/1.0\r\nx-sessioncookie: floodcookie0001\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n",
    )
    .unwrap();
    // Each request base64-encoded on its own, as clients do.
    let mut body = Vec::new();
    for cseq in 1..=1000 {
        let mut request = Vec::new();
        options(cseq, &mut request);
        body.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&request).as_bytes());
    }
    check_flood(&relay, "tunnel requests", &mut post, &body);
    assert_eq!(relay.metric("relay_rejections_total{reason=\"viewer_backlog\"}"), 1.0, "{}", relay.scrape());
}

/// A WebSocket client that reads its pongs but sends nothing else: pings are no RTSP activity,
/// so the idle timeout ends it as any silent viewer.
#[test]
fn pings_alone_do_not_keep_a_websocket_session_alive() {
    let relay = relay("pings-idle");
    let mut s = TcpStream::connect(relay.tunnel).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /open HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rtsp.onvif.org\r\n\r\n").unwrap();
    let mut ping = Vec::new();
    masked_ping(&mut ping);
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    // A ping every half second, every pong read, until the relay closes (idle_timeout_secs = 5).
    let closed = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        if s.write_all(&ping).is_err() {
            break true;
        }
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(closed, "still open after 30 s of pings");
    // Pongs came back all along (0x8a: FIN + pong), then the relay's close frame (0x88).
    assert!(received.windows(2).any(|w| w == [0x8a, 125]), "no pong");
    assert!(received.contains(&0x88), "no close frame");
    assert_eq!(relay.metric("relay_rejections_total{reason=\"idle_timeout\"}"), 1.0, "{}", relay.scrape());
}

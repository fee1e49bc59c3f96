//! `relay_forward_latency_seconds` counts packets, not chunks: a camera burst of many `$` frames
//! read in one receive still weighs one sample per frame.

mod fake;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fake::{Relay, TunnelViewer};
use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::metrics::MetricsHub;

const BURST: usize = 40;

/// A camera that answers the dialogue and, after PLAY, writes `BURST` small frames in one write.
fn burst_camera(stop: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match sock.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(_) => continue,
            }
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                pending.drain(..end + 4);
                let cseq = head.lines().find_map(|l| l.strip_prefix("CSeq:")).map(str::trim).unwrap_or("0").to_owned();
                let base = format!("rtsp://{addr}/cam");
                let reply = match head.split_whitespace().next().unwrap_or("") {
                    "DESCRIBE" => {
                        let sdp = format!(
                            "v=0\r\ns=burst\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=control:{base}/trackID=0\r\n"
                        );
                        format!(
                            "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                            sdp.len()
                        )
                    }
                    "SETUP" => format!(
                        "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 7;timeout=60\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
                    ),
                    _ => format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: 7\r\n\r\n"),
                };
                sock.write_all(reply.as_bytes()).unwrap();
                if head.starts_with("PLAY") {
                    let mut burst = Vec::new();
                    for i in 0..BURST {
                        burst.extend_from_slice(&[b'$', 0, 0, 8]);
                        burst.extend_from_slice(&(i as u64).to_be_bytes());
                    }
                    sock.write_all(&burst).unwrap();
                }
            }
        }
    });
    addr
}

fn series(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn forward_latency_has_one_sample_per_forwarded_frame() {
    let stop = Arc::new(AtomicBool::new(false));
    let cam = burst_camera(stop.clone());
    let relay = Relay::start(&[("/cam", format!("rtsp://{cam}/cam"))], 1, Limits::default());
    let mut viewer = TunnelViewer::open_get(relay.addr, "/cam", "fwdlatency0001");
    viewer.open_post();
    viewer.play();
    assert_eq!(viewer.read_frames(BURST as u64, Duration::from_secs(10)), BURST as u64);
    let hub = MetricsHub::new(relay.metrics.clone());
    // The relay records a sample when it handles its send's completion, which may come just
    // after the viewer has read the bytes.
    fake::eventually(Duration::from_secs(5), || {
        series(&hub.render(), "relay_forward_latency_seconds_count") >= BURST as f64
    });
    let text = hub.render();
    assert_eq!(series(&text, "relay_frames_total{direction=\"to_viewer\"}"), BURST as f64, "{text}");
    assert_eq!(series(&text, "relay_forward_latency_seconds_count"), BURST as f64, "one sample per packet");
    stop.store(true, Ordering::Relaxed);
    relay.stop();
}

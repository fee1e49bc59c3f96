//! What a shared camera's GOP cache and its joiners really cost: a camera sends one keyframe
//! and then hundreds of thousands of 13-byte RTP packets (under the cache's byte bound if each
//! counted only its bytes), and a dozen viewers join and never read. Every cached packet once
//! became its own allocations per joiner (hundreds of MB); now the cache counts each packet's
//! real cost and its packets, a joiner queues the cache's own memory, and the slow-viewer
//! bounds count queued entries. Its own test binary, one test: the process's RSS is the relay's.

mod fake;
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fake::*;
use rtsp_tunnel_relay::config::Limits;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs the scenario with `limits`; returns the RSS growth the joiners caused and the metrics.
fn joiners_cost(limits: Limits) -> (u64, String) {
    const JOINERS: usize = 12;
    let camera = FakeCamera::start(CameraMode::KeyframeThenTinyPackets);
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/cam\"\nupstream=\"{}\"\nalways_on=true\n",
        camera.url("/stream")
    );
    let relay = Relay::from_config(&text, 1, limits, None);
    let hub = rtsp_tunnel_relay::metrics::MetricsHub::new(relay.metrics.clone());
    let total = keyframe_then_tiny_packets().len() as u64;
    let end = Instant::now() + Duration::from_secs(60);
    while camera.bytes_written.load(Ordering::Relaxed) < total && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(camera.bytes_written.load(Ordering::Relaxed), total, "the camera sent its stream");
    // Written to the socket is not yet read by the relay: let it drain the socket.
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_bytes();
    let mut viewers = Vec::new();
    for i in 0..JOINERS {
        let mut v = TunnelViewer::open_get(relay.addr, "/cam", &format!("tinypackets{i:04}"));
        v.open_post();
        // The answers only: the replay behind them is never read.
        for (method, suffix, extra) in [
            ("OPTIONS", "", String::new()),
            ("DESCRIBE", "", "Accept: application/sdp\r\n".to_owned()),
            ("SETUP", "/trackID=0", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n".to_owned()),
        ] {
            let r = v.request(method, suffix, &extra);
            assert_eq!(r.status(), Some(200), "{method}");
            if method == "SETUP" {
                v.session = r.header("Session").unwrap().split(';').next().unwrap().trim().to_owned();
            }
        }
        let session = v.session.clone();
        v.send_command(
            format!("PLAY rtsp://{}/cam/ RTSP/1.0\r\nCSeq: 9\r\nSession: {session}\r\n\r\n", relay.addr).as_bytes(),
        );
        viewers.push(v);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_bytes();
    assert_eq!(relay.shards().running(), 1);
    let metrics = hub.render();
    drop(viewers);
    (after.saturating_sub(before), metrics)
}

/// One test: the process's RSS is the measure, so the two runs must not overlap.
#[test]
fn joiners_that_never_read_cost_a_small_multiple_of_what_they_are_sent() {
    // Default bounds: the flood meets the packet bound, the cache is dropped, joiners start
    // live and cost next to nothing.
    let (growth, metrics) = joiners_cost(Limits::default());
    eprintln!("12 joiners, default limits: RSS +{} MB", growth >> 20);
    assert!(metrics.contains("relay_gop_cache_overflows_total{bound=\"packets\"} 1"), "{metrics}");
    assert!(growth < 12 * (8 << 20), "the joiners cost {} MB", growth >> 20);

    // Bounds raised so the whole group of pictures (300,001 packets) is cached and replayed to
    // every joiner: each is sent 5.1 MB and holds about that (tiny packets are copied onto its
    // queue in 64 KiB pieces rather than each named by a segment), not the 65 MB it once did.
    let limits = Limits { gop_cache_packets: 1_000_000, gop_cache_bytes: 64 << 20, ..Limits::default() };
    let (growth, metrics) = joiners_cost(limits);
    eprintln!("12 joiners, whole GOP cached: RSS +{} MB", growth >> 20);
    assert!(metrics.contains("relay_gop_cache_overflows_total{bound=\"bytes\"} 0"), "{metrics}");
    assert!(growth < 12 * (12 << 20), "the joiners cost {} MB", growth >> 20);
}

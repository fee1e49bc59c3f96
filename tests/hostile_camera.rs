//! A hostile camera against the receive-buffer reference counts: one receive that yields more
//! ranges than a 16-bit count holds must not hand its buffer back while sends still name it (a
//! viewer would get another session's bytes, and the buffer would be lent out twice).
//! Passthrough routes: each viewer's session forwards its camera's receive buffers as they are.

mod fake;
mod support;

use std::time::{Duration, Instant};

use fake::*;
use rtsp_tunnel_relay::config::{Limits, Runtime};

/// Checks that `bytes` (whole frames, then possibly the start of one) are frames whose payloads
/// pass `ok`; returns how many and how many bytes they take.
fn frames(bytes: &[u8], ok: impl Fn(&[u8]) -> bool) -> Result<(u64, usize), String> {
    let (mut n, mut at) = (0, 0);
    while bytes.len() >= at + 4 {
        if bytes[at] != b'$' {
            return Err(format!("not a frame at byte {at}: {:?}", &bytes[at..bytes.len().min(at + 16)]));
        }
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let Some(payload) = bytes.get(at + 4..at + 4 + len) else { break };
        if !ok(payload) {
            return Err(format!("frame {n} carries {:?}", String::from_utf8_lossy(payload)));
        }
        n += 1;
        at += 4 + len;
    }
    Ok((n, at))
}

fn normal_payload(p: &[u8]) -> bool {
    p == b"rtcp-sr" || (p.len() == 14 && p.starts_with(b"frame-") && p[6..].iter().all(u8::is_ascii_digit))
}

/// Reads frames until `want` arrived (or `timeout`), checking each payload as it comes.
fn read_checked(v: &mut TunnelViewer, want: u64, timeout: Duration, ok: &impl Fn(&[u8]) -> bool) -> u64 {
    let end = Instant::now() + timeout;
    let mut seen = 0;
    while seen < want && Instant::now() < end {
        v.read_frames(v.frames + 1, Duration::from_millis(200));
        let (n, used) = frames(&v.frame_bytes, ok).unwrap_or_else(|e| panic!("{} got foreign bytes: {e}", v.path));
        v.frame_bytes.drain(..used);
        seen += n;
    }
    seen
}

#[test]
fn a_camera_sending_hundreds_of_thousands_of_ranges_per_receive_cannot_mix_sessions() {
    let hostile = FakeCamera::start(CameraMode::TinyFrames);
    let normal = FakeCamera::start(CameraMode::Normal);
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/hostile\"\nupstream=\"{}\"\nmode=\"passthrough\"\n[[route]]\npath=\"/normal\"\nupstream=\"{}\"\nmode=\"passthrough\"\n",
        hostile.url("/stream"),
        normal.url("/stream")
    );
    // One shard, so both sessions share one buffer ring; the largest receive buffers allowed.
    let runtime = Runtime { recv_buffers: 64, recv_buffer_size: 1 << 20, ..Runtime::default() };
    let relay = Relay::with_runtime(&text, 1, Limits::default(), None, runtime);

    let mut b = TunnelViewer::open_get(relay.addr, "/normal", "normalviewer01");
    b.open_post();
    assert!(b.play().iter().all(|r| r.status() == Some(200)));
    let mut a = TunnelViewer::open_get(relay.addr, "/hostile", "hostileviewer1");
    a.open_post();
    assert!(a.play().iter().all(|r| r.status() == Some(200)));

    // What came with the dialogue (an RTCP report before PLAY's answer) is not the flood.
    a.frame_bytes.clear();
    // The whole flood reaches its viewer, every frame its camera's, while the other session's
    // viewer gets only its own camera's frames.
    let a_ok = |p: &[u8]| p == b"A";
    let expected = TINY_FRAMES as u64;
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(120);
    while got < expected && Instant::now() < end {
        assert_eq!(relay.shards().running(), 1, "the shard died after {got} frames");
        got += read_checked(&mut a, expected - got, Duration::from_millis(500), &a_ok);
        read_checked(&mut b, 1, Duration::from_millis(50), &normal_payload);
    }
    // Short means lost or corrupted: a stream with foreign bytes in it stops parsing.
    assert_eq!(got, expected, "the hostile viewer got {got} of {expected} frames");
    let text = rtsp_tunnel_relay::metrics::MetricsHub::new(relay.metrics.clone()).render();
    let copied: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("relay_ring_ranges_copied_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(copied > 0, "no receive buffer reached its reference cap: the flood did not test it");

    // The relay survived it: the other session plays on and a new one starts.
    assert_eq!(relay.shards().running(), 1, "the shard died");
    let before = b.frames;
    assert!(read_checked(&mut b, 20, Duration::from_secs(10), &normal_payload) >= 20, "{before}");
    let mut c = TunnelViewer::open_get(relay.addr, "/normal", "latecomer00001");
    c.open_post();
    assert!(c.play().iter().all(|r| r.status() == Some(200)));
    assert!(read_checked(&mut c, 20, Duration::from_secs(10), &normal_payload) >= 20);
}

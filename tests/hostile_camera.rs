//! A hostile camera against the receive-buffer reference counts: one receive that yields more
//! ranges than a 16-bit count holds must not hand its buffer back while sends still name it (a
//! viewer would get another session's bytes, and the buffer would be lent out twice).
//! Passthrough routes: each viewer's session forwards its camera's receive buffers as they are.
//! And a camera sending zero-length `$` frames to a shared route's fan-out: legal on the wire,
//! they once made an empty send-queue range that panicked the shard.

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

/// The channels of the whole frames in `bytes` (a trailing partial frame is left), with their
/// payload lengths; `Err` at anything that is not a frame.
fn frame_channels(bytes: &[u8]) -> Result<(Vec<(u8, usize)>, usize), String> {
    let (mut out, mut at) = (Vec::new(), 0);
    while bytes.len() >= at + 4 {
        if bytes[at] != b'$' {
            return Err(format!("not a frame at byte {at}: {:?}", &bytes[at..bytes.len().min(at + 16)]));
        }
        let len = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        if bytes.len() < at + 4 + len {
            break;
        }
        out.push((bytes[at + 1], len));
        at += 4 + len;
    }
    Ok((out, at))
}

/// OPTIONS, DESCRIBE, SETUP on `channels` (`"6-7"`), PLAY: every answer a 200.
fn play_on(v: &mut TunnelViewer, channels: &str) {
    assert_eq!(v.request("OPTIONS", "", "").status(), Some(200));
    assert_eq!(v.request("DESCRIBE", "", "Accept: application/sdp\r\n").status(), Some(200));
    let setup = v.request("SETUP", "/trackID=0", &format!("Transport: RTP/AVP/TCP;unicast;interleaved={channels}\r\n"));
    assert_eq!(setup.status(), Some(200), "{setup:?}");
    let session = setup.header("Session").and_then(|s| s.split(';').next()).unwrap().trim().to_owned();
    assert_eq!(v.request("PLAY", "/", &format!("Session: {session}\r\n")).status(), Some(200));
}

#[test]
fn empty_frames_from_a_shared_camera_reach_every_viewer_as_headers_and_the_shard_lives() {
    let camera = FakeCamera::start(CameraMode::EmptyFrames);
    // A shared route (the default mode), one shard: a panic there would stop every viewer.
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/cam\"\nupstream=\"{}\"\n",
        camera.url("/stream")
    );
    let relay = Relay::from_config(&text, 1, Limits::default(), None);
    // One viewer on the camera's own channels (it gets the camera's header and payload as one
    // range), one on others (it gets a header of its own, then the payload).
    let mut own = TunnelViewer::open_get(relay.addr, "/cam", "emptyframes001");
    own.open_post();
    play_on(&mut own, "0-1");
    let mut other = TunnelViewer::open_get(relay.addr, "/cam", "emptyframes002");
    other.open_post();
    play_on(&mut other, "6-7");

    for (v, rtp, rtcp) in [(&mut own, 0u8, 1u8), (&mut other, 6, 7)] {
        let (mut empty, mut after_empty) = (0usize, 0usize);
        let end = Instant::now() + Duration::from_secs(20);
        while (empty < EMPTY_FRAMES - 100 || after_empty < 20) && Instant::now() < end {
            assert_eq!(relay.shards().running(), 1, "the shard died ({empty} empty frames seen)");
            v.read_frames(v.frames + 1, Duration::from_millis(200));
            let (frames, used) = frame_channels(&v.frame_bytes).unwrap_or_else(|e| panic!("{e}"));
            v.frame_bytes.drain(..used);
            for (channel, len) in frames {
                assert!(channel == rtp || channel == rtcp, "a frame on channel {channel}, set up {rtp}-{rtcp}");
                if len == 0 {
                    empty += 1;
                } else if empty > 0 {
                    after_empty += 1;
                }
            }
        }
        // Those on the channel nothing was set up on are not passed on.
        assert_eq!(empty, EMPTY_FRAMES - 100, "every empty frame of the viewer's track, as its header");
        assert!(after_empty >= 20, "media goes on after them ({after_empty} frames)");
    }
    assert_eq!(relay.shards().running(), 1);
}

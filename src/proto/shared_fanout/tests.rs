use super::*;
use crate::proto::gop_cache::{GopCache, GopLimits};
use crate::proto::keyframe::tests::rtp;
use crate::proto::keyframe::{Classifier, VideoCodec};

const LIMITS: FanoutLimits =
    FanoutLimits { drop_above: 1000, disconnect_above: 5000, max_behind: Duration::from_secs(5) };

fn params(channels: Vec<Option<(u8, u8)>>) -> JoinParams {
    JoinParams { channels, key_track: Some(0), limits: LIMITS, asked_at: crate::test_fixtures::t0() }
}

fn media(channel: u8, payload: FramePayload, kind: FrameKind) -> MediaFrame {
    MediaFrame { channel, track: 0, rtcp: channel % 2 == 1, kind, payload }
}

/// The frame each delivery makes, given the chunk.
fn wire(d: &Delivery<u8>, chunk: &[u8]) -> Vec<u8> {
    let Delivery::Deliver { header, body, .. } = d else { return Vec::new() };
    let mut w = header.as_ref().map(|h| h.to_vec()).unwrap_or_default();
    match body {
        Some(Body::Chunk(r)) => w.extend_from_slice(&chunk[r.clone()]),
        Some(Body::Shared(b)) => w.extend_from_slice(b),
        None => {}
    }
    w
}

#[test]
fn empty_frames_go_out_as_their_header_alone_on_any_channel() {
    let now = crate::test_fixtures::t0();
    let mut f = SharedFanout::new();
    let mut out = Vec::new();
    // Viewer 1 on the camera's channels, viewer 2 on others.
    f.join(1u8, params(vec![Some((0, 1))]), &[], now, &mut out);
    f.join(2u8, params(vec![Some((6, 7))]), &[], now, &mut out);
    out.clear();
    // `$\0\0\0` twice, then one whose header came in the previous receive (no header here).
    let chunk = b"$\0\0\0$\x01\0\0".to_vec();
    let frames = [
        media(0, FramePayload::InChunk(4..4), FrameKind::VideoContinuation),
        media(1, FramePayload::InChunk(8..8), FrameKind::Control),
        media(0, FramePayload::InChunk(0..0), FrameKind::VideoContinuation),
    ];
    let stats = f.plan(&frames, &chunk, now, |_| Some(QueueState::default()), &mut out);
    assert_eq!(stats.forwarded, 6);
    let got: Vec<(u8, Vec<u8>)> = out
        .iter()
        .map(|d| {
            let Delivery::Deliver { viewer, body, .. } = d else { panic!("{d:?}") };
            assert!(body.as_ref().is_none_or(|b| !b.is_empty()), "no empty body: {d:?}");
            (*viewer, wire(d, &chunk))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, b"$\0\0\0".to_vec()),
            (2, b"$\x06\0\0".to_vec()),
            (1, b"$\x01\0\0".to_vec()),
            (2, b"$\x07\0\0".to_vec()),
            (1, b"$\0\0\0".to_vec()),
            (2, b"$\x06\0\0".to_vec()),
        ]
    );
}

#[test]
fn own_channel_frames_are_one_range_and_others_share_one_header() {
    let now = crate::test_fixtures::t0();
    let mut f = SharedFanout::new();
    let mut out = Vec::new();
    for (id, ch) in [(1u8, 0u8), (2, 4), (3, 4)] {
        f.join(id, params(vec![Some((ch, ch + 1))]), &[], now, &mut out);
    }
    let chunk = b"$\0\0\x03abc".to_vec();
    f.plan(
        &[media(0, FramePayload::InChunk(4..7), FrameKind::KeyframeStart)],
        &chunk,
        now,
        |_| Some(QueueState::default()),
        &mut out,
    );
    let delivers: Vec<_> = out.iter().filter(|d| matches!(d, Delivery::Deliver { .. })).collect();
    assert!(matches!(delivers[0], Delivery::Deliver { header: None, body: Some(Body::Chunk(r)), .. } if *r == (0..7)));
    let (Delivery::Deliver { header: Some(a), .. }, Delivery::Deliver { header: Some(b), .. }) =
        (delivers[1], delivers[2])
    else {
        panic!("{out:?}")
    };
    assert_eq!((&a[..], a.as_ptr()), (&b"$\x04\0\x03"[..], b.as_ptr()), "one header for both");
    let firsts = out.iter().filter(|d| matches!(d, Delivery::FirstPicture { .. })).count();
    assert_eq!(firsts, 3, "each waited for this keyframe");
}

#[test]
fn a_joiner_on_the_cameras_channels_gets_the_cached_packets_themselves() {
    let now = crate::test_fixtures::t0();
    let mut g = GopCache::new(GopLimits { bytes: 1 << 20, packets: 100 });
    let key = rtp(1, 0, false, &[0x65, 0x88]);
    g.push_video(0, 0, &key, &Classifier::new(VideoCodec::H264).classify(&key).unwrap());
    for i in 0..10 {
        let p = rtp(2 + i, 0, false, &[0x41, 0x9a]);
        g.push_video(0, 0, &p, &Classifier::new(VideoCodec::H264).classify(&p).unwrap());
    }
    let replay = g.snapshot();
    let cached = g.snapshot();
    assert!(replay.iter().zip(&cached).all(|(r, c)| r.frame.as_ptr() == c.frame.as_ptr()), "the cache's own memory");
    let mut f = SharedFanout::new();
    let mut out = Vec::new();
    f.join(1u8, params(vec![Some((0, 1))]), &replay, now, &mut out);
    let mut same = 0;
    for (d, c) in out.iter().zip(&replay) {
        let Delivery::Deliver { header: None, body: Some(Body::Shared(b)), live: false, .. } = d else {
            panic!("{d:?}")
        };
        same += usize::from(b.as_ptr() == c.frame.as_ptr());
    }
    assert_eq!(same, 11, "no copy, no header of its own");
    assert!(matches!(out.last(), Some(Delivery::FirstPicture { viewer: 1, .. })));
    // A joiner on other channels gets a header and the same payload memory.
    out.clear();
    f.join(2u8, params(vec![Some((8, 9))]), &replay, now, &mut out);
    let Delivery::Deliver { header: Some(h), body: Some(Body::Shared(b)), .. } = &out[0] else { panic!("{out:?}") };
    assert_eq!((h[1], b.as_ptr()), (8, replay[0].frame[4..].as_ptr()));
}

#[test]
fn a_viewer_that_never_reads_is_held_to_its_bound_by_entries_as_well_as_bytes() {
    let now = crate::test_fixtures::t0();
    let mut f = SharedFanout::new();
    let mut out = Vec::new();
    f.join(1u8, params(vec![Some((4, 5))]), &[], now, &mut out);
    // 13-byte packets: 40 of them are 680 bytes, under the 1000-byte bound, but each frame is
    // two entries.
    let chunk = [b"$\0\0\x0d".as_slice(), &[0u8; 13]].concat().repeat(40);
    let frames: Vec<MediaFrame> =
        (0..40).map(|i| media(0, FramePayload::InChunk(i * 17 + 4..i * 17 + 17), FrameKind::KeyframeStart)).collect();
    let stats = f.plan(&frames, &chunk, now, |_| Some(QueueState::default()), &mut out);
    let queued: usize = out.iter().map(Delivery::len).sum();
    assert!(stats.dropped >= 30 && queued < 200, "skipping after {queued} bytes, {stats:?}");
    // Behind for longer than allowed: cut, and out of the fan-out.
    out.clear();
    let later = now + Duration::from_secs(6);
    let behind = QueueState { bytes: queued, entries: 2 * stats.forwarded as usize };
    f.plan(&frames[..1], &chunk, later, |_| Some(behind), &mut out);
    assert_eq!(out, vec![Delivery::Disconnect { viewer: 1, reason: DisconnectReason::SlowViewer }]);
    assert!(f.is_empty(), "it left the fan-out");
}

#[test]
fn a_closing_viewer_is_skipped_and_kept() {
    let now = crate::test_fixtures::t0();
    let mut f = SharedFanout::new();
    let mut out = Vec::new();
    f.join(1u8, params(vec![Some((0, 1))]), &[], now, &mut out);
    let chunk = b"$\0\0\x01x".to_vec();
    f.plan(&[media(0, FramePayload::InChunk(4..5), FrameKind::Other)], &chunk, now, |_| None, &mut out);
    assert!(out.is_empty() && f.contains(&1));
    f.retain(|v| *v != 1);
    assert!(f.is_empty());
}

use super::*;
use crate::proto::keyframe::tests::rtp;
use crate::proto::rtsp::parse_message;
use std::time::SystemTime;

const S: Duration = Duration::from_secs(1);
const HIK_URL: &str = "rtsp://10.0.0.5:554/Streaming/Channels/101";
const HIK_BASE: &str = "rtsp://192.168.5.106:554/Streaming/Channels/101/";
const HIK_Q: &str = "?transportmode=unicast&profile=Profile_1";

fn addr() -> SocketAddr {
    "10.0.0.5:554".parse().unwrap()
}

fn params(url: &str) -> CameraParams {
    let mut p = CameraParams::new(url, addr());
    p.seed = 7;
    p
}

fn drain(cam: &mut CameraSession) -> Vec<CameraOutput> {
    std::iter::from_fn(|| cam.poll_output()).collect()
}

fn parse(bytes: &[u8]) -> Message {
    parse_message(bytes, &MessageLimits::default()).unwrap().unwrap().0
}

/// The one request among `outputs`.
fn request(outputs: &[CameraOutput]) -> Message {
    let sent: Vec<Message> = outputs
        .iter()
        .filter_map(|o| match o {
            CameraOutput::Send(b) => Some(parse(b)),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1, "{outputs:?}");
    sent.into_iter().next().unwrap()
}

/// An answer to `req`.
fn answer(req: &Message, status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut m = Message::response(status, if status == 200 { "OK" } else { "Error" });
    m.set_header("CSeq", req.cseq().unwrap().to_string());
    for (k, v) in headers {
        m.headers.push(((*k).to_owned(), (*v).to_owned()));
    }
    m.body = bytes::Bytes::copy_from_slice(body.as_bytes());
    m.to_bytes()
}

/// A recorded camera answer, renumbered to answer `req`.
fn fixture_answer(name: &str, req: &Message) -> Vec<u8> {
    let mut m = parse(&crate::test_fixtures::bytes(&format!("cameras/{name}")));
    m.set_header("CSeq", req.cseq().unwrap().to_string());
    m.to_bytes()
}

fn feed(cam: &mut CameraSession, now: Instant, bytes: &[u8]) -> Vec<MediaFrame> {
    let mut media = Vec::new();
    cam.handle_camera_bytes(now, &mut bytes.to_vec(), &mut media);
    media
}

fn frame(ch: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b'$', ch];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Brings a Hikvision camera (video + ONVIF metadata) to PLAY; returns the outputs of the last
/// step.
fn hikvision_playing(cam: &mut CameraSession, now: Instant) -> Vec<CameraOutput> {
    cam.set_viewers(1, now);
    assert_eq!(drain(cam), vec![CameraOutput::Connect(addr())]);
    hikvision_dialogue(cam, now)
}

/// The dialogue once the connection is asked for.
fn hikvision_dialogue(cam: &mut CameraSession, now: Instant) -> Vec<CameraOutput> {
    cam.handle_connected(now);
    let options = request(&drain(cam));
    hikvision_from_options(cam, now, &options)
}

/// The dialogue from the answer to `options` on.
fn hikvision_from_options(cam: &mut CameraSession, now: Instant, options: &Message) -> Vec<CameraOutput> {
    feed(cam, now, &fixture_answer("dahua_options.txt", options));
    let describe = request(&drain(cam));
    feed(cam, now, &fixture_answer("hikvision_describe.txt", &describe));
    let setup_video = request(&drain(cam));
    feed(cam, now, &fixture_answer("hikvision_setup.txt", &setup_video));
    let setup_meta = request(&drain(cam));
    feed(
        cam,
        now,
        &answer(
            &setup_meta,
            200,
            &[("Session", "708345999;timeout=60"), ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3")],
            "",
        ),
    );
    let play = request(&drain(cam));
    feed(
        cam,
        now,
        &answer(
            &play,
            200,
            &[("Session", "708345999"), ("RTP-Info", &format!("url={HIK_BASE}trackID=1{HIK_Q};seq=100;rtptime=9000"))],
            "",
        ),
    );
    drain(cam)
}

#[test]
fn the_dialogue_with_a_hikvision_camera() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    assert_eq!((cam.poll_output(), cam.phase()), (None, CameraPhase::Idle), "on demand: waits for a viewer");
    cam.set_viewers(1, t0);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Connect(addr())]);
    assert_eq!(cam.phase(), CameraPhase::Starting);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    assert_eq!((options.method(), options.uri(), options.cseq()), (Some("OPTIONS"), Some(HIK_URL), Some(1)));
    assert!(options.header("User-Agent").unwrap().starts_with("rtsp-tunnel-relay/"));
    feed(&mut cam, t0, &fixture_answer("dahua_options.txt", &options));
    let out = drain(&mut cam);
    assert!(matches!(&out[0], CameraOutput::Exchange(e) if e.method == "OPTIONS" && e.status == 200));
    let describe = request(&out);
    assert_eq!((describe.method(), describe.uri()), (Some("DESCRIBE"), Some(HIK_URL)));
    assert_eq!(describe.header("Accept"), Some("application/sdp"));
    feed(&mut cam, t0, &fixture_answer("hikvision_describe.txt", &describe));
    let setup = request(&drain(&mut cam));
    assert_eq!(setup.uri().unwrap(), format!("{HIK_BASE}trackID=1{HIK_Q}"));
    assert_eq!(setup.header("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=0-1"));
    assert_eq!(setup.header("Session"), None);
    feed(&mut cam, t0, &fixture_answer("hikvision_setup.txt", &setup));
    let setup2 = request(&drain(&mut cam));
    assert_eq!(setup2.uri().unwrap(), format!("{HIK_BASE}trackID=3{HIK_Q}"));
    assert_eq!(setup2.header("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=2-3"));
    assert_eq!(setup2.header("Session"), Some("708345999"), "the session id without its timeout");
    feed(
        &mut cam,
        t0,
        &answer(&setup2, 200, &[("Session", "708345999"), ("Transport", "RTP/AVP/TCP;interleaved=2-3")], ""),
    );
    let play = request(&drain(&mut cam));
    assert_eq!(play.uri().unwrap(), format!("{HIK_BASE}{HIK_Q}"), "the session-level control");
    assert_eq!((play.header("Session"), play.header("Range")), (Some("708345999"), Some("npt=0.000-")));
    assert_eq!(cam.phase(), CameraPhase::Starting);
    feed(
        &mut cam,
        t0,
        &answer(&play, 200, &[("RTP-Info", &format!("url={HIK_BASE}trackID=1{HIK_Q};seq=100;rtptime=9000"))], ""),
    );
    let out = drain(&mut cam);
    assert_eq!(out.last(), Some(&CameraOutput::Up));
    let view = cam.view();
    assert_eq!(view.phase, CameraPhase::Playing);
    assert_eq!(view.next_rtp, &[Some(RtpPosition { seq: 100, rtptime: 9000 }), None]);
    let p = view.presentation.unwrap();
    assert_eq!(p.tracks.iter().map(|t| t.channels).collect::<Vec<_>>(), vec![Some((0, 1)), Some((2, 3))]);
    assert_eq!((p.key_track, p.content_base.as_str()), (Some(0), HIK_BASE));
    assert_eq!(p.viewer_sdp, p.sdp, "every track set up: the SDP as the camera wrote it");
    assert_eq!(cam.stats().connections, 1);
}

#[test]
fn media_is_cut_into_frames_mapped_to_tracks_classified_and_cached() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    let sps = rtp(100, 9000, false, &[0x67, 0x42, 0, 0x1e]);
    let idr1 = rtp(101, 9000, false, &[0x7c, 0x85, 1, 2, 3]);
    let idr2 = rtp(102, 9000, true, &[0x7c, 0x45, 4, 5, 6]);
    let meta = rtp(7, 1, true, b"<xml/>");
    let p1 = rtp(103, 12600, true, &[0x41, 0x9a, 7]);
    let mut stream = [frame(0, &sps), frame(0, &idr1), frame(2, &meta), frame(1, b"rtcp sr"), frame(0, &idr2)].concat();
    stream.extend(frame(9, b"nobody's"));
    stream.extend(frame(0, &p1));
    // Cut inside the IDR's second fragment: it is assembled; the rest are ranges of a read.
    let cut = stream.len() - frame(0, &p1).len() - 8 - 6;
    let mut media = feed(&mut cam, t0, &stream[..cut]);
    let first_len = media.len();
    media.extend(feed(&mut cam, t0, &stream[cut..]));
    let kinds: Vec<(usize, bool, FrameKind)> = media.iter().map(|m| (m.track, m.rtcp, m.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, false, FrameKind::KeyframeStart),
            (0, false, FrameKind::VideoContinuation),
            (1, false, FrameKind::Other),
            (0, true, FrameKind::Control),
            (0, false, FrameKind::VideoContinuation),
            (0, false, FrameKind::AccessUnitStart),
        ]
    );
    assert_eq!(first_len, 4);
    assert!(matches!(&media[4].payload, FramePayload::Assembled(b) if b[..] == idr2[..]));
    assert_eq!(media[0].payload, FramePayload::InChunk(4..4 + sps.len()));
    assert_eq!(cam.stats().unknown_channel_frames, 1);
    let view = cam.view();
    let gop = view.gop.unwrap();
    assert!(gop.is_ready());
    let frames = gop.snapshot();
    let cached: Vec<&[u8]> = frames.iter().map(|f| f.payload()).collect();
    assert_eq!(cached, vec![&sps[..], &idr1[..], &meta[..], &idr2[..], &p1[..]], "RTP of every track, no RTCP");
    assert_eq!(
        view.next_rtp,
        &[Some(RtpPosition { seq: 104, rtptime: 12600 }), Some(RtpPosition { seq: 8, rtptime: 1 })]
    );
}

#[test]
fn a_digest_challenge_is_answered_and_the_request_retried() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.credentials = Some(Credentials { user: "admin".into(), pass: "secret".into() });
    let mut cam = CameraSession::new(p, t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    assert_eq!(options.header("Authorization"), None);
    feed(&mut cam, t0, &fixture_answer("longse_unauthorized.txt", &options));
    let out = drain(&mut cam);
    let again = request(&out);
    assert_eq!((again.method(), again.cseq()), (Some("OPTIONS"), Some(2)), "retried with a new CSeq");
    let auth = again.header("Authorization").unwrap();
    assert!(auth.starts_with("Digest username=\"admin\", realm=\"Surveillance Server\""), "{auth}");
    assert!(auth.contains(&format!("uri=\"{HIK_URL}\"")));
    feed(&mut cam, t0, &answer(&again, 200, &[], ""));
    // Later requests carry credentials from the start.
    let describe = request(&drain(&mut cam));
    assert!(describe.header("Authorization").unwrap().contains("uri=\"rtsp://10.0.0.5:554/Streaming/Channels/101\""));
    assert!(!format!("{:?}", cam).contains("secret"), "credentials stay out of debug output");
}

#[test]
fn refused_credentials_end_the_connection_and_retry_with_backoff() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.credentials = Some(Credentials { user: "admin".into(), pass: "wrong".into() });
    let mut cam = CameraSession::new(p, t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("longse_unauthorized.txt", &options));
    let again = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("longse_unauthorized.txt", &again));
    let out = drain(&mut cam);
    assert_eq!(&out[1..], &[CameraOutput::Disconnect, CameraOutput::Ended(CameraOutcome::AuthFailed)]);
    assert_eq!(cam.phase(), CameraPhase::Retrying);
    let at = cam.poll_timeout().unwrap();
    assert!(at <= t0 + S, "first retry within a second, jittered");
    cam.handle_timeout(at);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Reconnecting, CameraOutput::Connect(addr())]);
    assert_eq!(cam.stats().reconnects, 1);
    cam.handle_connect_failed(at);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Ended(CameraOutcome::ConnectFailed)], "no connection to close");
    assert!(cam.poll_timeout().unwrap() <= at + 2 * S, "the wait doubles (up to 2 s, jittered)");
}

#[test]
fn keepalives_every_half_timeout_with_get_parameter_when_listed() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    // Media keeps the camera from being judged stalled.
    let mut now = t0;
    let mut seq = 200;
    let mut tick = |cam: &mut CameraSession, now: Instant| {
        seq += 1;
        feed(cam, now, &frame(0, &rtp(seq, 1, true, &[0x41, 0])));
    };
    while now < t0 + 29 * S {
        now += S;
        tick(&mut cam, now);
        assert!(cam.poll_timeout().unwrap() > now);
    }
    assert_eq!(cam.poll_timeout(), Some(t0 + 30 * S), "Session: ...;timeout=60");
    now = t0 + 30 * S;
    cam.handle_timeout(now);
    let keepalive = request(&drain(&mut cam));
    assert_eq!(keepalive.method(), Some("GET_PARAMETER"), "dahua_options lists it");
    assert_eq!(
        (keepalive.uri().unwrap(), keepalive.header("Session")),
        (format!("{HIK_BASE}{HIK_Q}").as_str(), Some("708345999"))
    );
    // Listed but refused: OPTIONS from then on.
    feed(&mut cam, now, &answer(&keepalive, 501, &[], ""));
    tick(&mut cam, now + 25 * S);
    cam.handle_timeout(now + 30 * S);
    assert_eq!(request(&drain(&mut cam)).method(), Some("OPTIONS"));
}

#[test]
fn without_get_parameter_in_public_keepalives_are_options_and_the_timeout_is_the_cameras() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params("rtsp://cam/s"), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&options, 200, &[("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN")], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("bunny_describe.txt", &describe));
    let setup = request(&drain(&mut cam));
    assert_eq!(setup.header("Session"), Some("1642021126"), "Wowza opens the session at DESCRIBE");
    feed(&mut cam, t0, &answer(&setup, 200, &[("Session", "1642021126;timeout=20")], ""));
    let setup = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&setup, 200, &[("Session", "1642021126;timeout=20")], ""));
    let play = request(&drain(&mut cam));
    let mut reply = parse(&fixture_answer("bunny_play.txt", &play));
    reply.set_header("Session", "1642021126;timeout=20");
    feed(&mut cam, t0, &reply.to_bytes());
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Up));
    // One RTP-Info URL relative, one absolute.
    let start = Some(RtpPosition { seq: 1, rtptime: 0 });
    assert_eq!(cam.view().next_rtp, &[start, start]);
    feed(&mut cam, t0 + 9 * S, &frame(0, &rtp(1, 1, true, &[1])));
    assert_eq!(cam.poll_timeout(), Some(t0 + 10 * S));
    cam.handle_timeout(t0 + 10 * S);
    assert_eq!(request(&drain(&mut cam)).method(), Some("OPTIONS"));
}

#[test]
fn an_unanswered_request_a_stall_or_garbage_end_the_connection() {
    let t0 = crate::test_fixtures::t0();
    // Unanswered DESCRIBE.
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0 + S, &answer(&options, 200, &[], ""));
    drain(&mut cam);
    assert_eq!(cam.poll_timeout(), Some(t0 + 11 * S));
    cam.handle_timeout(t0 + 11 * S - Duration::from_millis(1));
    assert!(drain(&mut cam).is_empty());
    cam.handle_timeout(t0 + 11 * S);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Disconnect, CameraOutput::Ended(CameraOutcome::ResponseTimeout)]);
    // A playing camera that goes quiet.
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    feed(&mut cam, t0 + 5 * S, &frame(1, b"sr"));
    assert_eq!(cam.poll_timeout(), Some(t0 + 15 * S));
    cam.handle_timeout(t0 + 15 * S);
    assert_eq!(
        drain(&mut cam),
        vec![CameraOutput::Disconnect, CameraOutput::Down, CameraOutput::Ended(CameraOutcome::MediaTimeout)]
    );
    assert_eq!(cam.view().next_rtp, &[None, None], "positions belong to the lost connection");
    // Bytes that are not RTSP.
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    feed(&mut cam, t0, b"\x00\x01garbage");
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Ended(CameraOutcome::ProtocolError)));
    // The camera hangs up.
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    cam.handle_camera_closed(t0);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Down, CameraOutput::Ended(CameraOutcome::ClosedByCamera)]);
    assert_eq!(cam.phase(), CameraPhase::Retrying, "a viewer still watches");
    assert!(cam.view().presentation.is_some(), "the description outlives the connection");
}

#[test]
fn linger_after_the_last_viewer_then_teardown() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    cam.set_viewers(0, t0 + S);
    feed(&mut cam, t0 + 9 * S, &frame(0, &rtp(1, 1, true, &[1])));
    cam.handle_timeout(t0 + 10 * S);
    assert!(drain(&mut cam).is_empty());
    // A viewer back within the linger keeps the camera.
    cam.set_viewers(1, t0 + 10 * S);
    assert!(drain(&mut cam).is_empty(), "no new connection");
    cam.set_viewers(0, t0 + 12 * S);
    feed(&mut cam, t0 + 21 * S, &frame(0, &rtp(2, 1, true, &[1])));
    assert_eq!(cam.poll_timeout(), Some(t0 + 22 * S));
    cam.handle_timeout(t0 + 22 * S);
    let out = drain(&mut cam);
    let teardown = request(&out);
    assert_eq!((teardown.method(), teardown.header("Session")), (Some("TEARDOWN"), Some("708345999")));
    assert_eq!(
        &out[1..],
        &[CameraOutput::Disconnect, CameraOutput::Down, CameraOutput::Ended(CameraOutcome::Completed)]
    );
    assert_eq!((cam.phase(), cam.poll_timeout()), (CameraPhase::Idle, None));
    // The next viewer opens it afresh (not a reconnect).
    cam.set_viewers(1, t0 + 60 * S);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Connect(addr())]);
    assert_eq!(cam.stats().reconnects, 0);
}

#[test]
fn a_camera_lost_during_the_linger_is_not_reopened_for_nobody() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    cam.set_viewers(0, t0);
    cam.handle_camera_closed(t0 + S);
    drain(&mut cam);
    assert_eq!((cam.phase(), cam.poll_timeout()), (CameraPhase::Idle, None));
}

#[test]
fn always_on_connects_at_start_and_reconnects_forever_with_capped_backoff() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.mode = Mode::AlwaysOn;
    let mut cam = CameraSession::new(p, t0);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Connect(addr())]);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..12 {
        cam.handle_connect_failed(now);
        drain(&mut cam);
        let at = cam.poll_timeout().unwrap();
        waits.push(at - now);
        now = at;
        cam.handle_timeout(now);
        assert_eq!(drain(&mut cam), vec![CameraOutput::Reconnecting, CameraOutput::Connect(addr())]);
    }
    assert!(waits.iter().all(|w| *w <= 30 * S));
    // Capped, not reset: six waits drawn below 30 s each add up to far more than six below 1 s.
    assert!(waits[6..].iter().sum::<Duration>() > 30 * S, "{waits:?}");
    // Connecting too long counts as a failure too.
    assert_eq!(cam.poll_timeout(), Some(now + 10 * S));
    cam.handle_timeout(now + 10 * S);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Disconnect, CameraOutput::Ended(CameraOutcome::ConnectTimeout)]);
}

#[test]
fn backoff_starts_over_after_a_long_play() {
    // Four failed attempts, then the fifth plays for `secs` and the camera hangs up: the wait
    // that follows.
    let wait_after_playing = |secs: u64, seed: u64| {
        let t0 = crate::test_fixtures::t0();
        let mut p = params(HIK_URL);
        p.seed = seed;
        let mut cam = CameraSession::new(p, t0);
        cam.set_viewers(1, t0);
        drain(&mut cam);
        let mut now = t0;
        for _ in 0..4 {
            cam.handle_connect_failed(now);
            drain(&mut cam);
            now = cam.poll_timeout().unwrap();
            cam.handle_timeout(now);
            drain(&mut cam);
        }
        hikvision_dialogue(&mut cam, now);
        for _ in 0..secs {
            now += S;
            feed(&mut cam, now, &frame(1, b"sr"));
            cam.handle_timeout(now);
            for o in drain(&mut cam) {
                if let CameraOutput::Send(b) = o {
                    let keepalive = parse(&b);
                    feed(&mut cam, now, &answer(&keepalive, 200, &[], ""));
                }
            }
            assert_eq!(cam.phase(), CameraPhase::Playing);
        }
        cam.handle_camera_closed(now);
        drain(&mut cam);
        cam.poll_timeout().unwrap() - now
    };
    // Each wait is drawn between nothing and its bound: a few cameras show the bound.
    let short = (0..8).map(|seed| wait_after_playing(5, seed)).max().unwrap();
    assert!(short > 4 * S, "a short play is the same incident: waits up to 16 s ({short:?})");
    assert!((0..8).all(|seed| wait_after_playing(31, seed) <= S), "longer than the cap: a new incident");
}

#[test]
fn a_track_the_camera_will_not_set_up_is_left_out_for_viewers() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params("rtsp://cam/cam/realmonitor?channel=1&subtype=2"), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&options, 200, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("dahua_describe_h265_pcma.txt", &describe));
    let setup = request(&drain(&mut cam));
    assert_eq!(setup.uri(), Some("rtsp://cam-driveway/cam/realmonitor?channel=1&subtype=2/trackID=0"));
    feed(&mut cam, t0, &fixture_answer("dahua_setup.txt", &setup));
    let setup = request(&drain(&mut cam));
    assert_eq!(setup.uri(), Some("rtsp://cam-driveway/cam/realmonitor?channel=1&subtype=2/trackID=1"));
    assert_eq!(setup.header("Session"), Some("634214675641"));
    // The audio track is refused UDP-only.
    feed(&mut cam, t0, &answer(&setup, 200, &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")], ""));
    let play = request(&drain(&mut cam));
    assert_eq!(play.uri(), Some("rtsp://cam-driveway/cam/realmonitor?channel=1&subtype=2/"));
    let p = cam.presentation().unwrap();
    assert_eq!(p.tracks[1].channels, None);
    assert!(p.viewer_sdp.contains("m=video") && !p.viewer_sdp.contains("m=audio"));
    assert!(p.viewer_sdp.starts_with("v=0") && p.viewer_sdp.contains("a=control:trackID=0"));
    assert_eq!(p.key_track, Some(0));
    feed(&mut cam, t0, &fixture_answer("dahua_play.txt", &play));
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Up));
    // Dahua's RTP-Info has relative URLs and a track it was never asked for.
    assert_eq!(cam.view().next_rtp, &[Some(RtpPosition { seq: 47121, rtptime: 3475222385 }), None]);
    // Audio frames on the refused track's channels are not anybody's.
    assert!(feed(&mut cam, t0, &frame(2, &rtp(1, 1, true, &[0xd5]))).is_empty());
}

#[test]
fn a_camera_that_refuses_every_track_or_describes_nothing_is_refused() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params("rtsp://cam/s"), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&options, 404, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&describe, 200, &[("Content-Type", "application/sdp")], "v=0\r\ns=nothing\r\n"));
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Ended(CameraOutcome::BadDescription)));
    let mut cam = CameraSession::new(params("rtsp://cam/s"), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&options, 200, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("reolink_describe.txt", &describe));
    for _ in 0..2 {
        let setup = request(&drain(&mut cam));
        feed(&mut cam, t0, &answer(&setup, 461, &[], ""));
    }
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Ended(CameraOutcome::Refused)));
}

#[test]
fn a_camera_back_with_other_tracks_is_reported() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    cam.handle_camera_closed(t0);
    drain(&mut cam);
    let at = cam.poll_timeout().unwrap();
    cam.handle_timeout(at);
    drain(&mut cam);
    cam.handle_connected(at);
    let options = request(&drain(&mut cam));
    feed(&mut cam, at, &answer(&options, 200, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, at, &fixture_answer("reolink_describe.txt", &describe));
    for _ in 0..2 {
        let setup = request(&drain(&mut cam));
        feed(&mut cam, at, &answer(&setup, 200, &[("Session", "x")], ""));
    }
    let out = drain(&mut cam);
    assert!(out.contains(&CameraOutput::PresentationChanged), "{out:?}");
}

#[test]
fn camera_requests_are_answered() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    let media = feed(
        &mut cam,
        t0,
        b"GET_PARAMETER rtsp://c/ RTSP/1.0\r\nCSeq: 77\r\n\r\nANNOUNCE rtsp://c/ RTSP/1.0\r\nCSeq: 78\r\n\r\n",
    );
    assert!(media.is_empty());
    let out = drain(&mut cam);
    let answers: Vec<Message> = out
        .iter()
        .map(|o| match o {
            CameraOutput::Send(b) => parse(b),
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(
        answers.iter().map(|m| (m.status(), m.cseq())).collect::<Vec<_>>(),
        vec![(Some(200), Some(77)), (Some(501), Some(78))]
    );
    assert_eq!(answers[0].header("Session"), Some("708345999"));
}

#[test]
fn close_tears_down_and_stays_closed() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    cam.close(t0);
    let out = drain(&mut cam);
    assert_eq!(request(&out).method(), Some("TEARDOWN"));
    assert_eq!(out.last(), Some(&CameraOutput::Ended(CameraOutcome::Completed)));
    cam.set_viewers(3, t0);
    cam.handle_timeout(t0 + 100 * S);
    assert!(drain(&mut cam).is_empty());
    assert_eq!((cam.phase(), cam.poll_timeout()), (CameraPhase::Stopped, None));
}

/// Against the demo camera's own RTSP logic (no sockets): the whole dialogue, media classified
/// and cached, keepalives that keep the camera's session alive, and a joiner's view that is
/// gapless: the cache followed by the live packets is one run of sequence numbers.
#[test]
fn against_the_demo_camera() {
    use crate::demo_camera::connection::{Connection, Now, Timeline};
    let t0 = crate::test_fixtures::t0();
    let clip = crate::demo_camera::clip().unwrap();
    let local: SocketAddr = "127.0.0.1:8554".parse().unwrap();
    let mut demo = Connection::new(clip, Timeline { origin: t0, ts_base: 1000 }, local, 99, t0);
    let mut p = CameraParams::new("rtsp://127.0.0.1:8554/demo", local);
    p.seed = 3;
    let mut cam = CameraSession::new(p, t0);
    let at = |now: Instant| Now { mono: now, wall: SystemTime::now() };
    // Runs the camera's answers until it has nothing more to say; returns the other outputs.
    let pump = |cam: &mut CameraSession, demo: &mut Connection, now: Instant, media: &mut Vec<MediaFrame>| {
        let mut other = Vec::new();
        while let Some(o) = cam.poll_output() {
            match o {
                CameraOutput::Send(b) => {
                    let req = parse(&b);
                    if let Some(reply) = demo.handle(&req, at(now)) {
                        cam.handle_camera_bytes(now, &mut reply.response.to_bytes(), media);
                    }
                    other.push(CameraOutput::Exchange(CameraExchange {
                        method: static_method(req.method().unwrap()),
                        uri: req.uri().unwrap().to_owned(),
                        status: 0,
                        latency: Duration::ZERO,
                    }));
                }
                CameraOutput::Connect(_) => cam.handle_connected(now),
                o => other.push(o),
            }
        }
        other
    };
    let mut media = Vec::new();
    cam.set_viewers(1, t0);
    let out = pump(&mut cam, &mut demo, t0, &mut media);
    assert!(out.contains(&CameraOutput::Up), "{out:?}");
    assert!(demo.is_playing());
    let mut now = t0;
    let mut seqs_after_join: Option<Vec<u16>> = None;
    let mut keepalives = 0;
    let mut buf = Vec::new();
    while now < t0 + 100 * S {
        now += Duration::from_millis(40);
        buf.clear();
        demo.poll(at(now), &mut buf);
        media.clear();
        cam.handle_camera_bytes(now, &mut buf, &mut media);
        if let Some(seqs) = seqs_after_join.as_mut() {
            for m in media.iter().filter(|m| !m.rtcp) {
                seqs.push(RtpHeader::parse(m.payload.bytes(&buf)).unwrap().seq);
            }
        }
        if cam.poll_timeout().is_some_and(|d| d <= now) {
            cam.handle_timeout(now);
            let out = pump(&mut cam, &mut demo, now, &mut Vec::new());
            keepalives += out
                .iter()
                .filter(|o| matches!(o, CameraOutput::Exchange(e) if e.method == "GET_PARAMETER" && e.status == 0))
                .count();
        }
        if now >= t0 + 2500 * Duration::from_millis(1) && seqs_after_join.is_none() {
            // A viewer joins now: what the cache holds, then what comes live.
            let v = cam.view();
            let gop = v.gop.unwrap();
            assert!(gop.is_ready());
            let first = gop.frames().next().unwrap();
            assert!(matches!(first.payload()[12] & 0x1f, 5..=9 | 24 | 28), "starts with the keyframe access unit");
            assert!(gop.frames().any(|f| f.payload()[12] & 0x1f == 5 || f.payload()[13] & 0x9f == 0x85));
            let cached: Vec<u16> = gop.frames().map(|f| RtpHeader::parse(f.payload()).unwrap().seq).collect();
            assert_eq!(v.next_rtp[0].unwrap().seq, cached.last().unwrap().wrapping_add(1));
            seqs_after_join = Some(cached);
        }
    }
    assert_eq!(keepalives, 3, "GET_PARAMETER at 30, 60 and 90 s");
    let seqs = seqs_after_join.unwrap();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "gapless from the cache into live");
    assert!(seqs.len() > 2000);
    assert_eq!(cam.phase(), CameraPhase::Playing, "the demo camera did not expire the session");
    // The last viewer leaves: after the linger the camera gets its TEARDOWN.
    cam.set_viewers(0, now);
    cam.handle_timeout(now + 10 * S);
    pump(&mut cam, &mut demo, now + 10 * S, &mut Vec::new());
    assert!(!demo.is_playing());
    assert_eq!(cam.phase(), CameraPhase::Idle);
}

/// The demo camera restarts mid-stream (new SSRC, sequence numbers, timestamps): viewers see
/// one stream, its sequence numbers unbroken, its SSRC unchanged, its clock advanced by the
/// outage; the camera's BYE is not passed on.
#[test]
fn a_camera_restart_is_invisible_in_the_rtp_viewers_get() {
    use crate::demo_camera::connection::{Connection, Now, Timeline};
    let t0 = crate::test_fixtures::t0();
    let clip = crate::demo_camera::clip().unwrap();
    let local: SocketAddr = "127.0.0.1:8554".parse().unwrap();
    let at = |now: Instant| Now { mono: now, wall: SystemTime::now() };
    let mut cam = CameraSession::new(CameraParams::new("rtsp://127.0.0.1:8554/demo", local), t0);
    let pump = |cam: &mut CameraSession, demo: &mut Connection, now: Instant| {
        while let Some(o) = cam.poll_output() {
            match o {
                CameraOutput::Send(b) => {
                    if let Some(reply) = demo.handle(&parse(&b), at(now)) {
                        cam.handle_camera_bytes(now, &mut reply.response.to_bytes(), &mut Vec::new());
                    }
                }
                CameraOutput::Connect(_) => cam.handle_connected(now),
                _ => {}
            }
        }
    };
    // What viewers get: sequence number, timestamp, SSRC, arrival.
    let run = |cam: &mut CameraSession, demo: &mut Connection, from: Instant, to: Instant| {
        let mut got: Vec<(u16, u32, u32, Instant)> = Vec::new();
        let mut now = from;
        let mut buf = Vec::new();
        while now < to {
            now += Duration::from_millis(40);
            buf.clear();
            demo.poll(at(now), &mut buf);
            let mut media = Vec::new();
            cam.handle_camera_bytes(now, &mut buf, &mut media);
            for m in media.iter().filter(|m| !m.rtcp) {
                let h = RtpHeader::parse(m.payload.bytes(&buf)).unwrap();
                got.push((h.seq, h.timestamp, h.ssrc, now));
            }
        }
        got
    };
    let mut demo = Connection::new(clip, Timeline { origin: t0, ts_base: 5 }, local, 1, t0);
    cam.set_viewers(1, t0);
    pump(&mut cam, &mut demo, t0);
    let mut got = run(&mut cam, &mut demo, t0, t0 + 2 * S);
    let before = got.len();
    // The camera says BYE and goes away.
    let mut bye = frame(1, &[0x81, 203, 0, 1, 0, 0, 0, 1]);
    assert!(feed(&mut cam, t0 + 2 * S, &bye).iter().all(|m| !m.rtcp), "a BYE is not passed to viewers");
    bye.clear();
    cam.handle_camera_closed(t0 + 2 * S);
    drain(&mut cam);
    let back = cam.poll_timeout().unwrap();
    // It comes back as a new process: other SSRC, sequence numbers and clock origin.
    let mut demo = Connection::new(clip, Timeline { origin: back, ts_base: 987_654 }, local, 2, back);
    cam.handle_timeout(back);
    pump(&mut cam, &mut demo, back);
    assert_eq!(cam.phase(), CameraPhase::Playing);
    got.extend(run(&mut cam, &mut demo, back, back + 2 * S));
    assert!(got.len() > before + 50);
    assert!(got.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)), "sequence numbers unbroken");
    assert!(got.iter().all(|g| g.2 == got[0].2), "one SSRC");
    let (last, first) = (got[before - 1], got[before]);
    let ticks = first.1.wrapping_sub(last.1);
    let gap = first.3 - last.3;
    let expected = (gap.as_secs_f64() * 90_000.0) as u32;
    assert!(ticks.abs_diff(expected) <= 3600 * 2, "clock advanced by the outage: {ticks} vs {expected}");
    assert!(got[before..].windows(2).all(|w| w[1].1.wrapping_sub(w[0].1) < 90_000), "then runs on");
    assert_eq!(cam.stats().rtcp_dropped, 1);
}

/// An RTP packet of `ssrc`.
fn rtp_of(ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = rtp(seq, ts, false, payload);
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

/// Feeds `bytes`; returns each RTP frame passed on as (sequence number, timestamp, SSRC), as
/// viewers get it (after any rewriting in the chunk).
fn fed_rtp(cam: &mut CameraSession, now: Instant, bytes: &[u8]) -> Vec<(u16, u32, u32)> {
    let mut chunk = bytes.to_vec();
    let mut media = Vec::new();
    cam.handle_camera_bytes(now, &mut chunk, &mut media);
    media
        .iter()
        .filter(|m| !m.rtcp)
        .filter_map(|m| RtpHeader::parse(m.payload.bytes(&chunk)))
        .map(|h| (h.seq, h.timestamp, h.ssrc))
        .collect()
}

const SPS: [u8; 4] = [0x67, 0x42, 0, 0x1e];
const P_SLICE: [u8; 3] = [0x41, 0x9a, 7];

/// Issue 20 item 9: a reload that gives a playing shared camera other credentials. The relay
/// leaves the old camera session, logs in again with the new credentials at once (no backoff),
/// keeps the description its viewers were given and, the new camera describing the same tracks,
/// carries them over: the new connection's packets are held back until its first keyframe, then
/// reach viewers with the old SSRC and sequence numbers that continue where they stopped.
#[test]
fn a_reload_with_new_credentials_reopens_the_camera_and_carries_its_viewers_over() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.credentials = Some(Credentials { user: "alice".into(), pass: "one".into() });
    let mut cam = CameraSession::new(p.clone(), t0);
    hikvision_playing(&mut cam, t0);
    let old = 0x1111_1111;
    let got = fed_rtp(
        &mut cam,
        t0,
        &[frame(0, &rtp_of(old, 100, 9000, &SPS)), frame(0, &rtp_of(old, 101, 12600, &P_SLICE))].concat(),
    );
    assert_eq!(got, vec![(100, 9000, old), (101, 12600, old)]);

    // The same settings (new limits, say): the session goes on untouched.
    let mut same = p.clone();
    same.media_timeout = 20 * S;
    assert_eq!(cam.reconfigure(same, t0 + S), Reconfigured::Kept);
    assert_eq!(drain(&mut cam), vec![]);
    assert_eq!(cam.phase(), CameraPhase::Playing);

    let at = t0 + 2 * S;
    let mut bob = p.clone();
    bob.credentials = Some(Credentials { user: "bob".into(), pass: "two".into() });
    assert_eq!(cam.reconfigure(bob, at), Reconfigured::Reopened);
    let out = drain(&mut cam);
    let teardown = request(&out);
    assert_eq!((teardown.method(), teardown.header("Session")), (Some("TEARDOWN"), Some("708345999")));
    assert_eq!(
        &out[1..],
        &[
            CameraOutput::Disconnect,
            CameraOutput::Down,
            CameraOutput::Ended(CameraOutcome::Reloaded),
            CameraOutput::Reconnecting,
            CameraOutput::Connect(addr()),
        ]
    );
    assert_eq!(cam.phase(), CameraPhase::Starting);
    assert!(cam.view().presentation.is_some(), "viewers are still answered from the description they know");

    cam.handle_connected(at);
    let options = request(&drain(&mut cam));
    feed(&mut cam, at, &fixture_answer("longse_unauthorized.txt", &options));
    let again = request(&drain(&mut cam));
    let auth = again.header("Authorization").unwrap();
    assert!(auth.starts_with("Digest username=\"bob\""), "the new credentials: {auth}");
    let out = hikvision_from_options(&mut cam, at, &again);
    assert_eq!(out.last(), Some(&CameraOutput::Up));
    assert!(!out.contains(&CameraOutput::PresentationChanged), "the same tracks: {out:?}");

    // The new session: another SSRC, its own numbering, joined mid-picture.
    let new = 0x2222_2222;
    let later = at + S;
    assert_eq!(fed_rtp(&mut cam, later, &frame(0, &rtp_of(new, 5000, 777_000, &P_SLICE))), vec![]);
    assert_eq!(cam.stats().resync_dropped, 1);
    let got = fed_rtp(
        &mut cam,
        later,
        &[frame(0, &rtp_of(new, 5001, 780_600, &SPS)), frame(0, &rtp_of(new, 5002, 784_200, &P_SLICE))].concat(),
    );
    assert_eq!(got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), vec![(102, old), (103, old)]);
    let ticks = got[0].1.wrapping_sub(12600);
    assert!((90_000..=4 * 90_000).contains(&ticks), "the clock moved on by the time that passed: {ticks}");
    assert_eq!(got[1].1.wrapping_sub(got[0].1), 3600, "then runs at the camera's pace");
}

/// A reload that points a shared route at a camera with another description ends its viewers
/// (`PresentationChanged`, counted as `camera_changed`) instead of leaving them silent.
#[test]
fn a_reload_to_a_camera_with_other_tracks_reports_the_change() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut cam, t0);
    let other: SocketAddr = "10.0.0.9:554".parse().unwrap();
    let mut q = CameraParams::new("rtsp://10.0.0.9:554/h264Preview_01_main", other);
    q.seed = 7;
    assert_eq!(cam.reconfigure(q, t0 + S), Reconfigured::Reopened);
    assert_eq!(drain(&mut cam).last(), Some(&CameraOutput::Connect(other)));
    cam.handle_connected(t0 + S);
    let options = request(&drain(&mut cam));
    assert_eq!(options.uri(), Some("rtsp://10.0.0.9:554/h264Preview_01_main"));
    feed(&mut cam, t0 + S, &answer(&options, 200, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0 + S, &fixture_answer("reolink_describe.txt", &describe));
    for _ in 0..2 {
        let setup = request(&drain(&mut cam));
        feed(&mut cam, t0 + S, &answer(&setup, 200, &[("Session", "x")], ""));
    }
    let out = drain(&mut cam);
    assert!(out.contains(&CameraOutput::PresentationChanged), "{out:?}");
}

/// Credentials put right by a reload while the camera waits to retry after refusing the old
/// ones: it is tried again at once, not after the backoff. A camera not connected just keeps
/// the settings for its next connection.
#[test]
fn a_reload_retries_a_failing_camera_at_once_and_an_idle_one_keeps_the_settings() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.credentials = Some(Credentials { user: "admin".into(), pass: "wrong".into() });
    let mut cam = CameraSession::new(p.clone(), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("longse_unauthorized.txt", &options));
    let again = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("longse_unauthorized.txt", &again));
    drain(&mut cam);
    assert_eq!(cam.phase(), CameraPhase::Retrying);
    let mut right = p.clone();
    right.credentials = Some(Credentials { user: "admin".into(), pass: "right".into() });
    let at = t0 + S / 10;
    assert_eq!(cam.reconfigure(right, at), Reconfigured::Reopened);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Reconnecting, CameraOutput::Connect(addr())]);
    assert_eq!(cam.phase(), CameraPhase::Starting);

    let mut idle = CameraSession::new(params(HIK_URL), t0);
    let other: SocketAddr = "10.0.0.9:554".parse().unwrap();
    assert_eq!(idle.reconfigure(CameraParams::new("rtsp://10.0.0.9:554/x", other), t0), Reconfigured::Kept);
    assert_eq!((drain(&mut idle), idle.phase()), (vec![], CameraPhase::Idle));
    idle.set_viewers(1, t0 + S);
    assert_eq!(drain(&mut idle), vec![CameraOutput::Connect(other)]);
}

#[test]
fn closing_mid_setup_still_tears_the_cameras_session_down() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    cam.set_viewers(1, t0);
    drain(&mut cam);
    cam.handle_connected(t0);
    let options = request(&drain(&mut cam));
    feed(&mut cam, t0, &answer(&options, 200, &[], ""));
    let describe = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("hikvision_describe.txt", &describe));
    let setup = request(&drain(&mut cam));
    feed(&mut cam, t0, &fixture_answer("hikvision_setup.txt", &setup));
    drain(&mut cam);
    cam.close(t0);
    let out = drain(&mut cam);
    let teardown = request(&out);
    assert_eq!(teardown.uri().unwrap(), format!("{HIK_BASE}{HIK_Q}"));
    assert_eq!(teardown.header("Session"), Some("708345999"));
    assert_eq!(&out[1..], &[CameraOutput::Disconnect, CameraOutput::Ended(CameraOutcome::Completed)]);
}

proptest::proptest! {
    /// However a playing camera's stream is cut, every frame on a channel that was set up
    /// reaches the fan-out exactly once, in order; and garbage after it panics nothing.
    #[test]
    fn any_camera_stream_is_cut_into_the_frames_it_holds(
        frames in proptest::collection::vec((0u8..5, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)), 0..20),
        cuts in proptest::collection::vec(0usize..6000, 0..6),
        garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
    ) {
        let t0 = crate::test_fixtures::t0();
        let mut cam = CameraSession::new(params(HIK_URL), t0);
        hikvision_playing(&mut cam, t0);
        // RTP on even channels from one source each (numbered in order, so continuity leaves
        // it alone); odd channels carry bytes that are not RTCP version 2 (passed on as they are).
        let mut seq = [0u16; 5];
        let frames: Vec<(u8, Vec<u8>)> = frames
            .into_iter()
            .map(|(c, p)| match c {
                0 | 2 => {
                    seq[usize::from(c)] += 1;
                    (c, rtp(seq[usize::from(c)], 9, false, &p))
                }
                _ => (c, [&[0u8][..], &p].concat()),
            })
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|(c, p)| frame(*c, p)).collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut got = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            let mut piece = stream[last..c].to_vec();
            let mut media = Vec::new();
            cam.handle_camera_bytes(t0, &mut piece, &mut media);
            got.extend(media.iter().map(|m| (m.channel, m.payload.bytes(&piece).to_vec())));
            last = c;
        }
        let want: Vec<(u8, Vec<u8>)> = frames.into_iter().filter(|(c, _)| *c < 4).collect();
        proptest::prop_assert_eq!(got, want);
        let mut garbage = garbage;
        cam.handle_camera_bytes(t0, &mut garbage, &mut Vec::new());
        drain(&mut cam);
    }
}

#[test]
fn health_says_what_an_operator_needs_state_since_and_the_last_error() {
    let t0 = crate::test_fixtures::t0();
    let mut cam = CameraSession::new(params(HIK_URL), t0);
    let h = cam.health();
    assert_eq!((h.state, h.since, h.last_failure), (HealthState::Idle, t0, None));
    hikvision_playing(&mut cam, t0 + S);
    assert_eq!((cam.health().state, cam.health().since), (HealthState::Ready, t0 + S));
    // Lost with a viewer still there: retrying, the error kept in words.
    cam.handle_camera_closed(t0 + 2 * S);
    drain(&mut cam);
    let h = cam.health();
    assert_eq!((h.state, h.since), (HealthState::Retrying, t0 + 2 * S));
    assert_eq!(h.last_failure, Some((CameraOutcome::ClosedByCamera, t0 + 2 * S)));
    assert_eq!(CameraOutcome::ClosedByCamera.describe(), "the camera closed the connection");
    // Back: ready again, the last error still told, the reconnect counted.
    let at = cam.poll_timeout().unwrap();
    cam.handle_timeout(at);
    drain(&mut cam);
    assert_eq!(cam.health().state, HealthState::Connecting);
    hikvision_dialogue(&mut cam, at);
    let h = cam.health();
    assert_eq!(
        (h.state, h.reconnects, h.last_failure.map(|f| f.0)),
        (HealthState::Ready, 1, Some(CameraOutcome::ClosedByCamera))
    );
    // Failing with nobody left to retry for: failed, not idle.
    cam.set_viewers(0, at);
    cam.handle_camera_closed(at + S);
    drain(&mut cam);
    assert_eq!(cam.health().state, HealthState::Failed);
    // Closed by the relay after the linger: idle.
    let mut calm = CameraSession::new(params(HIK_URL), t0);
    hikvision_playing(&mut calm, t0);
    calm.set_viewers(0, t0);
    calm.handle_timeout(t0 + 11 * S);
    drain(&mut calm);
    assert_eq!(calm.health().state, HealthState::Idle);
}

/// Issue 26 item 3: a route with a fallback. The primary failing switches to the fallback at
/// once (no backoff); viewers carry on at the fallback's first keyframe, their RTP continuing.
/// While the fallback is live the primary is probed by a session of its own; the probe's first
/// keyframe hands its connection to the route, the fallback is left, and the keyframe reaches
/// viewers still on the same SSRC and numbering.
#[test]
fn a_failed_primary_switches_to_the_fallback_and_returns_at_its_first_keyframe() {
    let t0 = crate::test_fixtures::t0();
    let fallback_addr: SocketAddr = "10.0.0.6:554".parse().unwrap();
    let mut p = params(HIK_URL);
    p.fallback = Some(FallbackParams { url: "rtsp://10.0.0.6:554/sub".into(), addr: fallback_addr, credentials: None });
    let mut cam = CameraSession::new(p, t0);
    hikvision_playing(&mut cam, t0);
    assert_eq!((cam.live_source(), cam.health().source, cam.wants_probe()), (Source::Primary, Source::Primary, false));
    let old = 0x1111_1111;
    let got = fed_rtp(
        &mut cam,
        t0,
        &[frame(0, &rtp_of(old, 100, 9000, &SPS)), frame(0, &rtp_of(old, 101, 12600, &P_SLICE))].concat(),
    );
    assert_eq!(got.len(), 2);

    // The primary goes away: the fallback is live, connected at the next tick.
    let at = t0 + S;
    cam.handle_camera_closed(at);
    let out = drain(&mut cam);
    assert_eq!(
        out,
        vec![
            CameraOutput::Down,
            CameraOutput::Ended(CameraOutcome::ClosedByCamera),
            CameraOutput::SourceChanged(Source::Fallback)
        ]
    );
    assert_eq!(cam.poll_timeout(), Some(at), "no backoff before another camera");
    cam.handle_timeout(at);
    assert_eq!(drain(&mut cam), vec![CameraOutput::Reconnecting, CameraOutput::Connect(fallback_addr)]);
    cam.handle_connected(at);
    let options = request(&drain(&mut cam));
    assert_eq!(options.uri(), Some("rtsp://10.0.0.6:554/sub"), "the fallback's own URL");
    let out = hikvision_from_options(&mut cam, at, &options);
    assert_eq!(out.last(), Some(&CameraOutput::Up));
    assert!(!out.contains(&CameraOutput::PresentationChanged));
    assert_eq!(cam.health().source, Source::Fallback);
    let fb = 0x3333_3333;
    let got = fed_rtp(
        &mut cam,
        at,
        &[frame(0, &rtp_of(fb, 7, 500, &P_SLICE)), frame(0, &rtp_of(fb, 8, 4100, &SPS))].concat(),
    );
    assert_eq!(got.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), vec![(102, old)], "from its keyframe on");

    // The primary, probed in the background.
    assert!(cam.wants_probe());
    let mut probe = CameraSession::new(cam.probe_params(9), at);
    assert_eq!(drain(&mut probe), vec![CameraOutput::Connect(addr())], "always on: at once, the primary");
    let out = hikvision_dialogue(&mut probe, at);
    assert_eq!(out.last(), Some(&CameraOutput::Up));
    let later = at + S;
    let primary = 0x4444_4444;
    // A receive without a keyframe changes nothing.
    let mut chunk = frame(0, &rtp_of(primary, 900, 1000, &P_SLICE));
    let mut media = Vec::new();
    probe.handle_camera_bytes(later, &mut chunk, &mut media);
    assert!(!cam.take_over(&mut probe, later, &mut chunk, &mut media));
    assert_eq!(cam.live_source(), Source::Fallback);
    // Its first keyframe: the route is back on the primary, from that keyframe on.
    let mut chunk = [
        frame(0, &rtp_of(primary, 901, 4600, &P_SLICE)),
        frame(0, &rtp_of(primary, 902, 8200, &SPS)),
        frame(0, &rtp_of(primary, 903, 11800, &P_SLICE)),
    ]
    .concat();
    let mut media = Vec::new();
    probe.handle_camera_bytes(later, &mut chunk, &mut media);
    assert!(cam.take_over(&mut probe, later, &mut chunk, &mut media));
    let seen: Vec<(u16, u32)> =
        media.iter().filter_map(|m| RtpHeader::parse(m.payload.bytes(&chunk))).map(|h| (h.seq, h.ssrc)).collect();
    assert_eq!(seen, vec![(103, old), (104, old)], "the keyframe first, numbering continued");
    assert_eq!(media[0].kind, FrameKind::KeyframeStart);
    let out = drain(&mut cam);
    let teardown = request(&out);
    assert_eq!(teardown.method(), Some("TEARDOWN"), "the fallback is left: {out:?}");
    assert_eq!(
        &out[1..],
        &[
            CameraOutput::Disconnect,
            CameraOutput::Down,
            CameraOutput::Ended(CameraOutcome::Completed),
            CameraOutput::SourceChanged(Source::Primary),
            CameraOutput::Up,
        ]
    );
    assert_eq!(
        (cam.live_source(), cam.phase(), probe.phase()),
        (Source::Primary, CameraPhase::Playing, CameraPhase::Stopped)
    );
    assert!(!cam.wants_probe());
    // The primary's connection is the route's now: its packets go on from there.
    let next = fed_rtp(&mut cam, later, &frame(0, &rtp_of(primary, 904, 15400, &P_SLICE)));
    assert_eq!(next.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(), vec![(105, old)]);
}

/// A reload that changes the primary while the fallback is live: the probe of the old primary
/// is to be replaced (its epoch moves); other changes keep it.
#[test]
fn a_reload_of_the_primary_replaces_its_probe() {
    let t0 = crate::test_fixtures::t0();
    let mut p = params(HIK_URL);
    p.fallback = Some(FallbackParams {
        url: "rtsp://10.0.0.6:554/sub".into(),
        addr: "10.0.0.6:554".parse().unwrap(),
        credentials: None,
    });
    let mut cam = CameraSession::new(p.clone(), t0);
    hikvision_playing(&mut cam, t0);
    cam.handle_camera_closed(t0);
    assert!(cam.wants_probe());
    let epoch = cam.probe_epoch();
    let mut same = p.clone();
    same.media_timeout = 20 * S;
    cam.reconfigure(same, t0);
    assert_eq!((cam.probe_epoch(), cam.live_source()), (epoch, Source::Fallback));
    let mut moved = p.clone();
    moved.url = "rtsp://10.0.0.5:554/Streaming/Channels/102".into();
    cam.reconfigure(moved, t0);
    assert_ne!(cam.probe_epoch(), epoch);
    assert_eq!(cam.probe_params(1).url, "rtsp://10.0.0.5:554/Streaming/Channels/102");
    // The fallback removed while it is live: back on the primary at once.
    drain(&mut cam);
    let mut gone = p;
    gone.fallback = None;
    cam.reconfigure(gone, t0);
    assert_eq!(cam.live_source(), Source::Primary);
    assert!(drain(&mut cam).contains(&CameraOutput::SourceChanged(Source::Primary)));
    assert!(!cam.wants_probe());
}

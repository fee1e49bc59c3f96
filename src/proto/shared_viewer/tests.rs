use super::*;
use crate::proto::camera_session::RtpPosition;
use crate::proto::gop_cache::{GopCache, GopLimits};
use crate::proto::keyframe::tests::rtp;
use crate::proto::keyframe::{Classifier, RtpHeader, VideoCodec};
use crate::proto::rtsp::{MessageLimits, parse_message};
use bytes::Bytes;

const S: Duration = Duration::from_secs(1);
const CAM: &str = "rtsp://10.0.0.5:554/Streaming/Channels/101";
const ROUTE: &str = "rtsp://relay.example:8080/cam1";
const Q: &str = "?transportmode=unicast&profile=Profile_1";

fn parse(bytes: &[u8]) -> Message {
    parse_message(bytes, &MessageLimits::default()).unwrap().unwrap().0
}

fn params() -> ViewerParams {
    ViewerParams { session_seed: 5, session_timeout: 60 * S, camera_wait: 10 * S, max_pending: 4 }
}

/// A Hikvision camera's description with both tracks set up.
fn hikvision() -> Presentation {
    let m = parse(&crate::test_fixtures::bytes("cameras/hikvision_describe.txt"));
    let mut p = Presentation::from_describe(&m, CAM).unwrap();
    p.tracks[0].channels = Some((0, 1));
    p.tracks[1].channels = Some((2, 3));
    p.finish();
    p
}

fn view<'a>(
    phase: CameraPhase,
    presentation: Option<&'a Presentation>,
    gop: Option<&'a GopCache>,
    next_rtp: &'a [Option<RtpPosition>],
) -> CameraView<'a> {
    CameraView { phase, presentation, gop, next_rtp }
}

fn viewer(now: Instant) -> SharedViewer {
    SharedViewer::new(params(), UrlMap::new(ROUTE, CAM).unwrap(), now)
}

fn request(method: &str, uri: &str, cseq: u32, headers: &[(&str, &str)]) -> Message {
    let mut m = Message::request(method, uri);
    m.headers.push(("CSeq".to_owned(), cseq.to_string()));
    for (k, v) in headers {
        m.headers.push(((*k).to_owned(), (*v).to_owned()));
    }
    m
}

fn drain(v: &mut SharedViewer) -> Vec<ViewerOutput> {
    std::iter::from_fn(|| v.poll_output()).collect()
}

/// The answers among `outputs`.
fn answers(outputs: &[ViewerOutput]) -> Vec<Message> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ViewerOutput::Send(b) => Some(parse(b)),
            _ => None,
        })
        .collect()
}

/// Sends one request; returns its answer and the other outputs.
fn ask(v: &mut SharedViewer, m: Message, cam: &CameraView<'_>, now: Instant) -> (Message, Vec<ViewerOutput>) {
    v.handle_request(m, cam, now);
    let out = drain(v);
    let mut a = answers(&out);
    assert_eq!(a.len(), 1, "{out:?}");
    (a.remove(0), out)
}

#[test]
fn describe_comes_from_the_cached_sdp_in_the_viewers_urls() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let mut v = viewer(t0);
    let (r, out) = ask(&mut v, request("DESCRIBE", ROUTE, 2, &[("Accept", "application/sdp")]), &cam, t0);
    assert_eq!((r.status(), r.cseq()), (Some(200), Some(2)));
    assert_eq!(r.header("Content-Base"), Some("rtsp://relay.example:8080/cam1/"));
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert_eq!(r.header("Session"), None);
    let sdp = std::str::from_utf8(&r.body).unwrap();
    assert!(sdp.contains(&format!("a=control:{ROUTE}/trackID=1{Q}\r\n")), "{sdp}");
    assert!(sdp.contains(&format!("a=control:{ROUTE}/{Q}\r\n")), "{sdp}");
    assert!(
        !sdp.contains("192.168.5.106:554/Streaming") && !String::from_utf8_lossy(&r.to_bytes()).contains("10.0.0.5")
    );
    assert!(sdp.contains("sprop-parameter-sets=Z00AKZpkA8ARPyzUBAQFAAADA+gAAOpgBA==,aO48gA=="));
    assert!(matches!(&out[1], ViewerOutput::Exchange(e) if e.method == "DESCRIBE" && e.status == 200));
    // A client that takes no SDP.
    let (r, _) = ask(&mut v, request("DESCRIBE", ROUTE, 3, &[("Accept", "text/html")]), &cam, t0);
    assert_eq!(r.status(), Some(406));
}

#[test]
fn relative_controls_stay_relative_and_unset_tracks_are_left_out() {
    let t0 = crate::test_fixtures::t0();
    let m = parse(&crate::test_fixtures::bytes("cameras/dahua_describe_h265_pcma.txt"));
    let cam_url = "rtsp://cam-driveway/cam/realmonitor?channel=1&subtype=2";
    let mut p = Presentation::from_describe(&m, cam_url).unwrap();
    p.tracks[0].channels = Some((0, 1));
    p.finish();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let mut v = SharedViewer::new(params(), UrlMap::new("rtsp://relay/d", cam_url).unwrap(), t0);
    let (r, _) = ask(&mut v, request("DESCRIBE", "rtsp://relay/d", 1, &[]), &cam, t0);
    assert_eq!(r.header("Content-Base"), Some("rtsp://relay/d?channel=1&subtype=2/"));
    let sdp = std::str::from_utf8(&r.body).unwrap();
    assert!(sdp.contains("a=control:trackID=0\r\n") && !sdp.contains("m=audio"), "{sdp}");
    // What FFmpeg makes of that base and control.
    let setup = request(
        "SETUP",
        "rtsp://relay/d?channel=1&subtype=2/trackID=0",
        2,
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    assert_eq!(ask(&mut v, setup, &cam, t0).0.status(), Some(200));
    let audio = request(
        "SETUP",
        "rtsp://relay/d?channel=1&subtype=2/trackID=1",
        3,
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3")],
    );
    assert_eq!(ask(&mut v, audio, &cam, t0).0.status(), Some(404), "the camera would not set it up");
}

/// A GOP cache holding a keyframe on track 0 and a metadata packet on track 1.
fn cache() -> GopCache {
    let mut g = GopCache::new(GopLimits { bytes: 1 << 20, packets: 100 });
    for (seq, payload) in [(500u16, &[0x67u8, 0x42][..]), (501, &[0x65, 0x88][..])] {
        let p = Bytes::from(rtp(seq, 90_000, false, payload));
        g.push_video(0, 0, &p, &Classifier::new(VideoCodec::H264).classify(&p).unwrap());
    }
    g.push_other(2, 1, &rtp(70, 1234, true, b"<m/>"));
    g.push_video(
        0,
        0,
        &rtp(502, 93_600, true, &[0x41, 1]),
        &Classifier::new(VideoCodec::H264).classify(&rtp(502, 93_600, true, &[0x41, 1])).unwrap(),
    );
    g
}

#[test]
fn setup_and_play_join_with_rtp_info_from_the_gop_cache() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let gop = cache();
    let next = [Some(RtpPosition { seq: 503, rtptime: 93_600 }), Some(RtpPosition { seq: 71, rtptime: 1234 })];
    let cam = view(CameraPhase::Playing, Some(&p), Some(&gop), &next);
    let mut v = viewer(t0);
    // The viewer picks channels 4-5 for video.
    let video_uri = format!("{ROUTE}/trackID=1{Q}");
    let (r, _) =
        ask(&mut v, request("SETUP", &video_uri, 3, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=4-5")]), &cam, t0);
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.header("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=4-5"));
    let session = r.header("Session").unwrap().to_owned();
    assert!(session.ends_with(";timeout=60") && session.len() == 16 + 11, "{session}");
    let id = session.split(';').next().unwrap().to_owned();
    assert_eq!(v.session_id(), Some(id.as_str()));
    // Not playing yet: no frames for it.
    assert_eq!(v.channel_for(0, false), None);
    let (r, out) =
        ask(&mut v, request("PLAY", &format!("{ROUTE}/"), 4, &[("Session", &id), ("Range", "npt=0.000-")]), &cam, t0);
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.header("RTP-Info").unwrap(), format!("url={video_uri};seq=500;rtptime=90000"));
    assert_eq!((r.header("Range"), r.header("Session")), (Some("npt=now-"), Some(session.as_str())));
    // The answer, its log line, then the replay (video only: metadata was not set up).
    let ViewerOutput::Play { replay, replay_bytes, asked_at } = &out[2] else { panic!("{out:?}") };
    let seqs: Vec<u16> = replay.iter().map(|f| RtpHeader::parse(f.payload()).unwrap().seq).collect();
    assert_eq!(seqs, vec![500, 501, 502]);
    assert_eq!(*replay_bytes, replay.iter().map(|f| f.frame.len()).sum::<usize>());
    assert_eq!(*asked_at, t0);
    assert!(v.is_playing());
    assert_eq!((v.channel_for(0, false), v.channel_for(0, true), v.channel_for(1, false)), (Some(4), Some(5), None));
    assert_eq!(v.frame_header(0, false, 1400), Some([b'$', 4, 0x05, 0x78]));
    assert_eq!(v.frame_header(0, true, 70_000), None);
    // PLAY again while playing: answered, no second replay.
    let (r, out) = ask(&mut v, request("PLAY", &format!("{ROUTE}/"), 5, &[("Session", &id)]), &cam, t0);
    assert_eq!(r.status(), Some(200));
    assert!(!out.iter().any(|o| matches!(o, ViewerOutput::Play { .. })));
}

#[test]
fn without_a_ready_cache_rtp_info_names_the_next_live_packet() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let next = [Some(RtpPosition { seq: 503, rtptime: 93_600 }), None];
    let empty = GopCache::new(GopLimits { bytes: 1000, packets: 10 });
    for gop in [None, Some(&empty)] {
        let cam = view(CameraPhase::Playing, Some(&p), gop, &next);
        let mut v = viewer(t0);
        let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
        let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=1{Q}"), 1, &[t]), &cam, t0);
        let id = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
        let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=2-3");
        ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=3{Q}"), 2, &[t, ("Session", &id)]), &cam, t0);
        let (r, out) = ask(&mut v, request("PLAY", ROUTE, 3, &[("Session", &id), ("Scale", "2.0")]), &cam, t0);
        assert_eq!(
            r.header("RTP-Info").unwrap(),
            format!("url={ROUTE}/trackID=1{Q};seq=503;rtptime=93600,url={ROUTE}/trackID=3{Q}"),
            "a track with no packet yet has no position to announce"
        );
        assert_eq!(r.header("Scale"), Some("1"), "live: played at normal speed whatever was asked");
        assert!(out.contains(&ViewerOutput::Play { replay: vec![], replay_bytes: 0, asked_at: t0 }));
    }
}

#[test]
fn setup_refusals() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let mut v = viewer(t0);
    let video = format!("{ROUTE}/trackID=1{Q}");
    let udp = ("Transport", "RTP/AVP;unicast;client_port=5000-5001");
    let (r, _) = ask(&mut v, request("SETUP", &video, 1, &[udp]), &cam, t0);
    assert_eq!(r.status(), Some(461));
    let mcast = ("Transport", "RTP/AVP/TCP;multicast;interleaved=0-1");
    assert_eq!(ask(&mut v, request("SETUP", &video, 2, &[mcast]), &cam, t0).0.status(), Some(461));
    let record = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record");
    assert_eq!(ask(&mut v, request("SETUP", &video, 3, &[record]), &cam, t0).0.status(), Some(461));
    let tcp = ("Transport", "RTP/AVP;unicast;client_port=1-2,RTP/AVP/TCP;unicast;interleaved=0-1");
    assert_eq!(ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=9"), 4, &[tcp]), &cam, t0).0.status(), Some(404));
    let (r, _) = ask(&mut v, request("SETUP", &video, 5, &[tcp]), &cam, t0);
    assert_eq!((r.status(), r.header("Transport")), (Some(200), Some("RTP/AVP/TCP;unicast;interleaved=0-1")));
    let id = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    // The second track asks for channels the first has: it gets free ones.
    let meta = format!("{ROUTE}/trackID=3{Q}");
    let same = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let (r, _) = ask(&mut v, request("SETUP", &meta, 6, &[same, ("Session", &id)]), &cam, t0);
    assert_eq!(r.header("Transport"), Some("RTP/AVP/TCP;unicast;interleaved=2-3"));
    let (r, _) = ask(&mut v, request("SETUP", &meta, 7, &[same, ("Session", "someone-else")]), &cam, t0);
    assert_eq!((r.status(), r.header("Session")), (Some(454), None));
    ask(&mut v, request("PLAY", ROUTE, 8, &[("Session", &id)]), &cam, t0);
    assert_eq!(ask(&mut v, request("SETUP", &meta, 9, &[same, ("Session", &id)]), &cam, t0).0.status(), Some(455));
    assert_eq!(ask(&mut v, request("PLAY", ROUTE, 10, &[]), &cam, t0).0.status(), Some(454), "PLAY needs the session");
}

#[test]
fn requests_wait_for_the_camera_in_order_then_give_up() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let starting = view(CameraPhase::Starting, None, None, &[]);
    let mut v = viewer(t0);
    v.handle_request(request("DESCRIBE", ROUTE, 1, &[]), &starting, t0);
    v.handle_request(request("OPTIONS", ROUTE, 2, &[]), &starting, t0);
    assert!(drain(&mut v).is_empty(), "the OPTIONS waits behind the DESCRIBE");
    assert_eq!(v.poll_timeout(), Some(t0 + 10 * S));
    // Described (set up, not yet playing): both answered, in order.
    let described = view(CameraPhase::Starting, Some(&p), None, &[]);
    v.handle_camera_change(&described, t0 + 2 * S);
    let out = drain(&mut v);
    assert_eq!(answers(&out).iter().map(|m| m.cseq()).collect::<Vec<_>>(), vec![Some(1), Some(2)]);
    assert!(matches!(&out[1], ViewerOutput::Exchange(e) if e.waited == 2 * S));
    let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=1{Q}"), 3, &[t]), &described, t0);
    let id = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    // PLAY waits for the camera to play, then times out.
    v.handle_request(request("PLAY", ROUTE, 4, &[("Session", &id)]), &described, t0 + 3 * S);
    assert!(drain(&mut v).is_empty());
    v.handle_timeout(&described, t0 + 13 * S - Duration::from_millis(1));
    assert!(drain(&mut v).is_empty());
    v.handle_timeout(&described, t0 + 13 * S);
    let out = drain(&mut v);
    assert_eq!(answers(&out)[0].status(), Some(503));
    assert!(!v.is_playing());
    // A camera retrying after a failure, with no description: 503 at once.
    let mut w = viewer(t0);
    let retrying = view(CameraPhase::Retrying, None, None, &[]);
    assert_eq!(ask(&mut w, request("DESCRIBE", ROUTE, 1, &[]), &retrying, t0).0.status(), Some(503));
    // With one, described viewers are answered while it reconnects, and PLAY waits for it.
    let retrying = view(CameraPhase::Retrying, Some(&p), None, &[]);
    assert_eq!(ask(&mut w, request("DESCRIBE", ROUTE, 2, &[]), &retrying, t0).0.status(), Some(200));
    // Past `max_pending` waiting requests, 503 at once.
    let mut x = viewer(t0);
    for c in 1..=4 {
        x.handle_request(request("DESCRIBE", ROUTE, c, &[]), &starting, t0);
    }
    assert!(drain(&mut x).is_empty());
    let (r, _) = ask(&mut x, request("OPTIONS", ROUTE, 5, &[]), &starting, t0);
    assert_eq!((r.status(), r.cseq()), (Some(503), Some(5)));
}

#[test]
fn pause_leaves_and_play_rejoins_teardown_ends_the_session() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let gop = cache();
    let cam = view(CameraPhase::Playing, Some(&p), Some(&gop), &[None, None]);
    let mut v = viewer(t0);
    let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=1{Q}"), 1, &[t]), &cam, t0);
    let id = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    ask(&mut v, request("PLAY", ROUTE, 2, &[("Session", &id)]), &cam, t0);
    let (r, out) = ask(&mut v, request("PAUSE", ROUTE, 3, &[("Session", &id)]), &cam, t0);
    assert_eq!((r.status(), &out[0]), (Some(200), &ViewerOutput::Stop));
    assert!(!v.is_playing() && v.channel_for(0, false).is_none());
    let (_, out) = ask(&mut v, request("PLAY", ROUTE, 4, &[("Session", &id)]), &cam, t0);
    assert!(matches!(&out[2], ViewerOutput::Play { replay, .. } if replay.len() == 3), "rejoins with the cache");
    let (r, out) = ask(&mut v, request("TEARDOWN", ROUTE, 5, &[("Session", &id)]), &cam, t0);
    assert_eq!((r.status(), r.header("Session").is_some(), &out[0]), (Some(200), true, &ViewerOutput::Stop));
    assert_eq!(v.session_id(), None);
    assert_eq!(ask(&mut v, request("PLAY", ROUTE, 6, &[("Session", &id)]), &cam, t0).0.status(), Some(454));
    // A new session gets a new id.
    let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=1{Q}"), 7, &[t]), &cam, t0);
    assert_ne!(r.header("Session").unwrap().split(';').next().unwrap(), id);
}

#[test]
fn keepalives_and_what_the_relay_does_not_do() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let mut v = viewer(t0);
    let (r, _) = ask(&mut v, request("OPTIONS", "*", 1, &[]), &cam, t0);
    assert_eq!(
        (r.status(), r.header("Public")),
        (Some(200), Some("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"))
    );
    assert_eq!(ask(&mut v, request("GET_PARAMETER", ROUTE, 2, &[]), &cam, t0).0.status(), Some(200));
    let mut named = request("GET_PARAMETER", ROUTE, 3, &[]);
    named.body = Bytes::from_static(b"position\r\n");
    assert_eq!(ask(&mut v, named, &cam, t0).0.status(), Some(451));
    let mut set = request("SET_PARAMETER", ROUTE, 4, &[]);
    set.body = Bytes::from_static(b"Brightness: 100\r\n");
    assert_eq!(ask(&mut v, set, &cam, t0).0.status(), Some(451));
    assert_eq!(ask(&mut v, request("SET_PARAMETER", ROUTE, 5, &[]), &cam, t0).0.status(), Some(200));
    let (r, _) = ask(&mut v, request("RECORD", ROUTE, 6, &[]), &cam, t0);
    assert_eq!(
        (r.status(), r.header("Allow")),
        (Some(405), Some("OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"))
    );
    assert_eq!(ask(&mut v, request("FLY", ROUTE, 7, &[]), &cam, t0).0.status(), Some(501));
    let (r, _) = ask(&mut v, request("PLAY", ROUTE, 8, &[("Require", "play.basic")]), &cam, t0);
    assert_eq!((r.status(), r.header("Unsupported")), (Some(551), Some("play.basic")));
    let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/x\rInjected: 1"), 9, &[]), &cam, t0);
    assert_eq!(r.status(), Some(400));
    // No CSeq: answered 400, then closed.
    v.handle_request(Message::request("OPTIONS", "*"), &cam, t0);
    let out = drain(&mut v);
    assert_eq!(answers(&out)[0].status(), Some(400));
    assert_eq!(out.last(), Some(&ViewerOutput::Close(ViewerOutcome::ProtocolError)));
}

#[test]
fn a_silent_viewer_is_closed_and_rtcp_counts_as_life() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let mut v = viewer(t0);
    let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    let (r, _) = ask(&mut v, request("SETUP", &format!("{ROUTE}/trackID=1{Q}"), 1, &[t]), &cam, t0);
    let id = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    ask(&mut v, request("PLAY", ROUTE, 2, &[("Session", &id)]), &cam, t0);
    assert_eq!(v.poll_timeout(), Some(t0 + 75 * S));
    v.handle_viewer_frame(t0 + 70 * S);
    v.handle_timeout(&cam, t0 + 75 * S);
    assert!(drain(&mut v).is_empty());
    assert_eq!(v.poll_timeout(), Some(t0 + 145 * S));
    v.handle_timeout(&cam, t0 + 145 * S);
    assert_eq!(drain(&mut v), vec![ViewerOutput::Stop, ViewerOutput::Close(ViewerOutcome::Timeout)]);
    assert_eq!(v.poll_timeout(), None);
}

/// The RTSP requests a real client sent, from a capture (`=> ` blocks).
fn client_requests(name: &str) -> Vec<Message> {
    let text = String::from_utf8_lossy(&crate::test_fixtures::bytes(&format!("clients/{name}"))).into_owned();
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(start) = line.strip_prefix("  => ") else { continue };
        if !start.ends_with("RTSP/1.0") {
            continue;
        }
        let mut raw = format!("{start}\r\n");
        while let Some(h) = lines.peek().and_then(|l| l.strip_prefix("     ")) {
            raw.push_str(h);
            raw.push_str("\r\n");
            lines.next();
        }
        raw.push_str("\r\n");
        out.push(parse(raw.as_bytes()));
    }
    out
}

/// FFmpeg, GStreamer and live555 tunnelling as captured against gst-rtsp-server, replayed against a shared
/// route with the same layout (`/cam`, control `stream=0`): every request is answered with
/// success, the client joins once and leaves at its TEARDOWN.
#[test]
fn real_clients_go_through_the_whole_dialogue() {
    let t0 = crate::test_fixtures::t0();
    let camera = "rtsp://10.1.1.1:8554/test";
    let mut describe = Message::response(200, "OK");
    describe.headers.push(("Content-Base".to_owned(), format!("{camera}/")));
    describe.headers.push(("Content-Type".to_owned(), "application/sdp".to_owned()));
    describe.body = Bytes::from_static(
        b"v=0\r\no=- 1 1 IN IP4 10.1.1.1\r\ns=Session\r\nt=0 0\r\na=control:*\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n",
    );
    let mut p = Presentation::from_describe(&describe, camera).unwrap();
    p.tracks[0].channels = Some((0, 1));
    p.finish();
    let next = [Some(RtpPosition { seq: 7, rtptime: 8 })];
    let cam = view(CameraPhase::Playing, Some(&p), None, &next);
    let files = [
        "ffmpeg_http_gstcam.txt",
        "ffmpeg_http_gstcam_36s_keepalive.txt",
        "gst_rtsph_gstcam.txt",
        "gst_rtsph_gstcam_36s_keepalive.txt",
        "openrtsp_T_gstcam.txt",
    ];
    for name in files {
        let requests = client_requests(name);
        assert!(requests.len() >= 5, "{name}: {requests:?}");
        let origin = requests[0].uri().unwrap().trim_end_matches("/cam").to_owned();
        let mut v = SharedViewer::new(params(), UrlMap::new(&format!("{origin}/cam"), camera).unwrap(), t0);
        let mut joined = 0;
        for mut req in requests {
            // The client would echo our session id.
            if req.header("Session").is_some() {
                req.set_header("Session", v.session_id().unwrap_or("none"));
            }
            let method = req.method().unwrap().to_owned();
            let (r, out) = ask(&mut v, req, &cam, t0);
            assert_eq!(r.status(), Some(200), "{name}: {method}: {r:?}");
            joined += out.iter().filter(|o| matches!(o, ViewerOutput::Play { .. })).count();
            if method == "PLAY" {
                assert_eq!(
                    r.header("RTP-Info").unwrap(),
                    format!("url={origin}/cam/stream=0;seq=7;rtptime=8"),
                    "{name}"
                );
            }
        }
        assert_eq!((joined, v.is_playing()), (1, false), "{name}");
    }
}

/// The pieces together against the demo camera's RTSP logic: one camera session, a viewer who
/// arrives before the camera is up and one who joins mid-stream. Each gets a gapless run of
/// packets on its own channel, starting at the packet its `RTP-Info` announced; the joiner's
/// starts with the keyframe access unit from the GOP cache.
#[test]
fn viewers_of_one_camera_session_get_what_rtp_info_announces() {
    use crate::demo_camera::connection::{Connection, Now, Timeline};
    use crate::proto::camera_session::{CameraOutput, CameraParams, CameraSession, MediaFrame};
    use std::time::SystemTime;

    let t0 = crate::test_fixtures::t0();
    let local: std::net::SocketAddr = "127.0.0.1:8554".parse().unwrap();
    let camera_url = "rtsp://127.0.0.1:8554/demo";
    let mut demo =
        Connection::new(crate::demo_camera::clip().unwrap(), Timeline { origin: t0, ts_base: 77 }, local, 1, t0);
    let mut cam = CameraSession::new(CameraParams::new(camera_url, local), t0);
    let at = |now: Instant| Now { mono: now, wall: SystemTime::now() };
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
    let route = "rtsp://relay:8080/live";
    /// What one viewer received: RTP-Info (seq, rtptime) and (channel, packet) in order.
    struct Seen {
        v: SharedViewer,
        rtp_info: Option<(u16, u32)>,
        got: Vec<(u8, Vec<u8>)>,
    }
    let outputs = |s: &mut Seen| {
        let mut answers = Vec::new();
        while let Some(o) = s.v.poll_output() {
            match o {
                ViewerOutput::Send(b) => answers.push(parse(&b)),
                ViewerOutput::Play { replay, .. } => {
                    for f in replay {
                        let h = s.v.frame_header(f.track, false, f.payload().len()).unwrap();
                        s.got.push((h[1], f.payload().to_vec()));
                    }
                }
                _ => {}
            }
        }
        for a in &answers {
            if let Some(info) = a.header("RTP-Info") {
                let e = &crate::proto::rtsp_headers::RtpInfo::parse(info).entries[0];
                s.rtp_info = Some((e.seq.unwrap(), e.rtptime.unwrap()));
            }
        }
        answers
    };
    let mut viewers: Vec<Seen> = Vec::new();
    let join = |viewers: &mut Vec<Seen>, cam: &mut CameraSession, demo: &mut Connection, now: Instant, ch: u8| {
        let mut s = Seen {
            v: SharedViewer::new(params(), UrlMap::new(route, camera_url).unwrap(), now),
            rtp_info: None,
            got: Vec::new(),
        };
        cam.set_viewers(viewers.len() + 1, now);
        pump(cam, demo, now);
        s.v.handle_request(request("DESCRIBE", route, 1, &[]), &cam.view(), now);
        // The first viewer's DESCRIBE waits for the camera's dialogue.
        s.v.handle_camera_change(&cam.view(), now);
        let d = outputs(&mut s);
        assert_eq!(d[0].status(), Some(200));
        let base = d[0].header("Content-Base").unwrap().to_owned();
        let t = format!("RTP/AVP/TCP;unicast;interleaved={ch}-{}", ch + 1);
        s.v.handle_request(request("SETUP", &format!("{base}trackID=0"), 2, &[("Transport", &t)]), &cam.view(), now);
        let id = outputs(&mut s)[0].header("Session").unwrap().split(';').next().unwrap().to_owned();
        s.v.handle_request(request("PLAY", &base, 3, &[("Session", &id)]), &cam.view(), now);
        assert_eq!(outputs(&mut s)[0].status(), Some(200));
        viewers.push(s);
    };
    join(&mut viewers, &mut cam, &mut demo, t0, 6);
    let mut now = t0;
    let mut buf = Vec::new();
    let mut media: Vec<MediaFrame> = Vec::new();
    while now < t0 + 5 * S {
        now += Duration::from_millis(40);
        buf.clear();
        demo.poll(at(now), &mut buf);
        media.clear();
        cam.handle_camera_bytes(now, &mut buf, &mut media);
        for m in &media {
            for s in viewers.iter_mut() {
                if let Some(h) = s.v.frame_header(m.track, m.rtcp, m.payload.len()) {
                    if !m.rtcp {
                        s.got.push((h[1], m.payload.bytes(&buf).to_vec()));
                    }
                }
            }
        }
        if now == t0 + Duration::from_millis(2320) {
            join(&mut viewers, &mut cam, &mut demo, now, 0);
        }
    }
    assert_eq!(viewers.len(), 2);
    for (n, s) in viewers.iter().enumerate() {
        let first = RtpHeader::parse(&s.got[0].1).unwrap();
        assert_eq!(Some((first.seq, first.timestamp)), s.rtp_info, "viewer {n}: RTP-Info names the first packet");
        let seqs: Vec<u16> = s.got.iter().map(|(_, p)| RtpHeader::parse(p).unwrap().seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "viewer {n}: gapless");
        assert!(s.got.iter().all(|(ch, _)| *ch == [6, 0][n]), "viewer {n}: its own channel");
        let nal = s.got[0].1[12] & 0x1f;
        assert!(matches!(nal, 5..=9 | 24 | 28), "viewer {n} starts at a keyframe access unit ({nal})");
    }
    let joiner = &viewers[1];
    assert!(joiner.got.len() > 50, "the joiner got the cache at once, then live");
    assert_ne!(viewers[0].got[0].1, joiner.got[0].1);
}

proptest::proptest! {
    /// Any request, in any state of the camera: no panic, and exactly one answer unless it
    /// waits for a camera that is starting.
    #[test]
    fn any_request_gets_one_answer(
        method in "(OPTIONS|DESCRIBE|SETUP|PLAY|PAUSE|TEARDOWN|GET_PARAMETER|SET_PARAMETER|RECORD|[A-Z_]{1,8})",
        uri in "(\\*|rtsp://relay.example:8080/cam1(/trackID=[0-9])?(\\?[a-z=&]{0,8})?|/[a-z/]{0,10})",
        transport in proptest::option::of("RTP/AVP(/TCP)?(;unicast)?(;interleaved=[0-9]{1,3}(-[0-9]{1,3})?)?"),
        session in proptest::option::of("[A-F0-9]{1,16}"),
        phase in 0usize..5,
        described: bool,
    ) {
        let t0 = crate::test_fixtures::t0();
        let p = hikvision();
        let phase = [CameraPhase::Idle, CameraPhase::Starting, CameraPhase::Playing, CameraPhase::Retrying, CameraPhase::Stopped][phase];
        let next = [None, None];
        let cam = view(phase, described.then_some(&p), None, &next);
        let mut v = viewer(t0);
        let mut headers = Vec::new();
        if let Some(t) = &transport {
            headers.push(("Transport", t.as_str()));
        }
        if let Some(s) = &session {
            headers.push(("Session", s.as_str()));
        }
        v.handle_request(request(&method, &uri, 1, &headers), &cam, t0);
        let n = answers(&drain(&mut v)).len();
        proptest::prop_assert!(n == 1 || (n == 0 && matches!(phase, CameraPhase::Starting | CameraPhase::Retrying)), "{n}");
        v.handle_timeout(&cam, t0 + 11 * S);
        let later = answers(&drain(&mut v)).len();
        proptest::prop_assert_eq!(n + later, 1);
    }
}

#[test]
fn a_track_of_a_camera_whose_urls_lie_outside_the_route_is_found_by_the_url_given_or_its_last_segment() {
    let t0 = crate::test_fixtures::t0();
    // The camera answers with a base of its own, not under the route's camera path.
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=cam\r\nt=0 0\r\na=control:rtsp://10.0.0.5:554/stream/\r\n\
               m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:rtsp://10.0.0.5:554/stream/trackID=0\r\n";
    let text = format!(
        "RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://10.0.0.5:554/stream/\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let mut p = Presentation::from_describe(&parse(text.as_bytes()), CAM).unwrap();
    p.tracks[0].channels = Some((0, 1));
    p.finish();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    let (r, _) = ask(&mut viewer(t0), request("DESCRIBE", ROUTE, 1, &[]), &cam, t0);
    let given = "rtsp://relay.example:8080/stream/trackID=0";
    assert!(String::from_utf8_lossy(&r.body).contains(&format!("a=control:{given}")), "{r:?}");
    let t = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1");
    for uri in [given.to_owned(), format!("{ROUTE}/trackID=0")] {
        let (r, _) = ask(&mut viewer(t0), request("SETUP", &uri, 2, &[t]), &cam, t0);
        assert_eq!(r.status(), Some(200), "{uri}");
    }
    let (r, _) = ask(&mut viewer(t0), request("SETUP", &format!("{ROUTE}/trackID=7"), 2, &[t]), &cam, t0);
    assert_eq!(r.status(), Some(404));
}

#[test]
fn requests_outside_the_route_are_refused_as_on_a_passthrough_route() {
    let t0 = crate::test_fixtures::t0();
    let p = hikvision();
    let cam = view(CameraPhase::Playing, Some(&p), None, &[]);
    for uri in [
        format!("{ROUTE}/../cam2"),
        format!("{ROUTE}/%2e%2e/cam2"),
        "rtsp://relay.example:8080/cam2".to_owned(),
        "rtsp://relay.example:8080/Streaming/Channels/101/../../../etc".to_owned(),
    ] {
        let (r, out) = ask(&mut viewer(t0), request("DESCRIBE", &uri, 1, &[]), &cam, t0);
        assert_eq!(r.status(), Some(404), "{uri}");
        assert!(out.contains(&ViewerOutput::Refused(Rejection::OutsideRoute)), "{uri}: counted");
    }
    let (r, out) = ask(&mut viewer(t0), request("DESCRIBE", &format!("{ROUTE}/a%2fb"), 1, &[]), &cam, t0);
    assert_eq!(r.status(), Some(400));
    assert!(out.contains(&ViewerOutput::Refused(Rejection::BadRequestUri)));
    let (r, _) = ask(&mut viewer(t0), request("DESCRIBE", &format!("{ROUTE}/x/.."), 1, &[]), &cam, t0);
    assert_eq!(r.status(), Some(200), "dot segments that stay inside the route are fine");
}

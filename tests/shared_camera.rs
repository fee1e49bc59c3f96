//! Shared camera sessions with real peers: the relay binary (2 shards) in front of a
//! gst-rtsp-server camera that reports every RTSP session it creates, watched by FFmpeg and
//! GStreamer viewers (tunnel, plain RTSP, HTTPS) and by a raw RTSP client that sees every RTP
//! packet (sequence gaps, keyframes, SSRC), which decoders hide behind their jitter buffers.
//!
//! Each test runs its own camera and relay, is bounded in time, and stops every peer it starts.

mod support;

use std::time::{Duration, Instant};

use support::raw_rtsp::{Observe, RawViewer, RtpPacket, SeqTracker, rtp_info_seq};
use support::*;

const VIDEO: u8 = 0;

/// A `[[route]]` for `path` of `camera`, with `extra` keys.
fn route(path: &str, camera: &GstCamera, extra: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{}\"\n{extra}", camera.url(path))
}

/// A sample from the relay's `/metrics`, if exported.
fn sample(relay: &RelayProcess, series: &str) -> Option<f64> {
    let text = relay.scrape();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A sample that must be exported.
fn metric(relay: &RelayProcess, series: &str) -> f64 {
    sample(relay, series).unwrap_or_else(|| panic!("{series} not exported"))
}

/// A silence in a stream: how long, and the (sequence number, timestamp) before and after it.
type Pause = (Duration, (u16, u32), (u16, u32));

/// What a watching raw viewer has seen so far.
#[derive(Debug, Default, Clone)]
struct Seen {
    seq: SeqTracker,
    /// When the latest keyframe start arrived.
    last_keyframe: Option<Instant>,
    /// The latest packet: sequence number, timestamp, arrival.
    last: Option<(u16, u32, Instant)>,
    /// The longest silence between two packets, with the packets around it.
    longest_pause: Option<Pause>,
    closed: bool,
}

impl Observe for Seen {
    fn seq(&self) -> &SeqTracker {
        &self.seq
    }

    fn set_closed(&mut self) {
        self.closed = true;
    }

    fn add(&mut self, p: &RtpPacket) {
        self.seq.add(p);
        if p.starts_h264_keyframe() {
            self.last_keyframe = Some(p.at);
        }
        if let Some((seq, ts, at)) = self.last {
            let pause = p.at.duration_since(at);
            if self.longest_pause.is_none_or(|(longest, _, _)| pause > longest) {
                self.longest_pause = Some((pause, (seq, ts), (p.seq, p.timestamp)));
            }
        }
        self.last = Some((p.seq, p.timestamp, p.at));
    }
}

type Watch = support::raw_rtsp::Watch<Seen>;

/// A raw viewer of `path` playing on channels `(ch, ch + 1)`, watched.
fn watch(relay: &RelayProcess, path: &str, ch: u8) -> Watch {
    let mut v = RawViewer::connect(relay.tunnel, path);
    v.play((ch, ch + 1));
    Watch::start(v, ch)
}

/// A self-signed certificate for 127.0.0.1 and the `[[listen.tls]]` table serving it on a free
/// port; returns the table and the HTTPS address.
fn tls_listener(name: &str) -> (String, String) {
    let dir = temp_dir(name);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let table =
        format!("[[listen.tls]]\naddr = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    (table, addr)
}

fn report(viewers: &[&LiveViewer]) -> String {
    viewers.iter().map(|v| format!("{}: {} frames\n{}\n", v.name, v.frames(), v.tail())).collect()
}

/// Issue 13's headline: twenty viewers of one camera over every transport, FFmpeg and
/// GStreamer mixed, all decoding at the same time, and the camera serves one RTSP session.
#[test]
fn twenty_mixed_viewers_decode_from_one_camera_session() {
    require_peers!();
    let camera = GstCamera::start(None);
    let (tls, https) = tls_listener("shared-twenty");
    let relay = RelayProcess::start(
        "shared-twenty",
        &format!("{}{tls}[metrics]\nper_route = true\n", route("/cam1", &camera, "")),
    );
    let plain = relay.tunnel;
    let mut viewers = Vec::new();
    for i in 0..20 {
        let name = format!("viewer{i}");
        let v = match i % 10 {
            0..=2 => LiveViewer::ffmpeg(&format!("{name}-ffmpeg-tunnel"), "http", &format!("rtsp://{plain}/cam1"), 90),
            3 | 4 => LiveViewer::ffmpeg(&format!("{name}-ffmpeg-plain"), "tcp", &format!("rtsp://{plain}/cam1"), 90),
            5 | 6 => LiveViewer::ffmpeg(&format!("{name}-ffmpeg-https"), "https", &format!("rtsp://{https}/cam1"), 90),
            7 => LiveViewer::gst(&format!("{name}-gst-tunnel"), &format!("rtsph://{plain}/cam1"), &[], 90),
            8 => LiveViewer::gst(
                &format!("{name}-gst-https"),
                &format!("rtspsh://{https}/cam1"),
                &["tls-validation-flags=0"],
                90,
            ),
            _ => LiveViewer::gst(&format!("{name}-gst-plain"), &format!("rtspt://{plain}/cam1"), &[], 90),
        };
        viewers.push(v);
        // Staggered: joins land at different points of the camera's GOP.
        std::thread::sleep(Duration::from_millis(60));
    }
    // Every viewer watching at once, each having decoded a second of video.
    let (mut most_viewers, mut most_cameras) = (0.0f64, 0.0f64);
    let all_watching = eventually(Duration::from_secs(60), || {
        let (v, c) = (sample(&relay, "relay_viewers_active"), sample(&relay, "relay_cameras_active"));
        most_viewers = most_viewers.max(v.unwrap_or(0.0));
        most_cameras = most_cameras.max(c.unwrap_or(0.0));
        v == Some(20.0) && viewers.iter().all(|v| v.frames() >= 25)
    });
    assert!(
        all_watching,
        "not all 20 decoding together (relay_viewers_active peaked at {most_viewers}):\n{}\nrelay log:\n{}",
        report(&viewers.iter().collect::<Vec<_>>()),
        relay.log_text()
    );
    assert_eq!(most_cameras, 1.0, "relay_cameras_active");
    assert_eq!(metric(&relay, "relay_cameras_active"), 1.0);
    assert_eq!(camera.sessions_of("/cam1"), 1, "camera sessions: {:?}", camera.events());
    assert_eq!(camera.sessions().len(), 1);
    assert_eq!(metric(&relay, "relay_route_viewers{route=\"/cam1\"}"), 20.0);
    assert_eq!(metric(&relay, "relay_route_camera_up{route=\"/cam1\"}"), 1.0);
    for v in &mut viewers {
        v.interrupt();
    }
    for v in &mut viewers {
        v.wait_exit(Duration::from_secs(10));
    }
    assert!(
        eventually(Duration::from_secs(10), || sample(&relay, "relay_viewers_active") == Some(0.0)),
        "viewers still counted after all left: {}",
        relay.scrape()
    );
}

/// A viewer joining mid-GOP starts with the GOP cache: its first packet starts a keyframe's
/// access unit, `RTP-Info` names that packet, it is older than what the viewers already
/// watching had got when it joined, and the cache runs into the live stream without a gap. The
/// same join on a route without the cache starts at live packets.
#[test]
fn a_viewer_joining_mid_stream_starts_at_the_cached_keyframe() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start(
        "shared-gop",
        &format!("{}{}", route("/cam1", &camera, ""), route("/cam2", &camera, "gop_cache = false\n")),
    );
    let ttff_before = sample(&relay, "relay_time_to_first_frame_seconds_count").unwrap_or(0.0);

    // Joins `path` mid-GOP while `first` watches; returns the joiner's first packets, its
    // RTP-Info seq, and the last seq `first` had before the PLAY went out.
    let join_mid_gop = |path: &str, first: &Watch| -> (Vec<RtpPacket>, Option<u16>, u16) {
        let mid_gop = eventually(Duration::from_secs(20), || {
            let seen = first.seen();
            seen.last_keyframe.is_some_and(|k| (150..450).contains(&k.elapsed().as_millis()))
        });
        assert!(mid_gop, "no keyframe seen on {path}: {:?}", first.seen());
        let mut joiner = RawViewer::connect(relay.tunnel, path);
        // Not the first viewer's channels: each viewer gets its own.
        let before = first.seen().last.unwrap().0;
        let reply = joiner.play((6, 7));
        let info = reply.header("RTP-Info").and_then(|i| rtp_info_seq(i, joiner.video_url.as_deref().unwrap()));
        let mut packets = Vec::new();
        while packets.len() < 60 {
            match joiner.next_rtp(6, Duration::from_secs(10)) {
                Some(p) => packets.push(p),
                None => panic!("joiner of {path} got {} packets then nothing", packets.len()),
            }
        }
        (packets, info, before)
    };

    let first = watch(&relay, "/cam1", VIDEO);
    let (packets, info, before) = join_mid_gop("/cam1", &first);
    // The first packet opens an access unit (an access unit delimiter, SEI or parameter sets
    // may come before the IDR slice), and that access unit holds a keyframe.
    let p0 = &packets[0];
    let first_nals = p0.h264_nal_types();
    assert!(
        first_nals.first().is_some_and(|t| matches!(t, 5..=9)),
        "the first packet does not open an access unit: NAL types {first_nals:?}"
    );
    let unit: Vec<u8> =
        packets.iter().take_while(|p| p.timestamp == p0.timestamp).flat_map(|p| p.h264_nal_types()).collect();
    assert!(unit.contains(&5), "the first access unit is not a keyframe: NAL types {unit:?}");
    assert_eq!(info, Some(p0.seq), "RTP-Info seq against the first packet received");
    assert!(
        before.wrapping_sub(p0.seq) < 0x8000,
        "first packet {} is not older than what the watching viewer had ({before}): not from the cache",
        p0.seq
    );
    let mut seq = SeqTracker::default();
    packets.iter().for_each(|p| seq.add(p));
    assert_eq!((seq.missing, seq.backwards), (0, 0), "cache to live hand-over: {seq:?}");
    assert!(
        eventually(Duration::from_secs(5), || {
            sample(&relay, "relay_time_to_first_frame_seconds_count").is_some_and(|n| n >= ttff_before + 2.0)
        }),
        "time to first frame not observed for both viewers"
    );

    // A real decoder joining mid-GOP: its first picture needs nothing it did not get.
    let out = ffmpeg_play("tcp", &relay.url("/cam1"), 25);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ffmpeg_frames(&out) >= 25, "{}", describe(&out));
    assert!(!err.contains("non-existing PPS") && !err.contains("no frame!"), "FFmpeg joined mid-GOP:\n{err}");

    // Without the cache the joiner gets only what the camera sends after it joined.
    let first2 = watch(&relay, "/cam2", VIDEO);
    let (packets, info, before) = join_mid_gop("/cam2", &first2);
    assert!(
        packets[0].seq.wrapping_sub(before).wrapping_sub(1) < 0x8000,
        "without the cache the first packet ({}) should come after {before}",
        packets[0].seq
    );
    assert_eq!(info, Some(packets[0].seq), "RTP-Info seq without the cache");
    assert_eq!(camera.sessions_of("/cam1"), 1);
    assert_eq!(camera.sessions_of("/cam2"), 1);
}

/// Viewers leaving every way a viewer leaves (killed, TEARDOWN, FFmpeg quitting) do not
/// disturb one that stays: it loses no packet, and the camera never hears of them.
#[test]
fn viewers_leaving_do_not_disturb_the_others() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-leave", &route("/cam1", &camera, ""));
    let stays = watch(&relay, "/cam1", VIDEO);
    let mut killed = LiveViewer::ffmpeg("killed", "http", &relay.url("/cam1"), 60);
    let mut quits = LiveViewer::ffmpeg("quits", "tcp", &relay.url("/cam1"), 60);
    let mut tears_down = RawViewer::connect(relay.tunnel, "/cam1");
    tears_down.play((2, 3));
    assert!(tears_down.next_rtp(2, Duration::from_secs(10)).is_some());
    let started = eventually(Duration::from_secs(30), || killed.frames() >= 10 && quits.frames() >= 10);
    assert!(started, "{}", report(&[&killed, &quits]));
    assert!(stays.wait_packets(0, 50, Duration::from_secs(10)));

    killed.kill();
    let r = tears_down.teardown();
    assert_eq!(r.status, 200);
    drop(tears_down);
    quits.interrupt();
    assert!(quits.wait_exit(Duration::from_secs(10)));
    let after = stays.packets();
    assert!(stays.wait_packets(after, 50, Duration::from_secs(10)), "the staying viewer stopped getting media");
    assert!(
        eventually(Duration::from_secs(10), || sample(&relay, "relay_viewers_active") == Some(1.0)),
        "{}",
        relay.scrape()
    );
    let seen = stays.seen();
    assert!(!seen.closed);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "the staying viewer lost packets: {:?}", seen.seq);
    assert_eq!(camera.sessions_of("/cam1"), 1);
    assert_eq!(camera.teardowns(), 0, "the camera heard of a viewer leaving: {:?}", camera.events());
}

/// On demand with linger: the camera session outlives the last viewer by `linger_secs`, a
/// viewer coming back within it reuses the session, and after it the camera is released.
#[test]
fn the_camera_session_lingers_after_the_last_viewer() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-linger", &route("/cam1", &camera, "linger_secs = 2\n"));
    assert_eq!(camera.sessions().len(), 0, "on demand: no viewer, no camera session");

    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert!(v.next_rtp(0, Duration::from_secs(10)).is_some());
    assert_eq!(v.teardown().status, 200);
    drop(v);
    // Back at once: the same camera session.
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert!(v.next_rtp(0, Duration::from_secs(10)).is_some());
    assert_eq!(camera.sessions_of("/cam1"), 1, "{:?}", camera.events());
    assert_eq!(camera.teardowns(), 0);

    assert_eq!(v.teardown().status, 200);
    drop(v);
    let left = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(camera.teardowns(), 0, "camera released before the linger ran out");
    assert_eq!(metric(&relay, "relay_cameras_active"), 1.0);
    assert!(
        eventually(Duration::from_secs(15), || camera.teardowns() == 1),
        "camera never released: {:?}",
        camera.events()
    );
    assert!(left.elapsed() >= Duration::from_millis(1900), "released after {:?}", left.elapsed());
    // The camera reports the TEARDOWN a moment before its session pool drops the session.
    assert!(eventually(Duration::from_secs(5), || camera.sessions_open() == 0), "{:?}", camera.events());
    assert!(eventually(Duration::from_secs(5), || sample(&relay, "relay_cameras_active") == Some(0.0)));

    // After the linger a viewer opens a new one.
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert!(v.next_rtp(0, Duration::from_secs(10)).is_some());
    assert_eq!(camera.sessions_of("/cam1"), 2);
}

/// `always_on`: the camera session exists with no viewer at all, and after the camera
/// restarts it is opened again by itself.
#[test]
fn an_always_on_camera_is_open_without_viewers_and_reopened_after_a_restart() {
    require_peers!();
    let mut camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-always", &route("/cam1", &camera, "always_on = true\n"));
    assert!(
        eventually(Duration::from_secs(15), || camera.sessions_of("/cam1") == 1
            && camera.requests().iter().any(|r| r.starts_with("PLAY "))),
        "no camera session without viewers: {:?}\nrelay log:\n{}",
        camera.events(),
        relay.log_text()
    );
    assert!(eventually(Duration::from_secs(5), || sample(&relay, "relay_cameras_active") == Some(1.0)));

    camera.restart();
    assert!(
        eventually(Duration::from_secs(30), || camera.sessions_of("/cam1") == 2),
        "not reopened after the restart: {:?}\nrelay log:\n{}",
        camera.events(),
        relay.log_text()
    );
    assert!(metric(&relay, "relay_camera_reconnects_total") >= 1.0);
    // And it serves: a viewer now gets media at once from the open session.
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert!(v.next_rtp(0, Duration::from_secs(10)).is_some());
    assert_eq!(camera.sessions_of("/cam1"), 2, "a viewer opened its own: {:?}", camera.events());

    // Down for six seconds: retried with a growing delay (up to 1 s, 2 s, 4 s, 8 s: each drawn
    // between nothing and that), not hammered, and the viewer stays.
    let watching = Watch::start(v, 0);
    camera.kill();
    let before = metric(&relay, "relay_camera_reconnects_total");
    std::thread::sleep(Duration::from_secs(6));
    let attempts = metric(&relay, "relay_camera_reconnects_total") - before;
    assert!((1.0..=6.0).contains(&attempts), "{attempts} reconnect attempts in 6 s");
    camera.restart();
    assert!(
        eventually(Duration::from_secs(30), || camera.sessions_of("/cam1") == 3),
        "not reopened after six seconds down: {:?}",
        camera.events()
    );
    let got = watching.packets();
    assert!(watching.wait_packets(got, 25, Duration::from_secs(20)), "the viewer got no media after the outage");
    assert!(!watching.seen().closed);
}

/// A camera that dies mid-stream and comes back on the same address: viewers stay connected,
/// get nothing meanwhile, then media again with the same SSRC, sequence numbers that continue
/// where they stopped and timestamps that moved on by the time that passed. A real GStreamer
/// viewer keeps decoding across it.
#[test]
fn a_camera_restart_mid_stream_is_survived_with_continuous_rtp() {
    require_peers!();
    let mut camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-restart", &route("/cam1", &camera, ""));
    let raw = watch(&relay, "/cam1", VIDEO);
    let gst = LiveViewer::gst("gst", &format!("rtsph://{}/cam1", relay.tunnel), &[], 60);
    assert!(eventually(Duration::from_secs(30), || gst.frames() >= 25 && raw.packets() >= 50), "{}", gst.tail());

    camera.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let quiet = raw.seen();
    assert!(!quiet.closed, "the viewer was disconnected when the camera went away");
    assert!(
        // Arrival as the reading thread saw it: a second of slack for a busy machine.
        quiet.last.unwrap().2 < killed + Duration::from_secs(1),
        "media while the camera was down? last packet {:?} after the kill",
        quiet.last.unwrap().2.duration_since(killed)
    );
    let (gst_before, raw_before) = (gst.frames(), raw.packets());

    camera.restart();
    let back =
        eventually(Duration::from_secs(40), || raw.packets() >= raw_before + 50 && gst.frames() >= gst_before + 25);
    assert!(
        back,
        "media did not resume: raw {} -> {}, gst {gst_before} -> {}\n{}\nrelay log:\n{}",
        raw_before,
        raw.packets(),
        gst.frames(),
        gst.tail(),
        relay.log_text()
    );
    let seen = raw.seen();
    assert!(!seen.closed);
    assert_eq!(seen.seq.ssrcs.len(), 1, "SSRC changed for the viewer: {:?}", seen.seq.ssrcs);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "sequence numbers across the restart: {:?}", seen.seq);
    let (pause, (_, ts_before), (_, ts_after)) = seen.longest_pause.unwrap();
    assert!(pause >= Duration::from_millis(1500), "the longest pause ({pause:?}) is not the restart");
    let advanced = ts_after.wrapping_sub(ts_before);
    assert!(advanced < 0x8000_0000, "RTP time went back across the restart ({ts_before} -> {ts_after})");
    assert!(
        f64::from(advanced) / 90_000.0 >= pause.as_secs_f64() / 2.0,
        "RTP time moved {advanced} ticks over a {pause:?} outage"
    );
    assert!(metric(&relay, "relay_camera_reconnects_total") >= 1.0);
    assert_eq!(camera.sessions_of("/cam1"), 2, "one camera session per camera life: {:?}", camera.events());
    assert_eq!(metric(&relay, "relay_viewers_active"), 2.0);
}

/// A camera that comes back with another stream description (here another RTP payload type)
/// cannot continue its viewers' sessions: they are closed (`camera_changed`), and viewers who
/// connect again play the new stream.
#[test]
fn a_camera_back_with_another_stream_ends_its_viewers() {
    require_peers!();
    let mut camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-changed", &route("/cam1", &camera, ""));
    let changed = "relay_sessions_total{outcome=\"camera_changed\"}";
    assert_eq!(metric(&relay, changed), 0.0);
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert_eq!(v.next_rtp(0, Duration::from_secs(10)).map(|p| p.payload_type), Some(96));

    camera.restart_with(&["--pt", "97"]);
    assert!(v.wait_closed(Duration::from_secs(30)), "the viewer of the old stream stayed: {}", relay.log_text());
    assert!(eventually(Duration::from_secs(5), || metric(&relay, changed) == 1.0), "{}", relay.scrape());
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert_eq!(v.next_rtp(0, Duration::from_secs(10)).map(|p| p.payload_type), Some(97));
    let out = ffmpeg_play("http", &relay.url("/cam1"), 25);
    assert!(ffmpeg_frames(&out) >= 25, "{}", describe(&out));
    assert_eq!(camera.sessions_of("/cam1"), 2, "{:?}", camera.events());
}

/// Issue 20 item 9: a SIGHUP that changes only a shared route's camera credentials while a raw
/// viewer and GStreamer play. The relay opens a camera session with the new credentials and
/// the viewers carry on (one SSRC, no sequence gap); credentials the camera refuses leave them
/// waiting as for a camera that is down; the old ones restored, the media is back.
#[test]
fn a_reload_that_changes_the_cameras_credentials_carries_its_viewers_over() {
    require_peers!();
    let camera = GstCamera::start_users(&[("alice", "one"), ("bob", "two")]);
    let upstream = |login: &str| format!("upstream = \"rtsp://{login}@127.0.0.1:{}/cam1\"", camera.port);
    let relay = RelayProcess::start(
        "shared-reload-login",
        &format!("[[route]]\npath = \"/cam1\"\n{}\n", upstream("alice:one")),
    );
    let raw = watch(&relay, "/cam1", VIDEO);
    let gst = LiveViewer::gst("gst", &format!("rtsph://{}/cam1", relay.tunnel), &[], 120);
    assert!(eventually(Duration::from_secs(30), || gst.frames() >= 25 && raw.packets() >= 50), "{}", gst.tail());
    let plays_on = |what: &str| {
        let (raw_before, gst_before) = (raw.packets(), gst.frames());
        let on =
            eventually(Duration::from_secs(30), || raw.packets() >= raw_before + 50 && gst.frames() >= gst_before + 25);
        assert!(
            on,
            "no media after {what}: raw {raw_before} -> {}, gst {gst_before} -> {}\n{}\ncamera: {:?}\nrelay log:\n{}",
            raw.packets(),
            gst.frames(),
            gst.tail(),
            camera.events(),
            relay.log_text()
        );
    };

    // Other credentials the camera accepts: a new camera session, the viewers carried over.
    relay.reload_replacing(&upstream("alice:one"), &upstream("bob:two"));
    assert!(eventually(Duration::from_secs(20), || camera.sessions_of("/cam1") == 2), "{:?}", camera.events());
    plays_on("the new credentials");

    // Credentials the camera refuses: no media, but the viewers stay...
    let refused = "relay_camera_sessions_total{outcome=\"auth_failed\"}";
    relay.reload_replacing(&upstream("bob:two"), &upstream("bob:wrong"));
    assert!(eventually(Duration::from_secs(10), || metric(&relay, refused) >= 1.0), "{}", relay.scrape());
    // ...and with the old ones back the media is too.
    relay.reload_replacing(&upstream("bob:wrong"), &upstream("alice:one"));
    plays_on("the old credentials were restored");

    let seen = raw.seen();
    assert!(!seen.closed);
    assert_eq!(seen.seq.ssrcs.len(), 1, "SSRC changed for the viewer: {:?}", seen.seq.ssrcs);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "sequence numbers across the reloads: {:?}", seen.seq);
    assert_eq!(camera.sessions_of("/cam1"), 3, "{:?}", camera.events());
    assert!(metric(&relay, "relay_camera_sessions_total{outcome=\"reloaded\"}") >= 2.0, "{}", relay.scrape());
    assert_eq!(metric(&relay, "relay_sessions_total{outcome=\"camera_changed\"}"), 0.0);
    assert_eq!(metric(&relay, "relay_viewers_active"), 2.0);
}

/// Issue 20 item 9, the camera's URL: a shared route moved by SIGHUP to another URL that
/// describes the same stream keeps its viewer playing; moved to a camera with another
/// description (payload type 97), the viewer is ended as `camera_changed`, and a new one plays
/// the new camera — never a viewer left connected with no media.
#[test]
fn a_reload_that_moves_a_shared_route_to_another_camera_carries_or_ends_its_viewers() {
    require_peers!();
    let camera = GstCamera::start(None);
    let mut other = GstCamera::start(None);
    other.restart_with(&["--pt", "97"]);
    let relay = RelayProcess::start("shared-reload-url", &route("/cam1", &camera, ""));
    let raw = watch(&relay, "/cam1", VIDEO);
    assert!(raw.wait_packets(0, 50, Duration::from_secs(20)));

    // The same camera's other mount: another URL, the same description.
    relay.reload_replacing(&camera.url("/cam1"), &camera.url("/cam2"));
    assert!(eventually(Duration::from_secs(20), || camera.sessions_of("/cam2") == 1), "{:?}", camera.events());
    let got = raw.packets();
    assert!(
        raw.wait_packets(got, 50, Duration::from_secs(20)),
        "no media after the move: {:?}\nrelay log:\n{}",
        raw.seen(),
        relay.log_text()
    );
    let seen = raw.seen();
    assert!(!seen.closed);
    assert_eq!(seen.seq.ssrcs.len(), 1, "{:?}", seen.seq.ssrcs);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "{:?}", seen.seq);

    // Another camera, another description: the viewer is ended, counted, and may come back.
    let changed = "relay_sessions_total{outcome=\"camera_changed\"}";
    relay.reload_replacing(&camera.url("/cam2"), &other.url("/cam1"));
    assert!(eventually(Duration::from_secs(20), || raw.seen().closed), "the viewer stayed: {}", relay.log_text());
    assert!(eventually(Duration::from_secs(5), || metric(&relay, changed) == 1.0), "{}", relay.scrape());
    let mut v = RawViewer::connect(relay.tunnel, "/cam1");
    v.play((0, 1));
    assert_eq!(v.next_rtp(0, Duration::from_secs(10)).map(|p| p.payload_type), Some(97));
    assert_eq!(other.sessions_of("/cam1"), 1, "{:?}", other.events());
}

/// A viewer that stops reading has frames dropped, then is cut; the camera and the other
/// viewer never notice.
#[test]
fn a_slow_viewer_is_dropped_then_cut_while_the_others_lose_nothing() {
    require_peers!();
    let camera = GstCamera::start(None);
    let limits = "[limits]\nfanout_drop_above_bytes = 16384\nfanout_disconnect_above_bytes = 1048576\nfanout_max_behind_ms = 2000\n";
    let relay = RelayProcess::start("shared-slow", &format!("{}{limits}", route("/cam1", &camera, "")));
    let fast = watch(&relay, "/cam1", VIDEO);
    assert!(fast.wait_packets(0, 20, Duration::from_secs(15)));
    let dropped_before = metric(&relay, "relay_frames_dropped_total");
    let slow_series = "relay_rejections_total{reason=\"slow_viewer\"}";
    assert_eq!(metric(&relay, slow_series), 0.0);

    // Reads the PLAY answer, then nothing.
    let mut slow = RawViewer::connect_slow(relay.tunnel, "/cam1");
    slow.play((0, 1));
    assert!(
        eventually(Duration::from_secs(20), || metric(&relay, "relay_frames_dropped_total") > dropped_before),
        "no frame dropped for the stalled viewer: {}",
        relay.scrape()
    );
    assert!(
        eventually(Duration::from_secs(30), || metric(&relay, slow_series) >= 1.0),
        "the stalled viewer was never cut: {}",
        relay.scrape()
    );
    assert!(slow.wait_closed(Duration::from_secs(30)), "the stalled viewer's connection stayed open");

    let after = fast.packets();
    assert!(fast.wait_packets(after, 25, Duration::from_secs(10)));
    let seen = fast.seen();
    assert!(!seen.closed);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "the fast viewer lost packets: {:?}", seen.seq);
    assert_eq!(camera.sessions_of("/cam1"), 1);
    assert!(eventually(Duration::from_secs(5), || sample(&relay, "relay_viewers_active") == Some(1.0)));
}

/// `mode = "passthrough"`: today's 1:1, every viewer its own camera session.
#[test]
fn a_passthrough_route_opens_a_camera_session_per_viewer() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("shared-passthrough", &route("/cam1", &camera, "mode = \"passthrough\"\n"));
    let a = watch(&relay, "/cam1", VIDEO);
    let b = watch(&relay, "/cam1", 4);
    assert!(a.wait_packets(0, 20, Duration::from_secs(15)) && b.wait_packets(0, 20, Duration::from_secs(15)));
    let out = ffmpeg_play("http", &relay.url("/cam1"), 25);
    assert!(ffmpeg_frames(&out) >= 25, "{}", describe(&out));
    assert_eq!(camera.sessions_of("/cam1"), 3, "{:?}", camera.events());
    assert_eq!(sample(&relay, "relay_viewers_active"), Some(0.0), "passthrough viewers are not shared viewers");
    let r = a.finish().teardown();
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || camera.teardowns() >= 2), "{:?}", camera.events());
    drop(b);
}

//! A shared route's fallback source (issue 26 item 3), against two real gst-rtsp-server cameras:
//! the primary killed while FFmpeg (RTSP over HTTP) and a raw RTP viewer watch; the fallback
//! takes over (viewers stay, frames keep coming, RTP continuous), the API and the metrics say
//! `fallback`; the primary restarted, the route returns to it at its first keyframe. A fallback
//! that describes another stream ends the viewers as `camera_changed`.
//!
//! Each test runs its own cameras and relay, is bounded in time, and stops every peer it starts.
//! The frame counts and the switch times are printed (`--nocapture`).

mod support;

use std::time::{Duration, Instant};

use support::raw_rtsp::{Observe, RawViewer, RtpPacket, SeqTracker};
use support::*;

/// What a raw viewer got: sequence accounting, and every packet's arrival.
#[derive(Debug, Default, Clone)]
struct Seen {
    seq: SeqTracker,
    arrivals: Vec<Instant>,
    timestamps_backwards: u64,
    last_ts: Option<u32>,
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
        self.arrivals.push(p.at);
        if let Some(ts) = self.last_ts {
            if p.timestamp.wrapping_sub(ts) >= 0x8000_0000 {
                self.timestamps_backwards += 1;
            }
        }
        self.last_ts = Some(p.timestamp);
    }
}

impl Seen {
    /// The longest silence between two packets from `from` on: when the packet after it
    /// arrived, and how long the silence was.
    fn resumed_after(&self, from: Instant) -> Option<(Instant, Duration)> {
        let mut after = self.arrivals.iter().copied().skip_while(|t| *t < from).peekable();
        let mut longest: Option<(Instant, Duration)> = None;
        let mut prev = *after.peek()?;
        for t in after {
            let gap = t.duration_since(prev);
            if longest.is_none_or(|(_, g)| gap > g) {
                longest = Some((t, gap));
            }
            prev = t;
        }
        longest
    }
}

type Watch = support::raw_rtsp::Watch<Seen>;

/// A raw viewer of `path` playing its video on channels (0, 1), watched on its own thread.
fn watch(relay: &RelayProcess, path: &str) -> Watch {
    let mut v = RawViewer::connect(relay.tunnel, path);
    v.play((0, 1));
    Watch::start(v, (0, 1).0)
}

fn source_is(relay: &RelayProcess, source: &str) -> bool {
    let series = format!("relay_route_camera_source{{route=\"/cam1\",source=\"{source}\"}}");
    relay.scrape().lines().any(|l| l.strip_prefix(series.as_str()).is_some_and(|v| v.trim() == "1"))
}

/// `/v1/cameras`' `source` of `/cam1`.
fn api_source(api: u16) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-H", "Authorization: Bearer fb-read-1"])
        .arg(format!("http://127.0.0.1:{api}/v1/cameras"))
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let cam = v["cameras"].as_array()?.iter().find(|c| c["route"] == "/cam1")?.clone();
    Some(cam["source"].as_str()?.to_owned())
}

fn relay_with_fallback(name: &str, primary: &GstCamera, fallback: &GstCamera, api: u16) -> RelayProcess {
    let token = rtsp_tunnel_relay::proto::api_token::sha256_hex(b"fb-read-1");
    RelayProcess::start(
        name,
        &format!(
            "[api]\nlisten = \"127.0.0.1:{api}\"\n[[api.token]]\nname = \"wall\"\nsha256 = \"{token}\"\nscope = \"read\"\n\
             [metrics]\nper_route = true\n\
             [[route]]\npath = \"/cam1\"\nupstream = \"{}\"\nfallback = \"{}\"\n",
            primary.url("/cam1"),
            // Another path than the upstream's: what viewers are handed maps all the same.
            fallback.url("/cam2")
        ),
    )
}

#[test]
fn a_killed_primary_hands_its_viewers_to_the_fallback_and_takes_them_back() {
    require_peers!();
    let mut primary = GstCamera::start(None);
    let fallback = GstCamera::start(None);
    let api = free_port();
    let relay = relay_with_fallback("fallback", &primary, &fallback, api);
    let ffmpeg = LiveViewer::ffmpeg("fallback-ffmpeg", "http", &relay.url("/cam1"), 120);
    let raw = watch(&relay, "/cam1");
    assert!(
        eventually(Duration::from_secs(20), || ffmpeg.frames() >= 25 && raw.seen().seq.packets > 50),
        "no media from the primary: {}\n{}",
        ffmpeg.tail(),
        relay.log_text()
    );
    assert!(source_is(&relay, "primary"), "{}", relay.scrape());
    assert_eq!(api_source(api).as_deref(), Some("primary"));
    assert_eq!(fallback.sessions().len(), 0, "the fallback is not opened while the primary plays");

    // The primary dies: the fallback takes over.
    let frames_before = ffmpeg.frames();
    let killed = Instant::now();
    primary.kill();
    assert!(
        eventually(Duration::from_secs(20), || source_is(&relay, "fallback")),
        "not switched: {}",
        relay.log_text()
    );
    assert!(
        eventually(Duration::from_secs(20), || ffmpeg.frames() >= frames_before + 50),
        "FFmpeg got no frames from the fallback: {}\n{}",
        ffmpeg.tail(),
        relay.log_text()
    );
    let on_fallback = raw.seen();
    // The stream's silence that began when the primary died ended with the fallback's keyframe.
    let switch = on_fallback.resumed_after(killed - Duration::from_millis(50)).map(|(t, _)| t.duration_since(killed));
    let frames_on_fallback = ffmpeg.frames();
    assert_eq!(api_source(api).as_deref(), Some("fallback"));
    assert_eq!(fallback.sessions_of("/cam2"), 1);
    // A viewer joining now is answered from the fallback's description, in the relay's URLs.
    let late = ffmpeg_play("http", &relay.url("/cam1"), 25);
    assert!(
        ffmpeg_frames(&late) >= 25,
        "a viewer joining on the fallback: {}
{}",
        describe(&late),
        relay.log_text()
    );
    assert!(relay.log_text().contains("camera source switched"), "{}", relay.log_text());

    // The primary is back: the route returns to it at its first keyframe.
    primary.restart();
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(40), || source_is(&relay, "primary")),
        "not back on the primary: {}",
        relay.log_text()
    );
    let returned = restarted.elapsed();
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || ffmpeg.frames() >= frames_on_fallback + 50),
        "FFmpeg got no frames after the return: {}",
        ffmpeg.tail()
    );
    assert_eq!(api_source(api).as_deref(), Some("primary"));
    assert!(
        eventually(Duration::from_secs(10), || fallback.sessions_open() == 0),
        "the fallback is left once the primary is back: {:?}",
        fallback.events()
    );
    let seen = raw.seen();
    // Make-before-break: the longest silence around the return (the fallback's last packet to the
    // primary's first).
    let return_gap = seen.resumed_after(back - Duration::from_secs(2)).map(|(_, gap)| gap);
    let mut ffmpeg = ffmpeg;
    assert!(ffmpeg.running(), "FFmpeg stopped: {}", ffmpeg.tail());
    let tail = ffmpeg.tail();
    assert!(!seen.closed, "the raw viewer was closed");
    // One stream for the viewers all along: one SSRC, no sequence number missing or repeated,
    // timestamps never going back.
    assert_eq!(seen.seq.ssrcs.len(), 1, "{:?}", seen.seq.ssrcs);
    assert_eq!((seen.seq.missing, seen.seq.backwards, seen.timestamps_backwards), (0, 0, 0), "{:?}", seen.seq);
    assert!(!tail.to_lowercase().contains("error"), "FFmpeg saw an error: {tail}");
    eprintln!(
        "fallback: FFmpeg frames {frames_before} on the primary, {frames_on_fallback} after the switch, {} after the return; \
         raw viewer {} RTP packets; switch (primary killed -> first fallback packet at the viewer) {switch:?}; \
         primary restarted -> route back on it {returned:?}, longest silence around the return {return_gap:?}",
        ffmpeg.frames(),
        seen.seq.packets
    );
}

#[test]
fn a_fallback_with_another_stream_ends_the_viewers_as_camera_changed() {
    require_peers!();
    let mut primary = GstCamera::start(None);
    // Another RTP payload type: another stream description.
    let fallback = GstCamera::start_args(&["--pt", "97"]);
    let relay = relay_with_fallback("fallback-changed", &primary, &fallback, free_port());
    let raw = watch(&relay, "/cam1");
    assert!(eventually(Duration::from_secs(20), || raw.seen().seq.packets > 25), "{}", relay.log_text());
    primary.kill();
    assert!(
        eventually(Duration::from_secs(20), || raw.seen().closed),
        "the viewer was kept on a stream it did not set up: {}",
        relay.log_text()
    );
    assert!(
        eventually(Duration::from_secs(5), || relay.metric("relay_sessions_total{outcome=\"camera_changed\"}") >= 1.0),
        "{}",
        relay.scrape()
    );
}

#[test]
fn a_passthrough_viewer_of_an_unreachable_upstream_plays_the_fallback() {
    require_peers!();
    let fallback = GstCamera::start(None);
    // Nothing listens there.
    let dead = format!("rtsp://127.0.0.1:{}/cam1", free_port());
    let relay = RelayProcess::start(
        "fallback-passthrough",
        &format!(
            "[[route]]\npath = \"/cam1\"\nupstream = \"{dead}\"\nfallback = \"{}\"\nmode = \"passthrough\"\n",
            fallback.url("/cam2")
        ),
    );
    let out = ffmpeg_play("http", &relay.url("/cam1"), 25);
    assert!(
        ffmpeg_frames(&out) >= 25,
        "{}\nrelay:\n{}\ncamera: {:?}",
        describe(&out),
        relay.log_text(),
        fallback.events()
    );
    assert_eq!(fallback.sessions_of("/cam2"), 1, "{:?}", fallback.events());
}

/// The built-in player in headless Chromium (tests/peers/browser_player_check.py) watching while
/// the primary dies and comes back: decoded frames keep rising through both switches, the
/// clock advances, the page logs no error.
#[test]
fn the_browser_player_plays_through_both_switches() {
    require_peers!();
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let websockets = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !chromium || !websockets {
        eprintln!("skipped: chromium or python3-websockets missing (run scripts/install-test-deps.sh)");
        return;
    }
    let mut primary = GstCamera::start(None);
    let fallback = GstCamera::start(None);
    let relay = relay_with_fallback("fallback-browser", &primary, &fallback, free_port());
    let url = format!("http://{}/cam1", relay.tunnel);
    let shot = format!("{}/fallback-browser.png", env!("CARGO_TARGET_TMPDIR"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/browser_player_check.py");
    let browser = std::process::Command::new("timeout")
        .args(["-k", "5", "90", "/usr/bin/python3", script, &url, "--screenshot", &shot, "--seconds", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run browser_player_check.py");
    // The page plays from the primary (its WebSocket is a viewer of the route) ...
    let watching = eventually(Duration::from_secs(40), || {
        relay
            .scrape()
            .lines()
            .any(|l| l.starts_with("relay_bytes_total{direction=\"to_viewer\"}") && !l.ends_with(" 0"))
    });
    assert!(watching, "the page never played: {}", relay.log_text());
    std::thread::sleep(Duration::from_secs(4));
    // ... the primary dies, the fallback takes over, the primary comes back.
    primary.kill();
    assert!(eventually(Duration::from_secs(20), || source_is(&relay, "fallback")), "{}", relay.log_text());
    std::thread::sleep(Duration::from_secs(5));
    primary.restart();
    assert!(eventually(Duration::from_secs(40), || source_is(&relay, "primary")), "{}", relay.log_text());
    let out = browser.wait_with_output().expect("browser check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let r: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(r.get("error").is_none(), "{r}\nrelay log:\n{}", relay.log_text());
    let frames = |s: &serde_json::Value| s["frames"].as_u64().unwrap_or(0);
    let time = |s: &serde_json::Value| s["time"].as_f64().unwrap_or(0.0);
    let (start, end) = (&r["start"], &r["end"]);
    // 25 fps for 20 s, through both switches: far more than the 10 s either camera alone gave.
    assert!(frames(end) > frames(start) + 300, "decoded frames stalled at a switch: {r}");
    assert!(time(end) > time(start) + 12.0, "currentTime did not advance through the switches: {r}");
    assert_eq!(r["console_errors"], serde_json::json!([]), "{r}");
    eprintln!(
        "fallback, browser player: {} frames decoded over the 20 s sampled (killed and restarted inside), currentTime {:.1} s -> {:.1} s",
        frames(end) - frames(start),
        time(start),
        time(end)
    );
}

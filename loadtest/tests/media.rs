//! The cameras' media as real players see it, and the viewers' time to first frame and sequence
//! gaps: FFmpeg and GStreamer decode `loadtest camera` directly; a relay double that holds back
//! or drops media after PLAY shows the viewer reporting the wait for a keyframe and the gaps.
//! Decoder tests are skipped when the peer is missing (scripts/install-test-deps.sh).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Act, assert_clean, frame_proxy, start_cameras_with, viewers};
use serde_json::Value;

fn have(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `cmd` (no stdin, its output captured) for up to 30 s; its output and whether it
/// finished by itself.
fn run_bounded(cmd: &mut Command) -> (std::process::Output, bool) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        match child.try_wait().unwrap() {
            Some(_) => break true,
            None if Instant::now() > end => {
                let _ = child.kill();
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    (child.wait_with_output().unwrap(), finished)
}

#[test]
fn ffmpeg_decodes_the_camera_stream() {
    skip_when_quick!();
    if !have("ffmpeg", "-version") {
        eprintln!("skipped: ffmpeg missing (run scripts/install-test-deps.sh)");
        return;
    }
    // A keyframe every 10 pictures: 30 frames cross two keyframes. With a random phase the
    // stream begins mid-group: the decoder skips the P pictures before the first keyframe (as
    // when it joins a real camera) and then decodes without a fault.
    for phase in ["play", "random"] {
        let (_cams, addr) = start_cameras_with(2, &["--gop", "10", "--gop-phase", phase]);
        let (out, finished) = run_bounded(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-nostdin", "-err_detect", "explode", "-xerror", "-rtsp_transport", "tcp"])
                .args(["-i", &format!("rtsp://{addr}/cam1"), "-frames:v", "30", "-f", "framemd5", "-"]),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(finished, "{phase}: ffmpeg did not finish in time:\n{stderr}");
        assert!(out.status.success(), "{phase}: ffmpeg failed:\n{stderr}");
        let frames = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(frames, 30, "{phase}: decoded frames:\n{stderr}");
        assert!(stderr.contains("Video: h264") && stderr.contains("640x360"), "{stderr}");
        for bad in [
            "error while decoding",
            "concealing",
            "Missing reference",
            "non-existing PPS",
            "Invalid data",
            "RTP: missed",
        ] {
            assert!(!stderr.contains(bad), "{phase}: ffmpeg reported `{bad}`:\n{stderr}");
        }
    }
}

#[test]
fn gstreamer_decodes_the_camera_stream() {
    skip_when_quick!();
    if !have("gst-launch-1.0", "--version") {
        eprintln!("skipped: gst-launch-1.0 missing (run scripts/install-test-deps.sh)");
        return;
    }
    let (_cams, addr) = start_cameras_with(1, &["--gop", "10"]);
    let pipeline = format!(
        "rtspsrc location=rtsp://{addr}/cam0 protocols=tcp ! rtph264depay ! avdec_h264 \
         ! identity eos-after=31 silent=false ! fakesink sync=false"
    );
    let (out, finished) = run_bounded(Command::new("gst-launch-1.0").arg("-v").args(pipeline.split_whitespace()));
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(finished, "gst-launch-1.0 did not finish in time:\n{text}");
    // One chain line per decoded frame passed; `eos-after=N` passes N-1 and ends the stream.
    let decoded = text.lines().filter(|l| l.contains("identity0") && l.contains("chain")).count();
    assert!(decoded >= 30, "GStreamer passed {decoded} decoded frames:\n{text}");
    assert!(out.status.success() && text.contains("Got EOS"), "{text}");
    assert!(text.contains("video/x-raw") && text.contains("width=(int)640"), "decoder output caps missing:\n{text}");
}

/// A relay double: forwards byte for byte, except that it withholds the interleaved frames the
/// camera sends in `drop` (ms after the PLAY reply), counting them.
fn dropping_relay(camera: SocketAddr, drop: std::ops::Range<u64>) -> (SocketAddr, Arc<AtomicU64>) {
    let dropped = Arc::new(AtomicU64::new(0));
    let d = dropped.clone();
    let addr = frame_proxy(camera, move |_, _, since_play| {
        if drop.contains(&(since_play.as_millis() as u64)) {
            d.fetch_add(1, Ordering::Relaxed);
            Act::Drop
        } else {
            Act::Pass
        }
    });
    (addr, dropped)
}

fn sessions(report: &Value) -> &Vec<Value> {
    report["sessions"].as_array().unwrap()
}

#[test]
fn a_viewer_at_the_camera_gets_a_keyframe_first() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras_with(4, &["--gop", "25"]);
    let report = viewers(addr, "rtsp", 4, 4, &[]);
    assert_clean(&report, 4);
    assert_eq!(report["time_to_first_frame_samples"], 4);
    assert_eq!(report["sessions_without_keyframe"], 0);
    for s in sessions(&report) {
        // Every camera connection's stream starts with its keyframe: the first packet is one.
        assert_eq!(s["ttff_ms"], s["first_packet_ms"], "{s:#}");
    }
}

/// `--gop-phase random`: each session's stream starts at a random picture of its group, P
/// pictures first (checked slice by slice like any other), then its first keyframe; sessions
/// started together no longer have their keyframes in step.
#[test]
fn with_a_random_gop_phase_sessions_start_mid_group() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras_with(4, &["--gop", "25", "--gop-phase", "random"]);
    let report = viewers(addr, "rtsp", 8, 4, &[]);
    assert_clean(&report, 8);
    assert_eq!(report["sessions_without_keyframe"], 0, "{report:#}");
    assert_eq!(report["pictures_unverified"], 0, "the P pictures before the first keyframe are verified too");
    let mut mid_group = 0;
    let mut first_keyframes = std::collections::BTreeSet::new();
    for s in sessions(&report) {
        let (ttff, first) = (s["ttff_ms"].as_f64().unwrap(), s["first_packet_ms"].as_f64().unwrap());
        assert!(ttff >= first, "{s:#}");
        if ttff > first {
            mid_group += 1;
        }
        first_keyframes.insert((ttff - first).to_bits());
    }
    // 8 sessions with one chance in 25 each of starting on a keyframe: all in step would be
    // the old behaviour, never chance.
    assert!(mid_group >= 2, "{report:#}");
    assert!(first_keyframes.len() >= 2, "{report:#}");
}

#[test]
fn a_viewer_joining_mid_group_waits_for_the_next_keyframe() {
    skip_when_quick!();
    // A keyframe every second; the double withholds the first 600 ms after PLAY.
    let (_cams, addr) = start_cameras_with(2, &["--gop", "25", "--fps", "25"]);
    let (relay, dropped) = dropping_relay(addr, 0..600);
    // The withheld 600 ms are a fifth of the run lost and a stall: within the thresholds here,
    // where the point is how they are counted.
    let report = viewers(relay, "rtsp", 2, 2, &["--max-loss-pct", "50", "--max-stall-ms", "3000ms"]);
    assert_eq!(report["sessions_survived"], 2, "{report:#}");
    assert!(dropped.load(Ordering::Relaxed) > 10);
    for s in sessions(&report) {
        let (ttff, first) = (s["ttff_ms"].as_f64().unwrap(), s["first_packet_ms"].as_f64().unwrap());
        assert!(first >= 600.0, "{s:#}");
        // The next keyframe is due 1 s after the stream began.
        assert!((1000.0..2000.0).contains(&ttff), "{s:#}");
        assert!(ttff > first, "{s:#}");
        // The withheld packets are the stream's start: lost, not gaps between packets received.
        assert_eq!(s["rtp_seq_gaps"], 0, "{s:#}");
        assert!(s["lost"].as_u64().unwrap() > 0, "{s:#}");
    }
    let q = &report["time_to_first_frame_ms"];
    assert!(q["p50"].as_f64().unwrap() >= 1000.0, "{q}");
}

#[test]
fn packets_dropped_mid_stream_are_sequence_gaps() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras_with(2, &[]);
    let (relay, dropped) = dropping_relay(addr, 1000..1300);
    let report = viewers(relay, "rtsp", 2, 2, &[]);
    let dropped = dropped.load(Ordering::Relaxed);
    assert!(dropped > 5, "{dropped}");
    // Every withheld packet is one missing RTP sequence number, and one lost packet.
    assert_eq!(report["rtp_seq_gaps"], dropped, "{report:#}");
    assert_eq!(report["packets_lost"], dropped);
    assert_eq!(report["sessions_without_keyframe"], 0);
    let gaps: u64 = sessions(&report).iter().map(|s| s["rtp_seq_gaps"].as_u64().unwrap()).sum();
    assert_eq!(gaps, dropped);
}

#[test]
fn the_camera_counts_the_sessions_each_stream_served() {
    skip_when_quick!();
    let json = std::env::temp_dir().join(format!("lt-cam-{}-{}.json", std::process::id(), common::free_port()));
    let (cams, addr) = start_cameras_with(3, &["--json", json.to_str().unwrap()]);
    // Four viewers of /cam0 at once, two of /cam1, none of /cam2.
    let report = viewers(addr, "rtsp", 6, 2, &[]);
    assert_clean(&report, 6);
    cams.signal("TERM");
    let end = Instant::now() + Duration::from_secs(10);
    let cam: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&json)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && v["sessions_opened"] == 6
        {
            break v;
        }
        assert!(Instant::now() < end, "no sessions report at {}", json.display());
        std::thread::sleep(Duration::from_millis(100));
    };
    let per = cam["per_stream"].as_array().unwrap();
    assert_eq!(per.len(), 2, "{cam:#}");
    assert_eq!(
        (&per[0]["path"], &per[0]["sessions_opened"], &per[0]["max_concurrent"]),
        (&"/cam0".into(), &3.into(), &3.into())
    );
    assert_eq!(
        (&per[1]["path"], &per[1]["sessions_opened"], &per[1]["open_now"]),
        (&"/cam1".into(), &3.into(), &0.into())
    );
    assert_eq!(cam["max_concurrent_per_stream"], 3);
}

#[test]
fn a_relay_that_repacketises_the_media_still_gets_it_timed_from_the_padding() {
    skip_when_quick!();
    let python_gi = Command::new("/usr/bin/python3").args(["-c", "import gi"]).status().is_ok_and(|s| s.success());
    if !python_gi {
        eprintln!("skipped: python3-gi missing (run scripts/install-test-deps.sh)");
        return;
    }
    let (_cams, addr) = start_cameras_with(2, &[]);
    let port = common::free_port();
    // gst-rtsp-server depayloads and payloads again: the header extension does not survive.
    let gst = Command::new("/usr/bin/python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/gst_relay.py"))
        .args(["--camera", &addr.to_string(), "--streams", "2", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _gst = common::Killed(gst);
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(target).is_err() {
        assert!(Instant::now() < end, "gst relay did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = viewers(target, "rtsp", 4, 2, &[]);
    assert_eq!(report["sessions_survived"], 4, "{report:#}");
    assert!(report["packets_timed"].as_u64().unwrap() > 100, "{report:#}");
    assert!(report["packets_unmarked"].as_u64().unwrap() > 10, "slices and parameter sets: {report:#}");
    assert_eq!(report["packets_lost"], 0);
    assert_eq!(report["rtp_seq_gaps"], 0);
    assert_eq!(report["sessions_without_keyframe"], 0);
    assert!(report["integrity"].as_object().unwrap().values().all(|v| v == 0), "{report:#}");
}

//! Tests of the load generator as an instrument: what it reports when things go wrong. The
//! cameras run as a child process so a test can pause (SIGSTOP), kill (SIGKILL) or restart them
//! mid-run; relay doubles stand in for a relay that misroutes, goes silent, freezes or damages a
//! slice; an in-process relay with shared routes for a camera lost or restarted under viewers
//! and for a warm route.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    Act, assert_clean, frame_proxy, nal_of, playing_in, relay, relay_configured, shared_relay, start_cameras,
    start_cameras_at, start_cameras_on, start_viewers, viewers,
};
use serde_json::Value;

fn sessions(report: &Value) -> &Vec<Value> {
    report["sessions"].as_array().unwrap()
}

#[test]
fn a_paused_camera_shows_a_stall_and_overdue_latency_not_loss() {
    skip_when_quick!();
    let (cams, addr) = start_cameras(4);
    let relay = relay(addr, 4, false);
    // A stall of 1.5 s is over the default survival threshold (1 s): allowed here, where the
    // point is that it shows as a stall and not as loss.
    let run = start_viewers(relay.local_addrs()[0], "tunnel", 4, 4, &["--duration", "6s", "--max-stall-ms", "3000ms"]);
    run.wait_playing(4);
    cams.signal("STOP");
    std::thread::sleep(Duration::from_millis(1500));
    cams.signal("CONT");
    let (_, report) = run.finish();
    // Held-up packets all came once the camera went on: a stall, late packets, no loss.
    assert_clean(&report, 4);
    for s in sessions(&report) {
        assert!(s["stalls"].as_u64().unwrap() >= 1, "{s:#}");
        assert!(s["longest_stall_ms"].as_f64().unwrap() >= 1000.0, "{s:#}");
        assert!(s["latency_ms"]["max"].as_f64().unwrap() >= 1000.0, "overdue packets keep their due time: {s:#}");
    }
    assert!(report["media_latency_ms"]["max"].as_f64().unwrap() >= 1000.0);
    relay.shutdown(Duration::from_millis(200));
}

#[test]
fn a_killed_camera_leaves_its_sessions_reported_failed_with_their_bytes() {
    skip_when_quick!();
    let (cams, addr) = start_cameras(4);
    let relay = relay(addr, 4, false);
    let run = start_viewers(relay.local_addrs()[0], "tunnel", 4, 4, &["--duration", "5s"]);
    run.wait_playing(4);
    cams.signal("KILL");
    let (lines, report) = run.finish();
    assert_eq!(report["sessions_established"], 4, "{report:#}");
    assert_eq!(report["sessions_survived"], 0);
    assert_eq!(report["sessions_failed"], 4);
    let after: u64 = report["failures_after_play"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(after, 4, "{}", report["failures_after_play"]);
    assert_eq!(sessions(&report).len(), 4);
    for s in sessions(&report) {
        assert_eq!(s["survived"], false);
        assert!(s["reason"].is_string(), "{s:#}");
        assert!(s["bytes"].as_u64().unwrap() > 0 && s["timed"].as_u64().unwrap() > 0, "bytes kept: {s:#}");
        assert!(s["latency_ms"]["p50"].is_number(), "latency kept: {s:#}");
    }
    assert!(report["bytes_received"].as_u64().unwrap() > 0);
    assert!(report["media_latency_samples"].as_u64().unwrap() > 0);
    // The live count goes down as the sessions die.
    assert!(lines.iter().any(|l| playing_in(l) == Some(0)), "{lines:#?}");
    let series = report["throughput"].as_array().unwrap();
    assert_eq!(series.last().unwrap()["playing"], 0);
    relay.shutdown(Duration::from_millis(200));
}

/// `--media-check first-packet` (what setup-rate.sh uses): after its first packet a session is
/// only drained, unparsed, yet a clean run survives, ready at its first packet with every byte
/// counted, and a connection that ends before the session's end (a camera killed under a
/// passthrough relay) still fails every session.
#[test]
fn a_session_checked_to_its_first_packet_still_fails_when_its_connection_ends() {
    skip_when_quick!();
    let (cams, addr) = start_cameras(4);
    let relay = relay(addr, 4, false);
    let target = relay.local_addrs()[0];
    let clean = viewers(target, "tunnel", 4, 4, &["--media-check", "first-packet"]);
    assert_eq!(clean["sessions_survived"], 4, "{clean:#}");
    assert_eq!(clean["sessions_ready"], 4, "{clean:#}");
    for s in sessions(&clean) {
        // 3 s at 500 kbit/s: the drained bytes are counted, the checks stopped at packet one.
        assert!(s["bytes"].as_u64().unwrap() > 100_000, "{s:#}");
        assert_eq!(s["timed"], 1, "{s:#}");
        assert!(s["ready_ms"].is_number(), "{s:#}");
    }
    let run = start_viewers(target, "tunnel", 4, 4, &["--duration", "5s", "--media-check", "first-packet"]);
    run.wait_playing(4);
    cams.signal("KILL");
    let (_, report) = run.finish();
    assert_eq!(report["sessions_established"], 4, "{report:#}");
    assert_eq!(report["sessions_survived"], 0, "{report:#}");
    let after: u64 = report["failures_after_play"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(after, 4, "{}", report["failures_after_play"]);
    relay.shutdown(Duration::from_millis(200));
}

/// A relay double: forwards byte for byte, but with `swap` every `/cam0` becomes `/cam1` and
/// back on the way to the camera and on the way back, so the viewer of /cam0 sees a dialogue
/// about /cam0 while playing camera 1.
fn swapping_relay(camera: SocketAddr, swap: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for viewer in listener.incoming() {
            let Ok(viewer) = viewer else { return };
            let Ok(cam) = TcpStream::connect(camera) else { return };
            let (v2, c2) = (viewer.try_clone().unwrap(), cam.try_clone().unwrap());
            std::thread::spawn(move || pump(viewer, cam, swap));
            std::thread::spawn(move || pump(c2, v2, swap));
        }
    });
    addr
}

fn pump(mut from: TcpStream, mut to: TcpStream, swap: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let b = &mut buf[..n];
        if swap {
            for i in 0..n.saturating_sub(4) {
                if &b[i..i + 4] == b"/cam" && matches!(b[i + 4], b'0' | b'1') {
                    b[i + 4] ^= 1;
                }
            }
        }
        if to.write_all(b).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

#[test]
fn a_relay_that_swaps_two_cameras_streams_is_caught() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras(2);
    // The double itself is sound: forwarding straight, every check passes.
    assert_clean(&viewers(swapping_relay(addr, false), "rtsp", 2, 2, &[]), 2);
    let report = viewers(swapping_relay(addr, true), "rtsp", 2, 2, &[]);
    assert_eq!(report["sessions_established"], 2);
    assert_eq!(report["sessions_survived"], 0, "{report:#}");
    assert_eq!(report["failures_after_play"]["wrong_stream"], 2);
    assert!(report["integrity"]["wrong_stream"].as_u64().unwrap() > 10);
    assert_eq!(report["packets_timed"], 0, "another stream's packets are not counted as this one's");
}

#[test]
fn an_empty_run_reports_null_not_zero() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras(1);
    let run = start_viewers(addr, "rtsp", 2, 2, &["--duration", "1s", "--path-prefix", "/nope"]);
    let (lines, report) = run.finish();
    assert_eq!(report["sessions_established"], 0);
    assert_eq!(report["failures_before_play"]["rtsp_404_describe"], 2);
    for q in ["media_latency_ms", "setup_latency_ms"] {
        assert!(report[q].is_null(), "{q}: {}", report[q]);
    }
    assert_eq!(report["media_latency_samples"], 0);
    assert_eq!(report["setup_latency_samples"], 0);
    assert!(report["throughput"].as_array().unwrap().iter().all(|s| s["p99_ms"].is_null()));
    let text = lines.join("\n");
    assert!(text.contains("media latency ms (from each packet's due time): null (0 samples)"), "{text}");
    assert!(!text.contains("p99 0.00"), "{text}");
}

fn brief(r: &Value) -> String {
    let mut r = r.clone();
    r.as_object_mut().unwrap().retain(|k, _| !k.ends_with("_us") && k != "throughput");
    format!("{r:#}")
}

fn int(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn one_packet_then_silence_fails_with_the_silence_lost_and_stalled() {
    let (_cams, addr) = start_cameras(1);
    let proxy = frame_proxy(addr, |_, i, _| if i == 0 { Act::Pass } else { Act::Drop });
    let report = viewers(proxy, "rtsp", 1, 1, &[]);
    assert_eq!(report["sessions_established"], 1, "{}", brief(&report));
    assert_eq!(report["sessions_survived"], 0, "one packet is not a stream: {}", brief(&report));
    let s = &sessions(&report)[0];
    // 3 s at ~52 packets/s, less the 1 s grace: about 100 due, one came.
    assert!(int(&s["expected"]) > 50 && int(&s["lost"]) == int(&s["expected"]) - 1, "{s:#}");
    assert!(ms(&s["longest_stall_ms"]) > 2000.0, "{s:#}");
    assert_eq!(s["reason"], "loss_above_threshold", "{s:#}");
    assert!(s["period_ns"].as_u64().is_some(), "the camera's SDP states the rate: {s:#}");
}

#[test]
fn a_camera_killed_under_a_shared_route_fails_its_viewers_by_loss_and_stall() {
    let (cams, addr) = start_cameras(2);
    let relay = shared_relay(addr, 2);
    let run = start_viewers(relay.local_addrs()[0], "tunnel", 8, 2, &["--duration", "6s"]);
    run.wait_playing(8);
    cams.signal("KILL");
    let (_, report) = run.finish();
    assert_eq!(report["sessions_established"], 8, "{}", brief(&report));
    // The relay keeps its viewers while it retries the camera: they play to the end, without media.
    assert_eq!(report["sessions_survived"], 0, "{}", brief(&report));
    for s in sessions(&report) {
        assert!(int(&s["lost"]) * 10 > int(&s["expected"]), "the rest of the run lost: {s:#}");
        assert!(ms(&s["longest_stall_ms"]) > 1000.0, "{s:#}");
    }
    relay.shutdown(Duration::from_millis(200));
}

#[test]
fn a_freeze_of_300_ms_is_one_stall_at_a_quarter_and_at_two_megabits() {
    for bitrate in ["250k", "2M"] {
        let (_cams, addr) = start_cameras_at(1, bitrate, &[]);
        let froze = AtomicBool::new(false);
        let proxy = frame_proxy(addr, move |_, _, t| {
            if t >= Duration::from_millis(1000) && !froze.swap(true, Ordering::Relaxed) {
                Act::Freeze(Duration::from_millis(300))
            } else {
                Act::Pass
            }
        });
        let report = viewers(proxy, "rtsp", 1, 1, &[]);
        let s = &sessions(&report)[0];
        assert!(int(&s["stalls"]) >= 1, "{bitrate}: {s:#}");
        assert!(ms(&s["longest_stall_ms"]) >= 250.0, "{bitrate}: {s:#}");
        assert_eq!(s["lost"], 0, "{bitrate}: held back, not lost: {s:#}");
        assert_eq!(report["stall_ms"], 200.0, "the stall threshold is stated");
    }
}

#[test]
fn a_flipped_byte_in_a_p_slice_or_an_idr_slice_is_a_fault() {
    for (nal_type, name) in [(1u8, "P"), (5, "IDR")] {
        let (_cams, addr) = start_cameras(1);
        let hit = AtomicBool::new(false);
        let proxy = frame_proxy(addr, move |frame, _, _| {
            if let Some((_, t, first)) = nal_of(frame)
                && t == nal_type
                && first
                && !hit.swap(true, Ordering::Relaxed)
            {
                // The packet's last byte is slice data.
                let last = frame.len() - 1;
                frame[last] ^= 0x01;
            }
            Act::Pass
        });
        let report = viewers(proxy, "rtsp", 1, 1, &[]);
        let faults: u64 = report["integrity"].as_object().unwrap().values().map(int).sum();
        assert!(faults > 0, "{name} slice: {}", brief(&report));
        assert_eq!(report["integrity"]["bad_slice"], 1, "{name}");
        assert_eq!(report["sessions_survived"], 0, "{name}");
        assert_eq!(report["failures_after_play"]["bad_slice"], 1, "{name}");
        assert!(int(&report["slices_verified"]) > 10, "the other slices were checked: {}", brief(&report));
    }
}

#[test]
fn a_camera_restarted_with_a_new_ssrc_is_one_discontinuity_with_the_gap_lost() {
    let (cams, addr) = start_cameras(2);
    let relay = shared_relay(addr, 2);
    let run = start_viewers(relay.local_addrs()[0], "tunnel", 4, 2, &["--duration", "8s"]);
    run.wait_playing(4);
    drop(cams);
    // The same cameras again, where the relay reconnects to: new streams, new SSRCs.
    let _cams = start_cameras_on(addr, 2, "500k", &[]);
    let (_, report) = run.finish();
    assert_eq!(report["sessions_established"], 4, "{}", brief(&report));
    assert_eq!(report["integrity"]["out_of_order"], 0, "not reordering: {}", brief(&report));
    for s in sessions(&report) {
        assert_eq!(s["discontinuities"], 1, "{s:#}");
        assert!(int(&s["lost"]) > 0, "the gap is lost: {s:#}");
        // No stall asserted: the relay's first reconnect wait is drawn between nothing and a
        // second (full jitter), so a camera back at once may be reopened within milliseconds.
    }
    relay.shutdown(Duration::from_millis(200));
}

#[test]
fn a_warm_shared_route_with_default_flags_shows_no_phantom_loss() {
    let (_cams, addr) = start_cameras(2);
    let relay = shared_relay(addr, 2);
    let target = relay.local_addrs()[0];
    assert_clean(&viewers(target, "tunnel", 4, 2, &[]), 4);
    // The camera sessions linger and their streams go on: the second run joins them under way.
    let report = viewers(target, "tunnel", 4, 2, &[]);
    assert_clean(&report, 4);
    assert_eq!(report["sessions_start_disagree"], 0, "{}", brief(&report));
    // Joiners start with the GOP cache: those bytes are counted apart from the live ones.
    let replayed = int(&report["replayed_bytes"]);
    assert!(replayed > 0 && replayed < int(&report["bytes_received"]), "{}", brief(&report));
    relay.shutdown(Duration::from_millis(200));
}

/// The SSRC a camera process announces for `/cam0`.
fn announced_ssrc(cams: SocketAddr) -> String {
    let mut c = TcpStream::connect(cams).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let setup = format!(
        "SETUP rtsp://{cams}/cam0/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n"
    );
    c.write_all(setup.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the SETUP reply");
        reply.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&reply).into_owned();
    text.split("ssrc=").nth(1).and_then(|r| r.split(['\r', ';']).next()).unwrap_or_else(|| panic!("{text}")).to_owned()
}

#[test]
fn a_restarted_camera_announces_new_ssrcs_unless_told_to_keep_them() {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let mut seen = Vec::new();
    for flags in [&[][..], &[], &["--fixed-ssrc"], &["--fixed-ssrc"]] {
        let cams = start_cameras_on(addr, 1, "500k", flags);
        seen.push(announced_ssrc(addr));
        drop(cams);
    }
    assert_ne!(seen[0], seen[1], "a new process, new SSRCs: {seen:?}");
    assert_eq!(seen[2], seen[3], "--fixed-ssrc: the same in every process: {seen:?}");
}

/// A relay double that answers slowly: each connection waits `delay` before its bytes flow
/// (a relay whose accept queue or setup path is backed up), then passes them unchanged.
fn slow_relay(camera: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for viewer in listener.incoming() {
            let Ok(viewer) = viewer else { return };
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let Ok(cam) = TcpStream::connect(camera) else { return };
                let (v2, c2) = (viewer.try_clone().unwrap(), cam.try_clone().unwrap());
                std::thread::spawn(move || pump(viewer, cam, false));
                pump(c2, v2, false);
            });
        }
    });
    addr
}

/// What `setup-rate.sh` reads: a whole setup (to the first media packet) is timed from the
/// scheduled start, so a relay that answers 400 ms late shows it in every session's `ready_ms`
/// and in the quantiles, while short `--session-time` sessions still all complete.
#[test]
fn a_slow_relay_shows_in_the_whole_setup_latency() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras(2);
    let slow = slow_relay(addr, Duration::from_millis(400));
    let report = start_viewers(slow, "rtsp", 6, 2, &["--session-time", "300ms", "--duration", "1s"]).finish().1;
    assert_eq!(report["sessions_ready"], 6, "{report:#}");
    assert!(report["ready_latency_ms"]["p50"].as_f64().unwrap() >= 400.0, "{}", report["ready_latency_ms"]);
    for s in sessions(&report) {
        assert!(s["ready_ms"].as_f64().unwrap() >= 400.0, "{s:#}");
        // Each session ended its own 300 ms after PLAY, well before the common stop.
        assert!(s["play_s"].as_f64().unwrap() < 0.9, "{s:#}");
    }
    assert!(report["ready_rate_per_s"].as_f64().is_some(), "{report:#}");
}

/// Setups the relay refuses are counted by kind, not lost: with `max_sessions = 3` and eight
/// tunnels started while the first three still play, three are ready and five were refused
/// (`http_503`).
#[test]
fn setups_refused_by_a_full_relay_are_counted_by_kind() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras(2);
    let relay = relay_configured(addr, 2, false, "[limits]\nmax_sessions = 3\n", "");
    let report = viewers(relay.local_addrs()[0], "tunnel", 8, 2, &["--session-time", "3s"]);
    assert_eq!(report["sessions_ready"], 3, "{report:#}");
    assert_eq!(report["failures_before_play"]["http_503"], 5, "{}", report["failures_before_play"]);
    assert_eq!(report["sessions_failed"], 5, "{report:#}");
    relay.shutdown(Duration::from_millis(200));
}

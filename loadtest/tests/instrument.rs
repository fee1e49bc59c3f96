//! Tests of the load generator as an instrument: what it reports when things go wrong. The
//! cameras run as a child process so a test can pause (SIGSTOP) or kill (SIGKILL) them mid-run;
//! a relay double that swaps two cameras' streams stands in for a misrouting relay.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{assert_clean, playing_in, relay, start_cameras, start_viewers, viewers};
use serde_json::Value;

fn sessions(report: &Value) -> &Vec<Value> {
    report["sessions"].as_array().unwrap()
}

#[test]
fn a_paused_camera_shows_a_stall_and_overdue_latency_not_loss() {
    skip_when_quick!();
    let (cams, addr) = start_cameras(4);
    let relay = relay(addr, 4, false);
    let run = start_viewers(relay.local_addrs()[0], "tunnel", 4, 4, &["--duration", "6s"]);
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

//! A small load in the default test run: the load generator against its own cameras, then 200
//! tunnel sessions through an in-process relay. Every session must reach PLAY and play to the
//! end, every packet due must arrive and pass the viewer's checks. (Speed is measured by the
//! full runs in the README, never asserted here.)

mod common;

use std::time::Duration;

use common::{assert_clean, relay, start_cameras, start_viewers_under, viewers};

#[test]
fn viewers_against_the_cameras_directly() {
    skip_when_quick!();
    let (_cams, addr) = start_cameras(20);
    let report = viewers(addr, "rtsp", 20, 20, &[]);
    assert_clean(&report, 20);
}

#[test]
fn two_hundred_tunnel_sessions_through_the_relay() {
    skip_when_quick!();
    let (_cams, cams) = start_cameras(200);
    let relay = relay(cams, 200, false);
    let report = viewers(relay.local_addrs()[0], "tunnel", 200, 200, &[]);
    assert_clean(&report, 200);
    relay.shutdown(Duration::from_millis(200));
}

#[test]
fn https_tunnel_sessions_through_the_relay() {
    skip_when_quick!();
    let (_cams, cams) = start_cameras(50);
    let relay = relay(cams, 50, true);
    let report = viewers(relay.local_addrs()[1], "tunnel", 50, 50, &["--tls"]);
    assert_clean(&report, 50);
    relay.shutdown(Duration::from_millis(200));
}

/// Pinned to one CPU, as `setup-rate.sh` runs it, the generator runs everything on one thread:
/// tunnel sessions through the relay, and short sessions checked to their first packet only (its
/// setup-rate mode), all clean.
#[test]
fn tunnel_sessions_from_a_generator_pinned_to_one_cpu() {
    skip_when_quick!();
    if std::process::Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("skipped: taskset missing");
        return;
    }
    let (_cams, cams) = start_cameras(50);
    let relay = relay(cams, 50, false);
    let target = relay.local_addrs()[0];
    let pinned = ["taskset", "-c", "0"];
    let (_, report) = start_viewers_under(&pinned, target, "tunnel", 100, 50, &["--duration", "3s"]).finish();
    assert_clean(&report, 100);
    let short = ["--duration", "2s", "--session-time", "500ms", "--media-check", "first-packet"];
    let (_, report) = start_viewers_under(&pinned, target, "tunnel", 100, 50, &short).finish();
    assert_eq!(report["sessions_survived"], 100, "{report:#}");
    assert_eq!(report["sessions_ready"], 100, "{report:#}");
    assert_eq!(report["integrity"].as_object().unwrap().values().filter(|v| *v != 0).count(), 0, "{report:#}");
    relay.shutdown(Duration::from_millis(200));
}

//! The relay-wide GOP cache budget (`[limits] gop_cache_total_bytes`) with real peers: the relay
//! binary (2 shards) in front of a gst-rtsp-server camera, two always-on shared routes. Over the
//! budget the caches are evicted and counted, what they hold stays near the budget, and a
//! camera without its cache still serves a joiner (live packets, then the next keyframe).
//!
//! Each test runs its own camera and relay, is bounded in time, and stops every peer it starts.

mod support;

use std::time::Duration;

use support::raw_rtsp::RawViewer;
use support::*;

/// A `[[route]]` for `path` of `camera`, always on.
fn route(path: &str, camera: &GstCamera) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{}\"\nalways_on = true\n", camera.url(path))
}

/// A sample from the relay's `/metrics`, if exported.
fn sample(relay: &RelayProcess, series: &str) -> Option<f64> {
    let text = relay.scrape();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The largest block a cache takes at once, and the room of a first block (see the cache).
const MAX_BLOCK: f64 = 16.0 * 1024.0;
const BUDGET: f64 = 4096.0;

#[test]
fn over_the_budget_caches_are_evicted_counted_and_their_cameras_still_serve() {
    require_peers!();
    let camera = GstCamera::start(None);
    // Room for the first block of one cache, not for a group of pictures.
    let body =
        format!("[limits]\ngop_cache_total_bytes = {BUDGET}\n{}{}", route("/cam1", &camera), route("/cam2", &camera));
    let relay = RelayProcess::start("gop-budget", &body);
    assert!(
        eventually(Duration::from_secs(30), || sample(&relay, "relay_gop_cache_evictions_total")
            .is_some_and(|n| n >= 2.0)),
        "no evictions counted: {:?}",
        sample(&relay, "relay_gop_cache_bytes")
    );
    // A cache may outgrow the budget by a block on each shard before that shard evicts.
    for _ in 0..20 {
        let held = sample(&relay, "relay_gop_cache_bytes").expect("relay_gop_cache_bytes exported");
        assert!(held <= BUDGET + 2.0 * MAX_BLOCK, "the caches hold {held} bytes against a {BUDGET}-byte budget");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The camera serves a joiner as with no cache: live packets, a keyframe among them soon.
    let mut joiner = RawViewer::connect(relay.tunnel, "/cam1");
    joiner.play((0, 1));
    let mut keyframe = false;
    for n in 0..2000 {
        match joiner.next_rtp(0, Duration::from_secs(10)) {
            Some(p) => keyframe |= p.starts_h264_keyframe(),
            None => panic!("the joiner got {n} packets then nothing"),
        }
        if keyframe {
            break;
        }
    }
    assert!(keyframe, "no keyframe reached the joiner");
    assert_eq!(camera.sessions_of("/cam1"), 1);
}

#[test]
fn within_the_budget_the_bytes_held_are_exported_and_given_back() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start("gop-budget-room", &route("/cam1", &camera));
    assert!(
        eventually(Duration::from_secs(30), || sample(&relay, "relay_gop_cache_bytes").is_some_and(|b| b > 0.0)),
        "relay_gop_cache_bytes never moved"
    );
    assert_eq!(sample(&relay, "relay_gop_cache_evictions_total"), Some(0.0));
    // The route turns on-demand without viewers: its camera closes and its cache gives its
    // memory back.
    relay.reload_replacing("always_on = true", "always_on = false");
    assert!(
        eventually(Duration::from_secs(20), || sample(&relay, "relay_gop_cache_bytes") == Some(0.0)),
        "the cache of a removed route still counts: {:?}",
        sample(&relay, "relay_gop_cache_bytes")
    );
}

//! A hot camera on every core (`[runtime] hot_route_viewers`): with the relay's 2 shards, a
//! shared route past the threshold keeps new viewers on the shard that accepted them, served
//! by that shard's replica of the route, fed from the camera's shard. Every viewer, on either
//! shard, gets the camera's stream whole (first packet a keyframe, no sequence gap), the camera
//! sees one session, `/v1/cameras` counts every viewer once, and a viewer leaving on either
//! shard disturbs nobody. With the key at 0, every viewer is moved to the camera's shard.
//!
//! Each test runs its own camera and relay, is bounded in time, and stops every peer it starts.

mod support;

use std::time::Duration;

use support::raw_rtsp::{Observe, RawViewer, RtpPacket, SeqTracker};
use support::*;

const READER: &str = "ro-hot-5a1c";
const VIDEO: u8 = 0;

/// What a watching viewer has seen so far on `VIDEO`'s channel.
#[derive(Debug, Default, Clone)]
struct Seen {
    seq: SeqTracker,
    /// The first packet's timestamp and the NAL unit types of its access unit (the packets
    /// with that timestamp), in order.
    first_ts: Option<u32>,
    first_unit: Vec<u8>,
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
        if *self.first_ts.get_or_insert(p.timestamp) == p.timestamp {
            self.first_unit.extend(p.h264_nal_types());
        }
        self.seq.add(p);
    }
}

impl Seen {
    /// The first packet opens an access unit (a delimiter, SEI or parameter sets may come
    /// before the IDR slice) and that unit holds an IDR slice.
    fn starts_at_a_keyframe(&self) -> bool {
        self.first_unit.first().is_some_and(|t| matches!(t, 5..=9)) && self.first_unit.contains(&5)
    }
}

type Watch = support::raw_rtsp::Watch<Seen>;

/// A raw viewer of `path` playing its video on channels (VIDEO, VIDEO + 1), watched on its own thread.
fn watch(relay: &RelayProcess, path: &str) -> Watch {
    let mut v = RawViewer::connect(relay.tunnel, path);
    v.play((VIDEO, VIDEO + 1));
    Watch::start(v, (VIDEO, VIDEO + 1).0)
}

fn start(name: &str, camera: &GstCamera, hot_route_viewers: usize, api: u16) -> RelayProcess {
    let token = rtsp_tunnel_relay::proto::api_token::sha256_hex(READER.as_bytes());
    let body = format!(
        "hot_route_viewers = {hot_route_viewers}\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\n\
         [[api.token]]\nname = \"wall\"\nsha256 = \"{token}\"\nscope = \"read\"\n[metrics]\nper_route = true\n\
         [[route]]\npath = \"/hot\"\nupstream = \"{}\"\n",
        camera.url("/cam1")
    );
    RelayProcess::start(name, &body)
}

fn json(api: u16, path: &str) -> serde_json::Value {
    let (code, body) = api_curl(api, "GET", path, Some(READER), None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Each session's shard, by its viewer's address (session ids are `shard-id`).
fn shards_by_viewer(api: u16) -> Vec<(String, u16)> {
    let s = json(api, "/v1/sessions");
    s["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let id = s["id"].as_str().unwrap();
            (s["viewer"].as_str().unwrap().to_owned(), id.split('-').next().unwrap().parse().unwrap())
        })
        .collect()
}

fn shard_of(api: u16, w: &Watch) -> Option<u16> {
    shards_by_viewer(api).into_iter().find(|(v, _)| *v == w.local.to_string()).map(|(_, s)| s)
}

fn hot_viewers(api: u16) -> Option<u64> {
    let c = json(api, "/v1/cameras");
    c["cameras"].as_array()?.iter().find(|c| c["route"] == "/hot")?["viewers"].as_u64()
}

fn sample(relay: &RelayProcess, series: &str) -> Option<f64> {
    relay.scrape().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn have_curl() -> bool {
    let ok = std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: curl missing");
    }
    ok
}

/// At least `n` viewers of `/hot`, until both shards hold two or more (the first two go to the
/// camera's shard, the later ones stay where the kernel's port hash put them); their shards.
fn spread(relay: &RelayProcess, api: u16, n: usize) -> (Vec<Watch>, Vec<u16>) {
    let mut watches: Vec<Watch> = Vec::new();
    let mut shards: Vec<u16> = Vec::new();
    while watches.len() < n || [0, 1].iter().any(|s| shards.iter().filter(|x| *x == s).count() < 2) {
        assert!(watches.len() < 40, "the viewers all landed on one shard: {shards:?}");
        let w = watch(relay, "/hot");
        let shard = shard_of(api, &w).expect("the viewer's session is listed");
        shards.push(shard);
        watches.push(w);
    }
    (watches, shards)
}

fn assert_whole(w: &Watch, who: &str) {
    let seen = w.seen();
    assert!(!seen.closed, "{who} was closed");
    assert!(seen.starts_at_a_keyframe(), "{who} did not start at a keyframe: {:?}", seen.first_unit);
    assert_eq!((seen.seq.missing, seen.seq.backwards), (0, 0), "{who} lost packets: {:?}", seen.seq);
    assert_eq!(seen.seq.ssrcs.len(), 1, "{who}: {:?}", seen.seq);
}

#[test]
fn a_hot_camera_is_served_from_both_shards_with_one_camera_session() {
    require_peers!();
    if !have_curl() {
        return;
    }
    let camera = GstCamera::start(None);
    let api = free_port();
    let relay = start("hot-camera", &camera, 2, api);
    let (mut watches, shards) = spread(&relay, api, 10);
    let home = shards[0];
    assert_eq!(shards[1], home, "the second viewer of a quiet route moves to the camera's shard");
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(20), || w.packets() >= 100), "viewer {i} got {}", w.packets());
    }
    // One replica, on the shard that is not the camera's; the camera has one session.
    assert_eq!(sample(&relay, "relay_replicas_active"), Some(1.0), "{}", relay.scrape());
    assert_eq!(camera.sessions_of("/cam1"), 1, "{:?}", camera.events());
    let n = watches.len() as u64;
    assert_eq!(hot_viewers(api), Some(n), "{}", json(api, "/v1/cameras"));
    assert_eq!(sample(&relay, "relay_viewers_active"), Some(n as f64));
    let per_route = "relay_route_viewers{route=\"/hot\"}";
    assert!(eventually(Duration::from_secs(5), || sample(&relay, per_route) == Some(n as f64)), "{}", relay.scrape());

    // One viewer leaves on each shard; the others lose nothing.
    let leave_on = |s: u16| shards.iter().rposition(|x| *x == s).unwrap();
    let (a, b) = (leave_on(home), leave_on(1 - home));
    let (first, second) = (a.max(b), a.min(b));
    for i in [first, second] {
        let mut v = watches.remove(i).finish();
        assert_eq!(v.teardown().status, 200);
    }
    let before: Vec<u64> = watches.iter().map(Watch::packets).collect();
    for (i, w) in watches.iter().enumerate() {
        let after = before[i] + 100;
        assert!(eventually(Duration::from_secs(20), || w.packets() >= after), "viewer {i} stopped getting media");
        assert_whole(w, &format!("viewer {i} (shard {})", shard_of(api, w).unwrap_or(9)));
    }
    assert!(eventually(Duration::from_secs(10), || hot_viewers(api) == Some(n - 2)), "{}", json(api, "/v1/cameras"));
    let left = (n - 2) as f64;
    assert!(eventually(Duration::from_secs(5), || sample(&relay, per_route) == Some(left)), "{}", relay.scrape());
    assert_eq!(camera.sessions_of("/cam1"), 1, "{:?}", camera.events());
    assert_eq!(camera.teardowns(), 0, "the camera heard of a viewer leaving: {:?}", camera.events());
    assert_eq!(sample(&relay, "relay_replica_links_cut_total"), Some(0.0));
    assert_eq!(sample(&relay, "relay_replica_reconnects_total"), Some(0.0));
    drop(watches);
}

#[test]
fn with_hot_route_viewers_at_0_every_viewer_moves_to_the_cameras_shard() {
    require_peers!();
    if !have_curl() {
        return;
    }
    let camera = GstCamera::start(None);
    let api = free_port();
    let relay = start("hot-camera-off", &camera, 0, api);
    let watches: Vec<Watch> = (0..8).map(|_| watch(&relay, "/hot")).collect();
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(20), || w.packets() >= 100), "viewer {i} got {}", w.packets());
        assert_whole(w, &format!("viewer {i}"));
    }
    let shards: Vec<u16> = watches.iter().map(|w| shard_of(api, w).expect("listed")).collect();
    assert!(shards.iter().all(|s| *s == shards[0]), "viewers on both shards: {shards:?}");
    assert_eq!(sample(&relay, "relay_replicas_active"), Some(0.0), "{}", relay.scrape());
    assert_eq!(hot_viewers(api), Some(8));
    assert_eq!(camera.sessions_of("/cam1"), 1);
}

/// A reload moving the hot route to another mount with the same description: every viewer on
/// both shards carries on, RTP continuous. To a camera with another description: every viewer
/// on both shards is ended as `camera_changed`. The route removed: the replica goes.
#[test]
fn a_hot_routes_camera_changed_by_reload_reaches_the_viewers_of_both_shards() {
    require_peers!();
    if !have_curl() {
        return;
    }
    let camera = GstCamera::start(None);
    let mut other = GstCamera::start(None);
    other.restart_with(&["--pt", "97"]);
    let api = free_port();
    let relay = start("hot-camera-reload", &camera, 2, api);
    let (watches, _) = spread(&relay, api, 6);
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(20), || w.packets() >= 50), "viewer {i} got {}", w.packets());
    }
    assert_eq!(sample(&relay, "relay_replicas_active"), Some(1.0), "{}", relay.scrape());

    relay.reload_replacing(&camera.url("/cam1"), &camera.url("/cam2"));
    assert!(eventually(Duration::from_secs(20), || camera.sessions_of("/cam2") == 1), "{:?}", camera.events());
    let before: Vec<u64> = watches.iter().map(Watch::packets).collect();
    for (i, w) in watches.iter().enumerate() {
        let after = before[i] + 50;
        assert!(
            eventually(Duration::from_secs(20), || w.packets() >= after),
            "viewer {i} got no media after the move: {:?}\n{}",
            w.seen(),
            relay.log_text()
        );
        assert_whole(w, &format!("viewer {i} after the move"));
    }
    assert_eq!(camera.sessions_of("/cam1") + camera.sessions_of("/cam2"), 2, "{:?}", camera.events());

    let changed = "relay_sessions_total{outcome=\"camera_changed\"}";
    relay.reload_replacing(&camera.url("/cam2"), &other.url("/cam1"));
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(20), || w.seen().closed), "viewer {i} stayed: {}", relay.log_text());
    }
    let n = watches.len() as f64;
    assert!(eventually(Duration::from_secs(10), || sample(&relay, changed) == Some(n)), "{}", relay.scrape());
    // The route removed: no replica is left.
    relay.reload_replacing("[[route]]\npath = \"/hot\"", "[[route]]\npath = \"/gone\"");
    assert!(
        eventually(Duration::from_secs(20), || sample(&relay, "relay_replicas_active") == Some(0.0)),
        "{}",
        relay.scrape()
    );
}

/// SIGTERM with a hot route served from both shards: the relay drains and exits cleanly, the
/// camera hears one TEARDOWN (the replica's goes to the home route, not to the camera).
#[test]
fn a_drain_with_replicas_ends_cleanly() {
    require_peers!();
    if !have_curl() {
        return;
    }
    let camera = GstCamera::start(None);
    let api = free_port();
    let mut relay = start("hot-camera-drain", &camera, 2, api);
    let (watches, _) = spread(&relay, api, 6);
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(20), || w.packets() >= 50), "viewer {i} got {}", w.packets());
    }
    assert_eq!(sample(&relay, "relay_replicas_active"), Some(1.0), "{}", relay.scrape());
    relay.signal("TERM");
    let exited = eventually(Duration::from_secs(20), || relay.child.try_wait().unwrap().is_some());
    assert!(exited, "the relay did not exit: {}", relay.log_text());
    let status = relay.child.try_wait().unwrap().unwrap();
    assert!(status.success(), "{status:?}: {}", relay.log_text());
    let log = relay.log_text();
    assert!(!log.contains("panicked"), "{log}");
    for (i, w) in watches.iter().enumerate() {
        assert!(eventually(Duration::from_secs(5), || w.seen().closed), "viewer {i} was left open");
    }
    assert!(eventually(Duration::from_secs(5), || camera.teardowns() == 1), "{:?}", camera.events());
    assert_eq!(camera.sessions_of("/cam1"), 1, "{:?}", camera.events());
}

//! The shared route's call order, its own timers and retire rule, the health it reports, and
//! the harness (the `shared_route` fuzz target's) under proptest.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::harness::{self, CAMERA_URL, FALLBACK_URL, LIMITS, ROUTE_URL, answer, frame, rtp};
use super::*;
use crate::proto::camera_demand::Mode;
use crate::proto::camera_health::HealthEvent;
use crate::proto::camera_session::CameraParams;
use crate::proto::outcome::Rejection;
use crate::proto::rewrite::UrlMap;
use crate::proto::rtsp::Message;
use crate::proto::rtsp::{MessageLimits, parse_message};
use crate::proto::shared_fanout::Body;
use crate::proto::shared_viewer::ViewerParams;

const SECOND: Duration = Duration::from_secs(1);

fn params(mode: Mode) -> RouteParams {
    let mut camera = CameraParams::new(CAMERA_URL, "10.0.0.5:554".parse().unwrap());
    camera.mode = mode;
    camera.seed = 3;
    let viewer = ViewerParams {
        session_seed: 7,
        session_timeout: Duration::from_secs(8),
        camera_wait: Duration::from_secs(3),
        max_pending: 4,
    };
    RouteParams { camera, viewer, fanout: LIMITS, unresolved: None, fallback_unresolved: None }
}

fn on_demand() -> Mode {
    Mode::OnDemand { linger: 2 * SECOND }
}

fn map() -> Option<UrlMap> {
    UrlMap::new(ROUTE_URL, CAMERA_URL).ok()
}

fn request(text: &str) -> Message {
    parse_message(text.as_bytes(), &MessageLimits::default()).unwrap().unwrap().0
}

/// Plays the camera: a connect succeeds at once and every request but `hold` is answered 200.
/// Returns the actions meant for someone else (viewers, the camera connection's close) and
/// the camera requests held.
struct Camera {
    hold: Option<&'static str>,
    held: Vec<Message>,
    connects: usize,
}

impl Camera {
    fn new() -> Camera {
        Camera { hold: None, held: Vec::new(), connects: 0 }
    }

    fn serve(&mut self, r: &mut SharedRoute<u8>, now: Instant) -> Vec<Action<u8>> {
        let mut rest = Vec::new();
        while let Some(a) = r.poll_action() {
            match a {
                Action::Connect { .. } => {
                    self.connects += 1;
                    r.handle_connected(now);
                }
                Action::SendToCamera(bytes) => {
                    let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
                    if m.method() == Some("TEARDOWN") {
                        continue;
                    }
                    if m.method() == self.hold {
                        self.held.push(m);
                        continue;
                    }
                    receive(r, now, &mut answer(&m));
                }
                a => rest.push(a),
            }
        }
        rest
    }
}

/// One receive, its frames planned for viewers that read everything; the deliveries.
fn receive(r: &mut SharedRoute<u8>, now: Instant, chunk: &mut [u8]) -> Vec<Delivery<u8>> {
    r.handle_camera_bytes(now, chunk);
    let mut all = Vec::new();
    let mut plan = Vec::new();
    while r.plan_next(chunk, |_| Some(QueueState::default()), &mut plan).is_some() {
        all.append(&mut plan);
    }
    all
}

fn events(r: &mut SharedRoute<u8>) -> Vec<RouteEvent<u8>> {
    std::iter::from_fn(|| r.poll_event()).collect()
}

/// The health reports among `ev`: state and viewers.
fn health(ev: &[RouteEvent<u8>]) -> Vec<(CameraState, u64)> {
    ev.iter()
        .filter_map(|e| match e {
            RouteEvent::Health(r) if r.changed => Some((r.state, r.viewers)),
            _ => None,
        })
        .collect()
}

/// The health lines to log among `ev`.
fn health_logs(ev: &[RouteEvent<u8>]) -> Vec<HealthEvent> {
    ev.iter()
        .filter_map(|e| match e {
            RouteEvent::Health(r) => Some(r.logs.iter().flatten().cloned().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn answers(actions: &[Action<u8>]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToViewer { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_on_demand_camera_opens_for_its_first_viewer_and_retires_after_the_last() {
    let t0 = Instant::now();
    let mut r = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    assert!(cam.serve(&mut r, t0).is_empty() && cam.connects == 0, "no viewer, no camera");
    assert_eq!(health(&events(&mut r)), vec![(CameraState::Idle, 0)]);

    assert!(r.attach(1, map(), t0, t0));
    assert!(!r.attach(1, map(), t0, t0), "attached once");
    cam.serve(&mut r, t0);
    assert_eq!(cam.connects, 1);
    let ev = events(&mut r);
    assert!(ev.contains(&RouteEvent::CameraOpened) && ev.contains(&RouteEvent::CameraUp), "{ev:?}");
    assert_eq!(health(&ev).last(), Some(&(CameraState::Ready, 1)));

    // The last viewer leaves: the camera lingers, then says TEARDOWN and is forgotten.
    let t1 = t0 + SECOND;
    assert!(r.detach(1, t1));
    assert!(cam.serve(&mut r, t1).is_empty());
    let linger = r.poll_timeout().unwrap();
    assert_eq!(linger, t1 + 2 * SECOND);
    r.handle_timeout(linger);
    assert_eq!(cam.serve(&mut r, linger), vec![Action::CloseCamera]);
    let ev = events(&mut r);
    assert!(ev.contains(&RouteEvent::CameraDown) && ev.contains(&RouteEvent::CameraRetired), "{ev:?}");
    assert!(r.camera().is_none() && r.poll_timeout().is_none() && !r.is_done());
    assert_eq!(r.health().seen(), Some((0, CameraState::Idle)));
    assert!(health(&ev).contains(&(CameraState::Idle, 0)));

    // A new viewer: a new camera session.
    r.attach(2, map(), linger, linger);
    cam.serve(&mut r, linger);
    assert_eq!(cam.connects, 2);
    assert!(events(&mut r).contains(&RouteEvent::CameraOpened));
}

#[test]
fn an_always_on_camera_connects_without_viewers_and_is_kept() {
    let t0 = Instant::now();
    let mut r = SharedRoute::<u8>::new(params(Mode::AlwaysOn), t0);
    let mut cam = Camera::new();
    cam.serve(&mut r, t0);
    assert_eq!(cam.connects, 1);
    r.attach(1, map(), t0, t0);
    r.detach(1, t0);
    // Past any linger: still playing, still there.
    let later = t0 + 5 * SECOND;
    r.handle_timeout(later);
    assert!(cam.serve(&mut r, later).is_empty());
    assert!(r.camera().is_some_and(|c| c.phase() == CameraPhase::Playing));
}

/// A camera whose name did not resolve fails each connect with those words, retried with the
/// backoff, warned about once.
#[test]
fn an_unresolved_camera_fails_its_connects_with_its_words_and_warns_once() {
    let t0 = Instant::now();
    let mut p = params(on_demand());
    p.unresolved = Some("cannot resolve camera.invalid".into());
    let mut r = SharedRoute::new(p, t0);
    r.attach(1, map(), t0, t0);
    let mut cam = Camera::new();
    cam.serve(&mut r, t0);
    assert_eq!(cam.connects, 0, "no connection to an unresolved camera");
    let ev = events(&mut r);
    assert_eq!(
        health_logs(&ev),
        vec![HealthEvent::Failing { reason: "connect_failed: cannot resolve camera.invalid".into(), first: true }]
    );
    assert!(health(&ev).contains(&(CameraState::Retrying, 1)), "{ev:?}");
    assert_eq!(r.health().camera().last_error(), Some("connect_failed: cannot resolve camera.invalid"));
    // Retries after 1, 2 and 4 s (the viewer's own deadline, 10 s, comes later).
    for _ in 0..3 {
        let at = r.poll_timeout().unwrap();
        r.handle_timeout(at);
        cam.serve(&mut r, at);
        let ev = events(&mut r);
        assert!(ev.contains(&RouteEvent::Reconnecting), "{ev:?}");
        assert!(health_logs(&ev).is_empty(), "warned per retry: {ev:?}");
    }
}

/// Issue 21: a viewer's request goes to the route, and its answer comes from it (no U-turn
/// through the viewer's tunnel), measured as for a camera's answers.
#[test]
fn a_viewers_requests_are_answered_by_the_route() {
    let t0 = Instant::now();
    let mut r = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    r.attach(1, map(), t0, t0);
    cam.serve(&mut r, t0);
    events(&mut r);
    r.handle_request(1, request(&format!("OPTIONS {ROUTE_URL} RTSP/1.0\r\nCSeq: 1\r\n\r\n")), t0);
    let out = cam.serve(&mut r, t0);
    let a = answers(&out);
    assert!(a.len() == 1 && a[0].starts_with("RTSP/1.0 200 OK\r\n") && a[0].contains("CSeq: 1\r\n"), "{a:?}");
    let ev = events(&mut r);
    assert!(
        matches!(&ev[..], [RouteEvent::ViewerExchange { viewer: 1, exchange }] if exchange.status == 200),
        "{ev:?}"
    );
    // Outside the route: refused, counted, answered; the session goes on.
    r.handle_request(1, request("DESCRIBE rtsp://127.0.0.1:8080/other RTSP/1.0\r\nCSeq: 2\r\n\r\n"), t0);
    let a = answers(&cam.serve(&mut r, t0));
    assert!(a[0].starts_with("RTSP/1.0 404 "), "{a:?}");
    assert!(events(&mut r).contains(&RouteEvent::ViewerRefused { viewer: 1, reason: Rejection::OutsideRoute }));
}

/// Moved from the tunnel (the viewer's dialogue is the route's now): a viewer of a shared
/// route lives by its requests and RTCP reports, within 1.25 × its session timeout.
#[test]
fn a_silent_viewer_is_ended_by_the_route() {
    let t0 = Instant::now();
    let mut p = params(Mode::AlwaysOn);
    p.camera.media_timeout = 100 * SECOND;
    let mut r = SharedRoute::new(p, t0);
    let mut cam = Camera::new();
    cam.serve(&mut r, t0);
    let options = format!("OPTIONS {ROUTE_URL} RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    for v in [1, 2] {
        r.attach(v, map(), t0, t0);
        r.handle_request(v, request(&options), t0);
    }
    cam.serve(&mut r, t0);
    // Session timeout 8 s: silent for 1.25 x that, it is closed; an RTCP report at 9 s counts.
    assert!(r.poll_timeout().is_some_and(|t| t <= t0 + 10 * SECOND));
    r.handle_viewer_frame(1, t0 + 9 * SECOND);
    let mut ended = Vec::new();
    for s in [10, 18, 19] {
        r.handle_timeout(t0 + s * SECOND);
        for a in cam.serve(&mut r, t0 + s * SECOND) {
            if let Action::EndViewer { viewer, reason } = a {
                assert_eq!(reason, ViewerEnd::Timeout);
                ended.push((s, viewer));
            }
        }
    }
    assert_eq!(ended, vec![(10, 2), (19, 1)]);
    // Ended, it waits for its shell to detach it; nothing more for it meanwhile.
    assert_eq!(r.viewer_count(), 2);
    assert!(r.detach(1, t0 + 19 * SECOND));
}

/// The ordering the type's doc promises: a PLAY waiting for the camera is answered after the
/// receive that brought the camera's PLAY answer and first frames was planned, so the viewer
/// gets the keyframe exactly once (replayed from the GOP cache), never live and replayed.
#[test]
fn a_waiting_play_joins_after_the_receive_that_started_the_camera() {
    let t0 = Instant::now();
    let mut r = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    cam.hold = Some("PLAY");
    r.attach(1, map(), t0, t0);
    cam.serve(&mut r, t0);
    let setup = format!(
        "SETUP {ROUTE_URL}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    );
    r.handle_request(1, request(&setup), t0);
    let a = answers(&cam.serve(&mut r, t0));
    assert!(a[0].starts_with("RTSP/1.0 200 OK"), "{a:?}");
    let session = a[0].lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap();
    r.handle_request(1, request(&format!("PLAY {ROUTE_URL} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n")), t0);
    assert!(cam.serve(&mut r, t0).is_empty(), "PLAY waits for the camera");

    let play = cam.held.pop().unwrap();
    let mut chunk = answer(&play);
    chunk.extend(frame(0, 15, &rtp(1, 3000, 96, &[0x65, 0x88, 0x80])));
    let live = receive(&mut r, t0, &mut chunk);
    assert!(live.is_empty(), "not playing yet while the receive is planned: {live:?}");
    let out = cam.serve(&mut r, t0);
    assert!(answers(&out)[0].starts_with("RTSP/1.0 200 OK"), "{out:?}");
    let replayed: Vec<_> = out
        .iter()
        .filter(|a| matches!(a, Action::Deliver(Delivery::Deliver { body: Some(Body::Shared(_)), .. })))
        .collect();
    assert_eq!(replayed.len(), 1, "the keyframe once, from the cache: {out:?}");
    assert!(r.is_playing(1));
    // The next frame is live.
    let mut next = frame(0, 14, &rtp(2, 6000, 96, &[0x41, 0x9a]));
    assert_eq!(receive(&mut r, t0, &mut next).len(), 1);
}

/// Issue 25: the relay-wide GOP cache budget evicts the caches idle longest first, so a join
/// from the cache is the route's to record; and the shell evicts through the route.
#[test]
fn a_join_from_the_gop_cache_marks_it_used_and_the_route_evicts_it() {
    let t0 = Instant::now();
    let t1 = t0 + SECOND;
    let mut r = SharedRoute::new(params(Mode::AlwaysOn), t0);
    let mut cam = Camera::new();
    cam.serve(&mut r, t0);
    let mut key = frame(0, 15, &rtp(1, 3000, 96, &[0x65, 0x88, 0x80]));
    receive(&mut r, t0, &mut key);
    let c = r.gop_eviction_candidate('r').expect("the route's camera has a GOP cache");
    assert!(c.held > 0 && c.used_at.is_none(), "{c:?}");

    r.attach(1, map(), t1, t1);
    let setup = format!(
        "SETUP {ROUTE_URL}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    );
    r.handle_request(1, request(&setup), t1);
    let a = answers(&cam.serve(&mut r, t1));
    let session = a[0].lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap();
    r.handle_request(1, request(&format!("PLAY {ROUTE_URL} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n")), t1);
    let out = cam.serve(&mut r, t1);
    assert!(out.iter().any(|a| matches!(a, Action::Deliver(Delivery::Deliver { body: Some(Body::Shared(_)), .. }))));
    assert_eq!(r.gop_eviction_candidate('r').map(|c| c.used_at), Some(Some(t1)), "joined from the cache at t1");

    r.evict_gop_cache();
    let c = r.gop_eviction_candidate('r').unwrap();
    assert_eq!((c.key, c.held), ('r', 0));
    // The viewer goes on with live frames.
    let mut next = frame(0, 14, &rtp(2, 6000, 96, &[0x41, 0x9a]));
    assert_eq!(receive(&mut r, t1, &mut next).len(), 1);
}

#[test]
fn closing_ends_every_viewer_and_is_done_once_they_are_detached() {
    let t0 = Instant::now();
    let mut r = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    r.attach(1, map(), t0, t0);
    r.attach(2, map(), t0, t0);
    cam.serve(&mut r, t0);
    events(&mut r);
    r.close(t0);
    let out = cam.serve(&mut r, t0);
    assert_eq!(
        out,
        vec![
            Action::EndViewer { viewer: 1, reason: ViewerEnd::RouteRemoved },
            Action::EndViewer { viewer: 2, reason: ViewerEnd::RouteRemoved },
            Action::CloseCamera,
        ]
    );
    assert!(!r.is_done(), "viewers still attached");
    r.detach(1, t0);
    r.detach(2, t0);
    assert!(r.is_done());
    // Its last state once its camera is gone, and no other.
    let ev = events(&mut r);
    assert_eq!(health(&ev), vec![(CameraState::Idle, 0)], "{ev:?}");
}

#[test]
fn the_harness_plays_its_seed() {
    // Viewer 0 sets up track 0 on channels 0-1 and plays; then a keyframe and two audio
    // packets arrive.
    let script = [3u8, 0, 1, 0, 0, 1, 3, 0, 3, 10, 2];
    assert!(harness::run(&script) > 0);
}

/// Every other camera receive of the harness is handed over owned, as a replica's from its
/// home shard: the seed's second receive reaches the viewer from shared bytes alone (a plan
/// naming a range of a buffer the replica does not have fails the harness's check).
#[test]
fn the_harness_reads_a_replicas_owned_receive() {
    let script = [3u8, 0, 1, 0, 0, 1, 3, 0, 3, 10, 2, 10, 2];
    assert_eq!(harness::run(&script), 2);
}

/// A second viewer joins after the keyframe: its replay (the keyframe and two audio packets,
/// on the camera's channels) must be the cache's own memory, which the harness checks.
#[test]
fn the_harness_checks_a_joiners_replay() {
    let script = [3u8, 0, 1, 0, 0, 1, 3, 0, 3, 10, 2, 3, 1, 1, 0, 0, 1, 3, 1, 3];
    assert!(harness::run(&script) > 0);
}

/// The harness through both switches: the seed's viewer plays, the camera closes (the route
/// switches to its fallback, whose keyframe plays, while the probe of the primary starts and
/// plays), then the probe's keyframe brings the route back, its frame reaching the viewer.
#[test]
fn the_harness_switches_to_the_fallback_and_back() {
    let script = [3u8, 0, 1, 0, 0, 1, 3, 0, 3, 10, 2, 8, 0, 7, 0, 10, 1, 11, 0, 255];
    let (delivered, switched_back) = harness::run_counting(&script);
    assert!(delivered >= 3 && switched_back == 1, "{delivered} {switched_back}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
    /// The fuzz target's harness under proptest: any script of camera bytes, frames and
    /// viewer behaviour keeps every property (see `harness`).
    #[test]
    fn hostile_camera_and_viewers(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        harness::run(&data);
    }
}

/// A viewer cut by a receive's plan ends at once, as the shell does it (detached, the route's
/// actions and events polled), and the rest of the receive still goes to the others.
#[test]
fn a_viewer_cut_mid_receive_does_not_cut_the_receive_short_for_the_others() {
    let t0 = Instant::now();
    let mut r = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    for v in [1, 2] {
        r.attach(v, map(), t0, t0);
        cam.serve(&mut r, t0);
        let setup = format!(
            "SETUP {ROUTE_URL}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
        );
        r.handle_request(v, request(&setup), t0);
        let a = answers(&cam.serve(&mut r, t0));
        let session = a[0].lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap();
        let play = format!("PLAY {ROUTE_URL} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n");
        r.handle_request(v, request(&play), t0);
        cam.serve(&mut r, t0);
    }
    assert!(r.is_playing(1) && r.is_playing(2));
    let mut chunk = Vec::new();
    for seq in 1..=3u16 {
        chunk.extend(frame(0, 15, &rtp(seq, 3000 * u32::from(seq), 96, &[0x65, 0x88, 0x80])));
    }
    r.handle_camera_bytes(t0, &mut chunk);
    // Viewer 1 holds far more than its bound: cut at the first frame.
    let full = QueueState { bytes: 1 << 20, entries: 0 };
    let mut plan = Vec::new();
    let mut to_2 = 0;
    while r.plan_next(&chunk, |v| Some(if *v == 1 { full } else { QueueState::default() }), &mut plan).is_some() {
        for d in std::mem::take(&mut plan) {
            match d {
                Delivery::Deliver { viewer: 2, .. } => to_2 += 1,
                Delivery::Disconnect { viewer: 1, .. } => {
                    assert!(r.detach(1, t0));
                    cam.serve(&mut r, t0);
                    events(&mut r);
                }
                Delivery::FirstPicture { viewer: 2, .. } => {}
                d => panic!("{d:?}"),
            }
        }
    }
    assert_eq!(to_2, 3, "every frame of the receive reached the viewer that kept up");
}

/// Plays both cameras of a route with a fallback and the probe's connection: connects succeed
/// at once, every request is answered 200, the primary refuses while `primary_down`. Frames
/// each receive delivered to viewers are collected.
struct TwoCameras {
    primary_down: bool,
    /// Which camera the route's connection reaches, while it has one.
    camera: Option<Source>,
    probe_open: bool,
    delivered: Vec<Delivery<u8>>,
    log: Vec<Action<u8>>,
}

impl TwoCameras {
    fn serve(&mut self, r: &mut SharedRoute<u8>, now: Instant) {
        while let Some(a) = r.poll_action() {
            match a {
                Action::Connect { source, .. } => {
                    assert!(self.camera.is_none(), "two camera connections");
                    if source == Source::Primary && self.primary_down {
                        r.handle_connect_failed(Some("refused".into()), now);
                    } else {
                        self.camera = Some(source);
                        r.handle_connected(now);
                    }
                }
                Action::SendToCamera(bytes) => {
                    assert!(self.camera.is_some(), "bytes to no camera");
                    let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
                    if m.method() != Some("TEARDOWN") {
                        self.delivered.extend(receive(r, now, &mut answer(&m)));
                    }
                }
                Action::CloseCamera => {
                    assert!(self.camera.take().is_some(), "closed twice");
                    self.log.push(a);
                }
                Action::ConnectProbe(addr) => {
                    assert_eq!(addr, "10.0.0.5:554".parse().unwrap(), "the probe is of the primary");
                    assert!(!self.probe_open, "two probes");
                    if self.primary_down {
                        r.handle_probe_connect_failed(now);
                    } else {
                        self.probe_open = true;
                        r.handle_probe_connected(now);
                    }
                }
                Action::SendToProbe(bytes) => {
                    assert!(self.probe_open);
                    let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
                    if m.method() != Some("TEARDOWN") {
                        let d = probe_receive(r, now, &mut answer(&m));
                        assert!(d.is_empty(), "the probe's answers are nobody's");
                    }
                }
                Action::CloseProbe => {
                    assert!(std::mem::take(&mut self.probe_open), "no probe to close");
                    self.log.push(a);
                }
                Action::ProbeIsCamera => {
                    assert!(self.camera.is_none(), "the fallback's connection was let go first");
                    assert!(std::mem::take(&mut self.probe_open));
                    self.camera = Some(Source::Primary);
                    self.log.push(a);
                }
                a => self.log.push(a),
            }
        }
    }
}

/// A receive of the probe, planned as the shell does; the deliveries.
fn probe_receive(r: &mut SharedRoute<u8>, now: Instant, chunk: &mut [u8]) -> Vec<Delivery<u8>> {
    r.handle_probe_bytes(now, chunk);
    let mut all = Vec::new();
    let mut plan = Vec::new();
    while r.plan_next(chunk, |_| Some(QueueState::default()), &mut plan).is_some() {
        all.append(&mut plan);
    }
    all
}

/// The RTP sequence number and timestamp of each frame delivered on channel 0 (`chunk`: the
/// receive the deliveries name).
fn rtp_of(deliveries: &[Delivery<u8>], chunk: &[u8]) -> Vec<(u16, u32)> {
    deliveries
        .iter()
        .filter_map(|d| {
            let Delivery::Deliver { header, body, .. } = d else { return None };
            let mut wire = header.as_ref().map(|h| h.to_vec()).unwrap_or_default();
            match body {
                Some(Body::Chunk(r)) => wire.extend_from_slice(&chunk[r.clone()]),
                Some(Body::Shared(b)) => wire.extend_from_slice(b),
                None => {}
            }
            (wire.len() >= 16 && wire[1] == 0).then(|| {
                (u16::from_be_bytes([wire[6], wire[7]]), u32::from_be_bytes([wire[8], wire[9], wire[10], wire[11]]))
            })
        })
        .collect()
}

/// Issue 26 item 3 on the shared route: the primary fails, the route switches to the fallback
/// at once and its viewer goes on at the fallback's keyframe; while the fallback plays the
/// route probes the primary, and the probe's first keyframe brings the route back, the
/// fallback's connection let go and the probe's made the camera's. RTP sequence numbers run on
/// without a gap across both switches, timestamps only forward.
#[test]
fn a_failing_primary_switches_to_the_fallback_and_its_probes_keyframe_brings_it_back() {
    let t0 = Instant::now();
    let mut p = params(Mode::AlwaysOn);
    p.camera.media_timeout = 100 * SECOND;
    p.camera.fallback = Some(crate::proto::camera_session::FallbackParams {
        url: FALLBACK_URL.into(),
        addr: "10.0.0.6:554".parse().unwrap(),
        credentials: None,
    });
    let mut r = SharedRoute::new(p, t0);
    let mut cams = TwoCameras { primary_down: false, camera: None, probe_open: false, delivered: vec![], log: vec![] };
    cams.serve(&mut r, t0);
    assert_eq!(cams.camera, Some(Source::Primary));
    r.attach(1, map(), t0, t0);
    let setup = format!(
        "SETUP {ROUTE_URL}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"
    );
    r.handle_request(1, request(&setup), t0);
    cams.serve(&mut r, t0);
    let a = answers(&cams.log);
    let session = a[0].lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap();
    r.handle_request(1, request(&format!("PLAY {ROUTE_URL} RTSP/1.0\r\nCSeq: 2\r\nSession: {session}\r\n\r\n")), t0);
    cams.serve(&mut r, t0);
    assert!(r.is_playing(1));
    events(&mut r);

    // The primary plays: a keyframe and a frame, as the camera numbers them.
    let mut seen = Vec::new();
    let mut chunk = frame(0, 15, &rtp(100, 9000, 96, &[0x65, 0x88, 0x80]));
    chunk.extend(frame(0, 14, &rtp(101, 12000, 96, &[0x41, 0x9a])));
    let d = receive(&mut r, t0, &mut chunk);
    seen.extend(rtp_of(&d, &chunk));
    assert_eq!(seen, vec![(100, 9000), (101, 12000)], "the first connection passes as it is");

    // It dies and refuses: the route is on the fallback at once (no backoff wait), and
    // probes the primary meanwhile (refused too, retried).
    let t1 = t0 + SECOND;
    cams.primary_down = true;
    cams.camera = None;
    r.handle_camera_closed(t1);
    cams.serve(&mut r, t1);
    assert!(events(&mut r).contains(&RouteEvent::SourceChanged(Source::Fallback)));
    let at = r.poll_timeout().unwrap();
    assert_eq!(at, t1, "the fallback is tried at once");
    r.handle_timeout(at);
    cams.serve(&mut r, at);
    assert_eq!(cams.camera, Some(Source::Fallback));
    assert!(r.camera().is_some_and(|c| c.live_source() == Source::Fallback && c.phase() == CameraPhase::Playing));
    assert!(r.is_probing() && !cams.probe_open, "the probe of the refusing primary waits to retry");
    assert!(r.is_playing(1), "the viewer stays attached");
    // The fallback's own numbering: a frame before its keyframe is skipped, then it goes on.
    let t2 = t1 + SECOND;
    let mut chunk = frame(0, 14, &rtp(5000, 700_000, 96, &[0x41, 0x9a]));
    chunk.extend(frame(0, 15, &rtp(5001, 703_000, 96, &[0x65, 0x88, 0x80])));
    chunk.extend(frame(0, 14, &rtp(5002, 706_000, 96, &[0x41, 0x9a])));
    let d = receive(&mut r, t2, &mut chunk);
    seen.extend(rtp_of(&d, &chunk));

    // The primary is back: the probe connects and plays; its frames before a keyframe feed
    // nobody, its keyframe brings the route back.
    cams.primary_down = false;
    let mut t3 = t2;
    for _ in 0..8 {
        if cams.probe_open {
            break;
        }
        t3 = r.poll_timeout().unwrap().max(t3);
        r.handle_timeout(t3);
        cams.serve(&mut r, t3);
    }
    assert!(cams.probe_open, "the probe plays");
    assert_eq!(cams.camera, Some(Source::Fallback));
    let mut p_chunk = frame(0, 14, &rtp(40, 1_000, 96, &[0x41, 0x9a]));
    assert!(probe_receive(&mut r, t3, &mut p_chunk).is_empty(), "the probe's pictures before its keyframe");
    cams.serve(&mut r, t3);
    assert!(r.camera().is_some_and(|c| c.live_source() == Source::Fallback));
    let mut p_chunk = frame(0, 14, &rtp(41, 4_000, 96, &[0x41, 0x9a]));
    p_chunk.extend(frame(0, 15, &rtp(42, 7_000, 96, &[0x65, 0x88, 0x80])));
    p_chunk.extend(frame(0, 14, &rtp(43, 10_000, 96, &[0x41, 0x9a])));
    let d = probe_receive(&mut r, t3, &mut p_chunk);
    seen.extend(rtp_of(&d, &p_chunk));
    cams.log.clear();
    cams.serve(&mut r, t3);
    assert_eq!(
        cams.log,
        vec![Action::CloseCamera, Action::ProbeIsCamera],
        "the fallback let go, then the probe is the camera"
    );
    assert_eq!(cams.camera, Some(Source::Primary));
    assert!(!r.is_probing());
    assert!(r.camera().is_some_and(|c| c.live_source() == Source::Primary && c.phase() == CameraPhase::Playing));
    assert!(events(&mut r).contains(&RouteEvent::SourceChanged(Source::Primary)));
    // The primary's next receive comes on the camera's connection now.
    let mut chunk = frame(0, 14, &rtp(44, 13_000, 96, &[0x41, 0x9a]));
    let d = receive(&mut r, t3, &mut chunk);
    seen.extend(rtp_of(&d, &chunk));

    // Two from the primary, two from the fallback (from its keyframe), two from the probe's
    // keyframe on, one from the primary after: one unbroken sequence, time only forward.
    assert_eq!(seen.len(), 7, "{seen:?}");
    for w in seen.windows(2) {
        assert_eq!(w[1].0, w[0].0.wrapping_add(1), "a gap in sequence numbers: {seen:?}");
        assert!(w[1].1.wrapping_sub(w[0].1) as i32 > 0, "time went back: {seen:?}");
    }
}

/// A route whose fallback is live and whose camera nobody wants any more closes the probe with
/// it; closing the route closes both connections.
#[test]
fn closing_a_route_on_its_fallback_closes_the_probe_too() {
    let t0 = Instant::now();
    let mut p = params(Mode::AlwaysOn);
    p.camera.fallback = Some(crate::proto::camera_session::FallbackParams {
        url: FALLBACK_URL.into(),
        addr: "10.0.0.6:554".parse().unwrap(),
        credentials: None,
    });
    let mut r = SharedRoute::<u8>::new(p, t0);
    let mut cams = TwoCameras { primary_down: false, camera: None, probe_open: false, delivered: vec![], log: vec![] };
    cams.serve(&mut r, t0);
    cams.camera = None;
    r.handle_camera_closed(t0);
    cams.serve(&mut r, t0);
    r.handle_timeout(t0);
    cams.serve(&mut r, t0);
    assert!(cams.probe_open && cams.camera == Some(Source::Fallback));
    cams.log.clear();
    r.close(t0);
    cams.serve(&mut r, t0);
    assert!(cams.log.contains(&Action::CloseCamera) && cams.log.contains(&Action::CloseProbe), "{:?}", cams.log);
    assert!(r.is_done() && !r.is_probing());
}

/// The home route's output for viewer `to`, appended in order to `out` as the bytes it would
/// be sent: answers, then `$` frames (a receive's `Chunk` ranges index `chunk`).
fn gather_for(to: u8, actions: Vec<Action<u8>>, chunk: &[u8], out: &mut bytes::BytesMut) -> Vec<Action<u8>> {
    let mut rest = Vec::new();
    for a in actions {
        match a {
            Action::ToViewer { viewer, bytes } if viewer == to => out.extend_from_slice(&bytes),
            Action::Deliver(d) => gather_delivery(to, &d, chunk, out),
            a => rest.push(a),
        }
    }
    rest
}

fn gather_delivery(to: u8, d: &Delivery<u8>, chunk: &[u8], out: &mut bytes::BytesMut) {
    if let Delivery::Deliver { viewer, header, body, .. } = d {
        if *viewer != to {
            return;
        }
        out.extend_from_slice(header.as_deref().unwrap_or_default());
        match body {
            Some(Body::Chunk(r)) => out.extend_from_slice(&chunk[r.clone()]),
            Some(Body::Shared(b)) => out.extend_from_slice(b),
            None => {}
        }
    }
}

/// Issue 25 item 4: a replica of a route (on another shard) is a route whose camera is a link
/// to the home route, where it is one viewer. Its camera session's whole dialogue is answered
/// by the home route's viewer dialogue, and what the home route sends it, read as camera bytes
/// (`handle_camera_owned`, no copy), reaches the replica's own viewer as whole frames from the
/// cache's keyframe on, then live.
#[test]
fn a_replica_fed_by_its_home_route_serves_its_own_viewers() {
    const REPLICA: u8 = 9;
    let t0 = Instant::now();
    let mut home = SharedRoute::new(params(on_demand()), t0);
    let mut replica = SharedRoute::new(params(on_demand()), t0);
    let mut cam = Camera::new();
    // The home camera plays and has a keyframe cached before the replica comes.
    home.attach(1, map(), t0, t0);
    cam.serve(&mut home, t0);
    let mut link = bytes::BytesMut::new();
    // Pumps the link both ways until nothing moves; what the replica asked for its viewers
    // (answers, deliveries of its joins and of the link's receives).
    let pump =
        |home: &mut SharedRoute<u8>, replica: &mut SharedRoute<u8>, cam: &mut Camera, link: &mut bytes::BytesMut| {
            let mut got = Vec::new();
            for _ in 0..20 {
                let mut moved = false;
                while let Some(a) = replica.poll_action() {
                    match a {
                        Action::Connect { .. } => {
                            let identity = UrlMap::new(CAMERA_URL, CAMERA_URL).ok();
                            assert!(home.attach(REPLICA, identity, t0, t0));
                            replica.handle_connected(t0);
                        }
                        Action::SendToCamera(bytes) => {
                            let m = parse_message(&bytes, &MessageLimits::default()).unwrap().unwrap().0;
                            home.handle_request(REPLICA, m, t0);
                        }
                        a => got.push(a),
                    }
                    moved = true;
                }
                let rest = cam.serve(home, t0);
                gather_for(REPLICA, rest, &[], link);
                if !link.is_empty() {
                    replica.handle_camera_owned(t0, link.split());
                    let mut plan = Vec::new();
                    while replica.plan_next(&[], |_| Some(QueueState::default()), &mut plan).is_some() {
                        got.extend(plan.drain(..).map(Action::Deliver));
                    }
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
            got
        };
    let mut key = frame(0, 15, &rtp(1, 3000, 96, &[0x65, 0x88, 0x80]));
    let deliveries = receive(&mut home, t0, &mut key);
    assert_eq!(deliveries.len(), 0, "nobody plays at home yet");

    // The replica's viewer: its requests are answered by the replica once its camera (the
    // link) is described and playing.
    replica.attach(2, map(), t0, t0);
    assert!(pump(&mut home, &mut replica, &mut cam, &mut link).is_empty());
    replica.handle_request(2, request(&format!("DESCRIBE {ROUTE_URL} RTSP/1.0\r\nCSeq: 1\r\n\r\n")), t0);
    let setup = format!(
        "SETUP {ROUTE_URL}/trackID=0 RTSP/1.0\r\nCSeq: 2\r\nTransport: RTP/AVP/TCP;unicast;interleaved=4-5\r\n\r\n"
    );
    replica.handle_request(2, request(&setup), t0);
    let said = pump(&mut home, &mut replica, &mut cam, &mut link);
    let a = answers(&said);
    assert!(a.len() == 2 && a.iter().all(|a| a.starts_with("RTSP/1.0 200 OK")), "{a:?}");
    assert!(home.is_playing(REPLICA), "the replica's camera session played the home route");
    let session = a[1].lines().find_map(|l| l.strip_prefix("Session: ")).unwrap().split(';').next().unwrap();
    replica.handle_request(
        2,
        request(&format!("PLAY {ROUTE_URL} RTSP/1.0\r\nCSeq: 3\r\nSession: {session}\r\n\r\n")),
        t0,
    );
    let joined: Vec<_> = std::iter::from_fn(|| replica.poll_action()).collect();
    assert!(answers(&joined)[0].starts_with("RTSP/1.0 200 OK"), "{joined:?}");
    let mut first = bytes::BytesMut::new();
    for a in &joined {
        if let Action::Deliver(d) = a {
            gather_delivery(2, d, &[], &mut first);
        }
    }
    // The keyframe the home route cached, on the replica viewer's own channel, whole.
    let mut expected = frame(4, 15, &rtp(1, 3000, 96, &[0x65, 0x88, 0x80]));
    assert_eq!(first.as_ref(), expected.as_slice(), "the cached keyframe, on channel 4");

    // A live frame at home reaches the replica's viewer through one buffer.
    let mut next = frame(0, 14, &rtp(2, 6000, 96, &[0x41, 0x9a]));
    let at_home = receive(&mut home, t0, &mut next);
    gather_delivery(REPLICA, at_home.first().unwrap(), &next, &mut link);
    let got = pump(&mut home, &mut replica, &mut cam, &mut link);
    let mut live = bytes::BytesMut::new();
    for a in &got {
        if let Action::Deliver(d) = a {
            gather_delivery(2, d, &[], &mut live);
        }
    }
    expected = frame(4, 14, &rtp(2, 6000, 96, &[0x41, 0x9a]));
    assert_eq!(live.as_ref(), expected.as_slice(), "the live frame, whole, on channel 4");
}

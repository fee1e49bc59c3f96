//! Tunnel policy tests: pairing, every deadline, drain, reload and backpressure, with no sockets.

use std::sync::Arc;

use base64::Engine;

use super::*;
use crate::proto::route::{Acl, Route};
use crate::proto::rtsp::MessageLimits;
use crate::proto::session::{OpenGate, SessionParams};

const CAMERA: &str = "10.0.0.5:554";
const SECOND: Duration = Duration::from_secs(1);

fn route(path: &str, camera: &str) -> Route {
    Route {
        path: path.to_owned(),
        upstream_url: format!("rtsp://{camera}/stream"),
        upstream_addr: camera.parse().unwrap(),
        upstream_link: Default::default(),
        resolve_error: None,
        credentials: None,
        users: None,
        guard: crate::proto::route::Guard::Open,
        max_viewers: None,
        acl: Acl::default(),
        sharing: crate::proto::route::Sharing::Passthrough,
        fallback: None,
    }
}

fn policy() -> Policy {
    Policy {
        pairing_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        camera_close_grace: Duration::from_secs(2),
        max_viewer_backlog: 1000,
        max_camera_backlog: 500,
    }
}

fn params() -> SessionParams {
    SessionParams {
        limits: MessageLimits::default(),
        response_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(20),
        cnonce_seed: 42,
        viewer_ip: "127.0.0.1".parse().unwrap(),
        viewer_tls: false,
        nonce_ttl: Duration::from_secs(60),
        max_pending_requests: 4,
        post_from_any_address: false,
        auth_gate: Arc::new(OpenGate),
        access: Default::default(),
    }
}

struct Harness {
    t: Tunnel,
    routes: RouteTable,
    t0: Instant,
    /// What the last outputs came with to count or log.
    events: Vec<Event>,
}

impl Harness {
    fn new(kind: Kind) -> Harness {
        let routes = RouteTable::new(vec![route("/cam1", CAMERA)]);
        let t0 = Instant::now();
        let r = if kind == Kind::Http { routes.lookup("/cam1") } else { None };
        let session = Session::new(params(), r, "127.0.0.1:8080", t0);
        Harness { t: Tunnel::new(session, kind, policy(), t0), routes, t0, events: Vec::new() }
    }

    fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// The actions the tunnel asks for; its events are left in `self.events`.
    fn outputs(&mut self) -> Vec<Output> {
        self.events = std::iter::from_fn(|| self.t.poll_event()).collect();
        std::iter::from_fn(|| self.t.poll_output()).collect()
    }

    fn handle(&mut self, input: Input<'_>, after: Duration) -> Vec<Output> {
        self.t.handle(input, self.t0 + after);
        self.outputs()
    }

    fn timer(&mut self, after: Duration) -> Vec<Output> {
        self.t.handle_timeout(self.t0 + after);
        self.outputs()
    }

    fn post(&mut self, ip: &str, after: Duration) -> Vec<Output> {
        self.handle(Input::PostArrived { ip: ip.parse().unwrap(), tls: false }, after)
    }

    fn command(&mut self, msg: &str, after: Duration) -> Vec<Output> {
        let bytes = base64::engine::general_purpose::STANDARD.encode(msg).into_bytes();
        let now = self.t0 + after;
        let routes = &self.routes;
        self.t.handle(Input::ViewerBytes { stream: ViewerStream::TunnelCommands, bytes: &bytes, routes }, now);
        self.outputs()
    }

    /// A paired tunnel with its camera connected and an OPTIONS forwarded to it at `after`.
    fn connected(after: Duration) -> Harness {
        let mut h = Harness::new(Kind::Http);
        h.post("127.0.0.1", Duration::ZERO);
        let out = h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", after);
        assert_eq!(out, vec![Output::ConnectCamera(CAMERA.parse().unwrap())]);
        let out = h.handle(Input::CameraConnected, after + Duration::from_millis(30));
        assert_eq!(
            h.events,
            vec![Event::Observe(Hist::UpstreamConnect, Duration::from_millis(30))],
            "connect time measured from the request for it"
        );
        assert!(matches!(out[0], Output::ToCamera(_)));
        h
    }
}

fn ends(out: &[Output]) -> Option<SessionOutcome> {
    match out.last() {
        Some(Output::End(o)) => Some(*o),
        _ => None,
    }
}

fn rejected(events: &[Event], reason: Rejection) -> bool {
    events.contains(&Event::Rejected(reason))
}

#[test]
fn a_get_without_post_times_out_at_the_pairing_deadline() {
    let mut h = Harness::new(Kind::Http);
    assert_eq!(h.t.poll_timeout(), Some(h.at(policy().pairing_timeout)));
    let first = h.t.timers().min_by_key(|&(_, at)| at);
    assert_eq!(first, Some((Timer::Pairing, h.at(policy().pairing_timeout))), "the deadline is named");
    assert_eq!(h.timer(Duration::from_secs(4)), vec![]);
    let out = h.timer(Duration::from_secs(6));
    assert!(rejected(&h.events, Rejection::GetWithoutPost));
    assert_eq!(ends(&out), Some(SessionOutcome::Timeout));
    assert!(h.t.is_ended());
    assert_eq!(h.t.poll_timeout(), None, "an ended tunnel waits for nothing");
    assert_eq!(h.timer(Duration::from_secs(7)), vec![], "an ended tunnel says nothing more");
}

#[test]
fn a_bound_post_ends_the_pairing_window() {
    let mut h = Harness::new(Kind::Http);
    let out = h.post("127.0.0.1", Duration::from_millis(250));
    assert_eq!(h.events, vec![Event::Observe(Hist::Pairing, Duration::from_millis(250))]);
    assert_eq!(out, vec![Output::BindPost]);
    assert_eq!(h.timer(Duration::from_secs(6)), vec![]);
    assert_eq!(h.t.poll_timeout(), Some(h.at(policy().idle_timeout)));
}

#[test]
fn plain_rtsp_has_no_pairing_deadline() {
    let mut h = Harness::new(Kind::Plain);
    assert_eq!(h.t.poll_timeout(), Some(h.at(policy().idle_timeout)));
    assert_eq!(h.timer(Duration::from_secs(6)), vec![]);
}

#[test]
fn a_second_post_rebinds_without_a_second_pairing() {
    let mut h = Harness::new(Kind::Http);
    h.post("127.0.0.1", SECOND);
    assert_eq!(h.post("127.0.0.1", 2 * SECOND), vec![Output::BindPost]);
}

#[test]
fn a_post_from_another_address_is_refused_and_the_tunnel_goes_on() {
    let mut h = Harness::new(Kind::Http);
    h.post("127.0.0.1", SECOND);
    assert_eq!(h.post("10.9.9.9", 2 * SECOND), vec![Output::RefusePost]);
    assert!(rejected(&h.events, Rejection::PostFromOtherAddress));
    assert!(!h.t.is_ended());
    // Refused before any POST bound: the GET still waits for its own.
    let mut h = Harness::new(Kind::Http);
    assert_eq!(h.post("10.9.9.9", SECOND), vec![Output::RefusePost]);
    assert!(rejected(&h.events, Rejection::PostFromOtherAddress));
    assert_eq!(ends(&h.timer(Duration::from_secs(6))), Some(SessionOutcome::Timeout));
}

#[test]
fn idle_tunnels_end_and_camera_bytes_keep_them_alive() {
    let mut h = Harness::connected(SECOND);
    h.handle(Input::CameraBytes(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"), 2 * SECOND);
    assert_eq!(h.t.poll_timeout(), Some(h.at(Duration::from_secs(62))));
    assert_eq!(h.timer(Duration::from_secs(61)), vec![]);
    let out = h.handle(Input::CameraBytes(b"$\x00\x00\x04abcd"), Duration::from_secs(50));
    assert!(matches!(out[..], [Output::ForwardToViewer { .. }]));
    assert_eq!(h.t.poll_timeout(), Some(h.at(Duration::from_secs(110))));
    assert_eq!(h.timer(Duration::from_secs(100)), vec![]);
    let out = h.timer(Duration::from_secs(111));
    assert!(rejected(&h.events, Rejection::IdleTimeout));
    assert_eq!(ends(&out), Some(SessionOutcome::Timeout));
}

#[test]
fn an_unfinished_request_ends_the_tunnel_at_the_request_deadline() {
    let mut h = Harness::new(Kind::Http);
    h.post("127.0.0.1", Duration::ZERO);
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSe", SECOND);
    assert_eq!(h.t.poll_timeout(), Some(h.at(21 * SECOND)));
    assert_eq!(h.timer(20 * SECOND), vec![]);
    let out = h.timer(21 * SECOND);
    assert!(rejected(&h.events, Rejection::RequestTimeout));
    assert_eq!(ends(&out), Some(SessionOutcome::Timeout));
}

#[test]
fn an_unanswered_request_ends_the_tunnel_at_the_response_deadline() {
    let mut h = Harness::connected(SECOND);
    let connected = SECOND + Duration::from_millis(30);
    assert_eq!(h.t.poll_timeout(), Some(h.at(connected + 10 * SECOND)));
    let out = h.timer(connected + 10 * SECOND);
    assert!(h.events.contains(&Event::UpstreamError(UpstreamErrorKind::ResponseTimeout)));
    assert_eq!(ends(&out), Some(SessionOutcome::UpstreamError));
}

#[test]
fn the_camera_connection_closes_at_once_or_lingers_within_the_grace() {
    let mut h = Harness::connected(SECOND);
    assert_eq!(h.t.camera_close(SessionOutcome::UpstreamError), CameraClose::Now, "a failed camera");
    let grace = policy().camera_close_grace;
    assert_eq!(h.t.camera_close(SessionOutcome::Completed), CameraClose::Linger { teardown: None, grace });
    // Still connecting: nothing to linger for.
    let mut h = Harness::new(Kind::Http);
    h.post("127.0.0.1", Duration::ZERO);
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", SECOND);
    assert_eq!(h.t.camera_close(SessionOutcome::Timeout), CameraClose::Now);
}

#[test]
fn a_drain_ends_the_tunnel_at_its_deadline() {
    let mut h = Harness::connected(SECOND);
    let deadline = h.at(3 * SECOND);
    assert_eq!(h.handle(Input::Drain { deadline }, 2 * SECOND), vec![]);
    assert_eq!(h.t.poll_timeout(), Some(deadline));
    assert_eq!(h.timer(2 * SECOND), vec![]);
    assert_eq!(h.timer(3 * SECOND), vec![Output::End(SessionOutcome::Shutdown)]);
}

#[test]
fn a_reload_ends_tunnels_whose_route_is_gone_or_changed() {
    let mut h = Harness::connected(SECOND);
    let same = RouteTable::new(vec![route("/cam1", CAMERA), route("/cam2", "10.0.0.6:554")]);
    assert_eq!(h.handle(Input::Reload { routes: &same, policy: policy() }, 2 * SECOND), vec![]);
    let moved = RouteTable::new(vec![route("/cam1", "10.0.0.7:554")]);
    let out = h.handle(Input::Reload { routes: &moved, policy: policy() }, 3 * SECOND);
    assert_eq!(out, vec![Output::End(SessionOutcome::RouteRemoved)]);
    // The same camera, now shared: a passthrough session cannot become a viewer of it.
    let mut h = Harness::connected(SECOND);
    let mut shared = route("/cam1", CAMERA);
    shared.sharing = crate::proto::route::Sharing::Shared(crate::proto::route::SharedRoute {
        linger: SECOND,
        always_on: false,
        gop_cache: true,
    });
    let out = h.handle(Input::Reload { routes: &RouteTable::new(vec![shared]), policy: policy() }, 2 * SECOND);
    assert_eq!(out, vec![Output::End(SessionOutcome::RouteRemoved)]);
    // A plain session with no route yet has nothing to lose.
    let mut h = Harness::new(Kind::Plain);
    assert_eq!(h.handle(Input::Reload { routes: &RouteTable::default(), policy: policy() }, SECOND), vec![]);
}

#[test]
fn a_reload_applies_its_limits_to_running_tunnels() {
    let mut h = Harness::new(Kind::Http);
    let shorter = Policy { pairing_timeout: SECOND, ..policy() };
    h.handle(Input::Reload { routes: &RouteTable::new(vec![route("/cam1", CAMERA)]), policy: shorter }, SECOND / 2);
    assert_eq!(ends(&h.timer(2 * SECOND)), Some(SessionOutcome::Timeout));
}

#[test]
fn a_viewer_behind_pauses_the_camera_until_half_its_backlog_is_gone() {
    let mut h = Harness::new(Kind::Http);
    // No camera yet: only the viewer itself is no longer read.
    assert_eq!(h.handle(Input::ViewerBacklog(5000), SECOND), vec![Output::PauseViewer]);
    let mut h = Harness::connected(SECOND);
    assert_eq!(h.handle(Input::ViewerBacklog(1000), 2 * SECOND), vec![]);
    assert_eq!(h.handle(Input::ViewerBacklog(1001), 2 * SECOND), vec![Output::PauseViewer, Output::PauseCamera]);
    assert!(h.t.camera_paused() && h.t.viewer_paused());
    assert_eq!(h.handle(Input::ViewerBacklog(2000), 2 * SECOND), vec![], "paused once");
    assert_eq!(h.handle(Input::ViewerBacklog(501), 2 * SECOND), vec![]);
    assert_eq!(h.handle(Input::ViewerBacklog(500), 2 * SECOND), vec![Output::ResumeViewer, Output::ResumeCamera]);
    assert!(!h.t.camera_paused() && !h.t.viewer_paused());
}

#[test]
fn a_viewer_that_stays_over_its_backlog_limit_is_closed_after_the_idle_timeout() {
    let mut h = Harness::connected(SECOND);
    h.handle(Input::CameraBytes(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"), 2 * SECOND);
    assert_eq!(h.handle(Input::ViewerBacklog(1001), 2 * SECOND), vec![Output::PauseViewer, Output::PauseCamera]);
    // Activity (here the camera's) does not help a viewer that takes nothing.
    h.handle(Input::CameraBytes(b"$\x00\x00\x04abcd"), 30 * SECOND);
    assert_eq!(h.t.poll_timeout(), Some(h.at(2 * SECOND + policy().idle_timeout)));
    let out = h.timer(2 * SECOND + policy().idle_timeout);
    assert!(rejected(&h.events, Rejection::ViewerBacklog), "{:?}", h.events);
    assert_eq!(ends(&out), Some(SessionOutcome::Timeout));
}

#[test]
fn falling_back_under_the_backlog_limit_restarts_its_deadline() {
    let mut h = Harness::connected(SECOND);
    h.handle(Input::CameraBytes(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"), 2 * SECOND);
    h.handle(Input::ViewerBacklog(1001), 2 * SECOND);
    // Under the limit (still not read until half): it took some, the deadline is off...
    assert_eq!(h.handle(Input::ViewerBacklog(900), 30 * SECOND), vec![]);
    assert!(h.t.viewer_paused());
    // ...and starts again from the next time it is over.
    assert_eq!(h.handle(Input::ViewerBacklog(1001), 40 * SECOND), vec![]);
    h.handle(Input::CameraBytes(b"$\x00\x00\x04abcd"), 60 * SECOND);
    assert_eq!(h.timer(63 * SECOND), vec![]);
    h.timer(40 * SECOND + policy().idle_timeout);
    assert!(rejected(&h.events, Rejection::ViewerBacklog), "{:?}", h.events);
}

#[test]
fn a_camera_backlog_over_its_limit_ends_the_tunnel_before_anything_queued() {
    let mut h = Harness::connected(SECOND);
    assert_eq!(h.handle(Input::CameraBacklog(500), 2 * SECOND), vec![]);
    // Outputs still queued when the shell reports the backlog are dropped behind the end.
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n", 2 * SECOND);
    h.t.handle(Input::CameraBacklog(501), h.at(2 * SECOND));
    let first = h.t.poll_output();
    assert_eq!(first, Some(Output::End(SessionOutcome::UpstreamError)));
    assert!(std::iter::from_fn(|| h.t.poll_event()).any(|e| e == Event::Rejected(Rejection::CameraBacklog)));
}

#[test]
fn the_camera_going_away_ends_the_tunnel_through_the_dialogue() {
    let mut h = Harness::connected(SECOND);
    let out = h.handle(Input::CameraClosed(UpstreamErrorKind::Closed), 2 * SECOND);
    assert_eq!(ends(&out), Some(SessionOutcome::UpstreamClosed));
    let mut h = Harness::new(Kind::Http);
    h.post("127.0.0.1", Duration::ZERO);
    h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", SECOND);
    let out = h.handle(Input::CameraConnectFailed(UpstreamErrorKind::ConnectRefused), 2 * SECOND);
    assert_eq!(ends(&out), Some(SessionOutcome::UpstreamError));
    assert_eq!(h.t.camera_close(SessionOutcome::UpstreamError), CameraClose::Now);
}

#[test]
fn a_closed_post_keeps_the_tunnel_and_a_closed_get_ends_it() {
    let mut h = Harness::connected(SECOND);
    assert_eq!(h.handle(Input::ViewerClosed(ViewerStream::TunnelCommands), 2 * SECOND), vec![]);
    let out = h.handle(Input::ViewerClosed(ViewerStream::TunnelData), 3 * SECOND);
    assert_eq!(ends(&out), Some(SessionOutcome::Completed));
}

/// Every viewer's session slot holds its tunnel inline: rarely used parts (a camera's
/// credentials, a message spanning receives) are boxed. It was 1,944 bytes, 1,400 now.
#[test]
fn a_tunnel_is_small_enough_for_thousands_of_viewers() {
    assert!(std::mem::size_of::<Tunnel>() <= 1536, "{}", std::mem::size_of::<Tunnel>());
}

mod shared;

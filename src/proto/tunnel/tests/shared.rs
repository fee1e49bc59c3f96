//! A tunnel of a shared route: the relay answers the viewer, nothing of the viewer's reaches a
//! camera, and the viewer's liveness is the shared dialogue's to judge. The dialogue is the
//! route's (`proto::shared_route`); here a [`SharedViewer`] stands in for it, as the route
//! answers with one per viewer.

use proptest::prelude::*;

use super::*;
use crate::proto::camera_session::{CameraPhase, CameraView};
use crate::proto::route::{SharedRoute, Sharing};
use crate::proto::shared_viewer::{SharedViewer, ViewerOutput, ViewerParams};

const IDLE: CameraView<'static> = CameraView { phase: CameraPhase::Idle, presentation: None, gop: None, next_rtp: &[] };

fn shared_harness(kind: Kind) -> Harness {
    let mut r = route("/cam1", CAMERA);
    r.sharing = Sharing::Shared(SharedRoute { linger: SECOND, always_on: false, gop_cache: true });
    let routes = RouteTable::new(vec![r]);
    let t0 = Instant::now();
    let session = Session::new(params(), routes.lookup("/cam1"), "127.0.0.1:8080", t0);
    let t = Tunnel::new(session, kind, policy(), t0);
    Harness { t, routes, t0, events: Vec::new() }
}

fn viewer_params() -> ViewerParams {
    ViewerParams {
        session_seed: 7,
        session_timeout: Duration::from_secs(8),
        camera_wait: Duration::from_secs(3),
        max_pending: 4,
    }
}

/// What the route does with a tunnel's outputs: each `SharedRequest` goes to the viewer's
/// dialogue (made with the session's URL map at the first one), answered with `camera`'s view.
/// Returns the tunnel's other outputs and the dialogue's.
struct Route {
    viewer: Option<SharedViewer>,
}

impl Route {
    fn new() -> Route {
        Route { viewer: None }
    }

    fn serve(
        &mut self,
        h: &mut Harness,
        out: Vec<Output>,
        camera: &CameraView<'_>,
        after: Duration,
    ) -> (Vec<Output>, Vec<ViewerOutput>) {
        let (mut rest, mut answers) = (Vec::new(), Vec::new());
        for o in out {
            match o {
                Output::SharedRequest(msg) => {
                    let map = h.t.session().url_map().cloned().expect("a shared session has a URL map");
                    let v = self.viewer.get_or_insert_with(|| SharedViewer::new(viewer_params(), map, h.at(after)));
                    v.handle_request(*msg, camera, h.at(after));
                    answers.extend(std::iter::from_fn(|| v.poll_output()));
                }
                o => rest.push(o),
            }
        }
        (rest, answers)
    }
}

/// The one answer among `out`.
fn to_viewer(out: &[ViewerOutput]) -> &[u8] {
    let mut answers = out.iter().filter_map(|o| match o {
        ViewerOutput::Send(b) => Some(&b[..]),
        _ => None,
    });
    let first = answers.next().unwrap_or_else(|| panic!("no answer: {out:?}"));
    assert!(answers.next().is_none(), "{out:?}");
    first
}

fn reaches_a_camera(o: &Output) -> bool {
    matches!(o, Output::ConnectCamera(_) | Output::ToCamera(_))
}

fn frames_reach_a_camera(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::FramesToCamera(_)))
}

#[test]
fn admitted_requests_are_answered_by_the_relay_and_no_camera_is_opened() {
    let mut h = shared_harness(Kind::Http);
    let mut r = Route::new();
    h.post("127.0.0.1", Duration::ZERO);
    let out = h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", SECOND);
    assert!(matches!(&out[..], [Output::SharedRequest(m)] if m.method() == Some("OPTIONS")), "{out:?}");
    let (rest, answers) = r.serve(&mut h, out, &IDLE, SECOND);
    assert!(rest.is_empty(), "{rest:?}");
    let reply = String::from_utf8_lossy(to_viewer(&answers));
    assert!(reply.starts_with("RTSP/1.0 200 OK\r\n") && reply.contains("CSeq: 1\r\n"), "{reply}");
    // (Its exchange, measured as for the camera's answers, is the route's event: see
    // `shared_route::tests::a_viewers_requests_are_answered_by_the_route`.)
    assert!(answers.iter().any(|o| matches!(o, ViewerOutput::Exchange(e) if e.status == 200)));
    // A camera that is not starting cannot describe itself: the viewer learns at once.
    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n", 2 * SECOND);
    let (rest, answers) = r.serve(&mut h, out, &IDLE, 2 * SECOND);
    assert!(to_viewer(&answers).starts_with(b"RTSP/1.0 503 "));
    assert!(!rest.iter().any(reaches_a_camera) && !frames_reach_a_camera(&h.events));
}

#[test]
fn a_shared_viewer_lives_by_its_requests_and_reports_not_by_the_tunnel_idle_rule() {
    let mut h = shared_harness(Kind::Plain);
    let mut r = Route::new();
    let routes = RouteTable::new(Vec::new());
    let feed = |h: &mut Harness, r: &mut Route, bytes: &[u8], after: Duration| {
        h.t.handle(Input::ViewerBytes { stream: ViewerStream::Plain, bytes, routes: &routes }, h.at(after));
        let out = h.outputs();
        r.serve(h, out, &IDLE, after)
    };
    feed(&mut h, &mut r, b"OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", Duration::ZERO);
    // The tunnel's idle rule no longer applies: no deadline of its own, nothing at any tick.
    assert_eq!(h.t.poll_timeout(), None);
    // Its RTCP report goes to the route (which keeps the viewer alive by it).
    let (rest, _) = feed(&mut h, &mut r, &[b'$', 1, 0, 2, 0x80, 0xc9], 9 * SECOND);
    assert_eq!(rest, vec![Output::SharedViewerFrame]);
    h.t.handle_timeout(h.at(100 * SECOND));
    assert_eq!(h.outputs(), vec![]);
    // Session timeout 8 s: silent for 1.25 x that, the dialogue closes it (the route then
    // ends the session: `shared_route::tests::a_silent_viewer_is_ended_by_the_route`).
    let v = r.viewer.as_mut().unwrap();
    assert_eq!(v.poll_timeout(), Some(h.at(Duration::from_secs(10))));
    v.handle_viewer_frame(h.at(9 * SECOND));
    assert_eq!(v.poll_timeout(), Some(h.at(Duration::from_secs(19))));
    v.handle_timeout(&IDLE, h.at(19 * SECOND));
    assert_eq!(v.poll_output(), Some(ViewerOutput::Close(crate::proto::shared_viewer::ViewerOutcome::Timeout)));
}

/// Issue 20 item 9, the viewer's side: a reload that changes only a shared route's camera (its
/// URL, address or credentials) keeps its viewers, whose URLs now map to the new camera (its
/// camera session reopens it and carries them over, or ends them as `camera_changed`); a route
/// no longer shared the same way ends them as `route_removed`.
#[test]
fn a_reload_that_changes_a_shared_routes_camera_keeps_its_viewers_on_the_new_one() {
    use crate::proto::camera_session::Presentation;
    use crate::proto::upstream_auth::Credentials;
    let mut h = shared_harness(Kind::Http);
    let mut r = Route::new();
    h.post("127.0.0.1", Duration::ZERO);
    let out = h.command("OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n", SECOND);
    r.serve(&mut h, out, &IDLE, SECOND);
    let shared = h.t.session().route().unwrap().sharing;
    let mut moved = route("/cam1", "10.0.0.9:8554");
    moved.upstream_url = "rtsp://10.0.0.9:8554/live/main".into();
    moved.credentials = Some(Credentials { user: "bob".into(), pass: "two".into() });
    moved.sharing = shared;
    let routes = RouteTable::new(vec![moved]);
    assert_eq!(h.handle(Input::Reload { routes: &routes, policy: policy() }, 2 * SECOND), vec![]);
    assert_eq!(h.t.session().route().unwrap().upstream_url, "rtsp://10.0.0.9:8554/live/main");
    // As the shell does after a reload: the route's viewer maps with the session's new map.
    let map = h.t.session().url_map().cloned().unwrap();
    r.viewer.as_mut().unwrap().set_url_map(map);

    // The new camera's description, as its camera session would show it.
    let mut answer = Message::response(200, "OK");
    answer.headers.push(("Content-Base".into(), "rtsp://10.0.0.9:8554/live/main/".into()));
    answer.body = bytes::Bytes::from_static(
        b"v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=1\r\n",
    );
    let mut p = Presentation::from_describe(&answer, "rtsp://10.0.0.9:8554/live/main").unwrap();
    p.tracks[0].channels = Some((0, 1));
    p.finish();
    let playing = CameraView { phase: CameraPhase::Playing, presentation: Some(&p), gop: None, next_rtp: &[] };
    let out = h.command("DESCRIBE rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n", 3 * SECOND);
    let (_, out) = r.serve(&mut h, out, &playing, 3 * SECOND);
    let reply = String::from_utf8_lossy(to_viewer(&out)).into_owned();
    assert!(reply.contains("Content-Base: rtsp://127.0.0.1:8080/cam1/\r\n"), "mapped to the new camera: {reply}");
    let out = h.command("SETUP rtsp://127.0.0.1:8080/cam1/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n", 3 * SECOND);
    let (_, out) = r.serve(&mut h, out, &playing, 3 * SECOND);
    assert!(String::from_utf8_lossy(to_viewer(&out)).starts_with("RTSP/1.0 200 OK"), "{out:?}");

    // Shared another way (another linger): the viewers' sessions end.
    let mut relingered = route("/cam1", "10.0.0.9:8554");
    relingered.sharing = Sharing::Shared(SharedRoute { linger: 5 * SECOND, always_on: false, gop_cache: true });
    let routes = RouteTable::new(vec![relingered]);
    let out = h.handle(Input::Reload { routes: &routes, policy: policy() }, 4 * SECOND);
    assert_eq!(out, vec![Output::End(SessionOutcome::RouteRemoved)]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a viewer of a shared route sends, in whatever pieces, nothing of it is addressed
    /// to a camera: the relay's own camera session is the only thing that talks to the camera.
    #[test]
    fn nothing_a_shared_viewer_sends_reaches_a_camera(
        chunks in proptest::collection::vec(
            prop_oneof![
                Just(b"OPTIONS rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec()),
                Just(b"SET_PARAMETER rtsp://127.0.0.1:8080/cam1 RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nx=1\r\n".to_vec()),
                Just(b"SETUP rtsp://127.0.0.1:8080/cam1/../../x RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n".to_vec()),
                Just(vec![b'$', 0, 0, 4, 1, 2, 3, 4]),
                proptest::collection::vec(any::<u8>(), 0..64),
            ],
            1..8,
        ),
        plain in any::<bool>(),
    ) {
        let mut h = shared_harness(if plain { Kind::Plain } else { Kind::Http });
        let mut r = Route::new();
        if !plain {
            h.post("127.0.0.1", Duration::ZERO);
        }
        let routes = RouteTable::new(Vec::new());
        for (i, chunk) in chunks.iter().enumerate() {
            let at = Duration::from_millis(i as u64);
            let bytes = if plain { chunk.clone() } else { base64::engine::general_purpose::STANDARD.encode(chunk).into_bytes() };
            let stream = if plain { ViewerStream::Plain } else { ViewerStream::TunnelCommands };
            h.t.handle(Input::ViewerBytes { stream, bytes: &bytes, routes: &routes }, h.at(at));
            let out = h.outputs();
            let (out, _) = r.serve(&mut h, out, &IDLE, at);
            prop_assert!(!out.iter().any(reaches_a_camera) && !frames_reach_a_camera(&h.events), "{:?}", out);
        }
    }
}

//! Ordered closing with real peers: FFmpeg sends its TEARDOWN and closes at once; the
//! gst-rtsp-server camera must receive that TEARDOWN (or the relay's own) every time, so the
//! camera frees the session instead of waiting for its own timeout. Passthrough routes: each
//! viewer has its own camera session (a shared route's camera session ends after its linger,
//! tested in `shared_camera.rs`).

mod support;

use std::time::Duration;

use support::*;

/// Normal quits per transport.
const RUNS: usize = 6;

/// FFmpeg quits normally `RUNS` times over `transport`; the camera frees every session.
/// Returns the User-Agent of each TEARDOWN the camera accepted.
fn every_ffmpeg_quit_tears_down_at_the_camera(transport: &str) -> Vec<String> {
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start(
        &format!("teardown-{transport}"),
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\nmode = \"passthrough\"\n", camera.url("/cam1")),
    );
    for run in 1..=RUNS {
        let out = ffmpeg_play(transport, &relay.url("/cam1"), 5);
        assert!(ffmpeg_frames(&out) >= 5, "run {run}: {}", describe(&out));
        let torn_down = eventually(Duration::from_secs(5), || camera.teardowns() >= run);
        assert!(
            torn_down,
            "run {run}: the camera freed {} of {run} sessions\nrelay log:\n{}",
            camera.teardowns(),
            relay.log_text()
        );
    }
    let agents = camera.teardown_agents();
    eprintln!("{transport}: TEARDOWNs by {agents:?}");
    assert_eq!(agents.len(), RUNS, "one TEARDOWN per session: {agents:?}");
    agents
}

#[test]
fn ffmpeg_over_plain_rtsp_quitting_always_tears_down_at_the_camera() {
    require_peers!();
    let agents = every_ffmpeg_quit_tears_down_at_the_camera("tcp");
    // One socket, read in order: FFmpeg's own TEARDOWN is forwarded before its end of stream
    // ends the session, and flushed. FFmpeg closes with media still unread, so its socket may
    // reset instead of closing, and the kernel may drop the TEARDOWN it had queued for the
    // relay; then the relay's own frees the session (seen once in about a dozen runs on a
    // loaded box). Most must be FFmpeg's: a relay that dropped them would send all six.
    let own = agents.iter().filter(|a| a.starts_with("Lavf")).count();
    assert!(own >= RUNS - 1 && agents.iter().all(|a| a.starts_with("Lavf") || a == "rtsp-tunnel-relay"), "{agents:?}");
}

#[test]
fn ffmpeg_over_the_tunnel_quitting_always_tears_down_at_the_camera() {
    require_peers!();
    // FFmpeg's own, or the relay's when the GET's end was read before the POST's TEARDOWN.
    every_ffmpeg_quit_tears_down_at_the_camera("http");
}

/// FFmpeg killed mid-stream sends nothing more: the relay writes the TEARDOWN itself (the
/// camera's session id and aggregate URI, the route's Digest credentials) and a real camera
/// accepts it.
#[test]
fn a_killed_viewer_leaves_no_session_at_a_digest_camera() {
    require_peers!();
    let camera = GstCamera::start(Some(("admin", "s3cret")));
    let upstream = format!("rtsp://admin:s3cret@127.0.0.1:{}/cam1", camera.port);
    let relay = RelayProcess::start(
        "teardown-killed",
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{upstream}\"\nmode = \"passthrough\"\n"),
    );
    for (run, transport) in ["tcp", "http"].into_iter().enumerate() {
        let url = relay.url("/cam1");
        let mut ffmpeg = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-threads", "1", "-rtsp_transport", transport, "-i", &url])
            .args(["-an", "-frames:v", "100000", "-f", "null", "-"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ffmpeg");
        let frames = "relay_frames_total{direction=\"to_viewer\"}";
        let before = relay.metric(frames);
        let playing = eventually(Duration::from_secs(20), || relay.metric(frames) > before + 25.0);
        let _ = ffmpeg.kill();
        let _ = ffmpeg.wait();
        assert!(playing, "{transport}: no media reached FFmpeg\nrelay log:\n{}", relay.log_text());
        let torn_down = eventually(Duration::from_secs(5), || camera.teardowns() > run);
        let agents = camera.teardown_agents();
        assert!(torn_down, "{transport}: the camera freed no session: {agents:?}\nrelay log:\n{}", relay.log_text());
        assert_eq!(agents[run], "rtsp-tunnel-relay", "{transport}");
    }
}

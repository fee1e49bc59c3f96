//! Interop with real third-party peers: FFmpeg and GStreamer viewers through the relay binary
//! (2 shards) to a gst-rtsp-server camera. Each test counts decoded frames, not exit codes.

mod support;

use support::*;

#[test]
fn ffmpeg_tunnel_viewer_decodes_frames() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start(
        "ffmpeg-http",
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n", camera.url("/cam1")),
    );
    let out = ffmpeg_play("http", &relay.url("/cam1"), 50);
    assert!(ffmpeg_frames(&out) >= 50, "{}\nrelay log:\n{}", describe(&out), relay.log_text());
}

#[test]
fn gstreamer_rtsph_viewer_decodes_frames() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start(
        "gst-rtsph",
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n", camera.url("/cam1")),
    );
    let url = format!("rtsph://{}/cam1", relay.tunnel);
    let out = gst_play_counted(&url, &[], 50);
    assert!(gst_frames(&out) >= 50, "{}\nrelay log:\n{}", describe(&out), relay.log_text());
}

#[test]
fn plain_rtsp_viewer_on_the_same_port_decodes_frames() {
    require_peers!();
    let camera = GstCamera::start(None);
    let relay = RelayProcess::start(
        "ffmpeg-tcp",
        &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n", camera.url("/cam1")),
    );
    let out = ffmpeg_play("tcp", &relay.url("/cam1"), 50);
    assert!(ffmpeg_frames(&out) >= 50, "{}", describe(&out));
}

#[test]
fn fifty_concurrent_viewers_all_get_frames() {
    require_peers!();
    let camera = GstCamera::start(None);
    let routes = format!(
        "[[route]]\npath = \"/cam1\"\nupstream = \"{}\"\n[[route]]\npath = \"/cam2\"\nupstream = \"{}\"\n",
        camera.url("/cam1"),
        camera.url("/cam2")
    );
    let relay = RelayProcess::start("fifty", &routes);
    let tunnel = relay.tunnel;
    let viewers: Vec<_> = (0..50)
        .map(|i| {
            let path = if i % 2 == 0 { "/cam1" } else { "/cam2" };
            // Staggered starts: 50 decoders at once on two cores is the point, a thundering
            // start is not.
            std::thread::sleep(std::time::Duration::from_millis(40));
            std::thread::spawn(move || {
                if i % 5 == 4 {
                    let out = gst_play_counted(&format!("rtsph://{tunnel}{path}"), &[], 10);
                    (format!("gst #{i}"), gst_frames(&out) >= 10, describe(&out))
                } else {
                    let out = ffmpeg_play("http", &format!("rtsp://{tunnel}{path}"), 10);
                    (format!("ffmpeg #{i}"), ffmpeg_frames(&out) >= 10, describe(&out))
                }
            })
        })
        .collect();
    let results: Vec<_> = viewers.into_iter().map(|h| h.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(failed.is_empty(), "{} of 50 viewers got no frames; first: {} {}", failed.len(), failed[0].0, failed[0].2);
    assert!(relay.metric("relay_connections_total{kind=\"tunnel_get\"}") >= 50.0);
}

#[test]
fn camera_credentials_stay_in_the_relay() {
    require_peers!();
    let camera = GstCamera::start(Some(("admin", "s3cret")));
    let upstream = format!("rtsp://admin:s3cret@127.0.0.1:{}/cam1", camera.port);
    let relay = RelayProcess::start("cam-auth", &format!("[[route]]\npath = \"/cam1\"\nupstream = \"{upstream}\"\n"));
    // FFmpeg with -v debug prints every RTSP header it receives.
    let out = ffmpeg_play_with("http", &relay.url("/cam1"), 50, &["-v", "debug"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ffmpeg_frames(&out) >= 50, "{}", describe(&out));
    assert!(
        !err.contains("s3cret") && !err.contains(&format!("127.0.0.1:{}", camera.port)),
        "camera details reached the viewer"
    );
}

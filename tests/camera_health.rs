//! Health an operator can alert on, from the relay binary: every configured route has its
//! per-route series from the start (idle or not) and they follow reloads; a camera going down
//! is one warning and its recovery one info line, however often it is retried; a camera name
//! that does not resolve fails that route only; reloads are counted with their result; the log
//! level in the file applies on reload. The built-in demo camera plays the camera (it can be
//! stopped and started again on its port), so no external peer is needed.

mod support;

use std::time::Duration;

use rtsp_tunnel_relay::demo_camera::DemoCamera;
use support::raw_rtsp::RawViewer;
use support::*;

fn route(path: &str, upstream: &str, extra: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n{extra}")
}

fn state_of(relay: &RelayProcess, route: &str) -> Option<String> {
    let text = relay.scrape();
    let prefix = format!("relay_route_camera_state{{route=\"{route}\",state=\"");
    text.lines().find_map(|l| Some(l.strip_prefix(&prefix)?.strip_suffix("\"} 1")?.to_owned()))
}

fn wait_state(relay: &RelayProcess, route: &str, want: &str, secs: u64) {
    let ok = eventually(Duration::from_secs(secs), || state_of(relay, route).as_deref() == Some(want));
    assert!(ok, "{route} never {want} (now {:?}); log:\n{}", state_of(relay, route), relay.log_text());
}

/// Log lines about `route` containing `what`.
fn lines(relay: &RelayProcess, route: &str, what: &str) -> Vec<String> {
    let tag = format!("route={route} ");
    relay.log_text().lines().filter(|l| l.contains(what) && l.contains(&tag)).map(str::to_owned).collect()
}

const BODY_HEAD: &str = "[metrics]\nper_route = true\n[log]\nlevel = \"info\"\n";

#[test]
fn every_route_has_health_series_a_failure_is_warned_once_and_the_recovery_logged() {
    let port = free_port();
    let camera = DemoCamera::start(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    let url = camera.url();
    let body = [
        BODY_HEAD.to_owned(),
        route("/live", &url, "always_on = true\n"),
        route("/idle", &url, ""),
        route("/pass", &url, "mode = \"passthrough\"\n"),
        // RFC 2606: .invalid never resolves. The relay starts all the same.
        route("/nowhere", "rtsp://camera.invalid/stream", "always_on = true\n"),
    ]
    .concat();
    let relay = RelayProcess::start("health", &body);

    // Every configured route has its series, idle ones included.
    wait_state(&relay, "/live", "ready", 15);
    assert_eq!(relay.metric("relay_route_camera_up{route=\"/live\"}"), 1.0);
    assert_eq!(state_of(&relay, "/idle").as_deref(), Some("idle"));
    assert_eq!(relay.metric("relay_route_camera_up{route=\"/idle\"}"), 0.0);
    assert_eq!(relay.metric("relay_route_viewers{route=\"/idle\"}"), 0.0);
    assert_eq!(state_of(&relay, "/pass").as_deref(), Some("idle"));
    wait_state(&relay, "/nowhere", "retrying", 10);
    let nowhere = lines(&relay, "/nowhere", "camera failing");
    assert_eq!(nowhere.len(), 1, "{nowhere:?}");
    assert!(nowhere[0].contains("WARN") && nowhere[0].contains("cannot resolve camera.invalid"), "{nowhere:?}");

    // A passthrough route is up while one of its viewers' camera connections is open.
    let mut viewer = RawViewer::connect(relay.tunnel, "/pass");
    viewer.play((0, 1));
    wait_state(&relay, "/pass", "ready", 10);
    assert_eq!(relay.metric("relay_route_viewers{route=\"/pass\"}"), 1.0);
    viewer.teardown();
    drop(viewer);
    wait_state(&relay, "/pass", "idle", 10);
    assert_eq!(relay.metric("relay_route_viewers{route=\"/pass\"}"), 0.0);

    // The camera goes away: retried, but warned about once.
    let reconnects = relay.metric("relay_camera_reconnects_total");
    camera.shutdown();
    wait_state(&relay, "/live", "retrying", 20);
    assert_eq!(relay.metric("relay_route_camera_up{route=\"/live\"}"), 0.0);
    assert!(
        eventually(Duration::from_secs(20), || relay.metric("relay_camera_reconnects_total") >= reconnects + 3.0),
        "not retried"
    );
    let failing = lines(&relay, "/live", "camera failing");
    assert_eq!(failing.len(), 1, "one warning, not one per retry: {failing:?}");
    assert!(failing[0].contains("WARN"), "{failing:?}");
    // Its first failure (the connection closed) and then the refused connects: two reasons.
    let changed = lines(&relay, "/live", "now for another reason");
    assert!(changed.len() <= 1, "{changed:?}");
    assert!(lines(&relay, "/live", "camera recovered").is_empty());
    assert!(lines(&relay, "/nowhere", "camera failing").len() == 1, "the unresolved camera warned once");

    // It comes back: one line at info.
    let camera = DemoCamera::start(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    wait_state(&relay, "/live", "ready", 40);
    let recovered = lines(&relay, "/live", "camera recovered");
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(recovered[0].contains("INFO"), "{recovered:?}");
    drop(camera);
}

#[test]
fn reloads_move_the_route_series_and_are_counted_and_the_log_level_follows_the_file() {
    let camera = DemoCamera::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = camera.url();
    let routes = |paths: &[&str]| paths.iter().map(|p| route(p, &url, "mode = \"passthrough\"\n")).collect::<String>();
    let relay = RelayProcess::start_logging_as_configured("reloads", &(BODY_HEAD.to_owned() + &routes(&["/a", "/b"])));
    assert_eq!(relay.metric("relay_config_last_reload_successful"), 1.0);
    let loaded = relay.metric("relay_config_last_reload_success_timestamp_seconds");
    assert!(loaded > 1.7e9, "{loaded}");
    assert_eq!(relay.metric("relay_config_reload_failures_total"), 0.0);
    assert_eq!(state_of(&relay, "/b").as_deref(), Some("idle"));

    // Debug is off: a viewer's RTSP exchanges are not logged.
    let describe = |relay: &RelayProcess| {
        let mut v = RawViewer::connect(relay.tunnel, "/a");
        let url = v.url.clone();
        let r = v.request("DESCRIBE", &url, "Accept: application/sdp\r\n", Duration::from_secs(10));
        assert_eq!(r.status, 200);
    };
    describe(&relay);
    assert!(!relay.log_text().contains("DEBUG"), "{}", relay.log_text());

    // A good reload: /b goes, /c comes (idle at once), the level becomes debug.
    let text = std::fs::read_to_string(&relay.config).unwrap();
    let head = &text[..text.find("[metrics]").unwrap()];
    let write = |body: &str| std::fs::write(&relay.config, format!("{head}{body}")).unwrap();
    write(&(BODY_HEAD.replace("\"info\"", "\"debug\"") + &routes(&["/a", "/c"])));
    relay.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || state_of(&relay, "/c").as_deref() == Some("idle")));
    assert!(state_of(&relay, "/b").is_none(), "a removed route keeps its series");
    assert_eq!(relay.metric("relay_config_reloads_total"), 1.0);
    assert_eq!(relay.metric("relay_config_last_reload_successful"), 1.0);
    describe(&relay);
    assert!(
        eventually(Duration::from_secs(5), || relay.log_text().contains("DEBUG")),
        "the reloaded level did not apply:\n{}",
        relay.log_text()
    );

    // A bad reload: counted, visible, and the routes stay.
    write("[metrics\n");
    relay.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || relay.metric("relay_config_reload_failures_total") == 1.0));
    assert_eq!(relay.metric("relay_config_last_reload_successful"), 0.0);
    assert_eq!(relay.metric("relay_config_reloads_total"), 2.0);
    assert!(relay.metric("relay_config_last_reload_success_timestamp_seconds") >= loaded);
    assert_eq!(state_of(&relay, "/c").as_deref(), Some("idle"));
}

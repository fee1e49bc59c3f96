//! The RTSP parser and the rewriter: whatever parses re-serialises and re-parses to the same
//! message, and rewriting never panics nor leaves a camera URL behind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::rewrite::{UrlMap, rewrite_to_client};
use rtsp_tunnel_relay::proto::rtsp::{MessageLimits, parse_message};

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits { max_head_bytes: 4096, max_body_bytes: 4096 };
    let Ok(Some((msg, used))) = parse_message(data, &limits) else { return };
    assert!(used <= data.len());
    // Serialising normalises bare LF to CRLF and `Name:value` to `Name: value`, so a head near
    // the limit may come back a little longer; the round trip is about content, not size.
    let relaxed = MessageLimits { max_head_bytes: 3 * limits.max_head_bytes, ..limits };
    let mut again = parse_message(&msg.to_bytes(), &relaxed).unwrap().unwrap().0;
    let mut original = msg.clone();
    again.remove_header("Content-Length");
    original.remove_header("Content-Length");
    assert_eq!(again, original);
    let map = UrlMap::new("rtsp://relay:8080/cam1", "rtsp://10.9.8.7:554/Streaming/Channels/101").unwrap();
    let mut down = msg.clone();
    let handed_out = rewrite_to_client(&mut down, &map);
    // Where the rewriter owns URLs (request URI, Content-Base, Content-Location, Location,
    // RTP-Info, SDP a=control), the camera's never reaches the viewer. Free-text headers are
    // the camera's own business and pass through.
    let camera = "rtsp://10.9.8.7:554/Streaming/Channels/101";
    assert!(!down.uri().is_some_and(|u| u.starts_with(camera)), "{down:?}");
    for (name, value) in &down.headers {
        let owned =
            ["Content-Base", "Content-Location", "Location", "RTP-Info"].iter().any(|h| name.eq_ignore_ascii_case(h));
        assert!(!(owned && value.contains(camera)), "{name}: {value}");
    }
    if let Ok(sdp) = std::str::from_utf8(&down.body) {
        for line in sdp.split('\n') {
            let control = line.trim_end_matches('\r').strip_prefix("a=control:");
            assert!(!control.is_some_and(|c| c.trim().starts_with(camera)), "{line}");
        }
    }
    // A request URI the relay sends the camera is always on the camera's origin.
    if let Some(Ok(up)) = msg.uri().map(|u| map.camera_uri(u, true, &handed_out)) {
        assert!(up == "*" || up.starts_with("rtsp://10.9.8.7:554/"), "{up}");
    }
});

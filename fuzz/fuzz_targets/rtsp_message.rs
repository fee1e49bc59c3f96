//! The RTSP parser and the rewriter: whatever parses re-serialises and re-parses to the same
//! message, and rewriting never panics nor leaves a camera URL behind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::rewrite::{UrlMap, rewrite_to_client, rewrite_to_upstream};
use rtsp_tunnel_relay::proto::rtsp::{MessageLimits, parse_message};

fuzz_target!(|data: &[u8]| {
    let limits = MessageLimits { max_head_bytes: 4096, max_body_bytes: 4096 };
    let Ok(Some((msg, used))) = parse_message(data, &limits) else { return };
    assert!(used <= data.len());
    let mut again = parse_message(&msg.to_bytes(), &limits).unwrap().unwrap().0;
    let mut original = msg.clone();
    again.remove_header("Content-Length");
    original.remove_header("Content-Length");
    assert_eq!(again, original);
    let map = UrlMap::new("rtsp://relay:8080/cam1", "rtsp://10.9.8.7:554/Streaming/Channels/101").unwrap();
    let mut down = msg.clone();
    rewrite_to_client(&mut down, &map);
    let text = String::from_utf8_lossy(&down.to_bytes()).into_owned();
    // Absolute camera URLs of the route's path never reach the viewer.
    assert!(!text.contains("rtsp://10.9.8.7:554/Streaming/Channels/101"), "{text}");
    let mut up = msg;
    rewrite_to_upstream(&mut up, &map);
    let _ = up.to_bytes();
});

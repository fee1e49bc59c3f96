//! The session state machine driven by arbitrary viewer and camera bytes and events: it never
//! panics, never forwards camera bytes outside the chunk fed, and ends exactly once.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::config::{Config, RouteTable};
use rtsp_tunnel_relay::metrics::UpstreamErrorKind;
use rtsp_tunnel_relay::proto::rtsp::MessageLimits;
use rtsp_tunnel_relay::proto::session::{OpenGate, Output, Session, SessionParams, ViewerStream};

fuzz_target!(|data: &[u8]| {
    let text =
        "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://u:p@10.0.0.5:554/s\"\nmode=\"passthrough\"\n";
    let routes = RouteTable::new(Config::from_toml(text).unwrap().1);
    let params = SessionParams {
        limits: MessageLimits { max_head_bytes: 2048, max_body_bytes: 2048 },
        response_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(3),
        cnonce_seed: 1,
        viewer_ip: "127.0.0.1".parse().unwrap(),
        viewer_tls: false,
        nonce_ttl: Duration::from_secs(60),
        max_pending_requests: 8,
        post_from_any_address: false,
        auth_gate: std::sync::Arc::new(OpenGate),
        access: Default::default(),
    };
    let t0 = Instant::now();
    let mut s = Session::new(params, None, "relay:8080", t0);
    let mut closes = 0;
    // The input is a script: a tag byte picks the event, a length byte the chunk.
    let mut rest = data;
    let mut now = t0;
    while rest.len() >= 2 {
        let (tag, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        now += Duration::from_millis(10);
        let mut out = Vec::new();
        match tag % 7 {
            0 => s.on_viewer_bytes(ViewerStream::Plain, chunk, now, &routes, &mut out),
            1 => s.on_viewer_bytes(ViewerStream::TunnelCommands, chunk, now, &routes, &mut out),
            2 => s.on_viewer_bytes(ViewerStream::TunnelData, chunk, now, &routes, &mut out),
            3 => s.on_upstream_bytes(chunk, now, &mut out),
            4 => s.on_upstream_connected(now, &mut out),
            5 => s.on_upstream_closed(UpstreamErrorKind::Reset, &mut out),
            _ => s.on_tick(now + Duration::from_secs(6), &mut out),
        }
        for o in &out {
            match o {
                Output::ForwardToViewer { range, .. } => assert!(tag % 7 == 3 && range.end <= chunk.len()),
                Output::Close(_) => closes += 1,
                _ => {}
            }
        }
    }
    assert!(closes <= 1, "a session ends once");
});

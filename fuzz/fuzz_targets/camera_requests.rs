//! The gatekeeper property over the whole session: whatever bytes a viewer sends (tunnel or
//! plain, in any pieces), every write the relay makes to the camera reads as exactly one
//! message (or whole `$` frames) to a camera that ends lines at a bare CR or LF, names only the
//! route's camera path or one the camera handed out, and carries the route's query (or the one
//! the camera handed out with that URL).
#![no_main]
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::config::{Config, RouteTable};
use rtsp_tunnel_relay::proto::camera_audit::{Seen, is_at_or_below, path_and_query, read_one};
use rtsp_tunnel_relay::proto::rtsp::{MessageLimits, parse_message};
use rtsp_tunnel_relay::proto::session::{OpenGate, Output, Session, SessionParams, ViewerStream};

const ORIGIN: &str = "rtsp://10.0.0.5:554";
const CAMERA_PATH: &str = "/s/101";
const QUERY: &str = "channel=1";

fn check(out: &[Output]) {
    for o in out {
        let Output::ToUpstream(bytes) = o else { continue };
        let seen = read_one(bytes).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)));
        let Seen::Request(req) = seen else { continue };
        if req.uri == "*" {
            assert_eq!(req.method, "OPTIONS");
            continue;
        }
        let (path, query) = path_and_query(&req.uri, ORIGIN).unwrap_or_else(|| panic!("origin: {}", req.uri));
        assert!(is_at_or_below(path, CAMERA_PATH) || is_at_or_below(path, "/other/t2"), "path: {}", req.uri);
        let handed = (path == "/s/101/t1" && query == Some("k=cam")) || (path == "/other/t2" && query.is_none());
        assert!(query == Some(QUERY) || handed, "query: {}", req.uri);
    }
}

fuzz_target!(|data: &[u8]| {
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/cam1\"\nupstream=\"rtsp://u:p@10.0.0.5:554{CAMERA_PATH}?{QUERY}\"\nmode=\"passthrough\"\n"
    );
    let routes = RouteTable::new(Config::from_toml(&text).unwrap().1);
    let params = SessionParams {
        limits: MessageLimits { max_head_bytes: 2048, max_body_bytes: 2048 },
        response_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        cnonce_seed: 1,
        viewer_ip: "127.0.0.1".parse().unwrap(),
        viewer_tls: false,
        nonce_ttl: Duration::from_secs(60),
        max_pending_requests: 64,
        post_from_any_address: false,
        auth_gate: Arc::new(OpenGate),
        access: Default::default(),
    };
    let Some((&mode, script)) = data.split_first() else { return };
    let tunnel = mode & 1 == 1;
    let now = Instant::now();
    let route = if tunnel { routes.lookup("/cam1") } else { None };
    let mut s = Session::new(params, route, "relay:8080", now);
    if tunnel {
        s.on_commands_bound("127.0.0.1".parse().unwrap(), false).unwrap();
    }
    let mut challenged = false;
    // The script: a length byte, then that many viewer bytes, again and again.
    let mut rest = script;
    while let Some((&len, tail)) = rest.split_first() {
        let chunk = &tail[..(len as usize).min(tail.len())];
        rest = &tail[chunk.len()..];
        let mut out = Vec::new();
        if tunnel {
            let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
            s.on_viewer_bytes(ViewerStream::TunnelCommands, b64.as_bytes(), now, &routes, &mut out);
        } else {
            s.on_viewer_bytes(ViewerStream::Plain, chunk, now, &routes, &mut out);
        }
        if out.iter().any(|o| matches!(o, Output::ConnectUpstream(_))) {
            s.on_upstream_connected(now, &mut out);
        }
        check(&out);
        let limits = MessageLimits::default();
        let cseqs: Vec<u32> = out
            .iter()
            .filter_map(|o| match o {
                Output::ToUpstream(b) => parse_message(b, &limits).ok().flatten().and_then(|(m, _)| m.cseq()),
                _ => None,
            })
            .collect();
        for cseq in cseqs {
            // A Basic-auth camera: one challenge, then answers that hand out two more URLs.
            let answer = if !challenged {
                challenged = true;
                format!("RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"c\"\r\n\r\n")
            } else {
                let sdp = format!("v=0\r\na=control:{ORIGIN}/s/101/t1?k=cam\r\na=control:{ORIGIN}/other/t2\r\n");
                format!(
                    "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                )
            };
            let mut out = Vec::new();
            s.on_upstream_bytes(answer.as_bytes(), now, &mut out);
            check(&out);
        }
        if s.is_closed() {
            return;
        }
    }
});

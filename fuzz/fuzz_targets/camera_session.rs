//! A broken or hostile camera against the relay's own session with a shared camera: whatever it
//! answers (a fuzzed SDP among them) and streams, in whatever pieces, across reconnects and
//! timeouts, the session never panics, every media frame it reports lies within the chunk fed,
//! and its GOP cache stays within its bound.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtsp_tunnel_relay::proto::camera_session::{CameraOutput, CameraParams, CameraSession, MediaFrame};
use rtsp_tunnel_relay::proto::frame_split::FramePayload;
use rtsp_tunnel_relay::proto::rtsp::{Message, MessageLimits, parse_message};

/// An H.264 video track, an H.265 one and audio: every keyframe reader is reachable.
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=cam\r\nt=0 0\r\na=control:*\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n\
m=video 0 RTP/AVP 97\r\na=rtpmap:97 H265/90000\r\na=control:trackID=1\r\n\
m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=2\r\n";

/// A 200 to the camera request `req`; `body`, when given, is the DESCRIBE's SDP.
fn answer(req: &Message, body: Option<&[u8]>) -> Vec<u8> {
    let mut m = Message::response(200, "OK");
    m.set_header("CSeq", req.cseq().unwrap_or(0).to_string());
    match req.method().unwrap_or("") {
        "OPTIONS" => m.set_header("Public", "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"),
        "DESCRIBE" => {
            m.set_header("Content-Base", "rtsp://10.0.0.5:554/s/");
            m.set_header("Content-Type", "application/sdp");
            m.body = bytes::Bytes::copy_from_slice(body.unwrap_or(SDP.as_bytes()));
        }
        "SETUP" => {
            m.set_header("Session", "F00D;timeout=30");
            m.set_header("Transport", req.header("Transport").unwrap_or("RTP/AVP/TCP;interleaved=0-1"));
        }
        "PLAY" => {
            m.set_header("Session", "F00D");
            m.set_header("RTP-Info", "url=rtsp://10.0.0.5:554/s/trackID=0;seq=100;rtptime=9000");
        }
        _ => m.set_header("Session", "F00D"),
    }
    m.to_bytes()
}

fn check(media: &[MediaFrame], chunk_len: usize) {
    for f in media {
        if let FramePayload::InChunk(r) = &f.payload {
            assert!(r.start <= r.end && r.end <= chunk_len, "a frame outside the chunk fed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut params = CameraParams::new("rtsp://10.0.0.5:554/s", "10.0.0.5:554".parse().unwrap());
    params.limits = MessageLimits { max_head_bytes: 2048, max_body_bytes: 4096 };
    params.gop_cache_bytes = Some(16 * 1024);
    params.seed = 3;
    let mut cam = CameraSession::new(params, t0);
    cam.set_viewers(1, t0);
    let mut now = t0;
    let mut connected = false;
    let mut last_request: Option<Message> = None;
    // The input is a script: a tag byte picks the event, a length byte the chunk.
    let mut rest = data;
    while rest.len() >= 2 {
        let (tag, len) = (rest[0], rest[1] as usize);
        rest = &rest[2..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        now += Duration::from_millis(40);
        let mut media = Vec::new();
        match tag % 7 {
            0 => {
                let mut bytes = chunk.to_vec();
                cam.handle_camera_bytes(now, &mut bytes, &mut media);
                check(&media, bytes.len());
            }
            // The camera answers its last request; an odd first byte makes a DESCRIBE's SDP the
            // chunk itself.
            1 => {
                if let Some(req) = last_request.take() {
                    let sdp = (chunk.first().is_some_and(|b| b % 2 == 1)).then_some(chunk);
                    let mut bytes = answer(&req, sdp);
                    cam.handle_camera_bytes(now, &mut bytes, &mut media);
                    check(&media, bytes.len());
                }
            }
            // One interleaved frame: the chunk's first byte picks the channel, the rest is the
            // payload.
            2 => {
                let (channel, payload) = chunk.split_first().map_or((0, &[][..]), |(c, p)| (c % 6, p));
                let mut bytes = vec![b'$', channel];
                bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                bytes.extend_from_slice(payload);
                cam.handle_camera_bytes(now, &mut bytes, &mut media);
                check(&media, bytes.len());
            }
            3 if connected => {
                connected = false;
                cam.handle_camera_closed(now);
            }
            3 => {
                connected = true;
                cam.handle_connected(now);
            }
            4 => {
                now += Duration::from_secs(11);
                cam.handle_timeout(now);
            }
            5 => cam.set_viewers(chunk.len() % 3, now),
            _ => cam.handle_connect_failed(now),
        }
        while let Some(o) = cam.poll_output() {
            match o {
                CameraOutput::Send(bytes) => {
                    if let Ok(Some((m, _))) = parse_message(&bytes, &MessageLimits::default()) {
                        last_request = Some(m);
                    }
                }
                CameraOutput::Connect(_) => connected = false,
                _ => {}
            }
        }
        if let Some(g) = cam.gop_cache() {
            assert!(g.bytes() <= g.max_bytes(), "the GOP cache outgrew its bound");
        }
    }
});

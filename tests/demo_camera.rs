//! The demo camera played by real clients (FFmpeg, GStreamer): directly over RTSP/TCP, and through
//! the relay's HTTP tunnel as `rtsp-tunnel-relay` with no arguments serves it; plus raw socket
//! checks of its RTSP answers and of its shutdown.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rtsp_tunnel_relay::config::Limits;
use rtsp_tunnel_relay::demo_camera::DemoCamera;
use rtsp_tunnel_relay::proto::rtsp::{Message, MessageLimits, parse_message};

mod fake;
mod support;

const RUN_LIMIT: Duration = Duration::from_secs(30);

fn start() -> DemoCamera {
    DemoCamera::start("127.0.0.1:0".parse().unwrap()).expect("demo camera starts")
}

/// Whether `program` runs (FFmpeg spells it `-version`, GStreamer `--version`).
fn installed(program: &str) -> bool {
    let flag = if program == "ffmpeg" { "-version" } else { "--version" };
    Command::new(program).arg(flag).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Waits for `child` at most [`RUN_LIMIT`], killing it on overrun; returns its output and
/// whether it finished by itself.
fn wait_bounded(mut child: Child) -> (Output, bool) {
    let deadline = Instant::now() + RUN_LIMIT;
    let finished = loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => break true,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                break false;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    (child.wait_with_output().expect("collect output"), finished)
}

/// The last `frame=N` progress figure FFmpeg printed.
fn ffmpeg_frames(stderr: &str) -> u64 {
    stderr
        .split(['\r', '\n'])
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("frame=")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .next_back()
        .unwrap_or(0)
}

/// Plays `url` with FFmpeg for 50 frames and checks they decoded cleanly.
fn ffmpeg_plays(url: &str, transport: &str) {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-rtsp_transport", transport, "-i", url])
        .args(["-frames:v", "50", "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg");
    let (out, finished) = wait_bounded(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(finished, "ffmpeg did not finish in time:\n{stderr}");
    assert!(out.status.success(), "ffmpeg failed:\n{stderr}");
    let frames = ffmpeg_frames(&stderr);
    assert!(frames >= 50, "ffmpeg decoded {frames} frames:\n{stderr}");
    assert!(stderr.contains("Video: h264") && stderr.contains("640x360"), "unexpected stream description:\n{stderr}");
    // Decoder or depacketiser complaints (missing slices, broken fragments, bad sequence).
    for bad in [
        "error while decoding",
        "concealing",
        "missing picture",
        "non-existing PPS",
        "no frame!",
        "Invalid data",
        "RTP: missed",
        "corrupt",
    ] {
        assert!(!stderr.contains(bad), "ffmpeg reported `{bad}`:\n{stderr}");
    }
}

/// Plays `location` with GStreamer's rtspsrc through the H.264 decoder until 50 frames came out.
fn gstreamer_plays(location: &str, protocols: Option<&str>) {
    let protocols = protocols.map(|p| format!("protocols={p}")).unwrap_or_default();
    let pipeline = format!(
        "rtspsrc location={location} {protocols} ! rtph264depay ! h264parse ! avdec_h264 \
         ! identity eos-after=51 silent=false ! fakesink sync=false"
    );
    let child = Command::new("gst-launch-1.0")
        .arg("-v")
        .args(pipeline.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gst-launch-1.0");
    let (out, finished) = wait_bounded(child);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(finished, "gst-launch-1.0 did not finish in time:\n{text}");
    // `identity silent=false` logs one chain line per decoded frame it passes; `eos-after=N`
    // passes N-1 buffers and ends the stream in place of the Nth.
    let decoded = text.lines().filter(|l| l.contains("identity0") && l.contains("chain")).count();
    assert!(decoded >= 50, "GStreamer passed {decoded} decoded frames:\n{text}");
    assert!(text.contains("Got EOS"), "no end of stream:\n{text}");
    assert!(out.status.success(), "gst-launch-1.0 failed:\n{text}");
    assert!(text.contains("video/x-raw") && text.contains("width=(int)640"), "decoder output caps missing:\n{text}");
}

#[test]
fn ffmpeg_plays_over_tcp() {
    skip_when_quick!();
    if !installed("ffmpeg") {
        eprintln!("SKIPPED: ffmpeg is not installed");
        return;
    }
    let cam = start();
    ffmpeg_plays(&cam.url(), "tcp");
    cam.shutdown();
}

#[test]
fn gstreamer_plays_over_tcp() {
    skip_when_quick!();
    if !installed("gst-launch-1.0") {
        eprintln!("SKIPPED: gst-launch-1.0 is not installed");
        return;
    }
    let cam = start();
    gstreamer_plays(&cam.url(), Some("tcp"));
    cam.shutdown();
}

/// What `rtsp-tunnel-relay` with no arguments sets up: the demo camera behind a `/demo` route,
/// played by tunnelling viewers.
#[test]
fn tunnelling_viewers_play_through_the_relay() {
    skip_when_quick!();
    if !installed("ffmpeg") || !installed("gst-launch-1.0") {
        eprintln!("SKIPPED: ffmpeg or gst-launch-1.0 is not installed");
        return;
    }
    let cam = start();
    let relay = fake::Relay::start(&[("/demo", cam.url())], 2, Limits::default());
    let port = relay.addr.port();
    ffmpeg_plays(&format!("rtsp://127.0.0.1:{port}/demo"), "http");
    gstreamer_plays(&format!("rtsph://127.0.0.1:{port}/demo"), None);
    relay.stop();
    cam.shutdown();
}

/// A minimal RTSP client on a raw socket, to check answers exactly.
struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { sock, buf: Vec::new(), cseq: 0 }
    }

    fn request(&mut self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Message {
        self.cseq += 1;
        let mut m = Message::request(method, uri);
        m.set_header("CSeq", self.cseq.to_string());
        for (n, v) in headers {
            m.set_header(n, *v);
        }
        self.sock.write_all(&m.to_bytes()).unwrap();
        let r = self.response();
        assert_eq!(r.cseq(), Some(self.cseq), "CSeq echoed");
        r
    }

    /// The next RTSP message or interleaved frame (`Err((channel, payload))`).
    fn next(&mut self) -> Result<Message, (u8, Vec<u8>)> {
        loop {
            if self.buf.first() == Some(&b'$') && self.buf.len() >= 4 {
                let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                if self.buf.len() >= 4 + len {
                    let ch = self.buf[1];
                    let payload = self.buf[4..4 + len].to_vec();
                    self.buf.drain(..4 + len);
                    return Err((ch, payload));
                }
            } else if !self.buf.is_empty() && self.buf[0] != b'$' {
                if let Some((m, used)) = parse_message(&self.buf, &MessageLimits::default()).unwrap() {
                    self.buf.drain(..used);
                    return Ok(m);
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.sock.read(&mut chunk).expect("read from camera");
            assert!(n > 0, "camera closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn response(&mut self) -> Message {
        loop {
            if let Ok(m) = self.next() {
                return m;
            }
        }
    }
}

#[test]
fn rtsp_dialogue() {
    let cam = start();
    let url = cam.url();
    let mut c = Client::connect(cam.local_addr());

    let r = c.request("OPTIONS", &url, &[]);
    assert_eq!(r.status(), Some(200));
    assert!(r.header("Public").unwrap().contains("GET_PARAMETER"));

    let r = c.request("DESCRIBE", &format!("{url}x"), &[]);
    assert_eq!(r.status(), Some(404));

    let r = c.request("DESCRIBE", &url, &[("Accept", "application/sdp")]);
    assert_eq!(r.status(), Some(200));
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert_eq!(r.header("Content-Base"), Some(format!("{url}/").as_str()));
    let sdp = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(sdp.contains("a=rtpmap:96 H264/90000"), "{sdp}");
    assert!(sdp.contains("sprop-parameter-sets="), "{sdp}");
    assert!(sdp.contains("a=control:trackID=0"), "{sdp}");

    let track = format!("{url}/trackID=0");
    let r = c.request("SETUP", &track, &[("Transport", "RTP/AVP;unicast;client_port=5000-5001")]);
    assert_eq!(r.status(), Some(461));

    let r = c.request("PLAY", &url, &[("Session", "12345")]);
    assert_eq!(r.status(), Some(454));

    let r = c.request(
        "SETUP",
        &track,
        &[("Transport", "RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1")],
    );
    assert_eq!(r.status(), Some(200));
    let transport = r.header("Transport").unwrap();
    assert!(transport.starts_with("RTP/AVP/TCP;unicast;interleaved=0-1"), "{transport}");
    let session_header = r.header("Session").unwrap().to_owned();
    let (session, timeout) = session_header.split_once(';').unwrap();
    assert_eq!(timeout, "timeout=60");

    let r = c.request("PLAY", &format!("{url}/"), &[("Session", session)]);
    assert_eq!(r.status(), Some(200));
    let info = r.header("RTP-Info").unwrap();
    assert!(info.starts_with(&format!("url={track};seq=")), "{info}");
    let seq: u16 = info.split(';').find_map(|p| p.strip_prefix("seq=")).unwrap().parse().unwrap();

    // Media follows on channel 0; its first packet carries the announced sequence number, and
    // an RTCP sender report comes on channel 1.
    let mut rtp = 0;
    let mut rtcp = 0;
    let mut first_seq = None;
    while rtp < 100 || rtcp == 0 {
        match c.next() {
            Err((0, p)) => {
                assert_eq!(p[0] >> 6, 2, "RTP version 2");
                assert_eq!(p[1] & 0x7f, 96, "payload type 96");
                first_seq.get_or_insert(u16::from_be_bytes([p[2], p[3]]));
                rtp += 1;
            }
            Err((1, p)) => {
                assert_eq!(p[1], 200, "RTCP sender report");
                rtcp += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(first_seq, Some(seq));

    // Keepalive in the middle of the media; the answer arrives between frames.
    c.sock
        .write_all(format!("GET_PARAMETER {url} RTSP/1.0\r\nCSeq: 99\r\nSession: {session}\r\n\r\n").as_bytes())
        .unwrap();
    let r = c.response();
    assert_eq!((r.status(), r.cseq()), (Some(200), Some(99)));

    c.sock.write_all(format!("TEARDOWN {url} RTSP/1.0\r\nCSeq: 100\r\nSession: {session}\r\n\r\n").as_bytes()).unwrap();
    let r = c.response();
    assert_eq!((r.status(), r.cseq()), (Some(200), Some(100)));
    cam.shutdown();
}

#[test]
fn shutdown_disconnects_clients() {
    let cam = start();
    let mut c = Client::connect(cam.local_addr());
    let r = c.request("OPTIONS", "*", &[]);
    assert_eq!(r.status(), Some(200));
    let addr = cam.local_addr();
    cam.shutdown();
    // The client's connection is closed, and nothing listens any more.
    let mut rest = Vec::new();
    let n = c.sock.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(TcpStream::connect(addr).is_err());
    let _ = c.sock.shutdown(Shutdown::Both);
}

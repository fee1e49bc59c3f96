//! Shared by the load generator's tests: its cameras as a child process (so a test can pause or
//! kill them), an in-process relay, and `loadtest viewers` runs read back from their JSON report.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rtsp_tunnel_relay::config::{Acl, ListenerSettings, Runtime, Settings};
use rtsp_tunnel_relay::metrics::ShardMetrics;
use rtsp_tunnel_relay::shard::{Shards, StartOptions};

/// The quick loop (`RELAY_QUICK=1`, as `scripts/test.sh --quick` sets it): these tests are load
/// runs (cameras, viewers, decoders as child processes, seconds each) and return at once.
pub fn quick() -> bool {
    std::env::var_os("RELAY_QUICK").is_some_and(|v| v == "1")
}

/// Skips the calling test in the quick loop ([`quick`]).
#[macro_export]
macro_rules! skip_when_quick {
    () => {
        if common::quick() {
            eprintln!("skipped: a load run (RELAY_QUICK=1)");
            return;
        }
    };
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.0.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig}");
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn start_cameras(streams: u32) -> (Killed, SocketAddr) {
    start_cameras_with(streams, &[])
}

/// Cameras with extra `loadtest camera` arguments (`--gop`, `--json` ...).
pub fn start_cameras_with(streams: u32, extra: &[&str]) -> (Killed, SocketAddr) {
    start_cameras_at(streams, "500k", extra)
}

/// Cameras at `bitrate` with extra arguments.
///
/// The port is found free and then bound by the camera process: in between, another test's
/// outgoing connection may take it as its local port, and the camera exits unable to bind. So a
/// camera that exits before it answers is started again on another port.
pub fn start_cameras_at(streams: u32, bitrate: &str, extra: &[&str]) -> (Killed, SocketAddr) {
    for _ in 0..5 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        if let Some(cams) = try_start_cameras_on(addr, streams, bitrate, extra) {
            return (cams, addr);
        }
    }
    panic!("cameras did not start on five ports in a row");
}

/// Cameras listening on `addr` (a camera restarted where the last one was).
pub fn start_cameras_on(addr: SocketAddr, streams: u32, bitrate: &str, extra: &[&str]) -> Killed {
    try_start_cameras_on(addr, streams, bitrate, extra).expect("cameras did not start (the port is taken)")
}

/// Cameras on `addr`, once they accept; `None` when the process exited first (it could not bind).
fn try_start_cameras_on(addr: SocketAddr, streams: u32, bitrate: &str, extra: &[&str]) -> Option<Killed> {
    let child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["camera", "--listen", &addr.to_string(), "--streams", &streams.to_string(), "--bitrate", bitrate])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut cams = Killed(child);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if cams.0.try_wait().ok().flatten().is_some() {
            return None;
        }
        if TcpStream::connect(addr).is_ok() {
            return Some(cams);
        }
        assert!(Instant::now() < end, "cameras did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `loadtest viewers` run in progress: its progress lines arrive on `lines`.
pub struct ViewersRun {
    child: Child,
    pub lines: Receiver<String>,
    json: std::path::PathBuf,
}

/// Starts `loadtest viewers` (bounded by `timeout`), `sessions` over `paths` paths for `duration`.
pub fn start_viewers(target: SocketAddr, mode: &str, sessions: usize, paths: usize, extra: &[&str]) -> ViewersRun {
    start_viewers_under(&[], target, mode, sessions, paths, extra)
}

/// [`start_viewers`] run by a wrapper command (`taskset -c 0`: the generator pinned to one CPU).
pub fn start_viewers_under(
    wrapper: &[&str],
    target: SocketAddr,
    mode: &str,
    sessions: usize,
    paths: usize,
    extra: &[&str],
) -> ViewersRun {
    let dir = std::env::temp_dir().join(format!("lt-test-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let (program, before) = match wrapper.split_first() {
        Some((p, rest)) => (*p, [rest, &["timeout"]].concat()),
        None => ("timeout", Vec::new()),
    };
    let mut child = Command::new(program)
        .args(before)
        .args(["-k", "5", "90", env!("CARGO_BIN_EXE_loadtest"), "viewers", "--target", &target.to_string()])
        .args(["--mode", mode, "--sessions", &sessions.to_string(), "--paths", &paths.to_string()])
        .args(["--ramp", "500/s", "--source-ips", "127.0.0.2-127.0.0.9", "--json", json.to_str().unwrap()])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    ViewersRun { child, lines, json }
}

impl ViewersRun {
    /// Waits for a progress line with `n` sessions playing; returns the lines read so far.
    pub fn wait_playing(&self, n: u64) -> Vec<String> {
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else { continue };
            let playing = playing_in(&line);
            seen.push(line);
            if playing == Some(n) {
                return seen;
            }
        }
        panic!("never {n} playing: {seen:#?}");
    }

    /// Waits for the run to end; its stderr lines (after those already taken) and report.
    pub fn finish(mut self) -> (Vec<String>, serde_json::Value) {
        let status = self.child.wait().unwrap();
        let lines: Vec<String> = self.lines.try_iter().collect();
        assert!(status.success(), "viewers: {status}\n{}", lines.join("\n"));
        let report = serde_json::from_str(&std::fs::read_to_string(&self.json).unwrap()).unwrap();
        (lines, report)
    }
}

/// The `playing N` count of a progress line.
pub fn playing_in(line: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == "playing")?;
    words.next()?.parse().ok()
}

/// A whole `loadtest viewers` run of 3 s.
pub fn viewers(target: SocketAddr, mode: &str, sessions: usize, paths: usize, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--duration", "3s"];
    args.extend_from_slice(extra);
    start_viewers(target, mode, sessions, paths, &args).finish().1
}

/// Every session reached PLAY and played to the end, every packet due came and passed its checks.
pub fn assert_clean(report: &serde_json::Value, sessions: u64) {
    let brief = |r: &serde_json::Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().retain(|k, _| !k.ends_with("_us") && k != "sessions" && k != "throughput");
        format!("{r:#}")
    };
    assert_eq!(report["sessions_established"], sessions, "{}", brief(report));
    assert_eq!(report["sessions_survived"], sessions, "{}", brief(report));
    assert_eq!(report["sessions_failed"], 0, "{}", brief(report));
    assert_eq!(report["packets_lost"], 0, "{}", brief(report));
    assert_eq!(report["rtp_seq_gaps"], 0, "{}", brief(report));
    assert!(report["packets_expected"].as_u64().unwrap() > sessions * 10, "{}", brief(report));
    assert!(report["packets_timed"].as_u64().unwrap() > sessions * 10, "too little media: {}", brief(report));
    let faults = &report["integrity"];
    assert!(faults.as_object().unwrap().values().all(|v| v == 0), "integrity: {faults}");
}

/// An in-process relay routing /cam0.. to the cameras, with an HTTPS listener when `tls`.
/// Passthrough: each viewer has its own camera session, so a camera fault reaches exactly the
/// sessions the instrument must see it in.
pub fn relay(cams: SocketAddr, streams: usize, tls: bool) -> Shards {
    relay_with(cams, streams, tls, "mode=\"passthrough\"\n")
}

/// An in-process relay whose routes share one camera session among their viewers (the
/// default route mode, GOP cache on).
pub fn shared_relay(cams: SocketAddr, streams: usize) -> Shards {
    relay_with(cams, streams, false, "mode=\"shared\"\n")
}

/// An in-process relay with `route_keys` (TOML lines) on every route.
pub fn relay_with(cams: SocketAddr, streams: usize, tls: bool, route_keys: &str) -> Shards {
    relay_configured(cams, streams, tls, "", route_keys)
}

/// An in-process relay with `sections` (TOML, e.g. `[limits]` keys) before its routes.
pub fn relay_configured(cams: SocketAddr, streams: usize, tls: bool, sections: &str, route_keys: &str) -> Shards {
    let mut text = format!("[listen]\ntunnel=[\"127.0.0.1:0\"]\n{sections}");
    for i in 0..streams {
        text.push_str(&format!("[[route]]\npath=\"/cam{i}\"\nupstream=\"rtsp://{cams}/cam{i}\"\n{route_keys}"));
    }
    let mut settings = Settings::from_toml(&text).unwrap();
    settings.runtime = Runtime { shards: 2, recv_buffers: 1024, ..Runtime::default() };
    if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("lt-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.key_pair.serialize_pem()).unwrap();
        let config = rtsp_tunnel_relay::tls::load_server_config(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        let addr = "127.0.0.1:0".parse().unwrap();
        settings.listeners.push(ListenerSettings { addr, acl: Acl::default(), tls: Some(config) });
    }
    Shards::start(StartOptions {
        settings: Arc::new(settings),
        metrics: (0..2).map(|i| Arc::new(ShardMetrics::new(i))).collect(),
    })
    .unwrap()
}

/// What a [`frame_proxy`] does with one interleaved frame from the camera.
pub enum Act {
    Pass,
    Drop,
    /// Holds the camera's stream this long, then passes the frame (a relay that froze).
    Freeze(Duration),
}

/// A relay double between viewers and the cameras: RTSP messages pass byte for byte; each
/// interleaved frame from the camera (`$` header included, mutable) goes through `f` with its
/// index among the frames since the PLAY reply and the time since it.
pub fn frame_proxy<F>(camera: SocketAddr, f: F) -> SocketAddr
where
    F: Fn(&mut [u8], u64, Duration) -> Act + Send + Sync + 'static,
{
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    std::thread::spawn(move || {
        for viewer in listener.incoming() {
            let Ok(mut viewer) = viewer else { return };
            let Ok(mut cam) = TcpStream::connect(camera) else { return };
            let (mut v2, mut c2) = (viewer.try_clone().unwrap(), cam.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut v2, &mut c2));
            let f = f.clone();
            std::thread::spawn(move || {
                let (mut buf, mut pending) = (vec![0u8; 64 * 1024], Vec::new());
                let (mut play_at, mut index): (Option<Instant>, u64) = (None, 0);
                while let Ok(n) = cam.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    let mut out = Vec::new();
                    loop {
                        let len = if pending.first() == Some(&b'$') {
                            if pending.len() < 4 {
                                break;
                            }
                            4 + u16::from_be_bytes([pending[2], pending[3]]) as usize
                        } else {
                            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { break };
                            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                            if head.contains("rtp-info") {
                                play_at = Some(Instant::now());
                            }
                            let body = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            end + 4 + body
                        };
                        if pending.len() < len {
                            break;
                        }
                        let mut frame: Vec<u8> = pending.drain(..len).collect();
                        let Some(t) = play_at.filter(|_| frame[0] == b'$') else {
                            out.extend_from_slice(&frame);
                            continue;
                        };
                        match f(&mut frame, index, t.elapsed()) {
                            Act::Pass => out.extend_from_slice(&frame),
                            Act::Drop => {}
                            Act::Freeze(d) => {
                                if viewer.write_all(&out).is_err() {
                                    return;
                                }
                                out.clear();
                                std::thread::sleep(d);
                                out.extend_from_slice(&frame);
                            }
                        }
                        index += 1;
                    }
                    if viewer.write_all(&out).is_err() {
                        break;
                    }
                }
                let _ = viewer.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// Where the RTP payload (the first NAL unit header) of an interleaved frame begins, and its
/// NAL unit type (FU-A: the fragmented unit's type, and whether this is its first fragment;
/// STAP-A: its last unit's type, the slice the camera aggregates with its checksum).
pub fn nal_of(frame: &[u8]) -> Option<(usize, u8, bool)> {
    let rtp = frame.get(4..)?;
    let mut at = 12 + 4 * usize::from(rtp.first()? & 0x0f);
    if rtp[0] & 0x10 != 0 {
        let len = u16::from_be_bytes([*rtp.get(at + 2)?, *rtp.get(at + 3)?]);
        at += 4 + 4 * usize::from(len);
    }
    let t = rtp.get(at)? & 0x1f;
    if t == 28 {
        let h = rtp.get(at + 1)?;
        return Some((4 + at, h & 0x1f, h & 0x80 != 0));
    }
    if t == 24 {
        let (mut unit, mut i) = (None, at + 1);
        while let Some(l) = rtp.get(i..i + 2) {
            unit = Some(rtp.get(i + 2)? & 0x1f);
            i += 2 + usize::from(u16::from_be_bytes([l[0], l[1]]));
        }
        return Some((4 + at, unit?, true));
    }
    Some((4 + at, t, true))
}

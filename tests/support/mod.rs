//! Real peers for interop tests: a gst-rtsp-server camera (python3-gi), the relay binary with a
//! generated configuration, and FFmpeg/GStreamer viewers whose decoded frames are counted.
//! Every child is killed on drop and every run has a hard time limit. Also the one polling
//! helper of the integration tests ([`eventually`]), which `fake` re-exports.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod raw_rtsp;

/// Whether the real peers are installed (scripts/install-test-deps.sh installs them).
pub fn peers_available() -> bool {
    let ok =
        |cmd: &str, arg: &str| Command::new(cmd).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    ok("ffmpeg", "-version") && ok("gst-launch-1.0", "--version") && std::path::Path::new("/usr/bin/python3").exists()
}

/// The quick loop (`RELAY_QUICK=1`, as `scripts/test.sh --quick` sets it): tests that start
/// real peers (FFmpeg, GStreamer, gst-rtsp-server, HAProxy, Chromium, Node) return at once, so
/// the rest of the suite runs in well under a minute. Such a test begins with
/// [`require_peers!`] or [`skip_when_quick!`].
pub fn quick() -> bool {
    std::env::var_os("RELAY_QUICK").is_some_and(|v| v == "1")
}

/// Skips the calling test in the quick loop ([`quick`]): it starts real peers.
#[macro_export]
macro_rules! skip_when_quick {
    () => {
        if support::quick() {
            eprintln!("skipped: starts real peers (RELAY_QUICK=1)");
            return;
        }
    };
}

/// Skips the calling test with a message when the real peers are missing, or in the quick loop.
#[macro_export]
macro_rules! require_peers {
    () => {
        if support::quick() {
            eprintln!("skipped: starts real peers (RELAY_QUICK=1)");
            return;
        }
        if !support::peers_available() {
            eprintln!("skipped: ffmpeg/gstreamer/python3-gi missing (run scripts/install-test-deps.sh)");
            return;
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A gst-rtsp-server camera serving `/cam1`, `/cam2`, ...
pub struct GstCamera {
    child: Child,
    pub port: u16,
    /// What it printed after READY (`REQUEST DESCRIBE /cam1`, `TEARDOWN /cam1 agent`, ...).
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Its credentials, for [`GstCamera::restart`].
    auth: Option<(String, String)>,
}

impl GstCamera {
    pub fn start(auth: Option<(&str, &str)>) -> GstCamera {
        GstCamera::start_on(0, auth)
    }

    /// A camera that accepts each of `users` (Digest), so a route can move from one to another.
    pub fn start_users(users: &[(&str, &str)]) -> GstCamera {
        let (first, rest) = users.split_first().expect("at least one user");
        let extra: Vec<&str> = rest.iter().flat_map(|(u, p)| ["--user", *u, "--password", *p]).collect();
        let auth = Some((first.0.to_owned(), first.1.to_owned()));
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (child, port) = GstCamera::spawn(0, auth.as_ref(), &extra, &events);
        GstCamera { child, port, events, auth }
    }

    /// A camera started with more arguments for the script (`--tls cert key`).
    pub fn start_args(extra: &[&str]) -> GstCamera {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (child, port) = GstCamera::spawn(0, None, extra, &events);
        GstCamera { child, port, events, auth: None }
    }

    /// A camera on a fixed `port` (0: any free one), e.g. the port of a camera just killed, so a
    /// test can restart "the same camera" behind a relay that knows its URL.
    pub fn start_on(port: u16, auth: Option<(&str, &str)>) -> GstCamera {
        let auth = auth.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (child, port) = GstCamera::spawn(port, auth.as_ref(), &[], &events);
        GstCamera { child, port, events, auth }
    }

    fn spawn(
        port: u16,
        auth: Option<&(String, String)>,
        extra: &[&str],
        events: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> (Child, u16) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/gst_camera.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).args(["--mounts", "2", "--port", &port.to_string()]).args(extra);
        if let Some((u, p)) = auth {
            cmd.args(["--user", u, "--password", p]);
        }
        // Its stdin is a pipe we hold: if the test dies, the camera sees EOF and exits.
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start gst camera");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("READY port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("camera said {line:?}"));
        let sink = events.clone();
        // Ends when the camera exits (its stdout closes).
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        (child, port)
    }

    /// Kills the camera (every connection to it drops at once, as when a camera loses power).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the camera again on its port (after [`GstCamera::kill`]); the events of both
    /// lives are kept, in order.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// [`GstCamera::restart`] with more arguments for the script (`--pt 97`: a camera that
    /// comes back with another stream description).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        let (child, port) = GstCamera::spawn(self.port, self.auth.as_ref(), extra, &self.events);
        assert_eq!(port, self.port);
        self.child = child;
    }

    /// The RTSP sessions the camera created so far (one per SETUP that opened one), each as the
    /// path its SETUP named (`/cam1/stream=0`).
    pub fn sessions(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().filter_map(|l| l.strip_prefix("SESSION ")?.split_once(' ').map(|(p, _)| p.to_owned())).collect()
    }

    /// How many of [`GstCamera::sessions`] were for `path` (`/cam1`).
    pub fn sessions_of(&self, path: &str) -> usize {
        self.sessions().iter().filter(|p| *p == path || p.starts_with(&format!("{path}/"))).count()
    }

    /// RTSP sessions the camera holds now (created and not yet dropped by its session pool).
    pub fn sessions_open(&self) -> usize {
        let events = self.events.lock().unwrap();
        let (mut open, mut ended) = (0usize, 0usize);
        for l in events.iter() {
            if l.starts_with("SESSION ") {
                open += 1;
            } else if l.starts_with("SESSION_END ") {
                ended += 1;
            }
        }
        open.saturating_sub(ended)
    }

    /// How many RTSP connections the camera accepted so far.
    pub fn clients(&self) -> usize {
        self.events.lock().unwrap().iter().filter(|l| *l == "CLIENT").count()
    }

    /// Everything the camera printed so far (for failure messages).
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// The requests the camera handled so far, as `METHOD path[?query]`.
    pub fn requests(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().filter_map(|l| l.strip_prefix("REQUEST ")).map(str::to_owned).collect()
    }

    /// How many TEARDOWNs the camera accepted (each freed a session).
    pub fn teardowns(&self) -> usize {
        self.teardown_agents().len()
    }

    /// The `User-Agent` of each TEARDOWN the camera accepted, in order.
    pub fn teardown_agents(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events.iter().filter_map(|l| l.strip_prefix("TEARDOWN ")?.split_once(' ').map(|(_, a)| a.to_owned())).collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for GstCamera {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay binary running on a generated configuration.
pub struct RelayProcess {
    pub child: Child,
    pub tunnel: SocketAddr,
    pub metrics: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtr-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl RelayProcess {
    /// Starts the relay with `[listen]` filled in and `body` (routes, limits, ...) appended.
    pub fn start(name: &str, body: &str) -> RelayProcess {
        RelayProcess::start_wrapped(name, body, &[])
    }

    /// Like [`RelayProcess::start`], run through `wrapper` (a command that execs its arguments,
    /// e.g. `prlimit --nofile=40:40 --`), which keeps the relay's pid.
    pub fn start_wrapped(name: &str, body: &str, wrapper: &[&str]) -> RelayProcess {
        RelayProcess::start_with(name, "", body, wrapper)
    }

    /// Like [`RelayProcess::start_wrapped`], with `listen` (more `[listen]` keys) in that table.
    pub fn start_with(name: &str, listen: &str, body: &str, wrapper: &[&str]) -> RelayProcess {
        let level = std::env::var("RTR_TEST_RELAY_LOG").unwrap_or_else(|_| "info".into());
        RelayProcess::spawn(name, listen, body, wrapper, Some(level))
    }

    /// Like [`RelayProcess::start`] with no `RUST_LOG`: the file's `[log] level` decides.
    pub fn start_logging_as_configured(name: &str, body: &str) -> RelayProcess {
        RelayProcess::spawn(name, "", body, &[], None)
    }

    fn spawn(name: &str, listen: &str, body: &str, wrapper: &[&str], rust_log: Option<String>) -> RelayProcess {
        let dir = temp_dir(name);
        let (tunnel, metrics) = (free_port(), free_port());
        let config = dir.join("relay.toml");
        let text = format!(
            "[listen]\ntunnel = [\"127.0.0.1:{tunnel}\"]\nmetrics = \"127.0.0.1:{metrics}\"\n{listen}[runtime]\nshards = 2\nshutdown_grace_secs = 2\n{body}"
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.join("relay.log");
        let relay_bin = env!("CARGO_BIN_EXE_rtsp-tunnel-relay");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(relay_bin);
                c
            }
            None => Command::new(relay_bin),
        };
        command.arg("--config").arg(&config).env_remove("RUST_LOG");
        // RTR_TEST_RELAY_LOG=debug to see every RTSP request of a failing run.
        if let Some(level) = rust_log {
            command.env("RUST_LOG", level);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start relay");
        let relay = RelayProcess {
            child,
            tunnel: format!("127.0.0.1:{tunnel}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics}").parse().unwrap(),
            config,
            log,
        };
        let ready = eventually(Duration::from_secs(10), || {
            http_get(relay.metrics, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        });
        assert!(ready, "relay not ready; log:\n{}", relay.log_text());
        relay
    }

    pub fn url(&self, path: &str) -> String {
        format!("rtsp://{}{path}", self.tunnel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics").unwrap_or_default()
    }

    /// A sample's value from `/metrics` (exact series text, e.g. `relay_bytes_total{direction="to_viewer"}`).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.scrape(), series)
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites `from` to `to` in the relay's configuration file and reloads it (SIGHUP),
    /// returning once the relay logged the reload.
    pub fn reload_replacing(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        let done = self.log_text().matches("configuration reloaded").count();
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
        self.signal("HUP");
        let reloaded =
            eventually(Duration::from_secs(5), || self.log_text().matches("configuration reloaded").count() > done);
        assert!(reloaded, "{}", self.log_text());
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("series {series} not in scrape"))
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Polls `f` until it holds or `timeout` passes; true if it held. Polls quickly at first (most
/// conditions settle within milliseconds) and backs off to 100 ms, so watching a scrape or
/// `/proc` over seconds stays cheap.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(pause.min(end.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    f()
}

/// Runs a command with a hard time limit (SIGKILL 5 s after the TERM).
pub fn run_limited(secs: u32, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "5", &secs.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn")
}

/// Frames FFmpeg reports having decoded (its last `frame=` progress value).
pub fn ffmpeg_frames(out: &Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    err.rsplit("frame=").next().and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// FFmpeg decoding `frames` video frames from `url` over `transport` (http, https, tcp).
pub fn ffmpeg_play(transport: &str, url: &str, frames: u32) -> Output {
    ffmpeg_play_with(transport, url, frames, &[])
}

/// [`ffmpeg_play`] with extra input options (`-v debug`, ...).
pub fn ffmpeg_play_with(transport: &str, url: &str, frames: u32, extra: &[&str]) -> Output {
    let frames = frames.to_string();
    let mut args = vec!["ffmpeg", "-hide_banner", "-nostdin"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "-threads",
        "1",
        "-rtsp_transport",
        transport,
        "-i",
        url,
        "-an",
        "-frames:v",
        &frames,
        "-f",
        "null",
        "-",
    ]);
    run_limited(60, &args)
}

/// GStreamer decoding frames: `identity eos-after=N` passes N-1 buffers, so exit 0 with the
/// EOS message means the decoder produced `frames` frames.
pub fn gst_play(location: &str, extra: &[&str], frames: u32) -> Output {
    gst_decode(location, extra, frames, false)
}

/// [`gst_play`] with every decoded frame reported (`-v` and a sink that prints each buffer it
/// gets), for [`gst_frames`].
pub fn gst_play_counted(location: &str, extra: &[&str], frames: u32) -> Output {
    gst_decode(location, extra, frames, true)
}

fn gst_decode(location: &str, extra: &[&str], frames: u32, counted: bool) -> Output {
    let loc = format!("location={location}");
    let eos = format!("eos-after={}", frames + 1);
    let mut args = vec!["gst-launch-1.0"];
    if counted {
        args.push("-v");
    }
    args.extend_from_slice(&["rtspsrc", loc.as_str()]);
    args.extend_from_slice(extra);
    args.extend_from_slice(&["!", "rtph264depay", "!", "h264parse", "!", "avdec_h264", "max-threads=1"]);
    args.extend_from_slice(&["!", "identity", &eos, "!", "fakesink", "sync=false"]);
    if counted {
        args.extend_from_slice(&["name=frames", "silent=false"]);
    }
    run_limited(60, &args)
}

/// Frames GStreamer decoded in a [`gst_play_counted`] run: the buffers that reached its sink.
/// Counted rather than judged by the exit status: on the way down after its last frame,
/// rtspsrc 1.22 races the PAUSE it sends against its TEARDOWN, and about one run in sixty
/// exits 1 with "gst_rtspsrc_pause (): Could not send message. (Received end-of-file)" having
/// decoded every frame (as often against gst-rtsp-server directly, without the relay).
pub fn gst_frames(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stdout).matches("frames: last-message = chain").count() as u64
}

pub fn gst_decoded(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Got EOS from element")
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A viewer (FFmpeg or GStreamer) decoding until stopped, its decoded frames readable while it
/// runs: for tests that need many viewers watching at the same time. Killed on drop; a hard
/// time limit stops it anyway.
pub struct LiveViewer {
    child: Child,
    pub name: String,
    out: PathBuf,
    gst: bool,
}

impl LiveViewer {
    /// FFmpeg over `transport` (http, https, tcp), printing its progress twice a second.
    pub fn ffmpeg(name: &str, transport: &str, url: &str, limit_secs: u32) -> LiveViewer {
        let args = [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-stats_period",
            "0.5",
            "-threads",
            "1",
            "-rtsp_transport",
            transport,
            "-i",
            url,
            "-an",
            "-f",
            "null",
            "-",
        ];
        LiveViewer::spawn(name, &args, limit_secs, false)
    }

    /// GStreamer's `rtspsrc` (`rtsph://`, `rtspsh://`, `rtspt://`), a line per decoded frame.
    pub fn gst(name: &str, location: &str, extra: &[&str], limit_secs: u32) -> LiveViewer {
        let loc = format!("location={location}");
        let mut args = vec!["gst-launch-1.0", "-v", "rtspsrc", loc.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "max-threads=1",
            "!",
            "fakesink",
            "name=frames",
            "sync=false",
            "silent=false",
        ]);
        LiveViewer::spawn(name, &args, limit_secs, true)
    }

    fn spawn(name: &str, args: &[&str], limit_secs: u32, gst: bool) -> LiveViewer {
        let out = std::env::temp_dir().join(format!("rtr-live-{}-{}-{name}.log", std::process::id(), free_port()));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("timeout")
            .args(["-k", "5", &limit_secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn viewer");
        LiveViewer { child, name: name.to_owned(), out, gst }
    }

    /// Frames decoded so far (FFmpeg: its last progress report, so up to half a second old).
    pub fn frames(&self) -> u64 {
        let text = self.output();
        if self.gst {
            text.matches("frames: last-message = chain").count() as u64
        } else {
            text.rsplit("frame=")
                .next()
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
    }

    /// Still running (not exited, not killed by its time limit).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it printed (for failure messages; GStreamer's per-frame lines left out).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let text = self.output();
        // GStreamer's -v lines (a caps line per pad, a line per frame) would bury the error.
        let lines: Vec<&str> =
            text.lines().filter(|l| !l.contains("last-message = ") && !l.contains(" caps = ")).collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills it at once (no TEARDOWN: a viewer that vanishes). `timeout` is its parent, so the
    /// whole group goes: `timeout` forwards the signal to the viewer it runs.
    pub fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop as a user would (SIGINT: FFmpeg and gst-launch tear the session down).
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
    }

    /// Waits up to `timeout` for it to exit; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        eventually(timeout, || !self.running())
    }
}

impl Drop for LiveViewer {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.out);
    }
}

/// One call to the control API with curl (as an operator would make it): (status, body).
/// `token` goes as `Authorization: Bearer`; `body` as JSON.
pub fn api_curl(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-X", method, "-w", "\n%{http_code}", &url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

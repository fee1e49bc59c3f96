//! `loadtest`: simulated cameras and viewers for sizing rtsp-tunnel-relay (see loadtest/README.md).
//!
//! - `loadtest camera`: N cameras in one process, paced decodable H.264 with timestamps and
//!   sequence numbers in an RTP header extension; counts the sessions each stream served.
//! - `loadtest viewers`: N tunnel or plain RTSP viewers, spread over source addresses and, past
//!   the per-process descriptor budget, over worker processes; checks every packet, prints
//!   progress and a summary and writes a JSON report.

mod camera;
mod check;
mod payload;
mod plot;
mod report;
mod slices;
mod viewer;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use report::{Report, Second, Shared};

// The relay's allocator. With the system's, a setup-rate run spent a tenth of the generator's
// time in malloc: each session's task (its future is a few KB, 128-byte aligned) made the
// allocator consolidate its free lists, thousands of times a second.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Load generator for rtsp-tunnel-relay")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Tunnel,
    Rtsp,
}

#[derive(Clone, Copy, ValueEnum)]
enum GopPhaseArg {
    /// Each session's stream starts with a keyframe at its PLAY (sessions started together
    /// have their keyframes in step).
    Play,
    /// Each session's stream starts at a uniformly random picture of its group: 0..--gop P
    /// pictures, then the first keyframe (as real cameras, whose groups are not in step).
    Random,
}

#[derive(Clone, Copy, ValueEnum)]
enum MediaCheckArg {
    /// Every frame to the session's end: loss, stalls, latency, slices.
    Full,
    /// Only up to the first RTP packet (and what came with it); then the connection is drained
    /// every 250 ms, bytes counted, a close or error still failing the session. For setup-rate
    /// runs: a session's cost to the generator is then its setup, not its packets.
    FirstPacket,
}

#[derive(Clone, Copy, ValueEnum)]
enum StartArg {
    /// Each viewer's stream starts where its PLAY reply's `RTP-Info: seq=` says, else at the
    /// first packet received; sessions where the two disagree are counted and warned about.
    RtpInfo,
    /// Every stream starts at sequence 0 whatever the PLAY reply says (only right when each
    /// viewer has its own camera connection to a loadtest camera).
    Zero,
}

// Parsed once per process: the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Simulated cameras /cam0../camN-1 on one listener.
    Camera {
        #[arg(long, default_value = "127.0.0.1:8554")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 100)]
        streams: u32,
        /// Per stream: 250k, 2M, 1500000 ...
        #[arg(long, default_value = "2M", value_parser = parse_rate)]
        bitrate: u64,
        /// RTP packet size in bytes (header and extension included).
        #[arg(long, default_value_t = 1200)]
        packet_size: usize,
        /// A keyframe (SPS, PPS, IDR picture) every this many pictures.
        #[arg(long, default_value_t = 50)]
        gop: u32,
        /// Pictures per second.
        #[arg(long, default_value_t = 25)]
        fps: u32,
        /// Sessions served per stream, as JSON (rewritten every 5 s and at exit).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Every process sends the same SSRCs (by default each camera process picks new ones
        /// when it starts, as a real camera does after a reboot): to test a relay's rewrite of
        /// a restarted camera's stream into one continuous stream.
        #[arg(long)]
        fixed_ssrc: bool,
        /// Appends `unix_ms accepted` every second: connections accepted per second (a
        /// reconnect storm as the camera sees it; `scripts/reconnect-storm.py`).
        #[arg(long)]
        accept_log: Option<PathBuf>,
        /// The accept log's interval: 1s (default), 100ms ...
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        accept_log_every: Duration,
        /// Where in its group of pictures each session's stream starts.
        #[arg(long, value_enum, default_value = "play")]
        gop_phase: GopPhaseArg,
    },
    /// Simulated viewers.
    Viewers {
        #[arg(long, default_value = "127.0.0.1:8080")]
        target: SocketAddr,
        #[arg(long, value_enum, default_value = "tunnel")]
        mode: ModeArg,
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Session starts per second: 2000/s or 2000.
        #[arg(long, default_value = "1000/s", value_parser = parse_ramp)]
        ramp: f64,
        /// How long every session plays after the ramp: 60s, 2m, 500ms.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Each session ends this long after its PLAY is answered (or at the common stop time,
        /// if sooner): a setup-rate run (`setup-rate.sh`) keeps rate x this many sessions open
        /// instead of every one it started. Unset: every session plays to the common stop.
        #[arg(long, value_parser = parse_duration)]
        session_time: Option<Duration>,
        /// Viewer i asks for {path_prefix}{i % paths}.
        #[arg(long, default_value = "/cam")]
        path_prefix: String,
        #[arg(long, default_value_t = 100)]
        paths: usize,
        /// Source addresses, e.g. 127.0.0.2-127.0.0.20 (round robin).
        #[arg(long, value_parser = parse_ip_range)]
        source_ips: Option<SourceIps>,
        /// Worker processes: a number, or auto (enough to stay under the descriptor limit).
        #[arg(long, default_value = "auto")]
        procs: String,
        #[arg(long)]
        json: Option<PathBuf>,
        /// HTTPS: TLS on every viewer connection (the relay's certificate is not verified).
        #[arg(long)]
        tls: bool,
        /// A token (or password) for `[auth] method = "http"` or `"jwt"`: every request carries
        /// `Authorization: Basic` of `loadtest:TOKEN` (the relay needs TLS or `basic_over_plain`).
        #[arg(long)]
        token: Option<String>,
        /// Where each stream's expected packets start (loss is counted from there).
        #[arg(long, value_enum, default_value = "rtp-info")]
        stream_start: StartArg,
        /// How much of each session's media is checked.
        #[arg(long, value_enum, default_value = "full")]
        media_check: MediaCheckArg,
        /// A gap between arrivals longer than this is a stall.
        #[arg(long, default_value = "200ms", value_parser = parse_duration)]
        stall_ms: Duration,
        /// A session survives only if it lost at most this share of its expected packets, %...
        #[arg(long, default_value_t = 1.0)]
        max_loss_pct: f64,
        /// ...and its longest stall was at most this long.
        #[arg(long, default_value = "1000ms", value_parser = parse_duration)]
        max_stall_ms: Duration,
        /// Start the sessions in this many equal steps, each held for `--hold` before the next
        /// (RSS at several viewer counts held for equal times); 1: one ramp.
        #[arg(long, default_value_t = 1)]
        steps: usize,
        /// How long each step of `--steps` is held (from its first start to the next step's).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        hold: Duration,
        /// Packets due within this long before a session's end are not expected yet (in flight).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        grace: Duration,
        /// Internal: run as worker I of K.
        #[arg(long, hide = true)]
        worker: Option<String>,
        /// Internal: the schedule's start (CLOCK_MONOTONIC ns), shared by the workers.
        #[arg(long, hide = true)]
        epoch_ns: Option<u64>,
    },
    /// PNG plots (throughput.png, latency.png) of throughput and p99 latency over time.
    Plot {
        /// Where the PNGs go.
        #[arg(long)]
        out: PathBuf,
        /// `loadtest viewers --json` reports; each becomes one line.
        reports: Vec<PathBuf>,
    },
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('m' | 'M') => (&s[..s.len() - 1], 1e6),
        Some('g' | 'G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    num.parse::<f64>().map(|n| (n * mult) as u64).map_err(|e| format!("{s}: {e}"))
}

fn parse_ramp(s: &str) -> Result<f64, String> {
    let n: f64 = s.trim_end_matches("/s").parse().map_err(|e| format!("{s}: {e}"))?;
    if n <= 0.0 { Err("ramp must be positive".into()) } else { Ok(n) }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().map_err(|e| format!("{s}: {e}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A range of source addresses, parsed from `A-B`.
#[derive(Debug, Clone)]
struct SourceIps(Vec<IpAddr>);

fn parse_ip_range(s: &str) -> Result<SourceIps, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (a.parse().map_err(|e| format!("{a}: {e}"))?, b.parse().map_err(|e| format!("{b}: {e}"))?);
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 65_535 {
        return Err("bad address range".into());
    }
    Ok(SourceIps((a..=b).map(|n| IpAddr::V4(n.into())).collect()))
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// No transparent huge pages for the heap: mimalloc advises them, and a generator whose heap
/// grows through a run (every session's record is kept for the report) then faults in and zeroes
/// whole 2 MiB pages, ~15% of its CPU in a setup-rate step, work the relay under test never sees.
fn without_transparent_huge_pages() {
    // Best effort: a kernel without the flag keeps its huge pages, and the generator runs.
    let _ = nix::sys::prctl::set_thp_disable(true);
}

fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    without_transparent_huge_pages();
    let cli = Cli::parse();
    // Pinned to one CPU (`taskset -c 0`, as setup-rate.sh runs the generator), one thread runs
    // everything: a multi-threaded runtime there only adds wake-ups across threads (a futex and
    // a context switch per session started) for no parallelism.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let rt = if one_cpu {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    match cli.cmd {
        Cmd::Camera {
            listen,
            streams,
            bitrate,
            packet_size,
            gop,
            fps,
            json,
            fixed_ssrc,
            accept_log,
            accept_log_every,
            gop_phase,
        } => {
            if !(payload::MIN_PACKET..=65_000).contains(&packet_size) {
                bail!("--packet-size must be {}..=65000", payload::MIN_PACKET);
            }
            if gop == 0 || !(1..=1000).contains(&fps) {
                bail!("--gop must be at least 1 and --fps 1..=1000");
            }
            // A new salt per process: a restarted camera sends new SSRCs.
            let ssrc_salt = if fixed_ssrc { 0 } else { ((payload::monotonic_ns() as u32) ^ std::process::id()) | 1 };
            let media = payload::MediaOptions { bitrate_bps: bitrate, packet_size, gop, fps, ssrc_salt };
            rt.block_on(camera::run(camera::CameraOptions {
                listen,
                streams,
                media,
                json,
                period_ns: 0,
                accept_log,
                accept_log_every,
                gop_phase: match gop_phase {
                    GopPhaseArg::Play => camera::GopPhase::Play,
                    GopPhaseArg::Random => camera::GopPhase::Random,
                },
            }))
        }
        Cmd::Plot { out, reports } => plot::plot(&out, &reports),
        Cmd::Viewers {
            target,
            mode,
            sessions,
            ramp,
            duration,
            session_time,
            path_prefix,
            paths,
            source_ips,
            procs,
            json,
            tls,
            token,
            stream_start,
            media_check,
            stall_ms,
            max_loss_pct,
            max_stall_ms,
            steps,
            hold,
            grace,
            worker,
            epoch_ns,
        } => {
            let mode = match mode {
                ModeArg::Tunnel => viewer::Mode::Tunnel,
                ModeArg::Rtsp => viewer::Mode::Rtsp,
            };
            let plan = Plan {
                authorization: token.map(|t| {
                    use base64::Engine;
                    let b = base64::engine::general_purpose::STANDARD.encode(format!("loadtest:{t}"));
                    Arc::from(format!("Basic {b}"))
                }),
                tls: tls.then(viewer::insecure_tls_config),
                target,
                mode,
                sessions,
                ramp,
                duration,
                session_time,
                path_prefix,
                paths: paths.max(1),
                source_ips: source_ips.map(|s| s.0).unwrap_or_default(),
                check: check::CheckParams {
                    start: match stream_start {
                        StartArg::Zero => check::StreamStart::Zero,
                        StartArg::RtpInfo => check::StreamStart::RtpInfo,
                    },
                    stall_ns: stall_ms.as_nanos() as u64,
                    grace_ns: grace.as_nanos() as u64,
                    max_loss: max_loss_pct.max(0.0) / 100.0,
                    max_stall_ns: max_stall_ms.as_nanos() as u64,
                },
                media_check: match media_check {
                    MediaCheckArg::Full => viewer::MediaCheck::Full,
                    MediaCheckArg::FirstPacket => viewer::MediaCheck::FirstPacket,
                },
                steps: steps.clamp(1, sessions.max(1)),
                hold,
                // Workers get a schedule starting a moment from now, once they are all up.
                epoch_ns: epoch_ns.unwrap_or_else(|| payload::monotonic_ns() + 200_000_000),
            };
            let is_worker = worker.is_some();
            let report = match worker {
                Some(w) => {
                    let (i, k) = w.split_once('/').context("--worker I/K")?;
                    rt.block_on(run_viewers(&plan, i.parse()?, k.parse()?, false))
                }
                None => {
                    let fds_per_session = if mode == viewer::Mode::Tunnel { 2 } else { 1 };
                    // Open at once: every session, or with --session-time those started over
                    // the session time plus a setup's worth of slack (2 s).
                    let open = session_time
                        .map_or(sessions, |t| sessions.min((ramp * (t.as_secs_f64() + 2.0)).ceil() as usize));
                    let k = match procs.as_str() {
                        "auto" => (open * fds_per_session).div_ceil(16_000).max(1),
                        n => n.parse::<usize>().context("--procs")?.max(1),
                    };
                    if k == 1 { rt.block_on(run_viewers(&plan, 0, 1, true)) } else { run_workers(k, plan.epoch_ns)? }
                }
            };
            if let Some(path) = json {
                // Streamed, not built in memory first: a setup-rate step's report holds tens of
                // thousands of sessions. A worker's (read back by its parent only) is compact.
                let file = std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
                let mut out = std::io::BufWriter::new(file);
                if is_worker {
                    serde_json::to_writer(&mut out, &report)?;
                } else {
                    serde_json::to_writer_pretty(&mut out, &report)?;
                }
                std::io::Write::flush(&mut out).with_context(|| format!("writing {}", path.display()))?;
            }
            if !is_worker {
                eprint!("{}", report.summary());
            }
            Ok(())
        }
    }
}

struct Plan {
    authorization: Option<Arc<str>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    target: SocketAddr,
    mode: viewer::Mode,
    sessions: usize,
    ramp: f64,
    duration: Duration,
    session_time: Option<Duration>,
    path_prefix: String,
    paths: usize,
    source_ips: Vec<IpAddr>,
    check: check::CheckParams,
    media_check: viewer::MediaCheck,
    steps: usize,
    hold: Duration,
    epoch_ns: u64,
}

impl Plan {
    /// When session `i` is due to start, ns after the epoch: at `--ramp` within its step of
    /// `--steps`, each step `--hold` after the one before.
    fn start_offset_ns(&self, i: usize) -> u64 {
        let per_step = self.sessions.div_ceil(self.steps).max(1);
        let (step, within) = (i / per_step, i % per_step);
        step as u64 * self.hold.as_nanos() as u64 + (within as f64 / self.ramp * 1e9) as u64
    }

    /// When the last session is due to start, ns after the epoch.
    fn ramp_ns(&self) -> u64 {
        if self.sessions == 0 { 0 } else { self.start_offset_ns(self.sessions - 1) }
    }
}

/// The tokio instant of a CLOCK_MONOTONIC time (both run on that clock).
pub(crate) fn instant_of(ns: u64) -> tokio::time::Instant {
    let now_ns = payload::monotonic_ns();
    let now = tokio::time::Instant::now();
    if ns >= now_ns { now + Duration::from_nanos(ns - now_ns) } else { now - Duration::from_nanos(now_ns - ns) }
}

/// The number a path ends with (`/cam12` → 12): the stream id its media must carry.
fn path_number(path: &str) -> Option<u32> {
    let digits = path.len() - path.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    path[path.len() - digits..].parse().ok()
}

/// Re-runs this command as K workers (each with a slice of the sessions) and merges their reports.
fn run_workers(k: usize, epoch_ns: u64) -> anyhow::Result<Report> {
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::env::temp_dir().join(format!("loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut children = Vec::new();
    for i in 0..k {
        let out = dir.join(format!("worker{i}.json"));
        let mut a: Vec<String> = Vec::new();
        let mut skip = false;
        for arg in &args {
            if skip {
                skip = false;
                continue;
            }
            if arg == "--json" || arg == "--procs" || arg == "--epoch-ns" {
                skip = true;
                continue;
            }
            if arg.starts_with("--json=") || arg.starts_with("--procs=") || arg.starts_with("--epoch-ns=") {
                continue;
            }
            a.push(arg.clone());
        }
        a.extend([
            "--procs".into(),
            "1".into(),
            "--worker".into(),
            format!("{i}/{k}"),
            "--json".into(),
            out.display().to_string(),
            "--epoch-ns".into(),
            // Workers take a moment to start: give them one more.
            (epoch_ns + 300_000_000).to_string(),
        ]);
        children.push((std::process::Command::new(&exe).args(&a).spawn()?, out));
    }
    eprintln!("loadtest: {k} worker processes");
    let mut total = Report { processes: k, ..Report::default() };
    for (mut child, out) in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("a worker failed: {status}");
        }
        let r: Report = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        total.mode = r.mode.clone();
        total.target = r.target.clone();
        total.merge(&r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(total)
}

async fn run_viewers(plan: &Plan, worker: usize, workers: usize, progress: bool) -> Report {
    let shared = Arc::new(Shared::default());
    let epoch_ns = plan.epoch_ns;
    let start = instant_of(epoch_ns);
    // The stop time is the same for every session: the last start plus the duration.
    let ramp_ns = plan.ramp_ns();
    let stop_ns = epoch_ns + ramp_ns + plan.duration.as_nanos() as u64;
    let stop_at = instant_of(stop_ns);
    let mine: Vec<usize> = (worker..plan.sessions).step_by(workers).collect();
    let requested = mine.len() as u64;

    // Once a second: a progress line and a point of the throughput series.
    let s2 = shared.clone();
    let reporter = tokio::spawn(async move {
        let mut series = Vec::new();
        let (mut last_bytes, mut last_packets) = (0, 0);
        let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
        let mut t = 0;
        loop {
            tick.tick().await;
            t += 1;
            let (b, p) = (s2.bytes.load(Ordering::Relaxed), s2.packets.load(Ordering::Relaxed));
            let (p99_ms, timed) = s2.take_window_p99_ms();
            let (before, after) =
                (s2.failed_before_play.load(Ordering::Relaxed), s2.failed_after_play.load(Ordering::Relaxed));
            let sec = Second {
                t,
                mbps: (b - last_bytes) as f64 * 8.0 / 1e6,
                packets_per_s: p - last_packets,
                playing: s2.playing.load(Ordering::Relaxed),
                established: s2.established.load(Ordering::Relaxed),
                failed: before + after,
                p99_ms,
                timed,
            };
            (last_bytes, last_packets) = (b, p);
            if progress {
                eprintln!(
                    "[{t:>4}s] playing {:>6}  reached PLAY {:>6}  failed {:>5} before PLAY, {:>5} after  {:>9.1} Mbit/s  {:>8} pkt/s  p99 {}  RTP gaps {}  faults {}",
                    sec.playing,
                    sec.established,
                    before,
                    after,
                    sec.mbps,
                    sec.packets_per_s,
                    p99_ms.map_or("-".to_owned(), |v| format!("{v:.2} ms")),
                    s2.rtp_seq_gaps.load(Ordering::Relaxed),
                    s2.faults.load(Ordering::Relaxed),
                );
            }
            series.push(sec);
            if tokio::time::Instant::now() >= stop_at {
                return series;
            }
        }
    });

    let mut tasks = Vec::with_capacity(mine.len());
    for i in mine {
        let scheduled_ns = epoch_ns + plan.start_offset_ns(i);
        tokio::time::sleep_until(instant_of(scheduled_ns)).await;
        let path = format!("{}{}", plan.path_prefix, i % plan.paths);
        let spec = viewer::ViewerSpec {
            index: i,
            target: plan.target,
            source: (!plan.source_ips.is_empty()).then(|| plan.source_ips[i % plan.source_ips.len()]),
            expect_stream: path_number(&path),
            path,
            mode: plan.mode,
            scheduled_ns,
            stop_at,
            stop_ns,
            session_time: plan.session_time,
            tls: plan.tls.clone(),
            check: plan.check,
            media_check: plan.media_check,
            authorization: plan.authorization.clone(),
        };
        let shared = shared.clone();
        tasks.push((
            scheduled_ns,
            tokio::spawn(async move {
                let r = viewer::run(spec, shared.clone()).await;
                if matches!(r, viewer::Outcome::NotPlayed { .. }) {
                    shared.failed_before_play.fetch_add(1, Ordering::Relaxed);
                }
                r
            }),
        ));
    }
    let mut report = Report {
        mode: format!("{:?}", plan.mode).to_lowercase(),
        target: plan.target.to_string(),
        processes: 1,
        ramp_per_s: plan.ramp,
        duration_s: plan.duration.as_secs_f64(),
        sessions_requested: requested,
        epoch_ns,
        steps: plan.steps,
        hold_s: plan.hold.as_secs_f64(),
        sessions_per_step: plan.sessions.div_ceil(plan.steps),
        stall_ms: plan.check.stall_ns as f64 / 1e6,
        max_loss_pct: plan.check.max_loss * 100.0,
        max_stall_ms: plan.check.max_stall_ns as f64 / 1e6,
        ..Report::default()
    };
    let mut setup = report::histogram();
    let mut media = report::histogram();
    let mut lag = report::histogram();
    for (scheduled_ns, t) in tasks {
        let start_ns = match t.await {
            Ok(viewer::Outcome::NotPlayed { start_ns, reason }) => {
                report.sessions_failed += 1;
                *report.failures_before_play.entry(reason).or_default() += 1;
                Some(start_ns)
            }
            Ok(viewer::Outcome::Played { start_ns, play_ns, record, latency_us }) => {
                let _ = setup.record((play_ns.saturating_sub(scheduled_ns) / 1000).clamp(1, report::MAX_US));
                latency_us.add_to(&mut media);
                report.last_play_ns = report.last_play_ns.max(Some(play_ns));
                if let Some(ms) = record.ready_ms {
                    let ready_ns = scheduled_ns + (ms * 1e6) as u64;
                    report.last_ready_ns = report.last_ready_ns.max(Some(ready_ns));
                }
                report.add_session(*record);
                Some(start_ns)
            }
            Err(e) => {
                report.sessions_failed += 1;
                *report.failures_before_play.entry(format!("task_{e}")).or_default() += 1;
                None
            }
        };
        if let Some(s) = start_ns {
            report.sessions_started += 1;
            let _ = lag.record((s.saturating_sub(scheduled_ns) / 1000).clamp(1, report::MAX_US));
            report.first_start_ns = Some(report.first_start_ns.map_or(s, |f| f.min(s)));
            report.last_start_ns = report.last_start_ns.max(Some(s));
        }
    }
    report.throughput = reporter.await.unwrap_or_default();
    report.setup_hist_us = report::to_pairs(&setup);
    report.media_hist_us = report::to_pairs(&media);
    report.start_lag_hist_us = report::to_pairs(&lag);
    report.finalize();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_units() {
        assert_eq!(parse_rate("2M"), Ok(2_000_000));
        assert_eq!(parse_rate("250k"), Ok(250_000));
        assert_eq!(parse_ramp("2000/s"), Ok(2000.0));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        let ips = parse_ip_range("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(ips.0.len(), 3);
        assert!(parse_ip_range("127.0.0.9-127.0.0.1").is_err());
        assert_eq!(path_number("/cam12"), Some(12));
        assert_eq!(path_number("/live"), None);
    }
}

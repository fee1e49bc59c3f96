//! `loadtest`: simulated cameras and viewers for sizing rtsp-tunnel-relay (see loadtest/README.md).
//!
//! - `loadtest camera`: N cameras in one process, paced RTP with timestamps and sequence numbers.
//! - `loadtest viewers`: N tunnel or plain RTSP viewers, spread over source addresses and, past
//!   the per-process descriptor budget, over worker processes; prints progress and a summary and
//!   writes a JSON report.

mod camera;
mod payload;
mod plot;
mod report;
mod viewer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use report::{Report, Second, Shared};

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
        /// RTP packet size in bytes (header included).
        #[arg(long, default_value_t = 1200)]
        packet_size: usize,
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
        /// Internal: run as worker I of K.
        #[arg(long, hide = true)]
        worker: Option<String>,
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

fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Cmd::Camera { listen, streams, bitrate, packet_size } => {
            if !(payload::MIN_PACKET..=65_000).contains(&packet_size) {
                bail!("--packet-size must be {}..=65000", payload::MIN_PACKET);
            }
            rt.block_on(camera::run(camera::CameraOptions { listen, streams, bitrate_bps: bitrate, packet_size }))
        }
        Cmd::Plot { out, reports } => plot::plot(&out, &reports),
        Cmd::Viewers {
            target,
            mode,
            sessions,
            ramp,
            duration,
            path_prefix,
            paths,
            source_ips,
            procs,
            json,
            tls,
            worker,
        } => {
            let mode = match mode {
                ModeArg::Tunnel => viewer::Mode::Tunnel,
                ModeArg::Rtsp => viewer::Mode::Rtsp,
            };
            let plan = Plan {
                tls: tls.then(viewer::insecure_tls_config),
                target,
                mode,
                sessions,
                ramp,
                duration,
                path_prefix,
                paths: paths.max(1),
                source_ips: source_ips.map(|s| s.0).unwrap_or_default(),
            };
            let is_worker = worker.is_some();
            let report = match worker {
                Some(w) => {
                    let (i, k) = w.split_once('/').context("--worker I/K")?;
                    rt.block_on(run_viewers(&plan, i.parse()?, k.parse()?, false))
                }
                None => {
                    let fds_per_session = if mode == viewer::Mode::Tunnel { 2 } else { 1 };
                    let k = match procs.as_str() {
                        "auto" => (sessions * fds_per_session).div_ceil(16_000).max(1),
                        n => n.parse::<usize>().context("--procs")?.max(1),
                    };
                    if k == 1 { rt.block_on(run_viewers(&plan, 0, 1, true)) } else { run_workers(k)? }
                }
            };
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !is_worker {
                eprint!("{}", report.summary());
            }
            Ok(())
        }
    }
}

struct Plan {
    tls: Option<Arc<rustls::ClientConfig>>,
    target: SocketAddr,
    mode: viewer::Mode,
    sessions: usize,
    ramp: f64,
    duration: Duration,
    path_prefix: String,
    paths: usize,
    source_ips: Vec<IpAddr>,
}

/// Re-runs this command as K workers (each with a slice of the sessions) and merges their reports.
fn run_workers(k: usize) -> anyhow::Result<Report> {
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
            if arg == "--json" || arg == "--procs" {
                skip = true;
                continue;
            }
            if arg.starts_with("--json=") || arg.starts_with("--procs=") {
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
    let start = tokio::time::Instant::now();
    let ramp_end = start + Duration::from_secs_f64(plan.sessions as f64 / plan.ramp);
    let stop_at = ramp_end + plan.duration;
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
            let sec = Second {
                t,
                mbps: (b - last_bytes) as f64 * 8.0 / 1e6,
                packets_per_s: p - last_packets,
                established: s2.established.load(Ordering::Relaxed),
                p99_ms: s2.take_window_p99_ms(),
            };
            (last_bytes, last_packets) = (b, p);
            if progress {
                eprintln!(
                    "[{t:>4}s] established {:>6}  failed {:>5}  {:>9.1} Mbit/s  {:>8} pkt/s  p99 {:.2} ms  lost {}",
                    sec.established,
                    s2.failed.load(Ordering::Relaxed),
                    sec.mbps,
                    sec.packets_per_s,
                    sec.p99_ms,
                    s2.lost.load(Ordering::Relaxed)
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
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / plan.ramp)).await;
        let spec = viewer::ViewerSpec {
            index: i,
            target: plan.target,
            source: (!plan.source_ips.is_empty()).then(|| plan.source_ips[i % plan.source_ips.len()]),
            path: format!("{}{}", plan.path_prefix, i % plan.paths),
            mode: plan.mode,
            stop_at,
            tls: plan.tls.clone(),
        };
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let r = viewer::run(spec, shared.clone()).await;
            if r.is_err() {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            r
        }));
    }
    let mut report = Report {
        mode: format!("{:?}", plan.mode).to_lowercase(),
        target: plan.target.to_string(),
        processes: 1,
        sessions_requested: requested,
        ..Report::default()
    };
    let mut setup = report::histogram();
    let mut media = report::histogram();
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => {
                report.sessions_established += 1;
                let _ = setup.record(o.setup_us.clamp(1, 60_000_000));
                let _ = media.add(&o.media_us);
                report.bytes_received += o.bytes;
                report.packets_received += o.packets;
                report.packets_lost += o.lost;
            }
            Ok(Err(reason)) => {
                report.sessions_failed += 1;
                *report.failures_by_reason.entry(reason).or_default() += 1;
            }
            Err(e) => {
                report.sessions_failed += 1;
                *report.failures_by_reason.entry(format!("task_{e}")).or_default() += 1;
            }
        }
    }
    report.throughput = reporter.await.unwrap_or_default();
    report.duration_s = plan.duration.as_secs_f64();
    report.setup_latency_ms = report::Quantiles::of_us(&setup);
    report.media_latency_ms = report::Quantiles::of_us(&media);
    report.setup_hist_us = report::to_pairs(&setup);
    report.media_hist_us = report::to_pairs(&media);
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
    }
}

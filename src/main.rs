//! `rtsp-tunnel-relay`: the command line. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mimalloc::MiMalloc;
use rtsp_tunnel_relay::app::DemoPorts;
use rtsp_tunnel_relay::config::{AuthConfig, Settings};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// What `-h` and `--help` both print after the options (one text: they must agree).
const AFTER_HELP: &str = "\
Without --config the relay runs a demo: a built-in camera at /demo, the tunnel port on
127.0.0.1:8080 and the metrics port on 127.0.0.1:8079 (choose them with --listen and
--metrics-listen). Play it:  ffplay -rtsp_transport http rtsp://127.0.0.1:8080/demo";

/// Lets RTSP viewers stuck behind HTTP-only firewalls watch IP cameras (RTSP-over-HTTP tunnels).
// `long_about = None`: no longer text for `--help` than for `-h` (each option's help is one
// paragraph for the same reason).
#[derive(Parser, Debug)]
#[command(version, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// The configuration file (TOML). Without it the relay runs the built-in demo.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The demo's tunnel port: ADDRESS:PORT, or a port on 127.0.0.1 (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR", value_parser = listen_addr, conflicts_with = "config")]
    listen: Option<SocketAddr>,
    /// The demo's metrics port: ADDRESS:PORT, or a port on 127.0.0.1 (default 127.0.0.1:8079).
    #[arg(long, value_name = "ADDR", value_parser = listen_addr, conflicts_with = "config")]
    metrics_listen: Option<SocketAddr>,
    /// Validate the configuration file and exit (non-zero with the reason if it is bad).
    #[arg(long, requires = "config")]
    check_config: bool,
    /// Print a `[[user]]` entry for NAME (password read from standard input) and exit. The realm
    /// is taken from --config if given, else the default.
    #[arg(long, value_name = "NAME")]
    hash_password: Option<String>,
}

/// `--listen 8081` or `--listen 0.0.0.0:8081`.
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("{s:?} is neither ADDRESS:PORT nor a port"))
}

fn hash_password(name: &str, config: Option<&std::path::Path>) -> ExitCode {
    let realm = match config.map(Settings::load) {
        Some(Ok(settings)) => settings.auth.realm.clone(),
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        None => AuthConfig::default().realm,
    };
    let mut password = String::new();
    if std::io::stdin().read_line(&mut password).is_err() || password.trim_end_matches(['\r', '\n']).is_empty() {
        eprintln!("give the password on standard input");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    let ha1 = rtsp_tunnel_relay::proto::viewer_auth::ha1_hex(name, &realm, password);
    println!("[[user]]\nname = \"{name}\"\nha1 = \"{ha1}\"   # realm \"{realm}\"");
    ExitCode::SUCCESS
}

/// mimalloc advises transparent huge pages for its heap (`MADV_HUGEPAGE`), so on a kernel in
/// `madvise` mode every 2 MiB region it touches is resident whole. The relay's heap is many
/// small objects, touched sparsely: with huge pages the idle relay held 38 MB and each viewer of
/// a shared camera 19 KB of RSS, without them 21 MB and 11 KB (1 camera x 1,000 viewers,
/// docs/perf/README.md). `MIMALLOC_ALLOW_THP=1` keeps them.
fn without_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // Best effort: a kernel without the flag keeps its huge pages, and the relay runs.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

/// Raises the soft open-file limit to the hard one, as HAProxy and nginx do: a relay started
/// from a shell (soft limit often 1,024) would otherwise refuse connections at a fraction of
/// what it may hold (`[limits] max_connections` derives from the soft limit). Under systemd
/// the unit sets both (`LimitNOFILE`).
fn with_open_file_limit_raised() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            // Best effort: the relay runs under the soft limit if it cannot be raised.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn main() -> ExitCode {
    without_transparent_huge_pages();
    with_open_file_limit_raised();
    let cli = Cli::parse();
    if let Some(name) = &cli.hash_password {
        return hash_password(name, cli.config.as_deref());
    }
    if cli.check_config {
        let path = cli.config.expect("clap requires --config with --check-config");
        // The same validation start-up and reload run: certificates loaded, cameras resolved.
        return match Settings::load(&path) {
            Ok(settings) => {
                println!("{}: ok ({} routes)", path.display(), settings.routes.routes().len());
                for (route, why) in settings.unresolved_routes() {
                    println!("warning: route {route:?}: {why} (the route fails at connect time until it resolves)");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let demo = DemoPorts {
        tunnel: cli.listen.unwrap_or(DemoPorts::DEFAULT.tunnel),
        metrics: cli.metrics_listen.unwrap_or(DemoPorts::DEFAULT.metrics),
    };
    match rtsp_tunnel_relay::app::run(cli.config.as_deref(), demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtsp-tunnel-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

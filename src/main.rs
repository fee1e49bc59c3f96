//! `rtsp-tunnel-relay`: the command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mimalloc::MiMalloc;
use rtsp_tunnel_relay::config::{AuthConfig, Settings};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Lets RTSP viewers stuck behind HTTP-only firewalls watch IP cameras (RTSP-over-HTTP tunnels).
///
/// With no arguments it runs a demo: tunnel port 127.0.0.1:8080, metrics on 127.0.0.1:9100 and
/// a built-in camera at /demo (`ffplay -rtsp_transport http rtsp://127.0.0.1:8080/demo`).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The configuration file (TOML). Without it the relay runs the built-in demo.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Validate the configuration file and exit (non-zero with the reason if it is bad).
    #[arg(long, requires = "config")]
    check_config: bool,
    /// Print a `[[user]]` entry for NAME (password read from standard input) and exit. The realm
    /// is taken from --config if given, else the default.
    #[arg(long, value_name = "NAME")]
    hash_password: Option<String>,
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

fn main() -> ExitCode {
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
    match rtsp_tunnel_relay::app::run(cli.config.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtsp-tunnel-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The running relay: configuration in, shards and side port up, then signals until exit.
//!
//! SIGHUP reloads routes and limits (a bad file is rejected and the running configuration
//! stays); SIGTERM and SIGINT stop accepting, drain sessions for the configured grace period
//! and exit. systemd is told when the relay is ready, reloading and stopping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{Acl, Config, Route, RouteTable};
use crate::demo_camera::DemoCamera;
use crate::metrics::{MetricsHub, ShardMetrics};
use crate::shard::{Shards, StartOptions, TlsListenerOptions};

/// The route table and TLS configurations a configuration calls for (certificates re-read).
fn materialise(cfg: &Config, routes: Vec<Route>) -> anyhow::Result<(Arc<RouteTable>, Vec<Arc<rustls::ServerConfig>>)> {
    let users = cfg.viewer_users()?;
    let tls = cfg
        .listen
        .tls
        .iter()
        .map(|t| crate::tls::load_server_config(&t.cert, &t.key).with_context(|| format!("[[listen.tls]] {}", t.addr)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((Arc::new(RouteTable::new(routes).with_users(users)), tls))
}

/// The configuration used when none is given: the built-in camera behind `/demo`.
pub fn demo_config(camera_url: &str) -> String {
    format!(
        "[listen]\ntunnel = [\"127.0.0.1:8080\"]\nmetrics = \"127.0.0.1:9100\"\n\n[[route]]\npath = \"/demo\"\nupstream = \"{camera_url}\"\n"
    )
}

pub fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let mut demo = None;
    let (cfg, routes) = match config_path {
        Some(path) => Config::load(path).with_context(|| format!("configuration {}", path.display()))?,
        None => {
            let camera = DemoCamera::start("127.0.0.1:0".parse()?).context("starting the demo camera")?;
            let parsed = Config::from_toml(&demo_config(&camera.url()))?;
            demo = Some(camera);
            parsed
        }
    };
    crate::logging::init(cfg.log.format, &cfg.log.level);
    let shards = match cfg.runtime.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let metrics: Vec<Arc<ShardMetrics>> = (0..shards).map(|i| Arc::new(ShardMetrics::new(i))).collect();
    let hub = Arc::new(MetricsHub::new(metrics.clone()));
    let metrics_server = match cfg.listen.metrics {
        Some(addr) => Some(
            crate::metrics::spawn(addr, hub.clone(), cfg.metrics)
                .with_context(|| format!("metrics side port {addr}"))?,
        ),
        None => None,
    };
    let (table, tls) = materialise(&cfg, routes)?;
    let tls_listeners = cfg
        .listen
        .tls
        .iter()
        .zip(tls)
        .map(|(t, config)| {
            Ok(TlsListenerOptions {
                addr: t.addr,
                config,
                acl: Acl::parse(&t.allow, &t.deny).map_err(anyhow::Error::msg)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let running = Shards::start(StartOptions {
        tunnel: cfg.listen.tunnel.clone(),
        tunnel_acl: Acl::parse(&cfg.listen.allow, &cfg.listen.deny).map_err(anyhow::Error::msg)?,
        tls: tls_listeners,
        auth: cfg.auth.clone(),
        shards,
        runtime: cfg.runtime.clone(),
        limits: cfg.limits.clone(),
        routes: table,
        public_address: cfg.listen.public_address.clone(),
        metrics,
    })?;
    hub.set_listeners_bound(true);
    hub.set_shards_running(running.running() == running.count());
    tracing::info!(
        tunnel = ?running.local_addrs(),
        metrics = ?cfg.listen.metrics,
        shards,
        routes = cfg.routes.len(),
        demo = demo.is_some(),
        "relay ready"
    );
    if let Some(camera) = &demo {
        tracing::info!(
            "demo: ffplay -rtsp_transport http rtsp://{}/demo  (camera at {})",
            running.local_addrs()[0],
            camera.url()
        );
    }
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);

    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]).context("installing signal handlers")?;
    let mut current = cfg;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                let Some(path) = config_path else {
                    tracing::warn!("SIGHUP ignored: the demo has no configuration file to reload");
                    continue;
                };
                let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
                let loaded = Config::load(path).map_err(anyhow::Error::from).and_then(|(next, routes)| {
                    let (table, tls) = materialise(&next, routes)?;
                    Ok((next, table, tls))
                });
                match loaded {
                    Ok((next, table, tls)) => {
                        let addrs = |c: &Config| {
                            (
                                c.listen.tunnel.clone(),
                                c.listen.metrics,
                                c.listen.tls.iter().map(|t| t.addr).collect::<Vec<_>>(),
                            )
                        };
                        if addrs(&next) != addrs(&current) {
                            tracing::warn!("listen addresses changed: they take effect only on restart");
                        }
                        tracing::info!(routes = next.routes.len(), tls_listeners = tls.len(), "configuration reloaded");
                        running.reload(table, next.limits.clone(), next.auth.clone(), tls);
                        if let Some(m) = &metrics_server {
                            m.set_limits(next.metrics);
                        }
                        current = next;
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "reload rejected; the running configuration stays")
                    }
                }
                let _ = sd_notify::notify(false, &[NotifyState::Ready]);
            }
            _ => {
                let grace = Duration::from_secs(current.runtime.shutdown_grace_secs);
                tracing::info!(sessions = running.sessions(), grace_secs = grace.as_secs(), "shutting down");
                let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
                hub.set_shards_running(false);
                running.shutdown(grace);
                break;
            }
        }
    }
    drop(demo);
    tracing::info!("stopped");
    Ok(())
}

//! The running relay: settings in, shards and side port up, then signals until exit.
//!
//! The configuration is validated once into [`Settings`] (`config`); start-up and every SIGHUP
//! reload run what that one validation produced and read no file themselves. SIGHUP reloads
//! routes, limits, auth and certificates (a bad file is rejected and the running settings stay);
//! SIGTERM and SIGINT stop accepting, drain sessions for the configured grace period and exit.
//! systemd is told when the relay is ready, reloading and stopping.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::{ConfigError, Settings};
use crate::demo_camera::DemoCamera;
use crate::metrics::{MetricsHub, MetricsServer, ShardMetrics};
use crate::shard::{Shards, StartOptions};

/// The configuration used when none is given: the built-in camera behind `/demo`.
pub fn demo_config(camera_url: &str) -> String {
    format!(
        "[listen]\ntunnel = [\"127.0.0.1:8080\"]\nmetrics = \"127.0.0.1:9100\"\n\n[[route]]\npath = \"/demo\"\nupstream = \"{camera_url}\"\n"
    )
}

/// The shards and the side port running one [`Settings`] value.
struct Relay {
    settings: Arc<Settings>,
    hub: Arc<MetricsHub>,
    shards: Shards,
    metrics_server: Option<MetricsServer>,
}

impl Relay {
    /// Starts everything `settings` calls for.
    fn start(settings: Arc<Settings>) -> anyhow::Result<Relay> {
        let shards = settings.shards();
        let metrics: Vec<Arc<ShardMetrics>> = (0..shards).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let hub = Arc::new(MetricsHub::new(metrics.clone()));
        let metrics_server = match settings.metrics_addr {
            Some(addr) => Some(
                crate::metrics::spawn(addr, hub.clone(), settings.metrics_port)
                    .with_context(|| format!("metrics side port {addr}"))?,
            ),
            None => None,
        };
        let running = Shards::start(StartOptions { settings: settings.clone(), metrics })?;
        hub.set_listeners_bound(true);
        hub.set_shards_running(running.running() == running.count());
        Ok(Relay { settings, hub, shards: running, metrics_server })
    }

    fn local_addrs(&self) -> &[SocketAddr] {
        self.shards.local_addrs()
    }

    /// Validates `path` and, if it is good, runs its settings; a bad file changes nothing.
    fn reload(&mut self, path: &Path) -> Result<(), ConfigError> {
        let next = Settings::load(path)?;
        self.apply(Arc::new(next));
        Ok(())
    }

    fn apply(&mut self, next: Arc<Settings>) {
        if next.bound_addresses() != self.settings.bound_addresses() {
            tracing::warn!("listen addresses changed: they take effect only on restart");
        }
        tracing::info!(
            routes = next.routes.routes().len(),
            tls_listeners = next.listeners.iter().filter(|l| l.tls.is_some()).count(),
            "configuration reloaded"
        );
        self.shards.reload(next.clone());
        if let Some(m) = &self.metrics_server {
            m.set_limits(next.metrics_port);
        }
        self.settings = next;
    }

    /// Stops accepting, drains for `[runtime] shutdown_grace_secs`, then stops the shards.
    fn shutdown(self) {
        let grace = Duration::from_secs(self.settings.runtime.shutdown_grace_secs);
        tracing::info!(sessions = self.shards.sessions(), grace_secs = grace.as_secs(), "shutting down");
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        self.hub.set_shards_running(false);
        self.shards.shutdown(grace);
    }
}

pub fn run(config_path: Option<&Path>) -> anyhow::Result<()> {
    let mut demo = None;
    let settings = match config_path {
        Some(path) => Settings::load(path).with_context(|| format!("configuration {}", path.display()))?,
        None => {
            let camera = DemoCamera::start("127.0.0.1:0".parse()?).context("starting the demo camera")?;
            let settings = Settings::from_toml(&demo_config(&camera.url()))?;
            demo = Some(camera);
            settings
        }
    };
    crate::logging::init(settings.log.format, &settings.log.level);
    let mut relay = Relay::start(Arc::new(settings))?;
    tracing::info!(
        tunnel = ?relay.local_addrs(),
        metrics = ?relay.settings.metrics_addr,
        shards = relay.shards.count(),
        routes = relay.settings.routes.routes().len(),
        demo = demo.is_some(),
        "relay ready"
    );
    if let Some(camera) = &demo {
        tracing::info!(
            "demo: ffplay -rtsp_transport http rtsp://{}/demo  (camera at {})",
            relay.local_addrs()[0],
            camera.url()
        );
    }
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);

    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]).context("installing signal handlers")?;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                let Some(path) = config_path else {
                    tracing::warn!("SIGHUP ignored: the demo has no configuration file to reload");
                    continue;
                };
                let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
                if let Err(e) = relay.reload(path) {
                    tracing::error!(
                        error = format!("configuration {}: {e}", path.display()),
                        "reload rejected; the running configuration stays"
                    );
                }
                let _ = sd_notify::notify(false, &[NotifyState::Ready]);
            }
            _ => {
                relay.shutdown();
                break;
            }
        }
    }
    drop(demo);
    tracing::info!("stopped");
    Ok(())
}

//! The running relay: settings in, shards and side port up, then signals until exit.
//!
//! The configuration is validated once into [`Settings`] (`config`); start-up and every SIGHUP
//! reload run what that one validation produced and read no file themselves. SIGHUP reloads
//! routes, limits, auth and certificates (a bad file is rejected and the running settings stay).
//! SIGTERM and SIGINT make the relay unready at once, keep accepting for `drain_accept_secs` (a
//! balancer learns of it only at its next health check), then close the listeners, drain
//! sessions for `shutdown_grace_secs` and exit; a second one exits at once. A shard that stops on
//! its own (a panic) makes the relay unready at once and ends it the same way, but with a
//! non-zero status, so systemd's `Restart=on-failure` brings it back. systemd is told when the
//! relay is ready, reloading and stopping.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};

use crate::api::{ApiContext, ApiServer};
use crate::config::{ConfigError, Settings};
use crate::control::Control;
use crate::demo_camera::DemoCamera;
use crate::metrics::{Label, MetricsHub, MetricsServer, ShardMetrics, ShardStop};
use crate::shard::{Shards, StartOptions};

/// The test hook: with this variable set to a shard index, SIGUSR2 makes that shard panic in
/// its event loop, as a bug would (the end-to-end tests of a stopped shard use it). Without it
/// SIGUSR2 is not even handled, so production behaviour is unchanged; and whoever can set a
/// process's environment and signal it can already kill it.
pub const TEST_STOP_SHARD_ENV: &str = "RTR_TEST_STOP_SHARD";

/// How often the main thread looks at the shards while they drain.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Where the demo (no configuration file) listens: `--listen`, `--metrics-listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoPorts {
    pub tunnel: SocketAddr,
    pub metrics: SocketAddr,
}

impl DemoPorts {
    /// The metrics port is [`crate::config::DEFAULT_METRICS_PORT`], beside the tunnel's 8080.
    pub const DEFAULT: DemoPorts = DemoPorts {
        tunnel: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080),
        metrics: SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            crate::config::DEFAULT_METRICS_PORT,
        ),
    };
}

/// The configuration used when none is given: the built-in camera behind `/demo`.
pub fn demo_config(camera_url: &str, ports: DemoPorts) -> String {
    format!(
        "[listen]\ntunnel = [\"{}\"]\nmetrics = \"{}\"\n\n[[route]]\npath = \"/demo\"\nupstream = \"{camera_url}\"\n",
        ports.tunnel, ports.metrics
    )
}

/// What the main thread waits for.
enum Event {
    Signal(i32),
    ShardStopped { shard: u16, why: ShardStop },
}

/// The shards and the side port running one [`Settings`] value.
struct Relay {
    settings: Arc<Settings>,
    hub: Arc<MetricsHub>,
    shards: Shards,
    metrics_server: Option<MetricsServer>,
    /// The routes in force (the file's and the control API's) and how they change.
    control: Arc<Control>,
    /// The control API, when `[api] listen` is set.
    api: Option<ApiServer>,
}

impl Relay {
    /// Starts everything `settings` calls for.
    #[cfg(test)]
    fn start(settings: Arc<Settings>) -> anyhow::Result<Relay> {
        Relay::start_with(Arc::new(Control::new(Settings::clone(&settings), None)?), None)
    }

    /// Starts everything `settings` calls for; a shard that stops on its own is counted, makes
    /// the relay unready and is reported to `events`.
    fn start_with(control: Arc<Control>, events: Option<mpsc::Sender<Event>>) -> anyhow::Result<Relay> {
        let settings = control.running();
        let shards = settings.shards();
        let metrics: Vec<Arc<ShardMetrics>> = (0..shards).map(|i| Arc::new(ShardMetrics::new(i))).collect();
        let hub = Arc::new(MetricsHub::new(metrics.clone()));
        crate::control::export_routes(&hub, &settings);
        let metrics_server = match settings.metrics_addr {
            Some(addr) => Some(
                crate::metrics::spawn(addr, hub.clone(), settings.metrics_port)
                    .with_context(|| format!("metrics side port {addr}"))?,
            ),
            None => None,
        };
        let stopped_hub = hub.clone();
        let on_stop = Arc::new(move |shard: u16, why: ShardStop| {
            stopped_hub.shard_stopped(shard, why);
            tracing::error!(
                shard,
                reason = why.as_str(),
                "shard stopped: the relay is unready and exits once the other shards have drained"
            );
            if let Some(events) = &events {
                let _ = events.send(Event::ShardStopped { shard, why });
            }
        });
        let api_metrics = metrics.first().cloned();
        let running = Shards::start_watched(StartOptions { settings: settings.clone(), metrics }, on_stop)?;
        control.attach(running.handle());
        control.attach_metrics(hub.clone());
        let api = match (&settings.api, api_metrics) {
            (Some(api), Some(m)) => Some(ApiServer::start(api, ApiContext::new(control.clone(), m))?),
            _ => None,
        };
        hub.set_listeners_bound(true);
        hub.set_shards_running(running.running() == running.count());
        Ok(Relay { settings, hub, shards: running, metrics_server, control, api })
    }

    fn local_addrs(&self) -> &[SocketAddr] {
        self.shards.local_addrs()
    }

    /// Validates `path` and, if it is good, runs its settings; a bad file changes nothing.
    /// Either way the result is in the metrics (`relay_config_last_reload_successful`).
    /// The control API's routes stay beside the file's; a file that now defines one of their
    /// paths is rejected too.
    fn reload(&mut self, path: &Path) -> Result<(), ConfigError> {
        let next = self.control.reload_from(path)?;
        self.apply(next);
        Ok(())
    }

    /// What the new settings change outside the shards (which `Control` has already told).
    fn apply(&mut self, next: Arc<Settings>) {
        warn_unresolved(&next);
        if next.bound_addresses() != self.settings.bound_addresses()
            || next.api.as_ref().map(|a| a.listen) != self.settings.api.as_ref().map(|a| a.listen)
        {
            tracing::warn!("listen addresses changed: they take effect only on restart");
        }
        tracing::info!(
            routes = next.routes.routes().len(),
            tls_listeners = next.listeners.iter().filter(|l| l.tls.is_some()).count(),
            "configuration reloaded"
        );
        if let Some(m) = &self.metrics_server {
            m.set_limits(next.metrics_port);
        }
        self.settings = next;
    }

    /// Stops accepting, drains for `[runtime] shutdown_grace_secs`, then stops the shards.
    #[cfg(test)]
    fn shutdown(self) {
        let grace = Duration::from_secs(self.settings.runtime.shutdown_grace_secs);
        self.hub.set_draining();
        self.shards.shutdown(grace);
    }
}

/// A camera name that did not resolve fails its route only; the operator hears of it here, at
/// load, and again when the camera is first wanted (`camera failing`).
fn warn_unresolved(settings: &Settings) {
    for (route, why) in settings.unresolved_routes() {
        tracing::warn!(
            route,
            reason = why,
            "camera name does not resolve: the route fails at connect time until a reload resolves it"
        );
    }
}

/// A stop under way: unready since `began`, accepting until `close_at`, then draining.
struct Stopping {
    close_at: Instant,
    listeners_closed: bool,
    /// Why the process will exit non-zero (a shard that stopped on its own).
    failure: Option<String>,
}

impl Stopping {
    /// Turns the relay unready and starts the clock; listeners stay open `drain_accept_secs`.
    fn begin(relay: &Relay, failure: Option<String>) -> Stopping {
        let accept = Duration::from_secs(relay.settings.runtime.drain_accept_secs);
        relay.hub.set_draining();
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        tracing::info!(
            sessions = relay.shards.sessions(),
            accept_secs = accept.as_secs(),
            grace_secs = relay.settings.runtime.shutdown_grace_secs,
            "shutting down: unready now, accepting a while longer, then draining"
        );
        Stopping { close_at: Instant::now() + accept, listeners_closed: false, failure }
    }

    /// Closes the listeners once accepting time is over; true once every shard has ended.
    fn advance(&mut self, relay: &Relay) -> bool {
        if !self.listeners_closed && Instant::now() >= self.close_at {
            let grace = Duration::from_secs(relay.settings.runtime.shutdown_grace_secs);
            tracing::info!(
                sessions = relay.shards.sessions(),
                grace_secs = grace.as_secs(),
                "listeners closed: draining"
            );
            relay.shards.begin_shutdown(grace);
            self.listeners_closed = true;
        }
        self.listeners_closed && relay.shards.finished()
    }

    /// How long the main thread may wait for the next event.
    fn wait(&self) -> Duration {
        if self.listeners_closed { DRAIN_POLL } else { self.close_at.saturating_duration_since(Instant::now()) }
    }

    fn exit(self) -> anyhow::Result<()> {
        match self.failure {
            Some(why) => Err(anyhow::anyhow!("{why}; exiting with a failure status so the service is restarted")),
            None => Ok(()),
        }
    }
}

/// Logs a panic (any thread's) at error through `tracing`, with where it happened, so it reaches
/// the same log as everything else (JSON included) instead of bare standard error.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("?");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        // Captured only when RUST_BACKTRACE asks for it, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, location, %backtrace, "panic: {message}");
        } else {
            tracing::error!(thread, location, "panic: {message}");
        }
    }));
}

/// The shard the test hook stops on SIGUSR2, when the hook is enabled (see
/// [`TEST_STOP_SHARD_ENV`]).
fn test_stop_shard() -> Option<usize> {
    std::env::var(TEST_STOP_SHARD_ENV).ok()?.parse().ok()
}

pub fn run(config_path: Option<&Path>, demo_ports: DemoPorts) -> anyhow::Result<()> {
    let mut demo = None;
    let settings = match config_path {
        Some(path) => Settings::load(path).with_context(|| format!("configuration {}", path.display()))?,
        None => {
            let camera = DemoCamera::start("127.0.0.1:0".parse()?).context("starting the demo camera")?;
            let settings = Settings::from_toml(&demo_config(&camera.url(), demo_ports))?;
            demo = Some(camera);
            settings
        }
    };
    crate::logging::init(settings.log.format, &settings.log.level);
    log_panics();
    warn_unresolved(&settings);
    let (events, rx) = mpsc::channel();
    let control = Control::new(settings, config_path.map(Path::to_path_buf))
        .with_context(|| "the control API's routes ([api] state_dir)")?;
    let mut relay = Relay::start_with(Arc::new(control), Some(events.clone()))?;
    tracing::info!(
        tunnel = ?relay.local_addrs(),
        metrics = ?relay.settings.metrics_addr,
        api = ?relay.api.as_ref().map(ApiServer::local_addr),
        shards = relay.shards.count(),
        routes = relay.settings.routes.routes().len(),
        demo = demo.is_some(),
        "relay ready"
    );
    if let Some(camera) = &demo {
        let at = relay.local_addrs()[0];
        tracing::info!(
            "demo: play rtsp://{at}/demo (ffplay -rtsp_transport http rtsp://{at}/demo), or open http://{at}/demo in a browser; every route's URLs at http://{at}/ (camera at {})",
            camera.url()
        );
    }
    let test_stop = test_stop_shard();
    let mut handled = vec![SIGHUP, SIGINT, SIGTERM];
    if let Some(shard) = test_stop {
        tracing::warn!(shard, "{TEST_STOP_SHARD_ENV} is set: SIGUSR2 stops that shard (tests only)");
        handled.push(SIGUSR2);
    }
    let mut signals = signal_hook::iterator::Signals::new(handled).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if events.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);

    let mut stopping: Option<Stopping> = None;
    loop {
        let event = match &stopping {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(s) => rx.recv_timeout(s.wait()),
        };
        match event {
            Ok(Event::Signal(SIGHUP)) if stopping.is_some() => tracing::info!("SIGHUP ignored: stopping"),
            Ok(Event::Signal(SIGHUP)) => {
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
            Ok(Event::Signal(SIGUSR2)) => {
                if let Some(shard) = test_stop {
                    relay.shards.test_stop(shard);
                }
            }
            Ok(Event::Signal(sig)) => match stopping.take() {
                // SIGTERM or SIGINT while already stopping: the operator wants out now.
                Some(s) => {
                    tracing::warn!(
                        sessions = relay.shards.sessions(),
                        signal = sig,
                        "second stop signal: exiting at once"
                    );
                    return s.exit();
                }
                None => stopping = Some(Stopping::begin(&relay, None)),
            },
            Ok(Event::ShardStopped { shard, why }) => {
                let failure = format!("shard {shard} stopped ({})", why.as_str());
                match &mut stopping {
                    None => stopping = Some(Stopping::begin(&relay, Some(failure))),
                    Some(s) => {
                        s.failure.get_or_insert(failure);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("the signal thread ended"),
        }
        if let Some(s) = &mut stopping {
            if s.advance(&relay) {
                break;
            }
        }
    }
    let Some(stopping) = stopping else { return Ok(()) };
    let Relay { shards, metrics_server, api, .. } = relay;
    shards.join();
    drop(api);
    drop(metrics_server);
    drop(demo);
    tracing::info!("stopped");
    stopping.exit()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rtr-app-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A self-signed pair for `localhost` in `dir`; returns the certificate (DER) too.
    fn write_pair(dir: &Path) -> (PathBuf, PathBuf, rustls_pki_types::CertificateDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k, ck.cert.der().clone())
    }

    /// A one-shard relay on ephemeral ports with an HTTPS listener and the given routes
    /// (cameras never contacted: a tunnel GET is answered before any camera is).
    fn config(cert: &Path, key: &Path, routes: &[&str], extra: &str) -> String {
        let mut text = format!(
            "[listen]\ntunnel = [\"127.0.0.1:0\"]\nmetrics = \"127.0.0.1:0\"\n\
             [[listen.tls]]\naddr = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\n\
             [runtime]\nshards = 1\npin_cores = false\nring_entries = 256\nrecv_buffers = 64\nshutdown_grace_secs = 1\n{extra}"
        );
        for path in routes {
            text.push_str(&format!("[[route]]\npath = \"{path}\"\nupstream = \"rtsp://127.0.0.1:9{path}\"\n"));
        }
        text
    }

    /// The status line a tunnel GET for `path` is answered with (empty if none comes).
    fn get_status(stream: &mut impl ReadWrite, path: &str) -> String {
        let cookie = format!("c{:016x}", next_cookie());
        let request = format!("GET {path} HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return String::new();
        }
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            reply.push(byte[0]);
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    fn next_cookie() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn plain_status(relay: &Relay, path: &str) -> String {
        let mut s = TcpStream::connect(relay.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        get_status(&mut s, path)
    }

    /// The status line of a tunnel GET over HTTPS from a client trusting only `cert` (empty if
    /// the handshake fails).
    fn tls_status(relay: &Relay, cert: rustls_pki_types::CertificateDer<'static>, path: &str) -> String {
        tls_status_after(relay, cert, &[], path)
    }

    /// [`tls_status`] with `prefix` (a PROXY header) sent in the clear before the handshake.
    fn tls_status_after(
        relay: &Relay,
        cert: rustls_pki_types::CertificateDer<'static>,
        prefix: &[u8],
        path: &str,
    ) -> String {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
        let mut tcp = TcpStream::connect(relay.local_addrs()[1]).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(prefix).unwrap();
        get_status(&mut rustls::StreamOwned::new(conn, tcp), path)
    }

    #[test]
    fn a_proxy_header_names_the_viewer_on_the_plain_and_the_tls_listener() {
        use crate::proto::proxy_header::encode_v2;
        let dir = temp_dir("proxy");
        let (cert, key, der) = write_pair(&dir);
        let text = format!(
            "[listen]\ntunnel = [\"127.0.0.1:0\"]\nproxy_protocol = true\nproxy_from = [\"127.0.0.1\"]\n\
             [[listen.tls]]\naddr = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\n\
             [runtime]\nshards = 1\npin_cores = false\nring_entries = 256\nrecv_buffers = 64\nshutdown_grace_secs = 1\n\
             [[route]]\npath = \"/a\"\nupstream = \"rtsp://127.0.0.1:9/a\"\ndeny = [\"127.0.0.9\"]\n"
        );
        let relay = Relay::start(Arc::new(Settings::from_toml(&text).unwrap())).unwrap();
        let header = |viewer: &str, listener: usize| {
            encode_v2(format!("{viewer}:40000").parse().unwrap(), relay.local_addrs()[listener], &[])
        };
        let plain = |prefix: &[u8]| {
            let mut s = TcpStream::connect(relay.local_addrs()[0]).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(prefix).unwrap();
            get_status(&mut s, "/a")
        };
        // The route's deny list judges the address in the header, before and inside TLS.
        assert_eq!(plain(&header("127.0.0.9", 0)), "HTTP/1.0 403 Forbidden");
        assert_eq!(plain(&header("127.0.0.10", 0)), "HTTP/1.0 200 OK");
        assert_eq!(tls_status_after(&relay, der.clone(), &header("127.0.0.9", 1), "/a"), "HTTP/1.0 403 Forbidden");
        assert_eq!(tls_status_after(&relay, der.clone(), &header("127.0.0.10", 1), "/a"), "HTTP/1.0 200 OK");
        // The balancer's address must send one: without it, closed unanswered on both.
        assert_eq!(plain(b""), "");
        assert_eq!(tls_status(&relay, der, "/a"), "");
        let text = relay.hub.render();
        for (reason, n) in [("address_denied", 2), ("proxy_header", 2), ("proxy_untrusted", 0)] {
            let series = format!("relay_rejections_total{{reason=\"{reason}\"}} {n}");
            assert!(text.lines().any(|l| l == series), "{series}\n{text}");
        }
        relay.shutdown();
    }

    #[test]
    fn start_up_runs_what_one_validation_produced_and_reads_no_file() {
        let dir = temp_dir("start");
        let (cert, key, der) = write_pair(&dir);
        let file = dir.join("relay.toml");
        std::fs::write(&file, config(&cert, &key, &["/a"], "")).unwrap();
        let settings = Settings::load(&file).unwrap();
        // Start-up gets nothing but the validated value: with the files gone, a second read
        // of the configuration or the certificate would fail.
        std::fs::remove_dir_all(&dir).unwrap();
        let relay = Relay::start(Arc::new(settings)).unwrap();
        assert_eq!(relay.local_addrs().len(), 2, "the plain and the HTTPS listener");
        assert!(relay.metrics_server.is_some());
        assert_eq!(plain_status(&relay, "/a"), "HTTP/1.0 200 OK");
        assert_eq!(plain_status(&relay, "/b"), "HTTP/1.0 404 Not Found");

        // The HTTPS listener serves the certificate loaded at validation.
        assert_eq!(tls_status(&relay, der, "/a"), "HTTP/1.0 200 OK");
        relay.shutdown();
    }

    #[test]
    fn a_bad_file_on_reload_leaves_the_running_settings_in_force() {
        let dir = temp_dir("reload");
        let (cert, key, _) = write_pair(&dir);
        let file = dir.join("relay.toml");
        std::fs::write(&file, config(&cert, &key, &["/a"], "")).unwrap();
        let mut relay = Relay::start(Arc::new(Settings::load(&file).unwrap())).unwrap();
        let running = relay.settings.clone();
        // Each adds /b; each fails at a different stage of the one validation, the last ones
        // only after routes, limits and the address lists were already understood.
        let missing = dir.join("missing.pem");
        let bad = [
            (config(&cert, &key, &["/a", "/b"], "[limits\n"), "expected"),
            (config(&cert, &key, &["/a", "/b"], "[limits]\nmax_sessions = 0\n"), "max_sessions"),
            (config(&missing, &key, &["/a", "/b"], "[limits]\nmax_sessions = 5\n"), "missing.pem"),
            (
                config(&cert, &key, &["/a", "/b"], "[limits]\nmax_sessions = 5\n")
                    + "[[route]]\npath = \"/c\"\nupstream = \"rtsp://127.0.0.1:9/c\"\nallow = [\"nope\"]\n",
                "not an address or CIDR",
            ),
        ];
        for (text, why) in bad {
            std::fs::write(&file, text).unwrap();
            let err = relay.reload(&file).unwrap_err().to_string();
            assert!(err.contains(why), "{err:?} lacks {why:?}");
            assert!(Arc::ptr_eq(&relay.settings, &running), "a rejected file replaced the settings");
            assert_eq!(relay.settings.limits.max_sessions, running.limits.max_sessions);
        }
        // Give any (wrongly) posted reload time to reach the shard, then ask it.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(plain_status(&relay, "/b"), "HTTP/1.0 404 Not Found", "the shard took a rejected file");
        assert_eq!(plain_status(&relay, "/a"), "HTTP/1.0 200 OK");

        // A good file, with a new certificate: routes and certificate both reach the shard.
        let renewed = dir.join("renewed");
        std::fs::create_dir_all(&renewed).unwrap();
        let (cert, key, der) = write_pair(&renewed);
        std::fs::write(&file, config(&cert, &key, &["/a", "/b"], "[limits]\nmax_sessions = 5\n")).unwrap();
        relay.reload(&file).unwrap();
        assert_eq!(relay.settings.limits.max_sessions, 5);
        let deadline = Instant::now() + Duration::from_secs(5);
        while plain_status(&relay, "/b") != "HTTP/1.0 200 OK" || tls_status(&relay, der.clone(), "/b").is_empty() {
            assert!(Instant::now() < deadline, "the shard never took the good file");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(tls_status(&relay, der, "/b"), "HTTP/1.0 200 OK");
        relay.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

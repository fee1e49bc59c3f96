//! Thread-per-core io_uring shards: the I/O shell around `proto::tunnel`.
//!
//! Each shard is a thread, pinned to a core, owning one io_uring, its own `SO_REUSEPORT`
//! listener on every tunnel address (so the kernel spreads accepts), a provided buffer ring, and
//! every connection accepted on it. Shards share only the cookie table, admission counters and
//! mailboxes; once a tunnel's POST has joined its GET, a session lives wholly on one shard.
//!
//! All `unsafe` code of the relay lives in this module, each block with its invariant, and
//! within it in the I/O part of a shard (`event_loop`); the relay part (`relay`) holds the
//! sessions and shared routes and asks the I/O part for connection work.

mod buf_ring;
mod camera_table;
mod conn;
mod conn_table;
mod event_loop;
mod gatekeeper;
mod heap_purge;
mod kernel_memory;
mod mailbox;
mod ops;
mod relay;
mod replica_link;
mod send_queue;
mod session_table;
mod slab_table;
pub mod snapshot;
mod tls_stream;
mod token;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::admission::{Admission, AuthFailureLimiter, ViewerCapTable};
use crate::auth_worker::AuthWorker;
use crate::config::{Acl, Settings};
use crate::metrics::{ShardMetrics, ShardStop};
use crate::pairing::CookieTable;

pub use mailbox::Mailbox;
use mailbox::ShardMsg;

/// State every shard can reach.
pub(crate) struct Shared {
    pub mailboxes: Vec<Arc<Mailbox>>,
    pub cookies: CookieTable,
    pub admission: Admission,
    pub auth_failures: Arc<AuthFailureLimiter>,
    /// Viewers per route, sessions per user and per address.
    pub viewer_caps: Arc<ViewerCapTable>,
    /// Answers external authorization questions off the shards.
    pub authorizer: Arc<AuthWorker>,
    pub metrics: Vec<Arc<ShardMetrics>>,
    /// Passthrough camera sessions per camera host (`[limits] max_camera_sessions`); taken
    /// once per camera session, not per packet.
    pub camera_hosts: std::sync::Mutex<crate::proto::camera_host_sessions::CameraHostSessions>,
    /// What every shard's GOP caches hold, against `[limits] gop_cache_total_bytes`.
    pub gop_budget: Arc<crate::proto::gop_budget::GopBudget>,
    running: AtomicUsize,
}

impl Shared {
    fn shard_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    fn shard_stopped(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A listening socket of one shard; TLS listeners carry their server configuration.
struct Listener {
    fd: OwnedFd,
    tls: Option<Arc<rustls::ServerConfig>>,
    acl: Acl,
}

/// What one shard starts with: its listeners (in `settings.listeners` order) and the settings.
struct ShardConfig {
    id: u16,
    listeners: Vec<Listener>,
    settings: Arc<Settings>,
    seed: u64,
}

/// Everything needed to start the shards.
pub struct StartOptions {
    /// The validated configuration; `settings.shards()` shards are started.
    pub settings: Arc<Settings>,
    /// One per shard.
    pub metrics: Vec<Arc<ShardMetrics>>,
}

/// Told, on the stopped shard's thread, when a shard stops on its own (a panic, a failed ring).
pub type OnShardStop = Arc<dyn Fn(u16, ShardStop) + Send + Sync>;

/// The running shards.
pub struct Shards {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
}

/// Why a bind failed, in words an operator can act on.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        return std::io::Error::new(e.kind(), format!("cannot bind {addr}: address in use by another process"));
    }
    std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))
}

/// Refuses `addr` when another process listens on it (or on an address that overlaps it).
///
/// The shards' listeners share their port through `SO_REUSEPORT`, which lets any other socket
/// of the same user join the group too: a second relay, or an old one not yet stopped, would
/// silently get a share of the connections, and a tunnel's GET and POST could land in
/// different processes. So before the group is bound, a probe socket without `SO_REUSEPORT`
/// binds the address: the kernel refuses it (EADDRINUSE) exactly when some socket listens
/// there, whatever that socket's options, because a listener is joined only by sockets that
/// all set `SO_REUSEPORT`. The probe sets `SO_REUSEADDR` like the listeners, so connections
/// of a previous run lingering in TIME_WAIT do not count. It is closed before the group
/// binds: two relays started within the same few microseconds could both pass, which a
/// restart or a second start by hand never does. A `:0` address has nothing to probe.
fn refuse_if_taken(addr: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| bind_error(addr, e))
}

/// Binds one `SO_REUSEPORT` listener per shard for `addr`. The first bind fixes the port (so
/// `:0` works in tests); the others join it.
fn bind_listeners(addr: SocketAddr, count: usize) -> std::io::Result<(SocketAddr, Vec<OwnedFd>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut bound = addr;
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nodelay(true)?;
        s.bind(&bound.into()).map_err(|e| bind_error(bound, e))?;
        s.listen(4096)?;
        if let Some(a) = s.local_addr()?.as_socket() {
            bound = a;
        }
        fds.push(OwnedFd::from(s));
    }
    Ok((bound, fds))
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // Only Digest cnonces depend on this: a failure degrades them to a fixed start, not a fault.
    let _ = getrandom::getrandom(&mut b);
    u64::from_le_bytes(b) | 1
}

impl Shards {
    /// Binds every listener (so bind errors surface here) and starts the shard threads.
    pub fn start(opts: StartOptions) -> anyhow::Result<Shards> {
        Shards::start_watched(opts, Arc::new(|_, _| {}))
    }

    /// [`Shards::start`], with `on_stop` told when a shard stops on its own. By then the shard
    /// is out of its listeners' port groups, its mailbox is closed (hand-offs to it come back to
    /// their senders) and the cookie table no longer points at it.
    pub fn start_watched(opts: StartOptions, on_stop: OnShardStop) -> anyhow::Result<Shards> {
        let settings = opts.settings;
        let n = settings.shards().max(1);
        anyhow::ensure!(opts.metrics.len() == n, "one ShardMetrics per shard");
        let mut per_shard: Vec<Vec<Listener>> = (0..n).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        // All probed before any is bound, so two of our own addresses that overlap (0.0.0.0
        // and 127.0.0.1 on one port) are not taken for another process.
        for l in &settings.listeners {
            refuse_if_taken(l.addr)?;
        }
        for l in &settings.listeners {
            let (bound, fds) = bind_listeners(l.addr, n)?;
            local_addrs.push(bound);
            for (i, fd) in fds.into_iter().enumerate() {
                per_shard[i].push(Listener { fd, tls: l.tls.clone(), acl: l.acl.clone() });
            }
        }
        let mailboxes = (0..n).map(|_| Mailbox::new().map(Arc::new)).collect::<std::io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            mailboxes,
            cookies: CookieTable::new(),
            admission: Admission::new(),
            auth_failures: Arc::new(AuthFailureLimiter::new()),
            viewer_caps: Arc::new(ViewerCapTable::new(
                settings.auth.max_sessions_per_user,
                settings.auth.max_sessions_per_ip,
            )),
            authorizer: AuthWorker::start(&settings.auth)?,
            metrics: opts.metrics,
            camera_hosts: Default::default(),
            gop_budget: crate::proto::gop_budget::GopBudget::new(settings.limits.gop_cache_total_bytes),
            running: AtomicUsize::new(0),
        });
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut threads = Vec::with_capacity(n);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        for (i, listeners) in per_shard.into_iter().enumerate() {
            let cfg = ShardConfig { id: i as u16, listeners, settings: settings.clone(), seed: random_seed() };
            let shared = shared.clone();
            let core = (settings.runtime.pin_cores && !cores.is_empty()).then(|| cores[i % cores.len()]);
            let ready = ready_tx.clone();
            let on_stop = on_stop.clone();
            let t = std::thread::Builder::new().name(format!("shard-{i}")).spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let shard = match event_loop::Shard::new(cfg, shared.clone()) {
                    Ok(shard) => shard,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                // A panic unwinds through the shard's Drop (connections shut down, their memory
                // leaked if the kernel may still use it, listeners out of their groups) and ends
                // here; the process hook has logged it with its location.
                let run = std::panic::AssertUnwindSafe(|| {
                    shard.run(|| {
                        let _ = ready.send(Ok(()));
                    })
                });
                let stop = std::panic::catch_unwind(run).unwrap_or(Some(ShardStop::Panic));
                // Posted after it stopped: dropped, which closes their connections.
                drop(shared.mailboxes[i].close());
                if let Some(why) = stop {
                    shared.cookies.forget_shard(i as u16);
                    on_stop(i as u16, why);
                }
            })?;
            threads.push(t);
        }
        drop(ready_tx);
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => anyhow::bail!("cannot set up an io_uring shard: {e}"),
                Err(_) => anyhow::bail!("a shard thread died during start-up"),
            }
        }
        Ok(Shards { shared, threads, local_addrs })
    }

    /// The bound tunnel addresses: plain ones in configuration order, then TLS ones.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Shards whose event loop is running.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Acquire)
    }

    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Current live sessions across shards.
    pub fn sessions(&self) -> usize {
        self.shared.admission.sessions()
    }

    /// New settings for every shard: routes, limits, auth and TLS certificates take effect
    /// (listener addresses and `[runtime]` only on restart); sessions on removed routes end
    /// cleanly, live TLS sessions keep their keys.
    pub fn reload(&self, settings: Arc<Settings>) {
        let auth = &settings.auth;
        self.shared.viewer_caps.set_limits(auth.max_sessions_per_user, auth.max_sessions_per_ip);
        self.shared.authorizer.reload(auth);
        self.shared.gop_budget.set_limit(settings.limits.gop_cache_total_bytes);
        for m in &self.shared.mailboxes {
            // A stopped shard takes no more settings.
            let _ = m.post(ShardMsg::Reload { settings: settings.clone() });
        }
    }

    /// What another thread (the control API) may do with the shards: reload them, ask them.
    pub fn handle(&self) -> ShardHandle {
        ShardHandle { shared: self.shared.clone() }
    }

    /// Stops accepting, lets sessions run up to `grace`, then ends them and waits for the shards.
    pub fn shutdown(self, grace: Duration) {
        self.begin_shutdown(grace);
        self.join();
    }

    /// Tells every shard to stop accepting and to end its sessions after `grace`.
    pub fn begin_shutdown(&self, grace: Duration) {
        for m in &self.shared.mailboxes {
            // A stopped shard has nothing left to drain.
            let _ = m.post(ShardMsg::Shutdown { grace });
        }
    }

    /// Whether every shard thread has ended.
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for every shard thread.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// The test hook (`RTR_TEST_STOP_SHARD`, honoured only when that variable is set, see
    /// `app`): `shard` panics in its event loop as a bug would.
    pub fn test_stop(&self, shard: usize) {
        if let Some(m) = self.shared.mailboxes.get(shard) {
            let _ = m.post(ShardMsg::TestPanic);
        }
    }
}

/// The shards as the control plane reaches them: through their mailboxes only.
#[derive(Clone)]
pub struct ShardHandle {
    shared: Arc<Shared>,
}

impl ShardHandle {
    /// The external authorizer, which the control API asks about JWTs too.
    pub fn authorizer(&self) -> &Arc<AuthWorker> {
        &self.shared.authorizer
    }

    pub fn count(&self) -> usize {
        self.shared.mailboxes.len()
    }

    /// New settings for every shard, as [`Shards::reload`].
    pub fn reload(&self, settings: Arc<Settings>) {
        self.shared.gop_budget.set_limit(settings.limits.gop_cache_total_bytes);
        for m in &self.shared.mailboxes {
            let _ = m.post(ShardMsg::Reload { settings: settings.clone() });
        }
    }

    /// Posts `query` to `shard`; false when that shard has stopped (or does not exist), so
    /// no answer will come.
    pub fn ask(&self, shard: usize, query: snapshot::Query) -> bool {
        self.shared.mailboxes.get(shard).is_some_and(|m| m.post(ShardMsg::Query(query)).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_socket_listens_on_is_refused_whatever_its_options() {
        // A reuseport group like another relay's, and a plain listener.
        let (group_addr, group) = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_addr = plain.local_addr().unwrap();
        for taken in [group_addr, plain_addr, SocketAddr::from(([0, 0, 0, 0], plain_addr.port()))] {
            let e = refuse_if_taken(taken).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
            assert_eq!(e.to_string(), format!("cannot bind {taken}: address in use by another process"));
        }
        drop((group, plain));
        assert!(refuse_if_taken(group_addr).is_ok() && refuse_if_taken(plain_addr).is_ok(), "free again");
    }
}

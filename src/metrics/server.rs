//! The metrics side port: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Plain blocking HTTP/1.x (heads parsed by `httparse`) on its own threads, far from the
//! io_uring shards: a scrape reads counters and copies histograms, so it can never stall media.
//! Slow clients cannot hold the port: every connection has one deadline from accept to the end
//! of its answer (`[metrics] request_timeout_ms`), and when `max_connections` are open a new one
//! makes room by closing the oldest connection still sending its request — a scrape or health
//! check is never refused because others trickle bytes.
//!
//! Nor can a flood elsewhere take it dark: each connection costs one descriptor, and at the
//! process's open-file limit (EMFILE, ENFILE) a spare kept for the purpose makes room for it
//! ([`FdReserve`]); with no spare left the oldest connection still sending its request is shed,
//! and the acceptor waits for a spare instead of spinning on a failing accept.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fd_reserve::{FdReserve, out_of_descriptors};
use super::{MetricsHub, PortDrop};
use crate::config::MetricsPortConfig;

/// Largest request head read (answered 400 beyond, `PortDrop::TooLarge`).
const MAX_REQUEST: usize = 8 * 1024;
/// Most header lines in a request (scrapers and probes send a handful); more is refused as
/// too large.
const MAX_HEADERS: usize = 64;
/// Spare descriptors for accepting at the open-file limit: a health check and a scrape at once.
const SPARE_FDS: usize = 2;
/// At the limit with no spare, how long the acceptor waits for one before trying again.
const SPARE_WAIT: Duration = Duration::from_millis(100);

pub struct MetricsServer {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    port: Arc<Port>,
    thread: Option<JoinHandle<()>>,
}

/// A connection being served.
struct Active {
    id: u64,
    /// The socket its thread serves (the same descriptor), to shut it when it is shed.
    stream: Arc<TcpStream>,
    /// Still receiving its request (the ones shed first).
    reading: Arc<AtomicBool>,
}

/// State shared by the accepting thread and the connection threads.
struct Port {
    request_timeout_ms: AtomicU64,
    max_connections: AtomicUsize,
    /// Open connections, oldest first.
    active: Mutex<Vec<Active>>,
    /// Connection threads alive (shed ones included, until they notice).
    threads: Mutex<usize>,
    thread_exited: Condvar,
    /// Descriptors kept for accepting at the open-file limit.
    reserve: Mutex<FdReserve>,
    /// A spare came back (a connection ended).
    spare_back: Condvar,
}

impl Port {
    fn set(&self, cfg: MetricsPortConfig) {
        self.request_timeout_ms.store(cfg.request_timeout_ms, Ordering::Relaxed);
        self.max_connections.store(cfg.max_connections.max(1), Ordering::Relaxed);
    }

    /// Registers a new connection, first closing the oldest one still sending its request
    /// (else the oldest) if the port is full. Returns whether one was shed.
    fn admit(&self, new: Active) -> bool {
        let max = self.max_connections.load(Ordering::Relaxed);
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let mut shed = false;
        while active.len() >= max {
            let victim = active.iter().position(|a| a.reading.load(Ordering::Acquire)).unwrap_or(0);
            let old = active.remove(victim);
            // Its thread's read or write returns at once and the thread ends.
            let _ = old.stream.shutdown(Shutdown::Both);
            shed = true;
        }
        active.push(new);
        shed
    }

    fn leave(&self, id: u64) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.retain(|a| a.id != id);
    }

    /// At the open-file limit: a spare makes room for one accept. With none left, the oldest
    /// connection still sending its request is shed (its descriptor comes back as a spare when
    /// its thread ends) and the acceptor waits for a spare, so it never spins on EMFILE.
    fn accept_at_limit(&self, listener: &TcpListener, hub: &MetricsHub) -> Option<TcpStream> {
        let mut reserve = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
        if reserve.release_one() {
            drop(reserve);
            // Fails only if another thread took the freed number first: the next round sheds.
            return listener.accept().ok().map(|(conn, _)| conn);
        }
        drop(reserve);
        if self.shed_oldest_reading() {
            hub.port_dropped(PortDrop::Shed);
        }
        let reserve = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.spare_back.wait_timeout_while(reserve, SPARE_WAIT, |r| r.spares() == 0);
        None
    }

    /// Closes the oldest connection still sending its request; false if there is none (those
    /// answering finish by their deadline).
    fn shed_oldest_reading(&self) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let Some(victim) = active.iter().position(|a| a.reading.load(Ordering::Acquire)) else { return false };
        let old = active.remove(victim);
        let _ = old.stream.shutdown(Shutdown::Both);
        true
    }

    /// A connection is done: its descriptor becomes a spare again if the reserve is short, so
    /// the number never goes back to the flood in between.
    fn reclaim(&self, conn: Arc<TcpStream>) {
        // The acceptor may still hold the other handle for a moment (shed): it closes it then.
        let Ok(conn) = Arc::try_unwrap(conn) else { return };
        let mut reserve = self.reserve.lock().unwrap_or_else(|e| e.into_inner());
        reserve.reclaim(conn.into());
        self.spare_back.notify_one();
    }

    /// Opens missing spares again, as far as descriptors allow.
    fn top_up(&self) {
        self.reserve.lock().unwrap_or_else(|e| e.into_inner()).top_up();
    }

    /// Waits until fewer than `limit` connection threads live: shed threads end as soon as the
    /// scheduler runs them, so this only paces a flood of connections.
    fn wait_for_thread_room(&self, limit: usize) {
        let mut n = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= limit {
            n = self.thread_exited.wait_timeout(n, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
        *n += 1;
    }

    fn thread_done(&self) {
        let mut n = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.thread_exited.notify_one();
    }
}

/// Binds `addr` (so a bad address is reported to the caller) and serves in the background.
pub fn spawn(addr: SocketAddr, hub: Arc<MetricsHub>, cfg: MetricsPortConfig) -> std::io::Result<MetricsServer> {
    let reserve = FdReserve::new(SPARE_FDS)?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        if e.kind() == ErrorKind::AddrInUse {
            std::io::Error::new(e.kind(), "address in use by another process")
        } else {
            e
        }
    })?;
    let addr = listener.local_addr()?;
    let listener = Arc::new(listener);
    let stop = Arc::new(AtomicBool::new(false));
    let port = Arc::new(Port {
        request_timeout_ms: AtomicU64::new(0),
        max_connections: AtomicUsize::new(1),
        active: Mutex::new(Vec::new()),
        threads: Mutex::new(0),
        thread_exited: Condvar::new(),
        reserve: Mutex::new(reserve),
        spare_back: Condvar::new(),
    });
    port.set(cfg);
    let (stop2, port2, listener2) = (stop.clone(), port.clone(), listener.clone());
    let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let mut next_id = 0u64;
        while !stop2.load(Ordering::Acquire) {
            let conn = match listener2.accept() {
                Ok((conn, _)) => {
                    port2.top_up();
                    conn
                }
                Err(e) if out_of_descriptors(&e) => match port2.accept_at_limit(&listener2, &hub) {
                    Some(conn) => conn,
                    None => continue,
                },
                // A connection reset before it was taken, or the wake-up at stop.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionAborted | ErrorKind::Interrupted) => continue,
                // Anything else (out of memory, say) would most likely fail again at once.
                Err(_) => {
                    std::thread::sleep(SPARE_WAIT);
                    continue;
                }
            };
            if stop2.load(Ordering::Acquire) {
                break;
            }
            let deadline = Instant::now() + Duration::from_millis(port2.request_timeout_ms.load(Ordering::Relaxed));
            let conn = Arc::new(conn);
            next_id += 1;
            let id = next_id;
            let reading = Arc::new(AtomicBool::new(true));
            if port2.admit(Active { id, stream: conn.clone(), reading: reading.clone() }) {
                hub.port_dropped(PortDrop::Shed);
            }
            port2.wait_for_thread_room(2 * port2.max_connections.load(Ordering::Relaxed));
            let (hub, port) = (hub.clone(), port2.clone());
            let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                if let Some(why) = serve(&conn, &hub, deadline, &reading) {
                    hub.port_dropped(why);
                }
                port.leave(id);
                port.reclaim(conn);
                port.thread_done();
            });
            if spawned.is_err() {
                tracing::warn!("metrics: cannot spawn a connection thread");
                port2.leave(id);
                port2.thread_done();
            }
        }
    })?;
    Ok(MetricsServer { addr, listener, stop, port, thread: Some(thread) })
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// New limits (SIGHUP); connections already open keep their deadline.
    pub fn set_limits(&self, cfg: MetricsPortConfig) {
        self.port.set(cfg);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking accept (Linux fails it with EINVAL): unlike connecting to
        // ourselves, this needs no descriptor, so it works at the open-file limit too.
        let _ = socket2::SockRef::from(&*self.listener).shutdown(Shutdown::Read);
        // The acceptor may be waiting for a spare.
        self.port.spare_back.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An answer; `head_only` for HEAD (the length of the body it would have had, no body).
fn reply(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// The answer to a parsed request.
fn answer(hub: &MetricsHub, method: &str, target: &str) -> Vec<u8> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return reply(405, "text/plain", "method not allowed\n", false);
    }
    let text = |status, body| reply(status, "text/plain", body, head_only);
    match target.split('?').next().unwrap_or("") {
        "/metrics" => reply(200, "text/plain; version=0.0.4; charset=utf-8", &hub.render(), head_only),
        "/healthz" => text(200, "ok\n"),
        "/readyz" => match hub.readiness() {
            Ok(()) => text(200, "ready\n"),
            Err(why) => reply(503, "text/plain", &format!("not ready: {why}\n"), head_only),
        },
        _ => text(404, "not found\n"),
    }
}

/// Time left before `deadline`, if any.
fn left(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Serves one request by `deadline`; returns why it was dropped, if it was (a connection shed
/// by the acceptor, or closed by its client, just ends).
fn serve(mut conn: &TcpStream, hub: &MetricsHub, deadline: Instant, reading: &AtomicBool) -> Option<PortDrop> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let response = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_REQUEST => {
                break answer(hub, req.method.unwrap_or(""), req.path.unwrap_or(""));
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_REQUEST => {}
            Ok(_) | Err(httparse::Error::TooManyHeaders) => {
                reading.store(false, Ordering::Release);
                let _ = write_by(conn, &reply(400, "text/plain", "request too large\n", false), deadline);
                return Some(PortDrop::TooLarge);
            }
            Err(_) => break reply(400, "text/plain", "bad request\n", false),
        }
        let Some(left) = left(deadline) else {
            return Some(PortDrop::Deadline);
        };
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if timed_out(&e) => return Some(PortDrop::Deadline),
            Err(_) => return None,
        }
    };
    reading.store(false, Ordering::Release);
    match write_by(conn, &response, deadline) {
        Err(e) if timed_out(&e) => Some(PortDrop::Deadline),
        _ => None,
    }
}

/// Writes all of `bytes` unless `deadline` passes first.
fn write_by(mut conn: &TcpStream, mut bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let left = left(deadline).ok_or(ErrorKind::TimedOut)?;
        conn.set_write_timeout(Some(left))?;
        match conn.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_metrics_health_and_readiness() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub.clone(), MetricsPortConfig::default()).unwrap();
        let a = server.local_addr();
        let m = get(a, "/metrics");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n") && m.contains("text/plain; version=0.0.4"), "{m}");
        assert!(m.contains("\nrelay_sessions_active 0\n"));
        assert!(get(a, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(get(a, "/readyz").starts_with("HTTP/1.1 503"));
        hub.set_listeners_bound(true);
        hub.set_shards_running(true);
        assert!(get(a, "/readyz").starts_with("HTTP/1.1 200"));
        hub.shard_stopped(1, crate::metrics::ShardStop::Panic);
        let r = get(a, "/readyz");
        assert!(r.starts_with("HTTP/1.1 503") && r.ends_with("not ready: shard 1 stopped (panic)\n"), "{r}");
        assert!(get(a, "/metrics").contains("\nrelay_shard_stops_total{reason=\"panic\"} 1\n"));
        assert!(get(a, "/nope").starts_with("HTTP/1.1 404"));
        let mut s = TcpStream::connect(a).unwrap();
        write!(s, "POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 405"));
    }

    /// Sends `raw` and returns all the port answers.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn head_answers_carry_no_body_and_bad_requests_get_400() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub.clone(), MetricsPortConfig::default()).unwrap();
        let a = server.local_addr();
        let h = exchange(a, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            h.starts_with("HTTP/1.1 200") && h.contains("Content-Length: 3\r\n") && h.ends_with("\r\n\r\n"),
            "{h:?}"
        );
        let m = exchange(a, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(m.starts_with("HTTP/1.1 200") && m.ends_with("\r\n\r\n"), "{m:?}");
        // Split across reads, bare LF line ends: still one request.
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET /heal").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b"thz HTTP/1.1\nHost: x\n\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("ok\n"), "{out:?}");
        for bad in [
            &b"GET /metrics HTTP/9.9\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"GET /x y z\r\n\r\n",
        ] {
            let r = exchange(a, bad);
            assert!(r.starts_with("HTTP/1.1 400"), "{bad:?}: {r:?}");
        }
        assert_eq!(dropped(&hub, "too_large"), 0, "answered, not dropped");
        let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
        let r = exchange(a, format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert!(r.starts_with("HTTP/1.1 400") && r.ends_with("request too large\n"), "{r:?}");
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_REQUEST));
        let r = exchange(a, big.as_bytes());
        assert!(r.starts_with("HTTP/1.1 400") && r.ends_with("request too large\n"), "{r:?}");
        assert!(eventually(|| dropped(&hub, "too_large") == 2), "too_large counted");
    }

    #[test]
    fn a_stalled_client_does_not_block_a_scrape() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub, MetricsPortConfig::default()).unwrap();
        let a = server.local_addr();
        // Half a request, never finished.
        let mut stalled: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(a).unwrap()).collect();
        for s in &mut stalled {
            s.write_all(b"GET /metr").unwrap();
        }
        assert!(get(a, "/metrics").starts_with("HTTP/1.1 200"));
    }

    fn dropped(hub: &MetricsHub, why: &str) -> u64 {
        let text = hub.render();
        let series = format!("relay_metrics_requests_dropped_total{{reason=\"{why}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse().ok()).unwrap()
    }

    /// A client trickling a request one byte per `every`, until told to stop or cut off.
    fn trickler(a: SocketAddr, every: Duration, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::spawn(move || {
            let Ok(mut s) = TcpStream::connect(a) else { return };
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
                if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
        })
    }

    #[test]
    fn slow_clients_holding_every_slot_do_not_lock_out_scrapes() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub.clone(), MetricsPortConfig::default()).unwrap();
        let a = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let mut slow = Vec::new();
        // As many trickling clients as the port serves, then more: a byte a second each.
        for count in [8, 12] {
            while slow.len() < count {
                slow.push(trickler(a, Duration::from_secs(1), stop.clone()));
            }
            std::thread::sleep(Duration::from_millis(1500));
            let m = get(a, "/metrics");
            assert!(m.starts_with("HTTP/1.1 200") && m.contains("relay_sessions_active"), "{count} slow clients: {m}");
            let h = get(a, "/healthz");
            assert!(h.starts_with("HTTP/1.1 200"), "{count} slow clients: {h}");
        }
        assert!(dropped(&hub, "shed") >= 2, "the scrapes made room by shedding slow clients");
        stop.store(true, Ordering::Relaxed);
        for t in slow {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_request_has_one_deadline_from_accept() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let cfg = MetricsPortConfig { request_timeout_ms: 1_000, ..MetricsPortConfig::default() };
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub.clone(), cfg).unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        // A byte every 100 ms never trips a per-read timeout; 60 of them take 6 s.
        let mut sent = 0;
        let mut cut_off = false;
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().chain(std::iter::repeat(&b'a')).take(60) {
            if s.write_all(&[*b]).is_err() {
                cut_off = true;
                break;
            }
            sent += 1;
            // Waits the 100 ms between bytes; anything but a timeout means the server closed.
            match s.read(&mut [0u8; 64]) {
                Ok(_) => {
                    cut_off = true;
                    break;
                }
                Err(e) if timed_out(&e) => {}
                Err(_) => {
                    cut_off = true;
                    break;
                }
            }
        }
        assert!(cut_off, "the trickling request was never cut off ({sent} bytes sent)");
        assert!(eventually(|| dropped(&hub, "deadline") == 1), "deadline drop counted");
        assert!(get(server.local_addr(), "/healthz").starts_with("HTTP/1.1 200"));
    }

    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..50 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        f()
    }
}

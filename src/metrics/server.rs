//! The metrics side port: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Plain blocking HTTP/1.x on its own threads, far from the io_uring shards: a scrape reads
//! counters and copies histograms, so it can never stall media. Each connection has read and
//! write deadlines and at most [`MAX_CONCURRENT`] are served at once, so a slow or idle client
//! cannot hold the port either.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::MetricsHub;

const MAX_CONCURRENT: usize = 8;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;

pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Binds `addr` (so a bad address is reported to the caller) and serves in the background.
pub fn spawn(addr: SocketAddr, hub: Arc<MetricsHub>) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            if stop2.load(Ordering::Acquire) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(READ_TIMEOUT));
            let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
                active.fetch_sub(1, Ordering::AcqRel);
                let _ = conn.write_all(&reply(503, "text/plain", "busy\n"));
                continue;
            }
            let (hub, active) = (hub.clone(), active.clone());
            let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
                serve(conn, &hub);
                active.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                tracing::warn!("metrics: cannot spawn a connection thread");
            }
        }
    })?;
    Ok(MetricsServer { addr, stop, thread: Some(thread) })
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply(status: u16, content_type: &str, body: &str) -> Vec<u8> {
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
    r.extend_from_slice(body.as_bytes());
    r
}

fn serve(mut conn: TcpStream, hub: &MetricsHub) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > MAX_REQUEST {
            let _ = conn.write_all(&reply(400, "text/plain", "request too large\n"));
            return;
        }
    }
    let line = String::from_utf8_lossy(&buf[..buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len())]).into_owned();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let response = match (method, path) {
        ("GET" | "HEAD", "/metrics") => reply(200, "text/plain; version=0.0.4; charset=utf-8", &hub.render()),
        ("GET" | "HEAD", "/healthz") => reply(200, "text/plain", "ok\n"),
        ("GET" | "HEAD", "/readyz") if hub.ready() => reply(200, "text/plain", "ready\n"),
        ("GET" | "HEAD", "/readyz") => reply(503, "text/plain", "not ready\n"),
        ("GET" | "HEAD", _) => reply(404, "text/plain", "not found\n"),
        _ => reply(405, "text/plain", "method not allowed\n"),
    };
    let _ = conn.write_all(&response);
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
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub.clone()).unwrap();
        let a = server.local_addr();
        let m = get(a, "/metrics");
        assert!(m.starts_with("HTTP/1.1 200 OK\r\n") && m.contains("text/plain; version=0.0.4"), "{m}");
        assert!(m.contains("\nrelay_sessions_active 0\n"));
        assert!(get(a, "/healthz").starts_with("HTTP/1.1 200"));
        assert!(get(a, "/readyz").starts_with("HTTP/1.1 503"));
        hub.set_listeners_bound(true);
        hub.set_shards_running(true);
        assert!(get(a, "/readyz").starts_with("HTTP/1.1 200"));
        assert!(get(a, "/nope").starts_with("HTTP/1.1 404"));
        let mut s = TcpStream::connect(a).unwrap();
        write!(s, "POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 405"));
    }

    #[test]
    fn a_stalled_client_does_not_block_a_scrape() {
        let hub = Arc::new(MetricsHub::new(vec![Arc::new(ShardMetrics::new(0))]));
        let server = spawn("127.0.0.1:0".parse().unwrap(), hub).unwrap();
        let a = server.local_addr();
        // Half a request, never finished.
        let mut stalled: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(a).unwrap()).collect();
        for s in &mut stalled {
            s.write_all(b"GET /metr").unwrap();
        }
        assert!(get(a, "/metrics").starts_with("HTTP/1.1 200"));
    }
}

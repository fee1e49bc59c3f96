//! The demo camera's sockets: a blocking listener thread and one thread per client, each driving a
//! [`Connection`]. Plain threads are enough here: the camera serves a handful of viewers (the
//! relay is the scalable part).

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::connection::{Connection, Now, Poll, STREAM_PATH, Timeline};
use crate::proto::rtsp::{MessageLimits, parse_message};

/// Concurrent clients beyond this are refused (closed at once): each costs a thread.
pub const MAX_CLIENTS: usize = 64;
/// A client that does not take its video for this long is dropped, so a stalled reader cannot
/// pin a thread forever (writes block; nothing is queued in memory beyond one poll's frames).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on one blocking read, so a stop request is noticed even if the wake-up
/// (shutting the socket down) were lost.
const MAX_WAIT: Duration = Duration::from_millis(500);

/// A running demo camera. Dropping it (or [`DemoCamera::shutdown`]) stops the listener and every
/// client thread, and waits for them.
#[derive(Debug)]
pub struct DemoCamera {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// A handle on the listening socket, to wake the blocked `accept` at shutdown.
    listener: TcpListener,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Clones of the live client sockets, to wake their threads at shutdown.
    clients: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

impl DemoCamera {
    /// Binds `addr` (port 0 picks a free port), spawns the listener thread and returns.
    pub fn start(addr: SocketAddr) -> io::Result<DemoCamera> {
        let clip =
            super::clip().map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("embedded demo clip: {e}")))?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let timeline = Timeline { origin: Instant::now(), ts_base: random_u64()? as u32 };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let accept_listener = listener.try_clone()?;
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("demo-camera".into())
            .spawn(move || accept_loop(accept_listener, accept_shared, clip, timeline))?;
        tracing::info!(%addr, "demo camera listening at rtsp://{addr}{STREAM_PATH}");
        Ok(DemoCamera { addr, shared, listener, acceptor: Some(acceptor) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stream URL, `rtsp://127.0.0.1:PORT/demo` (loopback when bound to a wildcard address).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("rtsp://{addr}{STREAM_PATH}")
    }

    /// Stops accepting, disconnects every client and waits for all threads to end.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // On Linux, shutting a listening socket down makes a blocked accept() return an error.
        if let Err(e) = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both) {
            tracing::debug!(error = %e, "demo camera: listener shutdown");
        }
        if acceptor.join().is_err() {
            tracing::error!("demo camera listener thread panicked");
        }
        tracing::info!(addr = %self.addr, "demo camera stopped");
    }
}

impl Drop for DemoCamera {
    fn drop(&mut self) {
        self.stop();
    }
}

fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(u64::from_ne_bytes(b))
}

fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    clip: &'static super::h264::Clip<'static>,
    timeline: Timeline,
) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let (sock, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(_) if shared.stop.load(Ordering::SeqCst) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Typically out of descriptors, or a connection reset before accept: back off
                // briefly rather than spin.
                tracing::warn!(error = %e, "demo camera accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        if threads.len() >= MAX_CLIENTS {
            tracing::warn!(%peer, limit = MAX_CLIENTS, "demo camera full, refusing client");
            continue;
        }
        match spawn_client(sock, peer, &shared, clip, timeline) {
            Ok(t) => threads.push(t),
            Err(e) => tracing::warn!(%peer, error = %e, "demo camera could not serve client"),
        }
    }
    // Wake every client thread (reads return 0, writes fail), then wait for them.
    for sock in lock(&shared.clients).values() {
        let _ = sock.shutdown(Shutdown::Both);
    }
    for t in threads {
        if t.join().is_err() {
            tracing::error!("demo camera client thread panicked");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent whatever a panicking holder was doing (single inserts/removes).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_client(
    sock: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    clip: &'static super::h264::Clip<'static>,
    timeline: Timeline,
) -> io::Result<JoinHandle<()>> {
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let local = sock.local_addr()?;
    let seed = random_u64()?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&shared.clients).insert(id, sock.try_clone()?);
    // Checked after registering: a stop that raced past the accept loop's check still reaches
    // this socket through the registry, or is seen here.
    if shared.stop.load(Ordering::SeqCst) {
        lock(&shared.clients).remove(&id);
        return Err(io::Error::other("camera stopping"));
    }
    let registry = shared.clone();
    let spawned = std::thread::Builder::new().name("demo-camera-client".into()).spawn(move || {
        let conn = Connection::new(clip, timeline, local, seed, Instant::now());
        tracing::debug!(%peer, "demo camera client connected");
        match serve(sock, conn, &registry.stop) {
            Ok(why) => tracing::debug!(%peer, why, "demo camera client done"),
            // Players close with media still unread in their buffers, which resets the
            // connection: an ordinary way to leave.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                tracing::debug!(%peer, "demo camera client closed (reset)")
            }
            Err(e) => tracing::debug!(%peer, error = %e, "demo camera client dropped"),
        }
        lock(&registry.clients).remove(&id);
    });
    if spawned.is_err() {
        lock(&shared.clients).remove(&id);
    }
    spawned
}

/// Reads of the client stream: RTSP requests and `$` frames.
#[derive(Debug, Default)]
struct Input {
    buf: Vec<u8>,
    /// Bytes of an interleaved frame still to discard.
    skip: usize,
}

/// Moves bytes for one client until it leaves, misbehaves, goes silent, or the camera stops.
/// Returns why it ended.
fn serve(mut sock: TcpStream, mut conn: Connection, stop: &AtomicBool) -> io::Result<&'static str> {
    let limits = MessageLimits::default();
    let mut input = Input::default();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok("camera stopping");
        }
        let wait =
            conn.next_deadline().saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), MAX_WAIT);
        sock.set_read_timeout(Some(wait))?;
        match sock.read(&mut chunk) {
            Ok(0) => return Ok("client closed"),
            Ok(n) => {
                if let Some(why) = consume(&mut input, &chunk[..n], &mut conn, &limits, &mut out) {
                    sock.write_all(&out)?;
                    return Ok(why);
                }
                if !out.is_empty() {
                    sock.write_all(&out)?;
                    out.clear();
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if conn.poll(Now::current(), &mut out) == Poll::Expired {
            return Ok("session timed out");
        }
        if !out.is_empty() {
            sock.write_all(&out)?;
            out.clear();
        }
    }
}

/// Feeds received bytes through the demultiplexer and the connection, appending responses to
/// `out`. Returns `Some(reason)` when the connection must close after `out` is written.
fn consume(
    input: &mut Input,
    mut bytes: &[u8],
    conn: &mut Connection,
    limits: &MessageLimits,
    out: &mut Vec<u8>,
) -> Option<&'static str> {
    // Interleaved frames are skipped as they stream past, never buffered whole.
    if input.skip > 0 {
        let n = input.skip.min(bytes.len());
        input.skip -= n;
        bytes = &bytes[n..];
    }
    input.buf.extend_from_slice(bytes);
    loop {
        let lead = input.buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        input.buf.drain(..lead);
        match input.buf.first() {
            None => return None,
            Some(b'$') => {
                if input.buf.len() < 4 {
                    return None;
                }
                let total = 4 + usize::from(u16::from_be_bytes([input.buf[2], input.buf[3]]));
                conn.client_frame(Instant::now());
                if input.buf.len() >= total {
                    input.buf.drain(..total);
                } else {
                    input.skip = total - input.buf.len();
                    input.buf.clear();
                    return None;
                }
            }
            Some(_) => match parse_message(&input.buf, limits) {
                Ok(None) => {
                    // parse_message enforces the limits; this bound also holds if a
                    // message arrives with no end in sight.
                    if input.buf.len() > limits.max_head_bytes + limits.max_body_bytes {
                        return Some("request too large");
                    }
                    return None;
                }
                Ok(Some((msg, used))) => {
                    input.buf.drain(..used);
                    if let Some(reply) = conn.handle(&msg, Now::current()) {
                        reply.response.write_to(out);
                        if reply.close {
                            return Some("bad request");
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "demo camera: unparseable request");
                    let mut r = crate::proto::rtsp::Message::response(400, "Bad Request");
                    r.set_header("Connection", "close");
                    r.write_to(out);
                    return Some(e.reason());
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        let now = Instant::now();
        let timeline = Timeline { origin: now, ts_base: 0 };
        let clip = crate::demo_camera::clip().unwrap();
        Connection::new(clip, timeline, "127.0.0.1:554".parse().unwrap(), 1, now)
    }

    fn statuses(out: &[u8]) -> Vec<u16> {
        let mut v = Vec::new();
        let mut rest = out;
        while let Some((m, used)) = parse_message(rest, &MessageLimits::default()).unwrap() {
            v.push(m.status().unwrap());
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        v
    }

    #[test]
    fn requests_between_client_frames_in_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"$\x01\x00\x08RTCPRTCP");
        stream.extend_from_slice(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n\r\n");
        stream.extend_from_slice(b"$\x01\x01\x00");
        stream.extend(std::iter::repeat_n(b'$', 256));
        stream.extend_from_slice(b"GET_PARAMETER rtsp://h/demo RTSP/1.0\r\nCSeq: 2\r\n\r\n");
        for piece in [1, 2, 3, 5, 64, stream.len()] {
            let mut conn = connection();
            let mut input = Input::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(piece) {
                let end = consume(&mut input, chunk, &mut conn, &MessageLimits::default(), &mut out);
                assert_eq!(end, None);
            }
            assert_eq!(statuses(&out), vec![200, 200], "pieces of {piece}");
            assert!(input.buf.is_empty() && input.skip == 0);
        }
    }

    #[test]
    fn garbage_gets_400_and_close() {
        let mut conn = connection();
        let mut out = Vec::new();
        let end =
            consume(&mut Input::default(), b"\x00\x01garbage\r\n\r\n", &mut conn, &MessageLimits::default(), &mut out);
        assert!(end.is_some());
        assert_eq!(statuses(&out), vec![400]);
    }
}

//! One shard's I/O part, the driver: io_uring completions in, the relay part's inputs out, its
//! requests into submissions.
//!
//! A [`Shard`] is split by owner: [`Io`] (this module: the ring, the buffers, the connections,
//! the listeners) and [`Relay`] (`super::relay`: sessions, shared routes, settings; see
//! `docs/architecture.md`, "The shard: an I/O part and a relay part"). `Io`'s ring, buffers,
//! connection table and listeners are private to this module: the relay part asks for
//! connection work through `event_loop/io_api.rs` and the driver methods it may call, so only
//! this module calls `ops` and holds `unsafe`.
//!
//! [`Ring`] (`ops`) is the io_uring and every submission, each built with the memory it names;
//! [`ConnTable`] holds descriptors, generations, in-flight counts and send queues. Every
//! submission carries a [`Token`]; every connection counts its in-flight submissions and is
//! freed only when none remain, so the kernel never reads or writes memory the shard has dropped.
//! Connections are ended with `shutdown(2)`, which completes their pending receives and sends.
//! The connections and the buffer ring are [`KernelMemory`]: a shard that stops with operations
//! still in flight (a shutdown that gave up waiting, a panic) leaks them rather than free them.
//!
//! This file holds the loop and the dispatch of completions; beside it: `accept` (listeners, a
//! connection's first bytes fed to its `proto::greeting::Greeting`, its verdict handed to the
//! relay part or answered), `data_path` (receives, a session connection's TLS, connects),
//! `camera_link` (a camera connection's TLS and HTTP tunnel), `sending`, `buffers` (ring
//! pressure), `ending` (closing and freeing connections), `hand_off` (a connection moved to
//! another shard), `housekeeping` (tick, mailbox, drain), `io_api` (what the relay part may ask
//! of a connection).

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue};

use crate::config::ProxyExpect;
use crate::metrics::{ConnKind, Hist, Rejection, SessionOutcome, ShardMetrics, ShardStop, UpstreamErrorKind};
use crate::proto::closing::FLUSH_GRACE;
use crate::proto::http_head;
use crate::proto::upstream_link::{TlsVerification, UpstreamLink};

mod accept;
mod buffers;
mod camera_link;
pub(in crate::shard) use camera_link::CameraRx;
mod data_path;
mod ending;
mod hand_off;
mod housekeeping;
mod io_api;
mod sending;

#[cfg(test)]
mod tests;

use super::buf_ring::BufRing;
use super::conn::{Move, Phase, RecvState, Role, SessionKey};
use super::conn_table::{ConnTable, Departing, Queued};
use super::gatekeeper::ShardGate;
use super::kernel_memory::KernelMemory;
use super::mailbox::{AdoptPost, AdoptViewer, ShardMsg};
use super::ops::{self, Completion, Ring};
use super::relay::Relay;
use super::send_queue::Timed;
use super::tls_stream::TlsStream;
use super::token::{Op, Token};
use super::{Listener, ShardConfig, Shared};

/// How long a stopping shard waits for its connections' operations to complete.
const FINISH_WAIT: Duration = Duration::from_secs(2);
/// A connection holding this many ring buffers in its send queue is a candidate for copying
/// them out under ring pressure (a healthy viewer holds one or two).
const RING_SEGMENTS_BEFORE_COPY: usize = 8;

pub struct Shard {
    // Field order is drop order: the I/O part (whose ring goes before the buffers it references)
    // before the relay part.
    pub(in crate::shard) io: Io,
    pub(in crate::shard) relay: Relay,
    pub(in crate::shard) id: u16,
    pub(in crate::shard) shared: Arc<Shared>,
    pub(in crate::shard) metrics: Arc<ShardMetrics>,
    /// Counted in `Shared::running` (until `finish`, or a panic).
    counted_running: bool,
}

/// The shard's I/O part: the ring, the memory the kernel reads and writes, the connections and
/// the listeners. Its ring and buffers are private to the driver (`event_loop`), the only caller
/// of `ops` and the only holder of `unsafe`; the relay part reaches I/O through the driver's
/// methods.
pub(in crate::shard) struct Io {
    // Field order is drop order: the ring goes before the buffers it references.
    ring: Ring,
    bufs: KernelMemory<BufRing>,
    listeners: Listeners,
    conns: ConnTable,
    latencies: Vec<Timed>,
    /// When the current completion batch was reaped. With deferred task work the receives
    /// and sends of a batch complete inside that `io_uring_enter`, so this, not the moment a
    /// completion is handled later in the batch, is when camera bytes arrived (and a viewer
    /// send finished): the forward latency spans reaping to reaping. It is also the one `now`
    /// every tunnel input of the batch is given (the call order of `proto::tunnel`).
    pub(in crate::shard) reaped_at: Instant,
    /// Scratch space for plaintext out of TLS records.
    pub(in crate::shard) plain: Vec<u8>,
    /// Scratch space for the RTSP bytes out of WebSocket frames.
    pub(in crate::shard) ws_data: Vec<u8>,
}

/// The shard's listening sockets, in `settings.listeners` order.
struct Listeners {
    /// `None` once its accept ended at drain.
    open: Vec<Option<Listener>>,
    /// Listeners whose accept stopped (out of descriptors, say); the tick re-arms them.
    paused: Vec<usize>,
    /// Out of descriptors since the last accept that succeeded: logged once per stretch, not
    /// at every tick's retry (a flood can last minutes; each failure is still counted).
    out_of_fds: bool,
    /// This shard's socket count as last added to the process-wide one (`Admission::sockets`).
    sockets_published: usize,
    /// Refusing at `[limits] max_connections` since the last connection taken: logged once
    /// per stretch (each refusal is counted).
    at_socket_cap: bool,
    /// The socket cap and the settings it was derived from (their routes decide the room kept
    /// for camera connections): derived again only when the settings change. Held, so that
    /// later settings cannot be allocated where these were and be taken for them.
    socket_cap: Option<(Arc<crate::config::Settings>, usize)>,
}

/// Writes a tiny reply straight to a fresh socket, outside the ring: used only where the
/// connection is about to be handed to another thread or dropped, so no submission may name it.
/// A short or failed write on a non-blocking send only loses an advisory reply.
pub(in crate::shard) fn send_now(fd: &impl std::os::fd::AsFd, bytes: &[u8]) {
    let _ = socket2::SockRef::from(fd).send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
}

fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).peer_addr().ok()?.as_socket()
}

pub(in crate::shard) fn http_date() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

impl Shard {
    pub(in crate::shard) fn new(cfg: ShardConfig, shared: Arc<Shared>) -> std::io::Result<Shard> {
        // Completion work runs only when the loop asks for events, in one batch, instead of
        // whenever the thread enters the kernel: at 1,000 x 2 Mbit/s on a shared 2-core box this
        // cut the relay's forward latency p99 from ~66 ms to ~12 ms (p50 12 ms to 0.6 ms) at the
        // same CPU per GB. It needs the single issuer: only the shard thread touches its ring.
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cfg.settings.runtime.ring_entries * 4)
            .build(cfg.settings.runtime.ring_entries)?;
        let runtime = &cfg.settings.runtime;
        let bufs = BufRing::register(&ring.submitter(), 0, runtime.recv_buffers, runtime.recv_buffer_size)?;
        let local_authority = cfg
            .listeners
            .first()
            .and_then(|l| socket2::SockRef::from(&l.fd).local_addr().ok()?.as_socket())
            .map_or_else(|| "localhost".to_owned(), |a| a.to_string());
        Ok(Shard {
            io: Io {
                ring: Ring::new(ring, cfg.id, runtime.completion_batch_us),
                bufs: KernelMemory::new(bufs),
                listeners: Listeners {
                    open: cfg.listeners.into_iter().map(Some).collect(),
                    paused: Vec::new(),
                    out_of_fds: false,
                    sockets_published: 0,
                    at_socket_cap: false,
                    socket_cap: None,
                },
                conns: ConnTable::new(),
                latencies: Vec::new(),
                reaped_at: Instant::now(),
                plain: Vec::new(),
                ws_data: Vec::new(),
            },
            relay: Relay::new(&cfg.settings, &shared, local_authority, cfg.seed),
            id: cfg.id,
            metrics: shared.metrics[cfg.id as usize].clone(),
            shared,
            counted_running: false,
        })
    }

    /// Runs the loop; `ready` is called once accepts are armed and the shard counts as running.
    /// Returns `None` when it stopped as asked (drained), else why it stopped on its own.
    pub(in crate::shard) fn run(mut self, ready: impl FnOnce()) -> Option<ShardStop> {
        for i in 0..self.io.listeners.open.len() {
            self.arm_accept(i);
        }
        self.arm_tick();
        self.arm_mailbox();
        self.open_always_on_cameras();
        self.shared.shard_started();
        self.counted_running = true;
        if let Err(e) = self.io.ring.uring.submit() {
            tracing::error!(shard = self.id, error = %e, "cannot submit the first operations");
        }
        ready();
        let mut cqes: Vec<Completion> = Vec::with_capacity(1024);
        let mut stop = None;
        loop {
            match self.io.ring.submit_and_wait() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "io_uring_enter failed; shard stops");
                    stop = Some(ShardStop::RingError);
                    break;
                }
            }
            self.io.reaped_at = Instant::now();
            self.io.ring.reap(&mut cqes);
            for (ud, res, flags) in cqes.drain(..) {
                self.dispatch(ud, res, flags);
            }
            self.flush_dirty();
            self.relieve_ring_pressure();
            self.io.bufs.publish();
            self.feed_starved();
            self.publish_sockets();
            if self.relay_drained() && self.io.conns.is_empty() {
                break;
            }
        }
        if stop.is_some() {
            self.leave_listener_groups();
        }
        self.finish();
        stop
    }

    /// Takes this shard's listeners out of their `SO_REUSEPORT` groups at once (shutdown(2) of a
    /// listening socket unhashes it), so the kernel stops giving it a share of new connections
    /// even while an accept still in its ring holds the socket open.
    fn leave_listener_groups(&mut self) {
        for l in self.io.listeners.open.iter().flatten() {
            let _ = socket2::SockRef::from(&l.fd).shutdown(std::net::Shutdown::Both);
        }
    }

    /// Last words: nothing may be in flight when the memory it names is dropped.
    fn finish(&mut self) {
        self.finish_within(FINISH_WAIT);
    }

    /// Closes every connection and waits up to `wait` for their operations to complete. If some
    /// are still in flight then, the connections and the buffer ring are leaked, not freed.
    fn finish_within(&mut self, wait: Duration) {
        let idxs: Vec<usize> = self.io.conns.iter().map(|(i, _)| i).collect();
        for i in idxs {
            self.close_conn(i);
        }
        let give_up = Instant::now() + wait;
        let mut batch = Vec::new();
        while !self.io.conns.is_empty() && Instant::now() < give_up {
            let _ = self.io.ring.submit_and_wait();
            self.io.reaped_at = Instant::now();
            self.io.ring.reap(&mut batch);
            for (ud, res, flags) in batch.drain(..) {
                self.dispatch(ud, res, flags);
            }
        }
        if self.io.conns.is_empty() {
            // No receive or send is in flight: the ring and the buffers can go.
            let _ = self.io.ring.uring.submitter().unregister_buf_ring(self.io.bufs.group);
            self.io.bufs.mark_idle();
            self.io.conns.mark_idle();
            self.publish_sockets();
        } else {
            tracing::error!(
                shard = self.id,
                connections = self.io.conns.len(),
                "operations still in flight at shutdown: their connections and the buffer ring are leaked"
            );
        }
        self.shared.shard_stopped();
        self.counted_running = false;
        tracing::info!(shard = self.id, "shard stopped");
    }

    fn dispatch(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(tok) = Token::decode(ud) else { return };
        match tok.op {
            Op::Accept => self.on_accept(tok.index as usize, res, flags),
            Op::Tick => {
                // One-shot, re-armed on every expiry: every deadline of the shard hangs off it,
                // and a multishot timeout can end for good (a full completion queue; kernels
                // before 6.4 refuse it).
                self.arm_tick();
                self.on_tick();
            }
            Op::Mailbox => {
                if !cqueue::more(flags) {
                    self.arm_mailbox();
                }
                self.on_mailbox();
            }
            Op::Cancel => {}
            _ => {
                let idx = tok.index as usize;
                match self.io.conns.current(idx, tok.generation) {
                    Some(_) => {}
                    None => {
                        // Cannot happen while in-flight counts hold; never touch another slot.
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            self.io.bufs.on_received(bid);
                            self.io.bufs.release(bid);
                        }
                        return;
                    }
                }
                match tok.op {
                    Op::HeadRecv => self.on_head_recv(idx, res, flags),
                    Op::Recv => self.on_recv(idx, res, flags),
                    Op::Send => self.on_send(idx, res),
                    Op::Connect => self.on_connect(idx, res),
                    Op::ConnectTimeout => {
                        self.io.conns.completed(idx);
                        self.maybe_free(idx);
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // The connections' memory is leaked (KernelMemory), but their peers should learn the
        // shard is gone: shutdown(2) frees nothing the kernel may still use.
        for ip in self.io.conns.abandon_all() {
            // The process-wide caps must not count it while the other shards drain.
            self.shared.admission.close_connection(ip);
        }
        for _ in 0..self.relay.sessions.len() {
            // Ended by their shard stopping: the same outcome as a shutdown's.
            self.shared.admission.close_session();
            self.metrics.session_ended(SessionOutcome::Shutdown);
        }
        self.leave_listener_groups();
        if self.counted_running {
            self.shared.shard_stopped();
        }
        tracing::error!(shard = self.id, connections = self.io.conns.len(), "shard stopped by a panic");
    }
}

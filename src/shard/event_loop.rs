//! One shard: an io_uring, the connections and sessions accepted on it, and the loop that moves
//! their bytes through the protocol core.
//!
//! Every submission carries a [`Token`]; every connection counts its in-flight submissions and is
//! freed only when none remain, so the kernel never reads or writes memory the shard has dropped.
//! Connections are ended with `shutdown(2)`, which completes their pending receives and sends.
//!
//! This file holds the shard's state and the loop; the handlers live beside it by phase:
//! `accept` (new connections, first heads), `session_start` (GET, POST pairing, plain RTSP),
//! `data_path` (receives through the protocol core and its outputs), `sending`, `buffers`
//! (ring pressure), `ending` (sessions and connections), `housekeeping` (tick and mailbox).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use slab::Slab;

use crate::config::{AuthConfig, Limits, Route, RouteTable};
use crate::metrics::{ConnKind, Direction, Hist, Rejection, SessionOutcome, ShardMetrics, UpstreamErrorKind};
use crate::pairing::{GetRegistration, PostLookup, SessionRef};
use crate::proto::http_head::{self, HeadKind, HeadLimits, RequestHead};
use crate::proto::rtsp::{self, MessageLimits};
use crate::proto::session::{Output, Session, SessionParams, ViewerStream, local_reply};
use crate::proto::viewer_auth::AuthFailure;

mod accept;
mod buffers;
mod data_path;
mod ending;
mod housekeeping;
mod sending;
mod session_start;

use super::buf_ring::BufRing;
use super::conn::{Conn, RecvState, Role, SessionKey};
use super::mailbox::{AdoptPost, ShardMsg};
use super::send_queue::Timed;
use super::tls_stream::TlsStream;
use super::token::{Op, Token, bump_generation};
use super::{Listener, ShardConfig, Shared};

const TICK: Duration = Duration::from_millis(100);
/// How long a closing connection may take to take its last bytes.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// A connection holding this many ring buffers in its send queue is a candidate for copying
/// them out under ring pressure (a healthy viewer holds one or two).
const RING_SEGMENTS_BEFORE_COPY: usize = 8;

struct SessionSlot {
    generation: u32,
    /// Unique within the shard; logged as `shard-id`.
    id: u64,
    proto: Session,
    cookie: Option<String>,
    tunnel: bool,
    viewer: Option<usize>,
    post: Option<usize>,
    upstream: Option<usize>,
    peer: SocketAddr,
    started_at: Instant,
    last_activity: Instant,
    /// A POST has bound at least once.
    paired: bool,
    connect_started: Option<Instant>,
    /// Reading from the camera is paused because the viewer is behind.
    upstream_paused: bool,
    to_viewer: u64,
    to_camera: u64,
}

pub struct Shard {
    // Field order is drop order: the ring goes before the buffers it references.
    ring: IoUring,
    bufs: BufRing,
    id: u16,
    shared: Arc<Shared>,
    metrics: Arc<ShardMetrics>,
    routes: Arc<RouteTable>,
    limits: Limits,
    auth: AuthConfig,
    public_address: Option<String>,
    listeners: Vec<Option<Listener>>,
    local_authority: String,
    conns: Slab<Conn>,
    conn_generations: Vec<u32>,
    sessions: Slab<SessionSlot>,
    session_generations: Vec<u32>,
    next_session_id: u64,
    /// Parked POSTs by cookie.
    parked: HashMap<String, usize>,
    /// Connections whose multishot receive stopped for lack of buffers.
    starved: Vec<usize>,
    /// Listeners whose accept stopped for lack of descriptors; the tick re-arms them.
    accept_paused: Vec<usize>,
    /// Connections with newly queued bytes, sent at the end of the completion batch.
    dirty: Vec<usize>,
    tick: Box<types::Timespec>,
    out: Vec<Output>,
    latencies: Vec<Timed>,
    /// When the current completion batch was reaped. With deferred task work the receives
    /// and sends of a batch complete inside that `io_uring_enter`, so this, not the moment a
    /// completion is handled later in the batch, is when camera bytes arrived (and a viewer
    /// send finished): the forward latency spans reaping to reaping.
    reaped_at: Instant,
    /// Scratch space for plaintext out of TLS records.
    plain: Vec<u8>,
    cnonce_state: u64,
    draining_until: Option<Instant>,
}

fn sqe_token(op: Op, index: usize, generation: u32) -> u64 {
    Token::new(op, index, generation).encode()
}

/// Writes a tiny reply straight to a fresh socket, outside the ring: used only where the
/// connection is about to be handed to another thread or dropped, so no submission may name it.
fn send_now(fd: RawFd, bytes: &[u8]) {
    // SAFETY: `bytes` is a live slice for the duration of the call; a short or failed write on a
    // non-blocking send only loses an advisory reply.
    unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
}

fn peer_of(fd: &OwnedFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).peer_addr().ok()?.as_socket()
}

fn http_date() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

impl Shard {
    pub(super) fn new(cfg: ShardConfig, shared: Arc<Shared>) -> std::io::Result<Shard> {
        // Completion work runs only when the loop asks for events, in one batch, instead of
        // whenever the thread enters the kernel: at 1,000 x 2 Mbit/s on a shared 2-core box this
        // cut the relay's forward latency p99 from ~66 ms to ~12 ms (p50 12 ms to 0.6 ms) at the
        // same CPU per GB. It needs the single issuer: only the shard thread touches its ring.
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cfg.runtime.ring_entries * 4)
            .build(cfg.runtime.ring_entries)?;
        let bufs = BufRing::register(&ring.submitter(), 0, cfg.runtime.recv_buffers, cfg.runtime.recv_buffer_size)?;
        let local_authority = cfg
            .listeners
            .first()
            .and_then(|l| socket2::SockRef::from(&l.fd).local_addr().ok()?.as_socket())
            .map_or_else(|| "localhost".to_owned(), |a| a.to_string());
        Ok(Shard {
            ring,
            bufs,
            id: cfg.id,
            metrics: shared.metrics[cfg.id as usize].clone(),
            routes: cfg.routes,
            limits: cfg.limits,
            auth: cfg.auth,
            public_address: cfg.public_address,
            listeners: cfg.listeners.into_iter().map(Some).collect(),
            local_authority,
            shared,
            conns: Slab::with_capacity(1024),
            conn_generations: Vec::new(),
            sessions: Slab::with_capacity(512),
            session_generations: Vec::new(),
            next_session_id: 0,
            parked: HashMap::new(),
            starved: Vec::new(),
            accept_paused: Vec::new(),
            dirty: Vec::new(),
            tick: Box::new(types::Timespec::from(TICK)),
            out: Vec::new(),
            latencies: Vec::new(),
            reaped_at: Instant::now(),
            plain: Vec::new(),
            cnonce_state: cfg.seed,
            draining_until: None,
        })
    }

    fn push(&mut self, sqe: squeue::Entry) {
        self.push_together(std::slice::from_ref(&sqe));
    }

    /// Pushes entries into one submission, all or none: a linked chain (connect + its timeout)
    /// split across two submissions would leave the timeout with nothing to attach to.
    fn push_together(&mut self, sqes: &[squeue::Entry]) {
        loop {
            // SAFETY: every entry built in this module points only at memory that outlives the
            // operation: listener and connection descriptors are closed only after their
            // in-flight count returns to zero; msghdrs/iovecs are boxed in the connection's send
            // queue and the bytes they name stay queued until the send completes; connect
            // addresses and timespecs are boxed in the connection (or the shard) likewise.
            let pushed = unsafe { self.ring.submission().push_multiple(sqes) };
            if pushed.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::warn!(shard = self.id, error = %e, "io_uring submit failed while the queue was full");
            }
        }
    }

    /// Runs the loop; `ready` is called once accepts are armed and the shard counts as running.
    pub(super) fn run(mut self, ready: impl FnOnce()) {
        for i in 0..self.listeners.len() {
            self.arm_accept(i);
        }
        self.arm_tick();
        self.arm_mailbox();
        self.shared.shard_started();
        if let Err(e) = self.ring.submit() {
            tracing::error!(shard = self.id, error = %e, "cannot submit the first operations");
        }
        ready();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    tracing::error!(shard = self.id, error = %e, "io_uring_enter failed; shard stops");
                    break;
                }
            }
            self.reaped_at = Instant::now();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for (ud, res, flags) in cqes.drain(..) {
                self.dispatch(ud, res, flags);
            }
            self.flush_dirty();
            self.relieve_ring_pressure();
            self.bufs.publish();
            self.feed_starved();
            if self.draining_until.is_some() && self.sessions.is_empty() && self.conns.is_empty() {
                break;
            }
        }
        self.finish();
    }

    /// Last words: nothing may be in flight when the memory it names is dropped.
    fn finish(&mut self) {
        let idxs: Vec<usize> = self.conns.iter().map(|(i, _)| i).collect();
        for i in idxs {
            self.close_conn(i);
        }
        let give_up = Instant::now() + Duration::from_secs(2);
        while !self.conns.is_empty() && Instant::now() < give_up {
            let _ = self.ring.submit_and_wait(1);
            self.reaped_at = Instant::now();
            let batch: Vec<_> = self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect();
            for (ud, res, flags) in batch {
                self.dispatch(ud, res, flags);
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(self.bufs.group);
        self.shared.shard_stopped();
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
                match self.conns.get(idx) {
                    Some(c) if c.generation == tok.generation => {}
                    _ => {
                        // Cannot happen while in-flight counts hold; never touch another slot.
                        if let Some(bid) = cqueue::buffer_select(flags) {
                            self.bufs.on_received(bid);
                            self.bufs.release(bid);
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
                        self.conns[idx].ops -= 1;
                        self.maybe_free(idx);
                    }
                    _ => {}
                }
            }
        }
    }
}

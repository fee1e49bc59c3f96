//! The connections of a shard: descriptors, generations, in-flight counts, send queues, and
//! where each stands in its life ([`Phase`]). Every move from one phase to the next is a method
//! here; a connection's fields are private to this file.
//!
//! A slot is addressed by index and generation (the [`Token`](super::token::Token) of every
//! submission carries both), and a connection leaves the table only once no submission names
//! it ([`ConnTable::remove_if_idle`], [`ConnTable::take_moving`]): its descriptor, send queue
//! and connect memory are what the kernel reads and writes. The submissions that name a
//! connection are built here, each counted on it in the same step (see `ops`).

use std::net::{IpAddr, SocketAddr};
use std::ops::{Index, IndexMut, Range};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::buf_ring::BufRing;
use super::conn::{AfterFlush, Move, Phase, RecvState, Role};
use super::kernel_memory::KernelMemory;
use super::ops::{self, ConnectMemory, Submission};
use super::send_queue::{SendQueue, Timed};
use super::slab_table::SlabTable;
use super::tls_stream::TlsStream;
use crate::proto::greeting::{Gatekeeper, Greeting, Reply, Rules, Verdict};
use crate::proto::websocket::{FrameHeader, WsEndpoint};

/// One socket owned by a shard.
pub struct Conn {
    fd: OwnedFd,
    generation: u32,
    peer: SocketAddr,
    phase: Phase,
    accepted_at: Instant,
    /// Submissions in flight that name this connection; the slot is freed only at zero.
    ops: u32,
    recv: RecvState,
    send: SendQueue,
    /// Counted against its source address's connection limit (viewer connections).
    counted_ip: bool,
    /// What the kernel reads during a connect (camera connections): kept until the free.
    connect: Option<Box<ConnectMemory>>,
    /// TLS state of a connection accepted on an HTTPS listener.
    tls: Option<Box<TlsStream>>,
    /// A viewer speaking RTSP over WebSocket: its bytes are unframed through this, and what is
    /// sent to it goes out as binary frames.
    ws: Option<Box<WsEndpoint>>,
    /// A camera reached through an HTTP tunnel: this connection is its GET (no phase of its
    /// own: the link's state is the camera's, carried out by `event_loop/camera_link.rs`).
    pub camera_tunnel: Option<Box<super::conn::CameraTunnelLink>>,
    /// A passthrough camera connection counted against its host's `max_camera_sessions`.
    pub camera_host: Option<std::net::IpAddr>,
}

impl Conn {
    fn new(fd: OwnedFd, generation: u32, peer: SocketAddr, phase: Phase, now: Instant) -> Conn {
        Conn {
            fd,
            generation,
            peer,
            phase,
            accepted_at: now,
            ops: 0,
            recv: RecvState::Off,
            send: SendQueue::default(),
            counted_ip: false,
            connect: None,
            tls: None,
            ws: None,
            camera_tunnel: None,
            camera_host: None,
        }
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// For a reply written outside the ring (see `send_now`).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The peer's address: the viewer's, behind a balancer that sent a PROXY header.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn accepted_at(&self) -> Instant {
        self.accepted_at
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn role(&self) -> Option<Role> {
        self.phase.role()
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. })
    }

    pub fn recv(&self) -> RecvState {
        self.recv
    }

    /// Submissions in flight that name it.
    #[cfg(test)]
    pub fn in_flight(&self) -> u32 {
        self.ops
    }

    /// A camera connection whose connect has not completed.
    pub fn connecting(&self) -> bool {
        self.connect.is_some() && self.recv == RecvState::Off && self.ops > 0
    }

    pub fn send(&self) -> &SendQueue {
        &self.send
    }

    pub fn send_mut(&mut self) -> &mut SendQueue {
        &mut self.send
    }

    pub fn counted_ip(&self) -> bool {
        self.counted_ip
    }

    /// A camera connection's TLS client, started once its connect is issued.
    pub fn set_tls(&mut self, tls: Box<TlsStream>) {
        self.tls = Some(tls);
    }

    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn tls_mut(&mut self) -> Option<&mut TlsStream> {
        self.tls.as_deref_mut()
    }

    pub fn ws_mut(&mut self) -> Option<&mut WsEndpoint> {
        self.ws.as_deref_mut()
    }

    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
    }

    /// The binary frame header to send before a chunk of `len` bytes, if this is a WebSocket:
    /// `Some(None)` means nothing may be sent any more (its close is out).
    pub fn ws_header(&self, len: usize) -> Option<Option<FrameHeader>> {
        let ws = self.ws.as_ref()?;
        Some(ws.is_open().then(|| crate::proto::websocket::binary_header(len)))
    }

    /// Ends both directions: the receives and sends in flight on it complete.
    fn shutdown(&self) {
        let _ = socket2::SockRef::from(&self.fd).shutdown(std::net::Shutdown::Both);
    }

    /// Half-closes: the peer sees the end of what we send, and we read on.
    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.fd).shutdown(std::net::Shutdown::Write);
    }
}

/// A connection leaving for another shard, as it stands (nothing in flight on it).
pub struct Departing {
    pub fd: OwnedFd,
    pub peer: SocketAddr,
    pub accepted_at: Instant,
    pub tls: Option<Box<TlsStream>>,
    pub counted_ip: bool,
}

/// A connection just shut down, and what the shell still owes it.
pub struct Closed {
    /// The phase it was in.
    pub was: Phase,
    /// Its connect is in flight (a connecting socket ignores shutdown): cancel it.
    pub cancel_connect: Option<u32>,
}

pub struct ConnTable {
    slab: KernelMemory<SlabTable<Conn>>,
    /// Connections with newly queued bytes, sent at the end of the completion batch.
    pub dirty: Vec<usize>,
    /// Connections whose multishot receive stopped for lack of buffers.
    starved: Vec<usize>,
}

/// The bytes of one shared-camera frame for one viewer.
pub enum FrameBytes<'a> {
    /// `range` of a ring buffer: the payload, or the camera's own `$` header and payload when
    /// the viewer receives the frame on the channel the camera sent it on.
    Ring { bid: u16, range: Range<usize> },
    /// Reference-counted bytes (a frame reassembled across receives, the GOP cache).
    Shared(&'a bytes::Bytes),
}

/// How camera media was queued for a viewer.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// By reference to its ring buffer, or encrypted (TLS).
    InPlace,
    /// Copied: the buffer backs too many queued ranges already.
    Copied,
}

impl ConnTable {
    pub fn new() -> ConnTable {
        ConnTable { slab: KernelMemory::new(SlabTable::with_capacity(1024)), dirty: Vec::new(), starved: Vec::new() }
    }

    fn insert(&mut self, fd: OwnedFd, peer: SocketAddr, phase: Phase, now: Instant) -> usize {
        self.slab.insert_with(|_, generation| Conn::new(fd, generation, peer, phase, now)).0
    }

    /// A viewer's connection just accepted: its first bytes are to be read. `counted_ip`: its
    /// address was counted against the per-address cap already.
    pub fn insert_greeting(
        &mut self,
        fd: OwnedFd,
        peer: SocketAddr,
        greeting: Greeting,
        tls: Option<Box<TlsStream>>,
        counted_ip: bool,
        now: Instant,
    ) -> usize {
        let idx = self.insert(fd, peer, Phase::Greeting(Box::new(greeting)), now);
        let c = &mut self.slab[idx];
        c.tls = tls;
        c.counted_ip = counted_ip;
        idx
    }

    /// A connection the shard opened itself (a camera's), live from the start.
    pub fn insert_live(&mut self, fd: OwnedFd, peer: SocketAddr, role: Role, now: Instant) -> usize {
        self.insert(fd, peer, Phase::Live(role), now)
    }

    /// A connection another shard handed over (nothing in flight on it), as it stood there:
    /// a viewer's head to judge again ([`Greeting::adopted`]), or a POST to bind.
    pub fn adopt(&mut self, from: Departing, greeting: Option<Greeting>) -> usize {
        let phase = match greeting {
            Some(g) => Phase::Greeting(Box::new(g)),
            None => Phase::Unbound,
        };
        let idx = self.insert(from.fd, from.peer, phase, from.accepted_at);
        let c = &mut self.slab[idx];
        c.tls = from.tls;
        c.counted_ip = from.counted_ip;
        idx
    }

    pub fn get(&self, idx: usize) -> Option<&Conn> {
        self.slab.get_at(idx)
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.slab.get_at_mut(idx)
    }

    /// The connection in slot `idx` if it is still the one of `generation`.
    pub fn current(&self, idx: usize, generation: u32) -> Option<&Conn> {
        self.slab.get(idx, generation)
    }

    pub fn iter(&self) -> slab::Iter<'_, Conn> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> slab::IterMut<'_, Conn> {
        self.slab.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    // ---- The greeting ----------------------------------------------------------------------

    /// Feeds a greeting connection's received bytes to its [`Greeting`] (`raw`: before TLS)
    /// and returns its verdict: `NeedMore`, or a final one for the shell to carry out. A
    /// balancer's PROXY header that names the viewer makes it the peer here, counted. `None`:
    /// the connection is not greeting.
    pub fn greet(&mut self, idx: usize, raw: &[u8], rules: &Rules<'_>, gate: &mut dyn Gatekeeper) -> Option<Verdict> {
        let c = self.slab.get_at_mut(idx)?;
        let Phase::Greeting(greeting) = &mut c.phase else { return None };
        let mut raw = raw;
        loop {
            // Raw bytes until the PROXY header is settled: it comes before TLS.
            let tls = c.tls.as_deref_mut().map(|t| t as &mut dyn crate::proto::greeting::Decrypt);
            match greeting.on_bytes(raw, tls, c.peer.ip(), rules, gate) {
                Verdict::Admitted { viewer } => {
                    if let Some(viewer) = viewer {
                        tracing::debug!(balancer = %c.peer, peer = %viewer, "PROXY header");
                        c.peer = viewer;
                    }
                    c.counted_ip = true;
                    raw = &[];
                }
                Verdict::Refuse(r) => {
                    if matches!(r.reply, Reply::Plain(_)) {
                        // Nothing went through TLS yet: the same plain reply as at accept.
                        c.tls = None;
                    }
                    return Some(Verdict::Refuse(r));
                }
                v => return Some(v),
            }
        }
    }

    /// A greeting connection serves `role` from now.
    pub fn go_live(&mut self, idx: usize, role: Role) {
        if let Some(c) = self.slab.get_at_mut(idx).filter(|c| !c.is_closing()) {
            c.phase = Phase::Live(role);
        }
    }

    /// A live viewer speaking RTSP over WebSocket.
    pub fn speak_websocket(&mut self, idx: usize, ws: WsEndpoint) {
        if let Some(c) = self.slab.get_at_mut(idx) {
            c.ws = Some(Box::new(ws));
        }
    }

    /// A POST whose head was read, on its way to its GET.
    pub fn unbind(&mut self, idx: usize) {
        if let Some(c) = self.slab.get_at_mut(idx).filter(|c| !c.is_closing()) {
            c.phase = Phase::Unbound;
        }
    }

    /// A POST waits here for its GET.
    pub fn park(&mut self, idx: usize, cookie: String, leftover: Vec<u8>) {
        if let Some(c) = self.slab.get_at_mut(idx).filter(|c| !c.is_closing()) {
            c.phase = Phase::Parked { cookie, leftover };
        }
    }

    /// A parked POST's GET came (or went): it is unbound again, with what it had read.
    pub fn unpark(&mut self, idx: usize) -> Option<Vec<u8>> {
        let c = self.slab.get_at_mut(idx)?;
        if !matches!(c.phase, Phase::Parked { .. }) {
            return None;
        }
        match std::mem::replace(&mut c.phase, Phase::Unbound) {
            Phase::Parked { leftover, .. } => Some(leftover),
            _ => None,
        }
    }

    /// The connection moves to another shard once nothing of ours is in flight on it.
    pub fn start_move(&mut self, idx: usize, to: Move) {
        if let Some(c) = self.slab.get_at_mut(idx).filter(|c| !c.is_closing()) {
            c.phase = Phase::Moving(to);
        }
    }

    /// Takes a moving connection out whole once nothing of ours is in flight on it or queued
    /// for it.
    pub fn take_moving(&mut self, idx: usize) -> Option<(Move, Departing)> {
        let c = self.slab.get_at(idx)?;
        if !matches!(c.phase, Phase::Moving(_)) || c.ops > 0 || !c.send.is_empty() {
            return None;
        }
        let c = self.slab.remove_at(idx)?;
        let Phase::Moving(to) = c.phase else { return None };
        let departing =
            Departing { fd: c.fd, peer: c.peer, accepted_at: c.accepted_at, tls: c.tls, counted_ip: c.counted_ip };
        Some((to, departing))
    }

    // ---- The end ---------------------------------------------------------------------------

    /// What is queued goes out, then `then`; at `deadline` it is closed whatever is left.
    /// `keep_role`: what it still sends counts as its role's (a viewer's last answer); else it
    /// serves nothing any more (a refusal, a camera let go).
    pub fn flush_then(&mut self, idx: usize, then: AfterFlush, deadline: Instant, keep_role: bool) {
        let Some(c) = self.slab.get_at_mut(idx) else { return };
        if c.is_closing() {
            return;
        }
        let role = if keep_role { c.role() } else { None };
        c.phase = Phase::Flushing { role, deadline, then };
        self.dirty.push(idx);
    }

    /// Refuses (or answers) a connection: `reply` goes out, then the close, within `grace`.
    pub fn refuse(&mut self, idx: usize, reply: Vec<u8>, grace: Duration) {
        self.flush_then(idx, AfterFlush::Close, Instant::now() + grace, false);
        self.queue_owned(idx, reply);
    }

    /// A connection with nothing queued nor in flight: what its phase says comes next. `true`:
    /// it is to be closed now.
    pub fn flushed(&mut self, idx: usize) -> bool {
        let Some(c) = self.slab.get_at_mut(idx) else { return false };
        let Phase::Flushing { then, .. } = &mut c.phase else { return false };
        match *then {
            AfterFlush::Close => true,
            AfterFlush::HalfClose => {
                *then = AfterFlush::AwaitPeerClose;
                c.shutdown_write();
                false
            }
            AfterFlush::AwaitPeerClose => false,
        }
    }

    /// Shuts a connection down (the receives and sends in flight on it complete); it is freed
    /// once none is left ([`ConnTable::remove_if_idle`]). `None`: already closing, or gone.
    pub fn close(&mut self, idx: usize) -> Option<Closed> {
        let c = self.slab.get_at_mut(idx)?;
        if c.is_closing() {
            return None;
        }
        let role = c.role();
        let was = std::mem::replace(&mut c.phase, Phase::Closing { role });
        // shutdown(2) is for what is in flight: it completes a pending receive so the slot can
        // be freed. With nothing in flight the caller frees it at once and close(2) alone ends
        // the connection (a setup's last close usually follows the peer's EOF: one syscall less).
        if c.ops > 0 {
            c.shutdown();
        }
        let cancel_connect = (c.connect.is_some() && c.ops > 0).then_some(c.generation);
        Some(Closed { was, cancel_connect })
    }

    /// Frees a closing connection once nothing in flight names it; its queued ring buffers go
    /// back to the ring. The caller settles its accounting with what is returned.
    pub fn remove_if_idle(&mut self, idx: usize, bufs: &mut BufRing) -> Option<Conn> {
        let c = self.slab.get_at(idx)?;
        if !c.is_closing() || c.ops > 0 {
            return None;
        }
        let mut c = self.slab.remove_at(idx)?;
        c.send.clear(bufs);
        Some(c)
    }

    /// The shard is gone by a panic: every peer learns it (shutdown(2) frees nothing the kernel
    /// may use; the memory is leaked). Returns the addresses counted against their cap.
    pub fn abandon_all(&self) -> Vec<IpAddr> {
        self.slab
            .iter()
            .filter_map(|(_, c)| {
                c.shutdown();
                c.counted_ip.then(|| c.peer.ip())
            })
            .collect()
    }

    /// Nothing in flight names any connection any more: dropping the table frees them.
    pub fn mark_idle(&mut self) {
        self.slab.mark_idle();
    }

    // ---- Submissions and their completions ---------------------------------------------------

    /// A completion of one of the connection's submissions arrived.
    pub fn completed(&mut self, idx: usize) {
        // One completion per counted submission (io_uring's contract), so ops > 0 here.
        if let Some(c) = self.slab.get_at_mut(idx) {
            c.ops -= 1;
        }
    }

    fn counted(c: &mut Conn, sub: Submission) -> Submission {
        c.ops += sub.ops();
        sub
    }

    /// One receive of a greeting's bytes.
    pub fn head_recv(&mut self, idx: usize, bufs: &BufRing) -> Option<Submission> {
        let c = self.slab.get_at_mut(idx)?;
        let sub = ops::head_recv(c.raw(), idx, c.generation, bufs);
        Some(Self::counted(c, sub))
    }

    /// The multishot receive, unless the connection is closing or one is armed already.
    pub fn recv(&mut self, idx: usize, bufs: &BufRing) -> Option<Submission> {
        let c = self.slab.get_at_mut(idx)?;
        if c.is_closing() || c.recv == RecvState::Armed || c.recv == RecvState::Cancelling {
            return None;
        }
        c.recv = RecvState::Armed;
        let sub = ops::recv(c.raw(), idx, c.generation, bufs);
        Some(Self::counted(c, sub))
    }

    /// Stops reading (backpressure): the cancel of an armed receive, or nothing when it was
    /// waiting for buffers (it just stays off).
    pub fn stop_recv(&mut self, idx: usize) -> Option<Submission> {
        let c = self.slab.get_at_mut(idx).filter(|c| !c.is_closing())?;
        match c.recv {
            RecvState::Armed => {
                c.recv = RecvState::Cancelling;
                Some(ops::cancel(super::token::Op::Recv, idx, c.generation))
            }
            RecvState::WaitingForBuffers => {
                c.recv = RecvState::Off;
                None
            }
            RecvState::Off | RecvState::Cancelling => None,
        }
    }

    /// The multishot receive ended with `res`. Returns whether it had been cancelled for
    /// backpressure; a receive that ran out of buffers (and was not) waits for some.
    pub fn recv_ended(&mut self, idx: usize, res: i32) -> bool {
        let Some(c) = self.slab.get_at_mut(idx) else { return false };
        // The receive was counted when armed: ops > 0 here.
        c.ops -= 1;
        let was_paused = c.recv == RecvState::Cancelling;
        // A receive cancelled for backpressure stays off however it ended (out of buffers
        // included): only the flow control resumes it.
        let starved = res == -libc::ENOBUFS && !c.is_closing() && !was_paused;
        c.recv = if starved { RecvState::WaitingForBuffers } else { RecvState::Off };
        if starved {
            self.starved.push(idx);
        }
        was_paused
    }

    /// A head receive found no buffer: it waits for some.
    pub fn starve(&mut self, idx: usize) {
        if let Some(c) = self.slab.get_at_mut(idx) {
            c.recv = RecvState::WaitingForBuffers;
            self.starved.push(idx);
        }
    }

    #[cfg(test)]
    pub fn is_starved(&self, idx: usize) -> bool {
        self.starved.contains(&idx)
    }

    pub fn any_starved(&self) -> bool {
        !self.starved.is_empty()
    }

    /// The connections that were waiting for buffers and still are (now off, to be re-armed).
    pub fn take_starved(&mut self) -> Vec<usize> {
        let mut starved = std::mem::take(&mut self.starved);
        starved.retain(|&idx| match self.slab.get_at_mut(idx) {
            Some(c) if !c.is_closing() && c.recv == RecvState::WaitingForBuffers => {
                c.recv = RecvState::Off;
                true
            }
            _ => false,
        });
        starved
    }

    /// The next `sendmsg` of a connection, if none is in flight and bytes wait.
    pub fn send_op(&mut self, idx: usize, bufs: &BufRing) -> Option<Submission> {
        let c = self.slab.get_at_mut(idx)?;
        let (raw, generation) = (c.raw(), c.generation);
        let sub = ops::send(&mut c.send, raw, idx, generation, bufs)?;
        Some(Self::counted(c, sub))
    }

    /// The connect of a camera connection, with its timeout.
    pub fn connect_op(&mut self, idx: usize, addr: SocketAddr, timeout: Duration) -> Option<Submission> {
        let c = self.slab.get_at_mut(idx)?;
        let (raw, generation) = (c.raw(), c.generation);
        let sub = ops::connect(&mut c.connect, raw, idx, generation, addr, timeout);
        Some(Self::counted(c, sub))
    }

    /// Queues bytes for a connection (encrypting them on a TLS connection, along with any
    /// handshake data rustls has pending); it is sent at the end of the completion batch.
    pub fn queue_owned(&mut self, idx: usize, bytes: Vec<u8>) {
        let Some(c) = self.slab.get_at_mut(idx) else {
            return;
        };
        match c.tls.as_mut() {
            None => c.send.push_owned(bytes),
            Some(tls) => {
                if !bytes.is_empty() {
                    tls.send(&bytes);
                }
                if let Some(cipher) = tls.take_outgoing() {
                    c.send.push_owned(cipher);
                }
            }
        }
        self.dirty.push(idx);
    }

    /// Queues camera media for a viewer straight from its ring buffer; a TLS viewer gets it
    /// encrypted instead (the ciphertext is necessarily a new buffer). `header` (a WebSocket
    /// frame's) goes just before it, as its own small segment so the media stays in place.
    pub fn queue_ring(
        &mut self,
        idx: usize,
        header: Option<FrameHeader>,
        bufs: &mut BufRing,
        bid: u16,
        range: Range<usize>,
        at: Timed,
    ) -> Option<Queued> {
        let c = self.slab.get_at_mut(idx)?;
        let (start, end) = match (u32::try_from(range.start), u32::try_from(range.end)) {
            (Ok(s), Ok(e)) => (s, e),
            // Memory safety: ranges lie in one receive (at most 1 MiB); no peer makes a range this large.
            _ => panic!("range {range:?} outside any receive buffer"),
        };
        // Checks the range against the buffer before anything refers to it.
        let bytes = bufs.bytes_at(bid, start, range.len());
        let header = header.as_ref().map_or(&[][..], |h| h.as_bytes());
        let queued = if let Some(tls) = c.tls.as_mut() {
            tls.send_framed(header, bytes);
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
            Queued::InPlace
        } else if bufs.try_retain(bid) {
            if !header.is_empty() {
                c.send.push_owned(header.to_vec());
            }
            c.send.push_ring(bid, start, end, at);
            Queued::InPlace
        } else {
            if !header.is_empty() {
                c.send.push_owned(header.to_vec());
            }
            // The buffer already backs MAX_BUFFER_REFS queued ranges (a camera sending tiny
            // frames between line breaks): copy this one rather than count another reference.
            c.send.push_media_copy(bufs.bytes_at(bid, start, range.len()), at);
            Queued::Copied
        };
        // One entry per connection and batch of ranges, not one per range.
        if self.dirty.last() != Some(&idx) {
            self.dirty.push(idx);
        }
        Some(queued)
    }
}

impl ConnTable {
    /// Queues one frame of a shared camera to a viewer: `ws` (its WebSocket frame header),
    /// `prefix` (the viewer's own `$` header), then the frame. Ring ranges are referenced, and a
    /// range that continues the last one queued from the same buffer extends it (one iovec,
    /// one reference for a whole receive); a TLS viewer gets it all encrypted in one record.
    pub fn queue_frame(
        &mut self,
        idx: usize,
        ws: Option<FrameHeader>,
        prefix: Option<&bytes::Bytes>,
        frame: FrameBytes<'_>,
        bufs: &mut BufRing,
        at: Timed,
    ) -> Option<Queued> {
        let c = self.slab.get_at_mut(idx)?;
        let queued = if let Some(tls) = c.tls.as_mut() {
            // At most a 10-byte WebSocket header and a 4-byte `$` header.
            let mut head = [0u8; 16];
            let mut n = 0;
            for part in [ws.as_ref().map(|h| h.as_bytes()), prefix.map(|p| &p[..])].into_iter().flatten() {
                // Invariant of the types: a server frame header is at most 10 bytes, a `$` prefix 4.
                head[n..n + part.len()].copy_from_slice(part);
                n += part.len();
            }
            let payload = match &frame {
                FrameBytes::Ring { bid, range } => bufs.bytes_at(*bid, ring_offset(range.start), range.len()),
                FrameBytes::Shared(b) => &b[..],
            };
            tls.send_framed(&head[..n], payload);
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
            Queued::InPlace
        } else {
            // Headers and tiny frames are copied onto the queue's last copy: a segment naming
            // each would cost more than its bytes (a joiner replaying a cache of tiny packets).
            // A shared `$` header is only appended, never given an allocation of its own.
            if let Some(h) = &ws {
                c.send.push_small(h.as_bytes(), None);
            }
            if let Some(p) = prefix {
                c.send.push_shared_or_append(p, None);
            }
            match frame {
                FrameBytes::Shared(b) if SendQueue::is_small(b) => {
                    c.send.push_small(b, Some(at));
                    Queued::InPlace
                }
                FrameBytes::Shared(b) => {
                    c.send.push_shared(b.clone(), Some(at));
                    Queued::InPlace
                }
                // Nothing to reference (a zero-length payload): its header went alone.
                FrameBytes::Ring { range, .. } if range.is_empty() => Queued::InPlace,
                FrameBytes::Ring { bid, range } => {
                    let (start, end) = (ring_offset(range.start), ring_offset(range.end));
                    // Checks the range against the buffer before anything refers to it.
                    bufs.bytes_at(bid, start, range.len());
                    if c.send.extend_ring(bid, start, end, at) {
                        Queued::InPlace
                    } else if bufs.try_retain(bid) {
                        c.send.push_ring(bid, start, end, at);
                        Queued::InPlace
                    } else {
                        c.send.push_media_copy(bufs.bytes_at(bid, start, range.len()), at);
                        Queued::Copied
                    }
                }
            }
        };
        if self.dirty.last() != Some(&idx) {
            self.dirty.push(idx);
        }
        Some(queued)
    }
}

fn ring_offset(at: usize) -> u32 {
    // Memory safety, as in `queue_ring`: a receive buffer is at most 1 MiB.
    u32::try_from(at).unwrap_or_else(|_| panic!("offset {at} outside any receive buffer"))
}

// Panics on a vacant slot: only for callers that hold a live index (the shared camera's `cameras.rs`); peer-driven paths use `get`.
impl Index<usize> for ConnTable {
    type Output = Conn;
    fn index(&self, idx: usize) -> &Conn {
        &self.slab[idx]
    }
}

impl IndexMut<usize> for ConnTable {
    fn index_mut(&mut self, idx: usize) -> &mut Conn {
        &mut self.slab[idx]
    }
}

#[cfg(test)]
mod size_tests {
    /// Two connections per tunnel viewer: a slot is part of each viewer's memory.
    #[test]
    fn a_connection_slot_stays_small() {
        assert!(std::mem::size_of::<super::Conn>() <= 240, "{}", std::mem::size_of::<super::Conn>());
    }
}

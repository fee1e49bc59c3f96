//! One socket owned by a shard, and what it is for.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::send_queue::SendQueue;

/// A session's key in its shard's session table: slab index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub index: usize,
    pub generation: u32,
}

impl SessionKey {
    pub fn pack(self) -> u64 {
        (self.index as u64) << 24 | (self.generation as u64 & 0xff_ffff)
    }

    pub fn unpack(v: u64) -> SessionKey {
        SessionKey { index: (v >> 24) as usize, generation: (v & 0xff_ffff) as u32 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Reading the first request head.
    Head,
    /// Writing an error reply, then closing.
    Refusing,
    /// A tunnel POST waiting for its GET; `leftover` is what was read after its head.
    ParkedPost {
        cookie: String,
        leftover: Vec<u8>,
    },
    /// A tunnel POST whose GET lives on `shard`, waiting for its own sends to finish before it
    /// moves there.
    HandingOff {
        shard: u16,
        session_key: u64,
        leftover: Vec<u8>,
    },
    /// A viewer's first connection (a tunnel GET, plain RTSP, a WebSocket) whose route's shared
    /// camera lives on `shard`: it moves there, head and all, once nothing of ours is in flight.
    MovingViewer {
        shard: u16,
    },
    TunnelGet(SessionKey),
    TunnelPost(SessionKey),
    PlainRtsp(SessionKey),
    Upstream(SessionKey),
    /// The connection of a shared camera.
    Camera(super::camera_table::CameraKey),
    /// The POST of a camera reached through an HTTP tunnel (`rtsp+http://`): requests go up
    /// it; the camera's connection (`Camera`, `Upstream`) is its GET, at `get`.
    CameraPost {
        get: usize,
        generation: u32,
    },
}

impl Role {
    pub fn session(&self) -> Option<SessionKey> {
        match self {
            Role::TunnelGet(s) | Role::TunnelPost(s) | Role::PlainRtsp(s) | Role::Upstream(s) => Some(*s),
            _ => None,
        }
    }
}

/// Where the multishot receive of a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvState {
    Off,
    Armed,
    /// A cancel was submitted (backpressure); the final completion will arrive.
    Cancelling,
    /// The ring ran out of buffers; re-arm when some come back.
    WaitingForBuffers,
}

pub struct Conn {
    pub fd: OwnedFd,
    pub generation: u32,
    pub peer: SocketAddr,
    pub role: Role,
    pub accepted_at: Instant,
    /// Submissions in flight that name this connection; the slot is freed only at zero.
    pub ops: u32,
    pub recv: RecvState,
    pub send: SendQueue,
    /// Close once the send queue is flushed...
    pub close_after_flush: bool,
    /// ...or at this instant, whichever comes first.
    pub flush_deadline: Option<Instant>,
    /// Once the send queue is flushed, shut down writing and read until the peer closes (or
    /// `flush_deadline`): closing with unread bytes would reset the connection, and a reset
    /// can discard what was just sent (a camera's TEARDOWN).
    pub linger_after_flush: bool,
    /// Shut down; waiting for in-flight operations before the descriptor is closed.
    pub closing: bool,
    /// Bytes of an incomplete request head.
    pub head: Vec<u8>,
    /// Counted against its source address's connection limit (viewer connections).
    pub counted_ip: bool,
    /// What the kernel reads during a connect (camera connections): kept until the free.
    pub connect: Option<Box<super::ops::ConnectMemory>>,
    /// TLS state of a connection accepted on an HTTPS listener.
    pub tls: Option<Box<super::tls_stream::TlsStream>>,
    /// Whether a PROXY header is still to be read (or ruled out) before the head.
    pub proxy: ProxyStage,
    /// A viewer speaking RTSP over WebSocket: its bytes are unframed through this, and what is
    /// sent to it goes out as binary frames.
    pub ws: Option<Box<crate::proto::websocket::WsEndpoint>>,
    /// A camera reached through an HTTP tunnel: this connection is its GET.
    pub camera_tunnel: Option<Box<CameraTunnelLink>>,
    /// A passthrough camera connection counted against its host's `max_camera_sessions`.
    pub camera_host: Option<std::net::IpAddr>,
}

/// The GET side's view of a camera's HTTP tunnel (see `proto::camera_tunnel`).
pub struct CameraTunnelLink {
    pub client: crate::proto::camera_tunnel::CameraTunnelClient,
    /// The POST connection: index and generation.
    pub post: (usize, u32),
    pub post_connected: bool,
    pub post_head_sent: bool,
    /// The camera session was told the camera is reachable.
    pub reported: bool,
}

/// Where a new connection stands with the PROXY protocol. Until `Done`, `head` holds the raw
/// bytes received (not yet given to TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyStage {
    /// PROXY protocol off, or the first bytes settled.
    Done,
    /// From a trusted balancer: a header must come first. `listener`'s address list and the
    /// per-address limits judge the viewer's address it names, so they wait for it.
    Header { listener: usize },
    /// From anyone else with PROXY protocol on: refused if it starts with a header.
    Untrusted,
}

impl Conn {
    pub fn new(fd: OwnedFd, generation: u32, peer: SocketAddr, role: Role, now: Instant) -> Conn {
        Conn {
            fd,
            generation,
            peer,
            role,
            accepted_at: now,
            ops: 0,
            recv: RecvState::Off,
            send: SendQueue::default(),
            close_after_flush: false,
            flush_deadline: None,
            linger_after_flush: false,
            closing: false,
            head: Vec::new(),
            counted_ip: false,
            connect: None,
            tls: None,
            proxy: ProxyStage::Done,
            ws: None,
            camera_tunnel: None,
            camera_host: None,
        }
    }

    /// The binary frame header to send before a chunk of `len` bytes, if this is a WebSocket:
    /// `Some(None)` means nothing may be sent any more (its close is out).
    pub fn ws_header(&self, len: usize) -> Option<Option<crate::proto::websocket::FrameHeader>> {
        let ws = self.ws.as_ref()?;
        Some(ws.is_open().then(|| crate::proto::websocket::binary_header(len)))
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Ends both directions: the receives and sends in flight on it complete.
    pub fn shutdown(&self) {
        let _ = socket2::SockRef::from(&self.fd).shutdown(std::net::Shutdown::Both);
    }

    /// Half-closes: the peer sees the end of what we send, and we read on.
    pub fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(&self.fd).shutdown(std::net::Shutdown::Write);
    }
}

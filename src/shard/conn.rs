//! What a connection of a shard is for, and where it stands in its life: the vocabulary of
//! [`ConnTable`](super::conn_table::ConnTable), which holds every connection and makes every
//! move from one phase to the next.

use std::time::Instant;

use crate::proto::greeting::Greeting;

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

/// What a live connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    TunnelGet(SessionKey),
    TunnelPost(SessionKey),
    /// Plain RTSP, or RTSP over WebSocket.
    PlainRtsp(SessionKey),
    /// A passthrough session's camera connection.
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
            Role::Camera(_) | Role::CameraPost { .. } => None,
        }
    }
}

/// A connection's life, from its first bytes to its close.
#[derive(Debug)]
pub enum Phase {
    /// Reading its first bytes: the PROXY header, the TLS handshake, the request head.
    Greeting(Box<Greeting>),
    /// Its first request is read and it is being given a role (a POST being bound).
    Unbound,
    /// A tunnel POST waiting for its GET; `leftover` is what was read after its head.
    Parked {
        cookie: String,
        leftover: Vec<u8>,
    },
    /// Moving to another shard once nothing of ours is in flight on it.
    Moving(Move),
    Live(Role),
    /// Sending what is queued, then `then`; closed at `deadline` whatever is left. `role`: what
    /// it served, if anything (what it still sends is counted as such).
    Flushing {
        role: Option<Role>,
        deadline: Instant,
        then: AfterFlush,
    },
    /// Shut down; waiting for its in-flight operations before the descriptor is closed.
    Closing {
        role: Option<Role>,
    },
}

/// Where a connection moves, and what goes with it.
#[derive(Debug)]
pub enum Move {
    /// A tunnel POST to the shard of its GET; `leftover`: what was read after its head.
    Post { shard: u16, session_key: u64, leftover: Vec<u8> },
    /// A viewer's first connection to the shard of its route's shared camera, its head with it.
    Viewer { shard: u16, head: Vec<u8> },
}

impl Move {
    pub fn shard(&self) -> u16 {
        match self {
            Move::Post { shard, .. } | Move::Viewer { shard, .. } => *shard,
        }
    }
}

/// What follows once a flushing connection's queue is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFlush {
    Close,
    /// Shut down writing and read until the peer closes (or the deadline): closing with unread
    /// bytes would reset the connection, and a reset can discard what was just sent (a
    /// camera's TEARDOWN, a WebSocket's close frame).
    HalfClose,
    /// Half-closed already: waiting for the peer's close.
    AwaitPeerClose,
}

impl Phase {
    /// What the connection serves (or served, while it flushes and closes).
    pub fn role(&self) -> Option<Role> {
        match self {
            Phase::Live(r) => Some(*r),
            Phase::Flushing { role, .. } | Phase::Closing { role } => *role,
            _ => None,
        }
    }

    /// Still before its role: a slow peer here is timed out like a slow head.
    pub fn before_role(&self) -> bool {
        matches!(self, Phase::Greeting(_) | Phase::Unbound | Phase::Moving(_))
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

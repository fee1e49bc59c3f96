//! What a shard tells the control API about itself: its shared cameras, its passthrough
//! camera connections and its sessions, as owned values (the API never sees the shard's
//! state). Each is asked for through the shard's mailbox and answered on a one-shot channel.

use serde::Serialize;

/// A question for one shard, with where its answer goes.
pub enum Query {
    Cameras(tokio::sync::oneshot::Sender<Vec<CameraSnapshot>>),
    Sessions(tokio::sync::oneshot::Sender<Vec<SessionSnapshot>>),
    /// End the session with this per-shard id (the number after the shard in `0-17`); the
    /// answer says whether one was found.
    EndSession {
        id: u64,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
}

/// One route's camera side on one shard: its shared camera session, or the camera
/// connections its passthrough sessions hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraSnapshot {
    pub route: String,
    pub shared: Option<SharedCamera>,
    /// Passthrough: sessions of the route on this shard, and how many of them have their
    /// camera connection open.
    pub passthrough_sessions: usize,
    pub passthrough_connected: usize,
    /// Bytes sent to this route's viewers (shared) or received from its cameras (passthrough:
    /// what went to the viewers), counted since each session began.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Viewers of the route served by this shard's replica of it (a hot route, its camera on
    /// another shard): added to the route's viewers, never shown as a camera of its own.
    pub replica_viewers: usize,
}

/// A shared camera session, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCamera {
    /// `idle`, `connecting`, `ready`, `retrying`, `failed`.
    pub state: &'static str,
    pub since_unix: u64,
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
    pub reconnects: u64,
    pub viewers: usize,
    /// Encoding names from the camera's SDP (`H264/90000`), in track order.
    pub codecs: Vec<String>,
    /// `primary` (the route's upstream) or `fallback`: which camera is live.
    pub source: &'static str,
}

/// One viewer session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SessionSnapshot {
    /// `shard-number`, as the relay's logs name it; `DELETE /v1/sessions/{id}` takes it.
    pub id: String,
    /// The route's path (none while its first request is not read).
    pub route: Option<String>,
    /// The viewer's address (from the PROXY header when a balancer sent one).
    pub viewer: String,
    /// `tunnel` (RTSP over HTTP), `plain` (RTSP/TCP) or `websocket`.
    pub transport: &'static str,
    pub tls: bool,
    /// The authenticated viewer, if the route asks for one.
    pub user: Option<String>,
    pub since_unix: u64,
    pub bytes_to_viewer: u64,
    pub bytes_to_camera: u64,
    /// Bytes queued towards the viewer and not yet sent.
    pub backlog_bytes: usize,
}

/// `at` as seconds since the Unix epoch, by the wall clock now.
pub fn unix_secs(at: std::time::Instant) -> u64 {
    let ago = at.elapsed();
    std::time::SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

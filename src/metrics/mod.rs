//! Metrics: per-shard counters and latency histograms, merged at scrape time and served in
//! Prometheus text format on a side port (`/metrics`, `/healthz`, `/readyz`).
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer, so recording never contends
//! across cores; the scraper reads all shards and merges.

use std::time::Duration;

/// Kind of an accepted connection: `relay_connections_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    TunnelGet,
    TunnelPost,
    PlainRtsp,
    OtherHttp,
    Upstream,
}

/// `relay_bytes_total{direction}`, `relay_frames_total{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ToViewer,
    ToCamera,
}

/// How a session ended: `relay_sessions_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionOutcome {
    /// The viewer closed or tore down.
    Completed,
    UpstreamClosed,
    UpstreamError,
    Timeout,
    ProtocolError,
    RouteRemoved,
    Shutdown,
}

/// Why input was refused: `relay_rejections_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    MalformedHead,
    HeaderTooLarge,
    BadCookie,
    UnknownRoute,
    DuplicateCookie,
    /// A POST whose GET never came within the pairing window.
    PostWithoutGet,
    /// A GET whose POST never came within the pairing window.
    GetWithoutPost,
    HeadTimeout,
    IdleTimeout,
    MaxSessions,
    PerIpLimit,
    BadBase64,
    MalformedRtsp,
    RtspTooLarge,
    UnsupportedTransport,
    NotATunnel,
    ShuttingDown,
    /// A TLS handshake or record failed (including plain HTTP sent to an HTTPS port).
    TlsHandshake,
    /// The source address is not allowed on this listener or route.
    AddressDenied,
    /// Too many failed authentications from this address recently.
    AuthRateLimited,
}

/// Why talking to a camera failed: `relay_upstream_errors_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamErrorKind {
    ConnectRefused,
    ConnectTimeout,
    Unreachable,
    Reset,
    Closed,
    Garbage,
    ResponseTimeout,
    AuthFailed,
}

/// RTSP methods with their own label on `relay_rtsp_request_seconds{method}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtspMethod {
    Options,
    Describe,
    Setup,
    Play,
    Pause,
    Teardown,
    GetParameter,
    SetParameter,
    Other,
}

impl RtspMethod {
    pub fn from_name(name: &str) -> Self {
        match name {
            "OPTIONS" => RtspMethod::Options,
            "DESCRIBE" => RtspMethod::Describe,
            "SETUP" => RtspMethod::Setup,
            "PLAY" => RtspMethod::Play,
            "PAUSE" => RtspMethod::Pause,
            "TEARDOWN" => RtspMethod::Teardown,
            "GET_PARAMETER" => RtspMethod::GetParameter,
            "SET_PARAMETER" => RtspMethod::SetParameter,
            _ => RtspMethod::Other,
        }
    }
}

/// The latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hist {
    /// `relay_pairing_seconds`: GET accepted → POST bound.
    Pairing,
    /// `relay_upstream_connect_seconds`.
    UpstreamConnect,
    /// `relay_rtsp_request_seconds{method}`: request forwarded → response relayed.
    RtspRequest(RtspMethod),
    /// `relay_forward_latency_seconds`: media received from the camera → viewer send completed.
    ForwardLatency,
    /// `relay_session_setup_seconds`: GET accepted → PLAY answered.
    SessionSetup,
}

/// One shard's metrics. Written only by its shard; read by the scraper.
#[derive(Debug)]
pub struct ShardMetrics {
    pub shard: usize,
}

impl ShardMetrics {
    pub fn new(shard: usize) -> Self {
        ShardMetrics { shard }
    }
    pub fn connection_accepted(&self, _kind: ConnKind) {}
    pub fn session_started(&self) {}
    pub fn session_ended(&self, _outcome: SessionOutcome) {}
    pub fn bytes(&self, _dir: Direction, _n: u64) {}
    pub fn frames(&self, _dir: Direction, _n: u64) {}
    pub fn frames_dropped(&self, _n: u64) {}
    pub fn rejected(&self, _reason: Rejection) {}
    pub fn upstream_error(&self, _reason: UpstreamErrorKind) {}
    pub fn observe(&self, _hist: Hist, _d: Duration) {}
    /// `relay_auth_failures_total{reason}`.
    pub fn auth_failure(&self, _reason: crate::proto::viewer_auth::AuthFailure) {}
    /// `relay_backpressure_pauses_total`: a viewer fell `max_viewer_backlog_bytes` behind and
    /// its camera's reads were paused.
    pub fn backpressure_pause(&self) {}
    /// Ring buffers whose queued media was copied out to relieve ring pressure.
    pub fn ring_buffers_copied_out(&self, _n: u64) {}
}

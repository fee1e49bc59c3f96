//! Metrics: per-shard counters and latency histograms, merged at scrape time and served in
//! Prometheus text format on a side port (`/metrics`, `/healthz`, `/readyz`).
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer, so recording never contends
//! across cores; the scraper reads all shards and merges ([`MetricsHub`]), and the side port
//! ([`spawn`]) serves the result.

mod histogram;
mod hub;
mod process;
mod render;
mod server;
mod shard_metrics;

pub use hub::MetricsHub;
pub use server::{MetricsServer, spawn};
pub use shard_metrics::ShardMetrics;

/// A label enum: every value, and its label text.
pub trait Label: Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn index(self) -> usize {
        Self::ALL.iter().position(|v| v.as_str() == self.as_str()).unwrap_or(0)
    }
}

macro_rules! labels {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl Label for $t {
            const ALL: &'static [Self] = &[$(<$t>::$v),+];
            fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

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
    /// A request for a camera path outside the session's route (answered 404, never forwarded).
    OutsideRoute,
    /// More unanswered requests than `max_pending_requests` (answered 503).
    TooManyPendingRequests,
    /// A TLS record on an established session failed (bad MAC, protocol violation).
    TlsRecord,
    /// More than `max_camera_backlog_bytes` waited for a camera that was not reading.
    CameraBacklog,
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
    /// `relay_forward_latency_seconds`, one sample per `$` frame: the completion batch that
    /// received the camera bytes reaped → the batch holding the viewer send's completion reaped.
    ForwardLatency,
    /// `relay_session_setup_seconds`: GET accepted → PLAY answered.
    SessionSetup,
}

labels!(ConnKind { TunnelGet => "tunnel_get", TunnelPost => "tunnel_post", PlainRtsp => "plain_rtsp", OtherHttp => "other_http", Upstream => "upstream" });
labels!(Direction { ToViewer => "to_viewer", ToCamera => "to_camera" });
labels!(SessionOutcome {
    Completed => "completed", UpstreamClosed => "upstream_closed", UpstreamError => "upstream_error", Timeout => "timeout",
    ProtocolError => "protocol_error", RouteRemoved => "route_removed", Shutdown => "shutdown",
});
labels!(Rejection {
    MalformedHead => "malformed_head", HeaderTooLarge => "header_too_large", BadCookie => "bad_cookie",
    UnknownRoute => "unknown_route", DuplicateCookie => "duplicate_cookie", PostWithoutGet => "post_without_get",
    GetWithoutPost => "get_without_post", HeadTimeout => "head_timeout", IdleTimeout => "idle_timeout",
    MaxSessions => "max_sessions", PerIpLimit => "per_ip_limit", BadBase64 => "bad_base64",
    MalformedRtsp => "malformed_rtsp", RtspTooLarge => "rtsp_too_large", UnsupportedTransport => "unsupported_transport",
    NotATunnel => "not_a_tunnel", ShuttingDown => "shutting_down", TlsHandshake => "tls_handshake",
    AddressDenied => "address_denied", AuthRateLimited => "auth_rate_limited", OutsideRoute => "outside_route",
    TooManyPendingRequests => "too_many_pending_requests", TlsRecord => "tls_record",
    CameraBacklog => "camera_backlog",
});
labels!(UpstreamErrorKind {
    ConnectRefused => "connect_refused", ConnectTimeout => "connect_timeout", Unreachable => "unreachable",
    Reset => "reset", Closed => "closed", Garbage => "garbage", ResponseTimeout => "response_timeout",
    AuthFailed => "auth_failed",
});
labels!(RtspMethod {
    Options => "OPTIONS", Describe => "DESCRIBE", Setup => "SETUP", Play => "PLAY", Pause => "PAUSE",
    Teardown => "TEARDOWN", GetParameter => "GET_PARAMETER", SetParameter => "SET_PARAMETER", Other => "other",
});

impl Label for crate::proto::viewer_auth::AuthFailure {
    const ALL: &'static [Self] = &crate::proto::viewer_auth::AuthFailure::ALL;
    fn as_str(self) -> &'static str {
        crate::proto::viewer_auth::AuthFailure::as_str(self)
    }
}

/// The fixed (non-method) histograms, in export order.
pub(crate) const FIXED_HISTS: [Hist; 4] =
    [Hist::Pairing, Hist::UpstreamConnect, Hist::ForwardLatency, Hist::SessionSetup];

impl Hist {
    /// Slot of this histogram in a shard's table: the fixed ones, then one per RTSP method.
    pub(crate) fn slot(self) -> usize {
        match self {
            Hist::Pairing => 0,
            Hist::UpstreamConnect => 1,
            Hist::ForwardLatency => 2,
            Hist::SessionSetup => 3,
            Hist::RtspRequest(m) => 4 + m.index(),
        }
    }

    pub(crate) const SLOTS: usize = 4 + 9;
}

//! Metrics: per-shard counters and latency histograms, merged at scrape time and served in
//! Prometheus text format on a side port (`/metrics`, `/healthz`, `/readyz`).
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer, so recording never contends
//! across cores; the scraper reads all shards and merges ([`MetricsHub`], whose collector hands
//! the `prometheus` crate's encoder metric families), and the side port ([`spawn`]) serves the
//! result.

mod collector;
mod fd_reserve;
mod histogram;
mod hub;
mod process;
mod server;
mod shard_metrics;

pub use crate::proto::camera_health::CameraState;
pub use crate::proto::camera_session::CameraOutcome;
pub use crate::proto::gop_cache::GopBound;
pub use crate::proto::outcome::{ConnKind, Hist, Rejection, RtspMethod, SessionOutcome, UpstreamErrorKind};
pub use crate::proto::viewer_auth::AuthFailure;
pub use hub::MetricsHub;
pub use server::{MetricsServer, spawn};
pub use shard_metrics::ShardMetrics;

/// A label enum: every value, and its label text.
pub trait Label: Copy + 'static {
    /// Every value, in declaration order: `ALL[v.index()] == v`.
    const ALL: &'static [Self];
    /// How many values: the size of a counter table over this label.
    const COUNT: usize = Self::ALL.len();
    fn as_str(self) -> &'static str;
    /// Position in [`Label::ALL`] (the enum's discriminant): counters are indexed by value,
    /// never by label text.
    fn index(self) -> usize;
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

/// `relay_bytes_total{direction}`, `relay_frames_total{direction}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ToViewer,
    ToCamera,
}

/// Why the metrics port closed a connection: `relay_metrics_requests_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortDrop {
    /// Request not received, or answer not taken, within `[metrics] request_timeout_ms`.
    Deadline,
    /// The port was full: the oldest connection still sending its request made room.
    Shed,
    /// A request head over 8 KiB or 64 header lines (answered 400).
    TooLarge,
}

/// Why a shard stopped on its own: `relay_shard_stops_total{reason}`. A stopped shard makes the
/// relay unready and ends the process (non-zero) after the healthy shards drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardStop {
    /// Its thread panicked.
    Panic,
    /// Its io_uring failed (`io_uring_enter` returned an error it cannot retry).
    RingError,
}

labels!(ShardStop { Panic => "panic", RingError => "ring_error" });

labels!(ConnKind { TunnelGet => "tunnel_get", TunnelPost => "tunnel_post", PlainRtsp => "plain_rtsp", OtherHttp => "other_http", Upstream => "upstream", WebSocket => "websocket" });
labels!(Direction { ToViewer => "to_viewer", ToCamera => "to_camera" });
labels!(SessionOutcome {
    Completed => "completed", UpstreamClosed => "upstream_closed", UpstreamError => "upstream_error", Timeout => "timeout",
    ProtocolError => "protocol_error", RouteRemoved => "route_removed", Shutdown => "shutdown",
    CameraChanged => "camera_changed", SlowViewer => "slow_viewer", Kicked => "kicked",
});
labels!(Rejection {
    MalformedHead => "malformed_head", HeaderTooLarge => "header_too_large", BadCookie => "bad_cookie",
    UnknownRoute => "unknown_route", DuplicateCookie => "duplicate_cookie", PostWithoutGet => "post_without_get",
    GetWithoutPost => "get_without_post", HeadTimeout => "head_timeout", IdleTimeout => "idle_timeout",
    RequestTimeout => "request_timeout", MaxSessions => "max_sessions", PerIpLimit => "per_ip_limit",
    BadBase64 => "bad_base64",
    MalformedRtsp => "malformed_rtsp", RtspTooLarge => "rtsp_too_large", UnsupportedTransport => "unsupported_transport",
    NotATunnel => "not_a_tunnel", ShuttingDown => "shutting_down", TlsHandshake => "tls_handshake",
    AddressDenied => "address_denied", AuthRateLimited => "auth_rate_limited", OutsideRoute => "outside_route",
    TooManyPendingRequests => "too_many_pending_requests", TlsRecord => "tls_record",
    CameraBacklog => "camera_backlog", BadHeaderValue => "bad_header_value", MethodNotAllowed => "method_not_allowed",
    BadRequestUri => "bad_request_uri", PostFromOtherAddress => "post_from_other_address",
    WebSocketHandshake => "websocket_handshake", WebSocketProtocol => "websocket_protocol",
    WebSocketTextFrame => "websocket_text_frame", WebSocketTooLarge => "websocket_too_large",
    ProxyHeader => "proxy_header", ProxyUntrusted => "proxy_untrusted", SlowViewer => "slow_viewer",
    ViewerBacklog => "viewer_backlog",
    WebSocketOrigin => "websocket_origin", RouteSpelling => "route_spelling",
    CameraSessionLimit => "camera_session_limit",
    ApiAuth => "api_auth", ApiForbidden => "api_forbidden",
    MaxViewers => "max_viewers", MaxSessionsPerUser => "max_sessions_per_user",
    MaxSessionsPerIp => "max_sessions_per_ip",
    MaxConnections => "max_connections",
});
labels!(PortDrop { Deadline => "deadline", Shed => "shed", TooLarge => "too_large" });
labels!(UpstreamErrorKind {
    ConnectRefused => "connect_refused", ConnectTimeout => "connect_timeout", Unreachable => "unreachable",
    Reset => "reset", Closed => "closed", Garbage => "garbage", ResponseTimeout => "response_timeout",
    AuthFailed => "auth_failed", CloseTimeout => "close_timeout", TlsFailed => "tls_failed",
});
labels!(RtspMethod {
    Options => "OPTIONS", Describe => "DESCRIBE", Setup => "SETUP", Play => "PLAY", Pause => "PAUSE",
    Teardown => "TEARDOWN", GetParameter => "GET_PARAMETER", SetParameter => "SET_PARAMETER", Other => "other",
});

labels!(AuthFailure {
    NoCredentials => "no_credentials", UnknownUser => "unknown_user", BadCredentials => "bad_credentials",
    NotAllowed => "not_allowed", StaleNonce => "stale_nonce", BasicWithoutTls => "basic_without_tls",
    Malformed => "malformed", UriMismatch => "uri_mismatch",
    Refused => "refused", Timeout => "timeout", Error => "error",
});

impl Label for CameraState {
    const ALL: &'static [Self] = &CameraState::ALL;
    fn as_str(self) -> &'static str {
        self.label()
    }
    fn index(self) -> usize {
        self as usize
    }
}

labels!(GopBound { Bytes => "bytes", Packets => "packets" });

// The camera session's own list and labels, so the protocol core stays the one place that names
// its outcomes.
impl Label for CameraOutcome {
    const ALL: &'static [Self] = &CameraOutcome::ALL;
    fn as_str(self) -> &'static str {
        self.label()
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// The fixed (non-method) histograms, in slot order.
pub(crate) const FIXED_HISTS: [Hist; 5] =
    [Hist::Pairing, Hist::UpstreamConnect, Hist::ForwardLatency, Hist::SessionSetup, Hist::TimeToFirstFrame];

impl Hist {
    /// Slot of this histogram in a shard's table: the fixed ones, then one per RTSP method.
    pub(crate) fn slot(self) -> usize {
        match self {
            Hist::Pairing => 0,
            Hist::UpstreamConnect => 1,
            Hist::ForwardLatency => 2,
            Hist::SessionSetup => 3,
            Hist::TimeToFirstFrame => 4,
            Hist::RtspRequest(m) => FIXED_HISTS.len() + m.index(),
        }
    }

    pub(crate) const SLOTS: usize = FIXED_HISTS.len() + RtspMethod::COUNT;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<L: Label + std::fmt::Debug + PartialEq>() {
        for (i, v) in L::ALL.iter().enumerate() {
            assert_eq!(v.index(), i, "{v:?} is not at its index in ALL");
            assert!(L::ALL[..i].iter().all(|w| w.as_str() != v.as_str()), "label {:?} twice", v.as_str());
        }
        assert_eq!(L::COUNT, L::ALL.len());
    }

    #[test]
    fn every_label_enum_lists_each_value_once_at_its_index() {
        check::<ConnKind>();
        check::<Direction>();
        check::<SessionOutcome>();
        check::<Rejection>();
        check::<PortDrop>();
        check::<ShardStop>();
        check::<UpstreamErrorKind>();
        check::<RtspMethod>();
        check::<AuthFailure>();
        check::<CameraOutcome>();
        check::<CameraState>();

        check::<GopBound>();
    }

    #[test]
    fn histogram_slots_are_distinct_and_in_range() {
        let all: Vec<Hist> =
            FIXED_HISTS.into_iter().chain(RtspMethod::ALL.iter().map(|m| Hist::RtspRequest(*m))).collect();
        let mut slots: Vec<usize> = all.iter().map(|h| h.slot()).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..Hist::SLOTS).collect::<Vec<_>>());
    }
}

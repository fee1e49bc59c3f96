//! The protocol core's vocabulary for what happened: how a session ended, why input was
//! refused, how a camera failed, which request and which latency. The shell counts these;
//! `metrics` gives each its Prometheus label.

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
    /// The shared camera came back with a different description (tracks, codecs): its viewers,
    /// set up on the old one, were closed.
    CameraChanged,
    /// A viewer of a shared camera stayed too far behind and was cut.
    SlowViewer,
    /// Ended by an operator (`DELETE /v1/sessions/{id}` on the control API).
    Kicked,
}

/// Kind of an accepted connection: `relay_connections_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    TunnelGet,
    TunnelPost,
    PlainRtsp,
    OtherHttp,
    Upstream,
    /// An accepted RTSP-over-WebSocket upgrade (`rtsp.onvif.org`).
    WebSocket,
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
    /// A viewer's RTSP message or `$` frame left unfinished past `request_timeout_secs`.
    RequestTimeout,
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
    /// A control character (CR, LF, NUL, …) in a viewer's request line or header (answered 400).
    BadHeaderValue,
    /// A method the relay does not pass to cameras (ANNOUNCE, RECORD, …; answered 405).
    MethodNotAllowed,
    /// A request URI the relay cannot confine to a route (answered 400).
    BadRequestUri,
    /// A tunnel POST from another address than its GET's (closed; the tunnel stays).
    PostFromOtherAddress,
    /// A WebSocket upgrade refused: wrong version, key or subprotocol (answered 400/426).
    WebSocketHandshake,
    /// A WebSocket framing violation: unmasked, reserved bits or opcodes, bad control or close
    /// frames, continuation out of place (closed with 1002/1007).
    WebSocketProtocol,
    /// A WebSocket text frame: `rtsp.onvif.org` is binary only (closed with 1003).
    WebSocketTextFrame,
    /// A WebSocket frame or fragmented message over its limit (closed with 1009).
    WebSocketTooLarge,
    /// A trusted balancer's connection without a valid PROXY header first (closed).
    ProxyHeader,
    /// A PROXY header from a source not in `proxy_from` (closed).
    ProxyUntrusted,
    /// A viewer of a shared camera stayed too far behind after its frames were dropped
    /// (disconnected; the camera and the other viewers go on).
    SlowViewer,
    /// A viewer stayed over `max_viewer_backlog_bytes` for `idle_timeout_secs`: it takes
    /// nothing of what the relay queues for it (closed).
    ViewerBacklog,
    /// A WebSocket upgrade from a web page of another origin than the relay's own or those of
    /// `[web] allowed_origins` (answered 403).
    WebSocketOrigin,
    /// A connection's first request names a route by another spelling than its path
    /// (`/cam1/x`, `/cam1/./.`, `//cam1`; answered 404): see `route::is_route_spelling`.
    RouteSpelling,
    /// A passthrough route's camera host already has `[limits] max_camera_sessions` sessions
    /// from this shard (answered 453).
    CameraSessionLimit,
    /// A control API request without a valid token (answered 401).
    ApiAuth,
    /// A control API change with a read-only token (answered 403).
    ApiForbidden,
    /// A route's `max_viewers` reached (answered 453).
    MaxViewers,
    /// `[auth] max_sessions_per_user` reached (answered 453).
    MaxSessionsPerUser,
    /// `[auth] max_sessions_per_ip` reached (answered 453).
    MaxSessionsPerIp,
    /// `[limits] max_connections` reached: accepted, answered 503 with `Retry-After`, closed.
    MaxConnections,
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
    /// A session ended and the camera did not take its last bytes (a TEARDOWN) within
    /// `camera_close_grace_ms`.
    CloseTimeout,
    /// The camera's TLS handshake or records failed: its certificate did not verify
    /// (`upstream_ca`, `upstream_fingerprint`, system roots), or it does not speak TLS.
    TlsFailed,
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
    /// `relay_time_to_first_frame_seconds`: a shared-route viewer's PLAY received → the first
    /// keyframe byte queued to it.
    TimeToFirstFrame,
}

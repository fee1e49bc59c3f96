//! The relay's configuration: one TOML file ([`Config`], as written) validated as a whole, once,
//! into [`Settings`] (as the relay runs it: address lists parsed, certificates loaded, camera
//! names resolved, users checked). `--check-config`, start-up and SIGHUP reload all go through
//! [`Settings::load`]; nothing downstream parses or loads again.
//!
//! ```toml
//! [listen]
//! tunnel  = ["0.0.0.0:80"]          # HTTP tunnel + plain RTSP/TCP on the same ports
//! metrics = "127.0.0.1:8079"
//! [runtime]
//! shards = 0                        # 0 = one per core
//! [[route]]
//! path     = "/cam1"
//! upstream = "rtsp://user:pass@10.0.0.5:554/Streaming/Channels/101"
//! ```

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

pub use crate::proto::route::{Acl, FallbackCamera, Route, RouteTable, SharedRoute, Sharing, uri_path};
use crate::proto::upstream_auth::Credentials;
use crate::proto::upstream_link::{HttpTunnelTarget, TlsVerification, UpstreamLink, UpstreamTls, parse_fingerprint};
use crate::proto::viewer_auth::Users;

/// The metrics port of the demo and of every example (`[listen] metrics`): 8079. Not 9100, which
/// is node_exporter's and the first of the 9100-9999 range Prometheus exporters have allocated
/// among themselves (all of it taken); 8079 is unassigned at IANA and is no default port of the
/// camera-side software a relay meets (mediamtx, go2rtc, ZLMediaKit, Wowza). It sits beside the
/// tunnel port's 8080, so one firewall rule range covers both.
pub const DEFAULT_METRICS_PORT: u16 = 8079;

/// A configuration that could not be used, with enough context to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("route {path:?}: {msg}")]
    Route { path: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Limits of the metrics side port (`[metrics]`; its address is `[listen] metrics`).
    #[serde(default)]
    pub metrics: MetricsPortConfig,
    /// Browsers on the tunnel port (`[web]`): the player page, the route list, RTSP over WebSocket.
    #[serde(default)]
    pub web: WebConfig,
    /// The control API (`[api]`): off unless `listen` is set.
    #[serde(default)]
    pub api: ApiConfig,
    /// Viewers (`[[user]]`): once any exist, every route says who may watch (`users`) or is
    /// explicitly `open`.
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// Viewer authentication settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Realm of the relay's challenges (part of every user's HA1).
    pub realm: String,
    /// How long a Digest nonce stays valid, in seconds.
    pub nonce_ttl_secs: u64,
    /// Failed authentications from one address within `failure_window_secs` before its new
    /// connections are refused until the window passes.
    pub max_failures_per_ip: u32,
    pub failure_window_secs: u64,
    /// Accept a tunnel POST from another address than its GET's. Off: a POST must come from
    /// the GET's address (a cookie seen on the wire must not let another host drive the
    /// tunnel). Turn on only behind carrier NAT pools that spread one client over addresses.
    pub post_from_any_address: bool,
    /// Who decides for routes that are neither `open` nor list their own `users`:
    /// `internal` (the `[[user]]` entries), `http` (`[auth.http]`) or `jwt` (`[auth.jwt]`).
    pub method: AuthMethodName,
    /// External methods need the password itself, so they challenge with Basic, which is
    /// accepted on TLS connections only, unless this is on (the password then crosses the
    /// network readable by anyone on the path).
    pub basic_over_plain: bool,
    /// Sessions one user may hold at once (0: no cap); more are answered 453.
    pub max_sessions_per_user: usize,
    /// Sessions one address may hold at once (0: no cap); more are answered 453.
    pub max_sessions_per_ip: usize,
    pub http: HttpAuthConfig,
    pub jwt: JwtAuthConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: "rtsp-tunnel-relay".to_owned(),
            nonce_ttl_secs: 60,
            max_failures_per_ip: 20,
            failure_window_secs: 60,
            post_from_any_address: false,
            method: AuthMethodName::Internal,
            basic_over_plain: false,
            max_sessions_per_user: 0,
            max_sessions_per_ip: 0,
            http: HttpAuthConfig::default(),
            jwt: JwtAuthConfig::default(),
        }
    }
}

impl AuthConfig {
    /// How long a session waits for the external authorizer's verdict before it counts as
    /// lost: the authorizer's own timeouts (`[auth.http]`, `[auth.jwt]`) come first, this only
    /// bounds an answer that never came.
    pub fn verdict_timeout(&self) -> std::time::Duration {
        // Both validated at most 60,000 ms; saturating regardless.
        std::time::Duration::from_millis(
            self.http.timeout_ms.max(self.jwt.timeout_ms).saturating_mul(2).saturating_add(500),
        )
    }
}

/// `[auth] method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethodName {
    #[default]
    Internal,
    Http,
    Jwt,
}

impl AuthMethodName {
    pub fn method(self) -> crate::proto::external_auth::Method {
        use crate::proto::external_auth::Method;
        match self {
            AuthMethodName::Internal => Method::Internal,
            AuthMethodName::Http => Method::Http,
            AuthMethodName::Jwt => Method::Jwt,
        }
    }
}

/// `[auth.http]`: the callback that decides for `method = "http"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    /// Where the relay POSTs `{user, password, token, ip, route, protocol, tls, action,
    /// session}`; any 2xx admits.
    pub url: String,
    /// How long the callback may take; later is a refusal (`timeout`).
    pub timeout_ms: u64,
    /// How long an admission is remembered for the same credentials, address and route (0: never).
    pub cache_secs: u64,
    /// Extra request headers (a shared secret, say).
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Default for HttpAuthConfig {
    fn default() -> Self {
        HttpAuthConfig { url: String::new(), timeout_ms: 2000, cache_secs: 0, headers: Default::default() }
    }
}

/// `[auth.jwt]`: how tokens are checked for `method = "jwt"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtAuthConfig {
    /// The key set, fetched (http:// or https://) …
    pub jwks_url: String,
    /// … or read from a file.
    pub jwks_file: String,
    /// Required `iss` (empty: not checked).
    pub issuer: String,
    /// Required `aud` (empty: not checked).
    pub audience: String,
    /// The claim listing `{action, routes: [globs]}`.
    pub claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The key set is fetched again this often, and on a token with an unknown `kid`, but never
    /// more often than `jwks_min_refresh_secs`.
    pub jwks_refresh_secs: u64,
    pub jwks_min_refresh_secs: u64,
    /// How long a key-set fetch may take.
    pub timeout_ms: u64,
}

impl Default for JwtAuthConfig {
    fn default() -> Self {
        JwtAuthConfig {
            jwks_url: String::new(),
            jwks_file: String::new(),
            issuer: String::new(),
            audience: String::new(),
            claim: "relay_permissions".to_owned(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            timeout_ms: 2000,
        }
    }
}

/// The metrics side port's limits: what a client may hold of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsPortConfig {
    /// Time from accepting a connection to the end of its answer, in milliseconds; a client
    /// still sending its request (or not reading the answer) then is closed.
    pub request_timeout_ms: u64,
    /// Connections served at once; when full, the oldest one still sending its request is
    /// closed to make room, so slow clients cannot lock scrapes and health checks out.
    pub max_connections: usize,
    /// Per-route series (`relay_route_viewers{route}`, `relay_route_camera_up{route}`): off by
    /// default, since thousands of routes make thousands of series.
    pub per_route: bool,
}

impl Default for MetricsPortConfig {
    fn default() -> Self {
        MetricsPortConfig { request_timeout_ms: 5_000, max_connections: 8, per_route: false }
    }
}

/// Browsers on the tunnel port: the built-in player and route list, and RTSP over WebSocket
/// (`rtsp.onvif.org`, for the player and any other ONVIF client).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Off: no page, no route list and no WebSocket upgrade; such requests get the answer any
    /// other HTTP request gets.
    pub enabled: bool,
    /// Largest WebSocket frame a client may send (its payload); larger: closed with 1009.
    pub max_websocket_frame_bytes: u64,
    /// Largest fragmented WebSocket message (all its frames); larger: closed with 1009.
    pub max_websocket_message_bytes: u64,
    /// Web origins (`scheme://host[:port]`) besides the relay's own whose pages may open a
    /// WebSocket here; any other `Origin` is refused with 403
    /// (`relay_rejections_total{reason="websocket_origin"}`). A client without `Origin` (not a
    /// browser) is not affected.
    pub allowed_origins: Vec<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        let ws = crate::proto::websocket::WsLimits::default();
        WebConfig {
            enabled: true,
            max_websocket_frame_bytes: ws.max_frame_bytes,
            max_websocket_message_bytes: ws.max_message_bytes,
            allowed_origins: Vec::new(),
        }
    }
}

impl WebConfig {
    /// What the WebSocket decoder enforces.
    /// `allowed_origins`, parsed (validated at load: none is dropped).
    pub fn origins(&self) -> Vec<crate::proto::origin::Origin> {
        self.allowed_origins.iter().filter_map(|o| crate::proto::origin::Origin::parse(o)).collect()
    }

    pub fn websocket_limits(&self) -> crate::proto::websocket::WsLimits {
        crate::proto::websocket::WsLimits {
            max_frame_bytes: self.max_websocket_frame_bytes,
            max_message_bytes: self.max_websocket_message_bytes,
        }
    }
}

/// The control API (`[api]`): its listener, TLS, tokens and where API-made routes are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API (and `/status`) listens; none: no API.
    pub listen: Option<SocketAddr>,
    /// PEM certificate and key, as `[[listen.tls]]` takes them: set both for HTTPS.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    /// Directory of `routes.toml`, the routes created over the API (written atomically, read
    /// at start). None: API route changes are refused (they would not survive a restart).
    pub state_dir: Option<std::path::PathBuf>,
    /// Who may call it (`[[api.token]]`).
    #[serde(rename = "token")]
    pub tokens: Vec<ApiTokenConfig>,
}

/// One API token: only the hex SHA-256 of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    pub name: String,
    pub sha256: String,
    pub scope: crate::proto::api_token::Scope,
}

/// `[api]` as the relay runs it.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub state_dir: Option<std::path::PathBuf>,
    pub tokens: crate::proto::api_token::Tokens,
}

impl ApiConfig {
    fn validate(&self) -> Result<Option<ApiSettings>, ConfigError> {
        let invalid = |e: String| ConfigError::Invalid(format!("[api] {e}"));
        let tokens = crate::proto::api_token::Tokens::from_entries(
            self.tokens.iter().map(|t| (t.name.as_str(), t.sha256.as_str(), t.scope)),
        )
        .map_err(invalid)?;
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        if tokens.is_empty() {
            return Err(invalid("listen is set but no [[api.token]] is: nobody could use the API".into()));
        }
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                Some(crate::tls::load_server_config(cert, key).map_err(|e| invalid(e.to_string()))?)
            }
            (None, None) => None,
            _ => return Err(invalid("cert and key go together".into())),
        };
        Ok(Some(ApiSettings { listen, tls, state_dir: self.state_dir.clone(), tokens }))
    }
}

/// One viewer. `ha1` is MD5(name:realm:password) in hex (`rtsp-tunnel-relay --hash-password`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub ha1: String,
    /// Routes (globs) this user may read where a route lists no `users` of its own.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Tunnel (and plain RTSP) listeners.
    pub tunnel: Vec<SocketAddr>,
    /// Metrics side port (`/metrics`, `/healthz`, `/readyz`); none if absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// HTTPS tunnel listeners (`[[listen.tls]]`): the same protocol inside TLS.
    #[serde(default)]
    pub tls: Vec<TlsListen>,
    /// Source addresses the plain tunnel listeners accept (CIDR; deny wins).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    /// Public address sent as `x-server-ip-address` on tunnel GET replies. Off by default:
    /// GStreamer redirects its POST to whatever address this names.
    #[serde(default)]
    pub public_address: Option<String>,
    /// Expect a PROXY protocol header (v2 or v1) from the balancers in `proxy_from`, on every
    /// tunnel listener, plain and TLS.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers (CIDR or addresses) trusted to send a PROXY header.
    #[serde(default)]
    pub proxy_from: Vec<String>,
}

/// One HTTPS tunnel listener. Certificate and key are PEM files, re-read on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListen {
    pub addr: SocketAddr,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Number of shards (threads, each with its own io_uring); 0 = one per core.
    pub shards: usize,
    /// Pin each shard to a core.
    pub pin_cores: bool,
    /// Submission queue entries per shard ring.
    pub ring_entries: u32,
    /// Provided receive buffers per shard (a power of two) and their size in bytes.
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    /// On SIGTERM, how long live sessions may drain before the relay exits.
    pub shutdown_grace_secs: u64,
    /// On SIGTERM, how long the listeners keep accepting after `/readyz` turned 503, so a
    /// balancer still sending viewers until its next health check is not refused; 0 closes them
    /// at once.
    pub drain_accept_secs: u64,
    /// A shared route with at least this many viewers takes new ones on the shard that accepted
    /// them, served there by a replica of the route fed from its home shard, instead of moving
    /// them all to the home shard (one hot camera then uses every core); 0: never replicate.
    /// Not lower by default: a replica costs a second GOP cache and dialogue and wakes the
    /// second shard's heap (~3 MB with a 2 Mbit/s camera, once), which a few hundred viewers
    /// amortise, while one shard carries a few hundred viewers of such a camera with a fraction
    /// of its core.
    pub hot_route_viewers: usize,
    /// Once a shard's first completion has come, how long it may wait for more before it
    /// handles them (microseconds; 0 = at once). A burst handled together is one write per
    /// viewer and one wake of the thread instead of one per arrival: less CPU per byte, for at
    /// most this much added latency. Needs Linux 6.12 (`IORING_FEAT_MIN_TIMEOUT`); on older
    /// kernels completions are handled as they come.
    pub completion_batch_us: u32,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            shards: 0,
            pin_cores: true,
            ring_entries: 4096,
            recv_buffers: 4096,
            recv_buffer_size: 16 * 1024,
            shutdown_grace_secs: 10,
            drain_accept_secs: 3,
            hot_route_viewers: 250,
            completion_batch_us: 4000,
        }
    }
}

/// Every limit the relay enforces; each has a counter in the metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest HTTP request head (or RTSP message head), in bytes.
    pub max_header_bytes: usize,
    /// Largest RTSP message body (SDP), in bytes.
    pub max_body_bytes: usize,
    /// Longest accepted `x-sessioncookie`.
    pub max_cookie_len: usize,
    /// How long a POST waits for its GET (and a GET for its POST), in milliseconds.
    pub pairing_timeout_ms: u64,
    /// How long a new connection may take to send its head, in milliseconds.
    pub head_read_timeout_ms: u64,
    /// A session with no traffic in either direction for this long is closed, in seconds.
    /// Viewer bytes count only once they complete an RTSP message or a `$` frame.
    pub idle_timeout_secs: u64,
    /// How long a viewer's RTSP message or `$` frame, once begun, may take to arrive whole, in
    /// seconds; beyond it the session ends (`relay_rejections_total{reason="request_timeout"}`).
    pub request_timeout_secs: u64,
    /// How long the camera may take to accept a connection, in milliseconds.
    pub upstream_connect_timeout_ms: u64,
    /// How long the camera may take to answer a request, in milliseconds.
    pub upstream_response_timeout_ms: u64,
    /// When a session ends, how long the camera may take to receive what was queued for it (a
    /// TEARDOWN) before its connection is closed anyway, in milliseconds
    /// (`relay_upstream_errors_total{reason="close_timeout"}`).
    pub camera_close_grace_ms: u64,
    /// Concurrent sessions, whole relay.
    pub max_sessions: usize,
    /// Concurrent connections from one source IP.
    pub max_connections_per_ip: usize,
    /// Open sockets (accepted and camera ones, whole relay) at which a new connection is
    /// answered `503` with `Retry-After` and closed at once; past three quarters of it a new
    /// tunnel is answered so after its first request, the rest kept for POSTs joining their GET
    /// (`relay_rejections_total{reason="max_connections"}`), so that a burst degrades instead of
    /// running the process out of descriptors. 0 (the default): what `RLIMIT_NOFILE`
    /// leaves after the process's own descriptors and room for camera connections still to
    /// open: two thirds of it with a passthrough route (each admitted tunnel may open one), all
    /// but a few per route with shared routes only (`proto::descriptor_budget`).
    pub max_connections: usize,
    /// Bytes queued towards one viewer (media, RTSP answers, WebSocket pongs and closes) beyond
    /// which the relay reads neither the viewer nor its camera (passthrough) until half of it
    /// is gone; a viewer over it for `idle_timeout_secs` is closed
    /// (`relay_rejections_total{reason="viewer_backlog"}`).
    pub max_viewer_backlog_bytes: usize,
    /// RTSP requests of one viewer forwarded and not yet answered by the camera; beyond it the
    /// viewer gets `503` without the camera hearing of it.
    pub max_pending_requests: usize,
    /// Bytes queued towards one camera (requests, the viewer's RTCP) that it has not read; a
    /// session beyond it ends: the camera stopped reading, or the viewer floods it.
    pub max_camera_backlog_bytes: usize,
    /// Shared cameras: bytes of the packets since the last keyframe kept for joining viewers,
    /// each packet counted with what it costs in memory (its `$` header and 64 bytes of
    /// bookkeeping); a group of pictures larger than this is not cached (joiners wait for the
    /// next keyframe; `relay_gop_cache_overflows_total{bound="bytes"}`).
    pub gop_cache_bytes: usize,
    /// Shared cameras: the most packets the GOP cache keeps (a camera sending floods of tiny
    /// packets); past it the group of pictures is not cached
    /// (`relay_gop_cache_overflows_total{bound="packets"}`).
    pub gop_cache_packets: usize,
    /// Shared cameras: bytes all GOP caches together may hold, across every shard (the memory
    /// of their packets). Beyond it the caches idle longest (no viewer joined from them for
    /// the longest time) are dropped first; a dropped cache starts again at a later keyframe
    /// when there is room. Its camera serves its viewers as before; joiners start with live
    /// packets, as with no cache (`relay_gop_cache_evictions_total`, `relay_gop_cache_bytes`).
    pub gop_cache_total_bytes: usize,
    /// Shared cameras: bytes queued to one viewer beyond which it skips whole frames up to the
    /// next keyframe (`relay_frames_dropped_total`); the camera is never slowed.
    pub fanout_drop_above_bytes: usize,
    /// Shared cameras: bytes queued to one viewer beyond which it is disconnected
    /// (`relay_rejections_total{reason="slow_viewer"}`).
    pub fanout_disconnect_above_bytes: usize,
    /// Shared cameras: a viewer skipping frames this long without catching up is disconnected,
    /// in milliseconds.
    pub fanout_max_behind_ms: u64,
    /// Shared cameras: a playing camera that sends nothing for this long is reconnected, in
    /// milliseconds.
    pub camera_media_timeout_ms: u64,
    /// Passthrough routes: camera sessions one shard opens to one camera host (cameras accept
    /// 2–10); beyond it a viewer's SETUP is answered 453 before the camera is asked
    /// (`relay_rejections_total{reason="camera_session_limit"}`). 0: no limit.
    pub max_camera_sessions: usize,
    /// Shared cameras: the longest wait between reconnects, in milliseconds. Waits start at
    /// 1 s and double up to it, each drawn at random between nothing and that (full jitter), so
    /// cameras lost together do not come back in one burst.
    pub camera_reconnect_max_ms: u64,
}

impl Limits {
    /// What one RTSP message may hold (viewers' and cameras' alike).
    pub fn message_limits(&self) -> crate::proto::rtsp::MessageLimits {
        crate::proto::rtsp::MessageLimits { max_head_bytes: self.max_header_bytes, max_body_bytes: self.max_body_bytes }
    }

    /// What a connection's first request head may hold.
    pub fn head_limits(&self) -> crate::proto::http_head::HeadLimits {
        crate::proto::http_head::HeadLimits {
            max_header_bytes: self.max_header_bytes,
            max_cookie_len: self.max_cookie_len,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            max_cookie_len: 128,
            pairing_timeout_ms: 3_000,
            head_read_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            request_timeout_secs: 10,
            upstream_connect_timeout_ms: 5_000,
            upstream_response_timeout_ms: 10_000,
            camera_close_grace_ms: 2_000,
            max_sessions: 10_000,
            max_connections_per_ip: 1_000,
            max_connections: 0,
            max_viewer_backlog_bytes: 1024 * 1024,
            max_pending_requests: 32,
            max_camera_backlog_bytes: 1024 * 1024,
            gop_cache_bytes: 4 * 1024 * 1024,
            gop_cache_packets: 8192,
            gop_cache_total_bytes: 1024 * 1024 * 1024,
            fanout_drop_above_bytes: 1024 * 1024,
            fanout_disconnect_above_bytes: 8 * 1024 * 1024,
            fanout_max_behind_ms: 10_000,
            camera_media_timeout_ms: 10_000,
            max_camera_sessions: 0,
            camera_reconnect_max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `rtsp_tunnel_relay=debug`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// One `[[route]]` table; the control API's route bodies have the same keys (and are checked by
/// the same [`RouteConfig::validate`] and [`check_route_users`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Client path, e.g. `/cam1`.
    pub path: String,
    /// Camera URL, e.g. `rtsp://user:pass@10.0.0.5:554/Streaming/Channels/101`.
    pub upstream: String,
    /// Viewers allowed to watch (names of `[[user]]` entries).
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Watchable without credentials (required to say so once users exist).
    #[serde(default)]
    pub open: bool,
    /// Viewers at once on this route; more are answered 453 Not Enough Bandwidth (none: no cap).
    #[serde(default)]
    pub max_viewers: Option<usize>,
    /// Source addresses allowed to watch (CIDR; deny wins).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    /// `shared` (default): one camera session feeds every viewer; `passthrough`: one camera
    /// session per viewer, its requests passed on.
    #[serde(default)]
    pub mode: RouteMode,
    /// Shared routes: the camera session closes this long after the last viewer leaves.
    #[serde(default = "default_linger_secs")]
    pub linger_secs: u64,
    /// Shared routes: the camera session is open from start-up and reconnected forever.
    #[serde(default)]
    pub always_on: bool,
    /// Shared routes: joining viewers start with the packets since the last keyframe.
    #[serde(default = "default_true")]
    pub gop_cache: bool,
    /// `rtsps://` and `rtsp+https://` cameras: a PEM file of the CA(s) that sign the camera's
    /// certificate, instead of the system roots.
    #[serde(default)]
    pub upstream_ca: Option<String>,
    /// `rtsps://` and `rtsp+https://` cameras: the camera's own certificate, pinned by its
    /// SHA-256 (`sha256:` and 64 hex digits), whoever signed it.
    #[serde(default)]
    pub upstream_fingerprint: Option<String>,
    /// `rtsps://` and `rtsp+https://` cameras: accept any certificate (warned at start, counted
    /// in `relay_upstream_insecure_tls_total`).
    #[serde(default)]
    pub upstream_insecure_tls: bool,
    /// A second camera URL (any scheme `upstream` takes, the same TLS keys): a shared route
    /// switches its viewers to it while the upstream cannot be reached or stops sending, and
    /// back at the upstream's first keyframe; a passthrough route opens it for new viewers while
    /// the upstream cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    #[default]
    Shared,
    Passthrough,
}

fn default_linger_secs() -> u64 {
    10
}

fn default_true() -> bool {
    true
}

/// The longest duration a `*_secs` key may name: a year, far past any useful timeout, and far
/// from where adding it to the clock overflows (which would panic a shard).
pub const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

impl RouteConfig {
    /// The route the core uses: path normalised, camera address resolved, credentials split
    /// from the URL, address lists parsed.
    pub fn validate(&self) -> Result<Route, ConfigError> {
        let cfg = self;
        if cfg.upstream_insecure_tls {
            tracing::warn!(route = %cfg.path, "upstream_insecure_tls: the camera's certificate is not verified");
        }
        let err = |msg: String| ConfigError::Route { path: cfg.path.clone(), msg };
        if !cfg.path.starts_with('/') || cfg.path.contains(['?', '#', ' ']) {
            return Err(err("path must start with '/' and carry no query or spaces".into()));
        }
        let player = crate::web_assets::ASSET_PREFIX.trim_end_matches('/');
        if cfg.path == player || cfg.path.starts_with(crate::web_assets::ASSET_PREFIX) {
            return Err(err(format!("{player} is where the relay serves its browser player")));
        }
        let path = match cfg.path.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        let uses_tls = |u: &str| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "rtsps" | "rtsp+https"));
        let any_tls = uses_tls(&cfg.upstream) || cfg.fallback.as_deref().is_some_and(uses_tls);
        let primary = self.camera_target("upstream", &cfg.upstream, any_tls).map_err(err)?;
        let fallback = match &cfg.fallback {
            Some(text) => {
                let f = self.camera_target("fallback", text, any_tls).map_err(err)?;
                Some(Arc::new(FallbackCamera {
                    url: f.url,
                    addr: f.addr,
                    link: f.link,
                    resolve_error: f.resolve_error,
                    credentials: f.credentials,
                }))
            }
            None => None,
        };
        let acl = Acl::parse(&cfg.allow, &cfg.deny).map_err(err)?;
        if cfg.open && cfg.users.is_some() {
            return Err(err("a route is either open or has users, not both".into()));
        }
        if cfg.max_viewers == Some(0) {
            return Err(err("max_viewers must be greater than 0 (leave it out for no cap)".into()));
        }
        if cfg.linger_secs > MAX_DURATION_SECS {
            return Err(err(format!("linger_secs must be at most {MAX_DURATION_SECS} (a year)")));
        }
        let sharing = match cfg.mode {
            RouteMode::Passthrough => {
                if cfg.always_on {
                    return Err(err("always_on needs mode = \"shared\"".into()));
                }
                Sharing::Passthrough
            }
            RouteMode::Shared => Sharing::Shared(SharedRoute {
                linger: std::time::Duration::from_secs(cfg.linger_secs),
                always_on: cfg.always_on,
                gop_cache: cfg.gop_cache,
            }),
        };
        Ok(Route {
            path,
            upstream_url: primary.url,
            upstream_addr: primary.addr,
            upstream_link: primary.link,
            resolve_error: primary.resolve_error,
            credentials: primary.credentials,
            users: cfg.users.clone(),
            // Decided by the configuration as a whole (`Config::validate`).
            guard: crate::proto::route::Guard::Open,
            max_viewers: cfg.max_viewers,
            acl,
            sharing,
            fallback,
        })
    }
}

/// One camera URL of a route (`upstream`, `fallback`), checked and resolved.
struct CameraTarget {
    url: String,
    addr: SocketAddr,
    link: UpstreamLink,
    resolve_error: Option<Arc<str>>,
    credentials: Option<Credentials>,
}

impl RouteConfig {
    /// A camera URL (`key` names it in errors): its scheme, host, port and credentials, its
    /// link (TLS with the route's `upstream_*` keys, or the HTTP tunnel), its address. `any_tls`:
    /// whether the route's upstream or fallback uses TLS (the TLS keys need one of them to).
    fn camera_target(&self, key: &str, text: &str, any_tls: bool) -> Result<CameraTarget, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{key}: {e}"))?;
        let (tls, http_tunnel, default_port) = match url.scheme() {
            "rtsp" => (false, false, 554),
            "rtsps" => (true, false, 322),
            "rtsp+http" => (false, true, 80),
            "rtsp+https" => (true, true, 443),
            other => {
                return Err(format!("{key} must be rtsp://, rtsps://, rtsp+http:// or rtsp+https://, not {other}://"));
            }
        };
        // RTSP URLs carry no fragment; the relay would not know what to send the camera.
        if url.fragment().is_some() {
            return Err(format!("{key} must not end in a #fragment"));
        }
        let host = url.host_str().ok_or_else(|| format!("{key} has no host"))?;
        let port = url.port().unwrap_or(default_port);
        let tunnel_target = http_tunnel.then(|| HttpTunnelTarget {
            target: match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            },
            host: url.port().map_or_else(|| host.to_owned(), |p| format!("{host}:{p}")),
        });
        let link = self.upstream_link(tls, tunnel_target, host, any_tls)?;
        let host_for_socket = host.trim_start_matches('[').trim_end_matches(']');
        // Resolved here, on the thread loading the configuration (never on a shard). A name that
        // does not resolve fails only its own route, at connect time (retried, the reason as
        // the camera's last error), not the whole file: one camera's DNS entry must not keep
        // the relay from starting or from taking a reload. Each reload resolves again.
        let (addr, resolve_error) = match resolve(host_for_socket, port) {
            Ok(addr) if addr.ip().is_unspecified() => {
                return Err(format!("{key} {host} is no camera address"));
            }
            Ok(addr) => (addr, None),
            Err(why) => {
                // Logged by whoever runs these settings (`Settings::unresolved_routes`).
                (SocketAddr::from(([0, 0, 0, 0], port)), Some(Arc::<str>::from(why)))
            }
        };
        let credentials = if url.username().is_empty() {
            None
        } else {
            let decode =
                |s: &str| percent_decode(s).ok_or_else(|| "credentials are not valid percent-encoded UTF-8".to_owned());
            Some(Credentials { user: decode(url.username())?, pass: decode(url.password().unwrap_or(""))? })
        };
        let mut clean = url.clone();
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        if http_tunnel {
            // Inside the tunnel the camera is asked in plain RTSP terms.
            let _ = clean.set_scheme("rtsp");
        }
        Ok(CameraTarget { url: clean.to_string(), addr, link, resolve_error, credentials })
    }

    /// TLS and tunnelling towards the camera from the scheme and the `upstream_*` keys.
    fn upstream_link(
        &self,
        tls: bool,
        http_tunnel: Option<HttpTunnelTarget>,
        host: &str,
        any_tls: bool,
    ) -> Result<UpstreamLink, String> {
        let chosen = [self.upstream_ca.is_some(), self.upstream_fingerprint.is_some(), self.upstream_insecure_tls];
        let chosen = chosen.iter().filter(|c| **c).count();
        if !tls {
            // The keys may be there for the route's other camera (upstream or fallback).
            if chosen > 0 && !any_tls {
                return Err(
                    "upstream_ca, upstream_fingerprint and upstream_insecure_tls need rtsps:// or rtsp+https://".into(),
                );
            }
            return Ok(UpstreamLink { tls: None, http_tunnel });
        }
        if chosen > 1 {
            return Err("choose one of upstream_ca, upstream_fingerprint, upstream_insecure_tls".into());
        }
        let verification = if let Some(ca) = &self.upstream_ca {
            TlsVerification::Ca(ca.clone())
        } else if let Some(fp) = &self.upstream_fingerprint {
            let pin = parse_fingerprint(fp).ok_or("upstream_fingerprint must be sha256: and 64 hex digits")?;
            TlsVerification::Fingerprint(pin)
        } else if self.upstream_insecure_tls {
            TlsVerification::Insecure
        } else {
            TlsVerification::SystemRoots
        };
        let config = crate::tls::load_client_config(&verification).map_err(|e| e.to_string())?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = rustls::pki_types::ServerName::try_from(bare.to_owned())
            .map_err(|e| format!("{host} is not a name TLS can verify: {e}"))?;
        Ok(UpstreamLink { tls: Some(UpstreamTls { config, server_name, verification }), http_tunnel })
    }
}

/// The camera's first address, or why there is none.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| format!("cannot resolve {host}: no address")),
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// Who may watch a route, against the configured viewers: every listed user exists; a route that
/// lists none is guarded by the external method, by users' route globs, or is `open` (which it
/// must say once users exist and neither applies).
pub fn check_route_users(
    rc: &RouteConfig,
    route: &mut Route,
    users: &Users,
    auth: &AuthConfig,
) -> Result<(), ConfigError> {
    if let Some(list) = &route.users {
        if let Some(unknown) = list.iter().find(|u| !users.contains(u)) {
            return Err(ConfigError::Route { path: rc.path.clone(), msg: format!("unknown user {unknown:?}") });
        }
    } else if !rc.open {
        // Who decides for a route that names nobody: the external method, else users by their
        // route globs; with users but neither, the route must say it is open.
        route.guard = if auth.method != AuthMethodName::Internal {
            crate::proto::route::Guard::External
        } else if users.has_route_grants() {
            crate::proto::route::Guard::UsersByRoute
        } else if !users.is_empty() {
            return Err(ConfigError::Route {
                path: rc.path.clone(),
                msg: "users are configured: list who may watch (users = [...]) or set open = true".into(),
            });
        } else {
            crate::proto::route::Guard::Open
        };
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One tunnel listener as the shards run it.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub addr: SocketAddr,
    /// Source addresses it accepts.
    pub acl: Acl,
    /// HTTPS listeners: the server configuration, certificate and key loaded. `None`: plain
    /// tunnel and RTSP/TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// PROXY protocol on the tunnel listeners (`[listen] proxy_protocol`, `proxy_from`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Off: no connection may start with a PROXY header (it is parsed as a request and refused).
    pub enabled: bool,
    /// Sources trusted to send one.
    pub from: Vec<ipnet::IpNet>,
}

/// What the accept path expects first from a connection, by its peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyExpect {
    /// A trusted balancer: a PROXY header must come first
    /// ([`crate::proto::proxy_header::parse`]); its source is the viewer's address, which the
    /// listener's address lists and the per-address limits then judge, not the balancer's.
    Header,
    /// Anyone else: no header. With PROXY protocol on, a connection whose first bytes
    /// [`crate::proto::proxy_header::starts_like_header`] is refused: only a trusted balancer
    /// may name another address.
    NoHeader,
}

impl ProxyProtocol {
    pub fn expect(&self, peer: std::net::IpAddr) -> ProxyExpect {
        // IPv4-mapped IPv6 peers are judged by their IPv4 address, as in the address lists.
        let peer = match peer {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, std::net::IpAddr::V4),
            v4 => v4,
        };
        if self.enabled && self.from.iter().any(|n| n.contains(&peer)) {
            ProxyExpect::Header
        } else {
            ProxyExpect::NoHeader
        }
    }
}

/// The configuration as the relay runs it, produced by one validation ([`Settings::from_config`])
/// and shared as `Arc<Settings>` by the side port, every shard and the reload path. A reload
/// builds a whole new value and swaps it in, or leaves the running one untouched.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Plain tunnel listeners in configuration order, then the HTTPS ones.
    pub listeners: Vec<ListenerSettings>,
    /// Sent as `x-server-ip-address` on tunnel GET replies.
    pub public_address: Option<String>,
    /// PROXY protocol on every tunnel listener, plain and TLS.
    pub proxy: ProxyProtocol,
    /// The metrics side port's address (none: no side port) and limits.
    pub metrics_addr: Option<SocketAddr>,
    pub metrics_port: MetricsPortConfig,
    pub web: WebConfig,
    /// Routes with their cameras resolved, and the viewers who may authenticate.
    pub routes: Arc<RouteTable>,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub runtime: Runtime,
    pub log: Log,
    /// The control API, if `[api] listen` is set.
    pub api: Option<ApiSettings>,
    /// Hex SHA-256 of the configuration file's text (empty when built without one).
    pub checksum: String,
    /// `limits` and `auth` as the core takes them, converted once here.
    pub core: CoreParams,
}

/// The relay core's parameters, typed once from `[limits]` and `[auth]` (the file's
/// milliseconds and seconds converted here, nowhere else): what a shard hands its tunnels,
/// sessions and cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreParams {
    pub tunnel: crate::proto::tunnel::Policy,
    pub head_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub response_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    pub camera_media_timeout: std::time::Duration,
    pub fanout_max_behind: std::time::Duration,
    pub nonce_ttl: std::time::Duration,
    pub failure_window: std::time::Duration,
}

impl CoreParams {
    pub fn new(limits: &Limits, auth: &AuthConfig) -> CoreParams {
        use std::time::Duration;
        CoreParams {
            tunnel: crate::proto::tunnel::Policy {
                pairing_timeout: Duration::from_millis(limits.pairing_timeout_ms),
                idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
                camera_close_grace: Duration::from_millis(limits.camera_close_grace_ms),
                max_viewer_backlog: limits.max_viewer_backlog_bytes,
                max_camera_backlog: limits.max_camera_backlog_bytes,
            },
            head_timeout: Duration::from_millis(limits.head_read_timeout_ms),
            request_timeout: Duration::from_secs(limits.request_timeout_secs),
            response_timeout: Duration::from_millis(limits.upstream_response_timeout_ms),
            connect_timeout: Duration::from_millis(limits.upstream_connect_timeout_ms),
            camera_media_timeout: Duration::from_millis(limits.camera_media_timeout_ms),
            fanout_max_behind: Duration::from_millis(limits.fanout_max_behind_ms),
            nonce_ttl: Duration::from_secs(auth.nonce_ttl_secs),
            failure_window: Duration::from_secs(auth.failure_window_secs),
        }
    }
}

impl Settings {
    /// Reads and validates a configuration file.
    /// Routes whose camera name did not resolve, with why: they are served, and their camera
    /// fails at connect time until a reload resolves it.
    pub fn unresolved_routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.routes().iter().filter_map(|r| Some((r.path.as_str(), r.resolve_error.as_deref()?)))
    }

    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Settings::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let mut settings = Settings::from_config(&toml::from_str(text)?)?;
        settings.checksum = crate::proto::api_token::sha256_hex(text.as_bytes());
        Ok(settings)
    }

    /// These settings with `extra` routes (the control API's, already validated) beside the
    /// file's: a path both define is refused, naming it.
    pub fn with_extra_routes(&self, file_routes: &[Arc<Route>], extra: &[Route]) -> Result<Settings, ConfigError> {
        let mut routes: Vec<Route> = file_routes.iter().map(|r| Route::clone(r)).collect();
        for r in extra {
            if routes.iter().any(|f| f.path == r.path) {
                return Err(ConfigError::Route {
                    path: r.path.clone(),
                    msg: "defined both in the configuration file and through the control API; \
                          delete one of them"
                        .into(),
                });
            }
            routes.push(r.clone());
        }
        let users = self.routes.users().clone();
        Ok(Settings { routes: Arc::new(RouteTable::new(routes).with_users(users)), ..self.clone() })
    }

    /// The one validation of a configuration: everything the relay needs to run it, or the
    /// first reason it cannot.
    pub fn from_config(cfg: &Config) -> Result<Settings, ConfigError> {
        Ok(cfg.validate()?.0)
    }

    /// Replaces `[limits]` after validation (tests, tools), the typed `core` with them: the two
    /// never disagree.
    pub fn set_limits(&mut self, limits: Limits) {
        self.core = CoreParams::new(&limits, &self.auth);
        self.limits = limits;
    }

    /// Shards to run: `[runtime] shards`, or one per core when it is 0.
    pub fn shards(&self) -> usize {
        match self.runtime.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// What a reload cannot change: the addresses bound at start.
    pub fn bound_addresses(&self) -> (Vec<SocketAddr>, Option<SocketAddr>) {
        (self.listeners.iter().map(|l| l.addr).collect(), self.metrics_addr)
    }
}

impl Config {
    /// Parses and validates a whole configuration; the routes in file order. For callers that
    /// want the routes alone (tests, fuzz targets); the relay runs [`Settings`].
    pub fn from_toml(text: &str) -> Result<(Config, Vec<Route>), ConfigError> {
        let cfg: Config = toml::from_str(text)?;
        let (_, routes) = cfg.validate()?;
        Ok((cfg, routes))
    }

    /// The `[[user]]` entries, validated.
    pub fn viewer_users(&self) -> Result<Users, ConfigError> {
        let mut users = Users::new(&self.auth.realm);
        for u in &self.users {
            if u.name.is_empty() || u.name.contains([':', '"']) {
                return Err(ConfigError::Invalid(format!(
                    "[[user]] {:?}: names may not be empty or contain ':' or '\"'",
                    u.name
                )));
            }
            if users.contains(&u.name) {
                return Err(ConfigError::Invalid(format!("[[user]] {:?} defined twice", u.name)));
            }
            users.insert(&u.name, &u.ha1).map_err(ConfigError::Invalid)?;
            if let Some(globs) = &u.routes {
                users.grant_routes(&u.name, globs.clone());
            }
        }
        Ok(users)
    }

    /// `[auth] method = "http"` needs `[auth.http] url`; `"jwt"` one key source.
    fn validate_external_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        match a.method {
            AuthMethodName::Internal => Ok(()),
            AuthMethodName::Http => {
                let url = url::Url::parse(&a.http.url);
                if !url.is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    return invalid("[auth] method = \"http\" needs [auth.http] url = \"http(s)://…\"");
                }
                if !(10..=60_000).contains(&a.http.timeout_ms) {
                    return invalid("[auth.http] timeout_ms must be 10..=60000");
                }
                Ok(())
            }
            AuthMethodName::Jwt => {
                let j = &a.jwt;
                if j.jwks_url.is_empty() == j.jwks_file.is_empty() {
                    return invalid("[auth] method = \"jwt\" needs one of [auth.jwt] jwks_url or jwks_file");
                }
                if !j.jwks_url.is_empty()
                    && !url::Url::parse(&j.jwks_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                {
                    return invalid("[auth.jwt] jwks_url must be http(s)://…");
                }
                if j.claim.is_empty() || j.jwks_min_refresh_secs == 0 || j.jwks_refresh_secs < j.jwks_min_refresh_secs {
                    return invalid(
                        "[auth.jwt] claim must be set; jwks_min_refresh_secs > 0 and jwks_refresh_secs at least that",
                    );
                }
                if !(10..=60_000).contains(&j.timeout_ms) {
                    return invalid("[auth.jwt] timeout_ms must be 10..=60000");
                }
                Ok(())
            }
        }
    }

    /// `[listen] proxy_protocol` and `proxy_from`, validated.
    fn proxy_protocol(&self) -> Result<ProxyProtocol, ConfigError> {
        let l = &self.listen;
        let from = Acl::parse(&l.proxy_from, &[])
            .map_err(|e| ConfigError::Invalid(format!("[listen] proxy_from: {e}")))?
            .allow;
        // Trusting every source would let any client name any address.
        if l.proxy_protocol && from.is_empty() {
            return Err(ConfigError::Invalid(
                "[listen] proxy_protocol = true needs proxy_from: the balancers' addresses".into(),
            ));
        }
        if let Some(all) = from.iter().find(|n| n.prefix_len() == 0) {
            return Err(ConfigError::Invalid(format!(
                "[listen] proxy_from: {all} trusts every source to name its address; list the balancers"
            )));
        }
        Ok(ProxyProtocol { enabled: l.proxy_protocol, from })
    }

    /// The settings this configuration calls for, and its routes in file order.
    fn validate(&self) -> Result<(Settings, Vec<Route>), ConfigError> {
        if self.listen.tunnel.is_empty() && self.listen.tls.is_empty() {
            return Err(ConfigError::Invalid(
                "[listen] tunnel: at least one address (or a [[listen.tls]] entry)".into(),
            ));
        }
        let rt = &self.runtime;
        if !rt.recv_buffers.is_power_of_two() || rt.recv_buffers < 64 {
            return Err(ConfigError::Invalid("[runtime] recv_buffers must be a power of two, at least 64".into()));
        }
        if !(2048..=1 << 20).contains(&rt.recv_buffer_size) {
            return Err(ConfigError::Invalid("[runtime] recv_buffer_size must be between 2048 and 1048576".into()));
        }
        if !(64..=32768).contains(&rt.ring_entries) {
            return Err(ConfigError::Invalid("[runtime] ring_entries must be 64..=32768".into()));
        }
        // Past 10 ms the wait shows in interactive latency (PLAY answers, first frames).
        if rt.completion_batch_us > 10_000 {
            return Err(ConfigError::Invalid("[runtime] completion_batch_us must be 0..=10000".into()));
        }
        // Longer than any balancer's health-check interval needs; a typo (ms for s) would hold
        // a stopping relay for hours.
        if rt.drain_accept_secs > 300 {
            return Err(ConfigError::Invalid("[runtime] drain_accept_secs must be 0..=300".into()));
        }
        let w = &self.web;
        // A browser sends each RTSP request in one frame: room for a head at its limit.
        if w.max_websocket_frame_bytes < 4096 || w.max_websocket_message_bytes < w.max_websocket_frame_bytes {
            return Err(ConfigError::Invalid(
                "[web] max_websocket_frame_bytes must be at least 4096, max_websocket_message_bytes at least that"
                    .into(),
            ));
        }
        if let Some(bad) = w.allowed_origins.iter().find(|o| crate::proto::origin::Origin::parse(o).is_none()) {
            return Err(ConfigError::Invalid(format!(
                "[web] allowed_origins: {bad:?} is not an origin (http:// or https://, a host, an optional port)"
            )));
        }
        let l = &self.limits;
        let positive = [
            ("max_header_bytes", l.max_header_bytes as u64),
            ("max_body_bytes", l.max_body_bytes as u64),
            ("max_cookie_len", l.max_cookie_len as u64),
            ("pairing_timeout_ms", l.pairing_timeout_ms),
            ("head_read_timeout_ms", l.head_read_timeout_ms),
            ("idle_timeout_secs", l.idle_timeout_secs),
            ("request_timeout_secs", l.request_timeout_secs),
            ("upstream_connect_timeout_ms", l.upstream_connect_timeout_ms),
            ("upstream_response_timeout_ms", l.upstream_response_timeout_ms),
            ("camera_close_grace_ms", l.camera_close_grace_ms),
            ("max_sessions", l.max_sessions as u64),
            ("max_connections_per_ip", l.max_connections_per_ip as u64),
            ("max_viewer_backlog_bytes", l.max_viewer_backlog_bytes as u64),
            ("max_pending_requests", l.max_pending_requests as u64),
            ("max_camera_backlog_bytes", l.max_camera_backlog_bytes as u64),
            ("gop_cache_bytes", l.gop_cache_bytes as u64),
            ("gop_cache_packets", l.gop_cache_packets as u64),
            ("gop_cache_total_bytes", l.gop_cache_total_bytes as u64),
            ("fanout_drop_above_bytes", l.fanout_drop_above_bytes as u64),
            ("fanout_max_behind_ms", l.fanout_max_behind_ms),
            ("camera_media_timeout_ms", l.camera_media_timeout_ms),
            ("camera_reconnect_max_ms", l.camera_reconnect_max_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("[limits] {name} must be greater than 0")));
        }
        if l.max_header_bytes < 512 {
            return Err(ConfigError::Invalid("[limits] max_header_bytes must be at least 512".into()));
        }
        if l.max_cookie_len < 8 {
            return Err(ConfigError::Invalid("[limits] max_cookie_len must be at least 8".into()));
        }
        // A shard adds these to the clock: `Instant + Duration::from_secs(u64::MAX)` panics.
        let in_seconds = [
            ("[limits] idle_timeout_secs", l.idle_timeout_secs),
            ("[limits] request_timeout_secs", l.request_timeout_secs),
            ("[runtime] shutdown_grace_secs", rt.shutdown_grace_secs),
        ];
        if let Some((name, _)) = in_seconds.iter().find(|(_, v)| *v > MAX_DURATION_SECS) {
            return Err(ConfigError::Invalid(format!("{name} must be at most {MAX_DURATION_SECS} (a year)")));
        }
        if l.gop_cache_packets > 1_000_000 {
            return Err(ConfigError::Invalid("[limits] gop_cache_packets must be at most 1000000".into()));
        }
        if l.fanout_disconnect_above_bytes <= l.fanout_drop_above_bytes {
            return Err(ConfigError::Invalid(
                "[limits] fanout_disconnect_above_bytes must be greater than fanout_drop_above_bytes".into(),
            ));
        }
        let m = &self.metrics;
        if !(100..=600_000).contains(&m.request_timeout_ms) || !(1..=1024).contains(&m.max_connections) {
            return Err(ConfigError::Invalid(
                "[metrics] request_timeout_ms must be 100..=600000 and max_connections 1..=1024".into(),
            ));
        }
        let users = self.viewer_users()?;
        let tunnel_acl = Acl::parse(&self.listen.allow, &self.listen.deny)
            .map_err(|e| ConfigError::Invalid(format!("[listen] allow/deny: {e}")))?;
        let mut listeners: Vec<ListenerSettings> = self
            .listen
            .tunnel
            .iter()
            .map(|&addr| ListenerSettings { addr, acl: tunnel_acl.clone(), tls: None })
            .collect();
        for t in &self.listen.tls {
            let invalid = |e: String| ConfigError::Invalid(format!("[[listen.tls]] {}: {e}", t.addr));
            let acl = Acl::parse(&t.allow, &t.deny).map_err(invalid)?;
            let tls = crate::tls::load_server_config(&t.cert, &t.key).map_err(|e| invalid(e.to_string()))?;
            listeners.push(ListenerSettings { addr: t.addr, acl, tls: Some(tls) });
        }
        let proxy = self.proxy_protocol()?;
        let a = &self.auth;
        if a.nonce_ttl_secs == 0 || a.failure_window_secs == 0 || a.max_failures_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "[auth] nonce_ttl_secs, failure_window_secs and max_failures_per_ip must be greater than 0".into(),
            ));
        }
        self.validate_external_auth()?;
        let mut seen = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for rc in &self.routes {
            let mut route = rc.validate()?;
            check_route_users(rc, &mut route, &users, &self.auth)?;
            if !seen.insert(route.path.clone()) {
                return Err(ConfigError::Route { path: rc.path.clone(), msg: "duplicate path".into() });
            }
            routes.push(route);
        }
        let settings = Settings {
            listeners,
            public_address: self.listen.public_address.clone(),
            proxy,
            metrics_addr: self.listen.metrics,
            metrics_port: self.metrics,
            web: self.web.clone(),
            routes: Arc::new(RouteTable::new(routes.clone()).with_users(users)),
            limits: self.limits.clone(),
            auth: self.auth.clone(),
            runtime: self.runtime.clone(),
            log: self.log.clone(),
            api: self.api.validate()?,
            checksum: String::new(),
            core: CoreParams::new(&self.limits, &self.auth),
        };
        Ok((settings, routes))
    }
}

/// A shared route's parameters, typed once from the settings in force.
impl Settings {
    /// The parameters of `route` if it is shared: its camera session's, its viewers', its
    /// slow-viewer bounds. `seeds`: randomness for the camera session and the viewers' session
    /// ids. `gop_account`: the relay-wide budget its GOP cache draws from
    /// (`gop_cache_total_bytes`, shared by every shard, so the shell hands it in).
    pub fn shared_route_params(
        &self,
        route: &Route,
        seeds: [u64; 2],
        gop_account: Option<crate::proto::gop_budget::GopAccount>,
    ) -> Option<crate::proto::shared_route::RouteParams> {
        use crate::proto::camera_demand::Mode;
        use crate::proto::shared_route::{RECONNECT_FIRST, VIEWER_SESSION_TIMEOUT};
        let shared = route.shared()?;
        let (l, core) = (&self.limits, &self.core);
        let camera = crate::proto::camera_session::CameraParams {
            url: route.upstream_url.clone(),
            addr: route.upstream_addr,
            credentials: route.credentials.clone(),
            mode: if shared.always_on { Mode::AlwaysOn } else { Mode::OnDemand { linger: shared.linger } },
            gop_cache_bytes: shared.gop_cache.then_some(l.gop_cache_bytes),
            gop_cache_packets: l.gop_cache_packets,
            gop_account,
            limits: l.message_limits(),
            connect_timeout: core.connect_timeout,
            response_timeout: core.response_timeout,
            media_timeout: core.camera_media_timeout,
            backoff_initial: RECONNECT_FIRST,
            backoff_max: std::time::Duration::from_millis(l.camera_reconnect_max_ms),
            seed: seeds[0],
            fallback: route.fallback.as_ref().map(|f| crate::proto::camera_session::FallbackParams {
                url: f.url.clone(),
                addr: f.addr,
                credentials: f.credentials.clone(),
            }),
        };
        let viewer = crate::proto::shared_viewer::ViewerParams {
            session_seed: seeds[1],
            session_timeout: VIEWER_SESSION_TIMEOUT,
            // As long as a camera may take to connect and answer.
            camera_wait: core.connect_timeout + core.response_timeout,
            max_pending: l.max_pending_requests,
        };
        let fanout = crate::proto::fanout_policy::FanoutLimits {
            drop_above: l.fanout_drop_above_bytes,
            disconnect_above: l.fanout_disconnect_above_bytes,
            max_behind: core.fanout_max_behind,
        };
        let unresolved = route.resolve_error.as_deref().map(str::to_owned);
        let fallback_unresolved = route.fallback.as_ref().and_then(|f| f.resolve_error.as_deref()).map(str::to_owned);
        Some(crate::proto::shared_route::RouteParams { camera, viewer, fanout, unresolved, fallback_unresolved })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_authorizer_answer_is_waited_for_twice_the_longer_timeout_and_half_a_second() {
        let mut auth = AuthConfig::default();
        auth.http.timeout_ms = 3000;
        auth.jwt.timeout_ms = 1000;
        assert_eq!(auth.verdict_timeout(), std::time::Duration::from_millis(6500));
    }

    const EXAMPLE: &str = r#"
        [listen]
        tunnel  = ["0.0.0.0:80"]
        metrics = "127.0.0.1:8079"
        [runtime]
        shards = 0
        [[route]]
        path     = "/cam1"
        upstream = "rtsp://user:p%40ss@10.0.0.5:554/Streaming/Channels/101"
    "#;

    #[test]
    fn parses_the_contract_example() {
        let (cfg, routes) = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(cfg.listen.tunnel, vec!["0.0.0.0:80".parse().unwrap()]);
        assert_eq!(cfg.runtime.shards, 0);
        assert_eq!(cfg.runtime.hot_route_viewers, 250, "replicas past 250 viewers by default");
        let (off, _) = Config::from_toml(&EXAMPLE.replace(
            "shards = 0",
            "shards = 0
hot_route_viewers = 0",
        ))
        .unwrap();
        assert_eq!(off.runtime.hot_route_viewers, 0);
        assert_eq!(cfg.runtime.completion_batch_us, 4000, "completions batched for up to 4 ms by default");
        let at_once = EXAMPLE.replace("shards = 0", "shards = 0\ncompletion_batch_us = 0");
        assert_eq!(Config::from_toml(&at_once).unwrap().0.runtime.completion_batch_us, 0);
        let too_long = EXAMPLE.replace("shards = 0", "shards = 0\ncompletion_batch_us = 10001");
        assert!(Config::from_toml(&too_long).is_err(), "a wait past 10 ms is refused");
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!(r.path, "/cam1");
        assert_eq!(r.upstream_url, "rtsp://10.0.0.5:554/Streaming/Channels/101");
        assert_eq!(r.upstream_addr, "10.0.0.5:554".parse().unwrap());
        let c = r.credentials.as_ref().unwrap();
        assert_eq!((c.user.as_str(), c.pass.as_str()), ("user", "p@ss"));
        assert!(!format!("{c:?}").contains("p@ss"), "Debug must not print the password");
    }

    #[test]
    fn route_lookup_is_longest_prefix_on_segment_boundaries() {
        let text = "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/cam\"\nupstream=\"rtsp://127.0.0.1/a\"\n[[route]]\npath=\"/cam/hd\"\nupstream=\"rtsp://127.0.0.1/b\"\n";
        let (_, routes) = Config::from_toml(text).unwrap();
        let t = RouteTable::new(routes);
        let path = |target: &str| t.lookup(target).map(|r| r.path.clone());
        assert_eq!(path("/cam").as_deref(), Some("/cam"));
        assert_eq!(path("/cam?token=1").as_deref(), Some("/cam"));
        assert_eq!(path("rtsp://h:8080/cam/trackID=1").as_deref(), Some("/cam"));
        assert_eq!(path("rtsp://h/cam/hd/trackID=1").as_deref(), Some("/cam/hd"));
        assert_eq!(path("/camera"), None);
        assert_eq!(path("/"), None);
        assert_eq!(path("rtsp://h:8080"), None);
    }

    proptest::proptest! {
        /// The indexed lookup agrees with the definition: the longest route path that is the
        /// request path or a prefix of it ending before a '/'; "/" matches everything.
        #[test]
        fn route_lookup_matches_a_linear_scan(
            paths in proptest::collection::vec("/([ab]{1,2}(/[ab]{1,2}){0,2})?", 1..8),
            target in "(rtsp://h:1)?(/[ab]{0,2}){0,4}/?(\\?x)?",
        ) {
            let routes = paths
                .iter()
                .map(|p| {
                    let cfg = RouteConfig {
                        path: p.clone(),
                        upstream: "rtsp://127.0.0.1/".into(),
                        users: None,
                        open: false,
                        max_viewers: None,
                        allow: Vec::new(),
                        deny: Vec::new(),
                        mode: RouteMode::Shared,
                        linger_secs: 10,
                        always_on: false,
                        gop_cache: true,
                        upstream_ca: None,
                        upstream_fingerprint: None,
                        upstream_insecure_tls: false,
                        fallback: None,
                    };
                    cfg.validate().unwrap()
                })
                .collect();
            let t = RouteTable::new(routes);
            let path = uri_path(&target);
            let expected = t.routes().iter().find(|r| {
                r.path == "/"
                    || (path.starts_with(r.path.as_str()) && matches!(path.as_bytes().get(r.path.len()), None | Some(b'/')))
            });
            proptest::prop_assert_eq!(t.lookup(&target).map(|r| r.path.clone()), expected.map(|r| r.path.clone()));
        }
    }

    #[test]
    fn routes_share_their_camera_unless_told_otherwise() {
        let text = r#"
            [listen]
            tunnel = ["127.0.0.1:0"]
            [[route]]
            path = "/a"
            upstream = "rtsp://127.0.0.1/a"
            [[route]]
            path = "/b"
            upstream = "rtsp://127.0.0.1/b"
            linger_secs = 2
            always_on = true
            gop_cache = false
            [[route]]
            path = "/c"
            upstream = "rtsp://127.0.0.1/c"
            mode = "passthrough"
        "#;
        let (_, routes) = Config::from_toml(text).unwrap();
        let shared = |d: u64, always_on, gop_cache| {
            Sharing::Shared(SharedRoute { linger: std::time::Duration::from_secs(d), always_on, gop_cache })
        };
        let modes: Vec<Sharing> = routes.iter().map(|r| r.sharing).collect();
        assert_eq!(modes, vec![shared(10, false, true), shared(2, true, false), Sharing::Passthrough]);
        let bad = text.replace("mode = \"passthrough\"", "mode = \"passthrough\"\nalways_on = true");
        assert!(Config::from_toml(&bad).is_err(), "always_on needs a shared route");
        let bad = text.replace("mode = \"passthrough\"", "mode = \"sometimes\"");
        assert!(Config::from_toml(&bad).is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../examples/relay.toml");
        // Its camera addresses are literal IPs, so validation needs no name resolution.
        let (cfg, routes) = Config::from_toml(text).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(cfg.limits.pairing_timeout_ms, 3000);
        assert_eq!(cfg.limits.gop_cache_packets, Limits::default().gop_cache_packets);
        assert_eq!(routes[1].upstream_url, "rtsp://10.0.0.6:554/cam/realmonitor?channel=1&subtype=0");
        assert!(!cfg.listen.proxy_protocol && cfg.listen.proxy_from.is_empty());
    }

    #[test]
    fn external_methods_are_validated_and_guard_the_routes_without_users() {
        use crate::proto::route::Guard;
        let base = "[listen]\ntunnel=[\"127.0.0.1:0\"]\n";
        let route = |extra: &str| format!("[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\n{extra}");
        for (auth, msg) in [
            ("[auth]\nmethod=\"http\"\n", "needs [auth.http] url"),
            ("[auth]\nmethod=\"http\"\n[auth.http]\nurl=\"ftp://x/\"\n", "needs [auth.http] url"),
            ("[auth]\nmethod=\"jwt\"\n", "one of [auth.jwt] jwks_url or jwks_file"),
            (
                "[auth]\nmethod=\"jwt\"\n[auth.jwt]\njwks_file=\"/k\"\njwks_url=\"http://x/\"\n",
                "one of [auth.jwt] jwks_url or jwks_file",
            ),
            ("[auth]\nmethod=\"jwt\"\n[auth.jwt]\njwks_file=\"/k\"\njwks_min_refresh_secs=0\n", "claim must be set"),
            ("[auth]\nmethod=\"ldap\"\n", "unknown variant"),
        ] {
            let e = Config::from_toml(&format!("{base}{auth}{}", route("open=true\n"))).unwrap_err().to_string();
            assert!(e.contains(msg), "{auth}: {e}");
        }
        let e = Config::from_toml(&format!("{base}{}", route("open=true\nmax_viewers=0\n"))).unwrap_err().to_string();
        assert!(e.contains("max_viewers must be greater than 0"), "{e}");
        let http = "[auth]\nmethod=\"http\"\n[auth.http]\nurl=\"http://127.0.0.1:9/auth\"\n";
        let (_, routes) = Config::from_toml(&format!("{base}{http}{}", route("max_viewers=3\n"))).unwrap();
        assert_eq!((routes[0].guard, routes[0].max_viewers), (Guard::External, Some(3)));
        let (_, routes) = Config::from_toml(&format!("{base}{http}{}", route("open=true\n"))).unwrap();
        assert_eq!(routes[0].guard, Guard::Open);
        // Internal users with route globs guard routes that list nobody.
        let ha1 = crate::proto::viewer_auth::ha1_hex("bob", "rtsp-tunnel-relay", "pw");
        let users = format!("[[user]]\nname=\"bob\"\nha1=\"{ha1}\"\nroutes=[\"/a*\"]\n");
        let (_, routes) = Config::from_toml(&format!("{base}{users}{}", route(""))).unwrap();
        assert_eq!(routes[0].guard, Guard::UsersByRoute);
    }

    #[test]
    fn users_routes_and_address_lists() {
        let ha1 = crate::proto::viewer_auth::ha1_hex("alice", "rtsp-tunnel-relay", "pw");
        let base = format!(
            "[listen]\ntunnel=[\"127.0.0.1:1\"]\ndeny=[\"10.0.0.0/8\"]\n[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n"
        );
        let ok = format!(
            "{base}[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\nusers=[\"alice\"]\nallow=[\"127.0.0.0/8\", \"::1\"]\n[[route]]\npath=\"/b\"\nupstream=\"rtsp://127.0.0.1/b\"\nopen=true\n"
        );
        let (cfg, routes) = Config::from_toml(&ok).unwrap();
        assert!(cfg.viewer_users().unwrap().contains("alice"));
        assert_eq!(routes[0].users.as_deref(), Some(&["alice".to_owned()][..]));
        assert!(routes[0].acl.permits("127.0.0.9".parse().unwrap()));
        assert!(routes[0].acl.permits("::ffff:127.0.0.9".parse().unwrap()));
        assert!(!routes[0].acl.permits("192.168.1.1".parse().unwrap()));
        assert!(routes[1].acl.permits("192.168.1.1".parse().unwrap()));
        let cases = [
            (format!("{base}[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\n"), "or set open = true"),
            (
                format!("{base}[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\nusers=[\"bob\"]\n"),
                "unknown user \"bob\"",
            ),
            (
                format!("{base}[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\nopen=true\nallow=[\"nope\"]\n"),
                "not an address or CIDR",
            ),
            (format!("{base}[[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n"), "defined twice"),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[user]]\nname=\"x\"\nha1=\"plaintext\"\n".to_owned(),
                "32 hex digits",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn default_port_is_554_and_no_credentials() {
        let text = "[listen]\ntunnel=[\"127.0.0.1:8080\"]\n[[route]]\npath=\"/a/\"\nupstream=\"rtsp://127.0.0.1/x\"\n";
        let (_, routes) = Config::from_toml(text).unwrap();
        assert_eq!(routes[0].path, "/a");
        assert_eq!(routes[0].upstream_addr.port(), 554);
        assert!(routes[0].credentials.is_none());
    }

    #[test]
    fn rejects_bad_files_with_a_clear_message() {
        let cases = [
            ("[listen]\ntunnel=[]\n", "at least one address"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\nbogus=1\n", "unknown field"),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"cam\"\nupstream=\"rtsp://h/x\"\n",
                "must start with '/'",
            ),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/c\"\nupstream=\"http://h/x\"\n",
                "must be rtsp://",
            ),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/c\"\nupstream=\"rtsp://127.0.0.1/x#f\"\n",
                "#fragment",
            ),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\nmax_sessions=0\n", "max_sessions"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[metrics]\nmax_connections=0\n", "[metrics]"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[metrics]\nrequest_timeout_ms=5\n", "[metrics]"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\nrequest_timeout_secs=0\n", "request_timeout_secs"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\ncamera_close_grace_ms=0\n", "camera_close_grace_ms"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[runtime]\ndrain_accept_secs=301\n", "drain_accept_secs"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\ngop_cache_packets=0\n", "gop_cache_packets"),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\ngop_cache_packets=1000001\n", "at most 1000000"),
            // Each would have panicked a shard adding it to the clock.
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\nidle_timeout_secs=18446744073709551615\n",
                "idle_timeout_secs",
            ),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\nrequest_timeout_secs=31536001\n", "request_timeout_secs"),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[runtime]\nshutdown_grace_secs=18446744073709551615\n",
                "shutdown_grace_secs",
            ),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/c\"\nupstream=\"rtsp://127.0.0.1/x\"\nlinger_secs=18446744073709551615\n",
                "linger_secs",
            ),
            ("[listen]\ntunnel=[\"127.0.0.1:1\"]\n[limits]\ngop_cache_total_bytes=0\n", "gop_cache_total_bytes"),
            (
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/c\"\nupstream=\"rtsp://127.0.0.1/x\"\n[[route]]\npath=\"/c/\"\nupstream=\"rtsp://127.0.0.1/y\"\n",
                "duplicate path",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn one_validation_yields_every_piece_the_relay_runs() {
        let ha1 = crate::proto::viewer_auth::ha1_hex("alice", "cams", "pw");
        let text = format!(
            "[listen]\ntunnel=[\"127.0.0.1:1\", \"127.0.0.1:2\"]\nmetrics=\"127.0.0.1:3\"\ndeny=[\"10.0.0.0/8\"]\n\
             public_address=\"relay.example\"\n[runtime]\nshards=3\nshutdown_grace_secs=4\n[limits]\nmax_sessions=7\n\
             [auth]\nrealm=\"cams\"\n[metrics]\nmax_connections=2\n[log]\nlevel=\"debug\"\n\
             [[user]]\nname=\"alice\"\nha1=\"{ha1}\"\n\
             [[route]]\npath=\"/a\"\nupstream=\"rtsp://u:p@127.0.0.1:8554/a\"\nusers=[\"alice\"]\n"
        );
        let s = Settings::from_toml(&text).unwrap();
        let addrs: Vec<SocketAddr> = s.listeners.iter().map(|l| l.addr).collect();
        assert_eq!(addrs, ["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()]);
        assert!(s.listeners.iter().all(|l| l.tls.is_none() && !l.acl.permits("10.1.2.3".parse().unwrap())));
        assert!(s.listeners[0].acl.permits("192.168.1.1".parse().unwrap()));
        assert_eq!(s.public_address.as_deref(), Some("relay.example"));
        assert_eq!((s.metrics_addr, s.metrics_port.max_connections), (Some("127.0.0.1:3".parse().unwrap()), 2));
        assert_eq!(s.bound_addresses(), (addrs, Some("127.0.0.1:3".parse().unwrap())));
        assert_eq!((s.shards(), s.runtime.shutdown_grace_secs), (3, 4));
        assert_eq!((s.limits.max_sessions, s.auth.realm.as_str(), s.log.level.as_str()), (7, "cams", "debug"));
        // The route table the shards look up carries the users it is checked against.
        assert!(s.routes.users().contains("alice"));
        let route = s.routes.lookup("/a/trackID=1").unwrap();
        assert_eq!(route.upstream_addr, "127.0.0.1:8554".parse().unwrap());
        assert_eq!(route.credentials.as_ref().map(|c| c.user.as_str()), Some("u"));
        // The compatibility view agrees with it, in file order.
        let (_, routes) = Config::from_toml(&text).unwrap();
        assert_eq!(routes.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["/a"]);
    }

    #[test]
    fn a_missing_certificate_fails_validation_naming_the_listener() {
        let text = "[listen]\ntunnel=[]\n[[listen.tls]]\naddr=\"127.0.0.1:443\"\ncert=\"/nonexistent/c.pem\"\nkey=\"/nonexistent/k.pem\"\n";
        let err = Settings::from_toml(text).unwrap_err().to_string();
        assert!(err.contains("[[listen.tls]] 127.0.0.1:443") && err.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn web_settings_have_defaults_can_be_set_and_are_checked() {
        let (cfg, _) = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(cfg.web, WebConfig::default());
        assert_eq!(cfg.web.websocket_limits(), crate::proto::websocket::WsLimits::default());
        let text = format!("{EXAMPLE}\n[web]\nenabled = false\nmax_websocket_frame_bytes = 8192\n");
        let s = Settings::from_toml(&text).unwrap();
        assert!(!s.web.enabled);
        assert_eq!(s.web.websocket_limits().max_frame_bytes, 8192);
        assert!(s.web.allowed_origins.is_empty());
        let origins =
            format!("{EXAMPLE}\n[web]\nallowed_origins = [\"https://nvr.example\", \"http://10.0.0.7:8080\"]\n");
        assert_eq!(Settings::from_toml(&origins).unwrap().web.origins().len(), 2);
        let bad = format!("{EXAMPLE}\n[web]\nallowed_origins = [\"nvr.example\"]\n");
        assert!(Settings::from_toml(&bad).unwrap_err().to_string().contains("allowed_origins"));
        let small = format!("{EXAMPLE}\n[web]\nmax_websocket_frame_bytes = 100\n");
        assert!(Settings::from_toml(&small).unwrap_err().to_string().contains("max_websocket_frame_bytes"));
        let route =
            "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/_player/x\"\nupstream=\"rtsp://127.0.0.1/\"\n";
        assert!(
            Settings::from_toml(route).unwrap_err().to_string().contains("browser player"),
            "a route under /_player/"
        );
    }

    #[test]
    fn proxy_protocol_is_off_by_default_and_trusts_only_proxy_from() {
        let off = Settings::from_toml(EXAMPLE).unwrap();
        assert_eq!(off.proxy, ProxyProtocol::default());
        assert_eq!(off.proxy.expect("10.0.0.2".parse().unwrap()), ProxyExpect::NoHeader);
        let base = "[listen]\ntunnel=[\"127.0.0.1:1\"]\n";
        let on =
            Settings::from_toml(&format!("{base}proxy_protocol=true\nproxy_from=[\"10.0.0.0/24\", \"2001:db8::5\"]\n"))
                .unwrap();
        assert!(on.proxy.enabled);
        for (peer, want) in [
            ("10.0.0.2", ProxyExpect::Header),
            ("::ffff:10.0.0.200", ProxyExpect::Header),
            ("2001:db8::5", ProxyExpect::Header),
            ("10.0.1.2", ProxyExpect::NoHeader),
            ("2001:db8::6", ProxyExpect::NoHeader),
        ] {
            assert_eq!(on.proxy.expect(peer.parse().unwrap()), want, "{peer}");
        }
        // Listed but switched off: nobody is trusted.
        let listed = Settings::from_toml(&format!("{base}proxy_from=[\"10.0.0.0/24\"]\n")).unwrap();
        assert_eq!(listed.proxy.expect("10.0.0.2".parse().unwrap()), ProxyExpect::NoHeader);
        for (text, needle) in [
            (format!("{base}proxy_protocol=true\n"), "needs proxy_from"),
            (format!("{base}proxy_protocol=true\nproxy_from=[\"10.0.0.300\"]\n"), "[listen] proxy_from"),
            (format!("{base}proxy_protocol=true\nproxy_from=[\"0.0.0.0/0\"]\n"), "trusts every source"),
            (format!("{base}proxy_protocol=true\nproxy_from=[\"::/0\"]\n"), "trusts every source"),
        ] {
            let err = Settings::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }

    /// Issue 26 item 3: `fallback` is checked like `upstream` (scheme, fragment, host,
    /// credentials), named in its errors, and takes the route's TLS keys.
    #[test]
    fn a_fallback_is_validated_like_the_upstream() {
        let route = |extra: &str| {
            format!(
                "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/a\"\nupstream=\"rtsp://127.0.0.1/a\"\n{extra}"
            )
        };
        let (_, routes) = Config::from_toml(&route("fallback=\"rtsp://u:p%40ss@127.0.0.2:8554/sub?x=1\"\n")).unwrap();
        let f = routes[0].fallback.as_ref().unwrap();
        assert_eq!((f.url.as_str(), f.addr), ("rtsp://127.0.0.2:8554/sub?x=1", "127.0.0.2:8554".parse().unwrap()));
        assert_eq!(f.credentials, Some(Credentials { user: "u".into(), pass: "p@ss".into() }));
        assert!(f.link.tls.is_none() && f.link.http_tunnel.is_none());
        assert!(Config::from_toml(&route("")).unwrap().1[0].fallback.is_none());
        // An rtsps:// fallback takes the route's TLS keys though the upstream is plain.
        let (_, routes) =
            Config::from_toml(&route("fallback=\"rtsps://127.0.0.2/sub\"\nupstream_insecure_tls=true\n")).unwrap();
        assert!(routes[0].fallback.as_ref().unwrap().link.tls.is_some() && routes[0].upstream_link.tls.is_none());
        let (_, routes) = Config::from_toml(&route("fallback=\"rtsp+http://127.0.0.2/sub\"\n")).unwrap();
        assert!(routes[0].fallback.as_ref().unwrap().link.http_tunnel.is_some());
        for (extra, needle) in [
            ("fallback=\"http://127.0.0.2/x\"\n", "fallback must be rtsp://"),
            ("fallback=\"rtsp://127.0.0.2/x#f\"\n", "fallback must not end in a #fragment"),
            ("fallback=\"nope\"\n", "fallback:"),
            ("fallback=\"rtsp://0.0.0.0/x\"\n", "fallback 0.0.0.0 is no camera address"),
            ("fallback=\"rtsp://127.0.0.2/x\"\nupstream_insecure_tls=true\n", "need rtsps://"),
        ] {
            let err = Config::from_toml(&route(extra)).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_camera_name_that_does_not_resolve_fails_its_route_only() {
        let text = "[listen]\ntunnel=[\"127.0.0.1:1\"]\n\
            [[route]]\npath=\"/gone\"\nupstream=\"rtsp://camera.invalid:8554/s\"\n\
            [[route]]\npath=\"/here\"\nupstream=\"rtsp://127.0.0.1:8554/s\"\n";
        let s = Settings::from_toml(text).expect("one unresolvable camera does not reject the file");
        let unresolved: Vec<_> = s.unresolved_routes().collect();
        assert_eq!(unresolved.len(), 1, "{unresolved:?}");
        assert_eq!(unresolved[0].0, "/gone");
        assert!(unresolved[0].1.contains("cannot resolve camera.invalid"), "{unresolved:?}");
        let gone = s.routes.lookup("/gone").unwrap();
        // A placeholder the shard never connects to, keeping the port (a later reload that
        // resolves it is a changed camera).
        assert!(gone.upstream_addr.ip().is_unspecified() && gone.upstream_addr.port() == 8554);
        assert!(s.routes.lookup("/here").unwrap().resolve_error.is_none());
        // An unspecified address written as the camera is refused: it would be this host.
        let err = Settings::from_toml(
            "[listen]\ntunnel=[\"127.0.0.1:1\"]\n[[route]]\npath=\"/x\"\nupstream=\"rtsp://0.0.0.0/s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no camera address"), "{err}");
    }

    #[test]
    fn the_control_api_is_off_by_default_and_checked_when_on() {
        assert!(Settings::from_toml(EXAMPLE).unwrap().api.is_none());
        let digest = crate::proto::api_token::sha256_hex(b"secret");
        let token = format!("[[api.token]]\nname = \"ops\"\nsha256 = \"{digest}\"\nscope = \"admin\"\n");
        let on = Settings::from_toml(&format!("{EXAMPLE}\n[api]\nlisten = \"127.0.0.1:9180\"\n{token}")).unwrap();
        let api = on.api.unwrap();
        assert_eq!((api.listen, api.tls.is_none(), api.state_dir), ("127.0.0.1:9180".parse().unwrap(), true, None));
        for (extra, needle) in [
            ("[api]\nlisten = \"127.0.0.1:9180\"\n".to_owned(), "no [[api.token]]"),
            (format!("[api]\nlisten = \"127.0.0.1:9180\"\ncert = \"/x.pem\"\n{token}"), "cert and key go together"),
            ("[api]\n[[api.token]]\nname = \"a\"\nsha256 = \"secret\"\nscope = \"read\"\n".to_owned(), "64 hex digits"),
            (format!("[api]\nlisten = \"127.0.0.1:9180\"\n{}", token.replace("admin", "root")), "scope"),
        ] {
            let err = Settings::from_toml(&format!("{EXAMPLE}\n{extra}")).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra:?}: {err:?} lacks {needle:?}");
        }
        // The checksum is the file's.
        assert_eq!(
            Settings::from_toml(EXAMPLE).unwrap().checksum,
            crate::proto::api_token::sha256_hex(EXAMPLE.as_bytes())
        );
    }

    #[test]
    fn metrics_port_limits_have_defaults_and_can_be_set() {
        let (cfg, _) = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(cfg.metrics, MetricsPortConfig { request_timeout_ms: 5_000, max_connections: 8, per_route: false });
        let text = format!("{EXAMPLE}\n[metrics]\nrequest_timeout_ms = 2500\nmax_connections = 16\n");
        let (cfg, _) = Config::from_toml(&text).unwrap();
        assert_eq!(cfg.metrics, MetricsPortConfig { request_timeout_ms: 2_500, max_connections: 16, per_route: false });
    }
}

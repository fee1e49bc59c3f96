//! What a shared route is given and what it hands back: its parameters, the actions the shell
//! carries out, the events it counts and logs.

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::camera_health::HealthReport;
use crate::proto::camera_session::{CameraExchange, CameraOutcome, CameraParams};
use crate::proto::camera_source::Source;
use crate::proto::fanout_policy::FanoutLimits;
use crate::proto::gop_cache::GopBound;
use crate::proto::outcome::Rejection;
use crate::proto::shared_fanout::Delivery;
use crate::proto::shared_viewer::{ViewerExchange, ViewerParams};

/// Announced to viewers as their session timeout (`Session: id;timeout=60`); a viewer silent for
/// 1.25 × this is closed.
pub const VIEWER_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// The first reconnect waits this long (doubling, with jitter, up to the route's maximum).
pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);

/// What a shared route is made of; a reload replaces it ([`SharedRoute::reconfigure`]).
#[derive(Debug, Clone)]
pub struct RouteParams {
    /// The camera session's (its `seed` varies per camera session the route opens).
    pub camera: CameraParams,
    /// How viewers are answered (`session_seed` is the base each viewer's seed is drawn from).
    pub viewer: ViewerParams,
    /// The slow-viewer bounds a viewer joins with.
    pub fanout: FanoutLimits,
    /// The camera's name did not resolve when the configuration was loaded: each connect fails
    /// with these words, and is retried as a refused connect would be (a reload resolves again).
    pub unresolved: Option<String>,
    /// The same for the route's fallback camera (`camera.fallback`).
    pub fallback_unresolved: Option<String>,
}

/// Why the route ends a viewer's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerEnd {
    /// Silent past 1.25 × its session timeout (`relay_rejections_total{reason="idle_timeout"}`).
    Timeout,
    /// A request without `CSeq`.
    ProtocolError,
    /// The camera came back describing other tracks: viewers set up on the old ones reconnect.
    CameraChanged,
    /// The route was closed ([`SharedRoute::close`]).
    RouteRemoved,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<V> {
    /// Open the camera connection to `source` (with that camera's TLS and HTTP tunnel); report
    /// with `handle_connected`, `handle_connect_failed` or `handle_link_failed`.
    Connect { addr: SocketAddr, source: Source },
    /// Queue these bytes to the camera.
    SendToCamera(Vec<u8>),
    /// Let the camera connection go: what is queued to it (a TEARDOWN) goes out, then it closes.
    CloseCamera,
    /// Queue this RTSP answer to the viewer.
    ToViewer { viewer: V, bytes: Vec<u8> },
    /// One step of a joining viewer's plan (the GOP cache replayed, its first picture), as a
    /// receive's plan ([`SharedRoute::plan_next`]) but with shared bytes only.
    Deliver(Delivery<V>),
    /// End the viewer's session: it gets nothing more. It stays attached until `detach`.
    EndViewer { viewer: V, reason: ViewerEnd },
    /// Open the connection of the probe of the primary camera (the route's own TLS and HTTP
    /// tunnel); report with the `handle_probe_*` inputs.
    ConnectProbe(SocketAddr),
    /// Queue these bytes to the probe's connection.
    SendToProbe(Vec<u8>),
    /// Let the probe's connection go, as [`Action::CloseCamera`].
    CloseProbe,
    /// The probe's connection is the camera connection from now on (the route is back on its
    /// primary; the fallback's was let go just before): its bytes are the camera's.
    ProbeIsCamera,
}

/// What happened, for metrics and logs ([`SharedRoute::poll_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent<V> {
    /// A camera session was opened for the route (its first viewer, or always on).
    CameraOpened,
    /// The camera session was closed and forgotten (nobody wants it, or the route closed).
    CameraRetired,
    /// The camera plays (`relay_cameras_active` +1).
    CameraUp,
    /// It stopped playing (`relay_cameras_active` -1).
    CameraDown,
    /// One camera connection ended (`relay_camera_sessions_total{outcome}`).
    CameraEnded(CameraOutcome),
    /// A reconnect starts (`relay_camera_reconnects_total`), of the camera or of its probe.
    Reconnecting,
    /// Another of the route's cameras is live from now on (an info line,
    /// `relay_route_camera_source`).
    SourceChanged(Source),
    /// One connection of the probe of the primary ended (`relay_camera_sessions_total{outcome}`,
    /// a debug line; not the route's health).
    ProbeEnded(CameraOutcome),
    GopCacheOverflow(GopBound),
    /// One request to the camera and its answer (debug log).
    CameraExchange(CameraExchange),
    /// The route's camera state or viewer count changed (`relay_route_camera_state`,
    /// `relay_route_viewers`), or its health has a line worth logging (a failure once per
    /// state change or reason, a recovery).
    Health(HealthReport),
    /// A viewer's request and its answer (`relay_rtsp_request_seconds`, debug log).
    ViewerExchange {
        viewer: V,
        exchange: ViewerExchange,
    },
    /// A viewer's request refused for this reason (counted); its session goes on.
    ViewerRefused {
        viewer: V,
        reason: Rejection,
    },
    /// A viewer's PLAY was answered, `setup` after its session started.
    ViewerPlaying {
        viewer: V,
        setup: Duration,
    },
}

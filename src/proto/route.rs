//! Routes as the protocol core sees them: a viewer path, the camera behind it, who may watch,
//! and the table that finds the route for a request. The configuration builds these
//! (`config::RouteConfig::validate`); nothing here reads a file or resolves a name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::upstream_auth::Credentials;
use super::upstream_link::UpstreamLink;
use super::viewer_auth::Users;

/// Source-address allow/deny lists (CIDR). Deny wins; an empty allow list allows all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    pub allow: Vec<ipnet::IpNet>,
    pub deny: Vec<ipnet::IpNet>,
}

impl Acl {
    pub fn parse(allow: &[String], deny: &[String]) -> Result<Acl, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| format!("{s:?} is not an address or CIDR block"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Acl { allow: parse(allow)?, deny: parse(deny)? })
    }

    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        // IPv4-mapped IPv6 peers are judged by their IPv4 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Client path, normalised without a trailing `/`.
    pub path: String,
    /// Camera URL without credentials (what requests are rewritten to).
    pub upstream_url: String,
    /// Camera address, resolved when the configuration is loaded (unspecified when the name
    /// did not resolve: see `resolve_error`).
    pub upstream_addr: SocketAddr,
    /// TLS, or the HTTP tunnel, under RTSP towards the camera.
    pub upstream_link: UpstreamLink,
    /// Why the camera's name did not resolve when the configuration was loaded: the route is
    /// served, and its camera fails at connect time with this reason until a reload resolves it.
    pub resolve_error: Option<Arc<str>>,
    pub credentials: Option<Credentials>,
    /// Who may watch, by name (internal users, Digest); `None`: [`Route::guard`] says.
    pub users: Option<Vec<String>>,
    /// Who decides for a route without a `users` list.
    pub guard: Guard,
    /// Viewers at once (answered 453 past it); `None`: no cap.
    pub max_viewers: Option<usize>,
    pub acl: Acl,
    /// One camera session for every viewer, or one per viewer.
    pub sharing: Sharing,
    /// The second camera (`fallback = "rtsp://…"`) viewers are kept on while this one cannot be
    /// reached or stops sending.
    pub fallback: Option<Arc<FallbackCamera>>,
}

/// A route's fallback source: another camera, reached and logged in to as its own URL says (the
/// route's `upstream_*` TLS keys apply to it too).
#[derive(Debug, Clone)]
pub struct FallbackCamera {
    /// Its URL without credentials.
    pub url: String,
    pub addr: SocketAddr,
    pub link: UpstreamLink,
    /// Why its name did not resolve (it fails at connect time, as the primary would).
    pub resolve_error: Option<Arc<str>>,
    pub credentials: Option<Credentials>,
}

impl FallbackCamera {
    /// Whether `other` is the same camera reached the same way.
    pub fn same_as(&self, other: &FallbackCamera) -> bool {
        self.url == other.url
            && self.addr == other.addr
            && self.link.same_as(&other.link)
            && self.credentials == other.credentials
    }
}

/// Whether two routes' fallbacks are the same (both none, or the same camera).
fn same_fallback(a: &Option<Arc<FallbackCamera>>, b: &Option<Arc<FallbackCamera>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_as(b),
        _ => false,
    }
}

/// Who lets a viewer in on a route without its own `users` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guard {
    /// Anyone who passes the address lists.
    #[default]
    Open,
    /// Any internal user whose `routes` globs cover this route.
    UsersByRoute,
    /// The configured external method (`[auth] method = "http"` or `"jwt"`).
    External,
}

/// How viewers of a route reach its camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// One relay session with the camera feeds every viewer (the relay answers the viewers).
    Shared(SharedRoute),
    /// Each viewer gets its own camera session, its requests rebuilt and passed on (NVR
    /// playback with Range/Scale/PAUSE per viewer, cameras that need per-client sessions).
    Passthrough,
}

/// A shared route's camera policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRoute {
    /// How long the camera session stays open after the last viewer leaves.
    pub linger: std::time::Duration,
    /// Open from start-up and reconnected forever, viewers or not.
    pub always_on: bool,
    /// Keep the packets since the last keyframe for joining viewers.
    pub gop_cache: bool,
}

impl Route {
    /// Whether `other` (from a reloaded configuration) is this route with the same camera,
    /// reached the same way: sessions on it may go on.
    pub fn same_camera_as(&self, other: &Route) -> bool {
        self.path == other.path
            && self.upstream_url == other.upstream_url
            && self.upstream_addr == other.upstream_addr
            && self.upstream_link.same_as(&other.upstream_link)
            && self.sharing == other.sharing
            && same_fallback(&self.fallback, &other.fallback)
    }

    /// Whether sessions on `self` may go on under `other` (from a reloaded configuration). A
    /// passthrough session holds its own camera connection: it needs the same camera, reached
    /// the same way ([`Route::same_camera_as`]). A shared route's viewers talk to the relay, not
    /// to the camera: the same path shared the same way keeps them, whatever the camera behind
    /// it — a changed camera is its camera session's to reopen, and to carry the viewers over
    /// or end them (`camera_changed`) by what the new camera describes.
    pub fn keeps_sessions_under(&self, other: &Route) -> bool {
        match (self.sharing, other.sharing) {
            (Sharing::Shared(a), Sharing::Shared(b)) => self.path == other.path && a == b,
            // A passthrough session on the fallback (`fallback_route`) stays while the route
            // keeps that fallback.
            _ => self.same_camera_as(other) || other.fallback_route().is_some_and(|f| self.same_camera_as(&f)),
        }
    }

    /// Whether `other` reaches another camera, or logs in to it as someone else: a camera
    /// session opened for `self` is not one for `other`.
    pub fn camera_differs_from(&self, other: &Route) -> bool {
        self.upstream_url != other.upstream_url
            || self.upstream_addr != other.upstream_addr
            || !self.upstream_link.same_as(&other.upstream_link)
            || self.credentials != other.credentials
            || !same_fallback(&self.fallback, &other.fallback)
    }

    /// This route with its fallback as its camera (and no fallback of its own): what a
    /// passthrough session opens when the upstream cannot be reached.
    pub fn fallback_route(&self) -> Option<Route> {
        let f = self.fallback.as_ref()?;
        Some(Route {
            upstream_url: f.url.clone(),
            upstream_addr: f.addr,
            upstream_link: f.link.clone(),
            resolve_error: f.resolve_error.clone(),
            credentials: f.credentials.clone(),
            fallback: None,
            ..self.clone()
        })
    }

    pub fn shared(&self) -> Option<SharedRoute> {
        match self.sharing {
            Sharing::Shared(s) => Some(s),
            Sharing::Passthrough => None,
        }
    }
}

/// The routes in force, looked up by path (longest prefix on a segment boundary).
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Longest path first, so the first match is the most specific.
    routes: Vec<Arc<Route>>,
    /// The same routes by exact path: a lookup costs one probe per path segment, not one
    /// comparison per route (thousands of cameras, a lookup per session).
    by_path: HashMap<String, Arc<Route>>,
    users: Users,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let mut by_path = HashMap::with_capacity(routes.len());
        for r in &routes {
            by_path.entry(r.path.clone()).or_insert_with(|| r.clone());
        }
        RouteTable { routes, by_path, users: Users::default() }
    }

    /// The same table with the viewers who may authenticate.
    pub fn with_users(mut self, users: Users) -> Self {
        self.users = users;
        self
    }

    pub fn users(&self) -> &Users {
        &self.users
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route serving a request target or RTSP URI (`/cam1?token=x`,
    /// `rtsp://host:8080/cam1/trackID=1`). Query strings are ignored.
    pub fn lookup(&self, target: &str) -> Option<Arc<Route>> {
        // Route paths start with '/' and never end with one (but "/" itself), so the candidates
        // are the path and each of its prefixes that ends before a '/', longest first.
        let mut candidate = uri_path(target);
        loop {
            if let Some(r) = self.by_path.get(candidate) {
                return Some(r.clone());
            }
            match candidate.rfind('/') {
                Some(i) if i > 0 => candidate = &candidate[..i],
                _ => return self.by_path.get("/").cloned(),
            }
        }
    }
}

/// The shard (of `shards`) that owns a shared route's camera, and so its viewers: FNV-1a of its
/// path, a hash every shard computes alike, run after run.
pub fn home_shard(route_path: &str, shards: usize) -> u16 {
    let hash =
        route_path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % shards.max(1) as u64) as u16
}

/// Whether the first request of a connection (a tunnel GET, a WebSocket upgrade, plain RTSP's
/// first request) names `route_path` by its own spelling: that path, or that path and one `/`
/// (a URL typed with a trailing slash); any query. Every other spelling the lookup would also
/// map to the route (`/cam1/x`, `/cam1/b/..`, `/cam1/./.`, `/cam1//`, `/cam1/%2e`) is refused:
/// a balancer hashes the path as written, so each spelling could land on another node and pull
/// the same camera there. The balancer's key (deploy/haproxy) drops query and trailing slashes,
/// so the accepted spellings all hash alike. Requests after the first (track URLs) are not
/// judged here.
pub fn is_route_spelling(target: &str, route_path: &str) -> bool {
    let path = uri_path(target);
    path == route_path || (route_path != "/" && path.strip_suffix('/') == Some(route_path))
}

/// The path of a request target or absolute URI, without query or fragment.
pub fn uri_path(target: &str) -> &str {
    let url = super::rtsp_url::RtspUrl::parse(target);
    if url.is_absolute() { url.path_or_root() } else { url.path }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_route_is_named_by_its_own_spelling_only() {
        for ok in [
            "/cam1",
            "/cam1/",
            "/cam1?token=abc",
            "/cam1/?token=abc",
            "rtsp://relay:554/cam1",
            "rtsp://u:p@relay/cam1?x#f",
        ] {
            assert!(is_route_spelling(ok, "/cam1"), "{ok}");
        }
        for refused in [
            "/cam1/x",
            "/cam1/b/..",
            "/cam1/./.",
            "/cam1/.",
            "/cam1//",
            "//cam1",
            "/%63am1",
            "/cam1/%2e%2e",
            "/CAM1",
            "/cam1x",
            "rtsp://relay/cam1/trackID=1",
        ] {
            assert!(!is_route_spelling(refused, "/cam1"), "{refused}");
        }
        assert!(is_route_spelling("/", "/") && is_route_spelling("rtsp://relay", "/"));
        assert!(!is_route_spelling("//", "/") && !is_route_spelling("/x", "/"));
        assert!(is_route_spelling("/site/cam1/", "/site/cam1") && !is_route_spelling("/site//cam1", "/site/cam1"));
    }

    proptest! {
        /// Whatever a viewer writes, an accepted spelling is the route's path up to a trailing
        /// slash and the query: what the balancer hashes.
        #[test]
        fn accepted_spellings_reduce_to_the_route_path(target in "[a-z/.%?=]{0,24}") {
            if is_route_spelling(&target, "/cam1") {
                prop_assert_eq!(uri_path(&target).trim_end_matches('/'), "/cam1");
            }
        }
    }
}

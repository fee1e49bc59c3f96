//! A passthrough route's fallback source, for one viewer's session: the route's upstream could
//! not be reached when this session first connected, so the session opens the route's
//! `fallback` instead (once): the requests waiting for the camera are addressed again to the
//! fallback's URL (from the viewer's own URIs, through the same confinement) and logged in with
//! its credentials. Later viewers try the upstream first again, so a camera back up is used at
//! once.

use std::sync::Arc;

use super::super::rtsp::StartLine;
use super::super::upstream_auth::UpstreamAuth;
use super::{Output, Session, Upstream};

impl Session {
    /// The camera connection failed: whether this session moved to its route's fallback (a
    /// new connection asked for, the waiting requests queued for it).
    pub(super) fn try_fallback(&mut self, out: &mut Vec<Output>) -> bool {
        if self.shared || self.upstream != Upstream::Connecting {
            return false;
        }
        let Some(route) = self.route.clone() else { return false };
        // The fallback's own route has none: tried once.
        let Some(fallback) = route.fallback_route() else { return false };
        let Some(map) = self.map.as_ref().and_then(|m| m.with_upstream(&fallback.upstream_url).ok()) else {
            return false;
        };
        let mut uris = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let (method, uri) = &p.viewer_request;
            match map.camera_uri(uri, method == "OPTIONS", &self.handed_out) {
                Ok(camera_uri) => uris.push(camera_uri),
                Err(_) => return false,
            }
        }
        let mut auth = fallback.credentials.clone().map(|c| Box::new(UpstreamAuth::new(c, self.params.cnonce_seed)));
        let mut wires = Vec::with_capacity(uris.len());
        for (p, camera_uri) in self.pending.iter_mut().zip(uris) {
            if let StartLine::Request { uri, .. } = &mut p.request.start {
                *uri = camera_uri;
            }
            let mut wire = p.request.clone();
            p.authorized = auth.as_mut().is_some_and(|a| a.authorize(&mut wire));
            wires.push(wire.to_bytes());
        }
        let addr = fallback.upstream_addr;
        self.route = Some(Arc::new(fallback));
        self.map = Some(map);
        self.auth = auth;
        self.upstream_backlog = wires;
        out.push(Output::ConnectUpstream(addr));
        true
    }
}

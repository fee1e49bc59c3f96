//! Replicas of hot shared routes (`[runtime] hot_route_viewers`, `replica_link.rs`): a viewer
//! of a hot route stays on the shard that accepted it, served by that shard's replica of the
//! route; the replica's camera is a link to the route on its home shard, which sees the replica
//! as one viewer. Both ends are `SharedRoute`s deciding everything as for any viewer and camera;
//! this carries the link's messages between them.
//!
//! Replica side: the route's `Connect`, `SendToCamera` and `CloseCamera` become `Open`,
//! `Request` and `Close` posted to the home shard; `Bytes` from it are read as one receive of
//! the camera (`SharedRoute::handle_camera_owned`, no copy), `Ended` as the camera closing its
//! connection (the replica reconnects as from any camera, with its backoff).
//! Home side: `Open` attaches `RouteViewer::Replica(shard)` (the URLs the camera's own, so the
//! replica's camera session reads the answers as a camera's), `Request`s are its requests,
//! `Close` detaches it. What the route sends it is gathered per receive and posted once the
//! route's actions are carried out (`post_to_replicas`); its fan-out judges the replica on the
//! bytes posted and not yet read, so a replica too far behind is cut (`end_replica`) and
//! reconnects, never slowing the home route's other viewers.

use bytes::BytesMut;

use super::*;
use crate::proto::camera_demand::Mode;
use crate::proto::rewrite::UrlMap;
use crate::proto::shared_route::RouteParams;
use crate::shard::camera_table::CameraKey;
use crate::shard::replica_link::{Backlog, HomeLink, LinkId, ReplicaFeed, ReplicaMsg, RouteViewer};

/// An always-on route's replica still retires when its last viewer leaves, after this.
const REPLICA_LINGER: Duration = Duration::from_secs(10);

/// A replica's parameters from its route's: on demand (it exists for its viewers), no fallback
/// of its own (the home route switches, the replica follows), nothing to resolve.
pub(super) fn replica_params(params: &mut RouteParams) {
    if params.camera.mode == Mode::AlwaysOn {
        params.camera.mode = Mode::OnDemand { linger: REPLICA_LINGER };
    }
    params.camera.fallback = None;
    params.unresolved = None;
    params.fallback_unresolved = None;
}

impl Shard {
    fn post_to(&self, shard: u16, msg: ReplicaMsg) -> bool {
        self.shared.mailboxes.get(shard as usize).is_some_and(|m| m.post(ShardMsg::Replica(msg)).is_ok())
    }

    pub(in crate::shard) fn on_replica_msg(&mut self, msg: ReplicaMsg) {
        match msg {
            ReplicaMsg::Open { id, backlog } => self.on_link_open(id, backlog),
            ReplicaMsg::Request { id, bytes } => self.on_link_request(id, &bytes),
            ReplicaMsg::Close { id } => self.on_link_close(&id),
            ReplicaMsg::Bytes { id, bytes } => self.on_link_bytes(&id, bytes),
            ReplicaMsg::Ended { id } => self.on_link_ended(&id),
        }
    }

    // ---- the replica's side ----

    /// The replica's camera session connects: the link opens at once (the home shard answers
    /// its requests in order), or fails if the home shard has stopped.
    pub(super) fn open_link(&mut self, ck: CameraKey) {
        let link = self.relay.rng.next_u64();
        let Some(slot) = self.relay.cameras.get(ck) else { return };
        let Some(home) = slot.home else { return };
        let backlog = Arc::new(Backlog::default());
        let id = LinkId { path: slot.route.path.clone(), replica: self.id, link };
        let open = self.post_to(home, ReplicaMsg::Open { id, backlog: backlog.clone() });
        let now = Instant::now();
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if open {
            slot.link = Some(HomeLink { link, backlog });
            slot.shared.handle_connected(now);
        } else {
            slot.shared.handle_connect_failed(Some("the route's home shard has stopped".into()), now);
        }
    }

    /// The replica's camera session's requests, to the home route.
    pub(super) fn send_on_link(&mut self, ck: CameraKey, bytes: Vec<u8>) {
        let Some(slot) = self.relay.cameras.get(ck) else { return };
        let (Some(home), Some(link)) = (slot.home, slot.link.as_ref()) else { return };
        let id = LinkId { path: slot.route.path.clone(), replica: self.id, link: link.link };
        if !self.post_to(home, ReplicaMsg::Request { id, bytes }) {
            self.on_link_lost(ck);
        }
    }

    /// The replica's camera session let the link go (its TEARDOWN went first).
    pub(super) fn close_link(&mut self, ck: CameraKey) {
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        let (Some(home), Some(link)) = (slot.home, slot.link.take()) else { return };
        let id = LinkId { path: slot.route.path.clone(), replica: self.id, link: link.link };
        // A stopped home shard took the link with it.
        let _ = self.post_to(home, ReplicaMsg::Close { id });
    }

    fn on_link_lost(&mut self, ck: CameraKey) {
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if slot.link.take().is_some() {
            slot.shared.handle_camera_closed(Instant::now());
        }
    }

    /// The replica's slot the message is for: the route's at its path, on the same link.
    fn replica_slot(&self, id: &LinkId) -> Option<CameraKey> {
        let ck = self.relay.cameras.find(&id.path)?;
        let slot = self.relay.cameras.get(ck)?;
        (slot.home.is_some() && slot.link.as_ref().is_some_and(|l| l.link == id.link)).then_some(ck)
    }

    /// What the home route sent the replica since the last: one receive of its camera.
    fn on_link_bytes(&mut self, id: &LinkId, bytes: BytesMut) {
        let Some(ck) = self.replica_slot(id) else { return };
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if let Some(l) = slot.link.as_ref() {
            l.backlog.taken(bytes.len());
        }
        let now = Instant::now();
        slot.shared.handle_camera_owned(now, bytes);
        self.plan_receive(ck, None, now);
    }

    /// The home route ended the link: the replica's camera connection closed.
    fn on_link_ended(&mut self, id: &LinkId) {
        let Some(ck) = self.replica_slot(id) else { return };
        self.on_link_lost(ck);
        self.drive_camera(ck);
    }

    // ---- the home side ----

    /// A replica's camera session connects: the route (made if none) takes it as a viewer.
    fn on_link_open(&mut self, id: LinkId, backlog: Arc<Backlog>) {
        let route = self.relay.settings.routes.routes().iter().find(|r| r.path == id.path).cloned();
        let route = route.filter(|r| r.shared().is_some() && self.owner_of(r) == self.id);
        let ck = match route {
            Some(route) if self.relay.draining_until.is_none() => self.camera_for(&route),
            _ => None,
        };
        let Some(ck) = ck.filter(|ck| self.relay.cameras.get(*ck).is_some_and(|s| s.home.is_none())) else {
            // No such route here (removed by a reload racing the link), or this shard drains.
            let _ = self.post_to(id.replica, ReplicaMsg::Ended { id });
            return;
        };
        let now = Instant::now();
        let viewer = RouteViewer::Replica(id.replica);
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        // The replica reconnected: its older link is gone.
        slot.replicas.retain(|f| f.replica != id.replica);
        slot.shared.detach(viewer, now);
        let url = &slot.route.upstream_url;
        let map = UrlMap::new(url, url).ok();
        slot.replicas.push(ReplicaFeed { replica: id.replica, link: id.link, out: BytesMut::new(), backlog });
        slot.shared.attach(viewer, map, now, now);
        tracing::debug!(shard = self.id, route = %id.path, replica = id.replica, "replica attached");
        self.drive_camera(ck);
    }

    /// The home route's slot and feed the message is for.
    fn home_slot(&self, id: &LinkId) -> Option<CameraKey> {
        let ck = self.relay.cameras.find(&id.path)?;
        let slot = self.relay.cameras.get(ck)?;
        slot.replicas.iter().any(|f| f.replica == id.replica && f.link == id.link).then_some(ck)
    }

    /// The replica's requests: parsed here as a viewer's would be (whole messages only; the
    /// replica's camera session sends nothing else).
    fn on_link_request(&mut self, id: LinkId, bytes: &[u8]) {
        let Some(ck) = self.home_slot(&id) else { return };
        let limits = self.relay.settings.limits.message_limits();
        let now = Instant::now();
        let mut rest = bytes;
        while let Ok(Some((msg, used))) = crate::proto::rtsp::parse_message(rest, &limits) {
            if let Some(slot) = self.relay.cameras.get_mut(ck) {
                slot.shared.handle_request(RouteViewer::Replica(id.replica), msg, now);
            }
            match rest.get(used..) {
                Some(r) if used > 0 => rest = r,
                _ => break,
            }
        }
        self.drive_camera(ck);
    }

    fn on_link_close(&mut self, id: &LinkId) {
        let Some(ck) = self.home_slot(id) else { return };
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        slot.replicas.retain(|f| f.replica != id.replica);
        slot.shared.detach(RouteViewer::Replica(id.replica), Instant::now());
        self.drive_camera(ck);
    }

    /// The home route cut a replica (slow, its camera changed, the route closed): what it was
    /// sent goes first, then the end; the replica reconnects as from a lost camera.
    pub(super) fn end_replica(&mut self, ck: CameraKey, replica: u16) {
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        let Some(i) = slot.replicas.iter().position(|f| f.replica == replica) else { return };
        let mut feed = slot.replicas.swap_remove(i);
        let id = LinkId { path: slot.route.path.clone(), replica, link: feed.link };
        slot.shared.detach(RouteViewer::Replica(replica), Instant::now());
        if let Some(bytes) = feed.take() {
            let _ = self.post_to(replica, ReplicaMsg::Bytes { id: id.clone(), bytes });
        }
        let _ = self.post_to(replica, ReplicaMsg::Ended { id });
        self.metrics.replica_link_cut();
    }

    /// What the route sent each replica since the last: one message per replica shard.
    pub(super) fn post_to_replicas(&mut self, ck: CameraKey) {
        let Some(slot) = self.relay.cameras.get_mut(ck) else { return };
        if slot.replicas.is_empty() {
            return;
        }
        let path = slot.route.path.clone();
        let pending: Vec<(LinkId, BytesMut)> = slot
            .replicas
            .iter_mut()
            .filter_map(|f| Some((LinkId { path: path.clone(), replica: f.replica, link: f.link }, f.take()?)))
            .collect();
        let mut gone = Vec::new();
        for (id, bytes) in pending {
            let replica = id.replica;
            if !self.post_to(replica, ReplicaMsg::Bytes { id, bytes }) {
                gone.push(replica);
            }
        }
        if gone.is_empty() {
            return;
        }
        // A replica's shard stopped: its viewers went with it.
        let now = Instant::now();
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            for replica in gone {
                slot.replicas.retain(|f| f.replica != replica);
                slot.shared.detach(RouteViewer::Replica(replica), now);
                self.metrics.replica_link_cut();
            }
        }
        self.drive_camera(ck);
    }
}

//! A shared route's second camera connection: the probe of its primary while its fallback is
//! live. The route decides everything (when to probe, when its connection becomes the camera's:
//! `proto/shared_route/probe.rs`); this opens the probe's connection with the route's own link,
//! reports what happens to it, and says each switch of source (a log line at info,
//! `relay_route_camera_source`).

use super::*;
use crate::proto::camera_source::Source;
use crate::shard::camera_table::CameraKey;

impl Shard {
    /// Whether `idx` is the connection of `ck`'s probe.
    pub(in crate::shard) fn is_probe_conn(&self, ck: CameraKey, idx: usize) -> bool {
        self.relay.cameras.get(ck).is_some_and(|s| s.probe_conn == Some(idx))
    }

    /// The link that reaches `ck`'s `source` camera.
    pub(in crate::shard) fn camera_link_of(&self, ck: CameraKey, source: Source) -> UpstreamLink {
        let Some(slot) = self.relay.cameras.get(ck) else { return UpstreamLink::default() };
        match (source, &slot.route.fallback) {
            (Source::Fallback, Some(f)) => f.link.clone(),
            _ => slot.route.upstream_link.clone(),
        }
    }

    /// The live source changed: a line at info and `relay_route_camera_source`.
    pub(in crate::shard) fn camera_source_changed(&mut self, ck: CameraKey, source: Source) {
        let Some(slot) = self.relay.cameras.get(ck) else { return };
        let path = slot.route.path.clone();
        let url = match (source, &slot.route.fallback) {
            (Source::Fallback, Some(f)) => f.url.clone(),
            _ => slot.route.upstream_url.clone(),
        };
        tracing::info!(shard = self.id, route = %path, source = source.label(), camera = %url, "camera source switched");
        if self.relay.per_route_metrics {
            self.metrics.set_route_source(&path, source);
        }
    }

    /// Opens the probe's connection to the primary.
    pub(in crate::shard) fn connect_probe(&mut self, ck: CameraKey, addr: SocketAddr) {
        let link = self.camera_link_of(ck, Source::Primary);
        let idx = self.connect_camera_link(addr, Role::Camera(ck), &link);
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.probe_conn = idx;
            if idx.is_none() {
                slot.shared.handle_probe_connect_failed(Instant::now());
            }
        }
    }

    /// The probe's connect completed.
    pub(in crate::shard) fn on_probe_connect(&mut self, idx: usize, ck: CameraKey, res: i32) {
        let now = Instant::now();
        if res == 0 {
            self.io.arm_recv(idx);
            if self.camera_link_connected(idx) {
                if let Some(slot) = self.relay.cameras.get_mut(ck) {
                    slot.shared.handle_probe_connected(now);
                }
            }
        } else {
            self.close_conn(idx);
            if let Some(slot) = self.relay.cameras.get_mut(ck) {
                slot.probe_conn = None;
                slot.shared.handle_probe_connect_failed(now);
            }
        }
        self.drive_camera(ck);
    }

    /// The probe's TLS or tunnel link opened under RTSP.
    pub(in crate::shard) fn on_probe_link_open(&mut self, ck: CameraKey) {
        if let Some(slot) = self.relay.cameras.get_mut(ck) {
            slot.shared.handle_probe_connected(Instant::now());
        }
        self.drive_camera(ck);
    }

    /// The probe's connection closed or failed (`failed`: its link under RTSP, and how).
    pub(in crate::shard) fn on_probe_closed(&mut self, idx: usize, ck: CameraKey) {
        self.close_conn(idx);
        if let Some(slot) = self.relay.cameras.get_mut(ck).filter(|s| s.probe_conn == Some(idx)) {
            slot.probe_conn = None;
            slot.shared.handle_probe_closed(Instant::now());
        }
        self.drive_camera(ck);
    }
}

//! The control API's questions (`mailbox::ShardMsg::Query`), answered from the shard's own
//! tables between completion batches: a snapshot is built and sent on a one-shot channel, so
//! the API thread never waits on the shard's state and the shard never waits on the API.

use super::*;
use crate::shard::snapshot::{CameraSnapshot, Query, SessionSnapshot, SharedCamera, unix_secs};

impl Shard {
    pub(in crate::shard) fn answer_query(&mut self, query: Query) {
        match query {
            // The asker may have given up (its deadline passed): nothing to do then.
            Query::Cameras(reply) => drop(reply.send(self.camera_snapshots())),
            Query::Sessions(reply) => drop(reply.send(self.session_snapshots())),
            Query::EndSession { id, reply } => {
                let key = self
                    .relay
                    .sessions
                    .keys()
                    .into_iter()
                    .find(|k| self.relay.sessions.get(*k).is_some_and(|s| s.id == id));
                if let Some(key) = key {
                    self.end_session(key, SessionOutcome::Kicked);
                }
                let _ = reply.send(key.is_some());
            }
        }
    }

    fn camera_snapshots(&self) -> Vec<CameraSnapshot> {
        let mut by_route: HashMap<String, CameraSnapshot> = HashMap::new();
        for ck in self.relay.cameras.keys() {
            let Some(slot) = self.relay.cameras.get(ck) else { continue };
            let sessions = || slot.shared.viewers().filter_map(|v| self.relay.sessions.get(v.session()?));
            if slot.home.is_some() {
                // A replica: its viewers and bytes are the route's; its camera is the home's.
                if slot.shared.is_closed() {
                    continue;
                }
                let snap = by_route.entry(slot.route.path.clone()).or_insert_with(|| empty(&slot.route.path));
                snap.replica_viewers += sessions().count();
                snap.bytes_out += sessions().map(|s| s.to_viewer).sum::<u64>();
                continue;
            }
            // A route closing for a reload no longer answers for its path; one whose camera was
            // retired (nobody wants it) has none to show.
            let (false, Some(camera)) = (slot.shared.is_closed(), slot.shared.camera()) else { continue };
            let health = camera.health();
            let codecs = camera
                .presentation()
                .map(|p| {
                    p.tracks
                        .iter()
                        .filter_map(|t| {
                            let name = t.sdp.encoding.as_deref()?;
                            Some(match t.sdp.clock_rate {
                                Some(rate) => format!("{name}/{rate}"),
                                None => name.to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let bytes_out: u64 = sessions().map(|s| s.to_viewer).sum();
            let snap = by_route.entry(slot.route.path.clone()).or_insert_with(|| empty(&slot.route.path));
            snap.bytes_in = health.bytes_in;
            snap.bytes_out += bytes_out;
            snap.shared = Some(SharedCamera {
                state: health.state.label(),
                since_unix: unix_secs(health.since),
                last_error: health.last_failure.map(|(o, _)| o.describe().to_owned()),
                last_error_unix: health.last_failure.map(|(_, at)| unix_secs(at)),
                reconnects: health.reconnects,
                // Its replicas are counted by their own shards.
                viewers: sessions().count(),
                codecs,
                source: health.source.label(),
            });
        }
        for (_, s) in self.relay.sessions.iter() {
            if s.camera.is_some() {
                continue;
            }
            let Some(route) = s.tunnel.session().route() else { continue };
            if route.shared().is_some() {
                continue;
            }
            let snap = by_route.entry(route.path.clone()).or_insert_with(|| empty(&route.path));
            snap.passthrough_sessions += 1;
            snap.passthrough_connected += usize::from(s.upstream.is_some());
            snap.bytes_out += s.to_viewer;
            snap.bytes_in += s.to_viewer;
        }
        by_route.into_values().collect()
    }

    fn session_snapshots(&self) -> Vec<SessionSnapshot> {
        self.relay
            .sessions
            .iter()
            .map(|(_, s)| {
                let viewer = s.viewer.and_then(|v| self.io.conn(v));
                SessionSnapshot {
                    id: format!("{}-{}", self.id, s.id),
                    route: s.tunnel.session().route().map(|r| r.path.clone()),
                    viewer: s.peer.to_string(),
                    transport: match s.tunnel.kind() {
                        tunnel::Kind::Http => "tunnel",
                        tunnel::Kind::Plain => "plain",
                        tunnel::Kind::WebSocket => "websocket",
                    },
                    tls: viewer.is_some_and(|c| c.has_tls()),
                    user: s.tunnel.session().user().map(str::to_owned),
                    since_unix: unix_secs(s.started_at),
                    bytes_to_viewer: s.to_viewer,
                    bytes_to_camera: s.to_camera,
                    backlog_bytes: viewer.map_or(0, |c| c.send().queued()),
                }
            })
            .collect()
    }
}

fn empty(route: &str) -> CameraSnapshot {
    CameraSnapshot {
        route: route.to_owned(),
        shared: None,
        passthrough_sessions: 0,
        passthrough_connected: 0,
        bytes_out: 0,
        bytes_in: 0,
        replica_viewers: 0,
    }
}

//! The shared cameras of a shard, addressed by [`CameraKey`] (slab index and generation) and
//! found by route path: each one a [`CameraSession`] (the relay's own RTSP session with the
//! camera, all of its policy), the connection that carries it, the tunnels attached to its
//! route and, of those, the ones receiving its media.

use std::collections::HashMap;
use std::sync::Arc;

use super::conn::SessionKey;
use super::slab_table::SlabTable;
use crate::proto::camera_session::CameraSession;
use crate::proto::route::Route;
use crate::proto::shared_fanout::{Delivery, SharedFanout};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraKey {
    pub index: usize,
    pub generation: u32,
}

/// A viewer in a camera's fan-out, as the shell names it: its session and the connection its
/// media goes to (the tunnel GET, or the one RTSP connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutViewer {
    pub key: SessionKey,
    pub conn: usize,
}

pub struct CameraSlot {
    pub route: Arc<Route>,
    pub camera: CameraSession,
    /// The camera connection while one is open or opening.
    pub conn: Option<usize>,
    /// Tunnels of this route on this shard (the camera's demand).
    pub attached: Vec<SessionKey>,
    /// Of those, the ones playing, and what each receives.
    pub fanout: SharedFanout<FanoutViewer>,
    /// The fan-out's latest plan (kept for its room).
    pub plan: Vec<Delivery<FanoutViewer>>,
    /// Counted in `relay_cameras_active`.
    pub up: bool,
    /// The primary, probed while the route's fallback is live (`event_loop/camera_probe.rs`).
    pub probe: Option<ProbeSlot>,
}

/// A probe of a route's primary camera and its connection.
pub struct ProbeSlot {
    pub camera: CameraSession,
    pub conn: Option<usize>,
    /// The camera's `probe_epoch` it was made for.
    pub epoch: u64,
}

#[derive(Default)]
pub struct CameraTable {
    slab: SlabTable<CameraSlot>,
    by_path: HashMap<String, usize>,
}

impl CameraTable {
    pub fn new() -> CameraTable {
        CameraTable::default()
    }

    pub fn insert(&mut self, route: Arc<Route>, camera: CameraSession) -> CameraKey {
        let path = route.path.clone();
        let (index, generation) = self.slab.insert_with(|_, _| CameraSlot {
            route,
            camera,
            conn: None,
            attached: Vec::new(),
            fanout: SharedFanout::new(),
            plan: Vec::new(),
            up: false,
            probe: None,
        });
        self.by_path.insert(path, index);
        CameraKey { index, generation }
    }

    /// The camera of the route at `path`.
    pub fn find(&self, path: &str) -> Option<CameraKey> {
        let index = *self.by_path.get(path)?;
        Some(CameraKey { index, generation: self.slab.generation(index)? })
    }

    pub fn get(&self, key: CameraKey) -> Option<&CameraSlot> {
        self.slab.get(key.index, key.generation)
    }

    pub fn get_mut(&mut self, key: CameraKey) -> Option<&mut CameraSlot> {
        self.slab.get_mut(key.index, key.generation)
    }

    pub fn remove(&mut self, key: CameraKey) -> Option<CameraSlot> {
        self.get(key)?;
        self.unlist(key);
        self.slab.remove(key.index, key.generation)
    }

    /// A camera that keeps its slot but no longer answers to its path (its route changed): a
    /// new camera may take the path while this one closes.
    pub fn unlist(&mut self, key: CameraKey) {
        if let Some(path) = self.get(key).map(|c| c.route.path.clone()) {
            if self.by_path.get(&path) == Some(&key.index) {
                self.by_path.remove(&path);
            }
        }
    }

    pub fn keys(&self) -> Vec<CameraKey> {
        self.slab.keys().into_iter().map(|(index, generation)| CameraKey { index, generation }).collect()
    }
}

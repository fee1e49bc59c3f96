//! The shared routes of a shard, addressed by [`CameraKey`] (slab index and generation) and
//! found by route path: each one a [`SharedRoute`] (its camera session and viewers, all of
//! their policy) and the camera connection that carries it.

use std::collections::HashMap;
use std::sync::Arc;

use super::replica_link::{HomeLink, ReplicaFeed, RouteViewer};
use super::slab_table::SlabTable;
use crate::proto::route::Route;
use crate::proto::shared_fanout::Delivery;
use crate::proto::shared_route::SharedRoute;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraKey {
    pub index: usize,
    pub generation: u32,
}

pub struct CameraSlot {
    pub route: Arc<Route>,
    /// Viewers are named by their session's key, replicas by their shard.
    pub shared: SharedRoute<RouteViewer>,
    /// The camera connection while one is open or opening.
    pub conn: Option<usize>,
    /// The connection of the probe of the primary camera while the route's fallback is live
    /// (`event_loop/camera_probe.rs`).
    pub probe_conn: Option<usize>,
    /// The latest plan of a receive (kept for its room).
    pub plan: Vec<Delivery<RouteViewer>>,
    /// A replica of the route (its home is that shard): its "camera connection" is the link to
    /// the home route (`replica_link.rs`), open while `link` is.
    pub home: Option<u16>,
    pub link: Option<HomeLink>,
    /// On the home shard: the replicas attached to the route, one per shard at most.
    pub replicas: Vec<ReplicaFeed>,
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

    /// `home`: the route's home shard when this is a replica of it.
    pub fn insert(&mut self, route: Arc<Route>, shared: SharedRoute<RouteViewer>, home: Option<u16>) -> CameraKey {
        let path = route.path.clone();
        let (index, generation) = self.slab.insert_with(|_, _| CameraSlot {
            route,
            shared,
            conn: None,
            probe_conn: None,
            plan: Vec::new(),
            home,
            link: None,
            replicas: Vec::new(),
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

    /// A route that keeps its slot but no longer answers to its path (it changed): a new one
    /// may take the path while this one closes.
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

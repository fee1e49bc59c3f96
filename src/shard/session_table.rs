//! The tunnels of a shard, addressed by [`SessionKey`] (slab index and generation): each one a
//! [`Tunnel`] (all of its policy) and the indices of the connections that carry it.

use std::net::SocketAddr;
use std::time::Instant;

use super::conn::SessionKey;
use super::slab_table::SlabTable;
use crate::proto::tunnel::Tunnel;

/// The shell's side of a tunnel: its connections and what it logs; the policy is the tunnel's.
pub struct SessionSlot {
    /// Unique within the shard; logged as `shard-id`.
    pub id: u64,
    /// Boxed: a tunnel is ~2 KB, and the slab copies its entries whole each time it grows
    /// (page faults and copying in a setup burst); boxed, growth moves pointers.
    pub tunnel: Box<Tunnel>,
    pub cookie: Option<String>,
    /// The tunnel GET, or the plain RTSP connection.
    pub viewer: Option<usize>,
    pub post: Option<usize>,
    pub upstream: Option<usize>,
    pub peer: SocketAddr,
    pub started_at: Instant,
    pub to_viewer: u64,
    pub to_camera: u64,
    /// A shared route's camera this tunnel is attached to.
    pub camera: Option<super::camera_table::CameraKey>,
    /// The passthrough route this session counts towards in its route's health, and whether its
    /// camera connection is open (not just opening).
    pub health_route: Option<std::sync::Arc<crate::proto::route::Route>>,
    pub upstream_open: bool,
}

#[derive(Default)]
pub struct SessionTable {
    slab: SlabTable<SessionSlot>,
    next_id: u64,
}

impl SessionTable {
    pub fn new() -> SessionTable {
        SessionTable { slab: SlabTable::with_capacity(512), ..SessionTable::default() }
    }

    pub fn insert(&mut self, tunnel: Tunnel, peer: SocketAddr, started_at: Instant) -> (SessionKey, u64) {
        self.next_id += 1;
        let id = self.next_id;
        let (index, generation) = self.slab.insert_with(|_, _| SessionSlot {
            id,
            tunnel: Box::new(tunnel),
            cookie: None,
            viewer: None,
            post: None,
            upstream: None,
            peer,
            started_at,
            to_viewer: 0,
            to_camera: 0,
            camera: None,
            health_route: None,
            upstream_open: false,
        });
        (SessionKey { index, generation }, id)
    }

    pub fn get(&self, key: SessionKey) -> Option<&SessionSlot> {
        self.slab.get(key.index, key.generation)
    }

    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut SessionSlot> {
        self.slab.get_mut(key.index, key.generation)
    }

    pub fn remove(&mut self, key: SessionKey) -> Option<SessionSlot> {
        self.slab.remove(key.index, key.generation)
    }

    /// Every tunnel's key, to visit them while the table changes.
    pub fn keys(&self) -> Vec<SessionKey> {
        self.slab.keys().into_iter().map(|(index, generation)| SessionKey { index, generation }).collect()
    }

    pub fn iter(&self) -> slab::Iter<'_, SessionSlot> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> slab::IterMut<'_, SessionSlot> {
        self.slab.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

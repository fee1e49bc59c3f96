//! The in-process link between a hot shared route on its home shard and its replica on another
//! shard (`[runtime] hot_route_viewers`). The replica is a `SharedRoute` whose "camera" is this
//! link: its camera session's requests go to the home shard by mailbox, where the home route
//! answers them as one more viewer's ([`RouteViewer::Replica`]); what the home route sends that
//! viewer (answers, frames on the replica's channels) is gathered into one buffer per receive
//! and posted back, where the replica reads it as camera bytes. So the dialogue, the GOP cache,
//! the join replay and the fan-out are the route's own on both sides, and a receive crosses to
//! each remote shard once, by reference, whatever the number of viewers there.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;

use super::conn::SessionKey;

/// Who a shared route serves: a session of this shard, or the replica of the route on another
/// shard (one per shard at most).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteViewer {
    Session(SessionKey),
    Replica(u16),
}

impl RouteViewer {
    pub fn session(self) -> Option<SessionKey> {
        match self {
            RouteViewer::Session(k) => Some(k),
            RouteViewer::Replica(_) => None,
        }
    }
}

/// Bytes posted to a replica and not yet read by its shard: the link's queue, which the home
/// route's slow-viewer judgement weighs as it weighs a viewer's send queue.
#[derive(Debug, Default)]
pub struct Backlog(AtomicUsize);

impl Backlog {
    pub fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Read by the replica; never below zero.
    pub fn taken(&self, n: usize) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(n)));
    }
}

/// One link, as both ends name it: the route's path, the replica's shard and the link's number
/// (a replica that reconnects opens a new link; anything of an older one is ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkId {
    pub path: String,
    pub replica: u16,
    pub link: u64,
}

/// Messages of the link, through the shards' mailboxes.
#[derive(Debug)]
pub enum ReplicaMsg {
    /// Replica → home: attach me to the route (the camera session "connects").
    Open { id: LinkId, backlog: Arc<Backlog> },
    /// Replica → home: one or more RTSP requests of the replica's camera session.
    Request { id: LinkId, bytes: Vec<u8> },
    /// Replica → home: the replica's camera session let the link go (after its TEARDOWN).
    Close { id: LinkId },
    /// Home → replica: what the home route sent the replica viewer since the last, in order.
    Bytes { id: LinkId, bytes: BytesMut },
    /// Home → replica: the home route ended the replica viewer (slow, camera changed, route
    /// removed, shard stopping): the replica's camera connection is closed.
    Ended { id: LinkId },
}

/// The home side of a link: the replica viewer's pending bytes and its backlog.
#[derive(Debug)]
pub struct ReplicaFeed {
    pub replica: u16,
    pub link: u64,
    pub out: BytesMut,
    pub backlog: Arc<Backlog>,
}

impl ReplicaFeed {
    /// The pending bytes, counted into the backlog as they are posted.
    pub fn take(&mut self) -> Option<BytesMut> {
        if self.out.is_empty() {
            return None;
        }
        let bytes = self.out.split();
        self.backlog.add(bytes.len());
        Some(bytes)
    }

    /// What the home route's fan-out weighs for the replica: posted and pending bytes.
    pub fn queued(&self) -> usize {
        self.backlog.bytes().saturating_add(self.out.len())
    }
}

/// The replica side of a link while it is open.
#[derive(Debug)]
pub struct HomeLink {
    pub link: u64,
    pub backlog: Arc<Backlog>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_posts_what_is_pending_once_and_counts_it_until_read() {
        let backlog = Arc::new(Backlog::default());
        let mut feed = ReplicaFeed { replica: 1, link: 7, out: BytesMut::new(), backlog: backlog.clone() };
        assert!(feed.take().is_none(), "nothing pending: no message");
        feed.out.extend_from_slice(b"$\x00\x00\x04abcd");
        assert_eq!(feed.queued(), 8);
        let posted = feed.take().unwrap();
        assert_eq!((&posted[..], feed.out.len(), feed.queued()), (&b"$\x00\x00\x04abcd"[..], 0, 8));
        feed.out.extend_from_slice(b"RTSP");
        assert_eq!(feed.queued(), 12, "posted and pending both weigh");
        backlog.taken(8);
        assert_eq!(feed.queued(), 4);
        backlog.taken(100);
        assert_eq!(backlog.bytes(), 0, "never below zero");
    }
}

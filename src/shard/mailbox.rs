//! A shard's mailbox: other threads post messages (a POST to adopt, a parked POST to wake, a
//! reload, shutdown) and wake the shard's ring through an eventfd it polls. A stopped shard's
//! mailbox is closed: whatever is posted to it is handed back to the sender.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::eventfd::{EfdFlags, EventFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Settings;

/// A tunnel POST whose GET lives on the receiving shard: its socket and what was read after the head.
pub struct AdoptPost {
    pub fd: OwnedFd,
    pub peer: std::net::SocketAddr,
    pub session_key: u64,
    pub leftover: Vec<u8>,
    pub accepted_at: Instant,
    /// The POST's TLS state when it came over HTTPS.
    pub tls: Option<Box<super::tls_stream::TlsStream>>,
}

/// A viewer's first connection whose route's shared camera lives on the receiving shard: its
/// request head (plaintext) is handled there as if it had been read there.
pub struct AdoptViewer {
    pub fd: OwnedFd,
    pub peer: std::net::SocketAddr,
    pub head: Vec<u8>,
    pub accepted_at: Instant,
    pub tls: Option<Box<super::tls_stream::TlsStream>>,
    pub counted_ip: bool,
}

pub enum ShardMsg {
    AdoptPost(AdoptPost),
    AdoptViewer(AdoptViewer),
    /// A GET registered the cookie of a POST parked here.
    WakeParked {
        cookie: String,
    },
    /// A reloaded configuration (SIGHUP), already validated.
    Reload {
        settings: Arc<Settings>,
    },
    /// The external authorizer's answer for a session of this shard.
    AuthVerdict {
        session_key: u64,
        id: u64,
        verdict: crate::proto::external_auth::Verdict,
    },
    /// Stop accepting; end sessions after `grace`.
    Shutdown {
        grace: Duration,
    },

    /// The link between a hot shared route and its replica on another shard.
    Replica(super::replica_link::ReplicaMsg),

    /// A question of the control API (see `snapshot`): answered between completion batches.
    Query(super::snapshot::Query),

    /// Test hook only (`RTR_TEST_STOP_SHARD`, see `app`): the shard panics as a bug would.
    TestPanic,
}

pub struct Mailbox {
    queue: Mutex<Inbox>,
    eventfd: EventFd,
}

/// Messages not yet taken; once the shard has stopped, nothing more is accepted.
#[derive(Default)]
struct Inbox {
    msgs: Vec<ShardMsg>,
    closed: bool,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Mailbox> {
        let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Mailbox { queue: Mutex::new(Inbox::default()), eventfd })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Queues `msg` for the shard, or hands it back if the shard has stopped: a connection in
    /// it must then be answered by the sender, never left waiting in a mailbox nobody reads.
    pub fn post(&self, msg: ShardMsg) -> Result<(), ShardMsg> {
        let mut inbox = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.closed {
            return Err(msg);
        }
        inbox.msgs.push(msg);
        drop(inbox);
        // A full counter (EAGAIN) still leaves the shard woken: the result needs no handling.
        let _ = self.eventfd.write(1);
        Ok(())
    }

    /// Takes every queued message and resets the wake-up counter.
    pub fn drain(&self) -> Vec<ShardMsg> {
        // Non-blocking: nothing to read (EAGAIN) only means no wake-up was pending.
        let _ = self.eventfd.read();
        std::mem::take(&mut self.queue.lock().unwrap_or_else(|e| e.into_inner()).msgs)
    }

    /// The shard has stopped: later posts are handed back. Returns what was still queued.
    pub fn close(&self) -> Vec<ShardMsg> {
        let mut inbox = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        inbox.closed = true;
        std::mem::take(&mut inbox.msgs)
    }

    pub fn is_closed(&self) -> bool {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed
    }
}

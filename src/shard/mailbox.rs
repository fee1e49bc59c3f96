//! A shard's mailbox: other threads post messages (a POST to adopt, a parked POST to wake, a
//! reload, shutdown) and wake the shard's ring through an eventfd it polls.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

pub enum ShardMsg {
    AdoptPost(AdoptPost),
    /// A GET registered the cookie of a POST parked here.
    WakeParked {
        cookie: String,
    },
    /// A reloaded configuration (SIGHUP), already validated.
    Reload {
        settings: Arc<Settings>,
    },
    /// Stop accepting; end sessions after `grace`.
    Shutdown {
        grace: Duration,
    },
}

pub struct Mailbox {
    queue: Mutex<Vec<ShardMsg>>,
    eventfd: OwnedFd,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Mailbox> {
        // SAFETY: eventfd has no memory preconditions; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor this function owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Mailbox { queue: Mutex::new(Vec::new()), eventfd })
    }

    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub fn post(&self, msg: ShardMsg) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full counter (EAGAIN)
        // still leaves the shard woken, so the result needs no handling.
        unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes every queued message and resets the wake-up counter.
    pub fn drain(&self) -> Vec<ShardMsg> {
        let mut counter: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.fd(), (&mut counter as *mut u64).cast(), 8) };
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

//! Process-wide admission limits: concurrent sessions and connections per source IP.
//!
//! Shards consult these once per connection or session (never on the media path), so a shared
//! atomic and a lock-free map are enough; each refusal is counted by the caller.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct Admission {
    sessions: AtomicUsize,
    per_ip: papaya::HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a session slot if fewer than `max` are in use.
    pub fn try_open_session(&self, max: usize) -> bool {
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn close_session(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// Counts a connection from `ip` if fewer than `max` are open.
    pub fn try_open_connection(&self, ip: IpAddr, max: usize) -> bool {
        let map = self.per_ip.pin();
        matches!(
            map.compute(ip, |e| match e {
                None => papaya::Operation::Insert(1),
                Some((_, n)) if *n < max => papaya::Operation::Insert(n + 1),
                Some(_) => papaya::Operation::Abort(()),
            }),
            papaya::Compute::Inserted(..) | papaya::Compute::Updated { .. }
        )
    }

    pub fn close_connection(&self, ip: IpAddr) {
        let _ = self.per_ip.pin().compute(ip, |e| match e {
            Some((_, n)) if *n > 1 => papaya::Operation::Insert(n - 1),
            Some(_) => papaya::Operation::Remove,
            None => papaya::Operation::Abort(()),
        });
    }

    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip.pin().get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cap_holds_and_frees() {
        let a = Admission::new();
        assert!(a.try_open_session(2));
        assert!(a.try_open_session(2));
        assert!(!a.try_open_session(2));
        a.close_session();
        assert!(a.try_open_session(2));
        assert_eq!(a.sessions(), 2);
    }

    #[test]
    fn per_ip_cap_counts_each_address_separately() {
        let a = Admission::new();
        let x: IpAddr = "127.0.0.2".parse().unwrap();
        let y: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(a.try_open_connection(x, 1));
        assert!(!a.try_open_connection(x, 1));
        assert!(a.try_open_connection(y, 1));
        a.close_connection(x);
        assert_eq!(a.connections_from(x), 0);
        assert!(a.try_open_connection(x, 1));
    }
}

//! Process-wide admission limits: concurrent sessions, connections per source IP, and open
//! sockets against the descriptor budget (`proto::descriptor_budget`).
//!
//! Shards consult these once per connection or session (never on the media path), so a shared
//! atomic and a lock-free map are enough; each refusal is counted by the caller.

use std::net::IpAddr;

use crate::proto::session::AuthGate;
use crate::proto::viewer_caps::{CapHit, ViewerCaps};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Admission {
    sessions: AtomicUsize,
    per_ip: papaya::HashMap<IpAddr, usize>,
    /// Sockets the shards hold (accepted and camera ones), as each last published it.
    sockets: AtomicUsize,
    /// The soft `RLIMIT_NOFILE` when the relay started (what the default socket cap derives from).
    open_file_limit: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            sessions: AtomicUsize::new(0),
            per_ip: papaya::HashMap::new(),
            sockets: AtomicUsize::new(0),
            open_file_limit: soft_open_file_limit(),
        }
    }
}

/// The soft `RLIMIT_NOFILE`; unlimited (or unreadable) reads as `usize::MAX`.
fn soft_open_file_limit() -> usize {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft != RLIM_INFINITY => usize::try_from(soft).unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
}

impl Admission {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cap on open sockets at which accepting refuses (`[limits] max_connections`, or
    /// derived from the open-file limit and the cameras still to open when that is 0).
    pub fn socket_cap(&self, configured: usize, cameras: crate::proto::descriptor_budget::CameraSockets) -> usize {
        crate::proto::descriptor_budget::connection_cap(configured, self.open_file_limit, cameras)
    }

    /// A shard's socket count moved from `was` to `now` (it publishes its own count, read by
    /// every shard's accept).
    pub fn sockets_moved(&self, was: usize, now: usize) {
        if now > was {
            self.sockets.fetch_add(now - was, Ordering::AcqRel);
        } else if was > now {
            let _ =
                self.sockets.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(was - now)));
        }
    }

    /// Sockets the shards hold, as last published.
    pub fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Acquire)
    }

    /// Takes a session slot if fewer than `max` are in use.
    pub fn try_open_session(&self, max: usize) -> bool {
        self.sessions.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    pub fn close_session(&self) {
        let _ = self.sessions.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
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

    #[test]
    fn socket_counts_add_up_across_shards_and_never_wrap() {
        let a = Admission::new();
        a.sockets_moved(0, 5);
        a.sockets_moved(0, 3);
        a.sockets_moved(5, 2);
        assert_eq!(a.sockets(), 5);
        a.sockets_moved(100, 0);
        assert_eq!(a.sockets(), 0);
        assert_eq!(a.socket_cap(7, crate::proto::descriptor_budget::CameraSockets::PerTunnel), 7);
    }
}

/// Failed viewer authentications per source address in a sliding window; an address over the
/// limit has its new connections refused until its window passes.
#[derive(Default)]
pub struct AuthFailureLimiter {
    /// Address → (failures in the window, window start).
    failures: papaya::HashMap<IpAddr, (u32, std::time::Instant)>,
}

impl AuthFailureLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, ip: IpAddr, now: std::time::Instant, window: std::time::Duration) {
        let _ = self.failures.pin().compute(ip, |e| match e {
            Some((_, (n, start))) if now.saturating_duration_since(*start) < window => {
                papaya::Operation::Insert::<_, ()>((n + 1, *start))
            }
            _ => papaya::Operation::Insert((1, now)),
        });
    }

    pub fn is_blocked(&self, ip: IpAddr, now: std::time::Instant, max: u32, window: std::time::Duration) -> bool {
        self.failures
            .pin()
            .get(&ip)
            .is_some_and(|(n, start)| *n >= max && now.saturating_duration_since(*start) < window)
    }

    /// The gate sessions consult on every request that needs credentials.
    pub fn gate(self: &std::sync::Arc<Self>, max: u32, window: std::time::Duration) -> std::sync::Arc<dyn AuthGate> {
        std::sync::Arc::new(LimiterGate { limiter: self.clone(), max, window })
    }

    /// Forgets windows that have passed (called now and then so the map stays small).
    pub fn prune(&self, now: std::time::Instant, window: std::time::Duration) {
        self.failures.pin().retain(|_, (_, start)| now.saturating_duration_since(*start) < window);
    }
}

/// [`AuthFailureLimiter`] with the configured limit and window, as the protocol core sees it.
struct LimiterGate {
    limiter: std::sync::Arc<AuthFailureLimiter>,
    max: u32,
    window: std::time::Duration,
}

impl AuthGate for LimiterGate {
    fn is_blocked(&self, ip: IpAddr, now: std::time::Instant) -> bool {
        self.limiter.is_blocked(ip, now, self.max, self.window)
    }

    fn record_failure(&self, ip: IpAddr, now: std::time::Instant) {
        self.limiter.record(ip, now, self.window);
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let l = AuthFailureLimiter::new();
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(!l.is_blocked(ip, t0, 3, w));
            l.record(ip, t0, w);
        }
        assert!(l.is_blocked(ip, t0 + Duration::from_secs(1), 3, w));
        assert!(!l.is_blocked(other, t0, 3, w));
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(61), 3, w));
        l.prune(t0 + Duration::from_secs(61), w);
        l.record(ip, t0 + Duration::from_secs(61), w);
        assert!(!l.is_blocked(ip, t0 + Duration::from_secs(62), 3, w), "a new window starts from one");
    }
}

/// The viewer caps, process-wide: viewers per route, sessions per user and per address. The
/// per-user and per-address maxima follow reloads (0: no cap); a route's own cap comes with
/// each question.
#[derive(Default)]
pub struct ViewerCapTable {
    per_route: papaya::HashMap<String, usize>,
    per_user: papaya::HashMap<String, usize>,
    per_ip: papaya::HashMap<IpAddr, usize>,
    max_per_user: AtomicUsize,
    max_per_ip: AtomicUsize,
}

/// Takes one from `key`'s count if it is under `max` (0: no cap).
fn take<K: std::hash::Hash + Eq + Clone + Send + Sync>(map: &papaya::HashMap<K, usize>, key: &K, max: usize) -> bool {
    matches!(
        map.pin().compute(key.clone(), |e| match e {
            None => papaya::Operation::Insert(1),
            Some((_, n)) if max == 0 || *n < max => papaya::Operation::Insert(n + 1),
            Some(_) => papaya::Operation::Abort(()),
        }),
        papaya::Compute::Inserted(..) | papaya::Compute::Updated { .. }
    )
}

fn give_back<K: std::hash::Hash + Eq + Clone + Send + Sync>(map: &papaya::HashMap<K, usize>, key: &K) {
    let _ = map.pin().compute(key.clone(), |e| match e {
        Some((_, n)) if *n > 1 => papaya::Operation::Insert(n - 1),
        Some(_) => papaya::Operation::Remove,
        None => papaya::Operation::Abort(()),
    });
}

impl ViewerCapTable {
    pub fn new(max_per_user: usize, max_per_ip: usize) -> Self {
        let t = Self::default();
        t.set_limits(max_per_user, max_per_ip);
        t
    }

    /// The route's admitted viewers now, on every shard (where a new one is placed).
    pub fn viewers_of(&self, route: &str) -> usize {
        self.per_route.pin().get(route).copied().unwrap_or(0)
    }

    pub fn set_limits(&self, max_per_user: usize, max_per_ip: usize) {
        self.max_per_user.store(max_per_user, Ordering::Release);
        self.max_per_ip.store(max_per_ip, Ordering::Release);
    }
}

impl ViewerCaps for ViewerCapTable {
    fn try_take(&self, route: &str, max_viewers: Option<usize>, user: Option<&str>, ip: IpAddr) -> Result<(), CapHit> {
        let route = route.to_owned();
        if !take(&self.per_route, &route, max_viewers.unwrap_or(0)) {
            return Err(CapHit::Route);
        }
        let user = user.map(str::to_owned);
        if let Some(u) = &user {
            if !take(&self.per_user, u, self.max_per_user.load(Ordering::Acquire)) {
                give_back(&self.per_route, &route);
                return Err(CapHit::User);
            }
        }
        if !take(&self.per_ip, &ip, self.max_per_ip.load(Ordering::Acquire)) {
            give_back(&self.per_route, &route);
            if let Some(u) = &user {
                give_back(&self.per_user, u);
            }
            return Err(CapHit::Address);
        }
        Ok(())
    }

    fn release(&self, route: &str, user: Option<&str>, ip: IpAddr) {
        give_back(&self.per_route, &route.to_owned());
        if let Some(u) = user {
            give_back(&self.per_user, &u.to_owned());
        }
        give_back(&self.per_ip, &ip);
    }
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn each_cap_holds_at_its_limit_and_frees_on_release() {
        let t = ViewerCapTable::new(2, 3);
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        // Route cap 1.
        assert_eq!(t.try_take("/a", Some(1), None, ip), Ok(()));
        assert_eq!(t.try_take("/a", Some(1), None, other), Err(CapHit::Route));
        // User cap 2 (the route refused above took nothing).
        assert_eq!(t.try_take("/b", None, Some("u"), ip), Ok(()));
        assert_eq!(t.try_take("/c", None, Some("u"), other), Ok(()));
        assert_eq!(t.try_take("/d", None, Some("u"), other), Err(CapHit::User));
        // Address cap 3: ip holds /a and /b.
        assert_eq!(t.try_take("/e", None, None, ip), Ok(()));
        assert_eq!(t.try_take("/f", None, Some("v"), ip), Err(CapHit::Address));
        // The refused user's place was given back.
        assert_eq!(t.try_take("/f", None, Some("v"), other), Ok(()));
        t.release("/a", None, ip);
        assert_eq!(t.try_take("/a", Some(1), None, other), Ok(()));
        // 0: no cap.
        let free = ViewerCapTable::new(0, 0);
        for _ in 0..100 {
            assert_eq!(free.try_take("/a", None, Some("u"), ip), Ok(()));
        }
    }
}

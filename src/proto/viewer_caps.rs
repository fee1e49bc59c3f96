//! Caps on who watches at once: viewers per route (`max_viewers`, answered 453), sessions per
//! user and per address (`[auth] max_sessions_per_user`, `max_sessions_per_ip`). The counts are
//! process-wide (viewers of one route may sit on every shard), so the core asks through a
//! trait and holds the place it got as a [`CapTicket`] that gives it back when dropped: a
//! session that ends any way at all frees its place.

use std::net::IpAddr;
use std::sync::Arc;

/// Which cap refused a viewer (`relay_rejections_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    Route,
    User,
    Address,
}

/// The process-wide counts.
pub trait ViewerCaps: Send + Sync {
    /// Takes a place for one session of `user` (if known) from `ip` on `route`, unless one of
    /// the caps is reached (`max_viewers`: the route's own, `None` for no cap).
    fn try_take(&self, route: &str, max_viewers: Option<usize>, user: Option<&str>, ip: IpAddr) -> Result<(), CapHit>;
    fn release(&self, route: &str, user: Option<&str>, ip: IpAddr);
}

impl std::fmt::Debug for dyn ViewerCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewerCaps")
    }
}

/// No caps at all (tests, fuzzing, tools).
#[derive(Debug, Default)]
pub struct NoCaps;

impl ViewerCaps for NoCaps {
    fn try_take(&self, _: &str, _: Option<usize>, _: Option<&str>, _: IpAddr) -> Result<(), CapHit> {
        Ok(())
    }
    fn release(&self, _: &str, _: Option<&str>, _: IpAddr) {}
}

/// A place taken; given back when dropped.
pub struct CapTicket {
    caps: Arc<dyn ViewerCaps>,
    route: String,
    user: Option<String>,
    ip: IpAddr,
}

impl CapTicket {
    pub fn take(
        caps: &Arc<dyn ViewerCaps>,
        route: &str,
        max_viewers: Option<usize>,
        user: Option<&str>,
        ip: IpAddr,
    ) -> Result<CapTicket, CapHit> {
        caps.try_take(route, max_viewers, user, ip)?;
        Ok(CapTicket { caps: caps.clone(), route: route.to_owned(), user: user.map(str::to_owned), ip })
    }
}

impl Drop for CapTicket {
    fn drop(&mut self) {
        self.caps.release(&self.route, self.user.as_deref(), self.ip);
    }
}

impl std::fmt::Debug for CapTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapTicket").field("route", &self.route).finish_non_exhaustive()
    }
}

//! What a connection's greeting consults, as one shard sees it: the process-wide counters and
//! cookie table, the listener's address list, and which shard owns a shared route.

use std::net::IpAddr;
use std::time::Instant;

use super::{Listener, Shared};
use crate::config::Settings;
use crate::proto::greeting::{Gatekeeper, Home};
use crate::proto::origin::Origin;
use crate::proto::route::Route;
use crate::proto::route_placement::{Placement, place_viewer};

/// What a greeting consults, as this shard sees it.
pub(super) struct ShardGate<'a> {
    pub id: u16,
    pub shared: &'a Shared,
    pub listeners: &'a [Option<Listener>],
    pub settings: &'a Settings,
}

impl Gatekeeper for ShardGate<'_> {
    fn listener_permits(&self, listener: usize, ip: IpAddr) -> bool {
        self.listeners.get(listener).and_then(Option::as_ref).is_none_or(|l| l.acl.permits(ip))
    }

    fn login_blocked(&self, ip: IpAddr) -> bool {
        let auth = &self.settings.auth;
        self.shared.auth_failures.is_blocked(
            ip,
            Instant::now(),
            auth.max_failures_per_ip,
            self.settings.core.failure_window,
        )
    }

    fn open_connection(&mut self, ip: IpAddr) -> bool {
        self.shared.admission.try_open_connection(ip, self.settings.limits.max_connections_per_ip)
    }

    fn open_session(&mut self) -> bool {
        self.shared.admission.try_open_session(self.settings.limits.max_sessions)
    }

    fn cookie_in_use(&self, cookie: &str) -> bool {
        self.shared.cookies.lookup_get(cookie).is_some()
    }

    fn home_of(&self, route: &Route) -> Home {
        let owner = crate::proto::route::home_shard(&route.path, self.shared.mailboxes.len());
        let viewers = self.shared.viewer_caps.viewers_of(&route.path);
        let hot = self.settings.runtime.hot_route_viewers;
        if place_viewer(self.id, owner, viewers, hot) == Placement::Here {
            Home::Here
        } else if self.shared.mailboxes.get(owner as usize).is_none_or(|m| m.is_closed()) {
            Home::Stopped
        } else {
            Home::Shard(owner)
        }
    }

    fn allowed_origins(&self) -> Vec<Origin> {
        self.settings.web.origins()
    }
}

//! The process-wide cookie table that pairs a tunnel's GET with its POST, across shards.
//!
//! The GET registers its cookie with the shard and session that own it; a POST looks the cookie
//! up and, if the GET lives on another shard, is handed over to that shard. A POST that arrives
//! first (two connections, two shards, a race) parks an entry so the GET can wake it. The table
//! is lock-free (`papaya`) and touched once or twice per connection, never on the media path.

/// Where a tunnel session lives: its shard and its key in that shard's session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRef {
    pub shard: u16,
    pub key: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Get(SessionRef),
    /// A POST waiting for its GET on this shard.
    ParkedPost {
        shard: u16,
    },
}

/// Outcome of registering a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetRegistration {
    /// Registered; if a POST was parked for this cookie, the shard holding it must be woken.
    Registered { wake_parked_on: Option<u16> },
    /// The cookie already belongs to a live tunnel: refuse the newcomer, leave the tunnel alone.
    Duplicate,
}

/// Outcome of a POST looking for its GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostLookup {
    /// The GET is live: bind to this session.
    Found(SessionRef),
    /// No GET yet: an entry now marks this POST as parked on the calling shard.
    Parked,
    /// Another POST is already parked with this cookie: refuse this one.
    AlreadyParked,
}

#[derive(Default)]
pub struct CookieTable {
    map: papaya::HashMap<Box<str>, Entry>,
}

impl CookieTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register_get(&self, cookie: &str, session: SessionRef) -> GetRegistration {
        let map = self.map.pin();
        match map.compute(cookie.into(), |existing| match existing {
            None => papaya::Operation::Insert(Entry::Get(session)),
            Some((_, Entry::ParkedPost { .. })) => papaya::Operation::Insert(Entry::Get(session)),
            Some((_, Entry::Get(_))) => papaya::Operation::Abort(()),
        }) {
            papaya::Compute::Inserted(..) => GetRegistration::Registered { wake_parked_on: None },
            papaya::Compute::Updated { old: (_, Entry::ParkedPost { shard }), .. } => {
                GetRegistration::Registered { wake_parked_on: Some(*shard) }
            }
            papaya::Compute::Updated { .. } => GetRegistration::Registered { wake_parked_on: None },
            papaya::Compute::Aborted(()) | papaya::Compute::Removed(..) => GetRegistration::Duplicate,
        }
    }

    /// Looks a POST's cookie up; parks it (on `shard`) if no GET holds the cookie yet.
    /// A parked POST calls this again when woken; its own parked entry does not count.
    pub fn post_arrived(&self, cookie: &str, shard: u16) -> PostLookup {
        let map = self.map.pin();
        // The usual case, the GET registered first, needs no owned key (compute takes one: an
        // allocation per setup for nothing).
        if let Some(Entry::Get(s)) = map.get(cookie) {
            return PostLookup::Found(*s);
        }
        match map.compute(cookie.into(), |existing| match existing {
            None => papaya::Operation::Insert(Entry::ParkedPost { shard }),
            Some((_, Entry::Get(s))) => papaya::Operation::Abort(PostLookup::Found(*s)),
            Some((_, Entry::ParkedPost { shard: s })) if *s == shard => papaya::Operation::Abort(PostLookup::Parked),
            Some((_, Entry::ParkedPost { .. })) => papaya::Operation::Abort(PostLookup::AlreadyParked),
        }) {
            papaya::Compute::Aborted(found) => found,
            _ => PostLookup::Parked,
        }
    }

    /// Drops a parked POST's entry (it timed out or closed), unless a GET has taken the cookie.
    pub fn unpark(&self, cookie: &str, shard: u16) {
        let _ = self.map.pin().remove_if(cookie, |_, e| *e == Entry::ParkedPost { shard });
    }

    /// Drops a GET's entry when its session ends, unless the cookie now names another session.
    pub fn remove_get(&self, cookie: &str, session: SessionRef) {
        let _ = self.map.pin().remove_if(cookie, |_, e| *e == Entry::Get(session));
    }

    /// Drops every entry on `shard` (it stopped): a POST for one of its GETs is then parked and
    /// times out like any POST without a GET, instead of being handed to a shard that is gone.
    pub fn forget_shard(&self, shard: u16) {
        self.map.pin().retain(|_, e| match e {
            Entry::Get(s) => s.shard != shard,
            Entry::ParkedPost { shard: s } => *s != shard,
        });
    }

    pub fn lookup_get(&self, cookie: &str) -> Option<SessionRef> {
        match self.map.pin().get(cookie) {
            Some(Entry::Get(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SessionRef = SessionRef { shard: 0, key: 7 };
    const B: SessionRef = SessionRef { shard: 1, key: 9 };

    #[test]
    fn get_then_post_pairs() {
        let t = CookieTable::new();
        assert_eq!(t.register_get("k", A), GetRegistration::Registered { wake_parked_on: None });
        assert_eq!(t.post_arrived("k", 1), PostLookup::Found(A));
        assert_eq!(t.post_arrived("k", 0), PostLookup::Found(A), "a reopened POST rebinds");
    }

    #[test]
    fn duplicate_get_is_refused_and_leaves_the_tunnel() {
        let t = CookieTable::new();
        t.register_get("k", A);
        assert_eq!(t.register_get("k", B), GetRegistration::Duplicate);
        assert_eq!(t.lookup_get("k"), Some(A));
    }

    #[test]
    fn a_stopped_shard_s_entries_are_forgotten_and_others_kept() {
        let t = CookieTable::new();
        t.register_get("on-a", A);
        t.register_get("on-b", B);
        assert_eq!(t.post_arrived("parked-on-b", 1), PostLookup::Parked);
        t.forget_shard(1);
        assert_eq!(t.lookup_get("on-a"), Some(A));
        assert_eq!(t.lookup_get("on-b"), None);
        assert_eq!(t.post_arrived("on-b", 0), PostLookup::Parked, "no longer handed to shard 1");
        assert_eq!(t.post_arrived("parked-on-b", 0), PostLookup::Parked);
    }

    #[test]
    fn post_before_get_parks_and_is_woken() {
        let t = CookieTable::new();
        assert_eq!(t.post_arrived("k", 1), PostLookup::Parked);
        assert_eq!(t.post_arrived("k", 1), PostLookup::Parked, "re-check while parked");
        assert_eq!(t.post_arrived("k", 0), PostLookup::AlreadyParked);
        assert_eq!(t.register_get("k", A), GetRegistration::Registered { wake_parked_on: Some(1) });
        assert_eq!(t.post_arrived("k", 1), PostLookup::Found(A));
    }

    #[test]
    fn removal_only_touches_its_own_entry() {
        let t = CookieTable::new();
        t.register_get("k", A);
        t.remove_get("k", B);
        t.unpark("k", 0);
        assert_eq!(t.lookup_get("k"), Some(A));
        t.remove_get("k", A);
        assert!(t.is_empty());
        t.post_arrived("p", 1);
        t.unpark("p", 1);
        assert!(t.is_empty());
    }

    #[test]
    fn concurrent_gets_with_one_cookie_register_exactly_once() {
        let t = std::sync::Arc::new(CookieTable::new());
        let wins: usize = (0..8u16)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|n| {
                            let s = SessionRef { shard: i, key: *n };
                            t.register_get(&format!("c{n}"), s) != GetRegistration::Duplicate
                        })
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(wins, 1000);
    }
}

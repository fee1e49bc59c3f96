//! Where a new viewer of a shared route is served: on the route's home shard (where its camera
//! connection lives), or, once the route is hot, on the shard that accepted it, by that shard's
//! replica of the route (fed from the home shard one shared buffer per receive). A quiet route
//! keeps every viewer beside its camera (no copy at all); a hot one spreads over every core.

/// Where a viewer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Served where it was accepted: it is the home shard, or the route is hot (a replica).
    Here,
    /// Moved to the home shard, as every viewer of a quiet route.
    Home,
}

/// `here`: the shard that accepted the viewer; `home`: the route's (`route::home_shard`);
/// `viewers`: the route's viewers now, process-wide; `hot_route_viewers`: `[runtime]
/// hot_route_viewers` (0: never replicate).
pub fn place_viewer(here: u16, home: u16, viewers: usize, hot_route_viewers: usize) -> Placement {
    if here == home || (hot_route_viewers > 0 && viewers >= hot_route_viewers) {
        Placement::Here
    } else {
        Placement::Home
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_route_gathers_its_viewers_at_home() {
        assert_eq!(place_viewer(1, 0, 0, 100), Placement::Home);
        assert_eq!(place_viewer(1, 0, 99, 100), Placement::Home);
        assert_eq!(place_viewer(0, 0, 0, 100), Placement::Here, "the home shard keeps its own");
    }

    #[test]
    fn a_hot_route_is_served_where_its_viewer_came() {
        assert_eq!(place_viewer(1, 0, 100, 100), Placement::Here);
        assert_eq!(place_viewer(1, 0, 5_000, 100), Placement::Here);
        assert_eq!(place_viewer(0, 0, 5_000, 100), Placement::Here);
    }

    #[test]
    fn zero_never_replicates() {
        assert_eq!(place_viewer(1, 0, 0, 0), Placement::Home);
        assert_eq!(place_viewer(1, 0, usize::MAX, 0), Placement::Home);
    }
}

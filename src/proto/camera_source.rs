//! Which of a shared route's cameras is live: its `upstream` (the primary) or its `fallback`.
//!
//! The rule (issue 26):
//! - The primary's connection fails in any way (cannot be reached, refuses, stops sending past
//!   `camera_media_timeout_ms`, closes) and the route has a fallback: the route switches to the
//!   fallback at once, without the backoff wait. Viewers stay attached; the camera session
//!   carries them over at the fallback's first keyframe as after any reconnect (RTP continuity).
//! - While the fallback is live, the primary is probed in the background: a connection of its
//!   own that plays but feeds nobody, retried with the reconnect backoff while it fails. The
//!   route returns to the primary at the probe's first keyframe (so viewers go from one
//!   keyframe to another), never merely because the primary accepts a connection.
//! - The fallback failing keeps the route on the fallback, retried with the backoff, while the
//!   probe goes on: whichever answers first with pictures is what viewers see.
//! - A camera left by the relay (nobody watches, closed, a reload) starts again from the
//!   primary; a reload that removes the fallback while it is live goes back to the primary.
//!
//! This value only decides; `CameraSession` (its `fallback` part) carries it out.

/// One of a route's cameras.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Primary,
    Fallback,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Primary, Source::Fallback];

    /// The label of `relay_route_camera_source{source}` and of the API's `source`.
    pub fn label(self) -> &'static str {
        match self {
            Source::Primary => "primary",
            Source::Fallback => "fallback",
        }
    }
}

/// What follows a failure of the live source's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Retry the same source after the backoff.
    Retry,
    /// The route switched to the fallback: connect to it now.
    SwitchedToFallback,
}

/// See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePolicy {
    has_fallback: bool,
    live: Source,
}

impl SourcePolicy {
    pub fn new(has_fallback: bool) -> Self {
        SourcePolicy { has_fallback, live: Source::Primary }
    }

    /// The source viewers see (or will see once it plays).
    pub fn live(&self) -> Source {
        self.live
    }

    pub fn has_fallback(&self) -> bool {
        self.has_fallback
    }

    /// The live source's connection failed.
    pub fn on_failure(&mut self) -> AfterFailure {
        match self.live {
            Source::Primary if self.has_fallback => {
                self.live = Source::Fallback;
                AfterFailure::SwitchedToFallback
            }
            _ => AfterFailure::Retry,
        }
    }

    /// Whether the primary should be probed in the background now: the fallback is live and
    /// the camera is wanted (`camera_open`: the camera session is not idle or stopped).
    pub fn wants_probe(&self, camera_open: bool) -> bool {
        camera_open && self.live == Source::Fallback
    }

    /// The probe of the primary delivered its first keyframe: whether the route returns to the
    /// primary now (it does whenever the fallback is live).
    pub fn on_probe_keyframe(&mut self) -> bool {
        if self.live == Source::Fallback {
            self.live = Source::Primary;
            return true;
        }
        false
    }

    /// The relay left the camera (nobody watches, closed): the next start is on the primary.
    pub fn reset(&mut self) {
        self.live = Source::Primary;
    }

    /// A reload: whether the route has a fallback now. Returns whether the live source went
    /// away (the fallback was live and is no more): the camera must be reopened on the primary.
    pub fn reconfigure(&mut self, has_fallback: bool) -> bool {
        self.has_fallback = has_fallback;
        if !has_fallback && self.live == Source::Fallback {
            self.live = Source::Primary;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_primary_failure_switches_to_the_fallback_and_its_keyframe_brings_it_back() {
        let mut p = SourcePolicy::new(true);
        assert_eq!(p.live(), Source::Primary);
        assert!(!p.wants_probe(true), "nothing to probe while the primary is live");
        assert_eq!(p.on_failure(), AfterFailure::SwitchedToFallback);
        assert_eq!(p.live(), Source::Fallback);
        assert!(p.wants_probe(true) && !p.wants_probe(false));
        // The fallback failing too: it is retried, the probe goes on.
        assert_eq!(p.on_failure(), AfterFailure::Retry);
        assert_eq!(p.live(), Source::Fallback);
        assert!(p.on_probe_keyframe());
        assert_eq!(p.live(), Source::Primary);
        assert!(!p.on_probe_keyframe(), "a stale probe changes nothing");
    }

    #[test]
    fn without_a_fallback_a_failure_is_retried_as_before() {
        let mut p = SourcePolicy::new(false);
        assert_eq!(p.on_failure(), AfterFailure::Retry);
        assert_eq!(p.live(), Source::Primary);
        assert!(!p.wants_probe(true));
    }

    #[test]
    fn a_reload_removing_the_live_fallback_goes_back_to_the_primary() {
        let mut p = SourcePolicy::new(true);
        p.on_failure();
        assert!(!p.reconfigure(true), "the same fallback: nothing to reopen");
        assert!(p.reconfigure(false));
        assert_eq!(p.live(), Source::Primary);
        assert_eq!(p.on_failure(), AfterFailure::Retry);
    }

    #[derive(Debug, Clone, Copy)]
    enum Ev {
        Failure,
        ProbeKeyframe,
        Reset,
        Reload(bool),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![Just(Ev::Failure), Just(Ev::ProbeKeyframe), Just(Ev::Reset), any::<bool>().prop_map(Ev::Reload),]
    }

    proptest! {
        /// Whatever happens: the fallback is live only on a route that has one; the route
        /// leaves the primary only by a failure of the primary, and comes back only by the
        /// probe's keyframe, a reset or a reload that removed the fallback; a probe is wanted
        /// exactly while the fallback is live.
        #[test]
        fn the_live_source_moves_only_by_the_rule(start in any::<bool>(), evs in proptest::collection::vec(ev(), 0..64)) {
            let mut p = SourcePolicy::new(start);
            for e in evs {
                let before = p;
                match e {
                    Ev::Failure => {
                        let after = p.on_failure();
                        let switched = before.live == Source::Primary && before.has_fallback;
                        prop_assert_eq!(after == AfterFailure::SwitchedToFallback, switched);
                    }
                    Ev::ProbeKeyframe => {
                        prop_assert_eq!(p.on_probe_keyframe(), before.live == Source::Fallback);
                    }
                    Ev::Reset => p.reset(),
                    Ev::Reload(has) => {
                        let reopen = p.reconfigure(has);
                        prop_assert_eq!(reopen, before.live == Source::Fallback && !has);
                    }
                }
                if p.live == Source::Fallback {
                    prop_assert!(p.has_fallback);
                }
                if before.live == Source::Primary && p.live == Source::Fallback {
                    prop_assert!(matches!(e, Ev::Failure));
                }
                if before.live == Source::Fallback && p.live == Source::Primary {
                    prop_assert!(matches!(e, Ev::ProbeKeyframe | Ev::Reset | Ev::Reload(false)));
                }
                prop_assert_eq!(p.wants_probe(true), p.live == Source::Fallback);
                prop_assert!(!p.wants_probe(false));
            }
        }
    }
}

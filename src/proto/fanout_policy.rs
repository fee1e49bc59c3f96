//! What to do with a slow viewer of a shared camera, as a pure value.
//!
//! With one camera feeding many viewers, TCP backpressure is wrong: the camera connection would
//! slow to the pace of the slowest viewer and every other viewer would stall with it. So the
//! camera is always read at its own pace and each viewer is judged alone, per frame, from what
//! the relay has queued to it but not yet sent, weighed as memory ([`QueueState::cost`]: its
//! bytes plus a fixed cost per queued entry, so thousands of tiny frames weigh what they hold):
//!
//! - up to the first bound ([`FanoutLimits::drop_above`]) every frame is forwarded;
//! - past it, the video access unit being sent is finished (a half picture helps nobody), then
//!   whole frames are dropped (counted) until a keyframe arrives once the queue has drained
//!   to half the bound — a viewer resumes with a picture it can decode, not with references to
//!   pictures it never got;
//! - past the second bound ([`FanoutLimits::disconnect_above`]), or after
//!   [`FanoutLimits::max_behind`] spent dropping without catching up, the viewer is
//!   disconnected.
//!
//! RTCP is forwarded while dropping (a few small packets that keep the viewer's clocks mapped).
//! A stream without video has no keyframes: there every audio frame is a place to resume.
//! Nothing here ever holds the camera back.

use std::time::{Duration, Instant};

/// What a frame is, for a viewer that may have to skip some. Worked out once per frame by the
/// camera session, read by every viewer's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The first packet of a video access unit that decoding can start from (its keyframe, or
    /// the parameter sets before it).
    KeyframeStart,
    /// The first packet of another video access unit.
    AccessUnitStart,
    /// A later packet of the current video access unit.
    VideoContinuation,
    /// A self-contained packet of another track (audio, metadata).
    Other,
    /// RTCP.
    Control,
}

/// What one queued entry (one segment of a connection's send queue: its slot, and the small
/// header or reference count it holds) costs beyond the bytes it carries.
pub const ENTRY_COST: usize = 96;

/// What is queued to one viewer and not yet sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueState {
    pub bytes: usize,
    /// Queued entries (send-queue segments).
    pub entries: usize,
}

impl QueueState {
    /// The memory the queue holds, as the bounds count it.
    pub fn cost(self) -> usize {
        self.bytes.saturating_add(self.entries.saturating_mul(ENTRY_COST))
    }

    /// `self` plus one more piece of `bytes` in `entries` entries.
    pub fn plus(self, bytes: usize, entries: usize) -> QueueState {
        QueueState { bytes: self.bytes.saturating_add(bytes), entries: self.entries.saturating_add(entries) }
    }
}

/// The slow-viewer bounds of a route, in [`QueueState::cost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutLimits {
    /// Queued cost past which the viewer drops whole frames until the next keyframe.
    pub drop_above: usize,
    /// Queued cost past which the viewer is disconnected.
    pub disconnect_above: usize,
    /// Longest time a viewer may stay behind (dropping) before it is disconnected.
    pub max_behind: Duration,
}

/// The decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Not sent to this viewer (count it in `relay_frames_dropped_total`).
    Drop,
    /// Close this viewer; the camera and the other viewers carry on.
    Disconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Forwarding,
    /// Past the first bound: finishing the access unit under way.
    Finishing,
    Dropping,
}

/// One viewer's slow-viewer state.
#[derive(Debug, Clone)]
pub struct ViewerFanout {
    limits: FanoutLimits,
    has_video: bool,
    state: State,
    behind_since: Option<Instant>,
    burst: usize,
    dropped: u64,
    disconnected: bool,
}

impl ViewerFanout {
    /// `has_video`: the route's camera has a track keyframes are found in.
    pub fn new(limits: FanoutLimits, has_video: bool) -> Self {
        ViewerFanout {
            limits,
            has_video,
            state: State::Forwarding,
            behind_since: None,
            burst: 0,
            dropped: 0,
            disconnected: false,
        }
    }

    /// `bytes` (a [`QueueState::cost`]) were queued to the viewer at once on purpose (the GOP
    /// cache replayed at PLAY):
    /// both bounds are raised by what is left of them, so a joiner is not judged slow for the
    /// burst the relay chose to send. The allowance shrinks as the queue drains below it.
    pub fn allow_burst(&mut self, bytes: usize) {
        self.burst = self.burst.saturating_add(bytes);
    }

    /// Decides for one frame, given what is queued to this viewer before it.
    pub fn decide(&mut self, queue: QueueState, kind: FrameKind, now: Instant) -> Verdict {
        let queued = queue.cost();
        if self.disconnected {
            return Verdict::Disconnect;
        }
        self.burst = self.burst.min(queued);
        let drop_above = self.limits.drop_above.saturating_add(self.burst);
        let behind_too_long =
            self.behind_since.is_some_and(|t| now.saturating_duration_since(t) > self.limits.max_behind);
        if queued > self.limits.disconnect_above.saturating_add(self.burst) || behind_too_long {
            self.disconnected = true;
            return Verdict::Disconnect;
        }
        let self_contained = kind == FrameKind::Other && !self.has_video;
        let boundary = matches!(kind, FrameKind::KeyframeStart | FrameKind::AccessUnitStart) || self_contained;
        let resume_point = kind == FrameKind::KeyframeStart || self_contained;
        if self.state == State::Forwarding && queued > drop_above {
            self.state = State::Finishing;
            self.behind_since = Some(now);
        }
        if self.state == State::Finishing && boundary {
            self.state = State::Dropping;
        }
        match self.state {
            State::Forwarding | State::Finishing => Verdict::Forward,
            State::Dropping if resume_point && queued <= drop_above / 2 => {
                self.state = State::Forwarding;
                self.behind_since = None;
                Verdict::Forward
            }
            State::Dropping if kind == FrameKind::Control => Verdict::Forward,
            State::Dropping => {
                self.dropped += 1;
                Verdict::Drop
            }
        }
    }

    /// Frames dropped for this viewer so far.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped
    }

    /// Whether the viewer was judged too far behind (it stays so).
    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    /// Whether the viewer is skipping frames now.
    pub fn is_dropping(&self) -> bool {
        self.state == State::Dropping
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameKind::*;
    use proptest::prelude::*;

    fn queued(bytes: usize) -> QueueState {
        QueueState { bytes, entries: 0 }
    }

    fn limits() -> FanoutLimits {
        FanoutLimits { drop_above: 1000, disconnect_above: 5000, max_behind: Duration::from_secs(5) }
    }

    #[test]
    fn under_the_first_bound_everything_goes() {
        let mut f = ViewerFanout::new(limits(), true);
        let now = crate::test_fixtures::t0();
        for kind in [KeyframeStart, VideoContinuation, Other, AccessUnitStart, Control] {
            assert_eq!(f.decide(queued(1000), kind, now), Verdict::Forward);
        }
        assert_eq!(f.dropped_frames(), 0);
    }

    #[test]
    fn past_it_the_picture_is_finished_then_frames_drop_until_a_keyframe_after_draining() {
        let mut f = ViewerFanout::new(limits(), true);
        let now = crate::test_fixtures::t0();
        assert_eq!(f.decide(queued(1001), VideoContinuation, now), Verdict::Forward, "finish the access unit");
        assert_eq!(f.decide(queued(1200), Other, now), Verdict::Forward);
        assert_eq!(f.decide(queued(1300), AccessUnitStart, now), Verdict::Drop);
        assert_eq!(f.decide(queued(1300), VideoContinuation, now), Verdict::Drop);
        assert_eq!(f.decide(queued(1300), Other, now), Verdict::Drop, "audio too: the viewer is behind");
        assert_eq!(f.decide(queued(1300), Control, now), Verdict::Forward, "RTCP still goes");
        assert_eq!(f.decide(queued(800), KeyframeStart, now), Verdict::Drop, "not drained to half the bound yet");
        assert_eq!(f.decide(queued(400), AccessUnitStart, now), Verdict::Drop, "drained, but no keyframe");
        assert_eq!(f.decide(queued(400), VideoContinuation, now), Verdict::Drop);
        assert!(f.is_dropping());
        assert_eq!(f.decide(queued(500), KeyframeStart, now), Verdict::Forward);
        assert_eq!(f.decide(queued(900), VideoContinuation, now), Verdict::Forward);
        assert_eq!(f.dropped_frames(), 6);
        assert!(!f.is_dropping());
    }

    #[test]
    fn past_the_second_bound_or_behind_too_long_the_viewer_is_cut() {
        let t0 = crate::test_fixtures::t0();
        let mut f = ViewerFanout::new(limits(), true);
        assert_eq!(f.decide(queued(5001), VideoContinuation, t0), Verdict::Disconnect);
        assert_eq!(f.decide(queued(0), KeyframeStart, t0), Verdict::Disconnect, "stays cut");
        let mut f = ViewerFanout::new(limits(), true);
        assert_eq!(f.decide(queued(2000), AccessUnitStart, t0), Verdict::Drop);
        assert_eq!(f.decide(queued(2000), AccessUnitStart, t0 + Duration::from_secs(5)), Verdict::Drop);
        assert_eq!(f.decide(queued(2000), AccessUnitStart, t0 + Duration::from_millis(5001)), Verdict::Disconnect);
        // Catching up resets the clock.
        let mut f = ViewerFanout::new(limits(), true);
        assert_eq!(f.decide(queued(2000), AccessUnitStart, t0), Verdict::Drop);
        assert_eq!(f.decide(queued(100), KeyframeStart, t0 + Duration::from_secs(4)), Verdict::Forward);
        assert_eq!(f.decide(queued(100), AccessUnitStart, t0 + Duration::from_secs(20)), Verdict::Forward);
    }

    #[test]
    fn audio_only_streams_resume_at_any_frame() {
        let mut f = ViewerFanout::new(limits(), false);
        let now = crate::test_fixtures::t0();
        assert_eq!(f.decide(queued(1500), Other, now), Verdict::Drop, "each audio frame is whole");
        assert_eq!(f.decide(queued(1500), Other, now), Verdict::Drop);
        assert_eq!(f.decide(queued(450), Other, now), Verdict::Forward);
    }

    #[test]
    fn a_replay_burst_is_not_held_against_a_joiner() {
        let mut f = ViewerFanout::new(limits(), true);
        let now = crate::test_fixtures::t0();
        f.allow_burst(20_000);
        assert_eq!(f.decide(queued(20_500), VideoContinuation, now), Verdict::Forward);
        assert_eq!(f.decide(queued(20_900), AccessUnitStart, now), Verdict::Forward);
        // As the queue drains the allowance goes with it.
        assert_eq!(f.decide(queued(0), AccessUnitStart, now), Verdict::Forward);
        assert_eq!(f.decide(queued(1100), AccessUnitStart, now), Verdict::Drop);
        assert_eq!(f.decide(queued(20_000), AccessUnitStart, now), Verdict::Disconnect);
    }

    #[test]
    fn queued_entries_weigh_as_memory() {
        // 20 entries of 13 bytes are 260 bytes but hold 20 segments: past the first bound.
        let mut f = ViewerFanout::new(limits(), true);
        let now = crate::test_fixtures::t0();
        let tiny = QueueState { bytes: 260, entries: 20 };
        assert!(tiny.cost() > 1000);
        assert_eq!(f.decide(tiny, AccessUnitStart, now), Verdict::Drop);
        let many = QueueState { bytes: 13 * 60, entries: 60 };
        assert_eq!(f.decide(many, AccessUnitStart, now), Verdict::Disconnect);
    }

    proptest! {
        /// Whatever the queue does, every access unit reaches the viewer whole or not at all,
        /// and after a dropped one the next that arrives is a keyframe.
        #[test]
        fn pictures_are_whole_and_resume_at_keyframes(
            aus in proptest::collection::vec((any::<bool>(), 1usize..6, proptest::collection::vec(0usize..7000, 6)), 1..80)
        ) {
            let mut f = ViewerFanout::new(limits(), true);
            let now = crate::test_fixtures::t0();
            let mut after_drop = false;
            for (key, packets, queues) in aus {
                let mut sent = Vec::new();
                for (i, q) in queues.iter().take(packets).enumerate() {
                    let kind = match (i, key) {
                        (0, true) => KeyframeStart,
                        (0, false) => AccessUnitStart,
                        _ => VideoContinuation,
                    };
                    sent.push(f.decide(queued(*q), kind, now));
                }
                if sent.contains(&Verdict::Disconnect) {
                    break;
                }
                let forwarded = sent.iter().filter(|v| **v == Verdict::Forward).count();
                prop_assert!(forwarded == 0 || forwarded == sent.len(), "{sent:?}");
                if forwarded > 0 && after_drop {
                    prop_assert!(key, "resumed on a keyframe");
                }
                after_drop = forwarded == 0;
            }
        }
    }
}

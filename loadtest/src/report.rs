//! Counters shared by a process's viewers, the once-a-second progress line, and the JSON report
//! (mergeable across worker processes: histograms travel as value/count pairs, times as
//! CLOCK_MONOTONIC nanoseconds shared by every process).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::check::Integrity;

const WINDOW_SHARDS: usize = 16;
/// Largest latency kept, µs (larger values are clamped to it).
pub const MAX_US: u64 = 600_000_000;

/// Live counters, updated by every viewer task.
pub struct Shared {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
    /// Sessions playing now (reached PLAY and not ended).
    pub playing: AtomicU64,
    /// Sessions that reached PLAY.
    pub established: AtomicU64,
    pub failed_before_play: AtomicU64,
    pub failed_after_play: AtomicU64,
    /// Missing RTP sequence numbers seen so far (loss proper is only known when a session ends).
    pub rtp_seq_gaps: AtomicU64,
    /// Integrity faults seen so far.
    pub faults: AtomicU64,
    /// Media latency of the current second, sharded to keep viewer tasks off one lock.
    window: Vec<Mutex<Histogram<u64>>>,
    next_shard: AtomicU64,
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds")
}

/// One session's latencies, µs: kept raw while few, in a histogram of `histogram()`'s precision
/// past `SPILL` samples. A full histogram is ~160 KB to zero and to read whole for each quantile:
/// made per session at thousands of setups a second it was a quarter of the generator's time,
/// while a short session has a few dozen samples.
#[derive(Debug, Default)]
pub struct Latencies {
    raw: Vec<u64>,
    hist: Option<Histogram<u64>>,
}

impl Latencies {
    const SPILL: usize = 4096;

    pub fn record(&mut self, us: u64) {
        let us = us.clamp(1, MAX_US);
        match &mut self.hist {
            Some(h) => {
                let _ = h.record(us);
            }
            None => {
                self.raw.push(us);
                if self.raw.len() >= Self::SPILL {
                    let mut h = histogram();
                    self.add_to(&mut h);
                    self.raw = Vec::new();
                    self.hist = Some(h);
                }
            }
        }
    }

    /// Adds every sample to `h` (a run's histogram).
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        match &self.hist {
            Some(mine) => {
                let _ = h.add(mine);
            }
            None => {
                for &v in &self.raw {
                    let _ = h.record(v);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.hist.as_ref().map_or(self.raw.len() as u64, |h| h.len())
    }

    #[cfg(test)]
    pub fn max(&self) -> u64 {
        self.hist.as_ref().map_or_else(|| self.raw.iter().copied().max().unwrap_or(0), |h| h.max())
    }

    #[cfg(test)]
    /// The value at quantile `q` (nearest rank while raw); 0 without samples.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if let Some(h) = &self.hist {
            return h.value_at_quantile(q);
        }
        let mut sorted = self.raw.clone();
        sorted.sort_unstable();
        Self::nearest_rank(&sorted, q)
    }

    fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
        let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.saturating_sub(1)).copied().unwrap_or(0)
    }

    /// Milliseconds; `None` without samples (never zeros).
    pub fn quantiles(&self) -> Option<Quantiles> {
        if let Some(h) = &self.hist {
            return Quantiles::of_us(h);
        }
        if self.raw.is_empty() {
            return None;
        }
        let mut sorted = self.raw.clone();
        sorted.sort_unstable();
        let ms = |q: f64| Self::nearest_rank(&sorted, q) as f64 / 1000.0;
        Some(Quantiles { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99), p999: ms(0.999), max: ms(1.0) })
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            playing: AtomicU64::new(0),
            established: AtomicU64::new(0),
            failed_before_play: AtomicU64::new(0),
            failed_after_play: AtomicU64::new(0),
            rtp_seq_gaps: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            window: (0..WINDOW_SHARDS).map(|_| Mutex::new(histogram())).collect(),
            next_shard: AtomicU64::new(0),
        }
    }
}

impl Shared {
    /// Latencies of one read (they all arrived together), under one lock.
    pub fn record_latencies(&self, us: &[u64]) {
        if us.is_empty() {
            return;
        }
        let i = self.next_shard.fetch_add(1, Ordering::Relaxed) as usize % WINDOW_SHARDS;
        let mut h = self.window[i].lock().unwrap_or_else(|e| e.into_inner());
        for &v in us {
            let _ = h.record(v.clamp(1, MAX_US));
        }
    }

    /// p99 of the window since the last call in ms (`None` without samples), its sample count,
    /// and resets it.
    pub fn take_window_p99_ms(&self) -> (Option<f64>, u64) {
        let mut all = histogram();
        for w in &self.window {
            let mut h = w.lock().unwrap_or_else(|e| e.into_inner());
            let _ = all.add(&*h);
            h.reset();
        }
        ((!all.is_empty()).then(|| all.value_at_quantile(0.99) as f64 / 1000.0), all.len())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Quantiles {
    /// Milliseconds from a µs histogram; `None` when it has no samples (never zeros).
    pub fn of_us(h: &Histogram<u64>) -> Option<Quantiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Some(Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }

    fn line(q: &Option<Quantiles>, samples: u64, digits: usize) -> String {
        match q {
            None => format!("null ({samples} samples)"),
            Some(q) => format!(
                "p50 {:.d$} p90 {:.d$} p99 {:.d$} p99.9 {:.d$} max {:.d$} ({samples} samples)",
                q.p50,
                q.p90,
                q.p99,
                q.p999,
                q.max,
                d = digits
            ),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Second {
    pub t: u64,
    pub mbps: f64,
    pub packets_per_s: u64,
    /// Sessions playing at the end of this second.
    pub playing: u64,
    pub established: u64,
    pub failed: u64,
    /// p99 media latency of the packets timed in this second; `null` when none were.
    pub p99_ms: Option<f64>,
    pub timed: u64,
}

/// One session that reached PLAY: survived (played to the end) or failed, and why.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionRecord {
    pub index: usize,
    pub path: String,
    pub survived: bool,
    /// Why it failed (a connection error, `no_media`, an integrity fault...).
    pub reason: Option<String>,
    /// Scheduled start → PLAY answered, ms.
    pub setup_ms: f64,
    /// PLAY answered → the end (the stop time, or when it failed), s.
    pub play_s: f64,
    pub bytes: u64,
    pub packets: u64,
    pub timed: u64,
    pub unmarked: u64,
    pub rtcp: u64,
    pub expected: u64,
    pub lost: u64,
    pub rtp_seq_gaps: u64,
    pub stalls: u64,
    pub stalled_ms: f64,
    pub longest_stall_ms: f64,
    pub rate_unknown: bool,
    pub start_unknown: bool,
    /// First packet received minus the packet `RTP-Info` named (0: they agree).
    #[serde(default)]
    pub start_offset: i64,
    /// New SSRCs or jumps of the camera's schedule (a camera restart).
    #[serde(default)]
    pub discontinuities: u64,
    /// The packet interval the camera's SDP stated, ns.
    #[serde(default)]
    pub period_ns: Option<u64>,
    /// Bytes of the timed packets due before PLAY was sent (a GOP cache's replay).
    #[serde(default)]
    pub replayed_bytes: u64,
    /// Slices whose checksum matched; pictures that could not be verified (a packet missing,
    /// no checksum).
    #[serde(default)]
    pub slices_verified: u64,
    #[serde(default)]
    pub pictures_unverified: u64,
    pub integrity: Integrity,
    /// This session's media latency, ms.
    pub latency_ms: Option<Quantiles>,
    /// Timed packets due before PLAY was sent (a GOP cache's replay): not in the latency.
    pub from_before_play: u64,
    /// PLAY sent → the first RTP packet of a keyframe (SPS or IDR slice) received, ms; `null`
    /// if none came.
    pub ttff_ms: Option<f64>,
    /// PLAY sent → the first RTP packet received, ms.
    pub first_packet_ms: Option<f64>,
    /// Scheduled start → the first RTP packet received, ms: the whole setup (GET and POST
    /// paired, DESCRIBE, SETUP and PLAY answered, media flowing); `null` if none came.
    #[serde(default)]
    pub ready_ms: Option<f64>,
}

impl SessionRecord {
    /// Live bytes (the replay left out: it was due before PLAY) over the play time, Mbit/s.
    pub fn mbps(&self) -> f64 {
        let live = self.bytes.saturating_sub(self.replayed_bytes);
        if self.play_s > 0.0 { live as f64 * 8.0 / 1e6 / self.play_s } else { 0.0 }
    }
}

/// The JSON report of `loadtest viewers`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub mode: String,
    pub target: String,
    pub processes: usize,
    /// Session starts asked for, per second.
    pub ramp_per_s: f64,
    /// Play time asked for after the ramp, s.
    pub duration_s: f64,
    pub sessions_requested: u64,
    /// `--steps`, `--hold`: sessions started in equal steps, each held this long.
    #[serde(default)]
    pub steps: usize,
    #[serde(default)]
    pub hold_s: f64,
    #[serde(default)]
    pub sessions_per_step: usize,
    /// The thresholds the figures were judged by: a stall is a gap longer than `stall_ms`; a
    /// session survives with at most `max_loss_pct` % lost and no stall over `max_stall_ms`.
    #[serde(default)]
    pub stall_ms: f64,
    #[serde(default)]
    pub max_loss_pct: f64,
    #[serde(default)]
    pub max_stall_ms: f64,
    /// Sessions whose task ran (connected or tried to).
    pub sessions_started: u64,
    /// Reached PLAY.
    pub sessions_established: u64,
    /// Reached PLAY and played to the end, media intact, loss and longest stall within the
    /// thresholds.
    pub sessions_survived: u64,
    /// Failed before PLAY + failed after PLAY.
    pub sessions_failed: u64,
    pub failures_before_play: BTreeMap<String, u64>,
    pub failures_after_play: BTreeMap<String, u64>,
    /// Starts achieved: sessions started per second between the first start and the last.
    pub start_rate_per_s: Option<f64>,
    /// PLAYs answered per second between the first scheduled start and the last PLAY.
    pub play_rate_per_s: Option<f64>,
    /// How late the load generator itself started sessions against their schedule, ms.
    pub start_lag_ms: Option<Quantiles>,
    /// Scheduled start → PLAY answered, ms (sessions that reached PLAY).
    pub setup_latency_ms: Option<Quantiles>,
    pub setup_latency_samples: u64,
    /// Due time (the camera's schedule) → viewer receipt, ms, every timed packet of every session.
    pub media_latency_ms: Option<Quantiles>,
    /// Packets timed (the media latency's samples).
    pub media_latency_samples: u64,
    /// Time to first frame: PLAY sent → first packet of a keyframe, ms, over sessions.
    pub time_to_first_frame_ms: Option<Quantiles>,
    pub time_to_first_frame_samples: u64,
    /// Sessions that reached PLAY and never received a keyframe packet.
    pub sessions_without_keyframe: u64,
    /// PLAY sent → first RTP packet, ms, over sessions.
    pub time_to_first_packet_ms: Option<Quantiles>,
    /// Sessions set up completely: they reached PLAY and received a first RTP packet.
    #[serde(default)]
    pub sessions_ready: u64,
    /// Scheduled start → first RTP packet, ms, over the sessions ready (the setup latency of
    /// a whole setup; `setup_latency_ms` stops at PLAY answered).
    #[serde(default)]
    pub ready_latency_ms: Option<Quantiles>,
    /// Sessions ready per second between the first scheduled start and the last one ready.
    #[serde(default)]
    pub ready_rate_per_s: Option<f64>,
    pub bytes_received: u64,
    pub packets_received: u64,
    /// Marked packets of the right stream: timed and sequence-checked.
    pub packets_timed: u64,
    /// RTP packets without the loadtest mark (parameter sets, re-packetised media): header only.
    pub packets_unmarked: u64,
    /// Timed packets due before their session's PLAY was sent (a relay's GOP cache replaying
    /// the picture so far): checked and counted, kept out of the media latency.
    pub packets_from_before_play: u64,
    pub rtcp_packets: u64,
    /// Due between each stream's start and its session's end (minus the grace).
    pub packets_expected: u64,
    /// Expected and never received.
    pub packets_lost: u64,
    pub rtp_seq_gaps: u64,
    /// Bytes of timed packets due before their session's PLAY (a GOP cache's replay): in
    /// `bytes_received`, not in `delivered_mbps`.
    #[serde(default)]
    pub replayed_bytes: u64,
    /// New SSRCs or jumps of a camera's schedule seen, over sessions.
    #[serde(default)]
    pub discontinuities: u64,
    /// Sessions whose first packet is not the one their PLAY reply's `RTP-Info` named, and the
    /// packets between the two (positive: named but never sent, counted lost).
    #[serde(default)]
    pub sessions_start_disagree: u64,
    #[serde(default)]
    pub start_disagree_packets: i64,
    #[serde(default)]
    pub slices_verified: u64,
    #[serde(default)]
    pub pictures_unverified: u64,
    pub stalls: u64,
    pub stalled_s: f64,
    pub longest_stall_ms: f64,
    /// Sessions whose camera stated no packet interval: no schedule to count loss against
    /// (they fail, `rate_unknown`).
    pub sessions_rate_unknown: u64,
    /// `--stream-start rtp-info` sessions whose PLAY reply had no `seq=` (counted from their
    /// first packet).
    pub sessions_start_unknown: u64,
    pub integrity: Integrity,
    /// Σ over sessions of live bytes (the replay left out) over their own play time, Mbit/s.
    pub delivered_mbps: f64,
    pub play_time_s: f64,
    pub throughput: Vec<Second>,
    /// Every session that reached PLAY.
    pub sessions: Vec<SessionRecord>,
    /// CLOCK_MONOTONIC ns: the schedule's start, first and last actual starts, last PLAY.
    pub epoch_ns: u64,
    pub first_start_ns: Option<u64>,
    pub last_start_ns: Option<u64>,
    pub last_play_ns: Option<u64>,
    /// CLOCK_MONOTONIC ns: the last session's first RTP packet.
    #[serde(default)]
    pub last_ready_ns: Option<u64>,
    /// Raw histograms (µs: value, count) so worker reports merge exactly.
    pub setup_hist_us: Vec<(u64, u64)>,
    pub media_hist_us: Vec<(u64, u64)>,
    pub start_lag_hist_us: Vec<(u64, u64)>,
}

pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
}

pub fn from_pairs(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = histogram();
    for (v, c) in pairs {
        let _ = h.record_n((*v).clamp(1, MAX_US), *c);
    }
    h
}

fn merge_pairs(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut h = from_pairs(a);
    let _ = h.add(from_pairs(b));
    to_pairs(&h)
}

fn opt(f: impl Fn(u64, u64) -> u64, a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, y) => x.or(y),
    }
}

impl Report {
    /// Adds one session that reached PLAY.
    pub fn add_session(&mut self, r: SessionRecord) {
        self.sessions_established += 1;
        if r.survived {
            self.sessions_survived += 1;
        } else {
            self.sessions_failed += 1;
            *self.failures_after_play.entry(r.reason.clone().unwrap_or_default()).or_default() += 1;
        }
        self.bytes_received += r.bytes;
        self.packets_received += r.packets;
        self.packets_timed += r.timed;
        self.packets_unmarked += r.unmarked;
        self.packets_from_before_play += r.from_before_play;
        self.rtcp_packets += r.rtcp;
        self.packets_expected += r.expected;
        self.packets_lost += r.lost;
        self.rtp_seq_gaps += r.rtp_seq_gaps;
        self.replayed_bytes += r.replayed_bytes;
        self.discontinuities += r.discontinuities;
        self.sessions_start_disagree += u64::from(r.start_offset != 0);
        self.start_disagree_packets += r.start_offset;
        self.slices_verified += r.slices_verified;
        self.pictures_unverified += r.pictures_unverified;
        self.stalls += r.stalls;
        self.stalled_s += r.stalled_ms / 1000.0;
        self.longest_stall_ms = self.longest_stall_ms.max(r.longest_stall_ms);
        self.sessions_rate_unknown += u64::from(r.rate_unknown);
        self.sessions_start_unknown += u64::from(r.start_unknown);
        self.integrity.add(&r.integrity);
        self.sessions.push(r);
    }

    /// Folds a worker's report into this one.
    pub fn merge(&mut self, other: &Report) {
        self.sessions_requested += other.sessions_requested;
        self.sessions_started += other.sessions_started;
        self.sessions_failed += other.sessions_failed;
        for (k, v) in &other.failures_before_play {
            *self.failures_before_play.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.failures_after_play {
            *self.failures_after_play.entry(k.clone()).or_default() += v;
        }
        self.sessions_established += other.sessions_established;
        self.sessions_survived += other.sessions_survived;
        self.bytes_received += other.bytes_received;
        self.packets_received += other.packets_received;
        self.packets_timed += other.packets_timed;
        self.packets_unmarked += other.packets_unmarked;
        self.packets_from_before_play += other.packets_from_before_play;
        self.rtcp_packets += other.rtcp_packets;
        self.packets_expected += other.packets_expected;
        self.packets_lost += other.packets_lost;
        self.rtp_seq_gaps += other.rtp_seq_gaps;
        self.replayed_bytes += other.replayed_bytes;
        self.discontinuities += other.discontinuities;
        self.sessions_start_disagree += other.sessions_start_disagree;
        self.start_disagree_packets += other.start_disagree_packets;
        self.slices_verified += other.slices_verified;
        self.pictures_unverified += other.pictures_unverified;
        self.stalls += other.stalls;
        self.stalled_s += other.stalled_s;
        self.longest_stall_ms = self.longest_stall_ms.max(other.longest_stall_ms);
        self.sessions_rate_unknown += other.sessions_rate_unknown;
        self.sessions_start_unknown += other.sessions_start_unknown;
        self.integrity.add(&other.integrity);
        self.sessions.extend(other.sessions.iter().cloned());
        self.duration_s = self.duration_s.max(other.duration_s);
        self.ramp_per_s = self.ramp_per_s.max(other.ramp_per_s);
        // Workers share the parent's plan and thresholds.
        self.steps = self.steps.max(other.steps);
        self.hold_s = self.hold_s.max(other.hold_s);
        self.sessions_per_step = self.sessions_per_step.max(other.sessions_per_step);
        self.stall_ms = self.stall_ms.max(other.stall_ms);
        self.max_loss_pct = self.max_loss_pct.max(other.max_loss_pct);
        self.max_stall_ms = self.max_stall_ms.max(other.max_stall_ms);
        // Workers share the parent's schedule.
        if self.epoch_ns == 0 {
            self.epoch_ns = other.epoch_ns;
        }
        self.first_start_ns = opt(u64::min, self.first_start_ns, other.first_start_ns);
        self.last_start_ns = opt(u64::max, self.last_start_ns, other.last_start_ns);
        self.last_play_ns = opt(u64::max, self.last_play_ns, other.last_play_ns);
        self.last_ready_ns = opt(u64::max, self.last_ready_ns, other.last_ready_ns);
        for s in &other.throughput {
            match self.throughput.iter_mut().find(|m| m.t == s.t) {
                Some(m) => {
                    m.mbps += s.mbps;
                    m.packets_per_s += s.packets_per_s;
                    m.playing += s.playing;
                    m.established += s.established;
                    m.failed += s.failed;
                    // Per-second windows do not merge exactly: the worst worker's p99.
                    m.p99_ms = match (m.p99_ms, s.p99_ms) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    m.timed += s.timed;
                }
                None => self.throughput.push(s.clone()),
            }
        }
        self.throughput.sort_by_key(|s| s.t);
        self.setup_hist_us = merge_pairs(&self.setup_hist_us, &other.setup_hist_us);
        self.media_hist_us = merge_pairs(&self.media_hist_us, &other.media_hist_us);
        self.start_lag_hist_us = merge_pairs(&self.start_lag_hist_us, &other.start_lag_hist_us);
        self.finalize();
    }

    /// Recomputes what derives from the raw counts (after a run, and after every merge).
    pub fn finalize(&mut self) {
        let setup = from_pairs(&self.setup_hist_us);
        let media = from_pairs(&self.media_hist_us);
        self.setup_latency_ms = Quantiles::of_us(&setup);
        self.setup_latency_samples = setup.len();
        self.media_latency_ms = Quantiles::of_us(&media);
        self.media_latency_samples = media.len();
        self.start_lag_ms = Quantiles::of_us(&from_pairs(&self.start_lag_hist_us));
        let of_sessions = |f: fn(&SessionRecord) -> Option<f64>| {
            let mut h = histogram();
            for v in self.sessions.iter().filter_map(f) {
                let _ = h.record(((v * 1000.0) as u64).clamp(1, MAX_US));
            }
            h
        };
        let ttff = of_sessions(|s| s.ttff_ms);
        self.time_to_first_frame_ms = Quantiles::of_us(&ttff);
        self.time_to_first_frame_samples = ttff.len();
        self.sessions_without_keyframe = self.sessions.iter().filter(|s| s.ttff_ms.is_none()).count() as u64;
        self.time_to_first_packet_ms = Quantiles::of_us(&of_sessions(|s| s.first_packet_ms));
        let ready = of_sessions(|s| s.ready_ms);
        self.ready_latency_ms = Quantiles::of_us(&ready);
        self.sessions_ready = ready.len();
        self.delivered_mbps = self.sessions.iter().map(SessionRecord::mbps).sum();
        self.play_time_s = self.sessions.iter().map(|s| s.play_s).sum();
        self.sessions.sort_by_key(|s| s.index);
        self.start_rate_per_s = match (self.first_start_ns, self.last_start_ns) {
            (Some(a), Some(b)) if b > a && self.sessions_started > 1 => {
                Some((self.sessions_started - 1) as f64 / ((b - a) as f64 / 1e9))
            }
            _ => None,
        };
        self.play_rate_per_s = match self.last_play_ns {
            Some(b) if b > self.epoch_ns && self.sessions_established > 0 => {
                Some(self.sessions_established as f64 / ((b - self.epoch_ns) as f64 / 1e9))
            }
            _ => None,
        };
        self.ready_rate_per_s = match self.last_ready_ns {
            Some(b) if b > self.epoch_ns && self.sessions_ready > 0 => {
                Some(self.sessions_ready as f64 / ((b - self.epoch_ns) as f64 / 1e9))
            }
            _ => None,
        };
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} sessions ({}) to {} in {} process(es): {} established (reached PLAY), {} survived (played to the end intact, lost <= {}%, longest stall <= {:.0} ms), {} failed ({} before PLAY, {} after)\n",
            self.sessions_requested,
            self.mode,
            self.target,
            self.processes,
            self.sessions_established,
            self.sessions_survived,
            self.max_loss_pct,
            self.max_stall_ms,
            self.sessions_failed,
            self.failures_before_play.values().sum::<u64>(),
            self.failures_after_play.values().sum::<u64>(),
        );
        for (k, v) in &self.failures_before_play {
            s.push_str(&format!("  failed before PLAY, {k}: {v}\n"));
        }
        for (k, v) in &self.failures_after_play {
            s.push_str(&format!("  failed after PLAY, {k}: {v}\n"));
        }
        let rate = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{r:.0}/s"));
        s.push_str(&format!(
            "starts: asked {:.0}/s, achieved {}; PLAYs answered {} from the first scheduled start; start lag {}\n",
            self.ramp_per_s,
            rate(self.start_rate_per_s),
            rate(self.play_rate_per_s),
            self.start_lag_ms.as_ref().map_or("n/a".into(), |q| format!("p99 {:.1} ms max {:.1} ms", q.p99, q.max)),
        ));
        s.push_str(&format!(
            "setup latency ms (from the scheduled start): {}\n",
            Quantiles::line(&self.setup_latency_ms, self.setup_latency_samples, 2)
        ));
        s.push_str(&format!(
            "ready (first media packet) ms from the scheduled start: {}; {} sessions ready, {} from the first scheduled start\n",
            Quantiles::line(&self.ready_latency_ms, self.sessions_ready, 2),
            self.sessions_ready,
            rate(self.ready_rate_per_s),
        ));
        s.push_str(&format!(
            "media latency ms (from each packet's due time): {}\n",
            Quantiles::line(&self.media_latency_ms, self.media_latency_samples, 3)
        ));
        s.push_str(&format!(
            "time to first frame ms (PLAY sent to the first keyframe packet): {}; {} sessions without a keyframe\n",
            Quantiles::line(&self.time_to_first_frame_ms, self.time_to_first_frame_samples, 1),
            self.sessions_without_keyframe
        ));
        let per: Vec<f64> = self.sessions.iter().map(SessionRecord::mbps).collect();
        let (lo, hi) = per.iter().fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        s.push_str(&format!(
            "received {} packets ({} timed, {} of them due before PLAY, {} unmarked, {} RTCP), {:.1} MB of which {:.1} MB replayed (due before PLAY); delivered {:.1} Mbit/s (each session's live bytes over its own play time{})\n",
            self.packets_received,
            self.packets_timed,
            self.packets_from_before_play,
            self.packets_unmarked,
            self.rtcp_packets,
            self.bytes_received as f64 / 1e6,
            self.replayed_bytes as f64 / 1e6,
            self.delivered_mbps,
            if per.is_empty() { String::new() } else { format!("; per session {lo:.3}..{hi:.3}") },
        ));
        s.push_str(&format!(
            "lost {} of {} expected packets; {} RTP sequence gaps; {} discontinuities; {} stalls (gaps > {:.0} ms; {:.1} s in all, longest {:.0} ms)\n",
            self.packets_lost,
            self.packets_expected,
            self.rtp_seq_gaps,
            self.discontinuities,
            self.stalls,
            self.stall_ms,
            self.stalled_s,
            self.longest_stall_ms
        ));
        s.push_str(&format!(
            "slices verified against their checksums: {}; pictures that could not be (a packet missing, no checksum): {}\n",
            self.slices_verified, self.pictures_unverified
        ));
        let longest_period_ms = self.sessions.iter().filter_map(|s| s.period_ns).max().unwrap_or(0) as f64 / 1e6;
        if longest_period_ms >= self.stall_ms && self.stall_ms > 0.0 {
            s.push_str(&format!(
                "WARNING: a stream's packet interval ({longest_period_ms:.0} ms) is not below the stall threshold ({:.0} ms): every gap is a stall\n",
                self.stall_ms
            ));
        }
        if self.sessions_start_disagree > 0 {
            s.push_str(&format!(
                "WARNING: {} sessions' first packet is not the one their PLAY reply's RTP-Info named ({} packets in all; named but never sent count as lost)\n",
                self.sessions_start_disagree, self.start_disagree_packets
            ));
        }
        if self.sessions_rate_unknown + self.sessions_start_unknown > 0 {
            s.push_str(&format!(
                "unchecked: {} sessions whose camera stated no packet interval (failed: rate_unknown), {} without RTP-Info (counted from their first packet)\n",
                self.sessions_rate_unknown, self.sessions_start_unknown
            ));
        }
        let i = &self.integrity;
        s.push_str(&format!(
            "integrity faults: {} (wrong stream {}, SSRC {}, bad RTP {}, bad payload {}, bad slice {}, split picture {}, unexpected channel {}, bad RTCP {}, out of order {})\n",
            i.total(),
            i.wrong_stream,
            i.ssrc_mismatch,
            i.bad_rtp,
            i.bad_payload,
            i.bad_slice,
            i.split_picture,
            i.unexpected_channel,
            i.bad_rtcp,
            i.out_of_order
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(index: usize, survived: bool, bytes: u64) -> SessionRecord {
        SessionRecord {
            index,
            survived,
            reason: (!survived).then(|| "closed_by_peer".into()),
            bytes,
            play_s: 2.0,
            ..SessionRecord::default()
        }
    }

    #[test]
    fn merging_worker_reports_adds_counts_and_histograms() {
        let mut h = histogram();
        h.record(1000).unwrap();
        let mut a = Report { sessions_requested: 2, media_hist_us: to_pairs(&h), ..Report::default() };
        a.add_session(session(0, true, 1_000_000));
        a.add_session(session(2, false, 500_000));
        let mut h2 = histogram();
        h2.record(3000).unwrap();
        let mut b =
            Report { sessions_requested: 3, sessions_failed: 1, media_hist_us: to_pairs(&h2), ..Report::default() };
        b.failures_before_play.insert("http_503".into(), 1);
        b.add_session(session(1, true, 1_000_000));
        let mut total = Report::default();
        total.merge(&a);
        total.merge(&b);
        assert_eq!((total.sessions_requested, total.sessions_established, total.sessions_survived), (5, 3, 2));
        assert_eq!(total.sessions_failed, 2);
        assert_eq!(total.failures_before_play["http_503"], 1);
        assert_eq!(total.failures_after_play["closed_by_peer"], 1);
        assert_eq!(total.bytes_received, 2_500_000, "a failed session keeps its bytes");
        assert_eq!(total.sessions.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2]);
        // 4 + 2 + 4 Mbit/s: each session over its own play time.
        assert!((total.delivered_mbps - 10.0).abs() < 1e-9);
        let q = total.media_latency_ms.clone().unwrap();
        assert!((q.max - 3.0).abs() < 0.01 && (q.p50 - 1.0).abs() < 0.01);
        assert_eq!(total.media_latency_samples, 2);
    }

    #[test]
    fn no_samples_is_null_not_zero() {
        let mut r = Report::default();
        r.finalize();
        assert_eq!(r.media_latency_ms, None);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["media_latency_ms"].is_null() && json["setup_latency_ms"].is_null());
        assert_eq!(json["media_latency_samples"], 0);
        assert!(r.summary().contains("media latency ms (from each packet's due time): null (0 samples)"));
        assert_eq!(Shared::default().take_window_p99_ms(), (None, 0));
    }

    #[test]
    fn a_sessions_latencies_agree_raw_and_spilled() {
        let mut few = Latencies::default();
        let mut many = Latencies::default();
        let mut all = histogram();
        for v in 1..=100u64 {
            few.record(v * 1000);
        }
        for v in 0..10_000u64 {
            many.record(1000 + v % 1000);
            let _ = all.record(1000 + v % 1000);
        }
        let q = few.quantiles().unwrap();
        assert_eq!((q.p50, q.p90, q.p99, q.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(few.len(), 100);
        assert_eq!(many.quantiles(), Quantiles::of_us(&all), "past the spill it is the histogram");
        let mut run = histogram();
        few.add_to(&mut run);
        many.add_to(&mut run);
        assert_eq!(run.len(), 10_100);
        assert_eq!(Latencies::default().quantiles(), None);
    }
}

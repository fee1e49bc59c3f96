//! The relay-wide budget for shared cameras' GOP caches (`[limits] gop_cache_total_bytes`): so
//! that 5,000 cameras cannot hold 5,000 caches' worth of memory.
//!
//! Every shard's caches take their memory from one account, an atomic shared by the shard
//! threads (no lock): a cache takes a block's capacity when it opens a block and gives it back
//! when the block leaves the cache ([`super::gop_cache`]), so the account moves once per block
//! (kilobytes), not per packet. Starting a cache (the first block of a group of pictures) must
//! fit the budget, or the cache waits for the next keyframe; a cache that has started may grow
//! past the budget by a block, and then the shard that saw the account go over evicts its
//! caches idle longest ([`eviction_order`]) until the account is back within it. A camera whose
//! cache was evicted serves its viewers as before; joiners start with live packets, as with no
//! cache.
//!
//! Each shard also keeps its own tally ([`GopShardTally`]) of the bytes its caches hold and of
//! the evictions, which the metrics sum (`relay_gop_cache_bytes`,
//! `relay_gop_cache_evictions_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// The account every shard's caches draw from.
#[derive(Debug)]
pub struct GopBudget {
    held: AtomicUsize,
    limit: AtomicUsize,
}

impl GopBudget {
    pub fn new(limit: usize) -> Arc<GopBudget> {
        Arc::new(GopBudget { held: AtomicUsize::new(0), limit: AtomicUsize::new(limit) })
    }

    /// A reload changed `gop_cache_total_bytes`: caches over the new budget are evicted as
    /// their shards next receive camera media.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes every cache holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The caches hold more than the budget: the shard evicts.
    pub fn is_over(&self) -> bool {
        self.held() > self.limit()
    }
}

/// One shard's share of the tallies the metrics export.
#[derive(Debug, Default)]
pub struct GopShardTally {
    /// Bytes this shard's caches hold (`relay_gop_cache_bytes`, summed over shards).
    pub bytes: AtomicU64,
    /// Caches evicted or not started for the budget (`relay_gop_cache_evictions_total`).
    pub evictions: AtomicU64,
}

impl GopShardTally {
    pub fn evicted(&self, n: u64) {
        self.evictions.fetch_add(n, Ordering::Relaxed);
    }
}

/// What one cache draws from: the relay-wide account and its shard's tally.
#[derive(Debug, Clone)]
pub struct GopAccount {
    budget: Arc<GopBudget>,
    tally: Arc<GopShardTally>,
}

impl GopAccount {
    pub fn new(budget: Arc<GopBudget>, tally: Arc<GopShardTally>) -> Self {
        GopAccount { budget, tally }
    }

    /// Takes `n` bytes if they fit the budget; nothing taken and false otherwise.
    pub fn try_take(&self, n: usize) -> bool {
        let limit = self.budget.limit();
        let taken = self
            .budget
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| held.checked_add(n).filter(|t| *t <= limit));
        if taken.is_ok() {
            self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    /// Takes `n` bytes even past the budget (a started cache growing); the shard evicts.
    pub fn take(&self, n: usize) {
        self.budget.held.fetch_add(n, Ordering::Relaxed);
        self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Gives back `n` bytes taken before.
    pub fn give_back(&self, n: usize) {
        self.budget.held.fetch_sub(n, Ordering::Relaxed);
        self.tally.bytes.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// A group of pictures was not cached: the budget had no room for its start.
    pub fn refused(&self) {
        self.tally.evicted(1);
    }

    /// Evictions counted in this account's shard tally.
    #[cfg(test)]
    pub fn tally_evictions(&self) -> u64 {
        self.tally.evictions.load(Ordering::Relaxed)
    }

    pub fn budget(&self) -> &GopBudget {
        &self.budget
    }
}

/// A cache the shard could evict: who, when a joiner last used it (`None`: never) and what it
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionCandidate<K> {
    pub key: K,
    pub used_at: Option<Instant>,
    pub held: usize,
}

/// Orders `candidates` for eviction: never-used caches first, then those idle longest; among
/// equals, the larger first (fewer evictions free the room). Caches holding nothing are left
/// out.
pub fn eviction_order<K>(candidates: &mut Vec<EvictionCandidate<K>>) {
    candidates.retain(|c| c.held > 0);
    candidates.sort_by(|a, b| a.used_at.cmp(&b.used_at).then(b.held.cmp(&a.held)));
}

/// How many of `ordered` (as [`eviction_order`] left them) to evict to bring `held` within
/// `limit`.
pub fn evictions_needed<K>(ordered: &[EvictionCandidate<K>], held: usize, limit: usize) -> usize {
    let mut over = held.saturating_sub(limit);
    let mut n = 0;
    for c in ordered {
        if over == 0 {
            break;
        }
        over = over.saturating_sub(c.held);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn account(limit: usize) -> GopAccount {
        GopAccount::new(GopBudget::new(limit), Arc::new(GopShardTally::default()))
    }

    #[test]
    fn a_start_must_fit_and_a_started_cache_may_pass_the_budget_for_the_shard_to_evict() {
        let a = account(100);
        assert!(a.try_take(60));
        assert!(!a.try_take(60), "the start does not fit: nothing taken");
        assert_eq!(a.budget().held(), 60);
        a.take(60);
        assert!(a.budget().is_over());
        a.give_back(60);
        assert!(!a.budget().is_over());
        assert_eq!(a.tally.bytes.load(Ordering::Relaxed), 60);
        // A second shard's account draws from the same budget.
        let b = GopAccount::new(a.budget.clone(), Arc::new(GopShardTally::default()));
        assert!(b.try_take(40) && !b.try_take(1));
        assert_eq!((a.budget().held(), b.tally.bytes.load(Ordering::Relaxed)), (100, 40));
    }

    #[test]
    fn the_caches_idle_longest_go_first_and_only_as_many_as_needed() {
        let t0 = Instant::now();
        let c = |key, used: Option<u64>, held| EvictionCandidate {
            key,
            used_at: used.map(|s| t0 + Duration::from_secs(s)),
            held,
        };
        let mut v = vec![c(1, Some(5), 10), c(2, None, 10), c(3, Some(1), 30), c(4, None, 20), c(5, None, 0)];
        eviction_order(&mut v);
        assert_eq!(v.iter().map(|c| c.key).collect::<Vec<_>>(), [4, 2, 3, 1]);
        assert_eq!(evictions_needed(&v, 100, 100), 0);
        assert_eq!(evictions_needed(&v, 101, 100), 1);
        assert_eq!(evictions_needed(&v, 125, 100), 2);
        assert_eq!(evictions_needed(&v, 1000, 100), 4, "at most every candidate");
    }
}

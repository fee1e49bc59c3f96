//! Carries out the relay-wide GOP cache budget (`[limits] gop_cache_total_bytes`) on this
//! shard: when the account shared by every shard is over the budget, this shard's caches idle
//! longest are evicted until it is back within it. The order is the core's
//! ([`eviction_order`]); a shard evicts only its own cameras' caches (no lock, no message to
//! another shard), so the shard whose caches grew is the one that makes room. Each cache is
//! its shared route's: the routes are asked, the caches not reached into.

use super::*;
use crate::proto::gop_budget::{EvictionCandidate, eviction_order, evictions_needed};

impl Shard {
    /// One atomic load per camera receive; the work only when the account is over.
    pub(in crate::shard) fn enforce_gop_budget(&mut self) {
        // Checked on every camera receive: a load, not an `Arc` clone, whose count shares a
        // cache line with the budget every shard writes.
        if !self.shared.gop_budget.is_over() {
            return;
        }
        let budget = self.shared.gop_budget.clone();
        let mut candidates: Vec<EvictionCandidate<_>> = self
            .relay
            .cameras
            .keys()
            .into_iter()
            .filter_map(|key| self.relay.cameras.get(key)?.shared.gop_eviction_candidate(key))
            .collect();
        eviction_order(&mut candidates);
        let n = evictions_needed(&candidates, budget.held(), budget.limit());
        for c in candidates.iter().take(n) {
            if let Some(slot) = self.relay.cameras.get_mut(c.key) {
                slot.shared.evict_gop_cache();
            }
        }
        if n > 0 {
            tracing::debug!(shard = self.id, caches = n, "GOP caches evicted for [limits] gop_cache_total_bytes");
            self.metrics.gop.evicted(n as u64);
        }
    }
}

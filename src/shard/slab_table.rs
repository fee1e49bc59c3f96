//! A slab whose slots carry a generation: the storage of the shard's connection, session and
//! camera tables.
//!
//! A slot is named by its index and the generation it had when filled. Completions, mailbox
//! messages and keys held by other tables may outlive what they name; a name whose generation
//! is not the slot's current one finds nothing, so a reused slot is never mistaken for the old
//! occupant. Generations wrap inside 24 bits, the width a [`Token`](super::token::Token)
//! carries.

use slab::Slab;

use super::token::next_generation;

pub struct SlabTable<T> {
    slab: Slab<T>,
    /// The generation of each slot's current (or last) occupant; grown as the slab grows.
    generations: Vec<u32>,
}

impl<T> Default for SlabTable<T> {
    fn default() -> Self {
        SlabTable { slab: Slab::new(), generations: Vec::new() }
    }
}

impl<T> SlabTable<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        SlabTable { slab: Slab::with_capacity(capacity), generations: Vec::new() }
    }

    /// Fills a free slot with the value `make` builds from the slot's index and new
    /// generation; returns both.
    pub fn insert_with(&mut self, make: impl FnOnce(usize, u32) -> T) -> (usize, u32) {
        let entry = self.slab.vacant_entry();
        let index = entry.key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let generation = next_generation(self.generations[index]);
        self.generations[index] = generation;
        entry.insert(make(index, generation));
        (index, generation)
    }

    /// The value in slot `index` if it is still the one of `generation`.
    pub fn get(&self, index: usize, generation: u32) -> Option<&T> {
        self.is_current(index, generation).then(|| self.slab.get(index)).flatten()
    }

    pub fn get_mut(&mut self, index: usize, generation: u32) -> Option<&mut T> {
        if self.is_current(index, generation) { self.slab.get_mut(index) } else { None }
    }

    /// Empties slot `index` if it still holds the value of `generation`.
    pub fn remove(&mut self, index: usize, generation: u32) -> Option<T> {
        if self.is_current(index, generation) { self.slab.try_remove(index) } else { None }
    }

    /// The generation of the value in slot `index`, if the slot is filled.
    pub fn generation(&self, index: usize) -> Option<u32> {
        self.slab.contains(index).then(|| self.generations.get(index).copied()).flatten()
    }

    /// The value in slot `index`, whichever generation (for callers that checked it already).
    pub fn get_at(&self, index: usize) -> Option<&T> {
        self.slab.get(index)
    }

    pub fn get_at_mut(&mut self, index: usize) -> Option<&mut T> {
        self.slab.get_mut(index)
    }

    /// Empties slot `index`, whichever generation.
    pub fn remove_at(&mut self, index: usize) -> Option<T> {
        self.slab.try_remove(index)
    }

    /// Index and generation of every filled slot, to visit them while the table changes.
    pub fn keys(&self) -> Vec<(usize, u32)> {
        self.slab.iter().map(|(index, _)| (index, self.generations.get(index).copied().unwrap_or(0))).collect()
    }

    pub fn iter(&self) -> slab::Iter<'_, T> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> slab::IterMut<'_, T> {
        self.slab.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    fn is_current(&self, index: usize, generation: u32) -> bool {
        self.slab.contains(index) && self.generations.get(index) == Some(&generation)
    }
}

/// The value in a slot the caller knows is filled (as `Slab` indexing: a vacant slot panics).
impl<T> std::ops::Index<usize> for SlabTable<T> {
    type Output = T;
    fn index(&self, index: usize) -> &T {
        &self.slab[index]
    }
}

impl<T> std::ops::IndexMut<usize> for SlabTable<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.slab[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_name() {
        let mut t = SlabTable::default();
        let (a, ga) = t.insert_with(|i, g| (i, g, "a"));
        assert_eq!(t.get(a, ga), Some(&(a, ga, "a")));
        assert_eq!(t.remove(a, ga).map(|v| v.2), Some("a"));
        assert!(t.get(a, ga).is_none() && t.remove(a, ga).is_none() && t.generation(a).is_none());
        let (b, gb) = t.insert_with(|i, g| (i, g, "b"));
        assert_eq!(b, a, "the slab reuses the slot");
        assert_ne!(gb, ga);
        assert!(t.get(a, ga).is_none() && t.get_mut(a, ga).is_none() && t.remove(a, ga).is_none());
        assert_eq!(t.get_at(b).map(|v| v.2), Some("b"));
        assert_eq!(t.generation(b), Some(gb));
        assert_eq!(t.keys(), vec![(b, gb)]);
    }

    proptest! {
        /// Against a model keyed by (index, generation): whatever the order of inserts and
        /// removals, a name finds exactly the value inserted under it while it is there.
        #[test]
        fn names_find_their_own_value_only(ops in proptest::collection::vec((any::<bool>(), 0usize..8), 0..200)) {
            let mut t = SlabTable::default();
            let mut live: Vec<((usize, u32), u32)> = Vec::new();
            let mut dead: Vec<(usize, u32)> = Vec::new();
            for (n, (insert, pick)) in ops.into_iter().enumerate() {
                let n = n as u32;
                if insert || live.is_empty() {
                    let key = t.insert_with(|_, _| n);
                    prop_assert!(!live.iter().any(|(k, _)| *k == key));
                    live.push((key, n));
                } else {
                    let (key, v) = live.remove(pick % live.len());
                    prop_assert_eq!(t.remove(key.0, key.1), Some(v));
                    dead.push(key);
                }
                for ((i, g), v) in &live {
                    prop_assert_eq!(t.get(*i, *g), Some(v));
                }
                for (i, g) in &dead {
                    prop_assert!(t.get(*i, *g).is_none());
                }
                prop_assert_eq!(t.len(), live.len());
            }
        }
    }
}

//! Freed heap memory goes back to the kernel on a clock, not only when the heap is busy again.
//!
//! mimalloc (v3) gives the pages the relay freed back to the kernel ("purges" them) once they
//! have been free for `purge_delay` (1 s), but only when an allocation or a free on one of its
//! slow paths next checks. After a burst — a step of viewers joining a shared camera, each
//! with its GOP replay queued as a few hundred segments and freed once sent — the freed pages
//! stayed resident until the heap happened to look again: at 1 camera × 200 viewers that was
//! 15–18 KB of RSS per viewer, against 9.4 with `MIMALLOC_PURGE_DELAY=0` (purge at every free).
//!
//! So each shard runs mimalloc's ordinary, not forced, collect on its tick (every 100 ms): it
//! frees the pages whose blocks are all free and, once the delay since the first page waiting
//! was freed has passed, purges the pages still free; memory left free after a burst is back
//! within about a second. The delay stays mimalloc's: a shorter one (100 ms, or 0) returned no
//! more at 1 × 200 but cost CPU with 200 cameras, whose GOP caches free and retake memory all
//! the time (page faults after every purge).
//! `MIMALLOC_PURGE_DELAY` and the other `MIMALLOC_*` settings apply as mimalloc documents.

/// Collects the calling shard thread's heap: called on every tick (`ops::TICK`, 100 ms; a tick
/// is armed when the last one fires, so they are never closer).
pub(in crate::shard) fn collect_on_tick() {
    // SAFETY: `mi_collect(false)` collects the calling thread's own heap (the shard's: this
    // runs on the shard thread, which owns it) and purges expired free memory in the arenas
    // under mimalloc's own locking; it takes no pointers and frees no block still in use. Not
    // forced: nothing is purged before the delay has passed.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

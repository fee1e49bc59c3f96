//! The provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a free buffer for each
//! multishot receive; the shard hands it back once nothing references it any more — that is,
//! once every send that forwards bytes straight out of it has completed.
//!
//! A buffer handed back while something still points into it would be refilled under that
//! pointer (another connection's bytes sent to a viewer), and one handed back twice would be
//! given out twice. So the reference count cannot wrap (u32, at most [`MAX_BUFFER_REFS`], and
//! the caller copies the bytes instead once a buffer is that shared), every count is checked in
//! release builds too (a mismatch stops the shard rather than corrupting a stream), and every
//! range becomes a slice or an iovec only through a bounds-checked slice of its buffer.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

/// References one buffer may carry (the receive being processed plus queued send segments).
/// A camera can make one receive yield a range per 5 bytes (empty `$` frames between line
/// breaks: ~200,000 in a 1 MiB buffer); past this many, ranges are copied instead, which also
/// bounds the segments a viewer's queue holds per buffer. Legitimate media gives a few ranges
/// per receive.
pub const MAX_BUFFER_REFS: u32 = 1024;

/// Buffers lent to the kernel at first; more are lent as the work needs them
/// ([`BufRing::grow`]). The kernel takes buffers in ring order, so every buffer in circulation
/// gets written to: lending all of a large ring at once would make all of it resident however
/// light the load (at 16 KiB buffers, 4,096 of them are 64 MiB a shard).
const FIRST_LENT: u16 = 256;

/// One shard's buffer group: `count` buffers of `size` bytes and the ring that lends them out.
pub struct BufRing {
    /// The ring of `count` entries shared with the kernel (page-aligned mmap).
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    /// The buffers themselves, one mmap of `count * size` bytes.
    data: NonNull<u8>,
    data_bytes: usize,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// References per buffer: the receive being processed and each queued send segment.
    refs: Vec<u32>,
    available: usize,
    /// Buffers in circulation: `0..lent` have been lent to the kernel; the rest never were (and
    /// so were never written, nor made resident).
    lent: u16,
    pub group: u16,
}

fn mmap_anon(bytes: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

impl BufRing {
    /// Allocates the buffers and registers them with `submitter` as buffer group `group`.
    pub fn register(submitter: &io_uring::Submitter<'_>, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        // Start-up only: `[runtime] recv_buffers` is validated a power of two; no peer reaches it.
        assert!(count.is_power_of_two(), "buffer count must be a power of two");
        // Validated sizes (u16 buffers of at most 1 MiB): the products fit a 64-bit usize.
        let ring_bytes = count as usize * std::mem::size_of::<BufRingEntry>();
        let data_bytes = count as usize * size as usize;
        let ring = mmap_anon(ring_bytes)?.cast::<BufRingEntry>();
        let data = match mmap_anon(data_bytes) {
            Ok(d) => d,
            Err(e) => {
                // SAFETY: `ring` was mapped above with `ring_bytes` and is not registered.
                unsafe { libc::munmap(ring.as_ptr().cast(), ring_bytes) };
                return Err(e);
            }
        };
        let mut br = BufRing {
            ring,
            ring_bytes,
            data,
            data_bytes,
            count,
            size,
            tail: 0,
            refs: vec![0; count as usize],
            available: 0,
            lent: 0,
            group,
        };
        // SAFETY: the ring memory is page-aligned (mmap), `count` entries long, and lives until
        // `Drop`, which runs only after the io_uring that registered it is gone (field order in
        // the shard and an explicit unregister there).
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, count, group, 0)? };
        br.lend(FIRST_LENT.min(count));
        br.publish();
        Ok(br)
    }

    /// Lends `n` more buffers, never lent before.
    fn lend(&mut self, n: u16) {
        let end = self.lent.saturating_add(n).min(self.count);
        for bid in self.lent..end {
            self.provide(bid);
        }
        self.lent = end;
    }

    /// The buffers in circulation run short: doubles them, up to the ring's size. False when
    /// every buffer is already lent. Published with the next [`BufRing::publish`].
    pub fn grow(&mut self) -> bool {
        if self.lent == self.count {
            return false;
        }
        self.lend(self.lent);
        true
    }

    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    /// Buffers in circulation (lent to the kernel at least once).
    pub fn capacity(&self) -> usize {
        self.lent as usize
    }

    /// Buffers the kernel can currently fill.
    pub fn available(&self) -> usize {
        self.available
    }

    fn provide(&mut self, bid: u16) {
        // More buffers given back than the ring has slots would overwrite entries the kernel has
        // not consumed yet: some buffer would then be lent out twice.
        assert!(self.available < self.count as usize, "buffer {bid} given back to a full ring");
        let mask = self.count - 1;
        let idx = (self.tail & mask) as usize;
        // SAFETY: idx < count, so the entry lies inside the ring mapping. The kernel only reads
        // entries between its head and our published tail; this one is past the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(self.buffer(bid).as_ptr() as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    /// Makes buffers given back since the last call visible to the kernel (one store per batch).
    pub fn publish(&self) {
        // SAFETY: `ring` points at the first entry of the registered ring, whose `resv` field is
        // the shared tail; it is a naturally aligned u16 that the kernel reads atomically.
        let tail = unsafe { &*(BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The whole of buffer `bid`: every slice or iovec of a buffer is cut from this, so a range
    /// outside it panics (in release builds too) instead of reaching other memory.
    fn buffer(&self, bid: u16) -> &[u8] {
        assert!(bid < self.count, "buffer id {bid} out of range");
        // SAFETY: bid < count, so the buffer lies inside the data mapping, which lives as long as
        // `self`. The mapping is anonymous (zero-filled), so every byte is initialised. Callers
        // read only buffers they hold a reference to, which the kernel does not write to until
        // they are given back (see `on_received`/`release`).
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().add(bid as usize * self.size as usize), self.size as usize)
        }
    }

    /// A receive completed into `bid`: the buffer now has one reference (the processing).
    pub fn on_received(&mut self, bid: u16) {
        let r = &mut self.refs[bid as usize];
        // The kernel only lends out buffers we gave back, which had no references left.
        assert!(*r == 0, "buffer {bid} received while still referenced ({r} references)");
        *r = 1;
        // Memory safety: the kernel reports only buffers it was lent; a peer chooses no buffer id.
        self.available = self.available.checked_sub(1).expect("a buffer received that the ring did not lend");
    }

    fn held(&self, bid: u16) -> bool {
        self.refs.get(bid as usize).is_some_and(|r| *r > 0)
    }

    /// The first `len` bytes of a buffer the kernel filled.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        self.bytes_at(bid, 0, len)
    }

    /// `len` bytes from `offset` of a buffer we hold (being processed, or named by a queued
    /// segment).
    pub fn bytes_at(&self, bid: u16, offset: u32, len: usize) -> &[u8] {
        assert!(self.held(bid), "buffer {bid} read without a reference");
        let start = offset as usize;
        // Memory safety: ranges come from the demultiplexer inside one receive; never past it.
        &self.buffer(bid)[start..start.checked_add(len).expect("range overflows")]
    }

    /// The first `len` bytes of a buffer just received, to rewrite in place before anything
    /// else refers to it (a shared camera's RTP headers after a reconnect): only the processing
    /// holds it, so no queued send names it and the kernel does not write it.
    pub fn bytes_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(self.refs[bid as usize] == 1, "buffer {bid} written while shared");
        let size = self.size as usize;
        assert!(len <= size, "range overflows");
        // SAFETY: bid < count (the index above checked it), so the buffer lies inside the data
        // mapping, which lives as long as `self`; it is zero-filled, so initialised. Its one
        // reference is the caller's processing (checked above): no queued send or iovec names
        // it, and the kernel writes only buffers given back, so this borrow is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(bid as usize * size), len) }
    }

    /// The iovec of `start..end` of a buffer named by a queued send. The kernel only reads it,
    /// and the buffer stays held until that send completes.
    pub fn iovec(&self, bid: u16, start: u32, end: u32) -> libc::iovec {
        let bytes =
            // Memory safety: queued ring segments are non-empty (`push_ring` checks start < end).
            self.bytes_at(bid, start, (end as usize).checked_sub(start as usize).expect("range ends before it starts"));
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() }
    }

    /// Another holder (a queued send segment) wants to reference `bid`. Returns false, without
    /// taking a reference, once the buffer already has [`MAX_BUFFER_REFS`]: the caller copies
    /// the bytes instead.
    #[must_use]
    pub fn try_retain(&mut self, bid: u16) -> bool {
        let r = &mut self.refs[bid as usize];
        // Only a held buffer may gain holders: a free one belongs to the kernel.
        assert!(*r > 0, "buffer {bid} retained while not held");
        if *r >= MAX_BUFFER_REFS {
            return false;
        }
        // Bounded by MAX_BUFFER_REFS just above.
        *r += 1;
        true
    }

    /// Drops one reference; the buffer goes back to the kernel when none remain.
    pub fn release(&mut self, bid: u16) {
        let r = &mut self.refs[bid as usize];
        // A release without a matching reference would give the buffer back twice; stopping the
        // shard is the only safe answer.
        assert!(*r > 0, "buffer {bid} released more often than retained");
        *r -= 1;
        if *r == 0 {
            self.provide(bid);
        }
    }

    /// References `bid` holds now.
    #[cfg(test)]
    pub fn refs(&self, bid: u16) -> u32 {
        self.refs[bid as usize]
    }

    /// The data mapping (tests check it is still mapped after a leaking shutdown).
    #[cfg(test)]
    pub fn data_mapping(&self) -> (*mut u8, usize) {
        (self.data.as_ptr(), self.data_bytes)
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created in `register` with these sizes; the ring that used
        // them has been unregistered or destroyed by now (see the shard's drop order).
        unsafe {
            libc::munmap(self.data.as_ptr().cast(), self.data_bytes);
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (io_uring::IoUring, BufRing) {
        let ring = io_uring::IoUring::new(8).unwrap();
        let bufs = BufRing::register(&ring.submitter(), 7, 64, 4096).unwrap();
        (ring, bufs)
    }

    /// A receive of `len` bytes into `bid` yielding a range every 5 bytes (`$\0\0\0\n`), each
    /// queued by reference if the buffer takes one more, copied otherwise.
    fn queue_ranges(b: &mut BufRing, bid: u16, ranges: usize) -> (usize, usize) {
        let (mut referenced, mut copied) = (0, 0);
        for _ in 0..ranges {
            if b.try_retain(bid) {
                referenced += 1;
            } else {
                copied += 1;
            }
        }
        (referenced, copied)
    }

    #[test]
    fn a_buffer_shared_by_more_ranges_than_a_u16_counts_returns_once_and_last() {
        let (_ring, mut b) = ring();
        let before = b.available();
        b.on_received(3);
        // ~209,715 ranges: what one 1 MiB receive of empty frames between line breaks yields.
        let (referenced, copied) = queue_ranges(&mut b, 3, 209_715);
        assert_eq!(referenced, MAX_BUFFER_REFS as usize - 1);
        assert_eq!(copied, 209_715 - referenced);
        b.release(3); // the receive's own reference
        for _ in 0..referenced {
            assert_eq!(b.available(), before - 1, "buffer returned while sends still name it");
            b.release(3);
        }
        assert_eq!(b.available(), before, "buffer returned exactly once, after its last send");
        assert_eq!(b.refs(3), 0);
    }

    #[test]
    fn buffers_are_lent_as_the_work_needs_them_up_to_the_ring() {
        let uring = io_uring::IoUring::new(8).unwrap();
        let mut b = BufRing::register(&uring.submitter(), 1, 1024, 4096).unwrap();
        assert_eq!((b.capacity(), b.available()), (256, 256), "a quarter lent at first");
        // What was never lent is never written: its pages stay out of the process's memory.
        assert!(b.grow());
        assert_eq!((b.capacity(), b.available()), (512, 512));
        assert!(b.grow());
        assert_eq!((b.capacity(), b.available()), (1024, 1024));
        assert!(!b.grow(), "the ring is full");
        b.on_received(1000);
        b.release(1000);
        assert_eq!(b.available(), 1024);
        drop(b);
        drop(uring);
    }

    #[test]
    #[should_panic(expected = "released more often than retained")]
    fn a_release_without_a_reference_stops_the_shard() {
        let (_ring, mut b) = ring();
        b.on_received(5);
        b.release(5);
        b.release(5);
    }

    #[test]
    #[should_panic(expected = "received while still referenced")]
    fn a_buffer_lent_out_twice_stops_the_shard() {
        let (_ring, mut b) = ring();
        b.on_received(5);
        b.on_received(5);
    }

    #[test]
    fn ranges_outside_a_buffer_panic_instead_of_reaching_other_memory() {
        let (_ring, mut b) = ring();
        b.on_received(2);
        assert_eq!(b.bytes_at(2, 4090, 6).len(), 6);
        assert_eq!(b.iovec(2, 10, 4096).iov_len, 4086);
        let panics = |f: &dyn Fn(&BufRing)| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&b))).is_err();
        assert!(
            panics(&|b| {
                let _ = b.bytes_at(2, 4090, 7);
            }),
            "slice past the end"
        );
        assert!(
            panics(&|b| {
                let _ = b.bytes(2, 4097);
            }),
            "receive longer than the buffer"
        );
        assert!(
            panics(&|b| {
                let _ = b.iovec(2, 0, 4097);
            }),
            "iovec past the end"
        );
        assert!(
            panics(&|b| {
                let _ = b.iovec(2, 20, 10);
            }),
            "reversed iovec"
        );
        assert!(
            panics(&|b| {
                let _ = b.bytes_at(64, 0, 1);
            }),
            "no such buffer"
        );
        assert!(
            panics(&|b| {
                let _ = b.bytes_at(9, 0, 1);
            }),
            "buffer not held"
        );
    }
}

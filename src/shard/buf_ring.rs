//! The provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a free buffer for each
//! multishot receive; the shard hands it back once nothing references it any more — that is,
//! once every send that forwards bytes straight out of it has completed.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

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
    refs: Vec<u16>,
    available: usize,
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
        assert!(count.is_power_of_two(), "buffer count must be a power of two");
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
            group,
        };
        // SAFETY: the ring memory is page-aligned (mmap), `count` entries long, and lives until
        // `Drop`, which runs only after the io_uring that registered it is gone (field order in
        // the shard and an explicit unregister there).
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, count, group, 0)? };
        for bid in 0..count {
            br.provide(bid);
        }
        br.publish();
        Ok(br)
    }

    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    /// Buffers the kernel can currently fill.
    pub fn available(&self) -> usize {
        self.available
    }

    fn provide(&mut self, bid: u16) {
        let mask = self.count - 1;
        let idx = (self.tail & mask) as usize;
        // SAFETY: idx < count, so the entry lies inside the ring mapping. The kernel only reads
        // entries between its head and our published tail; this one is past the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(idx) };
        entry.set_addr(self.ptr(bid) as u64);
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

    fn ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset stays inside the data mapping.
        unsafe { self.data.as_ptr().add(bid as usize * self.size as usize) }
    }

    /// A receive completed into `bid`: the buffer now has one reference (the processing).
    pub fn on_received(&mut self, bid: u16) {
        self.available -= 1;
        self.refs[bid as usize] = 1;
    }

    /// The first `len` bytes of a buffer the kernel filled.
    pub fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(len <= self.size as usize && self.refs[bid as usize] > 0);
        // SAFETY: the kernel wrote `len` bytes into this buffer and will not touch it again
        // until we provide it back, which needs its reference count to drop to zero.
        unsafe { std::slice::from_raw_parts(self.ptr(bid), len.min(self.size as usize)) }
    }

    /// `len` bytes from `offset` of a buffer still referenced by a queued segment.
    pub fn bytes_at(&self, bid: u16, offset: u32, len: usize) -> &[u8] {
        debug_assert!(offset as usize + len <= self.size as usize && self.refs[bid as usize] > 0);
        // SAFETY: the range lies inside buffer `bid`, which the kernel does not write while we
        // hold a reference to it.
        unsafe { std::slice::from_raw_parts(self.addr(bid, offset), len) }
    }

    /// Address of byte `offset` of a buffer, for an iovec of a queued send.
    pub fn addr(&self, bid: u16, offset: u32) -> *mut u8 {
        debug_assert!(offset <= self.size && self.refs[bid as usize] > 0);
        // SAFETY: offset <= size keeps the pointer inside (or one past) the buffer.
        unsafe { self.ptr(bid).add(offset as usize) }
    }

    /// Another holder (a queued send segment) references `bid`.
    pub fn retain(&mut self, bid: u16) {
        self.refs[bid as usize] += 1;
    }

    /// Drops one reference; the buffer goes back to the kernel when none remain.
    pub fn release(&mut self, bid: u16) {
        let r = &mut self.refs[bid as usize];
        debug_assert!(*r > 0, "buffer {bid} released more often than retained");
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.provide(bid);
        }
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

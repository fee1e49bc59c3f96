//! The connections of a shard: descriptors, generations, in-flight counts and send queues.
//!
//! A slot is addressed by index and generation (the [`Token`](super::token::Token) of every
//! submission carries both), and a connection leaves the table only once no submission names
//! it ([`ConnTable::remove_if_idle`], [`ConnTable::take_quiet`]): its descriptor, send queue
//! and connect memory are what the kernel reads and writes (see `ops`).

use std::net::SocketAddr;
use std::ops::{Index, IndexMut, Range};
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::buf_ring::BufRing;
use super::conn::{Conn, Role};
use super::kernel_memory::KernelMemory;
use super::send_queue::{SendQueue, Timed};
use super::slab_table::SlabTable;
use crate::proto::websocket::FrameHeader;

pub struct ConnTable {
    slab: KernelMemory<SlabTable<Conn>>,
    /// Connections with newly queued bytes, sent at the end of the completion batch.
    pub dirty: Vec<usize>,
    /// Connections whose multishot receive stopped for lack of buffers.
    pub starved: Vec<usize>,
}

/// The bytes of one shared-camera frame for one viewer.
pub enum FrameBytes<'a> {
    /// `range` of a ring buffer: the payload, or the camera's own `$` header and payload when
    /// the viewer receives the frame on the channel the camera sent it on.
    Ring { bid: u16, range: Range<usize> },
    /// Reference-counted bytes (a frame reassembled across receives, the GOP cache).
    Shared(&'a bytes::Bytes),
}

/// How camera media was queued for a viewer.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// By reference to its ring buffer, or encrypted (TLS).
    InPlace,
    /// Copied: the buffer backs too many queued ranges already.
    Copied,
}

impl ConnTable {
    pub fn new() -> ConnTable {
        ConnTable { slab: KernelMemory::new(SlabTable::with_capacity(1024)), dirty: Vec::new(), starved: Vec::new() }
    }

    pub fn insert(&mut self, fd: OwnedFd, peer: SocketAddr, role: Role, now: Instant) -> usize {
        self.slab.insert_with(|_, generation| Conn::new(fd, generation, peer, role, now)).0
    }

    pub fn get(&self, idx: usize) -> Option<&Conn> {
        self.slab.get_at(idx)
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut Conn> {
        self.slab.get_at_mut(idx)
    }

    /// The connection in slot `idx` if it is still the one of `generation`.
    pub fn current(&self, idx: usize, generation: u32) -> Option<&Conn> {
        self.slab.get(idx, generation)
    }

    pub fn iter(&self) -> slab::Iter<'_, Conn> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> slab::IterMut<'_, Conn> {
        self.slab.iter_mut()
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Frees a closing connection once nothing in flight names it; its queued ring buffers go
    /// back to the ring. The caller settles its accounting with what is returned.
    pub fn remove_if_idle(&mut self, idx: usize, bufs: &mut BufRing) -> Option<Conn> {
        let c = self.slab.get_at(idx)?;
        if !c.closing || c.ops > 0 {
            return None;
        }
        let mut c = self.slab.remove_at(idx)?;
        c.send.clear(bufs);
        Some(c)
    }

    /// Takes a connection out whole (to hand it to another shard) once nothing of ours is in
    /// flight on it or queued for it.
    pub fn take_quiet(&mut self, idx: usize) -> Option<Conn> {
        let c = self.slab.get_at(idx)?;
        if c.closing || c.ops > 0 || !c.send.is_empty() {
            return None;
        }
        self.slab.remove_at(idx)
    }

    /// Nothing in flight names any connection any more: dropping the table frees them.
    pub fn mark_idle(&mut self) {
        self.slab.mark_idle();
    }

    /// Queues bytes for a connection (encrypting them on a TLS connection, along with any
    /// handshake data rustls has pending); it is sent at the end of the completion batch.
    pub fn queue_owned(&mut self, idx: usize, bytes: Vec<u8>) {
        let Some(c) = self.slab.get_at_mut(idx) else {
            return;
        };
        match c.tls.as_mut() {
            None => c.send.push_owned(bytes),
            Some(tls) => {
                if !bytes.is_empty() {
                    tls.send(&bytes);
                }
                if let Some(cipher) = tls.take_outgoing() {
                    c.send.push_owned(cipher);
                }
            }
        }
        self.dirty.push(idx);
    }

    /// Queues camera media for a viewer straight from its ring buffer; a TLS viewer gets it
    /// encrypted instead (the ciphertext is necessarily a new buffer). `header` (a WebSocket
    /// frame's) goes just before it, as its own small segment so the media stays in place.
    pub fn queue_ring(
        &mut self,
        idx: usize,
        header: Option<FrameHeader>,
        bufs: &mut BufRing,
        bid: u16,
        range: Range<usize>,
        at: Timed,
    ) -> Option<Queued> {
        let c = self.slab.get_at_mut(idx)?;
        let (start, end) = match (u32::try_from(range.start), u32::try_from(range.end)) {
            (Ok(s), Ok(e)) => (s, e),
            _ => panic!("range {range:?} outside any receive buffer"),
        };
        // Checks the range against the buffer before anything refers to it.
        let bytes = bufs.bytes_at(bid, start, range.len());
        let header = header.as_ref().map_or(&[][..], |h| h.as_bytes());
        let queued = if let Some(tls) = c.tls.as_mut() {
            tls.send_framed(header, bytes);
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
            Queued::InPlace
        } else if bufs.try_retain(bid) {
            if !header.is_empty() {
                c.send.push_owned(header.to_vec());
            }
            c.send.push_ring(bid, start, end, at);
            Queued::InPlace
        } else {
            if !header.is_empty() {
                c.send.push_owned(header.to_vec());
            }
            // The buffer already backs MAX_BUFFER_REFS queued ranges (a camera sending tiny
            // frames between line breaks): copy this one rather than count another reference.
            c.send.push_media_copy(bufs.bytes_at(bid, start, range.len()), at);
            Queued::Copied
        };
        // One entry per connection and batch of ranges, not one per range.
        if self.dirty.last() != Some(&idx) {
            self.dirty.push(idx);
        }
        Some(queued)
    }
}

impl ConnTable {
    /// Queues one frame of a shared camera to a viewer: `ws` (its WebSocket frame header),
    /// `prefix` (the viewer's own `$` header), then the frame. Ring ranges are referenced, and a
    /// range that continues the last one queued from the same buffer extends it (one iovec,
    /// one reference for a whole receive); a TLS viewer gets it all encrypted in one record.
    pub fn queue_frame(
        &mut self,
        idx: usize,
        ws: Option<FrameHeader>,
        prefix: Option<&bytes::Bytes>,
        frame: FrameBytes<'_>,
        bufs: &mut BufRing,
        at: Timed,
    ) -> Option<Queued> {
        let c = self.slab.get_at_mut(idx)?;
        let queued = if let Some(tls) = c.tls.as_mut() {
            // At most a 10-byte WebSocket header and a 4-byte `$` header.
            let mut head = [0u8; 16];
            let mut n = 0;
            for part in [ws.as_ref().map(|h| h.as_bytes()), prefix.map(|p| &p[..])].into_iter().flatten() {
                head[n..n + part.len()].copy_from_slice(part);
                n += part.len();
            }
            let payload = match &frame {
                FrameBytes::Ring { bid, range } => bufs.bytes_at(*bid, ring_offset(range.start), range.len()),
                FrameBytes::Shared(b) => &b[..],
            };
            tls.send_framed(&head[..n], payload);
            if let Some(cipher) = tls.take_outgoing() {
                c.send.push_media(cipher, at);
            }
            Queued::InPlace
        } else {
            // Headers and tiny frames are copied onto the queue's last copy: a segment naming
            // each would cost more than its bytes (a joiner replaying a cache of tiny packets).
            // A shared `$` header is only appended, never given an allocation of its own.
            if let Some(h) = &ws {
                c.send.push_small(h.as_bytes(), None);
            }
            if let Some(p) = prefix {
                c.send.push_shared_or_append(p, None);
            }
            match frame {
                FrameBytes::Shared(b) if SendQueue::is_small(b) => {
                    c.send.push_small(b, Some(at));
                    Queued::InPlace
                }
                FrameBytes::Shared(b) => {
                    c.send.push_shared(b.clone(), Some(at));
                    Queued::InPlace
                }
                // Nothing to reference (a zero-length payload): its header went alone.
                FrameBytes::Ring { range, .. } if range.is_empty() => Queued::InPlace,
                FrameBytes::Ring { bid, range } => {
                    let (start, end) = (ring_offset(range.start), ring_offset(range.end));
                    // Checks the range against the buffer before anything refers to it.
                    bufs.bytes_at(bid, start, range.len());
                    if c.send.extend_ring(bid, start, end, at) {
                        Queued::InPlace
                    } else if bufs.try_retain(bid) {
                        c.send.push_ring(bid, start, end, at);
                        Queued::InPlace
                    } else {
                        c.send.push_media_copy(bufs.bytes_at(bid, start, range.len()), at);
                        Queued::Copied
                    }
                }
            }
        };
        if self.dirty.last() != Some(&idx) {
            self.dirty.push(idx);
        }
        Some(queued)
    }
}

fn ring_offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or_else(|_| panic!("offset {at} outside any receive buffer"))
}

impl Index<usize> for ConnTable {
    type Output = Conn;
    fn index(&self, idx: usize) -> &Conn {
        &self.slab[idx]
    }
}

impl IndexMut<usize> for ConnTable {
    fn index_mut(&mut self, idx: usize) -> &mut Conn {
        &mut self.slab[idx]
    }
}

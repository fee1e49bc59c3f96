//! What one more viewer of a shared camera keeps on the relay's heap once it plays: every
//! allocation of the process is counted (the test's own thread, which plays the viewers, is
//! left out), and the live bytes with N tunnel viewers playing are compared with one. Its own
//! test binary: the allocator is the process's.
//!
//! What this bounds is the heap beyond the slots of the connection and session tables (a
//! connection's slot is bounded by `conn_table`'s unit test, a tunnel's size by `tunnel`'s), plus the session's
//! `Tunnel` (~1.4 KB), which the session slot holds boxed so that the table's growth moves
//! pointers, not whole tunnels: ~2 KB of dialogue state and ~1.4 KB of tunnel, 5.9 KB before
//! the dialogue's scratch was given back. The kernel's socket buffers are not the process's
//! memory at all.

mod fake;
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use fake::*;
use rtsp_tunnel_relay::config::Limits;

/// Live bytes and allocations per power-of-two size class (class k: sizes up to 2^k).
const CLASSES: usize = 40;
static LIVE_BYTES: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];
static LIVE_COUNT: [AtomicIsize; CLASSES] = [const { AtomicIsize::new(0) }; CLASSES];

thread_local! {
    /// The test's own thread (its viewers' buffers are not the relay's).
    static LEFT_OUT: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

fn class(size: usize) -> usize {
    (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize % CLASSES
}

fn count(size: usize, sign: isize) {
    if LEFT_OUT.with(|l| l.get()) {
        return;
    }
    let c = class(size);
    LIVE_BYTES[c].fetch_add(sign * size as isize, Ordering::Relaxed);
    LIVE_COUNT[c].fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (bytes, allocations) live per size class.
fn snapshot() -> Vec<(isize, isize)> {
    (0..CLASSES).map(|c| (LIVE_BYTES[c].load(Ordering::Relaxed), LIVE_COUNT[c].load(Ordering::Relaxed))).collect()
}

fn total(s: &[(isize, isize)]) -> isize {
    s.iter().map(|(b, _)| b).sum()
}

/// Plays `viewer` and reads until its media flows.
fn play(v: &mut TunnelViewer) {
    v.open_post();
    let answers = v.play();
    assert_eq!(answers[3].status(), Some(200), "PLAY");
    let seen = v.frames;
    assert!(v.read_frames(seen + 3, Duration::from_secs(10)) >= seen + 3, "media flows");
}

/// Reads what each viewer was sent since, so the relay's queues are empty again.
fn drain(viewers: &mut [TunnelViewer]) {
    for v in viewers.iter_mut() {
        let seen = v.frames;
        v.read_frames(seen + 1, Duration::from_secs(5));
    }
}

/// Heap the relay keeps per playing tunnel viewer of a shared camera: the whole dialogue
/// (OPTIONS, DESCRIBE, SETUP, PLAY) done, media flowing to every viewer.
#[test]
fn a_playing_viewer_of_a_shared_camera_keeps_little_heap() {
    const VIEWERS: usize = 64;
    LEFT_OUT.with(|l| l.set(true));
    let camera = FakeCamera::start(CameraMode::Normal);
    let text = format!(
        "[listen]\ntunnel=[\"127.0.0.1:0\"]\n[[route]]\npath=\"/cam\"\nupstream=\"{}\"\n",
        camera.url("/stream")
    );
    let relay = Relay::from_config(&text, 1, Limits::default(), None);
    // The first viewer brings the camera session up; the others only add themselves.
    let mut first = TunnelViewer::open_get(relay.addr, "/cam", "memfirst0000");
    play(&mut first);
    let mut viewers = vec![first];
    std::thread::sleep(Duration::from_millis(300));
    drain(&mut viewers);
    std::thread::sleep(Duration::from_millis(300));
    let before = snapshot();
    for i in 1..=VIEWERS {
        let mut v = TunnelViewer::open_get(relay.addr, "/cam", &format!("memviewer{i:04}"));
        play(&mut v);
        viewers.push(v);
    }
    drain(&mut viewers);
    std::thread::sleep(Duration::from_millis(300));
    drain(&mut viewers);
    let after = snapshot();
    let per_viewer = (total(&after) - total(&before)) / VIEWERS as isize;
    let mut by_class = String::new();
    for (c, ((b0, n0), (b1, n1))) in before.iter().zip(&after).enumerate() {
        if n1 != n0 {
            by_class.push_str(&format!(
                "  <= {:>7} B: {:+6} allocations, {:+9} bytes ({:+6} per viewer)\n",
                1usize << c,
                n1 - n0,
                b1 - b0,
                (b1 - b0) / VIEWERS as isize
            ));
        }
    }
    eprintln!("heap per playing viewer: {per_viewer} bytes\n{by_class}");
    assert_eq!(relay.shards().running(), 1);
    assert!(per_viewer < 4 * 1024, "each playing viewer keeps {per_viewer} bytes of heap:\n{by_class}");
    drop(viewers);
}

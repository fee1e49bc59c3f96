//! Driver-level tests of the shard: a real io_uring and buffer ring, connections on socket pairs,
//! handlers called directly where a path cannot be reached from outside.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicUsize;

use super::data_path::RecvEnd;
use super::*;
use crate::admission::{Admission, AuthFailureLimiter};
use crate::config::{Acl, Runtime, Settings};
use crate::pairing::CookieTable;
use crate::proto::tunnel::{self, Input};
use crate::shard::mailbox::Mailbox;

fn shard() -> Shard {
    let shared = Arc::new(Shared {
        mailboxes: vec![Arc::new(Mailbox::new().unwrap())],
        cookies: CookieTable::new(),
        admission: Admission::new(),
        auth_failures: Arc::new(AuthFailureLimiter::new()),
        viewer_caps: Arc::new(crate::admission::ViewerCapTable::new(0, 0)),
        authorizer: crate::auth_worker::AuthWorker::start(&Default::default()).unwrap(),
        metrics: vec![Arc::new(ShardMetrics::new(0))],
        camera_hosts: Default::default(),
        gop_budget: crate::proto::gop_budget::GopBudget::new(usize::MAX),
        running: AtomicUsize::new(1),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = ShardConfig {
        id: 0,
        listeners: vec![Listener { fd: OwnedFd::from(listener), tls: None, acl: Acl::default() }],
        settings: Arc::new(Settings {
            runtime: Runtime { ring_entries: 64, recv_buffers: 64, recv_buffer_size: 4096, ..Runtime::default() },
            ..Settings::from_toml("[listen]\ntunnel=[\"127.0.0.1:0\"]\n").unwrap()
        }),
        seed: 1,
    };
    Shard::new(cfg, shared).unwrap()
}

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// A connection on one end of a socket pair; the other end is returned.
fn conn(s: &mut Shard, role: Role) -> (usize, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    (s.io.conns.insert_live(OwnedFd::from(ours), peer(), role, Instant::now()), theirs)
}

fn session(s: &mut Shard) -> SessionKey {
    s.new_session(None, tunnel::Kind::Http, false, peer(), Instant::now(), None)
}

/// What a test needs to see whether a shard's memory outlived it.
struct Probe {
    data: *mut u8,
    len: usize,
    fd: RawFd,
    inode: u64,
    /// The connection's peer.
    theirs: UnixStream,
}

const CANARY: &[u8] = b"still mapped";

impl Probe {
    /// A connection with a receive in flight; a canary at the end of the last buffer, which no
    /// receive here writes to.
    fn arm(s: &mut Shard) -> Probe {
        let key = session(s);
        let (idx, theirs) = conn(s, Role::Upstream(key));
        s.io.arm_recv(idx);
        s.io.ring.uring.submit().unwrap();
        let (data, len) = s.io.bufs.data_mapping();
        // SAFETY: inside the data mapping; that buffer is idle in the ring and nothing sends.
        unsafe { std::ptr::copy_nonoverlapping(CANARY.as_ptr(), data.add(len - CANARY.len()), CANARY.len()) };
        let fd = s.io.conns[idx].raw();
        Probe { data, len, fd, inode: inode(fd).unwrap(), theirs }
    }

    /// The buffers are still mapped (with our canary in them) and the connection still open.
    fn leaked(&self) -> bool {
        // SAFETY: msync only reports whether the range is mapped; the canary is read only then.
        let mapped = unsafe { libc::msync(self.data.cast(), self.len, libc::MS_ASYNC) } == 0;
        let canary = mapped
            && unsafe { std::slice::from_raw_parts(self.data.add(self.len - CANARY.len()), CANARY.len()) } == CANARY;
        canary && inode(self.fd) == Some(self.inode)
    }

    /// The peer saw the connection end (shut down, though its memory is leaked).
    fn peer_saw_the_end(&self) -> bool {
        use std::io::Read;
        self.theirs.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        matches!((&self.theirs).read(&mut [0u8; 16]), Ok(0))
    }
}

fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat writes only into `st`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

#[test]
fn a_shutdown_that_gives_up_leaks_what_is_still_in_flight() {
    let mut s = shard();
    let probe = Probe::arm(&mut s);
    // Gives up at once: the receive's completion has not been reaped.
    s.finish_within(Duration::ZERO);
    assert!(!s.io.conns.is_empty());
    drop(s);
    assert!(probe.leaked(), "buffers unmapped or connection closed with a receive in flight");
    assert!(probe.peer_saw_the_end());
}

#[test]
fn a_panicking_shard_leaks_what_is_still_in_flight() {
    let probe = std::sync::Mutex::new(None);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = shard();
        *probe.lock().unwrap() = Some(Probe::arm(&mut s));
        panic!("a shard fails with a receive in flight");
    }));
    assert!(unwound.is_err());
    let probe = probe.into_inner().unwrap().unwrap();
    assert!(probe.leaked(), "buffers unmapped or connection closed while unwinding");
    assert!(probe.peer_saw_the_end(), "the peer of a leaked connection was not told");
}

#[test]
fn a_clean_shutdown_frees_everything() {
    let mut s = shard();
    let key = session(&mut s);
    let (idx, _theirs) = conn(&mut s, Role::Upstream(key));
    s.io.arm_recv(idx);
    let fd = s.io.conns[idx].raw();
    let ino = inode(fd).unwrap();
    s.finish_within(Duration::from_secs(5));
    assert!(s.io.conns.is_empty(), "shutdown(2) completes the receive");
    drop(s);
    assert_ne!(inode(fd), Some(ino), "the connection was closed");
}

#[test]
fn a_slot_reused_during_a_receive_is_not_touched_by_its_tail() {
    let mut s = shard();
    let key = session(&mut s);
    let (a, _pa) = conn(&mut s, Role::Upstream(key));
    let generation = s.io.conns[a].generation();
    // Handling A's bytes closed and freed it, and B took its slot.
    s.close_conn(a);
    let (b, _pb) = conn(&mut s, Role::Upstream(key));
    assert_eq!(a, b, "slab slots are reused");
    let role = Role::Upstream(key);
    // A's multishot receive stopped on its own: re-arming it must not arm B...
    s.after_recv(a, generation, Some(role), RecvEnd { res: 100, more: false, was_paused: false, closing: false });
    assert_eq!((s.io.conns[b].recv(), s.io.conns[b].in_flight()), (RecvState::Off, 0), "B armed by A's completion");
    // ...and A's end of stream must not end B.
    s.after_recv(a, generation, Some(role), RecvEnd { res: 0, more: false, was_paused: false, closing: false });
    assert!(!s.io.conns[b].is_closing(), "B closed by A's completion");
}

/// A session whose viewer is over its backlog limit; returns (key, viewer, camera).
fn behind_viewer(s: &mut Shard) -> (SessionKey, usize, usize) {
    let key = session(s);
    let (v, pv) = conn(s, Role::TunnelGet(key));
    let (u, pu) = conn(s, Role::Upstream(key));
    std::mem::forget((pv, pu));
    let slot = s.session(key).unwrap();
    slot.viewer = Some(v);
    slot.upstream = Some(u);
    slot.tunnel.handle(Input::CameraConnected, Instant::now());
    let backlog = vec![0; s.relay.settings.limits.max_viewer_backlog_bytes + 1];
    s.io.queue_owned(v, backlog);
    (key, v, u)
}

#[test]
fn a_receive_cancelled_for_backpressure_stays_paused_when_it_ends_out_of_buffers() {
    let mut s = shard();
    let (key, _, u) = behind_viewer(&mut s);
    s.io.arm_recv(u);
    s.update_upstream_flow(key);
    assert_eq!(s.io.conns[u].recv(), RecvState::Cancelling);
    // The cancelled receive ends with ENOBUFS: the ring ran dry meanwhile.
    s.on_recv(u, -libc::ENOBUFS, 0);
    assert!(!s.io.conns.is_starved(u), "a paused camera was put on the out-of-buffers list");
    s.feed_starved();
    assert_ne!(s.io.conns[u].recv(), RecvState::Armed, "a paused camera was re-armed");
    assert!(s.session(key).unwrap().tunnel.camera_paused());
}

#[test]
fn a_receive_waiting_for_buffers_is_paused_not_fed() {
    let mut s = shard();
    let (key, _, u) = behind_viewer(&mut s);
    // Out of buffers before the viewer fell behind.
    s.io.conns.starve(u);
    s.update_upstream_flow(key);
    assert!(s.session(key).unwrap().tunnel.camera_paused());
    s.feed_starved();
    assert_ne!(s.io.conns[u].recv(), RecvState::Armed, "a paused camera was re-armed");
}

#[test]
fn a_camera_paused_while_its_receive_was_off_stays_paused() {
    let mut s = shard();
    let (key, _, u) = behind_viewer(&mut s);
    // The multishot receive ended on its own (its last completion carried bytes that put the
    // viewer behind): the tunnel pauses the camera while nothing is armed to cancel.
    assert_eq!(s.io.conns[u].recv(), RecvState::Off);
    s.update_upstream_flow(key);
    assert!(s.session(key).unwrap().tunnel.camera_paused());
    let generation = s.io.conns[u].generation();
    s.after_recv(
        u,
        generation,
        Some(Role::Upstream(key)),
        RecvEnd { res: 100, more: false, was_paused: false, closing: false },
    );
    assert_ne!(s.io.conns[u].recv(), RecvState::Armed, "a paused camera was re-armed");
    // The viewer caught up: the camera is read again.
    let v = s.session(key).unwrap().viewer.unwrap();
    s.io.conns[v].send_mut().clear(&mut s.io.bufs);
    s.update_upstream_flow(key);
    assert_eq!(s.io.conns[u].recv(), RecvState::Armed, "a resumed camera was not re-armed");
}

#[test]
fn a_failed_accept_waits_for_the_tick() {
    let mut s = shard();
    // The multishot accept ended with an error other than EMFILE/ENFILE.
    s.on_accept(0, -libc::EINVAL, 0);
    assert_eq!(s.io.ring.uring.submission().len(), 0, "re-armed at once");
    assert_eq!(s.io.listeners.paused, vec![0]);
    assert_eq!(s.metrics.accept_errors(), 1);
    s.on_tick();
    assert!(s.io.listeners.paused.is_empty());
    assert_eq!(s.io.ring.uring.submission().len(), 1, "re-armed by the tick");
}

#[test]
fn pushing_while_the_kernel_answers_ebusy_reaps_instead_of_spinning() {
    let (tx, rx) = std::sync::mpsc::channel();
    // A spinning push never returns: the verdict comes over a channel, with a time limit.
    std::thread::spawn(move || {
        let mut s = shard();
        s.io.ring.emulate_ebusy = true;
        // Far more than the submission (64) and completion (256) queues hold, nothing reaped
        // by the caller: the completion queue fills and overflows.
        let n = 5_000;
        for _ in 0..n {
            s.io.ring.push(ops::nop());
        }
        let reaped_to_make_room = s.io.ring.backlog.len();
        let mut seen = std::mem::take(&mut s.io.ring.backlog).len();
        s.io.ring.emulate_ebusy = false;
        let end = Instant::now() + Duration::from_secs(10);
        while seen < n && Instant::now() < end {
            s.io.ring.uring.submit_and_wait(1).unwrap();
            seen += s.io.ring.uring.completion().count();
        }
        // Dropped with nothing in flight.
        s.io.conns.mark_idle();
        let _ = tx.send((reaped_to_make_room, seen, n));
    });
    let (reaped, seen, n) = rx.recv_timeout(Duration::from_secs(20)).expect("push spun on EBUSY");
    assert!(reaped > 0, "EBUSY was answered by reaping completions");
    assert_eq!(seen, n, "every completion kept");
}

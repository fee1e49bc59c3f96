//! Every io_uring submission of a shard, each built together with the memory it points at, and
//! the ring that takes them.
//!
//! A [`Submission`] can only be made by the constructors in this file, and [`Ring::push`] takes
//! nothing else: the one `unsafe` push of the shard relies only on what these constructors
//! establish, in the manner of monoio's `Op<T>`. The memory an operation names is owned by the
//! value its completion is dispatched to and outlives it:
//!
//! - a connection's operations (receives, sends, the connect and its timeout) name its
//!   descriptor, its send queue's boxed `msghdr`/iovecs and the bytes they list, and its boxed
//!   [`ConnectMemory`]. Only `ConnTable` calls these constructors, and it counts each
//!   submission on its connection in the same step ([`Submission::ops`]); a connection leaves
//!   the table only when that count is zero (see `ConnTable::remove_if_idle`);
//! - receives write into the provided-buffer ring, which the kernel picks from; the ring is
//!   [`KernelMemory`](super::kernel_memory::KernelMemory) and outlives every receive;
//! - the tick's timespec is a `static`; listeners stay open until their accept's last
//!   completion; the mailbox's eventfd lives in `Shared`, which outlives the shard.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use super::Listener;
use super::buf_ring::BufRing;
use super::mailbox::Mailbox;
use super::send_queue::SendQueue;
use super::token::{Op, Token};

/// How often the shard's tick runs: every deadline hangs off it.
pub const TICK: Duration = Duration::from_millis(100);
static TICK_TIMESPEC: types::Timespec = types::Timespec::new().sec(0).nsec(TICK.subsec_nanos());

/// A completion as the shard handles it: user data, result, flags.
pub type Completion = (u64, i32, u32);

/// One submission, or two linked ones that must enter the ring together.
pub struct Submission {
    entries: [squeue::Entry; 2],
    len: usize,
}

impl Submission {
    fn one(e: squeue::Entry) -> Submission {
        // The second slot is never pushed.
        Submission { entries: [e, opcode::Nop::new().build()], len: 1 }
    }

    fn entries(&self) -> &[squeue::Entry] {
        &self.entries[..self.len]
    }

    /// How many operations it starts (what its connection counts in flight).
    pub fn ops(&self) -> u32 {
        self.len as u32
    }
}

fn token(op: Op, index: usize, generation: u32) -> u64 {
    Token::new(op, index, generation).encode()
}

/// The camera address and connect timeout the kernel reads while a connect is in flight;
/// boxed in the connection, which keeps it until the connection is freed.
pub struct ConnectMemory {
    addr: socket2::SockAddr,
    timeout: types::Timespec,
}

/// A multishot accept on listener `i` (its completions carry new descriptors).
pub fn accept(listener: &Listener, i: usize) -> Submission {
    let fd = types::Fd(listener.fd.as_raw_fd());
    Submission::one(opcode::AcceptMulti::new(fd).flags(libc::SOCK_CLOEXEC).build().user_data(token(Op::Accept, i, 0)))
}

/// The one-shot tick, re-armed on every expiry.
pub fn tick() -> Submission {
    Submission::one(opcode::Timeout::new(&TICK_TIMESPEC).build().user_data(token(Op::Tick, 0, 0)))
}

/// A multishot poll of the shard's mailbox.
pub fn mailbox(mailbox: &Mailbox) -> Submission {
    let fd = types::Fd(mailbox.fd());
    Submission::one(opcode::PollAdd::new(fd, libc::POLLIN as u32).multi(true).build().user_data(token(
        Op::Mailbox,
        0,
        0,
    )))
}

/// One receive of a connection's first bytes, into a ring buffer.
pub fn head_recv(fd: RawFd, idx: usize, generation: u32, bufs: &BufRing) -> Submission {
    Submission::one(
        opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), bufs.buffer_size())
            .buf_group(bufs.group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(token(Op::HeadRecv, idx, generation)),
    )
}

/// A multishot receive into ring buffers.
pub fn recv(fd: RawFd, idx: usize, generation: u32, bufs: &BufRing) -> Submission {
    Submission::one(opcode::RecvMulti::new(types::Fd(fd), bufs.group).build().user_data(token(
        Op::Recv,
        idx,
        generation,
    )))
}

/// The connection's next `sendmsg`, if none is in flight and bytes wait: its `msghdr` and
/// iovecs are boxed in the send queue, which keeps them and the bytes they list until the
/// completion (`SendQueue::complete` or `abort_in_flight`).
pub fn send(queue: &mut SendQueue, fd: RawFd, idx: usize, generation: u32, bufs: &BufRing) -> Option<Submission> {
    let hdr = queue.prepare(bufs)?;
    Some(Submission::one(
        opcode::SendMsg::new(types::Fd(fd), hdr).flags(libc::MSG_NOSIGNAL as u32).build().user_data(token(
            Op::Send,
            idx,
            generation,
        )),
    ))
}

/// A connect to `addr` linked to its timeout (two operations of the connection); `memory` keeps
/// the address and timespec the kernel reads until the connection is freed.
pub fn connect(
    memory: &mut Option<Box<ConnectMemory>>,
    fd: RawFd,
    idx: usize,
    generation: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> Submission {
    let m = memory.insert(Box::new(ConnectMemory {
        addr: socket2::SockAddr::from(addr),
        timeout: types::Timespec::from(timeout),
    }));
    let connect = opcode::Connect::new(types::Fd(fd), m.addr.as_ptr().cast(), m.addr.len())
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(token(Op::Connect, idx, generation));
    let timeout = opcode::LinkTimeout::new(&m.timeout).build().user_data(token(Op::ConnectTimeout, idx, generation));
    Submission { entries: [connect, timeout], len: 2 }
}

/// Cancels the operation with this token; names no memory.
pub fn cancel(op: Op, index: usize, generation: u32) -> Submission {
    Submission::one(opcode::AsyncCancel::new(token(op, index, generation)).build().user_data(token(Op::Cancel, 0, 0)))
}

#[cfg(test)]
pub fn nop() -> Submission {
    Submission::one(opcode::Nop::new().build().user_data(token(Op::Cancel, 0, 0)))
}

/// The most completions a batch wait collects before the thread wakes early: a hot camera's
/// fan-out completes hundreds of sends at once, and those are handled without waiting.
const BATCH_COMPLETIONS: usize = 128;

/// The shard's io_uring: submissions in, completions out.
pub struct Ring {
    pub uring: IoUring,
    /// Completions reaped to make room for submissions, handed out first by the next reap.
    pub backlog: Vec<Completion>,
    shard: u16,
    /// `[runtime] completion_batch_us` when the kernel can wait that way, else `None`.
    batch_wait_us: Option<u32>,
    /// How long a batch wait that sees nothing lasts before the loop goes round anyway.
    idle_wait: Duration,
    /// A dialogue is under way (an answer or a request just went out, a connection was just
    /// accepted): the next wait hands over what comes at once instead of gathering a batch,
    /// so a setup's round trips are not held a batch window each.
    expedite: bool,
    /// Tests: answer submissions EBUSY while completions overflow a full queue, as kernels
    /// that cannot flush the overflow do.
    #[cfg(test)]
    pub emulate_ebusy: bool,
}

impl Ring {
    pub fn new(uring: IoUring, shard: u16, batch_wait_us: u32) -> Ring {
        let batch_wait_us = match batch_wait_us {
            0 => None,
            us if uring.params().is_feature_min_timeout() => Some(us),
            _ => {
                tracing::info!(shard, "this kernel cannot batch completions (before Linux 6.12): handled as they come");
                None
            }
        };
        Ring {
            uring,
            backlog: Vec::new(),
            shard,
            batch_wait_us,
            idle_wait: Duration::from_secs(1),
            expedite: false,
            #[cfg(test)]
            emulate_ebusy: false,
        }
    }

    /// Pushes a submission, all of its entries or none: a linked chain (connect + its timeout)
    /// split across two submissions would leave the timeout with nothing to attach to.
    ///
    /// A full submission queue is handed to the kernel. If the kernel will not take it (EBUSY:
    /// the completion queue overflowed), completions are reaped into `backlog` to make room;
    /// with nothing to reap the shard sleeps a millisecond between tries rather than spin.
    pub fn push(&mut self, sub: Submission) {
        let mut stalled = 0u32;
        loop {
            // SAFETY: a `Submission` is only built in this module, whose constructors make sure
            // that everything an entry points at outlives the operation (see the module doc).
            let pushed = unsafe { self.uring.submission().push_multiple(sub.entries()) };
            if pushed.is_ok() {
                return;
            }
            let progress = match self.submit_queued() {
                Ok(_) => !self.uring.submission().is_full(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    let before = self.backlog.len();
                    self.backlog.extend(self.uring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
                    self.backlog.len() > before
                }
                // A ring that refuses submissions for good cannot run the shard; the panic
                // leaks what is in flight (KernelMemory).
                // A kernel failure, not a peer's: no input of theirs makes io_uring_enter fail for good.
                Err(e) => panic!("shard {}: io_uring submit failed: {e}", self.shard),
            };
            if progress {
                stalled = 0;
                continue;
            }
            if stalled % 1000 == 0 {
                tracing::warn!(
                    shard = self.shard,
                    "io_uring takes no submissions and has no completions to reap; waiting"
                );
            }
            stalled = stalled.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn submit_queued(&mut self) -> std::io::Result<usize> {
        #[cfg(test)]
        if self.emulate_ebusy && self.uring.submission().cq_overflow() && self.uring.completion().is_full() {
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.uring.submit()
    }

    /// Submits what is queued and waits for a completion, unless some were reaped already.
    /// With a batch wait, once one has come the kernel keeps collecting for up to that long
    /// (or until [`BATCH_COMPLETIONS`] are in) before the thread wakes.
    pub fn submit_and_wait(&mut self) -> std::io::Result<usize> {
        if !self.backlog.is_empty() {
            return self.uring.submit_and_wait(0);
        }
        let expedite = std::mem::take(&mut self.expedite);
        let Some(us) = self.batch_wait_us.filter(|_| !expedite) else {
            return self.uring.submit_and_wait(1);
        };
        // The overall timeout only bounds a wait that saw nothing at all (the shard's tick
        // completes long before it); without one the kernel would end the wait at `us` empty.
        let idle = types::Timespec::from(self.idle_wait);
        let args = types::SubmitArgs::new().timespec(&idle).min_wait_usec(us);
        match self.uring.submitter().submit_with_args(BATCH_COMPLETIONS, &args) {
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
            r => r,
        }
    }

    /// The next wait is not to gather a batch: a reply is expected soon (see `expedite`).
    pub fn expedite(&mut self) {
        self.expedite = true;
    }

    /// Moves every completion (those reaped early first) into `into`.
    pub fn reap(&mut self, into: &mut Vec<Completion>) {
        into.append(&mut self.backlog);
        into.extend(self.uring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Runs `f` on a ring with a batch wait on its own thread; `None` if it did not return
    /// within `limit` (a wait that hangs must fail the test, not the test run).
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce(&mut Ring) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let uring = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(64).unwrap();
            let mut ring = Ring::new(uring, 0, 2_000);
            // Long enough that a wait ended by it, not by the completions, shows.
            ring.idle_wait = Duration::from_secs(60);
            let _ = tx.send(f(&mut ring));
        });
        rx.recv_timeout(limit).ok()
    }

    fn completions(ring: &mut Ring) -> usize {
        let mut got = Vec::new();
        ring.reap(&mut got);
        got.len()
    }

    /// Queues a receive from `from` into `buf`.
    ///
    /// # Safety
    /// `from` and `buf` must outlive the operation: the caller waits for its completion.
    unsafe fn push_recv(ring: &mut Ring, from: &std::os::unix::net::UnixStream, buf: &mut [u8]) {
        let sqe = opcode::Recv::new(types::Fd(from.as_raw_fd()), buf.as_mut_ptr(), buf.len() as u32)
            .build()
            .user_data(token(Op::Recv, 0, 0));
        // SAFETY: the caller keeps `from` and `buf` alive until the receive completes.
        unsafe { ring.uring.submission().push(&sqe).unwrap() };
    }

    #[test]
    fn a_batch_wait_hands_over_fewer_completions_than_a_batch_once_they_are_in() {
        let got = within(Duration::from_secs(20), |ring| {
            // A kernel before 6.12: the plain wait, tested everywhere else.
            ring.batch_wait_us?;
            for _ in 0..3 {
                ring.push(nop());
            }
            ring.submit_and_wait().unwrap();
            Some(completions(ring))
        });
        match got {
            Some(Some(n)) => assert_eq!(n, 3, "every completion handed over"),
            Some(None) => {}
            None => panic!("the wait held three completions for a batch of {BATCH_COMPLETIONS}"),
        }
    }

    #[test]
    fn an_expedited_wait_hands_over_the_first_completion_without_gathering() {
        // The wait after an answer went out: a batch window of 10 s would show.
        let got = within(Duration::from_secs(20), |ring| {
            ring.batch_wait_us = ring.batch_wait_us.map(|_| 10_000_000);
            let (tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut buf = [0u8; 16];
            // SAFETY: `buf` and `rx` outlive the operation: the wait below returns only once a
            // completion is in, and this receive is the only operation in flight.
            unsafe { push_recv(ring, &rx, &mut buf) };
            std::io::Write::write_all(&mut &tx, b"now").unwrap();
            ring.expedite();
            let started = std::time::Instant::now();
            ring.submit_and_wait().unwrap();
            (completions(ring), started.elapsed() < Duration::from_secs(5))
        });
        assert_eq!(got, Some((1, true)), "handed over at once, not after the batch window");
    }

    #[test]
    fn a_batch_wait_hands_over_a_completion_that_comes_after_its_window() {
        let got = within(Duration::from_secs(20), |ring| {
            // Bytes arriving well after the 2 ms window, while nothing else is in flight. (Not a
            // timer: any timeout's completion ends a wait.)
            let (mut tx, rx) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut buf = [0u8; 16];
            // SAFETY: `buf` and `rx` outlive the operation: the wait below returns only once a
            // completion is in, and this receive is the only operation in flight.
            unsafe { push_recv(ring, &rx, &mut buf) };
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                std::io::Write::write_all(&mut tx, b"late").unwrap();
                tx
            });
            ring.submit_and_wait().unwrap();
            let n = completions(ring);
            drop(writer.join());
            n
        });
        assert_eq!(got, Some(1), "the late completion ended the wait, not the idle timeout");
    }
}

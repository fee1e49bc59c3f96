//! Spare descriptors that let a server accept at the process's open-file limit.
//!
//! A connection flood can take the whole process to `RLIMIT_NOFILE`; an `accept` then fails with
//! EMFILE (ENFILE for the system's limit) and, retried, fails again at once, while the health
//! check waits in the backlog. The classic answer: keep a few descriptors open for nothing; at
//! the limit, close one and accept into the number it frees. When a connection accepted that way
//! ends, its number is turned back into a spare in place (`dup3` of a placeholder over it), so it
//! is never free for another thread to take in between. Nothing here blocks or knows the
//! protocol spoken: a threaded accept loop uses it today, an async one (tokio's `accept` returns
//! the same EMFILE) can tomorrow.

use std::os::fd::{AsRawFd, OwnedFd};

/// Whether `e` says the process (EMFILE) or the system (ENFILE) is out of descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

pub struct FdReserve {
    /// `/dev/null`, what every spare is a copy of.
    placeholder: OwnedFd,
    spares: Vec<OwnedFd>,
    target: usize,
}

impl FdReserve {
    /// Opens the placeholder and `target` spares (three descriptors for two spares).
    pub fn new(target: usize) -> std::io::Result<FdReserve> {
        let placeholder = OwnedFd::from(std::fs::File::open("/dev/null")?);
        let mut reserve = FdReserve { placeholder, spares: Vec::with_capacity(target), target };
        reserve.top_up();
        if reserve.spares.len() < target {
            return Err(std::io::Error::other("cannot open the spare descriptors"));
        }
        Ok(reserve)
    }

    pub fn spares(&self) -> usize {
        self.spares.len()
    }

    /// Closes one spare so the next `accept` has a number; false if none is left.
    pub fn release_one(&mut self) -> bool {
        self.spares.pop().is_some()
    }

    /// Opens spares again up to the target, as far as descriptors allow (spares lost to a
    /// connection that ended elsewhere, or to another thread that took a freed number).
    pub fn top_up(&mut self) {
        while self.spares.len() < self.target {
            match self.placeholder.try_clone() {
                Ok(fd) => self.spares.push(fd),
                Err(_) => break,
            }
        }
    }

    /// A connection is done with `fd`: below the target its number becomes a spare without ever
    /// being free (dup3 replaces the socket with the placeholder atomically, closing the
    /// socket); otherwise it is simply closed.
    pub fn reclaim(&mut self, fd: OwnedFd) {
        if self.spares.len() >= self.target {
            return;
        }
        match nix::unistd::dup3(self.placeholder.as_raw_fd(), fd.as_raw_fd(), nix::fcntl::OFlag::O_CLOEXEC) {
            // `fd` now owns the placeholder's copy under the same number.
            Ok(_) => self.spares.push(fd),
            // `fd` is still the socket: dropping it closes it.
            Err(_) => drop(fd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dev_null(fd: &OwnedFd) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok_and(|p| p == *"/dev/null")
    }

    #[test]
    fn a_finished_connection_becomes_a_spare_under_its_own_number() {
        let mut reserve = FdReserve::new(2).unwrap();
        assert!(reserve.release_one() && reserve.release_one() && !reserve.release_one());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let number = conn.as_raw_fd();
        reserve.reclaim(OwnedFd::from(conn));
        assert_eq!(reserve.spares(), 1);
        assert_eq!(reserve.spares[0].as_raw_fd(), number, "the number was kept");
        assert!(is_dev_null(&reserve.spares[0]));
        // The socket itself was closed: the client reads the end of the stream.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &client, &mut buf).unwrap(), 0);
        reserve.top_up();
        assert_eq!(reserve.spares(), 2);
        // Full: a further connection is just closed.
        let _c2 = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        reserve.reclaim(OwnedFd::from(conn));
        assert_eq!(reserve.spares(), 2);
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(libc::ECONNABORTED)));
    }
}

//! `[limits] max_camera_sessions`: how many passthrough camera sessions the relay holds with
//! one camera host. Cameras accept 2–10 RTSP sessions and refuse the next one mid-dialogue
//! (after its viewer's OPTIONS and DESCRIBE went through); the relay says 453 Not Enough
//! Bandwidth first instead, without asking the camera.

use std::collections::HashMap;
use std::net::IpAddr;

/// Open passthrough camera sessions per camera host, relay-wide.
#[derive(Debug, Default)]
pub struct CameraHostSessions {
    open: HashMap<IpAddr, usize>,
}

impl CameraHostSessions {
    /// Counts one more session with `host` if `limit` allows it (0: no limit).
    pub fn try_open(&mut self, host: IpAddr, limit: usize) -> bool {
        let n = self.open.entry(host).or_insert(0);
        if limit > 0 && *n >= limit {
            if *n == 0 {
                self.open.remove(&host);
            }
            return false;
        }
        *n = n.saturating_add(1);
        true
    }

    /// One session with `host` ended.
    pub fn close(&mut self, host: IpAddr) {
        if let Some(n) = self.open.get_mut(&host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.open.remove(&host);
            }
        }
    }

    pub fn open(&self, host: IpAddr) -> usize {
        self.open.get(&host).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_gets_its_limit_and_no_more_until_one_ends() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.5".parse().unwrap(), "10.0.0.6".parse().unwrap());
        let mut s = CameraHostSessions::default();
        assert!(s.try_open(a, 2) && s.try_open(a, 2));
        assert!(!s.try_open(a, 2), "a third session with the same camera");
        assert!(s.try_open(b, 2), "another camera has its own count");
        s.close(a);
        assert!(s.try_open(a, 2));
        assert_eq!(s.open(a), 2);
        for _ in 0..5 {
            s.close(b);
        }
        assert_eq!(s.open(b), 0);
        assert!((0..100).all(|_| s.try_open(b, 0)), "0 means no limit");
    }
}

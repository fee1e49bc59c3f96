//! How many sockets accepting may take (`[limits] max_connections`), so that the relay degrades
//! at its open-file limit instead of collapsing.
//!
//! Without a cap, a setup burst takes the process to `RLIMIT_NOFILE`: `accept` fails with
//! `EMFILE`, the listen queue overflows (SYNs retried a second later), and the tunnels already
//! admitted cannot open their camera connections. With it, a connection over the cap is still
//! accepted, answered `503` with `Retry-After` and closed at once, so the queue keeps draining;
//! the descriptors above the cap stay free for what admitted tunnels still need (a camera
//! socket each, opened after their GET and POST) and the process's own files.
//!
//! Refusing at accept cannot tell a tunnel's POST from a new GET, and a GET whose POST is
//! refused holds its socket for the pairing timeout for nothing. So new tunnels are refused
//! earlier, once their first request is read, at three quarters of the cap
//! ([`refuses_new_tunnel`]): the last quarter is for the POSTs of tunnels already begun.

/// Descriptors the process holds besides its connections: standard streams, each shard's ring
/// and mailbox, the listeners, the metrics port and its spares, `/proc` files for the process
/// gauges, log files; with room to spare (a relay with many listeners or shards sets the cap).
pub const PROCESS_DESCRIPTORS: usize = 48;

/// The smallest cap derived from the open-file limit: below it the relay would refuse nearly
/// everything, which a limit that small (a test's `prlimit`) should show as `EMFILE` instead.
pub const MIN_DERIVED_CAP: usize = 8;

/// Seconds a refused client is asked to wait before trying again: a setup burst passes in
/// about that time, and a player retrying sooner would only be refused again.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Camera connections a shared route may hold at once: its camera (two for a camera reached
/// through an HTTP tunnel), and one more while it is being replaced or probed.
pub const CAMERA_SOCKETS_PER_SHARED_ROUTE: usize = 3;

/// How many camera connections the relay may still have to open, which the derived cap leaves
/// room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraSockets {
    /// A passthrough route exists: every admitted tunnel may open a camera connection of its own.
    PerTunnel,
    /// Shared routes only: their cameras, however many viewers.
    AtMost(usize),
}

impl CameraSockets {
    /// What the routes in force may open.
    pub fn of(routes: &[std::sync::Arc<super::route::Route>]) -> CameraSockets {
        if routes.iter().any(|r| r.shared().is_none()) {
            CameraSockets::PerTunnel
        } else {
            CameraSockets::AtMost(routes.len().saturating_mul(CAMERA_SOCKETS_PER_SHARED_ROUTE))
        }
    }
}

/// The cap on open sockets at which accepting refuses: `configured` when set (not 0), else
/// derived from the process's open-file limit, less the process's own descriptors and room for
/// the camera connections still to open. With passthrough routes each tunnel's two accepted
/// connections may need one camera connection after admission, so accepted sockets get two
/// thirds and cameras the other third; with shared routes only, cameras need a few per route.
pub fn connection_cap(configured: usize, open_file_limit: usize, cameras: CameraSockets) -> usize {
    if configured > 0 {
        return configured;
    }
    let room = open_file_limit.saturating_sub(PROCESS_DESCRIPTORS);
    let cap = match cameras {
        CameraSockets::PerTunnel => (room / 3).saturating_mul(2),
        CameraSockets::AtMost(n) => room.saturating_sub(n),
    };
    cap.max(MIN_DERIVED_CAP)
}

/// Whether a connection just accepted is refused: `open` sockets (accepted and camera ones,
/// this one not included) have reached the cap.
pub fn refuses(open: usize, cap: usize) -> bool {
    open >= cap
}

/// Whether a connection whose first request opens a new tunnel (a tunnel GET, plain RTSP, a
/// WebSocket) is refused: `open` sockets, this one included, are past three quarters of the
/// cap. A POST joining its GET is never refused here.
pub fn refuses_new_tunnel(open: usize, cap: usize) -> bool {
    open > cap - cap / 4
}

/// The answer to a connection refused at the cap, written before its first request is read (so
/// an RTSP client reads an HTTP status line, which still says what happened).
pub fn refusal_reply() -> Vec<u8> {
    format!(
        "HTTP/1.0 503 Service Unavailable\r\nServer: rtsp-tunnel-relay\r\nRetry-After: {RETRY_AFTER_SECS}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_cap_wins_over_the_derived_one() {
        for cameras in [CameraSockets::PerTunnel, CameraSockets::AtMost(300)] {
            assert_eq!(connection_cap(500, 20_000, cameras), 500);
            assert_eq!(connection_cap(50_000, 1_024, cameras), 50_000);
        }
    }

    #[test]
    fn the_derived_cap_leaves_a_camera_socket_for_every_admitted_tunnel() {
        for limit in [64usize, 100, 1_024, 20_000, 1 << 20] {
            let cap = connection_cap(0, limit, CameraSockets::PerTunnel);
            if cap == MIN_DERIVED_CAP {
                continue;
            }
            // At the cap every accepted socket may be half of a tunnel still to reach its camera.
            assert!(cap + cap / 2 + PROCESS_DESCRIPTORS <= limit, "limit {limit}: cap {cap}");
        }
        assert_eq!(connection_cap(0, 20_000, CameraSockets::PerTunnel), 13_300);
        assert_eq!(connection_cap(0, 0, CameraSockets::PerTunnel), MIN_DERIVED_CAP);
        assert_eq!(connection_cap(0, usize::MAX, CameraSockets::PerTunnel), (usize::MAX - PROCESS_DESCRIPTORS) / 3 * 2);
    }

    #[test]
    fn shared_routes_only_leave_room_for_their_cameras_alone() {
        assert_eq!(connection_cap(0, 20_000, CameraSockets::AtMost(300)), 20_000 - PROCESS_DESCRIPTORS - 300);
        assert_eq!(connection_cap(0, 100, CameraSockets::AtMost(usize::MAX)), MIN_DERIVED_CAP);
        let cfg = |extra: &str| {
            let text = format!(
                "[listen]\ntunnel = [\"127.0.0.1:1\"]\n[[route]]\npath = \"/a\"\nupstream = \"rtsp://127.0.0.1:9/a\"\nmode = \"shared\"\n{extra}"
            );
            let (_, routes) = crate::config::Config::from_toml(&text).expect("config");
            crate::proto::route::RouteTable::new(routes).routes().to_vec()
        };
        assert_eq!(CameraSockets::of(&cfg("")), CameraSockets::AtMost(CAMERA_SOCKETS_PER_SHARED_ROUTE));
        let mixed = cfg("[[route]]\npath = \"/b\"\nupstream = \"rtsp://127.0.0.1:9/b\"\nmode = \"passthrough\"\n");
        assert_eq!(CameraSockets::of(&mixed), CameraSockets::PerTunnel);
    }

    #[test]
    fn refusal_starts_at_the_cap() {
        assert!(!refuses(9, 10));
        assert!(refuses(10, 10));
        assert!(refuses(11, 10));
    }

    #[test]
    fn new_tunnels_leave_the_last_quarter_to_posts() {
        assert!(!refuses_new_tunnel(75, 100));
        assert!(refuses_new_tunnel(76, 100));
        // Never above the accept cap's own refusal point.
        for cap in 0..50 {
            assert!(refuses_new_tunnel(cap + 1, cap), "cap {cap}");
        }
    }

    #[test]
    fn the_refusal_says_when_to_come_back() {
        let reply = String::from_utf8(refusal_reply()).unwrap();
        assert!(reply.starts_with("HTTP/1.0 503 "));
        assert!(reply.contains("\r\nRetry-After: 1\r\n") && reply.ends_with("\r\n\r\n"));
    }
}

//! How long a connection the relay is ending may take to read its last bytes: a viewer whose
//! session ended (its final reply, a WebSocket close frame), a first request refused or
//! answered. After that it is closed whatever is still queued: a peer that never reads must not
//! hold its connection, and the buffers queued on it, for ever.

use std::time::{Duration, Instant};

/// The grace a closing connection gets.
pub const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// The latest moment a connection whose last bytes are queued at `now` is closed.
pub fn flush_deadline(now: Instant) -> Instant {
    now.checked_add(FLUSH_GRACE).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_connection_gets_the_grace_and_no_more() {
        let now = Instant::now();
        assert_eq!(flush_deadline(now), now + Duration::from_secs(5));
        assert_eq!(flush_deadline(now).saturating_duration_since(now), FLUSH_GRACE);
    }
}

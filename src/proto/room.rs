//! Giving back the room of queues and buffers that are used a few times in a session's life
//! (a viewer's requests, its tunnel's answers) and idle in between: thousands of playing viewers
//! each keeping the room of its last request would cost more than the viewers' other state.
//! Queues on the media path keep their room (it is reused at every packet).

use std::collections::VecDeque;

/// Frees `queue`'s room if it is empty (no allocation: an empty `VecDeque` holds none).
pub fn release_if_empty<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// Frees `buf`'s room if it is empty.
pub fn release_if_empty_vec<T>(buf: &mut Vec<T>) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_empty_queue_gives_its_room_back() {
        let mut q: VecDeque<u32> = (0..10).collect();
        release_if_empty(&mut q);
        assert!(q.capacity() >= 10);
        q.clear();
        release_if_empty(&mut q);
        assert_eq!(q.capacity(), 0);
        let mut v = vec![1u8; 100];
        release_if_empty_vec(&mut v);
        assert_eq!(v.len(), 100);
        v.clear();
        release_if_empty_vec(&mut v);
        assert_eq!(v.capacity(), 0);
    }
}

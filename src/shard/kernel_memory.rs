//! Memory that submissions in flight may name: freed only once the shard has seen every one of
//! them complete, leaked otherwise.
//!
//! A shard that gives up waiting at shutdown, or unwinds from a panic, may still have receives
//! writing into its buffer ring and sends reading its queues. Closing the ring makes current
//! kernels cancel them, but that is the kernel's internal order of teardown, not a promise; so,
//! as tokio-uring and glommio do, what may still be in use is leaked instead of freed.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

pub struct KernelMemory<T> {
    value: ManuallyDrop<T>,
    idle: bool,
}

impl<T> KernelMemory<T> {
    pub fn new(value: T) -> Self {
        KernelMemory { value: ManuallyDrop::new(value), idle: false }
    }

    /// Nothing in flight names this memory any more: dropping it frees it.
    pub fn mark_idle(&mut self) {
        self.idle = true;
    }
}

impl<T> Deref for KernelMemory<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for KernelMemory<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for KernelMemory<T> {
    fn drop(&mut self) {
        if self.idle && !std::thread::panicking() {
            // SAFETY: dropped exactly once, here; `value` is not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.value) };
        } else {
            tracing::warn!(
                what = std::any::type_name::<T>(),
                "memory the kernel may still use is leaked rather than freed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn frees_only_when_idle_and_not_unwinding() {
        let probe = Rc::new(());
        drop(KernelMemory::new(probe.clone()));
        assert_eq!(Rc::strong_count(&probe), 2, "in-flight memory was freed");
        let mut idle = KernelMemory::new(probe.clone());
        idle.mark_idle();
        drop(idle);
        assert_eq!(Rc::strong_count(&probe), 2, "idle memory was not freed");
        let p2 = probe.clone();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut m = KernelMemory::new(p2);
            m.mark_idle();
            panic!("shard failed");
        }));
        assert!(unwound.is_err());
        assert_eq!(Rc::strong_count(&probe), 3, "memory freed while unwinding");
    }
}

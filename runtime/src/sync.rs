//! Synchronisation primitives, in one place so a `--cfg loom` build can swap them for loom's.
//!
//! The interesting part is the *asymmetric fence*. A context's owner thread mutates its own
//! slots on the hot path (push, pop, set) and must exclude foreign readers (`for_each`), which
//! is a store-then-load (Dekker) handshake: each side stores its flag, fences, then loads the
//! other side's flag. A symmetric `fence(SeqCst)` on the owner side costs ~20 cycles per push,
//! several times the whole budget. Linux's `membarrier(PRIVATE_EXPEDITED)` lets the rare side
//! (the reader) pay instead: it makes every running thread of the process execute a full
//! barrier, so the owner only needs to stop the *compiler* from reordering. Where membarrier is
//! unavailable both sides use `fence(SeqCst)`: slower, equally correct.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: no user code runs while the runtime holds its locks, so a
/// poisoned lock only means a panic elsewhere, never a half-updated structure.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(e) => e.into_inner(),
    }
}

#[cfg(not(loom))]
mod fence_impl {
    use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const MEMBARRIER: u8 = 1;
    const FENCE: u8 = 2;

    static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Decides the fence mode once per process. Called on every slow path that precedes the
    /// first fast-path write of a slot, and before every `heavy()`. An owner that observes
    /// `UNKNOWN` falls back to a full fence, which is always correct.
    pub(crate) fn init() {
        if MODE.load(Ordering::Acquire) != UNKNOWN {
            return;
        }
        let mode = if register_membarrier() {
            MEMBARRIER
        } else {
            FENCE
        };
        let _ = MODE.compare_exchange(UNKNOWN, mode, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The owner's half of the handshake.
    #[inline(always)]
    pub(crate) fn light() {
        if MODE.load(Ordering::Relaxed) == MEMBARRIER {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The reader's half of the handshake.
    pub(crate) fn heavy() {
        init();
        fence(Ordering::SeqCst);
        if MODE.load(Ordering::Acquire) == MEMBARRIER && !run_membarrier() {
            // Registration succeeded, so the kernel promised this command works. Owners are
            // already relying on it; carrying on would be a data race, so stop loudly.
            std::process::abort();
        }
    }

    #[cfg(target_os = "linux")]
    fn register_membarrier() -> bool {
        // MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, then one trial run of the command itself.
        // SAFETY: membarrier takes (cmd, flags, cpu_id) integers and touches no user memory.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, 1 << 4, 0, 0) };
        r == 0 && run_membarrier()
    }

    #[cfg(target_os = "linux")]
    fn run_membarrier() -> bool {
        // MEMBARRIER_CMD_PRIVATE_EXPEDITED.
        // SAFETY: as above; the syscall only issues barriers on this process's CPUs.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, 1 << 3, 0, 0) };
        r == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn register_membarrier() -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    fn run_membarrier() -> bool {
        false
    }

    /// Whether owners run with only a compiler fence (for diagnostics and benchmarks).
    pub(crate) fn is_asymmetric() -> bool {
        init();
        MODE.load(Ordering::Acquire) == MEMBARRIER
    }
}

#[cfg(loom)]
mod fence_impl {
    use loom::sync::atomic::{fence, Ordering};

    // loom cannot model membarrier; the symmetric form is the one it checks.
    pub(crate) fn init() {}
    pub(crate) fn light() {
        fence(Ordering::SeqCst);
    }
    pub(crate) fn heavy() {
        fence(Ordering::SeqCst);
    }
    pub(crate) fn is_asymmetric() -> bool {
        false
    }
}

pub(crate) use fence_impl::{heavy, init as init_fence, is_asymmetric, light};

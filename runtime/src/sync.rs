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
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

/// `UnsafeCell` with scoped access only, the form loom can check for data races.
#[cfg(not(loom))]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `thread_local!` with const initialisers; loom's version runs the initialiser lazily.
macro_rules! thread_locals {
    ($($(#[$m:meta])* static $name:ident: $t:ty = const { $init:expr };)*) => {
        #[cfg(not(loom))]
        std::thread_local! { $($(#[$m])* static $name: $t = const { $init };)* }
        #[cfg(loom)]
        loom::thread_local! { $($(#[$m])* static $name: $t = $init;)* }
    };
}
pub(crate) use thread_locals;

/// Process-wide statics; under loom they are created afresh in every modelled execution.
macro_rules! globals {
    ($($(#[$m:meta])* static $name:ident: $t:ty = $init:expr;)*) => {
        $(
            #[cfg(not(loom))]
            $(#[$m])* static $name: $t = $init;
            #[cfg(loom)]
            loom::lazy_static! { $(#[$m])* static ref $name: $t = $init; }
        )*
    };
}
pub(crate) use globals;

/// One round of waiting for another thread: spin, then yield, then sleep. Under loom, a yield
/// that lets the model schedule the thread being waited for.
pub(crate) fn backoff(round: &mut u32) {
    *round += 1;
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    if *round < 64 {
        std::hint::spin_loop();
    } else if *round < 128 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

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
    pub(super) mod membarrier {
        use std::ffi::c_long;

        /// `SYS_membarrier` on the architectures we know it for; elsewhere the full-fence mode
        /// is used, which is always correct. Declared here rather than depending on `libc` for
        /// one call: that crate was a third of a cold build's CPU time (DESIGN.md build gate).
        const SYS_MEMBARRIER: Option<c_long> = if cfg!(target_arch = "x86_64") {
            Some(324)
        } else if cfg!(any(
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "loongarch64"
        )) {
            Some(283)
        } else {
            None
        };

        // The C library's `syscall(2)` wrapper: glibc and musl both export it, std links it.
        unsafe extern "C" {
            fn syscall(number: c_long, ...) -> c_long;
        }

        /// Runs membarrier command `cmd` (one that takes no pointer arguments); its result.
        fn membarrier(cmd: c_long) -> c_long {
            let Some(number) = SYS_MEMBARRIER else {
                return -1;
            };
            // SAFETY: membarrier(cmd, flags, cpu_id) takes three integers and touches no user
            // memory; the commands passed below take no pointer arguments.
            unsafe { syscall(number, cmd, 0 as c_long, 0 as c_long) }
        }

        const PRIVATE_EXPEDITED: c_long = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: c_long = 1 << 4;

        /// Whether `MEMBARRIER_CMD_QUERY` lists the two commands used. Asked first so that a
        /// wrong syscall number (another call that happens to return 0 for these arguments)
        /// leaves the full-fence mode on instead of turning the owners' fence into a compiler
        /// fence alone: the mask a wrong call would have to return is implausible.
        /// `MEMBARRIER_CMD_QUERY`: the supported commands' bits, or -1.
        pub(in crate::sync) fn query() -> c_long {
            membarrier(0)
        }

        pub(in crate::sync) fn supported() -> bool {
            let needed = PRIVATE_EXPEDITED | REGISTER_PRIVATE_EXPEDITED;
            let mask = query();
            (0..1 << 16).contains(&mask) && mask & needed == needed
        }

        pub(super) fn register_membarrier() -> bool {
            supported() && membarrier(REGISTER_PRIVATE_EXPEDITED) == 0 && run_membarrier()
        }

        pub(super) fn run_membarrier() -> bool {
            // Barriers on this process's CPUs only.
            membarrier(PRIVATE_EXPEDITED) == 0
        }
    }
    #[cfg(target_os = "linux")]
    use membarrier::{register_membarrier, run_membarrier};

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
    use loom::sync::atomic::{AtomicUsize, Ordering};

    // loom models neither membarrier nor SeqCst (it treats SeqCst as AcqRel), so both halves
    // are an AcqRel RMW on one location: RMWs of a location are totally ordered, and the later
    // one acquires the earlier one's release, so one side always sees the other's flag. That
    // is the guarantee the real barrier pair is relied on to give: loom checks everything else
    // assuming it, not that membarrier or SeqCst fences provide it.
    loom::lazy_static! {
        static ref BARRIER: AtomicUsize = AtomicUsize::new(0);
    }

    pub(crate) fn init() {}
    pub(crate) fn light() {
        BARRIER.fetch_add(0, Ordering::AcqRel);
    }
    pub(crate) fn heavy() {
        BARRIER.fetch_add(0, Ordering::AcqRel);
    }
    pub(crate) fn is_asymmetric() -> bool {
        false
    }
}

pub(crate) use fence_impl::{heavy, init as init_fence, is_asymmetric, light};

#[cfg(all(
    test,
    not(loom),
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    )
))]
mod tests {
    /// Pins this architecture's membarrier syscall number to the kernel's: the number is ours
    /// (no `libc`), and the query answers with the commands' bits only if it reached
    /// membarrier. A kernel without membarrier (before 4.14, or blocked by seccomp) answers
    /// -1 (ENOSYS, EPERM): the runtime then uses the full fence, which is not a fault, and the
    /// test says so and checks that mode instead.
    #[test]
    fn the_membarrier_number_of_this_architecture_reaches_membarrier() {
        use super::fence_impl::membarrier::{query, supported};
        if query() == -1 {
            eprintln!("membarrier unavailable here (the full fence is used): number not checked");
            assert!(!super::is_asymmetric());
            return;
        }
        assert!(
            supported(),
            "MEMBARRIER_CMD_QUERY through our syscall number did not list PRIVATE_EXPEDITED"
        );
        assert!(
            super::is_asymmetric(),
            "registration failed although the query listed it"
        );
    }
}

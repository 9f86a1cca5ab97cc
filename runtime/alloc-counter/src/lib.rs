//! A global allocator that counts, for the project's own benches and tests (a workspace
//! member that is never published): "a push/pop cycle allocates nothing" is checked with it, not assumed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting allocations and allocated bytes process-wide.
///
/// # Examples
///
/// ```
/// use context_local_alloc_counter::CountingAlloc;
///
/// #[global_allocator]
/// static ALLOC: CountingAlloc = CountingAlloc;
///
/// let before = CountingAlloc::allocations();
/// let v = vec![1u8; 16];
/// assert!(CountingAlloc::allocations() > before);
/// # drop(v);
/// ```
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated and not freed yet (wrapping: frees of memory allocated before counting
/// began cannot happen, the allocator counts from the first allocation).
static LIVE: AtomicUsize = AtomicUsize::new(0);

impl CountingAlloc {
    /// Allocations so far (reallocations count as one each).
    pub fn allocations() -> usize {
        ALLOCATIONS.load(Ordering::SeqCst)
    }

    /// Bytes requested so far (never decreases).
    pub fn bytes() -> usize {
        BYTES.load(Ordering::SeqCst)
    }

    /// Bytes allocated and not yet freed, as requested (`Layout::size`, not what the system
    /// allocator rounds them up to): what a data structure keeps alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local_alloc_counter::CountingAlloc;
    ///
    /// #[global_allocator]
    /// static ALLOC: CountingAlloc = CountingAlloc;
    ///
    /// let before = CountingAlloc::live_bytes();
    /// let v = vec![1u8; 1000];
    /// assert!(CountingAlloc::live_bytes() >= before + 1000);
    /// drop(v);
    /// ```
    pub fn live_bytes() -> usize {
        LIVE.load(Ordering::SeqCst)
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// upholds exactly the contract `System` does; the counters touch no allocated memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded; `ptr` came from `System` via `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

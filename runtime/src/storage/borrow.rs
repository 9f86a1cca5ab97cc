//! The borrow protocol of a slot: the holder's borrows and writes, and foreign readers.
//!
//! The slot's state word (bits in `context/table.rs`) is written only by the context's holder,
//! with plain stores. `for_each` hands out `&V` of *other* contexts' payloads while their
//! holders keep running: a reader announces itself in the index's `readers` count and then
//! waits for `WRITING` to clear on each slot; a writer sets `WRITING` and then checks
//! `readers`, backing off if non-zero. This store-then-load handshake needs a barrier between
//! the store and the load on both sides; the asymmetric fence in `sync.rs` puts the expensive
//! half on the reader.

use std::cell::RefCell;
use std::ptr;

use crate::context::table::{SlotHeader, SHARED_ONE, WRITING};
use crate::context::CtxInner;
use crate::sync::{self as s, lock, Condvar, Mutex, Ordering};

/// Per local index: what foreign readers and waiting writers share. Allocated once per index
/// and reused with it, so a slot can point at it without pointing at its (movable) `Local`.
///
/// Every write of the local in every context reads `readers`: aligned to 128 bytes (the pair
/// of lines x86 prefetches together) so that no other allocation — a context's stack buffer,
/// written on every push — shares its line and makes those reads miss.
#[repr(align(128))]
pub(crate) struct IndexSync {
    pub(crate) readers: s::AtomicUsize,
    wake: Mutex<()>,
    cv: Condvar,
}

impl IndexSync {
    pub(crate) fn new() -> Self {
        Self {
            readers: s::AtomicUsize::new(0),
            wake: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl crate::context::table::WaitReaders for IndexSync {
    fn wait_none(&self) -> bool {
        wait_no_readers(self)
    }
}

/// Marks the slot `WRITING` and waits out foreign readers. `state` is the current state, which
/// the caller checked to be unborrowed. `false` (and nothing marked) if the reader is this very
/// thread, which would wait for itself forever.
#[inline]
#[must_use]
pub(crate) fn begin_write(hdr: &SlotHeader, sync: &IndexSync, state: usize) -> bool {
    hdr.state.store(state | WRITING, Ordering::Relaxed);
    s::light();
    // Acquire: a 0 read here may come from the last reader's decrement, and our write must come
    // after that reader's reads (found by loom: with Relaxed the two were unordered).
    if sync.readers.load(Ordering::Acquire) != 0 {
        return wait_for_readers(hdr, sync, state);
    }
    true
}

/// Like [`begin_write`], but gives up (nothing marked) instead of waiting for a reader.
#[must_use]
pub(crate) fn try_begin_write(hdr: &SlotHeader, sync: &IndexSync, state: usize) -> bool {
    hdr.state.store(state | WRITING, Ordering::Relaxed);
    s::light();
    if sync.readers.load(Ordering::Acquire) != 0 {
        hdr.state.store(state, Ordering::Release);
        return false;
    }
    true
}

#[cold]
#[inline(never)]
fn wait_for_readers(hdr: &SlotHeader, sync: &IndexSync, state: usize) -> bool {
    if iterating_here(sync) {
        hdr.state.store(state, Ordering::Release);
        return false;
    }
    loop {
        // Back off so a reader waiting on this slot can proceed, then wait until none is left.
        hdr.state.store(state, Ordering::Release);
        {
            let mut g = lock(&sync.wake);
            while sync.readers.load(Ordering::Acquire) != 0 {
                g = match sync.cv.wait(g) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
            }
        }
        hdr.state.store(state | WRITING, Ordering::Relaxed);
        s::light();
        if sync.readers.load(Ordering::Acquire) == 0 {
            return true;
        }
    }
}

/// Waits until `sync` has no reader; `false` (at once) if this thread is one.
pub(crate) fn wait_no_readers(sync: &IndexSync) -> bool {
    if iterating_here(sync) {
        return false;
    }
    let mut g = lock(&sync.wake);
    while sync.readers.load(Ordering::Acquire) != 0 {
        g = match sync.cv.wait(g) {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
    }
    true
}

s::thread_locals! {
    /// Indices this thread is iterating with `for_each` right now (usually zero or one).
    static ITERATING: RefCell<Vec<*const IndexSync>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn iterating_here(sync: &IndexSync) -> bool {
    ITERATING
        .try_with(|v| v.borrow().iter().any(|&p| ptr::eq(p, sync)))
        .unwrap_or(false)
}

/// Ends a shared borrow, also on unwind, and runs what was queued for its end.
pub(crate) struct SharedBorrow<'a> {
    pub(crate) hdr: &'a SlotHeader,
    pub(crate) ctx: &'a CtxInner,
}

impl Drop for SharedBorrow<'_> {
    #[inline]
    fn drop(&mut self) {
        let st = self.hdr.state.load(Ordering::Relaxed);
        // Release, like every holder store a reader may observe: a reader's Acquire load must
        // synchronise with whichever store it reads (relaxed stores do not continue a release
        // sequence), or it could miss the payload written before the last write ended.
        self.hdr.state.store(st - SHARED_ONE, Ordering::Release);
        super::settle_if_pending(self.ctx, st - SHARED_ONE);
    }
}

/// A reader's announcement for one index, withdrawn (and waiting writers woken) on drop.
pub(crate) struct Reading(&'static IndexSync);

impl Reading {
    pub(crate) fn start(sync: &'static IndexSync) -> Self {
        let _ = ITERATING.try_with(|v| v.borrow_mut().push(sync));
        sync.readers.fetch_add(1, Ordering::SeqCst);
        s::heavy();
        Reading(sync)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        let _ = ITERATING.try_with(|v| {
            let mut v = v.borrow_mut();
            if let Some(pos) = v.iter().rposition(|&p| ptr::eq(p, self.0)) {
                v.remove(pos);
            }
        });
        if self.0.readers.fetch_sub(1, Ordering::Release) == 1 {
            let _g = lock(&self.0.wake);
            self.0.cv.notify_all();
        }
    }
}

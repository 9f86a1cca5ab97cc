//! What only some contexts ever need, in one box allocated by the first use that needs it:
//! removals queued from afar, replaced slots, the cached capture, deep lends, a frame left to
//! its readers. A context that only binds and reads values (or a child that only reads what it
//! inherited) never allocates it: 100,000 connections' contexts do not pay for it.

use std::ptr::{self, NonNull};

use super::frame::Frame;
use super::table::{Queued, SlotHeader};
use crate::sync::{Arc, AtomicPtr, AtomicUsize, Mutex, Ordering, UnsafeCell};

/// A slot taken out of the table by a write that did not wait for the slot's readers (see
/// `Storage::relocate`): it keeps the old value for them until this context's holder drops
/// it (`reclaim_replaced`, teardown); then it is reused by the next such write of its local.
pub(crate) struct ReplacedSlot {
    pub(crate) index: usize,
    pub(crate) hdr: NonNull<SlotHeader>,
    /// Its values were dropped: only the memory is left (reusable).
    pub(crate) reclaimed: bool,
}

/// Work posted by a `StackGuard` or a scope that could not do it at once.
pub(super) struct Pending {
    pub(super) index: usize,
    pub(super) op: Queued,
}

/// The rarely needed part of a context (see the module docs).
pub(crate) struct Rare {
    /// Removals that `StackGuard`s posted while the context was held elsewhere or its slot
    /// borrowed; applied by the next holder.
    pub(super) pending: Mutex<Vec<Pending>>,
    /// Slots replaced while foreign readers were on them. Only under the context's detach lock (see `CtxInner::detach_lock`).
    pub(super) replaced: UnsafeCell<Vec<ReplacedSlot>>,
    /// This context's last captured frame; stale once `changed` (rebuilt then), or but for
    /// the locals in `dirty` (updated then). Holder-only.
    pub(super) cache: UnsafeCell<Option<Arc<Frame>>>,
    /// Indices of the inheritable locals written since the last capture (each once: pushed
    /// when its slot's frozen copy goes stale, see `SlotHeader::mark_frozen_stale`).
    /// Holder-only.
    pub(super) dirty: UnsafeCell<Vec<usize>>,
    /// Captures building a frame right now: more than one when a `Clone` run by a build
    /// captures (see `capture_own`). Holder-only.
    pub(super) building: AtomicUsize,
    /// Lends of inherited values beyond the inline ones (see `frame::Lends`). Holder-only.
    pub(super) lends: UnsafeCell<Vec<usize>>,
    /// The inherited frame, when teardown could not wait for its readers.
    pub(super) leftover: Mutex<Option<Arc<Frame>>>,
}

impl Rare {
    fn new() -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            replaced: UnsafeCell::new(Vec::new()),
            cache: UnsafeCell::new(None),
            dirty: UnsafeCell::new(Vec::new()),
            building: AtomicUsize::new(0),
            lends: UnsafeCell::new(Vec::new()),
            leftover: Mutex::new(None),
        }
    }
}

/// A context's [`Rare`] part: null until first needed, then installed once and kept until
/// the context is dropped.
pub(crate) struct RareCell(AtomicPtr<Rare>);

impl RareCell {
    pub(crate) fn new() -> Self {
        Self(AtomicPtr::new(ptr::null_mut()))
    }

    /// The rare part, if some use allocated it.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Rare> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was installed by `get_or_init` from a leaked box that is
        // freed only when `self` drops.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// The rare part, allocated now if needed. Any thread may call it (a guard posting a
    /// removal from afar): the first installation wins, a losing one is freed.
    #[inline]
    pub(crate) fn get_or_init(&self) -> &Rare {
        match self.get() {
            Some(rare) => rare,
            None => self.init(),
        }
    }

    #[cold]
    #[inline(never)]
    fn init(&self) -> &Rare {
        let new = Box::into_raw(Box::new(Rare::new()));
        match self
            .0
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: installed: lives until `self` drops.
            Ok(_) => unsafe { &*new },
            Err(installed) => {
                // SAFETY: `new` never left this function; `installed` came from a winning
                // call like this one and lives until `self` drops.
                unsafe {
                    drop(Box::from_raw(new));
                    &*installed
                }
            }
        }
    }
}

impl Drop for RareCell {
    fn drop(&mut self) {
        let p = self.0.load(Ordering::Relaxed);
        if !p.is_null() {
            // SAFETY: installed by `get_or_init` from a box; nobody can reach it any more.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

//! A context's slot table: one cell per local index, pointing at that local's slot.
//!
//! The cells of slots `0..INLINE` live inside the context, the rest in a map by index
//! (`overflow.rs`) whose cells are never moved, so a slot reference stays valid while the
//! context lives. A context pays for `INLINE` cells and one pointer, plus a few words per local
//! bound past them, whatever its index. The table knows slots only through their type-erased
//! header; `storage` owns what is inside them.

use std::ptr::{self, NonNull};

use super::overflow::Overflow;
use super::slot_state::SlotState;
use crate::sync::{AtomicBool, AtomicPtr, AtomicU32, Ordering, UnsafeCell};

/// Slots 0..INLINE live inside the context itself: no extra indirection for the first locals.
/// Few, because every context pays for them (100,000 connections' contexts, 8 bytes each).
pub(crate) const INLINE: usize = 8;

/// A frozen payload (`Arc<V>` of the local's payload type), shared by snapshots and forks.
/// std's `Arc` even under loom (loom's cannot hold a `dyn`): frozen values are immutable, so
/// only their reference counts are shared, which std's `Arc` gets right.
pub(crate) type Frozen = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Freezes a slot's payload, or `None` if it holds nothing. The slot's context is held by the
/// caller.
pub(crate) type CaptureFn = unsafe fn(NonNull<SlotHeader>) -> Option<Frozen>;

/// What a context can do with a slot without knowing its type. Implemented in `storage`.
pub(crate) struct SlotVTable {
    /// Moves out the slot's values (teardown): `Values` (`None` if it holds none), or
    /// `Readers`/`Busy` when it cannot be taken now (see `Taken`).
    pub(crate) take: unsafe fn(NonNull<SlotHeader>) -> Taken,
    /// Does queued work (a `StackGuard`'s removal, a scope's restore) without waiting:
    /// `Readers` when a foreign reader is there (the caller waits outside its locks and
    /// retries). The context's holder (`Holder`) marks a slot it cannot write now (borrowed, or
    /// iterated by this thread) so that its next use retries; a foreign claimant (`Visitor`)
    /// marks nothing. The work is consumed only when `Done`.
    pub(crate) remove: unsafe fn(NonNull<SlotHeader>, &mut Queued, Remover) -> Removal,
    /// Frees the slot and whatever it still holds.
    pub(crate) free: unsafe fn(NonNull<SlotHeader>),
    /// Waits for the slot's foreign readers (see [`WaitReaders`]): through the slot's own
    /// reference to its local's readers, so the header needs none.
    pub(crate) wait_readers: unsafe fn(NonNull<SlotHeader>) -> bool,
}

/// What taking a slot's values found (see [`SlotVTable::take`]).
pub(crate) enum Taken {
    /// The values, if any.
    Values(Option<Box<dyn Send>>),
    /// Another thread is reading the slot: wait for it (without holding any lock), then retry.
    Readers,
    /// The slot cannot be taken now and waiting would not help: it is borrowed (a leaked
    /// borrow) or read by this very thread's `for_each`. Its values stay in place.
    Busy,
}

/// Waits for the foreign readers of one slot: how a context waits for them without knowing
/// the slot's type (`storage` implements it).
pub(crate) trait WaitReaders: Sync {
    /// Waits until no reader marks `hdr`; `false` (at once) if that would wait for this very
    /// thread (directly or through others).
    fn wait_for_slot_readers(&self, hdr: &SlotHeader) -> bool;
}

/// Work on one slot queued for the context's holder by a party that could not do it at once
/// (the context was held elsewhere, or the slot borrowed).
pub(crate) enum Queued {
    /// Remove the element a `StackGuard` or a stack scope pushed as this number.
    Remove(u64),
    /// A `Local` scope ended after its context was left: bind this again (an `Option<T>`,
    /// boxed; taken out when applied) — what is bound then goes.
    Restore(Option<Box<dyn std::any::Any + Send>>),
}

impl Queued {
    /// What dropping this work unapplied drops (a restore's value), for the caller to drop
    /// outside its locks.
    pub(crate) fn into_value(self) -> Option<Box<dyn Send>> {
        match self {
            Queued::Remove(_) => None,
            Queued::Restore(v) => v.map(|v| Box::new(v) as Box<dyn Send>),
        }
    }
}

/// Who removes a guard's value (see [`SlotVTable::remove`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remover {
    /// The context's holder: entered on this thread (or a task being polled).
    Holder,
    /// A thread holding a brief `Removing` claim.
    Visitor,
}

/// The outcome of a guard's removal.
pub(crate) enum Removal {
    /// Removed: the caller drops it.
    Done(Option<Box<dyn Send>>),
    /// The slot is borrowed or being read by this thread: try again later.
    Busy,
    /// A foreign reader is there: wait for it (outside any lock), then retry.
    Readers,
}

/// The type-independent head of every slot: `storage::Slot<V>` starts with it (`repr(C)`).
///
/// Only the state word is inline: the hot paths touch it and the payload, which then share the
/// slot's first cache line. Everything only cold paths need is behind `cold` (reached through
/// `Deref`).
#[repr(C)]
pub(crate) struct SlotHeader {
    /// What the slot is doing (borrowed, written, ...): see `slot_state.rs`. The borrow
    /// protocol that uses it is in `storage/borrow.rs`.
    pub(crate) state: SlotState,
    cold: Box<SlotCold>,
}

/// What only cold paths need of a slot.
pub(crate) struct SlotCold {
    pub(crate) vtable: &'static SlotVTable,
    /// For an inheritable local: freezes its payload for a snapshot.
    pub(crate) capture: Option<CaptureFn>,
    /// The serial of the local this slot belongs to (see `frame::Entry`).
    pub(crate) serial: u64,
    /// The local's name, for messages about the slot.
    pub(crate) name: &'static str,
    /// Foreign readers (`for_each`) handing out this slot's payload right now; see
    /// `storage/borrow.rs`. (32 bits: one per thread reading at once.)
    pub(crate) slot_readers: AtomicU32,
    /// Captures and waits keeping the slot alive right now (`CtxInner::keep_slot_alive`, in
    /// `capture.rs`), and whether its local was dropped meanwhile — then the last of them frees
    /// it. Both under the context's detach lock.
    pub(crate) kept_alive: AtomicU32,
    pub(crate) orphaned: AtomicBool,
    /// For an inheritable local: its payload as last frozen for a capture, reused while
    /// `frozen_fresh` says no write came since. Holder-only.
    pub(crate) frozen: UnsafeCell<Option<Frozen>>,
    pub(crate) frozen_fresh: AtomicBool,
    /// A capture is cloning the payload right now (its `Clone` runs): a capture nested in that
    /// `Clone` cannot copy it. Holder-only.
    pub(crate) capturing: AtomicBool,
}

impl SlotHeader {
    pub(crate) fn new(present: bool, cold: SlotCold) -> Self {
        Self {
            state: SlotState::new(present),
            cold: Box::new(cold),
        }
    }

    /// The payload changed: the next capture freezes it anew. Returns whether the frozen copy
    /// was fresh until now (then the caller lists the slot for the next capture, see
    /// `CtxInner::note_dirty`). Holder-only.
    #[inline]
    pub(crate) fn mark_frozen_stale(&self) -> bool {
        let fresh = self.cold.frozen_fresh.load(Ordering::Relaxed);
        if fresh {
            self.cold.frozen_fresh.store(false, Ordering::Relaxed);
        }
        fresh
    }
}

impl std::ops::Deref for SlotHeader {
    type Target = SlotCold;

    fn deref(&self) -> &SlotCold {
        &self.cold
    }
}

impl SlotHeader {
    /// See [`SlotVTable::take`].
    ///
    /// # Safety
    ///
    /// `hdr` must point to a live slot of a context the caller holds exclusively, and the
    /// caller must hold that context's detach lock.
    pub(crate) unsafe fn take(hdr: NonNull<SlotHeader>) -> Taken {
        // SAFETY: forwarded from the caller; the vtable is the one of the slot's own type.
        unsafe { (hdr.as_ref().vtable.take)(hdr) }
    }

    /// See [`SlotVTable::remove`].
    ///
    /// # Safety
    ///
    /// As [`take`](Self::take).
    pub(crate) unsafe fn remove(hdr: NonNull<SlotHeader>, op: &mut Queued, by: Remover) -> Removal {
        // SAFETY: as in `take`.
        unsafe { (hdr.as_ref().vtable.remove)(hdr, op, by) }
    }

    /// Waits until no foreign reader marks the slot (see [`WaitReaders::wait_for_slot_readers`]);
    /// `false` if that would wait for this very thread.
    ///
    /// # Safety
    ///
    /// `hdr` must point to a live slot (kept alive by the caller).
    pub(crate) unsafe fn wait_readers(hdr: NonNull<SlotHeader>) -> bool {
        // SAFETY: forwarded from the caller; the vtable is the one of the slot's own type.
        unsafe { (hdr.as_ref().vtable.wait_readers)(hdr) }
    }

    /// See [`SlotVTable::free`].
    ///
    /// # Safety
    ///
    /// `hdr` must point to a live slot that nobody else can reach any more.
    pub(crate) unsafe fn free(hdr: NonNull<SlotHeader>) {
        // SAFETY: as in `take`.
        unsafe { (hdr.as_ref().vtable.free)(hdr) }
    }
}

pub(crate) struct Table {
    inline: [AtomicPtr<SlotHeader>; INLINE],
    /// The cells beyond `inline`, by index (allocated when a local past `INLINE` is bound).
    overflow: Overflow<SlotHeader>,
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            inline: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            overflow: Overflow::new(),
        }
    }

    /// The slot pointer cell for `index`, if one exists.
    #[inline]
    pub(crate) fn cell(&self, index: usize) -> Option<&AtomicPtr<SlotHeader>> {
        if index < INLINE {
            return Some(&self.inline[index]);
        }
        self.overflow.cell(index)
    }

    /// The slot at `index`, which may be any number (an unassigned key's too): one
    /// comparison decides the common case of the first locals.
    #[inline]
    pub(crate) fn slot_at(&self, index: usize) -> Option<NonNull<SlotHeader>> {
        if index < INLINE {
            return NonNull::new(self.inline[index].load(Ordering::Acquire));
        }
        self.overflow_slot(index)
    }

    /// Beyond the inline slots (programs with many locals): kept inline too — a call here
    /// doubles the cost of every access to those locals.
    #[inline]
    fn overflow_slot(&self, index: usize) -> Option<NonNull<SlotHeader>> {
        NonNull::new(self.overflow.cell(index)?.load(Ordering::Acquire))
    }

    /// Like [`cell`](Self::cell), creating the cell first. Only the context's holder calls it.
    pub(crate) fn cell_or_grow(&self, index: usize) -> &AtomicPtr<SlotHeader> {
        if index < INLINE {
            return &self.inline[index];
        }
        self.overflow.cell_or_insert(index)
    }

    /// Every slot pointer cell.
    pub(crate) fn for_each_cell(&self, mut f: impl FnMut(&AtomicPtr<SlotHeader>)) {
        self.inline.iter().for_each(&mut f);
        self.overflow.for_each_cell(f);
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // Last reference to the context: nobody can reach the slots any more. Values still in
        // them (see `CtxInner::teardown`) go with them; the cells go with `overflow`.
        self.for_each_cell(|cell| {
            if let Some(hdr) = NonNull::new(cell.load(Ordering::Relaxed)) {
                // SAFETY: exclusive access (`&mut self`); the slot is live and ours.
                unsafe { SlotHeader::free(hdr) };
            }
        });
    }
}

//! Slots: one local's storage in one context, and what a context can do with it untyped.
//!
//! A slot is boxed once per (context, local) and reused: release-on-pop only marks it not
//! present, so a push/pop cycle never allocates.

use std::any::Any;
use std::ptr::NonNull;

use super::borrow::{begin_write, Contended, IndexSync, Mode};
use crate::context::slot_state::{Seen, SlotState};
use crate::context::table::WaitReaders;
use crate::context::table::{
    CaptureFn, Frozen, Queued, Removal, Remover, SlotCold, SlotHeader, SlotVTable, Taken,
};
use crate::sync::{AtomicBool, AtomicU32, UnsafeCell};

/// What a slot holds.
pub(crate) trait Payload: Send + Sized + 'static {
    fn empty() -> Self;
    fn is_present(&self) -> bool;
    /// Moves out everything that must be dropped when the context ends, leaving `empty()`.
    fn take_all(&mut self) -> Option<Box<dyn Send>>;
    /// Removes the value pushed by guard `id`, if it is still there.
    fn remove_guarded(&mut self, _id: u64) -> Option<Box<dyn Send>> {
        None
    }
    /// Binds `previous` (a scope's, see [`Queued::Restore`]) again; returns what it displaced.
    fn restore_scoped(&mut self, previous: Box<dyn Any + Send>) -> Option<Box<dyn Send>> {
        // Only a `Local`'s payload is restored: anything else is just dropped.
        Some(Box::new(previous))
    }
    /// How an unnamed local is called in messages: its value type.
    fn label() -> &'static str;
    /// `self` (empty) replaces `old` in a fresh slot (`Storage::relocate`): carry over what
    /// must stay unique per context, such as the numbers guards remove their values by.
    fn succeed(&mut self, _old: &Self) {}
}

/// A payload that can be handed down to forks: an inheritable local's (`T: Clone + Sync`).
pub(crate) trait Share: Payload + Sync {
    /// A copy for a snapshot or a fork: the values, nothing of the context's bookkeeping.
    fn share(&self) -> Self;
}

/// How an inheritable local's payload is frozen (for captures) and marked stale.
pub(crate) struct Inherit<V> {
    pub(crate) share: fn(&V) -> V,
    pub(crate) capture: CaptureFn,
}

impl<V> Clone for Inherit<V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for Inherit<V> {}

impl<V: Share> Inherit<V> {
    pub(crate) const fn of() -> Self {
        Self {
            share: V::share,
            capture: capture_impl::<V>,
        }
    }
}

/// # Safety
///
/// `hdr` must head a live `Slot<V>` of a context the caller holds, not being written.
unsafe fn capture_impl<V: Share>(hdr: NonNull<SlotHeader>) -> Option<Frozen> {
    // SAFETY: per the caller.
    let slot = unsafe { slot::<V>(hdr) };
    // A shared borrow while `share` (the user's `Clone`) runs, so that a `Clone` writing its
    // own local is refused (`Borrowed`) instead of getting `&mut` to what is being cloned.
    slot.hdr.state.begin_shared(slot.hdr.state.holder_view());
    let _borrow = EndShared(&slot.hdr.state);
    // We hold the context and nobody writes the payload (per the caller): a shared read, like
    // the holder's own `with`.
    slot.value.with(|v| {
        // SAFETY: see above.
        let v = unsafe { &*v };
        v.is_present()
            .then(|| std::sync::Arc::new(v.share()) as Frozen)
    })
}

/// Ends the shared borrow of a capture, also on unwind. Work queued meanwhile is done at the
/// slot's next use.
struct EndShared<'a>(&'a SlotState);

impl Drop for EndShared<'_> {
    fn drop(&mut self) {
        self.0.end_shared();
    }
}

/// Aligned to a cache line so that two contexts' slots, written on every push and pop, never
/// share one. (Not to the pair of lines x86 prefetches together: that doubled the memory of
/// a small slot, for every (context, local) pair.)
#[repr(C, align(64))]
pub(crate) struct Slot<V> {
    pub(crate) hdr: SlotHeader,
    pub(crate) sync: &'static IndexSync,
    pub(crate) value: UnsafeCell<V>,
}

impl<V: Payload> Slot<V> {
    const VTABLE: SlotVTable = SlotVTable {
        take: take_impl::<V>,
        remove: remove_impl::<V>,
        free: free_impl::<V>,
        wait_readers: wait_readers_impl::<V>,
    };

    pub(crate) fn new(
        sync: &'static IndexSync,
        capture: Option<CaptureFn>,
        (serial, name): (u64, &'static str),
        value: V,
    ) -> Box<Self> {
        Box::new(Slot {
            hdr: SlotHeader::new(
                value.is_present(),
                SlotCold {
                    vtable: &Self::VTABLE,
                    capture,
                    serial,
                    name,
                    slot_readers: AtomicU32::new(0),
                    kept_alive: AtomicU32::new(0),
                    orphaned: AtomicBool::new(false),
                    frozen: UnsafeCell::new(None),
                    frozen_fresh: AtomicBool::new(false),
                    capturing: AtomicBool::new(false),
                },
            ),
            sync,
            value: UnsafeCell::new(value),
        })
    }

    /// Ends a write that ran no user code, from `state`, the state it began with: nothing can
    /// have changed `PENDING` or `INIT` meanwhile.
    #[inline]
    pub(crate) fn end_write_from(&self, state: Seen) {
        // SAFETY: we still hold WRITING, so no one else touches the payload.
        let present = self.value.with(|v| unsafe { (*v).is_present() });
        self.hdr.state.end_write_from(state, present);
    }

    /// Ends a write, publishing whether the payload is present; keeps `PENDING` and `INIT`.
    #[inline]
    pub(crate) fn end_write(&self) -> Seen {
        // SAFETY: we still hold WRITING, so no one else touches the payload.
        let present = self.value.with(|v| unsafe { (*v).is_present() });
        self.hdr.state.end_write(present)
    }
}

/// # Safety
///
/// `hdr` must head a live `Slot<V>` of a context the caller holds.
unsafe fn slot<'a, V>(hdr: NonNull<SlotHeader>) -> &'a Slot<V> {
    // SAFETY: per the caller; `Slot<V>` is `repr(C)` with the header first.
    unsafe { hdr.cast::<Slot<V>>().as_ref() }
}

/// # Safety
///
/// `hdr` must head a live `Slot<V>` of a context the caller holds exclusively.
unsafe fn take_impl<V: Payload>(hdr: NonNull<SlotHeader>) -> Taken {
    // SAFETY: per the caller.
    let slot = unsafe { slot::<V>(hdr) };
    let state = slot.hdr.state.holder_view();
    // Borrowed: no user frame is left in a context being torn down, so only through a leaked
    // borrow. Leave it for the final free.
    if state.is_borrowed() {
        return Taken::Busy;
    }
    match begin_write(&slot.hdr, slot.sync, state, Mode::Try) {
        Ok(()) => {}
        Err(Contended::Readers) => return Taken::Readers,
        // This thread's own `for_each` is reading the slot.
        Err(_) => return Taken::Busy,
    }
    // Its caller marks the context changed (the capture rebuilds the frame).
    slot.hdr.mark_frozen_stale();
    // SAFETY: we hold the context, set WRITING, and no foreign reader is there.
    let out = slot.value.with_mut(|v| unsafe { (*v).take_all() });
    slot.hdr.state.clear();
    Taken::Values(out)
}

/// # Safety
///
/// As `take_impl`.
unsafe fn remove_impl<V: Payload>(
    hdr: NonNull<SlotHeader>,
    op: &mut Queued,
    by: Remover,
) -> Removal {
    // SAFETY: per the caller.
    let slot = unsafe { slot::<V>(hdr) };
    let state = slot.hdr.state.holder_view();
    let begun = if !state.is_borrowed() {
        begin_write(&slot.hdr, slot.sync, state, Mode::Try)
    } else {
        Err(Contended::Iterating)
    };
    match begun {
        Ok(()) => {}
        Err(Contended::Readers) => return Removal::Readers,
        // Borrowed, or read by this thread's own `for_each`.
        Err(_) => {
            if by == Remover::Holder {
                // Retried when the borrow ends, or when the slot is next used.
                slot.hdr.state.mark_pending();
            }
            return Removal::Busy;
        }
    }
    // Its caller marks the context changed (the capture rebuilds the frame).
    slot.hdr.mark_frozen_stale();
    let out = slot.value.with_mut(|v| {
        // SAFETY: we hold the context, set WRITING, and no foreign reader is there.
        let v = unsafe { &mut *v };
        match op {
            Queued::Remove(id) => v.remove_guarded(*id),
            Queued::Restore(previous) => previous.take().and_then(|p| v.restore_scoped(p)),
        }
    });
    slot.end_write_from(state.without_pending());
    Removal::Done(out)
}

/// # Safety
///
/// `hdr` must head a live `Slot<V>`.
unsafe fn wait_readers_impl<V: Payload>(hdr: NonNull<SlotHeader>) -> bool {
    // SAFETY: per the caller.
    let slot = unsafe { slot::<V>(hdr) };
    slot.sync.wait_for_slot_readers(&slot.hdr)
}

/// # Safety
///
/// `hdr` must head a `Slot<V>` allocated by `Slot::new`, unreachable by anyone else.
unsafe fn free_impl<V: Payload>(hdr: NonNull<SlotHeader>) {
    // SAFETY: allocated as `Box<Slot<V>>` in `Slot::new`; exclusive per the caller.
    drop(unsafe { Box::from_raw(hdr.cast::<Slot<V>>().as_ptr()) });
}

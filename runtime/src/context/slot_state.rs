//! A slot's state word: its bit layout and every transition of it, with its memory ordering.
//!
//! Only the context's holder writes the word, with plain stores (no read-modify-write): the
//! holder's borrows cost a load and a store. Foreign readers (`for_each`, `contexts()`) only
//! load it, after marking the slot (`storage/borrow.rs` has that handshake). Every store a
//! foreign reader may observe is `Release`: a reader's `Acquire` load must synchronise with
//! whichever store it reads (relaxed stores do not continue a release sequence), or it could
//! miss the payload written before the last write ended. Stores of bits only the holder reads
//! (`PENDING`, `INIT`) are `Relaxed`.

use crate::sync::{AtomicUsize, Ordering};

/// The payload holds a value (a bound local, a non-empty stack). Read by other threads.
const PRESENT: usize = 1;
/// The holder is mutating the payload or lends it out as `&mut`.
const WRITING: usize = 2;
/// Work is queued for when the slot's borrows end (a guard's removal, the release of a context
/// left while this slot was borrowed). Holder-only meaning.
const PENDING: usize = 4;
/// The local's initializer is running in this context (`Local::with_init`), so a use of the
/// local inside it is reported instead of recursing. Holder-only meaning.
const INIT: usize = 8;
/// With `WRITING`: the writer is waiting for the readers on the slot and has not touched the
/// payload yet, so a reader already inside a `for_each` callback may still read it.
const WAITING: usize = 16;
/// One shared borrow (nested `with`s count up). Holder-only meaning.
const SHARED_ONE: usize = 32;
/// Any borrow.
const BORROWS: usize = WRITING | !(SHARED_ONE - 1);

/// One value of a slot's state word, as loaded: what the slot is doing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen(usize);

impl Seen {
    /// A slot with nothing in it and nothing going on (a fresh one, before its first write).
    pub(crate) const EMPTY: Seen = Seen(0);

    /// The payload holds a value.
    #[inline(always)]
    pub(crate) fn is_present(self) -> bool {
        self.0 & PRESENT != 0
    }

    /// The holder writes the payload (or waits to, see [`writer_waiting`](Self::writer_waiting)).
    #[inline(always)]
    pub(crate) fn is_writing(self) -> bool {
        self.0 & WRITING != 0
    }

    /// A writer waits for the readers on the slot and has not touched the payload yet.
    #[inline(always)]
    pub(crate) fn writer_waiting(self) -> bool {
        self.0 & WAITING != 0
    }

    /// Some borrow (shared or `&mut`) is open.
    #[inline(always)]
    pub(crate) fn is_borrowed(self) -> bool {
        self.0 & BORROWS != 0
    }

    /// The local's initializer runs on this slot.
    #[inline(always)]
    pub(crate) fn is_initializing(self) -> bool {
        self.0 & INIT != 0
    }

    /// A shared borrow cannot begin at once: the slot is written, or has work queued.
    #[inline(always)]
    pub(crate) fn blocks_shared(self) -> bool {
        self.0 & (WRITING | PENDING) != 0
    }

    /// Anything but a present value: a borrow, queued work or an initializer (one branch on
    /// the write paths).
    #[inline(always)]
    pub(crate) fn is_busy(self) -> bool {
        self.0 > PRESENT
    }

    /// Work is queued (see [`SlotState::mark_pending`]).
    #[inline(always)]
    pub(crate) fn is_pending(self) -> bool {
        self.0 & PENDING != 0
    }

    /// Queued work that can be applied now: no borrow is left.
    #[inline(always)]
    pub(crate) fn is_pending_unborrowed(self) -> bool {
        self.is_pending() && !self.is_borrowed()
    }

    /// This state with its queued work applied.
    #[inline(always)]
    pub(crate) fn without_pending(self) -> Seen {
        Seen(self.0 & !PENDING)
    }
}

/// A slot's state word (see the module documentation).
pub(crate) struct SlotState(AtomicUsize);

impl SlotState {
    /// The state of a fresh slot, its payload `present` or not, unborrowed.
    pub(crate) fn new(present: bool) -> Self {
        Self(AtomicUsize::new(if present { PRESENT } else { 0 }))
    }

    /// The state as the holder sees it: only the holder stores, so `Relaxed` is exact.
    #[inline(always)]
    pub(crate) fn holder_view(&self) -> Seen {
        Seen(self.0.load(Ordering::Relaxed))
    }

    /// The state as a foreign reader sees it: `Acquire` pairs with the holder's `Release`
    /// stores, so a payload seen present and not written is the one last published.
    #[inline(always)]
    pub(crate) fn foreign_view(&self) -> Seen {
        Seen(self.0.load(Ordering::Acquire))
    }

    /// Counts a shared borrow, from `seen` (the holder's view, not blocking a shared borrow).
    #[inline(always)]
    pub(crate) fn begin_shared(&self, seen: Seen) {
        self.0.store(seen.0 + SHARED_ONE, Ordering::Release);
    }

    /// Ends a shared borrow; returns the state stored.
    #[inline(always)]
    pub(crate) fn end_shared(&self) -> Seen {
        let st = self.0.load(Ordering::Relaxed) - SHARED_ONE;
        self.0.store(st, Ordering::Release);
        Seen(st)
    }

    /// Sets `WRITING` on `seen` (the holder's view). `Relaxed`: what follows it orders it
    /// before any write of the payload — the per-local fence and reader check
    /// (`storage/borrow.rs`), or, after a wait for this slot's readers, the `AcqRel` RMW of
    /// `slot_readers` (the per-slot handshake), whose release half orders this store.
    #[inline(always)]
    pub(crate) fn begin_write(&self, seen: Seen) {
        self.0.store(seen.0 | WRITING, Ordering::Relaxed);
    }

    /// Claims a slot nobody uses (fresh, or replaced and emptied) for writing: `WRITING` alone.
    /// `Relaxed`: a fresh slot is published by the table store that installs it; a reused one
    /// is followed by the `AcqRel` RMW of `slot_readers` that checks it is unread, which
    /// orders this store before the payload is touched.
    #[inline(always)]
    pub(crate) fn claim_for_write(&self) {
        self.0.store(WRITING, Ordering::Relaxed);
    }

    /// A writer waits for the readers on the slot, not touching the payload: `WRITING` and
    /// `WAITING` on `seen`. `Release`, as a reader may see it.
    #[inline(always)]
    pub(crate) fn wait_to_write(&self, seen: Seen) {
        self.0.store(seen.0 | WRITING | WAITING, Ordering::Release);
    }

    /// Stores `seen` back: a write given up before touching the payload, or one that ran no
    /// user code and found the state it began with (`Release`: readers may see it).
    #[inline(always)]
    pub(crate) fn restore(&self, seen: Seen) {
        self.0.store(seen.0, Ordering::Release);
    }

    /// Ends a write begun from `seen`, publishing whether the payload is `present`; keeps
    /// `seen`'s `PENDING` and `INIT`. For writes that ran no user code: nothing changed them.
    #[inline(always)]
    pub(crate) fn end_write_from(&self, seen: Seen, present: bool) {
        let kept = seen.0 & (PENDING | INIT);
        self.0
            .store(if present { PRESENT } else { 0 } | kept, Ordering::Release);
    }

    /// Ends a write, publishing whether the payload is `present`; keeps the `PENDING` and
    /// `INIT` the write's user code may have set. Returns the state stored.
    #[inline(always)]
    pub(crate) fn end_write(&self, present: bool) -> Seen {
        let kept = self.0.load(Ordering::Relaxed) & (PENDING | INIT);
        let st = if present { PRESENT } else { 0 } | kept;
        self.0.store(st, Ordering::Release);
        Seen(st)
    }

    /// Empties the slot after its values were taken out: nothing present, nothing borrowed.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// Queues work for the end of the slot's borrows (holder-only: `Relaxed`).
    #[inline]
    pub(crate) fn mark_pending(&self) {
        let st = self.0.load(Ordering::Relaxed);
        self.0.store(st | PENDING, Ordering::Relaxed);
    }

    /// Marks the local's initializer running, from `seen` (holder-only: `Relaxed`).
    #[inline]
    pub(crate) fn begin_init(&self, seen: Seen) {
        self.0.store(seen.0 | INIT, Ordering::Relaxed);
    }

    /// Unmarks the initializer; returns the state stored.
    #[inline]
    pub(crate) fn end_init(&self) -> Seen {
        let st = self.0.load(Ordering::Relaxed) & !INIT;
        self.0.store(st, Ordering::Relaxed);
        Seen(st)
    }
}

//! `CtxInner`: one context's storage, its holder, its place in a thread's chain, its pending
//! removals and its teardown.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use super::frame::{Inherited, Lends};
use super::owner::{thread_mark, Owner, State};
use super::rare::{Pending, RareCell, ReplacedSlot};
use super::table::{Queued, Removal, Remover, SlotHeader, Table, Taken};
use super::ContextId;
use crate::sync::{lock, AtomicBool, Mutex, MutexGuard, Ordering, UnsafeCell};

/// Teardown rounds before giving up on values whose `Drop` keeps binding new ones: a finite
/// chain of re-bindings completes, an endless one is cut off (its remaining values are then
/// dropped with the context's storage).
const TEARDOWN_ROUNDS: usize = 1 << 16;

/// What a teardown did.
pub(crate) struct Teardown {
    /// The first panic of a value's `Drop`, for the caller to resume.
    pub(crate) panicked: Option<Box<dyn Any + Send>>,
    /// Values had to stay: a reader that this thread waits for, or this thread's own
    /// `for_each`, still reads them. A teardown run again later (see `unfinished`) drops them.
    pub(crate) left: bool,
}

/// The per-context storage. Shared (`Arc`) between its holder (`Context`, `InContext` or the
/// thread), the registry, iterators holding a snapshot, and whoever found it by
/// `registry::lookup` (a guard or scope removing its value from a context it does not hold).
pub(crate) struct CtxInner {
    pub(crate) id: ContextId,
    /// Unique for the life of the process (ids are recycled, serials are not).
    pub(crate) serial: u64,
    pub(crate) owner: Owner,
    pub(crate) table: Table,
    /// The context that was current before this one was entered: this thread's chain of
    /// entered contexts runs through it. Read and written only by the thread that has the
    /// context entered.
    link: UnsafeCell<*const CtxInner>,
    /// Local indices in the order of their first binding here (teardown runs it backwards).
    /// Written only by the context's holder. 32 bits: no program has more locals, and a
    /// context's list costs half.
    pub(super) order: UnsafeCell<Vec<u32>>,
    /// Removals are queued (`Rare::pending`): lets holders skip the lock.
    has_pending: AtomicBool,
    /// The context was left while some of its values were borrowed: its claim ends when the
    /// last of those borrows does (`apply_deferred`). Holder-only.
    release_deferred: AtomicBool,
    /// The holder is scanning its slots (`borrowed_slots`): a dropped `Local` waits with freeing
    /// them until it is done.
    scanning: AtomicBool,
    /// What holds the context right now: its values' open borrows (shared, lent out as `&mut`
    /// to user code, a running initializer) and runtime work that runs user code inside an
    /// access (a capture's `Clone`, a fork's copy-on-write). While it is non-zero the holder
    /// cannot hand the context on, and leaving defers its release (`release_now_or_later`);
    /// at zero leaving is O(1), whatever the number of values. Holder-only, so a plain cell.
    holds: UnsafeCell<u32>,
    /// Entered by a `ContextGuard` the user holds now (`Context::try_enter` until the claim
    /// ends): only such a context can be left inside an access, so only its reads and writes
    /// count in `holds`. The thread's own context, a task's and one entered by `Context::run`
    /// (whose guard `f` cannot reach) pay nothing for it: `CURRENT` carries the flag as a tag
    /// bit, and their reads test that bit, not this field (`current::current_uncounted`).
    /// Holder-only; set before the context is current, cleared after it is left, with `holds`
    /// at zero.
    guarded: UnsafeCell<bool>,
    /// Some replaced slot may still hold values (see `ReplacedSlot`). Holder-only.
    has_replaced: AtomicBool,
    /// The thread that deferred it (`owner::thread_mark`), which still writes the context.
    deferred_by: crate::sync::AtomicUsize,
    /// Serialises detaching slots: teardown vs. a dropped `Local` removing its own slot. Guards
    /// the replaced slots (`Rare::replaced`), which both of them (and the holder's writes) take
    /// out.
    detach: Mutex<()>,
    /// The frame this context was forked from (immutable): inheritable locals it has not
    /// written read from here (see `frame.rs`). Holder-only; released by teardown.
    pub(crate) inherited: UnsafeCell<Option<Inherited>>,
    /// Whether other threads (`for_each`, `contexts`) may still start reading `inherited`
    /// (`FrameRead`); teardown closes it, then waits for `frame_readers`.
    pub(crate) frame_gate: Mutex<bool>,
    /// Foreign readers of that frame right now: while there are any, the holder leaves
    /// `inherited` alone, so the frame's values are never dropped under a reader.
    pub(crate) frame_readers: crate::sync::AtomicUsize,
    /// Inherited values lent out to the holder's user code (see `Lends`). Holder-only.
    pub(crate) lends: UnsafeCell<Lends>,
    /// An inheritable local changed here since the cached capture (`Rare::cache`) was built.
    pub(crate) changed: AtomicBool,
    /// Whether any inheritable local has a slot here (else a capture is what was inherited).
    pub(crate) has_own_inheritable: AtomicBool,
    /// What only some contexts need (see `rare.rs`), allocated on first use.
    pub(crate) rare: RareCell,
}

// SAFETY: a CtxInner is type-erased storage for values that are all `Send` (every slot
// constructor requires it). Its slots, `link` and `order` are used only by the context's
// holder (exclusive by `owner`), and slots are read from other threads only by `for_each`,
// which requires `T: Sync` and synchronises with the holder through the protocol in
// `storage/borrow.rs`.
unsafe impl Send for CtxInner {}
// SAFETY: see above; every field touched by non-holders is an atomic or a mutex.
unsafe impl Sync for CtxInner {}

impl CtxInner {
    pub(crate) fn new(
        id: ContextId,
        serial: u64,
        state: State,
        inherited: Option<Inherited>,
    ) -> Self {
        Self {
            id,
            serial,
            owner: Owner::new(state),
            table: Table::new(),
            link: UnsafeCell::new(ptr::null()),
            order: UnsafeCell::new(Vec::new()),
            has_pending: AtomicBool::new(false),
            release_deferred: AtomicBool::new(false),
            has_replaced: AtomicBool::new(false),
            deferred_by: crate::sync::AtomicUsize::new(0),
            holds: UnsafeCell::new(0),
            guarded: UnsafeCell::new(false),
            scanning: AtomicBool::new(false),
            detach: Mutex::new(()),
            frame_gate: Mutex::new(inherited.is_some()),
            frame_readers: crate::sync::AtomicUsize::new(0),
            inherited: UnsafeCell::new(inherited),
            lends: UnsafeCell::new(Lends::default()),
            changed: AtomicBool::new(false),
            has_own_inheritable: AtomicBool::new(false),
            rare: RareCell::new(),
        }
    }

    pub(crate) fn link(&self) -> *const CtxInner {
        // SAFETY: only the thread that has this context entered calls this (see `current`).
        self.link.with(|l| unsafe { *l })
    }

    pub(crate) fn set_link(&self, to: *const CtxInner) {
        // SAFETY: as in `link`.
        self.link.with_mut(|l| unsafe { *l = to });
    }

    /// Records that the local at `index` was bound here for the first time.
    pub(crate) fn record_first_binding(&self, index: usize) {
        let index = u32::try_from(index).expect("fewer than 2^32 locals");
        // SAFETY: only the holder creates slots, and it holds no reference into `order`.
        self.order.with_mut(|o| unsafe { (*o).push(index) });
    }

    /// The detach lock, and with it the replaced slots.
    pub(crate) fn detach_lock(&self) -> DetachGuard<'_> {
        let lock = lock(&self.detach);
        DetachGuard {
            cell: &self.rare,
            rare: self.rare.get(),
            added: Vec::new(),
            _lock: lock,
        }
    }

    /// The slot at `index`, kept alive against being freed by its local's `detach_all`.
    pub(super) fn keep_slot_alive(&self, index: usize) -> Option<NonNull<SlotHeader>> {
        let _guard = self.detach_lock();
        let hdr = self.table.slot_at(index)?;
        // SAFETY: in the table, under the detach lock: live.
        unsafe { hdr.as_ref() }
            .kept_alive
            .fetch_add(1, Ordering::Relaxed);
        Some(hdr)
    }

    /// Waits, holding no lock, until no foreign reader marks the slot at `index` (kept alive
    /// meanwhile: a dropped `Local` may detach it). `false` if that reader waits for this
    /// thread.
    fn wait_for_readers(&self, index: usize) -> bool {
        let Some(hdr) = self.keep_slot_alive(index) else {
            return true; // its local was dropped: nothing left to wait for
        };
        let _kept = SlotKeptAlive(self, hdr);
        // SAFETY: kept alive, so live until `_kept` is dropped.
        unsafe { SlotHeader::wait_readers(hdr) }
    }

    /// Whether replaced slots may still hold values (see `reclaim_replaced`). Holder-only.
    #[inline]
    pub(crate) fn has_replaced(&self) -> bool {
        self.has_replaced.load(Ordering::Relaxed)
    }

    /// Records that a replaced slot holds values now (the detach lock is held).
    pub(crate) fn note_replaced(&self) {
        self.has_replaced.store(true, Ordering::Relaxed);
    }

    /// Drops what replaced slots still hold once their readers are gone; returns the values,
    /// for the caller to drop after its write has ended. Holder-only; never waits.
    pub(crate) fn reclaim_replaced(&self, replaced: &mut [ReplacedSlot]) -> Vec<Box<dyn Send>> {
        let mut values = Vec::new();
        for r in replaced.iter_mut().filter(|r| !r.reclaimed) {
            // SAFETY: replaced slots live until the context is dropped or their local detaches
            // them (under the detach lock, which the caller holds).
            let h = unsafe { r.hdr.as_ref() };
            if h.kept_alive.load(Ordering::Relaxed) > 0 {
                continue; // a capture is reading it: next time
            }
            // SAFETY: as above; we hold the context.
            if let Taken::Values(v) = unsafe { SlotHeader::take(r.hdr) } {
                // SAFETY: holder-only, and no user code runs while it is borrowed.
                let frozen = h.frozen.with_mut(|f| unsafe { (*f).take() });
                values.extend(v);
                values.extend(frozen.map(|f| Box::new(f) as Box<dyn Send>));
                r.reclaimed = true;
            }
        }
        let left = replaced.iter().any(|r| !r.reclaimed);
        self.has_replaced.store(left, Ordering::Relaxed);
        values
    }

    /// Queues a guard's removal for the next holder.
    pub(crate) fn post_removal(&self, index: usize, id: u64) {
        self.post(index, Queued::Remove(id));
    }

    /// Queues work on the slot at `index` for the next holder (see `Queued`).
    pub(crate) fn post(&self, index: usize, op: Queued) {
        lock(&self.rare.get_or_init().pending).push(Pending { index, op });
        self.has_pending.store(true, Ordering::Release);
    }

    /// Whether removals are queued. Holders call it after claiming, so a post that happened
    /// before the claim is seen.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Acquire)
    }

    /// Applies the queued removals and returns the removed values, for the caller to drop
    /// outside any claim. Called by the context's holder. A removal whose slot is borrowed or
    /// being read stays queued, and the slot is marked so its next use applies it.
    #[cold]
    pub(crate) fn apply_removals(&self, by: Remover) -> Vec<Box<dyn Send>> {
        self.has_pending.store(false, Ordering::Relaxed);
        let queued = self.take_pending();
        let mut removed = Vec::new();
        for Pending { index, mut op } in queued {
            loop {
                {
                    let _guard = self.detach_lock();
                    let Some(slot) = self.table.slot_at(index) else {
                        // The local was dropped, and its values with it; a restore's value
                        // goes with the rest, outside the lock.
                        removed.extend(op.into_value());
                        break;
                    };
                    // SAFETY: we hold the context and its detach lock; the slot is live.
                    match unsafe { SlotHeader::remove(slot, &mut op, by) } {
                        Removal::Done(v) => {
                            // SAFETY: the slot is live (see above).
                            if unsafe { slot.as_ref() }.capture.is_some() {
                                self.mark_changed();
                            }
                            removed.extend(v);
                            break;
                        }
                        Removal::Busy => {
                            self.post(index, op);
                            break;
                        }
                        Removal::Readers => {}
                    }
                }
                // A foreign reader: the holder waits for it like any write — outside the
                // detach lock, which a reader's callback may need (it may drop a `Local`). A
                // visitor's claim must stay short: it queues the removal instead.
                if by == Remover::Visitor || !self.wait_for_readers(index) {
                    self.post(index, op);
                    break;
                }
            }
        }
        removed
    }

    /// Takes the queued work out.
    fn take_pending(&self) -> Vec<Pending> {
        self.rare
            .get()
            .map(|r| std::mem::take(&mut *lock(&r.pending)))
            .unwrap_or_default()
    }

    /// Forgets queued work of a local that is being dropped (its index will be reused).
    /// Returns the values it held (a scope's restore), for the caller to drop outside the lock.
    pub(crate) fn forget_removals(&self, index: usize) -> Vec<Box<dyn Send>> {
        let Some(rare) = self.rare.get() else {
            return Vec::new();
        };
        let mut pending = lock(&rare.pending);
        let (gone, kept) = std::mem::take(&mut *pending)
            .into_iter()
            .partition(|p| p.index == index);
        *pending = kept;
        drop(pending);
        gone.into_iter()
            .filter_map(|p: Pending| p.op.into_value())
            .collect()
    }

    /// Drops every value of this context: the holder calls it with the context current.
    ///
    /// Locals go in the reverse order of their first binding here, one at a time, so a value's
    /// `Drop` still sees the values bound before it. A `Drop` may bind new values; later
    /// rounds drop those. A panicking `Drop` does not stop the teardown: the first panic is
    /// returned for the caller to resume once the context is unregistered.
    pub(crate) fn teardown(&self) -> Teardown {
        let mut first_panic = None;
        let mut left = false;
        // Work queued while the context was held elsewhere (a scope that ended after its
        // context was left restores the binding it displaced) is done first: the restored
        // values then go in their place below.
        if self.has_pending() {
            let removed = self.apply_removals(Remover::Holder);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(removed))) {
                first_panic.get_or_insert(p);
            }
        }
        for _ in 0..TEARDOWN_ROUNDS {
            let mut dropped_any = false;
            // SAFETY: holder-only; the length is read before any user code runs.
            let mut i = self.order.with(|o| unsafe { (*o).len() });
            while i > 0 {
                i -= 1;
                // SAFETY: as above; `order` only grows, so `i` stays in bounds.
                let index = self.order.with(|o| unsafe { (&*o)[i] }) as usize;
                // The slot's values, then what its replaced slots kept for their readers.
                let values = match (
                    self.take_slot(index, &mut left),
                    self.take_replaced(index, &mut left),
                ) {
                    (None, None) => continue,
                    (current, replaced) => (current, replaced),
                };
                // A capture from a `Drop` below must see the context as it is now.
                self.mark_changed();
                dropped_any = true;
                // Dropping a `Vec` keeps dropping the rest when one element panics.
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(values))) {
                    first_panic.get_or_insert(p);
                }
            }
            // The cached frame holds frozen copies: they go with the context, while it is
            // current, and what their `Drop` binds goes in the next round.
            // SAFETY: holder-only; taken out before user code runs.
            if let Some(cache) = self.take_cache() {
                dropped_any = true;
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(cache))) {
                    first_panic.get_or_insert(p);
                }
            }
            if !dropped_any {
                break;
            }
        }
        // Work that could not be done (a slot still borrowed or read): its values go now.
        let undone: Vec<Box<dyn Send>> = self
            .take_pending()
            .into_iter()
            .filter_map(|p| p.op.into_value())
            .collect();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop(undone))) {
            first_panic.get_or_insert(p);
        }
        // What the context inherited goes with it too (the last holder of a shared value drops
        // it), not whenever another thread lets go of the context's storage.
        *lock(&self.frame_gate) = false;
        let unread = self.wait_frame_readers();
        // SAFETY: holder-only, taken out before user code runs. Readers from other threads
        // read the cell only under the gate's lock while it was open (ordered before our
        // closing it), and after that only the frame it pointed at, which stays alive (dropped
        // below only once they are gone; else kept as `leftover`).
        let inherited = self.inherited.with_mut(|i| unsafe { (*i).take() });
        if unread {
            // Also what an earlier, unfinished teardown had to leave to its readers.
            let leftover = self.rare.get().and_then(|r| lock(&r.leftover).take());
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| drop((inherited, leftover)))) {
                first_panic.get_or_insert(p);
            }
        } else {
            // A reader that waits for this thread still reads it: kept rather than pulled from
            // under that reader (see `unfinished`); a lent frame becomes the context's own.
            left |= inherited.is_some();
            let leftover = inherited.map(Inherited::into_owned);
            *lock(&self.rare.get_or_init().leftover) = leftover;
        }
        Teardown {
            panicked: first_panic,
            left,
        }
    }

    /// `left` is set when a value cannot be taken now: this thread's own `for_each` reads it,
    /// or a reader that waits for this thread does (see `unfinished`).
    fn take_slot(&self, index: usize, left: &mut bool) -> Option<Box<dyn Send>> {
        loop {
            {
                let _guard = self.detach_lock();
                let slot: NonNull<SlotHeader> = self.table.slot_at(index)?;
                // SAFETY: the holder tears down; we hold the detach lock, so the slot stays live.
                let taken = unsafe { SlotHeader::take(slot) };
                if let Taken::Busy = taken {
                    *left = true;
                    return None;
                }
                if let Taken::Values(values) = taken {
                    // SAFETY: as above; `frozen` is holder-only.
                    let header = unsafe { slot.as_ref() };
                    // SAFETY: holder-only, and no user code runs while it is borrowed.
                    let frozen = header.frozen.with_mut(|f| unsafe { (*f).take() });
                    // The slot's frozen copy (for captures) goes with its values.
                    return match (values, frozen) {
                        (None, None) => None,
                        (values, frozen) => Some(Box::new((values, frozen))),
                    };
                }
            }
            // Wait for the reader outside the detach lock, which its callback may need.
            if !self.wait_for_readers(index) {
                *left = true;
                return None;
            }
        }
    }

    /// The values of `index`'s replaced slots, waiting for their readers (bounded: a replaced
    /// slot gets no new reader). Slots whose reader waits for this thread keep their values
    /// (`left`).
    fn take_replaced(&self, index: usize, left: &mut bool) -> Option<Box<dyn Send>> {
        let mut values: Vec<Box<dyn Send>> = Vec::new();
        loop {
            let mut replaced = self.detach_lock();
            values.extend(self.reclaim_replaced(&mut replaced));
            let busy = replaced
                .iter()
                .find(|r| r.index == index && !r.reclaimed)
                .map(|r| r.hdr);
            let Some(hdr) = busy else {
                break;
            };
            // SAFETY: live while replaced; kept alive across the wait (a dropped local frees it).
            let h = unsafe { hdr.as_ref() };
            h.kept_alive.fetch_add(1, Ordering::Relaxed);
            drop(replaced);
            let _kept = SlotKeptAlive(self, hdr);
            // SAFETY: kept alive (see above).
            if !unsafe { SlotHeader::wait_readers(hdr) } {
                *left = true;
                break;
            }
        }
        (!values.is_empty()).then(|| Box::new(values) as Box<dyn Send>)
    }
}

impl Drop for CtxInner {
    fn drop(&mut self) {
        // Nobody can reach the context any more: its replaced slots go with it (their values
        // were dropped by teardown, unless a reader that waited for the holder kept them).
        let Some(rare) = self.rare.get() else {
            return;
        };
        // SAFETY: `&mut self`: nobody else can reach the list.
        let replaced = rare
            .replaced
            .with_mut(|v| unsafe { std::mem::take(&mut *v) });
        for r in replaced {
            // SAFETY: replaced slots belong to the context alone, and it is going away.
            unsafe { SlotHeader::free(r.hdr) };
        }
    }
}

impl CtxInner {
    /// Whether a value of this context is borrowed right now (by its holder, this thread).
    fn borrowed_slots(&self, mut f: impl FnMut(&SlotHeader)) -> bool {
        // Another thread may be dropping a non-`static` local, freeing its slots: announce the
        // scan (the holder's cheap half of a store-then-load handshake; `detach_all` pays the
        // heavy half and waits for the scan to end). No user code runs here.
        let _scan = Scan::start(self);
        let mut any = false;
        self.order.with(|o| {
            // SAFETY: holder-only, and no user code runs while `order` is borrowed.
            for &index in unsafe { &*o } {
                if let Some(slot) = self.table.slot_at(index as usize) {
                    // SAFETY: a slot in the table is live while the context is (and while the
                    // scan is announced, for a local being dropped).
                    let hdr = unsafe { slot.as_ref() };
                    // A running initializer (`INIT`) holds the context like a borrow.
                    let st = hdr.state.holder_view();
                    if st.is_borrowed() || st.is_initializing() {
                        any = true;
                        f(hdr);
                    }
                }
            }
        });
        any
    }

    /// Appends the addresses of this context's slots that its holder — this thread — marked
    /// `WRITING` (see `current::slots_written_here`). Holder-only.
    pub(crate) fn writing_slots(&self, out: &mut Vec<usize>) {
        // Reserved first, so that no allocation (user code, a global allocator) runs while
        // `order` is borrowed below.
        // SAFETY: holder-only.
        let len = self.order.with(|o| unsafe { (*o).len() });
        out.reserve(len);
        self.borrowed_slots(|hdr| {
            if hdr.state.holder_view().is_writing() && out.len() < out.capacity() {
                out.push(ptr::from_ref(hdr).addr());
            }
        });
    }

    /// The names of the locals and stacks holding a value here, in the order of their first
    /// binding (`thread::bound_in_own_context`). Holder-only.
    pub(crate) fn bound_names(&self) -> Vec<&'static str> {
        // SAFETY: holder-only; read once for the capacity, so that no allocation (which could
        // be user code, a global allocator) runs while `order` is borrowed below.
        let len = self.order.with(|o| unsafe { (*o).len() });
        let mut names = Vec::with_capacity(len);
        // A dropped non-`static` local may be freeing its slots: see `borrowed_slots`.
        let _scan = Scan::start(self);
        self.order.with(|o| {
            // SAFETY: holder-only, and no user code runs while `order` is borrowed.
            for &index in unsafe { &*o } {
                if let Some(slot) = self.table.slot_at(index as usize) {
                    // SAFETY: a slot in the table is live while the context is (and while the
                    // scan is announced, for a local being dropped).
                    let hdr = unsafe { slot.as_ref() };
                    if hdr.state.holder_view().is_present() && names.len() < names.capacity() {
                        names.push(hdr.name);
                    }
                }
            }
        });
        names
    }

    /// For a dropped `Local` that detached a slot of this context (after the heavy fence):
    /// waits until the holder is no longer scanning its slots, so the slot can be freed. The
    /// scan runs no user code, so this is short.
    pub(crate) fn wait_for_scan(&self) {
        let mut round = 0;
        while self.scanning.load(Ordering::Acquire) {
            crate::sync::backoff(&mut round);
        }
    }

    /// Counts one more hold on the context (see `holds`): a borrow of one of its values
    /// begins, or runtime work that runs user code. Holder-only.
    #[inline(always)]
    pub(crate) fn hold(&self) {
        // SAFETY: holder-only (only the thread holding the context counts, and it hands the
        // context on only once the count is zero); no reference into the cell escapes.
        self.holds.with_mut(|n| unsafe { *n += 1 });
    }

    /// Ends a hold counted by [`hold`](Self::hold). Holder-only.
    #[inline(always)]
    pub(crate) fn unhold(&self) {
        // SAFETY: as in `hold`.
        self.holds.with_mut(|n| unsafe { *n -= 1 });
    }

    /// [`hold`](Self::hold) if the context is entered by a `ContextGuard` (the only holder that
    /// can leave inside an access); returns whether it counted, for the access's end.
    /// Holder-only.
    #[inline(always)]
    pub(crate) fn hold_if_guarded(&self) -> bool {
        let guarded = self.is_guarded();
        if guarded {
            self.hold();
        }
        guarded
    }

    /// Whether the context is entered by a `ContextGuard` the user holds (see `guarded`).
    /// Holder-only.
    #[inline(always)]
    pub(crate) fn is_guarded(&self) -> bool {
        // SAFETY: as in `hold`.
        self.guarded.with(|g| unsafe { *g })
    }

    /// The context is entered by a `ContextGuard` from now on (its claim was just taken, and
    /// it is not current yet, so no access is open). Holder-only.
    pub(crate) fn enter_guarded(&self) {
        // SAFETY: as in `hold`.
        self.guarded.with_mut(|g| unsafe { *g = true });
    }

    /// The `ContextGuard`'s claim ends (nothing holds the context). Holder-only.
    fn end_guarded(&self) {
        // SAFETY: as in `hold`.
        self.guarded.with_mut(|g| unsafe { *g = false });
    }

    /// Whether nothing holds the context: no open borrow of its values, no runtime work
    /// running user code, no inherited value lent out. Holder-only.
    #[inline]
    fn idle(&self) -> bool {
        // SAFETY: as in `hold`.
        self.holds.with(|n| unsafe { *n }) == 0 && !self.lends_any_inherited()
    }

    /// Holds the context (see `holds`) while runtime work runs user code, until the guard is
    /// dropped.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.hold();
        Busy(self)
    }

    /// Whether a release was deferred (and waits for `apply_deferred`).
    pub(crate) fn release_deferred_pending(&self) -> bool {
        self.release_deferred.load(Ordering::Relaxed)
    }

    /// Ends the holder's claim now, or — when the context is left while one of its values is
    /// borrowed (a guard dropped inside `with`) — once the last such borrow ends. Returns
    /// whether the caller releases it now.
    ///
    /// O(1) in the number of values (the usual case: nothing holds the context); only a
    /// context left inside an access scans its slots, to mark the borrowed ones.
    #[inline]
    pub(crate) fn release_now_or_later(&self) -> bool {
        if self.idle() {
            self.end_guarded();
            return true;
        }
        self.release_later()
    }

    /// The context is left while something holds it: marks its borrowed slots, whose borrows'
    /// ends then `apply_deferred`, and defers the release. Returns `false` (the caller keeps the
    /// claim).
    #[cold]
    #[inline(never)]
    fn release_later(&self) -> bool {
        self.borrowed_slots(|hdr| hdr.state.mark_pending());
        self.deferred_by.store(thread_mark(), Ordering::Relaxed);
        self.release_deferred.store(true, Ordering::Relaxed);
        false
    }

    /// Whether this thread left the context while borrowing one of its values, and so still
    /// holds it until that borrow ends.
    pub(crate) fn deferred_here(&self) -> bool {
        self.deferred_by(thread_mark())
    }

    /// Whether the thread with this `thread_mark` left the context while borrowing one of its
    /// values. Exact for the calling thread's own mark: it clears its mark when the deferred
    /// release ends, so a later holder's flag never pairs with its stale mark.
    pub(crate) fn deferred_by(&self, mark: usize) -> bool {
        self.deferred_by.load(Ordering::Relaxed) == mark
            && self.release_deferred.load(Ordering::Relaxed)
    }

    /// Ends a release this thread deferred, if nothing holds the context any more — without
    /// running user code (queued removals wait for the context's next holder). For unwinding.
    pub(crate) fn end_deferred_release(&self) {
        if self.deferred_here() {
            self.release_if_idle();
        }
    }

    /// Ends a deferred claim if nothing holds the context any more (see `holds`).
    fn release_if_idle(&self) {
        if self.release_deferred.load(Ordering::Relaxed) && self.idle() {
            self.end_guarded();
            self.release_deferred.store(false, Ordering::Relaxed);
            self.deferred_by.store(0, Ordering::Relaxed);
            self.owner.end_deferred();
        }
    }

    /// The holder's work queued for when borrows end (see `PENDING`): applies queued removals
    /// and ends a deferred claim once nothing is borrowed. Returns the removed values, for the
    /// caller to drop after this returns.
    #[cold]
    pub(crate) fn apply_deferred(&self) -> Vec<Box<dyn Send>> {
        let removed = if self.has_pending() {
            self.apply_removals(Remover::Holder)
        } else {
            Vec::new()
        };
        self.release_if_idle();
        removed
    }
}

/// Runtime work holds the context (see `CtxInner::holds`) until this is dropped, also on
/// unwind.
pub(crate) struct Busy<'a>(&'a CtxInner);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.unhold();
        if std::thread::panicking() {
            // Unwinding out of the user code it covered: nobody else will end a release that
            // code deferred.
            self.0.end_deferred_release();
        }
    }
}

/// The detach lock held (see `CtxInner::detach`), and with it the replaced slots: those in
/// `Rare`, or — while the context has none — the ones replaced under this guard, moved into a
/// newly allocated `Rare` when it is dropped.
pub(crate) struct DetachGuard<'a> {
    cell: &'a RareCell,
    /// The context's `Rare` when the lock was taken: the list this guard shows.
    rare: Option<&'a super::rare::Rare>,
    added: Vec<ReplacedSlot>,
    _lock: MutexGuard<'a, ()>,
}

impl std::ops::Deref for DetachGuard<'_> {
    type Target = Vec<ReplacedSlot>;

    fn deref(&self) -> &Vec<ReplacedSlot> {
        match self.rare {
            // SAFETY: the list is used only under the detach lock, which we hold.
            Some(rare) => rare.replaced.with(|v| unsafe { &*v }),
            None => &self.added,
        }
    }
}

impl std::ops::DerefMut for DetachGuard<'_> {
    fn deref_mut(&mut self) -> &mut Vec<ReplacedSlot> {
        match self.rare {
            // SAFETY: as in `deref`; `&mut self` makes this the only reference.
            Some(rare) => rare.replaced.with_mut(|v| unsafe { &mut *v }),
            None => &mut self.added,
        }
    }
}

impl Drop for DetachGuard<'_> {
    fn drop(&mut self) {
        if !self.added.is_empty() {
            let rare = self.cell.get_or_init();
            // SAFETY: still under the detach lock (`_lock` is dropped after this).
            rare.replaced
                .with_mut(|v| unsafe { (*v).append(&mut self.added) });
        }
    }
}

/// A holder's scan of its slots, announced (see `CtxInner::scanning`).
struct Scan<'a>(&'a CtxInner);

impl<'a> Scan<'a> {
    fn start(ctx: &'a CtxInner) -> Self {
        ctx.scanning.store(true, Ordering::Relaxed);
        // The holder's half of the handshake with `Storage::detach_all` (see `sync.rs`).
        crate::sync::light();
        Scan(ctx)
    }
}

impl Drop for Scan<'_> {
    fn drop(&mut self) {
        self.0.scanning.store(false, Ordering::Release);
    }
}

/// A slot kept alive by `CtxInner::keep_slot_alive` until dropped; then freed if its local was dropped
/// meanwhile.
pub(super) struct SlotKeptAlive<'a>(pub(super) &'a CtxInner, pub(super) NonNull<SlotHeader>);

impl Drop for SlotKeptAlive<'_> {
    fn drop(&mut self) {
        let _guard = self.0.detach_lock();
        // SAFETY: kept alive until now, so live.
        let header = unsafe { self.1.as_ref() };
        let last = header.kept_alive.fetch_sub(1, Ordering::Relaxed) == 1;
        if last && header.orphaned.load(Ordering::Relaxed) {
            // SAFETY: its local detached it from the table and left it to the last keeper: nobody
            // else can reach it.
            unsafe { SlotHeader::free(self.1) };
        }
    }
}

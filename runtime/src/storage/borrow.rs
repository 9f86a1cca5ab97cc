//! The borrow protocol of a slot: the holder's borrows and writes, and foreign readers.
//!
//! The slot's state word (`context/slot_state.rs`) is written only by the context's holder,
//! with plain stores. `for_each` hands out `&V` of *other* contexts' payloads while their
//! holders keep running. Two levels keep the holder's hot path free of fences and of waiting:
//!
//! - **Per local** (`IndexSync::readers`): a `for_each` announces itself once. A writer sets
//!   `WRITING`, then checks the count; while it is zero nothing else is needed. This
//!   store-then-load handshake needs a barrier on both sides; the asymmetric fence in `sync.rs`
//!   puts the expensive half on the reader.
//! - **Per slot** (`SlotCold::slot_readers`): only while some `for_each` of the local runs. A reader
//!   marks the one slot it is about to hand out, then looks at `WRITING`: set means the holder
//!   is writing, so the reader takes its mark back at once and comes back to that slot later —
//!   a reader never waits while it marks a slot. A writer that finds marks on its own slot
//!   keeps `WRITING` set, so no new reader gets in, and waits only for the callbacks already
//!   running on that one value (writer preference: the wait does not grow with reader
//!   traffic). Writes that replace the whole value (`set`, `release`) do not wait at all: they
//!   move to a fresh slot and leave the old value to its readers (see `Storage::relocate`).
//!   Both handshakes here are read-modify-writes of `slot_readers`, which are totally ordered.
//! - A wait that would close a cycle (a reader's callback waiting for a writer that waits for
//!   that reader) is refused instead; `waits.rs` keeps the graph.

use std::cell::RefCell;
use std::ptr;

use crate::context::slot_state::Seen;
use crate::context::table::SlotHeader;
use crate::context::{self, CtxInner};
use crate::sync::{self as s, lock, Condvar, Mutex, Ordering};
use crate::waits::{self, marked_here, Holding, On};

/// Per local index: what foreign readers and waiting writers share. Allocated once per index
/// and reused with it, so a slot can point at it without pointing at its (movable) `Local`.
///
/// Every write of the local in every context reads `readers`: aligned to 128 bytes (the pair
/// of lines x86 prefetches together) so that no other allocation — a context's stack buffer,
/// written on every push — shares its line and makes those reads miss.
#[repr(align(128))]
pub(crate) struct IndexSync {
    /// `for_each` calls of this local running now, in any thread.
    pub(crate) readers: s::AtomicUsize,
    /// Parties waiting for the marks on one of this local's slots to go.
    waiting: s::AtomicUsize,
    wake: Mutex<()>,
    cv: Condvar,
}

impl IndexSync {
    pub(crate) fn new() -> Self {
        Self {
            readers: s::AtomicUsize::new(0),
            waiting: s::AtomicUsize::new(0),
            wake: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl crate::context::table::WaitReaders for IndexSync {
    fn wait_for_slot_readers(&self, hdr: &SlotHeader) -> bool {
        wait_for_slot_readers(hdr, self)
    }
}

/// Why a write could not begin at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Contended {
    /// This thread iterates the local: its values cannot change now.
    Iterating,
    /// Waiting for the slot's readers would wait for this thread itself.
    Deadlock,
    /// A reader is on the slot (only for writers that asked not to wait).
    Readers,
}

/// What a writer does when readers are on its slot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Keep `WRITING` (no new reader gets in) and wait for the readers there.
    Wait,
    /// Give up at once, nothing marked.
    Try,
    /// Give up at once, `WRITING` kept: the caller moves the write to a fresh slot.
    Fresh,
}

/// Marks the slot `WRITING`, excluding foreign readers. `state` is the current state, which
/// the caller checked to be unborrowed. On `Err`, nothing is marked (except with `Fresh`).
#[inline]
pub(crate) fn begin_write(
    hdr: &SlotHeader,
    sync: &IndexSync,
    state: Seen,
    mode: Mode,
) -> Result<(), Contended> {
    hdr.state.begin_write(state);
    s::light();
    // Acquire: a 0 read here may come from the last reader's decrement, and our write must come
    // after that reader's reads (found by loom: with Relaxed the two were unordered).
    if sync.readers.load(Ordering::Acquire) != 0 {
        return contended(hdr, sync, state, mode);
    }
    Ok(())
}

/// [`begin_write`] for a fast path that gives up whenever a `for_each` of the local runs:
/// `false` with the state restored (nothing marked), for the caller's full path to redo.
#[inline(always)]
pub(crate) fn begin_write_alone(hdr: &SlotHeader, sync: &IndexSync, state: Seen) -> bool {
    hdr.state.begin_write(state);
    s::light();
    // Acquire: as in `begin_write`.
    if sync.readers.load(Ordering::Acquire) != 0 {
        // As `contended`'s give-up: a reader that saw `WRITING` comes back later.
        hdr.state.restore(state);
        return false;
    }
    true
}

/// Some `for_each` of this local runs: is it on our slot?
#[cold]
#[inline(never)]
fn contended(hdr: &SlotHeader, sync: &IndexSync, state: Seen, mode: Mode) -> Result<(), Contended> {
    let give_up = |e| {
        hdr.state.restore(state);
        Err(e)
    };
    // A user's write inside the local's own `for_each` is refused whichever value the
    // iteration is at, so the outcome does not depend on the order of contexts.
    if mode != Mode::Try && iterating_here(sync) {
        return give_up(Contended::Iterating);
    }
    // The writer's half of the per-slot handshake: an RMW, ordered with the readers' RMWs.
    if hdr.slot_readers.fetch_add(0, Ordering::AcqRel) == 0 {
        return Ok(());
    }
    match mode {
        // The runtime's own writes (teardown, removals): only a mark of this very thread is
        // one to give up on; other readers are waited for by the caller.
        Mode::Try if marked_here(ptr::from_ref(hdr).addr()) => give_up(Contended::Iterating),
        Mode::Try => give_up(Contended::Readers),
        Mode::Fresh => Err(Contended::Readers),
        Mode::Wait => {
            let addr = ptr::from_ref(hdr).addr();
            // It writes `addr` (marked `WRITING` above) and whatever else it has marked.
            let writes = || {
                let mut w = context::slots_written_here();
                w.push(addr);
                w
            };
            let Some(_waiting) = waits::register(On::Marks(addr), writes) else {
                return give_up(Contended::Deadlock);
            };
            loop {
                // `WRITING` stays set: readers coming now go elsewhere first, so only the
                // callbacks already running on this value are waited for. `WAITING` lets a
                // reader that is itself inside a callback read it anyway (nothing is written
                // yet), so that no nested iteration waits for us while we wait for it.
                hdr.state.wait_to_write(state);
                block_until_no_slot_readers(hdr, sync);
                // Writing for real now: the same handshake again, without `WAITING`.
                hdr.state.begin_write(state);
                if hdr.slot_readers.fetch_add(0, Ordering::AcqRel) == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits until no reader marks `hdr`; `false` (at once) if that reader waits for this thread.
pub(crate) fn wait_for_slot_readers(hdr: &SlotHeader, sync: &IndexSync) -> bool {
    let addr = ptr::from_ref(hdr).addr();
    if marked_here(addr) {
        return false; // the reader is this very thread
    }
    let Some(_waiting) = waits::register(On::Marks(addr), context::slots_written_here) else {
        return false;
    };
    block_until_no_slot_readers(hdr, sync);
    true
}

fn block_until_no_slot_readers(hdr: &SlotHeader, sync: &IndexSync) {
    sync.waiting.fetch_add(1, Ordering::AcqRel);
    {
        let mut g = lock(&sync.wake);
        while hdr.slot_readers.fetch_add(0, Ordering::AcqRel) != 0 {
            g = match sync.cv.wait(g) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
    }
    sync.waiting.fetch_sub(1, Ordering::AcqRel);
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
    hdr: &'a SlotHeader,
    ctx: &'a CtxInner,
    /// Counted in `ctx`'s holds (see `CtxInner::hold_if_guarded`).
    held: bool,
}

impl<'a> SharedBorrow<'a> {
    /// The borrow the caller just counted in `hdr`'s state, holding `ctx` (see
    /// `CtxInner::holds`) until dropped if `COUNTED` and `ctx` is guarded. Without `COUNTED`
    /// the caller knows `ctx` unguarded (`context::current_uncounted`): nothing to count.
    #[inline(always)]
    pub(crate) fn new<const COUNTED: bool>(hdr: &'a SlotHeader, ctx: &'a CtxInner) -> Self {
        let held = COUNTED && ctx.hold_if_guarded();
        Self { hdr, ctx, held }
    }
}

impl Drop for SharedBorrow<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.held {
            self.ctx.unhold();
        }
        let st = self.hdr.state.end_shared();
        // One test on the way out; whether other borrows remain is the cold path's question.
        if st.is_pending() {
            apply_deferred_if_unborrowed(self.ctx, st);
        }
    }
}

/// A reader's announcement for one index, withdrawn on drop.
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
        let me: *const IndexSync = self.0;
        let _ = ITERATING.try_with(|v| waits::remove_last(&mut v.borrow_mut(), &me));
        self.0.readers.fetch_sub(1, Ordering::Release);
    }
}

/// A reader's mark on one slot: the holder does not write the payload while it stands.
pub(crate) struct SlotReader<'a> {
    hdr: &'a SlotHeader,
    sync: &'a IndexSync,
    _held: Holding,
}

impl<'a> SlotReader<'a> {
    /// Marks `hdr` and returns the slot's state as seen after the mark: if it has no
    /// `WRITING`, the holder will not write the payload until the mark is dropped.
    pub(crate) fn new(hdr: &'a SlotHeader, sync: &'a IndexSync) -> (Self, Seen) {
        let held = Holding::mark(ptr::from_ref(hdr).addr());
        // The reader's half of the per-slot handshake (see `contended`).
        hdr.slot_readers.fetch_add(1, Ordering::AcqRel);
        let state = hdr.state.foreign_view();
        let mark = SlotReader {
            hdr,
            sync,
            _held: held,
        };
        (mark, state)
    }
}

impl Drop for SlotReader<'_> {
    fn drop(&mut self) {
        self.hdr.slot_readers.fetch_sub(1, Ordering::AcqRel);
        // A waiter increments `waiting`, then re-checks `slot_readers` with an RMW. RMWs of `slot_readers`
        // are totally ordered: if its re-check came before our decrement, our decrement
        // acquired it, so this load sees its increment and we wake it; if after, it saw our
        // decrement. A plain load suffices here (the RMW is on the waiter's, cold, side).
        if self.sync.waiting.load(Ordering::Acquire) != 0 {
            let _g = lock(&self.sync.wake);
            self.sync.cv.notify_all();
        }
    }
}

// Here, not in `mod.rs`: the end of a borrow is where queued work runs.
/// The holder's work queued for the end of a borrow (see `PENDING`), run when `state` — the
/// state just stored — says so and no borrow is left.
#[inline]
pub(super) fn apply_deferred_if_due(ctx: &CtxInner, state: Seen) {
    if state.is_pending_unborrowed() {
        apply_deferred(ctx);
    }
}

/// [`apply_deferred_if_due`] for a caller that saw `PENDING` in `state` already.
#[cold]
#[inline(never)]
fn apply_deferred_if_unborrowed(ctx: &CtxInner, state: Seen) {
    if !state.is_borrowed() {
        apply_deferred(ctx);
    }
}

#[cold]
#[inline(never)]
pub(super) fn apply_deferred(ctx: &CtxInner) {
    // The removed values are dropped here, after every borrow and claim has ended.
    drop(ctx.apply_deferred());
}

//! Slots and the protocol that guards them.
//!
//! A *slot* is one local's storage in one context: a state word plus the payload (`Option<T>`
//! for a `Local`, a stack for a `LocalStack`). Slots are boxed once per (context, local) and
//! reused: release-on-pop only clears the `PRESENT` bit, so a push/pop cycle never allocates.
//!
//! # The state word
//!
//! Only the thread that has the context entered (the *owner*) writes it, with plain stores:
//! - `PRESENT`: the payload holds a value (a bound local, a non-empty stack). Read by
//!   `contexts()` and `for_each` from other threads.
//! - `WRITING`: the owner is mutating the payload or lends it out as `&mut`.
//! - `SHARED_ONE * n`: the owner lends `n` shared borrows (nested `with`). Owner-only meaning.
//!
//! # Owner vs. foreign readers
//!
//! `for_each` hands out `&V` of *other* contexts' payloads while their owners keep running. A
//! reader announces itself in the index's `readers` count and then waits for `WRITING` to clear
//! on each slot; a writer sets `WRITING` and then checks `readers`, backing off if non-zero.
//! This store-then-load handshake on both sides needs a barrier between the store and the load
//! on both sides; the asymmetric fence in `sync.rs` puts the expensive half on the reader.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::context::{self, CtxInner};
use crate::error::{AccessError, AccessErrorKind};
use crate::sync::{self as s, lock, Condvar, Mutex, Ordering, UnsafeCell};
use crate::ContextId;

pub(crate) const PRESENT: usize = 1;
pub(crate) const WRITING: usize = 2;
pub(crate) const SHARED_ONE: usize = 4;

/// What a slot holds.
pub(crate) trait Payload: Send + Sized + 'static {
    fn empty() -> Self;
    fn is_present(&self) -> bool;
    /// Moves out everything that must be dropped when the context ends, leaving `empty()`.
    fn take_all(&mut self) -> Option<Box<dyn Send>>;
    /// How an unnamed local is called in messages: its value type.
    fn label() -> &'static str;
}

/// Per local index: what foreign readers and waiting writers share. Allocated once per index
/// and reused with it, so a slot can point at it without pointing at its (movable) `Local`.
pub(crate) struct IndexSync {
    pub(crate) readers: s::AtomicUsize,
    wake: Mutex<()>,
    cv: Condvar,
}

/// The type-independent head of every slot; the `Slot<V>` it heads is reached by a cast.
#[repr(C)]
pub(crate) struct SlotHeader {
    pub(crate) state: s::AtomicUsize,
    sync: &'static IndexSync,
    take: unsafe fn(NonNull<SlotHeader>) -> Option<Box<dyn Send>>,
    free: unsafe fn(NonNull<SlotHeader>),
}

/// Aligned to 128 bytes (the pair of lines x86 prefetches together) so that two contexts'
/// slots, written on every push and pop, never share a cache line.
#[repr(C, align(128))]
pub(crate) struct Slot<V> {
    hdr: SlotHeader,
    value: UnsafeCell<V>,
}

impl SlotHeader {
    /// Moves the slot's values out (for teardown), or `None` if there are none or the slot is
    /// being iterated by this very thread (the value then stays until the context is freed).
    ///
    /// # Safety
    ///
    /// `hdr` must point to a live slot of a context that the caller owns exclusively (entered
    /// by this thread, or being dropped by it) and hold its `detach` lock.
    pub(crate) unsafe fn take_erased(hdr: NonNull<SlotHeader>) -> Option<Box<dyn Send>> {
        // SAFETY: forwarded from the caller; `take` is the function matching the slot's type.
        unsafe { (hdr.as_ref().take)(hdr) }
    }

    /// Frees the slot and whatever it still holds.
    ///
    /// # Safety
    ///
    /// `hdr` must point to a live slot that nobody else can reach any more.
    pub(crate) unsafe fn free(hdr: NonNull<SlotHeader>) {
        // SAFETY: forwarded from the caller; `free` is the function matching the slot's type.
        unsafe { (hdr.as_ref().free)(hdr) }
    }
}

/// # Safety
///
/// `hdr` must be the header of a live `Slot<V>`, owned exclusively by the caller.
unsafe fn take_impl<V: Payload>(hdr: NonNull<SlotHeader>) -> Option<Box<dyn Send>> {
    // SAFETY: the caller guarantees `hdr` heads a live `Slot<V>` (`repr(C)`, header first).
    let slot = unsafe { hdr.cast::<Slot<V>>().as_ref() };
    let state = slot.hdr.state.load(Ordering::Relaxed);
    // Borrowed (cannot happen at teardown: no user frame is left in the context) or being read
    // by this thread's `for_each`: leave it for the final free.
    if state & (WRITING | !(SHARED_ONE - 1)) != 0 || !begin_write(&slot.hdr, state) {
        return None;
    }
    // SAFETY: we own the context, set WRITING and waited out foreign readers.
    let out = slot.value.with_mut(|v| unsafe { (*v).take_all() });
    slot.hdr.state.store(0, Ordering::Release);
    out
}

/// # Safety
///
/// `hdr` must be the header of a `Slot<V>` allocated by `Storage::create`, unreachable by anyone
/// else.
unsafe fn free_impl<V: Payload>(hdr: NonNull<SlotHeader>) {
    // SAFETY: allocated as `Box<Slot<V>>` in `Storage::create`; exclusive per the caller.
    drop(unsafe { Box::from_raw(hdr.cast::<Slot<V>>().as_ptr()) });
}

// ---------------------------------------------------------------------------------------------
// Local indices.

const UNASSIGNED: usize = usize::MAX;

struct Indices {
    next: usize,
    free: Vec<usize>,
    syncs: Vec<&'static IndexSync>,
}

s::globals! {
    static INDICES: Mutex<Indices> = Mutex::new(Indices {
        next: 0,
        free: Vec::new(),
        syncs: Vec::new(),
    });
}

fn sync_of(index: usize) -> &'static IndexSync {
    lock(&INDICES).syncs[index]
}

// ---------------------------------------------------------------------------------------------
// Owner-side protocol.

/// Marks the slot `WRITING` and waits out foreign readers. `state` is the current state, which
/// the caller checked to be unborrowed. `false` (and nothing marked) if the reader is this very
/// thread, which would wait for itself forever.
#[inline]
#[must_use]
fn begin_write(hdr: &SlotHeader, state: usize) -> bool {
    hdr.state.store(state | WRITING, Ordering::Relaxed);
    s::light();
    // Acquire: a 0 read here may come from the last reader's decrement, and our write must come
    // after that reader's reads (found by loom: with Relaxed the two were unordered).
    if hdr.sync.readers.load(Ordering::Acquire) != 0 {
        return wait_for_readers(hdr, state);
    }
    true
}

#[cold]
#[inline(never)]
fn wait_for_readers(hdr: &SlotHeader, state: usize) -> bool {
    if iterating_here(hdr.sync) {
        hdr.state.store(state, Ordering::Release);
        return false;
    }
    loop {
        // Back off so a reader waiting on this slot can proceed, then wait until none is left.
        hdr.state.store(state, Ordering::Release);
        {
            let mut g = lock(&hdr.sync.wake);
            while hdr.sync.readers.load(Ordering::Acquire) != 0 {
                g = match hdr.sync.cv.wait(g) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
            }
        }
        hdr.state.store(state | WRITING, Ordering::Relaxed);
        s::light();
        if hdr.sync.readers.load(Ordering::Acquire) == 0 {
            return true;
        }
    }
}

s::thread_locals! {
    /// Indices this thread is iterating with `for_each` right now (usually zero or one).
    static ITERATING: RefCell<Vec<*const IndexSync>> = const { RefCell::new(Vec::new()) };
}

fn iterating_here(sync: &IndexSync) -> bool {
    ITERATING
        .try_with(|v| v.borrow().iter().any(|&p| ptr::eq(p, sync)))
        .unwrap_or(false)
}

/// Ends a shared borrow, also on unwind.
struct SharedBorrow<'a>(&'a s::AtomicUsize);

impl Drop for SharedBorrow<'_> {
    #[inline]
    fn drop(&mut self) {
        let st = self.0.load(Ordering::Relaxed);
        // Release, like every owner store a reader may observe: a reader's Acquire load must
        // synchronise with whichever store it reads (relaxed stores do not continue a release
        // sequence), or it could miss the payload written before the last write ended.
        self.0.store(st - SHARED_ONE, Ordering::Release);
    }
}

/// Ends a write, also on unwind, publishing whether the payload is present.
struct Write<'a, V: Payload>(&'a Slot<V>);

impl<V: Payload> Drop for Write<'_, V> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we still hold WRITING, so no one else touches the payload.
        let present = self.0.value.with(|v| unsafe { (*v).is_present() });
        self.0
            .hdr
            .state
            .store(if present { PRESENT } else { 0 }, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// Storage: the part of a `Local`/`LocalStack` that lives in the static.

pub(crate) struct Storage<V> {
    /// A plain std atomic even under loom: `Storage::new` must stay `const`, and the index is
    /// only ever published under the `INDICES` lock.
    index: std::sync::atomic::AtomicUsize,
    name: Option<&'static str>,
    _payload: PhantomData<fn() -> V>,
}

impl<V> Storage<V> {
    pub(crate) const fn new(name: Option<&'static str>) -> Self {
        Self {
            index: std::sync::atomic::AtomicUsize::new(UNASSIGNED),
            name,
            _payload: PhantomData,
        }
    }
}

impl<V: Payload> Storage<V> {
    pub(crate) fn name(&self) -> &'static str {
        self.name.unwrap_or_else(V::label)
    }

    pub(crate) fn err(&self, kind: AccessErrorKind) -> AccessError {
        AccessError::new(self.name(), kind)
    }

    fn index(&self) -> usize {
        let i = self.index.load(Ordering::Acquire);
        if i != UNASSIGNED {
            return i;
        }
        s::init_fence();
        let mut idx = lock(&INDICES);
        // Re-check under the lock: another thread may have assigned it meanwhile.
        let i = self.index.load(Ordering::Acquire);
        if i != UNASSIGNED {
            return i;
        }
        let i = match idx.free.pop() {
            Some(i) => i,
            None => {
                let i = idx.next;
                idx.next += 1;
                idx.syncs.push(Box::leak(Box::new(IndexSync {
                    readers: s::AtomicUsize::new(0),
                    wake: Mutex::new(()),
                    cv: Condvar::new(),
                })));
                i
            }
        };
        self.index.store(i, Ordering::Release);
        i
    }

    /// This local's slot in `ctx`, if it was ever created there.
    #[inline]
    pub(crate) fn slot_in(&self, ctx: &CtxInner) -> Option<&Slot<V>> {
        let i = self.index.load(Ordering::Relaxed);
        if i == UNASSIGNED {
            return None;
        }
        let p = ctx.cell(i)?.load(Ordering::Acquire);
        // SAFETY: a non-null cell at our index holds a `Slot<V>` created by `create` for this
        // local (indices are recycled only after a dropped local removed its slots everywhere).
        // It lives as long as `ctx` and while `self` is borrowed (only `Drop` of this local
        // detaches it), so it outlives the `&self`-bounded borrow we return.
        NonNull::new(p).map(|p| unsafe { p.cast::<Slot<V>>().as_ref() })
    }

    /// Current context and this local's slot in it; `Err(Destroyed)` during thread exit.
    #[inline]
    fn current_slot(&self) -> Result<(&'static CtxInner, Option<&Slot<V>>), AccessError> {
        let ctx = context::current().ok_or_else(|| self.err(AccessErrorKind::Destroyed))?;
        Ok((ctx, self.slot_in(ctx)))
    }

    #[cold]
    #[inline(never)]
    fn create<'a>(&'a self, ctx: &'a CtxInner) -> &'a Slot<V> {
        let i = self.index();
        let cell = ctx.cell_or_grow(i);
        let slot = Box::new(Slot {
            hdr: SlotHeader {
                state: s::AtomicUsize::new(0),
                sync: sync_of(i),
                take: take_impl::<V>,
                free: free_impl::<V>,
            },
            value: UnsafeCell::new(V::empty()),
        });
        let p = Box::into_raw(slot);
        cell.store(p.cast(), Ordering::Release);
        // SAFETY: just allocated; owned by `ctx` from now on (see `slot_in`).
        unsafe { &*p }
    }

    /// This local's slot in `ctx` (this thread's current context), created if needed.
    #[inline]
    pub(crate) fn slot_or_create<'a>(&'a self, ctx: &'a CtxInner) -> &'a Slot<V> {
        match self.slot_in(ctx) {
            Some(slot) => slot,
            None => self.create(ctx),
        }
    }

    /// Shared access to the current context's payload; `Ok(None)` if it has no slot yet.
    #[inline]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&V) -> R) -> Result<Option<R>, AccessError> {
        let (_, slot) = self.current_slot()?;
        let Some(slot) = slot else { return Ok(None) };
        let st = slot.hdr.state.load(Ordering::Relaxed);
        if st & WRITING != 0 {
            return Err(self.err(AccessErrorKind::BorrowedMut));
        }
        slot.hdr.state.store(st + SHARED_ONE, Ordering::Release);
        let _borrow = SharedBorrow(&slot.hdr.state);
        // SAFETY: we are the owner (the context is current on this thread), WRITING is clear
        // and stays clear while our shared borrow is counted; foreign readers only read.
        Ok(Some(slot.value.with(|v| f(unsafe { &*v }))))
    }

    /// Exclusive access to the current context's payload, creating the slot if `create`.
    /// `Ok(None)` if there is no slot and `create` is false.
    #[inline]
    pub(crate) fn write<R>(
        &self,
        create: bool,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, AccessError> {
        let (ctx, slot) = self.current_slot()?;
        let slot = match slot {
            Some(slot) => slot,
            None if create => self.create(ctx),
            None => return Ok(None),
        };
        self.write_slot(slot, f).map(Some)
    }

    /// Exclusive access to `slot`, which belongs to a context this thread owns.
    #[inline]
    pub(crate) fn write_slot<R>(
        &self,
        slot: &Slot<V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, AccessError> {
        let st = slot.hdr.state.load(Ordering::Relaxed);
        // Any bit but PRESENT is a borrow: one branch on the hot path, classified when cold.
        if st > PRESENT {
            return Err(self.borrowed(st));
        }
        if !begin_write(&slot.hdr, st) {
            panic!(
                "context local `{}` cannot be changed inside its own `for_each`",
                self.name()
            );
        }
        let _write = Write(slot);
        // SAFETY: owner, WRITING set, no shared borrow, foreign readers waited out.
        Ok(slot.value.with_mut(|v| f(unsafe { &mut *v })))
    }

    #[cold]
    fn borrowed(&self, state: usize) -> AccessError {
        if state & WRITING != 0 {
            self.err(AccessErrorKind::BorrowedMut)
        } else {
            self.err(AccessErrorKind::Borrowed)
        }
    }

    /// Whether the current context holds a value.
    #[inline]
    pub(crate) fn is_present(&self) -> bool {
        match self.current_slot() {
            Ok((_, Some(slot))) => slot.hdr.state.load(Ordering::Relaxed) & PRESENT != 0,
            _ => false,
        }
    }

    /// How many contexts hold a value.
    pub(crate) fn contexts(&self) -> usize {
        let mut n = 0;
        context::visit_locked(|ctx| {
            if let Some(slot) = self.slot_in(ctx) {
                if slot.hdr.state.load(Ordering::Acquire) & PRESENT != 0 {
                    n += 1;
                }
            }
        });
        n
    }

    /// Calls `f` with every context's present payload.
    ///
    /// `f` runs while this local is being iterated: owners wanting to change their value wait.
    pub(crate) fn for_each(&self, mut f: impl FnMut(ContextId, &V))
    where
        V: Sync,
    {
        let i = self.index.load(Ordering::Acquire);
        if i == UNASSIGNED {
            return;
        }
        let sync = sync_of(i);
        let _reading = Reading::start(sync);
        for ctx in context::snapshot() {
            let Some(slot) = self.slot_in(&ctx) else {
                continue;
            };
            let st = self.wait_not_writing(&ctx, slot);
            if st & PRESENT != 0 {
                // SAFETY: WRITING was clear after our announcement was visible to the owner
                // (asymmetric fence), so the owner now backs off from writing until we finish;
                // the Acquire load synchronised with its last write. `V: Sync` makes sharing
                // the `&V` with the owner's own shared borrows sound.
                slot.value.with(|v| f(ctx.id, unsafe { &*v }));
            }
        }
    }

    fn wait_not_writing(&self, ctx: &CtxInner, slot: &Slot<V>) -> usize {
        let mut round = 0u32;
        loop {
            let st = slot.hdr.state.load(Ordering::Acquire);
            if st & WRITING == 0 {
                return st;
            }
            // The writer is this very thread (an outer `with_mut`, maybe in a context entered
            // further out): waiting would never end.
            if ctx.owner.load(Ordering::Relaxed) == context::thread_token() {
                panic!(
                    "context local `{}` cannot be iterated inside its own `with_mut`",
                    self.name()
                );
            }
            s::backoff(&mut round);
        }
    }
}

impl<V> Storage<V> {
    /// Removes and drops this local's slots in every context (a dropped non-`static` local),
    /// then recycles its index.
    pub(crate) fn detach_all(&mut self) {
        let i = *self.index.get_mut();
        if i == UNASSIGNED {
            return;
        }
        let mut detached = Vec::new();
        for ctx in context::snapshot() {
            let _guard = ctx.detach_lock();
            if let Some(cell) = ctx.cell(i) {
                if let Some(p) = NonNull::new(cell.swap(ptr::null_mut(), Ordering::AcqRel)) {
                    detached.push(p);
                }
            }
        }
        for p in detached {
            // SAFETY: swapped out under the context's detach lock, so teardown cannot reach it,
            // and nobody can use this local (we have `&mut self`): we own the slot.
            unsafe { SlotHeader::free(p) };
        }
        // Contexts that died before the snapshot may still hold a slot at `i`; they are never
        // current again, so the recycled index cannot meet the stale slot.
        lock(&INDICES).free.push(i);
        *self.index.get_mut() = UNASSIGNED;
    }
}

/// A reader's announcement for one index, withdrawn (and waiting writers woken) on drop.
struct Reading(&'static IndexSync);

impl Reading {
    fn start(sync: &'static IndexSync) -> Self {
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

//! Storage: the part of a `Local`/`LocalStack` that lives in the static, and typed access to
//! its slot in the current context.
//!
//! - `key`: the local's index, assigned on first use;
//! - `slot`: the typed slot and what a context can do with it untyped;
//! - `borrow`: the borrow protocol (holder borrows and writes, foreign readers);
//! - `buf`: the stacks' buffer (O(1) removal at both ends, one contiguous slice).

mod borrow;
mod buf;
mod key;
mod slot;

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

pub(crate) use buf::Buf;
pub(crate) use slot::{Inherit, Payload, Share, Slot};

use crate::context::slot_state::Seen;
use crate::context::table::{Queued, Remover, SlotHeader};
use crate::context::{self, registry, CtxInner, ReplacedSlot};
use crate::error::{fail, AccessError, AccessErrorKind};
use crate::sync::Ordering;
use crate::waits;
use crate::ContextId;
use borrow::{
    apply_deferred, apply_deferred_if_due, begin_write, begin_write_alone, Contended, IndexSync,
    Mode, Reading, SharedBorrow, SlotReader,
};
use key::{sync_of, Key};

/// A context a scope bound in: its address and serial (to find it in this thread's chain)
/// and its id (to find it in the registry once this thread has left it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Where {
    pub(crate) addr: usize,
    pub(crate) serial: u64,
    pub(crate) id: ContextId,
}

impl Where {
    #[inline]
    fn of(ctx: &CtxInner) -> Self {
        Where {
            addr: ptr::from_ref(ctx).addr(),
            serial: ctx.serial,
            id: ctx.id,
        }
    }
}

/// Whether a write may create this local's slot in the current context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// No: without a slot (or an inherited value to copy) there is nothing to write.
    No,
    /// Yes (a scope's binding, which ends by itself; an initializer's value).
    Yes,
    /// Yes, for a user's new binding (`set`, `replace`, `push`): refused in a thread's own
    /// context if the local is explicit-only (see `explicit.rs`), with the context this write
    /// looks up anyway.
    Binding,
}

/// What a write of the current context's payload does with it (see [`Storage::write`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The runtime's own change: `f` runs no user code.
    Runtime,
    /// The runtime's change replacing the whole payload (`set`, `release`: `f` must not need
    /// what was there). When a foreign reader is on the slot, the write does not wait for it:
    /// `f` gets a fresh, empty payload and the old one stays with its readers until the holder
    /// drops it (see [`Storage::relocate`]).
    Replace,
    /// A user closure (`with_mut`): never creates the slot.
    User,
}

/// The outcome of [`Storage::write_elsewhere`].
pub(crate) enum Elsewhere<R> {
    /// Done here, under a claim: what `f` returned.
    Done(R),
    /// Queued for the context's holder.
    Queued,
    /// The context (or this local's slot there) is gone, and its values with it.
    Gone,
}

pub(crate) struct Storage<V> {
    key: Key,
    name: Option<&'static str>,
    /// Set for an inheritable local: how forks get its values.
    inherit: Option<Inherit<V>>,
    /// Never bound in a thread's own context (see `Create::Binding`).
    explicit_only: bool,
    _payload: PhantomData<fn() -> V>,
}

impl<V> Storage<V> {
    pub(crate) const fn new(name: Option<&'static str>) -> Self {
        Self {
            key: Key::new(),
            name,
            inherit: None,
            explicit_only: false,
            _payload: PhantomData,
        }
    }

    /// Makes the local inheritable: snapshots capture it, forks start with it.
    pub(crate) const fn set_inheritable(&mut self, inherit: Inherit<V>) {
        self.inherit = Some(inherit);
    }

    /// Makes the local explicit-only: its bindings are refused in a thread's own context.
    pub(crate) const fn set_explicit_only(&mut self) {
        self.explicit_only = true;
    }

    /// Whether the local is explicit-only.
    pub(crate) const fn is_explicit_only(&self) -> bool {
        self.explicit_only
    }

    /// Whether the local is inheritable.
    pub(crate) const fn is_inheritable(&self) -> bool {
        self.inherit.is_some()
    }
}

impl<V: Payload> Storage<V> {
    pub(crate) fn name(&self) -> &'static str {
        self.name.unwrap_or_else(V::label)
    }

    pub(crate) fn err(&self, kind: AccessErrorKind) -> AccessError {
        AccessError::new(self.name(), kind)
    }

    /// This local's index (assigned now if needed) and serial.
    pub(crate) fn index_and_serial(&self) -> (usize, u64) {
        let index = self.key.get_or_assign();
        (index, self.key.serial())
    }

    /// This local's index, if it was ever used.
    pub(crate) fn index(&self) -> Option<usize> {
        self.key.get()
    }

    /// This local's slot in `ctx`, if it was ever created there.
    #[inline]
    pub(crate) fn slot_in<'a>(&'a self, ctx: &'a CtxInner) -> Option<&'a Slot<V>> {
        let p = ctx.table.slot_at(self.key.raw())?;
        // SAFETY: a slot at our index holds a `Slot<V>` created by `create` for this local
        // (indices are recycled only after a dropped local removed its slots everywhere). It
        // lives as long as `ctx` and while `self` is borrowed (only `Drop` of this local
        // detaches it), so it outlives the borrow we return.
        Some(unsafe { p.cast::<Slot<V>>().as_ref() })
    }

    /// Current context and this local's slot in it; `Err(Destroyed)` during thread exit.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn current_slot(&self) -> Result<(&'static CtxInner, Option<&Slot<V>>), AccessError> {
        let ctx = context::current().ok_or_else(|| self.err(AccessErrorKind::Destroyed))?;
        Ok((ctx, self.slot_in(ctx)))
    }

    #[cold]
    #[inline(never)]
    #[track_caller]
    fn create<'a>(&'a self, ctx: &'a CtxInner) -> &'a Slot<V> {
        match self.try_create(ctx) {
            Ok(slot) => slot,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Creates this local's slot in `ctx` (held by this thread), starting from what `ctx`
    /// inherited, if anything.
    ///
    /// # Errors
    ///
    /// `Borrowed` if that inherited value is lent out (`with` of it encloses the write): the
    /// copy would be written while the borrow keeps reading the inherited value.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn try_create<'a>(&'a self, ctx: &'a CtxInner) -> Result<&'a Slot<V>, AccessError> {
        let i = self.key.get_or_assign();
        let serial = self.key.serial();
        let capture = self.inherit.as_ref().map(|inherit| inherit.capture);
        let mut value = V::empty();
        if let Some(inherit) = &self.inherit {
            if let Some(inherited) = self.inherited_in(ctx) {
                if ctx.lends_inherited(i) {
                    return Err(self.err(AccessErrorKind::Borrowed));
                }
                ctx.mark_changed();
                ctx.has_own_inheritable.store(true, Ordering::Relaxed);
                value = self.copy_inherited(ctx, inherit, inherited);
                // The user's `Clone` may have written this local itself (creating the slot):
                // that write stands, and the copy is not needed.
                if let Some(slot) = self.slot_in(ctx) {
                    drop(value);
                    return Ok(slot);
                }
            } else {
                ctx.mark_changed();
                ctx.has_own_inheritable.store(true, Ordering::Relaxed);
            }
        }
        let cell = ctx.table.cell_or_grow(i);
        let p = Box::into_raw(Slot::<V>::new(
            sync_of(i),
            capture,
            (serial, self.name()),
            value,
        ));
        cell.store(p.cast(), Ordering::Release);
        ctx.record_first_binding(i);
        // SAFETY: just allocated; owned by `ctx` from now on (see `slot_in`).
        Ok(unsafe { &*p })
    }

    /// A fork's first write starts from what it inherited (copy-on-write). The copy runs the
    /// user's `Clone` with the context marked busy: a `ContextGuard` dropped inside it cannot
    /// hand the context to another thread before the copy is done, and then the write fails
    /// here instead of racing the context's next holder.
    #[cold]
    #[track_caller]
    fn copy_inherited(&self, ctx: &CtxInner, inherit: &Inherit<V>, from: &V) -> V {
        let copy = {
            let _busy = ctx.busy();
            (inherit.share)(from)
        };
        if ctx.release_deferred_pending() {
            apply_deferred(ctx);
            if !context::is_held_here(ctx) {
                drop(copy);
                fail(format_args!(
                    "context local `{}`: its context was left while its inherited value was copied",
                    self.name()
                ));
            }
        }
        copy
    }

    /// What `ctx` inherited for this local (it has no slot of it yet), if anything.
    #[inline]
    fn inherited_in<'a>(&self, ctx: &'a CtxInner) -> Option<&'a V> {
        if self.inherit.is_none() || !ctx.has_inherited() {
            return None;
        }
        ctx.inherited::<V>(self.key.get()?, self.key.serial())
    }

    /// What `ctx` — held by another thread — inherited for this local, read with the frame
    /// kept alive meanwhile (its teardown may release it).
    fn inherited_elsewhere<R>(&self, ctx: &CtxInner, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.inherit.as_ref()?;
        let frame = ctx.read_inherited_frame()?;
        frame.get::<V>(self.key.get()?, self.key.serial()).map(f)
    }

    /// A read where `ctx` has no slot: what it inherited, if anything.
    #[cold]
    #[inline(never)]
    fn read_unslotted<R>(&self, ctx: &CtxInner, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.inherited_in(ctx).map(f)
    }

    /// This local's slot in `ctx` (held by this thread), created if needed.
    #[inline]
    #[track_caller]
    pub(crate) fn slot_or_create<'a>(&'a self, ctx: &'a CtxInner) -> &'a Slot<V> {
        match self.slot_in(ctx) {
            Some(slot) => slot,
            None => self.create(ctx),
        }
    }

    /// Shared access to the current context's payload; `Ok(None)` if it has no slot yet (and
    /// inherited nothing).
    #[inline]
    pub(crate) fn read<R>(&self, f: impl FnOnce(&V) -> R) -> Result<Option<R>, AccessError> {
        Ok(self.read_or_return(f, |f, v| Ok(f(v)))?.ok())
    }

    /// Like [`read`](Self::read) for a caller that needs `f` back when it is not called:
    /// `call(f, payload)` runs `f` on what the payload holds or hands it back (`Err(f)`), and
    /// so does a context without a slot. The read path then carries no "`f` was used" flag.
    #[inline]
    pub(crate) fn read_or_return<F, R>(
        &self,
        f: F,
        call: fn(F, &V) -> Result<R, F>,
    ) -> Result<Result<R, F>, AccessError> {
        match context::current_uncounted() {
            Some(ctx) => self.read_in::<false, F, R>(ctx, f, call),
            None => self.read_counted(f, call),
        }
    }

    /// The common case of [`read_or_return`](Self::read_or_return) alone: an unguarded current
    /// context (nothing to count), this local's slot there, not written, no queued work, and
    /// `call` using `f`. Anything else hands `f` back untouched, having changed nothing, for
    /// the caller's out-of-line path to do it all again with `read_or_return` — so that the
    /// fast path's result is never merged with an error's and stays in registers.
    #[inline(always)]
    pub(crate) fn read_fast<F, R>(&self, f: F, call: fn(F, &V) -> Result<R, F>) -> Result<R, F> {
        match context::current_uncounted() {
            Some(ctx) => self.read_fast_in::<false, F, R>(ctx, f, call),
            None => Err(f),
        }
    }

    /// [`read_fast`](Self::read_fast) in a guarded context, counted: the first thing the
    /// caller's out-of-line path tries (a `ContextGuard` held around a loop of reads is a
    /// common pattern), so that the fast path itself tests nothing for it.
    #[inline(always)]
    pub(crate) fn read_guarded<F, R>(&self, f: F, call: fn(F, &V) -> Result<R, F>) -> Result<R, F> {
        match context::current_guarded() {
            Some(ctx) => self.read_fast_in::<true, F, R>(ctx, f, call),
            None => Err(f),
        }
    }

    #[inline(always)]
    fn read_fast_in<const COUNTED: bool, F, R>(
        &self,
        ctx: &CtxInner,
        f: F,
        call: fn(F, &V) -> Result<R, F>,
    ) -> Result<R, F> {
        let Some(slot) = self.slot_in(ctx) else {
            // A fork reading what it inherited (child tasks): as common as a bound read, so
            // not through the caller's cold path, which would look everything up again (an
            // inherited read cost 2.5-4.7x a bound one that way, 1.6x here).
            return self.read_unslotted_or_return(ctx, f, call);
        };
        let st = slot.hdr.state.holder_view();
        if st.blocks_shared() {
            return Err(f);
        }
        slot.hdr.state.begin_shared(st);
        let _borrow = SharedBorrow::new::<COUNTED>(&slot.hdr, ctx);
        // SAFETY: as in `read_in`.
        slot.value.with(|v| call(f, unsafe { &*v }))
    }

    /// [`read_or_return`](Self::read_or_return) in a guarded context (its reads count in its
    /// `holds`), or where there is no current context yet or any more.
    #[cold]
    #[inline(never)]
    fn read_counted<F, R>(
        &self,
        f: F,
        call: fn(F, &V) -> Result<R, F>,
    ) -> Result<Result<R, F>, AccessError> {
        let ctx = context::current().ok_or_else(|| self.err(AccessErrorKind::Destroyed))?;
        self.read_in::<true, F, R>(ctx, f, call)
    }

    /// The read in `ctx`, current on this thread; `COUNTED` unless `ctx` is known unguarded.
    #[inline(always)]
    fn read_in<const COUNTED: bool, F, R>(
        &self,
        ctx: &CtxInner,
        f: F,
        call: fn(F, &V) -> Result<R, F>,
    ) -> Result<Result<R, F>, AccessError> {
        let Some(slot) = self.slot_in(ctx) else {
            return Ok(self.read_unslotted_or_return(ctx, f, call));
        };
        let mut st = slot.hdr.state.holder_view();
        if st.blocks_shared() {
            st = self.busy::<false>(ctx, slot, st)?;
        }
        slot.hdr.state.begin_shared(st);
        let _borrow = SharedBorrow::new::<COUNTED>(&slot.hdr, ctx);
        // SAFETY: we hold the context (it is current on this thread), WRITING is clear and
        // stays clear while our shared borrow is counted; foreign readers only read.
        Ok(slot.value.with(|v| call(f, unsafe { &*v })))
    }

    /// A fork reading what it inherited is a common path (child tasks), not a cold one.
    #[inline]
    fn read_unslotted_or_return<F, R>(
        &self,
        ctx: &CtxInner,
        f: F,
        call: fn(F, &V) -> Result<R, F>,
    ) -> Result<R, F> {
        match self.inherited_in(ctx) {
            Some(v) => {
                // Lent like a borrowed slot's value: a write of this local waits for its end.
                let _lend = ctx.lend_inherited(self.key.raw());
                call(f, v)
            }
            None => Err(f),
        }
    }

    /// A read (a write if `WRITE`) found the slot busy: an error if it is being written (or,
    /// for a write, borrowed); else its queued work is done first, if no borrow is left.
    /// Returns the state to go on from.
    #[cold]
    #[inline(never)]
    fn busy<const WRITE: bool>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        st: Seen,
    ) -> Result<Seen, AccessError> {
        if st.is_writing() {
            return Err(self.err(AccessErrorKind::BorrowedMut));
        }
        if WRITE && st.is_borrowed() {
            return Err(self.err(AccessErrorKind::Borrowed));
        }
        if st.is_pending_unborrowed() {
            apply_deferred(ctx);
        }
        Ok(slot.hdr.state.holder_view())
    }

    /// Exclusive access to the current context's payload for `writer`, creating the slot if
    /// `create`. `Ok(None)` if there is no slot and `create` is `No`. Inlined, so that
    /// `writer`, a constant at every call, picks one protocol.
    #[inline]
    #[track_caller]
    pub(crate) fn write<R>(
        &self,
        writer: Writer,
        create: Create,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, AccessError> {
        let Some((ctx, slot)) = self.slot_for_write(create)? else {
            return Ok(None);
        };
        match writer {
            Writer::Runtime => self.write_in::<false, false, R>(ctx, slot, f),
            Writer::Replace => self.write_in::<false, true, R>(ctx, slot, f),
            Writer::User => self.write_in::<true, false, R>(ctx, slot, f),
        }
        .map(Some)
    }

    /// The current context and this local's slot there for a write: created if `create` says
    /// so, or if the context inherited a value it is about to copy; `None` if neither.
    ///
    /// # Errors
    ///
    /// `ExplicitOnly` for a user's new binding (`Create::Binding`) of an explicit-only local in
    /// a thread's own context: one test of a flag for other locals, no second lookup.
    /// Inlined always: it is the head of every write, whose `create` is then a constant.
    #[inline(always)]
    #[track_caller]
    #[allow(clippy::type_complexity)]
    fn slot_for_write(
        &self,
        create: Create,
    ) -> Result<Option<(&'static CtxInner, &Slot<V>)>, AccessError> {
        let (ctx, slot) = self.current_slot()?;
        if self.explicit_only && create == Create::Binding && context::is_thread_own(ctx) {
            return Err(self.refused());
        }
        Ok(match slot {
            Some(slot) => Some((ctx, slot)),
            None if create != Create::No || self.inherited_in(ctx).is_some() => {
                Some((ctx, self.try_create(ctx)?))
            }
            None => None,
        })
    }

    /// The `ExplicitOnly` error of a binding refused in a thread's own context.
    #[cold]
    #[inline(never)]
    fn refused(&self) -> AccessError {
        crate::explicit::refused(self.name())
    }

    /// A scope's binding: a runtime write in the current context, creating the slot (allowed
    /// for an explicit-only local too: a scope's binding ends by itself), and where it was
    /// made, for the scope's end — with one lookup of the context for both.
    #[inline(always)]
    pub(crate) fn write_scoped<R>(
        &self,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<(Where, R), AccessError> {
        let (ctx, slot) = match self.current_slot()? {
            (ctx, Some(slot)) => (ctx, slot),
            (ctx, None) => (ctx, self.try_create(ctx)?),
        };
        let at = Where::of(ctx);
        Ok((at, self.write_inlined::<false, false, R>(ctx, slot, f)?))
    }

    /// Like [`write`](Self::write) without creating, in `ctx` — a context this thread holds,
    /// not necessarily the current one (a scope ending after its context was left).
    #[inline(always)]
    pub(crate) fn write_held<R>(
        &self,
        ctx: &CtxInner,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<Option<R>, AccessError> {
        match self.slot_in(ctx) {
            Some(slot) => self
                .write_inlined::<false, false, R>(ctx, slot, f)
                .map(Some),
            None => Ok(None),
        }
    }

    /// The current context, as (address, serial, id): where a scope binds.
    pub(crate) fn current_context(&self) -> Result<Where, AccessError> {
        let ctx = context::current().ok_or_else(|| self.err(AccessErrorKind::Destroyed))?;
        Ok(Where::of(ctx))
    }

    /// Does `f` on this local's payload in the context at `at`, which this thread does not
    /// hold (a scope ended after its body left the context it bound in). If nobody holds it,
    /// under a brief `Removing` claim (after the work queued before, so the order of scope
    /// ends is kept; no user code runs under the claim, a foreign reader is waited for outside
    /// it); else `queue()` is posted for its holder, who does it before anything else runs
    /// there. A context that is gone took its values with it.
    #[cold]
    #[inline(never)]
    pub(crate) fn write_elsewhere<R, Q: FnOnce() -> Queued>(
        &self,
        at: Where,
        f: impl FnOnce(&mut V) -> R,
        queue: Q,
    ) -> Elsewhere<R> {
        let Some(ctx) = registry::lookup(at.id, at.serial) else {
            return Elsewhere::Gone;
        };
        let Some(index) = self.index() else {
            return Elsewhere::Gone;
        };
        let (mut f, mut queue) = (Some(f), Some(queue));
        let post = |queue: &mut Option<Q>| {
            ctx.post(index, queue.take().expect("queued once")());
            Elsewhere::Queued
        };
        loop {
            let Some(claim) = ctx.owner.try_remove() else {
                return post(&mut queue);
            };
            let removed = if ctx.has_pending() {
                ctx.apply_removals(Remover::Visitor)
            } else {
                Vec::new()
            };
            // Looked up under the claim: a write of the holder may have moved the payload to
            // a fresh slot meanwhile (`relocate`).
            let Some(slot) = self.slot_in(&ctx) else {
                drop(claim);
                drop(removed);
                return Elsewhere::Gone;
            };
            let st = slot.hdr.state.holder_view();
            let begun = if !st.is_borrowed() {
                begin_write(&slot.hdr, slot.sync, st, Mode::Try)
            } else {
                Err(Contended::Iterating) // a leaked borrow: leave it to the holder
            };
            match begun {
                Ok(()) => {
                    self.note_write(&ctx, slot);
                    let f = f.take().expect("done once");
                    // SAFETY: we hold the context (`Removing`), WRITING is set and no foreign
                    // reader is on the slot; `f` runs no user code.
                    let r = slot.value.with_mut(|v| f(unsafe { &mut *v }));
                    slot.end_write_from(st);
                    drop(claim);
                    drop(removed);
                    return Elsewhere::Done(r);
                }
                Err(Contended::Readers) => {
                    drop(claim);
                    drop(removed);
                    // Wait for the reader outside the claim, then retry.
                    if !self.wait_for_readers_of(slot) {
                        return post(&mut queue);
                    }
                }
                Err(_) => {
                    // Read by this thread's own `for_each`: the holder does it.
                    let queued = post(&mut queue);
                    drop(claim);
                    drop(removed);
                    return queued;
                }
            }
        }
    }

    /// The common case of a user's write (`with_mut`) alone, as
    /// [`read_fast`](Self::read_fast) is of a read: the current context — unguarded, or
    /// guarded and then counted if `COUNTED` (see [`read_guarded`](Self::read_guarded)) —,
    /// this local's slot there, unborrowed, no queued work, no `for_each` of the local running,
    /// and `call` using `f`. Anything else hands `f` back for the caller's full path
    /// ([`write`](Self::write) with [`Writer::User`]).
    #[inline(always)]
    pub(crate) fn write_fast<const COUNTED: bool, F, R>(
        &self,
        f: F,
        call: fn(F, &mut V) -> Result<R, F>,
    ) -> Result<R, F> {
        let current = if COUNTED {
            context::current_guarded()
        } else {
            context::current_uncounted()
        };
        let Some(ctx) = current else {
            return Err(f);
        };
        let Some(slot) = self.slot_in(ctx) else {
            return Err(f);
        };
        let st = slot.hdr.state.holder_view();
        if st.is_busy() || !begin_write_alone(&slot.hdr, slot.sync, st) {
            return Err(f);
        }
        self.note_write(ctx, slot);
        // Uncounted unless guarded: only a guarded context can be left inside `call`.
        let held = COUNTED && ctx.hold_if_guarded();
        let write = Write { slot, ctx, held };
        // SAFETY: holder, WRITING set, no shared borrow, no foreign reader (none announced
        // after our `WRITING` was visible, see `begin_write`).
        let r = slot.value.with_mut(|v| call(f, unsafe { &mut *v }));
        drop(write);
        r
    }

    /// Exclusive access to `slot`, of `ctx`, which this thread holds; `f` runs no user code.
    /// Inlined, as on the scope paths (see [`write_inlined`](Self::write_inlined)): for
    /// `StackGuard`s, whose push and removal are a scope's.
    #[inline(always)]
    pub(crate) fn write_slot<R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, AccessError> {
        self.write_inlined::<false, false, R>(ctx, slot, f)
    }

    /// The write protocol (see [`write_inlined`](Self::write_inlined)), left to the compiler
    /// to inline or not.
    #[inline]
    fn write_in<const USER: bool, const FRESH: bool, R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, AccessError> {
        self.write_inlined::<USER, FRESH, R>(ctx, slot, f)
    }

    /// The write protocol. With `USER`, `f` is user code, which may queue work on the slot
    /// (a guard dropped inside `with_mut`), so the end of the write looks for it; without,
    /// nothing can change the state meanwhile. With `FRESH`, see [`Writer::Replace`].
    ///
    /// Always inlined into the scope paths (`write_scoped`, `write_held`, `write_slot`): a
    /// write left out of line hands its result back through memory, and a scope's restore
    /// reads the value it takes out as one wide load of narrow stores made just before — a
    /// store-forwarding stall; inlined, a value nobody drops is not even loaded.
    #[inline(always)]
    fn write_inlined<const USER: bool, const FRESH: bool, R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, AccessError> {
        let mut st = slot.hdr.state.holder_view();
        // A borrow, queued work or an initializer: one branch on the hot path.
        if st.is_busy() {
            st = self.busy::<true>(ctx, slot, st)?;
        }
        // An initializer running on the slot keeps its place (its guard ends it there).
        let mode = if FRESH && !st.is_initializing() {
            Mode::Fresh
        } else {
            Mode::Wait
        };
        if let Err(e) = begin_write(&slot.hdr, slot.sync, st, mode) {
            return self.write_contended::<USER, R>(ctx, slot, st, e, f);
        }
        if FRESH && ctx.has_replaced() {
            return Ok(self.write_then_reclaim::<USER, R>(ctx, slot, st, f));
        }
        Ok(self.write_begun::<USER, R>(ctx, slot, st, f))
    }

    /// The write proper, `WRITING` set on `slot` (state `st` before).
    #[inline(always)]
    fn write_begun<const USER: bool, R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        st: Seen,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        self.note_write(ctx, slot);
        if USER {
            // Nothing records that this thread lends the payload out: a thread about to block
            // finds its `WRITING` slots then (`context::slots_written_here`).
            let held = ctx.hold_if_guarded();
            let write = Write { slot, ctx, held };
            // SAFETY: holder, WRITING set, no shared borrow, foreign readers waited out.
            let r = slot.value.with_mut(|v| f(unsafe { &mut *v }));
            drop(write);
            r
        } else {
            // SAFETY: as above. `f` runs no user code: it cannot unwind (short of an
            // allocation failure, which aborts) nor queue work on the slot.
            let r = slot.value.with_mut(|v| f(unsafe { &mut *v }));
            slot.end_write_from(st);
            r
        }
    }

    /// A replacing write in a context where earlier ones left old values to their readers:
    /// those whose readers have gone are dropped once this write is done.
    #[cold]
    #[inline(never)]
    fn write_then_reclaim<const USER: bool, R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        st: Seen,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let r = self.write_begun::<USER, R>(ctx, slot, st, f);
        let reclaimed = {
            let mut replaced = ctx.detach_lock();
            ctx.reclaim_replaced(&mut replaced)
        };
        drop(reclaimed);
        r
    }

    /// The rest of a write that could not begin at once: an error, or (a fresh write that
    /// found readers) the write done in the slot that replaces `slot`, after which the old
    /// values whose readers have gone are dropped.
    #[cold]
    #[inline(never)]
    fn write_contended<const USER: bool, R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        st: Seen,
        e: Contended,
        f: impl FnOnce(&mut V) -> R,
    ) -> Result<R, AccessError> {
        let (fresh, replaced) = self.contended(ctx, slot, st, e)?;
        // The fresh slot is WRITING (set by `relocate`), and no reader can have marked it.
        let r = self.write_begun::<USER, R>(ctx, fresh, Seen::EMPTY, f);
        // Old values whose readers have gone, dropped now that no write is in progress.
        drop(replaced);
        Ok(r)
    }

    /// A write could not begin at once: an error, or (`Readers`, for a fresh write) the slot
    /// to write instead and the replaced values to drop after the write.
    #[cold]
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn contended<'a>(
        &'a self,
        ctx: &'a CtxInner,
        slot: &'a Slot<V>,
        st: Seen,
        e: Contended,
    ) -> Result<(&'a Slot<V>, Vec<Box<dyn Send>>), AccessError> {
        match e {
            Contended::Readers => Ok(self.relocate(ctx, slot, st)),
            Contended::Iterating => Err(self.err(AccessErrorKind::Iterating)),
            Contended::Deadlock => Err(self.err(AccessErrorKind::Deadlock)),
        }
    }

    /// A write that replaces the whole payload found foreign readers on `old` (marked
    /// `WRITING` by us, state `st` before): instead of waiting for them, a fresh slot takes
    /// `old`'s place in the table, and `old` keeps its value for the readers still on it. A
    /// reader that comes later finds the fresh slot (readers check that the slot they marked
    /// is still the table's). This context's holder drops the old value once its readers are
    /// gone — at a later such write or at teardown — and reuses the emptied slot.
    #[cold]
    #[inline(never)]
    fn relocate<'a>(
        &'a self,
        ctx: &'a CtxInner,
        old: &'a Slot<V>,
        st: Seen,
    ) -> (&'a Slot<V>, Vec<Box<dyn Send>>) {
        let i = self.key.get_or_assign();
        let mut replaced = ctx.detach_lock();
        let fresh = self
            .reusable_replaced_slot(&mut replaced, i)
            .unwrap_or_else(|| {
                let slot = Slot::<V>::new(
                    old.sync,
                    old.hdr.capture,
                    (old.hdr.serial, old.hdr.name),
                    V::empty(),
                );
                slot.hdr.state.claim_for_write();
                NonNull::from(Box::leak(slot))
            });
        // SAFETY: the fresh slot is ours alone (WRITING set, not yet in the table); `old` is
        // only read, and its readers only read too.
        unsafe {
            let fresh_payload = &mut *fresh.as_ref().value.with_mut(|v| v);
            old.value.with(|o| fresh_payload.succeed(&*o));
        }
        let cell = ctx.table.cell_or_grow(i);
        cell.store(fresh.as_ptr().cast(), Ordering::Release);
        if self.inherit.is_some() {
            // A slot the next capture has not seen (its frozen copy may be fresh or not): that
            // capture rebuilds the whole frame.
            ctx.mark_changed();
        }
        // `old` stays as it was for its readers; `st` has no WRITING.
        old.hdr.state.restore(st);
        let dropped = ctx.reclaim_replaced(&mut replaced);
        replaced.push(ReplacedSlot {
            index: i,
            hdr: NonNull::from(&old.hdr),
            reclaimed: false,
        });
        ctx.note_replaced();
        // SAFETY: owned by `ctx` (table or replaced list) until the context is dropped or the
        // local detaches it, which needs `&mut self`.
        (unsafe { fresh.as_ref() }, dropped)
    }

    /// A replaced, emptied slot of this local to write into, marked `WRITING`, if one has no
    /// reader left.
    fn reusable_replaced_slot(
        &self,
        replaced: &mut Vec<ReplacedSlot>,
        index: usize,
    ) -> Option<NonNull<Slot<V>>> {
        let pos = replaced.iter().position(|r| {
            if r.index != index || !r.reclaimed {
                return false;
            }
            // SAFETY: replaced slots are live while the detach lock is held.
            let h = unsafe { r.hdr.as_ref() };
            // The per-slot handshake, as a writer: a reader that still holds an old pointer to
            // it either shows in `slot_readers` or sees `WRITING` and leaves.
            h.state.claim_for_write();
            if h.slot_readers.fetch_add(0, Ordering::AcqRel) == 0
                && h.kept_alive.load(Ordering::Relaxed) == 0
            {
                return true;
            }
            h.state.clear();
            false
        })?;
        Some(replaced.swap_remove(pos).hdr.cast())
    }

    /// An inheritable local is being written: the slot's frozen copy is stale, and the next
    /// capture updates the context's cached one with it (once per capture: listed when the
    /// copy goes stale).
    #[inline]
    fn note_write(&self, ctx: &CtxInner, slot: &Slot<V>) {
        if self.inherit.is_some() && slot.hdr.mark_frozen_stale() {
            ctx.note_dirty(self.key.raw());
        }
    }

    /// Exclusive access to `slot` of `ctx` (held by this thread), or `None` when that cannot
    /// be had now: the slot is borrowed, or this thread is iterating this local.
    #[inline(always)]
    pub(crate) fn try_write_slot<R>(
        &self,
        ctx: &CtxInner,
        slot: &Slot<V>,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let st = slot.hdr.state.holder_view();
        if st.is_borrowed() || begin_write(&slot.hdr, slot.sync, st, Mode::Wait).is_err() {
            return None;
        }
        Some(self.write_begun::<false, R>(ctx, slot, st, f))
    }

    /// Waits until no foreign reader marks `slot`, for a thread that holds nothing; `false`
    /// (at once) if that reader waits for this thread.
    pub(crate) fn wait_for_readers_of(&self, slot: &Slot<V>) -> bool {
        borrow::wait_for_slot_readers(&slot.hdr, slot.sync)
    }

    /// Queues work on `slot` of `ctx` (held by this thread) for when its borrows end.
    pub(crate) fn mark_pending(&self, slot: &Slot<V>) {
        slot.hdr.state.mark_pending();
    }

    /// Marks the current context's slot as running this local's initializer; the guard
    /// unmarks it.
    ///
    /// # Errors
    ///
    /// `Initializing` if the initializer is already running here (it used its own local);
    /// `Destroyed` during thread exit.
    #[track_caller]
    pub(crate) fn begin_init(&self) -> Result<InitGuard<'_, V>, AccessError> {
        let (ctx, _) = self.current_slot()?;
        let slot = self.slot_or_create(ctx);
        let st = slot.hdr.state.holder_view();
        if st.is_initializing() {
            return Err(self.err(AccessErrorKind::Initializing));
        }
        // `INIT` also counts as a borrow for a `ContextGuard` dropped inside the initializer: it
        // cannot hand the context to another thread before the initializer is done with it.
        slot.hdr.state.begin_init(st);
        ctx.hold();
        Ok(InitGuard { slot, ctx })
    }

    /// The initializer's value was just bound in the current context: it counts as bound after
    /// whatever the initializer bound itself (teardown order), not when its slot was made.
    pub(crate) fn record_binding_now(&self) {
        if let (Some(ctx), Some(i)) = (context::current(), self.key.get()) {
            ctx.record_first_binding(i);
        }
    }

    /// Whether the current context holds a value.
    #[inline]
    pub(crate) fn is_present(&self) -> bool {
        let (ctx, slot) = match self.current_slot() {
            Ok((ctx, Some(slot))) => (ctx, slot),
            Ok((ctx, None)) => return self.read_unslotted(ctx, V::is_present).unwrap_or(false),
            Err(_) => return false,
        };
        let st = slot.hdr.state.holder_view();
        if st.is_pending_unborrowed() {
            apply_deferred(ctx);
            return slot.hdr.state.holder_view().is_present();
        }
        st.is_present()
    }

    /// How many contexts hold a value.
    pub(crate) fn contexts(&self) -> usize {
        let mut n = 0;
        registry::visit_locked(|ctx| {
            let present = match self.slot_in(ctx) {
                Some(slot) => slot.hdr.state.foreign_view().is_present(),
                None => self
                    .inherited_elsewhere(ctx, |v| v.is_present())
                    .unwrap_or(false),
            };
            n += usize::from(present);
        });
        n
    }

    /// Calls `f` with every context's present payload.
    ///
    /// A context whose holder is writing its value is come back to after the others, so the
    /// iteration never waits while it has a value marked (see `borrow.rs`).
    #[track_caller]
    pub(crate) fn for_each(&self, mut f: impl FnMut(ContextId, &V))
    where
        V: Sync,
    {
        let Some(i) = self.key.get() else {
            return;
        };
        // `sync_of` takes the index registry's lock: once per call.
        let sync = sync_of(i);
        let iteration = context::unfinished::Iteration::begin();
        self.iterate(i, sync, &mut f);
        // A guard of this context dropped inside `f` queued its removal (this thread could not
        // write while it read): apply it now that the iteration is over.
        if let Some(ctx) = context::current() {
            if ctx.has_pending() && !borrow::iterating_here(sync) {
                apply_deferred(ctx);
            }
        }
        // A context dropped inside `f` whose value `f` was reading: dropped now, in its context.
        if let Some(p) = iteration.end() {
            std::panic::resume_unwind(p);
        }
    }

    /// `for_each` proper, while this thread is announced as a reader.
    #[track_caller]
    fn iterate(&self, i: usize, sync: &'static IndexSync, f: &mut impl FnMut(ContextId, &V))
    where
        V: Sync,
    {
        let _reading = Reading::start(sync);
        let mut later = Vec::new();
        for ctx in registry::snapshot() {
            if !self.visit(&ctx, i, f) {
                later.push(ctx);
            }
        }
        for ctx in later {
            let mut round = 0;
            while !self.visit(&ctx, i, f) {
                // Registered afresh each round: the slot may have moved, its writer changed.
                let on = waits::On::Writing(self.slot_addr(&ctx, i));
                let Some(waiting) = waits::register(on, context::slots_written_here) else {
                    fail(format_args!(
                        "context local `{}` cannot be iterated here: a holder changing it waits for this thread",
                        self.name()
                    ))
                };
                crate::sync::backoff(&mut round);
                drop(waiting);
            }
        }
    }

    /// The address of the slot at `index` in `ctx` (0 if none).
    fn slot_addr(&self, ctx: &CtxInner, index: usize) -> usize {
        ctx.table.slot_at(index).map_or(0, |p| p.addr().get())
    }

    /// Hands `ctx`'s payload of this local (at `index`) to `f`, unless its holder is writing
    /// it right now: then `false`, and nothing was marked.
    #[track_caller]
    fn visit(&self, ctx: &CtxInner, index: usize, f: &mut impl FnMut(ContextId, &V)) -> bool
    where
        V: Sync,
    {
        loop {
            let Some(hdr) = ctx.table.slot_at(index) else {
                // A fork's inherited value is frozen: read it as it is.
                self.inherited_elsewhere(ctx, |v| {
                    if v.is_present() {
                        f(ctx.id, v);
                    }
                });
                return true;
            };
            // SAFETY: a slot of this local, which we borrow (it cannot detach its slots);
            // slots live as long as their context (replaced ones too), which the caller keeps.
            let slot = unsafe { hdr.cast::<Slot<V>>().as_ref() };
            // An outer `for_each` of this thread marks this very slot: a `WRITING` seen now
            // is a writer waiting for that mark, not one writing. And a writer still waiting
            // (`WAITING`) has not touched the value: a reader inside a callback reads it
            // rather than wait for a writer that may be waiting for that callback.
            let (ours, nested) = waits::marked_here_and_any(hdr.addr().get());
            let (mark, st) = SlotReader::new(&slot.hdr, slot.sync);
            let readable = ours || (nested && st.writer_waiting());
            if st.is_writing() && !readable {
                drop(mark);
                // The writer is this very thread (an outer `with_mut`, maybe in a context
                // entered further out): coming back would never end.
                if context::is_held_here(ctx) || ctx.deferred_here() {
                    fail(format_args!(
                        "context local `{}` cannot be iterated inside its own `with_mut`",
                        self.name()
                    ));
                }
                return false;
            }
            if ctx.table.slot_at(index) != Some(hdr) {
                continue; // moved to a fresh slot meanwhile (`relocate`): read that one
            }
            if st.is_present() {
                // SAFETY: WRITING was clear after our mark was visible to the holder (the
                // per-slot handshake), so the holder does not write the payload until the mark
                // is dropped; the Acquire load synchronised with its last write. `V: Sync`
                // makes sharing the `&V` with the holder's own shared borrows sound.
                slot.value.with(|v| f(ctx.id, unsafe { &*v }));
            }
            drop(mark);
            return true;
        }
    }
}

impl<V> Storage<V> {
    /// Removes and drops this local's slots in every context (a dropped non-`static` local),
    /// then recycles its index.
    pub(crate) fn detach_all(&mut self) {
        let Some(i) = self.key.get() else {
            return;
        };
        let mut detached: Vec<(crate::sync::Arc<CtxInner>, NonNull<SlotHeader>)> = Vec::new();
        let contexts = registry::snapshot();
        // Values of queued work on this local (scope restores), dropped outside every lock.
        let mut forgotten = Vec::new();
        for ctx in &contexts {
            let mut replaced = ctx.detach_lock();
            forgotten.extend(ctx.forget_removals(i));
            // A cached capture may hold this local's value: rebuild it.
            ctx.mark_changed();
            if let Some(cell) = ctx.table.cell(i) {
                if let Some(p) = NonNull::new(cell.swap(ptr::null_mut(), Ordering::AcqRel)) {
                    detached.push((ctx.clone(), p));
                }
            }
            replaced.retain(|r| {
                let ours = r.index == i;
                if ours {
                    detached.push((ctx.clone(), r.hdr));
                }
                !ours
            });
        }
        // The heavy half of the handshake with a holder scanning its slots (`borrowed_slots`):
        // a scan that could still see a detached slot is announced by now, and waited for.
        if !detached.is_empty() {
            crate::sync::heavy();
        }
        for (ctx, p) in detached {
            ctx.wait_for_scan();
            let _guard = ctx.detach_lock();
            // SAFETY: detached above; kept_alive change only under the detach lock.
            let header = unsafe { p.as_ref() };
            if header.kept_alive.load(Ordering::Relaxed) > 0 {
                // A capture or wait keeps it alive: the last keeper (`SlotKeptAlive`'s drop) frees it.
                header.orphaned.store(true, Ordering::Relaxed);
            } else {
                drop(_guard);
                // SAFETY: swapped out of the table, nothing keeps it alive (`kept_alive` is 0) and no scan can see it
                // (handshake above), and nobody can use this local (we have `&mut self`): we
                // own the slot.
                unsafe { SlotHeader::free(p) };
            }
        }
        drop(forgotten);
        // Contexts that died before the snapshot may still hold a slot at `i`; they are never
        // current again, so the recycled index cannot meet the stale slot.
        self.key.recycle();
    }
}

/// Ends a write, also on unwind, publishing whether the payload is present, and runs what was
/// queued for its end.
struct Write<'a, V: Payload> {
    slot: &'a Slot<V>,
    ctx: &'a CtxInner,
    /// Counted in `ctx`'s holds (see `CtxInner::hold_if_guarded`).
    held: bool,
}

impl<V: Payload> Drop for Write<'_, V> {
    #[inline]
    fn drop(&mut self) {
        if self.held {
            self.ctx.unhold();
        }
        let st = self.slot.end_write();
        apply_deferred_if_due(self.ctx, st);
    }
}

/// Unmarks a running initializer, also on unwind.
pub(crate) struct InitGuard<'a, V> {
    slot: &'a Slot<V>,
    ctx: &'a CtxInner,
}

impl<V> InitGuard<'_, V> {
    /// The initializer returned: unmark it.
    ///
    /// # Panics
    ///
    /// If the initializer left the context it ran in (dropped its `ContextGuard`): its value
    /// can no longer be bound there.
    #[track_caller]
    pub(crate) fn finish(self, name: &'static str) {
        let ctx = self.ctx;
        let st = self.end();
        std::mem::forget(self);
        if st.is_pending_unborrowed() {
            apply_deferred(ctx);
            if !context::is_held_here(ctx) {
                fail(format_args!(
                    "context local `{name}`: its initializer left the context it ran in"
                ));
            }
        }
    }

    fn end(&self) -> Seen {
        self.ctx.unhold();
        self.slot.hdr.state.end_init()
    }
}

impl<V> Drop for InitGuard<'_, V> {
    fn drop(&mut self) {
        // Unwinding out of the initializer: queued work is done at the slot's next use, but a
        // release the initializer deferred (it left the context) ends now.
        self.end();
        self.ctx.end_deferred_release();
    }
}

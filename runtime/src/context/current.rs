//! The current context of each thread, and the chain of contexts it has entered.
//!
//! `CURRENT` points at the top of this thread's chain; each entered context's `link` points at
//! the one below it; the thread's own context (created on first use) is the bottom. Entering
//! pushes, leaving unlinks — from the top in the usual case, from anywhere when guards are
//! dropped out of order — so each guard leaves exactly its own entry. Every context in the
//! chain is held for this thread (see `owner.rs`) and kept alive by its holder, which is what
//! makes following the links sound.

use std::cell::{Cell, RefCell};
use std::ptr;

use super::inner::CtxInner;
use super::owner::{thread_mark, State};
use super::registry;
use super::ContextId;
use crate::sync::Arc;

/// Sentinel address of a chain's bottom before this thread's own context is created.
const UNSET: usize = 1;
/// Sentinel address once this thread's own context is destroyed (thread exit).
const DESTROYED: usize = 3;
/// Tag bit in `CURRENT`: the top context is guarded (see `CtxInner::guarded`).
const GUARDED: usize = 1;

crate::sync::thread_locals! {
    /// Top of this thread's chain, tagged: every value but an unguarded context's address is
    /// odd (`UNSET`, `DESTROYED`, a guarded context's address with `GUARDED` set), so the
    /// read path tells "a context whose accesses count nothing" with one bit test (see
    /// `current_uncounted`). Everything else sees it untagged, through `current_ptr`.
    static CURRENT: Cell<*const CtxInner> = const { Cell::new(UNSET as *const CtxInner) };
    /// While the thread's own context is torn down (thread exit) with it current, the chain
    /// that was above it (contexts entered by guards that live in other thread-locals).
    static SET_ASIDE: Cell<*const CtxInner> = const { Cell::new(ptr::null()) };
    /// The thread's own context; its destructor tears the context down at thread exit.
    static THREAD_CTX: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

/// `CURRENT` as stored (tagged). A const, `Drop`-free thread-local is never destroyed by std,
/// so `try_with` costs nothing; loom's mock thread-locals are destroyed at thread exit, which
/// reads as `DESTROYED`.
#[inline(always)]
fn current_raw() -> *const CtxInner {
    CURRENT
        .try_with(Cell::get)
        .unwrap_or(DESTROYED as *const CtxInner)
}

/// `CURRENT` untagged: `UNSET`, `DESTROYED` or the top context's address.
#[inline(always)]
fn current_ptr() -> *const CtxInner {
    untag(current_raw())
}

#[inline(always)]
fn untag(raw: *const CtxInner) -> *const CtxInner {
    if raw.addr() > DESTROYED {
        raw.map_addr(|a| a & !GUARDED)
    } else {
        raw
    }
}

/// Makes `p` (untagged) the top of the chain; returns the previous top, untagged. The tag is
/// `p`'s `guarded` flag, which changes only while `p` is outside every chain (it is set before
/// `p` is entered, cleared after it is left), so the tag stays exact while `p` is on top.
#[inline(always)]
fn set_current(p: *const CtxInner) -> *const CtxInner {
    untag(replace_current(tag(p)))
}

/// `p` with its `guarded` flag as the tag bit.
#[inline(always)]
fn tag(p: *const CtxInner) -> *const CtxInner {
    // SAFETY: a context about to be on top of this thread's chain, or linked into it, is held
    // by this thread and kept alive by its holder (see the module docs); `guarded` is
    // holder-only.
    if is_context(p) && unsafe { &*p }.is_guarded() {
        p.map_addr(|a| a | GUARDED)
    } else {
        p
    }
}

/// Stores `tagged` (an exact tag: see `set_current`) as the top; returns the previous top as
/// stored (tagged).
#[inline(always)]
fn replace_current(tagged: *const CtxInner) -> *const CtxInner {
    CURRENT
        .try_with(|c| c.replace(tagged))
        .unwrap_or(DESTROYED as *const CtxInner)
}

/// The context entered before `n`, untagged. A link keeps the tag `CURRENT` had (exact: a
/// context's flag changes only while it is outside every chain), so that leaving puts it back
/// as it was, without reading the flag of the context below again.
#[inline(always)]
fn next_of(n: &CtxInner) -> *const CtxInner {
    untag(n.link())
}

fn is_context(p: *const CtxInner) -> bool {
    p.addr() > DESTROYED
}

/// The current context, or `None` if this thread's context is destroyed (thread exit).
#[inline]
pub(crate) fn current() -> Option<&'static CtxInner> {
    // The usual case in one bit test, as on the read path.
    if let Some(ctx) = current_uncounted() {
        return Some(ctx);
    }
    let p = current_ptr();
    if is_context(p) {
        // SAFETY: `CURRENT` only ever holds `UNSET`, `DESTROYED`, or the top of this thread's
        // chain, which its holder keeps alive until it leaves the chain. The `'static` is
        // internal: callers use it within one call.
        Some(unsafe { &*p })
    } else {
        current_slow()
    }
}

/// The current context if its accesses count nothing in its `holds` — it is not guarded, so
/// it cannot be left while one of them is open (see `CtxInner::guarded`); `None` if it is
/// guarded, or there is no context yet or any more: the caller takes the counting path,
/// through [`current`]. One bit test: the read path's.
#[inline(always)]
pub(crate) fn current_uncounted() -> Option<&'static CtxInner> {
    let raw = current_raw();
    if raw.addr() & GUARDED == 0 {
        // SAFETY: as in `current`: an even `CURRENT` is an untagged context address.
        Some(unsafe { &*raw })
    } else {
        None
    }
}

/// The current context if it is guarded (its accesses count in its `holds`, see
/// `CtxInner::guarded`).
#[inline(always)]
pub(crate) fn current_guarded() -> Option<&'static CtxInner> {
    let raw = current_raw();
    if raw.addr() & GUARDED != 0 && raw.addr() > DESTROYED {
        // SAFETY: as in `current`, once untagged.
        Some(unsafe { &*untag(raw) })
    } else {
        None
    }
}

#[cold]
#[inline(never)]
fn current_slow() -> Option<&'static CtxInner> {
    if current_ptr().addr() == DESTROYED {
        return None;
    }
    // First use on this thread, outside any entered context: create its own context.
    let inner = registry::register(State::Own, None);
    let raw = Arc::as_ptr(&inner);
    let installed = THREAD_CTX
        .try_with(|slot| *slot.borrow_mut() = Some(ThreadCtx(inner.clone())))
        .is_ok();
    if !installed {
        // The thread is already running its thread-local destructors.
        drop(registry::unregister(inner.id));
        set_current(DESTROYED as *const CtxInner);
        return None;
    }
    set_current(raw);
    // SAFETY: `THREAD_CTX` now holds a strong reference until thread exit.
    Some(unsafe { &*raw })
}

/// The current context, if it lives at `addr` (a context's address, remembered earlier).
#[inline]
pub(crate) fn current_if_at(addr: usize) -> Option<&'static CtxInner> {
    let p = current_ptr();
    if p.addr() != addr || !is_context(p) {
        return None;
    }
    // SAFETY: as in `current`.
    Some(unsafe { &*p })
}

/// Makes `ctx` current on this thread, on top of the chain, until [`Entered`] is dropped.
///
/// # Safety
///
/// The caller holds `ctx` for this thread (an `Entered`, `Task` or `Dropping` claim, see
/// `owner.rs`) and keeps it alive until the returned guard is dropped.
#[inline]
pub(crate) unsafe fn enter(ctx: &CtxInner) -> Entered<'_> {
    ctx.set_link(replace_current(tag(ctx)));
    Entered(ctx)
}

/// [`enter`] for a task's context, which is never guarded: a `ContextGuard` sets the flag
/// only on a context it claimed, and a task's claim (`Task`) excludes every other. Reads no
/// flag, so a poll pays for the switch alone.
///
/// # Safety
///
/// As [`enter`], with a `Task` claim.
#[inline]
pub(crate) unsafe fn enter_task(ctx: &CtxInner) -> Entered<'_> {
    debug_assert!(!ctx.is_guarded(), "a task's context is never guarded");
    ctx.set_link(replace_current(ctx));
    Entered(ctx)
}

/// Keeps a context in this thread's chain; dropping it takes exactly that context out.
pub(crate) struct Entered<'a>(&'a CtxInner);

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        let me = ptr::from_ref(self.0);
        if current_ptr() == me {
            replace_current(self.0.link());
        } else {
            leave_out_of_order(self.0);
        }
    }
}

/// `ctx` is not on top: unlink it from below whatever was entered after it.
#[cold]
fn leave_out_of_order(ctx: &CtxInner) {
    if unlink(current_ptr(), ctx) {
        return;
    }
    let aside = SET_ASIDE.try_with(Cell::get).unwrap_or(ptr::null());
    if aside == ptr::from_ref(ctx) {
        let _ = SET_ASIDE.try_with(|a| a.set(next_of(ctx)));
    } else {
        unlink(aside, ctx);
    }
}

/// In the chain starting at `top`, makes whatever points at `ctx` point past it.
fn unlink(top: *const CtxInner, ctx: &CtxInner) -> bool {
    let me = ptr::from_ref(ctx);
    let mut node = top;
    while is_context(node) {
        // SAFETY: every context in this thread's chain is alive (see the module docs).
        let n = unsafe { &*node };
        let next = next_of(n);
        if next == me {
            n.set_link(ctx.link()); // as stored: tagged
            return true;
        }
        node = next;
    }
    false
}

/// The slots this thread writes right now: those marked `WRITING` in the contexts it holds
/// (its chain, what thread exit set aside, and contexts it left inside a write of theirs, whose
/// release it deferred). Only the holder sets `WRITING`, so these are its open `with_mut`
/// frames and a write of its own waiting for readers. Cold: for a thread about to block
/// (`waits::register`), whose writes cannot change while it is blocked, so the hot write path
/// records nothing.
#[cold]
pub(crate) fn slots_written_here() -> Vec<usize> {
    let mut out = Vec::new();
    let aside = SET_ASIDE.try_with(Cell::get).unwrap_or(ptr::null());
    for mut node in [current_ptr(), aside] {
        while is_context(node) {
            // SAFETY: as in `unlink`.
            let n = unsafe { &*node };
            n.writing_slots(&mut out);
            node = next_of(n);
        }
    }
    let mark = thread_mark();
    if mark != 0 {
        registry::visit_locked(|ctx| {
            if ctx.deferred_by(mark) {
                ctx.writing_slots(&mut out);
            }
        });
    }
    out
}

/// The context at `addr` with `serial`, if this thread holds it (current, entered further out,
/// or its own).
#[inline]
pub(crate) fn held_here(addr: usize, serial: u64) -> Option<&'static CtxInner> {
    // The usual case: it is the current one.
    if let Some(ctx) = current_if_at(addr) {
        if ctx.serial == serial {
            return Some(ctx);
        }
    }
    held_further_out(addr, serial)
}

#[cold]
#[inline(never)]
fn held_further_out(addr: usize, serial: u64) -> Option<&'static CtxInner> {
    let aside = SET_ASIDE.try_with(Cell::get).unwrap_or(ptr::null());
    for mut node in [current_ptr(), aside] {
        while is_context(node) {
            // SAFETY: as in `unlink`; the `'static` is internal, as in `current`.
            let n: &'static CtxInner = unsafe { &*node };
            if node.addr() == addr && n.serial == serial {
                return Some(n);
            }
            node = next_of(n);
        }
    }
    None
}

/// Calls `f` on each context this thread holds — the current one first, then those entered
/// further out, down to its own — until `f` returns `true`; whether it did. `f` must run no
/// user code: the chain must not change while it is walked.
#[cold]
#[inline(never)]
pub(crate) fn find_held(mut f: impl FnMut(&'static CtxInner) -> bool) -> bool {
    let aside = SET_ASIDE.try_with(Cell::get).unwrap_or(ptr::null());
    for mut node in [current_ptr(), aside] {
        while is_context(node) {
            // SAFETY: as in `unlink`: every node of this thread's chain is held and kept alive
            // by its holder while it is in the chain, and `f` cannot change the chain. The
            // `'static` is internal, as in `current`.
            let n: &'static CtxInner = unsafe { &*node };
            if f(n) {
                return true;
            }
            node = next_of(n);
        }
    }
    false
}

/// Whether this thread holds `ctx`: current, entered further out, or its own context.
pub(crate) fn is_held_here(ctx: &CtxInner) -> bool {
    let me = ptr::from_ref(ctx);
    let aside = SET_ASIDE.try_with(Cell::get).unwrap_or(ptr::null());
    [current_ptr(), aside].into_iter().any(|mut node| {
        while is_context(node) {
            if node == me {
                return true;
            }
            // SAFETY: as in `unlink`.
            node = next_of(unsafe { &*node });
        }
        false
    })
}

/// In the chain starting at `top`, makes whatever points at `old` point at `new`.
fn rebase(top: *const CtxInner, old: *const CtxInner, new: *const CtxInner) {
    let mut node = top;
    while is_context(node) && node != old {
        // SAFETY: as in `unlink`.
        let n = unsafe { &*node };
        if next_of(n) == old {
            n.set_link(tag(new));
            return;
        }
        node = next_of(n);
    }
}

/// `f` on this thread's own context, if it has one (it is created on first use) and it is
/// not torn down yet. `f` must run no user code: the thread-local stays borrowed meanwhile.
pub(crate) fn with_own<R>(f: impl FnOnce(&CtxInner) -> R) -> Option<R> {
    THREAD_CTX
        .try_with(|slot| slot.try_borrow().ok()?.as_ref().map(|own| f(&own.0)))
        .ok()
        .flatten()
}

/// The thread's own context: torn down when the thread exits.
struct ThreadCtx(Arc<CtxInner>);

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        let own = Arc::as_ptr(&self.0);
        // Contexts still entered above the own one (their guards live in thread-locals that
        // are destroyed later) are set aside, so the own context's values drop with it current.
        let top = set_current(own);
        if top != own {
            let _ = SET_ASIDE.try_with(|a| a.set(top));
        }
        // What it leaves (a `for_each` running in a thread-local destructor reads it) goes with
        // its storage: no code of this thread runs after it.
        let panicked = self.0.teardown().panicked;
        // From now on, leaving the contexts that were entered above the own one ends in
        // `DESTROYED`.
        let aside = SET_ASIDE
            .try_with(|a| a.replace(ptr::null()))
            .unwrap_or(ptr::null());
        let below = if is_context(aside) {
            rebase(aside, own, DESTROYED as *const CtxInner);
            aside
        } else {
            DESTROYED as *const CtxInner
        };
        let after = current_ptr();
        if after == own {
            set_current(below);
        } else {
            rebase(after, own, below);
        }
        drop(registry::unregister(self.0.id));
        if let Some(p) = panicked {
            // As with any thread-local whose destructor panics, std aborts the process here.
            std::panic::resume_unwind(p);
        }
    }
}

// Here rather than in `id.rs`: an id is a plain number, and knowing which context is current
// is this module's job (so `id` depends on nothing).
impl ContextId {
    /// The id of the context this thread is running.
    ///
    /// # Panics
    ///
    /// If called from a thread-local destructor after this thread's context was destroyed; use
    /// [`try_current`](Self::try_current) there.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::ContextId;
    /// assert_eq!(ContextId::current(), ContextId::current());
    /// ```
    #[track_caller]
    pub fn current() -> Self {
        match Self::try_current() {
            Some(id) => id,
            None => crate::error::fail(format_args!(
                "the current thread's context was destroyed (thread exit)"
            )),
        }
    }

    /// The id of the context this thread is running, or `None` once this thread's context was
    /// destroyed (during thread exit).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::ContextId;
    /// assert!(ContextId::try_current().is_some());
    /// ```
    pub fn try_current() -> Option<Self> {
        current().map(|c| c.id)
    }
}

/// Under loom only: tears down this thread's context now, as thread exit does. loom drops
/// mock thread-locals outside the model, where no modelled primitive may be touched, so the
/// models call this as the last step of every thread instead.
#[cfg(all(loom, test))]
pub(crate) fn loom_thread_exit() {
    let ctx = THREAD_CTX.with(|c| c.borrow_mut().take());
    drop(ctx);
}

//! Contexts: what an id names, who holds it, and which one is current.
//!
//! - `owner`: who holds a context (the one state machine for entering, tasks, removals, drop);
//! - `current`: each thread's chain of entered contexts and its own context;
//! - `inner`: one context's storage, pending removals and teardown;
//! - `rare`: the part of a context only some need, allocated on first use;
//! - `table`: the slot table and the type-erased slot header;
//! - `overflow`: the table's cells past its inline ones, by index;
//! - `registry`: live contexts by id, for iteration;
//! - `frame`: frames (a context's inheritable values at one moment, shared by snapshots and
//!   forks) and what a fork inherited;
//! - `capture`: a context's side of inheritance: capturing its inheritable values into a frame
//!   (cached), and reading the frame it inherited (lends to its holder, foreign readers). The
//!   user API (`Snapshot`, `thread::spawn`) is the top-level `inherit`;
//! - `unfinished`: teardowns that had to leave values, finished later by their thread;
//! - `visit`: a thread that does not hold a context removes a guard's value there (claiming it
//!   briefly) or queues the removal for its holder;
//! - `id` and `enter_error`: the public `ContextId` and `EnterError`.

pub(crate) mod capture;
mod current;
mod enter_error;
pub(crate) mod frame;
mod id;
mod inner;
mod overflow;
pub(crate) mod owner;
mod rare;
pub(crate) mod registry;
pub(crate) mod slot_state;
pub(crate) mod table;
pub(crate) mod unfinished;
mod visit;

use std::fmt;
use std::marker::PhantomData;

#[cfg(all(loom, test))]
pub(crate) use current::loom_thread_exit;
pub(crate) use current::{
    current, current_guarded, current_if_at, current_uncounted, enter, enter_task, find_held,
    held_here, is_held_here, slots_written_here, with_own, Entered,
};
pub use enter_error::EnterError;
pub use id::ContextId;
pub(crate) use inner::CtxInner;
pub(crate) use rare::ReplacedSlot;

use crate::error::fail;
use crate::sync::Arc;
use owner::{EnterClaim, State};

/// An explicit context: its own set of values for every local and stack, made current with
/// [`run`](Self::run) or [`enter`](Self::enter).
///
/// This is the Rust form of Werkzeug's `__ident_func__`: a scheduler, a test harness or an
/// executor enters the context of the work it is running. A `Context` is `Send + Sync`, so it can
/// move with an async task between threads; it may be entered by one thread at a time. Its
/// values are dropped when the `Context` is dropped, with the context current, in the reverse
/// order of each local's first binding in it.
///
/// # Examples
///
/// ```
/// use context_local::{Context, Local};
///
/// static USER: Local<&str> = Local::named("USER");
///
/// USER.set("thread");
/// let alice = Context::new();
/// alice.run(|| USER.set("alice"));
///
/// assert_eq!(USER.get(), Some("thread"));
/// assert_eq!(alice.run(|| USER.get()), Some("alice"));
/// ```
pub struct Context {
    pub(crate) inner: Arc<CtxInner>,
}

impl Context {
    /// A new, empty context.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Context, Local};
    /// static N: Local<u32> = Local::new();
    /// N.set(1);
    /// assert!(!Context::new().run(|| N.is_set()));
    /// ```
    pub fn new() -> Self {
        Self {
            inner: registry::register(State::Idle, None),
        }
    }

    /// This context's id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Context, ContextId};
    /// let ctx = Context::new();
    /// assert_ne!(ctx.id(), ContextId::current());
    /// ```
    pub fn id(&self) -> ContextId {
        self.inner.id
    }

    /// Runs `f` with this context current on this thread, then switches back (also when `f`
    /// panics).
    ///
    /// # Panics
    ///
    /// If the context is already entered (by this or another thread, or owned by a task).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Context, LocalStack};
    /// static STACK: LocalStack<u32> = LocalStack::named("STACK");
    /// let ctx = Context::new();
    /// ctx.run(|| STACK.push(1));
    /// assert_eq!(STACK.len(), 0);
    /// assert_eq!(ctx.run(|| STACK.top()), Some(1));
    /// ```
    #[track_caller]
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        // Unguarded: `f` cannot reach this guard, so every access `f` opens ends before the
        // context is left, and none of them needs to count (see `CtxInner::guarded`).
        let _guard = match self.claim_and_enter(false) {
            Ok(g) => g,
            Err(e) => fail(format_args!(
                "{e}: a context may be entered by one thread, once, at a time"
            )),
        };
        f()
    }

    /// Makes this context current on this thread until the returned guard is dropped.
    ///
    /// # Panics
    ///
    /// If the context is already entered (by this or another thread, or owned by a task): its
    /// values belong to one holder at a time. [`try_enter`](Self::try_enter) returns an error
    /// instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Context, ContextId};
    /// let ctx = Context::new();
    /// {
    ///     let _guard = ctx.enter();
    ///     assert_eq!(ContextId::current(), ctx.id());
    /// }
    /// assert_ne!(ContextId::current(), ctx.id());
    /// ```
    #[track_caller]
    pub fn enter(&self) -> ContextGuard<'_> {
        match self.try_enter() {
            Ok(g) => g,
            Err(e) => fail(format_args!(
                "{e}: a context may be entered by one thread, once, at a time"
            )),
        }
    }

    /// Makes this context current on this thread, or fails if it is already entered.
    ///
    /// Guard removals that were queued while the context was held elsewhere are applied first
    /// (their values dropped with the context current).
    ///
    /// # Errors
    ///
    /// [`EnterError`] if this or another thread has the context entered, or a task owns it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Context;
    /// let ctx = Context::new();
    /// let guard = ctx.try_enter().unwrap();
    /// assert!(ctx.try_enter().is_err());
    /// drop(guard);
    /// assert!(ctx.try_enter().is_ok());
    /// ```
    pub fn try_enter(&self) -> Result<ContextGuard<'_>, EnterError> {
        self.claim_and_enter(true)
    }

    /// `try_enter`; `guarded` for a guard handed to the user, who may drop it inside an access
    /// to one of the context's values (see `CtxInner::guarded`).
    fn claim_and_enter(&self, guarded: bool) -> Result<ContextGuard<'_>, EnterError> {
        let claim = self
            .inner
            .owner
            .try_enter()
            .map_err(|_| EnterError { id: self.inner.id })?;
        if guarded {
            // Before it is current: every access from now on counts.
            self.inner.enter_guarded();
        }
        // SAFETY: we hold the context (`Entered`) for this thread; the guard borrows `self`,
        // whose `Arc` keeps it alive until the guard leaves it.
        let entered = unsafe { enter(&self.inner) };
        let guard = ContextGuard {
            ctx: self,
            entered: Some(entered),
            claim: Some(claim),
            _not_send: PhantomData,
        };
        if self.inner.has_pending() {
            // Queued while held elsewhere; dropped here, with the context current.
            drop(
                self.inner
                    .apply_removals(crate::context::table::Remover::Holder),
            );
        }
        Ok(guard)
    }

    /// Whether this context cannot be entered right now: a thread has it entered, or a task
    /// owns it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Context;
    /// let ctx = Context::new();
    /// assert!(!ctx.is_entered());
    /// ctx.run(|| assert!(ctx.is_entered()));
    /// ```
    pub fn is_entered(&self) -> bool {
        matches!(self.inner.owner.state(), State::Entered | State::Task)
    }
}

impl Context {
    /// A new context that starts with `frame`'s values (a fork of a snapshot).
    pub(crate) fn with_inherited(frame: Arc<frame::Frame>) -> Self {
        Self {
            inner: registry::register(State::Idle, Some(frame::Inherited::owned(frame))),
        }
    }

    /// Like [`with_inherited`](Self::with_inherited), borrowing `frame` instead of counting a
    /// reference to it.
    ///
    /// # Safety
    ///
    /// The returned context must be dropped (not leaked, not entered forever) while `frame` is
    /// still alive.
    pub(crate) unsafe fn with_lent_frame(frame: &Arc<frame::Frame>) -> Self {
        // SAFETY: forwarded: the context's teardown, in its drop, ends the use of `frame`.
        let lent = unsafe { frame::Inherited::lent(frame) };
        Self {
            inner: registry::register(State::Idle, Some(lent)),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.inner.id)
            .field("entered", &self.is_entered())
            .finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.inner.owner.start_drop().is_err() {
            // A `ContextGuard` borrows its `Context`, so this only happens when a guard was
            // leaked (`mem::forget`): some thread may still run in this context. Keep its
            // storage alive forever rather than free what that thread points at.
            std::mem::forget(self.inner.clone());
            if !std::thread::panicking() {
                fail(format_args!(
                    "context {:?} dropped while still entered (its ContextGuard was leaked); its values are leaked",
                    self.inner.id
                ));
            }
            return;
        }
        let done = {
            // SAFETY: we hold the context (`Dropping`) and own an `Arc` to it.
            let _entered = unsafe { enter(&self.inner) };
            self.inner.teardown()
        };
        drop(registry::unregister(self.inner.id));
        if done.left {
            // Values this thread's `for_each` still reads: its end drops them (the context
            // stays `Dropping`, claimed by this thread), never whoever lets go of it last.
            unfinished::defer(self.inner.clone());
        }
        if let Some(p) = done.panicked {
            if !std::thread::panicking() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

/// Keeps a [`Context`] current on this thread; dropping it leaves exactly that context.
///
/// Not `Send`: a context is left on the thread that entered it. Guards may be dropped in any
/// order (also while unwinding): each takes out only its own entry, and once all are gone the
/// thread is back in its own context.
///
/// Do not hold one across `.await`: a `Send` future cannot, and in a `!Send` future on a
/// current-thread runtime every task the executor polls meanwhile would run inside the
/// context. Use [`FutureExt::in_context`](crate::FutureExt::in_context) instead: the context is
/// entered only while its own future is polled.
///
/// # Examples
///
/// ```
/// # use context_local::{Context, ContextId};
/// let (a, b) = (Context::new(), Context::new());
/// let ga = a.enter();
/// let gb = b.enter();
/// assert_eq!(ContextId::current(), b.id());
/// drop(ga); // out of order: `b` stays current
/// assert_eq!(ContextId::current(), b.id());
/// drop(gb);
/// assert_ne!(ContextId::current(), a.id());
/// ```
#[must_use = "the context is left as soon as the guard is dropped"]
pub struct ContextGuard<'a> {
    ctx: &'a Context,
    entered: Option<Entered<'a>>,
    claim: Option<EnterClaim<'a>>,
    _not_send: PhantomData<*const UseInContextNotAContextGuardAcrossAwait>,
}

/// The guard's `!Send` marker, named for the compiler's error: a `ContextGuard` held across
/// `.await` in a `Send` future (or moved to another thread) is reported as "the trait `Send`
/// is not implemented for `*const UseInContextNotAContextGuardAcrossAwait`": the task should
/// run in its context with `fut.in_context(ctx)` (`InContext`) instead.
pub struct UseInContextNotAContextGuardAcrossAwait;

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        drop(self.entered.take());
        if let Some(claim) = self.claim.take() {
            if self.ctx.inner.release_now_or_later() {
                drop(claim);
            } else {
                // Left inside `with` of one of its values: the claim ends with that borrow.
                std::mem::forget(claim);
            }
        }
    }
}

impl fmt::Debug for ContextGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("context", &self.ctx.inner.id)
            .finish()
    }
}

/// Number of live contexts (threads that used a local, plus explicit contexts).
pub(crate) fn live_contexts() -> usize {
    registry::live()
}

/// Whether `ctx` is the thread's own context (never an explicit one, a fork or a task's).
#[inline]
pub(crate) fn is_thread_own(ctx: &CtxInner) -> bool {
    ctx.owner.state() == State::Own
}

/// Which kind of context is current, for the messages of failed accesses. Creates the thread's
/// own context if the thread has none yet (as any access would).
pub(crate) fn current_kind() -> crate::error::Current {
    use crate::error::Current;
    match current() {
        None => Current::Unknown,
        Some(ctx) if is_thread_own(ctx) => Current::ThreadOwn,
        Some(ctx) if ctx.has_inherited() => Current::Child,
        Some(_) => Current::Explicit,
    }
}

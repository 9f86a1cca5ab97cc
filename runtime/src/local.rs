//! `Local<T>`: one value per context.

use std::cell::Cell;
use std::fmt;

use crate::context::table::Queued;
use crate::context::CtxInner;
use crate::error::{fail, nothing_bound_is_none, AccessError, AccessErrorKind};
use crate::explicit;
use crate::storage::{Create, Elsewhere, Inherit, Payload, Share, Storage, Where, Writer};
use crate::{ContextId, LocalProxy, Release};

/// A scope's restore failed (its context's slot is borrowed or iterated by this thread): it is
/// reported, or while unwinding the displaced binding goes (`None` is left).
#[cold]
#[inline(never)]
#[track_caller]
fn restore_failed<T>(e: AccessError) -> Option<T> {
    if !std::thread::panicking() {
        fail(format_args!("{e}"));
    }
    None
}

/// `f` on the bound value, or `f` back when there is none (see `Storage::read_or_return`).
#[inline(always)]
fn call_if_bound<T, R, F: FnOnce(&T) -> R>(f: F, v: &Option<T>) -> Result<R, F> {
    match v {
        Some(v) => Ok(f(v)),
        None => Err(f),
    }
}

/// [`call_if_bound`] with `&mut`.
#[inline(always)]
fn call_if_bound_mut<T, R, F: FnOnce(&mut T) -> R>(f: F, v: &mut Option<T>) -> Result<R, F> {
    match v {
        Some(v) => Ok(f(v)),
        None => Err(f),
    }
}

impl<T: Send + 'static> Payload for Option<T> {
    fn empty() -> Self {
        None
    }
    #[inline]
    fn is_present(&self) -> bool {
        self.is_some()
    }
    fn take_all(&mut self) -> Option<Box<dyn Send>> {
        self.take().map(|v| Box::new(v) as Box<dyn Send>)
    }
    fn restore_scoped(&mut self, previous: Box<dyn std::any::Any + Send>) -> Option<Box<dyn Send>> {
        match previous.downcast::<Option<T>>() {
            Ok(previous) => {
                std::mem::replace(self, *previous).map(|v| Box::new(v) as Box<dyn Send>)
            }
            // Never: a restore is queued by this local's own scope, at its own index.
            Err(other) => Some(Box::new(other)),
        }
    }
    fn label() -> &'static str {
        std::any::type_name::<T>()
    }
}

/// One value per context: Werkzeug's `Local`, `threading.local`, typed.
///
/// Declare it as a `static`; each context (by default, each thread) sees its own value. A
/// thread's value is dropped when the thread exits, an explicit [`Context`](crate::Context)'s
/// when the context is dropped, and any value on [`release`](Self::release), [`set`](Self::set)
/// (the old one) or [`take`](Self::take).
///
/// # Examples
///
/// ```
/// use context_local::Local;
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
///
/// REQUEST_ID.set(7);
/// std::thread::spawn(|| assert!(!REQUEST_ID.is_set())).join().unwrap();
/// assert_eq!(REQUEST_ID.with(|id| *id), 7);
/// ```
pub struct Local<T> {
    storage: Storage<Option<T>>,
    init: Option<fn() -> T>,
    /// The key this local travels under as W3C Baggage (see `baggage`).
    pub(crate) baggage: Option<&'static str>,
}

// Constructors carry no `Send` bound, so a `static` of a non-`Send` type fails where it is
// used, and `#[context_local]` can report that once, at the user's type.
impl<T> Local<T> {
    /// An unnamed local. Errors name it by its type.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static COUNTER: Local<u32> = Local::new();
    /// assert_eq!(COUNTER.name(), "u32");
    /// ```
    pub const fn new() -> Self {
        Self {
            storage: Storage::new(None),
            init: None,
            baggage: None,
        }
    }

    /// A local whose errors, panics and `Debug` output use `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static USER: Local<String> = Local::named("USER");
    /// assert_eq!(USER.name(), "USER");
    /// ```
    pub const fn named(name: &'static str) -> Self {
        Self {
            storage: Storage::new(Some(name)),
            init: None,
            baggage: None,
        }
    }

    /// A local that binds `init()` lazily in each context, on the first `with`, `with_mut`,
    /// `try_with`, `try_with_mut` or `get` there (like `threading.local`'s per-thread
    /// `__init__`). `set`, `is_set` and `take` do not run it.
    ///
    /// If `init` itself binds this local, the value bound by `init` is kept and the one it
    /// returns is dropped (after the access that ran `init`). If `init` reads or changes this
    /// local in the same context, that access fails with
    /// [`AccessErrorKind::Initializing`](crate::AccessErrorKind::Initializing) (the panicking
    /// accessors panic naming the local) instead of recursing. If `init` panics, nothing is
    /// bound and the panic propagates.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static SEEN: Local<Vec<u32>> = Local::with_init("SEEN", Vec::new);
    /// SEEN.with_mut(|v| v.push(1));
    /// assert_eq!(SEEN.get(), Some(vec![1]));
    /// std::thread::spawn(|| assert_eq!(SEEN.with(Vec::len), 0)).join().unwrap();
    /// ```
    pub const fn with_init(name: &'static str, init: fn() -> T) -> Self {
        Self {
            storage: Storage::new(Some(name)),
            init: Some(init),
            baggage: None,
        }
    }
}

impl<T> Local<T> {
    /// Makes this local explicit-only: a thread's own context never holds its value.
    ///
    /// A thread's own context is shared by everything that runs on the thread outside a
    /// context of its own — on an async runtime's worker, by every task it polls. A request
    /// value bound there is seen by the next request on that thread. Declare request values
    /// explicit-only, and wiring that would leak them fails at the first request instead:
    ///
    /// - [`set`](Self::set), [`replace`](Self::replace), and the lazy initializer (`with_init`,
    ///   run by `with`, `with_mut`, `try_with`, `try_with_mut`) panic in a thread's own context
    ///   at the caller's line, naming the local and the fix (`ContextLayer` outermost,
    ///   `fut.in_new_context()`, `Context::new().run(..)`); so does [`with_mut`](Self::with_mut)
    ///   unless a scope binds the value there. The `try_` accessors return
    ///   [`AccessErrorKind::ExplicitOnly`](crate::AccessErrorKind::ExplicitOnly) instead.
    /// - Reads there see it unbound (`get` is `None`, `is_set` is `false`); `take` and
    ///   `release` work as usual.
    /// - Bindings that end by themselves are allowed everywhere: [`scope`](Self::scope) and
    ///   [`scope_future`](Self::scope_future).
    /// - In every explicit context — [`Context::new`](crate::Context::new), forks, task
    ///   contexts, `ContextLayer` requests — it is like any local. It combines with
    ///   [`inheritable`](Self::inheritable) and [`baggage`](Self::baggage).
    ///
    /// Reads cost nothing more; a write pays one predictable branch on this flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{AccessErrorKind, Context, Local};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").explicit_only();
    ///
    /// // In a context of its own (what `ContextLayer` gives each request): as usual.
    /// Context::new().run(|| {
    ///     REQUEST_ID.set(7);
    ///     assert_eq!(REQUEST_ID.get(), Some(7));
    /// });
    ///
    /// // In the thread's own context: refused, and nothing is left behind.
    /// let err = std::panic::catch_unwind(|| REQUEST_ID.set(8)).unwrap_err();
    /// let msg = err.downcast_ref::<String>().unwrap();
    /// assert!(msg.contains("`REQUEST_ID` is explicit-only"), "{msg}");
    /// assert_eq!(REQUEST_ID.get(), None);
    ///
    /// // A scope ends by itself: allowed anywhere.
    /// assert_eq!(REQUEST_ID.scope(9, || REQUEST_ID.get()), Some(9));
    /// # let _ = AccessErrorKind::ExplicitOnly;
    /// ```
    pub const fn explicit_only(self) -> Self {
        let mut this = self;
        this.storage.set_explicit_only();
        this
    }
}

impl<T: Clone + Send + Sync + 'static> Local<T> {
    /// Makes this local inheritable: a [`Snapshot`](crate::Snapshot) captures its value, and
    /// children — [`Context::child`](crate::Context::child), `in_child_context()`,
    /// [`thread::spawn`](crate::thread::spawn), `Snapshot::wrap` — start with it. A child's
    /// writes stay its own; its first write copies the inherited value (`T: Clone`), which is
    /// shared meanwhile (`T: Sync`).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{thread, Local};
    ///
    /// static TENANT: Local<String> = Local::named("TENANT").inheritable();
    ///
    /// TENANT.set("acme".into());
    /// let seen = thread::spawn(|| TENANT.get()).join().unwrap();
    /// assert_eq!(seen.as_deref(), Some("acme"));
    /// ```
    pub const fn inheritable(self) -> Self {
        let mut this = self;
        this.storage.set_inheritable(Inherit::of());
        this
    }
}

impl<T: Clone + Send + Sync + 'static> Share for Option<T> {
    fn share(&self) -> Self {
        self.clone()
    }
}

impl<T: Send + 'static> Local<T> {
    /// The key this local travels under as W3C Baggage, if it was declared with one
    /// ([`baggage`](Self::baggage)).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    /// static PLAIN: Local<u8> = Local::named("PLAIN");
    /// assert_eq!(PLAIN.baggage_key(), None);
    /// ```
    pub const fn baggage_key(&self) -> Option<&'static str> {
        self.baggage
    }

    /// Whether the local is inheritable (forks see its values).
    pub(crate) const fn is_inheritable(&self) -> bool {
        self.storage.is_inheritable()
    }

    /// This local's index and serial, for a frame of extracted values.
    pub(crate) fn storage_key(&self) -> (usize, u64) {
        self.storage.index_and_serial()
    }

    /// The local's name (or its type's name if it was made with [`new`](Self::new)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// assert_eq!(L.name(), "L");
    /// ```
    pub fn name(&self) -> &'static str {
        self.storage.name()
    }

    /// Binds `value` in the current context; a previous value is dropped (after the new one is
    /// in place, outside any borrow, so its `Drop` may use this local).
    ///
    /// # Panics
    ///
    /// Inside [`with`](Self::with)/[`with_mut`](Self::with_mut) of the same local (the value is
    /// borrowed), or during thread exit after this thread's context was destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<String> = Local::named("L");
    /// L.set("a".into());
    /// L.set("b".into());
    /// assert_eq!(L.get().as_deref(), Some("b"));
    /// ```
    #[track_caller]
    pub fn set(&self, value: T) {
        // Never waits for another thread's `for_each`: the old value may stay with its readers.
        match self
            .storage
            .write(Writer::Replace, Create::Binding, |v| v.replace(value))
        {
            Ok(old) => drop(old),
            Err(e) => self.fail(e),
        }
    }

    /// Binds `value` and returns the previous value, if any.
    ///
    /// # Panics
    ///
    /// As [`set`](Self::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// assert_eq!(L.replace(1), None);
    /// assert_eq!(L.replace(2), Some(1));
    /// ```
    #[track_caller]
    pub fn replace(&self, value: T) -> Option<T> {
        match self
            .storage
            .write(Writer::Runtime, Create::Binding, |v| v.replace(value))
        {
            Ok(old) => old.flatten(),
            Err(e) => self.fail(e),
        }
    }

    /// A scope's binding: swaps `value` with the current context's binding, so that `value`
    /// holds the displaced one until [`swap_back`](Self::swap_back); returns where. On error
    /// nothing changed.
    ///
    /// Both ends swap the same place with the slot, in place: a value moved through a token
    /// instead is read back as one wide load of narrow stores made just before, a
    /// store-forwarding stall that cost a third of a scope's time.
    #[inline(always)]
    pub(crate) fn try_swap_scoped(&self, value: &mut Option<T>) -> Result<Where, AccessError> {
        Ok(self.storage.write_scoped(|v| std::mem::swap(v, value))?.0)
    }

    /// A closure scope's binding of `value` in the current context: where, and the binding it
    /// displaced there. By value, not swapped in place (see `try_swap_scoped`): a value built
    /// just before would be read back as one wide load of its narrow stores.
    ///
    /// # Panics
    ///
    /// As [`set`](Self::set) (inside `with` of this local), naming it at the caller's line.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn bind_scoped(&self, value: T) -> (Where, Option<T>) {
        match self.storage.write_scoped(|v| v.replace(value)) {
            Ok(bound) => bound,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Ends a closure scope: binds `previous` again in the context at `at` and returns what
    /// the scope left bound there (the caller drops it, outside the write) — `None` if that
    /// stays with the context's holder (see [`restore_elsewhere`](Self::restore_elsewhere)).
    /// The usual case, `at` still current, is inlined; the rest is not.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn restore_in(&self, at: &Where, previous: Option<T>) -> Option<T> {
        // Fields, not a copy of `at`: a copy is one wide load of the narrow stores that wrote
        // them just before (see `try_swap_scoped`).
        match crate::context::current_if_at(at.addr) {
            Some(ctx) if ctx.serial == at.serial => self.restore_held(ctx, previous),
            _ => self.restore_not_current(at, previous),
        }
    }

    /// [`restore_in`](Self::restore_in) in `ctx`, which this thread holds. If it cannot be done
    /// (the slot is borrowed or iterated by this thread), it is reported, or while unwinding
    /// `previous` is dropped.
    #[inline(always)]
    #[track_caller]
    fn restore_held(&self, ctx: &CtxInner, previous: Option<T>) -> Option<T> {
        match self
            .storage
            .write_held(ctx, |v| std::mem::replace(v, previous))
        {
            Ok(left) => left.flatten(),
            Err(e) => restore_failed(e),
        }
    }

    /// [`restore_in`](Self::restore_in) where the scope's context is not the current one: one
    /// this thread entered further out, or one it left.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn restore_not_current(&self, at: &Where, previous: Option<T>) -> Option<T> {
        match crate::context::held_here(at.addr, at.serial) {
            Some(ctx) => self.restore_held(ctx, previous),
            None => self.restore_elsewhere(*at, previous),
        }
    }

    /// Ends one poll of a scope future: [`restore_in`](Self::restore_in), swapping in place —
    /// `value` holds the displaced binding before, and what the poll left bound after.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn swap_back(&self, at: &Where, value: &mut Option<T>) {
        match crate::context::current_if_at(at.addr) {
            Some(ctx) if ctx.serial == at.serial => {
                match self.storage.write_held(ctx, |v| std::mem::swap(v, value)) {
                    Ok(Some(())) => {}
                    // No slot any more: the local was dropped, and its values with it.
                    Ok(None) => *value = None,
                    Err(e) => *value = restore_failed(e),
                }
            }
            _ => *value = self.restore_not_current(at, value.take()),
        }
    }

    /// Ends a scope whose body left the context it bound in (a `ContextGuard` dropped inside
    /// it, as a scheduler switch does): `previous` is bound again *there*, never dropped and
    /// never bound in whatever context is current now. If nobody holds that context, at once
    /// (and what the scope left bound there is returned); if another thread or a task holds
    /// it, queued for that holder, which applies it before anything else runs there on its
    /// next entry (and drops what the scope left bound). If the context is gone, its values
    /// went with it, and `previous` goes here.
    #[cold]
    #[inline(never)]
    fn restore_elsewhere(&self, at: Where, previous: Option<T>) -> Option<T> {
        let previous = Cell::new(Some(previous));
        let restored = self.storage.write_elsewhere(
            at,
            |v| std::mem::replace(v, previous.take().flatten()),
            || Queued::Restore(Some(Box::new(previous.take().flatten()))),
        );
        match restored {
            Elsewhere::Done(left) => left,
            Elsewhere::Queued | Elsewhere::Gone => None,
        }
    }

    /// Unbinds the current context's value and returns it.
    ///
    /// # Panics
    ///
    /// Inside `with`/`with_mut` of the same local.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// L.set(3);
    /// assert_eq!(L.take(), Some(3));
    /// assert!(!L.is_set());
    /// ```
    #[track_caller]
    pub fn take(&self) -> Option<T> {
        match self
            .storage
            .write(Writer::Runtime, Create::No, Option::take)
        {
            Ok(v) => v.flatten(),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => None,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Whether the current context holds a value (an initializer does not count until run).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// assert!(!L.is_set());
    /// L.set(1);
    /// assert!(L.is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        self.storage.is_present()
    }

    /// Calls `f` with the current context's value.
    ///
    /// # Panics
    ///
    /// If the local is unbound here and has no initializer (the message names the local),
    /// inside `with_mut` of the same local, or after this thread's context was destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<String> = Local::named("L");
    /// L.set("hello".into());
    /// assert_eq!(L.with(|s| s.len()), 5);
    /// ```
    #[inline]
    #[track_caller]
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        match self.storage.read_fast(f, call_if_bound) {
            Ok(r) => r,
            Err(f) => self.with_slow(f),
        }
    }

    /// `with` where the fast path gave up (see `Storage::read_fast`): out of line, so that the
    /// fast path's result stays in registers.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn with_slow<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let f = match self.storage.read_guarded(f, call_if_bound) {
            Ok(r) => return r,
            Err(f) => f,
        };
        match self.try_with_slow(f) {
            Ok(r) => r,
            Err(e) => self.fail(e),
        }
    }

    /// Calls `f` with the current context's value, or says why it cannot.
    ///
    /// # Errors
    ///
    /// [`AccessError`] naming the local: unbound (no value, no initializer), mutably borrowed
    /// (inside `with_mut`), or destroyed (thread exit).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// assert!(L.try_with(|v| *v).is_err());
    /// L.set(4);
    /// assert_eq!(L.try_with(|v| *v), Ok(4));
    /// ```
    ///
    /// # Panics
    ///
    /// Only if the local's initializer leaves the context it runs in (drops that context's
    /// `ContextGuard`): its value can then be bound nowhere.
    #[inline]
    #[track_caller]
    pub fn try_with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        match self.storage.read_fast(f, call_if_bound) {
            Ok(r) => Ok(r),
            Err(f) => self.try_with_slow(f),
        }
    }

    /// `try_with` where the fast path gave up: every case, counted if the context is guarded.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn try_with_slow<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let f = match self.storage.read_guarded(f, call_if_bound) {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        match self.storage.read_or_return(f, call_if_bound) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(f)) => self.init_then(false, |this| {
                Ok(this.storage.read_or_return(f, call_if_bound)?.ok())
            }),
            Err(e) => Err(e),
        }
    }

    /// Calls `f` with mutable access to the current context's value.
    ///
    /// # Panics
    ///
    /// As [`with`](Self::with), and inside `with` of the same local (already borrowed).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static HITS: Local<u32> = Local::with_init("HITS", || 0);
    /// HITS.with_mut(|h| *h += 1);
    /// HITS.with_mut(|h| *h += 1);
    /// assert_eq!(HITS.get(), Some(2));
    /// ```
    #[inline]
    #[track_caller]
    pub fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        match self.storage.write_fast::<false, _, _>(f, call_if_bound_mut) {
            Ok(r) => r,
            Err(f) => self.with_mut_slow(f),
        }
    }

    /// `with_mut` where the fast path gave up (see `Storage::write_fast`).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn with_mut_slow<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        match self.try_with_mut_slow(f) {
            Ok(r) => r,
            Err(e) => self.fail(e),
        }
    }

    /// Panics with `e`'s message and, for an unbound local, its likely cause (see
    /// `explicit::teach`).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn fail(&self, e: AccessError) -> ! {
        let inheritable = self.storage.is_inheritable();
        let msg = explicit::teach(&e, self.storage.is_explicit_only(), inheritable, &|| {
            self.contexts()
        });
        fail(format_args!("{msg}"))
    }

    /// Calls `f` with mutable access to the current context's value, or says why it cannot.
    ///
    /// # Errors
    ///
    /// [`AccessError`] naming the local: unbound, borrowed (inside `with` or `with_mut` of the
    /// same local), or destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{AccessErrorKind, Local};
    /// static L: Local<u8> = Local::named("L");
    /// L.set(1);
    /// let err = L.with(|_| L.try_with_mut(|v| *v += 1)).unwrap_err();
    /// assert_eq!(err.kind(), AccessErrorKind::Borrowed);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`try_with`](Self::try_with): only if the initializer leaves its context.
    #[inline]
    #[track_caller]
    pub fn try_with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, AccessError> {
        match self.storage.write_fast::<false, _, _>(f, call_if_bound_mut) {
            Ok(r) => Ok(r),
            Err(f) => self.try_with_mut_slow(f),
        }
    }

    /// `try_with_mut` where the fast path gave up: every case.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn try_with_mut_slow<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, AccessError> {
        let f = match self.storage.write_fast::<true, _, _>(f, call_if_bound_mut) {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        let mut f = Some(f);
        let attempt = self.storage.write(Writer::User, Create::No, |v| {
            v.as_mut().map(|v| (f.take().unwrap())(v))
        });
        match attempt {
            Ok(Some(Some(r))) => Ok(r),
            Ok(_) => self.init_then(true, |this| {
                this.storage
                    .write(Writer::User, Create::No, |v| {
                        v.as_mut().map(f.take().unwrap())
                    })
                    .map(Option::flatten)
            }),
            Err(e) => Err(e),
        }
    }

    /// The unbound path of the `with` family: run the initializer (outside any borrow), bind
    /// its value unless `init` bound one itself, then retry once. A value `init` returned but
    /// that was not bound is dropped only after the retry, so its `Drop` cannot unbind what
    /// the retry reads.
    ///
    /// An explicit-only local refuses to bind there in a thread's own context: the
    /// initializer, and a `with_mut` (`mutable`) with none, fail with `ExplicitOnly`; a read
    /// with none sees it unbound.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn init_then<R>(
        &self,
        mutable: bool,
        retry: impl FnOnce(&Self) -> Result<Option<R>, AccessError>,
    ) -> Result<R, AccessError> {
        if self.storage.is_explicit_only() && (mutable || self.init.is_some()) {
            explicit::refuse_thread_own(|| self.name())?;
        }
        let unbound = || {
            AccessError::in_current(
                self.name(),
                AccessErrorKind::Unbound,
                crate::context::current_kind(),
            )
        };
        let init = self.init.ok_or_else(unbound)?;
        let running = self.storage.begin_init()?;
        let value = init();
        running.finish(self.name());
        let rejected = self.storage.write(Writer::Runtime, Create::Yes, |v| {
            if v.is_some() {
                Some(value)
            } else {
                v.replace(value)
            }
        })?;
        if matches!(rejected, Some(None)) {
            self.storage.record_binding_now();
        }
        let result = retry(self);
        drop(rejected);
        result?.ok_or_else(unbound)
    }

    /// A clone of the current context's value (running the initializer if there is one), or
    /// `None` if unbound.
    ///
    /// # Panics
    ///
    /// Inside `with_mut` of the same local.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<String> = Local::named("L");
    /// assert_eq!(L.get(), None);
    /// L.set("x".into());
    /// assert_eq!(L.get().as_deref(), Some("x"));
    /// ```
    #[track_caller]
    pub fn get(&self) -> Option<T>
    where
        T: Clone,
    {
        nothing_bound_is_none(self.try_with(T::clone))
    }

    /// Drops the current context's value, if any (Werkzeug's `__release_local__`).
    ///
    /// # Panics
    ///
    /// Inside `with`/`with_mut` of the same local.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// L.set(1);
    /// L.release();
    /// assert!(!L.is_set());
    /// ```
    #[track_caller]
    pub fn release(&self) {
        match self
            .storage
            .write(Writer::Replace, Create::No, Option::take)
        {
            Ok(old) => drop(old),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => {}
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Calls `f` with every context's value and that context's id (Werkzeug 0.x `__iter__`).
    ///
    /// Other contexts keep running meanwhile. What the iteration guarantees them:
    ///
    /// - Only the value `f` is looking at right now is held, and only against changes made in
    ///   place. Its context's `set` and `release` never wait: the new value goes in at once and
    ///   the old one stays with `f` until it returns (then its own context drops it, at its
    ///   next replacing write or when the context ends). `with_mut`, `take` and `replace` there
    ///   wait until `f` has returned for that one value — never for the rest of the iteration,
    ///   and never longer because other iterations keep coming: new readers let a waiting
    ///   writer go first.
    /// - A context in the middle of a change is not waited for on the spot: the iteration
    ///   visits it after the others, then waits until the change is done.
    /// - Values are only ever dropped by their own context (its teardown, release or
    ///   writes), never by the thread that iterates, even when a context ends meanwhile. A
    ///   context that `f` drops while it holds that context's own value drops that value when
    ///   this `for_each` returns, with the context current (`f` is still reading it before).
    ///
    /// Inside `f` you may read any local, and change any *other* local (in the current
    /// context); iterate other locals or this one again. You must not change this local
    /// (any context's value of it: the iteration reads them), and should not block on a
    /// thread that may be changing it in place. If a wait would never end — `f` changes a
    /// value in place that another thread's `for_each` callback holds while that callback
    /// waits for this one — it is refused: the `try_` accessors return
    /// [`AccessErrorKind::Deadlock`](crate::AccessErrorKind::Deadlock), the others panic
    /// naming the local. No combination hangs.
    ///
    /// # Panics
    ///
    /// If `f` changes this local (`try_with_mut` returns
    /// [`AccessErrorKind::Iterating`](crate::AccessErrorKind::Iterating) instead), if this is
    /// called inside `with_mut` of this local, or if waiting for a context's change would wait
    /// for this thread (see above). A panic of `f` itself propagates; the iteration's hold on
    /// the value it was at ends with it.
    /// A panic of the `Drop` of a value left by a context dropped inside `f` (see above) comes
    /// out of this `for_each`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static PORT: Local<u16> = Local::named("PORT");
    /// PORT.set(80);
    /// std::thread::scope(|s| {
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    ///     s.spawn(move || {
    ///         PORT.set(443);
    ///         tx.send(()).unwrap();
    ///         done_rx.recv().unwrap();
    ///     });
    ///     rx.recv().unwrap();
    ///     let mut ports = Vec::new();
    ///     PORT.for_each(|_, p| ports.push(*p));
    ///     ports.sort();
    ///     assert_eq!(ports, [80, 443]);
    ///     done_tx.send(()).unwrap();
    /// });
    /// ```
    #[track_caller]
    pub fn for_each(&self, mut f: impl FnMut(ContextId, &T))
    where
        T: Sync,
    {
        self.storage.for_each(|id, v| {
            if let Some(v) = v {
                f(id, v);
            }
        });
    }

    /// How many contexts hold a value right now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static L: Local<u8> = Local::named("L");
    /// assert_eq!(L.contexts(), 0);
    /// L.set(1);
    /// assert_eq!(L.contexts(), 1);
    /// L.release();
    /// assert_eq!(L.contexts(), 0);
    /// ```
    pub fn contexts(&self) -> usize {
        self.storage.contexts()
    }

    /// A [`LocalProxy`] forwarding to this local's current value; usable in `static`s.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// static USER: Local<String> = Local::named("USER");
    /// static CURRENT_USER: LocalProxy<String> = USER.proxy();
    /// USER.set("ada".into());
    /// assert_eq!(CURRENT_USER.with(|u| u.len()), 3);
    /// assert_eq!(CURRENT_USER.to_string(), "ada");
    /// ```
    pub const fn proxy(&'static self) -> LocalProxy<T> {
        LocalProxy::new(self)
    }
}

impl<T> Default for Local<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Release for Local<T> {
    #[track_caller]
    fn release(&self) {
        Local::release(self);
    }

    fn name(&self) -> &'static str {
        Local::name(self)
    }

    fn is_bound(&self) -> bool {
        self.is_set()
    }
}

impl<T: Send + 'static> crate::proxy::Source<T> for Local<T> {
    fn try_with_dyn(&self, f: &mut dyn FnMut(&T)) -> Result<(), AccessError> {
        self.try_with(|v| f(v))
    }
    fn source_name(&self) -> &'static str {
        self.name()
    }
    fn is_bound(&self) -> bool {
        // An explicit-only local's initializer does not run in a thread's own context.
        let init_runs_here = self.init.is_some()
            && !(self.storage.is_explicit_only()
                && explicit::refuse_thread_own(|| self.name()).is_err());
        init_runs_here || self.is_set()
    }
}

impl<T: Send + fmt::Debug + 'static> fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Local");
        d.field("name", &self.name());
        match self.storage.read(|v| v.as_ref().map(|v| format!("{v:?}"))) {
            Ok(Some(Some(v))) => d.field("value", &format_args!("{v}")),
            Ok(_) => d.field("value", &format_args!("<unbound>")),
            Err(e) => d.field("value", &format_args!("<{:?}>", e.kind())),
        };
        d.finish()
    }
}

impl<T> Drop for Local<T> {
    fn drop(&mut self) {
        // Only a local that is not a `static` is ever dropped: free its values everywhere.
        self.storage.detach_all();
    }
}

/// Implemented by `#[context_local]` structs: the struct's [`Local`], for generic code.
///
/// The `Send` supertrait is where a non-`Send` struct gets its one compile error.
///
/// # Examples
///
/// ```
/// use context_local::{ContextLocal, Local};
///
/// struct Tenant(u32);
/// static TENANT: Local<Tenant> = Local::named("Tenant");
/// impl ContextLocal for Tenant {
///     fn local() -> &'static Local<Self> {
///         &TENANT
///     }
/// }
///
/// fn is_bound<T: ContextLocal>() -> bool {
///     T::local().is_set()
/// }
/// assert!(!is_bound::<Tenant>());
/// TENANT.set(Tenant(1));
/// assert!(is_bound::<Tenant>());
/// ```
pub trait ContextLocal: Send + Sized + 'static {
    /// The per-context storage of this type.
    fn local() -> &'static Local<Self>;
}

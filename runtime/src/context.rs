//! Contexts: what an id names.
//!
//! Every context owns a *table* of slots indexed by local index (one slot per local it has
//! used). The current context of a thread is a raw pointer in a const thread-local, so the hot
//! path is: one TLS load, one index load, one table load. Contexts are reference counted
//! (`Arc<CtxInner>`); the registry maps dense, recycled [`ContextId`]s to live contexts for
//! iteration. A context's values belong to it, not to its id, so a recycled id can never show a
//! new context a dead one's values (Werkzeug 1.0.1's bug).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;
use std::ptr;

use crate::error::EnterError;
use crate::slot::SlotHeader;
use crate::sync::{lock, Arc, AtomicPtr, AtomicU64, Mutex, Ordering};

/// Slots 0..INLINE live inside the context itself: no extra indirection for the first locals.
pub(crate) const INLINE: usize = 32;
/// Overflow bucket `b` covers indices `INLINE << b .. INLINE << (b + 1)`.
const BUCKETS: usize = 26;
/// `owner` value of a context that is being dropped.
const DROPPING: u64 = u64::MAX;
/// Rounds of value dropping at teardown: a value's `Drop` may bind new values, which the next
/// round drops. A destructor that keeps re-binding forever is cut off after this many rounds.
const TEARDOWN_ROUNDS: usize = 16;

/// Sentinel address in `CURRENT` once this thread's context is destroyed (thread exit).
const DESTROYED: usize = 1;

crate::sync::thread_locals! {
    /// The context this thread is running: null = not decided yet (the thread's own context is
    /// created lazily), `DESTROYED` = the thread's context is gone.
    static CURRENT: Cell<*const CtxInner> = const { Cell::new(ptr::null()) };
    /// A process-unique, nonzero token for this thread, used as the owner of contexts.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
    /// The thread's own context; its destructor tears the context down at thread exit.
    static THREAD_CTX: RefCell<Option<ThreadCtx>> = const { RefCell::new(None) };
}

/// Tokens only need to be unique, so this plain std atomic is not modelled under loom.
/// `CURRENT`, read. A const, `Drop`-free thread-local is never destroyed by std, so `try_with`
/// costs nothing; loom's mock thread-locals are destroyed at thread exit, which reads as
/// `DESTROYED`.
#[inline(always)]
fn current_ptr() -> *const CtxInner {
    CURRENT
        .try_with(Cell::get)
        .unwrap_or(DESTROYED as *const CtxInner)
}

#[inline(always)]
fn set_current(p: *const CtxInner) -> *const CtxInner {
    CURRENT
        .try_with(|c| c.replace(p))
        .unwrap_or(DESTROYED as *const CtxInner)
}

static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub(crate) fn thread_token() -> u64 {
    let fresh = || NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TOKEN
        .try_with(|t| {
            let v = t.get();
            if v != 0 {
                return v;
            }
            let v = fresh();
            t.set(v);
            v
        })
        // Only under loom, during thread exit: a token no context is owned by.
        .unwrap_or_else(|_| fresh())
}

/// The per-context storage. Shared (`Arc`) between its owner (`Context` or the thread), the
/// registry, and iterators holding a snapshot.
pub(crate) struct CtxInner {
    pub(crate) id: ContextId,
    /// Unique for the life of the process (ids are recycled, serials are not).
    pub(crate) serial: u64,
    /// Token of the thread that has this context entered; 0 when none, `DROPPING` when dying.
    pub(crate) owner: AtomicU64,
    inline: [AtomicPtr<SlotHeader>; INLINE],
    overflow: [AtomicPtr<AtomicPtr<SlotHeader>>; BUCKETS],
    /// Serialises detaching slots: teardown vs. a dropped `Local` removing its own slot.
    detach: Mutex<()>,
}

// SAFETY: a CtxInner is type-erased storage for values that are all `Send` (every constructor
// of a slot requires it). Its slots are mutated only by the thread that has the context entered
// (exclusive by `owner`), and read from other threads only by `for_each`, which requires
// `T: Sync` and synchronises with the owner through the slot protocol in `slot.rs`.
unsafe impl Send for CtxInner {}
// SAFETY: see above; all shared fields are atomics or mutexes.
unsafe impl Sync for CtxInner {}

impl CtxInner {
    fn new(id: ContextId, serial: u64, owner: u64) -> Self {
        Self {
            id,
            serial,
            owner: AtomicU64::new(owner),
            inline: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            overflow: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            detach: Mutex::new(()),
        }
    }

    /// The slot pointer cell for `index`, if its bucket exists.
    #[inline]
    pub(crate) fn cell(&self, index: usize) -> Option<&AtomicPtr<SlotHeader>> {
        if index < INLINE {
            return Some(&self.inline[index]);
        }
        let (bucket, offset) = bucket_of(index);
        let base = self.overflow[bucket].load(Ordering::Acquire);
        if base.is_null() {
            return None;
        }
        // SAFETY: a non-null bucket pointer came from `grow`, which allocated
        // `bucket_len(bucket)` cells and never frees them before `self` drops; `offset` is
        // below that length by construction of `bucket_of`.
        Some(unsafe { &*base.add(offset) })
    }

    /// Like [`cell`](Self::cell), allocating the bucket first. Only the context's owner calls it.
    pub(crate) fn cell_or_grow(&self, index: usize) -> &AtomicPtr<SlotHeader> {
        if let Some(c) = self.cell(index) {
            return c;
        }
        let (bucket, _) = bucket_of(index);
        let cells: Box<[AtomicPtr<SlotHeader>]> = (0..bucket_len(bucket))
            .map(|_| AtomicPtr::new(ptr::null_mut()))
            .collect();
        let base = Box::into_raw(cells).cast::<AtomicPtr<SlotHeader>>();
        // Only the owner grows, so nobody can have stored a bucket since `cell` looked.
        self.overflow[bucket].store(base, Ordering::Release);
        self.cell(index).expect("bucket was just installed")
    }

    /// Every slot pointer cell of this context.
    pub(crate) fn for_each_slot(&self, mut f: impl FnMut(&AtomicPtr<SlotHeader>)) {
        self.inline.iter().for_each(&mut f);
        for bucket in 0..BUCKETS {
            let base = self.overflow[bucket].load(Ordering::Acquire);
            if base.is_null() {
                continue;
            }
            for offset in 0..bucket_len(bucket) {
                // SAFETY: as in `cell`.
                f(unsafe { &*base.add(offset) });
            }
        }
    }

    pub(crate) fn detach_lock(&self) -> crate::sync::MutexGuard<'_, ()> {
        lock(&self.detach)
    }

    /// Whether an explicit context is being dropped (its values go with it). A thread's own
    /// context needs no such state: it is torn down on its own thread, where it is never
    /// looked up by a (`!Send`) guard while that runs.
    pub(crate) fn is_dropping(&self) -> bool {
        self.owner.load(Ordering::Acquire) == DROPPING
    }

    /// Drops every value of this context, outside any lock or borrow, in rounds (a value's
    /// `Drop` may bind new values). Called by the one party that owns the context.
    ///
    /// A panicking `Drop` does not stop the teardown: every other value is still dropped, and
    /// the first panic is returned for the caller to resume once the context is unregistered.
    fn teardown(&self) -> Option<Box<dyn std::any::Any + Send>> {
        let mut first_panic = None;
        for _ in 0..TEARDOWN_ROUNDS {
            let taken = {
                let _guard = self.detach_lock();
                let mut taken = Vec::new();
                self.for_each_slot(|cell| {
                    let p = cell.load(Ordering::Acquire);
                    if let Some(hdr) = ptr::NonNull::new(p) {
                        // SAFETY: a non-null cell holds a live slot (freed only by `Drop`
                        // of `self` or by a dropped `Local` holding `detach`, which we hold).
                        if let Some(v) = unsafe { SlotHeader::take_erased(hdr) } {
                            taken.push(v);
                        }
                    }
                });
                taken
            };
            if taken.is_empty() {
                break;
            }
            // Dropping a `Vec` keeps dropping the remaining elements when one panics.
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(taken)));
            if let Err(p) = dropped {
                first_panic.get_or_insert(p);
            }
        }
        first_panic
    }
}

impl Drop for CtxInner {
    fn drop(&mut self) {
        // Last reference: nobody can reach the slots any more. Values still present (a value
        // bound by a destructor after the last teardown round, or one whose owner was iterating
        // it while it was torn down) are dropped here with their slots.
        self.for_each_slot(|cell| {
            if let Some(hdr) = ptr::NonNull::new(cell.load(Ordering::Relaxed)) {
                // SAFETY: exclusive access (`&mut self`), the slot is live and owned by us.
                unsafe { SlotHeader::free(hdr) };
            }
        });
        for bucket in 0..BUCKETS {
            let base = self.overflow[bucket].load(Ordering::Relaxed);
            if !base.is_null() {
                let len = bucket_len(bucket);
                // SAFETY: allocated in `cell_or_grow` as a boxed slice of exactly `len` cells.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(base, len)) });
            }
        }
    }
}

#[inline]
fn bucket_of(index: usize) -> (usize, usize) {
    let q = index / INLINE; // >= 1
    let bucket = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (bucket, index - (INLINE << bucket))
}

fn bucket_len(bucket: usize) -> usize {
    INLINE << bucket
}

// ---------------------------------------------------------------------------------------------
// Registry of live contexts.

struct Registry {
    entries: Vec<Option<Arc<CtxInner>>>,
    free: Vec<u32>,
    next_serial: u64,
}

crate::sync::globals! {
    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        entries: Vec::new(),
        free: Vec::new(),
        next_serial: 1,
    });
}

fn register(owner: u64) -> Arc<CtxInner> {
    crate::sync::init_fence();
    let mut reg = lock(&REGISTRY);
    let serial = reg.next_serial;
    reg.next_serial += 1;
    // LIFO reuse keeps ids (and the registry) dense.
    let id = match reg.free.pop() {
        Some(id) => id,
        None => {
            let id = u32::try_from(reg.entries.len()).expect("more than 2^32 live contexts");
            reg.entries.push(None);
            id
        }
    };
    let inner = Arc::new(CtxInner::new(ContextId(id), serial, owner));
    reg.entries[id as usize] = Some(inner.clone());
    inner
}

fn unregister(id: ContextId) -> Option<Arc<CtxInner>> {
    let mut reg = lock(&REGISTRY);
    let taken = reg.entries.get_mut(id.0 as usize).and_then(Option::take);
    if taken.is_some() {
        reg.free.push(id.0);
    }
    taken
}

/// Every live context, for iteration without holding the registry lock during user code.
pub(crate) fn snapshot() -> Vec<Arc<CtxInner>> {
    lock(&REGISTRY).entries.iter().flatten().cloned().collect()
}

/// Runs `f` on every live context while holding the registry lock. `f` must not run user code.
pub(crate) fn visit_locked(mut f: impl FnMut(&CtxInner)) {
    for c in lock(&REGISTRY).entries.iter().flatten() {
        f(c);
    }
}

/// The live context with this id and serial, if it still exists.
pub(crate) fn lookup(id: ContextId, serial: u64) -> Option<Arc<CtxInner>> {
    let reg = lock(&REGISTRY);
    let c = reg.entries.get(id.0 as usize)?.as_ref()?;
    (c.serial == serial).then(|| c.clone())
}

// ---------------------------------------------------------------------------------------------
// The current context.

/// The current context, or `None` if this thread's context is destroyed (thread exit).
#[inline]
pub(crate) fn current() -> Option<&'static CtxInner> {
    let p = current_ptr();
    if (p as usize) > DESTROYED {
        // SAFETY: `CURRENT` only ever holds null, `DESTROYED`, or a context kept alive while
        // current: the thread's own context lives until its teardown resets `CURRENT`; an
        // explicit one is pinned by the `Context` its `ContextGuard` borrows (or leaked, if that
        // guard was forgotten). The `'static` is internal: callers use it within one call.
        Some(unsafe { &*p })
    } else {
        current_slow()
    }
}

#[cold]
#[inline(never)]
fn current_slow() -> Option<&'static CtxInner> {
    let p = current_ptr();
    if p as usize == DESTROYED {
        return None;
    }
    // First access on this thread outside any explicit context: create its own context.
    let token = thread_token();
    let inner = register(token);
    let raw = Arc::as_ptr(&inner);
    let installed = THREAD_CTX
        .try_with(|slot| {
            *slot.borrow_mut() = Some(ThreadCtx(inner.clone()));
        })
        .is_ok();
    if !installed {
        // The thread is already running its TLS destructors.
        drop(unregister(inner.id));
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
    if p.addr() != addr || p.addr() <= DESTROYED {
        return None;
    }
    // SAFETY: as in `current`: `CURRENT` holds a live context (not null, not `DESTROYED`).
    Some(unsafe { &*p })
}

/// The thread's own context: torn down when the thread exits.
struct ThreadCtx(Arc<CtxInner>);

impl Drop for ThreadCtx {
    fn drop(&mut self) {
        // Values are dropped while the context is still current, so their destructors may use
        // context locals (and bind values, which the next round drops).
        let panicked = self.0.teardown();
        set_current(DESTROYED as *const CtxInner);
        drop(unregister(self.0.id));
        if let Some(p) = panicked {
            // As with any thread-local whose destructor panics, std aborts the process here.
            std::panic::resume_unwind(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public API.

/// Identifies a context: by default each thread is one; [`Context::new`] makes explicit ones.
///
/// Ids are small and dense and may be reused once a context is gone, but a context never sees
/// another context's values, whatever its id.
///
/// # Examples
///
/// ```
/// use context_local_runtime::{Context, ContextId};
///
/// let here = ContextId::current();
/// let other = std::thread::spawn(ContextId::current).join().unwrap();
/// assert_ne!(here, other); // both are alive at the same time, so they differ
///
/// let ctx = Context::new();
/// assert_eq!(ctx.run(ContextId::current), ctx.id());
/// assert_eq!(ContextId::current(), here);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId(pub(crate) u32);

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
    /// # use context_local_runtime::ContextId;
    /// assert_eq!(ContextId::current(), ContextId::current());
    /// ```
    pub fn current() -> Self {
        Self::try_current().expect("the current thread's context was destroyed (thread exit)")
    }

    /// The id of the context this thread is running, or `None` once this thread's context was
    /// destroyed (during thread exit).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::ContextId;
    /// assert!(ContextId::try_current().is_some());
    /// ```
    pub fn try_current() -> Option<Self> {
        current().map(|c| c.id)
    }

    /// The id as a number (dense, small, reused after the context is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::ContextId;
    /// let n: u32 = ContextId::current().as_u32();
    /// # let _ = n;
    /// ```
    pub const fn as_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({})", self.0)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An explicit context: its own set of values for every local and stack, made current with
/// [`run`](Self::run) or [`enter`](Self::enter).
///
/// This is the Rust form of Werkzeug's `__ident_func__`: a scheduler, a test harness or an
/// executor enters the context of the work it is running. A `Context` is `Send + Sync`, so it can
/// move with an async task between threads; it may be entered by one thread at a time. Its
/// values are dropped when the `Context` is dropped.
///
/// # Examples
///
/// ```
/// use context_local_runtime::{Context, Local};
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
    inner: Arc<CtxInner>,
}

impl Context {
    /// A new, empty context.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::{Context, Local};
    /// static N: Local<u32> = Local::new();
    /// N.set(1);
    /// assert!(!Context::new().run(|| N.is_set()));
    /// ```
    pub fn new() -> Self {
        Self { inner: register(0) }
    }

    /// This context's id.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::{Context, ContextId};
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
    /// If the context is already entered (by this or another thread).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::{Context, LocalStack};
    /// static STACK: LocalStack<u32> = LocalStack::named("STACK");
    /// let ctx = Context::new();
    /// ctx.run(|| STACK.push(1));
    /// assert_eq!(STACK.len(), 0);
    /// assert_eq!(ctx.run(|| STACK.top()), Some(1));
    /// ```
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = self.enter();
        f()
    }

    /// Makes this context current on this thread until the returned guard is dropped.
    ///
    /// # Panics
    ///
    /// If the context is already entered (by this or another thread): its values belong to one
    /// thread at a time. [`try_enter`](Self::try_enter) returns an error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::{Context, ContextId};
    /// let ctx = Context::new();
    /// {
    ///     let _guard = ctx.enter();
    ///     assert_eq!(ContextId::current(), ctx.id());
    /// }
    /// assert_ne!(ContextId::current(), ctx.id());
    /// ```
    pub fn enter(&self) -> ContextGuard<'_> {
        match self.try_enter() {
            Ok(g) => g,
            Err(e) => panic!("{e}: a context may be entered by one thread, once, at a time"),
        }
    }

    /// Makes this context current on this thread, or fails if it is already entered.
    ///
    /// # Errors
    ///
    /// [`EnterError`] if this or another thread has the context entered.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::Context;
    /// let ctx = Context::new();
    /// let guard = ctx.try_enter().unwrap();
    /// assert!(ctx.try_enter().is_err());
    /// drop(guard);
    /// assert!(ctx.try_enter().is_ok());
    /// ```
    pub fn try_enter(&self) -> Result<ContextGuard<'_>, EnterError> {
        let token = thread_token();
        self.inner
            .owner
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| EnterError { id: self.inner.id })?;
        let me = Arc::as_ptr(&self.inner);
        let prev = set_current(me);
        Ok(ContextGuard {
            ctx: self,
            prev: Previous(prev),
            _not_send: PhantomData,
        })
    }

    /// Whether some thread has this context entered right now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local_runtime::Context;
    /// let ctx = Context::new();
    /// assert!(!ctx.is_entered());
    /// ctx.run(|| assert!(ctx.is_entered()));
    /// ```
    pub fn is_entered(&self) -> bool {
        self.inner.owner.load(Ordering::Acquire) != 0
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
        // A `ContextGuard` borrows its `Context`, so this only fails if a guard was leaked
        // (`mem::forget`): some thread may still run in this context. Keep it alive forever
        // rather than free storage that thread points at.
        if self
            .inner
            .owner
            .compare_exchange(0, DROPPING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::mem::forget(self.inner.clone());
            if !std::thread::panicking() {
                panic!(
                    "context {:?} dropped while still entered (its ContextGuard was leaked); its values are leaked",
                    self.inner.id
                );
            }
            return;
        }
        let panicked = self.inner.teardown();
        drop(unregister(self.inner.id));
        if let Some(p) = panicked {
            if !std::thread::panicking() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

/// Keeps a [`Context`] current on this thread; dropping it switches back to the previous one.
///
/// Not `Send`: a context is left on the thread that entered it. Guards must be dropped in the
/// reverse order of entering.
///
/// # Examples
///
/// ```
/// # use context_local_runtime::{Context, ContextId};
/// let (a, b) = (Context::new(), Context::new());
/// let ga = a.enter();
/// let gb = b.enter();
/// assert_eq!(ContextId::current(), b.id());
/// drop(gb);
/// assert_eq!(ContextId::current(), a.id());
/// drop(ga);
/// ```
#[must_use = "the context is left as soon as the guard is dropped"]
pub struct ContextGuard<'a> {
    ctx: &'a Context,
    prev: Previous,
    _not_send: PhantomData<*const ()>,
}

/// The context to restore when a guard is dropped. Only ever written back into this thread's
/// `CURRENT`; the guard holding it is `!Send` through its marker, so this wrapper exists only to
/// keep that marker the one reason a compiler error gives.
struct Previous(*const CtxInner);

// SAFETY: `Previous` is never dereferenced; it is stored back into `CURRENT` by the guard that
// holds it, and that guard cannot leave its thread (`_not_send`).
unsafe impl Send for Previous {}

impl Drop for ContextGuard<'_> {
    fn drop(&mut self) {
        let me = Arc::as_ptr(&self.ctx.inner);
        if current_ptr() != me {
            // Dropped out of order: leaving now would make a context current that this thread
            // no longer owns. Stay entered (the context is then leaked by its `Drop`) and say so.
            if !std::thread::panicking() {
                panic!(
                    "ContextGuard for {:?} dropped out of order: guards must be dropped in reverse order of entering",
                    self.ctx.inner.id
                );
            }
            return;
        }
        set_current(self.prev.0);
        self.ctx.inner.owner.store(0, Ordering::Release);
    }
}

impl fmt::Debug for ContextGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextGuard")
            .field("context", &self.ctx.inner.id)
            .finish()
    }
}

/// Under loom only: tears down this thread's context now, as thread exit does. loom drops
/// mock thread-locals outside the model, where no modelled primitive may be touched, so the
/// models call this as the last step of every thread instead.
#[cfg(loom)]
#[doc(hidden)]
pub fn loom_thread_exit() {
    let ctx = THREAD_CTX.with(|c| c.borrow_mut().take());
    drop(ctx);
}

/// Number of live contexts (threads that used a local, plus explicit contexts).
///
/// # Examples
///
/// ```
/// let before = context_local_runtime::live_contexts();
/// let ctx = context_local_runtime::Context::new();
/// assert!(context_local_runtime::live_contexts() >= before + 1);
/// # drop(ctx);
/// ```
pub fn live_contexts() -> usize {
    let mut n = 0;
    visit_locked(|_| n += 1);
    n
}

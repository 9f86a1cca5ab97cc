//! `LocalStack<T>`: a stack per context, with release-on-pop and order-independent guards.

use std::fmt;
use std::marker::PhantomData;

use std::ptr::NonNull;

use crate::context::table::Queued;
use crate::context::{self, registry, CtxInner};
use crate::error::{fail, AccessError, AccessErrorKind};
use crate::explicit;
use crate::storage::{
    Buf, Create, Elsewhere, Inherit, Payload, Share, Slot, Storage, Where, Writer,
};
use crate::{ContextId, LocalProxy, Release};

/// A buffer larger than this is freed when the stack empties; a smaller one is kept, so a
/// push/pop cycle on an empty stack never allocates.
const KEEP_CAPACITY: usize = 16;

/// A stack's first buffer spans at least this many bytes, so the elements a context pushes and
/// pops on its hot path do not share a cache line with another allocation's.
const FIRST_BUFFER_BYTES: usize = 128;

/// How many element numbers a stack store takes from [`NEXT_BLOCK`] at a time. Small enough
/// that the 64-bit space lasts (2^48 blocks: a block a nanosecond for three days, a block a
/// microsecond for nine years), large enough that a context's store takes one block in the
/// usual case.
const BLOCK: u64 = 1 << 16;

/// The start of the next block of element numbers, for every stack in the process: numbers are
/// unique across contexts (not only within one), so an element a scope future's segment
/// carries into another context keeps its number there, and a [`StackGuard`] finds it by that
/// number wherever it is — never confusing it with another context's element. A plain `std`
/// atomic also under loom: it is a counter, not part of any protocol.
static NEXT_BLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// One context's stack.
///
/// While a guard or scope may need it, every element has a sequence number, increasing from
/// bottom to top: a guard (or a scope) remembers its element's number and removes exactly that
/// element — at the top or the bottom in one comparison, anywhere else by binary search — or
/// nothing, if it is gone. Both buffers keep removals at the bottom O(1), so guards dropped
/// oldest-first cost O(n) in all.
///
/// Numbers are never reused, in any context: each store hands them out from a block of its own
/// (`next_seq..seq_end`, taken from [`NEXT_BLOCK`] when the last one runs out), so a number
/// names one element in the whole process. A scope future's segment keeps its numbers when it
/// is put back — in this context or another — and a guard finds its element by its number in
/// whichever context holds it. Put back on top of elements numbered since, the numbers may be
/// out of order (`unsorted`), and removals then search them one by one.
pub(crate) struct StackStore<T> {
    items: Buf<T>,
    seqs: Buf<u64>,
    /// The next number to hand out, and the end of this store's block.
    next_seq: u64,
    seq_end: u64,
    /// The numbers are unique but not increasing: a scope future put a segment back with its
    /// old numbers on top of elements numbered since (see `push_segment`). Removals then look
    /// numbers up one by one instead of by binary search, until the stack empties.
    unsorted: bool,
}

impl<T> StackStore<T> {
    /// The elements, bottom first.
    #[inline]
    pub(crate) fn items(&self) -> &[T] {
        self.items.as_slice()
    }

    /// Pushes a value nobody will remove by number (`push`).
    #[inline]
    fn push(&mut self, value: T) {
        if self.items.capacity() == 0 {
            self.reserve_first();
        }
        self.items.push(value);
        // Numbers are kept only while a guard or scope may need one (see `push_numbered`).
        if !self.seqs.is_empty() {
            let seq = self.fresh_seq();
            self.seqs.push(seq);
        }
    }

    /// A number no element of any stack has had: the next of this store's block.
    #[inline]
    fn fresh_seq(&mut self) -> u64 {
        if self.next_seq == self.seq_end {
            self.take_block();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Takes a fresh block of numbers: each one above every number handed out so far.
    #[cold]
    #[inline(never)]
    fn take_block(&mut self) {
        let start = NEXT_BLOCK.fetch_add(BLOCK, std::sync::atomic::Ordering::Relaxed);
        // Unreachable in practice (see `BLOCK`); a wrapped counter would hand out numbers
        // again, and a guard could then remove someone else's element.
        assert!(start <= u64::MAX - BLOCK, "stack element numbers exhausted");
        self.next_seq = start;
        self.seq_end = start + BLOCK;
    }

    /// Pushes a value a guard or scope will remove by its number, which it returns. The first
    /// one numbers the elements already there; the numbers go again when the stack empties, so
    /// plain push/pop cycles never pay for them.
    #[inline]
    fn push_numbered(&mut self, value: T) -> u64 {
        if self.seqs.is_empty() && !self.items.is_empty() {
            self.number_existing();
        }
        if self.items.capacity() == 0 {
            self.reserve_first();
        }
        let seq = self.fresh_seq();
        self.items.push(value);
        self.seqs.push(seq);
        seq
    }

    #[cold]
    fn number_existing(&mut self) {
        for _ in 0..self.items.len() {
            let seq = self.fresh_seq();
            self.seqs.push(seq);
        }
    }

    #[cold]
    fn reserve_first(&mut self) {
        let size = std::mem::size_of::<T>().max(1);
        let n = (FIRST_BUFFER_BYTES / size).max(4);
        self.items.reserve_first(n);
        self.seqs.reserve_first(n);
    }

    #[inline]
    fn pop(&mut self) -> Option<T> {
        let v = self.items.pop()?;
        if !self.seqs.is_empty() {
            self.seqs.pop();
        }
        if self.items.is_empty() {
            self.trim();
        }
        Some(v)
    }

    /// Removes the element pushed as `seq`, if it is still there.
    #[inline]
    fn remove_seq(&mut self, seq: u64) -> Option<T> {
        let seqs = self.seqs.as_slice();
        if seqs.last() == Some(&seq) {
            return self.pop();
        }
        // The bottom is the other common place (guards dropped oldest-first): one comparison.
        let at = if seqs.first() == Some(&seq) {
            0
        } else {
            self.position_of(seq)?
        };
        self.seqs.remove(at);
        let v = self.items.remove(at);
        self.trim();
        Some(v)
    }

    /// Where the element numbered `seq` is, if it is there.
    fn position_of(&self, seq: u64) -> Option<usize> {
        let seqs = self.seqs.as_slice();
        if self.unsorted {
            seqs.iter().position(|&s| s == seq)
        } else {
            seqs.binary_search(&seq).ok()
        }
    }

    /// Takes out the element numbered `seq` and, into `above` / `above_seqs` (bottom first),
    /// every element above it with its number: a scope future's segment, set aside between
    /// polls. At the end of the scope (`last`), only the element is taken, and what is above
    /// it stays. `None` (and nothing taken) if the element is gone.
    #[inline]
    fn take_segment(
        &mut self,
        seq: u64,
        above: &mut Vec<T>,
        above_seqs: &mut Vec<u64>,
        last: bool,
    ) -> Option<T> {
        // The common case: nothing was pushed above it.
        if self.seqs.as_slice().last() == Some(&seq) {
            return self.pop();
        }
        self.take_segment_above(seq, above, above_seqs, last)
    }

    #[cold]
    fn take_segment_above(
        &mut self,
        seq: u64,
        above: &mut Vec<T>,
        above_seqs: &mut Vec<u64>,
        last: bool,
    ) -> Option<T> {
        if last {
            return self.remove_seq(seq);
        }
        let at = self.position_of(seq)?;
        let (start, start_seqs) = (above.len(), above_seqs.len());
        while self.items.len() > at + 1 {
            above.extend(self.items.pop());
            above_seqs.extend(self.seqs.pop());
        }
        above[start..].reverse();
        above_seqs[start_seqs..].reverse();
        self.pop()
    }

    /// Puts a scope future's segment back on top, in order: `value` (its element, numbered
    /// `seq` when it was set aside with something above it), then `above`. Every element of
    /// `above` keeps its number — in this context or any other, since numbers are unique
    /// across contexts — so a `StackGuard` among them still removes exactly its own. Returns
    /// the element's number.
    ///
    /// Out of line, so that the closure around it in `try_push_segment` stays small enough for
    /// the compiler to inline into `write_scoped`; with this inlined there, it was not
    /// (`LocalStack::scope_future` cost 1.2x per poll).
    #[inline(never)]
    fn push_segment(
        &mut self,
        value: T,
        seq: Option<u64>,
        above: &mut Vec<T>,
        above_seqs: &mut Vec<u64>,
    ) -> u64 {
        // The common case: nothing was set aside above it; a fresh number costs the least.
        if above.is_empty() {
            return self.push_numbered(value);
        }
        self.push_segment_above(value, seq, above, above_seqs)
    }

    #[cold]
    fn push_segment_above(
        &mut self,
        value: T,
        seq: Option<u64>,
        above: &mut Vec<T>,
        above_seqs: &mut Vec<u64>,
    ) -> u64 {
        // Always set aside together (`take_segment_above`); if not, renumbering is the safe
        // way out: a guard then finds nothing rather than a wrong element.
        debug_assert_eq!(above.len(), above_seqs.len());
        let Some(seq) = seq.filter(|_| above.len() == above_seqs.len()) else {
            let seq = self.push_numbered(value);
            for v in above.drain(..) {
                self.push_numbered(v);
            }
            above_seqs.clear();
            return seq;
        };
        self.push_with_seq(value, seq);
        for (v, s) in above.drain(..).zip(above_seqs.drain(..)) {
            self.push_with_seq(v, s);
        }
        seq
    }

    /// Pushes `value` under the number `seq` it had before, in this stack or another context's
    /// (numbers are never handed out twice, so it is unique here too).
    fn push_with_seq(&mut self, value: T, seq: u64) {
        if self.seqs.is_empty() && !self.items.is_empty() {
            self.number_existing();
        }
        if self.items.capacity() == 0 {
            self.reserve_first();
        }
        if self.seqs.as_slice().last().is_some_and(|&last| last > seq) {
            self.unsorted = true;
        }
        self.items.push(value);
        self.seqs.push(seq);
        // A number from another context's block at or beyond ours: numbers handed out here
        // next must stay above it (for binary search), and a block taken now is above every
        // number handed out so far. Never adopt the other block: its owner still numbers
        // from it.
        if seq >= self.next_seq {
            self.take_block();
        }
    }

    /// Release-on-pop: an empty stack is not counted as an entry (`PRESENT` follows
    /// `is_present`); a large buffer is handed back.
    #[inline]
    fn trim(&mut self) {
        if self.items.is_empty() {
            // The numbers went with the elements.
            self.unsorted = false;
            if self.items.capacity() > KEEP_CAPACITY {
                self.shrink();
            }
        }
    }

    #[cold]
    fn shrink(&mut self) {
        self.items.shrink_empty();
        self.seqs.shrink_empty();
    }

    fn clear(&mut self) -> Vec<T> {
        self.seqs.drain_to_vec();
        let items = self.items.drain_to_vec();
        self.trim();
        items
    }
}

impl<T: Send + 'static> Payload for StackStore<T> {
    fn empty() -> Self {
        Self {
            items: Buf::new(),
            seqs: Buf::new(),
            next_seq: 0,
            seq_end: 0,
            unsorted: false,
        }
    }
    #[inline]
    fn is_present(&self) -> bool {
        !self.items.is_empty()
    }
    fn succeed(&mut self, old: &Self) {
        // The old payload is never numbered again (it only waits for its readers): the rest
        // of its block is this one's, so no number is taken from `NEXT_BLOCK` for nothing.
        self.next_seq = old.next_seq;
        self.seq_end = old.seq_end;
    }
    fn take_all(&mut self) -> Option<Box<dyn Send>> {
        let mut items = self.clear();
        // Top first, like variables at the end of a scope.
        items.reverse();
        (!items.is_empty()).then(|| Box::new(items) as Box<dyn Send>)
    }
    fn remove_guarded(&mut self, id: u64) -> Option<Box<dyn Send>> {
        self.remove_seq(id).map(|v| Box::new(v) as Box<dyn Send>)
    }
    fn label() -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A stack scope future's elements between polls: its own element, and what its inner future
/// pushed above it, set aside at the end of each poll and put back in order at the next, so
/// that inside the future the stack is LIFO across `.await`.
pub(crate) struct Segment<T> {
    /// The scope's element; `None` once it is gone (the inner future popped it).
    pub(crate) value: Option<T>,
    /// The element's number, kept while something is set aside above it (so the segment
    /// goes back in order); otherwise the element is numbered afresh at each poll.
    seq: Option<u64>,
    /// What the inner future pushed above the element, bottom first (allocated only if it
    /// pushed something), and their numbers: unique across contexts, they are kept wherever
    /// the segment is put back, so a `StackGuard` among them finds its element there.
    above: Vec<T>,
    above_seqs: Vec<u64>,
}

impl<T> Segment<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            value: Some(value),
            seq: None,
            above: Vec::new(),
            above_seqs: Vec::new(),
        }
    }
}

/// A stack per context: Werkzeug's `LocalStack`.
///
/// [`push`](Self::push) and [`pop`](Self::pop) work on the current context's stack; popping the
/// last element releases the context's entry (it no longer counts in
/// [`contexts`](Self::contexts) or [`for_each`](Self::for_each)), without freeing its small
/// buffer, so a push/pop cycle costs no allocation. [`enter`](Self::enter) and
/// [`scope`](Self::scope) pop for you, exactly the value they pushed.
///
/// # Examples
///
/// ```
/// use context_local::LocalStack;
///
/// static APPS: LocalStack<&str> = LocalStack::named("APPS");
///
/// APPS.push("outer");
/// APPS.scope("inner", || assert_eq!(APPS.top(), Some("inner")));
/// assert_eq!(APPS.pop(), Some("outer"));
/// assert_eq!(APPS.pop(), None);
/// ```
pub struct LocalStack<T> {
    storage: Storage<StackStore<T>>,
}

// Constructors carry no `Send` bound; see `Local`'s.
impl<T> LocalStack<T> {
    /// An unnamed stack. Errors name it by its element type.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::new();
    /// assert_eq!(S.name(), "u8");
    /// ```
    pub const fn new() -> Self {
        Self {
            storage: Storage::new(None),
        }
    }

    /// A stack whose errors, panics and `Debug` output use `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// assert_eq!(S.name(), "S");
    /// ```
    pub const fn named(name: &'static str) -> Self {
        Self {
            storage: Storage::new(Some(name)),
        }
    }

    /// Makes this stack explicit-only: a thread's own context never holds its elements.
    ///
    /// As [`Local::explicit_only`](crate::Local::explicit_only): in a thread's own context —
    /// shared by everything that runs on the thread outside a context of its own — a
    /// [`push`](LocalStack::push) or [`enter`](LocalStack::enter) panics at the caller's line,
    /// naming the stack and the fix (`ContextLayer` outermost, `fut.in_new_context()`,
    /// `Context::new().run(..)`). Reads see it empty there; `pop`, `release` and
    /// `with_top_mut` work as usual. [`scope`](LocalStack::scope) and
    /// [`scope_future`](LocalStack::scope_future) are allowed everywhere: their element is
    /// gone when the closure returns or the future is dropped.
    ///
    /// A [`StackGuard`] does not count as such a binding: nothing bounds its life (it can be
    /// kept in a struct, held across `.await` in a `!Send` future, or forgotten), so `enter`
    /// is refused in a thread's own context like `push`.
    ///
    /// In every explicit context it is like any stack; it combines with
    /// [`inheritable`](LocalStack::inheritable). Reads cost nothing more; a push pays one
    /// predictable branch on this flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Context, LocalStack};
    ///
    /// static SPANS: LocalStack<&str> = LocalStack::named("SPANS").explicit_only();
    ///
    /// Context::new().run(|| {
    ///     SPANS.push("request");
    ///     assert_eq!(SPANS.top(), Some("request"));
    /// });
    /// assert!(std::panic::catch_unwind(|| SPANS.push("leak")).is_err());
    /// assert_eq!(SPANS.scope("handler", || SPANS.top()), Some("handler"));
    /// assert!(SPANS.is_empty());
    /// ```
    pub const fn explicit_only(self) -> Self {
        let mut this = self;
        this.storage.set_explicit_only();
        this
    }
}

impl<T: Clone + Send + Sync + 'static> LocalStack<T> {
    /// Makes this stack inheritable: a [`Snapshot`](crate::Snapshot) captures its elements,
    /// and children start with them. A child's pushes and pops stay its own; popping an
    /// inherited element gives the child a clone, and the parent keeps its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Context, LocalStack};
    ///
    /// static APPS: LocalStack<&str> = LocalStack::named("APPS").inheritable();
    ///
    /// APPS.push("shop");
    /// let child = Context::child();
    /// assert_eq!(child.run(|| APPS.pop()), Some("shop"));
    /// assert_eq!(APPS.top(), Some("shop")); // the parent keeps its own
    /// # APPS.release();
    /// ```
    pub const fn inheritable(self) -> Self {
        let mut this = self;
        this.storage.set_inheritable(Inherit::of());
        this
    }
}

impl<T: Clone + Send + Sync + 'static> Share for StackStore<T> {
    fn share(&self) -> Self {
        // The fork's own numbering: guards of the parent never reach the fork.
        let mut out = Self::empty();
        for v in self.items() {
            out.push(v.clone());
        }
        out
    }
}

impl<T: Send + 'static> LocalStack<T> {
    /// The stack's name (or its element type's name if made with [`new`](Self::new)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// assert_eq!(S.name(), "S");
    /// ```
    pub fn name(&self) -> &'static str {
        self.storage.name()
    }

    /// Pushes `value` onto the current context's stack.
    ///
    /// # Panics
    ///
    /// Inside [`with_top`](Self::with_top)/[`with_top_mut`](Self::with_top_mut) of the same
    /// stack, or after this thread's context was destroyed (thread exit).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// S.push(1);
    /// S.push(2);
    /// assert_eq!(S.len(), 2);
    /// ```
    #[inline]
    #[track_caller]
    pub fn push(&self, value: T) {
        if let Err(e) = self
            .storage
            .write(Writer::Runtime, Create::Binding, |s| s.push(value))
        {
            let msg = explicit::teach(&e, true, self.storage.is_inheritable(), &|| 0);
            fail(format_args!("{msg}"));
        }
    }

    /// For an explicit-only stack: panics in a thread's own context.
    #[inline]
    #[track_caller]
    fn refuse_thread_own(&self) {
        if let Err(e) = explicit::refuse_thread_own(|| self.name()) {
            let msg = explicit::teach(&e, true, self.storage.is_inheritable(), &|| 0);
            fail(format_args!("{msg}"));
        }
    }

    /// Pops the top of the current context's stack; `None` when empty. Popping the last
    /// element releases the context's entry.
    ///
    /// # Panics
    ///
    /// Inside `with_top`/`with_top_mut` of the same stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// S.push(1);
    /// assert_eq!(S.contexts(), 1);
    /// assert_eq!(S.pop(), Some(1));
    /// assert_eq!(S.contexts(), 0);
    /// assert_eq!(S.pop(), None);
    /// ```
    #[inline]
    #[track_caller]
    pub fn pop(&self) -> Option<T> {
        match self
            .storage
            .write(Writer::Runtime, Create::No, StackStore::pop)
        {
            Ok(v) => v.flatten(),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => None,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// A clone of the top of the current context's stack; `None` when empty.
    ///
    /// # Panics
    ///
    /// Inside `with_top_mut` of the same stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<String> = LocalStack::named("S");
    /// assert_eq!(S.top(), None);
    /// S.push("a".into());
    /// assert_eq!(S.top().as_deref(), Some("a"));
    /// ```
    #[track_caller]
    pub fn top(&self) -> Option<T>
    where
        T: Clone,
    {
        self.with_top(T::clone)
    }

    /// Calls `f` with the top of the current context's stack; `None` when empty.
    ///
    /// # Panics
    ///
    /// Inside `with_top_mut` of the same stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<String> = LocalStack::named("S");
    /// S.push("abc".into());
    /// assert_eq!(S.with_top(|s| s.len()), Some(3));
    /// ```
    #[inline]
    #[track_caller]
    pub fn with_top<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        match self.storage.read(|s| s.items().last().map(f)) {
            Ok(r) => r.flatten(),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => None,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Calls `f` with mutable access to the top of the current context's stack; `None` when
    /// empty.
    ///
    /// # Panics
    ///
    /// Inside `with_top`/`with_top_mut` of the same stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u32> = LocalStack::named("S");
    /// S.push(1);
    /// S.with_top_mut(|t| *t += 1);
    /// assert_eq!(S.top(), Some(2));
    /// ```
    #[track_caller]
    pub fn with_top_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        match self
            .storage
            .write(Writer::User, Create::No, |s| s.items.last_mut().map(f))
        {
            Ok(r) => r.flatten(),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => None,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// The depth of the current context's stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// assert_eq!(S.len(), 0);
    /// S.push(0);
    /// assert_eq!(S.len(), 1);
    /// ```
    #[track_caller]
    pub fn len(&self) -> usize {
        match self.storage.read(|s| s.items.len()) {
            Ok(n) => n.unwrap_or(0),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => 0,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Whether the current context's stack is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// assert!(S.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        !self.storage.is_present()
    }

    /// Pushes `value`; the returned guard removes exactly this value when dropped, wherever it
    /// then is in the stack (guards may be dropped in any order), and does nothing if the value
    /// was already popped or released.
    ///
    /// # Panics
    ///
    /// As [`push`](Self::push). Dropping the guard never panics: where the value cannot be
    /// removed at once (its context is held elsewhere, or the stack is borrowed by `with_top`
    /// there), the removal is queued and done before anything else uses the stack there.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<&str> = LocalStack::named("S");
    /// let a = S.enter("a");
    /// let b = S.enter("b");
    /// drop(a); // out of order: removes "a", keeps "b"
    /// assert_eq!(S.top(), Some("b"));
    /// assert_eq!(S.len(), 1);
    /// drop(b);
    /// assert!(S.is_empty());
    /// ```
    #[inline]
    #[track_caller]
    pub fn enter(&self, value: T) -> StackGuard<'_, T> {
        if self.storage.is_explicit_only() {
            self.refuse_thread_own();
        }
        self.enter_anywhere(value)
    }

    /// [`enter`](Self::enter) for [`scope`](Self::scope): allowed in a thread's own context
    /// for an explicit-only stack too, since the guard ends with the scope.
    #[inline(always)]
    #[track_caller]
    fn enter_anywhere(&self, value: T) -> StackGuard<'_, T> {
        let Some(ctx) = context::current() else {
            fail(format_args!(
                "{}",
                self.storage.err(AccessErrorKind::Destroyed)
            ));
        };
        // One lookup for push and pop: the guard keeps the slot.
        let slot = self.storage.slot_or_create(ctx);
        match self
            .storage
            .write_slot(ctx, slot, |s| s.push_numbered(value))
        {
            Ok(id) => StackGuard {
                stack: self,
                slot: SlotPtr(std::ptr::from_ref(slot)),
                ctx_addr: std::ptr::from_ref(ctx).addr(),
                ctx_id: ctx.id,
                serial: ctx.serial,
                id,
                _not_send: PhantomData,
            },
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Pushes `value`, runs `f`, and pops exactly that value again, also when `f` panics.
    ///
    /// # Panics
    ///
    /// As [`push`](Self::push); a panic of `f` propagates after the pop.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u32> = LocalStack::named("S");
    /// let r = std::panic::catch_unwind(|| S.scope(1, || panic!("boom")));
    /// assert!(r.is_err());
    /// assert!(S.is_empty());
    /// assert_eq!(S.scope(2, || S.top()), Some(2));
    /// ```
    #[inline]
    #[track_caller]
    pub fn scope<R>(&self, value: T, f: impl FnOnce() -> R) -> R {
        let _guard = self.enter_anywhere(value);
        f()
    }

    /// Pushes a scope future's segment (see [`Segment`]) into the current context, returning
    /// where, and its element's number there; the segment is taken only on success.
    #[inline(always)]
    pub(crate) fn try_push_segment(
        &self,
        segment: &mut Segment<T>,
    ) -> Result<(Where, u64), AccessError> {
        let Segment {
            value,
            seq,
            above,
            above_seqs,
        } = segment;
        // What the inner future pushed above the element was pushed in another context, where
        // it was allowed; putting it back here binds it anew, so an explicit-only stack refuses
        // it in a thread's own context like `push` (only the scope's own element ends by itself).
        if self.storage.is_explicit_only() && !above.is_empty() {
            explicit::refuse_thread_own(|| self.name())?;
        }
        let (at, pushed) = self
            .storage
            .write_scoped(|s| Some(s.push_segment(value.take()?, *seq, above, above_seqs)))?;
        Ok((at, pushed.expect("a scope pushes a value it holds")))
    }

    /// Where the current context is, for a scope to remove its element there.
    pub(crate) fn context_here(&self) -> Result<Where, AccessError> {
        self.storage.current_context()
    }

    /// Ends one poll of a scope future: takes its element (numbered `id` in the context at
    /// `at`) and whatever was pushed above it back into `segment`, or — at the end of the
    /// scope (`last`) — removes exactly its element and leaves what is above in place. Nothing
    /// if the element is gone (the inner future popped it: the popper's to keep). It is
    /// looked for only in the context it was pushed into. If the poll left that
    /// context, this is done there (see [`Storage::write_elsewhere`]); when it is held
    /// elsewhere by then, the element's removal is queued for the holder, which drops it.
    #[inline(always)]
    pub(crate) fn end_scoped(&self, at: &Where, id: u64, segment: &mut Segment<T>, last: bool) {
        let Segment {
            value,
            above,
            above_seqs,
            ..
        } = segment;
        let take = |s: &mut StackStore<T>| s.take_segment(id, above, above_seqs, last);
        *value = match crate::context::held_here(at.addr, at.serial) {
            Some(ctx) => self.storage.write_held(ctx, take).ok().flatten().flatten(),
            None => match self
                .storage
                .write_elsewhere(*at, take, || Queued::Remove(id))
            {
                Elsewhere::Done(v) => v,
                Elsewhere::Queued | Elsewhere::Gone => None,
            },
        };
        // The number is kept only for a segment with something above the element.
        segment.seq = (!segment.above.is_empty()).then_some(id);
    }

    /// Drops the current context's whole stack (outside any borrow).
    ///
    /// # Panics
    ///
    /// Inside `with_top`/`with_top_mut` of the same stack.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// S.push(1);
    /// S.push(2);
    /// S.release();
    /// assert!(S.is_empty());
    /// ```
    #[track_caller]
    pub fn release(&self) {
        // Never waits for another thread's `for_each` (see `Local::set`).
        match self
            .storage
            .write(Writer::Replace, Create::No, StackStore::clear)
        {
            Ok(items) => drop(items),
            Err(e) if e.kind() == AccessErrorKind::Destroyed => {}
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Calls `f` with every context's non-empty stack (bottom first) and that context's id.
    ///
    /// The guarantees are [`Local::for_each`](crate::Local::for_each)'s: only the stack `f`
    /// is looking at is held; its context's `release` never waits (the old elements stay with
    /// `f`, then that context drops them), while `push`, `pop`, guards and `with_top_mut` there
    /// wait until `f` returns for that one stack — never for the rest of the iteration, and
    /// never longer because other iterations keep coming. A context in the middle of a change
    /// is visited after the others. Elements are only ever dropped by their own context.
    ///
    /// Inside `f` you may read anything and change other stacks and locals of the current
    /// context, but not this stack. A wait that could never end (another thread's callback
    /// holds the stack you change and waits for you) is refused with a panic naming the
    /// stack, never a hang.
    ///
    /// # Panics
    ///
    /// If `f` changes this stack, if this is called inside `with_top_mut` of this stack, or if
    /// a wait would wait for this thread (see above).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// S.push(1);
    /// S.push(2);
    /// let mut seen = Vec::new();
    /// S.for_each(|_, items| seen.push(items.to_vec()));
    /// assert_eq!(seen, [vec![1, 2]]);
    /// ```
    #[track_caller]
    pub fn for_each(&self, mut f: impl FnMut(ContextId, &[T]))
    where
        T: Sync,
    {
        self.storage.for_each(|id, s| {
            if !s.items.is_empty() {
                f(id, s.items());
            }
        });
    }

    /// How many contexts have a non-empty stack right now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalStack;
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// S.push(1);
    /// assert_eq!(S.contexts(), 1);
    /// ```
    pub fn contexts(&self) -> usize {
        self.storage.contexts()
    }

    /// A [`LocalProxy`] forwarding to the top of the current context's stack; usable in
    /// `static`s.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{LocalProxy, LocalStack};
    /// static APPS: LocalStack<String> = LocalStack::named("APPS");
    /// static CURRENT_APP: LocalProxy<String> = APPS.proxy();
    /// assert!(!CURRENT_APP.is_bound());
    /// APPS.scope("shop".into(), || assert_eq!(CURRENT_APP.get().as_deref(), Some("shop")));
    /// ```
    pub const fn proxy(&'static self) -> LocalProxy<T> {
        LocalProxy::new(self)
    }

    /// Removes guard `id`'s value from `slot` of `ctx`, which this thread holds. When the slot
    /// is borrowed (the guard is dropped inside `with_top`) or iterated by this thread, the
    /// removal is queued and done as soon as that ends.
    #[inline(always)]
    fn remove_held(&self, ctx: &CtxInner, slot: &Slot<StackStore<T>>, id: u64) {
        match self.storage.try_write_slot(ctx, slot, |s| s.remove_seq(id)) {
            Some(v) => drop(v),
            None => self.defer_removal(ctx, slot, id),
        }
    }

    #[cold]
    fn defer_removal(&self, ctx: &CtxInner, slot: &Slot<StackStore<T>>, id: u64) {
        if let Some(index) = self.storage.index() {
            ctx.post_removal(index, id);
            self.storage.mark_pending(slot);
        }
    }
}

impl<T> Default for LocalStack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Release for LocalStack<T> {
    #[track_caller]
    fn release(&self) {
        LocalStack::release(self);
    }

    fn name(&self) -> &'static str {
        LocalStack::name(self)
    }

    fn is_bound(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: Send + 'static> crate::proxy::Source<T> for LocalStack<T> {
    fn try_with_dyn(&self, f: &mut dyn FnMut(&T)) -> Result<(), AccessError> {
        match self.storage.read(|s| s.items().last().map(&mut *f)) {
            Ok(Some(Some(()))) => Ok(()),
            Ok(_) => Err(self.storage.err(AccessErrorKind::Unbound)),
            Err(e) => Err(e),
        }
    }
    fn source_name(&self) -> &'static str {
        self.name()
    }
    fn is_bound(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: Send + fmt::Debug + 'static> fmt::Debug for LocalStack<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LocalStack");
        d.field("name", &self.name());
        match self.storage.read(|s| format!("{:?}", s.items())) {
            Ok(Some(items)) => d.field("items", &format_args!("{items}")),
            Ok(None) => d.field("items", &format_args!("[]")),
            Err(e) => d.field("items", &format_args!("<{:?}>", e.kind())),
        };
        d.finish()
    }
}

impl<T> Drop for LocalStack<T> {
    fn drop(&mut self) {
        // Only a stack that is not a `static` is ever dropped: free its values everywhere.
        self.storage.detach_all();
    }
}

/// Returned by [`LocalStack::enter`]: removes exactly the value it pushed when dropped.
///
/// Not `Send`: it belongs to the thread (and context) that pushed. Guards may be dropped in any
/// order; each removes only its own value. Inside a [`LocalStack::scope_future`], whose
/// elements move to whichever context polls it, a guard removes its value wherever the future
/// carried it (in a context this thread holds), never another element.
///
/// Do not hold one across `.await`: a `Send` future cannot, and in a `!Send` future on a
/// current-thread runtime the value stays pushed while the executor polls *other* tasks, which
/// then see it. Use [`LocalStack::scope_future`] (pushed only while its future runs) or give
/// the task its own context ([`FutureExt::in_new_context`](crate::FutureExt::in_new_context)).
///
/// # Examples
///
/// ```
/// # use context_local::LocalStack;
/// static S: LocalStack<u8> = LocalStack::named("S");
/// {
///     let _g = S.enter(1);
///     assert_eq!(S.top(), Some(1));
/// }
/// assert_eq!(S.top(), None);
/// ```
#[must_use = "the value is popped as soon as the guard is dropped"]
pub struct StackGuard<'a, T: Send + 'static> {
    stack: &'a LocalStack<T>,
    /// The slot pushed into. Only used once the context is known to be current with the same
    /// serial: then the slot is alive (slots live as long as their context, and this stack,
    /// which alone could detach it, is borrowed by the guard).
    slot: SlotPtr<T>,
    /// The address of the context pushed into: compared, never dereferenced (a match with the
    /// current context is dereferenced through `CURRENT`, which keeps it alive).
    ctx_addr: usize,
    ctx_id: ContextId,
    serial: u64,
    id: u64,
    _not_send: PhantomData<*const UseScopeFutureNotAStackGuardAcrossAwait>,
}

/// The guards' `!Send` marker, named for the compiler's error: a `StackGuard` held across
/// `.await` in a `Send` future (or moved to another thread) is reported as "the trait `Send`
/// is not implemented for `*const UseScopeFutureNotAStackGuardAcrossAwait`", which says what
/// to do, where a bare `*const ()` would say nothing.
pub struct UseScopeFutureNotAStackGuardAcrossAwait;

/// A guard's slot pointer. Wrapped so that the guard's `!Send` marker stays the one reason a
/// compiler error gives (a raw pointer field would add a second, naming internals).
struct SlotPtr<T>(*const Slot<StackStore<T>>);

// SAFETY: the pointer is only dereferenced by the `StackGuard` holding it, which is `!Send`
// (its marker) and so never leaves the thread that pushed; the wrapper alone carries no access.
unsafe impl<T> Send for SlotPtr<T> {}

impl<T: Send + 'static> Drop for StackGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ctx) = context::current_if_at(self.ctx_addr) {
            if ctx.serial == self.serial {
                // SAFETY: see the `slot` field: its context is current and is the one pushed into.
                let slot = unsafe { &*self.slot.0 };
                self.stack.remove_held(ctx, slot, self.id);
                return;
            }
        }
        self.drop_elsewhere();
    }
}

impl<T: Send + 'static> StackGuard<'_, T> {
    /// The guard's context is not the current one. A scope future's segment may have carried
    /// the value into another context this thread holds (the one polling the future, see
    /// [`LocalStack::scope_future`]): it is looked for there first, by its number, which no
    /// other element of any context has. Otherwise it is removed from the guard's context: as
    /// usual if this thread holds it further out, else as a visitor or queued for its holder
    /// (see `CtxInner::remove_as_visitor`). Never a panic.
    #[cold]
    fn drop_elsewhere(&self) {
        if self.remove_where_held() {
            return;
        }
        let Some(ctx) = registry::lookup(self.ctx_id, self.serial) else {
            return; // The context is gone, and our value was dropped with it.
        };
        let Some(slot) = self.stack.storage.slot_in(&ctx) else {
            return;
        };
        if context::is_held_here(&ctx) {
            self.stack.remove_held(&ctx, slot, self.id);
            return;
        }
        let Some(index) = self.stack.storage.index() else {
            return;
        };
        // SAFETY: `slot` is this stack's slot at `index` in `ctx`; it lives as long as the
        // context does and this stack, which the guard borrows, does.
        unsafe { ctx.remove_as_visitor(index, NonNull::from(&slot.hdr), self.id) };
    }
}

impl<T: Send + 'static> StackGuard<'_, T> {
    /// Removes the value from a context this thread holds other than the guard's own (which
    /// `drop_elsewhere` handles after): `true` if found. Numbers are unique across contexts,
    /// so a match is this guard's value and nobody else's. Where the stack is borrowed (the
    /// guard is dropped inside `with_top`), the removal is queued there as well: applied when
    /// the borrow ends, it removes the value if it is there and nothing otherwise.
    #[cold]
    #[inline(never)]
    fn remove_where_held(&self) -> bool {
        let storage = &self.stack.storage;
        let mut removed = None;
        let found = context::find_held(|ctx| {
            if std::ptr::from_ref(ctx).addr() == self.ctx_addr && ctx.serial == self.serial {
                return false;
            }
            let Some(slot) = storage.slot_in(ctx) else {
                return false;
            };
            // No user code runs in here: the value is dropped after the walk.
            match storage.try_write_slot(ctx, slot, |s| s.remove_seq(self.id)) {
                Some(Some(v)) => {
                    removed = Some(v);
                    true
                }
                Some(None) => false,
                None => {
                    self.stack.defer_removal(ctx, slot, self.id);
                    false
                }
            }
        });
        drop(removed);
        found
    }
}

impl<T: Send + 'static> fmt::Debug for StackGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackGuard")
            .field("stack", &self.stack.name())
            .field("context", &self.ctx_id)
            .finish()
    }
}

//! Scopes that span `.await`: a value bound (pushed) for each poll of a future.

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::error::{fail, AccessError, AccessErrorKind};
use crate::stack::Segment;
use crate::storage::Where;
use crate::{Local, LocalStack};

/// What a scope future binds around each poll, and takes back after.
pub(crate) trait Binding {
    /// Binds (pushes) the value for one poll; what `unbind` needs to take it back.
    type Token;
    /// Binds, or fails (the local is borrowed here) keeping the value for the next try.
    fn bind(&mut self) -> Result<Self::Token, AccessError>;
    /// Takes the binding back, in the context it was made in (even if the poll left it);
    /// `last` at the end of the scope (the inner future is done or dropped).
    fn unbind(&mut self, token: Self::Token, last: bool);
}

/// Binds its value (pushes it) at the start of every poll of the inner future, and while
/// dropping it, and takes it back out after — on whichever thread and in whichever context
/// polls it. Each binding ends in the context it was made in.
pub(crate) struct Scoped<B: Binding, F> {
    binding: B,
    /// Structurally pinned; dropped in place by `Drop`, with the value bound.
    future: ManuallyDrop<F>,
}

impl<B: Binding, F> Scoped<B, F> {
    pub(crate) fn new(binding: B, future: F) -> Self {
        Self {
            binding,
            future: ManuallyDrop::new(future),
        }
    }
}

/// Takes the value back out, also when the poll panics.
struct Unbind<'a, B: Binding> {
    binding: &'a mut B,
    token: Option<B::Token>,
    /// The scope ends with this unbinding.
    last: bool,
}

impl<B: Binding> Unbind<'_, B> {
    /// Unbinds now, the poll done (`last` if the scope ends with it). Not left to `drop`,
    /// which only unbinds on unwind or for `Scoped::drop`, out of line: a `drop` doing the
    /// whole unbinding grew past what the compiler inlines, and the guard, passed to it by
    /// address, then stayed in memory — the token was reloaded as one wide load of the narrow
    /// stores made just before, a store-forwarding stall (`Local::scope_future` cost 2x).
    #[inline(always)]
    fn now(&mut self, last: bool) {
        if let Some(token) = self.token.take() {
            self.binding.unbind(token, last);
        }
    }
}

impl<B: Binding> Drop for Unbind<'_, B> {
    #[inline]
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            unbind_late(self.binding, token, self.last);
        }
    }
}

/// [`Unbind`]'s drop: on unwind, or when the scope future is dropped.
#[cold]
#[inline(never)]
fn unbind_late<B: Binding>(binding: &mut B, token: B::Token, last: bool) {
    binding.unbind(token, last);
}

impl<B: Binding, F: Future> Future for Scoped<B, F> {
    type Output = F::Output;

    #[inline]
    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned and never moved out (only dropped in place);
        // `binding` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let token = match this.binding.bind() {
            Ok(token) => token,
            Err(e) => fail(format_args!("{e}")),
        };
        let mut unbind = Unbind {
            binding: &mut this.binding,
            token: Some(token),
            last: false,
        };
        // SAFETY: pinned with `self` (see above).
        let polled = unsafe { Pin::new_unchecked(&mut *this.future) }.poll(cx);
        unbind.now(polled.is_ready());
        polled
    }
}

impl<B: Binding, F> Drop for Scoped<B, F> {
    fn drop(&mut self) {
        // Bound while the inner future is dropped; if that is impossible here (dropped inside
        // `with` of the same local), the inner future is still dropped, then that is reported.
        let (token, failed) = match self.binding.bind() {
            Ok(token) => (Some(token), None),
            Err(e) => (None, Some(e)),
        };
        let unbind = Unbind {
            binding: &mut self.binding,
            token,
            last: true,
        };
        // SAFETY: dropped in place, exactly once (here), and never used again.
        unsafe { ManuallyDrop::drop(&mut self.future) };
        drop(unbind);
        if let Some(e) = failed {
            // At thread exit (`Destroyed`) there is nothing left to bind in: the inner future was
            // dropped unbound, which is all that can be done (a panic in a thread-local
            // destructor would abort the process).
            if !std::thread::panicking() && e.kind() != AccessErrorKind::Destroyed {
                fail(format_args!("{e}: a scope future of it was dropped there"));
            }
        }
    }
}

macro_rules! scope_future {
    ($(#[$doc:meta])* $name:ident, $binding:ident, $source:literal) => {
        $(#[$doc])*
        #[must_use = "futures do nothing unless polled"]
        pub struct $name<'a, T: Send + 'static, F>(Scoped<$binding<'a, T>, F>);

        impl<'a, T: Send + 'static, F> $name<'a, T, F> {
            pub(crate) fn new(binding: $binding<'a, T>, future: F) -> Self {
                Self(Scoped::new(binding, future))
            }
        }

        impl<T: Send + 'static, F: Future> Future for $name<'_, T, F> {
            type Output = F::Output;

            #[inline]
            #[track_caller]
            fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
                // SAFETY: the only field is structurally pinned: a projection of a pin.
                unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
            }
        }

        impl<T: Send + 'static, F> fmt::Debug for $name<'_, T, F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field($source, &self.0.binding.name())
                    .finish_non_exhaustive()
            }
        }
    };
}

scope_future! {
    /// The future of [`Local::scope_future`]: the value is bound at the start of every poll of
    /// the inner future (and while it is dropped), and the previous binding restored after —
    /// on whichever thread and in whichever context polls it.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = Context::from_waker(Waker::noop());
    /// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    ///
    /// static TENANT: Local<&str> = Local::named("TENANT");
    ///
    /// let fut = TENANT.scope_future("acme", async { TENANT.get() });
    /// assert_eq!(block_on(fut), Some("acme"));
    /// assert_eq!(TENANT.get(), None); // only while the future runs
    /// ```
    LocalScope, LocalBinding, "local"
}

scope_future! {
    /// The future of [`LocalStack::scope_future`]: the value is pushed for every poll of the
    /// inner future (and while it is dropped) and set aside after, together with what the
    /// inner future pushed above it, which comes back above it at the next poll — on whichever
    /// thread and in whichever context polls it. At the end exactly the value is removed.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::LocalStack;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = Context::from_waker(Waker::noop());
    /// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    ///
    /// static SPANS: LocalStack<&str> = LocalStack::named("SPANS");
    ///
    /// let fut = SPANS.scope_future("request", async {
    ///     SPANS.scope_future("db", async { SPANS.top() }).await
    /// });
    /// assert_eq!(block_on(fut), Some("db"));
    /// assert!(SPANS.is_empty());
    /// ```
    StackScope, StackBinding, "stack"
}

/// A `Local`'s scoped value: swapped in for each poll, the previous binding restored after.
pub(crate) struct LocalBinding<'a, T> {
    local: &'a Local<T>,
    value: Option<T>,
}

impl<'a, T: Send + 'static> LocalBinding<'a, T> {
    pub(crate) fn new(local: &'a Local<T>, value: T) -> Self {
        Self {
            local,
            value: Some(value),
        }
    }

    fn name(&self) -> &'static str {
        self.local.name()
    }
}

impl<T: Send + 'static> Binding for LocalBinding<'_, T> {
    /// Where it was bound; the binding it displaced there waits in `value` meanwhile.
    type Token = Where;

    #[inline(always)]
    fn bind(&mut self) -> Result<Where, AccessError> {
        // Without a value (the scope's binding went with a context held elsewhere), the
        // current binding is taken out for the poll all the same.
        self.local.try_swap_scoped(&mut self.value)
    }

    #[inline(always)]
    fn unbind(&mut self, at: Where, _last: bool) {
        // What the poll left bound is the scope's value from now on (a `set` inside the scope
        // persists across `.await`, within the scope) — taken from where it was bound, even if
        // another context is current by now.
        self.local.swap_back(&at, &mut self.value);
    }
}

/// A `LocalStack`'s scoped element: pushed for each poll — with what the inner future pushed
/// above it, in order — and set aside with it after; at the end, exactly it is removed.
pub(crate) struct StackBinding<'a, T> {
    stack: &'a LocalStack<T>,
    segment: Segment<T>,
}

impl<'a, T: Send + 'static> StackBinding<'a, T> {
    pub(crate) fn new(stack: &'a LocalStack<T>, value: T) -> Self {
        Self {
            stack,
            segment: Segment::new(value),
        }
    }

    fn name(&self) -> &'static str {
        self.stack.name()
    }
}

impl<T: Send + 'static> Binding for StackBinding<'_, T> {
    /// Where the element was pushed, and its sequence number there, if one was pushed.
    type Token = (Where, Option<u64>);

    #[inline(always)]
    fn bind(&mut self) -> Result<(Where, Option<u64>), AccessError> {
        if self.segment.value.is_some() {
            let (at, id) = self.stack.try_push_segment(&mut self.segment)?;
            return Ok((at, Some(id)));
        }
        Ok((self.stack.context_here()?, None))
    }

    #[inline(always)]
    fn unbind(&mut self, (at, id): (Where, Option<u64>), last: bool) {
        // No id when the element is gone (a poll popped it: it was the popper's to keep).
        if let Some(id) = id {
            self.stack.end_scoped(&at, id, &mut self.segment, last);
        }
    }
}

/// Ends a [`Local::scope`], also when its closure panics: the displaced binding back in the
/// context the scope bound in, the scope's value (or what the closure bound instead) dropped
/// after, with the guard.
struct Restore<'a, T: Send + 'static> {
    local: &'a Local<T>,
    at: Where,
    /// The binding the scope displaced; taken once, by `drop`.
    displaced: Option<Option<T>>,
}

impl<T: Send + 'static> Drop for Restore<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(displaced) = self.displaced.take() {
            drop(self.local.restore_in(&self.at, displaced));
        }
    }
}

/// Scoped values of a [`Local`]: for a closure, and for a future across `.await`.
impl<T: Send + 'static> Local<T> {
    /// Binds `value` in the current context for the duration of `f`, then restores the
    /// previous binding (or unbinds), also when `f` panics. Nested scopes nest. The scoped
    /// value (or whatever `f` bound in its place) is dropped at the end.
    ///
    /// The restore happens in the context the scope bound in, even if `f` left it (dropped
    /// its [`ContextGuard`](crate::ContextGuard), as a scheduler switch does): at once if
    /// nobody holds that context; if another thread or task holds it by then, that holder
    /// restores it (and drops the scoped value) when it next enters it, before anything else
    /// runs there. The previous value is never dropped by the scope, and the scoped value
    /// never stays bound after it.
    ///
    /// # Panics
    ///
    /// As [`set`](Self::set); a panic of `f` propagates after the restore.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    ///
    /// static LEVEL: Local<&str> = Local::named("LEVEL");
    ///
    /// LEVEL.set("info");
    /// LEVEL.scope("debug", || {
    ///     assert_eq!(LEVEL.get(), Some("debug"));
    ///     LEVEL.scope("trace", || assert_eq!(LEVEL.get(), Some("trace")));
    ///     assert_eq!(LEVEL.get(), Some("debug"));
    /// });
    /// assert_eq!(LEVEL.get(), Some("info"));
    /// ```
    #[inline]
    #[track_caller]
    pub fn scope<R>(&self, value: T, f: impl FnOnce() -> R) -> R {
        let (at, displaced) = self.bind_scoped(value);
        let _restore = Restore {
            local: self,
            at,
            displaced: Some(displaced),
        };
        f()
    }

    /// A future that runs `fut` with `value` bound: the value is bound at the start of every
    /// poll of `fut` and while `fut` is dropped, and the previous binding restored after each —
    /// so it is visible exactly while `fut` runs, in whatever context polls it, on any thread
    /// (tokio's `task_local!` `scope`, for every local). A `set` inside `fut` replaces the
    /// scoped value for the rest of the scope.
    ///
    /// Each poll restores the previous binding in the context it bound in, also when `fut`
    /// left that context during the poll (see [`scope`](Self::scope)); the scope keeps its
    /// value for its next poll unless another thread or task held that context by then (the
    /// holder then drops it, and later polls bind nothing).
    ///
    /// # Panics
    ///
    /// Polling panics as [`set`](Self::set) does (inside `with` of this local).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Local;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = Context::from_waker(Waker::noop());
    /// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    ///
    /// static USER: Local<String> = Local::named("USER");
    ///
    /// async fn greet() -> String {
    ///     std::future::ready(()).await;
    ///     USER.with(|u| format!("hello {u}"))
    /// }
    ///
    /// let reply = block_on(USER.scope_future("ada".into(), greet()));
    /// assert_eq!(reply, "hello ada");
    /// assert!(!USER.is_set());
    /// ```
    pub fn scope_future<F: Future>(&self, value: T, fut: F) -> LocalScope<'_, T, F> {
        LocalScope::new(LocalBinding::new(self, value), fut)
    }
}

/// Scoped elements of a [`LocalStack`] for a future, across `.await`.
impl<T: Send + 'static> LocalStack<T> {
    /// A future that runs `fut` with `value` pushed: the value is in the stack exactly while
    /// `fut` runs (every poll, and while `fut` is dropped), in whatever context polls it, on
    /// any thread. Nested scopes nest.
    ///
    /// The stack is LIFO for `fut` across `.await`: at the end of each poll the value is set
    /// aside together with everything `fut` pushed above it, and at the next poll that
    /// segment is put back on top of the polling context's stack, in order — so what `fut`
    /// pushed stays above the value, and is not seen by other code between polls. When `fut`
    /// completes or is dropped, exactly the value is removed (wherever it then is in the
    /// stack); what `fut` left above it stays, as with [`scope`](Self::scope). If `fut` pops
    /// the value itself, it is the popper's: nothing is set aside or pushed again after that.
    /// Setting aside nothing but the value allocates nothing.
    ///
    /// Like [`scope`](Self::scope) (its `StackGuard`), the value is removed from the context
    /// it was pushed into, also when `fut` left that context during the poll; if another
    /// thread or task holds it by then, its holder removes (and drops) the value on its next
    /// entry, and later polls push nothing.
    ///
    /// A [`StackGuard`](crate::StackGuard) taken inside `fut` and held across `.await` (in a
    /// `!Send` future) removes exactly its own element also when `fut` is polled in another
    /// context than the one it was taken in: the segment keeps its elements' numbers wherever
    /// it is put back (they are unique across contexts), and a guard dropped away from its
    /// own context looks for its element in every context this thread holds before its own —
    /// never removing anyone else's. A guard moved *out* of `fut` finds its element only
    /// where one of those holds it: dropped between polls (the element is set aside) or
    /// after `fut` ended in another context (the element stays there, as anything `fut` left
    /// above its value), it removes nothing. Other code polled on the same thread sees
    /// nothing of `fut`'s stack between its polls, so a guard inside a scope future is safe
    /// across `.await` where a guard outside one is not.
    ///
    /// # Panics
    ///
    /// Polling panics as [`push`](Self::push) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::LocalStack;
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Waker};
    /// #     let mut f = std::pin::pin!(f);
    /// #     let mut cx = Context::from_waker(Waker::noop());
    /// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
    /// # }
    ///
    /// static APPS: LocalStack<&str> = LocalStack::named("APPS");
    ///
    /// let fut = APPS.scope_future("shop", async {
    ///     std::future::ready(()).await;
    ///     APPS.top()
    /// });
    /// assert_eq!(block_on(fut), Some("shop"));
    /// assert!(APPS.is_empty());
    ///
    /// // What the future pushes stays above the scope's value across `.await`.
    /// let fut = APPS.scope_future("shop", async {
    ///     APPS.push("cart");
    ///     std::future::ready(()).await;
    ///     (APPS.pop(), APPS.top())
    /// });
    /// assert_eq!(block_on(fut), (Some("cart"), Some("shop")));
    /// assert!(APPS.is_empty());
    /// ```
    pub fn scope_future<F: Future>(&self, value: T, fut: F) -> StackScope<'_, T, F> {
        StackScope::new(StackBinding::new(self, value), fut)
    }
}

//! `InContext`: a future that runs in its own context, on whichever thread polls it.

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::context::{self, Context};
use crate::error::fail;

/// A future that runs in its own [`Context`]: every poll enters the context and leaves it
/// after (also when the poll panics), on whichever thread polls. Made by
/// [`FutureExt::in_context`](crate::FutureExt::in_context) and friends.
///
/// Values the future binds (`set`, `push`, `with_mut`) live in its context, so they persist
/// across `.await` and never show up in another task that the same worker thread runs. The
/// inner future is dropped with its context entered; then the context's values are dropped,
/// with the context current, in the reverse order of their first binding.
///
/// `Send` exactly when the inner future is. A poll costs one context switch in and one out,
/// whatever number of locals is bound: no lock, no allocation, no per-local work.
///
/// # Examples
///
/// ```
/// use context_local::{FutureExt, Local};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     use std::task::{Context, Poll, Waker};
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = Context::from_waker(Waker::noop());
/// #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// static USER: Local<String> = Local::named("USER");
///
/// async fn handler() -> String {
///     USER.set("ada".into()); // lives in the task's context
///     std::future::ready(()).await;
///     USER.with(|u| format!("hello {u}"))
/// }
///
/// let task = handler().in_new_context();
/// assert_eq!(block_on(task), "hello ada");
/// assert!(!USER.is_set()); // the thread's own context never saw it
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct InContext<F> {
    context: Context,
    /// Structurally pinned; dropped in place by `Drop`, with the context entered.
    future: ManuallyDrop<F>,
}

impl<F> InContext<F> {
    /// `future`, to run in `context`, which it now owns.
    #[track_caller]
    pub(crate) fn new(future: F, context: Context) -> Self {
        if context.inner.owner.begin_task().is_err() {
            fail(format_args!(
                "context {:?} is entered (its ContextGuard was leaked) and cannot be given to a task",
                context.id()
            ));
        }
        Self {
            context,
            future: ManuallyDrop::new(future),
        }
    }

    /// The context this future runs in.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::FutureExt;
    ///
    /// let task = async {}.in_new_context();
    /// let id = task.context().id();
    /// assert!(task.context().is_entered()); // owned by the task: nobody else may enter it
    /// # let _ = id;
    /// ```
    pub fn context(&self) -> &Context {
        &self.context
    }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned and never moved out (only dropped in place);
        // `context` is not pinned, and we only use it by shared reference.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = &*this.context.inner;
        // SAFETY: we hold the context (`Task`, taken in `new`): nobody else can enter it, and
        // a poll has `&mut self`, so no other poll of this future runs. `this.context` keeps it
        // alive past `_entered`.
        let _entered = unsafe { context::enter_task(inner) };
        if inner.has_pending() {
            // Queued removals of guards dropped elsewhere; dropped in the context.
            drop(inner.apply_removals(crate::context::table::Remover::Holder));
        }
        // SAFETY: pinned with `self` (see above).
        unsafe { Pin::new_unchecked(&mut *this.future) }.poll(cx)
    }
}

impl<F> Drop for InContext<F> {
    fn drop(&mut self) {
        let inner = &*self.context.inner;
        // SAFETY: as in `poll`: we hold the context and `&mut self`.
        let _entered = unsafe { context::enter_task(inner) };
        // SAFETY: dropped in place, exactly once (here), and never used again; dropping a
        // pinned value in place keeps the pinning promise.
        unsafe { ManuallyDrop::drop(&mut self.future) };
        // `self.context` drops next: its values go, with it current.
    }
}

impl<F> fmt::Debug for InContext<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InContext")
            .field("context", &self.context.id())
            .finish_non_exhaustive()
    }
}

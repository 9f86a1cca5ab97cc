//! Contexts that follow tasks (`std::future` only, no executor):
//!
//! - `in_context`: [`InContext`], a future that runs in its own context on every poll;
//! - `scope`: [`LocalScope`] and [`StackScope`], a value bound (pushed) for each poll.

mod in_context;
mod scope;

use std::future::Future;

pub use in_context::InContext;
pub use scope::{LocalScope, StackScope};

use crate::Context;

/// Runs futures in contexts: [`in_context`](Self::in_context),
/// [`in_new_context`](Self::in_new_context), [`in_child_context`](Self::in_child_context).
/// Implemented for every future.
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
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
///
/// // Two requests interleaved on one thread: each sees only its own id.
/// let a = async { REQUEST_ID.set(1); std::future::ready(()).await; REQUEST_ID.get() };
/// let b = async { REQUEST_ID.set(2); std::future::ready(()).await; REQUEST_ID.get() };
/// assert_eq!(block_on(a.in_new_context()), Some(1));
/// assert_eq!(block_on(b.in_new_context()), Some(2));
/// assert_eq!(REQUEST_ID.get(), None);
/// ```
pub trait FutureExt: Future + Sized {
    /// Runs this future in `ctx`: every poll enters it, on whichever thread polls.
    ///
    /// # Panics
    ///
    /// If `ctx` is entered by a thread (possible only through a leaked `ContextGuard`).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Context, FutureExt, Local};
    ///
    /// static USER: Local<&str> = Local::named("USER");
    ///
    /// let ctx = Context::new();
    /// ctx.run(|| USER.set("ada"));
    /// let task = async { USER.get() }.in_context(ctx);
    /// # use std::future::Future;
    /// # let task = std::pin::pin!(task);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # assert_eq!(task.poll(&mut cx), std::task::Poll::Ready(Some("ada")));
    /// ```
    #[track_caller]
    fn in_context(self, ctx: Context) -> InContext<Self> {
        InContext::new(self, ctx)
    }

    /// Runs this future in a new, empty context: `in_context(Context::new())`.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{FutureExt, Local};
    ///
    /// static USER: Local<&str> = Local::named("USER");
    ///
    /// USER.set("main");
    /// let task = async { USER.get() }.in_new_context();
    /// # use std::future::Future;
    /// # let task = std::pin::pin!(task);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # assert_eq!(task.poll(&mut cx), std::task::Poll::Ready(None));
    /// ```
    fn in_new_context(self) -> InContext<Self> {
        InContext::new(self, Context::new())
    }

    /// Runs this future in a child of the current context ([`Context::child`]): it starts
    /// with the caller's inheritable values as they are at this call, and its own writes stay
    /// its own.
    ///
    /// # Panics
    ///
    /// As [`Snapshot::capture`](crate::Snapshot::capture).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{FutureExt, Local};
    ///
    /// static USER: Local<&str> = Local::named("USER").inheritable();
    ///
    /// USER.set("ada");
    /// let task = async { USER.get() }.in_child_context();
    /// USER.set("bob"); // after the capture
    /// # use std::future::Future;
    /// # let task = std::pin::pin!(task);
    /// # let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    /// # assert_eq!(task.poll(&mut cx), std::task::Poll::Ready(Some("ada")));
    /// ```
    #[track_caller]
    fn in_child_context(self) -> InContext<Self> {
        InContext::new(self, Context::child())
    }
}

impl<F: Future> FutureExt for F {}

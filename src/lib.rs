//! Werkzeug's context locals — `Local`, `LocalStack`, `LocalProxy`, `LocalManager` — for Rust:
//! per-context values that are sound, leak-free and as fast as a hand-rolled `thread_local!`.
//!
//! Code deep in a call stack often needs "the current request", "the current user" or "the
//! current transaction". Passing it through every function is noisy; a global is wrong as soon
//! as two requests run at once. A context local is the middle way: a `static` that holds one
//! value *per context*. A context is what Werkzeug's `ident` names: by default every OS thread
//! is one, and a program can create explicit [`Context`]s and enter them — a scheduler, a test
//! harness, or an async executor running many tasks on few threads.
//!
//! # Example
//!
//! ```
//! use context_local::{context_local, context_stack, Context, LocalManager, LocalProxy};
//!
//! #[context_local]
//! #[derive(Clone)]
//! pub struct Request { pub id: u64, pub user: String }
//!
//! context_stack!(static APPS: &'static str);
//! static CURRENT_APP: LocalProxy<&'static str> = APPS.proxy();
//!
//! fn handler() -> String {
//!     // Deep in the call stack, nothing passed down:
//!     Request::with(|r| format!("request {} for {} in {}", r.id, r.user, CURRENT_APP))
//! }
//!
//! let manager = LocalManager::new([Request::local() as _, &APPS as _]);
//! let reply = Context::new().run(|| {
//!     manager.scope(|| {
//!         Request::set(Request { id: 42, user: "ada".into() });
//!         APPS.scope("shop", handler)
//!     })
//! });
//! assert_eq!(reply, "request 42 for ada in shop");
//! assert!(!Request::is_set());
//! ```
//!
//! # Werkzeug / Flask → context-local
//!
//! | Werkzeug / Flask | context-local |
//! |---|---|
//! | `Local()`, `local.x = v`, `local.x` | [`Local::set`], [`Local::with`] / [`Local::get`]; or a [`#[context_local]`](macro@context_local) struct |
//! | `AttributeError` on an unbound name | [`Local::with`] panics naming the local; [`Local::try_with`] returns [`AccessError`] |
//! | `release_local(local)` | [`Local::release`] |
//! | `LocalStack().push/pop/top` | [`LocalStack::push`], [`LocalStack::pop`], [`LocalStack::top`]; or [`context_stack!`] |
//! | `with app.app_context():` | [`LocalStack::scope`], [`LocalStack::enter`] |
//! | `LocalProxy(local, "name")`, `request`, `current_app` | [`Local::proxy`]`().`[`map`](LocalProxy::map)`(..)`, [`LocalStack::proxy`] |
//! | `LocalManager([...]).cleanup()` | [`LocalManager::cleanup`] |
//! | `make_middleware` | [`LocalManager::scope`], [`LocalManager::guard`] |
//! | `__ident_func__` (greenlets) | [`Context::new`] + [`Context::run`] / [`Context::enter`] |
//! | `threading.local` subclass `__init__` | [`Local::with_init`], `#[context_local(default)]`, `#[context_local(init = f)]` |
//!
//! # A `Local`, a stack or a proxy?
//!
//! - A [`Local`] (or a `#[context_local]` struct) holds *one* value per context: the current
//!   user, a per-thread cache, a database handle. Set it, read it, release it.
//! - A [`LocalStack`] (or [`context_stack!`]) holds a *stack* per context, for things that nest:
//!   app contexts, spans, transaction savepoints, test overrides. [`scope`](LocalStack::scope)
//!   and [`enter`](LocalStack::enter) pop exactly what they pushed, even out of order or on
//!   panic; popping the last element releases the context's entry.
//! - A [`LocalProxy`] is a `Copy` handle to either that can live in a `static`, projects to a part
//!   of the value, and formats as the current value (or `<unbound NAME>`): Flask's `request`
//!   and `current_app`.
//!
//! # Threads and explicit contexts
//!
//! Every thread is a context of its own, created on first use and torn down when the thread
//! exits: its values are dropped then, on that thread (`JoinHandle::join` waits for that;
//! `std::thread::scope` may return a moment earlier, while the thread still runs its
//! thread-local destructors). An explicit [`Context`] is entered with [`Context::run`] or
//! [`Context::enter`] — by one thread at a time — and its values are dropped with it.
//! Guards may be dropped in any order, also while unwinding: each leaves exactly its own entry.
//!
//! When a context ends (its thread exits, the [`Context`] or the task owning it is dropped),
//! its values are dropped *with that context current*, local by local in the reverse order of
//! their first binding there (like variables at the end of a scope, a stack's elements top
//! first). A value's `Drop` therefore sees its own context and the values bound before it; a
//! value it binds is dropped too. A value that is removed explicitly (`pop`, `take`, `set`'s
//! old value, a guard) is dropped by that call, where it runs. Use
//! explicit contexts for anything that is not a thread: a request handled on a pool, a task of
//! an executor, a green thread of a scheduler, a test. Ids ([`ContextId`]) are small and reused,
//! but values belong to contexts, never to ids, so a new context never sees a dead one's values.
//!
//! # Async: contexts that follow tasks
//!
//! A request handler today is a future, polled by an executor that runs many tasks on few
//! threads and moves them between threads at every `.await`. A thread's context is then the
//! wrong place for request values: a value `set` in one task is seen by whatever task the
//! worker polls next, and is gone when the task resumes on another worker. Tried on axum 0.8
//! with tokio's multi-thread runtime (4 workers, 200 concurrent requests, handlers that await),
//! a middleware that calls `Request::set` and awaits the handler gave 0 of 200 correct replies,
//! and 2,173–2,192 of 2,600 log lines carried *other requests'* ids and tenants. Two patterns
//! are right — and declaring request values explicit-only ([`Local::explicit_only`],
//! `#[context_local(explicit_only)]`) makes wiring that uses neither fail at the first request:
//!
//! - **A context per task** — [`FutureExt::in_new_context`] (or [`in_context`](FutureExt::in_context)
//!   with a [`Context`] you made): every poll enters the task's own context, on whichever thread
//!   polls, and leaves it after. Everything works inside as in sync code: `set`, `push`,
//!   `with_mut` persist across `.await`, stacks and guards, macros. A poll costs one context
//!   switch in and one out, whatever number of locals is bound.
//! - **Scoped values** — [`Local::scope_future`] and [`LocalStack::scope_future`] (tokio's
//!   `task_local!` `scope`, for every local and stack): the value is bound at the start of each
//!   poll of the wrapped future and taken back out after, in whatever context polls it.
//!
//! ```
//! use context_local::{context_local, FutureExt};
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     use std::task::{Context, Poll, Waker};
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = Context::from_waker(Waker::noop());
//! #     loop { if let Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//!
//! #[context_local]
//! #[derive(Clone)]
//! pub struct Request { pub id: u64 }
//!
//! async fn handler() -> u64 {
//!     std::future::ready(()).await; // the task may resume on another thread here
//!     Request::with(|r| r.id)
//! }
//!
//! // In a middleware: give the request its own context, then set values in it.
//! async fn middleware(id: u64) -> u64 {
//!     Request::set(Request { id });
//!     handler().await
//! }
//! assert_eq!(block_on(middleware(7).in_new_context()), 7);
//! assert!(!Request::is_set()); // nothing leaked into the thread
//! ```
//!
//! Guards ([`ContextGuard`], [`StackGuard`]) are `!Send`, so a `Send` future cannot hold one
//! across `.await`. In a `!Send` future on a current-thread runtime it compiles but is still
//! wrong: while the future waits, the executor polls other tasks on the same thread, and they
//! run inside the entered context (or see the pushed value). Use [`InContext`] or
//! `scope_future` instead; they are entered only while their own future runs.
//!
//! | from | to |
//! |---|---|
//! | `tokio::task_local! { static ID: u64; }` | `static ID: Local<u64> = Local::named("ID");` (or `#[context_local]`) |
//! | `ID.scope(v, fut).await` | `ID.scope_future(v, fut).await`, or `fut.in_new_context()` and `ID.set(v)` inside |
//! | `ID.sync_scope(v, f)` | [`Local::scope`]`(v, f)` |
//! | `ID.with(\|v\| ..)`, `ID.try_with(..)` | [`Local::with`], [`Local::try_with`] — plus `set`, `with_mut`, stacks, sync code |
//! | (not inherited by `tokio::spawn`) | [`FutureExt::in_child_context`] |
//! | OpenTelemetry `Context::current_with_value(v)` + `fut.with_context(cx)` | `fut.in_new_context()`, `X.set(v)` inside — typed, O(1) writes |
//! | `Context::current().get::<T>()` | `X.with(\|v\| ..)` |
//! | `cx.attach()` guard in sync code | [`Context::run`] / [`Context::enter`] |
//!
//! # Bounds: why `Send + 'static`
//!
//! Values must be `Send + 'static`. An explicit context can be moved to another thread and
//! entered there (an async task does exactly that on a multi-threaded executor), taking its
//! values along, and a thread's context is dropped on that thread at exit; both need `Send`.
//! A context can outlive any borrow, hence `'static`. Iterating every context's value
//! ([`Local::for_each`]) hands out `&T` across threads, so it also needs `T: Sync`.
//!
//! # Cost
//!
//! A bound read is a thread-local load and index arithmetic: no lock, no hashing, no allocation;
//! a push/pop cycle allocates nothing. Iteration across contexts is the rare, expensive side
//! (one `membarrier` syscall on Linux) that keeps the hot paths free of hardware fences. See
//! the README's Performance section for figures next to std and the peer crates.

#![deny(missing_docs)]

pub use context_local_runtime::{
    AccessError, AccessErrorKind, CleanupGuard, Context, ContextGuard, ContextId, ContextLocal,
    EnterError, FutureExt, InContext, Local, LocalManager, LocalProxy, LocalScope, LocalStack,
    Release, Snapshot, StackGuard, StackScope,
};

pub use context_local_runtime::baggage;

/// The guards' `!Send` markers, named in the compiler's error for a guard held across `.await`.
#[doc(hidden)]
pub use context_local_runtime::{
    UseInContextNotAContextGuardAcrossAwait, UseScopeFutureNotAStackGuardAcrossAwait,
};

/// Threads that start with their parent's inheritable values ([`thread::spawn`]), and a check
/// that a thread's own context holds no request values ([`thread::bound_in_own_context`]).
pub mod thread {
    pub use context_local_runtime::thread::bound_in_own_context;
    #[cfg(not(feature = "tracing"))]
    pub use context_local_runtime::thread::spawn;

    /// [`std::thread::spawn`], with the new thread running `f` in a fork of the caller's
    /// [`Snapshot`](crate::Snapshot) (captured now) and inside the caller's current `tracing`
    /// span (feature `tracing`): it sees the caller's inheritable locals and stacks as they
    /// are at this call, its own writes stay its own, and its events carry the span.
    ///
    /// # Panics
    ///
    /// As [`std::thread::spawn`], and as [`Snapshot::capture`](crate::Snapshot::capture).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{thread, Local};
    ///
    /// static USER: Local<String> = Local::named("USER").inheritable();
    ///
    /// tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    /// USER.set("ada".into());
    /// let span = tracing::info_span!("request");
    /// let _entered = span.enter();
    /// let child = thread::spawn(|| (USER.get(), tracing::Span::current().metadata().map(|m| m.name())));
    /// assert_eq!(child.join().unwrap(), (Some("ada".to_string()), Some("request")));
    /// ```
    #[cfg(feature = "tracing")]
    #[track_caller]
    pub fn spawn<F, T>(f: F) -> std::thread::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        context_local_runtime::thread::spawn(crate::span::CurrentSpan::capture().wrap(f))
    }
}

#[cfg(feature = "actix-web")]
pub mod actix_web;
pub mod propagate;

#[cfg(any(feature = "tracing", feature = "tokio", feature = "rayon"))]
mod span;

#[cfg(feature = "rayon")]
pub mod rayon;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "tracing")]
pub mod tracing;

/// Diagnostics for the project's own tests and benchmarks. Not public API.
#[doc(hidden)]
pub use context_local_runtime::__diagnostics;

pub use context_local_macros::{context_local, context_stack};

/// Items used by the code the macros generate, and nothing else: each is named by the
/// expansion in `macros/src/local/accessors.rs` or `macros/src/stack/expand.rs`. Not public
/// API: no stability guarantees.
#[doc(hidden)]
pub mod __private {
    pub use context_local_runtime::baggage::{BaggageFields, BaggageValue};
    pub use context_local_runtime::{AccessError, ContextLocal, Local, LocalProxy, LocalStack};
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

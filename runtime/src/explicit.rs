//! Explicit-only locals, and messages that say where the code runs.
//!
//! A thread's own context is shared by everything that runs on the thread outside an explicit
//! context: on a runtime worker, by every task it polls without a context of its own. A request
//! value bound there leaks into the next request, silently. An explicit-only local
//! ([`Local::explicit_only`](crate::Local::explicit_only),
//! [`LocalStack::explicit_only`](crate::LocalStack::explicit_only)) refuses such bindings, at
//! the first one: the write path refuses the bindings (`storage::Create::Binding`) with the
//! context it looks up anyway (one predictable branch on a flag of the local for the others;
//! reads ask nothing), and the rarer binding paths (`enter`, initializers) ask
//! [`refuse_thread_own`] first. Bindings that end by themselves (`scope`,
//! `scope_future`) stay allowed everywhere: they cannot outlive the code that made them.
//!
//! The panics of failed accesses say which kind of context is current and, where the cause is
//! likely the wiring rather than the local, how to fix it ([`teach`]).

use std::fmt::Write as _;

use crate::context;
use crate::error::{AccessError, AccessErrorKind, Current};

/// `Err(ExplicitOnly)` if the current context is the thread's own.
#[inline]
pub(crate) fn refuse_thread_own(name: impl FnOnce() -> &'static str) -> Result<(), AccessError> {
    match context::current() {
        Some(ctx) if context::is_thread_own(ctx) => Err(refused(name())),
        // No context (thread exit): the access itself reports it.
        _ => Ok(()),
    }
}

/// The error of an explicit-only local's binding refused in a thread's own context.
#[cold]
#[inline(never)]
pub(crate) fn refused(name: &'static str) -> AccessError {
    AccessError::in_current(
        name,
        AccessErrorKind::ExplicitOnly,
        crate::context::current_kind(),
    )
}

/// The message of a panicking accessor: the error's own message, then — for an unbound local —
/// the likely cause. Runs only on the way to a panic, so it may look around (the thread's name,
/// the other contexts).
#[cold]
#[inline(never)]
pub(crate) fn teach(
    e: &AccessError,
    explicit_only: bool,
    inheritable: bool,
    elsewhere: &dyn Fn() -> usize,
) -> String {
    let mut msg = e.to_string();
    let name = e.name();
    match (e.kind(), e.current()) {
        (AccessErrorKind::ExplicitOnly, _) => {
            if let Some(worker) = runtime_worker() {
                let _ = write!(
                    msg,
                    ". This thread (`{worker}`) is a runtime worker: the task that ran this has no context of its own"
                );
            }
        }
        (AccessErrorKind::Unbound, Current::ThreadOwn) => {
            let worker = runtime_worker();
            if explicit_only {
                let _ = write!(
                    msg,
                    ". `{name}` is explicit-only: its values live in the contexts of requests and tasks, never in a thread's own"
                );
            } else if worker.is_none() {
                return msg;
            }
            if let Some(worker) = worker {
                let _ = write!(
                    msg,
                    ". This thread (`{worker}`) is a runtime worker: its own context is shared by every task it polls without a context of its own"
                );
            }
            let _ = write!(
                msg,
                ". If this runs for a request or a task, give it a context: put `ContextLayer` outermost (last in axum's `.layer` chain), \
                 or run the future with `fut.in_new_context()` / `fut.in_child_context()` (`context_local::tokio::spawn`)"
            );
        }
        (AccessErrorKind::Unbound, Current::Child | Current::Explicit) if !inheritable => {
            let n = elsewhere();
            if n > 0 {
                let _ = write!(
                    msg,
                    ". `{name}` is bound in {n} other context{s} but is not inheritable: a child context \
                     (`in_child_context`, `context_local::thread::spawn`, `context_local::tokio::spawn`, `Snapshot::wrap`) \
                     starts with inheritable values only. If the child should see it, declare it with `inherit` \
                     (`#[context_local(inherit)]`, `Local::named(..).inheritable()`)",
                    s = if n == 1 { "" } else { "s" }
                );
            }
        }
        _ => {}
    }
    msg
}

/// The name of this thread if it looks like an async runtime's worker (tokio's, actix's), whose
/// own context every task without a context of its own shares.
fn runtime_worker() -> Option<String> {
    let thread = std::thread::current();
    let name = thread.name()?;
    let worker = name.starts_with("tokio-") || name.starts_with("actix") || name.contains("worker");
    worker.then(|| name.to_owned())
}

/// A debug aid: the names of the locals and stacks that hold a value in this thread's own
/// context, in the order they were first bound there.
///
/// A worker thread of an async runtime should hold no request values in its own context: one
/// there is left over from a task that ran without a context of its own, and the next task
/// on the thread sees it. Call this where the worker is between tasks — tokio's
/// `on_thread_park`, a pool's job wrapper — and assert what you expect (locals that are
/// legitimately per thread, such as a cache, may be listed). Explicit-only locals appear only
/// inside their `scope`s: they refuse any other binding there in the first place.
///
/// It looks at the thread's own context even while an explicit one is current, and costs a
/// walk over the locals bound there; it allocates the returned `Vec`.
///
/// # Examples
///
/// ```
/// use context_local::{thread, Context, Local};
///
/// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID");
///
/// // Right: the request's value lives in the request's context.
/// Context::new().run(|| REQUEST_ID.set(1));
/// assert!(thread::bound_in_own_context().is_empty());
///
/// // Wrong: bound in the thread's own context, it stays for whatever runs next here.
/// REQUEST_ID.set(2);
/// assert_eq!(thread::bound_in_own_context(), ["REQUEST_ID"]);
/// ```
///
/// With tokio, checked whenever a worker parks: see the example in `context_local::tokio`.
pub fn bound_in_own_context() -> Vec<&'static str> {
    context::with_own(|own| own.bound_names()).unwrap_or_default()
}

//! Errors returned by the fallible accessors.

use std::fmt;

/// Why a context local could not be accessed.
///
/// Returned by the `try_*` accessors of [`Local`](crate::Local), [`LocalProxy`](crate::LocalProxy)
/// and friends; the panicking accessors panic with the same message. The error names the local
/// (its [`name`](crate::Local::name)) so a log line points at the culprit.
///
/// # Examples
///
/// ```
/// use context_local::{AccessErrorKind, Local};
///
/// static USER: Local<String> = Local::named("USER");
///
/// let err = USER.try_with(|u| u.len()).unwrap_err();
/// assert_eq!(err.kind(), AccessErrorKind::Unbound);
/// assert_eq!(err.name(), "USER");
/// assert_eq!(
///     err.to_string(),
///     "context local `USER` is not bound in the current context, which is this thread's own"
/// );
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessError {
    name: &'static str,
    kind: AccessErrorKind,
    /// Which kind of context was current, for the messages of `Unbound` and `ExplicitOnly`.
    current: Current,
}

/// Which kind of context was current when an access failed: the messages say it, because the
/// cause of an unbound local is usually the context the code runs in, not the local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Current {
    /// Not looked at (the kind's message does not depend on it).
    Unknown,
    /// The thread's own context: shared by everything that runs on the thread outside an
    /// explicit context.
    ThreadOwn,
    /// An explicit context that started empty (`Context::new`, `in_new_context`, or a fork of
    /// an empty snapshot).
    Explicit,
    /// A context that started with inherited values (`Context::child`, `in_child_context`, ...).
    Child,
}

/// The reason inside an [`AccessError`].
///
/// # Examples
///
/// ```
/// use context_local::{AccessErrorKind, Local};
///
/// static N: Local<u32> = Local::named("N");
/// N.set(1);
/// N.with(|_| {
///     // A `&mut` while a `&` is alive would be undefined behaviour; it is refused instead.
///     let kind = N.try_with_mut(|n| *n += 1).unwrap_err().kind();
///     assert_eq!(kind, AccessErrorKind::Borrowed);
/// });
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessErrorKind {
    /// The current context holds no value (and the local has no initializer).
    Unbound,
    /// The value is borrowed (by `with`) and a mutable access was asked for.
    Borrowed,
    /// The value is mutably borrowed (by `with_mut`, or it is being iterated while mutated).
    BorrowedMut,
    /// The current thread is exiting and its context has already been destroyed.
    Destroyed,
    /// The local's initializer ([`Local::with_init`](crate::Local::with_init)) is running in
    /// this context and used the local itself.
    Initializing,
    /// This thread is iterating the local (`for_each`), so its values cannot change now.
    Iterating,
    /// Another thread's `for_each` is reading the value, and that thread waits (directly or
    /// through others) for this one: waiting for it would never end.
    Deadlock,
    /// The local is explicit-only ([`Local::explicit_only`](crate::Local::explicit_only),
    /// [`LocalStack::explicit_only`](crate::LocalStack::explicit_only)) and the current context
    /// is the thread's own, which never holds its values: the work has no context of its own.
    /// Binding it for a closure or a future (`scope`, `scope_future`) is allowed anywhere.
    ExplicitOnly,
}

impl AccessError {
    pub(crate) const fn new(name: &'static str, kind: AccessErrorKind) -> Self {
        Self {
            name,
            kind,
            current: Current::Unknown,
        }
    }

    /// An error whose message says which kind of context is current (`Unbound`,
    /// `ExplicitOnly`): the caller looks it up (`context::current_kind`), so that this module
    /// depends on nothing of the runtime.
    #[cold]
    #[inline(never)]
    pub(crate) fn in_current(name: &'static str, kind: AccessErrorKind, current: Current) -> Self {
        Self {
            name,
            kind,
            current,
        }
    }

    /// Which kind of context was current, if the error recorded it.
    pub(crate) fn current(&self) -> Current {
        self.current
    }

    /// The name of the local that could not be accessed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::Local;
    /// static DB: Local<u8> = Local::named("DB");
    /// assert_eq!(DB.try_with(|_| ()).unwrap_err().name(), "DB");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Why the access failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{AccessErrorKind, Local};
    /// static DB: Local<u8> = Local::named("DB");
    /// assert_eq!(DB.try_with(|_| ()).unwrap_err().kind(), AccessErrorKind::Unbound);
    /// ```
    pub const fn kind(&self) -> AccessErrorKind {
        self.kind
    }
}

/// For accessors that answer "nothing here" with `None`: no value (unbound), no context
/// (destroyed) and an explicit-only local's initializer refused in a thread's own context all
/// mean nothing is bound; a borrow conflict is a bug in the caller and panics.
#[track_caller]
pub(crate) fn nothing_bound_is_none<R>(result: Result<R, AccessError>) -> Option<R> {
    match result {
        Ok(v) => Some(v),
        Err(e)
            if matches!(
                e.kind,
                AccessErrorKind::Unbound
                    | AccessErrorKind::Destroyed
                    | AccessErrorKind::ExplicitOnly
            ) =>
        {
            None
        }
        Err(e) => fail(format_args!("{e}")),
    }
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name;
        match self.kind {
            AccessErrorKind::Unbound => {
                write!(f, "context local `{name}` is not bound in the current context")?;
                match self.current {
                    Current::Unknown => Ok(()),
                    Current::ThreadOwn => f.write_str(", which is this thread's own"),
                    Current::Explicit => f.write_str(
                        ", an explicit context (it started empty: `Context::new`, `in_new_context`, or a child of a context with nothing inheritable)",
                    ),
                    Current::Child => f.write_str(
                        ", a child context (it started with the inheritable values of the context it was made from)",
                    ),
                }
            }
            AccessErrorKind::ExplicitOnly => write!(
                f,
                "context local `{name}` is explicit-only and cannot be bound here: the current context is this thread's own, \
                 shared by everything that runs on the thread outside a context of its own. Give the work a context: \
                 put `ContextLayer` outermost (last in axum's `.layer` chain) so each request runs in its own, \
                 run a future with `fut.in_new_context()` (or `context_local::tokio::spawn`), or code with `Context::new().run(..)`; \
                 `scope`/`scope_future` bind it for one closure or future anywhere"
            ),
            AccessErrorKind::Borrowed => write!(
                f,
                "context local `{name}` is already borrowed: it cannot be changed inside its own `with`"
            ),
            AccessErrorKind::BorrowedMut => write!(
                f,
                "context local `{name}` is already mutably borrowed (inside `with_mut` or a mutation)"
            ),
            AccessErrorKind::Iterating => write!(
                f,
                "context local `{name}` cannot be changed inside its own `for_each`"
            ),
            AccessErrorKind::Deadlock => write!(
                f,
                "context local `{name}` cannot be changed now: another thread's `for_each` reads it and waits for this thread"
            ),
            AccessErrorKind::Initializing => write!(
                f,
                "context local `{name}` is used by its own initializer, which must not read or change it"
            ),
            AccessErrorKind::Destroyed => write!(
                f,
                "context local `{name}` cannot be accessed: this thread's context was destroyed as the thread exits"
            ),
        }
    }
}

impl fmt::Debug for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessError")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl std::error::Error for AccessError {}

/// The one place the runtime panics at its caller. Every public function that can get here is
/// `#[track_caller]`, so the panic points at the user's line, not into the runtime.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn fail(message: fmt::Arguments<'_>) -> ! {
    panic!("{message}")
}

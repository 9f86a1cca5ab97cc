//! `LocalProxy`: a `Copy` handle that forwards to a local's current value.

use std::fmt;

use crate::error::{fail, nothing_bound_is_none, AccessError, AccessErrorKind};

/// What a proxy can forward to: a [`Local`](crate::Local) (its value) or a
/// [`LocalStack`](crate::LocalStack) (its top).
pub(crate) trait Source<T>: Sync {
    fn try_with_dyn(&self, f: &mut dyn FnMut(&T)) -> Result<(), AccessError>;
    fn source_name(&self) -> &'static str;
    fn is_bound(&self) -> bool;
}

fn identity<T>(t: &T) -> &T {
    t
}

/// Werkzeug's `LocalProxy`: a `Copy` handle, usable in `static`s and `const`s, that forwards
/// to the current context's value of a [`Local`](crate::Local) or the top of a
/// [`LocalStack`](crate::LocalStack).
///
/// [`map`](LocalProxy::map) projects it to a part of the value (Werkzeug's `name=`): the second
/// type parameter is what the proxy shows. `Debug` and `Display` forward to the current value
/// and print `<unbound NAME>` instead of panicking when nothing is bound.
///
/// # Examples
///
/// ```
/// use context_local::{LocalProxy, LocalStack};
///
/// struct Request { path: String, user: Option<String> }
///
/// static REQUESTS: LocalStack<Request> = LocalStack::named("REQUESTS");
/// static REQUEST: LocalProxy<Request> = REQUESTS.proxy();
/// static PATH: LocalProxy<Request, str> = REQUESTS.proxy().map(|r| r.path.as_str());
///
/// assert_eq!(PATH.to_string(), "<unbound REQUESTS>");
/// REQUESTS.scope(Request { path: "/cart".into(), user: None }, || {
///     assert_eq!(PATH.to_string(), "/cart");
///     assert!(REQUEST.with(|r| r.user.is_none()));
/// });
/// ```
pub struct LocalProxy<T: 'static, U: ?Sized + 'static = T> {
    source: &'static dyn Source<T>,
    project: fn(&T) -> &U,
}

impl<T: 'static> LocalProxy<T> {
    pub(crate) const fn new(source: &'static dyn Source<T>) -> Self {
        Self {
            source,
            project: identity::<T>,
        }
    }

    /// A proxy of the part of the value that `project` picks (Werkzeug's `LocalProxy(local,
    /// name)`), usable in `static`s.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// struct User { name: String, admin: bool }
    /// static USER: Local<User> = Local::named("USER");
    /// static IS_ADMIN: LocalProxy<User, bool> = USER.proxy().map(|u| &u.admin);
    ///
    /// USER.set(User { name: "root".into(), admin: true });
    /// assert_eq!(IS_ADMIN.get(), Some(true));
    /// ```
    pub const fn map<U: ?Sized>(self, project: fn(&T) -> &U) -> LocalProxy<T, U> {
        LocalProxy {
            source: self.source,
            project,
        }
    }
}

impl<T: 'static, U: ?Sized + 'static> LocalProxy<T, U> {
    /// The name of the local or stack behind the proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// static L: Local<u8> = Local::named("L");
    /// static P: LocalProxy<u8> = L.proxy();
    /// assert_eq!(P.name(), "L");
    /// ```
    pub fn name(&self) -> &'static str {
        self.source.source_name()
    }

    /// Calls `f` with the (projected) current value.
    ///
    /// # Panics
    ///
    /// If nothing is bound ("object unbound", naming the local), or the value is mutably
    /// borrowed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// static L: Local<String> = Local::named("L");
    /// static P: LocalProxy<String> = L.proxy();
    /// L.set("abc".into());
    /// assert_eq!(P.with(|s| s.len()), 3);
    /// ```
    #[track_caller]
    pub fn with<R>(&self, f: impl FnOnce(&U) -> R) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(e) => fail(format_args!("{e}")),
        }
    }

    /// Calls `f` with the (projected) current value, or says why it cannot.
    ///
    /// # Errors
    ///
    /// [`AccessError`] naming the local: unbound, mutably borrowed, or destroyed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// static L: Local<u8> = Local::named("L");
    /// static P: LocalProxy<u8> = L.proxy();
    /// assert!(P.try_with(|v| *v).is_err());
    /// L.set(1);
    /// assert_eq!(P.try_with(|v| *v), Ok(1));
    /// ```
    pub fn try_with<R>(&self, f: impl FnOnce(&U) -> R) -> Result<R, AccessError> {
        let project = self.project;
        let mut f = Some(f);
        let mut out = None;
        self.source.try_with_dyn(&mut |t| {
            if let Some(f) = f.take() {
                out = Some(f(project(t)));
            }
        })?;
        out.ok_or_else(|| {
            AccessError::in_current(
                self.name(),
                AccessErrorKind::Unbound,
                crate::context::current_kind(),
            )
        })
    }

    /// A clone of the (projected) current value, or `None` if nothing is bound.
    ///
    /// # Panics
    ///
    /// If the value is mutably borrowed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{LocalProxy, LocalStack};
    /// static S: LocalStack<u8> = LocalStack::named("S");
    /// static TOP: LocalProxy<u8> = S.proxy();
    /// assert_eq!(TOP.get(), None);
    /// S.push(5);
    /// assert_eq!(TOP.get(), Some(5));
    /// ```
    #[track_caller]
    pub fn get(&self) -> Option<U>
    where
        U: Clone,
    {
        nothing_bound_is_none(self.try_with(U::clone))
    }

    /// Whether something is bound (a local's value — or its initializer —, a stack's top).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalProxy};
    /// static L: Local<u8> = Local::named("L");
    /// static P: LocalProxy<u8> = L.proxy();
    /// assert!(!P.is_bound());
    /// L.set(0);
    /// assert!(P.is_bound());
    /// ```
    pub fn is_bound(&self) -> bool {
        self.source.is_bound()
    }

    fn fmt_with(
        &self,
        f: &mut fmt::Formatter<'_>,
        show: impl FnOnce(&U, &mut fmt::Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        let name = self.name();
        let mut show = Some(show);
        let mut result = Ok(());
        let outcome = self.try_with(|v| {
            if let Some(show) = show.take() {
                result = show(v, f);
            }
        });
        match outcome {
            Ok(()) => result,
            Err(e) => match e.kind() {
                AccessErrorKind::Unbound => write!(f, "<unbound {name}>"),
                AccessErrorKind::Destroyed => write!(f, "<destroyed {name}>"),
                _ => write!(f, "<borrowed {name}>"),
            },
        }
    }
}

impl<T: 'static, U: ?Sized + 'static> Clone for LocalProxy<T, U> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: 'static, U: ?Sized + 'static> Copy for LocalProxy<T, U> {}

impl<T: 'static, U: ?Sized + fmt::Debug + 'static> fmt::Debug for LocalProxy<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, |v, f| fmt::Debug::fmt(v, f))
    }
}

impl<T: 'static, U: ?Sized + fmt::Display + 'static> fmt::Display for LocalProxy<T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, |v, f| fmt::Display::fmt(v, f))
    }
}

//! `LocalManager` and `Release`: end-of-request cleanup of many locals at once.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

/// Something that can drop the current context's value: implemented by
/// [`Local`](crate::Local) and [`LocalStack`](crate::LocalStack). Object safe, so a
/// [`LocalManager`] can hold locals of different types.
///
/// # Examples
///
/// ```
/// use context_local::{Local, LocalStack, Release};
///
/// static USER: Local<String> = Local::named("USER");
/// static APPS: LocalStack<u32> = LocalStack::named("APPS");
///
/// USER.set("ada".into());
/// APPS.push(1);
/// let all: [&dyn Release; 2] = [&USER, &APPS];
/// all.iter().for_each(|l| l.release());
/// assert!(!USER.is_set() && APPS.is_empty());
/// ```
pub trait Release: Sync {
    /// Drops the current context's value (a local's value, a stack's whole stack).
    fn release(&self);

    /// The name of the local, for diagnostics.
    fn name(&self) -> &'static str {
        "<unnamed>"
    }

    /// Whether the current context holds a value of this local. [`LocalManager::cleanup`]
    /// releases again while one does (a value's `Drop` may bind another local). The default
    /// says `false`: an implementation without it is released once per cleanup.
    fn is_bound(&self) -> bool {
        false
    }
}

/// Cleanup rounds before giving up on values whose `Drop` keeps binding managed locals.
const CLEANUP_ROUNDS: usize = 1 << 16;

/// Releases a set of locals for the current context in one call: Werkzeug's `LocalManager`.
///
/// Use it at the end of every request or job, so no value leaks into the next one that the same
/// thread (or context) runs.
///
/// # Examples
///
/// ```
/// use context_local::{Local, LocalManager, LocalStack};
///
/// static USER: Local<String> = Local::named("USER");
/// static APPS: LocalStack<&str> = LocalStack::named("APPS");
///
/// let manager = LocalManager::new([&USER as _, &APPS as _]);
/// manager.scope(|| {
///     USER.set("ada".into());
///     APPS.push("shop");
/// });
/// assert!(!USER.is_set());
/// assert!(APPS.is_empty());
/// ```
pub struct LocalManager {
    locals: Vec<&'static dyn Release>,
}

impl LocalManager {
    /// A manager of `locals`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalManager};
    /// static A: Local<u8> = Local::named("A");
    /// static B: Local<u8> = Local::named("B");
    /// let manager = LocalManager::new([&A as _, &B as _]);
    /// assert_eq!(manager.len(), 2);
    /// ```
    pub fn new(locals: impl IntoIterator<Item = &'static dyn Release>) -> Self {
        Self {
            locals: locals.into_iter().collect(),
        }
    }

    /// How many locals this manager releases.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalManager;
    /// assert_eq!(LocalManager::new([]).len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.locals.len()
    }

    /// Whether this manager releases nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::LocalManager;
    /// assert!(LocalManager::new([]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.locals.is_empty()
    }

    /// Releases every managed local in the current context.
    ///
    /// A released value's `Drop` may bind a managed local again (one released before it, or
    /// itself); cleanup then releases again, until no managed local is bound.
    ///
    /// # Panics
    ///
    /// If releasing a local panics (a value's `Drop` panicked, or the local is borrowed here),
    /// the remaining locals are still released and the first panic is then resumed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalManager};
    /// static A: Local<u8> = Local::named("A");
    /// let manager = LocalManager::new([&A as _]);
    /// A.set(1);
    /// manager.cleanup();
    /// assert!(!A.is_set());
    /// ```
    #[track_caller]
    pub fn cleanup(&self) {
        let mut first_panic = None;
        for round in 0..CLEANUP_ROUNDS {
            for local in &self.locals {
                if round > 0 && !local.is_bound() {
                    continue;
                }
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| local.release())) {
                    first_panic.get_or_insert(p);
                }
            }
            // A panic may mean a local cannot be released here (it is borrowed): stop.
            if first_panic.is_some() || !self.locals.iter().any(|l| l.is_bound()) {
                break;
            }
        }
        if let Some(p) = first_panic {
            if !std::thread::panicking() {
                panic::resume_unwind(p);
            }
        }
    }

    /// Runs `f`, then [`cleanup`](Self::cleanup), also when `f` panics (Werkzeug's
    /// `make_middleware`).
    ///
    /// # Panics
    ///
    /// A panic of `f` propagates after the cleanup; see [`cleanup`](Self::cleanup).
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalManager};
    /// static A: Local<u8> = Local::named("A");
    /// let manager = LocalManager::new([&A as _]);
    /// let r = std::panic::catch_unwind(|| manager.scope(|| { A.set(1); panic!("handler failed") }));
    /// assert!(r.is_err());
    /// assert!(!A.is_set());
    /// ```
    #[track_caller]
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _cleanup = self.guard();
        f()
    }

    /// A guard that runs [`cleanup`](Self::cleanup) when dropped: end of request.
    ///
    /// # Examples
    ///
    /// ```
    /// # use context_local::{Local, LocalManager};
    /// static A: Local<u8> = Local::named("A");
    /// let manager = LocalManager::new([&A as _]);
    /// {
    ///     let _end_of_request = manager.guard();
    ///     A.set(1);
    /// }
    /// assert!(!A.is_set());
    /// ```
    pub fn guard(&self) -> CleanupGuard<'_> {
        CleanupGuard { manager: self }
    }
}

// A panic inside a release leaves every local consistent (values are moved out before their
// `Drop` runs), so observing a manager after a caught panic is fine.
impl std::panic::RefUnwindSafe for LocalManager {}
impl std::panic::UnwindSafe for LocalManager {}

impl fmt::Debug for LocalManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.locals.iter().map(|l| l.name()))
            .finish()
    }
}

/// Returned by [`LocalManager::guard`]: cleans the manager's locals up when dropped.
///
/// # Examples
///
/// ```
/// # use context_local::{Local, LocalManager};
/// static A: Local<u8> = Local::named("A");
/// let manager = LocalManager::new([&A as _]);
/// let guard = manager.guard();
/// A.set(1);
/// drop(guard);
/// assert!(!A.is_set());
/// ```
#[must_use = "cleanup runs as soon as the guard is dropped"]
#[derive(Debug)]
pub struct CleanupGuard<'a> {
    manager: &'a LocalManager,
}

impl Drop for CleanupGuard<'_> {
    fn drop(&mut self) {
        self.manager.cleanup();
    }
}

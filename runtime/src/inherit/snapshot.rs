//! `Snapshot`: the inheritable values of a context at one moment, to start children with.

use std::fmt;

use crate::context::capture::CaptureError;
use crate::context::frame::Frame;
use crate::context::{self, Context};
use crate::error::fail;
use crate::sync::Arc;

/// The inheritable locals and stacks of a context at one moment: what a child task, thread or
/// pool job starts with.
///
/// Only locals declared inheritable take part ([`Local::inheritable`](crate::Local::inheritable),
/// [`LocalStack::inheritable`](crate::LocalStack::inheritable), `#[context_local(inherit)]`,
/// `context_stack!(#[inherit] ...)`); every other local starts unbound in a fork. A fork sees
/// the values as they were at capture: later writes of the parent are invisible to it, and
/// its own writes (`set`, `take`, `with_mut`, `push`, `pop`, ...) are invisible to the parent
/// and to other forks. Popping an inherited element gives the fork a clone; the parent keeps
/// its own.
///
/// Values are shared, not copied, until one side writes: capturing clones a changed value once
/// (the parent's own stays its own), forks share that clone, and a fork's first write copies
/// it. Capturing again with no inheritable write in between costs an `Arc` clone and allocates
/// nothing; a fork is O(1). Every value is dropped once, when the last context or snapshot
/// holding it goes.
///
/// A capture is cached until an inheritable local of the context is written through the
/// runtime (`set`, `with_mut`, `push`, a guard, ...): a change made through interior
/// mutability inside `with` (a `Cell`, a `Mutex`) is seen by the next capture only after such
/// a write.
///
/// # Examples
///
/// ```
/// use context_local::{Local, Snapshot};
///
/// static USER: Local<String> = Local::named("USER").inheritable();
/// static SCRATCH: Local<u32> = Local::named("SCRATCH"); // not inheritable
///
/// USER.set("ada".into());
/// SCRATCH.set(1);
/// let snapshot = Snapshot::capture();
/// USER.set("bob".into()); // after the capture: invisible to forks
///
/// let job = snapshot.wrap(|| (USER.get(), SCRATCH.get()));
/// let seen = std::thread::spawn(job).join().unwrap();
/// assert_eq!(seen, (Some("ada".to_string()), None));
/// ```
#[derive(Clone, Default)]
pub struct Snapshot {
    frame: Option<Arc<Frame>>,
}

impl Snapshot {
    /// The current context's inheritable values, now.
    ///
    /// # Panics
    ///
    /// Inside `with_mut` of an inheritable local (its value is being changed and cannot be
    /// read), or inside the `Clone` of an inheritable value that another capture is cloning
    /// (the copy would need that same `Clone` again); the message names the local.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{LocalStack, Snapshot};
    ///
    /// static APPS: LocalStack<&str> = LocalStack::named("APPS").inheritable();
    ///
    /// APPS.scope("shop", || {
    ///     let snapshot = Snapshot::capture();
    ///     assert_eq!(snapshot.run(|| APPS.top()), Some("shop"));
    /// });
    /// ```
    #[track_caller]
    pub fn capture() -> Snapshot {
        let Some(ctx) = context::current() else {
            return Snapshot::empty(); // thread exit: nothing is left to inherit
        };
        match ctx.capture() {
            Ok(frame) => Snapshot { frame },
            Err(CaptureError::Writing(name)) => fail(format_args!(
                "context local `{name}` cannot be captured inside its own `with_mut`"
            )),
            Err(CaptureError::Cloning(name)) => fail(format_args!(
                "context local `{name}` cannot be captured inside its own `Clone`: a capture is \
                 cloning it (capture before cloning, or from outside `Clone`)"
            )),
        }
    }

    /// A snapshot of `frame` (values extracted from elsewhere: see `baggage`).
    pub(crate) fn from_frame(frame: Frame) -> Snapshot {
        Snapshot {
            frame: (!frame.is_empty()).then(|| Arc::new(frame)),
        }
    }

    /// A snapshot with nothing in it: its forks start empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::Snapshot;
    /// assert!(Snapshot::empty().is_empty());
    /// ```
    pub const fn empty() -> Snapshot {
        Snapshot { frame: None }
    }

    /// Whether no inheritable local is bound in this snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Local, Snapshot};
    ///
    /// static TENANT: Local<u32> = Local::named("TENANT").inheritable();
    ///
    /// assert!(Snapshot::capture().is_empty());
    /// TENANT.set(7);
    /// assert!(!Snapshot::capture().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.frame.as_ref().is_none_or(|f| f.is_empty())
    }

    /// A new context that starts with this snapshot's values. O(1): values are shared until
    /// the fork writes them.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Local, Snapshot};
    ///
    /// static TENANT: Local<u32> = Local::named("TENANT").inheritable();
    ///
    /// TENANT.set(7);
    /// let child = Snapshot::capture().fork();
    /// child.run(|| {
    ///     assert_eq!(TENANT.get(), Some(7));
    ///     TENANT.set(8); // the child's own from now on
    /// });
    /// assert_eq!(TENANT.get(), Some(7));
    /// assert_eq!(child.run(|| TENANT.get()), Some(8));
    /// ```
    pub fn fork(&self) -> Context {
        match &self.frame {
            Some(frame) => Context::with_inherited(frame.clone()),
            None => Context::new(),
        }
    }

    /// Runs `f` in a fresh fork of this snapshot, dropped after (with its values).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Local, Snapshot};
    ///
    /// static TENANT: Local<u32> = Local::named("TENANT").inheritable();
    ///
    /// TENANT.set(7);
    /// let snapshot = Snapshot::capture();
    /// assert_eq!(snapshot.run(|| TENANT.replace(9)), Some(7));
    /// assert_eq!(snapshot.run(|| TENANT.get()), Some(7)); // every run starts afresh
    /// ```
    #[track_caller]
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.frame {
            Some(frame) => {
                // SAFETY: the fork lives in this frame only: `f` never gets the `Context`, so
                // it can neither leak it nor its guard (`Context::run` leaves it on unwind too),
                // and it is dropped — torn down — here, while `self` still holds `frame`.
                let fork = unsafe { Context::with_lent_frame(frame) };
                fork.run(f)
            }
            None => Context::new().run(f),
        }
    }

    /// Wraps `f` to run in a fresh fork of this snapshot, wherever it is called: for thread
    /// pools and job queues, so a job sees its submitter's values and leaves nothing behind
    /// on the worker. The fork (and what the job bound in it) is dropped when `f` returns — a
    /// moment after anything `f` sent out of it (through a channel, say) may already be seen.
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Local, Snapshot};
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").inheritable();
    ///
    /// REQUEST_ID.set(42);
    /// let job = Snapshot::capture().wrap(|| REQUEST_ID.get());
    /// assert_eq!(std::thread::spawn(job).join().unwrap(), Some(42));
    /// ```
    pub fn wrap<F, R>(&self, f: F) -> impl FnOnce() -> R + Send + 'static
    where
        F: FnOnce() -> R + Send + 'static,
    {
        let snapshot = self.clone();
        move || snapshot.run(f)
    }
}

/// Children of the current context.
impl Context {
    /// A child of the current context: a new context that starts with the current context's
    /// inheritable values (`Snapshot::capture().fork()`).
    ///
    /// # Panics
    ///
    /// As [`Snapshot::capture`](crate::Snapshot::capture).
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::{Context, Local};
    ///
    /// static USER: Local<&str> = Local::named("USER").inheritable();
    ///
    /// USER.set("ada");
    /// assert_eq!(Context::child().run(|| USER.get()), Some("ada"));
    /// assert_eq!(Context::new().run(|| USER.get()), None);
    /// ```
    #[track_caller]
    pub fn child() -> Self {
        Snapshot::capture().fork()
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("locals", &self.frame.as_ref().map_or(0, |f| f.len()))
            .finish()
    }
}

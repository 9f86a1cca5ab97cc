//! Rayon jobs and parallel iterators that see the caller's inheritable values (feature
//! `rayon`).
//!
//! A pool thread runs many callers' jobs, so a job must neither miss its caller's request
//! values nor leave its own behind for the next job. Each wrapper here captures a
//! [`Snapshot`] at the call and runs every job — every item of a parallel iterator — in a
//! fresh fork of it, dropped when the job ends. With feature `tracing`, every job also runs
//! inside the caller's current `tracing` span.

use rayon::iter::plumbing::{Consumer, Folder, Reducer, UnindexedConsumer};
use rayon::iter::ParallelIterator;

use crate::span::CurrentSpan;
use crate::Snapshot;

/// [`rayon::spawn`], with `f` running in a child of the caller's context.
///
/// # Panics
///
/// As [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::Local;
///
/// static TENANT: Local<&str> = Local::named("TENANT").inheritable();
///
/// TENANT.set("acme");
/// let (tx, rx) = std::sync::mpsc::channel();
/// context_local::rayon::spawn(move || tx.send(TENANT.get()).unwrap());
/// assert_eq!(rx.recv().unwrap(), Some("acme"));
/// ```
#[track_caller]
pub fn spawn<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    rayon::spawn(Snapshot::capture().wrap(CurrentSpan::capture().wrap(f)));
}

/// [`rayon::join`], with each closure running in its own child of the caller's context.
///
/// # Panics
///
/// As [`rayon::join`], and as [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::Local;
///
/// static USER: Local<&str> = Local::named("USER").inheritable();
///
/// USER.set("ada");
/// let (a, b) = context_local::rayon::join(|| USER.get(), || USER.replace("bob"));
/// assert_eq!((a, b), (Some("ada"), Some("ada")));
/// assert_eq!(USER.get(), Some("ada")); // a child's write stays its own
/// ```
#[track_caller]
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    let snapshot = Snapshot::capture();
    let span = CurrentSpan::capture();
    rayon::join(
        || snapshot.run(|| span.run(a)),
        || snapshot.run(|| span.run(b)),
    )
}

/// [`rayon::ThreadPool::install`], with `f` running in a child of the caller's context —
/// so parallel iterators built inside it (with
/// [`in_child_contexts`](ParallelIteratorExt::in_child_contexts)) see the caller's values.
/// (`pool.install(..)` alone runs `f` on a pool thread, in that thread's context.)
///
/// # Panics
///
/// As [`rayon::ThreadPool::install`], and as [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::rayon::ParallelIteratorExt;
/// use context_local::Local;
/// use rayon::prelude::*;
///
/// static TENANT: Local<&str> = Local::named("TENANT").inheritable();
///
/// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
/// TENANT.set("acme");
/// let seen: Vec<_> = context_local::rayon::install(&pool, || {
///     (0..4).into_par_iter().in_child_contexts().map(|_| TENANT.get()).collect()
/// });
/// assert!(seen.iter().all(|t| *t == Some("acme")));
/// ```
#[track_caller]
pub fn install<F, R>(pool: &rayon::ThreadPool, f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let snapshot = Snapshot::capture();
    let span = CurrentSpan::capture();
    pool.install(|| snapshot.run(|| span.run(f)))
}

/// Parallel iterators whose items run in children of the caller's context.
pub trait ParallelIteratorExt: ParallelIterator {
    /// Everything after this adapter — `map`, `filter`, `for_each`, ... — runs, item by
    /// item, in a fresh fork of the caller's [`Snapshot`] (captured at this call): each item
    /// sees the caller's inheritable values, and what it binds is dropped when it is done.
    /// So does every other closure handed to the adapters after it: `map_init`'s and
    /// `for_each_init`'s `init`, the identities and combining ops of `fold`, `reduce` and their
    /// `try_` forms, the `Clone` of `map_with`'s / `for_each_with`'s / `fold_with`'s value,
    /// and the drop of the state these keep. Each such call has a fork of its own, so nothing
    /// a closure binds stays in a pool thread for the next job there.
    /// Put it first. Inside [`ThreadPool::install`](rayon::ThreadPool::install) the caller is
    /// a pool thread: use [`install`] instead, so that it carries your values there.
    ///
    /// # Panics
    ///
    /// As [`Snapshot::capture`].
    ///
    /// # Examples
    ///
    /// ```
    /// use context_local::rayon::ParallelIteratorExt;
    /// use context_local::Local;
    /// use rayon::prelude::*;
    ///
    /// static REQUEST_ID: Local<u64> = Local::named("REQUEST_ID").inheritable();
    ///
    /// REQUEST_ID.set(7);
    /// let ids: Vec<_> = (0..100u64)
    ///     .into_par_iter()
    ///     .in_child_contexts()
    ///     .map(|i| REQUEST_ID.with(|id| id * 1000 + i))
    ///     .collect();
    /// assert_eq!(ids[42], 7042);
    /// ```
    #[track_caller]
    fn in_child_contexts(self) -> InChildContexts<Self> {
        InChildContexts {
            base: self,
            snapshot: Snapshot::capture(),
            span: CurrentSpan::capture(),
        }
    }
}

impl<I: ParallelIterator> ParallelIteratorExt for I {}

/// The iterator of [`ParallelIteratorExt::in_child_contexts`].
///
/// # Examples
///
/// ```
/// use context_local::rayon::{InChildContexts, ParallelIteratorExt};
/// use rayon::prelude::*;
///
/// let it: InChildContexts<_> = (0..4).into_par_iter().in_child_contexts();
/// assert_eq!(it.sum::<i32>(), 6);
/// ```
#[derive(Debug, Clone)]
#[must_use = "iterator adaptors are lazy"]
pub struct InChildContexts<I> {
    base: I,
    snapshot: Snapshot,
    span: CurrentSpan,
}

impl<I: ParallelIterator> ParallelIterator for InChildContexts<I> {
    type Item = I::Item;

    fn drive_unindexed<C>(self, consumer: C) -> C::Result
    where
        C: UnindexedConsumer<Self::Item>,
    {
        let consumer = InChildConsumer {
            base: consumer,
            snapshot: &self.snapshot,
            span: &self.span,
        };
        self.base.drive_unindexed(consumer)
    }
}

/// Hands items on to `base`, each in a fresh fork — and every other call into `base` that can
/// run the caller's code too: `map_init`'s `init`, `fold`'s and `reduce`'s identities and
/// combining ops, the `Clone` of `map_with`'s value (in `split_at`), a folder's `complete`
/// (where a `fold`'s accumulator or `map_init`'s state is dropped). Run outside a fork, they
/// would run in the pool thread's own context: missing the caller's values, and leaving
/// what they bind there for the next job on that thread.
struct InChildConsumer<'s, C> {
    base: C,
    snapshot: &'s Snapshot,
    span: &'s CurrentSpan,
}

impl<'s, T, C: Consumer<T>> Consumer<T> for InChildConsumer<'s, C> {
    type Folder = InChildFolder<'s, C::Folder>;
    type Reducer = InChildReducer<'s, C::Reducer>;
    type Result = C::Result;

    fn split_at(self, index: usize) -> (Self, Self, Self::Reducer) {
        let (snapshot, span) = (self.snapshot, self.span);
        let base = self.base;
        let (left, right, reducer) = snapshot.run(move || base.split_at(index));
        let left = InChildConsumer {
            base: left,
            snapshot,
            span,
        };
        let right = InChildConsumer {
            base: right,
            snapshot,
            span,
        };
        let reducer = InChildReducer {
            base: reducer,
            snapshot,
        };
        (left, right, reducer)
    }

    fn into_folder(self) -> Self::Folder {
        let base = self.base;
        InChildFolder {
            base: self.snapshot.run(move || base.into_folder()),
            snapshot: self.snapshot,
            span: self.span,
        }
    }

    fn full(&self) -> bool {
        self.base.full()
    }
}

impl<T, C: UnindexedConsumer<T>> UnindexedConsumer<T> for InChildConsumer<'_, C> {
    fn split_off_left(&self) -> Self {
        InChildConsumer {
            base: self.snapshot.run(|| self.base.split_off_left()),
            snapshot: self.snapshot,
            span: self.span,
        }
    }

    fn to_reducer(&self) -> Self::Reducer {
        InChildReducer {
            base: self.snapshot.run(|| self.base.to_reducer()),
            snapshot: self.snapshot,
        }
    }
}

/// Runs `base`'s combining step (`reduce`'s op, `fold`'s partial results joined) in a fresh
/// fork.
struct InChildReducer<'s, R> {
    base: R,
    snapshot: &'s Snapshot,
}

impl<T, R: Reducer<T>> Reducer<T> for InChildReducer<'_, R> {
    fn reduce(self, left: T, right: T) -> T {
        let base = self.base;
        self.snapshot.run(move || base.reduce(left, right))
    }
}

struct InChildFolder<'s, F> {
    base: F,
    snapshot: &'s Snapshot,
    span: &'s CurrentSpan,
}

impl<T, F: Folder<T>> Folder<T> for InChildFolder<'_, F> {
    type Result = F::Result;

    fn consume(self, item: T) -> Self {
        let (base, span) = (self.base, self.span);
        InChildFolder {
            base: self
                .snapshot
                .run(move || span.run(move || base.consume(item))),
            snapshot: self.snapshot,
            span,
        }
    }

    fn complete(self) -> F::Result {
        let base = self.base;
        self.snapshot.run(move || base.complete())
    }

    fn full(&self) -> bool {
        self.base.full()
    }
}

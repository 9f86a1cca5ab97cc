//! loom models of the runtime's concurrent paths, inside the crate so they can end a modelled
//! thread's context without a public hook. Run with `scripts/loom` (which sets `--cfg loom` and
//! bounds the preemptions). Every value counts its drops: each model checks
//! that each value is dropped exactly once, never early, in every interleaving loom explores,
//! and loom itself checks every payload access for data races.

use crate::{Context, Local, LocalStack};
use loom::thread;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

/// A value that counts its drops (in a plain atomic: it is an observer, not part of the model).
struct Counted {
    drops: Arc<AtomicUsize>,
    n: u32,
}

impl Counted {
    fn new(drops: &Arc<AtomicUsize>, n: u32) -> Self {
        Self {
            drops: drops.clone(),
            n,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
    }
}

/// Runs `f` in every interleaving loom explores (bounded by `LOOM_MAX_PREEMPTIONS`, default 2).
/// The model's main thread exits (tears its context down) at the end, like every thread.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(move || {
        f();
        crate::context::loom_thread_exit();
    });
}

/// A modelled thread whose context is torn down when `f` returns, before `join` completes.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let out = f();
        crate::context::loom_thread_exit();
        out
    })
}

/// A thread's first use of a local (slot creation, index assignment, thread context creation,
/// registration) and its exit (teardown) race with iteration from another context.
#[test]
fn first_use_and_thread_exit_race_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let t = {
            let (local, drops) = (local.clone(), drops.clone());
            spawn(move || local.set(Counted::new(&drops, 1)))
        };
        let mut seen = Vec::new();
        local.for_each(|_, v| seen.push(v.n));
        assert!(seen.is_empty() || seen == [1], "{seen:?}");
        t.join().unwrap();
        assert_eq!(
            drops.load(SeqCst),
            1,
            "the thread's value is dropped at its exit"
        );
        assert_eq!(local.contexts(), 0);
    });
}

/// Two threads use two locals for the first time at once: index assignment and the context
/// registry race with each other.
#[test]
fn first_uses_in_two_contexts_race() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let a = Arc::new(Local::<Counted>::named("A"));
        let b = Arc::new(LocalStack::<Counted>::named("B"));
        let spawn = |n| {
            let (a, b, drops) = (a.clone(), b.clone(), drops.clone());
            spawn(move || {
                a.set(Counted::new(&drops, n));
                b.push(Counted::new(&drops, n + 10));
                assert_eq!(a.with(|v| v.n), n);
                assert_eq!(b.with_top(|v| v.n), Some(n + 10));
            })
        };
        let (t1, t2) = (spawn(1), spawn(2));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(drops.load(SeqCst), 4);
        assert_eq!((a.contexts(), b.contexts()), (0, 0));
    });
}

/// Release on last pop (and a value's drop) races with iteration of the stack.
#[test]
fn last_pop_races_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let t = {
            let (stack, drops) = (stack.clone(), drops.clone());
            spawn(move || {
                stack.push(Counted::new(&drops, 1));
                let v = stack.pop().expect("own value");
                assert_eq!(v.n, 1);
                drop(v);
                assert_eq!(drops.load(SeqCst), 1, "dropped by us, not before");
            })
        };
        stack.for_each(|_, items| {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].n, 1, "a reader never sees a value being dropped");
        });
        t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(stack.contexts(), 0);
    });
}

/// An owner mutating in place (`with_mut`) races with a reader: loom checks they never overlap.
#[test]
fn with_mut_races_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let ctx = Context::new();
        ctx.run(|| local.set(Counted::new(&drops, 0)));
        let t = {
            let local = local.clone();
            spawn(move || {
                ctx.run(|| local.with_mut(|v| v.n += 1));
                ctx
            })
        };
        local.for_each(|_, v| assert!(v.n <= 1));
        let ctx = t.join().unwrap();
        assert_eq!(ctx.run(|| local.with(|v| v.n)), 1);
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 1);
    });
}

/// A context dropped on one thread frees its id, which another thread's new context reuses,
/// while a third party iterates: no context ever sees another's value.
#[test]
fn recycled_ids_race_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let spawn = |n| {
            let (local, drops) = (local.clone(), drops.clone());
            spawn(move || {
                let ctx = Context::new();
                ctx.run(|| {
                    assert!(!local.is_set(), "a new context saw a value");
                    local.set(Counted::new(&drops, n));
                });
                drop(ctx);
            })
        };
        let (t1, t2) = (spawn(1), spawn(2));
        local.for_each(|_, v| assert!(v.n == 1 || v.n == 2));
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(drops.load(SeqCst), 2);
        assert_eq!(local.contexts(), 0);
    });
}

/// An explicit context moves to another thread, is entered there, and comes back to be dropped,
/// while its values are iterated from the original thread.
#[test]
fn explicit_context_entered_and_dropped_across_threads() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let ctx = Context::new();
        ctx.run(|| stack.push(Counted::new(&drops, 1)));
        let t = {
            let (stack, drops) = (stack.clone(), drops.clone());
            spawn(move || {
                ctx.run(|| {
                    assert_eq!(stack.with_top(|v| v.n), Some(1));
                    stack.push(Counted::new(&drops, 2));
                });
                ctx
            })
        };
        stack.for_each(|_, items| assert!(!items.is_empty() && items[0].n == 1));
        let ctx = t.join().unwrap();
        assert_eq!(ctx.run(|| stack.len()), 2);
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 2);
        assert_eq!(stack.contexts(), 0);
    });
}

/// A `StackGuard` dropped on the thread that pushed, while another thread drops the guard's
/// context: whichever comes first, the value is dropped exactly once, neither side panics, and
/// nothing is left (the owner state machine: `Removing` vs `Dropping`).
#[test]
fn foreign_guard_drop_races_with_context_drop() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let ctx = Context::new();
        let guard = ctx.run(|| stack.enter(Counted::new(&drops, 1)));
        let t = spawn(move || drop(ctx));
        drop(guard);
        t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(stack.contexts(), 0);
    });
}

/// A `StackGuard` dropped from afar while another thread enters the context: either the guard
/// removes the value first (claim) or the removal is queued and the entering thread applies it
/// before running anything there. Either way the entered thread never sees the value once it
/// has observed the guard dropped, and the value is dropped once.
#[test]
fn foreign_guard_drop_races_with_enter() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let ctx = Context::new();
        ctx.run(|| stack.push(Counted::new(&drops, 0)));
        let guard = ctx.run(|| stack.enter(Counted::new(&drops, 1)));
        let t = {
            let stack = stack.clone();
            spawn(move || {
                let depth = ctx.run(|| stack.len());
                assert!(depth == 1 || depth == 2, "{depth}");
                ctx
            })
        };
        drop(guard);
        let ctx = t.join().unwrap();
        // Every removal is applied by now: by the guard, or by the next entry.
        assert_eq!(ctx.run(|| stack.len()), 1);
        assert_eq!(drops.load(SeqCst), 1);
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 2);
    });
}

/// A `StackGuard` dropped from afar while another thread iterates its stack: the removal never
/// waits for the reader (it is queued when a reader is there) and the reader never sees a value
/// being removed.
#[test]
fn foreign_guard_drop_races_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let ctx = Context::new();
        let guard = ctx.run(|| stack.enter(Counted::new(&drops, 1)));
        let t = {
            let stack = stack.clone();
            spawn(move || stack.for_each(|_, items| assert_eq!(items[0].n, 1)))
        };
        drop(guard);
        t.join().unwrap();
        assert_eq!(ctx.run(|| stack.len()), 0);
        assert_eq!(drops.load(SeqCst), 1);
    });
}

/// A task's context (`InContext`) is polled on one thread, moved, polled and dropped on
/// another, while a third iterates: the task's value is seen only as the task left it, the
/// threads' own contexts never see it, and it is dropped once, with the task.
#[test]
fn task_context_polled_on_two_threads_races_with_for_each() {
    use crate::FutureExt;
    use std::future::Future;
    use std::task::{Context as Cx, Poll, Waker};

    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let task = {
            let (local, drops) = (local.clone(), drops.clone());
            let mut polls = 0;
            std::future::poll_fn(move |_| {
                polls += 1;
                if polls == 1 {
                    local.set(Counted::new(&drops, 1));
                    return Poll::Pending;
                }
                assert_eq!(local.with(|v| v.n), 1, "the task's value followed it");
                Poll::Ready(())
            })
            .in_new_context()
        };
        let poll = |task: &mut Pin<Box<dyn Future<Output = ()> + Send>>| {
            task.as_mut().poll(&mut Cx::from_waker(Waker::noop()))
        };
        let mut task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(task);
        let t = {
            let local = local.clone();
            spawn(move || {
                assert!(poll(&mut task).is_pending());
                assert!(!local.is_set(), "the thread's own context never sees it");
                task
            })
        };
        local.for_each(|_, v| assert_eq!(v.n, 1));
        let mut task = t.join().unwrap();
        let t2 = spawn(move || {
            assert!(poll(&mut task).is_ready());
            drop(task);
        });
        t2.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1);
        assert_eq!(local.contexts(), 0);
    });
}

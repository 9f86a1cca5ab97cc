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
    model_bounded(usize::MAX, f);
}

/// [`model`] with at most `max` preemptions, for models whose threads poll (each poll is a
/// branch loom explores: beyond 3 preemptions they take hours).
fn model_bounded(max: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let bound = builder.preemption_bound.unwrap_or(2).min(max);
    builder.preemption_bound = Some(bound);
    // A reader that comes back to a value being written polls (yielding each round), and a
    // long write under a low preemption bound makes for many rounds: more than loom's default
    // 1,000 branches in one execution, without any livelock.
    builder.max_branches = 20_000;
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

/// The holder binds locals past the table's inline cells, growing their map (replaced, the
/// old one kept), while another thread's `for_each` looks one of them up in whichever map it
/// loaded: it finds the value, and every value is dropped once with the context.
#[test]
fn overflow_map_growth_races_with_for_each() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let locals: Arc<Vec<Local<Counted>>> = Arc::new((0..12).map(|_| Local::new()).collect());
        let ctx = Context::new();
        // The inline cells and three past them: a map of four entries, full.
        ctx.run(|| (0..11).for_each(|n| locals[n].set(Counted::new(&drops, n as u32))));
        let t = {
            let locals = locals.clone();
            spawn(move || {
                let mut seen = Vec::new();
                locals[8].for_each(|_, v| seen.push(v.n));
                assert_eq!(seen, [8]);
            })
        };
        // The fourth past the inline cells replaces the map.
        ctx.run(|| locals[11].set(Counted::new(&drops, 11)));
        t.join().unwrap();
        let sum: u32 = ctx.run(|| locals.iter().map(|l| l.with(|v| v.n)).sum());
        assert_eq!(sum, (0..12).sum());
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 12);
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

/// A `ContextGuard` dropped inside `with` of its own context's value keeps the context claimed
/// until that borrow ends (the deferred release): another thread's `try_enter` fails until then,
/// and once it gets in, its `set` never overlaps the first thread's read (loom checks every
/// payload access).
#[test]
fn deferred_release_races_with_try_enter() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let ctx = Arc::new(Context::new());
        ctx.run(|| local.set(Counted::new(&drops, 1)));
        let t = {
            let (ctx, local, drops) = (ctx.clone(), local.clone(), drops.clone());
            spawn(move || match ctx.try_enter() {
                Ok(g) => {
                    local.set(Counted::new(&drops, 2));
                    drop(g);
                    true
                }
                Err(_) => false,
            })
        };
        let read = ctx.try_enter().ok().map(|g| {
            let mut g = Some(g);
            local.with(|v| {
                drop(g.take());
                v.n
            })
        });
        let set = t.join().unwrap();
        // Either order of the two claims is fine; what may not happen is the other thread's
        // write while this read runs, which loom reports as a race on the payload.
        assert!(matches!(read, None | Some(1 | 2)), "{read:?}");
        let now = ctx.run(|| local.with(|v| v.n));
        assert_eq!(now, if set { 2 } else { 1 });
        drop(ctx);
        assert_eq!(drops.load(SeqCst), if set { 2 } else { 1 });
    });
}

/// Accesses inside `Context::run` count nothing in the context's holds (its guard is out of
/// `f`'s reach, so the context is entered unguarded and `with`/`with_mut` take the uncounted
/// fast path): the claim still ends only after `f`, so another thread that tries to enter
/// meanwhile is refused or gets in after `f` — its read then sees the `with_mut`'s result and
/// its `set` never overlaps the first thread's accesses (loom checks every payload access);
/// each value is dropped once.
#[test]
fn uncounted_accesses_in_run_race_with_another_threads_enter_and_set() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let ctx = Arc::new(Context::new());
        ctx.run(|| local.set(Counted::new(&drops, 1)));
        let (t, n) = ctx.run(|| {
            let t = {
                let (ctx, local, drops) = (ctx.clone(), local.clone(), drops.clone());
                spawn(move || {
                    let g = ctx.try_enter().ok()?;
                    let n = local.with(|v| v.n);
                    local.set(Counted::new(&drops, 2));
                    drop(g);
                    Some(n)
                })
            };
            let n = local.with(|v| v.n);
            local.with_mut(|v| v.n += 10);
            (t, n)
        });
        assert_eq!(n, 1);
        let other = t.join().unwrap();
        assert!(matches!(other, None | Some(11)), "{other:?}");
        let now = ctx.run(|| local.with(|v| v.n));
        assert_eq!(now, if other.is_some() { 2 } else { 11 });
        drop(ctx);
        assert_eq!(drops.load(SeqCst), if other.is_some() { 2 } else { 1 });
    });
}

/// A `StackGuard` dropped from afar while another thread iterates its stack: a reader on the
/// slot makes the removal wait for it outside the `Removing` claim and retry (the context stays
/// enterable meanwhile), and the reader never sees a value being removed.
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

/// A `Local::scope` whose body leaves the context it bound in (drops its `ContextGuard`), while
/// another thread enters that context: the scope's end either claims the context and restores
/// the previous value there at once, or — the other thread holds it — queues the restore for
/// it, done on the context's next entry before anything else runs. The other thread sees the
/// scoped value or the restored one, never a payload being written (loom checks every
/// access); afterwards the previous value is back, and each value is dropped exactly once.
#[test]
fn scope_restore_elsewhere_races_with_enter() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Arc::new(Local::<Counted>::named("L"));
        let ctx = Arc::new(Context::new());
        let g = ctx.enter();
        local.set(Counted::new(&drops, 1));
        let t = {
            let (local, ctx) = (local.clone(), ctx.clone());
            local.clone().scope(Counted::new(&drops, 2), move || {
                drop(g);
                spawn(move || ctx.run(|| local.with(|v| v.n)))
            })
        };
        let seen = t.join().unwrap();
        assert!(seen == 1 || seen == 2, "{seen}");
        assert_eq!(
            ctx.run(|| local.with(|v| v.n)),
            1,
            "the previous value is back"
        );
        assert_eq!(drops.load(SeqCst), 1, "the scoped value dropped once");
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 2);
    });
}

/// The same for a stack scope future whose poll leaves the context it pushed into: its
/// element is removed there (claimed or queued), never from another context, and dropped once.
#[test]
fn stack_scope_end_elsewhere_races_with_enter() {
    use std::future::Future;
    use std::task::{Context as Cx, Waker};

    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let stack = Arc::new(LocalStack::<Counted>::named("S"));
        let ctx = Arc::new(Context::new());
        let g = ctx.enter();
        stack.push(Counted::new(&drops, 1));
        let inner = {
            let (stack, ctx) = (stack.clone(), ctx.clone());
            async move {
                drop(g);
                spawn(move || ctx.run(|| stack.len()))
            }
        };
        let mut fut = Box::pin(stack.scope_future(Counted::new(&drops, 2), inner));
        let t = match fut.as_mut().poll(&mut Cx::from_waker(Waker::noop())) {
            std::task::Poll::Ready(t) => t,
            std::task::Poll::Pending => unreachable!(),
        };
        drop(fut);
        let seen = t.join().unwrap();
        assert!(seen == 1 || seen == 2, "{seen}");
        assert!(
            stack.is_empty(),
            "never pushed into this thread's own context"
        );
        assert_eq!(
            ctx.run(|| stack.len()),
            1,
            "exactly the scope's element removed"
        );
        assert_eq!(drops.load(SeqCst), 1);
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 2);
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

/// Inheritance: values shared by a context's cached capture, snapshots and forks, dropped and
/// read on several threads.
mod inherit {
    use super::{model, spawn};
    use crate::{Context, Local, LocalStack, Snapshot};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    /// A value that counts its clones and drops (plain atomics: observers, not the model).
    struct Shared {
        made: Arc<AtomicUsize>,
        drops: Arc<AtomicUsize>,
        n: u32,
    }

    impl Shared {
        fn new(made: &Arc<AtomicUsize>, drops: &Arc<AtomicUsize>, n: u32) -> Self {
            made.fetch_add(1, SeqCst);
            Self {
                made: made.clone(),
                drops: drops.clone(),
                n,
            }
        }
    }

    impl Clone for Shared {
        fn clone(&self) -> Self {
            Self::new(&self.made, &self.drops, self.n)
        }
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            self.drops.fetch_add(1, SeqCst);
        }
    }

    fn counters() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)))
    }

    /// A captured value shared by the parent's cached capture, a snapshot and a fork: the
    /// parent drops its context and the snapshot on one thread while a child thread forks,
    /// reads and drops the fork. The shared copy is dropped exactly once, by whichever side
    /// lets go last, and never read after.
    #[test]
    fn shared_value_dropped_by_parent_and_child_at_once() {
        model(|| {
            let (made, drops) = counters();
            let local = Arc::new(Local::<Shared>::named("L").inheritable());
            let parent = Context::new();
            parent.run(|| local.set(Shared::new(&made, &drops, 1)));
            let snapshot = parent.run(Snapshot::capture);
            assert_eq!(made.load(SeqCst), 2, "the capture cloned the value once");
            let t = {
                let (local, snapshot) = (local.clone(), snapshot.clone());
                spawn(move || {
                    let fork = snapshot.fork();
                    drop(snapshot);
                    assert_eq!(fork.run(|| local.with(|v| v.n)), 1);
                    drop(fork);
                })
            };
            drop(snapshot);
            drop(parent);
            t.join().unwrap();
            assert_eq!(made.load(SeqCst), 2);
            assert_eq!(drops.load(SeqCst), 2, "each value dropped once");
            assert_eq!(local.contexts(), 0);
        });
    }

    /// As above, with a stack, and the child writing (copy-on-write: its first write copies
    /// the shared value, from the shared copy the parent is letting go of).
    #[test]
    fn shared_stack_copied_by_a_child_while_the_parent_drops_it() {
        model(|| {
            let (made, drops) = counters();
            let stack = Arc::new(LocalStack::<Shared>::named("S").inheritable());
            let parent = Context::new();
            parent.run(|| stack.push(Shared::new(&made, &drops, 1)));
            let fork = parent.run(Context::child);
            let t = {
                let stack = stack.clone();
                spawn(move || {
                    let popped = fork.run(|| stack.pop()).expect("inherited");
                    assert_eq!(popped.n, 1);
                    drop(popped);
                    assert!(fork.run(|| stack.is_empty()));
                    drop(fork);
                })
            };
            drop(parent);
            t.join().unwrap();
            assert_eq!(
                made.load(SeqCst),
                3,
                "original, captured copy, the fork's copy"
            );
            assert_eq!(drops.load(SeqCst), 3, "each value dropped once");
            assert_eq!(stack.contexts(), 0);
        });
    }

    /// A parent thread writes its inheritable value and captures again (rebuilding its cached
    /// capture, dropping the old one) while another thread reads from a fork of the earlier
    /// capture and iterates the local: the fork keeps seeing the earlier value, the iteration
    /// sees each context's value whole (the parent's old or new, the fork's inherited one),
    /// and the new capture sees the new value. Every value is dropped once.
    #[test]
    fn capture_races_with_reads_of_an_earlier_fork_and_for_each() {
        model(|| {
            let (made, drops) = counters();
            let local = Arc::new(Local::<Shared>::named("L").inheritable());
            let parent = Context::new();
            parent.run(|| local.set(Shared::new(&made, &drops, 1)));
            let fork = parent.run(Context::child);
            let (parent_id, fork_id) = (parent.id(), fork.id());
            let t = {
                let (local, made, drops) = (local.clone(), made.clone(), drops.clone());
                spawn(move || {
                    let later = parent.run(|| {
                        local.with_mut(|v| v.n = 2);
                        local.set(Shared::new(&made, &drops, 3));
                        Snapshot::capture()
                    });
                    assert_eq!(later.run(|| local.with(|v| v.n)), 3);
                    drop(later);
                    parent
                })
            };
            assert_eq!(fork.run(|| local.with(|v| v.n)), 1);
            local.for_each(|id, v| {
                if id == fork_id {
                    assert_eq!(v.n, 1, "the fork's inherited value");
                } else if id == parent_id {
                    assert!(matches!(v.n, 1..=3), "{}", v.n);
                } else {
                    assert_eq!(v.n, 3, "a fork of the later capture");
                }
            });
            let parent = t.join().unwrap();
            assert_eq!(fork.run(|| local.with(|v| v.n)), 1);
            drop(fork);
            drop(parent);
            assert_eq!(
                made.load(SeqCst),
                drops.load(SeqCst),
                "each value dropped once"
            );
            assert_eq!(local.contexts(), 0);
        });
    }

    /// A stack variant: the parent pushes and captures while a fork of the earlier capture
    /// pops its inherited element (a copy) and another iteration runs on this thread.
    #[test]
    fn capture_races_with_a_forks_copy_on_write_and_for_each() {
        model(|| {
            let (made, drops) = counters();
            let stack = Arc::new(LocalStack::<Shared>::named("S").inheritable());
            let parent = Context::new();
            parent.run(|| stack.push(Shared::new(&made, &drops, 1)));
            let fork = parent.run(Context::child);
            let t = {
                let (stack, made, drops) = (stack.clone(), made.clone(), drops.clone());
                spawn(move || {
                    let later = parent.run(|| {
                        stack.push(Shared::new(&made, &drops, 2));
                        Snapshot::capture()
                    });
                    assert_eq!(later.run(|| stack.len()), 2);
                    parent
                })
            };
            let popped = fork.run(|| stack.pop()).map(|v| v.n);
            assert_eq!(popped, Some(1));
            stack.for_each(|_, items| {
                assert!(!items.is_empty() && items[0].n == 1, "the parent's own");
            });
            let parent = t.join().unwrap();
            assert_eq!(parent.run(|| stack.len()), 2);
            drop(parent);
            drop(fork);
            assert_eq!(
                made.load(SeqCst),
                drops.load(SeqCst),
                "each value dropped once"
            );
            assert_eq!(stack.contexts(), 0);
        });
    }

    /// A fork holds the last reference to a captured value (its parent and the snapshot are
    /// gone) and is dropped on one thread while another iterates the local and reads the
    /// fork's inherited value: the value is read whole or not at all, and dropped once, by
    /// whichever thread lets go of the fork's storage last.
    /// `Snapshot::run` lends its frame to the fork (no reference counted): a reader on
    /// another thread reads the fork's inherited value while the run ends and the snapshot is
    /// dropped right after; the reader never reads a freed frame, and the value is dropped
    /// once, by whoever lets go of it last among the snapshot and the parent.
    #[test]
    fn run_lends_its_frame_while_for_each_reads_the_fork() {
        model(|| {
            let (made, drops) = counters();
            let local = Arc::new(Local::<Shared>::named("L").inheritable());
            let snapshot = {
                let parent = Context::new();
                parent.run(|| local.set(Shared::new(&made, &drops, 1)));
                parent.run(Snapshot::capture)
            };
            let t = {
                let local = local.clone();
                spawn(move || {
                    snapshot.run(|| assert_eq!(local.with(|v| v.n), 1));
                    drop(snapshot);
                })
            };
            local.for_each(|_, v| assert_eq!(v.n, 1));
            t.join().unwrap();
            assert_eq!(
                drops.load(SeqCst),
                made.load(SeqCst),
                "each value dropped once"
            );
            assert_eq!(local.contexts(), 0);
        });
    }

    /// A value whose `Clone` captures the current context (issue 17, fault 4).
    struct Nests {
        inner: Shared,
    }

    impl Clone for Nests {
        fn clone(&self) -> Self {
            let _ = Snapshot::capture(); // panics: this very value is being cloned
            Nests {
                inner: self.inner.clone(),
            }
        }
    }

    /// Capture re-entrancy: a capture whose `Clone` captures again panics naming the local
    /// (never recursing, never returning the stale cache), while another thread iterates both
    /// locals, reading the values being cloned. The slot's shared borrow and the capture flags
    /// are restored on unwind: the parent's values stay readable there, the next capture is
    /// current, and each value (the clones made by the aborted capture included) goes once.
    ///
    /// Bounded at 4 preemptions: a write that finds a `for_each` of its local running gives up
    /// its inline fast path and starts again on the full one, and at 5 the interleavings of
    /// that retry with the capture's unwind ran past 25 minutes (4: under 2 minutes).
    #[test]
    fn nested_capture_unwinds_while_for_each_reads_the_values() {
        super::model_bounded(4, || {
            let (made, drops) = counters();
            let a = Arc::new(Local::<Shared>::named("A").inheritable());
            let b = Arc::new(Local::<Nests>::named("B").inheritable());
            let parent = Context::new();
            parent.run(|| {
                a.set(Shared::new(&made, &drops, 1));
                b.set(Nests {
                    inner: Shared::new(&made, &drops, 2),
                });
            });
            let t = {
                let (a, b) = (a.clone(), b.clone());
                spawn(move || {
                    a.for_each(|_, v| assert!(v.n == 1 || v.n == 3));
                    b.for_each(|_, v| assert_eq!(v.inner.n, 2));
                })
            };
            let msg = parent.run(|| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(Snapshot::capture))
                    .map(drop)
                    .map_err(|p| p.downcast::<String>().map(|s| *s).unwrap_or_default())
            });
            assert!(matches!(&msg, Err(m) if m.contains("`B`")), "{msg:?}");
            parent.run(|| {
                a.with_mut(|v| v.n = 3);
                drop(b.take()); // its `Clone` would panic again
                let s = Snapshot::capture();
                assert_eq!(s.run(|| a.with(|v| v.n)), 3, "a stale capture");
            });
            t.join().unwrap();
            drop(parent);
            assert_eq!(
                drops.load(SeqCst),
                made.load(SeqCst),
                "each value dropped once"
            );
        });
    }

    /// Fork borrow marks: a fork's `with` of an inherited value lends it; a `ContextGuard`
    /// dropped inside defers the fork's release to the lend's end, and another thread entering
    /// the fork meanwhile is refused — once it gets in, the borrow is over — and then writes it
    /// (copy-on-write) while a reader iterates. Each value goes once.
    #[test]
    fn fork_lend_defers_its_release_against_another_threads_enter() {
        use std::sync::atomic::AtomicBool;
        model(|| {
            let (made, drops) = counters();
            let local = Arc::new(Local::<Shared>::named("L").inheritable());
            let fork = {
                let parent = Context::new();
                parent.run(|| local.set(Shared::new(&made, &drops, 1)));
                Arc::new(parent.run(Context::child))
            };
            let inside = Arc::new(AtomicBool::new(false));
            let t = {
                let (local, fork, inside) = (local.clone(), fork.clone(), inside.clone());
                spawn(move || {
                    if let Ok(_g) = fork.try_enter() {
                        assert!(!inside.load(SeqCst), "entered inside the other's borrow");
                        local.with_mut(|v| v.n = 2);
                    }
                    local.for_each(|_, v| assert!(v.n == 1 || v.n == 2));
                })
            };
            if let Ok(guard) = fork.try_enter() {
                let mut guard = Some(guard);
                local.with(|v| {
                    inside.store(true, SeqCst);
                    drop(guard.take());
                    assert!(v.n == 1 || v.n == 2, "{}", v.n);
                    inside.store(false, SeqCst);
                });
            }
            t.join().unwrap();
            drop(fork);
            assert_eq!(
                drops.load(SeqCst),
                made.load(SeqCst),
                "each value dropped once"
            );
        });
    }

    #[test]
    fn fork_holding_the_last_copy_dropped_while_for_each_reads_it() {
        model(|| {
            let (made, drops) = counters();
            let local = Arc::new(Local::<Shared>::named("L").inheritable());
            let fork = {
                let parent = Context::new();
                parent.run(|| local.set(Shared::new(&made, &drops, 1)));
                parent.run(Context::child)
            };
            assert_eq!(drops.load(SeqCst), 1, "the parent's own went with it");
            let t = spawn(move || drop(fork));
            local.for_each(|_, v| assert_eq!(v.n, 1));
            t.join().unwrap();
            assert_eq!(made.load(SeqCst), 2);
            assert_eq!(drops.load(SeqCst), 2, "each value dropped once");
            assert_eq!(local.contexts(), 0);
        });
    }
}

/// Issue 17, fault 9: a context dropped inside `for_each`'s callback on that context's own value
/// cannot drop it then; the dropper's `for_each` finishes the teardown when it returns, with the
/// context current — never another thread's iteration that lets go of the context last (here
/// one iterating `M`, which the value's `Drop` sets: it would panic there).
#[test]
fn context_dropped_inside_for_each_on_its_value_races_with_another_for_each() {
    use crate::ContextId;
    use std::sync::Mutex;

    struct Sees {
        seen: Arc<Mutex<Vec<Option<ContextId>>>>,
        m: Arc<Local<u32>>,
    }

    impl Drop for Sees {
        fn drop(&mut self) {
            self.seen.lock().unwrap().push(ContextId::try_current());
            self.m.set(1);
        }
    }

    model(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::new(Local::<Sees>::named("L"));
        let m = Arc::new(Local::<u32>::named("M"));
        m.set(0);
        let ctx = Context::new();
        let ctx_id = ctx.id();
        ctx.run(|| {
            l.set(Sees {
                seen: seen.clone(),
                m: m.clone(),
            })
        });
        let t = {
            let m = m.clone();
            spawn(move || {
                m.for_each(|_, v| assert!(*v <= 1)); // 1: set in `ctx` by the Drop, before it is gone
                m.is_set()
            })
        };
        let mut ctx = Some(ctx);
        l.for_each(|_, _| drop(ctx.take()));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some(ctx_id)],
            "dropped once, in its context"
        );
        assert!(
            !t.join().unwrap(),
            "the Drop bound M in the reader's context"
        );
        assert_eq!(m.get(), Some(0));
    });
}

/// A holder scanning its slots as it leaves a context (`ContextGuard` drop) races with a
/// non-`static` local being dropped on another thread, which frees that local's slot in the
/// context: the scan/free handshake keeps the slot alive while it is scanned, and the value is
/// dropped exactly once.
#[test]
fn leaving_a_context_races_with_dropping_a_local() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let local = Local::<Counted>::named("L");
        let ctx = Context::new();
        ctx.run(|| local.set(Counted::new(&drops, 1)));
        let t = spawn(move || {
            drop(ctx.enter());
            ctx
        });
        drop(local);
        let ctx = t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1, "dropped with its local");
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 1);
    });
}

/// The same race where the scan still runs: leaving is O(1) when nothing of the context is
/// borrowed (`CtxInner::holds`), so the context is left inside `with` of another of its values
/// here. The scan that marks that borrow races with a non-`static` local being dropped on
/// another thread; the release waits for the borrow's end; each value is dropped once.
#[test]
fn leaving_a_context_inside_with_races_with_dropping_a_local() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let kept = Arc::new(Local::<Counted>::named("KEPT"));
        let local = Local::<Counted>::named("L");
        let ctx = Arc::new(Context::new());
        ctx.run(|| {
            kept.set(Counted::new(&drops, 1));
            local.set(Counted::new(&drops, 2));
        });
        let t = {
            let (ctx, kept) = (ctx.clone(), kept.clone());
            spawn(move || {
                let g = ctx.enter();
                let n = kept.with(|v| {
                    drop(g);
                    v.n
                });
                assert_eq!(n, 1);
                assert!(!ctx.is_entered(), "released when the borrow ended");
            })
        };
        drop(local);
        t.join().unwrap();
        assert_eq!(drops.load(SeqCst), 1, "the dropped local's value");
        drop(ctx);
        assert_eq!(drops.load(SeqCst), 2);
    });
}

/// The iteration protocol (issue 10): per-slot marks, writers that never wait for a reader
/// (`set`), writers that wait only for the readers of their own slot (`with_mut`, `take`), and
/// the wait that would close a cycle refused.
mod iteration {
    use super::*;

    /// `set` in a context a reader is iterating: the write does not wait (it moves to a fresh
    /// slot), the reader sees the old or the new value whole, and every value is dropped once
    /// — the old one by the context's teardown after the reader has let go of it.
    #[test]
    fn set_races_with_for_each() {
        model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let local = Arc::new(Local::<Counted>::named("L"));
            let ctx = Context::new();
            ctx.run(|| local.set(Counted::new(&drops, 1)));
            let t = {
                let (local, drops) = (local.clone(), drops.clone());
                spawn(move || {
                    ctx.run(|| {
                        local.set(Counted::new(&drops, 2));
                        assert_eq!(local.with(|v| v.n), 2, "the holder sees its write");
                    });
                    ctx
                })
            };
            local.for_each(|_, v| assert!(v.n == 1 || v.n == 2, "{}", v.n));
            let ctx = t.join().unwrap();
            assert_eq!(ctx.run(|| local.with(|v| v.n)), 2);
            drop(ctx);
            assert_eq!(drops.load(SeqCst), 2, "old and new value, each once");
            assert_eq!(local.contexts(), 0);
        });
    }

    /// Two `set`s while a reader may still hold the first value: the second write reuses the
    /// emptied replaced slot only once no reader is on it.
    #[test]
    fn repeated_sets_reuse_replaced_slots_only_when_unread() {
        model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let local = Arc::new(Local::<Counted>::named("L"));
            let ctx = Context::new();
            ctx.run(|| local.set(Counted::new(&drops, 1)));
            let t = {
                let (local, drops) = (local.clone(), drops.clone());
                spawn(move || {
                    ctx.run(|| {
                        local.set(Counted::new(&drops, 2));
                        local.set(Counted::new(&drops, 3));
                    });
                    ctx
                })
            };
            local.for_each(|_, v| assert!((1..=3).contains(&v.n), "{}", v.n));
            let ctx = t.join().unwrap();
            assert_eq!(ctx.run(|| local.with(|v| v.n)), 3);
            drop(ctx);
            assert_eq!(drops.load(SeqCst), 3);
        });
    }

    /// `take` waits for a reader on its slot (writer preference, `WRITING` kept): the reader
    /// never sees the value after it was taken, and the waiting writer is always woken.
    #[test]
    fn take_waits_for_the_reader_of_its_slot() {
        model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let local = Arc::new(Local::<Counted>::named("L"));
            let ctx = Context::new();
            ctx.run(|| local.set(Counted::new(&drops, 1)));
            let t = {
                let (local, drops) = (local.clone(), drops.clone());
                spawn(move || {
                    let v = ctx.run(|| local.take()).expect("bound");
                    drop(v);
                    assert_eq!(drops.load(SeqCst), 1);
                    ctx
                })
            };
            local.for_each(|_, v| {
                assert_eq!(v.n, 1);
                assert_eq!(drops.load(SeqCst), 0, "read after it was dropped");
            });
            drop(t.join().unwrap());
            assert_eq!(drops.load(SeqCst), 1);
        });
    }

    /// A nested `for_each` meets the slot its outer one marks while a writer waits for that
    /// mark (`WRITING` set, not writing): it reads instead of waiting for the writer, which
    /// waits for it.
    #[test]
    fn nested_for_each_reads_a_slot_whose_writer_waits_for_it() {
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
            local.for_each(|_, outer| {
                let n = outer.n;
                local.for_each(|_, inner| assert_eq!(inner.n, n, "changed under a reader"));
            });
            drop(t.join().unwrap());
            assert_eq!(drops.load(SeqCst), 1);
        });
    }

    /// Two threads, each inside a `for_each` callback, each changing (in place) the value the
    /// other one reads: a cycle. At most one of them waits; the other's change is refused
    /// (`AccessErrorKind::Deadlock`), and both iterations finish.
    #[test]
    fn callbacks_changing_what_the_other_reads_do_not_deadlock() {
        model_bounded(3, || {
            let drops = Arc::new(AtomicUsize::new(0));
            let l = Arc::new(Local::<Counted>::named("L"));
            let m = Arc::new(Local::<Counted>::named("M"));
            let side = |read: Arc<Local<Counted>>, write: Arc<Local<Counted>>| {
                let drops = drops.clone();
                let (l, m) = (l.clone(), m.clone());
                spawn(move || {
                    l.set(Counted::new(&drops, 1));
                    m.set(Counted::new(&drops, 1));
                    let mut refused = 0;
                    read.for_each(|_, _| {
                        if let Err(e) = write.try_with_mut(|v| v.n += 1) {
                            assert_eq!(e.kind(), crate::AccessErrorKind::Deadlock);
                            refused += 1;
                        }
                    });
                    refused
                })
            };
            let a = side(l.clone(), m.clone());
            let b = side(m.clone(), l.clone());
            let refused = a.join().unwrap() + b.join().unwrap();
            assert!(refused <= 2);
            assert_eq!(drops.load(SeqCst), 4);
        });
    }
}

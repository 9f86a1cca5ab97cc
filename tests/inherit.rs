//! Inheritance (DESIGN.md, "Inheritance: capture, fork, spawn"): `Local::inheritable`,
//! `LocalStack::inheritable`, `Snapshot` (capture, empty, is_empty, fork, run, wrap),
//! `Context::child`, `FutureExt::in_child_context` and `thread::spawn`.
//!
//! Part 1: what a fork sees, and when the capture happens. Part 2: writes are isolated both
//! ways and between siblings. Part 3: grandchildren. Part 4: every value (the clones made by
//! capture and copy-on-write included) dropped exactly once, when its last holder goes.
//! Part 5: the `Snapshot` API itself. Part 6: iteration across contexts. Part 7: `with_init`,
//! `with_mut`, macros. Part 8: tokio. Part 9: non-`static` locals whose index is recycled.
//! Part 10: foreign guard drops, teardown, a re-entrant or panicking `Clone`. Part 11: a
//! capture inside `Clone`, and a fork's borrow of what it inherited; then captures and
//! copy-on-write while user code drops a local, leaves the context or writes. Part 12: captures
//! that update the last frame.
//!
//! Each test has its own statics, and asserts that need a context with nothing else in it run
//! in an explicit `Context` (the test harness may run several tests on one thread).

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::task::Waker;
use std::thread;
use std::time::Duration;

use common::poll::{block_on, yield_now};
use common::{expect_panic, keep, run_child, within, Counted, Log, Parked, Tally};
use context_local::{
    context_local, context_stack, thread as cl_thread, AccessErrorKind, Context, ContextGuard,
    ContextId, FutureExt, Local, LocalManager, LocalStack, Snapshot,
};

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The `n` of every element of `stack` in the current context, bottom first.
fn ns(stack: &LocalStack<Counted>) -> Vec<u64> {
    // Without writing (a write would copy inherited values): `for_each`, filtered to the
    // current context.
    let mut out = Vec::new();
    let len = stack.len();
    if len == 0 {
        return out;
    }
    let me = ContextId::current();
    stack.for_each(|id, items| {
        if id == me {
            out = items.iter().map(|c| c.n).collect();
        }
    });
    assert_eq!(out.len(), len, "for_each and len disagree");
    out
}

/// The `n` of `local` in the current context, if bound (no clone made).
fn n_of(local: &Local<Counted>) -> Option<u64> {
    local.try_with(|c| c.n).ok()
}

fn assert_send_sync_clone_debug<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}

// ---------------------------------------------------------------------------------------------
// Part 1: what a fork sees, and when the capture happens.

/// A fork sees every inheritable local and stack bound in the captured context as it was at
/// capture (through every reader: `with`, `try_with`, `get`, `is_set`, `top`, `with_top`,
/// `len`, `is_empty`, proxies, `Debug`); non-inheritable locals and stacks start unbound.
#[test]
fn a_fork_sees_inheritable_values_as_captured_and_nothing_else() {
    static USER: Local<String> = Local::named("SEES_USER").inheritable();
    static APPS: LocalStack<String> = LocalStack::named("SEES_APPS").inheritable();
    static SCRATCH: Local<u32> = Local::named("SEES_SCRATCH");
    static PLAIN: LocalStack<u32> = LocalStack::named("SEES_PLAIN");
    static UNSET: Local<u32> = Local::named("SEES_UNSET").inheritable();
    static EMPTIED: LocalStack<u32> = LocalStack::named("SEES_EMPTIED").inheritable();
    static USER_P: context_local::LocalProxy<String> = USER.proxy();
    static APP_P: context_local::LocalProxy<String> = APPS.proxy();

    let parent = Context::new();
    let snapshot = parent.run(|| {
        USER.set("ada".into());
        APPS.push("shop".into());
        APPS.push("admin".into());
        SCRATCH.set(1);
        PLAIN.push(2);
        EMPTIED.push(3);
        assert_eq!(EMPTIED.pop(), Some(3)); // bound once, empty at capture
        Snapshot::capture()
    });
    // The parent changes everything after the capture.
    parent.run(|| {
        USER.set("bob".into());
        APPS.pop();
        APPS.push("later".into());
        UNSET.set(9);
        EMPTIED.push(4);
    });
    let check = || {
        assert_eq!(USER.with(|u| u.clone()), "ada");
        assert_eq!(USER.try_with(|u| u.len()), Ok(3));
        assert_eq!(USER.get().as_deref(), Some("ada"));
        assert!(USER.is_set());
        assert_eq!(APPS.top().as_deref(), Some("admin"));
        assert_eq!(APPS.with_top(|a| a.len()), Some(5));
        assert_eq!(APPS.len(), 2);
        assert!(!APPS.is_empty());
        assert!(USER_P.is_bound());
        assert_eq!(USER_P.to_string(), "ada");
        assert_eq!(APP_P.get().as_deref(), Some("admin"));
        assert!(format!("{USER:?}").contains("ada"), "{USER:?}");
        assert!(format!("{APPS:?}").contains("admin"), "{APPS:?}");
        // Not inheritable: unbound in the fork.
        assert!(!SCRATCH.is_set());
        assert_eq!(
            SCRATCH.try_with(|v| *v).unwrap_err().kind(),
            AccessErrorKind::Unbound
        );
        assert!(PLAIN.is_empty());
        assert_eq!(PLAIN.top(), None);
        // Inheritable but unbound (or empty) at capture.
        assert!(!UNSET.is_set());
        assert!(EMPTIED.is_empty());
        assert_eq!(EMPTIED.len(), 0);
    };
    snapshot.run(check);
    let fork = snapshot.fork();
    fork.run(check);
    fork.run(check); // entering again changes nothing
    std::thread::spawn(move || {
        snapshot.run(check); // on another thread too
        fork.run(check);
    })
    .join()
    .unwrap();
    // The parent has its own, later values.
    parent.run(|| {
        assert_eq!(USER.get().as_deref(), Some("bob"));
        assert_eq!(APPS.top().as_deref(), Some("later"));
        assert_eq!(SCRATCH.get(), Some(1));
        assert_eq!(UNSET.get(), Some(9));
    });
}

/// `Context::child()`: captured at the call; the parent's later writes are invisible.
#[test]
fn context_child_captures_at_the_call() {
    static L: Local<u32> = Local::named("CHILD_AT_CALL").inheritable();
    static S: LocalStack<u32> = LocalStack::named("CHILD_AT_CALL_S").inheritable();
    let parent = Context::new();
    let child = parent.run(|| {
        L.set(1);
        S.push(1);
        let child = Context::child();
        L.set(2);
        S.push(2);
        child
    });
    assert_eq!(
        child.run(|| (L.get(), S.len(), S.top())),
        (Some(1), 1, Some(1))
    );
    assert_eq!(parent.run(|| (L.get(), S.len())), (Some(2), 2));
    // A child of the thread's own context works the same.
    L.set(10);
    let child = Context::child();
    L.set(11);
    assert_eq!(child.run(|| L.get()), Some(10));
    assert_eq!(L.take(), Some(11));
    assert_eq!(child.run(|| L.get()), Some(10));
}

/// `Snapshot::capture` + `wrap`: the job sees the values at capture, wherever and whenever it
/// runs, not those of the worker that runs it, and leaves nothing behind on the worker.
#[test]
fn wrap_runs_the_captured_values_and_leaves_the_worker_alone() {
    static L: Local<u32> = Local::named("WRAP_L").inheritable();
    static S: LocalStack<u32> = LocalStack::named("WRAP_S").inheritable();
    static N: Local<u32> = Local::named("WRAP_N");
    let parent = Context::new();
    let (job, job2) = parent.run(|| {
        L.set(1);
        S.push(1);
        N.set(1);
        let snapshot = Snapshot::capture();
        let job = snapshot.wrap(|| {
            let seen = (L.get(), S.top(), N.get());
            L.set(100);
            S.push(100);
            N.set(100);
            seen
        });
        let job2 = snapshot.wrap(|| (L.get(), S.len(), N.get()));
        L.set(2);
        S.push(2);
        (job, job2)
    });
    let worker = std::thread::spawn(move || {
        L.set(7);
        S.push(7);
        N.set(7);
        let seen = job();
        let seen2 = job2();
        (seen, seen2, L.get(), S.len(), S.top(), N.get())
    });
    let (seen, seen2, wl, wlen, wtop, wn) = worker.join().unwrap();
    assert_eq!(seen, (Some(1), Some(1), None));
    assert_eq!(seen2, (Some(1), 1, None), "each run starts afresh");
    assert_eq!((wl, wlen, wtop, wn), (Some(7), 1, Some(7), Some(7)));
    assert_eq!(
        parent.run(|| (L.get(), S.len(), N.get())),
        (Some(2), 2, Some(1))
    );
}

/// `thread::spawn`: captured at the call; the child thread's writes stay its own.
#[test]
fn thread_spawn_captures_at_the_call() {
    static L: Local<u32> = Local::named("SPAWN_L").inheritable();
    static S: LocalStack<u32> = LocalStack::named("SPAWN_S").inheritable();
    static N: Local<u32> = Local::named("SPAWN_N");
    within(30, || {
        let parent = Context::new();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let child = parent.run(|| {
            L.set(1);
            S.push(1);
            N.set(1);
            let child = cl_thread::spawn(move || {
                go_rx.recv().unwrap(); // the parent has written again by now
                let seen = (L.get(), S.top(), S.len(), N.get());
                L.set(3);
                S.push(3);
                assert_eq!(S.pop(), Some(3));
                assert_eq!(S.pop(), Some(1)); // a clone
                (seen, L.get(), S.len())
            });
            L.set(2);
            S.push(2);
            child
        });
        go_tx.send(()).unwrap();
        let (seen, l, len) = child.join().unwrap();
        assert_eq!(seen, (Some(1), Some(1), 1, None));
        assert_eq!((l, len), (Some(3), 0));
        assert_eq!(
            parent.run(|| (L.get(), S.len(), S.top(), N.get())),
            (Some(2), 2, Some(2), Some(1))
        );
    });
}

/// `in_child_context()`: captured when the future is wrapped, not when it is first polled;
/// the task's writes persist across `.await` in its own context and never reach the parent.
#[test]
fn in_child_context_captures_when_called() {
    static L: Local<u32> = Local::named("TASK_L").inheritable();
    static S: LocalStack<u32> = LocalStack::named("TASK_S").inheritable();
    static N: Local<u32> = Local::named("TASK_N");
    let parent = Context::new();
    let task = parent.run(|| {
        L.set(1);
        S.push(1);
        N.set(1);
        let task = async {
            let seen = (L.get(), S.top(), N.get());
            yield_now().await;
            L.set(5);
            S.push(5);
            yield_now().await;
            (seen, L.get(), S.len())
        }
        .in_child_context();
        L.set(2);
        S.push(2);
        task
    });
    let task_ctx = task.context().id();
    assert_ne!(task_ctx, parent.id());
    // Polled inside another context with its own values: the task sees what it captured.
    let other = Context::new();
    let out = other.run(|| {
        L.set(8);
        N.set(8);
        block_on(task)
    });
    assert_eq!(out, ((Some(1), Some(1), None), Some(5), 2));
    assert_eq!(
        other.run(|| (L.get(), S.len(), N.get())),
        (Some(8), 0, Some(8))
    );
    assert_eq!(
        parent.run(|| (L.get(), S.len(), N.get())),
        (Some(2), 2, Some(1))
    );
}

/// `Snapshot::capture` inside a fork that never wrote captures what it inherited; a child of a
/// child started inside `run` sees the same.
#[test]
fn children_of_a_fork_that_only_inherited_see_the_same() {
    static L: Local<u32> = Local::named("ONLY_INHERITED").inheritable();
    let parent = Context::new();
    let snapshot = parent.run(|| {
        L.set(1);
        Snapshot::capture()
    });
    let inner = snapshot.run(|| {
        let grand = Context::child();
        let via_thread = cl_thread::spawn(|| L.get()).join().unwrap();
        let via_task = block_on(async { L.get() }.in_child_context());
        (grand.run(|| L.get()), via_thread, via_task)
    });
    assert_eq!(inner, (Some(1), Some(1), Some(1)));
}

// ---------------------------------------------------------------------------------------------
// Part 2: writes are isolated both ways and between siblings.

type LocalOp = (&'static str, fn(&Tally) -> Option<u64>);

/// Every write of a `Local` in a fork — `set`, `replace`, `take`, `release`, `with_mut`,
/// `try_with_mut`, `scope` — is visible in that fork only: not in the parent, not in a sibling
/// fork of the same snapshot, not in a later fork of it. The parent's later writes are
/// invisible to the forks, before and after their own first write.
#[test]
fn local_writes_in_a_fork_are_isolated_both_ways_and_between_siblings() {
    static L: Local<Counted> = Local::named("ISO_L").inheritable();
    let t = Tally::new();
    let ops: [LocalOp; 8] = [
        ("set", |t| {
            L.set(t.make(2));
            Some(2)
        }),
        ("replace", |t| {
            assert_eq!(L.replace(t.make(2)).map(|c| c.n), Some(1), "replace");
            Some(2)
        }),
        ("take", |_| {
            assert_eq!(
                L.take().map(|c| c.n),
                Some(1),
                "take returns the inherited value"
            );
            None
        }),
        ("release", |_| {
            L.release();
            None
        }),
        ("with_mut", |_| {
            L.with_mut(|c| c.n = 2);
            Some(2)
        }),
        ("try_with_mut", |_| {
            assert_eq!(L.try_with_mut(|c| std::mem::replace(&mut c.n, 2)), Ok(1));
            Some(2)
        }),
        ("scope", |t| {
            L.scope(t.make(2), || assert_eq!(n_of(&L), Some(2)));
            // The fork's own copy of the inherited value is back.
            assert_eq!(n_of(&L), Some(1));
            L.set(t.make(3));
            Some(3)
        }),
        ("manager cleanup", |_| {
            LocalManager::new([&L as &'static dyn context_local::Release]).cleanup();
            None
        }),
    ];
    let parent = Context::new();
    parent.run(|| L.set(t.make(1)));
    let snapshot = parent.run(Snapshot::capture);
    for (name, op) in ops {
        let (a, b) = (snapshot.fork(), snapshot.fork());
        assert_eq!(b.run(|| n_of(&L)), Some(1), "{name}: sibling before");
        let expect = a.run(|| op(&t));
        assert_eq!(a.run(|| n_of(&L)), expect, "{name}: the fork's own");
        assert_eq!(a.run(|| L.is_set()), expect.is_some(), "{name}");
        assert_eq!(b.run(|| n_of(&L)), Some(1), "{name}: sibling");
        assert_eq!(parent.run(|| n_of(&L)), Some(1), "{name}: parent");
        assert_eq!(snapshot.run(|| n_of(&L)), Some(1), "{name}: a later fork");
        assert_eq!(n_of(&L), None, "{name}: the thread's own context");
        // The sibling writes too; the first fork keeps its own.
        b.run(|| L.with_mut(|c| c.n = 50));
        assert_eq!(
            a.run(|| n_of(&L)),
            expect,
            "{name}: after the sibling wrote"
        );
        // The parent writes after the forks were made: invisible to both.
        parent.run(|| L.with_mut(|c| c.n = 10));
        assert_eq!(a.run(|| n_of(&L)), expect, "{name}: after the parent wrote");
        assert_eq!(b.run(|| n_of(&L)), Some(50), "{name}");
        assert_eq!(snapshot.run(|| n_of(&L)), Some(1), "{name}");
        parent.run(|| L.with_mut(|c| c.n = 1));
    }
    // A fork that has not read yet does not see a parent write made after its creation.
    let late = snapshot.fork();
    parent.run(|| L.set(t.make(20)));
    assert_eq!(late.run(|| n_of(&L)), Some(1));
    drop((late, snapshot, parent));
    assert_eq!(t.live(), 0, "every value, clones included, dropped");
}

type StackOp = (&'static str, fn(&Tally) -> Vec<u64>);

/// Every write of a `LocalStack` in a fork — `push`, `pop` (yields a clone; the parent keeps
/// its own), `release`, `scope`, `enter` guards (also out of order), `with_top_mut`, popping
/// it empty — stays in that fork.
#[test]
fn stack_writes_in_a_fork_are_isolated_both_ways_and_between_siblings() {
    static S: LocalStack<Counted> = LocalStack::named("ISO_S").inheritable();
    let t = Tally::new();
    let ops: [StackOp; 8] = [
        ("push", |t| {
            S.push(t.make(3));
            vec![1, 2, 3]
        }),
        ("pop", |_| {
            assert_eq!(S.pop().map(|c| c.n), Some(2));
            vec![1]
        }),
        ("pop all", |_| {
            assert_eq!(S.pop().map(|c| c.n), Some(2));
            assert_eq!(S.pop().map(|c| c.n), Some(1));
            assert_eq!(S.pop().map(|c| c.n), None);
            vec![]
        }),
        ("release", |_| {
            S.release();
            vec![]
        }),
        ("scope", |t| {
            S.scope(t.make(3), || assert_eq!(ns(&S), [1, 2, 3]));
            vec![1, 2]
        }),
        ("enter", |t| {
            let g = S.enter(t.make(3));
            let h = S.enter(t.make(4));
            assert_eq!(ns(&S), [1, 2, 3, 4]);
            drop(g); // out of order
            assert_eq!(ns(&S), [1, 2, 4]);
            std::mem::forget(h); // leaves 4 in place
            vec![1, 2, 4]
        }),
        ("with_top_mut", |_| {
            assert_eq!(S.with_top_mut(|c| std::mem::replace(&mut c.n, 20)), Some(2));
            vec![1, 20]
        }),
        ("manager cleanup", |_| {
            LocalManager::new([&S as &'static dyn context_local::Release]).cleanup();
            vec![]
        }),
    ];
    let parent = Context::new();
    parent.run(|| {
        S.push(t.make(1));
        S.push(t.make(2));
    });
    let snapshot = parent.run(Snapshot::capture);
    for (name, op) in ops {
        let (a, b) = (snapshot.fork(), snapshot.fork());
        let dropped_before = t.dropped();
        let expect = a.run(|| op(&t));
        if name == "pop" {
            // The popped clone was dropped by the op; nothing of the parent's was.
            assert!(t.dropped() > dropped_before, "pop returned a value");
        }
        assert_eq!(a.run(|| ns(&S)), expect, "{name}: the fork's own");
        assert_eq!(a.run(|| S.is_empty()), expect.is_empty(), "{name}");
        assert_eq!(b.run(|| ns(&S)), [1, 2], "{name}: sibling");
        assert_eq!(parent.run(|| ns(&S)), [1, 2], "{name}: parent");
        assert_eq!(snapshot.run(|| ns(&S)), [1, 2], "{name}: a later fork");
        b.run(|| S.push(t.make(60)));
        assert_eq!(a.run(|| ns(&S)), expect, "{name}: after the sibling wrote");
        parent.run(|| S.push(t.make(70)));
        assert_eq!(a.run(|| ns(&S)), expect, "{name}: after the parent wrote");
        assert_eq!(b.run(|| ns(&S)), [1, 2, 60], "{name}");
        assert_eq!(parent.run(|| S.pop().map(|c| c.n)), Some(70));
        // The snapshot is frozen: the parent's stack is [1, 2] again, the snapshot was too.
        assert_eq!(snapshot.run(|| ns(&S)), [1, 2], "{name}");
    }
    drop((snapshot, parent));
    assert_eq!(t.live(), 0, "every value, clones included, dropped");
}

/// Popping an inherited element gives the fork a clone: the parent's element is neither
/// moved nor dropped, in the parent or in the snapshot.
#[test]
fn popping_an_inherited_element_yields_a_clone() {
    static S: LocalStack<Counted> = LocalStack::named("POP_CLONE").inheritable();
    let t = Tally::new();
    let parent = Context::new();
    parent.run(|| S.push(t.make(1)));
    let snapshot = parent.run(Snapshot::capture);
    let live = t.live();
    let fork = snapshot.fork();
    let popped = fork.run(|| S.pop()).expect("inherited");
    assert_eq!(popped.n, 1);
    assert!(t.live() > live, "the popped value is a new value (a clone)");
    drop(popped);
    drop(fork);
    assert_eq!(t.live(), live, "only the fork's copies went");
    assert_eq!(parent.run(|| ns(&S)), [1]);
    assert_eq!(snapshot.run(|| ns(&S)), [1]);
    drop((parent, snapshot));
    assert_eq!(t.live(), 0);
}

/// A guard entered in a fork on an inherited stack removes exactly its own value, also when
/// dropped after the fork was left, from another thread, or after the parent changed.
#[test]
fn guards_in_a_fork_remove_exactly_their_own_value() {
    static S: LocalStack<u32> = LocalStack::named("FORK_GUARDS").inheritable();
    let parent = Context::new();
    parent.run(|| S.push(1));
    let fork = parent.run(Context::child);
    let guard = fork.run(|| S.enter(2));
    parent.run(|| S.push(10));
    assert_eq!(fork.run(|| S.len()), 2);
    drop(guard); // outside the fork
    assert_eq!(fork.run(|| (S.len(), S.top())), (1, Some(1)));
    assert_eq!(parent.run(|| (S.len(), S.top())), (2, Some(10)));
    let grand = fork.run(Context::child);
    assert_eq!(grand.run(|| (S.len(), S.top())), (1, Some(1)));
    // A guard of the parent, dropped after a fork inherited its value: the parent's value goes,
    // the fork keeps its copy (guards are not inherited).
    let parent_guard = parent.run(|| S.enter(20));
    let fork2 = parent.run(Context::child);
    parent.run(|| drop(parent_guard));
    assert_eq!(parent.run(|| (S.len(), S.top())), (2, Some(10)));
    assert_eq!(fork2.run(|| (S.len(), S.top())), (3, Some(20)));
    assert_eq!(fork2.run(|| S.pop()), Some(20));
    assert_eq!(fork2.run(|| S.len()), 2);
}

// ---------------------------------------------------------------------------------------------
// Part 3: grandchildren.

/// A fork's own capture hands down what it inherited plus its own changes: values it set,
/// stacks it pushed, and "unbound" for what it took, released or popped empty.
#[test]
fn a_grandchild_sees_what_its_parent_inherited_plus_its_changes() {
    static KEPT: Local<u32> = Local::named("GC_KEPT").inheritable();
    static CHANGED: Local<u32> = Local::named("GC_CHANGED").inheritable();
    static TAKEN: Local<u32> = Local::named("GC_TAKEN").inheritable();
    static RELEASED: Local<u32> = Local::named("GC_RELEASED").inheritable();
    static NEW: Local<u32> = Local::named("GC_NEW").inheritable();
    static STACK: LocalStack<u32> = LocalStack::named("GC_STACK").inheritable();
    static EMPTIED: LocalStack<u32> = LocalStack::named("GC_EMPTIED").inheritable();
    static PLAIN: Local<u32> = Local::named("GC_PLAIN");

    let root = Context::new();
    let child = root.run(|| {
        KEPT.set(1);
        CHANGED.set(1);
        TAKEN.set(1);
        RELEASED.set(1);
        STACK.push(1);
        EMPTIED.push(1);
        EMPTIED.push(2);
        PLAIN.set(1);
        Context::child()
    });
    let grand = child.run(|| {
        CHANGED.with_mut(|v| *v = 2);
        assert_eq!(TAKEN.take(), Some(1));
        RELEASED.release();
        NEW.set(2);
        STACK.push(2);
        assert_eq!(EMPTIED.pop(), Some(2));
        assert_eq!(EMPTIED.pop(), Some(1));
        PLAIN.set(2);
        Context::child()
    });
    let seen = || {
        (
            KEPT.get(),
            CHANGED.get(),
            TAKEN.get(),
            RELEASED.get(),
            NEW.get(),
            (STACK.len(), STACK.top()),
            EMPTIED.len(),
            PLAIN.get(),
        )
    };
    let expected = (Some(1), Some(2), None, None, Some(2), (2, Some(2)), 0, None);
    assert_eq!(grand.run(seen), expected);
    // A great-grandchild made inside the grandchild without writes sees the same; one made
    // after a write there sees that write too.
    let great = grand.run(Context::child);
    assert_eq!(great.run(seen), expected);
    let great2 = grand.run(|| {
        KEPT.set(3);
        assert_eq!(STACK.pop(), Some(2));
        Context::child()
    });
    let expected2 = (Some(3), Some(2), None, None, Some(2), (1, Some(1)), 0, None);
    assert_eq!(great2.run(seen), expected2);
    assert_eq!(grand.run(seen), expected2);
    assert_eq!(
        great.run(seen),
        expected,
        "made before the grandchild's write"
    );
    // Nobody up the chain changed.
    assert_eq!(
        child.run(seen),
        (
            Some(1),
            Some(2),
            None,
            None,
            Some(2),
            (2, Some(2)),
            0,
            Some(2)
        )
    );
    assert_eq!(
        root.run(seen),
        (
            Some(1),
            Some(1),
            Some(1),
            Some(1),
            None,
            (1, Some(1)),
            2,
            Some(1)
        )
    );
    // The chain outlives its ancestors.
    drop((root, child));
    assert_eq!(great.run(seen), expected);
}

/// A fork that takes an inherited local hands "unbound" down, even though its parent (and the
/// snapshot it came from) still have the value; and when it binds the value again, that is
/// handed down.
#[test]
fn a_fork_that_takes_hands_down_unbound() {
    static L: Local<u32> = Local::named("TAKE_HANDS_DOWN").inheritable();
    let snapshot = Context::new().run(|| {
        L.set(1);
        Snapshot::capture()
    });
    let fork = snapshot.fork();
    let (after_take, after_set) = fork.run(|| {
        assert_eq!(L.take(), Some(1));
        let after_take = Snapshot::capture();
        assert!(after_take.is_empty());
        L.set(2);
        (after_take, Snapshot::capture())
    });
    assert_eq!(after_take.run(|| L.get()), None);
    assert_eq!(after_set.run(|| L.get()), Some(2));
    assert_eq!(snapshot.run(|| L.get()), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Part 4: every value dropped exactly once.

/// Parent context, snapshot and fork dropped in each of the 6 orders: the parent's own values
/// go with the parent; the captured copies (shared by the parent's cached capture, the snapshot
/// and the fork) go with the last of the three; the fork's own copies go with the fork.
#[test]
fn shared_values_are_dropped_once_when_their_last_holder_goes() {
    static L: Local<Counted> = Local::named("DROP_ORDER_L").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("DROP_ORDER_S").inheritable();
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        for fork_writes in [false, true] {
            let t = Tally::new();
            let parent = Context::new();
            parent.run(|| {
                L.set(t.make(1));
                S.push(t.make(2));
                S.push(t.make(3));
            });
            let snapshot = parent.run(Snapshot::capture);
            assert_eq!(t.live(), 6, "the parent's 3 + one captured copy of each");
            let fork = snapshot.fork();
            assert_eq!(t.live(), 6, "a fork is O(1): it copies nothing");
            assert_eq!(fork.run(|| (n_of(&L), ns(&S))), (Some(1), vec![2, 3]));
            assert_eq!(t.live(), 6, "reading copies nothing");
            if fork_writes {
                fork.run(|| {
                    L.set(t.make(4));
                    S.push(t.make(5));
                });
                // The fork's own: its L, and its copy of the stack plus its push.
                assert_eq!(t.live(), 6 + 1 + 3);
            }
            let fork_own = if fork_writes { 4 } else { 0 };
            let mut parent = Some(parent);
            let mut snapshot = Some(snapshot);
            let mut fork = Some(fork);
            for &who in &order {
                match who {
                    0 => drop(parent.take()),
                    1 => drop(snapshot.take()),
                    _ => drop(fork.take()),
                }
                let shared_alive = parent.is_some() || snapshot.is_some() || fork.is_some();
                let expected = if parent.is_some() { 3 } else { 0 }
                    + if shared_alive { 3 } else { 0 }
                    + if fork.is_some() { fork_own } else { 0 };
                assert_eq!(
                    t.live(),
                    expected,
                    "order {order:?}, fork writes: {fork_writes}, after dropping {who}"
                );
                // Whatever is left still reads its values.
                if let Some(s) = &snapshot {
                    assert_eq!(s.run(|| (n_of(&L), ns(&S))), (Some(1), vec![2, 3]));
                }
                if let Some(f) = &fork {
                    let expect = if fork_writes {
                        (Some(4), vec![2, 3, 5])
                    } else {
                        (Some(1), vec![2, 3])
                    };
                    assert_eq!(f.run(|| (n_of(&L), ns(&S))), expect);
                }
            }
            assert_eq!(t.live(), 0);
            assert_eq!(t.created(), t.dropped());
        }
    }
}

/// A snapshot outlives the thread it was captured on: the thread's own value goes at its exit,
/// the snapshot's copy with the snapshot.
#[test]
fn a_snapshot_outlives_its_thread() {
    static L: Local<Counted> = Local::named("OUTLIVES_THREAD").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("OUTLIVES_THREAD_S").inheritable();
    let t = Tally::new();
    let snapshot = {
        let t = t.clone();
        std::thread::spawn(move || {
            L.set(t.make(1));
            S.push(t.make(2));
            Snapshot::capture()
        })
        .join()
        .unwrap()
    };
    assert_eq!(
        t.live(),
        2,
        "the thread's values went at its exit; the copies remain"
    );
    assert_eq!(snapshot.run(|| (n_of(&L), ns(&S))), (Some(1), vec![2]));
    let fork = snapshot.fork();
    drop(snapshot);
    assert_eq!(t.live(), 2);
    assert_eq!(fork.run(|| (n_of(&L), ns(&S))), (Some(1), vec![2]));
    drop(fork);
    assert_eq!(t.live(), 0);
}

/// Values of a `thread::spawn` child and of `wrap`ped jobs are gone once they are joined, also
/// when the child panics.
#[test]
fn children_values_are_dropped_when_they_end() {
    static L: Local<Counted> = Local::named("CHILD_ENDS").inheritable();
    static N: Local<Counted> = Local::named("CHILD_ENDS_N");
    within(30, || {
        let t = Tally::new();
        let parent = Context::new();
        parent.run(|| L.set(t.make(1)));
        let base = {
            // The parent's value, plus the copy its capture keeps (the first capture makes it).
            drop(parent.run(Snapshot::capture));
            t.live()
        };
        let tc = t.clone();
        let h = parent.run(|| {
            cl_thread::spawn(move || {
                L.with_mut(|c| c.n = 2); // a copy
                N.set(tc.make(3));
                L.get().map(|c| c.n) // a clone, dropped here
            })
        });
        assert_eq!(h.join().unwrap(), Some(2));
        assert_eq!(t.live(), base, "the child's values went with its context");
        let tc = t.clone();
        let h = parent.run(|| {
            cl_thread::spawn(move || {
                L.set(tc.make(4));
                N.set(tc.make(5));
                panic!("child fails");
            })
        });
        assert!(h.join().is_err());
        assert_eq!(t.live(), base, "also when the child panicked");
        let tc = t.clone();
        let job = parent.run(|| {
            Snapshot::capture().wrap(move || {
                L.set(tc.make(6));
                N.set(tc.make(7));
            })
        });
        std::thread::spawn(job).join().unwrap();
        assert_eq!(t.live(), base);
        // A child task dropped unpolled, and one dropped after a write and a pending poll.
        drop(parent.run(|| async {}.in_child_context()));
        assert_eq!(t.live(), base);
        let tc = t.clone();
        let task = parent.run(|| {
            async move {
                L.with_mut(|c| c.n = 8);
                N.set(tc.make(9));
                yield_now().await;
            }
            .in_child_context()
        });
        let mut task = Box::pin(task);
        let mut cx = std::task::Context::from_waker(Waker::noop());
        assert!(task.as_mut().poll(&mut cx).is_pending());
        assert!(t.live() > base);
        drop(task);
        assert_eq!(t.live(), base, "the task's values went with it");
        drop(parent);
        assert_eq!(t.live(), 0);
    });
}

/// Capturing again with no inheritable write in between clones nothing (the same frame is
/// handed out); neither do reads, forks, writes of non-inheritable locals, or captures in a
/// fork that never wrote. A fork's first write copies the inherited value once; its later
/// writes copy nothing.
#[test]
fn capture_clones_nothing_when_nothing_inheritable_changed() {
    static A: Local<Counted> = Local::named("CACHE_A").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("CACHE_S").inheritable();
    static N: Local<Counted> = Local::named("CACHE_N");
    let t = Tally::new();
    let parent = Context::new();
    parent.run(|| {
        A.set(t.make(1));
        S.push(t.make(2));
        let first = Snapshot::capture();
        assert_eq!(t.created(), 4, "the first capture clones each value once");
        let second = Snapshot::capture();
        assert_eq!(t.created(), 4, "no write since: nothing cloned");
        N.set(t.make(3));
        let _ = (A.with(|c| c.n), S.with_top(|c| c.n), S.len(), A.is_set());
        let third = Snapshot::capture();
        let _child = Context::child();
        let _fork = second.fork();
        assert_eq!(
            t.created(),
            5,
            "reads, non-inheritable writes and forks clone nothing"
        );
        assert_eq!(format!("{first:?}"), format!("{third:?}"));
        // Forks made from any of them see the same.
        for s in [&first, &second, &third] {
            assert_eq!(s.run(|| (n_of(&A), ns(&S))), (Some(1), vec![2]));
        }
        assert_eq!(t.created(), 5);
    });
    // A fork: no clone until its first write, one then, none after.
    let snapshot = parent.run(Snapshot::capture);
    let fork = snapshot.fork();
    let before = t.created();
    fork.run(|| {
        let _ = Snapshot::capture();
        let _ = Context::child();
        assert_eq!(
            t.created(),
            before,
            "a fork that never wrote captures for free"
        );
        A.with_mut(|c| c.n = 10);
        assert_eq!(
            t.created(),
            before + 1,
            "the first write copies the value once"
        );
        A.with_mut(|c| c.n = 11);
        A.with_mut(|c| c.n = 12);
        assert_eq!(t.created(), before + 1, "later writes copy nothing");
        let _ = Snapshot::capture();
        let after = t.created();
        let _ = Snapshot::capture();
        assert_eq!(t.created(), after, "capturing again in the fork: nothing");
    });
    drop((fork, snapshot, parent));
    assert_eq!(t.live(), 0);
}

/// DESIGN.md: "`capture` is O(1) amortised in the number of inheritable locals"; Snapshot's
/// docs: "capturing clones a changed value once". So after one of eight inheritable locals
/// changes, the next capture clones that one value, not all eight.
#[test]
fn capture_after_one_write_clones_only_the_changed_value() {
    static LS: [Local<Counted>; 8] = [
        Local::named("ONE_CHANGED_0").inheritable(),
        Local::named("ONE_CHANGED_1").inheritable(),
        Local::named("ONE_CHANGED_2").inheritable(),
        Local::named("ONE_CHANGED_3").inheritable(),
        Local::named("ONE_CHANGED_4").inheritable(),
        Local::named("ONE_CHANGED_5").inheritable(),
        Local::named("ONE_CHANGED_6").inheritable(),
        Local::named("ONE_CHANGED_7").inheritable(),
    ];
    let t = Tally::new();
    Context::new().run(|| {
        for (i, l) in LS.iter().enumerate() {
            l.set(t.make(i as u64));
        }
        let _first = Snapshot::capture();
        assert_eq!(t.created(), 16);
        LS[3].with_mut(|c| c.n = 30);
        let second = Snapshot::capture();
        let cloned = t.created() - 16;
        assert_eq!(
            second.run(|| LS.iter().map(n_of).collect::<Vec<_>>()),
            [0u64, 1, 2, 30, 4, 5, 6, 7].map(Some)
        );
        assert_eq!(
            cloned, 1,
            "capture after one write cloned {cloned} values (of 8 inheritable locals, 1 changed)"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Part 5: the Snapshot API.

/// `Snapshot` is `Clone + Send + Sync + Debug`; a clone forks the same values.
#[test]
fn snapshot_is_clone_send_sync_debug() {
    static L: Local<u32> = Local::named("SNAP_TRAITS").inheritable();
    assert_send_sync_clone_debug::<Snapshot>();
    let s = Context::new().run(|| {
        L.set(5);
        Snapshot::capture()
    });
    let c = s.clone();
    drop(s);
    assert_eq!(c.run(|| L.get()), Some(5));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(c).unwrap())
        .join()
        .unwrap();
    let shared = Arc::new(rx.recv().unwrap());
    let s2 = shared.clone();
    assert_eq!(
        std::thread::spawn(move || s2.run(|| L.get()))
            .join()
            .unwrap(),
        Some(5)
    );
}

/// `capture()` twice with no write in between gives equal content (same forks, same
/// `Debug`); `Debug` says how many locals it holds.
#[test]
fn capture_twice_without_a_write_is_equal() {
    static A: Local<String> = Local::named("TWICE_A").inheritable();
    static S: LocalStack<u32> = LocalStack::named("TWICE_S").inheritable();
    let ctx = Context::new();
    let (one, two) = ctx.run(|| {
        A.set("a".into());
        S.push(1);
        S.push(2);
        (Snapshot::capture(), Snapshot::capture())
    });
    let read = || (A.get(), S.len(), S.top());
    assert_eq!(one.run(read), two.run(read));
    assert_eq!(one.run(read), (Some("a".to_string()), 2, Some(2)));
    assert_eq!(format!("{one:?}"), format!("{two:?}"));
    let debug = format!("{one:?}");
    assert!(debug.starts_with("Snapshot"), "{debug}");
    assert!(debug.contains('2'), "two locals: {debug}");
    assert!(format!("{:?}", Snapshot::empty()).contains('0'));
    // After a write the content differs.
    let three = ctx.run(|| {
        S.pop();
        Snapshot::capture()
    });
    assert_eq!(three.run(read), (Some("a".to_string()), 1, Some(1)));
    assert_eq!(one.run(read), (Some("a".to_string()), 2, Some(2)));
}

/// `empty()` is empty and forks nothing, whatever is bound where it is used; `is_empty` is
/// true for a capture of a context with nothing inheritable bound (never bound, only
/// non-inheritable values, taken, popped empty) and false as soon as one is.
#[test]
fn empty_and_is_empty() {
    static L: Local<u32> = Local::named("EMPTY_L").inheritable();
    static S: LocalStack<u32> = LocalStack::named("EMPTY_S").inheritable();
    static N: Local<u32> = Local::named("EMPTY_N");
    let e = Snapshot::empty();
    assert!(e.is_empty());
    let ctx = Context::new();
    ctx.run(|| {
        assert!(Snapshot::capture().is_empty(), "nothing bound");
        N.set(1);
        assert!(
            Snapshot::capture().is_empty(),
            "only a non-inheritable value"
        );
        L.set(1);
        S.push(1);
        let full = Snapshot::capture();
        assert!(!full.is_empty());
        // The empty snapshot forks nothing, even here.
        assert_eq!(e.run(|| (L.get(), S.len(), N.get())), (None, 0, None));
        assert!(!e.fork().run(|| L.is_set()));
        assert_eq!(L.take(), Some(1));
        assert!(!Snapshot::capture().is_empty(), "the stack is still bound");
        assert_eq!(S.pop(), Some(1));
        assert!(Snapshot::capture().is_empty(), "taken and popped empty");
        assert!(!full.is_empty(), "a snapshot does not change");
        // A fork of a full snapshot that takes everything captures empty.
        full.run(|| {
            assert!(!Snapshot::capture().is_empty());
            L.take();
            S.release();
            assert!(Snapshot::capture().is_empty());
        });
    });
    // `Context::child()` of a context with nothing inheritable is a plain new context.
    let c = ctx.run(Context::child);
    assert_eq!(c.run(|| (L.get(), S.len(), N.get())), (None, 0, None));
}

// ---------------------------------------------------------------------------------------------
// Part 6: iteration across contexts.

/// `for_each` and `contexts()` count a fork that only inherited a value (it has the value, as
/// `is_set` says there), with the inherited value and the fork's id; a snapshot is not a
/// context. A fork that took the value, or popped its stack empty, is not counted.
#[test]
fn for_each_and_contexts_count_forks_that_only_inherited() {
    static L: Local<u32> = Local::named("FE_L").inheritable();
    static S: LocalStack<u32> = LocalStack::named("FE_S").inheritable();
    let collect_l = || {
        let mut v = Vec::new();
        L.for_each(|id, x| v.push((id, *x)));
        v.sort_by_key(|e| e.1);
        v
    };
    let collect_s = || {
        let mut v = Vec::new();
        S.for_each(|id, x| v.push((id, x.to_vec())));
        v
    };
    let parent = Context::new();
    parent.run(|| {
        L.set(1);
        S.push(1);
    });
    let snapshot = parent.run(Snapshot::capture);
    assert_eq!(
        (L.contexts(), S.contexts()),
        (1, 1),
        "a snapshot is not a context"
    );
    let fork = snapshot.fork();
    assert_eq!((L.contexts(), S.contexts()), (2, 2));
    let mut seen = collect_l();
    seen.sort_by_key(|e| e.0 == parent.id());
    assert_eq!(seen, [(fork.id(), 1), (parent.id(), 1)]);
    let mut seen = collect_s();
    seen.sort_by_key(|e| e.0 == parent.id());
    assert_eq!(seen, [(fork.id(), vec![1]), (parent.id(), vec![1])]);
    // Consistent with what the fork itself says.
    assert!(fork.run(|| L.is_set() && !S.is_empty()));
    // The fork writes: its own value is seen.
    fork.run(|| {
        L.set(2);
        S.push(2);
    });
    assert_eq!(collect_l(), [(parent.id(), 1), (fork.id(), 2)]);
    let mut seen = collect_s();
    seen.sort_by_key(|e| e.0 == parent.id());
    assert_eq!(seen, [(fork.id(), vec![1, 2]), (parent.id(), vec![1])]);
    // The fork empties both: not counted any more.
    fork.run(|| {
        L.take();
        S.pop();
        S.pop();
    });
    assert_eq!((L.contexts(), S.contexts()), (1, 1));
    assert_eq!(collect_l(), [(parent.id(), 1)]);
    // Another fork: counted while it lives.
    let other = snapshot.fork();
    assert_eq!((L.contexts(), S.contexts()), (2, 2));
    drop(other);
    assert_eq!((L.contexts(), S.contexts()), (1, 1));
    // The parent's own goes; the snapshot still holds its copy but is no context.
    parent.run(|| {
        L.take();
        S.release();
    });
    assert_eq!((L.contexts(), S.contexts()), (0, 0));
    assert_eq!(snapshot.run(|| L.get()), Some(1));
    let third = snapshot.fork();
    assert_eq!(L.contexts(), 1);
    assert_eq!(collect_l(), [(third.id(), 1)]);
}

/// Regression (round 3, no fault found): `for_each` and `contexts` agree on whether a fork that
/// only inherited a value holds it, and a fork's own write is visited as the fork's.
#[test]
fn for_each_and_contexts_agree_on_forks() {
    static L: Local<u64> = Local::named("L").inheritable();
    let parent = Context::new();
    let snap = parent.run(|| {
        L.set(1);
        Snapshot::capture()
    });
    let fork = snap.fork();
    fork.run(|| assert_eq!(L.get(), Some(1)));
    let count = || {
        let mut n = 0;
        L.for_each(|_, _| n += 1);
        (n, L.contexts())
    };
    let (visited, counted) = count();
    assert_eq!(visited, counted, "before the fork writes");
    fork.run(|| L.set(2));
    let mut seen = Vec::new();
    L.for_each(|id, v| seen.push((id, *v)));
    assert!(seen.contains(&(fork.id(), 2)), "{seen:?}");
    assert!(seen.contains(&(parent.id(), 1)), "{seen:?}");
    assert_eq!(seen.len(), L.contexts());
}

// ---------------------------------------------------------------------------------------------
// Part 7: with_init, with_mut, macros.

static INITS: AtomicUsize = AtomicUsize::new(0);

fn counted_init() -> u32 {
    INITS.fetch_add(1, SeqCst);
    7
}

/// `Local::with_init(..).inheritable()`: a fork sees the parent's value when it was bound at
/// capture (the initializer does not run in the fork), and runs the initializer in the fork
/// (binding it there only) when it was not.
#[test]
fn with_init_inheritable_inherits_a_bound_value_else_inits_in_the_fork() {
    static W: Local<u32> = Local::with_init("INIT_W", counted_init).inheritable();
    let parent = Context::new();
    // Unbound in the parent: the fork runs init.
    let empty = parent.run(Snapshot::capture);
    let inits = INITS.load(SeqCst);
    let fork = empty.fork();
    fork.run(|| {
        assert!(!W.is_set());
        assert_eq!(W.get(), Some(7));
        assert!(W.is_set());
        W.with_mut(|v| *v += 1);
        assert_eq!(W.get(), Some(8));
    });
    assert_eq!(INITS.load(SeqCst), inits + 1);
    assert!(
        !parent.run(|| W.is_set()),
        "the fork's init bound nothing in the parent"
    );
    // Bound in the parent: inherited, no init.
    parent.run(|| W.set(1));
    let snapshot = parent.run(Snapshot::capture);
    let inits = INITS.load(SeqCst);
    snapshot.run(|| {
        assert!(W.is_set());
        assert_eq!(W.with(|v| *v), 1);
        W.with_mut(|v| *v = 2);
        assert_eq!(W.get(), Some(2));
        // Taken in the fork: init runs there, for the fork only.
        assert_eq!(W.take(), Some(2));
        assert_eq!(W.get(), Some(7));
    });
    assert_eq!(INITS.load(SeqCst), inits + 1);
    assert_eq!(parent.run(|| W.get()), Some(1));
    // Bound in the parent by its initializer: inherited like any value.
    let other = Context::new();
    assert_eq!(other.run(|| W.with(|v| *v)), 7);
    other.run(|| W.with_mut(|v| *v = 70));
    let inits = INITS.load(SeqCst);
    assert_eq!(other.run(Context::child).run(|| W.get()), Some(70));
    assert_eq!(INITS.load(SeqCst), inits);
}

/// Capturing inside `with_mut` (or `with_top_mut`) of an inheritable local panics naming the
/// local — also when the cached capture is fresh, and through every capturing call — and
/// leaves everything usable; inside `with`, or inside `with_mut` of a non-inheritable local,
/// capturing works.
#[test]
fn capture_inside_with_mut_panics_naming_the_local() {
    static M: Local<String> = Local::named("CAPTURED_M").inheritable();
    static MS: LocalStack<u32> = LocalStack::named("CAPTURED_MS").inheritable();
    static PLAIN: Local<u32> = Local::named("CAPTURED_PLAIN");
    let ctx = Context::new();
    ctx.run(|| {
        M.set("a".into());
        MS.push(1);
        PLAIN.set(1);
        let _fresh = Snapshot::capture(); // the cached capture is up to date
        let msg = expect_panic(|| M.with_mut(|_| Snapshot::capture()));
        assert!(msg.contains("CAPTURED_M"), "{msg}");
        let msg = expect_panic(|| M.with_mut(|_| Context::child()));
        assert!(msg.contains("CAPTURED_M"), "{msg}");
        let msg = expect_panic(|| M.with_mut(|_| cl_thread::spawn(|| ())));
        assert!(msg.contains("CAPTURED_M"), "{msg}");
        let msg = expect_panic(|| M.with_mut(|_| async {}.in_child_context()));
        assert!(msg.contains("CAPTURED_M"), "{msg}");
        let msg = expect_panic(|| MS.with_top_mut(|_| Snapshot::capture()));
        assert!(msg.contains("CAPTURED_MS"), "{msg}");
        // Everything still works afterwards.
        assert_eq!(M.get().as_deref(), Some("a"));
        M.with_mut(|m| m.push('b'));
        assert_eq!(Snapshot::capture().run(|| M.get()).as_deref(), Some("ab"));
        // Inside `with`: works, and sees the value.
        let s = M.with(|m| {
            assert_eq!(m, "ab");
            Snapshot::capture()
        });
        assert_eq!(s.run(|| M.get()).as_deref(), Some("ab"));
        let s = MS.with_top(|_| Snapshot::capture()).unwrap();
        assert_eq!(s.run(|| MS.top()), Some(1));
        // Inside `with_mut` of a non-inheritable local: works.
        let s = PLAIN.with_mut(|p| {
            *p = 2;
            Snapshot::capture()
        });
        assert_eq!(s.run(|| (M.get(), PLAIN.get())), (Some("ab".into()), None));
    });
    // In a fork, inside `with_mut` of an inherited value it has not written yet: the same.
    let fork = ctx.run(Context::child);
    fork.run(|| {
        let msg = expect_panic(|| M.with_mut(|_| Snapshot::capture()));
        assert!(msg.contains("CAPTURED_M"), "{msg}");
        assert_eq!(M.get().as_deref(), Some("ab"));
    });
}

#[context_local(inherit)]
#[derive(Clone, Debug, PartialEq)]
struct Tenant {
    id: u32,
}

context_stack!(#[inherit] static MACRO_APPS: &'static str);

/// `#[context_local(inherit)]` and `context_stack!(#[inherit] ...)` make inheritable locals.
#[test]
fn macros_declare_inheritable_locals() {
    let ctx = Context::new();
    let child = ctx.run(|| {
        Tenant::set(Tenant { id: 3 });
        MACRO_APPS.push("shop");
        Context::child()
    });
    assert_eq!(
        child.run(|| (Tenant::get(), MACRO_APPS.top())),
        (Some(Tenant { id: 3 }), Some("shop"))
    );
    child.run(|| {
        Tenant::with_mut(|t| t.id = 4);
        MACRO_APPS.pop();
    });
    assert_eq!(
        ctx.run(|| (Tenant::get(), MACRO_APPS.top())),
        (Some(Tenant { id: 3 }), Some("shop"))
    );
}

// ---------------------------------------------------------------------------------------------
// Part 8: tokio.

#[derive(Clone, Debug, PartialEq)]
struct Req {
    parent: u64,
    gen: u64,
}

static TOKIO_REQ: Local<Req> = Local::named("TOKIO_REQ").inheritable();
static TOKIO_TRAIL: LocalStack<Counted> = LocalStack::named("TOKIO_TRAIL").inheritable();
const TOKIO_PARENTS: u64 = 100;
const TOKIO_CHILDREN: u64 = 2;
const TOKIO_HOPS: u32 = 10;

/// What the tokio tasks share: the tally, wrong reads, finished children, worker threads seen.
#[derive(Clone, Default)]
struct Shared {
    t: Tally,
    wrong: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
    threads: Arc<Mutex<std::collections::HashSet<std::thread::ThreadId>>>,
}

impl Shared {
    fn check(&self, ok: bool) {
        if !ok {
            self.wrong.fetch_add(1, SeqCst);
        }
    }
}

/// Child `c` of parent `p`: sees the request as it was when it was spawned (gen `c`) and the
/// parent's one-element trail, hop after hop; then writes its own and sees those.
async fn tokio_child(sh: Shared, p: u64, c: u64) {
    let (req, trail) = (&TOKIO_REQ, &TOKIO_TRAIL);
    for hop in 0..TOKIO_HOPS {
        sh.threads
            .lock()
            .unwrap()
            .insert(std::thread::current().id());
        let own = hop > TOKIO_HOPS / 2;
        let (gen, top, len) = if own {
            (1000 + c, 1000 + p, 2)
        } else {
            (c, p, 1)
        };
        sh.check(req.get() == Some(Req { parent: p, gen }));
        sh.check(trail.len() == len && trail.with_top(|x| x.n) == Some(top));
        if hop == TOKIO_HOPS / 2 {
            // The child's own values from here on.
            req.with_mut(|r| r.gen = 1000 + c);
            trail.push(sh.t.make(1000 + p));
        }
        tokio::task::yield_now().await;
    }
    sh.ran.fetch_add(1, SeqCst);
}

/// Parent `p`, in a context of its own: sets its request, spawns its children with
/// `tokio::spawn(fut.in_child_context())`, changing the request between and after the spawns,
/// and checks its own values are untouched by the children.
async fn tokio_parent(sh: Shared, p: u64) {
    let (req, trail) = (&TOKIO_REQ, &TOKIO_TRAIL);
    sh.check(!req.is_set() && trail.is_empty());
    req.set(Req { parent: p, gen: 0 });
    trail.push(sh.t.make(p));
    tokio::task::yield_now().await;
    let mut children = Vec::new();
    for c in 0..TOKIO_CHILDREN {
        req.with_mut(|r| r.gen = c);
        let child = tokio_child(sh.clone(), p, c).in_child_context();
        children.push(tokio::spawn(child));
    }
    // After the spawns: invisible to the children.
    req.with_mut(|r| r.gen = 99);
    trail.push(sh.t.make(2000 + p));
    for h in children {
        h.await.unwrap();
    }
    sh.check(req.get() == Some(Req { parent: p, gen: 99 }));
    sh.check(trail.len() == 2 && trail.with_top(|x| x.n) == Some(2000 + p));
}

/// 100 parent tasks on a 4-worker runtime, each in its own context with its own inheritable
/// request, spawn 2 children each with `tokio::spawn(fut.in_child_context())`. Every child,
/// hopping over workers, sees exactly its parent's request as it was at its spawn (0 wrong
/// reads), its own writes persist across `.await` and never reach the parent or the sibling.
/// Every value is dropped once.
#[test]
fn tokio_children_see_their_own_parents_values() {
    within(60, || {
        let sh = Shared::default();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let parents: Vec<_> = (0..TOKIO_PARENTS)
            .map(|p| rt.spawn(tokio_parent(sh.clone(), p).in_new_context()))
            .collect();
        rt.block_on(async {
            for h in parents {
                h.await.unwrap();
            }
        });
        let contexts = (TOKIO_REQ.contexts(), TOKIO_TRAIL.contexts());
        drop(rt);
        assert_eq!(sh.wrong.load(SeqCst), 0, "wrong reads");
        assert_eq!(
            sh.ran.load(SeqCst) as u64,
            TOKIO_PARENTS * TOKIO_CHILDREN,
            "children that finished"
        );
        assert_eq!(
            contexts,
            (0, 0),
            "no context holds a value once all tasks are done"
        );
        assert_eq!(sh.t.live(), 0, "every value dropped");
        eprintln!(
            "tokio inheritance: {} worker threads used",
            sh.threads.lock().unwrap().len()
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Part 9: non-`static` locals and recycled indices.

const CHILD_ENV: &str = "CONTEXT_LOCAL_INHERIT_CHILD";

/// An inheritable non-`static` local is dropped while a snapshot (and a fork of it) still holds
/// its value; a new local of the same type then takes its index. Neither the old snapshot, nor
/// a fork made before or after, nor the parent's capture shows the old value as the new
/// local's: not to readers, not to writers (`replace` returns `None`), not to `contexts` /
/// `for_each`. Every value is dropped once.
fn recycled_index_check() {
    let t = Tally::new();
    let parent = Context::new();
    let old: Local<Counted> = Local::named("OLD").inheritable();
    let old_stack: LocalStack<Counted> = LocalStack::named("OLD_S").inheritable();
    parent.run(|| {
        old.set(t.make(1));
        old_stack.push(t.make(2));
    });
    let snapshot = parent.run(Snapshot::capture);
    let early = snapshot.fork();
    assert_eq!(early.run(|| n_of(&old)), Some(1));
    drop(old_stack);
    drop(old);
    // New locals of the same types: with nothing else running, they take the freed indices.
    let new_stack: LocalStack<Counted> = LocalStack::named("NEW_S").inheritable();
    let new: Local<Counted> = Local::named("NEW").inheritable();
    let scratch = Context::new();
    scratch.run(|| {
        new.set(t.make(10)); // assigns the index
        new_stack.push(t.make(11));
    });
    let late = snapshot.fork();
    let from_parent = parent.run(Snapshot::capture);
    let in_parent = parent.run(|| (n_of(&new), new_stack.len()));
    assert_eq!(in_parent, (None, 0), "the parent");
    for (what, ctx) in [
        ("a fork made before the drop", &early),
        ("a fork made after", &late),
        ("a fork of the parent's new capture", &from_parent.fork()),
    ] {
        ctx.run(|| {
            assert_eq!(n_of(&new), None, "{what}: read");
            assert!(!new.is_set(), "{what}: is_set");
            assert_eq!(new_stack.len(), 0, "{what}: stack len");
            assert!(new_stack.top().is_none(), "{what}: stack top");
        });
    }
    assert_eq!(new.contexts(), 1, "only the scratch context holds a value");
    assert_eq!(new_stack.contexts(), 1);
    let mut seen = Vec::new();
    new.for_each(|id, v| seen.push((id, v.n)));
    assert_eq!(seen, [(scratch.id(), 10)]);
    // Writers do not start from the old value either.
    late.run(|| {
        assert!(
            new.replace(t.make(20)).is_none(),
            "replace found the old value"
        );
        assert!(new_stack.pop().is_none(), "pop found the old value");
        new_stack.push(t.make(21));
        assert_eq!(ns(&new_stack), [21]);
        println!("recycled: late capture {:?}", Snapshot::capture());
    });
    early.run(|| {
        assert_eq!(
            new.try_with_mut(|c| c.n).unwrap_err().kind(),
            AccessErrorKind::Unbound
        );
    });
    drop((early, late, from_parent, snapshot, scratch, parent));
    drop(new);
    drop(new_stack);
    assert_eq!(t.live(), 0, "every value dropped once");
    println!("recycled: ok");
}

#[test]
fn a_recycled_index_never_shows_a_dead_locals_value() {
    // In this process (other tests may take the freed index first: then it checks less).
    recycled_index_check();
    // In a process of its own, where the new locals surely reuse the indices.
    let out = run_child(
        "child_recycled_index_never_shows_a_dead_locals_value",
        CHILD_ENV,
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("recycled: ok"),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
#[ignore = "run in a process of its own by a_recycled_index_never_shows_a_dead_locals_value"]
fn child_recycled_index_never_shows_a_dead_locals_value() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    recycled_index_check();
}

/// Once an inheritable non-`static` local is dropped and no snapshot or fork holds its value,
/// nothing does: its values are gone, and a capture of the context that held it is empty
/// (DESIGN.md: a shared value is dropped "when the last context or snapshot holding it goes";
/// `is_empty`: "no inheritable local is bound in this snapshot").
#[test]
fn a_dropped_local_leaves_nothing_in_the_cached_capture() {
    let t = Tally::new();
    let parent = Context::new();
    let local: Local<Counted> = Local::named("DROPPED_L").inheritable();
    parent.run(|| local.set(t.make(1)));
    drop(parent.run(Snapshot::capture)); // builds the context's cached capture
    drop(local);
    let s = parent.run(Snapshot::capture);
    assert!(
        s.is_empty(),
        "a capture after the only inheritable local was dropped: {s:?}"
    );
    drop(s);
    assert_eq!(
        t.live(),
        0,
        "the dropped local's value is still held (by the context's cached capture)"
    );
}

// ---------------------------------------------------------------------------------------------
// Part 10: foreign guard drops, teardown, and a `Clone` that writes locals or panics
// during a capture.

/// A `StackGuard` of an inheritable stack dropped outside its context (here: after the context
/// was left) removes its value; a capture made afterwards must not still hand the removed
/// value down (the context's cached capture must be invalidated by that removal too).
#[test]
fn a_foreign_guard_drop_is_seen_by_the_next_capture() {
    static GS: LocalStack<u32> = LocalStack::named("FOREIGN_GUARD").inheritable();
    let ctx = Context::new();
    ctx.run(|| GS.push(1));
    let guard = ctx.run(|| GS.enter(2));
    let before = ctx.run(Snapshot::capture); // cached: [1, 2]
    assert_eq!(before.run(|| GS.len()), 2);
    drop(guard); // not in `ctx`: removed from outside
    assert_eq!(ctx.run(|| (GS.len(), GS.top())), (1, Some(1)));
    let after = ctx.run(Snapshot::capture);
    assert_eq!(
        after.run(|| (GS.len(), GS.top())),
        (1, Some(1)),
        "a capture after the guard's removal still hands the removed value down"
    );
    assert_eq!(ctx.run(Context::child).run(|| GS.len()), 1);
}

/// The same, with the guard dropped on another thread while the context is not entered.
#[test]
fn a_guard_dropped_from_another_threads_context_is_seen_by_the_next_capture() {
    static GS: LocalStack<u32> = LocalStack::named("FOREIGN_GUARD_2").inheritable();
    let ctx = Context::new();
    let other = Context::new();
    ctx.run(|| GS.push(1));
    let guard = ctx.run(|| GS.enter(2));
    let _cached = ctx.run(Snapshot::capture);
    other.run(|| drop(guard)); // dropped while another context is current
    assert_eq!(ctx.run(|| GS.len()), 1);
    assert_eq!(ctx.run(Snapshot::capture).run(|| GS.len()), 1);
}

/// A value whose `Drop` runs a closure (only the original: clones are disarmed).
struct Hook {
    armed: bool,
    on_drop: Option<Arc<Mutex<dyn FnMut() + Send>>>,
}

impl Clone for Hook {
    fn clone(&self) -> Self {
        Hook {
            armed: false,
            on_drop: self.on_drop.clone(),
        }
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if self.armed {
            if let Some(f) = &self.on_drop {
                (f.lock().unwrap())();
            }
        }
    }
}

/// At teardown a value's `Drop` sees its own context with the values bound before it, and not
/// itself; a child started from that `Drop` (a flush task, say) sees the same — not the value
/// being dropped, which a stale cached capture would still hold.
#[test]
fn a_child_started_during_teardown_sees_the_context_as_it_is() {
    static FIRST: Local<u32> = Local::named("TD_FIRST").inheritable();
    static SECOND: Local<Hook> = Local::named("TD_SECOND").inheritable();
    type Seen = (Option<u32>, bool);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s2 = seen.clone();
    let hook: Arc<Mutex<dyn FnMut() + Send>> = Arc::new(Mutex::new(move || {
        s2.lock().unwrap().push((FIRST.get(), SECOND.is_set()));
        let child = Snapshot::capture().run(|| (FIRST.get(), SECOND.is_set()));
        s2.lock().unwrap().push(child);
    }));
    let ctx = Context::new();
    ctx.run(|| {
        FIRST.set(1);
        SECOND.set(Hook {
            armed: true,
            on_drop: Some(hook),
        });
        let _ = Snapshot::capture(); // the cached capture is fresh
    });
    drop(ctx);
    assert_eq!(
        *seen.lock().unwrap(),
        [(Some(1), false), (Some(1), false)],
        "[in the Drop, in a child started by the Drop]"
    );
}

thread_local! {
    static REENTER: Cell<bool> = const { Cell::new(false) };
    static REENTERED: Cell<Option<Result<(), AccessErrorKind>>> = const { Cell::new(None) };
}

/// A value whose `Clone` writes the local it is bound in, once, when armed.
struct Reentrant {
    n: u64,
    local: &'static Local<Reentrant>,
    _c: Counted,
}

impl Clone for Reentrant {
    fn clone(&self) -> Self {
        if REENTER.with(|r| r.replace(false)) {
            let r = self.local.try_with_mut(|v| v.n = 999).map_err(|e| e.kind());
            REENTERED.with(|c| c.set(Some(r)));
        }
        Reentrant {
            n: self.n,
            local: self.local,
            _c: self._c.clone(),
        }
    }
}

/// `Clone` runs user code. When a capture clones a value whose `Clone` tries to change that
/// very value, the change must be refused (the value is being read: `Borrowed`), as
/// `with_mut` inside `with` is; letting it through hands out `&mut` to a value `Clone` is
/// reading through `&` (DESIGN.md: "Reentrancy never causes UB or a silent wrong answer").
#[test]
fn a_clone_that_writes_its_own_local_during_capture_is_refused() {
    static R: Local<Reentrant> = Local::named("REENTRANT_CAPTURE").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    let snapshot = ctx.run(|| {
        R.set(Reentrant {
            n: 1,
            local: &R,
            _c: t.make(1),
        });
        REENTER.with(|r| r.set(true));
        let s = Snapshot::capture();
        REENTER.with(|r| r.set(false));
        s
    });
    let reentered = REENTERED.with(|c| c.take());
    let in_ctx = ctx.run(|| R.with(|r| r.n));
    let in_fork = snapshot.run(|| R.with(|r| r.n));
    drop((snapshot, ctx));
    assert_eq!(t.live(), 0);
    assert_eq!(
        reentered,
        Some(Err(AccessErrorKind::Borrowed)),
        "a write from Clone during capture (context now {in_ctx}, fork {in_fork})"
    );
}

/// A fork's first write copies the inherited value with `Clone`; a `Clone` that writes the same
/// local in the fork must not leave two copies of the slot (one leaked: its value never
/// dropped) nor lose a write. Every value is dropped exactly once.
#[test]
fn a_clone_that_writes_its_own_local_during_copy_on_write_leaks_nothing() {
    static R: Local<Reentrant> = Local::named("REENTRANT_COW").inheritable();
    let t = Tally::new();
    let parent = Context::new();
    parent.run(|| {
        R.set(Reentrant {
            n: 1,
            local: &R,
            _c: t.make(1),
        })
    });
    let snapshot = parent.run(Snapshot::capture);
    let fork = snapshot.fork();
    let after = fork.run(|| {
        REENTER.with(|r| r.set(true));
        R.with_mut(|r| r.n += 1);
        REENTER.with(|r| r.set(false));
        R.with(|r| r.n)
    });
    let reentered = REENTERED.with(|c| c.take());
    drop(fork);
    assert_eq!(parent.run(|| R.with(|r| r.n)), 1);
    drop((snapshot, parent));
    assert_eq!(
        t.live(),
        0,
        "values leaked (the reentrant write returned {reentered:?}, the fork saw {after})"
    );
    assert!(after == 2 || after == 1000, "a write was lost: {after}");
}

/// A value whose `Clone` panics when `FRAGILE_PANICS` is set.
struct Fragile {
    n: u64,
    _c: Counted,
}

thread_local! {
    static FRAGILE_PANICS: Cell<bool> = const { Cell::new(false) };
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        if FRAGILE_PANICS.with(Cell::get) {
            panic!("clone fails");
        }
        Fragile {
            n: self.n,
            _c: self._c.clone(),
        }
    }
}

/// A `Clone` that panics during a capture: the capture panics, nothing leaks, and the next
/// capture works. During a fork's copy-on-write: the write panics, the fork still sees its
/// inherited value.
#[test]
fn a_panicking_clone_leaves_captures_and_forks_consistent() {
    static F: Local<Fragile> = Local::named("FRAGILE").inheritable();
    static FS: LocalStack<Fragile> = LocalStack::named("FRAGILE_S").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        F.set(Fragile {
            n: 1,
            _c: t.make(1),
        });
        FS.push(Fragile {
            n: 2,
            _c: t.make(2),
        });
        FS.push(Fragile {
            n: 3,
            _c: t.make(3),
        });
        FRAGILE_PANICS.with(|p| p.set(true));
        let msg = expect_panic(Snapshot::capture);
        assert!(msg.contains("clone fails"), "{msg}");
        FRAGILE_PANICS.with(|p| p.set(false));
    });
    assert_eq!(t.live(), 3, "the partial capture's clones were dropped");
    let snapshot = ctx.run(Snapshot::capture);
    let fork = snapshot.fork();
    fork.run(|| {
        FRAGILE_PANICS.with(|p| p.set(true));
        let msg = expect_panic(|| F.with_mut(|f| f.n = 10));
        assert!(msg.contains("clone fails"), "{msg}");
        let msg = expect_panic(|| FS.pop());
        assert!(msg.contains("clone fails"), "{msg}");
        FRAGILE_PANICS.with(|p| p.set(false));
        assert_eq!(F.with(|f| f.n), 1);
        assert_eq!(FS.with_top(|f| f.n), Some(3));
        assert_eq!(FS.len(), 2);
        F.with_mut(|f| f.n = 10);
        assert_eq!(FS.pop().map(|f| f.n), Some(3));
    });
    assert_eq!(fork.run(|| (F.with(|f| f.n), FS.len())), (10, 1));
    assert_eq!(ctx.run(|| (F.with(|f| f.n), FS.len())), (1, 2));
    drop((fork, snapshot, ctx));
    assert_eq!(t.live(), 0);
}

/// Regression (round 3, no fault found): a value whose `Clone` writes another inheritable local
/// while a capture is copying it: the capture stays consistent, later captures see the write,
/// every value is dropped once.
#[test]
fn clone_that_writes_another_inheritable_local_during_a_capture() {
    static B: Local<Counted> = Local::named("B").inheritable();
    static T: std::sync::OnceLock<Tally> = std::sync::OnceLock::new();
    struct Sneaky(u64);
    impl Clone for Sneaky {
        fn clone(&self) -> Self {
            B.set(T.get().unwrap().make(self.0 + 100));
            Sneaky(self.0)
        }
    }
    static A: Local<Sneaky> = Local::named("A").inheritable();
    let t = T.get_or_init(Tally::new).clone();
    let ctx = Context::new();
    ctx.run(|| {
        B.set(t.make(1));
        A.set(Sneaky(1));
        // Writes B while the capture is building its frame (A's clone happens when the fork
        // first needs it, or at capture: either way no torn or stale frame).
        let snap = Snapshot::capture();
        let seen = snap.run(|| (A.with(|a| a.0), B.with(|b| b.n)));
        assert_eq!(seen.0, 1);
        assert!(seen.1 == 1 || seen.1 == 101, "{seen:?}");
        let again = Snapshot::capture().run(|| B.with(|b| b.n));
        assert_eq!(
            again,
            B.with(|b| b.n),
            "a later capture sees the current value"
        );
        drop(snap);
    });
    drop(ctx);
    t.assert_all_dropped();
}

/// Regression (round 3, no fault found): a `Clone` that panics while a capture copies the value
/// (at the capture, or at the fork's first write): the panic comes out at the caller, nothing
/// is half-captured, every value is dropped once, and the next capture works.
#[test]
fn clone_panicking_during_a_capture_loses_nothing() {
    static FAIL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    struct Fragile(Counted);
    impl Clone for Fragile {
        fn clone(&self) -> Self {
            if FAIL.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("clone failed");
            }
            Fragile(self.0.clone())
        }
    }
    static A: Local<Fragile> = Local::named("A").inheritable();
    static C: Local<Counted> = Local::named("C").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        C.set(t.make(2));
        A.set(Fragile(t.make(1)));
        let msg = expect_panic(|| {
            let snap = Snapshot::capture();
            // Copy-on-write: the clone may happen at the fork's first write instead.
            snap.run(|| A.with_mut(|a| a.0.n += 1));
        });
        assert!(msg.contains("clone failed"), "{msg}");
        assert_eq!(A.with(|a| a.0.n), 1);
        let seen = Snapshot::capture().run(|| {
            A.with_mut(|a| a.0.n += 10);
            (A.with(|a| a.0.n), C.with(|c| c.n))
        });
        assert_eq!(seen, (11, 2));
        assert_eq!(A.with(|a| a.0.n), 1, "the parent keeps its own");
    });
    drop(ctx);
    t.assert_all_dropped();
}

// ---------------------------------------------------------------------------------------------
// Part 11: a capture inside `Clone` during a capture, and a fork's borrow of what it inherited.

/// Regression (issue 17, fault 10): in a fork that has not written the local yet, `with` lends
/// the *inherited* value. A write of that local inside it — `with_mut`, `set`, `take`, stack
/// `push`/`pop` — is refused (`Borrowed`) exactly as in the parent, instead of materialising
/// the fork's own copy behind the outer borrow's back; another local, and a nested read, are
/// not affected. After the borrow the same write succeeds (the copy-on-write happens then).
#[test]
fn fault10_a_write_inside_a_forks_borrow_of_its_inherited_value_is_refused() {
    static L: Local<Counted> = Local::named("F10_L").inheritable();
    static M: Local<Counted> = Local::named("F10_M").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("F10_S").inheritable();
    let t = Tally::new();
    let parent = Context::new();
    parent.run(|| {
        L.set(t.make(1));
        M.set(t.make(2));
        S.push(t.make(3));
    });
    let kind = |r: Result<(), context_local::AccessError>| r.map_err(|e| e.kind());
    // The rule, in the parent.
    let in_parent = parent.run(|| L.with(|_| kind(L.try_with_mut(|v| v.n += 10))));
    assert_eq!(in_parent, Err(AccessErrorKind::Borrowed));
    let fork = parent.run(Snapshot::capture).fork();
    fork.run(|| {
        let (r, outer, now) = L.with(|outer| {
            let r = kind(L.try_with_mut(|v| v.n += 10));
            (r, outer.n, n_of(&L))
        });
        assert_eq!(
            r,
            Err(AccessErrorKind::Borrowed),
            "with_mut inside with (outer saw {outer}, the local is now {now:?})"
        );
        let msg = expect_panic(|| L.with(|_| L.set(t.make(4))));
        assert!(msg.contains("F10_L"), "{msg}");
        let msg = expect_panic(|| L.with(|_| L.take()));
        assert!(msg.contains("F10_L"), "{msg}");
        let msg = expect_panic(|| S.with_top(|_| S.push(t.make(5))));
        assert!(msg.contains("F10_S"), "{msg}");
        let msg = expect_panic(|| S.with_top(|_| S.pop()));
        assert!(msg.contains("F10_S"), "{msg}");
        // Nothing was written: still the inherited values.
        assert_eq!((n_of(&L), ns(&S)), (Some(1), vec![3]));
        // Another local inside the borrow, and a nested read of the same one: allowed.
        L.with(|_| M.with_mut(|m| m.n = 20));
        assert_eq!(L.with(|a| L.with(|b| a.n + b.n)), 2);
        // After the borrow: the fork's own copy.
        L.with_mut(|v| v.n = 11);
        S.push(t.make(6));
        assert_eq!(
            (n_of(&L), n_of(&M), ns(&S)),
            (Some(11), Some(20), vec![3, 6])
        );
    });
    assert_eq!(
        parent.run(|| (n_of(&L), n_of(&M), ns(&S))),
        (Some(1), Some(2), vec![3])
    );
    drop((fork, parent));
    assert_eq!(t.live(), 0, "every value dropped once");
}

/// Regression (round 3, no fault found): the fork's borrow mark of the test above covers every
/// write entry point. Inside `with` / `with_top` of an inherited value in a fork, `set`,
/// `replace`, `take`, `release`, `with_mut`, `push`, `pop`, `with_top_mut` and `enter` each
/// panic naming the local; the outer borrow still sees its value, and after it the writes are
/// the fork's own.
#[test]
fn every_write_inside_with_of_an_inherited_value_in_a_fork_is_refused() {
    static L: Local<Counted> = Local::named("L").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("S").inheritable();
    let t = Tally::new();
    let parent = Context::new();
    let snap = parent.run(|| {
        L.set(t.make(1));
        S.push(t.make(10));
        Snapshot::capture()
    });
    snap.run(|| {
        L.with(|outer| {
            assert!(L.try_with_mut(|_| ()).is_err());
            for (what, msg) in [
                ("set", expect_panic(|| L.set(t.make(2)))),
                ("replace", expect_panic(|| L.replace(t.make(3)))),
                ("take", expect_panic(|| L.take())),
                ("release", expect_panic(|| L.release())),
                ("with_mut", expect_panic(|| L.with_mut(|_| ()))),
            ] {
                assert!(msg.contains("`L`"), "{what}: {msg}");
            }
            assert_eq!(outer.n, 1, "the outer `with` still sees its value");
        });
        S.with_top(|outer| {
            for (what, msg) in [
                ("push", expect_panic(|| S.push(t.make(11)))),
                ("pop", expect_panic(|| S.pop())),
                ("with_top_mut", expect_panic(|| S.with_top_mut(|_| ()))),
                ("release", expect_panic(|| S.release())),
            ] {
                assert!(msg.contains("`S`"), "{what}: {msg}");
            }
            let guard =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| S.enter(t.make(12))));
            assert!(guard.is_err(), "enter inside with_top");
            assert_eq!(outer.n, 10);
        });
        // After the borrows: ordinary writes, the fork's own.
        L.set(t.make(4));
        assert_eq!(S.pop().map(|v| v.n), Some(10));
    });
    assert_eq!(parent.run(|| (L.with(|v| v.n), S.len())), (1, 1));
    drop((snap, parent));
    t.assert_all_dropped();
}

/// Regression (issue 17, fault 10): a `ContextGuard` dropped inside the fork's `with` of an
/// inherited value leaves the context when that borrow ends, as it does in the parent (a
/// borrowed value keeps its context claimed): meanwhile the context cannot be entered.
#[test]
fn fault10_leaving_a_fork_inside_its_borrow_of_an_inherited_value_is_deferred() {
    static L: Local<u32> = Local::named("F10_DEFER").inheritable();
    let parent = Context::new();
    parent.run(|| L.set(1));
    let fork = parent.run(Snapshot::capture).fork();
    for (what, ctx) in [("parent", &parent), ("fork", &fork)] {
        let guard = ctx.enter();
        let mut guard = Some(guard);
        let claimed_inside = L.with(|v| {
            drop(guard.take());
            (*v, ctx.try_enter().is_err())
        });
        assert_eq!(
            claimed_inside,
            (1, true),
            "{what}: entered by another party inside the borrow"
        );
        assert!(ctx.try_enter().is_ok(), "{what}: still claimed after it");
    }
}

/// A value whose `Clone`, when `NEST_CAPTURE` is armed on this thread, captures the current
/// context and records what the nested snapshot shows for `F4_L1` (or the panic's message).
struct NestsCapture {
    _c: Counted,
}

thread_local! {
    static NEST_CAPTURE: Cell<bool> = const { Cell::new(false) };
    static NESTED: std::cell::RefCell<Option<Result<Option<u32>, String>>> =
        const { std::cell::RefCell::new(None) };
}

static F4_L1: Local<u32> = Local::named("F4_L1").inheritable();

impl Clone for NestsCapture {
    fn clone(&self) -> Self {
        if NEST_CAPTURE.with(|n| n.replace(false)) {
            let seen = std::panic::catch_unwind(|| Snapshot::capture().run(|| F4_L1.get()))
                .map_err(common::panic_message);
            NESTED.with(|n| *n.borrow_mut() = Some(seen));
        }
        NestsCapture {
            _c: self._c.clone(),
        }
    }
}

/// Regression (issue 17, fault 4): a capture made inside a value's `Clone` while another
/// capture clones it — the cached capture stale, `F4_L1` changed since — must not return the
/// stale cache (`F4_L1 == 1`). It cannot be given a current frame either (that needs a copy of
/// the very value being cloned, i.e. the same `Clone` again): it panics naming that local. The
/// outer capture is complete and current, and every value is dropped once.
#[test]
fn fault4_a_capture_inside_clone_during_a_capture_is_never_stale() {
    static L2: Local<NestsCapture> = Local::named("F4_L2").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    let outer = ctx.run(|| {
        F4_L1.set(1);
        L2.set(NestsCapture { _c: t.make(2) });
        let _cached = Snapshot::capture();
        F4_L1.set(2);
        L2.with_mut(|_| ()); // its frozen copy is stale: the next capture clones it
        NEST_CAPTURE.with(|n| n.set(true));
        Snapshot::capture()
    });
    let nested = NESTED
        .with(|n| n.borrow_mut().take())
        .expect("the Clone ran");
    match &nested {
        Ok(seen) => panic!("the nested capture returned a frame with F4_L1 = {seen:?}"),
        Err(msg) => assert!(
            msg.contains("F4_L2") && msg.contains("Clone"),
            "the nested capture's panic: {msg}"
        ),
    }
    assert_eq!(outer.run(|| F4_L1.get()), Some(2), "the outer capture");
    assert!(outer.run(|| L2.is_set()));
    // Nothing stale afterwards either.
    ctx.run(|| F4_L1.set(3));
    assert_eq!(ctx.run(Snapshot::capture).run(|| F4_L1.get()), Some(3));
    drop((outer, ctx));
    assert_eq!(t.live(), 0, "every value dropped once");
}

/// Regression (issue 17, fault 4): the nested capture's panic points at the line of that
/// capture (`track_caller`).
#[test]
fn fault4_the_nested_captures_panic_points_at_its_caller() {
    static LINE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    #[derive(Default)]
    struct PanicsNested;
    impl Clone for PanicsNested {
        fn clone(&self) -> Self {
            let _ = (LINE.store(line!(), SeqCst), Snapshot::capture());
            PanicsNested
        }
    }
    static L: Local<PanicsNested> = Local::named("F4_LOCATED").inheritable();
    let ctx = Context::new();
    let (file, at) = common::panic_location(|| {
        ctx.run(|| {
            L.set(PanicsNested);
            Snapshot::capture()
        })
    });
    assert_eq!((file.as_str(), at), (file!(), LINE.load(SeqCst)));
    // Still usable: the next capture panics the same way (nothing half-built was cached).
    let msg = expect_panic(|| ctx.run(Snapshot::capture));
    assert!(msg.contains("F4_LOCATED"), "{msg}");
}

/// Regression (issue 17, fault 4): with no cached capture yet, a capture inside `Clone` used to
/// build again — and clone again — until the stack overflowed (the process aborted). Run in a
/// child process so that an abort fails this test instead of the whole run.
#[test]
fn fault4_a_capture_inside_clone_of_a_first_capture_panics_instead_of_aborting() {
    common::child_must_succeed(
        "child_fault4_capture_inside_clone_of_a_first_capture",
        CHILD_ENV,
        60,
    );
}

#[test]
#[ignore = "run in a child process by fault4_a_capture_inside_clone_of_a_first_capture_panics_instead_of_aborting"]
fn child_fault4_capture_inside_clone_of_a_first_capture() {
    /// Captures in every `Clone`.
    struct AlwaysCaptures(#[allow(dead_code)] Counted);
    impl Clone for AlwaysCaptures {
        fn clone(&self) -> Self {
            let seen = Snapshot::capture().run(|| F4_L1.get());
            assert_eq!(seen, Some(5));
            AlwaysCaptures(self.0.clone())
        }
    }
    static L2: Local<AlwaysCaptures> = Local::named("F4_FIRST").inheritable();
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let t = Tally::new();
    let ctx = Context::new();
    let msg = ctx.run(|| {
        F4_L1.set(5);
        L2.set(AlwaysCaptures(t.make(1)));
        expect_panic(Snapshot::capture)
    });
    assert!(msg.contains("F4_FIRST"), "{msg}");
    drop(ctx);
    assert_eq!(t.live(), 0);
}

/// Regression (issue 17, fault 4, found on the way): a capture whose `Clone` panics must leave
/// the cached capture marked stale; it used to clear the mark before building and keep it
/// cleared on unwind, so the next capture returned the capture from before the last write.
#[test]
fn fault4_a_panicking_clone_does_not_leave_a_stale_cached_capture() {
    static A: Local<u32> = Local::named("F4_STALE_A").inheritable();
    static F: Local<Fragile> = Local::named("F4_STALE_F").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        A.set(1);
        F.set(Fragile {
            n: 1,
            _c: t.make(1),
        });
        let _cached = Snapshot::capture();
        A.set(2);
        F.with_mut(|f| f.n = 2); // F's frozen copy is stale too: the next capture clones it
        FRAGILE_PANICS.with(|p| p.set(true));
        let msg = expect_panic(Snapshot::capture);
        assert!(msg.contains("clone fails"), "{msg}");
        FRAGILE_PANICS.with(|p| p.set(false));
        let s = Snapshot::capture();
        assert_eq!(s.run(|| (A.get(), F.with(|f| f.n))), (Some(2), 2));
    });
    drop(ctx);
    assert_eq!(t.live(), 0);
}

// ---------------------------------------------------------------------------------------------
// Captures and copy-on-write while user code drops a local, leaves the context or writes;
// a fork's inherited values against readers.

/// A value whose `Clone` runs the hook in `CLONE_HOOK` (once), then reports whether the value
/// being cloned was dropped meanwhile (without touching it again if so).
struct Hooked {
    id: u64,
    _c: Counted,
}

thread_local! {
    static CLONE_HOOK: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
}
static DROPPED_IDS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static CLONED_AFTER_DROP: AtomicBool = AtomicBool::new(false);

impl Clone for Hooked {
    fn clone(&self) -> Self {
        let id = self.id;
        let hook = CLONE_HOOK.with(|h| h.borrow_mut().take());
        if let Some(hook) = hook {
            hook();
            if DROPPED_IDS.lock().unwrap().contains(&id) {
                // `self` dangles now: record it and do not read it again.
                CLONED_AFTER_DROP.store(true, SeqCst);
                let t = Tally::new();
                return Hooked { id, _c: t.make(id) };
            }
        }
        Hooked {
            id,
            _c: self._c.clone(),
        }
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        DROPPED_IDS.lock().unwrap().push(self.id);
    }
}

thread_local! {
    static HELD_LOCAL: RefCell<Option<Local<Hooked>>> = const { RefCell::new(None) };
}

/// Regression: a capture's `Clone` that dropped its own non-`static` inheritable local freed the
/// value being cloned (use-after-free), fixed in be68822: a capture pins the slots it reads.
///
/// `Snapshot::capture` ran the user's `Clone` on `&V` inside the slot with nothing keeping the
/// local alive, so `Local::drop` freed the slot, value included, under the `Clone`. The same
/// without re-entrancy: `capture_races_a_local_dropped_on_another_thread`.
#[test]
fn capture_clone_that_drops_its_own_nonstatic_local() {
    common::child_must_succeed(
        "child_capture_clone_that_drops_its_own_nonstatic_local",
        CHILD_ENV,
        60,
    );
}

#[test]
#[ignore = "run in a child process by capture_clone_that_drops_its_own_nonstatic_local"]
fn child_capture_clone_that_drops_its_own_nonstatic_local() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let t = Tally::new();
    let ctx = Context::new();
    HELD_LOCAL.with(|h| *h.borrow_mut() = Some(Local::named("HELD").inheritable()));
    ctx.run(|| {
        HELD_LOCAL.with(|h| {
            h.borrow().as_ref().unwrap().set(Hooked {
                id: 41,
                _c: t.make(41),
            })
        })
    });
    CLONE_HOOK.with(|h| {
        *h.borrow_mut() = Some(Box::new(|| {
            // Drops the local whose value is being cloned.
            let local = HELD_LOCAL.with(|h| h.borrow_mut().take());
            drop(local);
        }))
    });
    let snapshot = ctx.run(Snapshot::capture);
    drop(snapshot);
    assert!(
        !CLONED_AFTER_DROP.load(SeqCst),
        "the value being cloned by a capture was freed under the clone (use-after-free)"
    );
}

static RACE_STARTED: AtomicBool = AtomicBool::new(false);
static RACE_RESUME: AtomicBool = AtomicBool::new(false);
static RACE_DROPPED: AtomicBool = AtomicBool::new(false);
static RACE_UAF: AtomicBool = AtomicBool::new(false);

/// A value whose `Clone` (on one designated thread) pauses until told to go on.
struct Slow(u64);

impl Clone for Slow {
    fn clone(&self) -> Self {
        let n = self.0;
        if !RACE_STARTED.swap(true, SeqCst) {
            let start = std::time::Instant::now();
            while !RACE_RESUME.load(SeqCst) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if RACE_DROPPED.load(SeqCst) {
                RACE_UAF.store(true, SeqCst);
                return Slow(n);
            }
        }
        Slow(self.0)
    }
}

impl Drop for Slow {
    fn drop(&mut self) {
        if self.0 == 7 {
            RACE_DROPPED.store(true, SeqCst);
        }
    }
}

/// Regression: a non-`static` inheritable local dropped on another thread while a capture
/// cloned its value freed the slot under the `Clone` (use-after-free), fixed in be68822.
///
/// Thread A captures its context; thread B, which owns the `Local`, drops it meanwhile. The
/// local's drop detached its slots under each context's detach lock, which the capture never
/// took; now the capture pins the slot and the last pin frees it.
#[test]
fn capture_races_a_local_dropped_on_another_thread() {
    common::child_must_succeed(
        "child_capture_races_a_local_dropped_on_another_thread",
        CHILD_ENV,
        60,
    );
}

#[test]
#[ignore = "run in a child process by capture_races_a_local_dropped_on_another_thread"]
fn child_capture_races_a_local_dropped_on_another_thread() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let local: Local<Slow> = Local::named("RACED").inheritable();
    let ctx = Context::new();
    ctx.run(|| local.set(Slow(7)));
    std::thread::scope(|s| {
        let ctx = &ctx;
        let capturer = s.spawn(move || drop(ctx.run(Snapshot::capture)));
        while !RACE_STARTED.load(SeqCst) {
            std::thread::yield_now();
        }
        drop(local); // frees the slot the other thread is cloning from
        RACE_RESUME.store(true, SeqCst);
        capturer.join().unwrap();
    });
    assert!(
        !RACE_UAF.load(SeqCst),
        "a capture cloned a value that another thread freed meanwhile (use-after-free)"
    );
}

thread_local! {
    static PARKED_GUARD: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
}

/// A value whose `Clone` drops the `ContextGuard` parked in `PARKED_GUARD`.
#[derive(Debug)]
struct GuardDropper;

impl Clone for GuardDropper {
    fn clone(&self) -> Self {
        let g = PARKED_GUARD.with(|p| p.borrow_mut().take());
        drop(g);
        GuardDropper
    }
}

/// Regression: a `ContextGuard` dropped inside a capture's `Clone` left its context claimed
/// forever, fixed in be68822.
///
/// The slot was borrowed while `Clone` ran, so the guard's release was deferred to the end of
/// that borrow; but the capture's borrow only decremented the count and never settled the
/// deferred release: nobody could enter the context again, and dropping it leaked its values.
#[test]
fn a_context_guard_dropped_inside_a_capture_clone_releases_the_context() {
    static V: Local<GuardDropper> = Local::named("GUARD_DROPPER").inheritable();
    within(60, || {
        let ctx: &'static Context = common::keep(Context::new());
        let g = ctx.enter();
        V.set(GuardDropper);
        PARKED_GUARD.with(|p| *p.borrow_mut() = Some(g));
        let snapshot = Snapshot::capture(); // the Clone drops `g`
        assert_ne!(context_local::ContextId::current(), ctx.id(), "left");
        drop(snapshot);
        assert!(
            !ctx.is_entered(),
            "the context stays claimed after its only guard was dropped"
        );
        assert!(
            ctx.try_enter().is_ok(),
            "the context cannot be entered again"
        );
    });
}

/// Regression: in a fork that had not written the local yet, `with` lent the frozen inherited
/// value without a borrow mark, so a `with_mut` inside it succeeded (creating the fork's own copy
/// while the closure went on reading the inherited one) where the parent refuses with
/// `Borrowed`, fixed in b2f3c00 (issue 17, fault 10).
#[test]
fn with_mut_inside_with_is_refused_in_a_fork_as_in_its_parent() {
    static L: Local<u32> = Local::named("FORK_REENTRY").inheritable();
    within(60, || {
        let parent = Context::new();
        let in_parent = parent.run(|| {
            L.set(1);
            L.with(|_| L.try_with_mut(|v| *v += 1).map_err(|e| e.kind()))
        });
        assert_eq!(in_parent, Err(AccessErrorKind::Borrowed));
        let fork = parent.run(Snapshot::capture).fork();
        let in_fork = fork.run(|| {
            L.with(|outer| {
                let r = L.try_with_mut(|v| *v += 1).map_err(|e| e.kind());
                (r, *outer, L.get())
            })
        });
        assert_eq!(
            in_fork.0,
            Err(AccessErrorKind::Borrowed),
            "in the fork, with_mut inside with succeeded (outer saw {}, the local now {:?})",
            in_fork.1,
            in_fork.2
        );
    });
}

thread_local! {
    static COW_GUARD: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
}

/// A value whose `Clone` drops the `ContextGuard` parked in `COW_GUARD` (once).
#[derive(Debug)]
struct CowDropper(u32);

impl Clone for CowDropper {
    fn clone(&self) -> Self {
        drop(COW_GUARD.with(|g| g.borrow_mut().take()));
        CowDropper(self.0)
    }
}

/// Regression, fixed in be68822: a fork's first write of an inherited value ran the user's
/// `Clone` and then created and wrote the fork's slot — and ran the user's `with_mut` closure —
/// in the context looked up before `Clone` ran. A `Clone` that dropped the fork's
/// `ContextGuard` released the fork at once, so another thread could enter it while this one
/// went on writing it (two parties in one context: a data race on the slot). Now the copy holds
/// the context busy (the guard's release is deferred until the copy is done), and a context
/// left inside the copy is a panic naming the local before anything is written: the other
/// thread then enters a consistent fork, with the inherited value.
#[test]
fn a_forks_copy_on_write_keeps_the_fork_claimed() {
    static L: Local<CowDropper> = Local::named("COW_CLAIM").inheritable();
    within(60, || {
        let parent = Context::new();
        parent.run(|| L.set(CowDropper(1)));
        let fork: &'static Context = common::keep(parent.run(Snapshot::capture).fork());
        COW_GUARD.with(|g| *g.borrow_mut() = Some(fork.enter()));
        let msg = expect_panic(|| L.with_mut(|v| v.0 = 2));
        assert!(msg.contains("`COW_CLAIM`") && msg.contains("left"), "{msg}");
        let seen = std::thread::spawn(move || {
            let entered = fork.try_enter().ok();
            let value = entered.as_ref().map(|_| L.try_with(|v| v.0));
            (entered.is_some(), value)
        })
        .join()
        .unwrap();
        assert_eq!(seen, (true, Some(Ok(1))), "the fork, entered afterwards");
    });
}

/// Known limitation (the `ignore` reason), against DESIGN.md ("A fork sees every inheritable
/// local … as it was at capture"). The context's cached capture (`CtxInner::capture_own`,
/// context/capture.rs) and each slot's frozen copy (`SlotHeader::frozen`) are invalidated only
/// by the runtime's own writes (`set`, `with_mut`, `push`, …: `mark_changed`/`thaw`). An
/// inheritable value that is `Clone + Sync` with interior mutability — `OnceLock`, a struct of
/// atomics with a manual `Clone` — changed through `with(|v| …)` is not seen by later captures:
/// every child gets the copy frozen by an earlier capture, silently.
///
/// A fix: an inheritable local's `with` also marks the context changed and thaws the slot (one
/// relaxed store each; only for inheritable locals), or document that inheritable values may
/// change only through `set`/`with_mut` and reject interior mutability in the docs.
#[test]
#[ignore = "known limitation (documented on Snapshot): a change made through interior mutability inside `with` does not invalidate a cached capture"]
fn a_capture_sees_a_change_made_through_a_shared_reference() {
    static L: Local<std::sync::OnceLock<u32>> = Local::named("ONCE").inheritable();
    within(60, || {
        let ctx = Context::new();
        ctx.run(|| {
            L.set(std::sync::OnceLock::new());
            let before = Snapshot::capture();
            assert_eq!(before.run(|| L.with(|o| o.get().copied())), None);
            L.with(|o| o.set(5).unwrap());
            let after = Snapshot::capture();
            assert_eq!(
                after.run(|| L.with(|o| o.get().copied())),
                Some(5),
                "a child started after the change"
            );
        });
    });
}

static WRITE_A: Local<u32> = Local::named("WRITE_DURING_A").inheritable();
static WRITE_B: Local<WritesA> = Local::named("WRITE_DURING_B").inheritable();
thread_local! {
    static WRITE_A_ON_CLONE: Cell<Option<u32>> = const { Cell::new(None) };
}

/// A value whose `Clone` (when armed) sets `WRITE_A`.
#[derive(Debug)]
struct WritesA;

impl Clone for WritesA {
    fn clone(&self) -> Self {
        if let Some(v) = WRITE_A_ON_CLONE.with(Cell::take) {
            WRITE_A.set(v);
        }
        WritesA
    }
}

/// Regression: a write made by user code while a capture was being built (here B's `Clone` sets
/// A, already visited) was lost from the cached capture, fixed in be68822.
///
/// The build ran the user's `Clone`s and *then* cleared the context's "changed" mark, wiping the
/// mark of that write: every later capture returned A's old value.
#[test]
fn a_write_during_a_capture_is_seen_by_the_next_capture() {
    within(60, || {
        let ctx = Context::new();
        ctx.run(|| {
            WRITE_A.set(1);
            WRITE_B.set(WritesA);
            WRITE_A_ON_CLONE.with(|w| w.set(Some(2)));
            let first = Snapshot::capture(); // B's Clone sets A = 2 after A was captured
            assert_eq!(WRITE_A.get(), Some(2));
            assert_eq!(first.run(|| WRITE_A.get()), Some(1));
            let second = Snapshot::capture();
            assert_eq!(
                second.run(|| WRITE_A.get()),
                Some(2),
                "a capture made after A was set to 2"
            );
        });
    });
}

/// Regression: a dropped fork's inherited values lived on with any `Arc` of its storage, fixed in
/// e95cded: the fork's teardown releases its inherited frame.
///
/// Another thread's `for_each` of *any* local holds every live context; it kept those values alive
/// after the fork, its parent and the snapshot were gone, and then dropped them on the iterating
/// thread, inside its iteration, with that thread's context current (DESIGN.md: "Every value is
/// dropped exactly once: a shared one when the last context or snapshot holding it goes").
#[test]
fn a_dropped_forks_inherited_values_go_with_it() {
    common::child_must_succeed(
        "child_a_dropped_forks_inherited_values_go_with_it",
        CHILD_ENV,
        60,
    );
}

#[test]
#[ignore = "run in a child process by a_dropped_forks_inherited_values_go_with_it"]
fn child_a_dropped_forks_inherited_values_go_with_it() {
    static L: Local<Counted> = Local::named("INHERITED_ARC").inheritable();
    static OTHER: Local<u32> = Local::named("INHERITED_ARC_OTHER");
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let t = Tally::new();
    let holder = Context::new();
    holder.run(|| OTHER.set(1));
    let parent = Context::new();
    parent.run(|| L.set(t.make(1)));
    let fork = parent.run(Snapshot::capture).fork(); // the snapshot is dropped here
    drop(parent);
    assert_eq!(t.live(), 1, "only the frozen copy the fork inherited");
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut once = Some((started_tx, go_rx));
        OTHER.for_each(|_, _| {
            if let Some((started_tx, go_rx)) = once.take() {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            }
        });
    });
    started.recv().unwrap();
    drop(fork); // the fork goes: nothing holds the inherited value any more
    let live = t.live();
    go.send(()).unwrap();
    reader.join().unwrap();
    assert_eq!(
        live, 0,
        "the fork's inherited value outlived the fork (kept by another thread's for_each)"
    );
}

thread_local! {
    /// A guard that a `Clone` or initializer below drops (leaving its context).
    static PARKED: RefCell<Option<ContextGuard<'static>>> = const { RefCell::new(None) };
    /// Whether `Leaver::clone` panics after leaving.
    static PANIC_AFTER_LEAVING: Cell<bool> = const { Cell::new(false) };
}

fn leave_parked() {
    drop(PARKED.with(|p| p.borrow_mut().take()));
}

/// A value whose `Clone` leaves the context parked in `PARKED` (and then panics, if asked).
#[derive(Debug)]
struct Leaver;

impl Clone for Leaver {
    fn clone(&self) -> Self {
        leave_parked();
        if PANIC_AFTER_LEAVING.with(Cell::get) {
            panic!("clone failed after leaving its context");
        }
        Leaver
    }
}

static TARGET: OnceLock<&'static Context> = OnceLock::new();
static PROBED: AtomicBool = AtomicBool::new(false);
static SECOND_PARTY: AtomicBool = AtomicBool::new(false);

/// A value whose `Clone` asks another thread to enter `TARGET` while the clone runs.
#[derive(Debug)]
struct Prober;

impl Clone for Prober {
    fn clone(&self) -> Self {
        if let Some(ctx) = TARGET.get() {
            PROBED.store(true, SeqCst);
            let entered =
                std::thread::scope(|s| s.spawn(|| ctx.try_enter().is_ok()).join().unwrap());
            if entered {
                SECOND_PARTY.store(true, SeqCst);
            }
        }
        Prober
    }
}

static CAP_LEAVER: Local<Leaver> = Local::named("CAP_LEAVER").inheritable();
static CAP_PROBER: Local<Prober> = Local::named("CAP_PROBER").inheritable();

/// Regression: a capture whose `Clone` dropped its context's guard let the context go in the
/// middle of the build, fixed in 08ce2e6: a capture holds its context busy while it runs user
/// code.
///
/// The build settled the deferred release after that slot's clone, then went on reading the next
/// slots (running their `Clone` on `&V` inside them) and wrote the holder-only cached capture
/// while the context was idle: another thread could enter it and write (or drop) those very
/// values meanwhile, a data race.
#[test]
fn a_capture_keeps_its_context_after_a_clone_left_it() {
    within(60, || {
        let ctx: &'static Context = keep(Context::new());
        let g = ctx.enter();
        CAP_LEAVER.set(Leaver); // first binding: captured first
        CAP_PROBER.set(Prober); // captured after the context was left
        PARKED.with(|p| *p.borrow_mut() = Some(g));
        TARGET.set(ctx).unwrap();
        // A fix may also refuse the capture with a panic: only the second party matters.
        let _ = std::panic::catch_unwind(Snapshot::capture);
        assert_ne!(context_local::ContextId::current(), ctx.id(), "left");
        assert!(PROBED.load(SeqCst), "the second value was captured");
        assert!(
            !SECOND_PARTY.load(SeqCst),
            "another thread entered the context while this thread was still capturing its values"
        );
    });
}

static COW_LEAVER: Local<Leaver> = Local::named("COW_LEAVER").inheritable();

/// Regression: a fork's copy-on-write `Clone` that dropped the fork's guard and then panicked
/// left the fork claimed forever (the deferred release was never settled on unwind), fixed in
/// 08ce2e6; the same for an initializer:
/// `an_initializer_that_leaves_and_panics_releases_its_context` (tests/teardown.rs).
#[test]
fn a_copy_on_write_clone_that_leaves_and_panics_releases_the_fork() {
    within(60, || {
        let fork: &'static Context = keep(Context::new().run(|| {
            COW_LEAVER.set(Leaver);
            Snapshot::capture().fork()
        }));
        let home = Context::new();
        home.run(|| {
            let g = fork.enter();
            PARKED.with(|p| *p.borrow_mut() = Some(g));
            PANIC_AFTER_LEAVING.with(|p| p.set(true));
            let msg = expect_panic(|| COW_LEAVER.set(Leaver)); // copy-on-write: clones
            PANIC_AFTER_LEAVING.with(|p| p.set(false));
            assert!(msg.contains("clone failed"), "{msg}");
        });
        assert!(
            !fork.is_entered(),
            "the fork stays claimed after its guard was dropped"
        );
        assert!(fork.try_enter().is_ok(), "the fork cannot be entered again");
    });
}

/// An inheritable value whose copies (made by a capture) log where they are dropped.
struct Noted {
    log: Log,
    copy: bool,
}

impl Clone for Noted {
    fn clone(&self) -> Self {
        Noted {
            log: self.log.clone(),
            copy: true,
        }
    }
}

impl Drop for Noted {
    fn drop(&mut self) {
        if self.copy {
            self.log
                .push(format!("copy dropped on {:?}", thread::current().id()));
        }
    }
}

static FRAMED: Local<Noted> = Local::named("FRAMED").inheritable();

/// Regression test (added in 2a96a78) for the wait of a fork's teardown for readers of its
/// inherited frame (`CtxInner::wait_frame_readers`), which had no test that failed without it.
///
/// A fork that only inherited a value holds the last reference to its frame. Another thread's
/// `for_each` is reading that inherited value (parked in its callback) when the fork is dropped.
/// Readers borrow the frame without a reference count, so the fork's teardown must wait for them:
/// the copy is dropped by the dropping thread, after the reader's last use of it, before
/// `drop(fork)` returns. Without the wait the frame is freed under the reader (a use-after-free
/// ASan reports) and the log shows the drop before the reader's read.
#[test]
fn a_fork_dropped_while_its_inherited_value_is_read_waits_for_the_reader() {
    within(30, || {
        let log = Log::new();
        let fork = {
            let parent = Context::new();
            let snapshot = parent.run(|| {
                FRAMED.set(Noted {
                    log: log.clone(),
                    copy: false,
                });
                context_local::Snapshot::capture()
            });
            let fork = snapshot.fork();
            drop(snapshot);
            drop(parent); // the fork's frame is now the only holder of the copy
            fork
        };
        let reader_log = log.clone();
        let reader = Parked::start(move |park| {
            FRAMED.for_each(|_, v| {
                if v.copy {
                    park();
                    reader_log.push(format!("reader read a copy: {}", v.copy));
                }
            })
        });
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            reader.finish();
        });
        log.push("drop starts");
        drop(fork);
        log.push("drop ended");
        releaser.join().unwrap();
        let me = format!("{:?}", thread::current().id());
        assert_eq!(
            log.entries(),
            [
                "drop starts".to_owned(),
                "reader read a copy: true".to_owned(),
                format!("copy dropped on {me}"),
                "drop ended".to_owned(),
            ]
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Part 12: captures that update the last frame (a write then a capture copies what changed).

/// A capture after writes builds on the context's last capture and copies only the locals
/// written since: every capture must still see exactly the values bound, whatever mix of
/// writes came before (one local, the same local again, more locals than a frame keeps apart
/// from its shared bulk, unbinding, stack pushes and pops, a stack guard dropped outside its
/// context, a new local's first write), and no earlier snapshot may change when a later one is
/// built from it. Every value — the clones the captures froze included — is dropped exactly
/// once.
#[test]
fn captures_after_writes_see_exactly_what_is_bound_and_never_change_after() {
    static LS: [Local<Counted>; 20] = [const { Local::new().inheritable() }; 20];
    static S: LocalStack<Counted> = LocalStack::named("P12_STACK").inheritable();
    within(120, || {
        let t = Tally::new();
        let ctx = Context::new();
        // What a fork must see: the locals' values, and the stack, bottom first.
        type View = (Vec<Option<u64>>, Vec<u64>);
        let view = || -> View {
            let locals = LS.iter().map(|l| l.try_with(|v| v.n).ok()).collect();
            let (here, mut stack) = (ContextId::current(), Vec::new());
            S.for_each(|id, vs| {
                if id == here {
                    stack.extend(vs.iter().map(|v| v.n));
                }
            });
            (locals, stack)
        };
        let mut model: View = (vec![None; LS.len()], Vec::new());
        let mut kept: Vec<(Snapshot, View)> = Vec::new();
        let mut guards = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut uid = 0u64;
        for step in 0..3_000u64 {
            // 0..8: writes between two captures, more than a frame keeps apart (8) at times.
            let writes = [0, 1, 1, 1, 2, 3, 9, 14][next(8) as usize];
            for _ in 0..writes {
                uid += 1;
                let k = next(LS.len() as u64 + 3) as usize;
                ctx.run(|| match k {
                    k if k < LS.len() && next(5) == 0 => {
                        LS[k].take();
                        model.0[k] = None;
                    }
                    k if k < LS.len() => {
                        LS[k].set(t.make(uid));
                        model.0[k] = Some(uid);
                    }
                    k if k == LS.len() => {
                        S.push(t.make(uid));
                        model.1.push(uid);
                    }
                    k if k == LS.len() + 1 => {
                        if S.pop().is_some() {
                            model.1.pop();
                        }
                    }
                    _ => {
                        guards.push((S.enter(t.make(uid)), uid));
                        model.1.push(uid);
                    }
                });
            }
            // A guard dropped outside its context, which is idle: removed at once.
            if next(4) == 0 {
                if let Some((g, n)) = guards.pop() {
                    drop(g);
                    // (Unless a pop took its element already.)
                    if let Some(at) = model.1.iter().position(|&v| v == n) {
                        model.1.remove(at);
                    }
                }
            }
            let snapshot = ctx.run(Snapshot::capture);
            assert_eq!(snapshot.run(view), model, "step {step}: a fresh capture");
            if next(3) == 0 {
                kept.push((snapshot, model.clone()));
            }
            if kept.len() > 24 {
                kept.remove(next(24) as usize);
            }
        }
        for (i, (snapshot, seen)) in kept.iter().enumerate() {
            assert_eq!(&snapshot.run(view), seen, "kept snapshot {i} changed");
        }
        drop(kept);
        drop(guards);
        drop(ctx);
        assert_eq!(
            t.live(),
            0,
            "every value and every frozen clone dropped once"
        );
    });
}

//! `Local<T>` through the facade: binding, borrowing, errors, initializers, drops.

mod common;

use common::{expect_panic, Tally};
use context_local::{AccessErrorKind, Context, Local};
use std::thread;

#[test]
fn set_replace_take_release_and_is_set() {
    static L: Local<String> = Local::named("L");
    assert!(!L.is_set());
    assert_eq!(L.get(), None);
    L.set("a".into());
    assert!(L.is_set());
    assert_eq!(L.replace("b".into()).as_deref(), Some("a"));
    assert_eq!(L.get().as_deref(), Some("b"));
    assert_eq!(L.take().as_deref(), Some("b"));
    assert_eq!(L.take(), None);
    L.set("c".into());
    L.release();
    assert!(!L.is_set());
    L.release(); // releasing nothing is fine
}

#[test]
fn each_thread_sees_its_own_value() {
    static L: Local<u64> = Local::named("L");
    L.set(1);
    let handles: Vec<_> = (2..10u64)
        .map(|n| {
            thread::spawn(move || {
                assert!(!L.is_set(), "a new thread must start unbound");
                L.set(n);
                thread::yield_now();
                L.with(|v| *v)
            })
        })
        .collect();
    let got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, (2..10).collect::<Vec<_>>());
    assert_eq!(L.get(), Some(1));
}

#[test]
fn with_on_unbound_panics_naming_the_local() {
    static REQUEST: Local<u8> = Local::named("REQUEST");
    let msg = expect_panic(|| REQUEST.with(|v| *v));
    assert!(msg.contains("`REQUEST`"), "{msg}");
    assert!(msg.contains("not bound"), "{msg}");
    let err = REQUEST.try_with(|v| *v).unwrap_err();
    assert_eq!(err.kind(), AccessErrorKind::Unbound);
    assert_eq!(err.name(), "REQUEST");
}

#[test]
fn unnamed_local_is_named_by_its_type() {
    static L: Local<Vec<u8>> = Local::new();
    let err = L.try_with(|_| ()).unwrap_err();
    assert!(err.to_string().contains("alloc::vec::Vec<u8>"), "{err}");
}

#[test]
fn mutable_access_inside_with_is_refused() {
    static L: Local<u32> = Local::named("COUNTER");
    L.set(1);
    L.with(|v| {
        let err = L.try_with_mut(|v| *v += 1).unwrap_err();
        assert_eq!(err.kind(), AccessErrorKind::Borrowed);
        assert_eq!(err.name(), "COUNTER");
        // Nested shared borrows are fine.
        assert_eq!(L.with(|w| *w + *v), 2);
        let msg = expect_panic(|| L.set(5));
        assert!(
            msg.contains("`COUNTER`") && msg.contains("borrowed"),
            "{msg}"
        );
    });
    L.with_mut(|v| {
        assert_eq!(
            L.try_with(|_| ()).unwrap_err().kind(),
            AccessErrorKind::BorrowedMut
        );
        assert_eq!(
            L.try_with_mut(|_| ()).unwrap_err().kind(),
            AccessErrorKind::BorrowedMut
        );
        *v += 10;
    });
    assert_eq!(L.get(), Some(11));
}

#[test]
fn a_panicking_closure_leaves_the_local_usable() {
    static L: Local<u32> = Local::named("L");
    L.set(1);
    expect_panic(|| L.with(|_| panic!("in with")));
    expect_panic(|| {
        L.with_mut(|v| {
            *v = 2;
            panic!("in with_mut")
        })
    });
    assert_eq!(L.get(), Some(2));
    L.with_mut(|v| *v += 1);
    assert_eq!(L.replace(7), Some(3));
}

#[test]
fn with_init_binds_lazily_per_context() {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fn init() -> Vec<u32> {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![0]
    }
    static L: Local<Vec<u32>> = Local::with_init("L", init);
    thread::spawn(|| {
        assert!(!L.is_set(), "is_set does not run the initializer");
        assert_eq!(L.take(), None, "take does not run the initializer");
        L.with_mut(|v| v.push(1));
        assert_eq!(L.get(), Some(vec![0, 1]));
        L.release();
        assert_eq!(
            L.try_with(|v| v.clone()),
            Ok(vec![0]),
            "init runs again after release"
        );
        Context::new().run(|| assert_eq!(L.with(Vec::len), 1));
    })
    .join()
    .unwrap();
    assert_eq!(CALLS.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[test]
fn a_panicking_initializer_binds_nothing() {
    static FAIL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    static L: Local<u32> = Local::with_init("L", || {
        if FAIL.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("init failed");
        }
        9
    });
    let msg = expect_panic(|| L.with(|v| *v));
    assert!(msg.contains("init failed"));
    assert!(!L.is_set());
    assert_eq!(L.with(|v| *v), 9);
}

#[test]
fn an_initializer_that_binds_the_local_itself_wins() {
    static L: Local<u32> = Local::with_init("L", || {
        L.set(1);
        2
    });
    assert_eq!(L.with(|v| *v), 1);
}

#[test]
fn each_value_is_dropped_exactly_once() {
    static L: Local<common::Counted> = Local::named("L");
    let t = Tally::new();
    L.set(t.make(1));
    L.set(t.make(2)); // drops 1
    assert_eq!(t.dropped(), 1);
    let old = L.replace(t.make(3)).unwrap();
    assert_eq!(old.n, 2);
    drop(old);
    let taken = L.take().unwrap();
    assert_eq!(taken.n, 3);
    drop(taken);
    L.set(t.make(4));
    L.release();
    assert_eq!(t.live(), 0);
    // Thread exit.
    let t2 = t.clone();
    thread::spawn(move || L.set(t2.make(5))).join().unwrap();
    // Context drop.
    let ctx = Context::new();
    ctx.run(|| L.set(t.make(6)));
    assert_eq!(t.live(), 1);
    drop(ctx);
    assert_eq!(t.live(), 0);
    assert_eq!(t.created(), 6);
}

#[test]
fn two_hundred_sequential_threads_never_see_stale_values() {
    static L: Local<u64> = Local::named("L");
    let before = L.contexts();
    for n in 0..200u64 {
        thread::spawn(move || {
            assert_eq!(L.get(), None, "thread {n} saw a dead thread's value");
            L.set(n);
            assert_eq!(L.get(), Some(n));
        })
        .join()
        .unwrap();
    }
    assert_eq!(L.contexts(), before);
}

#[test]
fn a_values_drop_may_use_context_locals() {
    static LOG: Local<Vec<&'static str>> = Local::with_init("LOG", Vec::new);
    static SELF_REF: Local<Noisy> = Local::named("SELF_REF");
    struct Noisy;
    impl Drop for Noisy {
        fn drop(&mut self) {
            // Runs outside any borrow: the local it lives in can be read (or not) right here.
            let seen = match SELF_REF.try_with(|_| ()) {
                Ok(()) => "dropped while the next value was bound",
                Err(_) => "dropped after release",
            };
            LOG.with_mut(|l| l.push(seen));
        }
    }
    SELF_REF.set(Noisy);
    SELF_REF.set(Noisy); // the first drops after the second is in place
    SELF_REF.release(); // the second drops after the entry is gone
    assert_eq!(
        LOG.with(Vec::clone),
        [
            "dropped while the next value was bound",
            "dropped after release"
        ]
    );
    // At thread exit, too: the drop can bind values, which are dropped in turn.
    thread::spawn(|| {
        SELF_REF.set(Noisy);
    })
    .join()
    .unwrap();
}

#[test]
fn for_each_and_contexts_see_every_thread() {
    use std::sync::{Arc, Barrier};
    static L: Local<u64> = Local::named("L");
    let ready = Arc::new(Barrier::new(5));
    let done = Arc::new(Barrier::new(5));
    let handles: Vec<_> = (0..4u64)
        .map(|n| {
            let (ready, done) = (ready.clone(), done.clone());
            thread::spawn(move || {
                L.set(100 + n);
                ready.wait();
                done.wait();
            })
        })
        .collect();
    ready.wait();
    assert_eq!(L.contexts(), 4);
    let mut seen = Vec::new();
    L.for_each(|id, v| seen.push((id, *v)));
    seen.sort_by_key(|x| x.1);
    assert_eq!(
        seen.iter().map(|x| x.1).collect::<Vec<_>>(),
        [100, 101, 102, 103]
    );
    let mut ids: Vec<_> = seen.iter().map(|x| x.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4, "distinct live contexts have distinct ids");
    done.wait();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(L.contexts(), 0);
}

#[test]
fn changing_a_local_inside_its_own_for_each_panics() {
    static L: Local<u8> = Local::named("ITER");
    L.set(1);
    let msg = expect_panic(|| L.for_each(|_, _| L.set(2)));
    assert!(msg.contains("`ITER`") && msg.contains("for_each"), "{msg}");
    // And the local still works afterwards.
    L.set(3);
    assert_eq!(L.get(), Some(3));
}

#[test]
fn a_dropped_non_static_local_frees_its_values_everywhere() {
    let t = Tally::new();
    let ctx = Context::new();
    {
        let local: Local<common::Counted> = Local::named("HEAP");
        ctx.run(|| local.set(t.make(1)));
        local.set(t.make(2));
        assert_eq!(t.live(), 2);
    } // `local` dropped here, with a value in two contexts
    assert_eq!(t.live(), 0);
    // A new local (likely reusing the index) sees nothing in either context.
    let other: Local<u64> = Local::named("OTHER");
    assert!(!other.is_set());
    assert!(!ctx.run(|| other.is_set()));
    other.set(5);
    assert_eq!(other.get(), Some(5));
}

#[test]
fn access_from_a_thread_local_destructor_after_teardown_is_an_error() {
    static L: Local<u32> = Local::named("LATE");
    struct Late(std::sync::mpsc::Sender<String>);
    impl Drop for Late {
        fn drop(&mut self) {
            let r = L.try_with(|v| *v);
            let _ = self.0.send(match r {
                Ok(v) => format!("ok {v}"),
                Err(e) => format!("{:?}", e.kind()),
            });
        }
    }
    thread_local! { static LATE: std::cell::RefCell<Option<Late>> = const { std::cell::RefCell::new(None) }; }
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        // Registered before the context exists, so (destructors run in reverse order of
        // registration on Linux) it runs after the context's teardown.
        LATE.with(|l| *l.borrow_mut() = Some(Late(tx)));
        L.set(1);
    })
    .join()
    .unwrap();
    // Thread-local destructors run in reverse order of registration on Linux, so `LATE`'s runs
    // after the context's teardown: the access must be refused, not UB and not an abort.
    assert_eq!(rx.recv().unwrap(), "Destroyed");
}

/// `try_with_mut` inside the same local's `for_each` is an error, not a panic (and `with_mut`
/// panics naming the local); the iteration and the value are unharmed.
#[test]
fn changing_a_local_inside_its_own_for_each_is_an_error_naming_it() {
    static L: Local<u32> = Local::named("ITERATED");
    L.set(1);
    let mut seen = Vec::new();
    L.for_each(|_, v| {
        let err = L.try_with_mut(|v| *v += 1).unwrap_err();
        assert_eq!(err.kind(), AccessErrorKind::Iterating);
        assert!(err.to_string().contains("`ITERATED`"), "{err}");
        let msg = expect_panic(|| L.with_mut(|v| *v += 1));
        assert!(
            msg.contains("`ITERATED`") && msg.contains("for_each"),
            "{msg}"
        );
        seen.push(*v);
    });
    assert_eq!(seen, [1]);
    assert_eq!(L.get(), Some(1));
    L.release();
}

//! Explicit contexts: isolation, entering, moving between threads, ids, drops.

mod common;

use common::{expect_panic, Tally};
use context_local::{Context, ContextId, Local, LocalStack};
use std::thread;

static USER: Local<String> = Local::named("USER");
static STACK: LocalStack<u32> = LocalStack::named("STACK");

#[test]
fn explicit_contexts_are_isolated_from_the_thread_and_each_other() {
    USER.set("thread".into());
    let (a, b) = (Context::new(), Context::new());
    a.run(|| {
        assert!(!USER.is_set());
        USER.set("a".into());
        b.run(|| {
            assert!(!USER.is_set());
            USER.set("b".into());
        });
        assert_eq!(USER.get().as_deref(), Some("a"));
    });
    assert_eq!(USER.get().as_deref(), Some("thread"));
    assert_eq!(b.run(|| USER.get()).as_deref(), Some("b"));
}

#[test]
fn entering_twice_is_an_error_not_ub() {
    let ctx = Context::new();
    let guard = ctx.enter();
    assert!(ctx.try_enter().is_err());
    let msg = expect_panic(|| ctx.run(|| ()));
    assert!(msg.contains("already entered"), "{msg}");
    thread::scope(|s| {
        s.spawn(|| assert!(ctx.try_enter().is_err(), "entered on another thread"))
            .join()
            .unwrap();
    });
    drop(guard);
    thread::scope(|s| {
        s.spawn(|| ctx.run(|| STACK.push(1))).join().unwrap();
    });
    assert_eq!(ctx.run(|| STACK.pop()), Some(1));
}

#[test]
fn a_context_carries_its_values_across_threads() {
    let ctx = Context::new();
    ctx.run(|| USER.set("task".into()));
    let ctx = thread::spawn(move || {
        assert_eq!(ctx.run(|| USER.get()).as_deref(), Some("task"));
        ctx.run(|| USER.set("moved".into()));
        ctx
    })
    .join()
    .unwrap();
    assert_eq!(ctx.run(|| USER.get()).as_deref(), Some("moved"));
}

#[test]
fn dropping_a_context_drops_its_values_on_the_dropping_thread() {
    static L: Local<common::Counted> = Local::named("L");
    static S: LocalStack<common::Counted> = LocalStack::named("S");
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        L.set(t.make(1));
        S.push(t.make(2));
        S.push(t.make(3));
    });
    assert_eq!(L.contexts(), 1);
    assert_eq!(t.live(), 3);
    drop(ctx);
    assert_eq!(t.live(), 0);
    assert_eq!((L.contexts(), S.contexts()), (0, 0));
}

#[test]
fn recycled_ids_never_show_a_dead_contexts_values() {
    static L: Local<u64> = Local::named("L");
    let mut ids = std::collections::HashSet::new();
    for n in 0..500u64 {
        let ctx = Context::new();
        ids.insert(ctx.id());
        ctx.run(|| {
            assert_eq!(L.get(), None, "context {n} saw a dead context's value");
            L.set(n);
        });
    }
    assert!(ids.len() < 500, "ids are recycled (dense)");
}

#[test]
fn ids_of_live_contexts_are_distinct_and_current_follows_entering() {
    let a = Context::new();
    let b = Context::new();
    assert_ne!(a.id(), b.id());
    let here = ContextId::current();
    assert_ne!(here, a.id());
    assert_eq!(a.run(ContextId::current), a.id());
    let ga = a.enter();
    let gb = b.enter();
    assert_eq!(ContextId::current(), b.id());
    drop(gb);
    assert_eq!(ContextId::current(), a.id());
    drop(ga);
    assert_eq!(ContextId::current(), here);
    assert!(!a.is_entered());
}

#[test]
fn context_guards_dropped_out_of_order_each_leave_their_own_entry() {
    static L: Local<&str> = Local::named("L");
    L.set("own");
    let own = ContextId::current();
    let (a, b) = (Context::new(), Context::new());
    a.run(|| L.set("a"));
    b.run(|| L.set("b"));
    let ga = a.enter();
    let gb = b.enter();
    drop(ga);
    // `a` is left (anyone may enter it now); `b` stays current.
    assert!(!a.is_entered());
    assert_eq!(ContextId::current(), b.id());
    assert_eq!(L.get(), Some("b"));
    drop(gb);
    // Both gone: back in the thread's own context, not in `a`.
    assert_eq!(ContextId::current(), own);
    assert_eq!(L.get(), Some("own"));
    assert_eq!(a.run(|| L.get()), Some("a"));
    assert_eq!(b.run(|| L.get()), Some("b"));
    L.release();
}

#[test]
fn dropping_a_context_whose_guard_was_leaked_is_an_error_not_ub() {
    let ctx = Context::new();
    let msg = thread::spawn(move || {
        std::mem::forget(ctx.enter());
        expect_panic(move || drop(ctx))
    })
    .join()
    .unwrap();
    assert!(msg.contains("dropped while still entered"), "{msg}");
}

#[test]
fn contexts_and_locals_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Context>();
    send_sync::<ContextId>();
    send_sync::<Local<String>>();
    send_sync::<LocalStack<String>>();
}

#[test]
fn a_panicking_drop_at_context_drop_still_drops_the_rest_and_frees_the_context() {
    static BOMB: Local<Bomb> = Local::named("BOMB");
    static REST: LocalStack<common::Counted> = LocalStack::named("REST");
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    let t = Tally::new();
    let ctx = Context::new();
    let id = ctx.id();
    ctx.run(|| {
        BOMB.set(Bomb);
        REST.push(t.make(1));
        REST.push(t.make(2));
    });
    let msg = expect_panic(move || drop(ctx));
    assert_eq!(msg, "bomb");
    assert_eq!(t.live(), 0, "the other values were dropped");
    assert_eq!((BOMB.contexts(), REST.contexts()), (0, 0));
    // The id was unregistered: holding enough new contexts exhausts the free ids, ours included.
    // Other tests running in parallel may take it first and hold it a while, so retry: an id
    // that was never unregistered never comes back, however long we wait.
    let came_back = (0..200).any(|_| {
        let again: Vec<Context> = (0..1000).map(|_| Context::new()).collect();
        let found = again.iter().any(|c| c.id() == id);
        if !found {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        found
    });
    assert!(came_back, "context {id:?} was never unregistered");
}

#[test]
fn iterating_inside_own_with_mut_in_an_outer_context_panics_instead_of_deadlocking() {
    static L: Local<u8> = Local::named("OUTER");
    L.set(1);
    let inner = Context::new();
    let msg = expect_panic(|| L.with_mut(|_| inner.run(|| L.for_each(|_, _| ()))));
    assert!(msg.contains("`OUTER`") && msg.contains("with_mut"), "{msg}");
    assert_eq!(L.get(), Some(1));
}

#[test]
fn a_guard_dropped_while_another_thread_drops_its_context_does_nothing() {
    use std::sync::mpsc;
    static S: LocalStack<common::Counted> = LocalStack::named("S");
    static HOLD: Local<Hold> = Local::named("HOLD");
    /// Keeps the context's teardown open until told to finish.
    struct Hold(mpsc::Sender<()>, mpsc::Receiver<()>);
    impl Drop for Hold {
        fn drop(&mut self) {
            self.0.send(()).unwrap(); // "teardown has started"
            self.1.recv().unwrap(); // wait until the guard was dropped
        }
    }
    let t = Tally::new();
    let (started_tx, started_rx) = mpsc::channel();
    let (finish_tx, finish_rx) = mpsc::channel();
    let ctx = Context::new();
    let guard = {
        let _inside = ctx.enter();
        HOLD.set(Hold(started_tx, finish_rx));
        S.enter(t.make(1))
    };
    let dropper = thread::spawn(move || drop(ctx));
    started_rx.recv().unwrap();
    // The context is mid-teardown on the other thread: the guard's value goes with it.
    drop(guard);
    finish_tx.send(()).unwrap();
    dropper.join().unwrap();
    assert_eq!(t.live(), 0);
    assert_eq!(S.contexts(), 0);
}

#[test]
fn many_locals_in_one_context_keep_their_values_through_growth_and_recycling() {
    // Past the table's few inline cells, a context's cells are in a map that is replaced as it
    // grows, while readers on other threads may still hold the old one; indices of dropped
    // locals are reused by new ones.
    let tally = Tally::new();
    let ctx = Context::new();
    let mut locals: Vec<Local<common::Counted>> = (0..100).map(|_| Local::new()).collect();
    ctx.run(|| {
        for (i, l) in locals.iter().enumerate() {
            l.set(tally.make(i as u64));
            // Every earlier one is still found after each growth.
            assert_eq!(locals[i / 2].with(|v| v.n), (i / 2) as u64);
        }
    });
    thread::scope(|s| {
        s.spawn(|| {
            for (i, l) in locals.iter().enumerate() {
                let mut seen = Vec::new();
                l.for_each(|id, v| seen.push((id, v.n)));
                assert_eq!(seen, [(ctx.id(), i as u64)]);
            }
        });
        ctx.run(|| {
            for (i, l) in locals.iter().enumerate().rev() {
                l.with_mut(|v| assert_eq!(v.n, i as u64));
            }
        });
    });
    // Dropping locals detaches their slots; new ones reuse the indices, unbound here.
    locals.truncate(30);
    assert_eq!(tally.live(), 30);
    let fresh: Vec<Local<common::Counted>> = (0..70).map(|_| Local::new()).collect();
    ctx.run(|| {
        for (i, l) in fresh.iter().enumerate() {
            assert!(!l.is_set());
            l.set(tally.make(1000 + i as u64));
        }
        for (i, l) in locals.iter().enumerate() {
            assert_eq!(l.with(|v| v.n), i as u64);
        }
    });
    assert_eq!(tally.live(), 100);
    drop(ctx);
    tally.assert_all_dropped();
}

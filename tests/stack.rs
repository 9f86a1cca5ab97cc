//! `LocalStack<T>` through the facade: push/pop, release-on-pop, guards, scope, drops.

mod common;

use common::{expect_panic, Counted, Tally};
use context_local::{Context, ContextId, LocalStack};
use std::thread;

#[test]
fn push_pop_top_len() {
    static S: LocalStack<u32> = LocalStack::named("S");
    assert_eq!(S.pop(), None);
    assert_eq!(S.top(), None);
    assert!(S.is_empty());
    S.push(1);
    S.push(2);
    assert_eq!((S.len(), S.top()), (2, Some(2)));
    assert_eq!(S.with_top(|t| t * 10), Some(20));
    S.with_top_mut(|t| *t += 1);
    assert_eq!(S.pop(), Some(3));
    assert_eq!(S.pop(), Some(1));
    assert_eq!(S.pop(), None);
    assert!(S.is_empty());
}

#[test]
fn popping_the_last_element_releases_the_entry() {
    static S: LocalStack<u32> = LocalStack::named("S");
    let ctx = Context::new();
    S.push(1);
    ctx.run(|| S.push(2));
    assert_eq!(S.contexts(), 2);
    S.pop();
    assert_eq!(S.contexts(), 1, "an emptied stack no longer counts");
    let mut visited = Vec::new();
    S.for_each(|id, items| visited.push((id, items.to_vec())));
    assert_eq!(visited, [(ctx.id(), vec![2])]);
    ctx.run(|| S.pop());
    assert_eq!(S.contexts(), 0);
}

#[test]
fn stacks_are_per_thread() {
    static S: LocalStack<u64> = LocalStack::named("S");
    S.push(0);
    thread::spawn(|| {
        assert!(S.is_empty());
        S.push(1);
        assert_eq!(S.top(), Some(1));
    })
    .join()
    .unwrap();
    assert_eq!(S.pop(), Some(0));
}

#[test]
fn guards_dropped_out_of_order_remove_exactly_their_own_value() {
    static S: LocalStack<&str> = LocalStack::named("S");
    let a = S.enter("a");
    S.push("plain");
    let b = S.enter("b");
    let c = S.enter("c");
    drop(b); // middle
    assert_eq!(collect(&S), ["a", "plain", "c"]);
    drop(a); // bottom
    assert_eq!(collect(&S), ["plain", "c"]);
    let d = S.enter("d");
    drop(c);
    assert_eq!(collect(&S), ["plain", "d"]);
    drop(d);
    assert_eq!(collect(&S), ["plain"]);
    assert_eq!(S.pop(), Some("plain"));
}

fn collect(s: &LocalStack<&'static str>) -> Vec<&'static str> {
    let mut out = Vec::new();
    let me = ContextId::current();
    s.for_each(|id, items| {
        if id == me {
            out = items.to_vec();
        }
    });
    out
}

#[test]
fn a_guard_whose_value_was_already_popped_does_nothing() {
    static S: LocalStack<u32> = LocalStack::named("S");
    let g = S.enter(1);
    assert_eq!(S.pop(), Some(1));
    S.push(2);
    drop(g);
    assert_eq!(
        S.top(),
        Some(2),
        "the guard must not pop somebody else's value"
    );
    let g = S.enter(3);
    S.release();
    S.push(4);
    drop(g);
    assert_eq!(S.pop(), Some(4));
    assert!(S.is_empty());
}

#[test]
fn scope_pops_also_when_the_body_panics() {
    static S: LocalStack<u32> = LocalStack::named("S");
    S.push(0);
    let msg = expect_panic(|| S.scope(1, || panic!("body failed")));
    assert_eq!(msg, "body failed");
    assert_eq!(S.len(), 1);
    assert_eq!(S.scope(2, || S.scope(3, || S.len())), 3);
    assert_eq!(S.pop(), Some(0));
}

#[test]
fn changing_the_stack_inside_with_top_panics_naming_it() {
    static S: LocalStack<u32> = LocalStack::named("APP_STACK");
    S.push(1);
    S.with_top(|_| {
        let msg = expect_panic(|| S.push(2));
        assert!(
            msg.contains("`APP_STACK`") && msg.contains("borrowed"),
            "{msg}"
        );
        let msg = expect_panic(|| S.pop());
        assert!(msg.contains("`APP_STACK`"), "{msg}");
    });
    S.with_top_mut(|_| {
        let msg = expect_panic(|| S.len());
        assert!(msg.contains("mutably borrowed"), "{msg}");
    });
    assert_eq!(S.pop(), Some(1));
}

#[test]
fn every_value_is_dropped_exactly_once() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    S.push(t.make(1));
    drop(S.pop());
    S.push(t.make(2));
    S.push(t.make(3));
    S.release();
    S.scope(t.make(4), || ());
    drop(S.enter(t.make(5)));
    assert_eq!(t.live(), 0);
    let t2 = t.clone();
    thread::spawn(move || {
        S.push(t2.make(6));
        S.push(t2.make(7));
    })
    .join()
    .unwrap();
    let ctx = Context::new();
    ctx.run(|| S.push(t.make(8)));
    drop(ctx);
    assert_eq!(t.live(), 0);
    assert_eq!(t.created(), 8);
}

#[test]
fn a_popped_values_drop_may_use_the_same_stack() {
    static S: LocalStack<Reentrant> = LocalStack::named("S");
    static SEEN: LocalStack<usize> = LocalStack::named("SEEN");
    struct Reentrant;
    impl Drop for Reentrant {
        fn drop(&mut self) {
            SEEN.push(S.len());
        }
    }
    S.push(Reentrant);
    S.push(Reentrant);
    S.release(); // both dropped outside the borrow: they see an empty stack
    assert_eq!(SEEN.pop(), Some(0));
    assert_eq!(SEEN.pop(), Some(0));
    // At thread exit as well.
    thread::spawn(|| S.push(Reentrant)).join().unwrap();
}

#[test]
fn eight_threads_hammering_one_stack() {
    static S: LocalStack<Counted> = LocalStack::named("HAMMER");
    let t = Tally::new();
    thread::scope(|s| {
        for th in 0..8u64 {
            let t = t.clone();
            s.spawn(move || {
                for i in 0..2_000u64 {
                    let n = th * 1_000_000 + i;
                    S.push(t.make(n));
                    S.scope(t.make(n + 1), || {
                        assert_eq!(S.with_top(|v| v.n), Some(n + 1));
                    });
                    if i % 3 == 0 {
                        let _g = S.enter(t.make(n + 2));
                        assert_eq!(S.len(), 2);
                    }
                    let v = S.pop().expect("own value");
                    assert_eq!(v.n, n, "thread {th} popped another thread's value");
                    if i % 500 == 0 {
                        // Iterate while the others keep pushing and popping.
                        S.for_each(|_, items| assert!(items.len() <= 2));
                    }
                }
                assert!(S.is_empty());
            });
        }
    });
    assert_eq!(S.contexts(), 0);
    assert_eq!(t.live(), 0);
}

#[test]
fn a_guard_dropped_after_its_context_was_left_still_removes_its_value() {
    static S: LocalStack<u32> = LocalStack::named("S");
    let ctx = Context::new();
    let guard = {
        let _inside = ctx.enter();
        S.enter(1)
    };
    S.push(99); // this thread's own stack, untouched by the guard
    drop(guard);
    assert_eq!(ctx.run(|| S.len()), 0);
    assert_eq!(S.pop(), Some(99));
}

#[test]
fn a_guard_outliving_its_context_does_nothing() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let ctx = Context::new();
    let guard = {
        let _inside = ctx.enter();
        S.enter(t.make(1))
    };
    drop(ctx);
    assert_eq!(t.live(), 0, "the value went with its context");
    let other = Context::new(); // may reuse the id
    other.run(|| S.push(t.make(2)));
    drop(guard);
    assert_eq!(
        other.run(|| S.len()),
        1,
        "the stale guard touched another context"
    );
    drop(other);
    assert_eq!(t.live(), 0);
}

//! `StackGuard`s inside a `LocalStack::scope_future` whose segment moves between contexts:
//! polled in one context, then another (as on tokio worker threads without a task context,
//! each thread's own). Each guard removes exactly its own element wherever the segment then
//! is, and never anybody else's; every value is dropped exactly once.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;

use common::poll::{poll_once, yield_now};
use common::{Counted, Tally};
use context_local::{Context, ContextId, LocalStack, StackGuard};

/// The current context's stack, bottom first, by the values' numbers.
fn here(s: &'static LocalStack<Counted>) -> Vec<u64> {
    let me = ContextId::current();
    let mut out = Vec::new();
    s.for_each(|id, items| {
        if id == me {
            out = items.iter().map(|v| v.n).collect();
        }
    });
    out
}

/// Two scope futures, each with guards, polled alternately in the same two contexts (each
/// future's segment visits both), the guards dropped out of order, each in a poll in the
/// context its future did not push it in. Both contexts also hold an element of their own
/// under a guard — numbered first in each, as a per-context numbering would number them
/// alike — and each of those guards is dropped in the *other* context: it must remove its own
/// element from its own context, never the other context's.
#[test]
fn two_scope_futures_with_guards_interleaved_in_two_contexts_remove_exactly_their_own() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let r1 = c1.run(|| S.enter(t.make(10)));
    let r2 = c2.run(|| S.enter(t.make(20)));

    let ta = t.clone();
    let mut a = Box::pin(S.scope_future(t.make(100), async move {
        let g1 = S.enter(ta.make(101));
        let g2 = S.enter(ta.make(102));
        yield_now().await;
        // Polled in c2 now: the bottom guard first.
        drop(g1);
        assert_eq!(here(&S), [20, 100, 102]);
        yield_now().await;
        // Back in c1.
        drop(g2);
        assert_eq!(here(&S), [10, 100]);
        yield_now().await;
        here(&S)
    }));
    let tb = t.clone();
    let mut b = Box::pin(S.scope_future(t.make(200), async move {
        let h1 = S.enter(tb.make(201));
        yield_now().await;
        // Polled in c1 now.
        let h2 = S.enter(tb.make(202));
        drop(h1);
        assert_eq!(here(&S), [10, 200, 202]);
        yield_now().await;
        // Back in c2.
        drop(h2);
        assert_eq!(here(&S), [20, 200]);
        yield_now().await;
        here(&S)
    }));

    assert!(c1.run(|| poll_once(a.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(b.as_mut())).is_pending());
    assert_eq!(
        (c1.run(|| here(&S)), c2.run(|| here(&S))),
        (vec![10], vec![20])
    );
    assert!(c2.run(|| poll_once(a.as_mut())).is_pending());
    assert!(c1.run(|| poll_once(b.as_mut())).is_pending());
    assert!(c1.run(|| poll_once(a.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(b.as_mut())).is_pending());
    assert_eq!(c2.run(|| poll_once(a.as_mut())), Poll::Ready(vec![20, 100]));
    assert_eq!(c1.run(|| poll_once(b.as_mut())), Poll::Ready(vec![10, 200]));
    assert_eq!(
        (c1.run(|| here(&S)), c2.run(|| here(&S))),
        (vec![10], vec![20])
    );

    // Each resident guard dropped in the other context: its own element goes, from its own.
    c2.run(|| drop(r1));
    assert_eq!(
        (c1.run(|| here(&S)), c2.run(|| here(&S))),
        (vec![], vec![20])
    );
    c1.run(|| drop(r2));
    assert_eq!((c1.run(|| here(&S)), c2.run(|| here(&S))), (vec![], vec![]));

    drop((a, b));
    drop((c1, c2));
    t.assert_all_dropped();
}

/// Guards that outlive their scope future (moved out of it through shared state), the future
/// polled in c1 then in c2 and dropped there, which leaves the guards' elements in c2. Dropped
/// in a third context whose own elements sit at the same depths, a guard removes none of them;
/// dropped in c2, where its element is, a guard removes exactly it.
#[test]
fn guard_dropped_after_its_moved_scope_future_was_dropped_never_removes_another_element() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2, c3) = (Context::new(), Context::new(), Context::new());
    let escaped: Rc<RefCell<Vec<StackGuard<'static, Counted>>>> = Rc::default();
    let (te, out) = (t.clone(), escaped.clone());
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        out.borrow_mut().push(S.enter(te.make(1)));
        out.borrow_mut().push(S.enter(te.make(2)));
        yield_now().await;
        yield_now().await;
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(fut.as_mut())).is_pending());
    // Dropped in c2: its own element goes, the guards' stay (as anything it left above it).
    c2.run(|| drop(fut));
    assert_eq!(c2.run(|| here(&S)), [1, 2]);

    // c3's own elements, under guards of their own, at the depths the escaped ones had in c1.
    let mine = c3.run(|| {
        [
            S.enter(t.make(30)),
            S.enter(t.make(31)),
            S.enter(t.make(32)),
        ]
    });
    let mut escaped = escaped.take();
    let g2 = escaped.pop().unwrap();
    let g1 = escaped.pop().unwrap();
    c3.run(|| drop(g1));
    assert_eq!(
        c3.run(|| here(&S)),
        [30, 31, 32],
        "another context's element removed"
    );
    assert_eq!(c1.run(|| here(&S)), Vec::<u64>::new());
    c2.run(|| drop(g2));
    assert_eq!(
        c2.run(|| here(&S)),
        [1],
        "the guard did not remove its own element"
    );
    c3.run(|| drop(mine));
    assert_eq!(c3.run(|| here(&S)), Vec::<u64>::new());

    drop((c1, c2, c3));
    t.assert_all_dropped();
}

/// The slow ways a guard in a moved segment is dropped: inside `with_top` or `with_top_mut` of
/// the same stack (the stack is borrowed: the removal waits for the borrow), and inside a
/// context the inner future entered itself (the segment's context is held further out).
#[test]
fn guard_in_a_moved_segment_dropped_while_the_stack_is_borrowed_or_its_context_is_not_current() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let ti = t.clone();
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        let g1 = S.enter(ti.make(1));
        let g2 = S.enter(ti.make(2));
        let g3 = S.enter(ti.make(3));
        let g4 = S.enter(ti.make(4));
        yield_now().await;
        // In c2 now.
        S.with_top(|_| drop(g2));
        assert_eq!(here(&S), [0, 1, 3, 4], "after with_top");
        S.with_top_mut(|_| drop(g3));
        assert_eq!(here(&S), [0, 1, 4], "after with_top_mut");
        let inner = Context::new();
        inner.run(|| drop(g1));
        assert_eq!(here(&S), [0, 4], "after a nested context");
        yield_now().await;
        // In c1 again.
        drop(g4);
        here(&S)
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert_eq!(c2.run(|| poll_once(fut.as_mut())), Poll::Pending);
    assert_eq!(c1.run(|| poll_once(fut.as_mut())), Poll::Ready(vec![0]));
    assert_eq!((c1.run(|| here(&S)), c2.run(|| here(&S))), (vec![], vec![]));
    drop(fut);
    drop((c1, c2));
    t.assert_all_dropped();
}

/// A guard whose element the inner future popped (in the other context) removes nothing
/// when it is dropped: not the element now at its place, not the scope's own.
#[test]
fn guard_whose_element_was_popped_in_the_other_context_removes_nothing() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let ti = t.clone();
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        let g = S.enter(ti.make(1));
        yield_now().await;
        // In c2: pop the guard's element and push another in its place.
        assert_eq!(S.pop().map(|v| v.n), Some(1));
        S.push(ti.make(2));
        yield_now().await;
        // In c1 again.
        drop(g);
        let seen = here(&S);
        assert_eq!(S.pop().map(|v| v.n), Some(2));
        seen
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(fut.as_mut())).is_pending());
    assert_eq!(c1.run(|| poll_once(fut.as_mut())), Poll::Ready(vec![0, 2]));
    assert_eq!((c1.run(|| here(&S)), c2.run(|| here(&S))), (vec![], vec![]));
    drop(fut);
    drop((c1, c2));
    t.assert_all_dropped();
}

/// Regression (round 3): a `StackGuard` taken inside a stack scope future (a `!Send` future on
/// a local executor) whose segment was set aside and put back in another context found nothing
/// when dropped there (the segment's elements were numbered afresh), so its element stayed in
/// that context for good. With element numbers unique across contexts, the guard removes
/// exactly its own element wherever its segment is, and nothing is left in either context.
#[test]
fn stack_guard_inside_a_scope_future_polled_in_two_contexts_removes_its_own_element() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let t2 = t.clone();
    // Boxed, to be dropped before the count: a finished scope future keeps its own element
    // (taken back out of the stack) until it is dropped, like tokio's `TaskLocalFuture`.
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        let g = S.enter(t2.make(1));
        yield_now().await;
        drop(g);
        let top = S.with_top(|v| v.n);
        yield_now().await;
        (top, S.len())
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(fut.as_mut())).is_pending());
    let out = c2.run(|| poll_once(fut.as_mut()));
    assert_eq!(out, Poll::Ready((Some(0), 1)), "the guard's element stayed");
    assert_eq!(
        (c1.run(|| S.len()), c2.run(|| S.len())),
        (0, 0),
        "elements left behind"
    );
    drop(fut);
    drop((c1, c2));
    assert_eq!(t.live(), 0);
}

//! "A push/pop cycle of one element allocates nothing, even though the last pop releases the
//! entry" — counted, not assumed. Its own test binary: the global allocator counts for the whole
//! process, so nothing else may run alongside (one test, which runs every check in turn).

use context_local::{Local, LocalStack};
use context_local_alloc_counter::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

static S: LocalStack<u64> = LocalStack::named("S");
static L: Local<u64> = Local::named("L");

#[test]
fn hot_paths_do_not_allocate_after_first_use() {
    // First use: the thread's context, the slots, the small buffers of the stack and of its
    // guard registry.
    S.push(0);
    S.pop();
    drop(S.enter(0));
    L.set(0);
    let before = CountingAlloc::allocations();
    for i in 0..10_000u64 {
        S.push(i);
        assert_eq!(S.pop(), Some(i));
        // Release-on-pop, without freeing: the entry no longer counts.
        assert!(S.is_empty());
        assert_eq!(S.contexts(), 0);
        S.scope(i, || L.with(|v| *v));
        drop(S.enter(i));
        L.set(i);
        assert_eq!(L.with(|v| *v), i);
    }
    assert_eq!(
        CountingAlloc::allocations() - before,
        0,
        "the hot paths allocated"
    );
    scope_future_polls_do_not_allocate_when_nothing_is_pushed_above();
}

/// A scope future's polls allocate nothing when its inner future pushes nothing above the
/// scope's element (its segment is then that element alone); the control, a future that
/// keeps an element pushed above it across `.await`, allocates once for the set-aside part.
fn scope_future_polls_do_not_allocate_when_nothing_is_pushed_above() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    /// Pending `n` times, pushing `above` once first if given.
    fn polls(n: u32, above: Option<u64>) -> impl Future<Output = ()> {
        let mut left = n;
        let mut above = above;
        std::future::poll_fn(move |_| {
            if let Some(v) = above.take() {
                S.push(v);
            }
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
            Poll::Pending
        })
    }
    fn drive(fut: impl Future<Output = ()>) {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        while fut.as_mut().poll(&mut cx).is_pending() {}
    }

    drive(S.scope_future(0, polls(2, None))); // first use
    drive(L.scope_future(0, polls(2, None)));
    let before = CountingAlloc::allocations();
    drive(S.scope_future(1, polls(1_000, None)));
    drive(L.scope_future(1, polls(1_000, None)));
    assert_eq!(CountingAlloc::allocations() - before, 0, "a poll allocated");

    let before = CountingAlloc::allocations();
    drive(S.scope_future(1, polls(1_000, Some(2))));
    let allocated = CountingAlloc::allocations() - before;
    assert_eq!(
        S.pop(),
        Some(2),
        "left above the scope's element at the end"
    );
    assert!(
        (1..=4).contains(&allocated),
        "the set-aside element above: allocated {allocated} times in 1,000 polls"
    );
}

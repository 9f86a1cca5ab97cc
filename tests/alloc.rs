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
    a_context_costs_what_it_binds_not_the_numbers_of_its_locals();
    a_child_that_wrote_nothing_stays_small();
}

static MANY: [Local<u64>; 300] = [const { Local::new() }; 300];
static INHERITED: [Local<u64>; 3] = [const { Local::new().inheritable() }; 3];

/// Bytes still allocated per item while `n` items made by `make` are alive.
fn live_bytes_per<X>(n: usize, mut make: impl FnMut() -> X) -> usize {
    let mut alive = Vec::with_capacity(n);
    let before = CountingAlloc::live_bytes();
    for _ in 0..n {
        alive.push(make());
    }
    let bytes = CountingAlloc::live_bytes() - before;
    drop(alive);
    bytes / n
}

/// A context binding three locals costs the same whether their indices are small or in the
/// hundreds (a program with many locals): its table grows by what it binds.
fn a_context_costs_what_it_binds_not_the_numbers_of_its_locals() {
    let three = |ls: &'static [Local<u64>]| {
        move || {
            let ctx = context_local::Context::new();
            ctx.run(|| ls.iter().for_each(|l| l.set(1)));
            ctx
        }
    };
    // Indices in order, and the registry grown, before measuring.
    drop(three(&MANY)());
    live_bytes_per(1_000, three(&MANY[..3]));
    let low = live_bytes_per(1_000, three(&MANY[20..23]));
    let high = live_bytes_per(1_000, three(&MANY[297..]));
    // (Give or take the registry's growth, a few bytes per context.)
    assert!(
        low.abs_diff(high) <= 8,
        "bytes per context binding locals 20-22: {low}, 297-299: {high}"
    );
}

/// A child context that only reads what it inherited — a request context per connection, at
/// 100,000 connections — costs at most 256 bytes (DESIGN.md, round-3 gates).
fn a_child_that_wrote_nothing_stays_small() {
    let parent = context_local::Context::new();
    parent.run(|| {
        INHERITED.iter().for_each(|l| l.set(1));
        drop(context_local::Context::child()); // the capture, cached in the parent
        let bytes = live_bytes_per(10_000, context_local::Context::child);
        assert!(bytes <= 256, "{bytes} bytes per child context");
    });
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

//! Stress: thread churn, many locals per thread, deep stacks, iteration under churn. Every
//! value is counted; at the end every one is dropped and no context holds anything.
//! `STRESS_SCALE` (a percentage, default 100) scales the sizes; `scripts/sanitize` runs 5%
//! under valgrind.

mod common;

use common::{Counted, Tally};
use context_local::{Local, LocalStack};
use std::sync::Arc;
use std::thread;

/// `n` scaled by `STRESS_SCALE` percent, at least 8.
fn scaled(n: usize) -> usize {
    let pct: usize = std::env::var("STRESS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    (n * pct / 100).max(8)
}

#[test]
fn thread_churn_drops_everything_and_leaves_no_context() {
    static L: Local<Counted> = Local::named("CHURN_LOCAL");
    static S: LocalStack<Counted> = LocalStack::named("CHURN_STACK");
    let t = Tally::new();
    let threads = scaled(2_000) / 8 * 8;
    for batch in 0..threads / 8 {
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                let t = t.clone();
                let n = (batch as u64) * 8 + i;
                thread::spawn(move || {
                    assert!(
                        !L.is_set() && S.is_empty(),
                        "thread {n} saw a dead thread's values"
                    );
                    L.set(t.make(n));
                    S.push(t.make(n));
                    S.push(t.make(n));
                    if n % 2 == 0 {
                        drop(S.pop());
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    }
    assert_eq!(t.created(), threads * 3);
    assert_eq!(t.live(), 0);
    assert_eq!((L.contexts(), S.contexts()), (0, 0));
}

#[test]
fn many_locals_per_thread_spill_past_the_inline_slots() {
    let t = Tally::new();
    // More than the 32 slots a context keeps inline: the overflow buckets are used too.
    let locals: Arc<Vec<Local<Counted>>> =
        Arc::new((0..150).map(|_| Local::named("MANY")).collect());
    let handles: Vec<_> = (0..4u64)
        .map(|th| {
            let (t, locals) = (t.clone(), locals.clone());
            thread::spawn(move || {
                for (i, l) in locals.iter().enumerate() {
                    l.set(t.make(th * 1000 + i as u64));
                }
                for (i, l) in locals.iter().enumerate() {
                    assert_eq!(l.with(|v| v.n), th * 1000 + i as u64);
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(t.live(), 0);
    for (i, l) in locals.iter().enumerate() {
        l.set(t.make(i as u64));
    }
    assert_eq!(t.live(), 150);
    drop(locals); // non-static locals free their values when dropped
    assert_eq!(t.live(), 0);
}

#[test]
fn deep_stacks_push_and_pop_in_order() {
    static S: LocalStack<Counted> = LocalStack::named("DEEP");
    let t = Tally::new();
    let depth = scaled(100_000) as u64;
    for n in 0..depth {
        S.push(t.make(n));
    }
    assert_eq!(S.len() as u64, depth);
    for n in (depth / 2..depth).rev() {
        assert_eq!(S.pop().map(|v| v.n), Some(n));
    }
    S.release();
    assert_eq!(t.live(), 0);
    assert!(S.is_empty());
    S.push(t.make(0)); // still usable after the big buffer was handed back
    assert_eq!(S.pop().map(|v| v.n), Some(0));
}

#[test]
fn iteration_under_churn_sees_only_live_consistent_values() {
    static S: LocalStack<Counted> = LocalStack::named("ITER_CHURN");
    let t = Tally::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Iteration starts only once every worker is churning.
    let started = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let (t, stop, started) = (t.clone(), stop.clone(), started.clone());
            thread::spawn(move || {
                let mut rounds = 0;
                loop {
                    S.scope(t.make(w), || {
                        S.push(t.make(w));
                        S.with_top_mut(|v| v.n = w);
                        drop(S.pop());
                    });
                    rounds += 1;
                    if rounds == 1 {
                        started.wait();
                    }
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return rounds;
                    }
                }
            })
        })
        .collect();
    started.wait();
    for _ in 0..scaled(200) {
        S.for_each(|_, items| {
            // Every stack seen is a whole, consistent state of one worker's stack.
            assert!(!items.is_empty() && items.len() <= 2);
            let w = items[0].n;
            assert!(items.iter().all(|v| v.n == w));
        });
        thread::yield_now();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(rounds >= 3);
    assert_eq!(t.live(), 0);
    assert_eq!(S.contexts(), 0);
}

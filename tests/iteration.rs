//! Iteration (`for_each`) against writers, teardown and thread exit: the reader/writer protocol
//! of `Local::for_each` / `LocalStack::for_each`.
//!
//! Every test names, in its doc comment, the fault of the iteration issue it covers:
//! - Fault 1: a reader makes the writer of a slot it is not reading wait (deadlock);
//! - Fault 2: writers inside callbacks (each iterating one local, writing the other);
//! - Fault 4: writer starvation under overlapping readers;
//! - Fault 5: a stranger's `Drop` run inside your `for_each`;
//! - a context dropped inside `for_each` while the callback holds its value (regressions of
//!   issue 17, fault 9);
//! - Fault 6: errors, not aborts or hangs (`try_with_mut` inside `for_each`, a `StackGuard`
//!   unwinding out of a callback, `for_each` from a late thread-local destructor);
//! - "Adversarial": further attacks in the same spirit;
//! - last, `for_each` against writes that move a slot to a fresh one or retire its value.
//!
//! (Fault 3 is covered by `tests/teardown.rs`,
//! `teardown_and_a_reader_dropping_a_local_do_not_deadlock`; fault 7 by a benchmark.)
//!
//! A deadlock fails its test through a watchdog — `within`, or a child process that
//! `run_child` kills — and never blocks CI. Bounds are generous (seconds); nothing here asserts
//! speed: the starvation tests only assert that a writer finished while the readers were still
//! running, i.e. that its wait did not depend on the readers pausing.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{expect_panic, no_panic, panic_message, within, Counted, Log, Parked, Probe, Tally};
use context_local::{AccessErrorKind, Context, ContextId, Local, LocalStack, Snapshot};

const CHILD_ENV: &str = "CONTEXT_LOCAL_ITERATION_CHILD";

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// [`common::child_must_succeed`] with this file's environment variable.
fn child_must_succeed(name: &str, secs: u64) {
    common::child_must_succeed(name, CHILD_ENV, secs);
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .unwrap()
}

/// Where code runs: the thread's name and the current context.
fn here() -> String {
    format!(
        "{} in {:?}",
        thread::current().name().unwrap_or("<unnamed>"),
        ContextId::try_current()
    )
}

// =============================================================================================
// Fault 1: a read-only monitor turns working code into a deadlock.

/// Fault 1 scenario. W1 binds `l` and, inside `with_mut`, waits for W2. A reader calls
/// `l.for_each` and waits there for W1's write to end. Then W2 runs `w2` on its own context's
/// value of `l` and unblocks W1. Without the reader this completes; with it, it must complete
/// too: the reader is not reading W2's slot, so it must not make W2 wait. `pre` binds W2's value
/// before the reader starts (so `w2` changes an existing value).
fn reader_between_two_writers(l: &'static Local<u32>, pre: bool, w2: fn(&'static Local<u32>)) {
    within(30, move || {
        let (unblock_tx, unblock_rx) = mpsc::channel::<()>();
        let (w1_in_tx, w1_in_rx) = mpsc::channel::<()>();
        let (w2_ready_tx, w2_ready_rx) = mpsc::channel::<()>();
        let (w2_go_tx, w2_go_rx) = mpsc::channel::<()>();
        let (read_tx, read_rx) = mpsc::channel::<()>();
        let w1 = spawn_named("W1", move || {
            l.set(1);
            let unblocked = l.with_mut(|v| {
                w1_in_tx.send(()).unwrap();
                // Bounded, so that the threads of a failed run end by themselves.
                let unblocked = unblock_rx.recv_timeout(Duration::from_secs(90)).is_ok();
                *v = 2;
                unblocked
            });
            // Keep the value bound (the thread alive) until the reader is done.
            let _ = read_rx.recv_timeout(Duration::from_secs(90));
            unblocked
        });
        let w2_thread = spawn_named("W2", move || {
            if pre {
                l.set(10);
            }
            w2_ready_tx.send(()).unwrap();
            if w2_go_rx.recv().is_ok() {
                w2(l);
                let _ = unblock_tx.send(());
            }
        });
        w1_in_rx.recv().unwrap();
        w2_ready_rx.recv().unwrap();
        let entering = Arc::new(AtomicBool::new(false));
        let reader = spawn_named("reader", {
            let entering = entering.clone();
            move || {
                entering.store(true, SeqCst);
                let mut seen = Vec::new();
                l.for_each(|_, v| seen.push(*v));
                seen
            }
        });
        while !entering.load(SeqCst) {
            thread::yield_now();
        }
        // Give the reader time to reach W1's value and wait there for W1's write to end.
        thread::sleep(Duration::from_millis(300));
        w2_go_tx.send(()).unwrap();
        w2_thread.join().unwrap();
        let seen = reader.join().unwrap();
        read_tx.send(()).unwrap();
        assert!(w1.join().unwrap(), "W1 was never unblocked");
        assert!(
            seen.contains(&2),
            "the reader missed W1's value (bound throughout): it must visit it as W1's write \
             left it; saw {seen:?}"
        );
    });
}

/// Fault 1: W2's `set` (first binding in its own context) while a reader waits for W1's
/// `with_mut` to end.
#[test]
fn fault1_a_reader_waiting_for_one_writer_lets_another_context_set() {
    static L: Local<u32> = Local::named("F1_SET");
    reader_between_two_writers(&L, false, |l| l.set(7));
}

/// Fault 1: as above, W2 replaces a value it bound before the reader started.
#[test]
fn fault1_a_reader_waiting_for_one_writer_lets_another_context_replace() {
    static L: Local<u32> = Local::named("F1_REPLACE");
    reader_between_two_writers(&L, true, |l| assert_eq!(l.replace(7), Some(10)));
}

/// Fault 1: as above, W2 changes its value in place with `with_mut`.
#[test]
fn fault1_a_reader_waiting_for_one_writer_lets_another_context_with_mut() {
    static L: Local<u32> = Local::named("F1_WITH_MUT");
    reader_between_two_writers(&L, true, |l| l.with_mut(|v| *v += 1));
}

/// Fault 1: as above, W2 takes its value.
#[test]
fn fault1_a_reader_waiting_for_one_writer_lets_another_context_take() {
    static L: Local<u32> = Local::named("F1_TAKE");
    reader_between_two_writers(&L, true, |l| assert_eq!(l.take(), Some(10)));
}

/// Fault 1: as above, W2 binds a value in a fresh explicit context and drops the context (its
/// teardown writes the slot too).
#[test]
fn fault1_a_reader_waiting_for_one_writer_lets_another_context_be_dropped() {
    static L: Local<u32> = Local::named("F1_CTX");
    reader_between_two_writers(&L, false, |l| {
        let ctx = Context::new();
        ctx.run(|| l.set(7));
        drop(ctx);
    });
}

/// Fault 1 (stack): W1 is inside `with_top_mut` waiting for W2; a reader waits in
/// `for_each`; W2 pushes and pops on its own stack, then unblocks W1.
#[test]
fn fault1_stack_reader_waiting_for_one_writer_lets_another_context_push() {
    static S: LocalStack<u32> = LocalStack::named("F1_STACK");
    within(30, || {
        let (unblock_tx, unblock_rx) = mpsc::channel::<()>();
        let (w1_in_tx, w1_in_rx) = mpsc::channel::<()>();
        let (w2_go_tx, w2_go_rx) = mpsc::channel::<()>();
        let (read_tx, read_rx) = mpsc::channel::<()>();
        let w1 = spawn_named("W1", move || {
            S.push(1);
            let unblocked = S.with_top_mut(|v| {
                w1_in_tx.send(()).unwrap();
                let unblocked = unblock_rx.recv_timeout(Duration::from_secs(90)).is_ok();
                *v = 2;
                unblocked
            });
            let _ = read_rx.recv_timeout(Duration::from_secs(90));
            unblocked
        });
        let w2 = spawn_named("W2", move || {
            if w2_go_rx.recv().is_ok() {
                S.push(7);
                let g = S.enter(8);
                drop(g);
                assert_eq!(S.pop(), Some(7));
                let _ = unblock_tx.send(());
            }
        });
        w1_in_rx.recv().unwrap();
        let entering = Arc::new(AtomicBool::new(false));
        let reader = spawn_named("reader", {
            let entering = entering.clone();
            move || {
                entering.store(true, SeqCst);
                let mut seen = Vec::new();
                S.for_each(|_, items| seen.extend_from_slice(items));
                seen
            }
        });
        while !entering.load(SeqCst) {
            thread::yield_now();
        }
        thread::sleep(Duration::from_millis(300));
        w2_go_tx.send(()).unwrap();
        w2.join().unwrap();
        let seen = reader.join().unwrap();
        read_tx.send(()).unwrap();
        assert_eq!(w1.join().unwrap(), Some(true), "W1 was never unblocked");
        assert!(
            seen.contains(&2),
            "the reader missed W1's stack (non-empty throughout); saw {seen:?}"
        );
    });
}

// =============================================================================================
// Fault 2: writers in callbacks.

const CROSS_ROUNDS: u64 = 2_000;

/// A short pause inside a callback, so that the two threads' iterations overlap often.
fn pause() {
    thread::sleep(Duration::from_micros(20));
}

/// Fault 2 scenario: threads A and B each run `a` / `b`, which set up their own values, meet
/// at the barrier, then loop. Neither may deadlock nor panic.
fn crossed(a: impl FnOnce(&Barrier) + Send + 'static, b: impl FnOnce(&Barrier) + Send + 'static) {
    within(30, move || {
        let go = Arc::new(Barrier::new(2));
        let ta = spawn_named("A", {
            let go = go.clone();
            move || a(&go)
        });
        let tb = spawn_named("B", move || b(&go));
        let ra = ta.join();
        let rb = tb.join();
        if let Err(p) = ra {
            panic!("A panicked: {}", panic_message(p));
        }
        if let Err(p) = rb {
            panic!("B panicked: {}", panic_message(p));
        }
    });
}

/// Fault 2: A loops `L.for_each(|_, _| M.set(..))`, B loops `M.for_each(|_, _| L.set(..))`:
/// each callback writes only its own context's value of the *other* local, on every visit
/// (also while visiting the other thread's value). Both have L and M bound first.
#[test]
fn fault2_each_callback_sets_its_own_value_of_the_other_local() {
    static L: Local<u64> = Local::named("F2_L");
    static M: Local<u64> = Local::named("F2_M");
    crossed(
        |go| {
            L.set(0);
            M.set(0);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                L.for_each(|_, _| {
                    pause();
                    M.set(i);
                });
            }
        },
        |go| {
            L.set(0);
            M.set(0);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                M.for_each(|_, _| {
                    pause();
                    L.set(i);
                });
            }
        },
    );
    assert_eq!((L.contexts(), M.contexts()), (0, 0));
}

/// Fault 2 (the weaker form): as above, but a callback writes only while visiting its own
/// context's value, so no thread ever writes a slot the other is reading at that moment.
#[test]
fn fault2_a_callback_on_its_own_value_sets_the_other_local() {
    static L: Local<u64> = Local::named("F2W_L");
    static M: Local<u64> = Local::named("F2W_M");
    crossed(
        |go| {
            L.set(0);
            M.set(0);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                L.for_each(|id, _| {
                    if id == ContextId::current() {
                        pause();
                        M.set(i);
                    }
                });
            }
        },
        |go| {
            L.set(0);
            M.set(0);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                M.for_each(|id, _| {
                    if id == ContextId::current() {
                        pause();
                        L.set(i);
                    }
                });
            }
        },
    );
}

/// Fault 2 with `release`: both locals bound first; A loops `L.for_each(|_, _| M.release())`,
/// B loops `M.for_each(|_, _| L.release())` (after the first round each releases an unbound
/// value: still a write of its own slot). No write happens outside the iterations.
#[test]
fn fault2_each_callback_releases_its_own_value_of_the_other_local() {
    static L: Local<u64> = Local::named("F2R_L");
    static M: Local<u64> = Local::named("F2R_M");
    crossed(
        |go| {
            L.set(1);
            M.set(1);
            go.wait();
            for _ in 0..CROSS_ROUNDS {
                L.for_each(|_, _| {
                    pause();
                    M.release();
                });
            }
        },
        |go| {
            L.set(2);
            M.set(2);
            go.wait();
            for _ in 0..CROSS_ROUNDS {
                M.for_each(|_, _| {
                    pause();
                    L.release();
                });
            }
        },
    );
    assert_eq!((L.contexts(), M.contexts()), (0, 0));
}

/// Fault 2 with stacks: `S.for_each(|_, _| T.release())` against `T.for_each(|_, _| S.release())`,
/// both stacks pushed first.
#[test]
fn fault2_each_stack_callback_releases_the_other_stack() {
    static S: LocalStack<u64> = LocalStack::named("F2_S");
    static T: LocalStack<u64> = LocalStack::named("F2_T");
    crossed(
        |go| {
            S.push(1);
            T.push(1);
            go.wait();
            for _ in 0..CROSS_ROUNDS {
                S.for_each(|_, _| {
                    pause();
                    T.release();
                });
            }
        },
        |go| {
            S.push(2);
            T.push(2);
            go.wait();
            for _ in 0..CROSS_ROUNDS {
                T.for_each(|_, _| {
                    pause();
                    S.release();
                });
            }
        },
    );
    assert_eq!((S.contexts(), T.contexts()), (0, 0));
}

/// Fault 2 with stacks, every kind of change: each callback releases its own context's other
/// stack, pushes and pops a guard and a scope there, and pushes again (so the other thread
/// keeps visiting it).
#[test]
fn fault2_each_stack_callback_changes_the_other_stack() {
    static S: LocalStack<u64> = LocalStack::named("F2C_S");
    static T: LocalStack<u64> = LocalStack::named("F2C_T");
    crossed(
        |go| {
            S.push(1);
            T.push(1);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                S.for_each(|_, _| {
                    pause();
                    T.release();
                    drop(T.enter(i));
                    T.scope(i, || ());
                    T.push(i);
                });
            }
        },
        |go| {
            S.push(2);
            T.push(2);
            go.wait();
            for i in 0..CROSS_ROUNDS {
                T.for_each(|_, _| {
                    pause();
                    S.release();
                    drop(S.enter(i));
                    S.scope(i, || ());
                    S.push(i);
                });
            }
        },
    );
    assert_eq!((S.contexts(), T.contexts()), (0, 0));
}

/// A wait-for cycle through a `with_mut` frame. Thread A, inside `l.with_mut` (in an explicit
/// context it leaves inside that `with_mut` when `leave_inside`), changes `m` while B's
/// `m.for_each` callback is on A's value of `m`; that callback iterates `l` and so waits for
/// A's write of `l` to end. Each waits for the other: one of them must be refused — A's change
/// with `Deadlock`, or B's iteration with a panic — and both must finish.
///
/// Regression note: nothing records a `with_mut` as it happens any more (issue 21: that
/// bookkeeping cost every `with_mut` half its time); a thread about to block computes what it
/// writes from the `WRITING` marks of the contexts it holds, including one it left inside the
/// write. Without that computation A is not known to write `l`, and both threads hang.
fn wait_cycle_through_with_mut(l: &'static Local<u32>, m: &'static Local<u32>, leave_inside: bool) {
    within(30, move || {
        let (a_waits, b_in_callback) = (mpsc::channel::<()>(), mpsc::channel::<()>());
        let (a_ready, a_go) = a_waits;
        let (b_ready, b_go) = b_in_callback;
        let a = spawn_named("A", move || {
            m.set(1);
            let ctx = Context::new();
            let guard = ctx.enter();
            let guard = if leave_inside {
                Some(guard)
            } else {
                drop(guard);
                None
            };
            l.set(1);
            let changed = l.with_mut(|v| {
                *v += 1;
                drop(guard); // leaves `ctx`, whose release waits for this write to end
                a_ready.send(()).unwrap();
                b_go.recv().unwrap();
                m.try_with_mut(|v| *v += 1)
            });
            changed.map_err(|e| e.kind())
        });
        let b = spawn_named("B", move || {
            a_go.recv().unwrap();
            let mut refused = 0;
            m.for_each(|_, _| {
                b_ready.send(()).unwrap();
                let r = catch_unwind(AssertUnwindSafe(|| l.for_each(|_, _| ())));
                if let Err(p) = r {
                    let msg = panic_message(p);
                    assert!(msg.contains("cannot be iterated here"), "{msg}");
                    refused += 1;
                }
            });
            refused
        });
        let a = a.join().expect("A panicked");
        let b_refused = b.join().expect("B panicked");
        let a_refused = match a {
            Ok(()) => 0,
            Err(kind) => {
                assert_eq!(kind, AccessErrorKind::Deadlock);
                1
            }
        };
        assert_eq!(
            a_refused + b_refused,
            1,
            "exactly one side of the cycle gives up"
        );
    });
}

#[test]
fn a_reader_waiting_for_a_with_mut_whose_thread_waits_for_it_is_a_cycle() {
    static L: Local<u32> = Local::named("CYCLE_L");
    static M: Local<u32> = Local::named("CYCLE_M");
    wait_cycle_through_with_mut(&L, &M, false);
}

#[test]
fn the_cycle_is_found_when_the_writer_left_the_context_inside_with_mut() {
    static L: Local<u32> = Local::named("CYCLE_LEFT_L");
    static M: Local<u32> = Local::named("CYCLE_LEFT_M");
    wait_cycle_through_with_mut(&L, &M, true);
}

// =============================================================================================
// Fault 4: writer starvation.

/// The value the starvation readers bind and pace on.
const PACE: u32 = u32::MAX;
/// How long the starvation readers keep going at most.
const READERS_LIMIT: Duration = Duration::from_secs(5);

/// Fault 4 scenario. Two reader threads bind `PACE` in `l` and iterate `l` over and over until
/// `action` (run on this thread once both are inside) returns, or until `READERS_LIMIT` passed.
/// Their callbacks on `PACE` values overlap: a reader leaves one only after the other has
/// entered one after it, so some reader is inside `for_each` at every moment. Callbacks on
/// other values return at once. Returns the action's result and whether the readers were still
/// going when it returned (`false`: the action only completed once they gave up).
fn with_overlapping_readers<R>(l: &'static Local<u32>, action: impl FnOnce() -> R) -> (R, bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::new(AtomicBool::new(false));
    let ticket = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Barrier::new(3));
    let deadline = Instant::now() + READERS_LIMIT;
    let readers: Vec<_> = ["reader-0", "reader-1"]
        .into_iter()
        .map(|name| {
            let (stop, gave_up) = (stop.clone(), gave_up.clone());
            let (ticket, started) = (ticket.clone(), started.clone());
            spawn_named(name, move || {
                l.set(PACE);
                started.wait();
                loop {
                    if stop.load(SeqCst) {
                        break;
                    }
                    if Instant::now() >= deadline {
                        gave_up.store(true, SeqCst);
                        break;
                    }
                    l.for_each(|_, &v| {
                        if v != PACE {
                            return;
                        }
                        let mine = ticket.fetch_add(1, SeqCst);
                        thread::sleep(Duration::from_millis(1));
                        // Stay until the other reader entered a pacing callback after us.
                        while ticket.load(SeqCst) == mine + 1
                            && !stop.load(SeqCst)
                            && Instant::now() < deadline
                        {
                            thread::sleep(Duration::from_micros(100));
                        }
                    });
                }
            })
        })
        .collect();
    started.wait();
    while ticket.load(SeqCst) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    let r = action();
    let still_going = !gave_up.load(SeqCst) && Instant::now() < deadline;
    stop.store(true, SeqCst);
    for h in readers {
        h.join().unwrap();
    }
    (r, still_going)
}

fn assert_not_starved(what: &str, still_going: bool) {
    assert!(
        still_going,
        "{what} completed only after the overlapping readers gave up ({READERS_LIMIT:?}): \
         it waited for the readers to pause instead of only for those reading its own slot"
    );
}

/// Fault 4: a single `set` (first binding in the writer's own context) completes while
/// overlapping readers keep iterating.
#[test]
fn fault4_a_set_completes_while_readers_overlap() {
    static L: Local<u32> = Local::named("F4_SET");
    within(60, || {
        let ((), still_going) = with_overlapping_readers(&L, || L.set(1));
        assert_not_starved("`set`", still_going);
        assert_eq!(L.get(), Some(1));
    });
}

/// Fault 4: `with_mut` of a value bound before the readers started completes while they run.
#[test]
fn fault4_a_with_mut_completes_while_readers_overlap() {
    static L: Local<u32> = Local::named("F4_WITH_MUT");
    within(60, || {
        L.set(1);
        let ((), still_going) = with_overlapping_readers(&L, || L.with_mut(|v| *v += 1));
        assert_not_starved("`with_mut`", still_going);
        assert_eq!(L.get(), Some(2));
    });
}

/// Fault 4: a thread with a value in the local exits (its teardown writes its slot) while
/// overlapping readers keep iterating.
#[test]
fn fault4_a_thread_exits_while_readers_overlap() {
    static L: Local<u32> = Local::named("F4_EXIT");
    within(60, || {
        let (tx, rx) = mpsc::channel::<()>();
        let (bound_tx, bound_rx) = mpsc::channel::<()>();
        let exiting = spawn_named("exiting", move || {
            L.set(1);
            bound_tx.send(()).unwrap();
            let _ = rx.recv();
        });
        bound_rx.recv().unwrap();
        let ((), still_going) = with_overlapping_readers(&L, || {
            tx.send(()).unwrap();
            exiting.join().unwrap(); // waits for its thread-local destructors too
        });
        assert_not_starved("the exiting thread", still_going);
    });
}

/// Fault 4: an explicit context with a value in the local is dropped while overlapping readers
/// keep iterating.
#[test]
fn fault4_a_context_is_dropped_while_readers_overlap() {
    static L: Local<u32> = Local::named("F4_CTX");
    within(60, || {
        let ctx = Context::new();
        ctx.run(|| L.set(1));
        let ((), still_going) = with_overlapping_readers(&L, move || drop(ctx));
        assert_not_starved("`drop(ctx)`", still_going);
    });
}

// =============================================================================================
// Fault 5: a stranger's Drop inside your for_each.

const BLOCKER: u64 = 1;
const VICTIM: u64 = 5;

/// What a fault-5 run saw.
struct Seen {
    log: Vec<String>,
    /// X's outcome (the panic message if it panicked).
    x: Result<(), String>,
    /// Y's outcome.
    y: Result<(), String>,
    /// Whether the other local `M` ended up bound in Y's own context.
    m_in_y: bool,
    ctx_id: ContextId,
}

/// The value whose `Drop` is watched: logs where it runs, binds `m` there (unless `bomb`),
/// and panics with "bomb" if `bomb`.
fn victim(t: &Tally, log: &Log, m: &'static Local<u32>, bomb: bool) -> Probe {
    let log = log.clone();
    Probe::new(t, VICTIM, move || {
        log.push(format!("value dropped on {}", here()));
        if bomb {
            if !thread::panicking() {
                panic!("bomb");
            }
        } else {
            m.set(1);
        }
    })
}

/// The log a correct run shows: X's `drop(ctx)` drops the value on X, with `ctx` current.
fn expected_drop_log(ctx_id: ContextId) -> Vec<String> {
    vec![
        "X: drop(ctx) starts".to_string(),
        format!("value dropped on X in {:?}", Some(ctx_id)),
        "X: drop(ctx) ended".to_string(),
    ]
}

/// Fault 5 scenario. An explicit context `ctx` holds the victim value in `l`; another context
/// holds the blocker. Y iterates `l` and, in its callback on the blocker, waits until X is done.
/// X drops `ctx` while Y is there: directly (`x_iterates == false`; Y waits at most 3 s for
/// X's `drop(ctx)`), or inside its own `l.for_each`, in its callback on the blocker (not on the
/// victim; Y waits at most 10 s for X's `for_each`, and still holds `ctx` in its iteration).
/// Y's timeout, if it expires, is logged as "Y: ...".
fn drop_while_another_thread_iterates(
    l: &'static Local<Probe>,
    m: &'static Local<u32>,
    bomb: bool,
    x_iterates: bool,
) -> Seen {
    let t = Tally::new();
    let log = Log::new();
    let blocker = Context::new();
    blocker.run(|| l.set(Probe::plain(&t, BLOCKER)));
    let ctx = Context::new();
    let ctx_id = ctx.id();
    ctx.run(|| l.set(victim(&t, &log, m, bomb)));
    let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
    let (x_done_tx, x_done_rx) = mpsc::channel::<()>();
    let (y_wait, y_late) = if x_iterates {
        (10, "Y: X's for_each did not end within 10 s")
    } else {
        (3, "Y: X's drop(ctx) did not end within 3 s")
    };
    let y = spawn_named("Y", {
        let log = log.clone();
        move || {
            let _ = ContextId::current(); // own context first: ids are recycled
            let mut y_in = Some(y_in_tx);
            let r = catch_unwind(AssertUnwindSafe(|| {
                l.for_each(|_, v| {
                    if v.n != BLOCKER {
                        return;
                    }
                    if let Some(tx) = y_in.take() {
                        tx.send(()).unwrap();
                        if x_done_rx.recv_timeout(Duration::from_secs(y_wait)).is_err() {
                            log.push(y_late);
                        }
                    }
                });
            }))
            .map_err(panic_message);
            (r, m.is_set())
        }
    });
    let x = spawn_named("X", {
        let log = log.clone();
        move || {
            let _ = ContextId::current(); // own context first: ids are recycled
            y_in_rx.recv().unwrap();
            let r = if x_iterates {
                let mut ctx = Some(ctx);
                catch_unwind(AssertUnwindSafe(|| {
                    l.for_each(|_, v| {
                        if v.n != BLOCKER {
                            return;
                        }
                        if let Some(ctx) = ctx.take() {
                            log.push("X: drop(ctx) starts");
                            let r = catch_unwind(AssertUnwindSafe(move || drop(ctx)));
                            log.push("X: drop(ctx) ended");
                            if let Err(p) = r {
                                std::panic::resume_unwind(p);
                            }
                        }
                    });
                }))
                .map_err(panic_message)
            } else {
                log.push("X: drop(ctx) starts");
                let r = catch_unwind(AssertUnwindSafe(move || drop(ctx))).map_err(panic_message);
                log.push("X: drop(ctx) ended");
                r
            };
            let _ = x_done_tx.send(());
            r
        }
    });
    let x = x.join().unwrap();
    let (y, m_in_y) = y.join().unwrap();
    drop(blocker);
    assert_eq!(t.live(), 0, "a value was not dropped");
    Seen {
        log: log.entries(),
        x,
        y,
        m_in_y,
        ctx_id,
    }
}

/// Fault 5: a context dropped by X while Y is inside `for_each` (holding the context in its
/// iteration, busy with another context's value) drops its value on X, with the context
/// current, during `drop(ctx)` — never on Y, and what the `Drop` binds stays out of Y's context.
#[test]
fn fault5_a_context_dropped_while_another_thread_iterates_drops_its_value_on_the_dropper() {
    static L: Local<Probe> = Local::named("F5A_L");
    static M: Local<u32> = Local::named("F5A_M");
    within(60, || {
        let seen = drop_while_another_thread_iterates(&L, &M, false, false);
        let log: Vec<String> = seen
            .log
            .iter()
            .filter(|e| !e.starts_with("Y:"))
            .cloned()
            .collect();
        assert_eq!(log, expected_drop_log(seen.ctx_id));
        assert_eq!(seen.x, Ok(()));
        assert_eq!(seen.y, Ok(()));
        assert!(!seen.m_in_y, "the value's Drop bound M in Y's own context");
    });
}

/// Fault 5 (panicking `Drop`): the panic surfaces from X's `drop(ctx)`, not from Y's
/// `for_each`.
#[test]
fn fault5_a_panicking_drop_of_a_dropped_context_surfaces_from_the_dropper() {
    static L: Local<Probe> = Local::named("F5B_L");
    static M: Local<u32> = Local::named("F5B_M");
    within(60, || {
        let seen = drop_while_another_thread_iterates(&L, &M, true, false);
        assert_eq!(seen.x, Err("bomb".to_string()), "log: {:?}", seen.log);
        assert_eq!(seen.y, Ok(()), "log: {:?}", seen.log);
    });
}

/// Fault 5 (and 1): X's `drop(ctx)` does not wait for Y, which is inside `for_each` but busy
/// with *another* context's value (it holds `ctx` in its iteration, and may visit it later).
#[test]
fn fault5_dropping_a_context_does_not_wait_for_a_reader_busy_with_another_context() {
    static L: Local<Probe> = Local::named("F5C_L");
    static M: Local<u32> = Local::named("F5C_M");
    within(60, || {
        let seen = drop_while_another_thread_iterates(&L, &M, false, false);
        assert!(
            !seen.log.iter().any(|e| e.starts_with("Y:")),
            "drop(ctx) waited for a reader that was not reading ctx's value: {:?}",
            seen.log
        );
    });
}

/// Fault 5: X drops a context inside its own `for_each` (while visiting another context's
/// value) as Y iterates too, holding that context: the value is dropped during `drop(ctx)`, on
/// X, with the context current — not later by whichever iteration lets go of the context last.
#[test]
fn fault5_a_context_dropped_inside_for_each_drops_its_value_then_not_in_a_readers_for_each() {
    static L: Local<Probe> = Local::named("F5D_L");
    static M: Local<u32> = Local::named("F5D_M");
    within(60, || {
        let seen = drop_while_another_thread_iterates(&L, &M, false, true);
        assert_eq!(seen.x, Ok(()));
        assert_eq!(seen.y, Ok(()));
        assert_eq!(seen.log, expected_drop_log(seen.ctx_id));
        assert!(!seen.m_in_y, "the value's Drop bound M in Y's own context");
    });
}

/// Fault 5 (panicking `Drop`, X iterating): the panic surfaces from X (its `drop(ctx)`, out of
/// its `for_each`), never from Y's `for_each`.
#[test]
fn fault5_a_panicking_drop_inside_for_each_surfaces_from_the_dropper_not_a_reader() {
    static L: Local<Probe> = Local::named("F5E_L");
    static M: Local<u32> = Local::named("F5E_M");
    within(60, || {
        let seen = drop_while_another_thread_iterates(&L, &M, true, true);
        assert_eq!(seen.y, Ok(()), "log: {:?}", seen.log);
        assert_eq!(seen.x, Err("bomb".to_string()), "log: {:?}", seen.log);
    });
}

/// Fault 5 (single thread): a context dropped inside `for_each`, while visiting another
/// context's value, drops its value during `drop(ctx)` with that context current.
#[test]
fn fault5_a_context_dropped_inside_for_each_drops_its_value_in_that_context() {
    static L: Local<Probe> = Local::named("F5F_L");
    static M: Local<u32> = Local::named("F5F_M");
    within(60, || {
        let seen = spawn_named("X", || {
            let _ = ContextId::current(); // own context first: ids are recycled
            let t = Tally::new();
            let log = Log::new();
            let blocker = Context::new();
            blocker.run(|| L.set(Probe::plain(&t, BLOCKER)));
            let ctx = Context::new();
            let ctx_id = ctx.id();
            ctx.run(|| L.set(victim(&t, &log, &M, false)));
            let mut ctx = Some(ctx);
            L.for_each(|_, v| {
                if v.n == BLOCKER {
                    if let Some(ctx) = ctx.take() {
                        log.push("X: drop(ctx) starts");
                        drop(ctx);
                        log.push("X: drop(ctx) ended");
                    }
                }
            });
            let m_here = M.is_set();
            drop(blocker);
            assert_eq!(t.live(), 0);
            (log.entries(), ctx_id, m_here)
        })
        .join()
        .unwrap();
        let (log, ctx_id, m_here) = seen;
        assert_eq!(log, expected_drop_log(ctx_id));
        assert!(!m_here, "the value's Drop bound M in X's own context");
    });
}

/// Fault 5 (regression guard for a redesign that stops waiting for readers): Y is inside its
/// callback *on the very value* of a context that X drops. The value cannot be dropped while
/// it is read; it is still dropped by X, in its context, during `drop(ctx)` — after Y's read.
#[test]
fn fault5_a_value_being_read_is_dropped_by_its_context_after_the_read() {
    static L: Local<Probe> = Local::named("F5G_L");
    static M: Local<u32> = Local::named("F5G_M");
    within(60, || {
        let t = Tally::new();
        let log = Log::new();
        let ctx = Context::new();
        let ctx_id = ctx.id();
        ctx.run(|| L.set(victim(&t, &log, &M, false)));
        let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
        let (x_starts_tx, x_starts_rx) = mpsc::channel::<()>();
        let y = spawn_named("Y", {
            let log = log.clone();
            move || {
                let _ = ContextId::current(); // own context first: ids are recycled
                L.for_each(|_, v| {
                    if v.n == VICTIM {
                        y_in_tx.send(()).unwrap();
                        let _ = x_starts_rx.recv_timeout(Duration::from_secs(10));
                        thread::sleep(Duration::from_millis(300));
                        assert_eq!(v.n, VICTIM);
                        log.push("Y: done reading the value");
                    }
                });
                M.is_set()
            }
        });
        let x = spawn_named("X", {
            let log = log.clone();
            move || {
                let _ = ContextId::current(); // own context first: ids are recycled
                y_in_rx.recv().unwrap();
                log.push("X: drop(ctx) starts");
                x_starts_tx.send(()).unwrap();
                drop(ctx);
                log.push("X: drop(ctx) ended");
            }
        });
        x.join().unwrap();
        let m_in_y = y.join().unwrap();
        assert_eq!(
            log.entries(),
            vec![
                "X: drop(ctx) starts".to_string(),
                "Y: done reading the value".to_string(),
                format!("value dropped on X in {:?}", Some(ctx_id)),
                "X: drop(ctx) ended".to_string(),
            ]
        );
        assert!(!m_in_y);
        assert_eq!(t.live(), 0);
    });
}

// =============================================================================================
// A context dropped inside `for_each` while the callback holds that context's own value
// (issue 17, fault 9).

/// Regression (issue 17, fault 9; one thread): X drops a context inside `L.for_each`, in its
/// callback on that very context's value. The value cannot be dropped then (X is reading it);
/// it used to be left to whoever let go of the context last — X's iteration itself, after the
/// callback, with X's own context current (the value's `Drop` bound `M` there), or another
/// thread's. Now X's `for_each` finishes the context's teardown once its read is over: the
/// value is dropped on X, with its own context current, before `for_each` returns, and what its
/// `Drop` binds goes with that context.
#[test]
fn fault9_a_context_dropped_while_its_value_is_visited_drops_it_after_the_read_in_its_context() {
    static L: Local<Probe> = Local::named("F9A_L");
    static M: Local<u32> = Local::named("F9A_M");
    within(60, || {
        let seen = spawn_named("X", || {
            let _ = ContextId::current(); // own context first: ids are recycled
            let t = Tally::new();
            let log = Log::new();
            let ctx = Context::new();
            let ctx_id = ctx.id();
            ctx.run(|| L.set(victim(&t, &log, &M, false)));
            let mut ctx = Some(ctx);
            L.for_each(|_, v| {
                if v.n == VICTIM {
                    if let Some(ctx) = ctx.take() {
                        log.push("X: drop(ctx) starts");
                        drop(ctx);
                        log.push("X: drop(ctx) ended");
                        assert_eq!(v.n, VICTIM, "the value read is still there");
                    }
                }
            });
            log.push("X: for_each returned");
            let m_here = M.is_set();
            (log.entries(), ctx_id, m_here, t.live())
        })
        .join()
        .unwrap();
        let (log, ctx_id, m_here, live) = seen;
        assert_eq!(
            log,
            vec![
                "X: drop(ctx) starts".to_string(),
                "X: drop(ctx) ended".to_string(),
                format!("value dropped on X in {:?}", Some(ctx_id)),
                "X: for_each returned".to_string(),
            ]
        );
        assert!(!m_here, "the value's Drop bound M in X's own context");
        assert_eq!(
            live, 0,
            "a value was not dropped (the victim, or what its Drop bound)"
        );
    });
}

/// Regression (issue 17, fault 9; nested): the context is dropped inside `M.for_each`, itself
/// inside `L.for_each`'s callback on the context's `L` value. The inner `for_each` ends while
/// the outer still reads the value: it is dropped when the outer one returns, in its context; a
/// panic of its `Drop` comes out of that `for_each`, and every value goes once.
#[test]
fn fault9_nested_for_each_drops_the_value_when_the_reading_one_returns() {
    static L: Local<Probe> = Local::named("F9N_L");
    static M: Local<u32> = Local::named("F9N_M");
    within(60, || {
        spawn_named("X", || {
            let _ = ContextId::current(); // own context first: ids are recycled
            for bomb in [false, true] {
                let t = Tally::new();
                let log = Log::new();
                let ctx = Context::new();
                let ctx_id = ctx.id();
                ctx.run(|| L.set(victim(&t, &log, &M, bomb)));
                M.set(0);
                let mut ctx = Some(ctx);
                let r = catch_unwind(AssertUnwindSafe(|| {
                    L.for_each(|_, v| {
                        if v.n != VICTIM {
                            return;
                        }
                        M.for_each(|_, _| drop(ctx.take()));
                        log.push("X: inner for_each returned");
                    })
                }))
                .map_err(panic_message);
                log.push("X: outer for_each returned");
                assert_eq!(
                    r,
                    if bomb {
                        Err("bomb".to_string())
                    } else {
                        Ok(())
                    }
                );
                assert_eq!(
                    log.entries(),
                    vec![
                        "X: inner for_each returned".to_string(),
                        format!("value dropped on X in {:?}", Some(ctx_id)),
                        "X: outer for_each returned".to_string(),
                    ],
                    "bomb: {bomb}"
                );
                assert_eq!(M.take(), Some(0), "the value's Drop bound M here");
                assert_eq!(t.live(), 0, "bomb: {bomb}");
            }
        })
        .join()
        .unwrap();
    });
}

/// Regression (issue 17, fault 9; the shape): as above, while Y is inside `M.for_each`,
/// blocked in its callback until X's `for_each` returned, and holding the context in its
/// iteration (so Y lets go of it last). The value's `Drop` calls `M.set`: it used to run on Y,
/// inside Y's `M.for_each`, which then panicked ("cannot be changed inside its own
/// `for_each`"). Run in a child process, where the order of contexts (the blocker before the
/// victim's context) is known.
#[test]
fn fault9_a_readers_iteration_never_drops_a_value_left_by_a_context_dropped_inside_for_each() {
    child_must_succeed("child_fault9_a_readers_iteration_never_drops_the_value", 60);
}

#[test]
#[ignore = "run in a child process by fault9_a_readers_iteration_never_drops_a_value_left_by_a_context_dropped_inside_for_each"]
fn child_fault9_a_readers_iteration_never_drops_the_value() {
    static L: Local<Probe> = Local::named("F9B_L");
    static M: Local<u32> = Local::named("F9B_M");
    if !in_child() {
        return;
    }
    let t = Tally::new();
    let log = Log::new();
    // Registered in this order: Y's blocker comes before `ctx` in Y's iteration.
    let blocker = Context::new();
    blocker.run(|| M.set(0));
    let ctx = Context::new();
    let ctx_id = ctx.id();
    ctx.run(|| L.set(victim(&t, &log, &M, false)));
    let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
    let (x_done_tx, x_done_rx) = mpsc::channel::<()>();
    let y = spawn_named("Y", {
        let log = log.clone();
        move || {
            let mut y_in = Some(y_in_tx);
            let r = catch_unwind(AssertUnwindSafe(|| {
                M.for_each(|_, _| {
                    if let Some(tx) = y_in.take() {
                        tx.send(()).unwrap();
                        if x_done_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                            log.push("Y: X's for_each did not end within 10 s");
                        }
                    }
                });
            }))
            .map_err(panic_message);
            (r, ContextId::current())
        }
    });
    let x = spawn_named("X", {
        let log = log.clone();
        move || {
            y_in_rx.recv().unwrap();
            let mut ctx = Some(ctx);
            let r = catch_unwind(AssertUnwindSafe(|| {
                L.for_each(|_, v| {
                    if v.n == VICTIM {
                        if let Some(ctx) = ctx.take() {
                            log.push("X: drop(ctx) starts");
                            drop(ctx);
                            log.push("X: drop(ctx) ended");
                        }
                    }
                });
            }))
            .map_err(panic_message);
            log.push("X: for_each returned");
            let _ = x_done_tx.send(());
            r
        }
    });
    let x = x.join().unwrap();
    let (y, y_ctx) = y.join().unwrap();
    assert_eq!(x, Ok(()));
    assert_eq!(y, Ok(()), "log: {:?}", log.entries());
    assert_eq!(
        log.entries(),
        vec![
            "X: drop(ctx) starts".to_string(),
            "X: drop(ctx) ended".to_string(),
            format!("value dropped on X in {:?}", Some(ctx_id)),
            "X: for_each returned".to_string(),
        ]
    );
    let mut m_bound = Vec::new();
    M.for_each(|id, _| m_bound.push(id));
    assert_eq!(
        m_bound,
        vec![blocker.id()],
        "M bound elsewhere (Y's own is {y_ctx:?})"
    );
    drop(blocker);
    assert_eq!(t.live(), 0);
}

// =============================================================================================
// Fault 6: errors, not aborts.

fn assert_refused(e: &context_local::AccessError, name: &str) {
    assert_eq!(e.name(), name, "{e}");
    assert!(
        matches!(
            e.kind(),
            AccessErrorKind::Iterating | AccessErrorKind::Borrowed | AccessErrorKind::BorrowedMut
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains(name), "{e}");
}

/// Fault 6a: `L.try_with_mut` inside `L.for_each` returns an `AccessError` naming the local —
/// on every visit (own value, another context's value), with another thread iterating too —
/// and changes nothing.
#[test]
fn fault6a_try_with_mut_inside_for_each_is_an_error_naming_the_local() {
    static L: Local<u32> = Local::named("F6A_L");
    within(30, || {
        let other = Context::new();
        other.run(|| L.set(2));
        L.set(1);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_named("reader", {
            let stop = stop.clone();
            move || {
                while !stop.load(SeqCst) {
                    L.for_each(|_, _| thread::sleep(Duration::from_micros(50)));
                }
            }
        });
        let mut results = Vec::new();
        for _ in 0..50 {
            no_panic("for_each with try_with_mut inside", || {
                L.for_each(|id, _| results.push((id, L.try_with_mut(|v| *v += 10))));
            });
        }
        stop.store(true, SeqCst);
        reader.join().unwrap();
        assert!(results.len() >= 100, "{}", results.len());
        assert!(results.iter().any(|(id, _)| *id == ContextId::current()));
        for (_, r) in &results {
            assert_refused(r.as_ref().unwrap_err(), "F6A_L");
        }
        assert_eq!(L.get(), Some(1));
        assert_eq!(other.run(|| L.get()), Some(2));
        // Not stuck afterwards.
        L.with_mut(|v| *v += 1);
        assert_eq!(L.get(), Some(2));
    });
}

/// Fault 6a (with an initializer): inside `for_each`, `try_with_mut` in a context where the
/// local is unbound runs into the iteration too: an error naming the local, never a panic.
#[test]
fn fault6a_try_with_mut_of_an_initialized_local_inside_for_each_is_an_error() {
    static L: Local<u32> = Local::with_init("F6A_INIT", || 7);
    within(30, || {
        let other = Context::new();
        other.run(|| L.with(|_| ()));
        let mut results = Vec::new();
        no_panic("for_each with try_with_mut inside", || {
            L.for_each(|_, _| results.push(L.try_with_mut(|v| *v += 1)));
        });
        assert_eq!(results.len(), 1);
        assert_refused(results[0].as_ref().unwrap_err(), "F6A_INIT");
        assert_eq!(L.get(), Some(7));
    });
}

/// Fault 6b: a `StackGuard` dropped while unwinding out of a `for_each` callback of its own
/// stack must not abort: the panic comes out of `for_each`, the guard's value goes once.
#[test]
fn fault6b_a_guard_unwinding_out_of_its_stacks_for_each_does_not_abort() {
    child_must_succeed("child_guard_unwinding_out_of_its_stacks_for_each", 30);
}

/// The body of `fault6b_a_guard_unwinding_out_of_its_stacks_for_each_does_not_abort` (in a child process).
#[test]
#[ignore = "run in a child process by fault6b_a_guard_unwinding_out_of_its_stacks_for_each_does_not_abort"]
fn child_guard_unwinding_out_of_its_stacks_for_each() {
    static S: LocalStack<Counted> = LocalStack::named("F6B_S");
    if !in_child() {
        return;
    }
    let t = Tally::new();
    let other = Context::new();
    other.run(|| S.push(t.make(100)));
    S.push(t.make(0));
    let mut g = Some(S.enter(t.make(1)));
    let msg = expect_panic(|| {
        S.for_each(|_, _| {
            let _g = g.take();
            panic!("boom in the callback");
        })
    });
    assert_eq!(msg, "boom in the callback");
    assert_eq!(S.len(), 1, "the guard's value is gone, the one below stays");
    assert_eq!(S.top().map(|c| c.n), Some(0));
    S.release();
    drop(other);
    assert_eq!(t.live(), 0);
}

/// Fault 6b: a `StackGuard` of `S` dropped while unwinding out of a callback of another
/// local's `for_each`, while a second thread iterates `S`: no abort, no hang.
#[test]
fn fault6b_a_guard_unwinding_out_of_another_locals_for_each_does_not_abort() {
    child_must_succeed("child_guard_unwinding_out_of_another_locals_for_each", 30);
}

/// The body of `fault6b_a_guard_unwinding_out_of_another_locals_for_each_does_not_abort` (in a child process).
#[test]
#[ignore = "run in a child process by fault6b_a_guard_unwinding_out_of_another_locals_for_each_does_not_abort"]
fn child_guard_unwinding_out_of_another_locals_for_each() {
    static S: LocalStack<Counted> = LocalStack::named("F6B2_S");
    static L: Local<u32> = Local::named("F6B2_L");
    if !in_child() {
        return;
    }
    let t = Tally::new();
    L.set(1);
    let stop = Arc::new(AtomicBool::new(false));
    let other_thread = spawn_named("stack-reader", {
        let (stop, t) = (stop.clone(), t.clone());
        move || {
            S.push(t.make(100));
            while !stop.load(SeqCst) {
                S.for_each(|_, _| thread::sleep(Duration::from_micros(200)));
            }
            S.release();
        }
    });
    for i in 0..20 {
        let mut g = Some(S.enter(t.make(i)));
        let msg = expect_panic(|| {
            L.for_each(|_, _| {
                let _g = g.take();
                panic!("boom in the callback");
            })
        });
        assert_eq!(msg, "boom in the callback");
        assert!(S.is_empty());
    }
    stop.store(true, SeqCst);
    other_thread.join().unwrap();
    assert_eq!(t.live(), 0);
}

/// Fault 6b: a `StackGuard` pushed in an explicit context, whose `ContextGuard` unwinds first
/// (so the stack guard is dropped outside its context), out of the stack's own `for_each`.
#[test]
fn fault6b_a_guard_of_a_left_context_unwinding_out_of_for_each_does_not_abort() {
    child_must_succeed(
        "child_guard_of_a_left_context_unwinding_out_of_for_each",
        30,
    );
}

/// The body of `fault6b_a_guard_of_a_left_context_unwinding_out_of_for_each_does_not_abort` (in a child process).
#[test]
#[ignore = "run in a child process by fault6b_a_guard_of_a_left_context_unwinding_out_of_for_each_does_not_abort"]
fn child_guard_of_a_left_context_unwinding_out_of_for_each() {
    static S: LocalStack<Counted> = LocalStack::named("F6B3_S");
    if !in_child() {
        return;
    }
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| S.push(t.make(0)));
    let msg = expect_panic(|| {
        let cg = ctx.enter();
        let mut guards = Some((S.enter(t.make(1)), cg));
        S.for_each(|_, _| {
            // Dropped in reverse order: the context guard first, then the stack guard.
            let (_g, _cg) = guards.take().unwrap();
            panic!("boom in the callback");
        });
    });
    assert_eq!(msg, "boom in the callback");
    assert_eq!(ctx.run(|| S.len()), 1);
    drop(ctx);
    assert_eq!(t.live(), 0);
}

// Fault 6c: `for_each` from a thread-local destructor that runs after the crate's own
// thread-locals are gone. `FIRST` is the first thread-local the reader thread touches; its
// destructor initializes `LATE`, whose destructor (registered during thread-local destruction,
// so run after every one registered before) iterates the local.

static LATE_L: Local<u64> = Local::named("LATE_L");
static LATE_CTX: Mutex<Option<Context>> = Mutex::new(None);
static LATE_STARTED: AtomicBool = AtomicBool::new(false);
static LATE_SAW_DESTROYED: AtomicBool = AtomicBool::new(false);
static LATE_VISITS: AtomicUsize = AtomicUsize::new(0);
static LATE_DONE: AtomicBool = AtomicBool::new(false);
/// The value of the explicit context the late reader drops inside its callback.
const LATE_CTX_VALUE: u64 = 99;

struct First;

impl Drop for First {
    fn drop(&mut self) {
        LATE.with(|_| ());
    }
}

struct LateReader;

impl Drop for LateReader {
    fn drop(&mut self) {
        LATE_SAW_DESTROYED.store(
            matches!(LATE_L.try_with(|_| ()), Err(e) if e.kind() == AccessErrorKind::Destroyed),
            SeqCst,
        );
        let mut ctx = LATE_CTX.lock().unwrap_or_else(|e| e.into_inner()).take();
        LATE_L.for_each(|_, v| {
            LATE_VISITS.fetch_add(1, SeqCst);
            LATE_STARTED.store(true, SeqCst);
            if *v != LATE_CTX_VALUE {
                // Variant: a context with a value in the local is dropped in here.
                drop(ctx.take());
            }
            thread::sleep(Duration::from_millis(50));
        });
        drop(ctx);
        LATE_DONE.store(true, SeqCst);
    }
}

thread_local! {
    static FIRST: First = const { First };
    static LATE: LateReader = const { LateReader };
}

/// Fault 6c scenario: holder threads with a value in `LATE_L` exit while the late reader
/// iterates; `with_ctx` also hands it an explicit context to drop inside its callback.
fn late_reader_scenario(with_ctx: bool) {
    if with_ctx {
        let ctx = Context::new();
        ctx.run(|| LATE_L.set(LATE_CTX_VALUE));
        *LATE_CTX.lock().unwrap() = Some(ctx);
    }
    let holders: Vec<_> = (0..3)
        .map(|i| {
            spawn_named("holder", move || {
                LATE_L.set(i);
                let until = Instant::now() + Duration::from_secs(20);
                while !LATE_STARTED.load(SeqCst) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    while LATE_L.contexts() < 3 {
        thread::sleep(Duration::from_millis(1));
    }
    let reader = spawn_named("late-reader", || {
        FIRST.with(|_| ());
        LATE_L.set(7); // creates the crate's thread-locals after FIRST
        LATE_L.for_each(|_, _| ());
    });
    reader.join().unwrap(); // returns once its thread-local destructors ran
    for h in holders {
        h.join().unwrap();
    }
    assert!(LATE_DONE.load(SeqCst), "the late reader did not run");
    assert!(
        LATE_SAW_DESTROYED.load(SeqCst),
        "setup: the late reader ran before the crate's thread-locals were gone"
    );
    assert!(
        LATE_VISITS.load(SeqCst) >= 1,
        "the late reader saw no value"
    );
    assert!(LATE_CTX.lock().unwrap().is_none());
    assert_eq!(LATE_L.contexts(), 0);
}

/// Fault 6c: `for_each` from a user thread-local destructor that runs after the crate's own
/// thread-locals are gone does not hang, and threads with a value in the local still exit
/// while it iterates.
#[test]
fn fault6c_for_each_from_a_late_thread_local_destructor_does_not_hang() {
    child_must_succeed("child_late_for_each", 30);
}

/// The body of `fault6c_for_each_from_a_late_thread_local_destructor_does_not_hang` (in a child process).
#[test]
#[ignore = "run in a child process by fault6c_for_each_from_a_late_thread_local_destructor_does_not_hang"]
fn child_late_for_each() {
    if !in_child() {
        return;
    }
    late_reader_scenario(false);
}

/// Fault 6c: as above, and the late reader's callback drops an explicit context holding a
/// value in the local it iterates: the drop completes, nothing hangs.
#[test]
fn fault6c_a_late_for_each_dropping_a_context_does_not_hang() {
    child_must_succeed("child_late_for_each_dropping_a_context", 30);
}

/// The body of `fault6c_a_late_for_each_dropping_a_context_does_not_hang` (in a child process).
#[test]
#[ignore = "run in a child process by fault6c_a_late_for_each_dropping_a_context_does_not_hang"]
fn child_late_for_each_dropping_a_context() {
    if !in_child() {
        return;
    }
    late_reader_scenario(true);
}

// =============================================================================================
// Adversarial.

/// A value that a torn read (a reader seeing a write half done) would show.
#[derive(Clone)]
struct Pair {
    a: u64,
    b: u64,
    _c: Counted,
}

impl Pair {
    fn new(t: &Tally, n: u64) -> Self {
        Self {
            a: n,
            b: !n,
            _c: t.make(n),
        }
    }

    fn check(&self) {
        assert_eq!(self.b, !self.a, "torn read of a value being written");
    }

    fn bump(&mut self) {
        self.a += 1;
        thread::yield_now();
        self.b = !self.a;
    }
}

/// Adversarial: nested `L.for_each` inside `L.for_each` (and the same for a stack) while other
/// threads write (`with_mut`, `take`, `replace`, `set`; push/pop/guards/scopes): no deadlock,
/// no panic, no torn read; every value dropped once.
#[test]
fn adversarial_nested_for_each_while_others_write() {
    static L: Local<Pair> = Local::named("ADV_NESTED_L");
    static S: LocalStack<u64> = LocalStack::named("ADV_NESTED_S");
    within(90, || {
        let t = Tally::new();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let t = t.clone();
                spawn_named("nested-reader", move || {
                    L.set(Pair::new(&t, 0));
                    S.push(0);
                    for _ in 0..300 {
                        L.for_each(|_, outer| {
                            outer.check();
                            pause(); // lets a writer start waiting for this reader
                            L.for_each(|_, inner| inner.check());
                            outer.check();
                        });
                        S.for_each(|_, outer| {
                            pause();
                            S.for_each(|_, inner| assert!(!inner.is_empty()));
                            assert!(!outer.is_empty());
                        });
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let (t, done) = (t.clone(), done.clone());
                spawn_named("writer", move || {
                    let mut i = 0u64;
                    while !done.load(SeqCst) || i < 200 {
                        i += 1;
                        match i % 5 {
                            0 => L.set(Pair::new(&t, i)),
                            1 => {
                                let _ = L.try_with_mut(Pair::bump);
                            }
                            2 => drop(L.take()),
                            3 => drop(L.replace(Pair::new(&t, i))),
                            _ => {
                                let ctx = Context::new();
                                ctx.run(|| L.set(Pair::new(&t, i)));
                            }
                        }
                        match (i + w) % 4 {
                            0 => S.push(i),
                            1 => drop(S.pop()),
                            2 => drop(S.enter(i)),
                            _ => {
                                let _ = S.scope(i, || S.with_top_mut(|v| *v += 1));
                            }
                        }
                    }
                    L.release();
                    S.release();
                })
            })
            .collect();
        let mut failed = None;
        for h in readers {
            if let Err(p) = h.join() {
                failed.get_or_insert(format!("reader panicked: {}", panic_message(p)));
            }
        }
        done.store(true, SeqCst);
        for h in writers {
            if let Err(p) = h.join() {
                failed.get_or_insert(format!("writer panicked: {}", panic_message(p)));
            }
        }
        if let Some(f) = failed {
            panic!("{f}");
        }
        assert_eq!((L.contexts(), S.contexts()), (0, 0));
        assert_eq!(t.live(), 0);
    });
}

/// Adversarial: a callback that writes the local it iterates (in its own context) while other
/// threads write it fails cleanly — a panic (or error) naming the local and `for_each`, never a
/// deadlock — and leaves nothing behind: other writers proceed afterwards.
#[test]
fn adversarial_a_callback_writing_its_own_local_fails_cleanly_while_others_write() {
    static L: Local<u64> = Local::named("ADV_SELF_WRITE");
    within(60, || {
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let done = done.clone();
                spawn_named("writer", move || {
                    let mut i = 0;
                    while !done.load(SeqCst) {
                        i += 1;
                        L.set(i);
                        L.with_mut(|v| *v += 1);
                        assert!(L.take().is_some());
                    }
                    i
                })
            })
            .collect();
        L.set(1);
        for round in 0..100u64 {
            let msg = expect_panic(|| L.for_each(|_, _| L.set(round)));
            assert!(
                msg.contains("ADV_SELF_WRITE") && msg.contains("for_each"),
                "wrong message: {msg}"
            );
            let mut errors = Vec::new();
            L.for_each(|_, _| errors.push(L.try_with_mut(|v| *v = round)));
            for e in &errors {
                assert_refused(e.as_ref().unwrap_err(), "ADV_SELF_WRITE");
            }
            L.set(round + 2); // outside: works again
        }
        done.store(true, SeqCst);
        for h in writers {
            h.join().unwrap();
        }
        L.release();
    });
}

/// Adversarial: many readers and many writers churn for a second — `set`, `with_mut` (a torn
/// read would show), `take`, `replace`, `release`, explicit contexts made and dropped, threads
/// that bind and exit — and every value is dropped exactly once, and no context holds a value
/// once all threads joined.
#[test]
fn adversarial_readers_and_writers_churn() {
    child_must_succeed("child_readers_and_writers_churn", 90);
}

/// The body of `adversarial_readers_and_writers_churn` (in a child process).
#[test]
#[ignore = "run in a child process by adversarial_readers_and_writers_churn"]
fn child_readers_and_writers_churn() {
    static L: Local<Pair> = Local::named("ADV_CHURN");
    if !in_child() {
        return;
    }
    let t = Tally::new();
    let end = Instant::now() + Duration::from_secs(1);
    let visits = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..3 {
        let visits = visits.clone();
        handles.push(spawn_named("reader", move || {
            while Instant::now() < end {
                L.for_each(|_, v| {
                    v.check();
                    visits.fetch_add(1, SeqCst);
                });
            }
        }));
    }
    for w in 0..3u64 {
        let t = t.clone();
        handles.push(spawn_named("writer", move || {
            let mut kept = Vec::new();
            let mut i = w;
            while Instant::now() < end {
                i += 3;
                match i % 7 {
                    0 => L.set(Pair::new(&t, i)),
                    1 => match L.try_with_mut(Pair::bump) {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.kind(), AccessErrorKind::Unbound, "{e}"),
                    },
                    2 => drop(L.replace(Pair::new(&t, i))),
                    3 => drop(L.take()),
                    4 => L.release(),
                    5 => {
                        let ctx = Context::new();
                        ctx.run(|| L.set(Pair::new(&t, i)));
                        if i % 2 == 0 {
                            kept.push(ctx);
                        }
                    }
                    _ => {
                        if let Some(ctx) = kept.pop() {
                            ctx.run(|| L.with_mut(Pair::bump));
                        }
                    }
                }
            }
            L.set(Pair::new(&t, 0)); // dropped at thread exit
            drop(kept);
        }));
    }
    {
        let t = t.clone();
        handles.push(spawn_named("spawner", move || {
            while Instant::now() < end {
                let t = t.clone();
                spawn_named("short-lived", move || L.set(Pair::new(&t, 1)))
                    .join()
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(visits.load(SeqCst) > 0, "the readers never saw a value");
    assert!(t.created() > 10, "{}", t.created());
    assert_eq!(
        L.contexts(),
        0,
        "contexts of joined threads still hold values"
    );
    assert_eq!(t.live(), 0, "values not dropped");
}

/// Adversarial: values whose `Drop` iterates their own local, dropped at thread exit by
/// several threads at once while another thread iterates the local too: no deadlock, each
/// value dropped once.
#[test]
fn adversarial_drops_at_thread_exit_that_iterate_their_local() {
    static L: Local<Probe> = Local::named("ADV_DROP_ITER");
    within(60, || {
        let t = Tally::new();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_named("reader", {
            let stop = stop.clone();
            move || {
                while !stop.load(SeqCst) {
                    L.for_each(|_, _| thread::sleep(Duration::from_micros(100)));
                }
            }
        });
        let go = Arc::new(Barrier::new(8));
        let exiting: Vec<_> = (0..8)
            .map(|i| {
                let (t, go) = (t.clone(), go.clone());
                spawn_named("exiting", move || {
                    L.set(Probe::new(&t, i, || {
                        let mut n = 0;
                        L.for_each(|_, _| n += 1);
                    }));
                    go.wait();
                })
            })
            .collect();
        for h in exiting {
            h.join().unwrap();
        }
        stop.store(true, SeqCst);
        reader.join().unwrap();
        assert_eq!(t.live(), 0);
        assert_eq!(L.contexts(), 0);
    });
}

/// Adversarial: changing a stack inside its own `for_each` (push, pop, a guard, a scope) is
/// refused with a panic naming the stack — not a deadlock, not an abort — and leaves the stack
/// usable; a reader on another thread is not disturbed.
#[test]
fn adversarial_changing_a_stack_inside_its_own_for_each_is_refused() {
    child_must_succeed("child_changing_a_stack_inside_its_own_for_each", 30);
}

/// The body of `adversarial_changing_a_stack_inside_its_own_for_each_is_refused` (in a child process).
#[test]
#[ignore = "run in a child process by adversarial_changing_a_stack_inside_its_own_for_each_is_refused"]
fn child_changing_a_stack_inside_its_own_for_each() {
    static S: LocalStack<u32> = LocalStack::named("ADV_STACK_SELF");
    if !in_child() {
        return;
    }
    S.push(1);
    let attempts: [fn(); 4] = [
        || S.push(2),
        || assert_eq!(S.pop(), Some(1)),
        || drop(S.enter(3)),
        || S.scope(4, || ()),
    ];
    for attempt in attempts {
        let msg = expect_panic(|| S.for_each(|_, _| attempt()));
        assert!(msg.contains("ADV_STACK_SELF"), "wrong message: {msg}");
        assert_eq!(S.len(), 1);
        assert_eq!(S.top(), Some(1));
    }
    S.push(2);
    assert_eq!(S.pop(), Some(2));
    S.release();
    assert_eq!(S.contexts(), 0);
}

/// Adversarial: `for_each` over an inheritable local reads forks' inherited values while the
/// forks write (copy-on-write) and are dropped: no deadlock, no torn read, each value (and
/// each copy) dropped once.
#[test]
fn adversarial_for_each_over_forks_while_they_write_and_go() {
    static L: Local<Pair> = Local::named("ADV_FORKS").inheritable();
    within(60, || {
        let t = Tally::new();
        // Captured in a context of its own, so that no context's capture cache keeps a copy.
        let snapshot = Context::new().run(|| {
            L.set(Pair::new(&t, 1));
            Snapshot::capture()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let reader = spawn_named("reader", {
            let stop = stop.clone();
            move || {
                let mut n = 0usize;
                while !stop.load(SeqCst) {
                    L.for_each(|_, v| {
                        v.check();
                        n += 1;
                    });
                }
                n
            }
        });
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let snapshot = snapshot.clone();
                spawn_named("fork-writer", move || {
                    for i in 0..300 {
                        let fork = snapshot.fork();
                        fork.run(|| {
                            L.with(Pair::check);
                            if i % 2 == 0 {
                                L.with_mut(Pair::bump);
                            }
                        });
                        drop(fork);
                    }
                })
            })
            .collect();
        for h in writers {
            h.join().unwrap();
        }
        stop.store(true, SeqCst);
        reader.join().unwrap();
        drop(snapshot);
        assert_eq!(t.live(), 0);
        assert_eq!(L.contexts(), 0);
    });
}

// ---------------------------------------------------------------------------------------------
// `for_each` against writes that move a slot to a fresh one (relocate) or retire its value.

/// Regression: `for_each` inside `with_mut` of a context left by its guard spun forever, fixed in
/// be68822.
///
/// The `for_each` visit turned "this thread is the writer" into a panic only when the context was
/// in this thread's chain of entered contexts. A context left inside `with_mut` (its
/// `ContextGuard` dropped there: the release is deferred, the slot stays `WRITING`) is not, so the
/// `for_each` waited for itself. Now the visit also asks whether this thread deferred the
/// context's release (`CtxInner::deferred_here`, in `Storage::for_each`, storage/mod.rs).
#[test]
fn for_each_inside_with_mut_of_a_left_context_does_not_hang() {
    child_must_succeed("child_for_each_inside_with_mut_of_a_left_context", 20);
}

#[test]
#[ignore = "run in a child process by for_each_inside_with_mut_of_a_left_context_does_not_hang"]
fn child_for_each_inside_with_mut_of_a_left_context() {
    static L: Local<u32> = Local::named("LEFT_WRITER");
    if !in_child() {
        return;
    }
    let ctx = Context::new();
    let ctx = &ctx;
    let g = ctx.enter();
    L.set(1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        L.with_mut(move |_| {
            drop(g); // left; the release waits for this `with_mut`
            L.for_each(|_, _| ()); // without the drop above: a panic naming the local
        })
    }));
    // Either outcome but a hang is acceptable.
    drop(r);
}

static S1: LocalStack<u32> = LocalStack::named("S1");

/// Regression: a guard's element is identified by a sequence number unique within one slot;
/// `LocalStack::release` under a foreign reader moves the stack to a fresh slot whose numbering
/// restarted at 0, so a guard of the old slot removed through the context's table took the new
/// slot's element with its number; fixed in 3742683: a fresh slot carries the stack's numbering
/// over.
///
/// Here: guard `g` pushes 1 (id 0) in context `c`; a reader sits on `c`'s stack; `release()`
/// moves the stack to a fresh slot; `g2` pushes 2 there (id 0 again). `c` is left, then `g`
/// is dropped: its removal claims `c` and must not remove the 2 that `g2` still guards.
/// Expected: `c` still has `[2]` (1 was released already).
#[test]
fn guard_dropped_elsewhere_after_release_under_a_reader_removes_only_its_own_value() {
    within(20, || {
        let c = Context::new();
        let cid = c.id();
        let entered = c.enter();
        let g = S1.enter(1);
        let reader = Parked::start(move |park| {
            S1.for_each(|id, _| {
                if id == cid {
                    park();
                }
            })
        });
        S1.release(); // the reader is on the slot: the stack moves to a fresh one
        reader.finish();
        let g2 = S1.enter(2);
        drop(entered);
        drop(g); // not current: removed through a claim on `c`
        let seen = c.run(|| S1.for_each_here());
        drop(g2);
        assert_eq!(seen, vec![2], "g's drop removed g2's value");
    });
}

/// Regression: the same root cause through `scope_future`, fixed in 3742683: its end-of-poll
/// removal looked the id up in the table's slot. A future whose poll released the stack under a
/// reader and then entered a guard had that guard's element taken out at the end of the poll
/// (and re-pushed as "its" value at the next poll).
#[test]
fn scope_future_after_release_under_a_reader_removes_only_its_own_value() {
    static S2: LocalStack<u32> = LocalStack::named("S2");
    within(20, || {
        let c = Context::new();
        let cid = c.id();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fut = {
            let seen = seen.clone();
            S2.scope_future(1, async move {
                let reader = Parked::start(move |park| {
                    S2.for_each(|id, _| {
                        if id == cid {
                            park();
                        }
                    })
                });
                S2.release();
                reader.finish();
                // A numbered element in the fresh slot (id 0 there), guarded across the end of
                // the poll: leak the guard so it is never removed by the guard itself.
                std::mem::forget(S2.enter(2));
                seen.lock().unwrap().push(S2.for_each_here());
            })
        };
        c.run(|| block_on(fut));
        let after = c.run(|| S2.for_each_here());
        assert_eq!(
            after,
            vec![2],
            "the scope's end-of-poll removal took a value that was not its own (inside: {:?})",
            seen.lock().unwrap()
        );
    });
}

/// Regression: the same root cause through a deferred removal, fixed in 3742683: a guard dropped
/// inside its stack's own `for_each` (this thread iterating) defers its removal by `(index, id)`;
/// the deferred removal then hit the fresh slot's element.
#[test]
fn deferred_guard_removal_after_release_under_a_reader_removes_only_its_own_value() {
    static S3: LocalStack<u32> = LocalStack::named("S3");
    within(20, || {
        let me = ContextId::current();
        let g = S3.enter(1);
        let reader = Parked::start(move |park| {
            S3.for_each(|id, _| {
                if id == me {
                    park();
                }
            })
        });
        S3.release();
        reader.finish();
        let g2 = S3.enter(2); // id 0 in the fresh slot
        let mut g = Some(g);
        S3.for_each(|_, _| drop(g.take())); // iterating: the removal of id 0 is queued
        let seen = S3.for_each_here();
        drop(g2);
        assert_eq!(seen, vec![2], "g's deferred removal removed g2's value");
    });
}

/// Regression: a retired slot that a sweep could not take (this thread iterating the local while
/// another reader marked the slot) was still flagged swept, so teardown skipped it and its value
/// was dropped only by the final free, after the teardown, with another context current; fixed
/// in 3742683: a slot this thread reads is "busy", not "taken", and stays unswept.
///
/// Here: in context `c`, `L` holds P1. A reader R, inside `L.for_each` on `c`'s P1, nests a
/// `M.for_each` and parks on `c`'s `M`. `L.set(P2)` retires P1's slot (R marks it). Then,
/// inside `L.for_each` on this thread, `M.set(..)` relocates `M` (R marks it) and sweeps
/// the retired slots: P1's is refused. After R leaves, `drop(c)` must drop P1 with `c` current.
#[test]
fn a_retired_value_refused_to_a_sweep_inside_for_each_is_still_dropped_by_its_context() {
    static K: Local<u32> = Local::named("K");
    static L: Local<Probe> = Local::named("L");
    static M: Local<u32> = Local::named("M");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                log.push(format!(
                    "P1 dropped in {:?}, K bound: {}",
                    ContextId::current(),
                    K.is_set()
                ));
            })
        };
        c.run(|| {
            K.set(7); // bound before L: still bound while L's values are dropped
            L.set(p1);
            M.set(0);
        });
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == cid {
                    M.for_each(|id2, _| {
                        if id2 == cid {
                            park();
                        }
                    });
                }
            })
        });
        c.run(|| {
            L.set(Probe::plain(&t, 2)); // P1's slot retired (R marks it)
            let mut once = true;
            L.for_each(|_, _| {
                if std::mem::take(&mut once) {
                    M.set(1); // relocates M (R marks it) and sweeps L's retired slot
                }
            });
        });
        reader.finish();
        log.push("drop(c) starts");
        drop(c);
        log.push("drop(c) ended");
        assert_eq!(
            log.entries(),
            vec![
                "drop(c) starts".to_string(),
                format!("P1 dropped in {cid:?}, K bound: true"),
                "drop(c) ended".to_string(),
            ],
            "P1 was not dropped by its context's teardown"
        );
        assert_eq!(t.live(), 0, "a value was never dropped");
    });
}

trait Here {
    fn for_each_here(&self) -> Vec<u32>;
}

impl Here for LocalStack<u32> {
    /// The current context's stack, bottom first.
    fn for_each_here(&self) -> Vec<u32> {
        let me = ContextId::current();
        let mut out = Vec::new();
        self.for_each(|id, items| {
            if id == me {
                out = items.to_vec();
            }
        });
        out
    }
}

/// A minimal executor: polls `fut` to completion on this thread.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context as TaskCx, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = TaskCx::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::yield_now();
    }
}

/// Regression: the same stale "swept" slot, worse, fixed in 3742683: with another thread iterating
/// `L` (busy on another context's value) while `c` is dropped, that reader's registry snapshot
/// held the last reference to `c`'s storage, so P1's `Drop` ran on the *reader's* thread, inside
/// its `for_each`, after `drop(c)` returned: what `Local::for_each` promises never happens
/// ("values are only ever dropped by their own context ... never by the thread that iterates").
#[test]
fn a_retired_value_refused_to_a_sweep_is_not_dropped_by_an_iterating_thread() {
    static L: Local<Probe> = Local::named("L2");
    static M: Local<u32> = Local::named("M2");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let blocker = Context::new();
        let bid = blocker.id();
        blocker.run(|| L.set(Probe::plain(&t, 9)));
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                let name = thread::current().name().unwrap_or("?").to_string();
                log.push(format!("P1 dropped on {name}"));
            })
        };
        c.run(|| {
            L.set(p1);
            M.set(0);
        });
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == cid {
                    M.for_each(|id2, _| {
                        if id2 == cid {
                            park();
                        }
                    });
                }
            })
        });
        c.run(|| {
            L.set(Probe::plain(&t, 2));
            let mut once = true;
            L.for_each(|_, _| {
                if std::mem::take(&mut once) {
                    M.set(1);
                }
            });
        });
        reader.finish();
        // A second reader, parked on the blocker's value, holds a snapshot that includes `c`.
        let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let y = thread::Builder::new()
            .name("reader Y".into())
            .spawn(move || {
                let _ = ContextId::current();
                L.for_each(|id, _| {
                    if id == bid {
                        y_in_tx.send(()).unwrap();
                        let _ = go_rx.recv_timeout(Duration::from_secs(5));
                    }
                });
            })
            .unwrap();
        y_in_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let name = thread::current().name().unwrap_or("?").to_string();
        drop(c);
        log.push("drop(c) ended");
        go_tx.send(()).unwrap();
        y.join().unwrap();
        drop(blocker);
        assert_eq!(
            log.entries(),
            vec![format!("P1 dropped on {name}"), "drop(c) ended".to_string()],
            "P1 was dropped by the iterating thread, after its context was gone"
        );
        assert_eq!(t.live(), 0);
    });
}

/// Regression: teardown inside `for_each` of the same local took another thread's reader mark for
/// this thread's own and did not wait for it, fixed in 3742683: teardown inside `for_each` waits
/// for other threads' readers (only its own marks are given up on).
///
/// X, inside `L.for_each` on another context's value, drops context `c` while reader Y sits on
/// `c`'s value (waiting for nobody). `c`'s value was left in its slot and dropped when the last
/// `Arc` of `c`'s storage went: after `drop(c)` returned, outside `c`, by an iterating thread.
#[test]
fn a_context_dropped_inside_for_each_waits_for_another_threads_reader_of_its_value() {
    static L: Local<Probe> = Local::named("L3");
    within(20, || {
        let t = Tally::new();
        let log = Log::new();
        let blocker = Context::new();
        let bid = blocker.id();
        blocker.run(|| L.set(Probe::plain(&t, 9)));
        let c = Context::new();
        let cid = c.id();
        let p1 = {
            let log = log.clone();
            Probe::new(&t, 1, move || {
                let name = thread::current().name().unwrap_or("?").to_string();
                log.push(format!(
                    "P1 dropped on {name} in {:?}",
                    ContextId::current()
                ));
            })
        };
        c.run(|| L.set(p1));
        let (y_in_tx, y_in_rx) = mpsc::channel::<()>();
        let y = thread::Builder::new()
            .name("reader Y".into())
            .spawn(move || {
                let _ = ContextId::current();
                L.for_each(|id, _| {
                    if id == cid {
                        y_in_tx.send(()).unwrap();
                        // Waits for nobody: a bounded callback.
                        thread::sleep(Duration::from_millis(300));
                    }
                });
            })
            .unwrap();
        y_in_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let x = thread::Builder::new()
            .name("X".into())
            .spawn({
                let log = log.clone();
                move || {
                    let _ = ContextId::current();
                    let mut c = Some(c);
                    L.for_each(|id, _| {
                        if id == bid {
                            if let Some(c) = c.take() {
                                drop(c);
                                log.push("X: drop(c) ended");
                            }
                        }
                    });
                }
            })
            .unwrap();
        x.join().unwrap();
        y.join().unwrap();
        drop(blocker);
        assert_eq!(
            log.entries(),
            vec![
                format!("P1 dropped on X in {cid:?}"),
                "X: drop(c) ended".to_string()
            ],
            "c's value was not dropped by c's teardown"
        );
        assert_eq!(t.live(), 0);
    });
}

/// Regression: a value released under a reader outlived the "next replacing write" that
/// `Local::for_each`'s docs promise it ends at, fixed in 3742683: a replacing write sweeps retired
/// values left by earlier ones.
///
/// Retired values were swept only when a later `set`/`release` *again* found a reader on the slot;
/// an uncontended write never swept, so on a long-lived context (a worker thread's) a released
/// value lived until the context ended.
#[test]
fn a_value_released_under_a_reader_is_dropped_at_the_next_replacing_write() {
    static L: Local<Probe> = Local::named("L4");
    within(20, || {
        let t = Tally::new();
        let me = ContextId::current();
        L.set(Probe::plain(&t, 1));
        let reader = Parked::start(move |park| {
            L.for_each(|id, _| {
                if id == me {
                    park();
                }
            })
        });
        L.release(); // the reader keeps P1
        reader.finish(); // ... and lets go of it
        L.set(Probe::plain(&t, 2)); // the next replacing write
        L.release();
        let live = t.live();
        L.release();
        assert_eq!(
            live, 0,
            "the released value is still alive after two more replacing writes"
        );
    });
}
